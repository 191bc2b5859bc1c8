//! Storage services for live capture: [`PacketStore`] (one per packet writer) and
//! [`FlowStore`] (one per flow-record writer), which never stop capture, bound what a crash
//! loses to one flush interval, and ride out a full disk; [`recover_store`] to run once at
//! start-up; [`Maintenance`] to enforce retention on a schedule.
//!
//! # Order of calls
//!
//! 1. [`recover_store`]`(root)` once, before any store opens (publishes what a crash left).
//! 2. [`PacketStore::open`] per packet writer, [`FlowStore::open`] per record writer, and
//!    [`Maintenance::spawn`] once.
//! 3. Per packet [`PacketStore::write`]; per record [`FlowStore::write`]. Neither blocks on
//!    anything but the file system, returns an error, or panics.
//! 4. [`PacketStore::tick`] and [`FlowStore::tick`] often (every 100 ms is plenty; at least
//!    ten times per flush interval), with the current time, also when no traffic arrives:
//!    they flush, roll idle segments, notice free space and resume after a pause.
//! 5. [`PacketStore::close`] and [`FlowStore::close`] on shutdown (they publish everything),
//!    then [`MaintenanceHandle::stop`].
//!
//! # Crash safety
//!
//! Every flush interval (default 1 s) a tick seals the packets written since the last one
//! into complete zstd frames, writes them and their journal entries (see
//! [`crate::pcap`]), and starts an `fdatasync` of segment and journal on the writer's I/O
//! thread (the tick waits for the previous interval's, so packets count as durable one
//! interval later); flow records are appended to the flow log (see [`crate::parquet`]) and
//! it is `fdatasync`ed. So a SIGKILL loses at most what was written in the last flush
//! interval (plus the lateness of the tick), a power loss at most the packets of the last
//! two, and [`recover_store`] turns what is on disk into published files.
//!
//! # A full disk
//!
//! When a packet write fails (`ENOSPC` or any other I/O error), or free space drops below
//! [`StoreOptions::min_free_bytes`], the packet store pauses: its open segment is published
//! with the frames that reached the disk, and packets are counted as dropped
//! (`spill_dropped_disk_full` or `spill_dropped_io_error`) until a tick, at most every
//! [`StoreOptions::retry_interval_ns`], finds space again (free space at least the minimum,
//! and the next write succeeds). The pause and the resumption are logged once each.
//!
//! The flow store keeps accepting records: when the log cannot be written, records wait in
//! memory (up to [`StoreOptions::flow_buffer_max_bytes`], about 1.5 KB each; beyond it they
//! are counted as `dropped_buffer_full`) and are written when space returns. Flow records
//! are small and are the metrics the appliance exists for, so they get the last bytes of
//! the disk; set `min_free_bytes` so that packets leave them some.

use std::{
    fs::File,
    io::{ErrorKind, Write},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use serde::Serialize;

use crate::{
    FlowRecord,
    parquet::{self, wal},
    pcap::{self, PcapError, SegmentOptions, SegmentWriter, recover_segment},
    retention::{self, RetentionError, RetentionPolicy, RetentionReport},
};

/// A log sink: one line per call, without a trailing newline.
pub type LogFn = Arc<dyn Fn(&str) + Send + Sync>;

/// Settings shared by [`PacketStore`] and [`FlowStore`].
#[derive(Clone)]
#[non_exhaustive]
pub struct StoreOptions {
    /// How often written packets and records are made durable; a crash loses at most this
    /// much (plus one tick). Default 1 s.
    pub flush_interval_ns: i64,
    /// How often a paused store checks for space again. Default 1 s.
    pub retry_interval_ns: i64,
    /// The packet store pauses when the file system's free space (for unprivileged users)
    /// falls below this. Default 0: it pauses only when a write fails.
    pub min_free_bytes: u64,
    /// Bytes of flow records a flow store buffers in memory while it cannot write. Default
    /// 64 MiB.
    pub flow_buffer_max_bytes: usize,
    /// How often a flow store rotates its log into Parquet files (the delay before records
    /// are visible to Parquet readers). Default 60 s.
    pub flow_publish_interval_ns: i64,
    /// Where log lines go. Default standard error, prefixed `tapvault: `.
    pub log: LogFn,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            flush_interval_ns: 1_000_000_000,
            retry_interval_ns: 1_000_000_000,
            min_free_bytes: 0,
            flow_buffer_max_bytes: 64 << 20,
            flow_publish_interval_ns: 60_000_000_000,
            log: Arc::new(|line| eprintln!("tapvault: {line}")),
        }
    }
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("flush_interval_ns", &self.flush_interval_ns)
            .field("retry_interval_ns", &self.retry_interval_ns)
            .field("min_free_bytes", &self.min_free_bytes)
            .field("flow_buffer_max_bytes", &self.flow_buffer_max_bytes)
            .field("flow_publish_interval_ns", &self.flow_publish_interval_ns)
            .finish_non_exhaustive()
    }
}

impl StoreOptions {
    /// Sets [`StoreOptions::flush_interval_ns`] (at least 1 ms).
    pub fn flush_interval_ns(mut self, ns: i64) -> Self {
        self.flush_interval_ns = ns.max(1_000_000);
        self
    }
    /// Sets [`StoreOptions::retry_interval_ns`] (at least 1 ms).
    pub fn retry_interval_ns(mut self, ns: i64) -> Self {
        self.retry_interval_ns = ns.max(1_000_000);
        self
    }
    /// Sets [`StoreOptions::min_free_bytes`].
    pub fn min_free_bytes(mut self, bytes: u64) -> Self {
        self.min_free_bytes = bytes;
        self
    }
    /// Sets [`StoreOptions::flow_buffer_max_bytes`].
    pub fn flow_buffer_max_bytes(mut self, bytes: usize) -> Self {
        self.flow_buffer_max_bytes = bytes;
        self
    }
    /// Sets [`StoreOptions::flow_publish_interval_ns`] (at least the flush interval).
    pub fn flow_publish_interval_ns(mut self, ns: i64) -> Self {
        self.flow_publish_interval_ns = ns.max(1_000_000);
        self
    }
    /// Sets [`StoreOptions::log`].
    pub fn log(mut self, log: LogFn) -> Self {
        self.log = log;
        self
    }
}

/// Statistics shared with readers on other threads (the API's status page); updated by
/// every tick.
#[derive(Debug, Default)]
pub struct Shared<T>(Arc<Mutex<T>>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(Arc::clone(&self.0))
    }
}

impl<T: Clone + Default> Shared<T> {
    /// A copy of the current values.
    pub fn snapshot(&self) -> T {
        match self.0.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set(&self, value: &T) {
        match self.0.lock() {
            Ok(mut g) => g.clone_from(value),
            Err(poisoned) => poisoned.into_inner().clone_from(value),
        }
    }

    fn update(&self, f: impl FnOnce(&mut T)) {
        match self.0.lock() {
            Ok(mut g) => f(&mut g),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }
}

/// Why a store is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseReason {
    /// A write failed with `ENOSPC`, or free space fell below the minimum.
    DiskFull,
    /// A write failed for another reason.
    IoError,
}

/// Counters of a [`PacketStore`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PacketStoreStats {
    /// Packets accepted into segments (those later lost to a write error are subtracted and
    /// counted as dropped).
    pub packets_written: u64,
    /// Packets known to be on disk (synced).
    pub packets_durable: u64,
    /// Bytes written to segment files (frames, padding, seek tables).
    pub bytes_written: u64,
    /// Segments published (rolled, flushed, or recovered after an error).
    pub segments_published: u64,
    /// zstd frames stored uncompressed (raw blocks) because the traffic did not compress
    /// ([`SegmentOptions::zstd_adaptive`](crate::SegmentOptions::zstd_adaptive)).
    pub frames_passed_through: u64,
    /// Packets not stored because the disk was full (or below the free-space minimum).
    pub spill_dropped_disk_full: u64,
    /// Packets not stored because of another write error.
    pub spill_dropped_io_error: u64,
    /// Packets not stored because their time does not fit a nanosecond pcap record.
    pub spill_dropped_bad_timestamp: u64,
    /// Whether spill is paused, and why.
    pub paused: Option<PauseReason>,
    /// Pauses so far.
    pub pause_episodes: u64,
    /// The last error, as text.
    pub last_error: Option<String>,
    /// Now minus the time of the oldest packet not yet synced (0 when all are).
    pub storage_lag_ns: i64,
    /// Free bytes of the file system (for unprivileged users), at the last check.
    pub free_bytes: Option<u64>,
}

/// A paused packet store does not try to resume with less free space than this (one
/// segment block and its seek table).
const RESUME_MIN_FREE: u64 = 256 << 10;

/// Free bytes for unprivileged users of the file system holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    #[expect(
        clippy::useless_conversion,
        reason = "the statvfs field types differ between platforms"
    )]
    Some(u64::from(s.blocks_available()).saturating_mul(u64::from(s.fragment_size())))
}

/// An error and its causes, `: `-separated (the log line and `last_error`).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

fn is_disk_full(e: &PcapError) -> bool {
    matches!(e, PcapError::Io { source, .. }
        if source.kind() == ErrorKind::StorageFull || source.raw_os_error() == Some(28))
}

/// One packet writer's segments, made crash-safe and kept going through a full disk (see
/// the [module docs](self)).
pub struct PacketStore {
    root: PathBuf,
    writer_id: String,
    w: SegmentWriter,
    segment_span_ns: i64,
    opts: StoreOptions,
    stats: PacketStoreStats,
    shared: Shared<PacketStoreStats>,
    /// When a paused store next tries to resume; `None` right after a pause that happened
    /// outside a tick (a failed write): the next tick sets it one retry interval later.
    next_retry_ns: Option<i64>,
    last_sync_ns: Option<i64>,
    last_space_check_ns: Option<i64>,
    /// Time of the oldest packet written since the last sync.
    unsynced_oldest: Option<i64>,
    /// Packets the sync in flight makes durable (the writer's syncs complete one call late).
    sync_covers: Option<u64>,
    /// Segments given up after an error, with the packets written to them, waiting for
    /// [`recover_segment`].
    deferred: Vec<(PathBuf, u64)>,
    /// After a pause, spill resumes on probation: the episode ends (and the resumption is
    /// logged) only when packets written since are synced; a failure before that continues
    /// the same episode. Holds the durable count at the resumption.
    probation: Option<u64>,
}

impl PacketStore {
    /// A store writing `root/pcap/...` segments as `writer_id` (unique per process sharing
    /// the root). Fails only on invalid options or writer id.
    pub fn open(
        root: impl Into<PathBuf>,
        writer_id: &str,
        segment: SegmentOptions,
        opts: StoreOptions,
    ) -> pcap::Result<PacketStore> {
        let root = root.into();
        let segment_span_ns = segment.segment_max_span_ns;
        let w = SegmentWriter::new(&root, writer_id, segment)?;
        Ok(PacketStore {
            root,
            writer_id: writer_id.to_owned(),
            w,
            segment_span_ns,
            opts,
            stats: PacketStoreStats::default(),
            shared: Shared::default(),
            next_retry_ns: None,
            last_sync_ns: None,
            last_space_check_ns: None,
            unsynced_oldest: None,
            sync_covers: None,
            deferred: Vec::new(),
            probation: None,
        })
    }

    /// Stores one packet: its time (ns since the epoch, the clock [`tick`](Self::tick) is
    /// given), original length, captured bytes and flow id. Never fails: a packet that
    /// cannot be stored is counted.
    pub fn write(&mut self, ts_ns: i64, orig_len: u32, data: &[u8], flow_id: u64) {
        if let Some(reason) = self.stats.paused {
            self.count_dropped(reason, 1);
            return;
        }
        match self.w.write(ts_ns, orig_len, data, flow_id) {
            Ok(published) => {
                self.stats.packets_written += 1;
                self.stats.segments_published += u64::from(published.is_some());
                self.unsynced_oldest.get_or_insert(ts_ns);
            }
            Err(PcapError::TimestampOutOfRange { .. }) => {
                self.stats.spill_dropped_bad_timestamp += 1;
            }
            Err(e) => {
                // This packet never reached the writer's frame.
                let reason = self.fail(&e);
                self.count_dropped(reason, 1);
            }
        }
    }

    /// Periodic work, with the current time (ns since the epoch): makes packets durable every
    /// flush interval, publishes a segment whose time span is over when traffic is idle,
    /// checks free space, resumes after a pause, and updates [`stats`](Self::stats).
    pub fn tick(&mut self, now_ns: i64) {
        let space_due = self
            .last_space_check_ns
            .is_none_or(|t| now_ns - t >= self.opts.retry_interval_ns || now_ns < t);
        if space_due {
            self.last_space_check_ns = Some(now_ns);
            self.stats.free_bytes = free_bytes(&self.root);
        }
        if self.stats.paused.is_some() {
            let retry = *self
                .next_retry_ns
                .get_or_insert(now_ns.saturating_add(self.opts.retry_interval_ns));
            if now_ns >= retry {
                self.try_resume(now_ns);
            }
        } else if space_due && self.below_minimum() {
            let r = self.w.flush();
            self.published(r);
            if self.stats.paused.is_none() {
                self.pause(PauseReason::DiskFull, "free space below the minimum".into());
            }
            self.next_retry_ns = Some(now_ns + self.opts.retry_interval_ns);
        }
        if self.stats.paused.is_none() {
            if let Some(first) = self.w.segment_first_ts()
                && now_ns >= first.saturating_add(self.segment_span_ns)
            {
                let r = self.w.flush();
                if self.published(r) {
                    self.synced();
                }
            }
            let due = self
                .last_sync_ns
                .is_none_or(|t| now_ns - t >= self.opts.flush_interval_ns || now_ns < t);
            if due {
                self.last_sync_ns = Some(now_ns);
                match self.w.seal_frame().and_then(|()| self.w.sync()) {
                    Ok(()) => {
                        // This sync completes at the next call; the previous one is done.
                        let covers = self.stats.packets_written - self.w.pending_packets() as u64;
                        let done = self.sync_covers.replace(covers);
                        self.durable(done.unwrap_or(self.stats.packets_durable));
                    }
                    Err(e) => {
                        self.fail(&e);
                        self.next_retry_ns = Some(now_ns + self.opts.retry_interval_ns);
                    }
                }
            }
        }
        self.stats.storage_lag_ns = self.unsynced_oldest.map_or(0, |t| (now_ns - t).max(0));
        self.stats.bytes_written = self.w.bytes_written();
        self.stats.frames_passed_through = self.w.pass_through_frames();
        self.shared.set(&self.stats);
    }

    /// Publishes the open segment and returns the final counters.
    pub fn close(mut self) -> PacketStoreStats {
        if self.stats.paused.is_none() {
            let r = self.w.flush();
            if self.published(r) {
                self.synced();
            }
        }
        self.recover_deferred();
        self.stats.bytes_written = self.w.bytes_written();
        self.stats.frames_passed_through = self.w.pass_through_frames();
        self.stats.storage_lag_ns = 0;
        self.shared.set(&self.stats);
        self.stats
    }

    /// The counters, for other threads.
    pub fn stats(&self) -> Shared<PacketStoreStats> {
        self.shared.clone()
    }

    /// The counters as of now.
    pub fn current_stats(&self) -> &PacketStoreStats {
        &self.stats
    }

    fn below_minimum(&self) -> bool {
        self.opts.min_free_bytes > 0
            && self
                .stats
                .free_bytes
                .is_some_and(|f| f < self.opts.min_free_bytes)
    }

    /// Everything written is durable but the writer's pending packets (a segment was
    /// published: its files are synced).
    fn synced(&mut self) {
        self.sync_covers = None;
        self.durable(self.stats.packets_written - self.w.pending_packets() as u64);
    }

    /// The first `durable` packets written are durable.
    fn durable(&mut self, durable: u64) {
        self.stats.packets_durable = self.stats.packets_durable.max(durable);
        if self.w.pending_packets() == 0 {
            self.unsynced_oldest = None;
        }
        if let Some(at) = self.probation
            && self.stats.packets_durable > at
            && self.stats.paused.is_none()
        {
            self.probation = None;
            let dropped = self.stats.spill_dropped_disk_full + self.stats.spill_dropped_io_error;
            (self.opts.log)(&format!(
                "pcap spill resumed (writer {}); {dropped} packets dropped so far",
                self.writer_id
            ));
        }
    }

    /// Counts a publication; a failure pauses (see [`fail`](Self::fail)). Returns whether
    /// it succeeded.
    fn published(&mut self, r: pcap::Result<Option<pcap::PublishedSegment>>) -> bool {
        match r {
            Ok(p) => {
                self.stats.segments_published += u64::from(p.is_some());
                true
            }
            Err(e) => {
                self.fail(&e);
                false
            }
        }
    }

    fn count_dropped(&mut self, reason: PauseReason, n: u64) {
        match reason {
            PauseReason::DiskFull => self.stats.spill_dropped_disk_full += n,
            PauseReason::IoError => self.stats.spill_dropped_io_error += n,
        }
    }

    /// Gives up the open segment (publishing its complete frames if there is room), pauses,
    /// and logs once per episode. Returns the reason.
    fn fail(&mut self, e: &PcapError) -> PauseReason {
        let reason = if is_disk_full(e) {
            PauseReason::DiskFull
        } else {
            PauseReason::IoError
        };
        if let Some(seg) = self.w.abandon_segment() {
            self.deferred.push(seg);
        }
        self.sync_covers = None;
        self.unsynced_oldest = None;
        self.recover_deferred();
        let msg = chain(e);
        self.stats.last_error = Some(msg.clone());
        if self.stats.paused.is_none() {
            self.pause(reason, msg);
        }
        reason
    }

    fn pause(&mut self, reason: PauseReason, why: String) {
        self.stats.paused = Some(reason);
        // The first retry comes one retry interval after the pause, also when the failure
        // came from a write between two ticks (the next tick schedules it): resuming at once
        // would retry on a disk that was full a moment ago, at every tick.
        self.next_retry_ns = None;
        if self.probation.is_some() {
            // The resumption did not hold: the same episode goes on.
            return;
        }
        self.stats.pause_episodes += 1;
        (self.opts.log)(&format!(
            "pcap spill paused (writer {}): {why}; packets are counted as spill_dropped_{} until it resumes",
            self.writer_id,
            match reason {
                PauseReason::DiskFull => "disk_full",
                PauseReason::IoError => "io_error",
            }
        ));
    }

    /// Publishes the complete frames of given-up segments; what they lose is counted.
    fn recover_deferred(&mut self) {
        let reason = self.stats.paused.unwrap_or(PauseReason::DiskFull);
        let mut still = Vec::new();
        for (tmp, packets) in std::mem::take(&mut self.deferred) {
            match recover_segment(&tmp) {
                Ok(kept) => {
                    let kept_packets = kept.as_ref().map_or(0, |p| p.packets);
                    self.stats.segments_published += u64::from(kept.is_some());
                    let lost = packets.saturating_sub(kept_packets);
                    self.stats.packets_written -= lost.min(self.stats.packets_written);
                    self.count_dropped(reason, lost);
                }
                Err(_) => still.push((tmp, packets)),
            }
        }
        self.deferred = still;
        self.stats.packets_durable = self.stats.packets_durable.min(self.stats.packets_written);
    }

    fn try_resume(&mut self, now_ns: i64) {
        self.next_retry_ns = Some(now_ns + self.opts.retry_interval_ns);
        self.stats.free_bytes = free_bytes(&self.root);
        if self.below_minimum() || self.stats.free_bytes.is_some_and(|f| f < RESUME_MIN_FREE) {
            return;
        }
        self.recover_deferred();
        if !self.deferred.is_empty() {
            return;
        }
        self.stats.paused = None;
        self.probation = Some(self.stats.packets_written);
    }
}

/// Counters of a [`FlowStore`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct FlowStoreStats {
    /// Records accepted.
    pub records_accepted: u64,
    /// Records written to the flow log.
    pub records_logged: u64,
    /// Records known to be on disk (synced in the log).
    pub records_durable: u64,
    /// Records waiting in memory (the log could not be written).
    pub records_buffered: u64,
    /// Records not stored: the memory buffer was full.
    pub dropped_buffer_full: u64,
    /// Logs converted into Parquet.
    pub logs_converted: u64,
    /// Logs waiting for conversion.
    pub logs_pending: u64,
    /// Parquet files published.
    pub files_published: u64,
    /// Records in published Parquet files.
    pub records_published: u64,
    /// Records of a log that could not be parsed at conversion (should stay 0).
    pub records_unreadable: u64,
    /// Whether writing the log is paused, and why.
    pub paused: Option<PauseReason>,
    /// Pauses so far.
    pub pause_episodes: u64,
    /// The last error, as text.
    pub last_error: Option<String>,
}

struct OpenLog {
    path: PathBuf,
    file: File,
    /// Bytes of whole records in the file.
    good_len: u64,
    opened_ns: i64,
}

/// One writer's flow records: a flow log synced every flush interval, rotated into Parquet
/// files by a background thread (see the [module docs](self) and [`crate::parquet`]).
pub struct FlowStore {
    root: PathBuf,
    writer_id: String,
    opts: StoreOptions,
    log: Option<OpenLog>,
    next_generation: u64,
    buf: Vec<u8>,
    buf_records: u64,
    stats: FlowStoreStats,
    shared: Shared<FlowStoreStats>,
    next_retry_ns: i64,
    last_sync_ns: Option<i64>,
    converter: Option<Converter>,
}

struct Converter {
    tx: std::sync::mpsc::Sender<PathBuf>,
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

/// Bytes of records buffered before they are written to the log (one write per batch).
const LOG_WRITE_BATCH: usize = 256 << 10;
/// A log rotates at this size even before its publish interval.
const LOG_MAX_BYTES: u64 = 256 << 20;

impl FlowStore {
    /// A store writing `root/flows/...` as `writer_id` (unique per process sharing the root).
    /// Logs this writer left (that recovery could not convert) are queued for conversion.
    pub fn open(
        root: impl Into<PathBuf>,
        writer_id: &str,
        opts: StoreOptions,
    ) -> parquet::Result<FlowStore> {
        let root = root.into();
        if !crate::partition::valid_writer_id(writer_id) {
            return Err(parquet::Error::InvalidWriterId {
                id: writer_id.to_owned(),
            });
        }
        let leftover = wal::list(&root, Some(writer_id))?;
        let next_generation = leftover.iter().map(|(_, g)| g + 1).max().unwrap_or(0);
        let shared: Shared<FlowStoreStats> = Shared::default();
        let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (root, shared, stop, opts) = (
                root.clone(),
                shared.clone(),
                Arc::clone(&stop),
                opts.clone(),
            );
            let name = format!("flowlog-{writer_id}");
            std::thread::Builder::new()
                .name(name)
                .spawn(move || convert_loop(&root, &rx, &shared, &stop, &opts))
                .map_err(parquet::Error::io(
                    "spawn a thread for",
                    PathBuf::from(writer_id),
                ))?
        };
        let mut stats = FlowStoreStats::default();
        for (path, _) in leftover {
            stats.logs_pending += 1;
            let _ = tx.send(path);
        }
        shared.set(&stats);
        Ok(FlowStore {
            root,
            writer_id: writer_id.to_owned(),
            opts,
            log: None,
            next_generation,
            buf: Vec::with_capacity(LOG_WRITE_BATCH + 4096),
            buf_records: 0,
            stats,
            shared,
            next_retry_ns: 0,
            last_sync_ns: None,
            converter: Some(Converter { tx, stop, handle }),
        })
    }

    /// Stores one record. Never fails: a record that cannot be kept is counted.
    pub fn write(&mut self, record: &FlowRecord) {
        let before = self.buf.len();
        wal::push_record(&mut self.buf, record);
        if self.buf.len() > self.opts.flow_buffer_max_bytes.max(LOG_WRITE_BATCH) {
            self.buf.truncate(before);
            self.stats.dropped_buffer_full += 1;
            return;
        }
        self.stats.records_accepted += 1;
        self.buf_records += 1;
        if self.stats.paused.is_none() && self.buf.len() >= LOG_WRITE_BATCH {
            self.write_buf(None);
        }
    }

    /// Periodic work, with the current time (ns since the epoch): syncs the log every flush
    /// interval, rotates it into Parquet every publish interval, retries after a pause, and
    /// updates [`stats`](Self::stats).
    pub fn tick(&mut self, now_ns: i64) {
        if self.stats.paused.is_some() && now_ns >= self.next_retry_ns {
            self.next_retry_ns = now_ns + self.opts.retry_interval_ns;
            if self.write_buf(Some(now_ns)) && self.sync() {
                self.stats.paused = None;
                (self.opts.log)(&format!(
                    "flow log resumed (writer {}); {} records dropped so far",
                    self.writer_id, self.stats.dropped_buffer_full
                ));
            }
        }
        if self.stats.paused.is_none() {
            let due = self
                .last_sync_ns
                .is_none_or(|t| now_ns - t >= self.opts.flush_interval_ns || now_ns < t);
            if due {
                self.last_sync_ns = Some(now_ns);
                if self.write_buf(Some(now_ns)) {
                    self.sync();
                }
            }
            let rotate = self.log.as_ref().is_some_and(|l| {
                now_ns - l.opened_ns >= self.opts.flow_publish_interval_ns
                    || l.good_len >= LOG_MAX_BYTES
            });
            if rotate && self.stats.paused.is_none() && self.write_buf(Some(now_ns)) && self.sync()
            {
                self.rotate();
            }
        }
        self.publish_stats();
    }

    /// Writes and syncs what is buffered, converts every log into Parquet (waiting for the
    /// background thread) and returns the final counters. Logs that cannot be converted
    /// (no space) stay for [`recover_store`] at the next start.
    pub fn close(mut self) -> FlowStoreStats {
        if self.write_buf(None) && self.sync() {
            self.rotate();
        } else if self.buf_records > 0 {
            (self.opts.log)(&format!(
                "flow log (writer {}): {} records could not be written before shutdown",
                self.writer_id, self.buf_records
            ));
            self.stats.dropped_buffer_full += self.buf_records;
        }
        if let Some(c) = self.converter.take() {
            c.stop.store(true, Ordering::Release);
            drop(c.tx);
            let _ = c.handle.join();
        }
        self.publish_stats();
        self.shared.snapshot()
    }

    /// The counters, for other threads.
    pub fn stats(&self) -> Shared<FlowStoreStats> {
        self.shared.clone()
    }

    fn publish_stats(&mut self) {
        self.stats.records_buffered = self.buf_records;
        let s = &self.stats;
        self.shared.update(|t| {
            // The conversion counters belong to the background thread.
            t.records_accepted = s.records_accepted;
            t.records_logged = s.records_logged;
            t.records_durable = s.records_durable;
            t.records_buffered = s.records_buffered;
            t.dropped_buffer_full = s.dropped_buffer_full;
            t.paused = s.paused;
            t.pause_episodes = s.pause_episodes;
            if s.last_error.is_some() {
                t.last_error.clone_from(&s.last_error);
            }
        });
    }

    /// Writes the buffered records to the log (opening one if needed). On failure the log is
    /// cut back to its last whole record, the records stay buffered, and the store pauses.
    fn write_buf(&mut self, now_ns: Option<i64>) -> bool {
        if self.buf.is_empty() {
            return true;
        }
        if self.log.is_none() {
            let generation = self.next_generation;
            let path = wal::wal_path(&self.root, &self.writer_id, generation);
            match wal::create(&path) {
                Ok(file) => {
                    self.next_generation += 1;
                    self.log = Some(OpenLog {
                        path,
                        file,
                        good_len: wal::HEADER_LEN as u64,
                        opened_ns: now_ns.unwrap_or_else(now),
                    });
                }
                Err(e) => {
                    // A half-created log would hold no records; leave it to recovery.
                    let _ = std::fs::remove_file(&path);
                    self.fail(&chain(&e), is_full_parquet(&e));
                    return false;
                }
            }
        }
        let Some(log) = self.log.as_mut() else {
            return false;
        };
        match log.file.write_all(&self.buf) {
            Ok(()) => {
                log.good_len += self.buf.len() as u64;
                self.buf.clear();
                self.stats.records_logged += self.buf_records;
                self.buf_records = 0;
                true
            }
            Err(e) => {
                // Cut off a partial record so the next append follows a whole one.
                let _ = log.file.set_len(log.good_len);
                let msg = format!("failed to write `{}`: {e}", log.path.display());
                let full = e.kind() == ErrorKind::StorageFull;
                // Reopen at the cut (the file position is past it).
                match std::fs::OpenOptions::new().append(true).open(&log.path) {
                    Ok(f) => log.file = f,
                    Err(_) => self.log = None,
                }
                self.fail(&msg, full);
                false
            }
        }
    }

    fn sync(&mut self) -> bool {
        let Some(log) = &self.log else {
            self.stats.records_durable = self.stats.records_logged;
            return true;
        };
        match log.file.sync_data() {
            Ok(()) => {
                self.stats.records_durable = self.stats.records_logged;
                true
            }
            Err(e) => {
                let msg = format!("failed to sync `{}`: {e}", log.path.display());
                self.fail(&msg, e.kind() == ErrorKind::StorageFull);
                false
            }
        }
    }

    /// Hands the (synced) log to the background thread for conversion.
    fn rotate(&mut self) {
        if let Some(log) = self.log.take() {
            self.stats.logs_pending += 1;
            self.shared.update(|t| t.logs_pending += 1);
            if let Some(c) = &self.converter {
                let _ = c.tx.send(log.path);
            }
        }
    }

    fn fail(&mut self, msg: &str, full: bool) {
        self.stats.last_error = Some(msg.to_owned());
        if self.stats.paused.is_none() {
            let reason = if full {
                PauseReason::DiskFull
            } else {
                PauseReason::IoError
            };
            self.stats.paused = Some(reason);
            self.stats.pause_episodes += 1;
            (self.opts.log)(&format!(
                "flow log paused (writer {}): {msg}; records wait in memory (up to {} bytes) until it resumes",
                self.writer_id, self.opts.flow_buffer_max_bytes
            ));
        }
    }
}

impl Drop for FlowStore {
    fn drop(&mut self) {
        // Without close(): stop the thread; unconverted logs stay for recovery.
        if let Some(c) = self.converter.take() {
            c.stop.store(true, Ordering::Release);
            drop(c.tx);
            let _ = c.handle.join();
        }
    }
}

fn is_full_parquet(e: &parquet::Error) -> bool {
    matches!(e, parquet::Error::Io { source, .. } if source.kind() == ErrorKind::StorageFull)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// The background thread of a [`FlowStore`]: converts logs in order, retrying a failed one
/// every retry interval; on stop, tries each remaining log once more and returns.
fn convert_loop(
    root: &Path,
    rx: &std::sync::mpsc::Receiver<PathBuf>,
    shared: &Shared<FlowStoreStats>,
    stop: &AtomicBool,
    opts: &StoreOptions,
) {
    let mut queue: std::collections::VecDeque<PathBuf> = std::collections::VecDeque::new();
    let retry = Duration::from_nanos(opts.retry_interval_ns.max(1_000_000) as u64);
    let mut failing = false;
    loop {
        let stopping = stop.load(Ordering::Acquire);
        // Block for work only when there is none.
        if queue.is_empty() && !stopping {
            match rx.recv_timeout(retry) {
                Ok(p) => queue.push_back(p),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {}
            }
        }
        while let Ok(p) = rx.try_recv() {
            queue.push_back(p);
        }
        let stopping = stop.load(Ordering::Acquire);
        if queue.is_empty() {
            if stopping {
                return;
            }
            continue;
        }
        let mut progressed = false;
        while let Some(path) = queue.front().cloned() {
            match wal::convert(root, &path) {
                Ok(c) => {
                    queue.pop_front();
                    progressed = true;
                    if failing {
                        failing = false;
                        (opts.log)(&format!("flow log conversion resumed ({})", path.display()));
                    }
                    shared.update(|t| {
                        t.logs_converted += 1;
                        t.logs_pending = t.logs_pending.saturating_sub(1);
                        t.files_published += c.files.len() as u64;
                        t.records_published += c.records;
                        t.records_unreadable += c.unreadable;
                    });
                }
                Err(e) => {
                    let msg = chain(&e);
                    shared.update(|t| t.last_error = Some(msg.clone()));
                    if !failing {
                        failing = true;
                        (opts.log)(&format!(
                            "flow log conversion paused: {msg}; retrying every {} ms",
                            retry.as_millis()
                        ));
                    }
                    break;
                }
            }
        }
        if stopping {
            if !queue.is_empty() && !progressed {
                (opts.log)(&format!(
                    "{} flow log(s) left for conversion at the next start",
                    queue.len()
                ));
                return;
            }
            if queue.is_empty() {
                return;
            }
        } else if !queue.is_empty() {
            std::thread::sleep(retry);
        }
    }
}

/// What [`recover_store`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreRecovery {
    /// The packet store's recovery.
    pub pcap: pcap::Recovered,
    /// Incomplete Parquet files removed.
    pub parquet_removed: Vec<PathBuf>,
    /// Flow logs converted.
    pub flow_logs: usize,
    /// Parquet files published from flow logs.
    pub flow_files: Vec<PathBuf>,
    /// Records in them.
    pub flow_records: u64,
}

impl StoreRecovery {
    /// One log line per action.
    pub fn log_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in &self.pcap.removed {
            out.push(format!("recovery: removed {}", p.display()));
        }
        for p in &self.pcap.published {
            out.push(format!("recovery: published index {}", p.display()));
        }
        for p in &self.pcap.recovered {
            out.push(format!(
                "recovery: published segment {} ({} packets)",
                p.segment.display(),
                p.packets
            ));
        }
        for p in &self.parquet_removed {
            out.push(format!("recovery: removed {}", p.display()));
        }
        if self.flow_logs > 0 {
            out.push(format!(
                "recovery: converted {} flow log(s) into {} Parquet file(s), {} records",
                self.flow_logs,
                self.flow_files.len(),
                self.flow_records
            ));
        }
        out
    }
}

/// An error of [`recover_store`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryError {
    /// Recovering the packet store failed.
    #[error("packet store recovery failed")]
    Pcap(#[from] PcapError),
    /// Recovering the flow store failed.
    #[error("flow store recovery failed")]
    Flows(#[from] parquet::Error),
}

/// Recovers both stores under `root` after a crash; run once before any store opens.
/// Publishes the complete frames of open segments and converts flow logs into Parquet (see
/// [`pcap::recover`] and [`crate::parquet`]).
pub fn recover_store(root: &Path) -> Result<StoreRecovery, RecoveryError> {
    let pcap = pcap::recover(root)?;
    let parquet_removed = parquet::recover(root)?;
    let logs = wal::recover_logs(root)?;
    Ok(StoreRecovery {
        pcap,
        parquet_removed,
        flow_logs: logs.logs,
        flow_files: logs.files,
        flow_records: logs.records,
    })
}

/// Counters of [`Maintenance`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MaintenanceStats {
    /// Retention runs.
    pub runs: u64,
    /// Runs that failed.
    pub failures: u64,
    /// Files deleted (a segment and its index count as one).
    pub files_deleted: u64,
    /// Bytes freed.
    pub bytes_freed: u64,
    /// The last error, as text.
    pub last_error: Option<String>,
}

/// Retention on a schedule. Retention only deletes published files, so an open segment (a
/// hidden temporary file) is never deleted.
#[derive(Clone)]
pub struct Maintenance {
    root: PathBuf,
    policy: RetentionPolicy,
    log: LogFn,
    stats: Shared<MaintenanceStats>,
}

impl Maintenance {
    /// Retention of `root` by `policy`, logging to `log`.
    pub fn new(root: impl Into<PathBuf>, policy: RetentionPolicy, log: LogFn) -> Maintenance {
        Maintenance {
            root: root.into(),
            policy,
            log,
            stats: Shared::default(),
        }
    }

    /// Enforces the policy once at `now_ns`; logs every deletion and any error.
    pub fn run_once(&self, now_ns: i64) -> Result<RetentionReport, RetentionError> {
        let r = retention::enforce(&self.root, &self.policy, now_ns);
        match &r {
            Ok(report) => {
                for line in report.log_lines() {
                    (self.log)(&line);
                }
                self.stats.update(|s| {
                    s.runs += 1;
                    s.files_deleted += report.files_deleted() as u64;
                    s.bytes_freed += report.bytes_freed();
                });
            }
            Err(e) => {
                let msg = chain(e);
                (self.log)(&format!("retention failed: {msg}"));
                self.stats.update(|s| {
                    s.runs += 1;
                    s.failures += 1;
                    s.last_error = Some(msg);
                });
            }
        }
        r
    }

    /// The counters, for other threads.
    pub fn stats(&self) -> Shared<MaintenanceStats> {
        self.stats.clone()
    }

    /// Runs [`run_once`](Self::run_once) now and every `interval` on a thread until the
    /// handle is stopped or dropped.
    pub fn spawn(self, interval: Duration) -> std::io::Result<MaintenanceHandle> {
        let stop = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let handle = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("retention".into())
                .spawn(move || {
                    let (lock, cv) = &*stop;
                    loop {
                        let _ = self.run_once(now());
                        let Ok(guard) = lock.lock() else { return };
                        let Ok((guard, _)) = cv.wait_timeout_while(guard, interval, |s| !*s) else {
                            return;
                        };
                        if *guard {
                            return;
                        }
                    }
                })?
        };
        Ok(MaintenanceHandle {
            stop,
            handle: Some(handle),
        })
    }
}

/// The thread of [`Maintenance::spawn`].
pub struct MaintenanceHandle {
    stop: Arc<(Mutex<bool>, std::sync::Condvar)>,
    handle: Option<JoinHandle<()>>,
}

impl MaintenanceHandle {
    /// Stops the thread (after the run in progress) and waits for it.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        let (lock, cv) = &*self.stop;
        if let Ok(mut s) = lock.lock() {
            *s = true;
        }
        cv.notify_all();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for MaintenanceHandle {
    fn drop(&mut self) {
        self.stop_now();
    }
}
