//! tapvault's integration tests, one module per area.

/// Helpers shared by the modules: locating `../shared`, running the binary.
mod util;

/// Differential test against tshark's expected output on real third-party captures.
mod differential;
