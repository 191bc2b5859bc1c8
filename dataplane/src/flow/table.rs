//! A flow shard: the flow table that one thread owns, its timeouts and eviction, and the
//! per-flow accumulators that become a [`FlowRecord`].
//!
//! The table is open addressing (a SwissTable of slab indices, keyed by the precomputed
//! symmetric hash) over a slab of fixed-size entries. Every entry sits on one of three
//! intrusive lists ordered by last activity, so timeouts pop from list heads instead of
//! scanning: half-open (stale timeout), established (idle timeout) and closing (linger after
//! FIN/RST). Under pressure the least recently active half-open flow is evicted first, so a
//! SYN flood cannot push out the established connections that matter.

use std::collections::BTreeMap;

use hashbrown::HashTable;
use hdrhistogram::Histogram;
use tapvault_config::FlowConfig;
use tapvault_storage::{CloseReason, DnsRecord, FlowRecord, FlowState};

use super::{
    desc::{Kind, PacketDesc, is_dns_port},
    dns,
    key::{Direction, FlowKey},
    tcp::{SegmentAnalysis, TcpConn, completeness as cb, flags as af},
};
use crate::decode::tcp_flags as th;

const NIL: u32 = u32::MAX;
const HALF_OPEN: usize = 0;
const ESTABLISHED: usize = 1;
const CLOSING: usize = 2;
/// A flow is moved to the tail of its activity list at most this often (packet time), not on
/// every packet: each move touches two other entries (random cache misses), and timeouts
/// and evictions are seconds-scale, so list order may lag true activity by this much.
pub const REQUEUE_NS: i64 = 100_000_000;
/// How often (in packet time) the timeout lists are looked at.
pub const EXPIRY_TICK_NS: i64 = 1_000_000;
/// Outstanding DNS queries remembered per flow.
const MAX_PENDING_DNS: usize = 64;

/// Where a shard sends what it produces.
pub trait Sink {
    /// A finished (or interim) flow record.
    fn record(&mut self, rec: FlowRecord);
    /// A DNS transaction.
    fn dns(&mut self, _rec: DnsRecord) {}
    /// Per-frame TCP analysis flags (for diagnostics), with the flow's id.
    fn frame(&mut self, _frame_no: u64, _flow_id: u64, _flags: u32) {}
    /// True if [`Sink::frame`] wants to be called.
    fn wants_frames(&self) -> bool {
        false
    }
}

/// Counters of one shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Descriptors processed.
    pub packets: u64,
    /// Flows created.
    pub flows_created: u64,
    /// Records emitted (final ones; interim records are counted separately).
    pub records: u64,
    /// Interim records emitted.
    pub interim_records: u64,
    /// Flows evicted because the table was full.
    pub evictions: u64,
    /// Established flows closed by the idle timeout.
    pub idle_timeouts: u64,
    /// Half-open flows closed by the stale timeout.
    pub stale_timeouts: u64,
    /// Flows ended by a SYN that reused their 4-tuple.
    pub port_reuses: u64,
    /// ICMP errors quoting a flow this shard does not hold.
    pub icmp_errors_unmatched: u64,
    /// Flows open now.
    pub active_flows: u64,
    /// Most flows open at once.
    pub peak_flows: u64,
}

impl ShardStats {
    /// Adds another shard's counters (peaks add up too: shards fill independently).
    pub fn merge(&mut self, o: &ShardStats) {
        self.packets += o.packets;
        self.flows_created += o.flows_created;
        self.records += o.records;
        self.interim_records += o.interim_records;
        self.evictions += o.evictions;
        self.idle_timeouts += o.idle_timeouts;
        self.stale_timeouts += o.stale_timeouts;
        self.port_reuses += o.port_reuses;
        self.icmp_errors_unmatched += o.icmp_errors_unmatched;
        self.active_flows += o.active_flows;
        self.peak_flows += o.peak_flows;
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Stats {
    n: u64,
    sum: f64,
    sumsq: f64,
    min: i64,
    max: i64,
}

impl Stats {
    fn add(&mut self, v: i64) {
        if self.n == 0 || v < self.min {
            self.min = v;
        }
        if self.n == 0 || v > self.max {
            self.max = v;
        }
        self.n += 1;
        let f = v as f64;
        self.sum += f;
        self.sumsq += f * f;
    }
    fn mean_us(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64 / 1e3)
    }
    fn min_us(&self) -> Option<f64> {
        (self.n > 0).then(|| self.min as f64 / 1e3)
    }
    fn max_us(&self) -> Option<f64> {
        (self.n > 0).then(|| self.max as f64 / 1e3)
    }
    fn stddev_us(&self) -> Option<f64> {
        (self.n > 0).then(|| {
            let m = self.sum / self.n as f64;
            ((self.sumsq / self.n as f64 - m * m).max(0.0)).sqrt() / 1e3
        })
    }
}

#[derive(Debug, Clone)]
struct PendingDns {
    id: u16,
    ts: i64,
    dir: Direction,
    qtype: u16,
    name: String,
}

/// How the client end was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientBy {
    Syn,
    SynAck,
    Port,
    FirstPacket,
}

/// One flow's state. Per-direction arrays are indexed by [`Direction`] relative to the key.
#[derive(Debug, Clone)]
struct Flow {
    key: FlowKey,
    hash: u64,
    prev: u32,
    next: u32,
    list: usize,
    first_ns: i64,
    last_ns: i64,
    /// When the flow was last put at the tail of its list.
    queued_ns: i64,
    last_interim_ns: i64,
    vlan: [Option<u16>; 2],
    /// The direction in which the client sends.
    c2s: Direction,
    client_by: ClientBy,
    packets: [u64; 2],
    bytes: [u64; 2],
    payload: [u64; 2],
    goodput: [u64; 2],
    fragments: u64,
    tcp: TcpConn,
    flag_counts: [u64; 15],
    syn: u64,
    syn_ack: u64,
    fin: u64,
    rst: u64,
    fin_dir: [bool; 2],
    data_segments: u64,
    win_sum: f64,
    win_n: u64,
    first_syn_ns: Option<i64>,
    /// Window scale option of the first SYN and of the first SYN-ACK (outer `None`: not seen).
    wscale_syn: Option<Option<u8>>,
    wscale_synack: Option<Option<u8>>,
    first_synack_ns: Option<i64>,
    first_payload_ns: [Option<i64>; 2],
    rtt: Stats,
    ts_rtt: Stats,
    /// Per direction: the newest TSval sent and when, until the peer echoes it.
    ts_pending: [Option<(u32, i64)>; 2],
    history: [u8; 24],
    history_len: u8,
    history_seen: u64,
    icmp: [u64; 5],
    icmp_last: Option<(u8, u8)>,
    dns_pending: Vec<PendingDns>,
    dns_queries: u64,
    dns_responses: u64,
    dns_rcode: [u64; 3],
    dns_latency: Stats,
}

impl Flow {
    fn new(d: &PacketDesc) -> Flow {
        // Decide the client end. The SYN rule (and SYN-ACK) is final; the port heuristic and
        // first-packet fallback may still be overridden by a later SYN of a picked-up flow.
        let (c2s, client_by) = client_of(d);
        Flow {
            key: d.key,
            hash: d.hash,
            prev: NIL,
            next: NIL,
            list: HALF_OPEN,
            first_ns: d.ts_ns,
            last_ns: d.ts_ns,
            queued_ns: d.ts_ns,
            last_interim_ns: d.ts_ns,
            vlan: d.vlan,
            c2s,
            client_by,
            packets: [0; 2],
            bytes: [0; 2],
            payload: [0; 2],
            goodput: [0; 2],
            fragments: 0,
            tcp: TcpConn::default(),
            flag_counts: [0; 15],
            syn: 0,
            syn_ack: 0,
            fin: 0,
            rst: 0,
            fin_dir: [false; 2],
            data_segments: 0,
            win_sum: 0.0,
            win_n: 0,
            first_syn_ns: None,
            wscale_syn: None,
            wscale_synack: None,
            first_synack_ns: None,
            first_payload_ns: [None; 2],
            rtt: Stats::default(),
            ts_rtt: Stats::default(),
            ts_pending: [None; 2],
            history: [0; 24],
            history_len: 0,
            history_seen: 0,
            icmp: [0; 5],
            icmp_last: None,
            dns_pending: Vec::new(),
            dns_queries: 0,
            dns_responses: 0,
            dns_rcode: [0; 3],
            dns_latency: Stats::default(),
        }
    }

    fn id(&self) -> u64 {
        flow_id(self.hash, self.first_ns)
    }

    fn push_history(&mut self, dir: Direction, letter: u8) {
        // Each letter at most once per direction, in order of first appearance.
        let client = dir == self.c2s;
        let bit = 1u64 << (u32::from(letter - b'A') + if client { 0 } else { 26 });
        if self.history_seen & bit != 0 || self.history_len as usize >= self.history.len() {
            return;
        }
        self.history_seen |= bit;
        self.history[self.history_len as usize] = if client {
            letter
        } else {
            letter.to_ascii_lowercase()
        };
        self.history_len += 1;
    }

    fn handshake_done(&self) -> bool {
        self.tcp.first_rtt_ns.is_some()
            || (self.payload[0] > 0 && self.payload[1] > 0)
            || (self.key.proto != 6 && self.packets[0] > 0 && self.packets[1] > 0)
    }

    fn tcp_state(&self, reason: CloseReason) -> FlowState {
        if self.key.proto != 6 {
            return FlowState::Stateless;
        }
        let c = self.tcp.completeness;
        let saw_syn = self.syn > self.syn_ack;
        if self.rst > 0 {
            if saw_syn && self.syn_ack == 0 && self.payload[0] == 0 && self.payload[1] == 0 {
                return FlowState::Refused;
            }
            return FlowState::Reset;
        }
        if self.fin_dir[0] && self.fin_dir[1] {
            return FlowState::Closed;
        }
        if self.fin_dir[0] || self.fin_dir[1] {
            return FlowState::HalfClosed;
        }
        // A handshake that never finished says more than "stale", whatever closed the record
        // (`close_reason` still tells a stale timeout).
        if saw_syn && self.syn_ack == 0 && self.payload == [0, 0] {
            return FlowState::NoResponse;
        }
        if self.syn_ack > 0 && self.tcp.first_rtt_ns.is_none() && c & cb::DATA == 0 {
            return FlowState::IncompleteHandshake;
        }
        if reason == CloseReason::StaleTimeout {
            return FlowState::Stale;
        }
        if saw_syn || self.syn_ack > 0 {
            return FlowState::Established;
        }
        FlowState::MidStream
    }

    fn record(&self, reason: CloseReason) -> FlowRecord {
        let c = self.c2s.idx();
        let s = self.c2s.flip().idx();
        let cd = self.c2s;
        let key = &self.key;
        let client_ip = key.addr_string(cd);
        let server_ip = key.addr_string(cd.flip());
        let (client_port, server_port) = if cd == Direction::AtoB {
            (key.port_a, key.port_b)
        } else {
            (key.port_b, key.port_a)
        };
        let fc = |f: u32| {
            af::NAMES
                .iter()
                .position(|(b, _)| *b == f)
                .map_or(0, |i| self.flag_counts[i])
        };
        let us = |ns: i64| ns as f64 / 1e3;
        let initial_rtt_us = match (self.first_syn_ns, self.first_synack_ns) {
            (Some(a), Some(b)) if b >= a => Some(us(b - a)),
            _ => None,
        };
        let first_payload = match self.first_payload_ns {
            [Some(a), Some(b)] => Some(a.min(b)),
            [Some(a), None] | [None, Some(a)] => Some(a),
            _ => None,
        };
        let connection_time_us = match (self.first_syn_ns, first_payload) {
            (Some(a), Some(b)) if b >= a => Some(us(b - a)),
            _ => None,
        };
        let time_to_first_byte_us = match (self.first_payload_ns[c], self.first_payload_ns[s]) {
            (Some(a), Some(b)) if b >= a => Some(us(b - a)),
            _ => None,
        };
        let retrans = fc(af::RETRANSMISSION);
        let history =
            String::from_utf8_lossy(&self.history[..self.history_len as usize]).into_owned();
        let dns_unanswered = self.dns_pending.len() as u64;
        FlowRecord {
            flow_id: super::key::hex16(self.id()),
            first_seen_ns: self.first_ns,
            last_seen_ns: self.last_ns,
            vlan_outer: self.vlan[0],
            vlan_inner: self.vlan[1],
            proto: proto_name(key.proto, key.ip_version),
            ip_version: key.ip_version,
            client_ip,
            client_port,
            server_ip,
            server_port,
            client_by: match self.client_by {
                ClientBy::Syn => "syn",
                ClientBy::SynAck => "syn_ack",
                ClientBy::Port => "port",
                ClientBy::FirstPacket => "first_packet",
            }
            .to_string(),
            packets_c2s: self.packets[c],
            packets_s2c: self.packets[s],
            bytes_c2s: self.bytes[c],
            bytes_s2c: self.bytes[s],
            payload_bytes_c2s: self.payload[c],
            payload_bytes_s2c: self.payload[s],
            close_reason: reason,
            state: self.tcp_state(reason),
            ip_fragments: self.fragments,
            retransmissions: retrans,
            fast_retransmissions: fc(af::FAST_RETRANSMISSION),
            spurious_retransmissions: fc(af::SPURIOUS_RETRANSMISSION),
            retransmission_rate: if self.data_segments > 0 {
                (retrans as f64 / self.data_segments as f64).min(1.0)
            } else {
                0.0
            },
            zero_window_events: fc(af::ZERO_WINDOW),
            zero_window_probes: fc(af::ZERO_WINDOW_PROBE),
            zero_window_probe_acks: fc(af::ZERO_WINDOW_PROBE_ACK),
            window_full_events: fc(af::WINDOW_FULL),
            window_updates: fc(af::WINDOW_UPDATE),
            window_scale_client: self.wscale_syn.flatten(),
            window_scale_server: self.wscale_synack.flatten(),
            avg_receive_window: (self.win_n > 0).then(|| self.win_sum / self.win_n as f64),
            out_of_order: fc(af::OUT_OF_ORDER),
            dup_acks: fc(af::DUPLICATE_ACK),
            missing_segments: fc(af::LOST_SEGMENT),
            acked_unseen: fc(af::ACK_LOST_SEGMENT),
            rst_count: self.rst,
            fin_count: self.fin,
            syn_count: self.syn,
            syn_ack_count: self.syn_ack,
            keepalive_count: fc(af::KEEP_ALIVE),
            keepalive_ack_count: fc(af::KEEP_ALIVE_ACK),
            reused_ports: fc(af::REUSED_PORTS),
            connection_completeness: self.tcp.completeness,
            history,
            initial_rtt_us,
            handshake_time_us: self.tcp.first_rtt_ns.map(us),
            connection_time_us,
            time_to_first_byte_us,
            rtt_min_us: self.rtt.min_us(),
            rtt_max_us: self.rtt.max_us(),
            rtt_avg_us: self.rtt.mean_us(),
            rtt_samples: self.rtt.n,
            jitter_us: self.rtt.stddev_us(),
            ts_rtt_samples: self.ts_rtt.n,
            ts_rtt_min_us: self.ts_rtt.min_us(),
            ts_rtt_avg_us: self.ts_rtt.mean_us(),
            ts_rtt_max_us: self.ts_rtt.max_us(),
            goodput_bytes: self.goodput[0] + self.goodput[1],
            goodput_bytes_c2s: self.goodput[c],
            goodput_bytes_s2c: self.goodput[s],
            icmp_errors: self.icmp[0],
            icmp_unreachable: self.icmp[1],
            icmp_time_exceeded: self.icmp[2],
            icmp_packet_too_big: self.icmp[3],
            icmp_parameter_problem: self.icmp[4],
            icmp_last_error: self.icmp_last.map(|(t, c)| format!("{t}/{c}")),
            dns_queries: self.dns_queries,
            dns_responses: self.dns_responses,
            dns_nxdomain: self.dns_rcode[0],
            dns_servfail: self.dns_rcode[1],
            dns_other_errors: self.dns_rcode[2],
            dns_unanswered,
            dns_latency_avg_us: self.dns_latency.mean_us(),
            dns_latency_max_us: self.dns_latency.max_us(),
        }
    }
}

/// The stable flow id: the symmetric hash mixed with the first-seen time.
pub fn flow_id(hash: u64, first_ns: i64) -> u64 {
    let mut z = hash ^ (first_ns as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn proto_name(p: u8, v: u8) -> String {
    match (p, v) {
        (6, _) => "tcp".into(),
        (17, _) => "udp".into(),
        (1, _) => "icmp".into(),
        (58, _) => "icmpv6".into(),
        (132, _) => "sctp".into(),
        (47, _) => "gre".into(),
        (50, _) => "esp".into(),
        _ => p.to_string(),
    }
}

/// Decides which direction is client-to-server from a flow's first packet.
fn client_of(d: &PacketDesc) -> (Direction, ClientBy) {
    if d.kind == Kind::Tcp {
        let f = d.tcp.flags & (th::SYN | th::ACK);
        if f == th::SYN {
            return (d.dir, ClientBy::Syn);
        }
        if f == th::SYN | th::ACK {
            return (d.dir.flip(), ClientBy::SynAck);
        }
    }
    let (sport, dport) = match d.dir {
        Direction::AtoB => (d.key.port_a, d.key.port_b),
        Direction::BtoA => (d.key.port_b, d.key.port_a),
    };
    if let Kind::Icmp { icmp_type, .. } = d.kind {
        // Echo reply (0 / 129) comes from the server.
        let reply = matches!((d.key.ip_version, icmp_type), (4, 0) | (6, 129));
        return (
            if reply { d.dir.flip() } else { d.dir },
            ClientBy::FirstPacket,
        );
    }
    if sport != dport && (sport < 1024 || dport < 1024) {
        // The lower, well-known port is the server.
        return (
            if dport < sport { d.dir } else { d.dir.flip() },
            ClientBy::Port,
        );
    }
    (d.dir, ClientBy::FirstPacket)
}

/// log2 of the flows per [`Slab`] chunk.
const CHUNK_BITS: u32 = 8;
const CHUNK: usize = 1 << CHUNK_BITS;

/// The flow entries, in fixed-size chunks addressed by slot number. Growing adds a chunk and
/// never moves the entries already there: a single `Vec<Flow>` doubling under a growing table
/// copied every live flow (about 1 KiB each) and touched twice its final size in fresh pages,
/// 4–7 % of a one-core file analysis in profiles; a chunk also never holds the old and new
/// copies at once, so peak memory stays the live set.
#[derive(Default)]
struct Slab {
    chunks: Vec<Vec<Flow>>,
    len: usize,
}

impl Slab {
    /// Slots ever allocated (live and free).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    /// Appends a flow in a new slot and returns the slot number.
    fn push(&mut self, flow: Flow) -> u32 {
        if self.len.is_multiple_of(CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        let chunk = self.chunks.last_mut().expect("a chunk was just ensured");
        chunk.push(flow);
        self.len += 1;
        (self.len - 1) as u32
    }
}

impl std::ops::Index<usize> for Slab {
    type Output = Flow;

    #[inline]
    fn index(&self, i: usize) -> &Flow {
        &self.chunks[i >> CHUNK_BITS][i & (CHUNK - 1)]
    }
}

impl std::ops::IndexMut<usize> for Slab {
    #[inline]
    fn index_mut(&mut self, i: usize) -> &mut Flow {
        &mut self.chunks[i >> CHUNK_BITS][i & (CHUNK - 1)]
    }
}

/// One shard's flow table.
pub struct FlowTable {
    cfg: FlowConfig,
    capacity: usize,
    idle_ns: Option<i64>,
    stale_ns: Option<i64>,
    linger_ns: Option<i64>,
    interim_ns: Option<i64>,
    rtt_window_ns: i64,
    index: HashTable<u32>,
    slab: Slab,
    free: Vec<u32>,
    heads: [u32; 3],
    tails: [u32; 3],
    now: i64,
    next_expiry: i64,
    stats: ShardStats,
    /// Handshake RTT (iRTT) histograms by window start (ns).
    rtt_windows: BTreeMap<i64, Histogram<u64>>,
}

impl FlowTable {
    /// A table holding at most `capacity` flows (this shard's part of `cfg.max_flows`).
    pub fn new(cfg: &FlowConfig, capacity: usize) -> FlowTable {
        let capacity = capacity.max(1);
        FlowTable {
            cfg: cfg.clone(),
            capacity,
            idle_ns: FlowConfig::nanos(cfg.idle_timeout_secs),
            stale_ns: FlowConfig::nanos(cfg.stale_timeout_secs),
            linger_ns: Some(FlowConfig::nanos(cfg.close_linger_secs).unwrap_or(0)),
            interim_ns: FlowConfig::nanos(cfg.interim_interval_secs),
            rtt_window_ns: FlowConfig::nanos(cfg.rtt_window_secs).unwrap_or(60_000_000_000),
            index: HashTable::with_capacity(capacity.min(1 << 16)),
            slab: Slab::default(),
            free: Vec::new(),
            heads: [NIL; 3],
            tails: [NIL; 3],
            now: i64::MIN,
            next_expiry: i64::MIN,
            stats: ShardStats::default(),
            rtt_windows: BTreeMap::new(),
        }
    }

    /// The configuration this table runs with.
    pub fn config(&self) -> &FlowConfig {
        &self.cfg
    }

    /// This shard's counters.
    pub fn stats(&self) -> &ShardStats {
        &self.stats
    }

    /// Handshake RTT histograms by window start, in microseconds.
    pub fn rtt_windows(&self) -> &BTreeMap<i64, Histogram<u64>> {
        &self.rtt_windows
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next, list) = {
            let f = &self.slab[i as usize];
            (f.prev, f.next, f.list)
        };
        if prev == NIL {
            self.heads[list] = next;
        } else {
            self.slab[prev as usize].next = next;
        }
        if next == NIL {
            self.tails[list] = prev;
        } else {
            self.slab[next as usize].prev = prev;
        }
    }

    fn push_tail(&mut self, i: u32, list: usize) {
        let tail = self.tails[list];
        {
            let f = &mut self.slab[i as usize];
            f.list = list;
            f.prev = tail;
            f.next = NIL;
            f.queued_ns = f.last_ns;
        }
        if tail == NIL {
            self.heads[list] = i;
        } else {
            self.slab[tail as usize].next = i;
        }
        self.tails[list] = i;
    }

    fn remove(&mut self, i: u32, reason: CloseReason, sink: &mut dyn Sink) {
        self.unlink(i);
        let hash = self.slab[i as usize].hash;
        if let Ok(e) = self.index.find_entry(hash, |&j| j == i) {
            e.remove();
        }
        let f = &mut self.slab[i as usize];
        let rec = f.record(reason);
        for q in f.dns_pending.drain(..) {
            sink.dns(DnsRecord {
                flow_id: rec.flow_id.clone(),
                query_ts_ns: q.ts,
                client_ip: f.key.addr_string(q.dir),
                server_ip: f.key.addr_string(q.dir.flip()),
                transaction_id: q.id,
                query_name: q.name,
                query_type: q.qtype,
                rcode: None,
                answers: 0,
                latency_us: None,
            });
        }
        f.tcp.recycle();
        self.free.push(i);
        self.stats.records += 1;
        self.stats.active_flows -= 1;
        sink.record(rec);
    }

    /// Closes flows whose timeout has passed at time `now` (ns). Live capture calls this on a
    /// timer so quiet shards still expire flows; file analysis calls it per packet. The
    /// lists are looked at once per [`EXPIRY_TICK_NS`] of packet time: timeouts are
    /// seconds long, so a millisecond of lateness is immaterial and the per-packet cost is a
    /// comparison.
    pub fn expire(&mut self, now: i64, sink: &mut dyn Sink) {
        if now > self.now {
            self.now = now;
        }
        if self.now < self.next_expiry {
            return;
        }
        self.next_expiry = self.now.saturating_add(EXPIRY_TICK_NS);
        let now = self.now;
        for (list, timeout) in [
            (HALF_OPEN, self.stale_ns),
            (ESTABLISHED, self.idle_ns),
            (CLOSING, self.linger_ns),
        ] {
            let Some(t) = timeout else { continue };
            loop {
                let h = self.heads[list];
                if h == NIL {
                    break;
                }
                let f = &self.slab[h as usize];
                if now - f.last_ns <= t {
                    break;
                }
                let reason = match list {
                    HALF_OPEN if f.key.proto == 6 => {
                        self.stats.stale_timeouts += 1;
                        CloseReason::StaleTimeout
                    }
                    HALF_OPEN | ESTABLISHED => {
                        self.stats.idle_timeouts += 1;
                        CloseReason::IdleTimeout
                    }
                    _ => {
                        if f.rst > 0 {
                            CloseReason::Rst
                        } else {
                            CloseReason::Fin
                        }
                    }
                };
                self.remove(h, reason, sink);
            }
        }
    }

    /// Emits every open flow with `close_reason = capture_end` (end of input).
    pub fn flush(&mut self, sink: &mut dyn Sink) {
        for list in [HALF_OPEN, ESTABLISHED, CLOSING] {
            while self.heads[list] != NIL {
                let h = self.heads[list];
                let f = &self.slab[h as usize];
                let reason = if list == CLOSING {
                    if f.rst > 0 {
                        CloseReason::Rst
                    } else {
                        CloseReason::Fin
                    }
                } else {
                    CloseReason::CaptureEnd
                };
                self.remove(h, reason, sink);
            }
        }
    }

    fn evict_one(&mut self, sink: &mut dyn Sink) {
        for list in [HALF_OPEN, CLOSING, ESTABLISHED] {
            let h = self.heads[list];
            if h != NIL {
                self.stats.evictions += 1;
                self.remove(h, CloseReason::Evicted, sink);
                return;
            }
        }
    }

    fn insert(&mut self, d: &PacketDesc, sink: &mut dyn Sink) -> u32 {
        if self.stats.active_flows as usize >= self.capacity {
            self.evict_one(sink);
        }
        let mut flow = Flow::new(d);
        let i = if let Some(i) = self.free.pop() {
            // The freed slot's state was reset by `remove`; its buffers are reused.
            std::mem::swap(&mut flow.tcp, &mut self.slab[i as usize].tcp);
            self.slab[i as usize] = flow;
            i
        } else {
            self.slab.push(flow)
        };
        let slab = &self.slab;
        self.index
            .insert_unique(d.hash, i, |&j| slab[j as usize].hash);
        self.push_tail(i, HALF_OPEN);
        self.stats.flows_created += 1;
        self.stats.active_flows += 1;
        self.stats.peak_flows = self.stats.peak_flows.max(self.stats.active_flows);
        i
    }

    fn find(&self, d: &PacketDesc) -> Option<u32> {
        let slab = &self.slab;
        self.index
            .find(d.hash, |&j| slab[j as usize].key == d.key)
            .copied()
    }

    /// Processes one packet descriptor.
    pub fn process(&mut self, d: &PacketDesc, sink: &mut dyn Sink) {
        self.stats.packets += 1;
        self.expire(d.ts_ns, sink);

        if let Kind::IcmpError {
            icmp_type,
            code,
            v6,
        } = d.kind
        {
            match self.find(d) {
                Some(i) => {
                    let f = &mut self.slab[i as usize];
                    f.icmp[0] += 1;
                    let slot = match (v6, icmp_type, code) {
                        (false, 3, 4) | (true, 2, _) => 3,
                        (false, 3, _) | (true, 1, _) => 1,
                        (false, 11, _) | (true, 3, _) => 2,
                        (false, 12, _) | (true, 4, _) => 4,
                        _ => 0,
                    };
                    if slot != 0 {
                        f.icmp[slot] += 1;
                    }
                    f.icmp_last = Some((icmp_type, code));
                }
                None => self.stats.icmp_errors_unmatched += 1,
            }
            return;
        }

        let mut idx = self.find(d);
        if let (Some(i), Kind::Tcp) = (idx, d.kind)
            && self.slab[i as usize].tcp.is_port_reuse(d.dir, &d.tcp)
        {
            self.stats.port_reuses += 1;
            self.remove(i, CloseReason::PortReuse, sink);
            let j = self.insert(d, sink);
            self.slab[j as usize].tcp.start_after_reuse();
            idx = Some(j);
        }
        let i = match idx {
            Some(i) => i,
            None => self.insert(d, sink),
        };
        let rtt_window_ns = self.rtt_window_ns;
        let f = &mut self.slab[i as usize];
        let dir = d.dir;
        let di = dir.idx();
        f.last_ns = f.last_ns.max(d.ts_ns);
        f.packets[di] += 1;
        f.bytes[di] += u64::from(d.frame_len);

        let mut frame_flags = None;
        match d.kind {
            Kind::Tcp => {
                let h = &d.tcp;
                let had_rtt = f.tcp.first_rtt_ns.is_some();
                let a: SegmentAnalysis = f.tcp.analyze(dir, d.ts_ns, h);
                frame_flags = Some(a.flags);
                let seglen = u64::from(h.seg_len);
                f.payload[di] += seglen;
                f.goodput[di] += u64::from(a.new_bytes);
                if a.flags != 0 {
                    for (k, (bit, _)) in af::NAMES.iter().enumerate() {
                        if a.flags & bit != 0 {
                            f.flag_counts[k] += 1;
                        }
                    }
                }
                if let Some(r) = a.ack_rtt_ns {
                    f.rtt.add(r);
                }
                let fl = h.flags;
                if fl & th::SYN != 0 {
                    f.syn += 1;
                    if fl & th::ACK != 0 {
                        f.syn_ack += 1;
                        f.wscale_synack.get_or_insert(h.wscale);
                        if f.first_synack_ns.is_none() && f.first_syn_ns.is_some() {
                            f.first_synack_ns = Some(d.ts_ns);
                        }
                        f.push_history(dir, b'H');
                    } else {
                        f.wscale_syn.get_or_insert(h.wscale);
                        if f.first_syn_ns.is_none() {
                            f.first_syn_ns = Some(d.ts_ns);
                        }
                        if f.client_by != ClientBy::Syn && f.syn == 1 {
                            f.c2s = dir;
                            f.client_by = ClientBy::Syn;
                        }
                        f.push_history(dir, b'S');
                    }
                } else {
                    f.win_sum += f64::from(a.window);
                    f.win_n += 1;
                }
                if fl & th::FIN != 0 {
                    f.fin += 1;
                    f.fin_dir[di] = true;
                    f.push_history(dir, b'F');
                }
                if fl & th::RST != 0 {
                    f.rst += 1;
                    f.push_history(dir, b'R');
                }
                if seglen > 0 {
                    f.data_segments += 1;
                    if f.first_payload_ns[di].is_none() {
                        f.first_payload_ns[di] = Some(d.ts_ns);
                    }
                    f.push_history(dir, b'D');
                } else if fl & (th::SYN | th::FIN | th::RST | th::ACK) == th::ACK {
                    f.push_history(dir, b'A');
                }
                if a.flags & af::RETRANSMISSION != 0 {
                    f.push_history(dir, b'T');
                }
                if a.flags & af::ZERO_WINDOW != 0 {
                    f.push_history(dir, b'W');
                }
                // RTT from TCP timestamps: the peer echoing our newest TSval.
                if let Some((tsval, tsecr)) = h.timestamps {
                    let ri = dir.flip().idx();
                    if let Some((v, t)) = f.ts_pending[ri]
                        && v == tsecr
                        && fl & th::ACK != 0
                    {
                        f.ts_rtt.add(d.ts_ns - t);
                        f.ts_pending[ri] = None;
                    }
                    if f.ts_pending[di].is_none_or(|(v, _)| v != tsval) {
                        f.ts_pending[di] = Some((tsval, d.ts_ns));
                    }
                }
                if !had_rtt && let Some(rtt) = f.tcp.first_rtt_ns {
                    let w = d.ts_ns.div_euclid(rtt_window_ns) * rtt_window_ns;
                    let us = (rtt / 1000).max(1) as u64;
                    let h = self.rtt_windows.entry(w).or_insert_with(|| {
                        Histogram::new_with_bounds(1, 3_600_000_000, 3)
                            .expect("static histogram bounds are valid")
                    });
                    h.saturating_record(us);
                }
                if d.snippet.is_some() {
                    track_dns(f, d, true, sink);
                }
            }
            Kind::Udp { payload_len } => {
                f.payload[di] += u64::from(payload_len);
                f.goodput[di] += u64::from(payload_len);
                if d.snippet.is_some() {
                    track_dns(f, d, false, sink);
                }
            }
            Kind::Icmp { payload_len, .. } => {
                f.payload[di] += u64::from(payload_len);
            }
            Kind::Fragment => f.fragments += 1,
            Kind::Other | Kind::IcmpError { .. } => {}
        }

        let f = &self.slab[i as usize];
        let first_ns = f.first_ns;
        let want = if f.rst > 0 || (f.fin_dir[0] && f.fin_dir[1]) {
            CLOSING
        } else if f.handshake_done() {
            ESTABLISHED
        } else {
            HALF_OPEN
        };
        let interim_due = self
            .interim_ns
            .is_some_and(|iv| d.ts_ns - f.last_interim_ns >= iv);
        let requeue = want != f.list || f.last_ns - f.queued_ns >= REQUEUE_NS;
        if want == CLOSING && self.linger_ns == Some(0) {
            let reason = if f.rst > 0 {
                CloseReason::Rst
            } else {
                CloseReason::Fin
            };
            self.remove(i, reason, sink);
        } else {
            if requeue {
                self.unlink(i);
                self.push_tail(i, want);
            }
            if interim_due {
                let f = &mut self.slab[i as usize];
                f.last_interim_ns = d.ts_ns;
                self.stats.interim_records += 1;
                sink.record(f.record(CloseReason::Interim));
            }
        }
        if let Some(fl) = frame_flags
            && sink.wants_frames()
        {
            sink.frame(d.frame_no, flow_id(d.hash, first_ns), fl);
        }
    }
}

fn track_dns(f: &mut Flow, d: &PacketDesc, tcp: bool, sink: &mut dyn Sink) {
    let (sport, dport) = match d.dir {
        Direction::AtoB => (d.key.port_a, d.key.port_b),
        Direction::BtoA => (d.key.port_b, d.key.port_a),
    };
    if !(is_dns_port(sport) || is_dns_port(dport)) {
        return;
    }
    let Some(m) = dns::parse(d.snippet(), tcp) else {
        return;
    };
    if !m.is_response {
        f.dns_queries += 1;
        if f.dns_pending.len() >= MAX_PENDING_DNS {
            f.dns_pending.remove(0);
        }
        f.dns_pending.push(PendingDns {
            id: m.id,
            ts: d.ts_ns,
            dir: d.dir,
            qtype: m.qtype,
            name: m.name,
        });
        return;
    }
    let Some(pos) = f
        .dns_pending
        .iter()
        .position(|q| q.id == m.id && q.dir != d.dir)
    else {
        return;
    };
    let q = f.dns_pending.remove(pos);
    f.dns_responses += 1;
    match m.rcode {
        0 => {}
        3 => f.dns_rcode[0] += 1,
        2 => f.dns_rcode[1] += 1,
        _ => f.dns_rcode[2] += 1,
    }
    let lat = d.ts_ns - q.ts;
    f.dns_latency.add(lat);
    sink.dns(DnsRecord {
        flow_id: super::key::hex16(f.id()),
        query_ts_ns: q.ts,
        client_ip: f.key.addr_string(q.dir),
        server_ip: f.key.addr_string(q.dir.flip()),
        transaction_id: q.id,
        query_name: q.name,
        query_type: q.qtype,
        rcode: Some(m.rcode),
        answers: m.answers,
        latency_us: Some(lat as f64 / 1e3),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::desc::Segment;

    #[derive(Default)]
    struct Collect(Vec<FlowRecord>);
    impl Sink for Collect {
        fn record(&mut self, rec: FlowRecord) {
            self.0.push(rec);
        }
    }

    fn v4(i: u32) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[10] = 0xff;
        a[11] = 0xff;
        a[12..].copy_from_slice(&i.to_be_bytes());
        a
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "a TCP segment has this many fields"
    )]
    fn seg(
        ts: i64,
        src: u32,
        sport: u16,
        dst: u32,
        dport: u16,
        seq: u32,
        ack: u32,
        fl: u16,
        len: u32,
    ) -> PacketDesc {
        let (key, dir) = FlowKey::new(4, 6, v4(src), sport, v4(dst), dport);
        PacketDesc {
            frame_no: 0,
            ts_ns: ts,
            hash: key.hash64(),
            key,
            dir,
            frame_len: 54 + len,
            vlan: [None; 2],
            kind: Kind::Tcp,
            tcp: Segment {
                seq,
                ack,
                flags: fl,
                window: 1000,
                seg_len: len,
                ..Default::default()
            },
            snippet: None,
        }
    }

    const S: i64 = 1_000_000_000;

    fn cfg(max_flows: usize) -> FlowConfig {
        FlowConfig {
            max_flows,
            ..FlowConfig::default()
        }
    }

    #[test]
    fn handshake_data_and_close_give_one_closed_record() {
        let mut t = FlowTable::new(&cfg(100), 100);
        let mut out = Collect::default();
        let (c, s) = (0x0a00_0001, 0x0a00_0002);
        for d in [
            seg(0, c, 40000, s, 80, 100, 0, th::SYN, 0),
            seg(1_000, s, 80, c, 40000, 900, 101, th::SYN | th::ACK, 0),
            seg(2_000, c, 40000, s, 80, 101, 901, th::ACK, 0),
            seg(3_000, c, 40000, s, 80, 101, 901, th::ACK | th::PSH, 10),
            seg(4_000, s, 80, c, 40000, 901, 111, th::ACK, 0),
            seg(5_000, c, 40000, s, 80, 111, 901, th::FIN | th::ACK, 0),
            seg(6_000, s, 80, c, 40000, 901, 112, th::FIN | th::ACK, 0),
            seg(7_000, c, 40000, s, 80, 112, 902, th::ACK, 0),
        ] {
            t.process(&d, &mut out);
        }
        assert!(out.0.is_empty(), "lingers after close");
        t.expire(7_000 + 6 * S, &mut out);
        assert_eq!(out.0.len(), 1);
        let r = &out.0[0];
        assert_eq!(r.close_reason, CloseReason::Fin);
        assert_eq!(r.state, FlowState::Closed);
        assert_eq!((r.client_ip.as_str(), r.client_port), ("10.0.0.1", 40000));
        assert_eq!((r.packets_c2s, r.packets_s2c), (5, 3));
        assert_eq!(r.connection_completeness, 31);
        assert_eq!(r.initial_rtt_us, Some(1.0));
        assert_eq!(r.handshake_time_us, Some(2.0));
        assert_eq!(r.history, "ShADaFf");
        assert_eq!(r.goodput_bytes_c2s, 10);
    }

    #[test]
    fn half_open_goes_stale_and_established_goes_idle() {
        let mut t = FlowTable::new(&cfg(100), 100);
        let mut out = Collect::default();
        t.process(&seg(0, 1, 1000, 2, 80, 1, 0, th::SYN, 0), &mut out);
        // Data one way only: half-open, goes stale.
        t.process(&seg(0, 5, 1000, 6, 80, 1, 0, th::ACK, 5), &mut out);
        t.process(&seg(0, 3, 1000, 4, 80, 1, 0, th::ACK, 5), &mut out);
        t.process(&seg(1, 4, 80, 3, 1000, 9, 6, th::ACK, 5), &mut out);
        t.expire(11 * S, &mut out);
        assert_eq!(out.0.len(), 2);
        assert!(
            out.0
                .iter()
                .all(|r| r.close_reason == CloseReason::StaleTimeout)
        );
        let by_port = |p: u16| {
            out.0
                .iter()
                .find(|r| r.client_port == 1000 && r.server_ip.ends_with(&p.to_string()))
                .unwrap()
                .state
        };
        assert_eq!(by_port(2), FlowState::NoResponse);
        assert_eq!(by_port(6), FlowState::Stale);
        t.expire(302 * S, &mut out);
        assert_eq!(out.0.len(), 3);
        assert_eq!(out.0[2].close_reason, CloseReason::IdleTimeout);
        assert_eq!(out.0[2].state, FlowState::MidStream);
        assert_eq!(t.stats().stale_timeouts, 2);
        assert_eq!(t.stats().idle_timeouts, 1);
    }

    #[test]
    fn refused_and_no_response_states() {
        let mut t = FlowTable::new(&cfg(100), 100);
        let mut out = Collect::default();
        t.process(&seg(0, 1, 1000, 2, 81, 1, 0, th::SYN, 0), &mut out);
        t.process(
            &seg(1, 2, 81, 1, 1000, 0, 2, th::RST | th::ACK, 0),
            &mut out,
        );
        t.process(&seg(2, 1, 1001, 2, 82, 1, 0, th::SYN, 0), &mut out);
        t.flush(&mut out);
        let by_port = |p: u16| out.0.iter().find(|r| r.server_port == p).unwrap();
        assert_eq!(by_port(81).state, FlowState::Refused);
        assert_eq!(by_port(81).connection_completeness, 37);
        assert_eq!(by_port(82).state, FlowState::NoResponse);
        assert_eq!(by_port(82).close_reason, CloseReason::CaptureEnd);
    }

    #[test]
    fn syn_with_new_isn_starts_a_new_flow() {
        let mut t = FlowTable::new(&cfg(100), 100);
        let mut out = Collect::default();
        t.process(&seg(0, 1, 1000, 2, 80, 100, 0, th::SYN, 0), &mut out);
        t.process(
            &seg(1, 2, 80, 1, 1000, 0, 101, th::RST | th::ACK, 0),
            &mut out,
        );
        t.process(&seg(2, 1, 1000, 2, 80, 7000, 0, th::SYN, 0), &mut out);
        assert_eq!(out.0.len(), 1);
        assert_eq!(out.0[0].close_reason, CloseReason::PortReuse);
        t.flush(&mut out);
        assert_eq!(out.0[1].reused_ports, 1);
        assert_ne!(out.0[0].flow_id, out.0[1].flow_id);
        assert_eq!(t.stats().port_reuses, 1);
    }

    #[test]
    fn syn_flood_is_bounded_and_spares_established_flows() {
        let cap = 1_000;
        let mut t = FlowTable::new(&cfg(cap), cap);
        let mut out = Collect::default();
        // One established connection first.
        let (c, s) = (0x0a00_0001, 0x0a00_0002);
        t.process(&seg(0, c, 40000, s, 443, 1, 0, th::SYN, 0), &mut out);
        t.process(
            &seg(1, s, 443, c, 40000, 1, 2, th::SYN | th::ACK, 0),
            &mut out,
        );
        t.process(&seg(2, c, 40000, s, 443, 2, 2, th::ACK, 0), &mut out);
        let n = 50_000u32;
        for i in 0..n {
            // Distinct sources, 1 µs apart: all within the stale timeout.
            t.process(
                &seg(
                    3 + i64::from(i) * 1000,
                    0x6400_0000 + i,
                    1024,
                    s,
                    443,
                    i,
                    0,
                    th::SYN,
                    0,
                ),
                &mut out,
            );
        }
        assert!(t.slab.len() <= cap, "slab grew to {}", t.slab.len());
        assert_eq!(t.stats().evictions, u64::from(n) - (cap as u64 - 1));
        assert!(out.0.iter().all(|r| r.close_reason == CloseReason::Evicted));
        assert!(
            out.0
                .iter()
                .all(|r| r.server_port == 443 && r.client_port == 1024)
        );
        // The established connection is still there.
        t.flush(&mut out);
        let est = out.0.iter().find(|r| r.client_port == 40000).unwrap();
        assert_eq!(est.close_reason, CloseReason::CaptureEnd);
    }

    #[test]
    fn interim_records_for_long_flows() {
        let mut c = cfg(100);
        c.interim_interval_secs = 10.0;
        let mut t = FlowTable::new(&c, 100);
        let mut out = Collect::default();
        for i in 0..30 {
            t.process(
                &seg(i * S, 1, 1000, 2, 80, 1 + i as u32, 1, th::ACK, 1),
                &mut out,
            );
        }
        let interim = out
            .0
            .iter()
            .filter(|r| r.close_reason == CloseReason::Interim)
            .count();
        assert_eq!(interim, 2);
        assert_eq!(t.stats().interim_records, 2);
    }
}
