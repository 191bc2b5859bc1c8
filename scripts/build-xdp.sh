#!/usr/bin/env bash
# Builds tapvault's XDP program (xdp-prog/) into the object the dataplane embeds,
# dataplane/xdp/tapvault-xdp.bpf.o, which is committed so that `cargo build` needs no eBPF
# toolchain. The build is reproducible: a fixed Rust toolchain (TOOLCHAIN, which must ship
# LLVM 22), a fixed bpf-linker (BPF_LINKER_VERSION, built against LLVM 22), a locked
# dependency graph, a fresh target directory, no debug info, and every machine-specific path
# remapped.
#
#   scripts/build-xdp.sh           rebuild and replace the committed object
#   scripts/build-xdp.sh --check   rebuild into a temporary directory and fail unless the result
#                                  is byte-for-byte the committed object (CI runs this)
#
# Prerequisites (scripts/setup.sh installs them): apt llvm-22-dev libpolly-22-dev clang-22,
# `LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker@0.13.0 --no-default-features
# --features llvm-22`, and `rustup component add rust-src --toolchain 1.95.0`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
TOOLCHAIN=1.95.0
BPF_LINKER_VERSION=0.13.0
OUT=dataplane/xdp/tapvault-xdp.bpf.o

check=0
case "${1:-}" in
    --check) check=1 ;;
    "") ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

die() { echo "build-xdp: $*" >&2; exit 1; }

command -v bpf-linker >/dev/null ||
    die "bpf-linker is not installed (scripts/setup.sh installs bpf-linker $BPF_LINKER_VERSION)"
have=$(bpf-linker --version | awk '{print $2}')
[ "$have" = "$BPF_LINKER_VERSION" ] ||
    die "bpf-linker $have found, $BPF_LINKER_VERSION needed (scripts/setup.sh installs it)"
llvm=$(rustc +"$TOOLCHAIN" -vV 2>/dev/null | awk '/^LLVM version/ {print $3}') ||
    die "Rust toolchain $TOOLCHAIN is not installed (rustup toolchain install $TOOLCHAIN)"
case "$llvm" in
    22.*) ;;
    *) die "Rust $TOOLCHAIN has LLVM '${llvm:-?}', bpf-linker $BPF_LINKER_VERSION needs 22" ;;
esac
sysroot=$(rustc +"$TOOLCHAIN" --print sysroot)
[ -d "$sysroot/lib/rustlib/src/rust/library/core" ] ||
    die "rust-src is missing for $TOOLCHAIN (rustup component add rust-src --toolchain $TOOLCHAIN)"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cargo_home=${CARGO_HOME:-$HOME/.cargo}

# -Z build-std on a stable toolchain: RUSTC_BOOTSTRAP=1 (this toolchain is pinned, so the
# unstable flags cannot change under us). RUSTFLAGS apply only to the bpfel target's crates.
(
    cd xdp-prog
    RUSTC_BOOTSTRAP=1 \
    CARGO_TARGET_DIR="$tmp/target" \
    CARGO_INCREMENTAL=0 \
    SOURCE_DATE_EPOCH=0 \
    RUSTFLAGS="-C debuginfo=0 --remap-path-prefix=$root=/tapvault --remap-path-prefix=$cargo_home=/cargo --remap-path-prefix=$sysroot=/rust" \
    cargo +"$TOOLCHAIN" build --release --locked --quiet
)
built="$tmp/target/bpfel-unknown-none/release/tapvault-xdp"
[ -s "$built" ] || die "the build produced no object at $built"

if [ "$check" = 1 ]; then
    [ -f "$OUT" ] || die "$OUT is missing: run scripts/build-xdp.sh and commit it"
    if ! cmp -s "$built" "$OUT"; then
        echo "build-xdp: $OUT differs from what xdp-prog/ builds to" >&2
        echo "  committed: $(sha256sum "$OUT" | cut -d' ' -f1) ($(stat -c %s "$OUT") bytes)" >&2
        echo "  rebuilt:   $(sha256sum "$built" | cut -d' ' -f1) ($(stat -c %s "$built") bytes)" >&2
        die "run scripts/build-xdp.sh and commit $OUT"
    fi
    echo "build-xdp: $OUT is up to date ($(sha256sum "$OUT" | cut -d' ' -f1))"
else
    install -m 0644 "$built" "$OUT"
    echo "build-xdp: wrote $OUT ($(stat -c %s "$OUT") bytes, $(sha256sum "$OUT" | cut -d' ' -f1))"
fi
