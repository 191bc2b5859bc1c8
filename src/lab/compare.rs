//! Live capture against the reference: the records tapvault produced while capturing live,
//! field by field, against `tapvault analyze` on a tcpdump capture of the same traffic (a
//! second mirror of the same port).
//!
//! Flows are paired by protocol, addresses and ports (in first-seen order when a 4-tuple
//! was reused). Every field must be equal, except those made of time: the two captures
//! stamp each frame independently (the XDP program or the AF_PACKET ring on one side,
//! tcpdump's ring on the other), so timestamps, latencies and the flow id (which hashes the
//! first-seen time) may differ by the stamping jitter. Time fields (`*_ns`, `*_us`) must
//! agree within a tolerance measured on the two captures themselves ([`StampSkew`]): every
//! frame is paired with its copy in the other capture, and a time field can differ by at
//! most the largest gap between a frame's two stamps (an absolute time) or the spread of
//! those gaps (a difference of two stamps, such as an RTT). The floor is
//! [`TIME_TOLERANCE_US`].

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    hash::{BuildHasher, RandomState},
    path::Path,
};

use anyhow::{Context, Result};
use tapvault_dataplane::source::CaptureFile;
use tapvault_storage::FlowRecord;

/// Flows to multicast groups (IPv6 MLD reports and router solicitations the lab's own
/// interfaces send when they come up) are not compared: the two captures start a moment
/// apart and such a flow's first packets can fall in between.
fn is_multicast_noise(r: &FlowRecord) -> bool {
    r.server_ip
        .parse::<std::net::IpAddr>()
        .is_ok_and(|a| a.is_multicast())
}

/// The least two time fields may differ by, microseconds (the floor of
/// [`StampSkew::tolerance_us`]).
pub(crate) const TIME_TOLERANCE_US: f64 = 1000.0;

/// How the two captures' stamps of the same frames differ: `live - reference` for every
/// frame found in both (paired by content, in order among identical frames).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct StampSkew {
    /// Frames found in both captures.
    pub(crate) paired: usize,
    /// Frames of the live capture without a copy in the reference, and the reverse.
    pub(crate) unpaired: (usize, usize),
    /// Smallest and largest `live - reference`, microseconds (0 when nothing paired).
    pub(crate) min_us: f64,
    pub(crate) max_us: f64,
}

impl StampSkew {
    /// Pairs the frames of `live` with those of `reference` (both capture files tapvault
    /// reads) by their bytes.
    pub(crate) fn measure(live: &Path, reference: &Path) -> Result<StampSkew> {
        let hasher = RandomState::new();
        let mut stamps: HashMap<u64, VecDeque<i64>> = HashMap::new();
        let mut file = CaptureFile::open(reference)
            .with_context(|| format!("cannot open `{}`", reference.display()))?;
        let mut reference_frames = 0;
        while let Some(f) = file.next_frame()? {
            reference_frames += 1;
            let h = hasher.hash_one(f.data);
            stamps.entry(h).or_default().push_back(f.ts_ns);
        }
        let mut file =
            CaptureFile::open(live).with_context(|| format!("cannot open `{}`", live.display()))?;
        let (mut paired, mut live_only) = (0, 0);
        let (mut min, mut max) = (i64::MAX, i64::MIN);
        while let Some(f) = file.next_frame()? {
            let h = hasher.hash_one(f.data);
            match stamps.get_mut(&h).and_then(VecDeque::pop_front) {
                Some(t) => {
                    paired += 1;
                    let d = f.ts_ns - t;
                    min = min.min(d);
                    max = max.max(d);
                }
                None => live_only += 1,
            }
        }
        if paired == 0 {
            (min, max) = (0, 0);
        }
        Ok(StampSkew {
            paired,
            unpaired: (live_only, reference_frames - paired),
            min_us: min as f64 / 1e3,
            max_us: max as f64 / 1e3,
        })
    }

    /// How far a time field may differ, microseconds: the largest gap between a frame's two
    /// stamps bounds an absolute time (first or last seen), the spread of the gaps bounds a
    /// difference of two stamps (an RTT, a duration), and never less than
    /// [`TIME_TOLERANCE_US`].
    pub(crate) fn tolerance_us(&self) -> f64 {
        let largest = self.min_us.abs().max(self.max_us.abs());
        TIME_TOLERANCE_US
            .max(largest)
            .max(self.max_us - self.min_us)
    }
}

/// The result of a comparison.
pub(crate) struct Comparison {
    /// Flows found on both sides.
    pub(crate) matched: usize,
    /// Multicast flows not compared (see [`is_multicast_noise`]).
    pub(crate) ignored: usize,
    /// Readable differences, one per field (or per unmatched flow).
    pub(crate) differences: Vec<String>,
    /// How far time fields were allowed to differ, microseconds.
    pub(crate) tolerance_us: f64,
    /// Differences in [`TIMING_CLASSIFIED`] fields accepted because the segments only
    /// moved between the classes (reported, not failed).
    pub(crate) reclassified: Vec<String>,
}

impl Comparison {
    pub(crate) fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "matched": self.matched,
            "ignored_multicast": self.ignored,
            "time_tolerance_us": self.tolerance_us,
            "differences": self.differences,
            "reclassified_by_timing": self.reclassified,
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

fn close_enough(
    field: &str,
    a: &serde_json::Value,
    b: &serde_json::Value,
    tolerance_us: f64,
) -> bool {
    if a == b {
        return true;
    }
    let (Some(x), Some(y)) = (a.as_f64(), b.as_f64()) else {
        return false;
    };
    let us = if field.ends_with("_ns") { 1e3 } else { 1.0 };
    (x - y).abs() / us <= tolerance_us
}

/// Counts whose split depends on how far apart two frames were stamped. Wireshark calls a
/// segment that is not new data "out of order" when it came less than the first RTT (3 ms
/// if unknown) after the highest one, a fast retransmission when it came within 20 ms of
/// the duplicate ACKs, and a retransmission otherwise; with an iRTT of tens of microseconds,
/// stamp jitter moves segments between those classes. Each such segment is still exactly
/// one of them, so `retransmissions + out_of_order` must be equal on both sides; the split
/// may differ only when the stamps did (see [`compare`]).
const TIMING_CLASSIFIED: &[&str] = &[
    "retransmissions",
    "fast_retransmissions",
    "retransmission_rate",
    "out_of_order",
];

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
/// [`ORDER_FREE`] (and the time fields), time fields within `tolerance_us`.
pub(crate) fn compare(
    live: &[FlowRecord],
    reference: &[FlowRecord],
    order_free: bool,
    tolerance_us: f64,
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
        tolerance_us,
        reclassified: Vec::new(),
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
        for (x, y) in l.iter().zip(&r) {
            c.matched += 1;
            let (Ok(serde_json::Value::Object(a)), Ok(b)) =
                (serde_json::to_value(x), serde_json::to_value(y))
            else {
                c.differences.push(format!("{k}: cannot serialise"));
                continue;
            };
            let mut diffs: Vec<(&str, String)> = Vec::new();
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
                    close_enough(field, va, vb, tolerance_us)
                } else {
                    va == vb
                };
                if !same {
                    diffs.push((field, format!("{k}: {field}: live {va}, reference {vb}")));
                }
            }
            // Segments moved between the timing classes, none gained or lost: the two
            // captures stamped them differently (see TIMING_CLASSIFIED).
            if x.retransmissions + x.out_of_order == y.retransmissions + y.out_of_order {
                let (moved, rest) = diffs
                    .into_iter()
                    .partition(|(f, _)| TIMING_CLASSIFIED.contains(f));
                diffs = rest;
                c.reclassified
                    .extend(moved.into_iter().map(|(_, d): (&str, String)| d));
            }
            c.differences.extend(diffs.into_iter().map(|(_, d)| d));
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
        let c = compare(
            std::slice::from_ref(&a),
            std::slice::from_ref(&b),
            false,
            1000.0,
        );
        assert_eq!(
            (c.matched, c.differences.len()),
            (1, 0),
            "{:?}",
            c.differences
        );
        b.retransmissions = 1;
        assert_eq!(
            compare(
                std::slice::from_ref(&a),
                std::slice::from_ref(&b),
                false,
                1000.0
            )
            .differences
            .len(),
            1
        );
        b.retransmissions = 0;
        b.first_seen_ns += 2_000_000;
        assert_eq!(
            compare(std::slice::from_ref(&a), &[b.clone()], false, 1000.0)
                .differences
                .len(),
            1
        );
        // A measured skew of 3 ms admits it.
        assert!(
            compare(std::slice::from_ref(&a), &[b.clone()], false, 3000.0)
                .differences
                .is_empty()
        );
        // Segments moved between retransmission and out-of-order: accepted and reported;
        // one more retransmission on one side is a difference.
        let mut x = a.clone();
        let mut y = a.clone();
        (x.retransmissions, x.out_of_order) = (210, 5);
        (y.retransmissions, y.out_of_order) = (212, 3);
        let c = compare(
            std::slice::from_ref(&x),
            std::slice::from_ref(&y),
            false,
            1000.0,
        );
        assert_eq!((c.differences.len(), c.reclassified.len()), (0, 2));
        y.retransmissions = 213;
        let c = compare(&[x], &[y], false, 1000.0);
        assert_eq!((c.differences.len(), c.reclassified.len()), (2, 0));
        let c = compare(
            &[a.clone(), rec(1001, 0)],
            std::slice::from_ref(&a),
            false,
            1000.0,
        );
        assert_eq!(c.differences.len(), 1, "{:?}", c.differences);
    }

    /// A microsecond pcap of `(time_us, bytes)` records.
    fn pcap(path: &Path, frames: &[(i64, &[u8])]) {
        let mut out = Vec::new();
        for v in [0xa1b2_c3d4_u32, 0x0004_0002, 0, 0, 65535, 1] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for (t, data) in frames {
            let len = data.len() as u32;
            for v in [(t / 1_000_000) as u32, (t % 1_000_000) as u32, len, len] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(data);
        }
        std::fs::write(path, out).unwrap();
    }

    #[test]
    fn skew_pairs_frames_by_content_and_in_order() {
        let dir = std::env::temp_dir().join(format!("tapvault-skew-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (live, reference) = (dir.join("live.pcap"), dir.join("ref.pcap"));
        let (x, y, z) = (&[1u8; 60][..], &[2u8; 60][..], &[3u8; 60][..]);
        // Two identical frames `x` pair in order; `z` is only in the reference, `y` in
        // live is stamped 2.5 ms late and the second `x` 0.5 ms early.
        pcap(&live, &[(10_000, x), (20_000, y), (29_500, x)]);
        pcap(
            &reference,
            &[(10_000, x), (17_500, y), (25_000, z), (30_000, x)],
        );
        let s = StampSkew::measure(&live, &reference).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            s,
            StampSkew {
                paired: 3,
                unpaired: (0, 1),
                min_us: -500.0,
                max_us: 2500.0,
            }
        );
        assert_eq!(s.tolerance_us(), 3000.0);
    }
}
