#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, integration, differential and privileged
# namespace tests. Installs what it needs first (see setup.sh). Run as root so the namespace
# tests run (they skip, with a message, only when not root and CI is unset).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
tapvault_setup
cargo fmt --all -- --check
# The committed XDP object must be what xdp-prog/ builds to (reproducible build).
scripts/build-xdp.sh --check
cargo clippy --workspace --all-targets --locked -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked 2>&1 | tee "$log" || status=$?
# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6; i += $8 }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, i }' "$log"
exit "$status"
