//! `tapvault capture`: the live pipeline with its sources, storage and status.
//!
//! Sources are built per kind (a capture file today; AF_XDP and AF_PACKET through
//! `dataplane::live`), each worker gets its own packet writer, and flow records go to the
//! Parquet store on the output thread. SIGINT and SIGTERM stop intake; the pipeline then
//! drains, flushes every flow and publishes what is open.

use std::{
    path::PathBuf,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use tapvault_dataplane::live::{
    RxSource,
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

/// Where packets come from.
#[derive(Debug, Clone)]
pub(crate) enum SourceSpec {
    /// A capture file through the live pipeline.
    File { path: PathBuf, speed: Speed },
}

/// Everything `capture` needs, resolved from flags and the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) source: SourceSpec,
    pub(crate) pipeline: PipelineOptions,
    /// Store root; `None` stores nothing.
    pub(crate) data_dir: Option<PathBuf>,
    /// Stop after this long.
    pub(crate) duration: Option<Duration>,
    /// Print a status line this often (0: never).
    pub(crate) status_every: Duration,
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

/// Flow records into the Parquet store.
struct FlowSink {
    writer: Option<tapvault_storage::FlowParquetWriter>,
    records: u64,
    errors: u64,
}

impl RecordSink for FlowSink {
    fn record(&mut self, rec: FlowRecord) {
        self.records += 1;
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
    let mut opts = s.pipeline.clone();
    match &s.source {
        SourceSpec::File { path, speed } => {
            let src = FileSource::open(path, *speed)
                .with_context(|| format!("cannot open `{}`", path.display()))?;
            opts.link_type = src.link_type();
            opts.clock = Clock::Packet;
            Ok((vec![Box::new(src)], opts))
        }
    }
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

/// Runs a capture until stopped (signal, duration, or the end of a file source).
pub(crate) fn run(s: &Settings) -> Result<Report> {
    let stop = stop_flag();
    let (sources, opts) = open_sources(s)?;
    let mut spills: Vec<Box<dyn WorkerSpill>> = Vec::new();
    for (i, src) in sources.iter().enumerate() {
        let writer = match &s.data_dir {
            Some(dir) => Some(
                tapvault_storage::SegmentWriter::new(
                    dir,
                    &format!("w{i}"),
                    tapvault_storage::SegmentOptions::default().link_type(opts.link_type.0),
                )
                .with_context(|| format!("cannot store packets of {}", src.name()))?,
            ),
            None => None,
        };
        spills.push(Box::new(SegmentSpill {
            writer,
            errors: 0,
            written: 0,
        }));
    }
    let flow_writer = match &s.data_dir {
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
    };
    let names: Vec<String> = sources.iter().map(|s| s.name().to_owned()).collect();
    let p = Pipeline::start(sources, spills, Box::new(sink), &opts)
        .context("cannot start the pipeline")?;
    eprintln!("tapvault: capturing from {}", names.join(", "));
    let stats = p.stats();
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
        if p.workers_done() {
            break;
        }
        if !s.status_every.is_zero() && last_status.elapsed() >= s.status_every {
            last_status = Instant::now();
            eprintln!("{}", status_line(&stats, t0.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let report = p.stop().context("pipeline failed")?;
    if report.source_errors > 0 && report.frames == 0 {
        bail!("every receive failed ({} errors)", report.source_errors);
    }
    Ok(report)
}
