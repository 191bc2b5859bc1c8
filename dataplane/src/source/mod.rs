//! Capture-file sources: pcap (micro- and nanosecond), pcapng (several interfaces, mixed link
//! types), plain or gzip- or zstd-compressed.
//!
//! The entry point is [`CaptureFile::open`]; [`CaptureFile::next_frame`] lends one
//! [`RawFrame`] at a time without allocating per packet.
//!
//! The format is recognised from the magic bytes, never from the file name. Every file is read
//! (and decompressed, if it is compressed) through a window (1 MiB, grown for a larger record
//! up to 256 MiB), so only a bounded part of the file is ever in memory, and frames are lent
//! straight out of the window.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::decode::{LinkType, linktype_name, supports_linktype};

mod input;
mod pcap;
mod pcapng;
#[cfg(test)]
mod tests;

use input::{Counting, Decoder, Input};

/// One captured frame, borrowed from the reader's buffer until the next call.
#[derive(Debug, Clone, Copy)]
pub struct RawFrame<'a> {
    /// Capture time, nanoseconds since the Unix epoch.
    pub ts_ns: i64,
    /// Length of the frame on the wire.
    pub orig_len: u32,
    /// Link type of the interface the frame was captured on.
    pub linktype: LinkType,
    /// pcapng interface id (0 for pcap).
    pub interface: u32,
    /// The captured bytes (`data.len()` is the captured length).
    pub data: &'a [u8],
}

/// The container format of a capture file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Classic pcap, microsecond timestamps.
    Pcap,
    /// Classic pcap, nanosecond timestamps.
    PcapNs,
    /// pcapng.
    Pcapng,
}

/// Compression wrapped around the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// None.
    None,
    /// gzip.
    Gzip,
    /// Zstandard (including multi-frame and seekable files).
    Zstd,
}

/// Errors reading a capture file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be opened or read.
    #[error("failed to read `{path}`")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a pcap or pcapng capture (possibly compressed).
    #[error("`{path}` is not a pcap or pcapng capture (first bytes {magic:02x?})")]
    UnknownFormat {
        /// The file.
        path: PathBuf,
        /// Its first bytes.
        magic: Vec<u8>,
    },
    /// The file is empty.
    #[error("`{path}` is empty")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The capture uses a link type tapvault does not decode.
    #[error("`{path}`: unsupported link type {name} (interface {interface})")]
    UnsupportedLinkType {
        /// The file.
        path: PathBuf,
        /// `LINKTYPE_NAME (number)`.
        name: String,
        /// pcapng interface id (0 for pcap).
        interface: u32,
    },
    /// A structural error that makes the rest of the file unreadable.
    #[error("`{path}`: corrupt capture at byte {offset}: {what}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Offset in the (decompressed) stream.
        offset: u64,
        /// What is wrong.
        what: String,
    },
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A problem found below [`CaptureFile`], before the path is attached.
#[derive(Debug)]
enum Fault {
    /// Reading the file failed.
    Io(io::Error),
    /// The container or the compressed stream is broken at `offset`.
    Corrupt { offset: u64, what: String },
    /// A packet on an interface whose link type the decoder does not know (the packet has been
    /// consumed).
    Unsupported { linktype: LinkType, interface: u32 },
}

/// End-of-file and skip bookkeeping shared by the container parsers.
#[derive(Debug, Default)]
struct Status {
    truncated: bool,
    skipped: u64,
    /// The end of the input was reached.
    ended: bool,
}

impl Status {
    /// Called when the input ended before the record the parser needed: a partial record (or a
    /// compressed stream that stopped early) is a truncated tail, nothing left is a clean end.
    #[cold]
    fn end(&mut self, input: &Input) {
        self.ended = true;
        if !input.avail().is_empty() || input.cut() {
            self.truncated = true;
        }
    }
}

/// The container parser.
enum Container {
    Pcap(pcap::Pcap),
    Pcapng(pcapng::Pcapng),
}

/// A capture file being read, one frame at a time.
///
/// The file is read front to back through a window (see `input.rs` for why it is not
/// memory-mapped); frames are lent out of the window without a further copy. A file that
/// shrinks while it is read simply ends early (a truncated tail, counted).
pub struct CaptureFile {
    path: PathBuf,
    input: Input,
    container: Container,
    format: Format,
    compression: Compression,
    status: Status,
    total: u64,
    /// A fatal error was returned: the reader is finished.
    failed: bool,
}

impl std::fmt::Debug for CaptureFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureFile")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("compression", &self.compression)
            .field("progress", &self.progress())
            .finish_non_exhaustive()
    }
}

/// Reads until `buf` is full or the end of the input; returns the number of bytes read.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn detect_compression(head: &[u8]) -> Compression {
    match head {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
        // A Zstandard skippable frame (magic 0x184D2A50..=0x184D2A5F, little-endian).
        [m, 0x2a, 0x4d, 0x18, ..] if m & 0xf0 == 0x50 => Compression::Zstd,
        _ => Compression::None,
    }
}

impl CaptureFile {
    /// Opens a capture: pcap (micro- or nanosecond, either byte order, or the modified
    /// Kuznetzov variant) or pcapng, optionally gzip- or zstd-compressed, as the magic bytes say.
    ///
    /// Fails with [`Error::Empty`] for an empty file, [`Error::UnknownFormat`] for anything
    /// that is not such a capture (including a compressed file that does not decompress into
    /// one, and a file shorter than the container's header), and, for classic pcap, with
    /// [`Error::UnsupportedLinkType`] if the decoder does not know the file's link type.
    pub fn open(path: &Path) -> Result<CaptureFile> {
        let io_err = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        let total = meta.len();
        if meta.is_file() && total == 0 {
            return Err(Error::Empty {
                path: path.to_path_buf(),
            });
        }
        let mut head = [0u8; 4];
        let n = read_full(&mut file, &mut head).map_err(io_err)?;
        let head = &head[..n];
        if head.is_empty() {
            return Err(Error::Empty {
                path: path.to_path_buf(),
            });
        }
        let compression = detect_compression(head);
        let raw = Counting::new(head.to_vec(), file);
        let mut input = Input::new(Decoder::new(compression, raw).map_err(io_err)?, compression);

        let unknown = |input: &Input| Error::UnknownFormat {
            path: path.to_path_buf(),
            magic: input.avail().iter().take(16).copied().collect(),
        };
        // Makes `n` bytes available, as `Ok(false)` if the file is shorter; a stream that does
        // not even decompress is not a capture.
        let ensure = |input: &mut Input, n: usize| match input.ensure(n) {
            Ok(ok) => Ok(ok),
            Err(Fault::Io(source)) => Err(io_err(source)),
            Err(_) => Err(Error::UnknownFormat {
                path: path.to_path_buf(),
                magic: head.to_vec(),
            }),
        };

        if !ensure(&mut input, 4)? {
            if input.avail().is_empty() && !input.cut() {
                return Err(Error::Empty {
                    path: path.to_path_buf(),
                });
            }
            return Err(unknown(&input));
        }
        let container = if let Some((format, _)) = pcap::detect(input.avail()) {
            if !ensure(&mut input, pcap::FILE_HEADER)? {
                return Err(unknown(&input));
            }
            let Some(pcap) = pcap::Pcap::parse(input.avail()) else {
                return Err(unknown(&input));
            };
            if !supports_linktype(pcap.linktype()) {
                return Err(Error::UnsupportedLinkType {
                    path: path.to_path_buf(),
                    name: linktype_name(pcap.linktype()),
                    interface: 0,
                });
            }
            input.take(pcap::FILE_HEADER);
            (format, Container::Pcap(pcap))
        } else {
            // pcapng: the section header block must be complete and well-formed; it stays in
            // the input and is read again as the first block.
            if !ensure(&mut input, 12)? {
                return Err(unknown(&input));
            }
            let Some(big_endian) = pcapng::detect(input.avail()) else {
                return Err(unknown(&input));
            };
            let Some(len) = pcapng::shb_len(input.avail(), big_endian) else {
                return Err(unknown(&input));
            };
            if !ensure(&mut input, len)? {
                return Err(unknown(&input));
            }
            (
                Format::Pcapng,
                Container::Pcapng(pcapng::Pcapng::new(big_endian)),
            )
        };
        let (format, container) = container;
        Ok(CaptureFile {
            path: path.to_path_buf(),
            input,
            container,
            format,
            compression,
            status: Status::default(),
            total,
            failed: false,
        })
    }

    /// Next frame, or `None` at the end.
    ///
    /// A file cut short in the middle of a record ends with `Ok(None)` and
    /// [`CaptureFile::truncated_tail`] returns true (as tshark reports "cut short"); that is
    /// not an error. [`Error::UnsupportedLinkType`] (pcapng: a packet on an interface whose
    /// link type the decoder does not know) consumes that packet, and calling again continues
    /// with the next one; after any other error the reader is finished and returns `Ok(None)`.
    #[inline]
    pub fn next_frame(&mut self) -> Result<Option<RawFrame<'_>>> {
        let CaptureFile {
            path,
            input,
            container,
            status,
            failed,
            ..
        } = self;
        if *failed {
            return Ok(None);
        }
        let result = match container {
            Container::Pcap(p) => p.next(input, status),
            Container::Pcapng(p) => p.next(input, status),
        };
        match result {
            Ok(frame) => Ok(frame),
            Err(fault) => Err(Self::error(path, failed, fault)),
        }
    }

    #[cold]
    fn error(path: &Path, failed: &mut bool, fault: Fault) -> Error {
        let path = path.to_path_buf();
        match fault {
            Fault::Io(source) => {
                *failed = true;
                Error::Io { path, source }
            }
            Fault::Corrupt { offset, what } => {
                *failed = true;
                Error::Corrupt { path, offset, what }
            }
            Fault::Unsupported {
                linktype,
                interface,
            } => Error::UnsupportedLinkType {
                path,
                name: linktype_name(linktype),
                interface,
            },
        }
    }

    /// The container format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The compression around the container.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Bytes of the underlying (compressed) file consumed so far and its total size (0 when
    /// unknown, e.g. for a pipe), for a progress bar. For a compressed file the count includes
    /// the decompressor's read-ahead. Once the end is reached (truncated tail included), both
    /// are equal.
    pub fn progress(&self) -> (u64, u64) {
        if self.status.ended && self.total > 0 {
            return (self.total, self.total);
        }
        let done = self.input.consumed();
        (
            if self.total > 0 {
                done.min(self.total)
            } else {
                done
            },
            self.total,
        )
    }

    /// True if the file ended in the middle of a record (or a compressed stream ended before its
    /// end marker).
    pub fn truncated_tail(&self) -> bool {
        self.status.truncated
    }

    /// Frames skipped because their container record was unusable while the file could
    /// continue (a pcapng packet block whose captured length exceeds the block, or whose block
    /// is too short for its fixed fields). Blocks of unknown types are skipped silently and not
    /// counted.
    pub fn skipped_records(&self) -> u64 {
        self.status.skipped
    }
}
