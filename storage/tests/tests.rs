//! tapvault-storage's integration tests: one binary, one module per area (as ripgrep's
//! `tests/tests.rs`).

// Parquet flow store: round trips, partitions, pruning, atomic publication, pyarrow/DuckDB.
mod parquet;
