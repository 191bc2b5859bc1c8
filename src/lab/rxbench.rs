//! `tapvault rxbench`: the bare receive-and-drop loop, the ceiling of the live benchmark. It
//! opens one or more live sources, counts what they deliver without decoding or storing
//! anything, and prints received frames and the kernel's drop counters as one JSON line.
//!
//! The loop ([`receive_and_drop`]) takes any [`RxSource`]s, so another source kind needs only
//! a [`SourceKind`] variant and a branch in [`open_sources`]. The AF_XDP kind also loads and
//! attaches the XDP program (redirect to one socket per RX queue, nothing else configured);
//! [`Opened`] keeps it alive for the run and [`run`] detaches it at the end.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use tapvault_dataplane::live::{
    RxSource, SourceStats,
    afpacket::{AfPacketOptions, AfPacketSource, Fanout, FanoutMode, netns_path},
    sys::NetnsGuard,
    xdp::{AttachMode, XdpCounters, XdpOptions, XdpProgram, open_capture},
    xsk::{BindMode, XskOptions},
};

/// Which kind of live source to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum SourceKind {
    /// AF_PACKET TPACKET_V3 rings, one per socket of a fanout group.
    Afpacket,
    /// AF_XDP: the XDP program redirects every frame to one socket per RX queue.
    Xsk,
}

/// XDP attach mode of the `xsk` source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum XdpModeArg {
    /// Driver mode, else generic.
    Auto,
    /// Native (driver) XDP only.
    Driver,
    /// Generic XDP (`xdpgeneric`).
    Skb,
}

/// AF_XDP bind mode of the `xsk` source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BindArg {
    /// Zero-copy, else copy mode.
    Auto,
    /// Zero-copy only.
    ZeroCopy,
    /// Copy mode only.
    Copy,
}

/// Arguments of `tapvault rxbench`.
#[derive(clap::Args, Debug)]
pub(crate) struct RxBenchArgs {
    /// The source kind.
    #[arg(long, value_enum, default_value_t = SourceKind::Afpacket)]
    source: SourceKind,
    /// The interface to receive on.
    #[arg(long)]
    iface: String,
    /// Open the sources inside this network namespace (a name under /run/netns, or a path).
    #[arg(long)]
    netns: Option<String>,
    /// Upper bound of the run in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop once frames have arrived and then none for this many seconds.
    #[arg(long)]
    idle: Option<f64>,
    /// Sockets (workers) in one fanout group; 1 = a single socket without fanout.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    fanout: u16,
    /// Ring block size in bytes (AF_PACKET).
    #[arg(long, default_value_t = 1 << 20)]
    block_size: u32,
    /// Ring blocks per socket (AF_PACKET).
    #[arg(long, default_value_t = 32)]
    block_count: u32,
    /// Pin the worker of socket i to CPU `cpus[i % len]` (comma-separated).
    #[arg(long, value_delimiter = ',')]
    cpus: Vec<usize>,
    /// Promiscuous mode while running (AF_PACKET).
    #[arg(long)]
    promisc: bool,
    /// RX queues to open an AF_XDP socket on (comma-separated); default: every RX queue.
    #[arg(long, value_delimiter = ',')]
    queues: Vec<u32>,
    /// UMEM frames per AF_XDP socket (at least `--ring-size`).
    #[arg(long, default_value_t = 4096)]
    umem_frames: u32,
    /// Bytes per UMEM frame: 2048 or 4096.
    #[arg(long, default_value_t = 4096)]
    frame_size: u32,
    /// Entries of the fill and RX rings of each AF_XDP socket (a power of two).
    #[arg(long, default_value_t = 4096)]
    ring_size: u32,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value_t = XdpModeArg::Auto)]
    xdp_mode: XdpModeArg,
    /// AF_XDP bind mode.
    #[arg(long, value_enum, default_value_t = BindArg::Auto)]
    bind: BindArg,
}

/// What one source delivered.
#[derive(Debug, Clone)]
pub(crate) struct PerSource {
    pub(crate) name: String,
    pub(crate) frames: u64,
    pub(crate) bytes: u64,
    pub(crate) stats: SourceStats,
}

/// The result of a receive-and-drop run.
#[derive(Debug, Clone)]
pub(crate) struct RxReport {
    pub(crate) sources: Vec<PerSource>,
    /// Arrival (kernel timestamp) of the first and last frame, ns since the epoch; 0 if none.
    pub(crate) first_ns: i64,
    pub(crate) last_ns: i64,
    pub(crate) wall: Duration,
}

/// The open sources, and the XDP program that feeds them (AF_XDP): it must outlive them.
pub(crate) struct Opened {
    pub(crate) sources: Vec<Box<dyn RxSource>>,
    pub(crate) xdp: Option<XdpProgram>,
    /// How the sources are attached, for the ready line.
    pub(crate) detail: String,
}

/// The XDP program and one AF_XDP socket per queue, registered, then attached (in `a.netns`
/// when given).
fn open_xsk(a: &RxBenchArgs) -> Result<Opened> {
    // Everything below opens in the namespace; the guard brings this thread back.
    let _ns = match &a.netns {
        Some(ns) if ns.contains('/') => Some(
            NetnsGuard::enter_path(std::path::Path::new(ns))
                .with_context(|| format!("cannot enter namespace `{ns}`"))?,
        ),
        Some(ns) => {
            Some(NetnsGuard::enter(ns).with_context(|| format!("cannot enter namespace `{ns}`"))?)
        }
        None => None,
    };
    let queues: Vec<u32> = if a.queues.is_empty() {
        (0..crate::capture::rx_queues(&a.iface, None)? as u32).collect()
    } else {
        a.queues.clone()
    };
    let xsk = XskOptions {
        frame_count: a.umem_frames,
        frame_size: a.frame_size,
        ring_size: a.ring_size,
        bind: match a.bind {
            BindArg::Auto => BindMode::Auto,
            BindArg::ZeroCopy => BindMode::ZeroCopy,
            BindArg::Copy => BindMode::Copy,
        },
        ..XskOptions::default()
    };
    let mode = match a.xdp_mode {
        XdpModeArg::Auto => AttachMode::Auto,
        XdpModeArg::Driver => AttachMode::Driver,
        XdpModeArg::Skb => AttachMode::Skb,
    };
    let cap = open_capture(&a.iface, &queues, &xsk, &XdpOptions::default(), mode)
        .context("cannot set up XDP and AF_XDP capture")?;
    let binds: Vec<String> = queues
        .iter()
        .zip(&cap.sockets)
        .map(|(q, sock)| format!("queue {q} {}", sock.bind_mode()))
        .collect();
    Ok(Opened {
        detail: format!("XDP {:?} mode, {}", cap.mode, binds.join(", ")),
        sources: cap
            .sockets
            .into_iter()
            .map(|s| Box::new(s) as Box<dyn RxSource>)
            .collect(),
        xdp: Some(cap.program),
    })
}

/// Opens the sources `a` asks for.
pub(crate) fn open_sources(a: &RxBenchArgs) -> Result<Opened> {
    let mut out: Vec<Box<dyn RxSource>> = Vec::new();
    match a.source {
        SourceKind::Xsk => return open_xsk(a),
        SourceKind::Afpacket => {
            // Fanout group ids are per network namespace; the pid keeps concurrent runs apart.
            let group = (std::process::id() & 0xffff) as u16;
            for _ in 0..a.fanout {
                let opts = AfPacketOptions {
                    netns: a.netns.as_deref().map(netns_path),
                    block_size: a.block_size,
                    block_count: a.block_count,
                    fanout: (a.fanout > 1).then_some(Fanout {
                        group,
                        mode: FanoutMode::Hash,
                        defrag: false,
                    }),
                    promiscuous: a.promisc,
                    ..AfPacketOptions::new(&a.iface)
                };
                let s = AfPacketSource::open(&opts)
                    .with_context(|| format!("cannot open AF_PACKET on `{}`", a.iface))?;
                out.push(Box::new(s));
            }
        }
    }
    Ok(Opened {
        sources: out,
        xdp: None,
        detail: "AF_PACKET TPACKET_V3".into(),
    })
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Receives from every source on its own thread (pinned to `cpus[i % len]` when given),
/// counting frames and bytes and touching nothing else, until `duration` passes or, with
/// `idle`, frames have arrived and then none for that long. Reads each source's kernel
/// counters at the end.
pub(crate) fn receive_and_drop(
    sources: Vec<Box<dyn RxSource>>,
    duration: Duration,
    idle: Option<Duration>,
    cpus: &[usize],
) -> Result<RxReport> {
    let stop = Arc::new(AtomicBool::new(false));
    let first = Arc::new(AtomicI64::new(i64::MAX));
    let last = Arc::new(AtomicI64::new(0));
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for (i, mut src) in sources.into_iter().enumerate() {
        let cpu = (!cpus.is_empty()).then(|| cpus[i % cpus.len()]);
        let (stop, first, last) = (Arc::clone(&stop), Arc::clone(&first), Arc::clone(&last));
        let h = thread::Builder::new()
            .name(format!("rx{i}"))
            .spawn(move || -> Result<PerSource> {
                if let Some(cpu) = cpu {
                    let ok = core_affinity::get_core_ids()
                        .unwrap_or_default()
                        .into_iter()
                        .find(|c| c.id == cpu)
                        .is_some_and(core_affinity::set_for_current);
                    if !ok {
                        bail!("cannot pin worker {i} to CPU {cpu}");
                    }
                }
                let (mut frames, mut bytes) = (0u64, 0u64);
                let (mut lo, mut hi) = (i64::MAX, 0i64);
                while !stop.load(Ordering::Relaxed) {
                    let n = src
                        .recv_batch(Duration::from_millis(20), &mut |f| {
                            bytes += f.data.len() as u64;
                            lo = lo.min(f.ts_ns);
                            hi = hi.max(f.ts_ns);
                        })
                        .with_context(|| format!("receiving on {}", src.name()))?;
                    if n > 0 {
                        frames += n as u64;
                        first.fetch_min(lo, Ordering::Relaxed);
                        last.fetch_max(hi, Ordering::Relaxed);
                    }
                }
                // Whatever is still in the ring counts as received too.
                loop {
                    let n = src.recv_batch(Duration::ZERO, &mut |f| {
                        bytes += f.data.len() as u64;
                        hi = hi.max(f.ts_ns);
                    })?;
                    if n == 0 {
                        break;
                    }
                    frames += n as u64;
                    last.fetch_max(hi, Ordering::Relaxed);
                }
                let stats = src.stats().context("reading the kernel's counters")?;
                Ok(PerSource {
                    name: src.name().to_string(),
                    frames,
                    bytes,
                    stats,
                })
            })
            .context("cannot start a receive thread")?;
        handles.push(h);
    }
    loop {
        thread::sleep(Duration::from_millis(20));
        if t0.elapsed() >= duration || handles.iter().any(|h| h.is_finished()) {
            break;
        }
        if let Some(idle) = idle {
            let l = last.load(Ordering::Relaxed);
            if l > 0 && now_ns() - l > idle.as_nanos() as i64 {
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut sources = Vec::new();
    for h in handles {
        match h.join() {
            Ok(r) => sources.push(r?),
            Err(_) => bail!("a receive thread panicked"),
        }
    }
    let f = first.load(Ordering::Relaxed);
    Ok(RxReport {
        sources,
        first_ns: if f == i64::MAX { 0 } else { f },
        last_ns: last.load(Ordering::Relaxed),
        wall: t0.elapsed(),
    })
}

/// Runs `tapvault rxbench`.
pub(crate) fn run(a: RxBenchArgs) -> Result<()> {
    if !(a.duration > 0.0 && a.duration <= 86_400.0) {
        bail!("--duration must be between 0 and 86400 seconds");
    }
    if let Some(i) = a.idle
        && !(i > 0.0 && i <= 3600.0)
    {
        bail!("--idle must be between 0 and 3600 seconds");
    }
    let Opened {
        sources,
        xdp,
        detail,
    } = open_sources(&a)?;
    // The benchmark script waits for this line before it starts sending.
    eprintln!("rxbench: ready ({} sources; {detail})", sources.len());
    let r = receive_and_drop(
        sources,
        Duration::from_secs_f64(a.duration),
        a.idle.map(Duration::from_secs_f64),
        &a.cpus,
    );
    // Counters first, then detach (the program's maps live as long as it does); on every
    // path, so a failed run does not leave the interface redirecting into closed sockets.
    let xdp_counters: Option<XdpCounters> = match xdp {
        Some(mut p) => {
            let c = p.counters().context("reading the XDP counters");
            if let Err(e) = p.detach() {
                eprintln!("rxbench: detaching XDP from {}: {e}", a.iface);
            }
            Some(c?)
        }
        None => None,
    };
    let r = r?;
    let received: u64 = r.sources.iter().map(|s| s.frames).sum();
    let bytes: u64 = r.sources.iter().map(|s| s.bytes).sum();
    let drops: u64 = r.sources.iter().map(|s| s.stats.ring_full).sum();
    let other: u64 = r
        .sources
        .iter()
        .map(|s| s.stats.fill_ring_empty + s.stats.invalid_descs)
        .sum();
    let freezes: u64 = r.sources.iter().map(|s| s.stats.freezes).sum();
    // Frames the XDP program could not hand to a socket never reached any ring: drops too.
    let no_socket = xdp_counters.map_or(0, |x| x.no_socket + x.errors);
    let span = (r.last_ns - r.first_ns).max(0) as f64 / 1e9;
    let out = serde_json::json!({
        "source": format!("{:?}", a.source).to_lowercase(),
        "iface": a.iface,
        "sockets": r.sources.len(),
        "wall_s": r.wall.as_secs_f64(),
        "received": received,
        "received_bytes": bytes,
        "kernel_drops": drops + other + no_socket,
        "ring_full": drops,
        "other_drops": other,
        "xdp": xdp_counters.as_ref().map(crate::capture::xdp_status),
        "freezes": freezes,
        "active_s": span,
        "pps": if span > 0.0 { received as f64 / span } else { 0.0 },
        "per_socket": r.sources.iter().map(|s| serde_json::json!({
            "name": s.name,
            "received": s.frames,
            "received_bytes": s.bytes,
            "kernel_drops": s.stats.ring_full + s.stats.fill_ring_empty + s.stats.invalid_descs,
            "freezes": s.stats.freezes,
        })).collect::<Vec<_>>(),
    });
    println!("{out}");
    Ok(())
}
