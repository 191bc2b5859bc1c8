//! tapvault's integration tests, one module per area.

/// Helpers shared by the modules: locating `../shared`, running the binary.
mod util;

/// Differential test against tshark's expected output on real third-party captures.
mod differential;

/// The CLI on bad input, and the SYN flood bound.
mod cli;

/// Real Linux TCP from `tapvault demo` (network namespaces, root) against tshark.
mod netns;

/// The HTTP API over loopback against stores written by `analyze --store`, and schemathesis.
mod api;
