//! Wireshark's TCP sequence analysis, rule for rule.
//!
//! [`TcpConn::analyze`] takes one segment of a connection and returns the `tcp.analysis.*`
//! flags tshark 4.0 would show on it, plus the `ack_rtt` sample. The rules follow
//! `tcp_analyze_sequence_number` in Wireshark's `epan/dissectors/packet-tcp.c` in its
//! evaluation order; see
//! `docs/tcp-analysis.md` for each rule in words and every place we knowingly differ.

use std::collections::VecDeque;

use super::desc::Segment;
use super::key::Direction;
use crate::decode::tcp_flags as th;

/// `tcp.analysis.*` flags of one segment, as a bit set.
pub mod flags {
    /// `tcp.analysis.retransmission` (also set on fast and spurious retransmissions).
    pub const RETRANSMISSION: u32 = 1 << 0;
    /// `tcp.analysis.fast_retransmission`.
    pub const FAST_RETRANSMISSION: u32 = 1 << 1;
    /// `tcp.analysis.spurious_retransmission`.
    pub const SPURIOUS_RETRANSMISSION: u32 = 1 << 2;
    /// `tcp.analysis.duplicate_ack`.
    pub const DUPLICATE_ACK: u32 = 1 << 3;
    /// `tcp.analysis.out_of_order`.
    pub const OUT_OF_ORDER: u32 = 1 << 4;
    /// `tcp.analysis.lost_segment` (previous segment not captured).
    pub const LOST_SEGMENT: u32 = 1 << 5;
    /// `tcp.analysis.ack_lost_segment` (ACKed segment that wasn't captured).
    pub const ACK_LOST_SEGMENT: u32 = 1 << 6;
    /// `tcp.analysis.zero_window`.
    pub const ZERO_WINDOW: u32 = 1 << 7;
    /// `tcp.analysis.zero_window_probe`.
    pub const ZERO_WINDOW_PROBE: u32 = 1 << 8;
    /// `tcp.analysis.zero_window_probe_ack`.
    pub const ZERO_WINDOW_PROBE_ACK: u32 = 1 << 9;
    /// `tcp.analysis.window_full`.
    pub const WINDOW_FULL: u32 = 1 << 10;
    /// `tcp.analysis.window_update`.
    pub const WINDOW_UPDATE: u32 = 1 << 11;
    /// `tcp.analysis.keep_alive`.
    pub const KEEP_ALIVE: u32 = 1 << 12;
    /// `tcp.analysis.keep_alive_ack`.
    pub const KEEP_ALIVE_ACK: u32 = 1 << 13;
    /// `tcp.analysis.reused_ports`.
    pub const REUSED_PORTS: u32 = 1 << 14;

    /// Every flag with its tshark field suffix, in the order of the expected files.
    pub const NAMES: [(u32, &str); 15] = [
        (RETRANSMISSION, "retransmission"),
        (FAST_RETRANSMISSION, "fast_retransmission"),
        (SPURIOUS_RETRANSMISSION, "spurious_retransmission"),
        (DUPLICATE_ACK, "duplicate_ack"),
        (OUT_OF_ORDER, "out_of_order"),
        (LOST_SEGMENT, "lost_segment"),
        (ACK_LOST_SEGMENT, "ack_lost_segment"),
        (ZERO_WINDOW, "zero_window"),
        (ZERO_WINDOW_PROBE, "zero_window_probe"),
        (ZERO_WINDOW_PROBE_ACK, "zero_window_probe_ack"),
        (WINDOW_FULL, "window_full"),
        (WINDOW_UPDATE, "window_update"),
        (KEEP_ALIVE, "keep_alive"),
        (KEEP_ALIVE_ACK, "keep_alive_ack"),
        (REUSED_PORTS, "reused_ports"),
    ];
}

/// Wireshark's `tcp.completeness` bits.
pub mod completeness {
    /// A SYN was seen.
    pub const SYN: u8 = 1;
    /// A SYN-ACK was seen.
    pub const SYN_ACK: u8 = 2;
    /// An ACK was seen.
    pub const ACK: u8 = 4;
    /// Payload was seen.
    pub const DATA: u8 = 8;
    /// A FIN was seen.
    pub const FIN: u8 = 16;
    /// A RST was seen.
    pub const RST: u8 = 32;
}

/// Wireshark's TCP_MAX_UNACKED_SEGMENTS: unacknowledged segments remembered per direction
/// for RTT matching; beyond it new segments are not remembered.
pub const MAX_UNACKED: usize = 10_000;

/// Window scale state of one direction (Wireshark's `win_scale`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WinScale {
    /// Not known (no SYN seen): windows are taken as they are (-1).
    Unknown,
    /// The handshake showed that scaling is not in use (-2).
    None,
    /// Shift count, capped at 14.
    Shift(u8),
}

#[derive(Debug, Clone, Copy)]
struct Unacked {
    seq: u32,
    nextseq: u32,
    ts: i64,
}

/// Per-direction analysis state (Wireshark's `tcp_flow_t` and `tcp_analyze_seq_info`). All
/// sequence values are raw header values; 0 means "none yet", as in Wireshark.
#[derive(Debug, Clone)]
pub(crate) struct TcpDir {
    base_set: bool,
    base_seq: u32,
    nextseq: u32,
    nextseq_time: i64,
    maxseqtobeacked: u32,
    lastack: u32,
    lastack_time: i64,
    dupacknum: i32,
    /// Raw window last advertised by this direction (`u32::MAX` before the first segment).
    window: u32,
    pub(crate) win_scale: WinScale,
    /// Between this side's SYN (or SYN-ACK) and its first later pure ACK.
    is_first_ack: bool,
    lastsegmentflags: u32,
    /// Unacknowledged segments, oldest first.
    unacked: UnackedList,
}

impl Default for TcpDir {
    fn default() -> Self {
        TcpDir {
            base_set: false,
            base_seq: 0,
            nextseq: 0,
            nextseq_time: 0,
            maxseqtobeacked: 0,
            lastack: 0,
            lastack_time: 0,
            dupacknum: 0,
            window: u32::MAX,
            win_scale: WinScale::Unknown,
            is_first_ack: false,
            lastsegmentflags: 0,
            unacked: UnackedList::default(),
        }
    }
}

impl TcpDir {
    /// The effective window of a raw value advertised by this side (not on SYNs).
    fn scaled(&self, raw: u16) -> u32 {
        match self.win_scale {
            WinScale::Shift(s) => u32::from(raw) << s,
            _ => u32::from(raw),
        }
    }
}

/// The unacknowledged segments of one direction, oldest first, with Wireshark's removal rule
/// (see [`UnackedList::ack`]). While the segments are in sequence order (the usual case: no
/// retransmission of older data is pending), an ACK touches only the prefix it covers, so a
/// bulk flow with hundreds of segments in flight costs O(acknowledged) per ACK, not O(list).
#[derive(Debug, Clone, Default)]
struct UnackedList {
    segs: VecDeque<Unacked>,
    /// Every segment starts and ends at or after the one before it.
    sorted: bool,
}

impl UnackedList {
    fn len(&self) -> usize {
        self.segs.len()
    }

    fn push(&mut self, u: Unacked) {
        match self.segs.back() {
            None => self.sorted = true,
            Some(last) => {
                if !(le(last.seq, u.seq) && le(last.nextseq, u.nextseq)) {
                    self.sorted = false;
                }
            }
        }
        self.segs.push_back(u);
    }

    /// Applies an ack value: segments it covers entirely are removed, a segment it covers in
    /// part is trimmed to start at `ack`, the rest stay. Returns the time since the oldest
    /// segment that ends exactly at `ack` (Wireshark's `ack_rtt`), if any.
    fn ack(&mut self, ack: u32, ts: i64) -> Option<i64> {
        let mut rtt = None;
        if self.sorted {
            // Segments have nextseq > seq (data, SYN or FIN). Sorted by both ends, the ones
            // the ack covers entirely form a prefix; after it, segments the ack covers in part
            // (overlapping ones) are trimmed until the first one it does not reach, and every
            // later segment is untouched.
            while let Some(u) = self.segs.front() {
                if ack == u.nextseq {
                    rtt.get_or_insert(ts - u.ts);
                } else if !gt(ack, u.nextseq) {
                    break;
                }
                self.segs.pop_front();
            }
            for u in self.segs.iter_mut() {
                if le(ack, u.seq) {
                    break;
                }
                u.seq = ack;
            }
        } else {
            // The general rule, which also finds out whether what remains is in order again
            // (once the retransmitted segment that broke the order is acknowledged), so the
            // next ACK can take the fast path.
            let mut sorted = true;
            let mut prev: Option<(u32, u32)> = None;
            self.segs.retain_mut(|u| {
                let keep = if ack == u.nextseq {
                    rtt.get_or_insert(ts - u.ts);
                    false
                } else if gt(ack, u.seq) && le(ack, u.nextseq) {
                    u.seq = ack;
                    true
                } else {
                    gt(u.nextseq, ack)
                };
                if keep {
                    if let Some((seq, nextseq)) = prev
                        && !(le(seq, u.seq) && le(nextseq, u.nextseq))
                    {
                        sorted = false;
                    }
                    prev = Some((u.seq, u.nextseq));
                }
                keep
            });
            self.sorted = sorted;
        }
        rtt
    }
}

#[inline]
fn gt(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) < 0
}
#[inline]
fn lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}
#[inline]
fn le(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) <= 0
}

/// The analysis result of one segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentAnalysis {
    /// [`flags`] bits.
    pub flags: u32,
    /// `tcp.analysis.ack_rtt`: this segment acknowledged a remembered one sent this many ns
    /// earlier.
    pub ack_rtt_ns: Option<i64>,
    /// The effective (scaled) window this segment advertised, as `tcp.window_size`.
    pub window: u32,
    /// Payload bytes of this segment beyond the highest sequence seen before (goodput).
    pub new_bytes: u32,
}

/// Wireshark's per-connection TCP analysis state.
#[derive(Debug, Clone, Default)]
pub struct TcpConn {
    pub(crate) dirs: [TcpDir; 2],
    /// `tcp.completeness` bits.
    pub completeness: u8,
    /// Packets seen by [`TcpConn::analyze`] (the first one is treated specially).
    seen: u64,
    /// Completeness bits from the first frame's "new conversation" rule.
    first_bits: u8,
    /// Completeness bits from the "existing conversation" rule over every frame.
    later_bits: u8,
    /// Set by [`TcpConn::start_after_reuse`]: the next segment is the SYN that reused the ports.
    reuse_pending: bool,
    /// Time of the most recent SYN (`ts_mru_syn`).
    ts_mru_syn: Option<i64>,
    /// `tcp.analysis.initial_rtt` (`ts_first_rtt`), ns.
    pub first_rtt_ns: Option<i64>,
}

/// Unacked-list capacity (segments) a recycled connection keeps: enough for most
/// connections, small enough that a full table of recycled slots stays cheap (1 KiB per
/// direction).
const RECYCLE_UNACKED: usize = 64;

impl TcpConn {
    /// Resets this to a new connection's state, keeping the unacked lists' buffers (up to
    /// [`RECYCLE_UNACKED`] segments each), so a flow-table slot that is reused does not
    /// allocate them again.
    pub(crate) fn recycle(&mut self) {
        let bufs = self
            .dirs
            .each_mut()
            .map(|d| std::mem::take(&mut d.unacked.segs));
        *self = TcpConn::default();
        for (d, mut b) in self.dirs.iter_mut().zip(bufs) {
            if b.capacity() <= RECYCLE_UNACKED {
                b.clear();
                d.unacked.segs = b;
            }
        }
    }

    /// True if a SYN without ACK in direction `dir` starts a new connection on this 4-tuple
    /// (its ISN differs from the one this direction started with): Wireshark then opens a
    /// new `tcp.stream` flagged `reused_ports`.
    pub fn is_port_reuse(&self, dir: Direction, h: &Segment) -> bool {
        let f = &self.dirs[dir.idx()];
        h.flags & (th::SYN | th::ACK) == th::SYN && f.base_set && h.seq != f.base_seq
    }

    /// Marks this (new) connection as one that reused the ports of an earlier one.
    pub fn start_after_reuse(&mut self) {
        self.seen = 0;
        self.reuse_pending = true;
    }

    /// Analyses one segment sent in direction `dir` at `ts` (ns).
    pub fn analyze(&mut self, dir: Direction, ts: i64, h: &Segment) -> SegmentAnalysis {
        let mut out = SegmentAnalysis::default();
        let fl = h.flags;
        let (fi, ri) = (dir.idx(), dir.flip().idx());
        let reused = std::mem::take(&mut self.reuse_pending);
        let first = self.seen == 0;
        self.seen += 1;

        // A SYN-ACK with a new ISN on an existing stream: Wireshark flags it and takes the new
        // base. (A SYN with a new ISN is a new flow: the flow table handles it; a retransmitted
        // SYN with the same ISN is only a retransmission in 4.0.)
        if fl & (th::SYN | th::ACK) == th::SYN | th::ACK
            && self.dirs[fi].base_set
            && h.seq != self.dirs[fi].base_seq
        {
            self.dirs[fi].base_seq = h.seq;
            out.flags |= flags::REUSED_PORTS;
        }
        if reused {
            out.flags |= flags::REUSED_PORTS;
        }

        out.window = if fl & th::SYN != 0 {
            u32::from(h.window)
        } else {
            self.dirs[fi].scaled(h.window)
        };

        self.sequence_analysis(fi, ri, ts, h, &mut out);

        // Completeness. tshark's two-pass value on a stream's last frame is the first frame's
        // "new conversation" bits (only a pure SYN, plus data on it) joined with the
        // "existing conversation" bits of every frame, the first one included; a one-frame
        // stream has only the former.
        if first && fl & (th::SYN | th::ACK) == th::SYN {
            self.first_bits = completeness::SYN;
            if h.seg_len > 0 {
                self.first_bits |= completeness::DATA;
            }
        }
        if reused {
            self.first_bits = completeness::SYN;
        }
        if fl & (th::SYN | th::ACK) == th::SYN | th::ACK {
            self.later_bits |= completeness::SYN_ACK;
        }
        if fl & (th::SYN | th::ACK) == th::ACK {
            self.later_bits |= if h.seg_len > 0 {
                completeness::DATA
            } else {
                completeness::ACK
            };
        }
        if fl & (th::FIN | th::ACK) == th::FIN | th::ACK {
            self.later_bits |= completeness::FIN;
        }
        if fl & th::RST != 0 {
            self.later_bits |= completeness::RST;
        }
        self.completeness = if self.seen == 1 {
            self.first_bits
        } else {
            self.first_bits | self.later_bits
        };

        // Handshake timing.
        if fl & th::SYN != 0 {
            if fl & th::ACK == 0 {
                self.ts_mru_syn = Some(ts);
            }
            self.dirs[fi].is_first_ack = true;
        }
        if fl & (th::SYN | th::ACK) == th::ACK {
            if self.first_rtt_ns.is_none() {
                // A zero time is "not set" to Wireshark (nstime zero), so it keeps looking.
                if let Some(syn) = self.ts_mru_syn.filter(|&syn| syn != ts) {
                    self.first_rtt_ns = Some(ts - syn);
                }
            }
            self.dirs[fi].is_first_ack = false;
        }

        // Window scale option (any segment that carries it), then the SYN check.
        if let Some(s) = h.wscale {
            self.dirs[fi].win_scale = WinScale::Shift(s.min(14));
        }
        if fl & th::SYN != 0 {
            if self.dirs[fi].win_scale == WinScale::Unknown {
                self.dirs[fi].win_scale = WinScale::None;
                self.dirs[ri].win_scale = WinScale::None;
            } else if fl & th::ACK != 0 && self.dirs[ri].win_scale == WinScale::None {
                self.dirs[fi].win_scale = WinScale::None;
            }
        }
        out
    }

    fn sequence_analysis(
        &mut self,
        fi: usize,
        ri: usize,
        ts: i64,
        h: &Segment,
        out: &mut SegmentAnalysis,
    ) {
        let fl = h.flags;
        let seglen = h.seg_len;
        let (seq, ack, window) = (h.seq, h.ack, u32::from(h.window));
        let no_sfr = fl & (th::SYN | th::FIN | th::RST) == 0;
        let first_rtt = self.first_rtt_ns;

        let (f, r) = {
            let (a, b) = self.dirs.split_at_mut(1);
            if fi == 0 {
                (&mut a[0], &mut b[0])
            } else {
                (&mut b[0], &mut a[0])
            }
        };
        debug_assert_ne!(fi, ri);

        // Base sequence numbers.
        if !f.base_set {
            f.base_set = true;
            f.base_seq = if fl & th::SYN != 0 {
                seq
            } else {
                seq.wrapping_sub(1)
            };
        }
        if !r.base_set && fl & th::ACK != 0 {
            r.base_set = true;
            r.base_seq = ack.wrapping_sub(1);
        }

        'fwd: {
            if seglen == 1 && seq == f.nextseq && r.window == 0 {
                out.flags |= flags::ZERO_WINDOW_PROBE;
                break 'fwd;
            }
            if window == 0 && no_sfr {
                out.flags |= flags::ZERO_WINDOW;
            }
            if f.nextseq != 0 && gt(seq, f.nextseq) && fl & th::RST == 0 {
                out.flags |= flags::LOST_SEGMENT;
            }
            if seglen <= 1 && seq == f.nextseq.wrapping_sub(1) && no_sfr {
                out.flags |= flags::KEEP_ALIVE;
            }
            let same_point = seq == f.nextseq && ack == f.lastack && no_sfr && seglen == 0;
            if same_point && window != 0 && window != f.window {
                out.flags |= flags::WINDOW_UPDATE;
            }
            if seglen > 0 && r.win_scale != WinScale::Unknown && no_sfr {
                let shift = match r.win_scale {
                    WinScale::Shift(s) if !r.is_first_ack => s,
                    _ => 0,
                };
                let edge = r
                    .lastack
                    .wrapping_add(r.window.wrapping_shl(u32::from(shift)));
                if seq.wrapping_add(seglen) == edge {
                    out.flags |= flags::WINDOW_FULL;
                }
            }
            if same_point
                && window != 0
                && window == f.window
                && r.lastsegmentflags & flags::KEEP_ALIVE != 0
            {
                out.flags |= flags::KEEP_ALIVE_ACK;
                break 'fwd;
            }
            if same_point
                && window == 0
                && window == f.window
                && r.lastsegmentflags & flags::ZERO_WINDOW_PROBE != 0
            {
                out.flags |= flags::ZERO_WINDOW_PROBE_ACK;
                break 'fwd;
            }
            if same_point && window != 0 && window == f.window {
                f.dupacknum = if f.dupacknum == -1 {
                    1
                } else {
                    f.dupacknum + 1
                };
                out.flags |= flags::DUPLICATE_ACK;
            }
        }

        if ack != f.lastack {
            f.dupacknum = 0;
        }

        // ACKed segment that wasn't captured (4.0: the "hole" test is a plain unsigned
        // comparison, so the else branch is the usual one).
        if r.maxseqtobeacked != 0 && gt(ack, r.maxseqtobeacked) && fl & th::ACK != 0 {
            if lt(r.maxseqtobeacked, r.nextseq) {
                r.maxseqtobeacked = r.nextseq;
                out.flags |= flags::ACK_LOST_SEGMENT;
            } else {
                if r.dupacknum == 0 {
                    out.flags |= flags::ACK_LOST_SEGMENT;
                }
                r.dupacknum = -1;
            }
        }

        // Retransmission family.
        if seglen > 0 || fl & (th::SYN | th::FIN) != 0 {
            let mut not_adv = f.nextseq != 0 && lt(seq, f.nextseq);
            'rt: {
                if out.flags & flags::KEEP_ALIVE != 0 {
                    break 'rt;
                }
                if seglen > 1 && f.nextseq.wrapping_sub(1) == seq {
                    not_adv = false;
                }
                if seglen > 0 && r.lastack != 0 && le(seq.wrapping_add(seglen), r.lastack) {
                    out.flags |= flags::SPURIOUS_RETRANSMISSION | flags::RETRANSMISSION;
                    break 'rt;
                }
                let since_ack = ts - r.lastack_time;
                if not_adv
                    && r.dupacknum >= 2
                    && r.lastack == seq
                    && (0..20_000_000).contains(&since_ack)
                {
                    out.flags |= flags::FAST_RETRANSMISSION | flags::RETRANSMISSION;
                    break 'rt;
                }
                let since_next = ts - f.nextseq_time;
                let thres = match first_rtt {
                    Some(rtt) if rtt != 0 => rtt,
                    _ => 3_000_000,
                };
                let sf = u32::from(fl & (th::SYN | th::FIN) != 0);
                if not_adv
                    && since_next >= 0
                    && since_next < thres
                    && f.nextseq != seq.wrapping_add(seglen).wrapping_add(sf)
                {
                    out.flags |= flags::OUT_OF_ORDER;
                    break 'rt;
                }
                if not_adv {
                    out.flags |= flags::RETRANSMISSION;
                }
            }
        }

        let mut nextseq = seq.wrapping_add(seglen);
        if (seglen > 0 || fl & (th::SYN | th::FIN) != 0) && f.unacked.len() < MAX_UNACKED {
            if fl & (th::SYN | th::FIN) != 0 {
                nextseq = nextseq.wrapping_add(1);
            }
            f.unacked.push(Unacked { seq, nextseq, ts });
        }

        let zwp = out.flags & flags::ZERO_WINDOW_PROBE != 0;
        if (gt(nextseq, f.nextseq) || f.nextseq == 0) && !zwp {
            if seglen > 0 {
                out.new_bytes = if f.nextseq == 0 {
                    seglen
                } else {
                    nextseq.wrapping_sub(f.nextseq).min(seglen)
                };
            }
            f.nextseq = nextseq;
            f.nextseq_time = ts;
        }
        if (seq == f.maxseqtobeacked || f.maxseqtobeacked == 0) && !zwp {
            f.maxseqtobeacked = f.nextseq;
        }

        f.window = window;
        f.lastack = ack;
        f.lastack_time = ts;
        f.lastsegmentflags = out.flags;

        // Remove what the ack field covers from the other direction's list (Wireshark does
        // this whatever the ACK flag says). An exact match gives an RTT sample; Wireshark
        // walks newest first and the last match wins, i.e. the oldest matching segment.
        out.ack_rtt_ns = r.unacked.ack(ack, ts).filter(|&t| t != 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: Direction = Direction::AtoB;
    const S: Direction = Direction::BtoA;
    const SYN: u16 = th::SYN;
    const ACK: u16 = th::ACK;
    const FIN: u16 = th::FIN;
    const RST: u16 = th::RST;
    const MS: i64 = 1_000_000;

    fn h(seq: u32, ack: u32, fl: u16, win: u16, len: u32) -> Segment {
        Segment {
            seq,
            ack,
            flags: fl,
            window: win,
            seg_len: len,
            ..Segment::default()
        }
    }

    /// A connection after a handshake at t = 0, 10 ms, 20 ms: client ISN 1000, server ISN
    /// 5000, no window scaling, windows 8192.
    fn open() -> TcpConn {
        let mut c = TcpConn::default();
        assert_eq!(c.analyze(C, 0, &h(1000, 0, SYN, 8192, 0)).flags, 0);
        assert_eq!(
            c.analyze(S, 10 * MS, &h(5000, 1001, SYN | ACK, 8192, 0))
                .flags,
            0
        );
        assert_eq!(c.analyze(C, 20 * MS, &h(1001, 5001, ACK, 8192, 0)).flags, 0);
        assert_eq!(c.first_rtt_ns, Some(20 * MS));
        c
    }

    fn names(f: u32) -> Vec<&'static str> {
        flags::NAMES
            .iter()
            .filter(|(b, _)| f & b != 0)
            .map(|(_, n)| *n)
            .collect()
    }

    #[test]
    fn clean_connection_has_no_flags_and_full_completeness() {
        let mut c = open();
        let t = 30 * MS;
        assert_eq!(c.analyze(C, t, &h(1001, 5001, ACK, 8192, 100)).flags, 0);
        let a = c.analyze(S, t + 10 * MS, &h(5001, 1101, ACK, 8192, 0));
        assert_eq!(a.flags, 0);
        assert_eq!(a.ack_rtt_ns, Some(10 * MS));
        assert_eq!(
            c.analyze(C, t + 20 * MS, &h(1101, 5001, FIN | ACK, 8192, 0))
                .flags,
            0
        );
        assert_eq!(
            c.analyze(S, t + 30 * MS, &h(5001, 1102, FIN | ACK, 8192, 0))
                .flags,
            0
        );
        assert_eq!(
            c.analyze(C, t + 40 * MS, &h(1102, 5002, ACK, 8192, 0))
                .flags,
            0
        );
        assert_eq!(c.completeness, 31);
    }

    /// A lossy exchange: data with a gap, a retransmission, dup ACKs, a zero window.
    fn lossy(c: &mut TcpConn, t0: i64) -> Vec<SegmentAnalysis> {
        let mut v = Vec::new();
        let mut seq = 1001;
        for i in 0..40 {
            if i != 7 {
                v.push(c.analyze(C, t0 + i * MS, &h(seq, 5001, ACK, 8192, 100)));
            }
            seq += 100;
        }
        for _ in 0..3 {
            v.push(c.analyze(S, t0 + 45 * MS, &h(5001, 1701, ACK, 8192, 0)));
        }
        v.push(c.analyze(C, t0 + 300 * MS, &h(1701, 5001, ACK, 8192, 100)));
        v.push(c.analyze(S, t0 + 310 * MS, &h(5001, seq, ACK, 0, 0)));
        v
    }

    #[test]
    fn a_recycled_connection_analyses_like_a_fresh_one_and_keeps_its_buffers() {
        let mut fresh = open();
        let want = lossy(&mut fresh, 30 * MS);
        let flagged = want.iter().filter(|a| a.flags != 0).count();
        assert!(
            flagged >= 4,
            "the sequence must exercise the rules: {want:?}"
        );

        let mut c = open();
        lossy(&mut c, 30 * MS);
        let cap = c.dirs[C.idx()].unacked.segs.capacity();
        assert!(cap >= 32, "the first use grew the list: {cap}");
        c.recycle();
        assert_eq!(c.dirs[C.idx()].unacked.segs.capacity(), cap);
        assert_eq!(c.dirs[C.idx()].unacked.len(), 0);
        assert_eq!((c.completeness, c.first_rtt_ns), (0, None));
        // Same handshake as `open`, then the same exchange: the same analysis.
        c.analyze(C, 0, &h(1000, 0, SYN, 8192, 0));
        c.analyze(S, 10 * MS, &h(5000, 1001, SYN | ACK, 8192, 0));
        c.analyze(C, 20 * MS, &h(1001, 5001, ACK, 8192, 0));
        assert_eq!(lossy(&mut c, 30 * MS), want);
        assert_eq!(c.completeness, fresh.completeness);

        // A list grown beyond the bound gives its memory back.
        let mut big = TcpConn::default();
        big.dirs[0].unacked.segs.reserve(RECYCLE_UNACKED * 4);
        big.recycle();
        assert_eq!(big.dirs[0].unacked.segs.capacity(), 0);
    }

    #[test]
    fn retransmission_after_the_ooo_threshold() {
        let mut c = open();
        c.analyze(C, 30 * MS, &h(1001, 5001, ACK, 8192, 100));
        // Same data again 200 ms later (beyond the 20 ms first-RTT threshold).
        let a = c.analyze(C, 230 * MS, &h(1001, 5001, ACK, 8192, 100));
        assert_eq!(names(a.flags), ["retransmission"]);
    }

    #[test]
    fn out_of_order_within_the_first_rtt() {
        let mut c = open();
        c.analyze(C, 30 * MS, &h(1101, 5001, ACK, 8192, 100)); // gap: 1001..1101 missing
        let a = c.analyze(C, 31 * MS, &h(1001, 5001, ACK, 8192, 100));
        assert_eq!(names(a.flags), ["out_of_order"]);
    }

    #[test]
    fn lost_segment_on_a_gap() {
        let mut c = open();
        c.analyze(C, 30 * MS, &h(1001, 5001, ACK, 8192, 100));
        let a = c.analyze(C, 31 * MS, &h(1201, 5001, ACK, 8192, 100));
        assert_eq!(names(a.flags), ["lost_segment"]);
    }

    #[test]
    fn dup_acks_then_fast_retransmission() {
        let mut c = open();
        c.analyze(C, 30 * MS, &h(1001, 5001, ACK, 8192, 100));
        c.analyze(C, 31 * MS, &h(1201, 5001, ACK, 8192, 100)); // 1101 lost
        let a = c.analyze(S, 40 * MS, &h(5001, 1101, ACK, 8192, 0));
        assert_eq!(a.flags, 0);
        let d1 = c.analyze(S, 41 * MS, &h(5001, 1101, ACK, 8192, 0));
        let d2 = c.analyze(S, 42 * MS, &h(5001, 1101, ACK, 8192, 0));
        assert_eq!(names(d1.flags), ["duplicate_ack"]);
        assert_eq!(names(d2.flags), ["duplicate_ack"]);
        let r = c.analyze(C, 45 * MS, &h(1101, 5001, ACK, 8192, 100));
        assert_eq!(names(r.flags), ["retransmission", "fast_retransmission"]);
    }

    #[test]
    fn fast_retransmission_needs_the_20ms_window() {
        let mut c = open();
        c.analyze(C, 30 * MS, &h(1001, 5001, ACK, 8192, 100));
        c.analyze(C, 31 * MS, &h(1201, 5001, ACK, 8192, 100));
        c.analyze(S, 40 * MS, &h(5001, 1101, ACK, 8192, 0));
        c.analyze(S, 41 * MS, &h(5001, 1101, ACK, 8192, 0));
        c.analyze(S, 42 * MS, &h(5001, 1101, ACK, 8192, 0));
        let r = c.analyze(C, 80 * MS, &h(1101, 5001, ACK, 8192, 100));
        assert_eq!(names(r.flags), ["retransmission"]);
    }

    #[test]
    fn spurious_retransmission_of_acked_data() {
        let mut c = open();
        c.analyze(C, 30 * MS, &h(1001, 5001, ACK, 8192, 100));
        c.analyze(S, 40 * MS, &h(5001, 1101, ACK, 8192, 0));
        let r = c.analyze(C, 300 * MS, &h(1001, 5001, ACK, 8192, 100));
        assert_eq!(
            names(r.flags),
            ["retransmission", "spurious_retransmission"]
        );
    }

    #[test]
    fn acked_segment_that_was_not_captured() {
        let mut c = open();
        c.analyze(C, 30 * MS, &h(1001, 5001, ACK, 8192, 100));
        // The server acknowledges 200 bytes: the second 100 never reached the capture.
        let a = c.analyze(S, 40 * MS, &h(5001, 1201, ACK, 8192, 0));
        assert_eq!(names(a.flags), ["ack_lost_segment"]);
    }

    #[test]
    fn zero_window_probe_probe_ack_and_update() {
        let mut c = open();
        c.analyze(C, 30 * MS, &h(1001, 5001, ACK, 8192, 100));
        let z = c.analyze(S, 40 * MS, &h(5001, 1101, ACK, 0, 0));
        assert_eq!(names(z.flags), ["zero_window"]);
        let p = c.analyze(C, 240 * MS, &h(1101, 5001, ACK, 8192, 1));
        assert_eq!(names(p.flags), ["zero_window_probe"]);
        let pa = c.analyze(S, 250 * MS, &h(5001, 1101, ACK, 0, 0));
        assert_eq!(names(pa.flags), ["zero_window", "zero_window_probe_ack"]);
        let u = c.analyze(S, 300 * MS, &h(5001, 1101, ACK, 4096, 0));
        assert_eq!(names(u.flags), ["window_update"]);
    }

    #[test]
    fn window_full_at_the_advertised_edge() {
        let mut c = open();
        c.analyze(S, 25 * MS, &h(5001, 1001, ACK, 300, 0)); // server offers 300 bytes
        assert_eq!(
            c.analyze(C, 30 * MS, &h(1001, 5001, ACK, 8192, 100)).flags,
            0
        );
        let f = c.analyze(C, 31 * MS, &h(1101, 5001, ACK, 8192, 200));
        assert_eq!(names(f.flags), ["window_full"]);
    }

    #[test]
    fn window_scale_applies_to_window_full() {
        let mut c = TcpConn::default();
        let mut syn = h(1000, 0, SYN, 8192, 0);
        syn.wscale = Some(7);
        c.analyze(C, 0, &syn);
        let mut synack = h(5000, 1001, SYN | ACK, 8192, 0);
        synack.wscale = Some(2);
        c.analyze(S, MS, &synack);
        c.analyze(C, 2 * MS, &h(1001, 5001, ACK, 100, 0));
        c.analyze(S, 3 * MS, &h(5001, 1001, ACK, 100, 0)); // 100 << 2 = 400 bytes
        let a = c.analyze(C, 4 * MS, &h(1001, 5001, ACK, 100, 400));
        assert_eq!(names(a.flags), ["window_full"]);
        assert_eq!(a.window, 100 << 7);
    }

    #[test]
    fn keep_alive_and_its_ack() {
        let mut c = open();
        c.analyze(C, 30 * MS, &h(1001, 5001, ACK, 8192, 100));
        c.analyze(S, 40 * MS, &h(5001, 1101, ACK, 8192, 0));
        let k = c.analyze(C, 5_000 * MS, &h(1100, 5001, ACK, 8192, 0));
        assert_eq!(names(k.flags), ["keep_alive"]);
        let ka = c.analyze(S, 5_001 * MS, &h(5001, 1101, ACK, 8192, 0));
        assert_eq!(names(ka.flags), ["keep_alive_ack"]);
    }

    #[test]
    fn refused_connection_completeness() {
        let mut c = TcpConn::default();
        c.analyze(C, 0, &h(1000, 0, SYN, 8192, 0));
        c.analyze(S, MS, &h(0, 1001, RST | ACK, 0, 0));
        assert_eq!(c.completeness, 37);
    }

    #[test]
    fn completeness_of_partial_streams() {
        // One pure ACK carrying a byte: the first frame counts only if it is a SYN.
        let mut one = TcpConn::default();
        one.analyze(C, 0, &h(1000, 5000, ACK, 8192, 1));
        assert_eq!(one.completeness, 0);
        // Mid-stream: data and ACKs.
        let mut mid = TcpConn::default();
        mid.analyze(C, 0, &h(1000, 5000, ACK, 8192, 10));
        mid.analyze(S, MS, &h(5000, 1010, ACK, 8192, 0));
        assert_eq!(mid.completeness, 12);
        // FIN/ACK then ACK.
        let mut fin = TcpConn::default();
        fin.analyze(C, 0, &h(1000, 5000, FIN | ACK, 8192, 0));
        fin.analyze(S, MS, &h(5000, 1001, ACK, 8192, 0));
        assert_eq!(fin.completeness, 20);
    }

    #[test]
    fn retransmitted_syn_and_irtt_from_the_latest_syn() {
        let mut c = TcpConn::default();
        c.analyze(C, 0, &h(1000, 0, SYN, 8192, 0));
        let r = c.analyze(C, 1_000 * MS, &h(1000, 0, SYN, 8192, 0));
        assert_eq!(names(r.flags), ["retransmission"]);
        c.analyze(S, 1_010 * MS, &h(5000, 1001, SYN | ACK, 8192, 0));
        c.analyze(C, 1_020 * MS, &h(1001, 5001, ACK, 8192, 0));
        assert_eq!(c.first_rtt_ns, Some(20 * MS));
    }

    #[test]
    fn synack_with_a_new_isn_is_reused_ports() {
        let mut c = open();
        let a = c.analyze(S, 100 * MS, &h(9000, 1001, SYN | ACK, 8192, 0));
        assert_ne!(a.flags & flags::REUSED_PORTS, 0);
        assert!(c.is_port_reuse(C, &h(7000, 0, SYN, 8192, 0)));
        assert!(!c.is_port_reuse(C, &h(1000, 0, SYN, 8192, 0)));
    }

    #[test]
    fn sequence_wraparound() {
        let mut c = TcpConn::default();
        c.analyze(C, 0, &h(u32::MAX - 50, 0, SYN, 8192, 0));
        c.analyze(S, MS, &h(5000, u32::MAX - 49, SYN | ACK, 8192, 0));
        c.analyze(C, 2 * MS, &h(u32::MAX - 49, 5001, ACK, 8192, 0));
        assert_eq!(
            c.analyze(C, 3 * MS, &h(u32::MAX - 49, 5001, ACK, 8192, 100))
                .flags,
            0
        );
        // 50 bytes on, the sequence wraps; the next segment is in order.
        assert_eq!(c.analyze(C, 4 * MS, &h(50, 5001, ACK, 8192, 100)).flags, 0);
        let a = c.analyze(S, 5 * MS, &h(5001, 150, ACK, 8192, 0));
        assert_eq!(a.flags, 0);
        assert_eq!(a.ack_rtt_ns, Some(MS));
    }

    #[test]
    fn unacked_fast_path_equals_the_general_rule() {
        // Random sends (mostly in order, some retransmissions of older data) and acks: the
        // sorted fast path must give exactly what the general walk gives.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut resorted = 0;
        for round in 0..200 {
            let mut fast = UnackedList::default();
            let mut slow = UnackedList::default();
            let base = (rnd() as u32).wrapping_sub(round * 1000);
            let mut next = base;
            for t in 0..300i64 {
                if rnd() % 3 != 0 {
                    let len = 1 + (rnd() % 1500) as u32;
                    let seq = if rnd() % 10 == 0 {
                        next.wrapping_sub((rnd() % 4000) as u32)
                    } else {
                        next
                    };
                    let u = Unacked {
                        seq,
                        nextseq: seq.wrapping_add(len),
                        ts: t,
                    };
                    if seq == next {
                        next = seq.wrapping_add(len);
                    }
                    fast.push(u);
                    slow.push(u);
                    slow.sorted = false;
                } else {
                    let ack = next.wrapping_sub((rnd() % 6000) as u32);
                    let was_sorted = fast.sorted;
                    assert_eq!(fast.ack(ack, t + 1), slow.ack(ack, t + 1));
                    resorted += u32::from(!was_sorted && fast.sorted && !fast.segs.is_empty());
                    slow.sorted = false;
                    let f: Vec<_> = fast.segs.iter().map(|u| (u.seq, u.nextseq)).collect();
                    let s: Vec<_> = slow.segs.iter().map(|u| (u.seq, u.nextseq)).collect();
                    assert_eq!(f, s);
                }
            }
        }
        // The general rule hands the list back to the fast path once it is in order again.
        assert!(resorted > 100, "back in order only {resorted} times");
    }
}
