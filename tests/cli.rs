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
    // The flow table at 20k flows needs about 25 MiB (under 1 KiB a flow); with the program,
    // its queues and the mapped window of the file, well under 128 MiB. A table that grew
    // with the flood (a million flows) would need about a GiB.
    assert!(rss < 128 << 20, "peak RSS {} MiB", rss >> 20);
    std::fs::remove_dir_all(&d).ok();
}

/// DNS transactions: latency and response code equal tshark's `dns.time` and
/// `dns.flags.rcode` for every answered query.
#[test]
fn dns_latency_and_rcodes_match_tshark() {
    let Some(shared) = crate::util::shared_dir() else {
        return;
    };
    let Some(tshark) = crate::util::tshark() else {
        return;
    };
    let cap = shared.join("testdata/captures/var-services-std-ports.pcap");
    let d = tmp();
    let dns = d.join("dns.jsonl");
    let (ok, _, err) = run(&[
        OsStr::new("analyze"),
        cap.as_os_str(),
        OsStr::new("--no-records"),
        OsStr::new("--dns-json"),
        dns.as_os_str(),
    ]);
    assert!(ok, "{err}");
    let mut ours: Vec<(u64, i64, u64)> = std::fs::read_to_string(&dns)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| !r["rcode"].is_null())
        .map(|r| {
            (
                r["transaction_id"].as_u64().unwrap(),
                (r["latency_us"].as_f64().unwrap() * 1000.0).round() as i64,
                r["rcode"].as_u64().unwrap(),
            )
        })
        .collect();
    let out = std::process::Command::new(tshark)
        .arg("-n")
        .arg("-r")
        .arg(&cap)
        .args(["-Y", "dns.flags.response == 1 && dns.time", "-T", "fields"])
        .args(["-e", "dns.id", "-e", "dns.time", "-e", "dns.flags.rcode"])
        .output()
        .expect("run tshark");
    let mut theirs: Vec<(u64, i64, u64)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                u64::from_str_radix(f[0].trim_start_matches("0x"), 16).unwrap(),
                crate::util::epoch_ns(f[1]),
                f[2].parse().unwrap(),
            )
        })
        .collect();
    ours.sort_unstable();
    theirs.sort_unstable();
    assert!(
        theirs.len() >= 5,
        "tshark found {} DNS answers",
        theirs.len()
    );
    assert!(
        theirs.iter().any(|t| t.2 == 3),
        "an NXDOMAIN is in the capture"
    );
    assert_eq!(ours, theirs);
    std::fs::remove_dir_all(&d).ok();
}

/// Handshake-RTT percentiles per time window, from HDR histograms, in the health summary.
#[test]
fn handshake_rtt_percentiles_per_window() {
    let d = tmp();
    let p = d.join("handshakes.pcap");
    let (c, s) = ([10, 0, 0, 1], [10, 0, 0, 2]);
    let base = 1_700_000_040_000_000_000i64; // a minute boundary
    let mut frames = Vec::new();
    // Ten connections in the first minute with iRTT 1..=10 ms, two in the next with 50 ms.
    for (i, (start, irtt_ms)) in (0..10)
        .map(|k| (base + k * 1_000_000_000, k + 1))
        .chain([(base + 61_000_000_000, 50), (base + 62_000_000_000, 50)])
        .enumerate()
    {
        let port = 40_000 + i as u16;
        frames.push((start, tcp4_frame(c, port, s, 80, 100, 0, 0x02, b"")));
        frames.push((
            start + 100_000,
            tcp4_frame(s, 80, c, port, 900, 101, 0x12, b""),
        ));
        frames.push((
            start + irtt_ms * 1_000_000,
            tcp4_frame(c, port, s, 80, 101, 901, 0x10, b""),
        ));
    }
    write_pcap(&p, frames);
    let sj = d.join("summary.json");
    let (ok, _, err) = run(&[
        OsStr::new("analyze"),
        p.as_os_str(),
        OsStr::new("--no-records"),
        OsStr::new("--summary-json"),
        sj.as_os_str(),
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&sj).unwrap()).unwrap();
    let w = v["handshake_rtt_windows"].as_array().expect("windows");
    assert_eq!(w.len(), 2, "{v}");
    assert_eq!(w[0]["count"], 10);
    // HDR histograms keep 3 significant digits: 5 ms is 5000 us (to within 0.1 %).
    let near = |x: &serde_json::Value, us: u64| {
        let x = x.as_u64().unwrap();
        x.abs_diff(us) * 1000 <= us
    };
    assert!(near(&w[0]["p50_us"], 5_000), "{}", w[0]);
    assert!(near(&w[0]["p90_us"], 9_000), "{}", w[0]);
    assert!(near(&w[0]["p99_us"], 10_000), "{}", w[0]);
    assert_eq!(w[1]["count"], 2);
    assert!(near(&w[1]["p50_us"], 50_000), "{}", w[1]);
    std::fs::remove_dir_all(&d).ok();
}

/// `--store DIR` writes every record as Parquet; reading the store back gives exactly the
/// records printed as JSON.
#[test]
fn store_writes_the_same_records_as_parquet() {
    let Some(shared) = crate::util::shared_dir() else {
        return;
    };
    let cap = shared.join("testdata/captures/ssh.pcap");
    let d = tmp();
    let store = d.join("store");
    let (ok, out, err) = run(&[
        OsStr::new("analyze"),
        cap.as_os_str(),
        OsStr::new("--json"),
        OsStr::new("--store"),
        store.as_os_str(),
    ]);
    assert!(ok, "{err}");
    let mut printed: Vec<tapvault_storage::FlowRecord> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a record"))
        .collect();
    let mut stored = tapvault_storage::read_flows(&store, i64::MIN, i64::MAX).expect("read");
    printed.sort_by(|a, b| a.flow_id.cmp(&b.flow_id));
    stored.sort_by(|a, b| a.flow_id.cmp(&b.flow_id));
    assert!(printed.len() >= 23, "{} records", printed.len());
    assert_eq!(printed.len(), stored.len());
    for (p, s) in printed.iter().zip(&stored) {
        let (pv, sv) = (
            serde_json::to_value(p).unwrap(),
            serde_json::to_value(s).unwrap(),
        );
        let diff: Vec<String> = pv
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, v)| sv[k.as_str()] != **v)
            .map(|(k, v)| format!("{k}: json {v} parquet {}", sv[k.as_str()]))
            .collect();
        assert!(diff.is_empty(), "flow {}: {diff:?}", p.flow_id);
    }
    assert!(store.join("flows").is_dir());
    std::fs::remove_dir_all(&d).ok();
}

/// Parses a nanosecond pcap stream into (time, original length, bytes) records.
fn pcap_records(stream: &[u8]) -> Vec<(i64, u32, Vec<u8>)> {
    assert_eq!(&stream[..4], &0xa1b2_3c4du32.to_le_bytes(), "ns pcap magic");
    let mut out = Vec::new();
    let mut p = 24;
    while p + 16 <= stream.len() {
        let u = |o: usize| u32::from_le_bytes(stream[p + o..p + o + 4].try_into().unwrap());
        let ts = i64::from(u(0)) * 1_000_000_000 + i64::from(u(4));
        let (caplen, orig) = (u(8) as usize, u(12));
        out.push((ts, orig, stream[p + 16..p + 16 + caplen].to_vec()));
        p += 16 + caplen;
    }
    assert_eq!(p, stream.len(), "stream ends on a record boundary");
    out
}

/// `--store DIR` also spills every frame to pcap segments: the whole time range comes back
/// byte-identical to the input, and each flow's packets (found through the index by the
/// flow key hash of its record) are exactly the packets the record counts.
#[test]
fn store_spills_packets_findable_by_flow() {
    let Some(shared) = crate::util::shared_dir() else {
        return;
    };
    let cap = shared.join("testdata/captures/ssh.pcap");
    let d = tmp();
    let store = d.join("store");
    let (ok, _, err) = run(&[
        OsStr::new("analyze"),
        cap.as_os_str(),
        OsStr::new("--no-records"),
        OsStr::new("--store"),
        store.as_os_str(),
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("pcap segment(s)"), "{err}");
    // Every frame, in order, as read from the original file.
    let mut input = Vec::new();
    let mut f = tapvault_dataplane::source::CaptureFile::open(&cap).expect("open");
    while let Some(fr) = f.next_frame().expect("frame") {
        input.push((fr.ts_ns, fr.orig_len, fr.data.to_vec()));
    }
    let (all, _) =
        tapvault_storage::pcap::read_packets(&store, i64::MIN, i64::MAX, None).expect("read all");
    let all = pcap_records(&all);
    assert_eq!(all.len(), input.len());
    assert!(all == input, "stored packets differ from the input");

    let flows = tapvault_storage::read_flows(&store, i64::MIN, i64::MAX).expect("flows");
    assert!(flows.len() >= 23);
    let mut checked = 0;
    for r in &flows {
        let key = tapvault_dataplane::flow::key::FlowKey::of_record(r).expect("key");
        let (pkts, _) = tapvault_storage::pcap::read_packets(
            &store,
            r.first_seen_ns,
            r.last_seen_ns,
            Some(key.hash64()),
        )
        .expect("read flow");
        let pkts = pcap_records(&pkts);
        let want = r.packets_c2s + r.packets_s2c + r.icmp_errors;
        assert_eq!(pkts.len() as u64, want, "flow {}", r.flow_id);
        checked += 1;
    }
    assert_eq!(checked, flows.len());
    std::fs::remove_dir_all(&d).ok();
}

/// `tapvault status` reads a running capture's health from its API: a capture file replayed
/// at its recorded pace through the live pipeline, with the API on a loopback port.
#[test]
fn status_reads_a_running_capture() {
    let Some(shared) = crate::util::shared_dir() else {
        return;
    };
    let cap = shared.join("testdata/captures/retransmit-fast009.pcap");
    let d = tmp();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let listen = format!("127.0.0.1:{port}");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tapvault"))
        .args(["capture", "--file"])
        .arg(&cap)
        .args(["--set", "capture.file_speed=recorded", "--duration", "20"])
        .args(["--listen", &listen, "--data-dir"])
        .arg(d.join("store"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start a capture");
    // Wait for the API.
    let t0 = std::time::Instant::now();
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(
            t0.elapsed().as_secs() < 30,
            "the capture's API never listened"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (ok, out, err) = run(&[
        OsStr::new("status"),
        OsStr::new("--url"),
        OsStr::new(&listen),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("live (capture ready)"), "{out}");
    assert!(out.contains("queue 0 file:"), "{out}");
    assert!(out.contains("shard 0:"), "{out}");
    let (ok, out, _) = run(&[
        OsStr::new("status"),
        OsStr::new("--url"),
        OsStr::new(&listen),
        OsStr::new("--json"),
    ]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("status JSON");
    assert_eq!(v["mode"], "live");
    assert!(v["queues"][0]["packets"].as_u64().unwrap() > 0, "{v}");
    let _ = child.kill();
    let _ = child.wait();
    // Nothing listens any more: a clear error.
    let (ok, _, err) = run(&[
        OsStr::new("status"),
        OsStr::new("--url"),
        OsStr::new(&listen),
    ]);
    assert!(!ok);
    assert!(err.contains("cannot connect"), "{err}");
    std::fs::remove_dir_all(&d).ok();
}
