//! API latency through the real HTTP server: 24 h of synthetic flow records at 100 flows/s
//! (8.64 M records) and > 2 GB of packet segments, generated once into
//! `/var/tmp/tapvault-bench-api` (or `$TAPVAULT_BENCH_API_DIR`) and reused.
//!
//! ```text
//! cargo bench -p tapvault-benches --bench api
//! ```
//!
//! Measures the median (and p90) of: a 5-minute window with a filter, a 1-hour window with a
//! filter, a 1-hour window sorted by retransmission rate without a filter, and one flow's
//! pcap (through its record's `pcap_url`). Sample results: BENCHMARKS.md, "HTTP API".

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use tapvault_api::{ApiOptions, ApiServer, NoCapture};
use tapvault_dataplane::flow::{key::FlowKey, table::flow_id};
use tapvault_storage::{
    CloseReason, FlowParquetWriter, FlowRecord, FlowState, SegmentOptions, SegmentWriter,
    WriterOptions, pcap::read_packets,
};

const NS: i64 = 1_000_000_000;
/// 2024-05-01T00:00:00Z.
const DAY_START: i64 = 1_714_521_600 * NS;
const FLOWS_PER_SEC: i64 = 100;
const DAY_SECS: i64 = 86_400;
/// The hour the packet segments cover (05:00 to 06:00).
const PCAP_HOUR: i64 = 5;
const PCAP_TARGET_BYTES: u64 = 2_200_000_000;

/// SplitMix64: seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Exponential with the given mean.
    fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }
    /// Log-uniform in [lo, hi].
    fn log_uniform(&mut self, lo: f64, hi: f64) -> f64 {
        (lo.ln() + self.unit() * (hi.ln() - lo.ln())).exp()
    }
}

fn client_ip(n: u64) -> String {
    format!(
        "10.{}.{}.{}",
        1 + n % 200,
        (n / 200) % 256,
        1 + (n / 51_200) % 250
    )
}

fn server_ip(n: u64) -> String {
    format!("10.200.{}.{}", n / 250, 1 + n % 250)
}

const PORTS: &[u16] = &[443, 443, 443, 80, 80, 53, 22, 5432, 6379, 8080, 9092, 3306];

/// A realistic record starting at `first`.
fn record(rng: &mut Rng, first: i64) -> FlowRecord {
    let p = rng.unit();
    let proto = if p < 0.85 {
        "tcp"
    } else if p < 0.97 {
        "udp"
    } else {
        "icmp"
    };
    let d = rng.unit();
    let dur_s = if d < 0.7 {
        rng.exp(2.0)
    } else if d < 0.95 {
        rng.exp(60.0)
    } else {
        rng.unit() * 600.0
    };
    let last = first + (dur_s * 1e9) as i64;
    let mut server_port = PORTS[rng.below(PORTS.len() as u64) as usize];
    if proto == "udp" {
        server_port = 53;
    }
    let pk_c = rng.log_uniform(1.0, 5000.0) as u64;
    let pk_s = (pk_c as f64 * (0.5 + rng.unit())) as u64;
    let bytes_c = pk_c * (60 + rng.below(1400));
    let bytes_s = pk_s * (60 + rng.below(1400));
    let mut r = FlowRecord {
        first_seen_ns: first,
        last_seen_ns: last,
        proto: proto.into(),
        ip_version: 4,
        client_ip: client_ip(rng.below(60_000)),
        client_port: if proto == "icmp" {
            rng.below(65_536) as u16
        } else {
            32_768 + rng.below(28_000) as u16
        },
        server_ip: server_ip(rng.below(500)),
        server_port: if proto == "icmp" { 0 } else { server_port },
        client_by: if proto == "tcp" { "syn" } else { "port" }.into(),
        packets_c2s: pk_c,
        packets_s2c: pk_s,
        bytes_c2s: bytes_c,
        bytes_s2c: bytes_s,
        payload_bytes_c2s: bytes_c.saturating_sub(pk_c * 54),
        payload_bytes_s2c: bytes_s.saturating_sub(pk_s * 54),
        close_reason: CloseReason::Fin,
        state: FlowState::Stateless,
        ..FlowRecord::default()
    };
    if proto == "tcp" {
        let s = rng.unit();
        (r.state, r.close_reason, r.connection_completeness) = if s < 0.75 {
            (FlowState::Closed, CloseReason::Fin, 31)
        } else if s < 0.85 {
            (FlowState::Reset, CloseReason::Rst, 47)
        } else if s < 0.88 {
            (FlowState::Refused, CloseReason::Rst, 33)
        } else if s < 0.93 {
            (FlowState::Established, CloseReason::Interim, 15)
        } else if s < 0.96 {
            (FlowState::NoResponse, CloseReason::StaleTimeout, 1)
        } else {
            (FlowState::MidStream, CloseReason::IdleTimeout, 12)
        };
        let handshake = rng.log_uniform(80.0, 80_000.0);
        if r.connection_completeness & 7 == 7 {
            r.initial_rtt_us = Some(handshake * 0.8);
            r.handshake_time_us = Some(handshake);
            r.rtt_min_us = Some(handshake * (0.5 + rng.unit() * 0.5));
            r.rtt_max_us = Some(handshake * (1.0 + rng.exp(3.0)));
            r.rtt_avg_us = Some((r.rtt_min_us.unwrap_or(0.0) + r.rtt_max_us.unwrap_or(0.0)) / 2.0);
            r.rtt_samples = pk_s / 2;
        }
        let data = pk_c + pk_s;
        r.retransmissions = if rng.unit() < 0.2 {
            (data as f64 * rng.exp(0.02)) as u64
        } else {
            0
        }
        .min(data);
        r.retransmission_rate = r.retransmissions as f64 / data.max(1) as f64;
        r.dup_acks = r.retransmissions * rng.below(3);
        r.zero_window_events = if rng.unit() < 0.01 {
            1 + rng.below(20)
        } else {
            0
        };
        r.rst_count = u64::from(r.state == FlowState::Reset || r.state == FlowState::Refused);
        r.fin_count = if r.state == FlowState::Closed { 2 } else { 0 };
        r.syn_count = 1 + u64::from(rng.unit() < 0.02);
        r.syn_ack_count = u64::from(r.connection_completeness & 2 != 0);
        r.goodput_bytes = r.payload_bytes_c2s + r.payload_bytes_s2c;
        r.history = "ShAaDdFf".into();
    }
    let key = FlowKey::of_record(&r).expect("synthetic key");
    r.flow_id = format!("{:016x}", flow_id(key.hash64(), first));
    r
}

fn store_dir() -> PathBuf {
    std::env::var_os("TAPVAULT_BENCH_API_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/tapvault-bench-api"))
}

fn du(dir: &Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            n += if p.is_dir() {
                du(&p)
            } else {
                e.metadata().map_or(0, |m| m.len())
            };
        }
    }
    n
}

/// The target flow of the pcap measurement: its record is in the flow store, its packets
/// are spread over 10 minutes of the segments.
fn target_record() -> FlowRecord {
    let mut rng = Rng(7);
    let first = DAY_START + PCAP_HOUR * 3600 * NS + 20 * 60 * NS;
    let mut r = record(&mut rng, first);
    r.proto = "tcp".into();
    r.client_ip = "10.99.99.99".into();
    r.client_port = 44_444;
    r.server_ip = "10.200.0.7".into();
    r.server_port = 443;
    r.last_seen_ns = first + 600 * NS;
    r.packets_c2s = 1000;
    r.packets_s2c = 1000;
    let key = FlowKey::of_record(&r).expect("key");
    r.flow_id = format!("{:016x}", flow_id(key.hash64(), first));
    r
}

fn generate_flows(root: &Path) {
    let t = Instant::now();
    let mut w = FlowParquetWriter::new(root, "bench", WriterOptions::default()).expect("writer");
    let mut rng = Rng(42);
    let total = DAY_SECS * FLOWS_PER_SEC;
    for i in 0..total {
        let first =
            DAY_START + i * (NS / FLOWS_PER_SEC) + rng.below((NS / FLOWS_PER_SEC) as u64) as i64;
        w.write(record(&mut rng, first)).expect("write");
        if i % 1_000_000 == 0 {
            eprintln!("  flows: {i} / {total}");
        }
    }
    w.write(target_record()).expect("write");
    w.close().expect("close");
    eprintln!(
        "  flows: {total} records in {:.0} s",
        t.elapsed().as_secs_f64()
    );
}

/// An Ethernet/IPv4/TCP frame of `len` bytes with a pseudo-random payload.
fn frame(rng: &mut Rng, src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, len: usize) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
    let total = (len - 14) as u16;
    f.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        6,
        0,
        0,
    ]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&(rng.next() as u32).to_be_bytes());
    f.extend_from_slice(&(rng.next() as u32).to_be_bytes());
    f.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    while f.len() < len {
        f.extend_from_slice(&rng.next().to_le_bytes());
    }
    f.truncate(len);
    f
}

/// Client address and port, server address and port, flow hash.
type Endpoints = ([u8; 4], u16, [u8; 4], u16, u64);

fn generate_pcap(root: &Path) {
    let t = Instant::now();
    let mut w = SegmentWriter::new(root, "bench", SegmentOptions::default()).expect("segments");
    let mut rng = Rng(4242);
    let target = target_record();
    let target_hash = FlowKey::of_record(&target).expect("key").hash64();
    // 20 000 background flows.
    let flows: Vec<Endpoints> = (0..20_000u32)
        .map(|i| {
            let r = FlowRecord {
                proto: "tcp".into(),
                ip_version: 4,
                client_ip: format!("10.{}.{}.{}", 1 + i % 200, i / 200 % 256, 1 + i % 250),
                client_port: 32_768 + (i % 28_000) as u16,
                server_ip: server_ip(u64::from(i) % 500),
                server_port: 443,
                ..FlowRecord::default()
            };
            let ip = |s: &str| s.parse::<std::net::Ipv4Addr>().expect("v4").octets();
            let h = FlowKey::of_record(&r).expect("key").hash64();
            (ip(&r.client_ip), r.client_port, ip(&r.server_ip), 443, h)
        })
        .collect();
    let start = DAY_START + PCAP_HOUR * 3600 * NS;
    // Frames average 64 + 1450 / 2 bytes.
    let packets = PCAP_TARGET_BYTES / 789;
    let step = 3600 * NS / packets as i64;
    let (t_from, t_to) = (target.first_seen_ns, target.last_seen_ns);
    let target_every = ((t_to - t_from) / step / 2000).max(1);
    let mut written = 0u64;
    for i in 0..packets as i64 {
        let ts = start + i * step;
        let len = 64 + rng.below(1450) as usize;
        let in_target = (t_from..=t_to).contains(&ts) && (ts - t_from) / step % target_every == 0;
        let (f, h) = if in_target {
            let dir = rng.below(2) == 0;
            let (c, s) = ([10, 99, 99, 99], [10, 200, 0, 7]);
            let f = if dir {
                frame(&mut rng, c, 44_444, s, 443, len)
            } else {
                frame(&mut rng, s, 443, c, 44_444, len)
            };
            (f, target_hash)
        } else {
            let (c, cp, s, sp, h) = flows[rng.below(flows.len() as u64) as usize];
            (frame(&mut rng, c, cp, s, sp, len), h)
        };
        w.write(ts, len as u32, &f, h).expect("write packet");
        written += len as u64;
        if i % 500_000 == 0 {
            eprintln!("  packets: {i} / {packets}");
        }
    }
    w.close().expect("close");
    eprintln!(
        "  packets: {packets} ({written} bytes) in {:.0} s",
        t.elapsed().as_secs_f64()
    );
}

fn http_get(addr: SocketAddr, target: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(120))).ok();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("head");
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    let mut body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            let eol = body[pos..]
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("chunk")
                + pos;
            let size = usize::from_str_radix(
                std::str::from_utf8(&body[pos..eol]).expect("hex").trim(),
                16,
            )
            .expect("size");
            if size == 0 {
                break;
            }
            out.extend_from_slice(&body[eol + 2..eol + 2 + size]);
            pos = eol + 4 + size;
        }
        body = out;
    }
    (status, body)
}

fn rfc3339(ns: i64) -> String {
    let secs = ns / NS;
    let days = secs / 86_400 - DAY_START / NS / 86_400;
    let tod = secs % 86_400;
    format!(
        "2024-05-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        1 + days,
        tod / 3600,
        tod / 60 % 60,
        tod % 60,
        ns % NS
    )
}

fn measure(name: &str, runs: usize, mut one: impl FnMut(usize) -> String) {
    let mut times = Vec::new();
    let mut note = String::new();
    for i in 0..runs {
        let t = Instant::now();
        note = one(i);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{name}: median {:.1} ms, p90 {:.1} ms, min {:.1} ms ({runs} runs; last: {note})",
        times[runs / 2],
        times[runs * 9 / 10],
        times[0]
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = store_dir();
    std::fs::create_dir_all(&root).expect("create store dir");
    // Each store is generated once; a marker says it is complete.
    let flows_done = root.join(".flows-complete-v1");
    if !flows_done.exists() {
        eprintln!("generating flows into {} (once)", root.display());
        let _ = std::fs::remove_dir_all(root.join("flows"));
        generate_flows(&root);
        std::fs::write(&flows_done, b"").expect("marker");
    }
    // v3: segments in the layout whose frames may cross block boundaries.
    let pcap_done = root.join(".pcap-complete-v3");
    if !pcap_done.exists() {
        eprintln!("generating packet segments into {} (once)", root.display());
        let _ = std::fs::remove_dir_all(root.join("pcap"));
        generate_pcap(&root);
        std::fs::write(&pcap_done, b"").expect("marker");
    }
    let flows_bytes = du(&root.join("flows"));
    let pcap_bytes = du(&root.join("pcap"));
    println!(
        "store {}: flows {:.0} MB, pcap segments {:.2} GB",
        root.display(),
        flows_bytes as f64 / 1e6,
        pcap_bytes as f64 / 1e9
    );
    assert!(pcap_bytes >= 2_000_000_000, "need >= 2 GB of segments");
    let srv = ApiServer::start(
        ApiOptions::new(&root)
            .listen("127.0.0.1:0".parse().expect("addr"))
            .request_timeout(Duration::from_secs(120)),
        Arc::new(NoCapture::new()),
    )
    .expect("server");
    let a = srv.local_addr();
    let mut rng = Rng(9);
    let window = |rng: &mut Rng, len_s: i64| {
        let start = DAY_START + 3600 * NS + rng.below((DAY_SECS - 7200) as u64) as i64 * NS;
        format!("from={}&to={}", rfc3339(start), rfc3339(start + len_s * NS))
    };
    let count = |body: &[u8]| {
        let v: serde_json::Value = serde_json::from_slice(body).expect("json");
        format!("{} rows, scan {}", v["count"], v["scan"])
    };
    // Warm the page cache once (the measurements below are warm-cache figures).
    let _ = http_get(
        a,
        &format!("/api/v1/flows?{}&limit=1", window(&mut rng, 3600)),
    );
    measure(
        "5-min window, filter proto=tcp&where=retransmission_rate>0.05",
        21,
        |_| {
            let (s, b) = http_get(
                a,
                &format!(
                    "/api/v1/flows?{}&proto=tcp&where=retransmission_rate%3E0.05",
                    window(&mut rng, 300)
                ),
            );
            assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
            count(&b)
        },
    );
    measure(
        "5-min window, filter server=10.200.0.0/24&port=443",
        21,
        |_| {
            let (s, b) = http_get(
                a,
                &format!(
                    "/api/v1/flows?{}&server=10.200.0.0%2F24&port=443",
                    window(&mut rng, 300)
                ),
            );
            assert_eq!(s, 200);
            count(&b)
        },
    );
    measure(
        "1-hour window, filter state=reset&where=zero_window_events>0",
        11,
        |_| {
            let (s, b) = http_get(
                a,
                &format!(
                    "/api/v1/flows?{}&state=reset,refused&where=zero_window_events%3E0",
                    window(&mut rng, 3600)
                ),
            );
            assert_eq!(s, 200);
            count(&b)
        },
    );
    measure(
        "1-hour window, filter proto=tcp&where=retransmission_rate>0.05, sort desc, limit 100",
        11,
        |_| {
            let (s, b) = http_get(
                a,
                &format!(
                    "/api/v1/flows?{}&proto=tcp&where=retransmission_rate%3E0.05&sort=retransmission_rate&order=desc",
                    window(&mut rng, 3600)
                ),
            );
            assert_eq!(s, 200);
            count(&b)
        },
    );
    measure(
        "1-hour window, no filter, sort retransmission_rate desc, limit 100",
        11,
        |_| {
            let (s, b) = http_get(
                a,
                &format!(
                    "/api/v1/flows?{}&sort=retransmission_rate&order=desc",
                    window(&mut rng, 3600)
                ),
            );
            assert_eq!(s, 200);
            count(&b)
        },
    );
    let target = target_record();
    let (s, b) = http_get(
        a,
        &format!(
            "/api/v1/flows/{}?from={}&to={}",
            target.flow_id,
            rfc3339(target.first_seen_ns),
            rfc3339(target.last_seen_ns)
        ),
    );
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let v: serde_json::Value = serde_json::from_slice(&b).expect("json");
    let url = v["pcap_url"]
        .as_str()
        .expect("pcap_url")
        .replace(':', "%3A");
    measure("one flow's pcap (pcap_url) from the segments", 11, |_| {
        let (s, b) = http_get(a, &url);
        assert_eq!(
            s,
            200,
            "{}",
            String::from_utf8_lossy(&b[..b.len().min(300)])
        );
        let mut n = 0;
        let mut pos = 24;
        while pos + 16 <= b.len() {
            n += 1;
            pos += 16
                + u32::from_le_bytes([b[pos + 8], b[pos + 9], b[pos + 10], b[pos + 11]]) as usize;
        }
        assert_eq!(pos, b.len());
        format!("{n} packets, {} bytes", b.len())
    });
    // The same extraction through the reader, for what it reads (issue 3: only the frames
    // whose flow list holds the flow).
    let hash = FlowKey::of_record(&target).expect("key").hash64();
    let started = Instant::now();
    let (bytes, stats) = read_packets(&root, target.first_seen_ns, target.last_seen_ns, Some(hash))
        .expect("read_packets");
    println!(
        "read_packets, one flow: {} bytes out in {:.0} ms; {} frames read, {:.1} MB compressed \
         read of {:.2} GB of segments ({:.3} %); {:?}",
        bytes.len(),
        started.elapsed().as_secs_f64() * 1e3,
        stats.frames_read,
        stats.compressed_bytes_read as f64 / 1e6,
        pcap_bytes as f64 / 1e9,
        stats.compressed_bytes_read as f64 * 100.0 / pcap_bytes as f64,
        stats
    );
    srv.shutdown().expect("shutdown");
}
