//! The thread that writes and syncs one [`SegmentWriter`](super::SegmentWriter)'s files, so
//! that the thread compressing packets does not wait for the kernel.
//!
//! Commands go through one bounded FIFO, so writes reach each file in the order they were
//! queued (a frame's journal record before the frame, as crash recovery needs). The queue
//! holds at most [`QUEUE`] commands (a frame is at most one 128 KiB block): when the disk is
//! slower than the traffic, the compressing thread blocks, as it did when it wrote itself.
//!
//! The first error (a full disk, say) is kept and every later write is skipped until the
//! writer [resets](Io::reset) after giving up its segment; the writer sees the error at its
//! next queued write, [barrier](Io::barrier) or [sync](Io::sync). Buffers come back through
//! a small pool so that frames do not cost an allocation each.

use std::{
    fs::File,
    io::Write,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
};

use crossbeam_channel::{Receiver, Sender, bounded};

use super::{PcapError, Result};

/// Commands the queue holds.
const QUEUE: usize = 32;
/// Spare buffers kept for reuse.
const POOL: usize = QUEUE + 8;

/// A file the thread writes: the handle and its name (for errors).
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) file: Arc<File>,
    pub(crate) path: Arc<Path>,
}

enum Cmd {
    Write(Target, Vec<u8>),
    /// `fdatasync` the files in order, then answer.
    Sync(Vec<Target>, Sender<()>),
    /// Answer once everything queued before is done.
    Barrier(Sender<()>),
}

/// The state both threads see.
#[derive(Default)]
struct Failure {
    failed: AtomicBool,
    error: Mutex<Option<PcapError>>,
}

impl Failure {
    fn set(&self, e: PcapError) {
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
        self.failed.store(true, Ordering::Release);
    }
}

/// The writer's side of its I/O thread.
pub(crate) struct Io {
    tx: Option<Sender<Cmd>>,
    pool: Receiver<Vec<u8>>,
    failure: Arc<Failure>,
    thread: Option<JoinHandle<()>>,
    /// Capacity of a new buffer when the pool is empty.
    buf_capacity: usize,
    /// Answers when the last [`sync`](Self::sync) is done.
    in_flight: Option<Receiver<()>>,
}

impl Io {
    /// Starts the thread (named `name`).
    pub(crate) fn start(name: String, buf_capacity: usize) -> std::io::Result<Io> {
        let (tx, rx) = bounded::<Cmd>(QUEUE);
        let (pool_tx, pool) = bounded::<Vec<u8>>(POOL);
        let failure = Arc::new(Failure::default());
        let f = failure.clone();
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || run(&rx, &pool_tx, &f))?;
        Ok(Io {
            tx: Some(tx),
            pool,
            failure,
            thread: Some(thread),
            buf_capacity,
            in_flight: None,
        })
    }

    /// An empty buffer to fill and [`write`](Self::write).
    pub(crate) fn buffer(&self) -> Vec<u8> {
        self.pool
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(self.buf_capacity))
    }

    /// Queues `buf` to be appended to `target`. Fails with the first error of an earlier
    /// command, if any (the buffer is then dropped, and nothing is queued).
    pub(crate) fn write(&self, target: &Target, buf: Vec<u8>) -> Result<()> {
        self.check()?;
        self.send(Cmd::Write(target.clone(), buf))
    }

    /// Queues an `fdatasync` of `targets` (in order) after everything queued so far, having
    /// first waited for the previous one to finish: when this returns, what was queued
    /// before the previous call is durable. Fails with the first error of any command so
    /// far (the previous sync's included).
    pub(crate) fn sync(&mut self, targets: Vec<Target>) -> Result<()> {
        if let Some(previous) = self.in_flight.take() {
            let _ = previous.recv();
        }
        self.check()?;
        let (done, wait) = bounded(1);
        self.send(Cmd::Sync(targets, done))?;
        self.in_flight = Some(wait);
        Ok(())
    }

    /// Waits until everything queued is done (a sync in flight included). Fails with the
    /// first error so far.
    pub(crate) fn barrier(&mut self) -> Result<()> {
        let (done, wait) = bounded(1);
        self.send(Cmd::Barrier(done))?;
        let _ = wait.recv();
        self.in_flight = None;
        self.check()
    }

    /// Waits until everything queued is done, and forgets an error: the writer gave up the
    /// files it concerned.
    pub(crate) fn reset(&mut self) {
        let _ = self.barrier();
        *self.failure.error.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.failure.failed.store(false, Ordering::Release);
    }

    fn check(&self) -> Result<()> {
        if !self.failure.failed.load(Ordering::Acquire) {
            return Ok(());
        }
        let e = self
            .failure
            .error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        // The error is reported once; later calls fail with a short reminder until a reset.
        Err(e.unwrap_or_else(|| {
            PcapError::io("write", Path::new("(segment)"))(std::io::Error::other(
                "an earlier write of this segment failed",
            ))
        }))
    }

    fn send(&self, cmd: Cmd) -> Result<()> {
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(cmd).is_ok());
        if sent {
            Ok(())
        } else {
            Err(PcapError::io("write", Path::new("(segment)"))(
                std::io::Error::other("the segment writer's I/O thread has stopped"),
            ))
        }
    }
}

impl Drop for Io {
    /// Lets the thread finish what is queued, and waits for it.
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(rx: &Receiver<Cmd>, pool: &Sender<Vec<u8>>, failure: &Failure) {
    for cmd in rx {
        match cmd {
            Cmd::Write(t, mut buf) => {
                if !failure.failed.load(Ordering::Acquire)
                    && let Err(e) = (&*t.file).write_all(&buf)
                {
                    failure.set(PcapError::io("write", &*t.path)(e));
                }
                buf.clear();
                let _ = pool.try_send(buf);
            }
            Cmd::Sync(targets, done) => {
                for t in targets {
                    if failure.failed.load(Ordering::Acquire) {
                        break;
                    }
                    if let Err(e) = t.file.sync_data() {
                        failure.set(PcapError::io("sync", &*t.path)(e));
                    }
                }
                let _ = done.send(());
            }
            Cmd::Barrier(done) => {
                let _ = done.send(());
            }
        }
    }
}
