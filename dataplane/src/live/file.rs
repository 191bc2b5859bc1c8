//! A capture file as a live source: the same pipeline as live capture, fed from a file, as
//! fast as possible or at the speed it was recorded.

use std::{
    io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::{RxFrame, RxSource, SourceStats};
use crate::{
    decode::LinkType,
    source::{self, CaptureFile},
};

/// How fast a [`FileSource`] delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Speed {
    /// As fast as the pipeline takes frames.
    #[default]
    Max,
    /// At the pace of the recorded timestamps (the first frame is delivered at once).
    Recorded,
}

/// Frames delivered per [`RxSource::recv_batch`] at most.
const FILE_BATCH: usize = 64;

/// A capture file read as an [`RxSource`]. Frames keep their recorded timestamps. A file
/// has one link type for the pipeline (that of its first frame): frames of another link
/// type (possible in pcapng) are skipped and counted in [`FileSource::skipped_linktype`].
/// The end of the file is reported as an `UnexpectedEof` error, which ends the worker.
pub struct FileSource {
    name: String,
    path: PathBuf,
    cap: CaptureFile,
    link_type: LinkType,
    speed: Speed,
    start: Option<(Instant, i64)>,
    stats: SourceStats,
    skipped_linktype: u64,
}

impl FileSource {
    /// Opens `path`.
    pub fn open(path: &Path, speed: Speed) -> Result<FileSource, source::Error> {
        let mut cap = CaptureFile::open(path)?;
        let link_type = cap.next_frame()?.map_or(LinkType::ETHERNET, |f| f.linktype);
        // Start again from the first frame.
        let cap = CaptureFile::open(path).inspect(|_| drop(cap))?;
        Ok(FileSource {
            name: format!("file:{}", path.display()),
            path: path.to_path_buf(),
            cap,
            link_type,
            speed,
            start: None,
            stats: SourceStats::default(),
            skipped_linktype: 0,
        })
    }

    /// The link type of the file's frames.
    pub fn link_type(&self) -> LinkType {
        self.link_type
    }

    /// Frames skipped because their link type differs from the first frame's.
    pub fn skipped_linktype(&self) -> u64 {
        self.skipped_linktype
    }
}

impl RxSource for FileSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn recv_batch(
        &mut self,
        _timeout: Duration,
        f: &mut dyn FnMut(&RxFrame<'_>),
    ) -> io::Result<usize> {
        let mut n = 0;
        // At the recorded pace, one frame per call: a batch would hold frames back (and
        // the worker's counters) while the source waits for the next one's time.
        let batch = match self.speed {
            Speed::Max => FILE_BATCH,
            Speed::Recorded => 1,
        };
        while n < batch {
            let frame = self
                .cap
                .next_frame()
                .map_err(|e| io::Error::other(format!("{}: {e}", self.path.display())))?;
            let Some(frame) = frame else {
                if n > 0 {
                    break;
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "end of capture file",
                ));
            };
            if frame.linktype != self.link_type {
                self.skipped_linktype += 1;
                continue;
            }
            if self.speed == Speed::Recorded {
                let (t0, ts0) = *self.start.get_or_insert((Instant::now(), frame.ts_ns));
                let due = Duration::from_nanos(frame.ts_ns.saturating_sub(ts0).max(0) as u64);
                let late = t0.elapsed();
                if due > late {
                    std::thread::sleep(due - late);
                }
            }
            self.stats.received += 1;
            self.stats.received_bytes += frame.data.len() as u64;
            f(&RxFrame {
                ts_ns: frame.ts_ns,
                orig_len: frame.orig_len,
                data: frame.data,
            });
            n += 1;
        }
        Ok(n)
    }

    fn stats(&mut self) -> io::Result<SourceStats> {
        Ok(self.stats)
    }
}
