//! Live capture through the XDP program and AF_XDP sockets, on veth pairs between two network
//! namespaces created per test (unique names, deleted on every path). Frames are sent with an
//! AF_PACKET socket in the peer namespace; the capture side checks bytes, timestamps, wire
//! lengths and that the XDP counters account for every frame.
//!
//! Privileged (root: namespaces, veth, XDP). Skips with a message only when not root and `CI`
//! is unset.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use crate::util::{IpGuard, sh};
use tapvault_dataplane::live::{
    RxSource,
    sys::{NetnsGuard, RawSender, pin_to_cpu, realtime_ns},
    xdp::{
        ActiveMode, AttachMode, CaptureFilter, NetRule, NoSocketPolicy, PortProto, PortRule,
        RuleAction, XdpCapture, XdpOptions, XdpProgram, open_capture,
    },
    xsk::{ActiveBind, BindMode, XskOptions, XskSocket},
};

const CAP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x77, 1];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x77, 2];
const CAP_IP: [u8; 4] = [10, 77, 0, 1];
const PEER_IP: [u8; 4] = [10, 77, 0, 2];

fn privileged() -> bool {
    crate::util::privileged(
        "the XDP tests (namespaces, veth, XDP; cargo test --test integration xdp)",
    )
}

/// Two namespaces joined by a veth pair: `cap` (capture side) and `peer` (sender side).
struct Lab {
    ns_cap: String,
    ns_peer: String,
    cap: String,
    peer: String,
    /// The namespaces made so far (with the veth inside), deleted on drop.
    made: Vec<IpGuard>,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Lab {
    fn new(queues: u32) -> Lab {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let mut lab = Lab {
            ns_cap: format!("tvx{pid}-{n}c"),
            ns_peer: format!("tvx{pid}-{n}p"),
            cap: format!("tx{pid}{n}c"),
            peer: format!("tx{pid}{n}p"),
            made: Vec::new(),
        };
        assert!(lab.cap.len() <= 15 && lab.peer.len() <= 15);
        for ns in [lab.ns_cap.clone(), lab.ns_peer.clone()] {
            sh(&["ip", "netns", "add", &ns]);
            lab.made.push(IpGuard::netns(ns));
        }
        let q = queues.to_string();
        sh(&[
            "ip",
            "link",
            "add",
            &lab.cap,
            "netns",
            &lab.ns_cap,
            "numrxqueues",
            &q,
            "numtxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            &lab.peer,
            "netns",
            &lab.ns_peer,
            "numrxqueues",
            &q,
            "numtxqueues",
            &q,
        ]);
        for (ns, dev, mac, ip) in [
            (&lab.ns_cap, &lab.cap, CAP_MAC, CAP_IP),
            (&lab.ns_peer, &lab.peer, PEER_MAC, PEER_IP),
        ] {
            // No IPv6 on the link: no router solicitations or MLD reports among the frames
            // the tests count.
            sh(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{dev}.disable_ipv6=1"),
            ]);
            let mac = mac
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":");
            sh(&["ip", "-n", ns, "link", "set", dev, "address", &mac]);
            let ip = Ipv4Addr::from(ip).to_string() + "/24";
            sh(&["ip", "-n", ns, "addr", "add", &ip, "dev", dev]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        lab
    }

    /// Sends `frames` from the peer side, from a thread pinned to `cpu` if given.
    fn send(&self, frames: Vec<Vec<u8>>, cpu: Option<usize>) -> thread::JoinHandle<()> {
        let (ns, dev) = (self.ns_peer.clone(), self.peer.clone());
        thread::spawn(move || {
            if let Some(c) = cpu {
                pin_to_cpu(c).expect("pin the sender");
            }
            let _ns = NetnsGuard::enter(&ns).expect("enter the peer namespace");
            let s = RawSender::open(&dev).expect("AF_PACKET socket");
            for f in &frames {
                s.send(f).expect("send");
            }
        })
    }
}

/// An Ethernet/[VLAN]/IPv4/UDP-or-TCP frame of `len` bytes whose payload starts with `tag`.
fn frame4(dst: [u8; 4], proto: u8, dport: u16, vlan: Option<u16>, len: usize, tag: u32) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&CAP_MAC);
    f.extend_from_slice(&PEER_MAC);
    if let Some(v) = vlan {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&v.to_be_bytes());
    }
    f.extend_from_slice(&[0x08, 0x00]);
    let ip_len = (len - f.len()) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&ip_len.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
    f.extend_from_slice(&PEER_IP);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    if proto == 6 {
        f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        f.extend_from_slice(&(ip_len - 20).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
    }
    f.extend_from_slice(&tag.to_be_bytes());
    while f.len() < len {
        f.push((f.len() as u32 ^ tag) as u8);
    }
    f
}

/// An Ethernet/IPv6/UDP frame to `dst`.
fn frame6(dst: Ipv6Addr, dport: u16, len: usize, tag: u32) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&CAP_MAC);
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&[0x86, 0xdd]);
    let pl = (len - 54) as u16;
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&pl.to_be_bytes());
    f.extend_from_slice(&[17, 64]);
    f.extend_from_slice(&"fd00:77::2".parse::<Ipv6Addr>().expect("v6").octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&pl.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&tag.to_be_bytes());
    while f.len() < len {
        f.push((f.len() as u32 ^ tag) as u8);
    }
    f
}

/// A captured frame: time, wire length, bytes.
type Got = (i64, u32, Vec<u8>);

/// Receives until `want` frames came or `limit` passed, then 200 ms more (to see extras).
fn collect(s: &mut XskSocket, want: usize, limit: Duration) -> Vec<Got> {
    let mut got = Vec::new();
    let t = Instant::now();
    let mut extra_until = None;
    loop {
        s.recv_batch(Duration::from_millis(20), &mut |fr| {
            got.push((fr.ts_ns, fr.orig_len, fr.data.to_vec()))
        })
        .expect("recv_batch");
        if got.len() >= want && extra_until.is_none() {
            extra_until = Some(Instant::now() + Duration::from_millis(200));
        }
        if extra_until.is_some_and(|u| Instant::now() > u) || t.elapsed() > limit {
            return got;
        }
    }
}

fn tag_of(f: &[u8]) -> u32 {
    // The tag follows the UDP/TCP header: find it by the frame layout used here.
    let (eth, et) = if f[12..14] == [0x81, 0x00] {
        (18, [f[16], f[17]])
    } else {
        (14, [f[12], f[13]])
    };
    let off = if et == [0x86, 0xdd] {
        eth + 40 + 8
    } else if f[eth + 9] == 6 {
        eth + 20 + 20
    } else {
        eth + 20 + 8
    };
    u32::from_be_bytes([f[off], f[off + 1], f[off + 2], f[off + 3]])
}

fn small_socket_opts() -> XskOptions {
    XskOptions {
        frame_count: 4096,
        frame_size: 2048,
        ring_size: 2048,
        batch: 64,
        bind: BindMode::Auto,
        need_wakeup: true,
        busy_poll: None,
    }
}

#[test]
fn xdp_af_xdp_delivers_exact_bytes_times_and_counts() {
    if !privileged() {
        return;
    }
    let lab = Lab::new(1);
    let _ns = NetnsGuard::enter(&lab.ns_cap).expect("enter the capture namespace");
    let mut prog = XdpProgram::load(&XdpOptions::default()).expect("load XDP");
    // Either program variant must deliver the same bytes, times and lengths.
    eprintln!(
        "XDP program loaded; metadata in the packet data: {}",
        prog.meta_in_data()
    );
    let mut sock = XskSocket::open(&lab.cap, 0, &small_socket_opts()).expect("AF_XDP socket");
    assert_eq!(sock.bind_mode(), ActiveBind::Copy, "veth has no zero-copy");
    prog.register_socket(0, &sock).expect("register");
    let mode = prog.attach(&lab.cap, AttachMode::Auto).expect("attach");
    assert_eq!(mode, ActiveMode::Driver, "veth has native XDP");

    let sizes = [60usize, 64, 128, 333, 512, 1000, 1514];
    let frames: Vec<Vec<u8>> = (0..700u32)
        .map(|i| frame4(CAP_IP, 17, 5000, None, sizes[i as usize % sizes.len()], i))
        .collect();
    let t0 = realtime_ns();
    lab.send(frames.clone(), None).join().expect("sender");
    let got = collect(&mut sock, frames.len(), Duration::from_secs(10));
    let t1 = realtime_ns();
    assert_eq!(
        got.len(),
        frames.len(),
        "every frame sent arrives, nothing else"
    );
    let mut last = i64::MIN;
    for (i, ((ts, orig, data), sent)) in got.iter().zip(&frames).enumerate() {
        assert_eq!(data, sent, "frame {i}: bytes differ");
        assert_eq!(*orig as usize, sent.len(), "frame {i}: wire length");
        assert!(
            *ts >= t0 - 1_000_000 && *ts <= t1 + 1_000_000,
            "frame {i}: time {ts} outside the send window [{t0}, {t1}]"
        );
        assert!(
            *ts >= last,
            "frame {i}: time went backwards ({last} -> {ts})"
        );
        last = *ts;
    }
    // Per-packet kernel times: not all equal (a per-batch clock would give runs of equal
    // times).
    let distinct: std::collections::HashSet<i64> = got.iter().map(|g| g.0).collect();
    assert!(
        distinct.len() > got.len() / 2,
        "only {} distinct times for {} frames",
        distinct.len(),
        got.len()
    );
    assert_eq!(
        sock.frames_without_meta(),
        0,
        "metadata reaches user space in copy mode"
    );
    let c = prog.counters().expect("counters");
    eprintln!("xdp counters: {c:?}");
    assert_eq!(c.unaccounted(), 0, "{c:?}");
    assert_eq!(c.seen, frames.len() as u64, "{c:?}");
    assert_eq!(c.redirected, frames.len() as u64, "{c:?}");
    let bytes: u64 = frames.iter().map(|f| f.len() as u64).sum();
    assert_eq!(c.seen_bytes, bytes);
    assert_eq!(c.redirected_bytes, bytes);
    let st = sock.stats().expect("stats");
    assert_eq!(st.received, frames.len() as u64);
    assert_eq!(st.received_bytes, bytes);
    assert_eq!(
        (st.ring_full, st.fill_ring_empty, st.invalid_descs),
        (0, 0, 0),
        "{st:?}"
    );
    prog.detach().expect("detach");
    assert!(prog.attached().is_none());
}

#[test]
fn xdp_filter_rules_are_enforced_and_counted() {
    if !privileged() {
        return;
    }
    let lab = Lab::new(1);
    let _ns = NetnsGuard::enter(&lab.ns_cap).expect("enter the capture namespace");
    let rule = |a: IpAddr, p: u8, action| NetRule {
        addr: a,
        prefix_len: p,
        action,
    };
    let opts = XdpOptions {
        filter: CaptureFilter {
            default: RuleAction::Keep,
            non_ip: RuleAction::Keep,
            nets: vec![
                rule(Ipv4Addr::new(10, 77, 9, 0).into(), 24, RuleAction::Drop),
                rule(Ipv4Addr::new(10, 77, 9, 7).into(), 32, RuleAction::Keep),
                rule(
                    "fd00:dead::".parse::<IpAddr>().expect("v6"),
                    32,
                    RuleAction::Drop,
                ),
            ],
            ports: vec![PortRule {
                port: 9999,
                proto: PortProto::Udp,
                action: RuleAction::Drop,
            }],
        },
        ..Default::default()
    };
    let mut prog = XdpProgram::load(&opts).expect("load XDP");
    let mut sock = XskSocket::open(&lab.cap, 0, &small_socket_opts()).expect("AF_XDP socket");
    prog.register_socket(0, &sock).expect("register");
    prog.attach(&lab.cap, AttachMode::Driver).expect("attach");

    // (frame, kept?)
    let cases: Vec<(Vec<u8>, bool)> = vec![
        (frame4(CAP_IP, 17, 5000, None, 100, 1), true),
        (frame4([10, 77, 9, 5], 17, 5000, None, 100, 2), false),
        (frame4([10, 77, 9, 7], 17, 5000, None, 100, 3), true),
        (frame4(CAP_IP, 17, 9999, None, 100, 4), false),
        (frame4(CAP_IP, 6, 9999, None, 100, 5), true),
        (frame4([10, 77, 9, 5], 6, 80, Some(100), 100, 6), false),
        (frame4(CAP_IP, 17, 5000, Some(100), 100, 7), true),
        (
            frame6("fd00:dead::1".parse().expect("v6"), 5000, 100, 8),
            false,
        ),
        (
            frame6("fd00:beef::1".parse().expect("v6"), 5000, 100, 9),
            true,
        ),
        (
            frame6("fd00:beef::1".parse().expect("v6"), 9999, 100, 10),
            false,
        ),
    ];
    let rounds = 20;
    let mut frames = Vec::new();
    for _ in 0..rounds {
        frames.extend(cases.iter().map(|c| c.0.clone()));
    }
    lab.send(frames, None).join().expect("sender");
    let kept: Vec<u32> = cases.iter().filter(|c| c.1).map(|c| tag_of(&c.0)).collect();
    let want = kept.len() * rounds;
    let got = collect(&mut sock, want, Duration::from_secs(10));
    let mut by_tag: BTreeMap<u32, usize> = BTreeMap::new();
    for g in &got {
        *by_tag.entry(tag_of(&g.2)).or_default() += 1;
    }
    let expect: BTreeMap<u32, usize> = kept.iter().map(|&t| (t, rounds)).collect();
    assert_eq!(by_tag, expect, "captured frames by tag");
    let c = prog.counters().expect("counters");
    let dropped = (cases.len() - kept.len()) * rounds;
    assert_eq!(c.filtered, dropped as u64, "{c:?}");
    assert_eq!(c.redirected, want as u64, "{c:?}");
    assert_eq!(c.unaccounted(), 0, "{c:?}");
}

fn ping(lab: &Lab) -> bool {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.ns_peer,
            "ping",
            "-c",
            "2",
            "-i",
            "0.2",
            "-W",
            "1",
            "-q",
        ])
        .arg(Ipv4Addr::from(CAP_IP).to_string())
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn xdp_no_socket_policy_pass_and_drop() {
    if !privileged() {
        return;
    }
    let lab = Lab::new(1);
    let _ns = NetnsGuard::enter(&lab.ns_cap).expect("enter the capture namespace");
    for (policy, reachable) in [(NoSocketPolicy::Pass, true), (NoSocketPolicy::Drop, false)] {
        let mut prog = XdpProgram::load(&XdpOptions {
            no_socket: policy,
            ..Default::default()
        })
        .expect("load XDP");
        prog.attach(&lab.cap, AttachMode::Driver).expect("attach");
        assert_eq!(ping(&lab), reachable, "ping with {policy:?}");
        let c = prog.counters().expect("counters");
        assert!(c.no_socket >= 2, "{policy:?}: {c:?}");
        assert_eq!(c.no_socket, c.seen, "{policy:?}: {c:?}");
        assert_eq!(c.unaccounted(), 0, "{c:?}");
        prog.detach().expect("detach");
        // The neighbour entry must not carry over to the next round.
        let _ = Command::new("ip")
            .args(["-n", &lab.ns_peer, "neigh", "flush", "dev", &lab.peer])
            .output();
    }
}

#[test]
fn xdp_snap_length_truncates_and_keeps_wire_length() {
    if !privileged() {
        return;
    }
    let lab = Lab::new(1);
    let _ns = NetnsGuard::enter(&lab.ns_cap).expect("enter the capture namespace");
    let mut prog = XdpProgram::load(&XdpOptions {
        snap_len: 128,
        ..Default::default()
    })
    .expect("load XDP");
    let mut sock = XskSocket::open(&lab.cap, 0, &small_socket_opts()).expect("AF_XDP socket");
    prog.register_socket(0, &sock).expect("register");
    prog.attach(&lab.cap, AttachMode::Skb).expect("attach");
    let frames: Vec<Vec<u8>> = (0..100u32)
        .map(|i| {
            frame4(
                CAP_IP,
                17,
                5000,
                None,
                if i % 2 == 0 { 1000 } else { 100 },
                i,
            )
        })
        .collect();
    lab.send(frames.clone(), None).join().expect("sender");
    let got = collect(&mut sock, frames.len(), Duration::from_secs(10));
    assert_eq!(got.len(), frames.len());
    for ((_, orig, data), sent) in got.iter().zip(&frames) {
        assert_eq!(*orig as usize, sent.len());
        let keep = sent.len().min(128);
        assert_eq!(data[..], sent[..keep]);
    }
    let c = prog.counters().expect("counters");
    assert_eq!(c.truncated, 50, "{c:?}");
    assert_eq!(c.trunc_failed, 0, "{c:?}");
    assert_eq!(c.unaccounted(), 0, "{c:?}");
    eprintln!(
        "skb mode: frames without metadata {} of {}",
        sock.frames_without_meta(),
        got.len()
    );
}

/// [`open_capture`] on a two-queue veth: every frame reaches the socket of its queue (the
/// sending CPU's in driver mode) and the program accounts for all of them. Then a queue the
/// interface does not have: the error names it, and nothing stays attached.
#[test]
fn xdp_multi_queue_veth_spreads_over_two_sockets() {
    if !privileged() {
        return;
    }
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI machine has one CPU: the multi-queue test needs two"
        );
        eprintln!("SKIPPED: the multi-queue test needs two CPUs");
        return;
    }
    let lab = Lab::new(2);
    let _ns = NetnsGuard::enter(&lab.ns_cap).expect("enter the capture namespace");
    let XdpCapture {
        program: mut prog,
        sockets: mut socks,
        mode,
    } = open_capture(
        &lab.cap,
        &[0, 1],
        &small_socket_opts(),
        &XdpOptions::default(),
        AttachMode::Driver,
    )
    .expect("XDP and two AF_XDP sockets");
    assert_eq!(mode, ActiveMode::Driver);
    assert_eq!(socks.len(), 2);
    let per = 500u32;
    let a: Vec<Vec<u8>> = (0..per)
        .map(|i| frame4(CAP_IP, 17, 5000, None, 200, i))
        .collect();
    let b: Vec<Vec<u8>> = (0..per)
        .map(|i| frame4(CAP_IP, 17, 5001, None, 200, 100_000 + i))
        .collect();
    let h0 = lab.send(a, Some(0));
    let h1 = lab.send(b, Some(1));
    h0.join().expect("sender 0");
    h1.join().expect("sender 1");
    let mut got: Vec<Vec<u32>> = vec![Vec::new(), Vec::new()];
    let t = Instant::now();
    while got.iter().map(Vec::len).sum::<usize>() < 2 * per as usize
        && t.elapsed() < Duration::from_secs(10)
    {
        for (q, s) in socks.iter_mut().enumerate() {
            let g = &mut got[q];
            s.recv_batch(Duration::from_millis(5), &mut |f| g.push(tag_of(f.data)))
                .expect("recv");
        }
    }
    eprintln!(
        "queue 0: {} frames ({} from cpu 0), queue 1: {} frames ({} from cpu 1)",
        got[0].len(),
        got[0].iter().filter(|&&t| t < 100_000).count(),
        got[1].len(),
        got[1].iter().filter(|&&t| t >= 100_000).count()
    );
    assert_eq!(got[0].len() + got[1].len(), 2 * per as usize);
    assert!(
        !got[0].is_empty() && !got[1].is_empty(),
        "both queues receive"
    );
    // Driver mode on veth: the RX queue is the sending CPU's.
    assert!(
        got[0].iter().all(|&t| t < 100_000),
        "queue 0 holds CPU 0's frames"
    );
    assert!(
        got[1].iter().all(|&t| t >= 100_000),
        "queue 1 holds CPU 1's frames"
    );
    let c = prog.counters().expect("counters");
    assert_eq!(c.redirected, 2 * u64::from(per), "{c:?}");
    assert_eq!(c.unaccounted(), 0, "{c:?}");
    let link = || {
        let out = Command::new("ip")
            .args(["-n", &lab.ns_cap, "link", "show", "dev", &lab.cap])
            .output()
            .expect("ip link");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(link().contains("prog/xdp"), "attached: {}", link());
    // A queue held by a live socket stays busy: `open` waits for it, bounded, then says so.
    let t = Instant::now();
    let wait = Duration::from_millis(300);
    let busy = XskSocket::open_waiting(&lab.cap, 0, &small_socket_opts(), wait)
        .expect_err("queue 0 is held");
    assert_eq!(busy.kind(), std::io::ErrorKind::ResourceBusy, "{busy}");
    assert!(t.elapsed() >= wait, "returned after {:?}", t.elapsed());
    prog.detach().expect("detach");
    drop((prog, socks));
    // Reopening queue 0 right after its socket closed works (the kernel frees the old
    // binding asynchronously: `open` waits out the moment the queue still reads busy).
    let e = open_capture(
        &lab.cap,
        &[0, 5],
        &small_socket_opts(),
        &XdpOptions::default(),
        AttachMode::Driver,
    )
    .expect_err("queue 5 of a two-queue veth");
    assert!(
        matches!(
            e,
            tapvault_dataplane::live::xdp::Error::Socket { queue: 5, .. }
        ),
        "{e}"
    );
    let after = link();
    assert!(
        after.contains(&lab.cap) && !after.contains("prog/xdp"),
        "nothing attached after the failure: {after}"
    );
}

/// A rough receive rate (not a benchmark: no loss-free search). Run by hand:
/// `cargo test --release --test integration xdp_rough_rate -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn xdp_rough_rate() {
    if !privileged() {
        return;
    }
    let lab = Lab::new(1);
    let _ns = NetnsGuard::enter(&lab.ns_cap).expect("enter the capture namespace");
    let mut prog = XdpProgram::load(&XdpOptions::default()).expect("load XDP");
    let mut sock = XskSocket::open(&lab.cap, 0, &XskOptions::default()).expect("AF_XDP socket");
    prog.register_socket(0, &sock).expect("register");
    prog.attach(&lab.cap, AttachMode::Driver).expect("attach");
    for size in [64usize, 1514] {
        let n = 200_000u32;
        let frames: Vec<Vec<u8>> = (0..n)
            .map(|i| frame4(CAP_IP, 17, 5000, None, size, i))
            .collect();
        let before = prog.counters().expect("counters").redirected;
        let t = Instant::now();
        let h = lab.send(frames, Some(1));
        let mut got = 0u64;
        let mut idle = 0;
        while idle < 10 {
            let k = sock
                .recv_batch(Duration::from_millis(10), &mut |_| {})
                .expect("recv");
            got += k as u64;
            idle = if k == 0 { idle + 1 } else { 0 };
        }
        h.join().expect("sender");
        let secs = t.elapsed().as_secs_f64() - 0.1;
        let c = prog.counters().expect("counters");
        eprintln!(
            "{size} B: sent {n}, received {got} in {secs:.2} s = {:.0} pps; redirected {}, \
             socket stats {:?}",
            got as f64 / secs,
            c.redirected - before,
            sock.stats().expect("stats")
        );
    }
}
