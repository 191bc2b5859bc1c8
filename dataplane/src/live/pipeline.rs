//! The live pipeline: worker threads serving [`RxSource`]s, flow shard threads, and one
//! output thread for records.
//!
//! ```text
//!  RxSource 0 ─ worker 0 ─┐ decode, hash, spill raw frame   ┌─ shard 0 (FlowTable) ─┐
//!  RxSource 1 ─ worker 1 ─┼── batches of PacketDesc ────────┼─ shard 1 (FlowTable) ─┼─ output ─ sink
//!          ...            ┘  (bounded lock-free queues)     └─ ...                  ┘
//! ```
//!
//! Each worker owns its source, its IP reassembly table and its packet spill (one storage
//! writer per worker, no locks), and is pinned to a core when asked. A frame is decoded while
//! it is still in the ring, its raw bytes go to the spill (one copy, into the writer's block
//! buffer), and its descriptor joins the batch of the shard that owns its symmetric flow hash;
//! the ring slot goes back to the kernel when the batch returns. Batches are sent after every
//! receive batch (so a quiet link does not hold packets back) or when full. A shard queue
//! that is full drops the batch and counts it (`handoff_dropped`): the worker never blocks,
//! so a slow shard shows as counted loss, not as ring overflow in the kernel.
//!
//! Run to completion ([`PipelineOptions::inline`]): with one source and one shard, the
//! worker thread owns the flow table and updates it itself for each descriptor, with no
//! hand-off queue, shard thread or merge (one source is in order). On one core the worker and
//! the shard would share it anyway, and every hand-off would cost a channel send and a thread
//! switch. The worker then also expires flows and flushes records to the output thread; a
//! slow output thread holds the worker back (the kernel ring then fills and counts its
//! drops) instead of filling a hand-off queue.
//!
//! Shards expire flows by the wall clock as well as by packet time (a quiet link still closes
//! its connections), except when the source is a file replayed as fast as possible
//! ([`Clock::Packet`]), where packet time alone drives timeouts, as in `tapvault analyze`.

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};
use tapvault_config::FlowConfig;
use tapvault_storage::{DnsRecord, FlowRecord};

use super::{RxFrame, RxSource, SourceStats};
use crate::{
    decode::{LinkType, Malformed},
    engine::FrameDecoder,
    flow::{
        desc::PacketDesc,
        key::FlowKey,
        table::{FlowTable, ShardStats, Sink},
    },
};

/// Descriptors per hand-off batch at most.
const BATCH: usize = 256;
/// How long a worker may keep a partial hand-off batch while frames keep coming.
const HANDOFF_EVERY: Duration = Duration::from_millis(1);

/// Which clock drives flow timeouts in the shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Clock {
    /// The wall clock (CLOCK_REALTIME) as well as packet time: live capture.
    #[default]
    Wall,
    /// Packet time only: a capture file replayed as fast as possible.
    Packet,
}

/// How to run the pipeline.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Flow-table settings; `shards` 0 means one shard.
    pub flow: FlowConfig,
    /// CPU for worker `i` (`worker_cpus[i]`); workers beyond the list are not pinned.
    pub worker_cpus: Vec<usize>,
    /// CPU for shard `i`; shards beyond the list are not pinned.
    pub shard_cpus: Vec<usize>,
    /// Batches in flight per shard queue.
    pub queue_depth: usize,
    /// How long a worker waits in its source for a batch before looking at the stop flag
    /// and its timers.
    pub poll_timeout: Duration,
    /// What drives flow timeouts.
    pub clock: Clock,
    /// Link type of the sources' frames.
    pub link_type: LinkType,
    /// Run to completion: the one worker updates the one flow table itself (no hand-off
    /// queue, no shard thread). Needs exactly one source and `flow.shards` 0 or 1, else
    /// [`Pipeline::start`] fails with [`Error::InlineNeedsOne`]. `flow.pipeline` is not read
    /// here: the caller resolves it (`auto` needs the CPU count) into this flag.
    pub inline: bool,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            flow: FlowConfig::default(),
            worker_cpus: Vec::new(),
            shard_cpus: Vec::new(),
            queue_depth: 256,
            poll_timeout: Duration::from_millis(100),
            clock: Clock::Wall,
            link_type: LinkType::ETHERNET,
            inline: false,
        }
    }
}

/// Where a worker's raw frames go: one per worker, so no locks. Implementations must not
/// block for long and must count, not return, their failures (capture goes on when storage
/// cannot).
pub trait WorkerSpill: Send {
    /// One frame with the flow hash of its connection (0 for none).
    fn packet(&mut self, ts_ns: i64, orig_len: u32, data: &[u8], flow: u64);
    /// Called about every 100 ms with the wall-clock time, traffic or not (time-based
    /// flushes).
    fn tick(&mut self, now_ns: i64);
    /// The worker is stopping: flush and publish.
    fn finish(&mut self);
}

/// A spill that stores nothing.
#[derive(Debug, Default)]
pub struct NoSpill;

impl WorkerSpill for NoSpill {
    fn packet(&mut self, _: i64, _: u32, _: &[u8], _: u64) {}
    fn tick(&mut self, _: i64) {}
    fn finish(&mut self) {}
}

/// Where records go, on the output thread.
pub trait RecordSink: Send {
    /// A flow record.
    fn record(&mut self, rec: FlowRecord);
    /// A DNS transaction.
    fn dns(&mut self, rec: DnsRecord);
    /// Called about every 100 ms with the wall-clock time (time-based flushes).
    fn tick(&mut self, now_ns: i64);
    /// The pipeline is stopping: flush and publish.
    fn finish(&mut self);
}

/// Live counters of one worker. Updated with relaxed atomics by the worker; read at any time.
#[derive(Debug, Default)]
pub struct WorkerCounters {
    /// The source's name.
    pub name: std::sync::OnceLock<String>,
    /// Frames received from the source.
    pub frames: AtomicU64,
    /// Bytes of those frames on the wire.
    pub bytes: AtomicU64,
    /// Frames decoded to IP.
    pub ip_packets: AtomicU64,
    /// Well-formed frames without IP.
    pub not_ip: AtomicU64,
    /// Malformed frames, all reasons.
    pub malformed: AtomicU64,
    /// Descriptors handed to shards (inline: processed by the worker's own flow table).
    pub handed_off: AtomicU64,
    /// Descriptors dropped because a shard queue was full.
    pub handoff_dropped: AtomicU64,
    /// Receive errors from the source (each also logged).
    pub source_errors: AtomicU64,
    /// Kernel counters of the source, last read (every second).
    pub kernel_ring_full: AtomicU64,
    /// AF_XDP fill ring empty.
    pub kernel_fill_ring_empty: AtomicU64,
    /// AF_XDP invalid descriptors.
    pub kernel_invalid_descs: AtomicU64,
    /// AF_PACKET ring freezes.
    pub kernel_freezes: AtomicU64,
    /// Time of the last frame, ns since the epoch.
    pub last_frame_ns: AtomicU64,
}

impl WorkerCounters {
    fn set_source(&self, s: &SourceStats) {
        self.kernel_ring_full.store(s.ring_full, Relaxed);
        self.kernel_fill_ring_empty
            .store(s.fill_ring_empty, Relaxed);
        self.kernel_invalid_descs.store(s.invalid_descs, Relaxed);
        self.kernel_freezes.store(s.freezes, Relaxed);
    }

    /// The source's kernel counters as last stored (read every second, and once more when
    /// the worker ends). `received` and `received_bytes` are not kept and read 0:
    /// [`frames`](Self::frames) and [`bytes`](Self::bytes) count what the worker got.
    pub fn kernel(&self) -> SourceStats {
        SourceStats {
            received: 0,
            received_bytes: 0,
            ring_full: self.kernel_ring_full.load(Relaxed),
            fill_ring_empty: self.kernel_fill_ring_empty.load(Relaxed),
            invalid_descs: self.kernel_invalid_descs.load(Relaxed),
            freezes: self.kernel_freezes.load(Relaxed),
        }
    }
}

/// Live counters of one shard.
#[derive(Debug, Default)]
pub struct ShardCounters {
    /// Descriptors processed.
    pub packets: AtomicU64,
    /// Flows open now.
    pub active_flows: AtomicU64,
    /// Flows this shard may hold.
    pub capacity: AtomicU64,
    /// Flows created.
    pub flows_created: AtomicU64,
    /// Records emitted.
    pub records: AtomicU64,
    /// Evictions because the table was full.
    pub evictions: AtomicU64,
    /// Idle and stale time-outs.
    pub timeouts: AtomicU64,
    /// Descriptors held in the reorder buffer now (several workers).
    pub reorder_held: AtomicU64,
    /// Descriptors released before every worker had passed their time, because the
    /// reorder buffer was full (they may be analysed out of order).
    pub reorder_forced: AtomicU64,
}

impl ShardCounters {
    fn set(&self, s: &ShardStats) {
        self.packets.store(s.packets, Relaxed);
        self.active_flows.store(s.active_flows, Relaxed);
        self.flows_created.store(s.flows_created, Relaxed);
        self.records.store(s.records + s.interim_records, Relaxed);
        self.evictions.store(s.evictions, Relaxed);
        self.timeouts
            .store(s.idle_timeouts + s.stale_timeouts, Relaxed);
    }
}

/// Counters of the whole pipeline, shared with whoever reports health (the API).
#[derive(Debug, Default)]
pub struct LiveStats {
    /// Per worker: the time up to which it has handed everything to the shards (ns since
    /// the epoch; `i64::MAX` once it ended). Shards merge the workers' streams by time up to
    /// the smallest of these.
    pub watermarks: Vec<std::sync::atomic::AtomicI64>,
    /// Per worker (source), in source order.
    pub workers: Vec<WorkerCounters>,
    /// Per shard.
    pub shards: Vec<ShardCounters>,
    /// Records and DNS transactions handed to the record sink.
    pub records_out: AtomicU64,
}

/// What the pipeline saw, summed when it stopped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Frames received, all workers.
    pub frames: u64,
    /// Frames received per worker (source), in source order.
    pub worker_frames: Vec<u64>,
    /// Frames decoded to IP.
    pub ip_packets: u64,
    /// Frames without IP.
    pub not_ip: u64,
    /// Malformed frames by reason, indexed like [`Malformed::ALL`].
    pub malformed: [u64; Malformed::ALL.len()],
    /// Descriptors dropped at full shard queues.
    pub handoff_dropped: u64,
    /// Receive errors.
    pub source_errors: u64,
    /// The sources' kernel counters at the end, summed.
    pub source: SourceStats,
    /// Flow table counters, all shards.
    pub flows: ShardStats,
    /// The pipeline ran inline ([`PipelineOptions::inline`]).
    pub inline: bool,
    /// Shard threads that ran: 0 inline, where the worker owns the flow table.
    pub shard_threads: usize,
}

enum Out {
    Record(Box<FlowRecord>),
    Dns(DnsRecord),
}

struct OutSink {
    tx: Sender<Vec<Out>>,
    buf: Vec<Out>,
}

impl OutSink {
    fn flush(&mut self) {
        if !self.buf.is_empty() {
            // The output thread only goes away if it panicked; stop() reports that.
            let _ = self.tx.send(std::mem::take(&mut self.buf));
        }
    }
}

impl Sink for OutSink {
    fn record(&mut self, rec: FlowRecord) {
        self.buf.push(Out::Record(Box::new(rec)));
        if self.buf.len() >= 256 {
            self.flush();
        }
    }
    fn dns(&mut self, rec: DnsRecord) {
        self.buf.push(Out::Dns(rec));
        if self.buf.len() >= 256 {
            self.flush();
        }
    }
}

/// Errors starting or stopping the pipeline.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] tapvault_config::Error),
    /// No source was given.
    #[error("the pipeline needs at least one source")]
    NoSources,
    /// The number of spills differs from the number of sources.
    #[error("{spills} packet spills for {sources} sources")]
    SpillCount {
        /// Spills given.
        spills: usize,
        /// Sources given.
        sources: usize,
    },
    /// Inline mode with more than one source or shard.
    #[error(
        "the inline pipeline runs one source and one flow shard on one thread, not {sources} \
         source(s) and {shards} shard(s); use the threaded pipeline"
    )]
    InlineNeedsOne {
        /// Sources given.
        sources: usize,
        /// `flow.shards` given.
        shards: usize,
    },
    /// A thread could not be started.
    #[error("cannot start thread `{name}`: {source}")]
    Spawn {
        /// Thread name.
        name: String,
        /// The OS error.
        source: io::Error,
    },
    /// A thread panicked.
    #[error("pipeline thread `{0}` panicked")]
    ThreadPanicked(String),
}

/// A running pipeline. [`Pipeline::stop`] drains and flushes it; dropping it without
/// stopping leaves the threads running until their sources fail.
pub struct Pipeline {
    stop: Arc<AtomicBool>,
    stats: Arc<LiveStats>,
    workers: Vec<(String, JoinHandle<WorkerEnd>)>,
    shards: Vec<(String, JoinHandle<FlowTable>)>,
    output: Option<JoinHandle<()>>,
    inline: bool,
}

struct WorkerEnd {
    dec: FrameDecoder,
    source: SourceStats,
    /// The worker's own flow table (inline).
    table: Option<Box<FlowTable>>,
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

fn pin(cpu: Option<&usize>) {
    if let Some(&id) = cpu
        && !core_affinity::set_for_current(core_affinity::CoreId { id })
    {
        eprintln!("tapvault: could not pin thread to CPU {id}; running unpinned");
    }
}

fn spawn<T: Send + 'static>(
    name: String,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<(String, JoinHandle<T>), Error> {
    let h = thread::Builder::new()
        .name(name.clone())
        .spawn(f)
        .map_err(|source| Error::Spawn {
            name: name.clone(),
            source,
        })?;
    Ok((name, h))
}

impl Pipeline {
    /// Starts one worker per source (each with its spill), the shards and the output thread;
    /// inline, one worker that owns the flow table, and the output thread.
    pub fn start(
        sources: Vec<Box<dyn RxSource>>,
        spills: Vec<Box<dyn WorkerSpill>>,
        mut sink: Box<dyn RecordSink>,
        opts: &PipelineOptions,
    ) -> Result<Pipeline, Error> {
        opts.flow.validate()?;
        if sources.is_empty() {
            return Err(Error::NoSources);
        }
        if spills.len() != sources.len() {
            return Err(Error::SpillCount {
                spills: spills.len(),
                sources: sources.len(),
            });
        }
        if opts.inline && (sources.len() != 1 || opts.flow.shards > 1) {
            return Err(Error::InlineNeedsOne {
                sources: sources.len(),
                shards: opts.flow.shards,
            });
        }
        let n_shards = opts.flow.shards.max(1);
        let per_shard = opts.flow.max_flows.div_ceil(n_shards);
        let stats = Arc::new(LiveStats {
            workers: (0..sources.len())
                .map(|_| WorkerCounters::default())
                .collect(),
            shards: (0..n_shards).map(|_| ShardCounters::default()).collect(),
            watermarks: (0..sources.len())
                .map(|_| std::sync::atomic::AtomicI64::new(i64::MIN))
                .collect(),
            records_out: AtomicU64::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let mut p = Pipeline {
            stop: stop.clone(),
            stats: stats.clone(),
            workers: Vec::new(),
            shards: Vec::new(),
            output: None,
            inline: opts.inline,
        };

        let (out_tx, out_rx) = bounded::<Vec<Out>>(64 * n_shards);
        {
            let stats = stats.clone();
            let (_, h) = spawn("tapvault-out".into(), move || {
                output_loop(out_rx, &mut *sink, &stats)
            })?;
            p.output = Some(h);
        }

        let (recycle_tx, recycle_rx) = bounded::<Vec<PacketDesc>>(opts.queue_depth * n_shards);
        let mut txs = Vec::with_capacity(n_shards);
        // Inline: no shard threads; the worker gets the output sender instead.
        let shard_threads = if opts.inline { 0 } else { n_shards };
        for s in 0..shard_threads {
            let (tx, rx) = bounded::<Vec<PacketDesc>>(opts.queue_depth);
            txs.push(tx);
            let mut out = OutSink {
                tx: out_tx.clone(),
                buf: Vec::with_capacity(256),
            };
            let recycle = recycle_tx.clone();
            let flow = opts.flow.clone();
            let stats = stats.clone();
            let cpu = opts.shard_cpus.get(s).copied();
            let clock = opts.clock;
            // Frames of one flow can arrive on several queues (a NIC without symmetric RSS,
            // or veth, which queues by sending CPU): merge the workers' streams by time.
            let reorder = clock == Clock::Wall && sources.len() > 1;
            stats.shards[s].capacity.store(per_shard as u64, Relaxed);
            let h = spawn(format!("tapvault-shard-{s}"), move || {
                pin(cpu.as_ref());
                let mut table = FlowTable::new(&flow, per_shard);
                let mut merge = reorder.then(Reorder::default);
                shard_loop(
                    &rx,
                    &recycle,
                    &mut table,
                    &mut out,
                    &stats,
                    s,
                    clock,
                    merge.as_mut(),
                );
                table.flush(&mut out);
                out.flush();
                stats.shards[s].set(table.stats());
                table
            })?;
            p.shards.push(h);
        }
        let mut inline_out = opts.inline.then(|| {
            stats.shards[0].capacity.store(per_shard as u64, Relaxed);
            OutSink {
                tx: out_tx.clone(),
                buf: Vec::with_capacity(256),
            }
        });
        drop(out_tx);

        for (w, (mut src, mut spill)) in sources.into_iter().zip(spills).enumerate() {
            let txs = txs.clone();
            let recycle = recycle_rx.clone();
            let stats = stats.clone();
            let stop = stop.clone();
            let cpu = opts.worker_cpus.get(w).copied();
            let o = opts.clone();
            let _ = stats.workers[w].name.set(src.name().to_owned());
            let out = inline_out.take();
            let h = spawn(format!("tapvault-worker-{w}"), move || {
                pin(cpu.as_ref());
                let c = &stats.workers[w];
                let mark = &stats.watermarks[w];
                let end = match out {
                    // Allocated here, as a shard thread would: on the worker's CPU.
                    Some(out) => {
                        let dest = InlineTable {
                            table: Box::new(FlowTable::new(&o.flow, per_shard)),
                            out,
                            clock: o.clock,
                            processed: 0,
                            counters: c,
                            shard: &stats.shards[0],
                        };
                        worker_loop(mark, &mut *src, &mut *spill, dest, c, &stop, &o)
                    }
                    None => {
                        let dest = Handoff {
                            txs: &txs,
                            recycle: &recycle,
                            batches: (0..txs.len()).map(|_| Vec::with_capacity(BATCH)).collect(),
                            counters: c,
                        };
                        worker_loop(mark, &mut *src, &mut *spill, dest, c, &stop, &o)
                    }
                };
                spill.finish();
                end
            })?;
            p.workers.push(h);
        }
        Ok(p)
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<LiveStats> {
        self.stats.clone()
    }

    /// A handle that stops the pipeline's intake when set (for signal handlers); call
    /// [`Pipeline::stop`] afterwards to drain.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// True once every worker has ended (stopped, or its source failed for good).
    pub fn workers_done(&self) -> bool {
        self.workers.iter().all(|(_, h)| h.is_finished())
    }

    /// Stops intake, drains the queues, flushes every flow (as `capture_end`) and the sinks,
    /// and returns the totals.
    pub fn stop(mut self) -> Result<Report, Error> {
        self.stop.store(true, Relaxed);
        let mut report = Report {
            inline: self.inline,
            shard_threads: self.shards.len(),
            ..Report::default()
        };
        let mut failed = None;
        for (name, h) in self.workers.drain(..) {
            match h.join() {
                Ok(end) => {
                    report.ip_packets += end.dec.ip_packets;
                    report.not_ip += end.dec.not_ip;
                    for (a, b) in report.malformed.iter_mut().zip(end.dec.malformed) {
                        *a += b;
                    }
                    let s = &mut report.source;
                    s.received += end.source.received;
                    s.received_bytes += end.source.received_bytes;
                    s.ring_full += end.source.ring_full;
                    s.fill_ring_empty += end.source.fill_ring_empty;
                    s.invalid_descs += end.source.invalid_descs;
                    s.freezes += end.source.freezes;
                    if let Some(t) = end.table {
                        report.flows.merge(t.stats());
                    }
                }
                Err(_) => failed = failed.or(Some(name)),
            }
        }
        for w in &self.stats.workers {
            report.frames += w.frames.load(Relaxed);
            report.worker_frames.push(w.frames.load(Relaxed));
            report.handoff_dropped += w.handoff_dropped.load(Relaxed);
            report.source_errors += w.source_errors.load(Relaxed);
        }
        // The workers held the shard queues' senders; with them gone the shards drain and
        // end.
        for (name, h) in self.shards.drain(..) {
            match h.join() {
                Ok(t) => report.flows.merge(t.stats()),
                Err(_) => failed = failed.or(Some(name)),
            }
        }
        if let Some(h) = self.output.take()
            && h.join().is_err()
        {
            failed = failed.or(Some("tapvault-out".into()));
        }
        match failed {
            Some(name) => Err(Error::ThreadPanicked(name)),
            None => Ok(report),
        }
    }
}

/// Where a worker's descriptors go: batches to the shard threads ([`Handoff`]) or, inline,
/// the worker's own flow table ([`InlineTable`]). [`worker_loop`] is generic over it, so each
/// mode compiles to its own loop without a dispatch per packet.
trait Destination {
    /// One decoded descriptor.
    fn push(&mut self, d: PacketDesc);
    /// Passes on what is pending: after receive batches (at most every `HANDOFF_EVERY`) and
    /// when the source is idle.
    fn hand_over(&mut self);
    /// About every 100 ms with the wall-clock time, traffic or not.
    fn tick(&mut self, now_ns: i64);
    /// The worker is stopping: pass on everything, waiting for room this time. Returns the
    /// flow table the worker owned, if any.
    fn finish(self) -> Option<Box<FlowTable>>;
}

struct Handoff<'a> {
    txs: &'a [Sender<Vec<PacketDesc>>],
    recycle: &'a Receiver<Vec<PacketDesc>>,
    batches: Vec<Vec<PacketDesc>>,
    counters: &'a WorkerCounters,
}

impl Handoff<'_> {
    #[inline]
    fn add(&mut self, d: PacketDesc) {
        let s = FlowKey::shard(d.hash, self.txs.len());
        self.batches[s].push(d);
        if self.batches[s].len() >= BATCH {
            self.send(s, false);
        }
    }

    fn send(&mut self, s: usize, block: bool) {
        let fresh = self
            .recycle
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BATCH));
        let full = std::mem::replace(&mut self.batches[s], fresh);
        let n = full.len() as u64;
        let r = if block {
            self.txs[s]
                .send(full)
                .map_err(|e| TrySendError::Disconnected(e.0))
        } else {
            self.txs[s].try_send(full)
        };
        match r {
            Ok(()) => {
                self.counters.handed_off.fetch_add(n, Relaxed);
            }
            Err(TrySendError::Full(mut b)) => {
                self.counters.handoff_dropped.fetch_add(n, Relaxed);
                b.clear();
                self.batches[s] = b;
            }
            // Only if the shard panicked; stop() reports that.
            Err(TrySendError::Disconnected(_)) => {
                self.counters.handoff_dropped.fetch_add(n, Relaxed);
            }
        }
    }

    fn send_all(&mut self, block: bool) {
        for s in 0..self.batches.len() {
            if !self.batches[s].is_empty() {
                self.send(s, block);
            }
        }
    }
}

impl Destination for Handoff<'_> {
    #[inline]
    fn push(&mut self, d: PacketDesc) {
        self.add(d);
    }
    fn hand_over(&mut self) {
        self.send_all(false);
    }
    fn tick(&mut self, _now_ns: i64) {}
    fn finish(mut self) -> Option<Box<FlowTable>> {
        self.send_all(true);
        None
    }
}

/// Inline mode: the worker's own flow table, doing what a shard thread does (wall-clock
/// expiry, shard counters, record flushes) on the worker's timer.
struct InlineTable<'a> {
    table: Box<FlowTable>,
    out: OutSink,
    clock: Clock,
    /// Descriptors processed since the last `hand_over` (counted as handed off then, so the
    /// hot path touches no atomic).
    processed: u64,
    counters: &'a WorkerCounters,
    shard: &'a ShardCounters,
}

impl Destination for InlineTable<'_> {
    #[inline]
    fn push(&mut self, d: PacketDesc) {
        self.table.process(&d, &mut self.out);
        self.processed += 1;
    }
    fn hand_over(&mut self) {
        if self.processed > 0 {
            self.counters.handed_off.fetch_add(self.processed, Relaxed);
            self.processed = 0;
        }
    }
    fn tick(&mut self, now_ns: i64) {
        if self.clock == Clock::Wall {
            self.table.expire(now_ns, &mut self.out);
        }
        self.shard.set(self.table.stats());
        self.out.flush();
    }
    fn finish(mut self) -> Option<Box<FlowTable>> {
        self.hand_over();
        self.table.flush(&mut self.out);
        self.out.flush();
        self.shard.set(self.table.stats());
        Some(self.table)
    }
}

fn worker_loop<D: Destination>(
    mark: &std::sync::atomic::AtomicI64,
    src: &mut dyn RxSource,
    spill: &mut dyn WorkerSpill,
    mut dest: D,
    c: &WorkerCounters,
    stop: &AtomicBool,
    o: &PipelineOptions,
) -> WorkerEnd {
    let mut dec = FrameDecoder::default();
    let mut frame_no = 0u64;
    let mut last_tick = Instant::now();
    let mut last_stats = Instant::now();
    let mut source = SourceStats::default();
    let mut errors_logged = 0u32;
    let link = o.link_type;
    let mut last_flush = Instant::now();
    let mut unsent: Option<i64> = None;
    while !stop.load(Relaxed) {
        let (mut frames, mut bytes, mut last_ts) = (0u64, 0u64, 0i64);
        let r = src.recv_batch(o.poll_timeout, &mut |f: &RxFrame<'_>| {
            frame_no += 1;
            frames += 1;
            bytes += u64::from(f.orig_len);
            last_ts = f.ts_ns;
            let mut flow = 0;
            if let Some(d) = dec.frame(frame_no, link, f.ts_ns, f.orig_len, f.data) {
                flow = d.hash;
                dest.push(d);
            }
            spill.packet(f.ts_ns, f.orig_len, f.data, flow);
        });
        match r {
            Ok(0) => {
                // Idle: whatever is still in the hand-off batches goes now.
                if let Some(ts) = unsent.take() {
                    dest.hand_over();
                    if ts > mark.load(Relaxed) {
                        mark.store(ts, Relaxed);
                    }
                    last_flush = Instant::now();
                }
                // Nothing pending here: anything this source delivers later was stamped
                // after now, less the time a frame may wait in the kernel before delivery
                // (an AF_PACKET block waits for its retire timeout).
                let idle = now_ns() - IDLE_SKEW_NS;
                if idle > mark.load(Relaxed) {
                    mark.store(idle, Relaxed);
                }
            }
            Ok(_) => {
                c.frames.fetch_add(frames, Relaxed);
                c.bytes.fetch_add(bytes, Relaxed);
                c.last_frame_ns.store(last_ts as u64, Relaxed);
                c.ip_packets.store(dec.ip_packets, Relaxed);
                c.not_ip.store(dec.not_ip, Relaxed);
                c.malformed.store(dec.malformed.iter().sum(), Relaxed);
                // Hand partial batches over at most every HANDOFF_EVERY (full ones go at
                // once): a source that returns a few frames per call (AF_XDP at moderate
                // rates) would otherwise cost a channel send and a shard wake-up every few
                // frames.
                unsent = Some(last_ts);
                if last_flush.elapsed() >= HANDOFF_EVERY {
                    dest.hand_over();
                    last_flush = Instant::now();
                    unsent = None;
                    // After the send: a shard that sees this mark has the batch queued.
                    if last_ts > mark.load(Relaxed) {
                        mark.store(last_ts, Relaxed);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => {
                c.source_errors.fetch_add(1, Relaxed);
                if errors_logged < 10 {
                    errors_logged += 1;
                    eprintln!("tapvault: {}: receive failed: {e}", src.name());
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
        if last_tick.elapsed() >= Duration::from_millis(100) {
            last_tick = Instant::now();
            let now = now_ns();
            spill.tick(now);
            dest.tick(now);
        }
        if last_stats.elapsed() >= Duration::from_secs(1) {
            last_stats = Instant::now();
            if let Ok(s) = src.stats() {
                source = s;
                c.set_source(&s);
            }
        }
    }
    // Drain: whatever was decoded goes to the shards, waiting for room this time (inline:
    // the table flushes every flow).
    let table = dest.finish();
    mark.store(i64::MAX, Relaxed);
    if let Ok(s) = src.stats() {
        source = s;
        c.set_source(&s);
    }
    c.frames.store(frame_no, Relaxed);
    WorkerEnd { dec, source, table }
}

/// How far behind the wall clock an idle worker's watermark stays: the longest a frame may
/// wait in the kernel between its timestamp and its delivery (AF_PACKET retires a block
/// after 10 ms by default), with room to spare.
const IDLE_SKEW_NS: i64 = 50_000_000;
/// Descriptors a shard holds for reordering at most.
const REORDER_MAX: usize = 1 << 20;

/// A held descriptor, ordered by time, then by arrival.
struct Held {
    ts: i64,
    seq: u64,
    d: PacketDesc,
}

impl PartialEq for Held {
    fn eq(&self, o: &Self) -> bool {
        (self.ts, self.seq) == (o.ts, o.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.ts, self.seq).cmp(&(o.ts, o.seq))
    }
}

/// The merge of several workers' streams: descriptors wait until every worker has passed
/// their time (its watermark), then go to the table in time order.
#[derive(Default)]
struct Reorder {
    heap: std::collections::BinaryHeap<std::cmp::Reverse<Held>>,
    seq: u64,
    forced: u64,
}

impl Reorder {
    fn push(&mut self, d: PacketDesc) {
        self.seq += 1;
        self.heap.push(std::cmp::Reverse(Held {
            ts: d.ts_ns,
            seq: self.seq,
            d,
        }));
    }

    /// Processes every held descriptor at or before `upto`, and the oldest ones beyond the
    /// buffer's bound.
    fn release(&mut self, upto: i64, table: &mut FlowTable, out: &mut OutSink) {
        while let Some(std::cmp::Reverse(h)) = self.heap.peek() {
            if h.ts > upto && self.heap.len() <= REORDER_MAX {
                break;
            }
            if h.ts > upto {
                self.forced += 1;
            }
            let std::cmp::Reverse(h) = self.heap.pop().expect("peeked");
            table.process(&h.d, out);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn shard_loop(
    rx: &Receiver<Vec<PacketDesc>>,
    recycle: &Sender<Vec<PacketDesc>>,
    table: &mut FlowTable,
    out: &mut OutSink,
    stats: &LiveStats,
    shard: usize,
    clock: Clock,
    mut merge: Option<&mut Reorder>,
) {
    let c = &stats.shards[shard];
    let watermark = || {
        stats
            .watermarks
            .iter()
            .map(|m| m.load(Relaxed))
            .min()
            .unwrap_or(i64::MAX)
    };
    let mut last_tick = Instant::now();
    loop {
        let wait = if merge.is_some() { 10 } else { 100 };
        match rx.recv_timeout(Duration::from_millis(wait)) {
            Ok(mut batch) => {
                match merge.as_deref_mut() {
                    Some(m) => {
                        for d in batch.drain(..) {
                            m.push(d);
                        }
                    }
                    None => {
                        for d in &batch {
                            table.process(d, out);
                        }
                        batch.clear();
                    }
                }
                let _ = recycle.try_send(batch);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if let Some(m) = merge.as_deref_mut() {
            m.release(watermark(), table, out);
            c.reorder_held.store(m.heap.len() as u64, Relaxed);
            c.reorder_forced.store(m.forced, Relaxed);
        }
        if last_tick.elapsed() >= Duration::from_millis(100) {
            last_tick = Instant::now();
            if clock == Clock::Wall {
                // With a merge, time has only reached the watermark as far as the table is
                // concerned (held packets are older than now).
                let now = match &merge {
                    Some(_) => watermark().min(now_ns()),
                    None => now_ns(),
                };
                table.expire(now, out);
            }
            c.set(table.stats());
            out.flush();
        }
    }
    if let Some(m) = merge {
        m.release(i64::MAX, table, out);
        c.reorder_held.store(0, Relaxed);
        c.reorder_forced.store(m.forced, Relaxed);
    }
}

fn output_loop(rx: Receiver<Vec<Out>>, sink: &mut dyn RecordSink, stats: &LiveStats) {
    let mut last_tick = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(batch) => {
                stats.records_out.fetch_add(batch.len() as u64, Relaxed);
                for o in batch {
                    match o {
                        Out::Record(r) => sink.record(*r),
                        Out::Dns(r) => sink.dns(r),
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if last_tick.elapsed() >= Duration::from_millis(100) {
            last_tick = Instant::now();
            sink.tick(now_ns());
        }
    }
    sink.finish();
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Delivers its frames (stamped with the wall clock when sent) in one batch, then idles.
    struct Frames(Vec<Vec<u8>>, Arc<AtomicU64>);

    impl RxSource for Frames {
        fn name(&self) -> &str {
            "test"
        }
        fn recv_batch(
            &mut self,
            timeout: Duration,
            f: &mut dyn FnMut(&RxFrame<'_>),
        ) -> io::Result<usize> {
            if self.0.is_empty() {
                thread::sleep(timeout.min(Duration::from_millis(10)));
                return Ok(0);
            }
            let n = self.0.len();
            for d in self.0.drain(..) {
                f(&RxFrame {
                    ts_ns: now_ns(),
                    orig_len: d.len() as u32,
                    data: &d,
                });
            }
            self.1.fetch_add(n as u64, Relaxed);
            Ok(n)
        }
        fn stats(&mut self) -> io::Result<SourceStats> {
            Ok(SourceStats {
                received: self.1.load(Relaxed),
                ..SourceStats::default()
            })
        }
    }

    /// Counts what reaches the output thread.
    #[derive(Clone, Default)]
    struct Count(Arc<Mutex<Vec<FlowRecord>>>);

    impl RecordSink for Count {
        fn record(&mut self, rec: FlowRecord) {
            self.0.lock().unwrap().push(rec);
        }
        fn dns(&mut self, _: DnsRecord) {}
        fn tick(&mut self, _: i64) {}
        fn finish(&mut self) {}
    }

    /// Ethernet, IPv4, UDP from 10.0.0.1:`sport` to 10.0.0.2:9, 20 bytes of payload.
    fn udp(sport: u16) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend_from_slice(&[
            0x45, 0, 0, 48, 0, 1, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&[0, 9, 0, 28, 0, 0]);
        f.extend_from_slice(&[7; 20]);
        f
    }

    fn start(
        n_sources: usize,
        shards: usize,
        inline: bool,
        frames: Vec<Vec<u8>>,
        sink: Count,
        flow: FlowConfig,
    ) -> Result<Pipeline, Error> {
        let sources: Vec<Box<dyn RxSource>> = (0..n_sources)
            .map(|i| {
                let f = if i == 0 { frames.clone() } else { Vec::new() };
                Box::new(Frames(f, Arc::default())) as Box<dyn RxSource>
            })
            .collect();
        let spills = (0..n_sources)
            .map(|_| Box::new(NoSpill) as Box<dyn WorkerSpill>)
            .collect();
        let opts = PipelineOptions {
            flow: FlowConfig { shards, ..flow },
            inline,
            poll_timeout: Duration::from_millis(10),
            ..PipelineOptions::default()
        };
        Pipeline::start(sources, spills, Box::new(sink), &opts)
    }

    #[test]
    fn inline_needs_one_source_and_one_shard() {
        for (sources, shards) in [(2, 1), (2, 0), (1, 2), (3, 4)] {
            let e = start(
                sources,
                shards,
                true,
                Vec::new(),
                Count::default(),
                FlowConfig::default(),
            )
            .err()
            .unwrap_or_else(|| panic!("inline with {sources} sources, {shards} shards started"));
            assert!(
                matches!(e, Error::InlineNeedsOne { sources: s, shards: h } if s == sources && h == shards),
                "{e:?}"
            );
            let msg = e.to_string();
            assert!(
                msg.contains("inline") && msg.contains(&format!("not {sources} source(s)")),
                "{msg}"
            );
        }
        // One source with 0 or 1 shards is fine.
        for shards in [0, 1] {
            let p = start(
                1,
                shards,
                true,
                Vec::new(),
                Count::default(),
                FlowConfig::default(),
            )
            .expect("inline, one source");
            let r = p.stop().expect("stop");
            assert!(r.inline && r.shard_threads == 0, "{r:?}");
        }
    }

    /// Inline, the worker does the shard's timed work: flows expire by the wall clock
    /// while the link is quiet, the shard counters are live, and records reach the output
    /// thread without waiting for the stop.
    #[test]
    fn inline_worker_expires_flows_and_publishes_counters() {
        let sink = Count::default();
        let flow = FlowConfig {
            idle_timeout_secs: 0.3,
            stale_timeout_secs: 0.3,
            ..FlowConfig::default()
        };
        let frames = (0..3)
            .flat_map(|p| [udp(1000 + p), udp(1000 + p)])
            .collect();
        let p = start(1, 0, true, frames, sink.clone(), flow).expect("start");
        let stats = p.stats();
        let t0 = Instant::now();
        while sink.0.lock().unwrap().len() < 3 {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "idle UDP flows did not time out by the wall clock"
            );
            thread::sleep(Duration::from_millis(20));
        }
        let sh = &stats.shards[0];
        assert_eq!(sh.packets.load(Relaxed), 6);
        assert_eq!(sh.flows_created.load(Relaxed), 3);
        assert_eq!(sh.records.load(Relaxed), 3);
        assert_eq!(sh.timeouts.load(Relaxed), 3);
        assert_eq!(sh.capacity.load(Relaxed), 1_000_000);
        assert_eq!(stats.workers[0].handed_off.load(Relaxed), 6);
        assert_eq!(stats.records_out.load(Relaxed), 3);
        let r = p.stop().expect("stop");
        assert!(r.inline && r.shard_threads == 0, "{r:?}");
        assert_eq!((r.frames, r.ip_packets, r.handoff_dropped), (6, 6, 0));
        assert_eq!(r.flows.packets, 6);
        assert_eq!(r.flows.records, 3);
        assert_eq!(sink.0.lock().unwrap().len(), 3);
    }

    /// The same traffic, threaded: the same records, from one shard thread.
    #[test]
    fn threaded_runs_shard_threads() {
        let sink = Count::default();
        let frames = (0..3)
            .flat_map(|p| [udp(1000 + p), udp(1000 + p)])
            .collect();
        let p = start(1, 2, false, frames, sink.clone(), FlowConfig::default()).expect("start");
        let t0 = Instant::now();
        while p.stats().workers[0].handed_off.load(Relaxed) < 6 {
            assert!(t0.elapsed() < Duration::from_secs(10), "hand-off");
            thread::sleep(Duration::from_millis(10));
        }
        let r = p.stop().expect("stop");
        assert!(!r.inline && r.shard_threads == 2, "{r:?}");
        assert_eq!((r.frames, r.flows.packets, r.flows.records), (6, 6, 3));
        assert_eq!(sink.0.lock().unwrap().len(), 3);
    }
}
