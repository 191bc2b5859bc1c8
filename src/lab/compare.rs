//! Live capture against the reference: the records tapvault produced while capturing live,
//! field by field, against `tapvault analyze` on a tcpdump capture of the same traffic (a
//! second mirror of the same port).
//!
//! Flows are paired by protocol, addresses and ports (in first-seen order when a 4-tuple
//! was reused). Every field must be equal, except those made of time: the two captures
//! stamp each frame independently (the XDP program or the AF_PACKET ring on one side,
//! tcpdump's ring on the other), so timestamps, latencies and the flow id (which hashes the
//! first-seen time) may differ by the stamping jitter. Time fields (`*_ns`, `*_us`) must
//! agree within [`TIME_TOLERANCE_US`].

use std::collections::BTreeMap;

use tapvault_storage::FlowRecord;

/// Flows to multicast groups (IPv6 MLD reports and router solicitations the lab's own
/// interfaces send when they come up) are not compared: the two captures start a moment
/// apart and such a flow's first packets can fall in between.
fn is_multicast_noise(r: &FlowRecord) -> bool {
    r.server_ip
        .parse::<std::net::IpAddr>()
        .is_ok_and(|a| a.is_multicast())
}

/// How far two time fields may differ, microseconds.
pub(crate) const TIME_TOLERANCE_US: f64 = 1000.0;

/// The result of a comparison.
pub(crate) struct Comparison {
    /// Flows found on both sides.
    pub(crate) matched: usize,
    /// Multicast flows not compared (see [`is_multicast_noise`]).
    pub(crate) ignored: usize,
    /// Readable differences, one per field (or per unmatched flow).
    pub(crate) differences: Vec<String>,
}

impl Comparison {
    pub(crate) fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "matched": self.matched,
            "ignored_multicast": self.ignored,
            "time_tolerance_us": TIME_TOLERANCE_US,
            "differences": self.differences,
        })
    }
}

fn key(r: &FlowRecord) -> String {
    format!(
        "{} {}:{} -> {}:{}",
        r.proto, r.client_ip, r.client_port, r.server_ip, r.server_port
    )
}

fn is_time(field: &str) -> bool {
    field.ends_with("_ns") || field.ends_with("_us")
}

fn close_enough(field: &str, a: &serde_json::Value, b: &serde_json::Value) -> bool {
    if a == b {
        return true;
    }
    let (Some(x), Some(y)) = (a.as_f64(), b.as_f64()) else {
        return false;
    };
    let us = if field.ends_with("_ns") { 1e3 } else { 1.0 };
    (x - y).abs() / us <= TIME_TOLERANCE_US
}

/// The fields that do not depend on the order in which a flow's frames were analysed:
/// all that can be compared when the two directions of a flow came through different
/// queues whose timestamps are not comparable at the microsecond level (veth stamps a
/// frame when its queue's NAPI poll runs, not when it was sent).
pub(crate) const ORDER_FREE: &[&str] = &[
    "proto",
    "ip_version",
    "packets_c2s",
    "packets_s2c",
    "bytes_c2s",
    "bytes_s2c",
    "payload_bytes_c2s",
    "payload_bytes_s2c",
    "syn_count",
    "syn_ack_count",
    "fin_count",
    "rst_count",
    "window_scale_client",
    "window_scale_server",
];

/// Compares `live` with `reference`: every field, or with `order_free` only
/// [`ORDER_FREE`] (and the time fields, within the tolerance).
pub(crate) fn compare(
    live: &[FlowRecord],
    reference: &[FlowRecord],
    order_free: bool,
) -> Comparison {
    let mut groups: BTreeMap<String, (Vec<&FlowRecord>, Vec<&FlowRecord>)> = BTreeMap::new();
    for r in live {
        groups.entry(key(r)).or_default().0.push(r);
    }
    for r in reference {
        groups.entry(key(r)).or_default().1.push(r);
    }
    let mut c = Comparison {
        matched: 0,
        ignored: 0,
        differences: Vec::new(),
    };
    for (k, (mut l, mut r)) in groups {
        l.sort_by_key(|x| x.first_seen_ns);
        r.sort_by_key(|x| x.first_seen_ns);
        if l.iter().chain(&r).all(|x| is_multicast_noise(x)) {
            c.ignored += l.len() + r.len();
            continue;
        }
        if l.len() != r.len() {
            c.differences.push(format!(
                "{k}: {} live record(s), {} reference record(s)",
                l.len(),
                r.len()
            ));
            continue;
        }
        for (a, b) in l.iter().zip(&r) {
            c.matched += 1;
            let (Ok(serde_json::Value::Object(a)), Ok(b)) =
                (serde_json::to_value(a), serde_json::to_value(b))
            else {
                c.differences.push(format!("{k}: cannot serialise"));
                continue;
            };
            for (field, va) in &a {
                if field == "flow_id"
                    || (order_free
                        && !field.ends_with("_ns")
                        && !ORDER_FREE.contains(&field.as_str()))
                {
                    continue;
                }
                let vb = &b[field.as_str()];
                let same = if is_time(field) {
                    close_enough(field, va, vb)
                } else {
                    va == vb
                };
                if !same {
                    c.differences
                        .push(format!("{k}: {field}: live {va}, reference {vb}"));
                }
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(port: u16, first: i64) -> FlowRecord {
        FlowRecord {
            proto: "tcp".into(),
            client_ip: "10.0.0.1".into(),
            client_port: port,
            server_ip: "10.0.0.2".into(),
            server_port: 80,
            first_seen_ns: first,
            ..FlowRecord::default()
        }
    }

    #[test]
    fn counts_must_match_and_times_may_jitter() {
        let a = rec(1000, 1_000_000_000);
        let mut b = rec(1000, 1_000_400_000);
        b.flow_id = "different".into();
        let c = compare(std::slice::from_ref(&a), std::slice::from_ref(&b), false);
        assert_eq!(
            (c.matched, c.differences.len()),
            (1, 0),
            "{:?}",
            c.differences
        );
        b.retransmissions = 1;
        assert_eq!(
            compare(std::slice::from_ref(&a), std::slice::from_ref(&b), false)
                .differences
                .len(),
            1
        );
        b.retransmissions = 0;
        b.first_seen_ns += 2_000_000;
        assert_eq!(
            compare(std::slice::from_ref(&a), &[b], false)
                .differences
                .len(),
            1
        );
        let c = compare(&[a.clone(), rec(1001, 0)], &[a], false);
        assert_eq!(c.differences.len(), 1, "{:?}", c.differences);
    }
}
