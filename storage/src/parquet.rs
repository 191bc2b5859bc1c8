//! Flow records in Parquet: [`FlowParquetWriter`] writes them, [`read_flows`] reads a time range
//! back, [`recover`] cleans up after a crash.
//!
//! # Layout
//!
//! ```text
//! ROOT/flows/date=YYYY-MM-DD/hour=HH/<start-ns>-<writer-id>.parquet
//! ```
//!
//! Hive-style partitions (pyarrow, DuckDB and Spark turn `date` and `hour` into columns). A
//! record belongs to the UTC hour of its `last_seen_ns`; `<start-ns>` is the smallest
//! `first_seen_ns` in the file, so a reader can skip a file by its name alone when it starts
//! after the queried range (a long flow can end in a later hour than the one it started in,
//! so later partitions cannot be skipped by their names).
//!
//! # Publication and crash safety
//!
//! A file is written as `.<writer-id>-<seq>.parquet.tmp` in its final directory, synced,
//! renamed to its final name and the directory synced, so a reader never sees half a file.
//! The temporary name starts with a dot because pyarrow's and Spark's dataset discovery skip
//! such files, and ends in `.tmp` so that `*.parquet` globs (DuckDB) skip them as well.
//!
//! [`FlowParquetWriter`] publishes when flushed or closed (or at the maximum rows per file);
//! a crash loses the records since. Live capture writes through
//! [`FlowStore`](crate::FlowStore) instead, which appends every record to a write-ahead
//! *flow log* (`ROOT/flows/.wal/<writer-id>-<generation>.wal`: length-prefixed, CRC-32
//! checked JSON records), `fdatasync`s it every flush interval (default 1 s) and, every
//! publish interval (default 60 s), hands it to a background thread that converts it into
//! one Parquet file per hour with a commit protocol that publishes each record exactly once
//! even if the process dies mid-way (see `parquet/wal.rs`). A crash loses at most the last
//! flush interval; [`recover_store`](crate::recover_store) converts the logs left behind.
//!
//! Why a log rather than a small Parquet file per flush: a Parquet file per writer per
//! second is 3,600 files an hour to list, open and later compact (and compaction is its own
//! crash-safety problem, with duplicates visible between publishing the compacted file and
//! deleting its parts); a log append costs one `write` per batch and one `fdatasync` per
//! second, and Parquet files stay few and large. The price is that records reach Parquet
//! readers one publish interval late.
//!
//! [`recover`] removes incomplete `*.parquet.tmp` files (incomplete by construction).
//!
//! # Schema
//!
//! One column per [`FlowRecord`](crate::FlowRecord) field, named as the field, typed: times
//! as `Timestamp(Nanosecond, "UTC")`, unsigned integers at their widths, `f64` as `Float64`,
//! enums as their `as_str()` names, `Option` as nullable columns. Addresses are text
//! (`192.0.2.1`, `2001:db8::1`), the form every SQL engine can filter. DuckDB (2.0) reads the
//! times as `TIMESTAMPTZ_NS`, which compares with string literals (`first_seen_ns >=
//! '2023-11-14 22:00:00+00'`) but needs `first_seen_ns::TIMESTAMPTZ` to meet `TIMESTAMPTZ`
//! values such as `now()`. The file's key-value
//! metadata carries `tapvault.format_version = "1"`.

use std::{io, path::PathBuf};

mod layout;
mod reader;
mod schema;
pub(crate) mod wal;
mod writer;

pub use reader::{
    FlowPredicate, PredicateFn, ReadStats, read_flows, read_flows_filtered, read_flows_with_stats,
};
pub use writer::{FlowParquetWriter, WriterOptions, recover};

/// Key of the file-level metadata entry that carries [`FORMAT_VERSION`].
pub const FORMAT_VERSION_KEY: &str = "tapvault.format_version";
/// Version of the Parquet flow layout and schema written by this crate.
pub const FORMAT_VERSION: &str = "1";

/// An error of the flow store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A writer id that would make file names ambiguous.
    #[error("invalid writer id `{id}`: use 1 to 64 ASCII letters, digits or `_`")]
    InvalidWriterId {
        /// The rejected id.
        id: String,
    },
    /// A zstd level outside the range the codec accepts.
    #[error("invalid zstd level {level}")]
    InvalidZstdLevel {
        /// The rejected level.
        level: i32,
    },
    /// A file system operation failed.
    #[error("failed to {op} `{}`", path.display())]
    Io {
        /// What was being done ("create directory", "rename", ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The Parquet library failed to write a file.
    #[error("failed to write parquet file `{}`", path.display())]
    WriteParquet {
        /// The (temporary) file being written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: ::parquet::errors::ParquetError,
    },
    /// The Parquet library failed to read a file.
    #[error("failed to read parquet file `{}`", path.display())]
    ReadParquet {
        /// The file being read.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: ::parquet::errors::ParquetError,
    },
    /// Arrow refused to assemble or slice a batch.
    #[error("failed to build a record batch for `{}`", path.display())]
    Arrow {
        /// The file the batch belongs to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: arrow_schema::ArrowError,
    },
    /// A file written with a format version this build does not read.
    #[error("unsupported format version {version:?} in `{}`", path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Its `tapvault.format_version`.
        version: String,
    },
    /// A column is missing, has another type, or holds nulls where none are allowed.
    #[error("column `{column}` of `{}` is missing or has an unexpected type", path.display())]
    Schema {
        /// The file.
        path: PathBuf,
        /// The column.
        column: &'static str,
    },
    /// A read stopped early because its caller asked it to (see
    /// [`read_flows_filtered`]).
    #[error("read interrupted")]
    Interrupted,
    /// A column holds a value that no field value maps to (an unknown enum name).
    #[error("invalid value {value:?} in column `{column}` of `{}`", path.display())]
    InvalidValue {
        /// The file.
        path: PathBuf,
        /// The column.
        column: &'static str,
        /// The value.
        value: String,
    },
}

/// The flow store's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }
}
