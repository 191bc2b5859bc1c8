//! The Arrow schema of [`FlowRecord`] and conversions between records and record batches.
//!
//! The column list is one macro invocation: the field list is checked against the struct by
//! an exhaustive destructuring, so adding a field to `FlowRecord` without a column here does
//! not compile.

use std::{
    path::Path,
    sync::{Arc, LazyLock},
};

use arrow_array::{
    Array, ArrayRef, PrimitiveArray, RecordBatch, StringArray,
    types::{Float64Type, TimestampNanosecondType, UInt8Type, UInt16Type, UInt64Type},
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, de::IntoDeserializer};

use super::{Error, Result};
use crate::{CloseReason, FlowRecord, FlowState};

/// Time zone of the timestamp columns.
const UTC: &str = "UTC";

/// Why a column could not be read back.
pub(crate) enum ColumnError {
    /// Wrong type or unexpected nulls.
    Type,
    /// A value no field value maps to.
    Value(String),
}

/// A Rust field type and the Arrow column that stores it.
trait Column: Sized {
    const NULLABLE: bool;
    fn data_type() -> DataType;
    fn to_array<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef
    where
        Self: 'a;
    fn from_array(array: &dyn Array) -> Result<Vec<Self>, ColumnError>;
}

fn downcast<T: 'static>(array: &dyn Array) -> Result<&T, ColumnError> {
    array.as_any().downcast_ref::<T>().ok_or(ColumnError::Type)
}

macro_rules! primitive_column {
    ($($t:ty => $arrow:ty, $dt:expr;)*) => {$(
        impl Column for $t {
            const NULLABLE: bool = false;
            fn data_type() -> DataType {
                $dt
            }
            fn to_array<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef {
                Arc::new(PrimitiveArray::<$arrow>::from_iter_values(values.copied()))
            }
            fn from_array(array: &dyn Array) -> Result<Vec<Self>, ColumnError> {
                let a = downcast::<PrimitiveArray<$arrow>>(array)?;
                if a.null_count() != 0 {
                    return Err(ColumnError::Type);
                }
                Ok(a.values().to_vec())
            }
        }

        impl Column for Option<$t> {
            const NULLABLE: bool = true;
            fn data_type() -> DataType {
                $dt
            }
            fn to_array<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef {
                Arc::new(PrimitiveArray::<$arrow>::from_iter(values.copied()))
            }
            fn from_array(array: &dyn Array) -> Result<Vec<Self>, ColumnError> {
                Ok(downcast::<PrimitiveArray<$arrow>>(array)?.iter().collect())
            }
        }
    )*};
}

primitive_column! {
    u8 => UInt8Type, DataType::UInt8;
    u16 => UInt16Type, DataType::UInt16;
    u64 => UInt64Type, DataType::UInt64;
    f64 => Float64Type, DataType::Float64;
}

/// The only `i64` fields are the two times (ns since the epoch), stored as UTC timestamps so
/// that SQL engines compare them with timestamp literals.
impl Column for i64 {
    const NULLABLE: bool = false;
    fn data_type() -> DataType {
        DataType::Timestamp(TimeUnit::Nanosecond, Some(UTC.into()))
    }
    fn to_array<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef {
        Arc::new(
            PrimitiveArray::<TimestampNanosecondType>::from_iter_values(values.copied())
                .with_timezone(UTC),
        )
    }
    fn from_array(array: &dyn Array) -> Result<Vec<Self>, ColumnError> {
        let a = downcast::<PrimitiveArray<TimestampNanosecondType>>(array)?;
        if a.null_count() != 0 {
            return Err(ColumnError::Type);
        }
        Ok(a.values().to_vec())
    }
}

/// Strings, addresses included: addresses are stored as text (`192.0.2.1`, `2001:db8::1`),
/// the form every SQL engine can filter with `=`, `LIKE` or its own inet functions.
impl Column for String {
    const NULLABLE: bool = false;
    fn data_type() -> DataType {
        DataType::Utf8
    }
    fn to_array<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef {
        Arc::new(StringArray::from_iter_values(values.map(String::as_str)))
    }
    fn from_array(array: &dyn Array) -> Result<Vec<Self>, ColumnError> {
        let a = downcast::<StringArray>(array)?;
        a.iter()
            .map(|v| v.map(str::to_owned).ok_or(ColumnError::Type))
            .collect()
    }
}

impl Column for Option<String> {
    const NULLABLE: bool = true;
    fn data_type() -> DataType {
        DataType::Utf8
    }
    fn to_array<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef {
        Arc::new(StringArray::from_iter(values.map(Option::as_deref)))
    }
    fn from_array(array: &dyn Array) -> Result<Vec<Self>, ColumnError> {
        Ok(downcast::<StringArray>(array)?
            .iter()
            .map(|v| v.map(str::to_owned))
            .collect())
    }
}

/// Enums are stored as their `as_str()` names and parsed back with their serde names (the
/// same snake_case strings; the JSON writer's tests hold the two together).
macro_rules! enum_column {
    ($($t:ty),*) => {$(
        impl Column for $t {
            const NULLABLE: bool = false;
            fn data_type() -> DataType {
                DataType::Utf8
            }
            fn to_array<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef {
                Arc::new(StringArray::from_iter_values(values.map(|v| v.as_str())))
            }
            fn from_array(array: &dyn Array) -> Result<Vec<Self>, ColumnError> {
                let a = downcast::<StringArray>(array)?;
                a.iter()
                    .map(|v| {
                        let s = v.ok_or(ColumnError::Type)?;
                        let de: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
                            s.into_deserializer();
                        <$t>::deserialize(de).map_err(|_| ColumnError::Value(s.to_owned()))
                    })
                    .collect()
            }
        }
    )*};
}
enum_column!(CloseReason, FlowState);

macro_rules! flow_columns {
    ($($field:ident: $ty:ty,)*) => {
        /// Compile-time check that the column list names every field of `FlowRecord`.
        #[expect(dead_code, reason = "never called; it only has to compile")]
        fn every_field_has_a_column(r: FlowRecord) {
            let FlowRecord { $($field: _,)* } = r;
        }

        fn fields() -> Vec<Field> {
            vec![$(Field::new(
                stringify!($field),
                <$ty as Column>::data_type(),
                <$ty as Column>::NULLABLE,
            ),)*]
        }

        /// Converts records to one batch of `flow_schema()`.
        pub(crate) fn to_batch(
            records: &[FlowRecord],
        ) -> std::result::Result<RecordBatch, arrow_schema::ArrowError> {
            let columns: Vec<ArrayRef> = vec![$(
                <$ty as Column>::to_array(records.iter().map(|r| &r.$field)),
            )*];
            RecordBatch::try_new(flow_schema(), columns)
        }

        /// Converts a batch read from `path` back to records. Columns are found by name, so
        /// extra columns (or another order) are accepted; missing or retyped ones are not.
        pub(crate) fn from_batch(batch: &RecordBatch, path: &Path) -> Result<Vec<FlowRecord>> {
            let mut out = vec![FlowRecord::default(); batch.num_rows()];
            $(
                let column = stringify!($field);
                let values = batch
                    .column_by_name(column)
                    .filter(|a| *a.data_type() == <$ty as Column>::data_type())
                    .ok_or(ColumnError::Type)
                    .and_then(|a| <$ty as Column>::from_array(a.as_ref()))
                    .map_err(|e| column_error(e, path, column))?;
                for (r, v) in out.iter_mut().zip(values) {
                    r.$field = v;
                }
            )*
            Ok(out)
        }
    };
}

fn column_error(e: ColumnError, path: &Path, column: &'static str) -> Error {
    match e {
        ColumnError::Type => Error::Schema {
            path: path.to_owned(),
            column,
        },
        ColumnError::Value(value) => Error::InvalidValue {
            path: path.to_owned(),
            column,
            value,
        },
    }
}

/// The Arrow schema of a flow file (one column per `FlowRecord` field, in field order).
pub(crate) fn flow_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| Arc::new(Schema::new(fields())));
    SCHEMA.clone()
}

flow_columns! {
    flow_id: String,
    first_seen_ns: i64,
    last_seen_ns: i64,
    vlan_outer: Option<u16>,
    vlan_inner: Option<u16>,
    proto: String,
    ip_version: u8,
    client_ip: String,
    client_port: u16,
    server_ip: String,
    server_port: u16,
    client_by: String,
    packets_c2s: u64,
    packets_s2c: u64,
    bytes_c2s: u64,
    bytes_s2c: u64,
    payload_bytes_c2s: u64,
    payload_bytes_s2c: u64,
    close_reason: CloseReason,
    state: FlowState,
    ip_fragments: u64,
    retransmissions: u64,
    fast_retransmissions: u64,
    spurious_retransmissions: u64,
    retransmission_rate: f64,
    zero_window_events: u64,
    zero_window_probes: u64,
    zero_window_probe_acks: u64,
    window_full_events: u64,
    window_updates: u64,
    window_scale_client: Option<u8>,
    window_scale_server: Option<u8>,
    avg_receive_window: Option<f64>,
    out_of_order: u64,
    dup_acks: u64,
    missing_segments: u64,
    acked_unseen: u64,
    rst_count: u64,
    fin_count: u64,
    syn_count: u64,
    syn_ack_count: u64,
    keepalive_count: u64,
    keepalive_ack_count: u64,
    reused_ports: u64,
    connection_completeness: u8,
    history: String,
    initial_rtt_us: Option<f64>,
    handshake_time_us: Option<f64>,
    connection_time_us: Option<f64>,
    time_to_first_byte_us: Option<f64>,
    rtt_min_us: Option<f64>,
    rtt_max_us: Option<f64>,
    rtt_avg_us: Option<f64>,
    rtt_samples: u64,
    jitter_us: Option<f64>,
    ts_rtt_samples: u64,
    ts_rtt_min_us: Option<f64>,
    ts_rtt_avg_us: Option<f64>,
    ts_rtt_max_us: Option<f64>,
    goodput_bytes: u64,
    goodput_bytes_c2s: u64,
    goodput_bytes_s2c: u64,
    icmp_errors: u64,
    icmp_unreachable: u64,
    icmp_time_exceeded: u64,
    icmp_packet_too_big: u64,
    icmp_parameter_problem: u64,
    icmp_last_error: Option<String>,
    dns_queries: u64,
    dns_responses: u64,
    dns_nxdomain: u64,
    dns_servfail: u64,
    dns_other_errors: u64,
    dns_unanswered: u64,
    dns_latency_avg_us: Option<f64>,
    dns_latency_max_us: Option<f64>,
}
