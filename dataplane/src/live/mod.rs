//! Live capture: packet sources that read a network interface, and the pipeline that runs
//! their frames through decode and the flow shards.
//!
//! A source is one receive queue: an AF_XDP socket bound to one NIC RX queue
//! (`xsk`, appliance mode) or one member of an AF_PACKET fanout group (`afpacket`,
//! on-node mode). Each is served by one worker thread, which calls
//! [`RxSource::recv_batch`] in a loop and sees every frame of the batch through a callback
//! while the frame still sits in the ring: decoding and the copy into the storage writer's
//! block buffer happen there, and the ring slot goes back to the kernel as soon as the
//! callback returns.

pub mod afpacket;
pub mod sys;
pub mod xdp;
pub mod xsk;

use std::{io, time::Duration};

/// One received frame, borrowed from the source's ring for the duration of a callback.
#[derive(Debug, Clone, Copy)]
pub struct RxFrame<'a> {
    /// Arrival time, nanoseconds since the Unix epoch (CLOCK_REALTIME).
    pub ts_ns: i64,
    /// Length on the wire (may exceed `data.len()` when the frame was truncated to the snap
    /// length).
    pub orig_len: u32,
    /// The frame from its link-layer header on (Ethernet for both source kinds).
    pub data: &'a [u8],
}

/// Loss and volume counters a source reads from the kernel. Cumulative since the source was
/// opened; fields a source kind does not have stay 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Frames handed to user space.
    pub received: u64,
    /// Bytes (captured length) handed to user space.
    pub received_bytes: u64,
    /// Frames the kernel dropped because the ring was full (AF_XDP `rx_ring_full`;
    /// AF_PACKET `tp_drops`).
    pub ring_full: u64,
    /// AF_XDP: frames lost for want of a buffer, the fill ring being empty (`rx_dropped`;
    /// not `rx_fill_ring_empty_descs`, which counts the same drops and, in zero-copy
    /// drivers, empty-ring observations that lost nothing).
    pub fill_ring_empty: u64,
    /// AF_XDP: invalid RX descriptors (`rx_invalid_descs`). AF_PACKET: ring entries with
    /// impossible offsets, skipped with the rest of their block (never seen in practice).
    pub invalid_descs: u64,
    /// AF_PACKET: times the ring was frozen by the kernel (`tp_freeze_q_cnt`).
    pub freezes: u64,
}

/// A live packet source serving one receive queue.
pub trait RxSource: Send {
    /// A short name for logs and status, for example `xsk:eth0/q1` or `afpacket:eth0/3`.
    fn name(&self) -> &str;

    /// Waits up to `timeout` for frames and calls `f` once for every frame of one batch, in
    /// arrival order. Returns the number of frames delivered (0 on time-out). Ring slots
    /// are returned to the kernel before this returns.
    fn recv_batch(
        &mut self,
        timeout: Duration,
        f: &mut dyn FnMut(&RxFrame<'_>),
    ) -> io::Result<usize>;

    /// The kernel's counters for this source.
    fn stats(&mut self) -> io::Result<SourceStats>;
}

pub mod file;
pub mod pipeline;
pub mod spill;
