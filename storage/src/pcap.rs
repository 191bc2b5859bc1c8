//! Packet spill segments: [`SegmentWriter`] writes them, [`read_packets`] extracts a time
//! range (optionally one flow) as a pcap stream, [`recover`] cleans up after a crash.
//!
//! # Layout
//!
//! ```text
//! ROOT/pcap/date=YYYY-MM-DD/hour=HH/<start-ns>-<writer-id>.pcap.zst
//! ROOT/pcap/date=YYYY-MM-DD/hour=HH/<start-ns>-<writer-id>.pcap.zst.idx
//! ```
//!
//! A segment lives in the UTC hour of its first packet. `<start-ns>` is the smallest
//! timestamp in the segment (the first packet's, unless packets arrived out of order), so a
//! reader skips a segment by its name when it starts after the queried range. A segment
//! holds packets of at most [`MAX_SEGMENT_SPAN_NS`] after its first one and none before its
//! hour: a packet that would break either rule starts a new segment, so a reader can also
//! skip whole hour directories.
//!
//! # Segment format
//!
//! A segment is a nanosecond pcap stream (magic `a1b23c4d`, version 2.4, the writer's link
//! type and snap length) compressed in the [Zstandard seekable format]: a sequence of
//! independent zstd frames, each holding whole packet records (the first one also the
//! 24-byte global header) and bounded by uncompressed size (default 1 MiB) and time span
//! (default 1 s), followed by the seek table in a skippable frame (magic `0x184D2A5E`): one
//! entry per frame (compressed size u32 LE, decompressed size u32 LE; no checksums), then
//! the number of frames u32 LE, the descriptor byte `0` and the seekable magic
//! `0x8F92EAB1` u32 LE. `zstd -d` restores the pcap stream.
//!
//! Wireshark 4.0 (tshark 4.0.17, Debian 12) cannot read arbitrary multi-frame zstd files:
//! when a frame ends it looks for the next frame's magic number at the start of its 128 KiB
//! (+3) read buffer instead of at the read position, and reads everything after as
//! uncompressed data when it is not there ("File has 919617253-byte packet"). Later
//! versions fix this. So that `tshark -r` reads a segment as it is, the writer lays frames
//! out in blocks of 131 075 bytes: every block starts with a zstd frame, or lies inside a
//! frame that ends exactly on a later block boundary. A frame either stays in its block
//! (ending on the boundary or some bytes before it, the rest being padding: a skippable
//! frame listed in the seek table with a decompressed size of 0) or crosses boundaries and
//! ends exactly on one, its last bytes being empty zstd blocks (raw or RLE blocks of size 0,
//! compressed blocks without literals or sequences) that decompress to nothing. On a busy
//! link frames cross boundaries and hold about `frame_max_bytes` (zstd's compression, per
//! frame, needs that much history to compress well); on a slow one they end on time and
//! keep to their block, since a frame that crosses a boundary and then ends on time pads up
//! to the next one. An empty 9-byte zstd frame precedes the seek table when it would start
//! a block. On ordinary traffic the padding costs under 1 % of the file; on incompressible
//! jumbo packets up to a few percent. This assumes Wireshark's buffer size, which is
//! larger on file systems whose block size exceeds it.
//! For the same reason a record must fit in a block uncompressed, which bounds the snap
//! length to [`MAX_SNAP_LEN`].
//!
//! # Index format (version 1)
//!
//! `<segment>.idx` is little-endian binary:
//!
//! ```text
//! header  magic "TVPCAPIX" (8 bytes), version u32 = 1, link type u32, snap length u32,
//!         frame count u32, packet count u64, min timestamp i64, max timestamp i64
//! frame   compressed offset u64, compressed size u32, decompressed size u32,
//!         min timestamp i64, max timestamp i64, packet count u32, flow count u32,
//!         flow ids u64 x flow count (strictly ascending),
//!         per packet in record order: the position of its flow id in that list (LEB128)
//! ```
//!
//! The file ends after the last frame. Timestamps are nanoseconds since the Unix epoch. The
//! per-frame flow list lets a reader skip frames that cannot hold a flow; the per-packet
//! positions (usually one byte per packet) let it pick that flow's packets out of a frame
//! it decompressed, since the flow id is not part of a pcap record.
//!
//! # Publication and crash safety
//!
//! A segment is written as `.<writer-id>-<seq>.pcap.zst.tmp` in its final directory, with a
//! journal beside it, `.<writer-id>-<seq>.journal.tmp`: a header (magic `TVPCAPJL`, version
//! u32 = 1, link type u32, snap length u32), then per frame one record (payload length u32,
//! CRC-32 u32, payload = the frame's index entry as above). A frame's journal record is
//! written before the frame itself. The writer hands frames, journal records and padding to
//! an I/O thread of its own, in order, through a bounded queue (the compressing thread
//! never waits for the kernel unless the disk falls behind).
//! [`SegmentWriter::seal_frame`] turns pending packets into complete frames and waits until
//! they are written (in the page cache: a killed process loses none of them), and
//! [`SegmentWriter::sync`] starts an `fdatasync` of segment then journal, after waiting for
//! the one it started last time; [`PacketStore`](crate::PacketStore) calls both every flush
//! interval (default 1 s). So a killed process loses at most the packets of the last
//! interval, and a power loss at most those of the last two.
//!
//! When a segment is finished (it rolled, or the writer was flushed or closed) the seek table
//! is appended and the file synced, the index written as `.<final-name>.idx.tmp` and synced,
//! then the segment renamed to its final name, the directory synced, the index renamed, the
//! directory synced again and the journal removed. Readers only read a segment whose index
//! exists. After a crash, [`recover`] publishes an index whose segment was already renamed
//! (both were complete and synced before the first rename), and [`recover_segment`] publishes
//! each temporary segment with the frames its journal lists that are whole in the file (it
//! decompresses each and checks its records): the file is cut after the last of them (a
//! partial frame, padding or seek table goes), padding and the seek table are appended, and
//! the index is built from the journal. Nothing readable is thrown away: a frame is only
//! ever missing from the journal after a power loss, and then it was written after the last
//! sync. Journals without a segment are removed.
//!
//! [Zstandard seekable format]: https://github.com/facebook/zstd/blob/dev/contrib/seekable_format/zstd_seekable_compression_format.md

use std::{io, path::PathBuf};

mod format;
mod io_thread;
mod layout;
mod reader;
mod writer;

pub use format::{FrameInfo, SegmentIndex};
pub use reader::{ReadStats, SegmentReader, read_packets, segments_overlapping};
pub use writer::{
    PublishedSegment, Recovered, SegmentOptions, SegmentWriter, recover, recover_segment,
};

/// Version of the index format written by this crate.
pub const INDEX_VERSION: u32 = 1;
/// The largest time span of a segment (its roll interval is capped to it), which bounds how
/// far past its hour directory a segment's packets can reach.
pub const MAX_SEGMENT_SPAN_NS: i64 = layout::HOUR_NS;
/// The largest snap length accepted: a record must fit in one 128 KiB block of a segment even
/// if it does not compress (see the [module docs](crate::pcap)).
pub const MAX_SNAP_LEN: u32 = 130_048;

/// An error of the packet store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PcapError {
    /// A writer id that would make file names ambiguous.
    #[error("invalid writer id `{id}`: use 1 to 64 ASCII letters, digits or `_`")]
    InvalidWriterId {
        /// The rejected id.
        id: String,
    },
    /// An option out of range.
    #[error("invalid segment option: {0}")]
    InvalidOption(&'static str),
    /// A packet time that a nanosecond pcap record cannot hold (before 1970 or after 2106).
    #[error("packet timestamp {ts_ns} ns is outside the pcap range")]
    TimestampOutOfRange {
        /// The rejected time.
        ts_ns: i64,
    },
    /// A file system operation failed.
    #[error("failed to {op} `{}`", path.display())]
    Io {
        /// What was being done ("create directory", "rename", ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An index or segment whose content does not follow the format.
    #[error("corrupt `{}`: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An index written with a version this build does not read.
    #[error("unsupported index version {version} in `{}`", path.display())]
    UnsupportedVersion {
        /// The index file.
        path: PathBuf,
        /// Its version.
        version: u32,
    },
    /// Segments of the range have different link types; one pcap stream cannot hold them.
    #[error("segments of the range have different link types ({first} and {other})")]
    MixedLinkTypes {
        /// The first segment's link type.
        first: u32,
        /// Another segment's.
        other: u32,
    },
}

/// The packet store's result type.
pub type Result<T, E = PcapError> = std::result::Result<T, E>;

impl PcapError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| PcapError::Io { op, path, source }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        PcapError::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
