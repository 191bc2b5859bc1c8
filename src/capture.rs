//! `tapvault capture`: the live pipeline with its sources, storage and status.
//!
//! Sources are built per kind (a capture file today; AF_XDP and AF_PACKET through
//! `dataplane::live`), each worker gets its own packet writer, and flow records go to the
//! Parquet store on the output thread. SIGINT and SIGTERM stop intake; the pipeline then
//! drains, flushes every flow and publishes what is open.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use tapvault_api::{
    ApiOptions, ApiServer, InterfaceStatus, QueueDrops, QueueStatus, ShardStatus, StatusSnapshot,
    StatusSource, StorageStatus,
};
use tapvault_config::{
    Config, FileSpeed, NoSocketAction, PipelineMode, Queues, SourceKind, XdpMode, ZeroCopy,
};
use tapvault_dataplane::host::{DriverStats, is_rx_loss_stat};
use tapvault_dataplane::live::{
    RxSource, SourceStats,
    afpacket::{self, AfPacketOptions, AfPacketSource, Fanout, FanoutMode},
    file::{FileSource, Speed},
    pipeline::{Clock, LiveStats, Pipeline, PipelineOptions, RecordSink, Report, WorkerSpill},
    spill::SpillThread,
    sys::{IfaceCounters, IfaceStats, NetnsGuard, softnet_dropped},
    xdp::{
        AttachMode, CaptureFilter, NetRule, NoSocketPolicy, PortProto, PortRule, RuleAction,
        XdpCounters, XdpOptions, XdpProgram, open_capture,
    },
    xsk::{BindMode, BusyPoll, XskOptions},
};
use tapvault_storage::{
    DnsRecord, FlowRecord, RetentionPolicy, SegmentOptions,
    store::{
        FlowStore, FlowStoreStats, Maintenance, MaintenanceHandle, PacketStore, PacketStoreStats,
        Shared, StoreOptions, recover_store,
    },
};

/// The process-wide stop flag, set by SIGINT or SIGTERM (installed once: the handler can
/// only be set once per process).
pub(crate) fn stop_flag() -> Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| {
        let f = Arc::new(AtomicBool::new(false));
        let g = f.clone();
        if let Err(e) = ctrlc::set_handler(move || g.store(true, Ordering::SeqCst)) {
            eprintln!("tapvault: cannot install the SIGINT/SIGTERM handler: {e}");
        }
        f
    })
    .clone()
}

/// Everything `capture` needs: the configuration and the run's own flags.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) config: Config,
    /// Open the sources inside this network namespace.
    pub(crate) netns: Option<String>,
    /// Stop after this long.
    pub(crate) duration: Option<Duration>,
    /// Print a status line this often (0: never).
    pub(crate) status_every: Duration,
    /// Serve the HTTP API (`[api]`) while capturing.
    pub(crate) serve_api: bool,
}

/// The RX channels `ethtool -l` reports as current (RX + combined), if it can tell.
fn ethtool_rx_channels(iface: &str, netns: Option<&str>) -> Option<usize> {
    let mut cmd = std::process::Command::new(if netns.is_some() { "ip" } else { "ethtool" });
    if let Some(ns) = netns {
        cmd.args(["netns", "exec", ns, "ethtool"]);
    }
    let out = cmd.args(["-l", iface]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let current = text.split("Current hardware settings:").nth(1)?;
    let field = |name: &str| {
        current
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0)
    };
    let n = field("RX:") + field("Combined:");
    (n > 0).then_some(n)
}

/// RX queues of `iface` (in namespace `netns`, if given) in use: the channels `ethtool -l`
/// reports as current, else the kernel's queue count from `ip -d link` (which is the
/// maximum on some drivers: veth reports its possible queues there). Not sysfs: it shows
/// the namespace it was mounted in, not the thread's.
pub(crate) fn rx_queues(iface: &str, netns: Option<&str>) -> Result<usize> {
    let mut cmd = std::process::Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    let out = cmd
        .args(["-j", "-d", "link", "show", "dev", iface])
        .output()
        .context("cannot run `ip` to count the interface's RX queues")?;
    if !out.status.success() {
        bail!(
            "capture.interface: `{iface}` not found: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    if let Some(n) = ethtool_rx_channels(iface, netns) {
        return Ok(n);
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("cannot parse `ip -j link` output")?;
    v[0]["real_num_rx_queues"]
        .as_u64()
        .or_else(|| v[0]["num_rx_queues"].as_u64())
        .map(|n| n.max(1) as usize)
        .context("`ip -j -d link` shows no num_rx_queues")
}

/// The XDP filter from the configuration's rules (validated: each lists networks or ports).
fn xdp_filter(c: &tapvault_config::FilterConfig) -> Result<CaptureFilter> {
    let act = |a: tapvault_config::FilterAction| match a {
        tapvault_config::FilterAction::Keep => RuleAction::Keep,
        tapvault_config::FilterAction::Drop => RuleAction::Drop,
    };
    let mut f = CaptureFilter {
        default: act(c.default_action),
        ..CaptureFilter::default()
    };
    for (i, r) in c.rules.iter().enumerate() {
        for n in &r.networks {
            let net: tapvault_config::Network = n
                .parse()
                .map_err(|e| anyhow::anyhow!("capture.filter.rules[{i}]: {e}"))?;
            f.nets.push(NetRule {
                addr: net.addr,
                prefix_len: net.prefix,
                action: act(r.action),
            });
        }
        for &port in &r.ports {
            f.ports.push(PortRule {
                port,
                proto: PortProto::Both,
                action: act(r.action),
            });
        }
    }
    Ok(f)
}

/// The XDP program and one AF_XDP socket per RX queue, registered, then attached.
fn open_xdp(s: &Settings) -> Result<(XdpProgram, Vec<Box<dyn RxSource>>)> {
    let c = &s.config.capture;
    // Everything below opens in the capture namespace; the guard brings this thread back.
    let _ns = match &s.netns {
        Some(ns) => {
            Some(NetnsGuard::enter(ns).with_context(|| format!("cannot enter namespace `{ns}`"))?)
        }
        None => None,
    };
    let queues: Vec<u32> = match &c.queues {
        Queues::All => (0..rx_queues(&c.interface, None)? as u32).collect(),
        Queues::List(l) => l.clone(),
    };
    let snap_len = if c.snap_len >= c.frame_size {
        0
    } else {
        c.snap_len
    };
    let xdp = XdpOptions {
        snap_len,
        no_socket: match c.no_socket_action {
            NoSocketAction::Pass => NoSocketPolicy::Pass,
            NoSocketAction::Drop => NoSocketPolicy::Drop,
        },
        filter: xdp_filter(&c.filter)?,
    };
    let xsk = XskOptions {
        frame_count: c.umem_frames,
        // The fill and RX rings as deep as the UMEM allows (the kernel's limit for a ring is
        // 2^16 here): the rings, not the UMEM, bound how many frames wait for the worker.
        ring_size: c.umem_frames.min(1 << 16),
        frame_size: c.frame_size,
        bind: match c.zero_copy {
            ZeroCopy::Auto => BindMode::Auto,
            ZeroCopy::On => BindMode::ZeroCopy,
            ZeroCopy::Off => BindMode::Copy,
        },
        need_wakeup: c.need_wakeup,
        busy_poll: c.busy_poll.then_some(BusyPoll {
            usecs: 50,
            budget: c.busy_poll_budget,
        }),
        ..XskOptions::default()
    };
    let mode = match c.xdp_mode {
        XdpMode::Driver => AttachMode::Driver,
        XdpMode::Skb => AttachMode::Skb,
        XdpMode::Auto => AttachMode::Auto,
    };
    let cap = open_capture(&c.interface, &queues, &xsk, &xdp, mode)
        .context("cannot set up XDP and AF_XDP capture")?;
    eprintln!(
        "tapvault: XDP attached to {} ({:?} mode), {} AF_XDP socket(s), per-frame metadata {}",
        c.interface,
        cap.mode,
        cap.sockets.len(),
        if cap.program.meta_in_data() {
            "in the packet data (this kernel refuses bpf_xdp_adjust_meta to XDP programs)"
        } else {
            "in the XDP metadata area"
        }
    );
    let sources = cap
        .sockets
        .into_iter()
        .map(|s| Box::new(s) as Box<dyn RxSource>)
        .collect();
    Ok((cap.program, sources))
}

// The capture's counters in the API's types. Each function below is the one mapping of a
// group of counters: the live status (`LiveStatus::snapshot`) and the final report
// (`report_json`) both go through them (`rxbench` too, for the XDP counters), so a counter
// mapped here shows up in each. Where they take a dataplane struct apart, the pattern names every field: a
// counter added there does not compile until it is mapped or left out here on purpose.

/// The XDP program's counters as the API reports them, and where it puts the metadata. Byte
/// counts, `trunc_failed` and `non_ip` are not reported.
pub(crate) fn xdp_status(c: &XdpCounters) -> tapvault_api::XdpCounters {
    let XdpCounters {
        seen,
        seen_bytes: _,
        redirected,
        redirected_bytes: _,
        filtered,
        no_socket,
        errors,
        truncated,
        meta_failed,
        trunc_failed: _,
        non_ip: _,
        meta_in_data,
    } = *c;
    let mut x = tapvault_api::XdpCounters::default();
    x.seen = seen;
    x.redirected = redirected;
    x.filtered = filtered;
    x.no_socket = no_socket;
    x.errors = errors;
    x.truncated = truncated;
    x.meta_failed = meta_failed;
    x.metadata = if meta_in_data {
        "packet_data"
    } else {
        "meta_area"
    }
    .into();
    x
}

/// A source's kernel counters, and the frames its worker dropped at the hand-off to the
/// shards, as the API's drop counters. Not drops, so not here: the volume counters
/// (`received`, `received_bytes`: the queue's packets and bytes) and AF_PACKET ring freezes
/// (`QueueStatus::ring_freezes`). No source reports drops for `kernel`, which stays 0.
fn queue_drops(kernel: &SourceStats, handoff_dropped: u64) -> QueueDrops {
    let SourceStats {
        received: _,
        received_bytes: _,
        ring_full,
        fill_ring_empty,
        invalid_descs,
        freezes: _,
    } = *kernel;
    let mut d = QueueDrops::default();
    d.ring_full = ring_full;
    d.fill_ring_empty = fill_ring_empty;
    d.invalid_descs = invalid_descs;
    d.handoff_full = handoff_dropped;
    d
}

/// The stores' counters, summed over every packet store, as the API reports them; free
/// space of `data_dir` when given.
fn storage_status(store: &StoreStatus, data_dir: Option<&std::path::Path>) -> StorageStatus {
    let mut st = StorageStatus::default();
    let mut lag = 0i64;
    for p in &store.packets {
        let p = p.snapshot();
        st.packets_written += p.packets_written;
        st.bytes_written += p.bytes_written;
        st.segments_written += p.segments_published;
        st.frames_passed_through += p.frames_passed_through;
        st.packets_dropped +=
            p.spill_dropped_disk_full + p.spill_dropped_io_error + p.spill_dropped_bad_timestamp;
        st.paused_disk_full |= p.paused.is_some();
        st.errors += u64::from(p.last_error.is_some());
        lag = lag.max(p.storage_lag_ns);
    }
    if let Some(f) = &store.flows {
        let f = f.snapshot();
        st.records_accepted = f.records_accepted;
        st.records_dropped = f.dropped_buffer_full;
        st.flow_files_written = f.files_published;
        st.errors += f.dropped_buffer_full + f.records_unreadable;
        st.paused_disk_full |= f.paused.is_some();
    }
    st.lag_seconds = Some(lag as f64 / 1e9);
    st.free_bytes = data_dir.and_then(tapvault_storage::store::free_bytes);
    st
}

/// The final counters as one JSON object: the pipeline's totals, the kernel's drops under
/// their `kernel_*` names, and the XDP, storage and interface counters as `/api/v1/status`
/// names them.
pub(crate) fn report_json(
    r: &Report,
    xdp: Option<&XdpCounters>,
    storage: Option<&StorageStatus>,
    iface: Option<&InterfaceStatus>,
) -> serde_json::Value {
    let malformed: u64 = r.malformed.iter().sum();
    let drops = queue_drops(&r.source, r.handoff_dropped);
    serde_json::json!({
        "xdp": xdp.map(xdp_status),
        "frames": r.frames,
        "worker_frames": r.worker_frames,
        "ip_packets": r.ip_packets,
        "not_ip": r.not_ip,
        "malformed": malformed,
        "handoff_dropped": drops.handoff_full,
        "source_errors": r.source_errors,
        "kernel_received": r.source.received,
        "kernel_ring_full": drops.ring_full,
        "kernel_fill_ring_empty": drops.fill_ring_empty,
        "kernel_invalid_descs": drops.invalid_descs,
        "kernel_freezes": r.source.freezes,
        "pipeline": if r.inline { "inline" } else { "threaded" },
        "shard_threads": r.shard_threads,
        "flows_created": r.flows.flows_created,
        "records": r.flows.records,
        "evictions": r.flows.evictions,
        "storage": storage,
        "interface": iface,
    })
}

/// One worker's packet store (crash-safe segments; disk-full pauses, counted).
struct StoreSpill(Option<PacketStore>);

impl WorkerSpill for StoreSpill {
    #[inline]
    fn packet(&mut self, ts_ns: i64, orig_len: u32, data: &[u8], flow: u64) {
        if let Some(p) = &mut self.0 {
            p.write(ts_ns, orig_len, data, flow);
        }
    }
    fn tick(&mut self, now_ns: i64) {
        if let Some(p) = &mut self.0 {
            p.tick(now_ns);
        }
    }
    fn finish(&mut self) {
        if let Some(p) = self.0.take() {
            p.close();
        }
    }
}

/// A copy of every flow record, for whoever started the capture in-process.
pub(crate) type Tee = Arc<std::sync::Mutex<Vec<FlowRecord>>>;

/// Worker `i`'s spill as the pipeline runs it. Threaded, a packet store gets a thread of its
/// own ([`SpillThread`]), so its zstd compression leaves the core that serves the RX queue
/// (the threaded pipeline runs when there are cores for it); inline, where the process has
/// one core anyway, the worker stores its frames itself.
fn spill_for(spill: StoreSpill, i: usize, inline: bool) -> Result<Box<dyn WorkerSpill>> {
    if inline || spill.0.is_none() {
        return Ok(Box::new(spill));
    }
    let t = SpillThread::spawn(format!("spill-w{i}"), Box::new(spill))
        .context("cannot start a packet spill thread")?;
    Ok(Box::new(t))
}

/// Flow records into the flow store (write-ahead log, then Parquet).
struct FlowSink {
    store: Option<FlowStore>,
    tee: Option<Tee>,
}

impl RecordSink for FlowSink {
    fn record(&mut self, rec: FlowRecord) {
        if let Some(s) = &mut self.store {
            s.write(&rec);
        }
        if let Some(t) = &self.tee
            && let Ok(mut v) = t.lock()
        {
            v.push(rec);
        }
    }
    fn dns(&mut self, _rec: DnsRecord) {}
    fn tick(&mut self, now_ns: i64) {
        if let Some(s) = &mut self.store {
            s.tick(now_ns);
        }
    }
    fn finish(&mut self) {
        if let Some(s) = self.store.take() {
            let st = s.close();
            eprintln!(
                "tapvault: {} flow record(s) stored, {} Parquet file(s) published",
                st.records_accepted, st.files_published
            );
        }
    }
}

/// Status of the stores, for the API.
#[derive(Clone, Default)]
pub(crate) struct StoreStatus {
    pub(crate) packets: Vec<Shared<PacketStoreStats>>,
    pub(crate) flows: Option<Shared<FlowStoreStats>>,
}

type Opened = (Vec<Box<dyn RxSource>>, PipelineOptions, Option<XdpProgram>);

fn open_sources(s: &Settings) -> Result<Opened> {
    let c = &s.config.capture;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut opts = PipelineOptions {
        flow: s.config.flow.clone(),
        worker_cpus: c.cpus.iter().map(|&c| c as usize).collect(),
        ..PipelineOptions::default()
    };
    let mut xdp = None;
    let sources: Vec<Box<dyn RxSource>> = match c.source {
        SourceKind::File => {
            let speed = match c.file_speed {
                FileSpeed::Max => Speed::Max,
                FileSpeed::Recorded => Speed::Recorded,
            };
            let src = FileSource::open(&c.file_path, speed)
                .with_context(|| format!("cannot open `{}`", c.file_path.display()))?;
            opts.link_type = src.link_type();
            opts.clock = Clock::Packet;
            vec![Box::new(src)]
        }
        SourceKind::AfPacket => {
            if c.interface.is_empty() {
                bail!("capture.interface: required for the af_packet source");
            }
            let workers = match c.workers {
                0 => rx_queues(&c.interface, s.netns.as_deref())?,
                n => n as usize,
            };
            let group = match c.fanout_group {
                0 => (std::process::id() % 0xfffe + 1) as u16,
                g => g,
            };
            let mut v: Vec<Box<dyn RxSource>> = Vec::with_capacity(workers);
            for _ in 0..workers {
                let mut o = AfPacketOptions::new(c.interface.clone());
                o.netns = s.netns.as_deref().map(afpacket::netns_path);
                o.block_size = u32::try_from(c.block_size.0)
                    .context("capture.block_size: must be below 4GiB")?;
                o.block_count = c.block_count;
                o.snap_len = c.snap_len;
                o.promiscuous = c.promiscuous;
                o.fanout = Some(Fanout {
                    group,
                    mode: FanoutMode::Hash,
                    defrag: false,
                });
                let src = AfPacketSource::open(&o)
                    .with_context(|| format!("cannot open AF_PACKET on `{}`", c.interface))?;
                v.push(Box::new(src));
            }
            v
        }
        SourceKind::AfXdp => {
            if c.interface.is_empty() {
                bail!("capture.interface: required for the af_xdp source");
            }
            let (prog, v) = open_xdp(s)?;
            xdp = Some(prog);
            v
        }
    };
    opts.inline = pipeline_inline(s.config.flow.pipeline, &sources, opts.flow.shards, cores)?;
    if opts.inline {
        opts.flow.shards = 1;
    } else if opts.flow.shards == 0 {
        opts.flow.shards = cores.saturating_sub(sources.len()).max(1);
    }
    Ok((sources, opts, xdp))
}

/// Whether the pipeline runs inline (`flow.pipeline`): forced, or automatically when there is
/// one source, no more than one shard asked for, and one usable CPU (`cores`), where the
/// worker and the shard would share the core anyway.
fn pipeline_inline(
    mode: PipelineMode,
    sources: &[Box<dyn RxSource>],
    shards: usize,
    cores: usize,
) -> Result<bool> {
    Ok(match mode {
        PipelineMode::Threaded => false,
        PipelineMode::Auto => sources.len() == 1 && shards <= 1 && cores == 1,
        PipelineMode::Inline => {
            if sources.len() != 1 {
                let names: Vec<&str> = sources.iter().map(|s| s.name()).collect();
                bail!(
                    "flow.pipeline: \"inline\" needs exactly one source, but the capture opened {} \
                     ({}); capture one queue (capture.queues, or capture.workers = 1 for \
                     af_packet) or set flow.pipeline = \"threaded\"",
                    sources.len(),
                    names.join(", ")
                );
            }
            // flow.shards > 1 with inline is refused when the configuration loads
            // (`FlowConfig::validate`); the source count is known only now.
            true
        }
    })
}

fn status_line(stats: &LiveStats, elapsed: Duration) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let frames: u64 = stats.workers.iter().map(|w| w.frames.load(Relaxed)).sum();
    let dropped: u64 = stats
        .workers
        .iter()
        .map(|w| {
            w.handoff_dropped.load(Relaxed)
                + w.kernel_ring_full.load(Relaxed)
                + w.kernel_fill_ring_empty.load(Relaxed)
        })
        .sum();
    let flows: u64 = stats
        .shards
        .iter()
        .map(|s| s.active_flows.load(Relaxed))
        .sum();
    format!(
        "tapvault: {:.0}s: {frames} frames, {dropped} dropped, {flows} open flows, {} records",
        elapsed.as_secs_f64(),
        stats.records_out.load(Relaxed)
    )
}

/// The capture interface's device counters, read against their value when the capture
/// started.
struct IfaceWatch {
    name: String,
    stats: IfaceStats,
    base: IfaceCounters,
    /// Host-wide backlog drops when the capture started (`None`: unreadable).
    backlog_base: Option<u64>,
    /// The driver's statistics (`None`: it reports none), and the receive-loss ones' values
    /// when the capture started.
    driver: Option<DriverStats>,
    driver_base: BTreeMap<String, u64>,
}

impl IfaceWatch {
    /// For a live source: opened in the capture's namespace, before the sources, so the
    /// baseline precedes the first frame. `None` for a file source.
    fn open(s: &Settings) -> Result<Option<IfaceWatch>> {
        let c = &s.config.capture;
        if c.source == SourceKind::File || c.interface.is_empty() {
            return Ok(None);
        }
        let _ns = match &s.netns {
            Some(ns) => Some(
                NetnsGuard::enter(ns).with_context(|| format!("cannot enter namespace `{ns}`"))?,
            ),
            None => None,
        };
        let mut stats = match IfaceStats::open(&c.interface) {
            Ok(x) => x,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (place, see) = match &s.netns {
                    Some(ns) => (format!("in namespace `{ns}`"), format!("ip -n {ns} link")),
                    None => ("on this host".into(), "ip link".into()),
                };
                bail!(
                    "capture.interface: no interface named \"{}\" {place} (see `{see}`)",
                    c.interface
                );
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot read the counters of `{}`", c.interface));
            }
        };
        let base = stats.read()?;
        let mut driver = match DriverStats::open(&c.interface) {
            Ok(d) => Some(d),
            Err(e) if e.kind() == std::io::ErrorKind::Unsupported => None,
            Err(e) => {
                tracing::warn!(
                    interface = %c.interface,
                    "the driver's statistics cannot be read ({e}); the status will not show them"
                );
                None
            }
        };
        let driver_base = driver
            .as_mut()
            .and_then(|d| driver_losses(d).ok())
            .unwrap_or_default();
        Ok(Some(IfaceWatch {
            name: c.interface.clone(),
            stats,
            base,
            backlog_base: softnet_dropped().ok(),
            driver,
            driver_base,
        }))
    }

    /// The counters since the capture started, as the API reports them (`None` if they
    /// cannot be read now: the interface went away).
    fn status(&mut self) -> Option<InterfaceStatus> {
        let d = self.stats.read().ok()?.since(&self.base);
        let mut x = InterfaceStatus::default();
        x.name = self.name.clone();
        x.rx_packets = d.packets;
        x.rx_bytes = d.bytes;
        x.rx_dropped = d.dropped;
        x.rx_fifo_errors = d.fifo;
        x.rx_frame_errors = d.frame;
        x.rx_errors = d.errors;
        x.host_backlog_dropped = self
            .backlog_base
            .and_then(|b| Some(softnet_dropped().ok()?.saturating_sub(b)));
        x.driver_drops = self.driver.as_mut().and_then(|d| {
            let now = driver_losses(d).ok()?;
            Some(
                now.into_iter()
                    .map(|(k, v)| {
                        // A statistic that appeared later (a reconfigured driver) counts whole.
                        let base = self.driver_base.get(&k).copied().unwrap_or(0);
                        (k, v.saturating_sub(base))
                    })
                    .collect(),
            )
        });
        Some(x)
    }
}

/// The driver's receive-loss statistics now ([`is_rx_loss_stat`]), by name.
fn driver_losses(d: &mut DriverStats) -> std::io::Result<BTreeMap<String, u64>> {
    let values = d.read()?;
    Ok(d.names()
        .iter()
        .zip(values)
        .filter(|(name, _)| is_rx_loss_stat(name))
        .map(|(name, v)| (name.clone(), v))
        .collect())
}

/// The API's view of a running capture.
struct LiveStatus {
    stats: Arc<LiveStats>,
    names: Vec<String>,
    interface: String,
    store: StoreStatus,
    xdp: Arc<Mutex<Option<XdpProgram>>>,
    iface: Option<Arc<Mutex<IfaceWatch>>>,
    started: Instant,
    data_dir: Option<PathBuf>,
}

impl StatusSource for LiveStatus {
    fn snapshot(&self) -> StatusSnapshot {
        use std::sync::atomic::Ordering::Relaxed;
        let mut s = StatusSnapshot::new("live");
        s.capture_attached = true;
        s.capture_ready = true;
        s.uptime_seconds = self.started.elapsed().as_secs_f64();
        for (i, w) in self.stats.workers.iter().enumerate() {
            let mut q = QueueStatus::default();
            q.interface = self
                .names
                .get(i)
                .cloned()
                .unwrap_or_else(|| self.interface.clone());
            q.queue = i as u32;
            q.packets = w.frames.load(Relaxed);
            q.bytes = w.bytes.load(Relaxed);
            let kernel = w.kernel();
            q.drops = queue_drops(&kernel, w.handoff_dropped.load(Relaxed));
            q.ring_freezes = kernel.freezes;
            s.queues.push(q);
        }
        for (i, sh) in self.stats.shards.iter().enumerate() {
            let mut x = ShardStatus::default();
            x.shard = i as u32;
            x.packets = sh.packets.load(Relaxed);
            x.flows_active = sh.active_flows.load(Relaxed);
            x.flows_capacity = sh.capacity.load(Relaxed);
            x.evictions = sh.evictions.load(Relaxed);
            x.timeouts = sh.timeouts.load(Relaxed);
            x.queue_drops = sh.reorder_forced.load(Relaxed);
            s.shards.push(x);
        }
        s.storage = storage_status(&self.store, self.data_dir.as_deref());
        s.xdp = self
            .xdp
            .lock()
            .ok()
            .and_then(|g| g.as_ref().and_then(|p| p.counters().ok()))
            .map(|c| xdp_status(&c));
        s.interface = self
            .iface
            .as_ref()
            .and_then(|w| w.lock().ok().and_then(|mut w| w.status()));
        s
    }
}

/// The API options from the configuration's `[api]` section.
pub(crate) fn api_options(cfg: &Config) -> Result<ApiOptions> {
    Ok(ApiOptions::new(&cfg.storage.data_dir)
        .listen(cfg.api.listen)
        .token(cfg.api_token().context("api.token_file")?)
        .max_pcap_span(cfg.api.max_pcap_span.0)
        .max_pcap_bytes(cfg.api.max_pcap_bytes.0)
        .request_timeout(cfg.api.request_timeout.0)
        .max_rows(usize::try_from(cfg.api.max_rows).unwrap_or(usize::MAX)))
}

/// A stopped capture's report, XDP counters (AF_XDP), storage counters (with storage) and
/// the interface's device counters (live sources).
pub(crate) type Stopped = (
    Report,
    Option<XdpCounters>,
    Option<StorageStatus>,
    Option<InterfaceStatus>,
);

/// A running capture.
pub(crate) struct Capture {
    pipeline: Pipeline,
    names: Vec<String>,
    /// How the pipeline runs, for the start-up line.
    mode: String,
    /// The XDP program (AF_XDP source): detached when the capture stops; shared with the
    /// status provider, which reads its counters.
    xdp: Arc<Mutex<Option<XdpProgram>>>,
    /// The capture interface's device counters (live sources).
    iface: Option<Arc<Mutex<IfaceWatch>>>,
    started: Instant,
    interface: String,
    status: StoreStatus,
    /// The data directory, when storage is on (its free space goes in the final report).
    data_dir: Option<PathBuf>,
    maintenance: Option<MaintenanceHandle>,
}

impl Capture {
    /// Checks the host, opens the sources and storage, and starts the pipeline. Records
    /// also go to `tee` when given (the demo prints them).
    pub(crate) fn start(s: &Settings, tee: Option<Tee>) -> Result<Capture> {
        // The interface and its queues are checked where the sockets open (maybe another
        // namespace); the rest (data directory, CPUs, files) here.
        let problems: Vec<String> = s
            .config
            .host_problems()
            .into_iter()
            .filter(|p| s.netns.is_none() || !p.key.starts_with("capture."))
            .map(|p| p.to_string())
            .collect();
        if !problems.is_empty() {
            bail!(
                "the configuration does not fit this host:\n  {}",
                problems.join("\n  ")
            );
        }
        let iface = IfaceWatch::open(s)?.map(|w| Arc::new(Mutex::new(w)));
        let (sources, opts, xdp) = open_sources(s)?;
        let st = &s.config.storage;
        let data_dir = (!st.data_dir.as_os_str().is_empty()).then(|| st.data_dir.clone());
        let store_opts = StoreOptions::default()
            .flush_interval_ns(st.flush_interval.as_nanos_i64())
            .min_free_bytes(st.min_free.0);
        let mut status = StoreStatus::default();
        let mut maintenance = None;
        if let Some(dir) = &data_dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create `{}`", dir.display()))?;
            let rec = recover_store(dir)
                .with_context(|| format!("cannot recover the store in `{}`", dir.display()))?;
            for l in rec.log_lines() {
                eprintln!("tapvault: {l}");
            }
            let policy = RetentionPolicy {
                pcap_max_bytes: st.retention.pcap.max_bytes(),
                pcap_max_age_ns: st.retention.pcap.max_age_ns(),
                flows_max_bytes: st.retention.flows.max_bytes(),
                flows_max_age_ns: st.retention.flows.max_age_ns(),
            };
            let log: tapvault_storage::store::LogFn =
                Arc::new(|line: &str| eprintln!("tapvault: {line}"));
            maintenance = Some(
                Maintenance::new(dir, policy, log)
                    .spawn(Duration::from_secs(10))
                    .context("cannot start storage maintenance")?,
            );
        }
        let mut spills: Vec<Box<dyn WorkerSpill>> = Vec::new();
        for (i, src) in sources.iter().enumerate() {
            let store = match &data_dir {
                Some(dir) if st.pcap => {
                    let seg = SegmentOptions::default()
                        .link_type(opts.link_type.0)
                        .snap_len(s.config.capture.snap_len)
                        .segment_max_span_ns(st.segment_span.as_nanos_i64())
                        .segment_max_bytes(st.segment_max_bytes.0)
                        .frame_max_span_ns(st.frame_span.as_nanos_i64())
                        .frame_max_bytes(
                            usize::try_from(st.frame_max_bytes.0).unwrap_or(usize::MAX),
                        )
                        .zstd_level(st.zstd_level)
                        .zstd_adaptive(st.zstd_adaptive);
                    let p = PacketStore::open(dir, &format!("w{i}"), seg, store_opts.clone())
                        .with_context(|| format!("cannot store packets of {}", src.name()))?;
                    status.packets.push(p.stats());
                    Some(p)
                }
                _ => None,
            };
            spills.push(spill_for(StoreSpill(store), i, opts.inline)?);
        }
        let flow_store = match &data_dir {
            Some(dir) => {
                let f = FlowStore::open(dir, "flows", store_opts.clone())
                    .with_context(|| format!("cannot store flows under `{}`", dir.display()))?;
                status.flows = Some(f.stats());
                Some(f)
            }
            None => None,
        };
        let sink = FlowSink {
            store: flow_store,
            tee,
        };
        let names: Vec<String> = sources.iter().map(|s| s.name().to_owned()).collect();
        let mode = if opts.inline {
            "inline pipeline: the worker runs the flow table".to_string()
        } else {
            let spill = if data_dir.is_some() && st.pcap {
                ", packet store on its own thread per worker"
            } else {
                ""
            };
            format!(
                "threaded pipeline, {} flow shard(s){spill}",
                opts.flow.shards
            )
        };
        let pipeline = Pipeline::start(sources, spills, Box::new(sink), &opts)
            .context("cannot start the pipeline")?;
        Ok(Capture {
            pipeline,
            names,
            mode,
            xdp: Arc::new(Mutex::new(xdp)),
            iface,
            started: Instant::now(),
            interface: s.config.capture.interface.clone(),
            status,
            data_dir,
            maintenance,
        })
    }

    /// "capturing from ..." for the start-up log: the sources and how the pipeline runs.
    pub(crate) fn started_line(&self) -> String {
        format!(
            "tapvault: capturing from {} ({})",
            self.names.join(", "),
            self.mode
        )
    }

    /// The live counters.
    pub(crate) fn stats(&self) -> Arc<LiveStats> {
        self.pipeline.stats()
    }

    /// True once every source has ended (a file source at its end).
    pub(crate) fn sources_done(&self) -> bool {
        self.pipeline.workers_done()
    }

    /// The live status the API serves.
    pub(crate) fn status_source(&self, data_dir: Option<PathBuf>) -> Arc<dyn StatusSource> {
        Arc::new(LiveStatus {
            stats: self.pipeline.stats(),
            names: self.names.clone(),
            interface: self.interface.clone(),
            store: self.status.clone(),
            xdp: self.xdp.clone(),
            iface: self.iface.clone(),
            started: self.started,
            data_dir,
        })
    }

    /// Stops intake, drains, flushes and publishes; detaches XDP first, so the interface
    /// carries its traffic to the kernel again at once.
    pub(crate) fn stop(self) -> Result<Stopped> {
        let mut counters = None;
        let prog = self.xdp.lock().ok().and_then(|mut g| g.take());
        if let Some(mut p) = prog {
            counters = p.counters().ok();
            if let Err(e) = p.detach() {
                eprintln!("tapvault: detaching XDP: {e}");
            }
        }
        let report = self.pipeline.stop().context("pipeline failed")?;
        if let Some(m) = self.maintenance {
            m.stop();
        }
        if report.source_errors > 0 && report.frames == 0 {
            bail!("every receive failed ({} errors)", report.source_errors);
        }
        // The stores are closed (flushed) once the pipeline has stopped.
        let storage = (!self.status.packets.is_empty() || self.status.flows.is_some())
            .then(|| storage_status(&self.status, self.data_dir.as_deref()));
        let iface = self
            .iface
            .and_then(|w| w.lock().ok().and_then(|mut w| w.status()));
        Ok((report, counters, storage, iface))
    }
}

/// Runs a capture until stopped (signal, duration, or the end of a file source).
pub(crate) fn run(s: &Settings) -> Result<Stopped> {
    let stop = stop_flag();
    let cap = Capture::start(s, None)?;
    eprintln!("{}", cap.started_line());
    let data_dir = (!s.config.storage.data_dir.as_os_str().is_empty())
        .then(|| s.config.storage.data_dir.clone());
    let api = if s.serve_api {
        let server = ApiServer::start(api_options(&s.config)?, cap.status_source(data_dir))
            .context("cannot start the API")?;
        eprintln!("tapvault: API on http://{}/api/v1/", server.local_addr());
        Some(server)
    } else {
        None
    };
    // systemd: ready once the sources are attached and the API listens.
    let _ = crate::notify::ready();
    let watchdog = crate::notify::watchdog_interval();
    let mut last_watchdog = Instant::now();
    let stats = cap.stats();
    let t0 = Instant::now();
    let mut last_status = Instant::now();
    loop {
        if stop.load(Ordering::SeqCst) {
            eprintln!("tapvault: stopping (signal)");
            break;
        }
        if s.duration.is_some_and(|d| t0.elapsed() >= d) {
            break;
        }
        if cap.sources_done() {
            break;
        }
        if let Some(w) = watchdog
            && last_watchdog.elapsed() >= w
        {
            last_watchdog = Instant::now();
            let _ = crate::notify::watchdog();
        }
        if !s.status_every.is_zero() && last_status.elapsed() >= s.status_every {
            last_status = Instant::now();
            let line = status_line(&stats, t0.elapsed());
            let _ = crate::notify::status(line.trim_start_matches("tapvault: "));
            eprintln!("{line}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = crate::notify::stopping();
    let r = cap.stop();
    if let Some(server) = api
        && let Err(e) = server.shutdown()
    {
        eprintln!("tapvault: API: {e}");
    }
    r
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// Every counter of the shared mappings reaches the final report under the names the
    /// benchmark script and the tests read, with its own value (all counters differ).
    #[test]
    fn report_carries_every_counter() {
        let r = Report {
            frames: 1,
            handoff_dropped: 17,
            shard_threads: 2,
            source: SourceStats {
                received: 11,
                received_bytes: 12,
                ring_full: 13,
                fill_ring_empty: 14,
                invalid_descs: 15,
                freezes: 16,
            },
            ..Report::default()
        };
        let xdp = XdpCounters {
            seen: 21,
            seen_bytes: 22,
            redirected: 23,
            redirected_bytes: 24,
            filtered: 25,
            no_socket: 26,
            errors: 27,
            truncated: 28,
            meta_failed: 29,
            trunc_failed: 30,
            non_ip: 31,
            meta_in_data: true,
        };
        let mut st = StorageStatus::default();
        st.packets_written = 41;
        st.packets_dropped = 42;
        st.records_accepted = 43;
        st.records_dropped = 44;
        let v = report_json(&r, Some(&xdp), Some(&st), None);
        for (k, want) in [
            ("kernel_received", 11),
            ("kernel_ring_full", 13),
            ("kernel_fill_ring_empty", 14),
            ("kernel_invalid_descs", 15),
            ("kernel_freezes", 16),
            ("handoff_dropped", 17),
        ] {
            assert_eq!(v[k], want, "{k}: {v}");
        }
        // Each drop counter the live status has per queue is in the report too.
        let drops = serde_json::to_value(queue_drops(&r.source, r.handoff_dropped)).unwrap();
        let top: Vec<&Value> = v.as_object().unwrap().values().collect();
        for (k, x) in drops.as_object().unwrap() {
            assert!(
                top.contains(&x),
                "queue drop `{k}` ({x}) not in the report: {v}"
            );
        }
        for (k, want) in [
            ("seen", 21),
            ("redirected", 23),
            ("filtered", 25),
            ("no_socket", 26),
            ("errors", 27),
            ("truncated", 28),
            ("meta_failed", 29),
        ] {
            assert_eq!(v["xdp"][k], want, "xdp.{k}: {v}");
        }
        assert_eq!(v["xdp"]["metadata"], "packet_data", "{v}");
        let in_area = XdpCounters {
            meta_in_data: false,
            ..xdp
        };
        assert_eq!(xdp_status(&in_area).metadata, "meta_area");
        assert_eq!(v["xdp"], serde_json::to_value(xdp_status(&xdp)).unwrap());
        for (k, want) in [
            ("packets_written", 41),
            ("packets_dropped", 42),
            ("records_accepted", 43),
            ("records_dropped", 44),
        ] {
            assert_eq!(v["storage"][k], want, "storage.{k}: {v}");
        }
        assert_eq!(v["storage"], serde_json::to_value(&st).unwrap());
        // Which pipeline ran.
        assert_eq!(v["pipeline"], "threaded", "{v}");
        let inline = Report {
            inline: true,
            shard_threads: 0,
            ..r.clone()
        };
        let w = report_json(&inline, None, None, None);
        assert_eq!(
            (&w["pipeline"], &w["shard_threads"]),
            (&"inline".into(), &0.into())
        );
        // Without XDP or storage both are null, as before.
        let v = report_json(&r, None, None, None);
        assert!(v["xdp"].is_null() && v["storage"].is_null(), "{v}");
        assert!(v["interface"].is_null(), "{v}");
        let mut i = InterfaceStatus::default();
        i.name = "eth1".into();
        i.rx_dropped = 51;
        let v = report_json(&r, None, None, Some(&i));
        assert_eq!(v["interface"], serde_json::to_value(&i).unwrap());
        assert_eq!(v["interface"]["rx_dropped"], 51);
    }

    /// Names of this process's threads.
    fn threads() -> Vec<String> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|c| c.trim().to_owned())
            .collect()
    }

    /// Threaded, a packet store runs on a spill thread of its own and every frame reaches it
    /// (written and, once finished, durable); inline, or without a store, there is no thread.
    #[test]
    fn threaded_pipelines_store_packets_on_a_spill_thread() {
        let dir = std::env::temp_dir().join(format!("tv-spill-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = PacketStore::open(
            &dir,
            "w0",
            SegmentOptions::default(),
            StoreOptions::default(),
        )
        .unwrap();
        let stats = store.stats();
        let mut spill = spill_for(StoreSpill(Some(store)), 41, false).unwrap();
        // The thread names itself once it runs.
        let named = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(5));
            threads().iter().any(|t| t == "spill-w41")
        });
        assert!(named, "{:?}", threads());
        let t0 = 1_700_000_000_000_000_000i64;
        for i in 0..3000i64 {
            spill.packet(t0 + i * 1000, 60, &[i as u8; 60], 1);
        }
        spill.tick(t0 + 3_000_000);
        spill.finish();
        let st = stats.snapshot();
        assert_eq!((st.packets_written, st.packets_durable), (3000, 3000));
        assert!(
            !threads().iter().any(|t| t == "spill-w41"),
            "{:?}",
            threads()
        );
        // Inline with a store, or threaded without one: no thread.
        let store = PacketStore::open(
            dir.join("inline"),
            "w0",
            SegmentOptions::default(),
            StoreOptions::default(),
        )
        .unwrap();
        let inline = spill_for(StoreSpill(Some(store)), 42, true).unwrap();
        let none = spill_for(StoreSpill(None), 43, false).unwrap();
        let names = threads();
        assert!(
            !names.iter().any(|t| t.starts_with("spill-w4")),
            "{names:?}"
        );
        drop((inline, none));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
