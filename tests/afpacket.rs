//! The AF_PACKET source and the traffic generator on real veth pairs: `tapvault blast`
//! sends from one network namespace, [`AfPacketSource`] receives in the other (or on the
//! same end), and what arrives is compared byte for byte with what the blaster recorded
//! sending. Then the blaster's traffic, captured by tcpdump, goes through `tapvault analyze`:
//! clean TCP connections with the intended packet counts.
//!
//! Privileged: root, iproute2 and tcpdump. Skips, saying so, only when not root and `CI` is
//! unset; in CI it always runs.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;
use tapvault_dataplane::live::{
    RxSource,
    afpacket::{AfPacketOptions, AfPacketSource, AfPacketTx, Fanout, FanoutMode, TxOptions},
};

use crate::util::{IpGuard, Scratch, analyze_json, sh};

/// False (after saying why) when `test` must skip: not root and not in CI.
fn privileged(test: &str) -> bool {
    crate::util::privileged(&format!(
        "{test} (network namespaces, veths, packet sockets; cargo test --test integration afpacket)"
    ))
}

/// Two namespaces joined by a veth pair, `a` in `ns_a` and `b` in `ns_b`, IPv6 off (so the
/// links carry nothing but what a test sends). Deleted on drop, panics included.
struct Pair {
    ns_a: String,
    ns_b: String,
    a: String,
    b: String,
    /// The namespaces made so far, deleted on drop.
    created: Vec<IpGuard>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Pair {
    fn new() -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // "tpa" + up to 7 pid digits + counter + side: within 15 bytes for counters < 100.
        let mut p = Pair {
            ns_a: format!("tvaf{pid}x{n}a"),
            ns_b: format!("tvaf{pid}x{n}b"),
            a: format!("tpa{pid}x{n}"),
            b: format!("tpb{pid}x{n}"),
            created: Vec::new(),
        };
        assert!(p.a.len() <= 15, "interface name {} too long", p.a);
        for ns in [p.ns_a.clone(), p.ns_b.clone()] {
            sh(&["ip", "netns", "add", &ns]);
            p.created.push(IpGuard::netns(ns.clone()));
            sh(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ]);
        }
        sh(&[
            "ip", "link", "add", &p.a, "netns", &p.ns_a, "type", "veth", "peer", "name", &p.b,
            "netns", &p.ns_b,
        ]);
        sh(&["ip", "-n", &p.ns_a, "link", "set", &p.a, "up"]);
        sh(&["ip", "-n", &p.ns_b, "link", "set", &p.b, "up"]);
        p
    }

    fn netns(ns: &str) -> Option<PathBuf> {
        Some(Path::new("/run/netns").join(ns))
    }

    /// A source on end `b` (or `a`), with `fanout` if given.
    fn source(&self, on_b: bool, fanout: Option<Fanout>) -> AfPacketSource {
        let (ns, dev) = if on_b {
            (&self.ns_b, &self.b)
        } else {
            (&self.ns_a, &self.a)
        };
        let opts = AfPacketOptions {
            netns: Self::netns(ns),
            block_size: 1 << 20,
            block_count: 16,
            fanout,
            ..AfPacketOptions::new(dev.as_str())
        };
        AfPacketSource::open(&opts).expect("open AF_PACKET source")
    }
}

/// Runs `tapvault blast` to completion; returns its JSON summary.
fn blast(ns: &str, dev: &str, pcap: &Path, extra: &[&str]) -> Value {
    let out = blast_cmd(ns, dev, pcap, extra)
        .output()
        .expect("run tapvault blast");
    blast_result(out)
}

fn blast_cmd(ns: &str, dev: &str, pcap: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tapvault"));
    c.args(["blast", "--iface", dev, "--netns", ns, "--duration", "10"])
        .arg("--pcap")
        .arg(pcap)
        .args(extra);
    c
}

fn blast_result(out: Output) -> Value {
    assert!(
        out.status.success(),
        "tapvault blast failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("blast prints one JSON line")
}

/// The frames of a nanosecond pcap written by `tapvault blast`.
fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let b = std::fs::read(path).expect("read pcap");
    assert_eq!(&b[..4], &0xa1b2_3c4du32.to_le_bytes(), "nanosecond pcap");
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= b.len() {
        let cap = u32::from_le_bytes(b[off + 8..off + 12].try_into().expect("4 bytes")) as usize;
        out.push(b[off + 16..off + 16 + cap].to_vec());
        off += 16 + cap;
    }
    assert_eq!(off, b.len(), "no trailing bytes");
    out
}

/// A received frame: (timestamp ns, original length, bytes).
type Rx = (i64, u32, Vec<u8>);

/// Reads everything queued in the ring (the retire timeout hands over partial blocks).
fn drain(src: &mut AfPacketSource) -> Vec<Rx> {
    let mut got = Vec::new();
    let mut quiet = 0;
    let t = Instant::now();
    while quiet < 3 && t.elapsed() < Duration::from_secs(10) {
        let n = src
            .recv_batch(Duration::from_millis(100), &mut |f| {
                got.push((f.ts_ns, f.orig_len, f.data.to_vec()));
            })
            .expect("recv_batch");
        quiet = if n == 0 { quiet + 1 } else { 0 };
    }
    got
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i64
}

fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("field {k} missing in {v}"))
}

#[test]
fn blaster_frames_arrive_byte_identical_and_counted() {
    if !privileged("blaster_frames_arrive_byte_identical_and_counted") {
        return;
    }
    let pair = Pair::new();
    let dir = Scratch::new("afpacket-exact");
    for (size, packets) in [("64", "5000"), ("1500", "3000")] {
        let mut src = pair.source(true, None);
        let pcap = dir.0.join(format!("sent-{size}.pcap"));
        let t0 = now_ns();
        let sum = blast(
            &pair.ns_a,
            &pair.a,
            &pcap,
            &["--flows", "8", "--frame-size", size, "--packets", packets],
        );
        let t1 = now_ns();
        let sent = read_pcap(&pcap);
        assert_eq!(n(&sum, "packets"), sent.len() as u64, "{sum}");
        assert!(sent.len() as u64 > packets.parse::<u64>().expect("n") - 6);
        let got = drain(&mut src);
        let st = src.stats().expect("stats");
        assert_eq!(
            got.len(),
            sent.len(),
            "frames received vs sent at {size} B ({st:?})"
        );
        for (i, ((ts, orig, data), want)) in got.iter().zip(&sent).enumerate() {
            assert_eq!(data, want, "frame {i} at {size} B differs");
            assert_eq!(*orig as usize, want.len(), "orig_len of frame {i}");
            assert!(
                (t0 - 1_000_000_000..=t1 + 1_000_000_000).contains(ts),
                "timestamp {ts} of frame {i} is not near now ({t0}..{t1})"
            );
        }
        assert!(
            got.windows(2).all(|w| w[0].0 <= w[1].0),
            "timestamps never go backwards"
        );
        assert!(
            got.iter()
                .any(|f| f.2.len() == size.parse::<usize>().expect("n")),
            "data frames of {size} bytes"
        );
        assert_eq!(st.received, sent.len() as u64, "{st:?}");
        assert_eq!(
            st.received_bytes,
            sent.iter().map(|f| f.len() as u64).sum::<u64>()
        );
        assert_eq!(st.ring_full, 0, "no kernel drops: {st:?}");
        assert_eq!(src.kernel_packets(), sent.len() as u64);
    }
}

/// An Ethernet frame with the given tags (TPID, TCI) before an IPv4/UDP packet.
fn tagged_frame(tags: &[(u16, u16)], marker: u8) -> Vec<u8> {
    let mut f = vec![0x02, 0x74, 0x76, 0, 0, 2, 0x02, 0x74, 0x76, 0, 0, 1];
    for (tpid, tci) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&[0x08, 0x00]);
    // IPv4/UDP, 28 + 20 bytes payload; checksums do not matter to a packet socket.
    f.extend_from_slice(&[
        0x45, 0, 0, 48, 0, 1, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ]);
    f.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, 0, 28, 0, 0]);
    f.extend_from_slice(&[marker; 20]);
    f
}

#[test]
fn vlan_tags_are_restored_as_on_the_wire() {
    if !privileged("vlan_tags_are_restored_as_on_the_wire") {
        return;
    }
    let pair = Pair::new();
    let mut rx_b = pair.source(true, None);
    let mut rx_a = pair.source(false, None);
    let frames = [
        tagged_frame(&[(0x8100, 0x6064)], 1), // priority 3, VLAN 100
        tagged_frame(&[(0x8100, 0x0000)], 2), // priority tag: VLAN 0, TCI 0
        tagged_frame(&[(0x88a8, 0x00c8), (0x8100, 0x0064)], 3), // 802.1ad outer 200, inner 100
        tagged_frame(&[], 4),                 // untagged
    ];
    // Through the qdisc, so that the sender's own socket sees the frames leave too.
    let mut tx = AfPacketTx::open(&TxOptions {
        interface: pair.a.clone(),
        netns: Pair::netns(&pair.ns_a),
        qdisc_bypass: false,
        send_buffer: 0,
    })
    .expect("open tx");
    let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    assert_eq!(tx.send(&refs).expect("send"), frames.len());
    for (side, rx) in [("receiving end", &mut rx_b), ("sending end", &mut rx_a)] {
        let got = drain(rx);
        assert_eq!(got.len(), frames.len(), "{side}: {got:?}");
        for ((_, orig, data), want) in got.iter().zip(&frames) {
            assert_eq!(
                data, want,
                "{side}: the frame comes back as sent, tags in place"
            );
            assert_eq!(
                *orig as usize,
                want.len(),
                "{side}: orig_len counts the tag"
            );
        }
    }
}

#[test]
fn both_directions_of_a_flow_are_seen_on_one_end() {
    if !privileged("both_directions_of_a_flow_are_seen_on_one_end") {
        return;
    }
    let pair = Pair::new();
    let dir = Scratch::new("afpacket-both");
    let mut src = pair.source(false, None);
    let (pc, ps) = (dir.0.join("client.pcap"), dir.0.join("server.pcap"));
    let common = ["--flows", "4", "--frame-size", "200", "--packets", "600"];
    // The client end sends from b (arrives at a), the server end from a (leaves a).
    let client = blast_cmd(&pair.ns_b, &pair.b, &pc, &common)
        .args(["--side", "client"])
        .output();
    let server = blast_cmd(&pair.ns_a, &pair.a, &ps, &common)
        .args(["--side", "server", "--no-qdisc-bypass"])
        .output();
    let (c, s) = (
        blast_result(client.expect("client blast")),
        blast_result(server.expect("server blast")),
    );
    let got = drain(&mut src);
    let sent_c = read_pcap(&pc);
    let sent_s = read_pcap(&ps);
    assert_eq!(n(&c, "packets"), sent_c.len() as u64);
    assert_eq!(n(&s, "packets"), sent_s.len() as u64);
    assert!(!sent_c.is_empty() && !sent_s.is_empty());
    let mut want: Vec<Vec<u8>> = sent_c.iter().chain(&sent_s).cloned().collect();
    let mut have: Vec<Vec<u8>> = got.into_iter().map(|f| f.2).collect();
    want.sort();
    have.sort();
    assert_eq!(
        have.len(),
        want.len(),
        "incoming ({}) and outgoing ({}) frames",
        sent_c.len(),
        sent_s.len()
    );
    assert!(have == want, "the same frames, both directions");
}

/// A blaster connection: (client address, client port).
type FlowKey = ([u8; 4], u16);

/// (client address, client port) of an IPv4/TCP frame of the blaster, and whether the client
/// sent it.
fn flow_of(f: &[u8]) -> (FlowKey, bool) {
    assert_eq!(&f[12..14], &[0x08, 0x00], "IPv4");
    let src = [f[26], f[27], f[28], f[29]];
    let dst = [f[30], f[31], f[32], f[33]];
    let sport = u16::from_be_bytes([f[34], f[35]]);
    let dport = u16::from_be_bytes([f[36], f[37]]);
    if dport == 5201 {
        ((src, sport), true)
    } else {
        ((dst, dport), false)
    }
}

#[test]
fn fanout_hash_keeps_both_directions_of_a_flow_together() {
    if !privileged("fanout_hash_keeps_both_directions_of_a_flow_together") {
        return;
    }
    let pair = Pair::new();
    let dir = Scratch::new("afpacket-fanout");
    let group = Fanout {
        group: (std::process::id() & 0xffff) as u16,
        mode: FanoutMode::Hash,
        defrag: false,
    };
    let mut socks = [
        pair.source(true, Some(group)),
        pair.source(true, Some(group)),
    ];
    let pcap = dir.0.join("sent.pcap");
    let sum = blast(
        &pair.ns_a,
        &pair.a,
        &pcap,
        &[
            "--flows",
            "64",
            "--frame-size",
            "64",
            "--segments",
            "6",
            "--packets",
            "4000",
        ],
    );
    let sent = n(&sum, "packets");
    // flow -> socket -> (client frames, server frames)
    let mut seen: BTreeMap<FlowKey, HashMap<usize, (u64, u64)>> = BTreeMap::new();
    let mut total = 0;
    for (i, s) in socks.iter_mut().enumerate() {
        for (_, _, f) in drain(s) {
            let (flow, from_client) = flow_of(&f);
            let e = seen.entry(flow).or_default().entry(i).or_default();
            if from_client {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
            total += 1;
        }
        assert_eq!(s.stats().expect("stats").ring_full, 0);
    }
    assert_eq!(total, sent, "every frame reached exactly one socket");
    let mut per_socket = [0usize; 2];
    for (flow, socks) in &seen {
        assert_eq!(
            socks.len(),
            1,
            "flow {flow:?} was split across sockets: {socks:?}"
        );
        let (&i, &(c, s)) = socks.iter().next().expect("one socket");
        assert!(
            c > 0 && s > 0,
            "flow {flow:?}: both directions on socket {i}"
        );
        per_socket[i] += 1;
    }
    assert!(
        per_socket.iter().all(|&k| k > 0),
        "both sockets got flows: {per_socket:?} of {}",
        seen.len()
    );
    assert_eq!(seen.len() as u64, n(&sum, "flows_started"));
}

#[test]
fn blaster_tcp_is_clean_for_the_analyzer() {
    if !privileged("blaster_tcp_is_clean_for_the_analyzer") {
        return;
    }
    let pair = Pair::new();
    let dir = Scratch::new("afpacket-analyze");
    let cap = dir.0.join("tcpdump.pcap");
    let td = Command::new("ip")
        .args([
            "netns", "exec", &pair.ns_b, "tcpdump", "-n", "-U", "-i", &pair.b, "-w",
        ])
        .arg(&cap)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tcpdump (is it installed?)");
    // tcpdump says "listening on" once its socket is bound; poll the capture file instead of
    // the pipe (the header is written at the same point).
    let t = Instant::now();
    while std::fs::metadata(&cap).map_or(0, |m| m.len()) < 24 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "tcpdump did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let sent_pcap = dir.0.join("sent.pcap");
    let sum = blast(
        &pair.ns_a,
        &pair.a,
        &sent_pcap,
        &[
            "--flows",
            "10",
            "--frame-size",
            "1500",
            "--segments",
            "20",
            "--packets",
            "1500",
            "--pps",
            "20000",
        ],
    );
    // libpcap hands over a partly filled ring block after its 1 s timeout: wait for it
    // before stopping tcpdump, or the last frames stay unread ("received by filter" but not
    // "captured").
    std::thread::sleep(Duration::from_millis(1500));
    sh(&["kill", "-INT", &td.id().to_string()]);
    let out = td.wait_with_output().expect("tcpdump exits");
    let summary = String::from_utf8_lossy(&out.stderr);
    let sent = read_pcap(&sent_pcap);
    assert!(
        summary.contains(&format!("{} packets captured", sent.len())),
        "tcpdump captured every frame: {summary}"
    );
    // What each connection should show, from the frames the blaster recorded.
    let mut want: BTreeMap<([u8; 4], u16), (u64, u64)> = BTreeMap::new();
    for f in &sent {
        let (flow, from_client) = flow_of(f);
        let e = want.entry(flow).or_default();
        if from_client {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
    }
    let records = analyze_json(&cap, &[]);
    let tcp: Vec<&Value> = records.iter().filter(|r| r["proto"] == "tcp").collect();
    assert_eq!(tcp.len(), want.len(), "one record per connection");
    assert_eq!(tcp.len() as u64, n(&sum, "flows_completed"));
    let mut keys = BTreeSet::new();
    for r in tcp {
        let ip: std::net::Ipv4Addr = r["client_ip"]
            .as_str()
            .expect("client_ip")
            .parse()
            .expect("IPv4");
        let key = (ip.octets(), n(r, "client_port") as u16);
        let (c2s, s2c) = want
            .get(&key)
            .unwrap_or_else(|| panic!("unexpected connection {r}"));
        assert_eq!(n(r, "packets_c2s"), *c2s, "{r}");
        assert_eq!(n(r, "packets_s2c"), *s2c, "{r}");
        assert_eq!(r["server_ip"], "10.78.0.1");
        assert_eq!(n(r, "server_port"), 5201);
        assert_eq!(r["state"], "closed", "{r}");
        for k in [
            "retransmissions",
            "out_of_order",
            "dup_acks",
            "missing_segments",
            "acked_unseen",
            "zero_window_events",
            "rst_count",
        ] {
            assert_eq!(n(r, k), 0, "{k} of {r}");
        }
        assert_eq!(n(r, "syn_count"), 2, "SYN and SYN-ACK: {r}");
        assert_eq!(n(r, "syn_ack_count"), 1, "{r}");
        assert_eq!(n(r, "fin_count"), 2, "{r}");
        // Completeness 31: SYN, SYN-ACK, ACK, data, FIN (63 with RST; 23 without data).
        let comp = n(r, "connection_completeness");
        assert!(comp == 31 || comp == 23, "completeness {comp} of {r}");
        assert!(keys.insert(key), "one record per connection");
    }
}
