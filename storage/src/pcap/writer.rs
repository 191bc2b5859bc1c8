//! [`SegmentWriter`] and crash recovery.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    sync::Arc,
};

use zstd::zstd_safe::{self, CCtx, CParameter, InBuffer, OutBuffer, ResetDirective};

use super::{
    MAX_SEGMENT_SPAN_NS, MAX_SNAP_LEN, PcapError, Result,
    format::{
        FrameInfo, PCAP_HEADER_LEN, PCAP_NS_MAGIC, RECORD_HEADER_LEN, SKIPPABLE_MAGIC,
        SegmentIndex, parse_record, pcap_header, push_record_header, seek_table, ts_in_range,
    },
    io_thread::{Io, Target},
    layout::{
        hour_of, index_path, parse_segment_name, partition_dir, pcap_dir, segment_name,
        valid_writer_id,
    },
};

/// The largest uncompressed frame (the seek table stores sizes as u32).
const MAX_FRAME_BYTES: usize = 1 << 30;

/// Settings of a [`SegmentWriter`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SegmentOptions {
    /// pcap link type of the packets (LINKTYPE_*). Default 1 (Ethernet).
    pub link_type: u32,
    /// Bytes of each packet kept; the rest is cut and the record's caplen says so (its
    /// original length is kept). 1 to [`MAX_SNAP_LEN`], the default.
    pub snap_len: u32,
    /// Uncompressed pcap bytes after which a zstd frame ends. A frame that stays in one
    /// block of the layout can end earlier, at the block's end; one that crosses block
    /// boundaries ends at one, holding about this much (see the [module docs](crate::pcap)).
    /// Default 1 MiB.
    pub frame_max_bytes: usize,
    /// A frame ends before a packet that would make it span this much time or more.
    /// Default 1 s.
    pub frame_max_span_ns: i64,
    /// A segment ends before a packet this long after its first one. Default 60 s, at most
    /// [`MAX_SEGMENT_SPAN_NS`].
    pub segment_max_span_ns: i64,
    /// Compressed bytes after which a segment ends (checked at frame ends, so a segment can
    /// exceed it by one frame). Default 256 MiB.
    pub segment_max_bytes: u64,
    /// zstd level: 1 to 22, or a fast level (negative; `zstd --fast=N` is -N). Default 1.
    pub zstd_level: i32,
    /// Stop compressing traffic that does not compress: after a frame that `zstd_level`
    /// shrank by less than [`ADAPTIVE_MIN_SAVING`] (encrypted payloads, say), the next
    /// frames are stored as raw zstd blocks (a copy; any zstd reader reads them), and every
    /// [`ADAPTIVE_PROBE_EVERY`]th frame tries `zstd_level` again. Default true.
    pub zstd_adaptive: bool,
}

/// [`SegmentOptions::zstd_adaptive`]: a frame that `zstd_level` shrinks by less than this
/// share of its bytes counts as incompressible.
pub const ADAPTIVE_MIN_SAVING: f64 = 0.08;
/// [`SegmentOptions::zstd_adaptive`]: while passing through, every this many frames one is
/// compressed at `zstd_level` again, to notice traffic that became compressible.
pub const ADAPTIVE_PROBE_EVERY: u32 = 16;
/// Frames shorter than this (uncompressed) do not change the adaptive level: too few bytes
/// to judge by.
const ADAPTIVE_MIN_FRAME: usize = 16 << 10;

impl Default for SegmentOptions {
    fn default() -> Self {
        SegmentOptions {
            link_type: 1,
            snap_len: MAX_SNAP_LEN,
            frame_max_bytes: 1 << 20,
            frame_max_span_ns: 1_000_000_000,
            segment_max_span_ns: 60_000_000_000,
            segment_max_bytes: 256 << 20,
            zstd_level: 1,
            zstd_adaptive: true,
        }
    }
}

impl SegmentOptions {
    /// Sets [`SegmentOptions::link_type`].
    pub fn link_type(mut self, link_type: u32) -> Self {
        self.link_type = link_type;
        self
    }
    /// Sets [`SegmentOptions::snap_len`] (checked by [`SegmentWriter::new`]).
    pub fn snap_len(mut self, snap_len: u32) -> Self {
        self.snap_len = snap_len;
        self
    }
    /// Sets [`SegmentOptions::frame_max_bytes`] (checked by [`SegmentWriter::new`]).
    pub fn frame_max_bytes(mut self, bytes: usize) -> Self {
        self.frame_max_bytes = bytes;
        self
    }
    /// Sets [`SegmentOptions::frame_max_span_ns`] (checked by [`SegmentWriter::new`]).
    pub fn frame_max_span_ns(mut self, ns: i64) -> Self {
        self.frame_max_span_ns = ns;
        self
    }
    /// Sets [`SegmentOptions::segment_max_span_ns`] (checked by [`SegmentWriter::new`]).
    pub fn segment_max_span_ns(mut self, ns: i64) -> Self {
        self.segment_max_span_ns = ns;
        self
    }
    /// Sets [`SegmentOptions::segment_max_bytes`] (at least 1).
    pub fn segment_max_bytes(mut self, bytes: u64) -> Self {
        self.segment_max_bytes = bytes.max(1);
        self
    }
    /// Sets [`SegmentOptions::zstd_level`] (checked by [`SegmentWriter::new`]).
    pub fn zstd_level(mut self, level: i32) -> Self {
        self.zstd_level = level;
        self
    }
    /// Sets [`SegmentOptions::zstd_adaptive`].
    pub fn zstd_adaptive(mut self, adaptive: bool) -> Self {
        self.zstd_adaptive = adaptive;
        self
    }

    fn check(&self) -> Result<()> {
        let bad = PcapError::InvalidOption;
        if !(1..=MAX_SNAP_LEN).contains(&self.snap_len) {
            return Err(bad("snap_len must be 1 to 262144"));
        }
        if !(1..=MAX_FRAME_BYTES).contains(&self.frame_max_bytes) {
            return Err(bad("frame_max_bytes must be 1 to 1 GiB"));
        }
        if self.frame_max_span_ns < 1 {
            return Err(bad("frame_max_span_ns must be positive"));
        }
        if !(1..=MAX_SEGMENT_SPAN_NS).contains(&self.segment_max_span_ns) {
            return Err(bad("segment_max_span_ns must be 1 ns to 1 h"));
        }
        if !zstd::compression_level_range().contains(&self.zstd_level) {
            return Err(bad("zstd_level out of range"));
        }
        Ok(())
    }
}

/// Paths of a published segment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishedSegment {
    /// The `.pcap.zst` file.
    pub segment: PathBuf,
    /// Its `.idx` file.
    pub index: PathBuf,
    /// Packets in it.
    pub packets: u64,
}

/// Writes packets into pcap.zst segments with seek tables and indexes (see the
/// [module docs](crate::pcap)).
///
/// Each writer needs an id unique among the processes sharing the store root. Call
/// [`flush`](Self::flush) to publish the open segment (a crash loses what was written since
/// the last publication) and [`close`](Self::close) at the end. Dropping a writer without
/// closing it publishes nothing: its segment stays as a temporary file until [`recover`]
/// removes it. After an error (a full disk, say) the writer's state is undefined: drop it
/// and start a new one (a segment being written is lost; published ones are not affected).
pub struct SegmentWriter {
    root: PathBuf,
    writer_id: String,
    options: SegmentOptions,
    /// Streaming compressor of the open frame: every byte is compressed once, in blocks
    /// flushed as the frame nears the end of its block (see [`frame_bound`]).
    compressor: CCtx<'static>,
    segment: Option<OpenSegment>,
    next_seq: u64,
    /// Uncompressed pcap bytes of the open frame not yet given to the compressor.
    pending: Vec<u8>,
    /// Compressed bytes of the open frame produced so far (empty until its first flush).
    out: Vec<u8>,
    /// Uncompressed bytes of the open frame: compressed ones and `pending`.
    frame_len: usize,
    frame_min: i64,
    frame_max: i64,
    /// The packets of the open frame; when empty, no frame is open and `out` is empty.
    recs: Vec<Rec>,
    /// How many of `recs` are compressed into `out` (the rest are in `pending`).
    done_recs: usize,
    /// Uncompressed bytes compressed into `out`.
    done_len: usize,
    /// Bytes written to segment files since the writer was made.
    bytes_written: u64,
    /// Block boundaries the open frame may cross (0: it stays in its block). A frame that
    /// crosses one ends exactly on a later one (see [`TSHARK_BLOCK`]).
    extra_blocks: usize,
    /// Compressed over uncompressed size of the open frame's last flush: the estimate for
    /// the next one (compressibility changes along the traffic, so the frame's average is
    /// a worse guess).
    last_flush_ratio: f64,
    /// The thread that writes and syncs the segment files (see [`Io`]).
    io: Io,
    /// Frames stored raw since the last one compressed at `zstd_level`; `None` while frames
    /// are compressed (see [`SegmentOptions::zstd_adaptive`]).
    passing_through: Option<u32>,
    /// Frames stored raw since the writer was made.
    pass_through_frames: u64,
}

struct OpenSegment {
    dir: PathBuf,
    tmp: PathBuf,
    file: Target,
    journal_path: PathBuf,
    journal: Target,
    hour: i64,
    first_ts: i64,
    min_ts: i64,
    max_ts: i64,
    packets: u64,
    offset: u64,
    /// Seek table entries: data frames and padding.
    entries: Vec<(u32, u32)>,
    frames: Vec<FrameInfo>,
}

/// A packet of the open frame.
#[derive(Clone, Copy)]
struct Rec {
    ts: i64,
    flow: u64,
}

/// Wireshark 4.0's read buffer for zstd files (`ZSTD_DStreamInSize()`, 128 KiB + 3, on file
/// systems whose block size is smaller). When a zstd frame ends, Wireshark 4.0 looks for the
/// next frame's magic number at the start of its buffer rather than at the read position
/// (fixed in later versions), and reads everything after as uncompressed data if it is not
/// there. So that `tshark -r` reads a segment as it is, the writer lays frames out in blocks of
/// this size: every block starts with a zstd frame or lies inside a frame that ends exactly
/// on a later boundary. A frame that stays in its block ends on its boundary or at least
/// [`MIN_PAD`] bytes before it, the rest of the block being padding (a skippable frame,
/// listed in the seek table with a decompressed size of 0, so blocks cost at most
/// [`MIN_TAIL`] bytes each). A frame that crosses a boundary ends exactly on one, filled up
/// with empty zstd blocks ([`inner_padding`]); see [`SegmentWriter::make_room`] for when a
/// frame does.
pub(crate) const TSHARK_BLOCK: usize = 131_075;
/// The smallest padding: a skippable frame header.
const MIN_PAD: usize = 8;
/// Space at the end of a block too small to start another frame in: padded at once.
const MIN_TAIL: usize = 2048;
/// An empty zstd frame (single segment, content size 0, one empty raw block).
const EMPTY_FRAME: [u8; 9] = [0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x00, 0x01, 0x00, 0x00];
/// The largest zstd frame header (`ZSTD_FRAMEHEADERSIZE_MAX`).
const FRAME_HEADER_MAX: usize = 18;
/// A zstd block header (`ZSTD_blockHeaderSize`).
const BLOCK_HEADER: usize = 3;
/// The largest zstd block (`ZSTD_BLOCKSIZE_MAX`).
const BLOCK_MAX: usize = 128 << 10;
/// A frame ends once less than this is left in its block after a flush (smaller blocks
/// would cost more than the padding they save).
const END_TAIL: usize = 512;
/// [`END_TAIL`] for a frame that crosses block boundaries: larger, since such a frame holds
/// several blocks' worth of data.
const END_TAIL_CROSSING: usize = 2048;
/// A frame that crosses a block boundary ends with empty zstd blocks that fill it up to
/// the next boundary (see [`inner_padding`]): at least a 3-byte last block.
const INNER_PAD_MIN: usize = 3;
/// A frame that crosses block boundaries admits records while they are expected to compress
/// no worse than this many times the ratio of its last flush...
const SPECULATIVE_MARGIN: f64 = 1.25;
/// ...plus this for the flush's block headers and entropy tables...
const SPECULATIVE_FLUSH_COST: usize = 512;
/// ...while at least this much of its space is left (small flushes compress worse).
const SPECULATIVE_MIN_ROOM: usize = 4 << 10;
/// A frame takes a block beyond its first only once it holds this many packets.
const MIN_EXTEND_PACKETS: usize = 16;
/// A frame longer than this many times [`SegmentOptions::frame_max_bytes`] admits records
/// only on the worst case, so it ends when its space is full: the bound on frames whose
/// data compresses much worse, late in the frame, than it did early.
const FRAME_HARD_FACTOR: usize = 2;

/// The most bytes a frame can take if it ends after its `pending` uncompressed bytes are
/// compressed, when `produced` compressed bytes of it are already out.
///
/// zstd stores a block that does not shrink raw, so a block never takes more than its input
/// plus its 3-byte header (`ZSTD_compressBound` adds more only for a frame's header); a
/// flush cuts the input into blocks of at most [`BLOCK_MAX`], and ending the frame after a
/// flush adds an empty last block. The frame header comes with the first output.
fn frame_bound(produced: usize, pending: usize) -> usize {
    let header = if produced == 0 { FRAME_HEADER_MAX } else { 0 };
    produced + header + pending + BLOCK_HEADER * (pending / BLOCK_MAX + 2)
}

/// Appends `input` to the frame in `out` as raw zstd blocks (stored, not compressed), after a
/// frame header when the frame has no output yet; with `end`, the last block ends the frame.
/// `zstd -d`, tshark and [`SegmentReader`](crate::SegmentReader) read such a frame as any
/// other, and it takes no more than [`frame_bound`] allows.
fn store_raw(input: &[u8], out: &mut Vec<u8>, end: bool) {
    if out.is_empty() {
        // Magic; a frame header descriptor of 0 (no content size, not single-segment, no
        // checksum, no dictionary); a window descriptor of 128 KiB (exponent 7, mantissa
        // 0), which bounds a block to BLOCK_MAX.
        out.extend_from_slice(&[0x28, 0xb5, 0x2f, 0xfd, 0x00, 7 << 3]);
    }
    if input.is_empty() {
        if end {
            // An empty raw block, flagged last.
            out.extend_from_slice(&[0x01, 0x00, 0x00]);
        }
        return;
    }
    let mut chunks = input.chunks(BLOCK_MAX).peekable();
    while let Some(chunk) = chunks.next() {
        let last = end && chunks.peek().is_none();
        // Block header: bit 0 last, bits 1-2 type (0: raw), bits 3-23 the size.
        let header = ((chunk.len() as u32) << 3) | u32::from(last);
        out.extend_from_slice(&header.to_le_bytes()[..BLOCK_HEADER]);
        out.extend_from_slice(chunk);
    }
}

/// Appends `len` (at least [`INNER_PAD_MIN`]) bytes of empty zstd blocks that end the frame
/// being written: empty raw (3 bytes), RLE (4) and compressed (5: no literals, no
/// sequences) blocks, the last one flagged as such. They decompress to nothing.
fn inner_padding(out: &mut Vec<u8>, len: usize) {
    // Block header: bit 0 last, bits 1-2 type (0 raw, 1 RLE, 2 compressed), then the size.
    const RAW: [u8; 3] = [0x00, 0x00, 0x00];
    const RLE: [u8; 4] = [0x02, 0x00, 0x00, 0x00];
    const COMPRESSED: [u8; 5] = [0x14, 0x00, 0x00, 0x00, 0x00];
    debug_assert!(len >= INNER_PAD_MIN);
    let (mut body, last): (usize, &[u8]) = match len {
        4 => (0, &[0x03, 0x00, 0x00, 0x00]),
        5 => (0, &[0x15, 0x00, 0x00, 0x00, 0x00]),
        // 3, or at least 6: a body of 0 or at least 3 bytes.
        _ => (len.saturating_sub(3), &[0x01, 0x00, 0x00]),
    };
    while body > 5 {
        out.extend_from_slice(&RAW);
        body -= RAW.len();
    }
    match body {
        3 => out.extend_from_slice(&RAW),
        4 => out.extend_from_slice(&RLE),
        5 => out.extend_from_slice(&COMPRESSED),
        _ => {}
    }
    out.extend_from_slice(last);
}

/// The space of a frame that may cross `extra_blocks` block boundaries when `rem` bytes are
/// left in its block: how far it may reach, and how much of that its data may take (the
/// rest is for the padding that ends it).
fn frame_space(extra_blocks: usize, rem: usize) -> (usize, usize) {
    match extra_blocks {
        0 => (rem, rem.saturating_sub(MIN_PAD)),
        n => {
            let limit = rem + n * TSHARK_BLOCK;
            (limit, limit - INNER_PAD_MIN)
        }
    }
}

/// Bytes from `offset` to the next block boundary (a full block at a boundary).
fn block_remaining(offset: u64) -> usize {
    TSHARK_BLOCK - (offset % TSHARK_BLOCK as u64) as usize
}

/// Fills the `len` (at least [`MIN_PAD`]) bytes left in the block with a skippable frame.
fn pad(io: &Io, seg: &mut OpenSegment, len: usize) -> Result<()> {
    let mut frame = io.buffer();
    frame.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
    frame.extend_from_slice(&((len - MIN_PAD) as u32).to_le_bytes());
    frame.resize(len, 0);
    io.write(&seg.file, frame)?;
    seg.entries.push((len as u32, 0));
    seg.offset += len as u64;
    Ok(())
}

/// Compresses all of `input` into `out` (appended) with `directive` (`ZSTD_e_flush` or
/// `ZSTD_e_end`), so that everything given to `cctx` so far is in `out`.
fn compress(
    cctx: &mut CCtx<'static>,
    input: &[u8],
    out: &mut Vec<u8>,
    directive: zstd_safe::zstd_sys::ZSTD_EndDirective,
) -> Result<(), zstd_safe::ErrorCode> {
    let mut input = InBuffer::around(input);
    out.reserve(zstd_safe::compress_bound(input.src.len()) + FRAME_HEADER_MAX + BLOCK_HEADER);
    loop {
        let pos = out.len();
        let left =
            cctx.compress_stream2(&mut OutBuffer::around_pos(out, pos), &mut input, directive)?;
        if left == 0 && input.pos() == input.src.len() {
            return Ok(());
        }
        out.reserve(left.max(BLOCK_HEADER));
    }
}

/// Turns a zstd error code into a [`PcapError::Io`].
fn zstd_error(
    op: &'static str,
    path: &Path,
) -> impl FnOnce(zstd_safe::ErrorCode) -> PcapError + use<> {
    let io = PcapError::io(op, path.to_path_buf());
    move |code| io(io::Error::other(zstd_safe::get_error_name(code)))
}

impl SegmentWriter {
    /// A writer under `root` (the store root; segments go to `root/pcap/...`).
    pub fn new(root: impl Into<PathBuf>, writer_id: &str, options: SegmentOptions) -> Result<Self> {
        if !valid_writer_id(writer_id) {
            return Err(PcapError::InvalidWriterId {
                id: writer_id.to_owned(),
            });
        }
        options.check()?;
        let root = root.into();
        let mut compressor = CCtx::try_create().ok_or_else(|| {
            PcapError::io("create a zstd compressor for", &root)(io::Error::other(
                "zstd could not allocate a context",
            ))
        })?;
        compressor
            .set_parameter(CParameter::CompressionLevel(options.zstd_level))
            .map_err(|_| PcapError::InvalidOption("zstd_level out of range"))?;
        // Without a source size, zstd picks a level's parameters from the input of the first
        // flush, often a block of ~128 KiB here: a window of 256 KiB for level 1. A frame
        // longer than its window wraps zstd's input buffer, and the match finder then runs
        // its slower "external dictionary" variant for the rest of the frame (measured: more
        // than half of the spill's compression time on the bulk capture). So the window
        // holds a whole frame: up to twice `frame_max_bytes` and a block (see `make_room`).
        let frame_max = options.frame_max_bytes * FRAME_HARD_FACTOR + 2 * TSHARK_BLOCK;
        let window_log = frame_max.next_power_of_two().trailing_zeros().clamp(18, 23);
        compressor
            .set_parameter(CParameter::WindowLog(window_log))
            .map_err(zstd_error("set the compressor's parameters for", &root))?;
        // zstd's own parameters for the level are kept: pinning level 1 to its
        // small-input row (hash log 13, 6-byte matches) cost 11 % of the compression ratio
        // on the bulk capture (2.82 to 2.50) for no measurable speed (session 9).

        let io = Io::start(format!("pcap-io-{writer_id}"), TSHARK_BLOCK + 4096)
            .map_err(PcapError::io("start the I/O thread for", &root))?;
        Ok(SegmentWriter {
            io,
            root,
            writer_id: writer_id.to_owned(),
            options,
            compressor,
            segment: None,
            next_seq: 0,
            // A frame never holds more than a block of pending bytes (see `make_room`).
            pending: Vec::with_capacity(TSHARK_BLOCK + 4096),
            out: Vec::with_capacity(TSHARK_BLOCK + 4096),
            frame_len: 0,
            frame_min: i64::MAX,
            frame_max: i64::MIN,
            recs: Vec::new(),
            done_recs: 0,
            done_len: 0,
            bytes_written: 0,
            extra_blocks: 0,
            last_flush_ratio: 1.0,
            passing_through: None,
            pass_through_frames: 0,
        })
    }

    /// Appends one packet: its time (ns since the epoch), original length on the wire, the
    /// captured bytes (cut to the snap length) and its flow id. An original length smaller
    /// than the captured bytes is raised to their length.
    ///
    /// Returns the segment this packet's arrival closed, if it rolled one.
    pub fn write(
        &mut self,
        ts_ns: i64,
        orig_len: u32,
        data: &[u8],
        flow_id: u64,
    ) -> Result<Option<PublishedSegment>> {
        if !ts_in_range(ts_ns) {
            return Err(PcapError::TimestampOutOfRange { ts_ns });
        }
        let caplen = data.len().min(self.options.snap_len as usize);
        let origlen = orig_len.max(u32::try_from(data.len()).unwrap_or(u32::MAX));
        let mut published = None;
        if let Some(seg) = &self.segment {
            let roll = ts_ns
                >= seg
                    .first_ts
                    .saturating_add(self.options.segment_max_span_ns)
                || hour_of(ts_ns) < seg.hour
                || seg.offset >= self.options.segment_max_bytes;
            if roll {
                published = self.finish_segment()?;
            }
        }
        if self.segment.is_none() {
            self.open_segment(ts_ns)?;
        }
        let record_len = RECORD_HEADER_LEN + caplen;
        if !self.recs.is_empty() {
            let span = ts_ns.max(self.frame_max) - ts_ns.min(self.frame_min);
            // A frame that crosses block boundaries ends at one, when full (`make_room`).
            if (self.extra_blocks == 0
                && self.frame_len + record_len > self.options.frame_max_bytes)
                || span >= self.options.frame_max_span_ns
            {
                self.end_frame()?;
            }
        }
        self.make_room(record_len)?;
        push_record_header(&mut self.pending, ts_ns, caplen as u32, origlen);
        self.pending.extend_from_slice(&data[..caplen]);
        self.frame_len += record_len;
        self.frame_min = self.frame_min.min(ts_ns);
        self.frame_max = self.frame_max.max(ts_ns);
        self.recs.push(Rec {
            ts: ts_ns,
            flow: flow_id,
        });
        let seg = self.segment.as_mut().expect("opened above");
        seg.min_ts = seg.min_ts.min(ts_ns);
        seg.max_ts = seg.max_ts.max(ts_ns);
        seg.packets += 1;
        Ok(published)
    }

    /// Publishes the open segment, if any.
    pub fn flush(&mut self) -> Result<Option<PublishedSegment>> {
        self.finish_segment()
    }

    /// Flushes and ends the writer.
    pub fn close(mut self) -> Result<Option<PublishedSegment>> {
        self.flush()
    }

    /// Compresses the packets written since the last frame ended into complete frames and
    /// writes them (and their journal entries) to the open segment, so that a crash from now
    /// on cannot lose them once [`sync`](Self::sync) returns, and a kill of the process
    /// cannot lose them at all (they are in the kernel's page cache). Does nothing when no
    /// packet is pending.
    pub fn seal_frame(&mut self) -> Result<()> {
        if self.recs.is_empty() {
            return Ok(());
        }
        self.end_frame()?;
        // Frames are written by the I/O thread: wait until they are in the page cache.
        self.io.barrier()
    }

    /// Makes what was written to the open segment durable, one call behind: starts an
    /// `fdatasync` of the segment, then of its journal (so a journal entry that survives a
    /// power loss points at a frame that survived too), on the I/O thread, after waiting
    /// for the one the previous call started. So when this returns, the frames sealed
    /// before the previous call are durable, and the compressing thread never waits for the
    /// disk while it has a flush interval's worth of time to spare. Call
    /// [`seal_frame`](Self::seal_frame) first to include pending packets.
    pub fn sync(&mut self) -> Result<()> {
        let Some(seg) = &self.segment else {
            return self.io.barrier();
        };
        let targets = vec![seg.file.clone(), seg.journal.clone()];
        self.io.sync(targets)
    }

    /// Packets written but not yet in a complete frame (lost if the process dies now).
    pub fn pending_packets(&self) -> usize {
        self.recs.len()
    }

    /// Time of the first packet of the open segment, if one is open.
    pub fn segment_first_ts(&self) -> Option<i64> {
        self.segment.as_ref().map(|s| s.first_ts)
    }

    /// Packets in the open segment, pending ones included.
    pub fn segment_packets(&self) -> u64 {
        self.segment.as_ref().map_or(0, |s| s.packets)
    }

    /// Bytes written to segment files by this writer (frames, padding and seek tables).
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written + self.segment.as_ref().map_or(0, |s| s.offset)
    }

    /// Frames stored as raw zstd blocks (see [`SegmentOptions::zstd_adaptive`]).
    pub fn pass_through_frames(&self) -> u64 {
        self.pass_through_frames
    }

    /// Gives up the open segment after an error (a full disk, say): pending packets are
    /// discarded, the files are closed and left as they are, and the writer is ready for a
    /// new segment. Returns the temporary segment's path and the packets written to it
    /// (pending ones included), for [`recover_segment`] to publish its complete frames.
    pub fn abandon_segment(&mut self) -> Option<(PathBuf, u64)> {
        // Nothing is written to the files after this (recovery reads them).
        self.io.reset();
        self.clear_frame();
        // Drops a frame the compressor may be in the middle of; cannot fail.
        let _ = self.compressor.reset(ResetDirective::SessionOnly);
        self.segment.take().map(|s| (s.tmp, s.packets))
    }

    /// Forgets the open frame (after it was written, or given up).
    fn clear_frame(&mut self) {
        self.extra_blocks = 0;
        self.pending.clear();
        self.out.clear();
        self.recs.clear();
        self.done_recs = 0;
        self.done_len = 0;
        self.frame_len = 0;
        self.frame_min = i64::MAX;
        self.frame_max = i64::MIN;
    }

    fn open_segment(&mut self, ts_ns: i64) -> Result<()> {
        let hour = hour_of(ts_ns);
        let dir = partition_dir(&self.root, hour);
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(PcapError::io("create directory", &dir))?;
            // Make the new directory entries durable: the hour, date and pcap directories.
            let mut d = dir.as_path();
            for _ in 0..3 {
                let Some(parent) = d.parent() else { break };
                sync_dir(parent)?;
                d = parent;
            }
        }
        let tmp = dir.join(format!(
            ".{}-{}.pcap.zst.tmp",
            self.writer_id, self.next_seq
        ));
        let journal_path = dir.join(format!(
            ".{}-{}{JOURNAL_SUFFIX}",
            self.writer_id, self.next_seq
        ));
        self.next_seq += 1;
        let file = File::create(&tmp).map_err(PcapError::io("create", &tmp))?;
        let mut journal =
            File::create(&journal_path).map_err(PcapError::io("create", &journal_path))?;
        journal
            .write_all(&journal_header(
                self.options.link_type,
                self.options.snap_len,
            ))
            .map_err(PcapError::io("write", &journal_path))?;
        let file = Target {
            file: Arc::new(file),
            path: tmp.as_path().into(),
        };
        let journal = Target {
            file: Arc::new(journal),
            path: journal_path.as_path().into(),
        };
        self.clear_frame();
        self.compressor
            .reset(ResetDirective::SessionOnly)
            .map_err(zstd_error("reset the compressor for", &tmp))?;
        self.pending
            .extend_from_slice(&pcap_header(self.options.link_type, self.options.snap_len));
        self.frame_len = self.pending.len();
        self.segment = Some(OpenSegment {
            dir,
            tmp,
            file,
            journal_path,
            journal,
            hour,
            first_ts: ts_ns,
            min_ts: i64::MAX,
            max_ts: i64::MIN,
            packets: 0,
            offset: 0,
            entries: Vec::new(),
            frames: Vec::new(),
        });
        Ok(())
    }

    /// Makes sure a record of `record_len` bytes can join the open frame without the frame
    /// breaking the block layout (see [`TSHARK_BLOCK`]) whatever its bytes compress to,
    /// compressing every byte once.
    ///
    /// The record joins when the frame fits in its space even if nothing pending compresses
    /// ([`frame_bound`]). The space is the rest of the frame's block, extended by whole
    /// blocks while the frame is expected to hold less than
    /// [`SegmentOptions::frame_max_bytes`] ([`may_extend`](Self::may_extend)): so on busy
    /// links frames are as large as configured, not cut to what fits in one block. Such a
    /// frame also admits records on the ratio it has compressed at so far (with a margin),
    /// since a flush that overshoots only moves its end one block further. Otherwise the
    /// pending bytes are given to the compressor in a flush (the frame's compressed size is
    /// then known) and the record is checked again; the frame ends when the record still
    /// does not fit or less than [`END_TAIL`] bytes are left in its space, and the block is
    /// padded when a new frame cannot start in it. As the space fills, flushes come sooner:
    /// a frame is a few large zstd blocks then smaller ones. Every flush ends a zstd block,
    /// and small blocks compress slower and worse, so the fewer the better.
    fn make_room(&mut self, record_len: usize) -> Result<()> {
        loop {
            let Some(seg) = self.segment.as_mut() else {
                return Ok(());
            };
            let rem = block_remaining(seg.offset);
            let (limit, room) = frame_space(self.extra_blocks, rem);
            let pending = self.pending.len() + record_len;
            if frame_bound(self.out.len(), pending) <= room {
                return Ok(());
            }
            if self.extra_blocks > 0
                && self.done_len > 0
                && room >= self.out.len() + SPECULATIVE_MIN_ROOM
                && self.frame_len < self.options.frame_max_bytes * FRAME_HARD_FACTOR
            {
                // A frame that crosses boundaries can always take one more block: while some
                // of its space is left, admit the record on the ratio of the frame's last
                // flush, with a margin, and let a flush that does not fit after all move the
                // frame's end a block further.
                let ratio = self.last_flush_ratio * SPECULATIVE_MARGIN;
                let estimate = self.out.len()
                    + (pending as f64 * ratio.min(1.0)) as usize
                    + BLOCK_HEADER * (pending / BLOCK_MAX + 2)
                    + SPECULATIVE_FLUSH_COST;
                if estimate <= room {
                    return Ok(());
                }
            }
            if self.recs.is_empty() {
                // No frame is open (at most the pcap header is pending).
                if rem == TSHARK_BLOCK {
                    return Err(PcapError::corrupt(
                        &seg.tmp,
                        "a single packet does not fit in a block (snap length too large)",
                    ));
                }
                pad(&self.io, seg, rem)?;
                continue;
            }
            let mut flushed = false;
            if self.done_len == 0 && self.done_recs < self.recs.len() {
                // The first flush tells how well this frame compresses.
                self.compress_pending(false)?;
                flushed = true;
            }
            if self.may_extend(limit) {
                self.extra_blocks += 1;
                continue;
            }
            if self.done_recs < self.recs.len() {
                self.compress_pending(false)?;
                flushed = true;
            }
            if flushed {
                // A flush that did not fit moved the frame's end (`compress_pending`).
                let (limit, _) = frame_space(self.extra_blocks, rem);
                let tail = limit.saturating_sub(self.out.len() + BLOCK_HEADER);
                let end_tail = match self.extra_blocks {
                    0 => END_TAIL,
                    _ => END_TAIL_CROSSING,
                };
                if tail >= end_tail {
                    continue;
                }
            }
            self.end_frame()?;
        }
    }

    /// Whether the open frame, whose space reaches `limit` bytes, should take one more
    /// block: when it is expected to hold less than `frame_max_bytes` in its space, by the
    /// ratio it has compressed at so far (known after its first flush), and, at
    /// the rate its packets came so far, to fill that block in half the time it has left
    /// (a frame that ends on time, or at a flush interval, pads up to the next boundary:
    /// on a slow link frames keep to their block).
    fn may_extend(&self, limit: usize) -> bool {
        // Too few packets to tell a rate by (a frame that starts with little of its block
        // left ends there, and the next one starts with a whole block).
        if self.recs.len() < MIN_EXTEND_PACKETS {
            return false;
        }
        if self.done_len == 0 {
            return false;
        }
        let ratio = (self.out.len() as f64 / self.done_len as f64).clamp(0.01, 1.0);
        if limit as f64 >= self.options.frame_max_bytes as f64 * ratio {
            return false;
        }
        let have = self.out.len() as f64 + self.pending.len() as f64 * ratio;
        let span = self.frame_max.saturating_sub(self.frame_min);
        let left = self.options.frame_max_span_ns.saturating_sub(span).max(0) as f64;
        let need = (limit + TSHARK_BLOCK) as f64 - have;
        need * span as f64 <= have * left * 0.5
    }

    /// Gives the pending bytes to the compressor, flushing them (`end` false) or ending the
    /// frame, and checks that the frame still fits in its space. A frame that crosses a
    /// block boundary is not ended by zstd but by [`inner_padding`], up to the boundary.
    fn compress_pending(&mut self, end: bool) -> Result<()> {
        let seg = self.segment.as_mut().expect("a frame is open");
        let directive = if end {
            zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_end
        } else {
            zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_flush
        };
        let before = self.out.len();
        if self.passing_through.is_some() {
            store_raw(&self.pending, &mut self.out, end);
        } else {
            compress(
                &mut self.compressor,
                &self.pending,
                &mut self.out,
                directive,
            )
            .map_err(zstd_error("compress a frame of", &seg.tmp))?;
        }
        let c = self.out.len();
        if !self.pending.is_empty() {
            self.last_flush_ratio = ((c - before) as f64 / self.pending.len() as f64).min(1.0);
        }
        let rem = block_remaining(seg.offset);
        if self.extra_blocks > 0 {
            // Admitted on an estimate (see `make_room`): end a block further if need be.
            while c + INNER_PAD_MIN > rem + self.extra_blocks * TSHARK_BLOCK {
                self.extra_blocks += 1;
            }
        }
        let fits = if self.extra_blocks > 0 {
            true
        } else if end {
            c == rem || c + MIN_PAD <= rem
        } else {
            c + BLOCK_HEADER + MIN_PAD <= rem
        };
        if !fits {
            // `make_room` keeps `frame_bound` within the block: this is a bug, but writing
            // the frame would make the segment unreadable for tshark 4.0.
            return Err(PcapError::corrupt(
                &seg.tmp,
                format!("a frame of {c} bytes does not fit in the {rem} bytes left in its block"),
            ));
        }
        self.done_len += self.pending.len();
        self.done_recs = self.recs.len();
        self.pending.clear();
        Ok(())
    }

    /// Ends the open frame, if any: compresses what is pending and writes the frame.
    fn end_frame(&mut self) -> Result<()> {
        if self.recs.is_empty() {
            return Ok(());
        }
        if self.extra_blocks == 0 {
            self.compress_pending(true)?;
            self.adapt(self.out.len(), self.done_len);
            return self.write_frame(self.recs.len(), self.done_len);
        }
        self.compress_pending(false)?;
        let produced = self.out.len();
        let seg = self.segment.as_ref().expect("a frame is open");
        let rem = block_remaining(seg.offset);
        let c = self.out.len() + INNER_PAD_MIN;
        // The frame's end: in its block when it did not cross the boundary after all (with
        // room for padding after it, as always), else the next boundary.
        let end = if c + MIN_PAD <= rem {
            c
        } else {
            rem + (c.saturating_sub(rem)).div_ceil(TSHARK_BLOCK) * TSHARK_BLOCK
        };
        let pad = end - self.out.len();
        inner_padding(&mut self.out, pad);
        // zstd did not end the frame: start the next one afresh.
        self.compressor
            .reset(ResetDirective::SessionOnly)
            .map_err(zstd_error("reset the compressor for", &seg.tmp))?;
        self.adapt(produced, self.done_len);
        self.write_frame(self.recs.len(), self.done_len)
    }

    /// Decides whether the next frame is compressed or stored raw, after one that took
    /// `compressed` bytes for `len` (padding left out); the compressor is between frames (see
    /// [`SegmentOptions::zstd_adaptive`]).
    fn adapt(&mut self, compressed: usize, len: usize) {
        if !self.options.zstd_adaptive {
            return;
        }
        let next = match self.passing_through {
            Some(n) => {
                self.pass_through_frames += 1;
                if n + 1 >= ADAPTIVE_PROBE_EVERY {
                    None
                } else {
                    Some(n + 1)
                }
            }
            None if len >= ADAPTIVE_MIN_FRAME
                && compressed as f64 > len as f64 * (1.0 - ADAPTIVE_MIN_SAVING) =>
            {
                Some(0)
            }
            None => None,
        };
        self.passing_through = next;
    }

    /// Journals and writes the frame in `out`, holding the first `packets` of `recs` in
    /// `len` uncompressed bytes (then pads the block if too little of it is left for another
    /// frame), and removes them from the open frame.
    fn write_frame(&mut self, packets: usize, len: usize) -> Result<()> {
        let seg = self.segment.as_mut().expect("a frame is open");
        let c = self.out.len();
        let recs = &self.recs[..packets];
        // Journal it, then place it (a kill between the two leaves a journal entry whose
        // frame is missing or short, which recovery detects; never a frame without its
        // entry, whose flow ids would be unknown).
        let mut flows: Vec<u64> = recs.iter().map(|r| r.flow).collect();
        flows.sort_unstable();
        flows.dedup();
        let packet_flows = recs
            .iter()
            .map(|r| flows.binary_search(&r.flow).expect("id is in the set") as u32)
            .collect();
        let info = FrameInfo {
            offset: seg.offset,
            compressed_size: c as u32,
            decompressed_size: len as u32,
            min_ts: recs.iter().map(|r| r.ts).min().unwrap_or(0),
            max_ts: recs.iter().map(|r| r.ts).max().unwrap_or(0),
            packets: packets as u32,
            flows,
            packet_flows,
        };
        let mut record = self.io.buffer();
        journal_record(&mut record, &info);
        self.io.write(&seg.journal, record)?;
        let frame = std::mem::replace(&mut self.out, self.io.buffer());
        self.io.write(&seg.file, frame)?;
        seg.entries.push((c as u32, len as u32));
        seg.frames.push(info);
        self.extra_blocks = 0;
        seg.offset += c as u64;
        let left = block_remaining(seg.offset);
        if left < MIN_TAIL && left != TSHARK_BLOCK {
            pad(&self.io, seg, left)?;
        }
        self.out.clear();
        self.recs.drain(..packets);
        self.done_recs = 0;
        self.done_len = 0;
        self.frame_len -= len;
        self.frame_min = self.recs.iter().map(|r| r.ts).min().unwrap_or(i64::MAX);
        self.frame_max = self.recs.iter().map(|r| r.ts).max().unwrap_or(i64::MIN);
        Ok(())
    }

    /// Ends the last frame, appends the seek table and publishes segment and index.
    ///
    /// On an error the segment stays open (its files as they are), so that
    /// [`abandon_segment`](Self::abandon_segment) hands it to [`recover_segment`]: taken out
    /// before, it would be forgotten, its temporary files left behind for good.
    fn finish_segment(&mut self) -> Result<Option<PublishedSegment>> {
        self.end_frame()?;
        self.clear_frame();
        let Some(seg) = self.segment.as_mut() else {
            return Ok(None);
        };
        // The tail goes after every queued frame.
        self.io.barrier()?;
        // The entries as they were, should the tail fail (recovery rebuilds them anyway).
        let entries = seg.entries.len();
        let tail = match write_tail(&seg.file.file, &seg.tmp, seg.offset, &mut seg.entries) {
            Ok(tail) => tail,
            Err(e) => {
                seg.entries.truncate(entries);
                return Err(e);
            }
        };
        let index = SegmentIndex {
            link_type: self.options.link_type,
            snap_len: self.options.snap_len,
            packets: seg.packets,
            min_ts: seg.min_ts,
            max_ts: seg.max_ts,
            frames: std::mem::take(&mut seg.frames),
        };
        match publish(
            &seg.dir,
            &seg.tmp,
            &self.writer_id,
            &index,
            &seg.journal_path,
        ) {
            Ok(published) => {
                self.bytes_written += seg.offset + tail;
                self.segment = None;
                Ok(Some(published))
            }
            Err(e) => {
                seg.frames = index.frames;
                Err(e)
            }
        }
    }
}

/// Appends the end of a segment whose frames end at `offset`: padding as the block layout
/// needs (see [`TSHARK_BLOCK`]) and the seek table of `entries`; then syncs the file.
/// Returns the bytes appended.
fn write_tail(
    mut file: &File,
    path: &Path,
    offset: u64,
    entries: &mut Vec<(u32, u32)>,
) -> Result<u64> {
    let mut tail = Vec::new();
    let left = block_remaining(offset);
    if left < MIN_TAIL && left != TSHARK_BLOCK {
        // What the writer does after every frame; a recovered segment may end without it.
        tail.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
        tail.extend_from_slice(&((left - MIN_PAD) as u32).to_le_bytes());
        tail.resize(left, 0);
        entries.push((left as u32, 0));
    }
    if offset > 0 && block_remaining(offset + tail.len() as u64) == TSHARK_BLOCK {
        // A block must not start with a skippable frame (see `TSHARK_BLOCK`).
        tail.extend_from_slice(&EMPTY_FRAME);
        entries.push((EMPTY_FRAME.len() as u32, 0));
    }
    tail.extend_from_slice(&seek_table(entries));
    file.write_all(&tail)
        .and_then(|()| file.sync_all())
        .map_err(PcapError::io("write", path))?;
    Ok(tail.len() as u64)
}

/// Publishes a finished (tail written and synced) temporary segment `tmp` of `dir` with its
/// index: index to a temporary file and synced, segment renamed to its final name, directory
/// synced, index renamed, directory synced; then the journal is removed.
fn publish(
    dir: &Path,
    tmp: &Path,
    writer_id: &str,
    index: &SegmentIndex,
    journal: &Path,
) -> Result<PublishedSegment> {
    // The name carries the smallest time; should this writer already have published a
    // segment with that start, an earlier start keeps the name a lower bound and unique.
    let mut start = index.min_ts;
    let mut path = dir.join(segment_name(start, writer_id));
    while path.exists() || index_path(&path).exists() {
        start -= 1;
        path = dir.join(segment_name(start, writer_id));
    }
    let index_final = index_path(&path);
    let index_tmp = index_tmp_path(&path);
    let written = File::create(&index_tmp)
        .map_err(PcapError::io("create", &index_tmp))
        .and_then(|mut f| {
            f.write_all(&index.encode())
                .and_then(|()| f.sync_all())
                .map_err(PcapError::io("write", &index_tmp))
        });
    if let Err(e) = written {
        // Nothing is published yet: leave no half-written index behind (the segment stays
        // a temporary file, for the caller to recover or retry).
        let _ = fs::remove_file(&index_tmp);
        return Err(e);
    }
    if let Err(e) = fs::rename(tmp, &path) {
        let _ = fs::remove_file(&index_tmp);
        return Err(PcapError::io("rename", tmp)(e));
    }
    sync_dir(dir)?;
    fs::rename(&index_tmp, &index_final).map_err(PcapError::io("rename", &index_tmp))?;
    sync_dir(dir)?;
    // A leftover journal is harmless: recovery removes a journal without its segment.
    remove_if_exists(journal)?;
    Ok(PublishedSegment {
        segment: path,
        index: index_final,
        packets: index.packets,
    })
}

/// Suffix of a segment's journal: `.<writer-id>-<seq>.journal.tmp` beside
/// `.<writer-id>-<seq>.pcap.zst.tmp`.
const JOURNAL_SUFFIX: &str = ".journal.tmp";
const SEGMENT_TMP_SUFFIX: &str = ".pcap.zst.tmp";
const JOURNAL_MAGIC: &[u8; 8] = b"TVPCAPJL";
const JOURNAL_VERSION: u32 = 1;
const JOURNAL_HEADER_LEN: usize = 20;

/// The journal's header: magic, version, link type, snap length.
fn journal_header(link_type: u32, snap_len: u32) -> [u8; JOURNAL_HEADER_LEN] {
    let mut h = [0u8; JOURNAL_HEADER_LEN];
    h[..8].copy_from_slice(JOURNAL_MAGIC);
    h[8..12].copy_from_slice(&JOURNAL_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&link_type.to_le_bytes());
    h[16..20].copy_from_slice(&snap_len.to_le_bytes());
    h
}

/// Replaces `out` with one journal record: payload length u32 LE, CRC-32 of the payload u32
/// LE, payload (the frame's index entry).
fn journal_record(out: &mut Vec<u8>, info: &FrameInfo) {
    out.clear();
    out.extend_from_slice(&[0u8; 8]);
    info.encode(out);
    let len = (out.len() - 8) as u32;
    let crc = crc32fast::hash(&out[8..]);
    out[..4].copy_from_slice(&len.to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// The link type, snap length and frames of a journal, up to its first incomplete or
/// damaged record; `None` when its header is missing or damaged.
fn read_journal(path: &Path) -> Result<Option<(u32, u32, Vec<FrameInfo>)>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(PcapError::io("read", path)(e)),
    };
    let word = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    if bytes.len() < JOURNAL_HEADER_LEN
        || &bytes[..8] != JOURNAL_MAGIC
        || word(&bytes, 8) != JOURNAL_VERSION
    {
        return Ok(None);
    }
    let (link_type, snap_len) = (word(&bytes, 12), word(&bytes, 16));
    let mut frames = Vec::new();
    let mut pos = JOURNAL_HEADER_LEN;
    while pos + 8 <= bytes.len() {
        let len = word(&bytes, pos) as usize;
        let crc = word(&bytes, pos + 4);
        let Some(payload) = bytes.get(pos + 8..pos + 8 + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        match FrameInfo::decode_one(payload, path) {
            Ok(f) => frames.push(f),
            Err(_) => break,
        }
        pos += 8 + len;
    }
    Ok(Some((link_type, snap_len, frames)))
}

/// Whether `frame` (from a journal) is complete and intact in `file` of `len` bytes: it
/// lies inside the file, decompresses to the size recorded, and holds exactly the recorded
/// number of whole pcap records (after the global header, for the first frame), with times
/// inside the recorded span.
fn frame_intact(file: &mut File, len: u64, frame: &FrameInfo, first: bool) -> bool {
    let end = frame.offset + u64::from(frame.compressed_size);
    if end > len || frame.packets == 0 {
        return false;
    }
    let mut compressed = vec![0u8; frame.compressed_size as usize];
    if file
        .seek(SeekFrom::Start(frame.offset))
        .and_then(|_| file.read_exact(&mut compressed))
        .is_err()
    {
        return false;
    }
    let Ok(bytes) = zstd::bulk::decompress(&compressed, frame.decompressed_size as usize) else {
        return false;
    };
    if bytes.len() != frame.decompressed_size as usize {
        return false;
    }
    let mut pos = 0;
    if first {
        if bytes.len() < PCAP_HEADER_LEN || bytes[..4] != PCAP_NS_MAGIC.to_le_bytes() {
            return false;
        }
        pos = PCAP_HEADER_LEN;
    }
    for _ in 0..frame.packets {
        match parse_record(&bytes[pos..]) {
            Some((ts, n)) if (frame.min_ts..=frame.max_ts).contains(&ts) => pos += n,
            _ => return false,
        }
    }
    pos == bytes.len()
}

/// Whether `file` holds a skippable frame of exactly `len` bytes at `offset` (the padding
/// between two frames).
fn padding_intact(file: &mut File, offset: u64, len: u64) -> bool {
    let mut h = [0u8; 8];
    len >= MIN_PAD as u64
        && file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut h))
            .is_ok()
        && h[..4] == SKIPPABLE_MAGIC.to_le_bytes()
        && u64::from(u32::from_le_bytes([h[4], h[5], h[6], h[7]])) + MIN_PAD as u64 == len
}

/// Publishes what is readable of a temporary segment (`.<writer-id>-<seq>.pcap.zst.tmp`)
/// whose writer died or gave it up, using its journal: the frames the journal lists, up to
/// the first that is missing, cut short or damaged, are kept; the file is truncated after
/// the last of them (dropping a partial frame, padding or seek table), the block padding and
/// seek table are appended, and segment and index are published as a writer would. A
/// segment without a complete frame (or without a readable journal) is removed with its
/// journal. Returns the published segment, if any.
///
/// Frames are kept only when the journal lists them, because the flow ids of their packets
/// are only there. The writer journals a frame before writing it, so a killed process
/// leaves no frame without its entry; after a power loss a frame written after the last
/// [`SegmentWriter::sync`] may survive without its entry, and is dropped with the rest of
/// that unsynced interval.
pub fn recover_segment(tmp: &Path) -> Result<Option<PublishedSegment>> {
    let (dir, writer_id, journal) =
        tmp_parts(tmp).ok_or_else(|| PcapError::corrupt(tmp, "not a temporary segment name"))?;
    let mut frames = match read_journal(&journal)? {
        Some((link_type, snap_len, frames)) => (link_type, snap_len, frames),
        None => (1, MAX_SNAP_LEN, Vec::new()),
    };
    let mut file = match OpenOptions::new().read(true).write(true).open(tmp) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            remove_if_exists(&journal)?;
            return Ok(None);
        }
        Err(e) => return Err(PcapError::io("open", tmp)(e)),
    };
    let len = file.metadata().map_err(PcapError::io("stat", tmp))?.len();
    let mut entries = Vec::new();
    let mut end = 0u64;
    let mut keep = 0;
    for (i, f) in frames.2.iter().enumerate() {
        let gap_ok =
            f.offset == end || (f.offset > end && padding_intact(&mut file, end, f.offset - end));
        if (i == 0 && f.offset != 0) || !gap_ok || !frame_intact(&mut file, len, f, i == 0) {
            break;
        }
        if f.offset > end {
            entries.push(((f.offset - end) as u32, 0));
        }
        entries.push((f.compressed_size, f.decompressed_size));
        end = f.offset + u64::from(f.compressed_size);
        keep = i + 1;
    }
    frames.2.truncate(keep);
    if frames.2.is_empty() {
        drop(file);
        remove_if_exists(tmp)?;
        remove_if_exists(&journal)?;
        sync_dir(&dir)?;
        return Ok(None);
    }
    file.set_len(end)
        .and_then(|()| file.seek(SeekFrom::Start(end)).map(drop))
        .map_err(PcapError::io("truncate", tmp))?;
    write_tail(&file, tmp, end, &mut entries)?;
    drop(file);
    let (link_type, snap_len, frames) = frames;
    let index = SegmentIndex {
        link_type,
        snap_len,
        packets: frames.iter().map(|f| u64::from(f.packets)).sum(),
        min_ts: frames.iter().map(|f| f.min_ts).min().unwrap_or(0),
        max_ts: frames.iter().map(|f| f.max_ts).max().unwrap_or(0),
        frames,
    };
    publish(&dir, tmp, &writer_id, &index, &journal).map(Some)
}

/// The directory, writer id and journal path of a temporary segment path.
fn tmp_parts(tmp: &Path) -> Option<(PathBuf, String, PathBuf)> {
    let name = tmp.file_name()?.to_str()?;
    let stem = name.strip_prefix('.')?.strip_suffix(SEGMENT_TMP_SUFFIX)?;
    let (writer, seq) = stem.rsplit_once('-')?;
    if !valid_writer_id(writer) || seq.parse::<u64>().is_err() {
        return None;
    }
    let dir = tmp.parent()?.to_path_buf();
    let journal = dir.join(format!(".{stem}{JOURNAL_SUFFIX}"));
    Some((dir, writer.to_owned(), journal))
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(PcapError::io("remove", path)(e)),
    }
}

/// `.<segment-name>.idx.tmp` beside the segment.
fn index_tmp_path(segment: &Path) -> PathBuf {
    let name = segment
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    segment.with_file_name(format!(".{name}.idx.tmp"))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(PcapError::io("sync directory", dir))
}

/// What [`recover`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovered {
    /// Temporary files removed: segments without a complete frame, journals without their
    /// segment, and indexes whose segment was never published.
    pub removed: Vec<PathBuf>,
    /// Indexes published: their segment had been renamed when the writer died.
    pub published: Vec<PathBuf>,
    /// Segments whose writer died while writing them, published with their complete frames
    /// (see [`recover_segment`]).
    pub recovered: Vec<PublishedSegment>,
}

/// Cleans up `root/pcap` after a crash; run it before starting writers. Returns what it
/// removed and published (for the caller to log).
///
/// In each partition: a temporary index (`.<segment>.idx.tmp`) is complete once its segment
/// is renamed (both are synced before the rename), so it is published if its segment exists
/// and removed otherwise; then every temporary segment (`.*.pcap.zst.tmp`) is recovered
/// with [`recover_segment`] (its complete frames published, the rest cut off); then
/// journals left without a segment are removed.
pub fn recover(root: &Path) -> Result<Recovered> {
    let mut done = Recovered::default();
    let dir = pcap_dir(root);
    if dir.is_dir() {
        recover_dir(&dir, 0, &mut done)?;
    }
    Ok(done)
}

fn recover_dir(dir: &Path, depth: u32, done: &mut Recovered) -> Result<()> {
    let mut changed = false;
    let mut indexes = Vec::new();
    let mut segments = Vec::new();
    let mut journals = Vec::new();
    for entry in fs::read_dir(dir).map_err(PcapError::io("read directory", dir))? {
        let entry = entry.map_err(PcapError::io("read directory", dir))?;
        let path = entry.path();
        let ty = entry.file_type().map_err(PcapError::io("stat", &path))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if ty.is_dir() && depth < 2 {
            recover_dir(&path, depth + 1, done)?;
            continue;
        }
        if !ty.is_file() || !name.starts_with('.') {
            continue;
        }
        if name.ends_with(".idx.tmp") {
            indexes.push((path, name));
        } else if name.ends_with(SEGMENT_TMP_SUFFIX) {
            segments.push(path);
        } else if name.ends_with(JOURNAL_SUFFIX) {
            journals.push(path);
        }
    }
    // Indexes first: a recovered segment may take the name a stale index was made for.
    for (path, name) in indexes {
        let segment = name
            .strip_suffix(".idx.tmp")
            .and_then(|n| n.strip_prefix('.'))
            .filter(|n| parse_segment_name(n).is_some())
            .map(|n| dir.join(n));
        match segment {
            Some(segment) if segment.is_file() && !index_path(&segment).exists() => {
                let index = index_path(&segment);
                fs::rename(&path, &index).map_err(PcapError::io("rename", &path))?;
                done.published.push(index);
            }
            _ => {
                fs::remove_file(&path).map_err(PcapError::io("remove", &path))?;
                done.removed.push(path);
            }
        }
        changed = true;
    }
    segments.sort();
    for path in segments {
        match recover_segment(&path)? {
            Some(p) => done.recovered.push(p),
            None => done.removed.push(path),
        }
    }
    for path in journals {
        if path.exists() {
            remove_if_exists(&path)?;
            done.removed.push(path);
            changed = true;
        }
    }
    if changed {
        sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_whose_publication_fails_is_kept_for_recovery() {
        let root = std::env::temp_dir().join(format!(
            "tapvault-storage-publish-fails-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&root);
        let ts = 1_700_000_000_000_000_000;
        let mut w = SegmentWriter::new(&root, "w0", SegmentOptions::default()).unwrap();
        for i in 0..10u8 {
            w.write(ts + i64::from(i), 100, &[i; 100], 7).unwrap();
        }
        // A directory where the temporary index goes: its publication fails.
        let dir = partition_dir(&root, hour_of(ts));
        let blocker = index_tmp_path(&dir.join(segment_name(ts, "w0")));
        fs::create_dir(&blocker).unwrap();
        assert!(w.flush().is_err());
        // The writer still holds the segment, for recovery to publish.
        let (tmp, packets) = w.abandon_segment().expect("the segment is not forgotten");
        assert_eq!(packets, 10);
        fs::remove_dir(&blocker).unwrap();
        let published = recover_segment(&tmp).unwrap().expect("its frames are kept");
        assert_eq!(published.packets, 10);
        let left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
        drop(w);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn inner_padding_has_the_length_asked_and_decompresses_to_nothing() {
        let data: Vec<u8> = (0..50_000u32)
            .map(|i| (i % 251) as u8 ^ (i >> 9) as u8)
            .collect();
        let mut cctx = CCtx::create();
        let mut base = Vec::new();
        compress(
            &mut cctx,
            &data,
            &mut base,
            zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_flush,
        )
        .unwrap();
        for len in (INNER_PAD_MIN..700).chain([131_075, 262_150]) {
            let mut frame = base.clone();
            inner_padding(&mut frame, len);
            assert_eq!(frame.len(), base.len() + len);
            // One complete frame, which restores the data.
            let mut follow = frame.clone();
            follow.extend_from_slice(&EMPTY_FRAME);
            assert_eq!(
                zstd_safe::find_frame_compressed_size(&follow),
                Ok(frame.len()),
                "{len}"
            );
            assert_eq!(zstd::decode_all(&frame[..]).unwrap(), data, "{len}");
        }
    }
}
