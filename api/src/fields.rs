//! The flow record's fields as the API sees them: name, kind, nullability and meaning, in
//! [`FlowRecord`] order. Generated from `storage/src/record.rs`; the test at the bottom keeps
//! it equal to what serde serialises.

use std::cmp::Ordering;

use tapvault_storage::FlowRecord;

/// How a field is typed in JSON and compared in filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Text (addresses, names, enums).
    Text,
    /// An unsigned (or signed) integer.
    Int,
    /// A float.
    Float,
    /// Nanoseconds since the epoch (an integer).
    Time,
}

impl Kind {
    pub(crate) fn numeric(self) -> bool {
        self != Kind::Text
    }
}

/// One field of [`FlowRecord`].
#[derive(Debug)]
pub(crate) struct Field {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    pub(crate) nullable: bool,
    pub(crate) description: &'static str,
}

#[rustfmt::skip]
pub(crate) const FIELDS: &[Field] = &[
    Field { name: "flow_id", kind: Kind::Text, nullable: false, description: "Stable id (16 hex digits), derived from the flow key and the first-seen time." },
    Field { name: "first_seen_ns", kind: Kind::Time, nullable: false, description: "First packet, nanoseconds since the Unix epoch." },
    Field { name: "last_seen_ns", kind: Kind::Time, nullable: false, description: "Last packet, nanoseconds since the Unix epoch." },
    Field { name: "vlan_outer", kind: Kind::Int, nullable: true, description: "Outer VLAN id of the first packet." },
    Field { name: "vlan_inner", kind: Kind::Int, nullable: true, description: "Inner VLAN id (QinQ) of the first packet." },
    Field { name: "proto", kind: Kind::Text, nullable: false, description: "tcp, udp, icmp, icmpv6 or the IP protocol number." },
    Field { name: "ip_version", kind: Kind::Int, nullable: false, description: "4 or 6." },
    Field { name: "client_ip", kind: Kind::Text, nullable: false, description: "Client address (sender of the first SYN; see `client_by`)." },
    Field { name: "client_port", kind: Kind::Int, nullable: false, description: "Client port (ICMP: echo identifier)." },
    Field { name: "server_ip", kind: Kind::Text, nullable: false, description: "Server address." },
    Field { name: "server_port", kind: Kind::Int, nullable: false, description: "Server port." },
    Field { name: "client_by", kind: Kind::Text, nullable: false, description: "How the client was chosen: `syn` (sender of the first SYN), `syn_ack` (receiver of the first SYN-ACK), `port` (the lower, well-known port is the server) or `first_packet`." },
    Field { name: "packets_c2s", kind: Kind::Int, nullable: false, description: "Packets client to server." },
    Field { name: "packets_s2c", kind: Kind::Int, nullable: false, description: "Packets server to client." },
    Field { name: "bytes_c2s", kind: Kind::Int, nullable: false, description: "Frame bytes (as on the wire) client to server." },
    Field { name: "bytes_s2c", kind: Kind::Int, nullable: false, description: "Frame bytes server to client." },
    Field { name: "payload_bytes_c2s", kind: Kind::Int, nullable: false, description: "Transport payload bytes client to server (tcp.len / UDP payload)." },
    Field { name: "payload_bytes_s2c", kind: Kind::Int, nullable: false, description: "Transport payload bytes server to client." },
    Field { name: "close_reason", kind: Kind::Text, nullable: false, description: "Why this record was emitted." },
    Field { name: "state", kind: Kind::Text, nullable: false, description: "Readable verdict." },
    Field { name: "ip_fragments", kind: Kind::Int, nullable: false, description: "Non-first IP fragments (or first fragments without a full transport header) of this flow; their payload is not analysed." },
    Field { name: "retransmissions", kind: Kind::Int, nullable: false, description: "Frames tshark flags `tcp.analysis.retransmission` (includes fast and spurious ones)." },
    Field { name: "fast_retransmissions", kind: Kind::Int, nullable: false, description: "Frames flagged `tcp.analysis.fast_retransmission`." },
    Field { name: "spurious_retransmissions", kind: Kind::Int, nullable: false, description: "Frames flagged `tcp.analysis.spurious_retransmission`." },
    Field { name: "retransmission_rate", kind: Kind::Float, nullable: false, description: "retransmissions / data-carrying segments, 0.0 to 1.0." },
    Field { name: "zero_window_events", kind: Kind::Int, nullable: false, description: "Frames flagged `tcp.analysis.zero_window`." },
    Field { name: "zero_window_probes", kind: Kind::Int, nullable: false, description: "Frames flagged `tcp.analysis.zero_window_probe`." },
    Field { name: "zero_window_probe_acks", kind: Kind::Int, nullable: false, description: "Frames flagged `tcp.analysis.zero_window_probe_ack`." },
    Field { name: "window_full_events", kind: Kind::Int, nullable: false, description: "Frames flagged `tcp.analysis.window_full`." },
    Field { name: "window_updates", kind: Kind::Int, nullable: false, description: "Frames flagged `tcp.analysis.window_update`." },
    Field { name: "window_scale_client", kind: Kind::Int, nullable: true, description: "Window scale shift from the client's SYN (raw option value)." },
    Field { name: "window_scale_server", kind: Kind::Int, nullable: true, description: "Window scale shift from the server's SYN-ACK (raw option value)." },
    Field { name: "avg_receive_window", kind: Kind::Float, nullable: true, description: "Mean effective (scaled) advertised window over non-SYN segments, bytes." },
    Field { name: "out_of_order", kind: Kind::Int, nullable: false, description: "Frames flagged `tcp.analysis.out_of_order`." },
    Field { name: "dup_acks", kind: Kind::Int, nullable: false, description: "Frames flagged `tcp.analysis.duplicate_ack`." },
    Field { name: "missing_segments", kind: Kind::Int, nullable: false, description: "Frames flagged `tcp.analysis.lost_segment` (previous segment not captured)." },
    Field { name: "acked_unseen", kind: Kind::Int, nullable: false, description: "Frames flagged `tcp.analysis.ack_lost_segment` (ACKed segment that wasn't captured)." },
    Field { name: "rst_count", kind: Kind::Int, nullable: false, description: "RST segments, both directions." },
    Field { name: "fin_count", kind: Kind::Int, nullable: false, description: "FIN segments, both directions." },
    Field { name: "syn_count", kind: Kind::Int, nullable: false, description: "SYN segments (with or without ACK), both directions." },
    Field { name: "syn_ack_count", kind: Kind::Int, nullable: false, description: "SYN-ACK segments." },
    Field { name: "keepalive_count", kind: Kind::Int, nullable: false, description: "Frames flagged `tcp.analysis.keep_alive`." },
    Field { name: "keepalive_ack_count", kind: Kind::Int, nullable: false, description: "Frames flagged `tcp.analysis.keep_alive_ack`." },
    Field { name: "reused_ports", kind: Kind::Int, nullable: false, description: "Frames flagged `tcp.analysis.reused_ports`." },
    Field { name: "connection_completeness", kind: Kind::Int, nullable: false, description: "Wireshark's `tcp.completeness` bitmask: 1 SYN, 2 SYN-ACK, 4 ACK, 8 DATA, 16 FIN, 32 RST." },
    Field { name: "history", kind: Kind::Text, nullable: false, description: "Zeek-style history: upper case from the client, lower case from the server; S syn, H syn-ack, A pure ack, D data, F fin, R rst, T retransmission, W zero window; each letter at most once per direction in order of first appearance." },
    Field { name: "initial_rtt_us", kind: Kind::Float, nullable: true, description: "SYN to SYN-ACK at the capture point." },
    Field { name: "handshake_time_us", kind: Kind::Float, nullable: true, description: "SYN to the ACK completing the handshake (Wireshark's `tcp.analysis.initial_rtt`)." },
    Field { name: "connection_time_us", kind: Kind::Float, nullable: true, description: "SYN to the first payload byte (either direction)." },
    Field { name: "time_to_first_byte_us", kind: Kind::Float, nullable: true, description: "First client payload to first server payload." },
    Field { name: "rtt_min_us", kind: Kind::Float, nullable: true, description: "Minimum of the data-to-ACK RTT samples (Wireshark's `tcp.analysis.ack_rtt`)." },
    Field { name: "rtt_max_us", kind: Kind::Float, nullable: true, description: "Maximum of the data-to-ACK RTT samples." },
    Field { name: "rtt_avg_us", kind: Kind::Float, nullable: true, description: "Mean of the data-to-ACK RTT samples." },
    Field { name: "rtt_samples", kind: Kind::Int, nullable: false, description: "Number of data-to-ACK RTT samples (frames carrying `tcp.analysis.ack_rtt`)." },
    Field { name: "jitter_us", kind: Kind::Float, nullable: true, description: "Standard deviation of the data-to-ACK RTT samples." },
    Field { name: "ts_rtt_samples", kind: Kind::Int, nullable: false, description: "RTT samples from TCP timestamps (TSval echoed in TSecr), count." },
    Field { name: "ts_rtt_min_us", kind: Kind::Float, nullable: true, description: "Minimum timestamp-based RTT." },
    Field { name: "ts_rtt_avg_us", kind: Kind::Float, nullable: true, description: "Mean timestamp-based RTT." },
    Field { name: "ts_rtt_max_us", kind: Kind::Float, nullable: true, description: "Maximum timestamp-based RTT." },
    Field { name: "goodput_bytes", kind: Kind::Int, nullable: false, description: "Payload bytes delivered once (retransmitted bytes excluded), both directions." },
    Field { name: "goodput_bytes_c2s", kind: Kind::Int, nullable: false, description: "Goodput client to server." },
    Field { name: "goodput_bytes_s2c", kind: Kind::Int, nullable: false, description: "Goodput server to client." },
    Field { name: "icmp_errors", kind: Kind::Int, nullable: false, description: "ICMP/ICMPv6 error messages whose quoted header belongs to this flow." },
    Field { name: "icmp_unreachable", kind: Kind::Int, nullable: false, description: "Of those: destination unreachable (ICMPv6: type 1)." },
    Field { name: "icmp_time_exceeded", kind: Kind::Int, nullable: false, description: "Of those: time exceeded." },
    Field { name: "icmp_packet_too_big", kind: Kind::Int, nullable: false, description: "Of those: fragmentation needed (v4 type 3 code 4) or packet too big (v6 type 2)." },
    Field { name: "icmp_parameter_problem", kind: Kind::Int, nullable: false, description: "Of those: parameter problem." },
    Field { name: "icmp_last_error", kind: Kind::Text, nullable: true, description: "Type and code of the last ICMP error, as \"type/code\"." },
    Field { name: "dns_queries", kind: Kind::Int, nullable: false, description: "DNS queries seen." },
    Field { name: "dns_responses", kind: Kind::Int, nullable: false, description: "DNS responses matched to a query." },
    Field { name: "dns_nxdomain", kind: Kind::Int, nullable: false, description: "Responses with RCODE NXDOMAIN." },
    Field { name: "dns_servfail", kind: Kind::Int, nullable: false, description: "Responses with RCODE SERVFAIL." },
    Field { name: "dns_other_errors", kind: Kind::Int, nullable: false, description: "Responses with any other non-zero RCODE." },
    Field { name: "dns_unanswered", kind: Kind::Int, nullable: false, description: "Queries never answered by the time the flow ended." },
    Field { name: "dns_latency_avg_us", kind: Kind::Float, nullable: true, description: "Mean query-to-response latency." },
    Field { name: "dns_latency_max_us", kind: Kind::Float, nullable: true, description: "Maximum query-to-response latency." },
];

/// The index of a field by name.
pub(crate) fn field_index(name: &str) -> Option<usize> {
    FIELDS.iter().position(|f| f.name == name)
}

/// A field's value, borrowed from a record or a column.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Value<'a> {
    Null,
    Int(i128),
    Float(f64),
    Text(&'a str),
}

impl Value<'_> {
    /// As a number (integers widened), for comparisons between numeric fields.
    pub(crate) fn num(&self) -> Option<f64> {
        match *self {
            Value::Int(i) => Some(i as f64),
            Value::Float(f) => Some(f),
            _ => None,
        }
    }

    pub(crate) fn to_owned(self) -> OwnedValue {
        match self {
            Value::Null => OwnedValue::Null,
            Value::Int(i) => OwnedValue::Int(i),
            Value::Float(f) => OwnedValue::Float(f),
            Value::Text(s) => OwnedValue::Text(s.to_owned()),
        }
    }
}

/// An owned [`Value`] (sort keys, cursors).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "t", content = "v")]
pub(crate) enum OwnedValue {
    Null,
    Int(i128),
    Float(f64),
    Text(String),
}

impl OwnedValue {
    /// A total order of values of one field: nulls sort after every value in both directions
    /// (so `ascending` matters here), floats by `total_cmp`.
    pub(crate) fn cmp_dir(&self, other: &OwnedValue, ascending: bool) -> Ordering {
        use OwnedValue::*;
        let ord = match (self, other) {
            (Null, Null) => return Ordering::Equal,
            (Null, _) => return Ordering::Greater,
            (_, Null) => return Ordering::Less,
            (Int(a), Int(b)) => a.cmp(b),
            (Float(a), Float(b)) => a.total_cmp(b),
            (Int(a), Float(b)) => (*a as f64).total_cmp(b),
            (Float(a), Int(b)) => a.total_cmp(&(*b as f64)),
            (Text(a), Text(b)) => a.cmp(b),
            // Mixed kinds never occur within one field; order them stably anyway.
            (Text(_), _) => Ordering::Greater,
            (_, Text(_)) => Ordering::Less,
        };
        if ascending { ord } else { ord.reverse() }
    }
}

/// The value of field `i` of a record.
pub(crate) fn value(r: &FlowRecord, i: usize) -> Value<'_> {
    match i {
        0 => Value::Text(&r.flow_id),
        1 => Value::Int(i128::from(r.first_seen_ns)),
        2 => Value::Int(i128::from(r.last_seen_ns)),
        3 => r
            .vlan_outer
            .map_or(Value::Null, |v| Value::Int(i128::from(v))),
        4 => r
            .vlan_inner
            .map_or(Value::Null, |v| Value::Int(i128::from(v))),
        5 => Value::Text(&r.proto),
        6 => Value::Int(i128::from(r.ip_version)),
        7 => Value::Text(&r.client_ip),
        8 => Value::Int(i128::from(r.client_port)),
        9 => Value::Text(&r.server_ip),
        10 => Value::Int(i128::from(r.server_port)),
        11 => Value::Text(&r.client_by),
        12 => Value::Int(i128::from(r.packets_c2s)),
        13 => Value::Int(i128::from(r.packets_s2c)),
        14 => Value::Int(i128::from(r.bytes_c2s)),
        15 => Value::Int(i128::from(r.bytes_s2c)),
        16 => Value::Int(i128::from(r.payload_bytes_c2s)),
        17 => Value::Int(i128::from(r.payload_bytes_s2c)),
        18 => Value::Text(r.close_reason.as_str()),
        19 => Value::Text(r.state.as_str()),
        20 => Value::Int(i128::from(r.ip_fragments)),
        21 => Value::Int(i128::from(r.retransmissions)),
        22 => Value::Int(i128::from(r.fast_retransmissions)),
        23 => Value::Int(i128::from(r.spurious_retransmissions)),
        24 => Value::Float(r.retransmission_rate),
        25 => Value::Int(i128::from(r.zero_window_events)),
        26 => Value::Int(i128::from(r.zero_window_probes)),
        27 => Value::Int(i128::from(r.zero_window_probe_acks)),
        28 => Value::Int(i128::from(r.window_full_events)),
        29 => Value::Int(i128::from(r.window_updates)),
        30 => r
            .window_scale_client
            .map_or(Value::Null, |v| Value::Int(i128::from(v))),
        31 => r
            .window_scale_server
            .map_or(Value::Null, |v| Value::Int(i128::from(v))),
        32 => r.avg_receive_window.map_or(Value::Null, Value::Float),
        33 => Value::Int(i128::from(r.out_of_order)),
        34 => Value::Int(i128::from(r.dup_acks)),
        35 => Value::Int(i128::from(r.missing_segments)),
        36 => Value::Int(i128::from(r.acked_unseen)),
        37 => Value::Int(i128::from(r.rst_count)),
        38 => Value::Int(i128::from(r.fin_count)),
        39 => Value::Int(i128::from(r.syn_count)),
        40 => Value::Int(i128::from(r.syn_ack_count)),
        41 => Value::Int(i128::from(r.keepalive_count)),
        42 => Value::Int(i128::from(r.keepalive_ack_count)),
        43 => Value::Int(i128::from(r.reused_ports)),
        44 => Value::Int(i128::from(r.connection_completeness)),
        45 => Value::Text(&r.history),
        46 => r.initial_rtt_us.map_or(Value::Null, Value::Float),
        47 => r.handshake_time_us.map_or(Value::Null, Value::Float),
        48 => r.connection_time_us.map_or(Value::Null, Value::Float),
        49 => r.time_to_first_byte_us.map_or(Value::Null, Value::Float),
        50 => r.rtt_min_us.map_or(Value::Null, Value::Float),
        51 => r.rtt_max_us.map_or(Value::Null, Value::Float),
        52 => r.rtt_avg_us.map_or(Value::Null, Value::Float),
        53 => Value::Int(i128::from(r.rtt_samples)),
        54 => r.jitter_us.map_or(Value::Null, Value::Float),
        55 => Value::Int(i128::from(r.ts_rtt_samples)),
        56 => r.ts_rtt_min_us.map_or(Value::Null, Value::Float),
        57 => r.ts_rtt_avg_us.map_or(Value::Null, Value::Float),
        58 => r.ts_rtt_max_us.map_or(Value::Null, Value::Float),
        59 => Value::Int(i128::from(r.goodput_bytes)),
        60 => Value::Int(i128::from(r.goodput_bytes_c2s)),
        61 => Value::Int(i128::from(r.goodput_bytes_s2c)),
        62 => Value::Int(i128::from(r.icmp_errors)),
        63 => Value::Int(i128::from(r.icmp_unreachable)),
        64 => Value::Int(i128::from(r.icmp_time_exceeded)),
        65 => Value::Int(i128::from(r.icmp_packet_too_big)),
        66 => Value::Int(i128::from(r.icmp_parameter_problem)),
        67 => r
            .icmp_last_error
            .as_deref()
            .map_or(Value::Null, Value::Text),
        68 => Value::Int(i128::from(r.dns_queries)),
        69 => Value::Int(i128::from(r.dns_responses)),
        70 => Value::Int(i128::from(r.dns_nxdomain)),
        71 => Value::Int(i128::from(r.dns_servfail)),
        72 => Value::Int(i128::from(r.dns_other_errors)),
        73 => Value::Int(i128::from(r.dns_unanswered)),
        74 => r.dns_latency_avg_us.map_or(Value::Null, Value::Float),
        75 => r.dns_latency_max_us.map_or(Value::Null, Value::Float),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table lists exactly the fields serde writes, in order, with the right kinds.
    #[test]
    fn fields_match_flow_record() {
        let rec = FlowRecord {
            vlan_outer: Some(1),
            vlan_inner: Some(1),
            window_scale_client: Some(1),
            window_scale_server: Some(1),
            avg_receive_window: Some(1.5),
            initial_rtt_us: Some(1.5),
            handshake_time_us: Some(1.5),
            connection_time_us: Some(1.5),
            time_to_first_byte_us: Some(1.5),
            rtt_min_us: Some(1.5),
            rtt_max_us: Some(1.5),
            rtt_avg_us: Some(1.5),
            jitter_us: Some(1.5),
            ts_rtt_min_us: Some(1.5),
            ts_rtt_avg_us: Some(1.5),
            ts_rtt_max_us: Some(1.5),
            icmp_last_error: Some("3/1".into()),
            dns_latency_avg_us: Some(1.5),
            dns_latency_max_us: Some(1.5),
            ..FlowRecord::default()
        };
        let json = serde_json::to_string(&rec).unwrap();
        // serde_json's Map sorts keys; read the order from the text instead.
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let obj = v.as_object().unwrap();
        assert_eq!(obj.len(), FIELDS.len());
        let mut last = 0;
        for (i, f) in FIELDS.iter().enumerate() {
            let pos = json.find(&format!("\"{}\":", f.name)).expect(f.name);
            assert!(pos >= last, "{} out of order", f.name);
            last = pos;
            let j = &obj[f.name];
            let ok = match (f.kind, value(&rec, i)) {
                (Kind::Text, Value::Text(s)) => j.as_str() == Some(s),
                (Kind::Int | Kind::Time, Value::Int(n)) => j.as_i64().map(i128::from) == Some(n),
                (Kind::Float, Value::Float(x)) => j.as_f64() == Some(x),
                _ => false,
            };
            assert!(ok, "{}: kind {:?} vs {j}", f.name, f.kind);
            let nullable = FlowRecord::default();
            assert_eq!(
                matches!(value(&nullable, i), Value::Null),
                f.nullable,
                "{} nullability",
                f.name
            );
        }
    }
}
