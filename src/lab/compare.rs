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

/// How far two time fields may differ, microseconds.
pub(crate) const TIME_TOLERANCE_US: f64 = 1000.0;

/// The result of a comparison.
pub(crate) struct Comparison {
    /// Flows found on both sides.
    pub(crate) matched: usize,
    /// Readable differences, one per field (or per unmatched flow).
    pub(crate) differences: Vec<String>,
}

impl Comparison {
    pub(crate) fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "matched": self.matched,
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

/// Compares `live` with `reference`.
pub(crate) fn compare(live: &[FlowRecord], reference: &[FlowRecord]) -> Comparison {
    let mut groups: BTreeMap<String, (Vec<&FlowRecord>, Vec<&FlowRecord>)> = BTreeMap::new();
    for r in live {
        groups.entry(key(r)).or_default().0.push(r);
    }
    for r in reference {
        groups.entry(key(r)).or_default().1.push(r);
    }
    let mut c = Comparison {
        matched: 0,
        differences: Vec::new(),
    };
    for (k, (mut l, mut r)) in groups {
        l.sort_by_key(|x| x.first_seen_ns);
        r.sort_by_key(|x| x.first_seen_ns);
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
                if field == "flow_id" {
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
        let c = compare(&[a.clone()], &[b.clone()]);
        assert_eq!(
            (c.matched, c.differences.len()),
            (1, 0),
            "{:?}",
            c.differences
        );
        b.retransmissions = 1;
        assert_eq!(compare(&[a.clone()], &[b.clone()]).differences.len(), 1);
        b.retransmissions = 0;
        b.first_seen_ns += 2_000_000;
        assert_eq!(compare(&[a.clone()], &[b]).differences.len(), 1);
        let c = compare(&[a.clone(), rec(1001, 0)], &[a]);
        assert_eq!(c.differences.len(), 1, "{:?}", c.differences);
    }
}
