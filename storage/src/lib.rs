//! tapvault's on-disk schema.
//!
//! The entry point is [`FlowRecord`]: one flat record per connection, whose field names are the
//! product's public schema (JSON lines, Parquet columns and API fields use them as written).
//! Live capture stores packets and records through [`PacketStore`] and [`FlowStore`] (see
//! [`store`] for the order of calls and the crash-safety guarantees).
#![deny(missing_docs)]

mod json;
mod partition;
mod record;

pub use partition::{civil_from_days, days_from_civil};
pub use record::{CloseReason, DnsRecord, FlowRecord, FlowState};
pub mod parquet;
pub use crate::parquet::{
    Error, FlowParquetWriter, FlowPredicate, ReadStats, Result, WriterOptions, read_flows,
    read_flows_filtered, read_flows_with_stats, recover,
};
pub mod pcap;
pub use crate::pcap::{PcapError, SegmentOptions, SegmentReader, SegmentWriter};
pub mod retention;
pub mod store;
pub use crate::retention::{
    DeleteReason, DeletedFile, KindReport, RetentionError, RetentionPolicy, RetentionReport,
    StoreKind,
};
pub use crate::store::{
    FlowStore, FlowStoreStats, LogFn, Maintenance, MaintenanceHandle, MaintenanceStats,
    PacketStore, PacketStoreStats, PauseReason, Shared, StoreOptions, StoreRecovery, recover_store,
};
