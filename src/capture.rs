//! `tapvault capture`: the live pipeline with its sources, storage and status.
//!
//! Sources are built per kind (a capture file today; AF_XDP and AF_PACKET through
//! `dataplane::live`), each worker gets its own packet writer, and flow records go to the
//! Parquet store on the output thread. SIGINT and SIGTERM stop intake; the pipeline then
//! drains, flushes every flow and publishes what is open.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use tapvault_config::{Config, FileSpeed, SourceKind};
use tapvault_dataplane::live::{
    RxSource,
    afpacket::{self, AfPacketOptions, AfPacketSource, Fanout, FanoutMode},
    file::{FileSource, Speed},
    pipeline::{Clock, LiveStats, Pipeline, PipelineOptions, RecordSink, Report, WorkerSpill},
};
use tapvault_storage::{DnsRecord, FlowRecord};

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
}

/// RX queues of `iface` as this process sees them (`/sys/class/net/IF/queues/rx-*`).
fn rx_queues(iface: &str) -> Option<usize> {
    let n = std::fs::read_dir(format!("/sys/class/net/{iface}/queues"))
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    (n > 0).then_some(n)
}

/// The final counters as one JSON object.
pub(crate) fn report_json(r: &Report) -> serde_json::Value {
    let malformed: u64 = r.malformed.iter().sum();
    serde_json::json!({
        "frames": r.frames,
        "worker_frames": r.worker_frames,
        "ip_packets": r.ip_packets,
        "not_ip": r.not_ip,
        "malformed": malformed,
        "handoff_dropped": r.handoff_dropped,
        "source_errors": r.source_errors,
        "kernel_received": r.source.received,
        "kernel_ring_full": r.source.ring_full,
        "kernel_fill_ring_empty": r.source.fill_ring_empty,
        "kernel_invalid_descs": r.source.invalid_descs,
        "kernel_freezes": r.source.freezes,
        "flows_created": r.flows.flows_created,
        "records": r.flows.records,
        "evictions": r.flows.evictions,
    })
}

/// One worker's packet writer: pcap segments under the store, failures counted and logged
/// once per kind.
struct SegmentSpill {
    writer: Option<tapvault_storage::SegmentWriter>,
    errors: u64,
    written: u64,
}

impl WorkerSpill for SegmentSpill {
    fn packet(&mut self, ts_ns: i64, orig_len: u32, data: &[u8], flow: u64) {
        let Some(w) = &mut self.writer else { return };
        match w.write(ts_ns, orig_len, data, flow) {
            Ok(_) => self.written += 1,
            Err(e) => {
                if self.errors == 0 {
                    eprintln!("tapvault: packet store: {e}");
                }
                self.errors += 1;
            }
        }
    }
    fn tick(&mut self, _now_ns: i64) {}
    fn finish(&mut self) {
        if let Some(w) = self.writer.take()
            && let Err(e) = w.close()
        {
            eprintln!("tapvault: packet store: {e}");
            self.errors += 1;
        }
    }
}

/// A copy of every flow record, for whoever started the capture in-process.
pub(crate) type Tee = Arc<std::sync::Mutex<Vec<FlowRecord>>>;

/// Flow records into the Parquet store.
struct FlowSink {
    writer: Option<tapvault_storage::FlowParquetWriter>,
    records: u64,
    errors: u64,
    tee: Option<Tee>,
}

impl RecordSink for FlowSink {
    fn record(&mut self, rec: FlowRecord) {
        self.records += 1;
        if let Some(t) = &self.tee
            && let Ok(mut v) = t.lock()
        {
            v.push(rec.clone());
        }
        if let Some(w) = &mut self.writer
            && let Err(e) = w.write(rec)
        {
            if self.errors == 0 {
                eprintln!("tapvault: flow store: {e}");
            }
            self.errors += 1;
        }
    }
    fn dns(&mut self, _rec: DnsRecord) {}
    fn tick(&mut self, _now_ns: i64) {}
    fn finish(&mut self) {
        if let Some(w) = self.writer.take() {
            match w.close() {
                Ok(files) => eprintln!(
                    "tapvault: {} flow record(s) stored in {} Parquet file(s)",
                    self.records,
                    files.len()
                ),
                Err(e) => eprintln!("tapvault: flow store: {e}"),
            }
        }
    }
}

fn open_sources(s: &Settings) -> Result<(Vec<Box<dyn RxSource>>, PipelineOptions)> {
    let c = &s.config.capture;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut opts = PipelineOptions {
        flow: s.config.flow.clone(),
        worker_cpus: c.cpus.iter().map(|&c| c as usize).collect(),
        ..PipelineOptions::default()
    };
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
                0 => match &s.netns {
                    None => rx_queues(&c.interface).unwrap_or(1),
                    Some(_) => 1,
                },
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
            bail!("capture.source: af_xdp is not available in this build yet");
        }
    };
    if opts.flow.shards == 0 {
        opts.flow.shards = cores.saturating_sub(sources.len()).max(1);
    }
    Ok((sources, opts))
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

/// A running capture.
pub(crate) struct Capture {
    pipeline: Pipeline,
    names: Vec<String>,
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
        let (sources, opts) = open_sources(s)?;
        let data_dir = (!s.config.storage.data_dir.as_os_str().is_empty())
            .then(|| s.config.storage.data_dir.clone());
        let pcap = s.config.storage.pcap;
        let mut spills: Vec<Box<dyn WorkerSpill>> = Vec::new();
        for (i, src) in sources.iter().enumerate() {
            let writer = match &data_dir {
                Some(dir) if pcap => Some(
                    tapvault_storage::SegmentWriter::new(
                        dir,
                        &format!("w{i}"),
                        tapvault_storage::SegmentOptions::default().link_type(opts.link_type.0),
                    )
                    .with_context(|| format!("cannot store packets of {}", src.name()))?,
                ),
                _ => None,
            };
            spills.push(Box::new(SegmentSpill {
                writer,
                errors: 0,
                written: 0,
            }));
        }
        let flow_writer = match &data_dir {
            Some(dir) => {
                for p in tapvault_storage::recover(dir)
                    .with_context(|| format!("cannot recover `{}`", dir.display()))?
                {
                    eprintln!("tapvault: removed incomplete file {}", p.display());
                }
                Some(
                    tapvault_storage::FlowParquetWriter::new(
                        dir,
                        "capture",
                        tapvault_storage::WriterOptions::default(),
                    )
                    .with_context(|| format!("cannot store flows under `{}`", dir.display()))?,
                )
            }
            None => None,
        };
        let sink = FlowSink {
            writer: flow_writer,
            records: 0,
            errors: 0,
            tee,
        };
        let names: Vec<String> = sources.iter().map(|s| s.name().to_owned()).collect();
        let pipeline = Pipeline::start(sources, spills, Box::new(sink), &opts)
            .context("cannot start the pipeline")?;
        Ok(Capture { pipeline, names })
    }

    /// The sources' names.
    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }

    /// The live counters.
    pub(crate) fn stats(&self) -> Arc<LiveStats> {
        self.pipeline.stats()
    }

    /// True once every source has ended (a file source at its end).
    pub(crate) fn sources_done(&self) -> bool {
        self.pipeline.workers_done()
    }

    /// Stops intake, drains, flushes and publishes.
    pub(crate) fn stop(self) -> Result<Report> {
        let report = self.pipeline.stop().context("pipeline failed")?;
        if report.source_errors > 0 && report.frames == 0 {
            bail!("every receive failed ({} errors)", report.source_errors);
        }
        Ok(report)
    }
}

/// Runs a capture until stopped (signal, duration, or the end of a file source).
pub(crate) fn run(s: &Settings) -> Result<Report> {
    let stop = stop_flag();
    let cap = Capture::start(s, None)?;
    eprintln!("tapvault: capturing from {}", cap.names().join(", "));
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
        if !s.status_every.is_zero() && last_status.elapsed() >= s.status_every {
            last_status = Instant::now();
            eprintln!("{}", status_line(&stats, t0.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cap.stop()
}
