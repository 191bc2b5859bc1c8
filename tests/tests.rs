//! tapvault's integration tests, one module per area.

/// Helpers shared by the modules: locating `../shared`, running the binary.
mod util;

/// Differential test against tshark's expected output on real third-party captures.
mod differential;

/// The CLI on bad input, and the SYN flood bound.
mod cli;

/// Real Linux TCP from `tapvault demo` (network namespaces, root) against tshark.
mod netns;

/// The AF_PACKET source and `tapvault blast` on veth pairs in namespaces (root).
mod afpacket;
/// The HTTP API over loopback against stores written by `analyze --store`, and schemathesis.
mod api;
/// systemd unit, container recipe and Kubernetes manifests checked by their tools, and
/// `tapvault check` on good and bad configurations.
mod deploy;
/// The live pipeline fed by capture files.
mod live;
/// The storage services under SIGKILL (`tapvault storage-soak`, several rounds).
mod storage;
/// Live capture through XDP and AF_XDP on veth pairs between namespaces (root).
mod xdp;
