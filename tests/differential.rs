//! For every capture in `../shared/testdata/captures/` and every TCP stream in its
//! `*.expected.json` (made by tshark 4.0.17), tapvault's record must carry the same counts of
//! each Wireshark-flagged event, flag counts, completeness, window scale, iRTT, ack RTT
//! statistics and volumes. Every remaining difference is listed, with its reason, in
//! `docs/tshark-differences.md`; this test asserts exactly that list, so it fails when a match
//! is lost or a new difference appears.

use std::{collections::BTreeSet, path::Path};

use serde_json::Value;

use crate::util::{analyze_json, epoch_ns, shared_dir};

/// tshark has no flow timeouts: a file analysis compared with it runs without them (a closed
/// flow lingers for a year). Timeouts are a deployment choice, tested elsewhere.
pub(crate) const NO_TIMEOUTS: &[&str] = &[
    "--idle-timeout",
    "0",
    "--stale-timeout",
    "0",
    "--close-linger",
    "31536000",
];

/// (expected flag key, record field)
const FLAGS: [(&str, &str); 15] = [
    ("retransmission", "retransmissions"),
    ("fast_retransmission", "fast_retransmissions"),
    ("spurious_retransmission", "spurious_retransmissions"),
    ("duplicate_ack", "dup_acks"),
    ("out_of_order", "out_of_order"),
    ("lost_segment", "missing_segments"),
    ("ack_lost_segment", "acked_unseen"),
    ("zero_window", "zero_window_events"),
    ("zero_window_probe", "zero_window_probes"),
    ("zero_window_probe_ack", "zero_window_probe_acks"),
    ("window_full", "window_full_events"),
    ("window_update", "window_updates"),
    ("keep_alive", "keepalive_count"),
    ("keep_alive_ack", "keepalive_ack_count"),
    ("reused_ports", "reused_ports"),
];

/// One difference: (capture, stream, field, tshark value, tapvault value).
pub(crate) type Diff = (String, String, String, String, String);

fn show(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
                format!("{f:.9}")
                    .trim_end_matches('0')
                    .trim_end_matches('.')
                    .to_string()
            } else {
                n.to_string()
            }
        }
        other => other.to_string(),
    }
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("field {k} missing in {v}"))
}

/// Seconds (tshark) and microseconds (tapvault) agree to the nanosecond.
fn same_time(sec: &Value, us: &Value) -> bool {
    match (sec.as_f64(), us.as_f64()) {
        (None, None) => true,
        (Some(s), Some(u)) => ((s * 1e9).round() - (u * 1e3).round()).abs() <= 1.0,
        _ => false,
    }
}

/// Compares one capture's records with its expected file.
pub(crate) fn compare(name: &str, expected: &Value, records: &[Value]) -> Vec<Diff> {
    let mut diffs = Vec::new();
    let tcp: Vec<&Value> = records.iter().filter(|r| r["proto"] == "tcp").collect();
    let mut used = BTreeSet::new();
    let streams = expected["streams"].as_array().expect("streams");
    for s in streams {
        let sid = s["stream"].to_string();
        let mut d = |field: &str, e: String, a: String| {
            diffs.push((name.to_string(), sid.clone(), field.to_string(), e, a));
        };
        let ca = s["client_addr"].as_str().expect("client_addr");
        let cp = u(s, "client_port");
        let sa = s["server_addr"].as_str().expect("server_addr");
        let sp = u(s, "server_port");
        let first = epoch_ns(s["first_ts"].as_str().expect("first_ts"));
        let found = tcp.iter().enumerate().find(|(i, r)| {
            !used.contains(i)
                && r["first_seen_ns"].as_i64() == Some(first)
                && ((r["client_ip"] == ca
                    && u(r, "client_port") == cp
                    && r["server_ip"] == sa
                    && u(r, "server_port") == sp)
                    || (r["client_ip"] == sa
                        && u(r, "client_port") == sp
                        && r["server_ip"] == ca
                        && u(r, "server_port") == cp))
        });
        let Some((i, r)) = found else {
            d("record", "present".into(), "missing".into());
            continue;
        };
        used.insert(i);
        // Orientation: tshark's client may differ from ours when no SYN was seen.
        let same = r["client_ip"] == ca && u(r, "client_port") == cp;
        let (c2s, s2c) = if same { ("c2s", "s2c") } else { ("s2c", "c2s") };
        for (e, a) in [
            ("packets_c2s", format!("packets_{c2s}")),
            ("packets_s2c", format!("packets_{s2c}")),
            ("bytes_c2s", format!("bytes_{c2s}")),
            ("bytes_s2c", format!("bytes_{s2c}")),
            ("payload_bytes_c2s", format!("payload_bytes_{c2s}")),
            ("payload_bytes_s2c", format!("payload_bytes_{s2c}")),
        ] {
            if s[e] != r[&a] {
                d(e, show(&s[e]), show(&r[&a]));
            }
        }
        for (e, a) in FLAGS {
            if s["flags"][e] != r[a] {
                d(e, show(&s["flags"][e]), show(&r[a]));
            }
        }
        let syn_total = u(s, "syn") + u(s, "syn_ack");
        if syn_total != u(r, "syn_count") {
            d("syn_count", syn_total.to_string(), show(&r["syn_count"]));
        }
        for (e, a) in [
            ("syn_ack", "syn_ack_count"),
            ("fin", "fin_count"),
            ("rst", "rst_count"),
            ("completeness", "connection_completeness"),
            ("wscale_client", "window_scale_client"),
            ("wscale_server", "window_scale_server"),
            ("icmp_error_frames", "icmp_errors"),
        ] {
            if s[e] != r[a] {
                d(e, show(&s[e]), show(&r[a]));
            }
        }
        if !same_time(&s["initial_rtt_s"], &r["handshake_time_us"]) {
            d(
                "initial_rtt",
                show(&s["initial_rtt_s"]),
                show(&r["handshake_time_us"]),
            );
        }
        let ack = &s["ack_rtt"];
        if ack["count"] != r["rtt_samples"] {
            d(
                "ack_rtt_count",
                show(&ack["count"]),
                show(&r["rtt_samples"]),
            );
        }
        for (e, a) in [
            ("min_s", "rtt_min_us"),
            ("max_s", "rtt_max_us"),
            ("mean_s", "rtt_avg_us"),
        ] {
            if !same_time(&ack[e], &r[a]) {
                d(&format!("ack_rtt_{e}"), show(&ack[e]), show(&r[a]));
            }
        }
    }
    for (i, r) in tcp.iter().enumerate() {
        if !used.contains(&i) {
            diffs.push((
                name.to_string(),
                "-".into(),
                "record".into(),
                "absent".into(),
                format!(
                    "extra {}:{} {}:{} at {}",
                    show(&r["client_ip"]),
                    r["client_port"],
                    show(&r["server_ip"]),
                    r["server_port"],
                    r["first_seen_ns"]
                ),
            ));
        }
    }
    diffs
}

/// The documented differences: rows of the table between the markers in
/// `docs/tshark-differences.md`.
pub(crate) fn documented(doc: &str) -> BTreeSet<Diff> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(doc))
        .unwrap_or_else(|e| panic!("cannot read {doc}: {e}"));
    let body = text
        .split("<!-- differences:begin -->")
        .nth(1)
        .and_then(|t| t.split("<!-- differences:end -->").next())
        .unwrap_or_else(|| panic!("{doc} has no differences markers"));
    body.lines()
        .filter(|l| l.starts_with('|') && !l.contains("---") && !l.contains("| capture |"))
        .map(|l| {
            let c: Vec<String> = l
                .trim()
                .trim_matches('|')
                .split('|')
                .map(|x| x.trim().trim_matches('`').to_string())
                .collect();
            assert!(c.len() >= 6, "bad row in {doc}: {l}");
            (
                c[0].clone(),
                c[1].clone(),
                c[2].clone(),
                c[3].clone(),
                c[4].clone(),
            )
        })
        .collect()
}

/// Asserts that `actual` equals the documented set, printing rows to add or remove.
pub(crate) fn assert_documented(actual: &BTreeSet<Diff>, doc_rows: &BTreeSet<Diff>, doc: &str) {
    let new: Vec<_> = actual.difference(doc_rows).collect();
    let gone: Vec<_> = doc_rows.difference(actual).collect();
    if new.is_empty() && gone.is_empty() {
        return;
    }
    let mut msg = format!("differences with tshark no longer match {doc}\n");
    if !new.is_empty() {
        msg.push_str("new differences (fix them, or document them with a reason):\n");
        for (c, s, f, e, a) in &new {
            msg.push_str(&format!("| {c} | {s} | {f} | {e} | {a} | REASON |\n"));
        }
    }
    if !gone.is_empty() {
        msg.push_str("documented differences that are gone (remove the rows):\n");
        for (c, s, f, e, a) in &gone {
            msg.push_str(&format!("| {c} | {s} | {f} | {e} | {a} |\n"));
        }
    }
    panic!("{msg}");
}

#[test]
fn third_party_captures_match_tshark() {
    let Some(shared) = shared_dir() else { return };
    let dir = shared.join("testdata/captures");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("captures dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".expected.json"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "expected the visible set of captures");
    let mut all = BTreeSet::new();
    let mut streams = 0;
    for exp in files {
        let cap = exp.to_string_lossy().replace(".expected.json", "");
        let name = Path::new(&cap)
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let expected: Value =
            serde_json::from_slice(&std::fs::read(&exp).expect("read expected")).expect("json");
        streams += expected["streams"].as_array().map_or(0, |a| a.len());
        let records = analyze_json(Path::new(&cap), NO_TIMEOUTS);
        all.extend(compare(&name, &expected, &records));
    }
    eprintln!("compared {streams} streams, {} differences", all.len());
    let doc = "docs/tshark-differences.md";
    assert_documented(&all, &documented(doc), doc);
}
