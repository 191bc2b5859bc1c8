#!/usr/bin/env bash
# The demo: installs what it needs, builds tapvault, and runs `tapvault demo` (namespaces, real
# TCP through a lossy bottleneck, live capture of a mirrored port through XDP and AF_XDP,
# storage, and the HTTP API, served afterwards until Ctrl-C or TAPVAULT_DEMO_SERVE seconds,
# default 600). Run as root. Arguments go to `tapvault demo` (see `tapvault demo --help`).
# TAPVAULT_DEMO_BIN runs that binary instead of building one (the tests do).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
tapvault_setup
bin=${TAPVAULT_DEMO_BIN:-}
if [ -z "$bin" ]; then
    cargo build --release --locked
    bin=./target/release/tapvault
fi
args=("$@")
case " $* " in
*" --serve "* | *" --serve="*) ;;
*) args=(--serve "${TAPVAULT_DEMO_SERVE:-600}" "${args[@]}") ;;
esac
exec "$bin" demo "${args[@]}"
