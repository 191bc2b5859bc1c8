//! A worker's packet spill on a thread of its own.
//!
//! Storing a frame costs more than receiving it: the segment writer compresses every byte
//! with zstd. Inline, that work runs on the worker, on the core that serves the RX queue.
//! [`SpillThread`] moves it off that core: the worker copies each frame (the one copy it
//! makes anyway, since the ring slot goes back to the kernel when the callback returns) into
//! a batch, and hands full batches over a bounded queue to a thread that runs the real
//! spill. Batch buffers come back over a second queue, so the steady state allocates
//! nothing.
//!
//! The hand-off blocks when the queue is full: a spill that cannot keep up holds the worker
//! back, the kernel's ring fills, and the kernel counts the frames it drops. Nothing is lost
//! between the worker and the spill thread. Ticks travel through the same queue, after the
//! frames before them, so time-based flushes see every frame received before the tick. If
//! the spill thread dies, the worker panics with the reason, and the pipeline reports the
//! dead worker; frames are never dropped silently.

use std::{
    io, mem,
    thread::{self, JoinHandle},
};

use crossbeam_channel::{Receiver, Sender, bounded};

use super::pipeline::WorkerSpill;

/// Frames per batch at most.
const BATCH_FRAMES: usize = 1024;
/// Bytes per batch: a batch is sent once its frames reach this much.
const BATCH_BYTES: usize = 256 << 10;
/// Batches in flight (queued or being stored) per worker: with [`BATCH_BYTES`], 8 MiB.
const IN_FLIGHT: usize = 32;

/// One frame's place in a batch.
#[derive(Debug, Clone, Copy)]
struct Slot {
    ts_ns: i64,
    orig_len: u32,
    len: u32,
    flow: u64,
}

/// Frames back to back in `data`, described in order by `slots`.
#[derive(Debug, Default)]
struct Batch {
    data: Vec<u8>,
    slots: Vec<Slot>,
}

impl Batch {
    fn new() -> Self {
        Batch {
            data: Vec::with_capacity(BATCH_BYTES),
            slots: Vec::with_capacity(BATCH_FRAMES),
        }
    }

    fn is_full(&self) -> bool {
        self.slots.len() >= BATCH_FRAMES || self.data.len() >= BATCH_BYTES
    }

    fn clear(&mut self) {
        self.data.clear();
        self.slots.clear();
    }
}

enum Msg {
    Frames(Batch),
    Tick(i64),
}

/// A [`WorkerSpill`] that runs another spill on its own thread (see the module docs).
pub struct SpillThread {
    name: String,
    tx: Option<Sender<Msg>>,
    pool: Receiver<Batch>,
    batch: Batch,
    handle: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SpillThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpillThread")
            .field("name", &self.name)
            .field("pending", &self.batch.slots.len())
            .finish_non_exhaustive()
    }
}

impl SpillThread {
    /// Starts thread `name` running `inner`.
    pub fn spawn(name: impl Into<String>, mut inner: Box<dyn WorkerSpill>) -> io::Result<Self> {
        let name = name.into();
        let (tx, rx) = bounded::<Msg>(IN_FLIGHT);
        let (pool_tx, pool) = bounded::<Batch>(IN_FLIGHT);
        let handle = thread::Builder::new().name(name.clone()).spawn(move || {
            for msg in rx {
                match msg {
                    Msg::Frames(mut b) => {
                        let mut at = 0usize;
                        for s in &b.slots {
                            let end = at + s.len as usize;
                            inner.packet(s.ts_ns, s.orig_len, &b.data[at..end], s.flow);
                            at = end;
                        }
                        b.clear();
                        // The pool is as deep as the queue, so this only fails when the
                        // worker is gone.
                        let _ = pool_tx.try_send(b);
                    }
                    Msg::Tick(now_ns) => inner.tick(now_ns),
                }
            }
            // The worker dropped its sender: it is stopping.
            inner.finish();
        })?;
        Ok(SpillThread {
            name,
            tx: Some(tx),
            pool,
            batch: Batch::new(),
            handle: Some(handle),
        })
    }

    /// Sends `msg`, waiting while the queue is full; panics, naming the cause, if the spill
    /// thread is gone (it panicked: its frames cannot be stored, and saying so beats
    /// dropping them quietly).
    fn send(&mut self, msg: Msg) {
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(msg).is_ok());
        if !sent {
            self.join();
            panic!("the packet spill thread `{}` is gone", self.name);
        }
    }

    /// Hands the current batch over (if it has frames) and takes a fresh one.
    fn send_batch(&mut self) {
        if self.batch.slots.is_empty() {
            return;
        }
        let next = self.pool.try_recv().unwrap_or_else(|_| Batch::new());
        let full = mem::replace(&mut self.batch, next);
        self.send(Msg::Frames(full));
    }

    /// Waits for the spill thread; reports (on stderr) if it panicked.
    fn join(&mut self) {
        if let Some(h) = self.handle.take()
            && h.join().is_err()
        {
            eprintln!("tapvault: the packet spill thread `{}` panicked", self.name);
        }
    }
}

impl WorkerSpill for SpillThread {
    #[inline]
    fn packet(&mut self, ts_ns: i64, orig_len: u32, data: &[u8], flow: u64) {
        self.batch.data.extend_from_slice(data);
        self.batch.slots.push(Slot {
            ts_ns,
            orig_len,
            len: data.len() as u32,
            flow,
        });
        if self.batch.is_full() {
            self.send_batch();
        }
    }

    fn tick(&mut self, now_ns: i64) {
        self.send_batch();
        self.send(Msg::Tick(now_ns));
    }

    fn finish(&mut self) {
        self.send_batch();
        // Closing the queue tells the thread to finish the inner spill and end.
        self.tx = None;
        self.join();
    }
}

impl Drop for SpillThread {
    /// Stores what is pending and waits for the thread, as `finish` does, but never panics
    /// (a drop may run while the worker unwinds from a panic of its own).
    fn drop(&mut self) {
        if self.handle.is_none() {
            return;
        }
        if let Some(tx) = self.tx.take()
            && !self.batch.slots.is_empty()
        {
            let _ = tx.send(Msg::Frames(mem::take(&mut self.batch)));
        }
        self.join();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Debug, PartialEq)]
    enum Seen {
        Packet(i64, u32, Vec<u8>, u64),
        Tick(i64),
        Finish,
    }

    struct Recorder(Arc<Mutex<Vec<Seen>>>);

    impl WorkerSpill for Recorder {
        fn packet(&mut self, ts_ns: i64, orig_len: u32, data: &[u8], flow: u64) {
            let p = Seen::Packet(ts_ns, orig_len, data.to_vec(), flow);
            self.0.lock().unwrap().push(p);
        }
        fn tick(&mut self, now_ns: i64) {
            self.0.lock().unwrap().push(Seen::Tick(now_ns));
        }
        fn finish(&mut self) {
            self.0.lock().unwrap().push(Seen::Finish);
        }
    }

    fn frame(i: usize) -> Vec<u8> {
        // Sizes from 0 to past a whole batch's bytes, contents that name the frame.
        let len = match i % 7 {
            0 => 0,
            1 => 60,
            2 => 1514,
            3 => 9000,
            4 => BATCH_BYTES + 3,
            _ => 64 + i % 300,
        };
        (0..len).map(|j| (i * 31 + j) as u8).collect()
    }

    /// Every frame arrives whole, once and in order, each tick after the frames before it,
    /// and the inner spill finishes exactly once, after everything.
    #[test]
    fn frames_and_ticks_arrive_in_order_and_whole() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut t = SpillThread::spawn("spill-test", Box::new(Recorder(seen.clone()))).unwrap();
        let mut want = Vec::new();
        for i in 0..5000usize {
            let f = frame(i);
            let (ts, orig, flow) = (i as i64 * 1000, f.len() as u32 + 4, i as u64 ^ 0xabc);
            t.packet(ts, orig, &f, flow);
            want.push(Seen::Packet(ts, orig, f, flow));
            if i % 777 == 0 {
                t.tick(-(i as i64));
                want.push(Seen::Tick(-(i as i64)));
            }
        }
        t.finish();
        want.push(Seen::Finish);
        let got = mem::take(&mut *seen.lock().unwrap());
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(g == w, "entry {i} differs");
        }
        // Dropping after finish does not finish again.
        drop(t);
        assert!(seen.lock().unwrap().is_empty());
    }

    /// Dropping the spill without `finish` still stores what it holds and finishes.
    #[test]
    fn drop_finishes() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut t = SpillThread::spawn("spill-drop", Box::new(Recorder(seen.clone()))).unwrap();
        t.packet(1, 60, &[7; 60], 9);
        drop(t);
        let got = seen.lock().unwrap();
        assert_eq!(
            *got,
            vec![Seen::Packet(1, 60, vec![7; 60], 9), Seen::Finish]
        );
    }

    struct Explodes;

    impl WorkerSpill for Explodes {
        fn packet(&mut self, _: i64, _: u32, _: &[u8], _: u64) {
            panic!("storage bug");
        }
        fn tick(&mut self, _: i64) {}
        fn finish(&mut self) {}
    }

    /// A dead spill thread is not a silent loss: the worker's next hand-off panics.
    #[test]
    fn a_dead_spill_thread_is_reported() {
        let mut t = SpillThread::spawn("spill-dead", Box::new(Explodes)).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for _ in 0..(IN_FLIGHT + 4) * BATCH_FRAMES {
                t.packet(0, 60, &[0; 60], 0);
            }
            t.tick(0);
        }));
        let msg = r.expect_err("the hand-off must fail");
        let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("spill-dead"), "{msg}");
    }
}
