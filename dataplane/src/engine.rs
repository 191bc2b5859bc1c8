//! Offline analysis: a capture file through the same decode and flow shards as live capture.
//!
//! The entry point is [`analyze_file`]. The calling thread reads and decodes; with more than
//! one shard (or [`AnalyzeOptions::threaded`]) each shard runs on its own thread and receives
//! batches of [`PacketDesc`] through bounded lock-free channels, keyed by the symmetric flow
//! hash so both directions of a connection meet in one shard.

use std::{path::Path, thread};

use crossbeam_channel::{Receiver, Sender, bounded};
use tapvault_config::FlowConfig;
use tapvault_storage::{DnsRecord, FlowRecord};

use crate::{
    decode::{self, Decoded, LinkType, Malformed, Transport},
    defrag::{Defrag, DefragStats},
    flow::{
        desc::PacketDesc,
        key::FlowKey,
        table::{FlowTable, ShardStats, Sink},
    },
    source::{self, CaptureFile},
};

/// Descriptors per batch handed to a shard thread.
const BATCH: usize = 256;
/// Batches in flight per shard queue.
const QUEUE_DEPTH: usize = 64;

/// How to run an analysis.
#[derive(Debug, Clone, Default)]
pub struct AnalyzeOptions {
    /// Flow-table settings.
    pub flow: FlowConfig,
    /// Run the shards on their own threads even if there is only one.
    pub threaded: bool,
    /// Call [`Sink::frame`] for every TCP segment (diagnostics; forces ordered output only
    /// within a shard).
    pub frames: bool,
}

/// Percentiles of the handshake RTT (iRTT) of connections whose handshake completed in one
/// time window.
#[derive(Debug, Clone, PartialEq)]
pub struct RttWindow {
    /// Window start, ns since the epoch.
    pub start_ns: i64,
    /// Handshakes in the window.
    pub count: u64,
    /// Median, microseconds.
    pub p50_us: u64,
    /// 90th percentile, microseconds.
    pub p90_us: u64,
    /// 99th percentile, microseconds.
    pub p99_us: u64,
}

/// What the analysis saw and lost: so no metric is trusted without knowing what was lost.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Health {
    /// Frames read from the source.
    pub frames: u64,
    /// Bytes of those frames on the wire.
    pub bytes: u64,
    /// Frames decoded to an IP packet.
    pub ip_packets: u64,
    /// Well-formed frames without IP (ARP, LLDP, ...).
    pub not_ip: u64,
    /// Malformed frames by reason, indexed like [`Malformed::ALL`].
    pub malformed: [u64; Malformed::ALL.len()],
    /// Frames of a link type the decoder does not know.
    pub unsupported_linktype: u64,
    /// IP reassembly: fragments seen, datagrams completed and dropped.
    pub defrag: DefragStats,
    /// The file ended in the middle of a record.
    pub truncated_tail: bool,
    /// Container records the reader skipped as unusable.
    pub skipped_records: u64,
    /// Flow table counters, all shards.
    pub flows: ShardStats,
    /// Shards used.
    pub shards: usize,
    /// Handshake RTT percentiles per window.
    pub rtt_windows: Vec<RttWindow>,
}

impl Health {
    /// Total malformed frames.
    pub fn malformed_total(&self) -> u64 {
        self.malformed.iter().sum()
    }
}

/// What a shard thread sends to the output thread.
enum Out {
    Record(Box<FlowRecord>),
    Dns(DnsRecord),
    Frame(u64, u64, u32),
}

struct ChanSink {
    tx: Sender<Vec<Out>>,
    buf: Vec<Out>,
    frames: bool,
}

impl ChanSink {
    fn push(&mut self, o: Out) {
        self.buf.push(o);
        if self.buf.len() >= 256 {
            self.flush();
        }
    }
    fn flush(&mut self) {
        if !self.buf.is_empty() {
            // The receiver only goes away if the output thread panicked; nothing to do then.
            let full = std::mem::replace(&mut self.buf, Vec::with_capacity(256));
            let _ = self.tx.send(full);
        }
    }
}

impl Sink for ChanSink {
    fn record(&mut self, rec: FlowRecord) {
        self.push(Out::Record(Box::new(rec)));
    }
    fn dns(&mut self, rec: DnsRecord) {
        self.push(Out::Dns(rec));
    }
    fn frame(&mut self, n: u64, id: u64, flags: u32) {
        self.push(Out::Frame(n, id, flags));
    }
    fn wants_frames(&self) -> bool {
        self.frames
    }
}

/// Where decoded descriptors go: inline into one table, or to shard threads.
enum Dispatch {
    Inline {
        table: Box<FlowTable>,
        sink: ChanSink,
    },
    Threads {
        txs: Vec<Sender<Vec<PacketDesc>>>,
        recycle: Receiver<Vec<PacketDesc>>,
        batches: Vec<Vec<PacketDesc>>,
    },
}

impl Dispatch {
    /// Processes or queues the descriptor in `d`, if any (taking it when queued).
    #[inline]
    fn send(&mut self, d: &mut Option<PacketDesc>) {
        match self {
            Dispatch::Inline { table, sink } => {
                if let Some(d) = d {
                    table.process(d, sink);
                }
            }
            Dispatch::Threads {
                txs,
                recycle,
                batches,
            } => {
                let Some(d) = d.take() else { return };
                let s = FlowKey::shard(d.hash, txs.len());
                let b = &mut batches[s];
                b.push(d);
                if b.len() >= BATCH {
                    let fresh = recycle
                        .try_recv()
                        .unwrap_or_else(|_| Vec::with_capacity(BATCH));
                    let full = std::mem::replace(b, fresh);
                    // A shard thread only stops receiving if it panicked; the join reports it.
                    let _ = txs[s].send(full);
                }
            }
        }
    }
}

/// Errors of an analysis run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The capture could not be read.
    #[error(transparent)]
    Source(#[from] source::Error),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] tapvault_config::Error),
    /// A shard or output thread panicked.
    #[error("analysis thread `{0}` panicked")]
    ThreadPanicked(String),
}

fn rtt_windows(tables: &[&FlowTable]) -> Vec<RttWindow> {
    let mut merged: std::collections::BTreeMap<i64, hdrhistogram::Histogram<u64>> =
        Default::default();
    for t in tables {
        for (w, h) in t.rtt_windows() {
            match merged.get_mut(w) {
                Some(m) => {
                    // Same bounds everywhere, so adding cannot fail.
                    let _ = m.add(h);
                }
                None => {
                    merged.insert(*w, h.clone());
                }
            }
        }
    }
    merged
        .into_iter()
        .map(|(start_ns, h)| RttWindow {
            start_ns,
            count: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
        })
        .collect()
}

/// Receives every frame read, with the symmetric flow hash ([`FlowKey::hash64`]) of the
/// connection it belongs to, on the reading thread and in file order: the hook the packet
/// store hangs on.
pub trait PacketSpill {
    /// One frame: its link type, time, length on the wire, captured bytes, and flow hash
    /// (0 for frames that belong to no flow: not IP, malformed, or an IP fragment that does
    /// not complete a datagram).
    fn packet(&mut self, linktype: LinkType, ts_ns: i64, orig_len: u32, data: &[u8], flow: u64);
}

/// Runs a capture file through decode and the flow shards, handing every record to `sink`.
/// `progress` is called now and then with (bytes consumed, total bytes) of the file.
pub fn analyze_file<S: Sink + Send>(
    path: &Path,
    opts: &AnalyzeOptions,
    sink: &mut S,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Health, Error> {
    analyze_file_spill(path, opts, sink, None, progress)
}

/// [`analyze_file`], also handing every frame to `spill` (see [`PacketSpill`]).
pub fn analyze_file_spill<S: Sink + Send>(
    path: &Path,
    opts: &AnalyzeOptions,
    sink: &mut S,
    mut spill: Option<&mut dyn PacketSpill>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Health, Error> {
    opts.flow.validate()?;
    let mut cap = CaptureFile::open(path)?;
    // Automatic: one core reads and decodes, the others run shards on their own threads; on
    // a single core everything runs inline.
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let (shards, threaded) = match opts.flow.shards {
        0 => (cores.saturating_sub(1).max(1), opts.threaded || cores > 1),
        n => (n, opts.threaded),
    };
    let per_shard = opts.flow.max_flows.div_ceil(shards);
    let mut health = Health {
        shards,
        ..Default::default()
    };

    let inline = shards == 1 && !threaded;
    let (out_tx, out_rx) = bounded::<Vec<Out>>(QUEUE_DEPTH * shards);
    let (recycle_tx, recycle_rx) = bounded::<Vec<PacketDesc>>(QUEUE_DEPTH * shards * 2);
    thread::scope(|scope| -> Result<Health, Error> {
        // Records are written (serialised) on their own thread, off the packet path.
        let writer = thread::Builder::new()
            .name("tapvault-out".into())
            .spawn_scoped(scope, move || {
                for batch in out_rx {
                    for o in batch {
                        match o {
                            Out::Record(r) => sink.record(*r),
                            Out::Dns(r) => sink.dns(r),
                            Out::Frame(n, id, f) => sink.frame(n, id, f),
                        }
                    }
                }
            })
            .map_err(|_| Error::ThreadPanicked("tapvault-out (spawn)".into()))?;
        let chan_sink = |tx: Sender<Vec<Out>>| ChanSink {
            tx,
            buf: Vec::with_capacity(256),
            frames: opts.frames,
        };
        if inline {
            let mut dispatch = Dispatch::Inline {
                table: Box::new(FlowTable::new(&opts.flow, per_shard)),
                sink: chan_sink(out_tx),
            };
            let res = read_all(&mut cap, &mut dispatch, &mut health, spill.take(), progress);
            if let Dispatch::Inline { table, sink } = &mut dispatch {
                table.flush(sink);
                sink.flush();
                health.flows = table.stats().clone();
                health.rtt_windows = rtt_windows(&[table]);
            }
            drop(dispatch);
            writer
                .join()
                .map_err(|_| Error::ThreadPanicked("tapvault-out".into()))?;
            res?;
            return Ok(health);
        }
        let mut txs = Vec::with_capacity(shards);
        let mut handles = Vec::with_capacity(shards);
        for s in 0..shards {
            let (tx, rx) = bounded::<Vec<PacketDesc>>(QUEUE_DEPTH);
            txs.push(tx);
            let mut csink = chan_sink(out_tx.clone());
            let recycle = recycle_tx.clone();
            let flow = opts.flow.clone();
            let h = thread::Builder::new()
                .name(format!("tapvault-shard-{s}"))
                .spawn_scoped(scope, move || {
                    let mut table = FlowTable::new(&flow, per_shard);
                    for mut batch in rx {
                        for d in &batch {
                            table.process(d, &mut csink);
                        }
                        batch.clear();
                        let _ = recycle.try_send(batch);
                    }
                    table.flush(&mut csink);
                    csink.flush();
                    table
                })
                .map_err(|_| Error::ThreadPanicked(format!("tapvault-shard-{s} (spawn)")))?;
            handles.push(h);
        }
        drop(out_tx);
        let mut dispatch = Dispatch::Threads {
            txs,
            recycle: recycle_rx,
            batches: (0..shards).map(|_| Vec::with_capacity(BATCH)).collect(),
        };
        let res = read_all(&mut cap, &mut dispatch, &mut health, spill.take(), progress);
        if let Dispatch::Threads { txs, batches, .. } = dispatch {
            for (tx, b) in txs.iter().zip(batches) {
                if !b.is_empty() {
                    let _ = tx.send(b);
                }
            }
            drop(txs);
        }
        let mut tables = Vec::with_capacity(shards);
        for (s, h) in handles.into_iter().enumerate() {
            tables.push(
                h.join()
                    .map_err(|_| Error::ThreadPanicked(format!("tapvault-shard-{s}")))?,
            );
        }
        writer
            .join()
            .map_err(|_| Error::ThreadPanicked("tapvault-out".into()))?;
        res?;
        for t in &tables {
            health.flows.merge(t.stats());
        }
        health.rtt_windows = rtt_windows(&tables.iter().collect::<Vec<_>>());
        Ok(health)
    })
}

/// Decodes frames into descriptors, reassembling IP fragments on the way: the per-frame
/// work shared by file analysis and live capture workers.
#[derive(Default)]
pub(crate) struct FrameDecoder {
    defrag: Defrag,
    /// Frames decoded to an IP packet.
    pub(crate) ip_packets: u64,
    /// Well-formed frames without IP.
    pub(crate) not_ip: u64,
    /// Malformed frames by reason.
    pub(crate) malformed: [u64; Malformed::ALL.len()],
    /// Frames of an unknown link type.
    pub(crate) unsupported_linktype: u64,
}

impl FrameDecoder {
    /// Decodes one frame. `None` when it yields nothing for the flow shards (not IP,
    /// malformed, or a fragment that does not complete a datagram); counted either way.
    #[inline]
    pub(crate) fn frame(
        &mut self,
        frame_no: u64,
        linktype: LinkType,
        ts_ns: i64,
        orig_len: u32,
        data: &[u8],
    ) -> Option<PacketDesc> {
        let fast = crate::flow::fast::descriptor(frame_no, ts_ns, orig_len, linktype, data);
        if fast.is_some() {
            self.ip_packets += 1;
            return fast;
        }
        match decode::decode(linktype, data) {
            Decoded::Ip(p) if matches!(p.transport, Transport::Fragment) => {
                self.ip_packets += 1;
                // Like Wireshark, analyse a fragmented datagram once, in the frame that
                // completes it.
                let dgram = self.defrag.push(ts_ns, &p)?;
                match decode::decode(LinkType::RAW, dgram) {
                    Decoded::Ip(mut whole) => {
                        // The first two tags seen: the fragment's (outer) ones, then those
                        // found inside the reassembled datagram.
                        let inner = whole.vlan;
                        whole.vlan = p.vlan;
                        for id in inner.into_iter().flatten() {
                            if let Some(slot) = whole.vlan.iter_mut().find(|v| v.is_none()) {
                                *slot = Some(id);
                            }
                        }
                        whole.encap |= p.encap;
                        Some(PacketDesc::from_packet(frame_no, ts_ns, orig_len, &whole))
                    }
                    Decoded::Malformed(m) => {
                        self.malformed[m.index()] += 1;
                        None
                    }
                    Decoded::NotIp(_) | Decoded::UnsupportedLinkType(_) => None,
                }
            }
            Decoded::Ip(p) => {
                self.ip_packets += 1;
                Some(PacketDesc::from_packet(frame_no, ts_ns, orig_len, &p))
            }
            Decoded::NotIp(_) => {
                self.not_ip += 1;
                None
            }
            Decoded::Malformed(m) => {
                self.malformed[m.index()] += 1;
                None
            }
            Decoded::UnsupportedLinkType(_) => {
                self.unsupported_linktype += 1;
                None
            }
        }
    }

    /// IP reassembly counters.
    pub(crate) fn defrag_stats(&self) -> DefragStats {
        self.defrag.stats()
    }
}

fn read_all(
    cap: &mut CaptureFile,
    dispatch: &mut Dispatch,
    health: &mut Health,
    mut spill: Option<&mut dyn PacketSpill>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), Error> {
    let mut frame_no = 0u64;
    let mut dec = FrameDecoder::default();
    while let Some(frame) = cap.next_frame()? {
        frame_no += 1;
        health.frames += 1;
        health.bytes += u64::from(frame.orig_len);
        // Handed over in its `Option`, not moved out of it: a move copies the 136-byte
        // descriptor.
        let mut desc = dec.frame(
            frame_no,
            frame.linktype,
            frame.ts_ns,
            frame.orig_len,
            frame.data,
        );
        let flow = desc.as_ref().map_or(0, |d| d.hash);
        dispatch.send(&mut desc);
        if let Some(s) = spill.as_deref_mut() {
            s.packet(
                frame.linktype,
                frame.ts_ns,
                frame.orig_len,
                frame.data,
                flow,
            );
        }
        if frame_no & 0xffff == 0 {
            let (done, total) = cap.progress();
            progress(done, total);
        }
    }
    health.ip_packets = dec.ip_packets;
    health.not_ip = dec.not_ip;
    health.malformed = dec.malformed;
    health.unsupported_linktype = dec.unsupported_linktype;
    health.defrag = dec.defrag_stats();
    health.truncated_tail = cap.truncated_tail();
    health.skipped_records = cap.skipped_records();
    let (done, total) = cap.progress();
    progress(done, total);
    Ok(())
}
