#!/usr/bin/env bash
# The demo: installs what it needs, builds tapvault, and runs `tapvault demo` (namespaces,
# real TCP through a lossy bottleneck, capture, analysis). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
tapvault_setup
cargo build --release --locked
exec ./target/release/tapvault demo "$@"
