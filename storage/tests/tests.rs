//! tapvault-storage's integration tests: one binary, one module per area (as ripgrep's
//! `tests/tests.rs`).

/// Shared helpers (temporary directories).
mod util;

// Parquet flow store: round trips, partitions, pruning, atomic publication, pyarrow/DuckDB.
mod parquet;

// Packet spill segments: seekable zstd pcap, index, extraction by time and flow, zstd/tshark.
mod pcap;

// Retention: byte and age limits per store, oldest first, segment and index together.
mod retention;

// Storage services: a full disk (tmpfs, root), the free-space minimum, recovery of a
// segment cut at every interesting offset.
mod store;
