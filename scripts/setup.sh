#!/usr/bin/env bash
# Installs what tapvault's demo and tests need, idempotently. Sourced by demo.sh and test.sh.
# Debian packages: tshark (the oracle of the differential tests, and a reader of stored
# segments), zstd (restores stored segments in tests), tcpdump (captures in the
# demo and the namespace tests), iproute2 and ethtool (namespaces, veth, qdiscs, offloads),
# python3 (tshark's ground-truth script). PyPI: pyarrow and duckdb (they read the Parquet
# files in tests), schemathesis (its `st` CLI fuzzes the HTTP API from its OpenAPI document). Rust components: rustfmt and clippy.

tapvault_setup() {
    local pkgs=(tshark tcpdump iproute2 ethtool python3 procps zstd)
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
}
