//! Byte input under the container parsers: a memory map of an uncompressed file (the fast path)
//! or a window over a decompressing stream.
//!
//! Both present the same interface: [`Input::ensure`] makes `n` bytes available from the current
//! position, [`Input::avail`] shows them, [`Input::take`] consumes and lends them. A lent slice
//! stays valid until the next `&mut` call, so frames are never copied.

use std::fs::File;
use std::io::{self, BufReader, Chain, Cursor, Read};

use memmap2::Mmap;

use super::{Compression, Fault};

/// Initial size of the stream window.
const STREAM_BUF: usize = 1 << 20;
/// Read buffer between the file and a decompressor.
const COMPRESSED_BUF: usize = 256 << 10;
/// First and largest request to the decoder in one `read` call. A decompressor that fails
/// discards what it produced in the failing call, so requests start small (the file header is
/// found even if the stream breaks soon after) and grow to amortise the per-call cost.
const FIRST_CHUNK: usize = 4 << 10;
const MAX_CHUNK: usize = 256 << 10;
/// The largest single record (pcap record or pcapng block) a reader accepts.
pub(super) const MAX_RECORD: usize = 256 << 20;
/// How far ahead of the read position a memory-mapped file's pages are touched by
/// prefetches. Record headers are a few hundred bytes apart, too sparse for the hardware
/// prefetcher, so without software prefetching every record costs a cache miss (measured:
/// 200 ns/record without, 90 with on a 2.4 GB capture); the next record's header is
/// prefetched exactly, pages ahead one line each.
const PREFETCH_DISTANCE: usize = 16 << 10;

/// The raw file with the magic bytes already read put back in front, counting bytes read.
pub(super) struct Counting {
    inner: Chain<Cursor<Vec<u8>>, File>,
    count: u64,
    /// Set when reading the file itself failed (as opposed to decompressing it).
    failed: bool,
}

impl Counting {
    pub(super) fn new(head: Vec<u8>, file: File) -> Counting {
        Counting {
            inner: Cursor::new(head).chain(file),
            count: 0,
            failed: false,
        }
    }
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.count += n as u64;
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.failed = true;
                }
                Err(e)
            }
        }
    }
}

/// The source of a streamed input.
pub(super) enum Decoder {
    /// An uncompressed file that cannot be memory-mapped (a pipe, for instance).
    Plain(Counting),
    /// gzip, including several concatenated members.
    Gzip(Box<flate2::bufread::MultiGzDecoder<BufReader<Counting>>>),
    /// Zstandard: several frames, skippable frames included (libzstd skips them).
    Zstd(Box<zstd::stream::read::Decoder<'static, BufReader<Counting>>>),
}

impl Decoder {
    pub(super) fn new(compression: Compression, raw: Counting) -> io::Result<Decoder> {
        Ok(match compression {
            Compression::None => Decoder::Plain(raw),
            Compression::Gzip => Decoder::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(
                BufReader::with_capacity(COMPRESSED_BUF, raw),
            ))),
            Compression::Zstd => Decoder::Zstd(Box::new(zstd::stream::read::Decoder::with_buffer(
                BufReader::with_capacity(COMPRESSED_BUF, raw),
            )?)),
        })
    }

    fn counting(&self) -> &Counting {
        match self {
            Decoder::Plain(c) => c,
            Decoder::Gzip(d) => d.get_ref().get_ref(),
            Decoder::Zstd(d) => d.get_ref().get_ref(),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(c) => c.read(buf),
            Decoder::Gzip(d) => d.read(buf),
            Decoder::Zstd(d) => d.read(buf),
        }
    }
}

/// A window over a (decompressed) stream.
pub(super) struct Stream {
    decoder: Decoder,
    compression: Compression,
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`.
    start: usize,
    /// End of the valid bytes in `buf`.
    end: usize,
    /// Stream offset of `buf[0]`.
    base: u64,
    /// The decoder has nothing more.
    eof: bool,
    /// The compressed stream ended in the middle of a frame.
    cut: bool,
    /// Size of the next read request.
    chunk: usize,
}

/// Where the bytes come from.
pub(super) enum Input {
    /// A memory-mapped uncompressed file.
    Mapped {
        /// The map.
        map: Mmap,
        /// Current offset.
        pos: usize,
        /// Everything before this offset has been prefetched.
        prefetched: usize,
        /// Everything before this offset has been dropped from this process's page tables.
        released: usize,
        /// Everything before this offset has been mapped into the page tables ahead of use.
        populated: usize,
    },
    /// A streamed (usually decompressed) file.
    Stream(Box<Stream>),
}

impl Input {
    pub(super) fn stream(decoder: Decoder, compression: Compression) -> Input {
        Input::Stream(Box::new(Stream {
            decoder,
            compression,
            buf: vec![0; STREAM_BUF],
            start: 0,
            end: 0,
            base: 0,
            eof: false,
            cut: false,
            chunk: FIRST_CHUNK,
        }))
    }

    /// Makes at least `n` bytes available from the current position. Returns `Ok(false)` if
    /// the input ends first (then [`Input::avail`] holds everything that is left).
    /// `n` must not exceed [`MAX_RECORD`] plus a few header bytes.
    #[inline]
    pub(super) fn ensure(&mut self, n: usize) -> Result<bool, Fault> {
        match self {
            Input::Mapped { map, pos, .. } => Ok(map.len() - *pos >= n),
            Input::Stream(s) => {
                if s.end - s.start >= n {
                    Ok(true)
                } else {
                    s.fill(n)
                }
            }
        }
    }

    /// The bytes available from the current position.
    #[inline]
    pub(super) fn avail(&self) -> &[u8] {
        match self {
            Input::Mapped { map, pos, .. } => &map[*pos..],
            Input::Stream(s) => &s.buf[s.start..s.end],
        }
    }

    /// Consumes `n` available bytes and lends them.
    #[inline]
    pub(super) fn take(&mut self, n: usize) -> &[u8] {
        match self {
            Input::Mapped {
                map,
                pos,
                prefetched,
                released,
                populated,
            } => {
                let at = *pos;
                let n = n.min(map.len() - at);
                *pos = at + n;
                // After a large record, start from the new position, not where prefetching
                // stopped.
                // The next record's header and the start of its packet, which is all the
                // decoder reads of it (prefetching whole records pulled payload bytes into
                // the cache that nothing reads, evicting flow state)...
                prefetch(map, at + n);
                prefetch(map, at + n + 64);
                // ...and one line per page further ahead, so the page walks are done
                // before the reader gets there.
                *prefetched = (*prefetched).max((at + n) & !4095);
                let target = (at + n + PREFETCH_DISTANCE).min(map.len());
                while *prefetched < target {
                    prefetch(map, *prefetched);
                    *prefetched += 4096;
                }
                if at + n + POPULATE_CHUNK / 2 > *populated && *populated < map.len() {
                    let len = POPULATE_CHUNK.min(map.len() - *populated);
                    // Faulting pages in one by one costs more than reading them: populate the
                    // page tables a chunk at a time. Only an optimisation: errors are ignored
                    // (pages then fault in as usual).
                    let _ = map.advise_range(memmap2::Advice::PopulateRead, *populated, len);
                    *populated += len;
                }
                if at - *released >= RELEASE_EVERY {
                    release(map, *released, at & !(RELEASE_EVERY - 1));
                    *released = at & !(RELEASE_EVERY - 1);
                }
                &map[at..at + n]
            }
            Input::Stream(s) => {
                let at = s.start;
                let n = n.min(s.end - at);
                s.start = at + n;
                &s.buf[at..at + n]
            }
        }
    }

    /// Offset of the current position in the (decompressed) stream.
    pub(super) fn offset(&self) -> u64 {
        match self {
            Input::Mapped { pos, .. } => *pos as u64,
            Input::Stream(s) => s.base + s.start as u64,
        }
    }

    /// Bytes of the underlying file consumed so far.
    pub(super) fn consumed(&self) -> u64 {
        match self {
            Input::Mapped { pos, .. } => *pos as u64,
            Input::Stream(s) => s.decoder.counting().count,
        }
    }

    /// True if a compressed stream ended before its end marker.
    pub(super) fn cut(&self) -> bool {
        match self {
            Input::Mapped { .. } => false,
            Input::Stream(s) => s.cut,
        }
    }
}

/// How much of a mapped file is mapped into the page tables at once, ahead of the reader.
const POPULATE_CHUNK: usize = 8 << 20;

/// How much of a mapped file is read before the part behind the read position is dropped
/// from the process's page tables (a power of two, a multiple of the page size).
const RELEASE_EVERY: usize = 16 << 20;

/// Drops `map[from..to]` from this process's resident set. The pages stay in the page cache
/// (a second analysis of the file is still served from memory); without this, the resident
/// set of an analysis grows with the file, since every mapped page read stays resident.
fn release(map: &Mmap, from: usize, to: usize) {
    if to <= from {
        return;
    }
    // SAFETY: the map is a read-only shared mapping of a file: MADV_DONTNEED only removes
    // page-table entries, and a later access faults the same file contents back in from the
    // page cache (it does not zero-fill, which only happens for private anonymous or
    // copy-on-write pages). No reference into the range can observe a change. `from..to`
    // lies within the map (callers pass offsets at or below the read position).
    let r =
        unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, from, to - from) };
    // Advice is an optimisation: if the kernel refuses it, the pages simply stay resident.
    let _ = r;
}

/// Asks the CPU to bring the cache line holding `bytes[at]` into the cache.
#[inline(always)]
fn prefetch(bytes: &[u8], at: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let p = bytes.as_ptr().wrapping_add(at).cast::<i8>();
        // SAFETY: `_mm_prefetch` needs SSE, which every x86_64 CPU has (baseline target
        // feature). A prefetch is only a hint: it never faults and does not dereference the
        // pointer in the language sense, whatever the address (here it is inside or just
        // past the map anyway).
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (bytes, at);
}

impl Stream {
    #[cold]
    fn fill(&mut self, n: usize) -> Result<bool, Fault> {
        if self.eof {
            return Ok(false);
        }
        if self.start + n > self.buf.len() {
            // Move the unconsumed bytes to the front, growing the window if one record needs it.
            self.buf.copy_within(self.start..self.end, 0);
            self.base += self.start as u64;
            self.end -= self.start;
            self.start = 0;
            if n > self.buf.len() {
                debug_assert!(n <= MAX_RECORD + 64);
                self.buf.resize(n, 0);
            }
        }
        while self.end - self.start < n {
            let want = self.chunk.max(n - (self.end - self.start));
            let stop = self.buf.len().min(self.end + want);
            match self.decoder.read(&mut self.buf[self.end..stop]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(k) => {
                    self.end += k.min(stop - self.end);
                    self.chunk = (self.chunk * 2).min(MAX_CHUNK);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let offset = self.base + self.end as u64;
                    if self.decoder.counting().failed || self.compression == Compression::None {
                        return Err(Fault::Io(e));
                    }
                    self.eof = true;
                    if e.kind() == io::ErrorKind::UnexpectedEof {
                        // The compressed file simply ends early: a truncated tail.
                        self.cut = true;
                        return Ok(false);
                    }
                    let what = match self.compression {
                        Compression::Gzip => "gzip",
                        _ => "zstd",
                    };
                    return Err(Fault::Corrupt {
                        offset,
                        what: format!("{what} decompression failed: {e}"),
                    });
                }
            }
        }
        Ok(true)
    }
}
