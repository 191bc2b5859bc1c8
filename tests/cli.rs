//! `tapvault analyze` on bad input: clear errors, never a panic; and the SYN flood bound.

use std::ffi::OsStr;

use crate::util::{run, tcp4_frame, write_pcap};

fn tmp() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "tapvault-cli-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&d).expect("tmp dir");
    d
}

fn analyze_err(path: &std::path::Path) -> String {
    let (ok, _, err) = run(&[
        OsStr::new("analyze"),
        path.as_os_str(),
        OsStr::new("--json"),
    ]);
    assert!(!ok, "analyze of {} should fail", path.display());
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn bad_files_get_clear_errors() {
    let d = tmp();
    let empty = d.join("empty.pcap");
    std::fs::write(&empty, b"").unwrap();
    assert!(
        analyze_err(&empty).contains("is empty"),
        "{}",
        analyze_err(&empty)
    );

    let garbage = d.join("garbage.pcap");
    std::fs::write(&garbage, b"this is not a capture file at all, just text\n").unwrap();
    let e = analyze_err(&garbage);
    assert!(e.contains("not a pcap or pcapng"), "{e}");

    let missing = d.join("nope.pcap");
    let e = analyze_err(&missing);
    assert!(e.contains("nope.pcap"), "{e}");

    // A pcap header with link type 147 (LINKTYPE_USER0).
    let mut user0 = Vec::new();
    user0.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    user0.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0]);
    user0.extend_from_slice(&147u32.to_le_bytes());
    let ut = d.join("user0.pcap");
    std::fs::write(&ut, &user0).unwrap();
    let e = analyze_err(&ut);
    assert!(
        e.contains("unsupported link type") && e.contains("147"),
        "{e}"
    );
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn truncated_and_malformed_packets_are_counted() {
    let d = tmp();
    let good = tcp4_frame([10, 0, 0, 1], 1000, [10, 0, 0, 2], 80, 1, 0, 0x02, b"");
    let mut short_ip = good.clone();
    short_ip.truncate(20); // cut inside the IP header
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x42; // IHL 2
    let p = d.join("mixed.pcap");
    write_pcap(
        &p,
        vec![
            (1_000_000_000, good.clone()),
            (1_000_001_000, short_ip),
            (1_000_002_000, bad_ihl),
        ],
    );
    // Cut the file in the middle of a record too.
    let mut bytes = std::fs::read(&p).unwrap();
    bytes.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 60, 0, 0, 0, 60, 0, 0, 0, 1, 2]);
    std::fs::write(&p, &bytes).unwrap();
    let s = d.join("summary.json");
    let (ok, out, err) = run(&[
        OsStr::new("analyze"),
        p.as_os_str(),
        OsStr::new("--summary-json"),
        s.as_os_str(),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("10.0.0.1:1000"), "{out}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&s).unwrap()).unwrap();
    assert_eq!(v["frames"], 3);
    assert_eq!(v["malformed_total"], 2, "{v}");
    assert_eq!(v["truncated_tail"], true);
    std::fs::remove_dir_all(&d).ok();
}

/// A million SYNs from distinct sources: memory stays within the flow-table bound and every
/// eviction is counted.
#[test]
fn syn_flood_stays_within_the_flow_table_bound() {
    let d = tmp();
    let p = d.join("flood.pcap");
    let n: u32 = 1_000_000;
    write_pcap(
        &p,
        (0..n).map(|i| {
            let src = (0x6400_0000u32 + i).to_be_bytes();
            (
                1_700_000_000_000_000_000 + i64::from(i) * 1_000,
                tcp4_frame(
                    src,
                    1024 + (i % 5000) as u16,
                    [10, 9, 9, 9],
                    443,
                    i,
                    0,
                    0x02,
                    b"",
                ),
            )
        }),
    );
    let s = d.join("summary.json");
    let max_flows = 20_000u64;
    let (ok, _, err) = run(&[
        OsStr::new("analyze"),
        p.as_os_str(),
        OsStr::new("--no-records"),
        OsStr::new("--shards"),
        OsStr::new("1"),
        OsStr::new("--max-flows"),
        OsStr::new(&max_flows.to_string()),
        OsStr::new("--summary-json"),
        s.as_os_str(),
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&s).unwrap()).unwrap();
    assert_eq!(v["frames"], u64::from(n));
    assert_eq!(v["flows_created"], u64::from(n));
    assert_eq!(v["peak_flows"], max_flows);
    assert_eq!(v["evictions"], u64::from(n) - max_flows);
    let rss = v["peak_rss_bytes"].as_u64().expect("peak rss on Linux");
    // The flow table at 20k flows needs well under 64 MiB; a table that grew with the flood
    // (a million flows) would need several hundred.
    assert!(rss < 96 << 20, "peak RSS {} MiB", rss >> 20);
    std::fs::remove_dir_all(&d).ok();
}
