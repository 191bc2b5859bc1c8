//! A fast JSON-lines writer for [`FlowRecord`]: the same document `serde_json` produces
//! (field names, order and values), without runtime key escaping or a serializer state
//! machine, because an analysis writes hundreds of thousands of records.

use std::io::Write;

use crate::{CloseReason, FlowRecord, FlowState};

/// A value that knows how to write itself as JSON.
trait JsonValue {
    fn write(&self, out: &mut Vec<u8>);
}

macro_rules! int_json {
    ($($t:ty),*) => {$(
        impl JsonValue for $t {
            fn write(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(itoa::Buffer::new().format(*self).as_bytes());
            }
        }
    )*};
}
int_json!(u8, u16, u64, i64);

impl JsonValue for f64 {
    fn write(&self, out: &mut Vec<u8>) {
        // serde_json's own float formatting (and null for non-finite values), so the
        // document is byte-for-byte the one serde would write. Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, self);
    }
}

impl JsonValue for String {
    fn write(&self, out: &mut Vec<u8>) {
        write_str(out, self);
    }
}

impl<T: JsonValue> JsonValue for Option<T> {
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Some(v) => v.write(out),
            None => out.extend_from_slice(b"null"),
        }
    }
}

impl JsonValue for CloseReason {
    fn write(&self, out: &mut Vec<u8>) {
        write_str(out, self.as_str());
    }
}

impl JsonValue for FlowState {
    fn write(&self, out: &mut Vec<u8>) {
        write_str(out, self.as_str());
    }
}

/// A JSON string with the escapes serde_json uses.
fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                let _ = write!(out, "\\u{b:04x}");
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

macro_rules! record_json {
    ($rec:expr, $out:expr, $first:ident, $($field:ident,)*) => {{
        $out.extend_from_slice(concat!("{\"", stringify!($first), "\":").as_bytes());
        $rec.$first.write($out);
        $(
            $out.extend_from_slice(concat!(",\"", stringify!($field), "\":").as_bytes());
            $rec.$field.write($out);
        )*
        $out.push(b'}');
    }};
}

impl FlowRecord {
    /// Appends this record as one line of JSON (with the trailing newline) to `out`.
    pub fn write_json_line(&self, out: &mut Vec<u8>) {
        record_json!(
            self,
            out,
            flow_id,
            first_seen_ns,
            last_seen_ns,
            vlan_outer,
            vlan_inner,
            proto,
            ip_version,
            client_ip,
            client_port,
            server_ip,
            server_port,
            client_by,
            packets_c2s,
            packets_s2c,
            bytes_c2s,
            bytes_s2c,
            payload_bytes_c2s,
            payload_bytes_s2c,
            close_reason,
            state,
            ip_fragments,
            retransmissions,
            fast_retransmissions,
            spurious_retransmissions,
            retransmission_rate,
            zero_window_events,
            zero_window_probes,
            zero_window_probe_acks,
            window_full_events,
            window_updates,
            window_scale_client,
            window_scale_server,
            avg_receive_window,
            out_of_order,
            dup_acks,
            missing_segments,
            acked_unseen,
            rst_count,
            fin_count,
            syn_count,
            syn_ack_count,
            keepalive_count,
            keepalive_ack_count,
            reused_ports,
            connection_completeness,
            history,
            initial_rtt_us,
            handshake_time_us,
            connection_time_us,
            time_to_first_byte_us,
            rtt_min_us,
            rtt_max_us,
            rtt_avg_us,
            rtt_samples,
            jitter_us,
            ts_rtt_samples,
            ts_rtt_min_us,
            ts_rtt_avg_us,
            ts_rtt_max_us,
            goodput_bytes,
            goodput_bytes_c2s,
            goodput_bytes_s2c,
            icmp_errors,
            icmp_unreachable,
            icmp_time_exceeded,
            icmp_packet_too_big,
            icmp_parameter_problem,
            icmp_last_error,
            dns_queries,
            dns_responses,
            dns_nxdomain,
            dns_servfail,
            dns_other_errors,
            dns_unanswered,
            dns_latency_avg_us,
            dns_latency_max_us,
        );
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_document_as_serde_json() {
        for i in 0..50 {
            let r = sample(i);
            let mut ours = Vec::new();
            r.write_json_line(&mut ours);
            assert_eq!(ours.last(), Some(&b'\n'));
            let mut theirs = serde_json::to_vec(&r).unwrap();
            theirs.push(b'\n');
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                String::from_utf8(theirs).unwrap()
            );
        }
    }

    fn sample(i: u32) -> FlowRecord {
        FlowRecord {
            flow_id: format!("{i:016x}"),
            first_seen_ns: 1_700_000_000_000_000_000 + i64::from(i),
            last_seen_ns: -5,
            vlan_outer: i.is_multiple_of(2).then_some(100),
            proto: "tcp".into(),
            ip_version: 6,
            client_ip: "fe80::1".into(),
            client_port: 65535,
            history: "Sh\"A\\D\n\u{1}é".into(),
            close_reason: CloseReason::IdleTimeout,
            state: FlowState::HalfClosed,
            retransmission_rate: f64::from(i) / 7.0,
            avg_receive_window: Some(1e300),
            initial_rtt_us: Some(0.1 + f64::from(i)),
            jitter_us: Some(f64::NAN),
            rtt_max_us: Some(123456789.0),
            icmp_last_error: Some("3/4".into()),
            goodput_bytes: u64::MAX - u64::from(i),
            ..Default::default()
        }
    }
}
