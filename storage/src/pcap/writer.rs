//! [`SegmentWriter`] and crash recovery.

use std::{
    fs::{self, File},
    io::Write,
    path::{Path, PathBuf},
};

use super::{
    MAX_SEGMENT_SPAN_NS, MAX_SNAP_LEN, PcapError, Result,
    format::{
        FrameInfo, RECORD_HEADER_LEN, SKIPPABLE_MAGIC, SegmentIndex, pcap_header,
        push_record_header, seek_table, ts_in_range,
    },
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
    /// Uncompressed pcap bytes after which a zstd frame ends (it can end earlier, at a block
    /// boundary: see the [module docs](crate::pcap)). Default 1 MiB.
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
    /// zstd level. Default 1.
    pub zstd_level: i32,
}

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
    compressor: zstd::bulk::Compressor<'static>,
    segment: Option<OpenSegment>,
    next_seq: u64,
    /// Uncompressed pcap bytes of the open frame.
    frame: Vec<u8>,
    frame_min: i64,
    frame_max: i64,
    recs: Vec<Rec>,
    /// Compressed/uncompressed size of the last frame, to end frames that would overflow
    /// their block.
    ratio: f64,
}

struct OpenSegment {
    dir: PathBuf,
    tmp: PathBuf,
    file: File,
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

/// A pending packet of the open frame.
struct Rec {
    /// End of its record in the frame buffer.
    end: usize,
    ts: i64,
    flow: u64,
}

/// Wireshark 4.0's read buffer for zstd files (`ZSTD_DStreamInSize()`, 128 KiB + 3, on file
/// systems whose block size is smaller). When a zstd frame ends, Wireshark 4.0 looks for the
/// next frame's magic number at the start of its buffer rather than at the read position
/// (fixed in later versions), and reads everything after as uncompressed data if it is not
/// there. So that `tshark -r` reads a segment as it is, the writer lays frames out in blocks of
/// this size: every block starts with a zstd frame, no frame crosses a block boundary, and a
/// frame ends either on a boundary or at least [`MIN_PAD`] bytes before one. The rest of a
/// block is padding (a skippable frame, listed in the seek table with a decompressed size of
/// 0), so blocks cost at most [`MIN_TAIL`] bytes each; a frame that would not fit ends early.
pub(crate) const TSHARK_BLOCK: usize = 131_075;
/// The smallest padding: a skippable frame header.
const MIN_PAD: usize = 8;
/// Space at the end of a block too small to start another frame in: padded at once.
const MIN_TAIL: usize = 2048;
/// An empty zstd frame (single segment, content size 0, one empty raw block).
const EMPTY_FRAME: [u8; 9] = [0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x00, 0x01, 0x00, 0x00];

/// Bytes from `offset` to the next block boundary (a full block at a boundary).
fn block_remaining(offset: u64) -> usize {
    TSHARK_BLOCK - (offset % TSHARK_BLOCK as u64) as usize
}

fn write_at(seg: &mut OpenSegment, bytes: &[u8]) -> Result<()> {
    seg.file
        .write_all(bytes)
        .map_err(PcapError::io("write", &seg.tmp))
}

/// Fills the `len` (at least [`MIN_PAD`]) bytes left in the block with a skippable frame.
fn pad(seg: &mut OpenSegment, len: usize) -> Result<()> {
    let mut frame = Vec::with_capacity(len);
    frame.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
    frame.extend_from_slice(&((len - MIN_PAD) as u32).to_le_bytes());
    frame.resize(len, 0);
    write_at(seg, &frame)?;
    seg.entries.push((len as u32, 0));
    seg.offset += len as u64;
    Ok(())
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
        let compressor = zstd::bulk::Compressor::new(options.zstd_level)
            .map_err(|_| PcapError::InvalidOption("zstd_level out of range"))?;
        Ok(SegmentWriter {
            root: root.into(),
            writer_id: writer_id.to_owned(),
            frame: Vec::with_capacity(options.frame_max_bytes.min(4 << 20) + 4096),
            options,
            compressor,
            segment: None,
            next_seq: 0,
            frame_min: i64::MAX,
            frame_max: i64::MIN,
            recs: Vec::new(),
            ratio: 0.5,
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
            let seg = self.segment.as_ref().expect("opened above");
            let room = block_remaining(seg.offset).saturating_sub(MIN_PAD) as f64;
            if self.frame.len() + record_len > self.options.frame_max_bytes
                || span >= self.options.frame_max_span_ns
                || (self.frame.len() + record_len) as f64 * self.ratio > room * 0.9
            {
                self.end_frame()?;
            }
        }
        push_record_header(&mut self.frame, ts_ns, caplen as u32, origlen);
        self.frame.extend_from_slice(&data[..caplen]);
        self.frame_min = self.frame_min.min(ts_ns);
        self.frame_max = self.frame_max.max(ts_ns);
        self.recs.push(Rec {
            end: self.frame.len(),
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
        self.next_seq += 1;
        let file = File::create(&tmp).map_err(PcapError::io("create", &tmp))?;
        self.frame.clear();
        self.frame
            .extend_from_slice(&pcap_header(self.options.link_type, self.options.snap_len));
        self.segment = Some(OpenSegment {
            dir,
            tmp,
            file,
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

    /// Compresses the pending packets into one or more frames (see [`TSHARK_BLOCK`]) and
    /// records them.
    fn end_frame(&mut self) -> Result<()> {
        let Some(seg) = self.segment.as_mut() else {
            return Ok(());
        };
        let n = self.recs.len();
        let byte_start = |recs: &[Rec], i: usize| if i == 0 { 0 } else { recs[i - 1].end };
        let mut start = 0;
        let mut end = n;
        while start < n {
            let bytes = &self.frame[byte_start(&self.recs, start)..self.recs[end - 1].end];
            let compressed = self
                .compressor
                .compress(bytes)
                .map_err(PcapError::io("compress a frame of", &seg.tmp))?;
            let c = compressed.len();
            let rem = block_remaining(seg.offset);
            if c == rem || c + MIN_PAD <= rem {
                // Fits: place it.
                write_at(seg, &compressed)?;
                seg.entries.push((c as u32, bytes.len() as u32));
                let recs = &self.recs[start..end];
                let mut flows: Vec<u64> = recs.iter().map(|r| r.flow).collect();
                flows.sort_unstable();
                flows.dedup();
                let packet_flows = recs
                    .iter()
                    .map(|r| flows.binary_search(&r.flow).expect("id is in the set") as u32)
                    .collect();
                seg.frames.push(FrameInfo {
                    offset: seg.offset,
                    compressed_size: c as u32,
                    decompressed_size: bytes.len() as u32,
                    min_ts: recs.iter().map(|r| r.ts).min().unwrap_or(0),
                    max_ts: recs.iter().map(|r| r.ts).max().unwrap_or(0),
                    packets: recs.len() as u32,
                    flows,
                    packet_flows,
                });
                self.ratio = (c as f64 / bytes.len().max(1) as f64).clamp(0.01, 1.1);
                seg.offset += c as u64;
                let left = block_remaining(seg.offset);
                if left < MIN_TAIL && left != TSHARK_BLOCK {
                    pad(seg, left)?;
                }
                start = end;
                end = n;
            } else if end - start > 1 && (rem == TSHARK_BLOCK || rem >= MIN_TAIL) {
                // Too big for the space left in the block: fewer packets.
                let share = (rem.saturating_sub(MIN_PAD) as f64 / c as f64 * 0.95).min(0.9);
                let fewer = ((end - start) as f64 * share) as usize;
                end = start + fewer.clamp(1, end - start - 1);
            } else if rem != TSHARK_BLOCK {
                // Not even one packet fits in what is left: start the next block.
                pad(seg, rem)?;
                end = n;
            } else {
                return Err(PcapError::corrupt(
                    &seg.tmp,
                    "a single packet does not fit in a block (snap length too large)",
                ));
            }
        }
        self.frame.clear();
        self.recs.clear();
        self.frame_min = i64::MAX;
        self.frame_max = i64::MIN;
        Ok(())
    }

    /// Ends the last frame, appends the seek table and publishes segment and index.
    fn finish_segment(&mut self) -> Result<Option<PublishedSegment>> {
        self.end_frame()?;
        self.frame.clear();
        let Some(mut seg) = self.segment.take() else {
            return Ok(None);
        };
        if seg.offset > 0 && block_remaining(seg.offset) == TSHARK_BLOCK {
            // A block must not start with a skippable frame (see `TSHARK_BLOCK`).
            write_at(&mut seg, &EMPTY_FRAME)?;
            seg.entries.push((EMPTY_FRAME.len() as u32, 0));
            seg.offset += EMPTY_FRAME.len() as u64;
        }
        seg.file
            .write_all(&seek_table(&seg.entries))
            .map_err(PcapError::io("write", &seg.tmp))?;
        seg.file
            .sync_all()
            .map_err(PcapError::io("sync", &seg.tmp))?;
        drop(seg.file);
        // The name carries the smallest time; should this writer already have published a
        // segment with that start, an earlier start keeps the name a lower bound and unique.
        let mut start = seg.min_ts;
        let mut path = seg.dir.join(segment_name(start, &self.writer_id));
        while path.exists() || index_path(&path).exists() {
            start -= 1;
            path = seg.dir.join(segment_name(start, &self.writer_id));
        }
        let index = SegmentIndex {
            link_type: self.options.link_type,
            snap_len: self.options.snap_len,
            packets: seg.packets,
            min_ts: seg.min_ts,
            max_ts: seg.max_ts,
            frames: seg.frames,
        };
        let index_final = index_path(&path);
        let index_tmp = index_tmp_path(&path);
        let mut f = File::create(&index_tmp).map_err(PcapError::io("create", &index_tmp))?;
        f.write_all(&index.encode())
            .and_then(|()| f.sync_all())
            .map_err(PcapError::io("write", &index_tmp))?;
        drop(f);
        fs::rename(&seg.tmp, &path).map_err(PcapError::io("rename", &seg.tmp))?;
        sync_dir(&seg.dir)?;
        fs::rename(&index_tmp, &index_final).map_err(PcapError::io("rename", &index_tmp))?;
        sync_dir(&seg.dir)?;
        Ok(Some(PublishedSegment {
            segment: path,
            index: index_final,
            packets: index.packets,
        }))
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
    /// Temporary files removed: segments whose writer died before finishing them, and
    /// indexes whose segment was never published.
    pub removed: Vec<PathBuf>,
    /// Indexes published: their segment had been renamed when the writer died.
    pub published: Vec<PathBuf>,
}

/// Cleans up `root/pcap` after a crash; run it before starting writers. Returns what it
/// removed and published (for the caller to log).
///
/// A temporary segment (`.*.pcap.zst.tmp`) is incomplete by construction and removed. A
/// temporary index (`.<segment>.idx.tmp`) is complete once its segment is renamed (both
/// are synced before the rename), so it is published if its segment exists and removed
/// otherwise.
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
    for entry in fs::read_dir(dir).map_err(PcapError::io("read directory", dir))? {
        let entry = entry.map_err(PcapError::io("read directory", dir))?;
        let path = entry.path();
        let ty = entry.file_type().map_err(PcapError::io("stat", &path))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if ty.is_dir() && depth < 2 {
            recover_dir(&path, depth + 1, done)?;
            continue;
        }
        if !ty.is_file() || !name.starts_with('.') || !name.ends_with(".tmp") {
            continue;
        }
        let segment = name
            .strip_suffix(".idx.tmp")
            .and_then(|n| n.strip_prefix('.'))
            .filter(|n| parse_segment_name(n).is_some())
            .map(|n| dir.join(n));
        match segment {
            Some(segment) if segment.is_file() => {
                let index = index_path(&segment);
                fs::rename(&path, &index).map_err(PcapError::io("rename", &path))?;
                done.published.push(index);
            }
            _ if name.ends_with(".pcap.zst.tmp") || name.ends_with(".idx.tmp") => {
                fs::remove_file(&path).map_err(PcapError::io("remove", &path))?;
                done.removed.push(path);
            }
            _ => continue,
        }
        changed = true;
    }
    if changed {
        sync_dir(dir)?;
    }
    Ok(())
}
