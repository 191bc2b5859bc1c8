#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, integration, differential and privileged
# namespace tests. Installs what it needs first (see setup.sh). Run as root so the namespace
# tests run (they skip, with a message, only when not root and CI is unset).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
tapvault_setup
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
