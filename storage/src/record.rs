//! The per-connection record and its enums.

use serde::{Deserialize, Serialize};

/// Why a flow record was emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// Unknown (never emitted; the zero value of the schema).
    #[default]
    Unknown,
    /// Both sides sent FIN (or one FIN and the flow went quiet after it).
    Fin,
    /// A RST ended it.
    Rst,
    /// No packet for the idle timeout.
    IdleTimeout,
    /// A half-open connection idle past the stale timeout.
    StaleTimeout,
    /// Removed to make room in a full flow table.
    Evicted,
    /// The capture ended with the flow still open.
    CaptureEnd,
    /// A new connection reused the 4-tuple (SYN with a new initial sequence number).
    PortReuse,
    /// An interim record of a flow that is still open (long-lived connections).
    Interim,
}

impl CloseReason {
    /// The snake_case name used in JSON, Parquet and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Unknown => "unknown",
            CloseReason::Fin => "fin",
            CloseReason::Rst => "rst",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::StaleTimeout => "stale_timeout",
            CloseReason::Evicted => "evicted",
            CloseReason::CaptureEnd => "capture_end",
            CloseReason::PortReuse => "port_reuse",
            CloseReason::Interim => "interim",
        }
    }
}

/// A readable verdict on a TCP connection, derived from what was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FlowState {
    /// Not a TCP flow, or nothing to say.
    #[default]
    Unknown,
    /// SYN answered by RST.
    Refused,
    /// SYN(s) only, never answered.
    NoResponse,
    /// SYN and SYN-ACK but the handshake never completed.
    IncompleteHandshake,
    /// Handshake done, still open.
    Established,
    /// Closed with FIN from both sides.
    Closed,
    /// Ended by RST after the handshake or mid-stream.
    Reset,
    /// One side sent FIN, the other did not (CloseWait / LastAck).
    HalfClosed,
    /// Picked up mid-stream (no handshake seen), still open.
    MidStream,
    /// Half-open and idle past the stale timeout.
    Stale,
    /// A UDP or ICMP flow (no TCP state).
    Stateless,
}

impl FlowState {
    /// The snake_case name used in JSON, Parquet and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            FlowState::Unknown => "unknown",
            FlowState::Refused => "refused",
            FlowState::NoResponse => "no_response",
            FlowState::IncompleteHandshake => "incomplete_handshake",
            FlowState::Established => "established",
            FlowState::Closed => "closed",
            FlowState::Reset => "reset",
            FlowState::HalfClosed => "half_closed",
            FlowState::MidStream => "mid_stream",
            FlowState::Stale => "stale",
            FlowState::Stateless => "stateless",
        }
    }
}

/// One connection's metrics. Flat: every field is a top-level JSON field and a Parquet column.
///
/// Counters of Wireshark-flagged events count frames carrying the flag, as tshark does.
/// Latencies are microseconds with nanosecond resolution (so `f64`); `None` means "not
/// measurable from what was captured", which differs from zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FlowRecord {
    // --- identity and volume ---
    /// Stable id (16 hex digits), derived from the flow key and the first-seen time.
    pub flow_id: String,
    /// First packet, nanoseconds since the Unix epoch.
    pub first_seen_ns: i64,
    /// Last packet, nanoseconds since the Unix epoch.
    pub last_seen_ns: i64,
    /// Outer VLAN id of the first packet.
    pub vlan_outer: Option<u16>,
    /// Inner VLAN id (QinQ) of the first packet.
    pub vlan_inner: Option<u16>,
    /// tcp, udp, icmp, icmpv6 or the IP protocol number.
    pub proto: String,
    /// 4 or 6.
    pub ip_version: u8,
    /// Client address (sender of the first SYN; see `client_by`).
    pub client_ip: String,
    /// Client port (ICMP: echo identifier).
    pub client_port: u16,
    /// Server address.
    pub server_ip: String,
    /// Server port.
    pub server_port: u16,
    /// How the client was chosen: `syn` (sender of the first SYN), `syn_ack` (receiver of the
    /// first SYN-ACK), `port` (the lower, well-known port is the server) or `first_packet`.
    pub client_by: String,
    /// Packets client to server.
    pub packets_c2s: u64,
    /// Packets server to client.
    pub packets_s2c: u64,
    /// Frame bytes (as on the wire) client to server.
    pub bytes_c2s: u64,
    /// Frame bytes server to client.
    pub bytes_s2c: u64,
    /// Transport payload bytes client to server (tcp.len / UDP payload).
    pub payload_bytes_c2s: u64,
    /// Transport payload bytes server to client.
    pub payload_bytes_s2c: u64,
    /// Why this record was emitted.
    pub close_reason: CloseReason,
    /// Readable verdict.
    pub state: FlowState,
    /// Non-first IP fragments (or first fragments without a full transport header) of this
    /// flow; their payload is not analysed.
    pub ip_fragments: u64,

    // --- retransmission ---
    /// Frames tshark flags `tcp.analysis.retransmission` (includes fast and spurious ones).
    pub retransmissions: u64,
    /// Frames flagged `tcp.analysis.fast_retransmission`.
    pub fast_retransmissions: u64,
    /// Frames flagged `tcp.analysis.spurious_retransmission`.
    pub spurious_retransmissions: u64,
    /// retransmissions / data-carrying segments, 0.0 to 1.0.
    pub retransmission_rate: f64,

    // --- window ---
    /// Frames flagged `tcp.analysis.zero_window`.
    pub zero_window_events: u64,
    /// Frames flagged `tcp.analysis.zero_window_probe`.
    pub zero_window_probes: u64,
    /// Frames flagged `tcp.analysis.zero_window_probe_ack`.
    pub zero_window_probe_acks: u64,
    /// Frames flagged `tcp.analysis.window_full`.
    pub window_full_events: u64,
    /// Frames flagged `tcp.analysis.window_update`.
    pub window_updates: u64,
    /// Window scale shift from the client's SYN (raw option value).
    pub window_scale_client: Option<u8>,
    /// Window scale shift from the server's SYN-ACK (raw option value).
    pub window_scale_server: Option<u8>,
    /// Mean effective (scaled) advertised window over non-SYN segments, bytes.
    pub avg_receive_window: Option<f64>,

    // --- sequence ---
    /// Frames flagged `tcp.analysis.out_of_order`.
    pub out_of_order: u64,
    /// Frames flagged `tcp.analysis.duplicate_ack`.
    pub dup_acks: u64,
    /// Frames flagged `tcp.analysis.lost_segment` (previous segment not captured).
    pub missing_segments: u64,
    /// Frames flagged `tcp.analysis.ack_lost_segment` (ACKed segment that wasn't captured).
    pub acked_unseen: u64,

    // --- connection state ---
    /// RST segments, both directions.
    pub rst_count: u64,
    /// FIN segments, both directions.
    pub fin_count: u64,
    /// SYN segments (with or without ACK), both directions.
    pub syn_count: u64,
    /// SYN-ACK segments.
    pub syn_ack_count: u64,
    /// Frames flagged `tcp.analysis.keep_alive`.
    pub keepalive_count: u64,
    /// Frames flagged `tcp.analysis.keep_alive_ack`.
    pub keepalive_ack_count: u64,
    /// Frames flagged `tcp.analysis.reused_ports`.
    pub reused_ports: u64,
    /// Wireshark's `tcp.completeness` bitmask: 1 SYN, 2 SYN-ACK, 4 ACK, 8 DATA, 16 FIN, 32 RST.
    pub connection_completeness: u8,
    /// Zeek-style history: upper case from the client, lower case from the server; S syn,
    /// H syn-ack, A pure ack, D data, F fin, R rst, T retransmission, W zero window; each
    /// letter at most once per direction in order of first appearance.
    pub history: String,

    // --- latency, microseconds ---
    /// SYN to SYN-ACK at the capture point.
    pub initial_rtt_us: Option<f64>,
    /// SYN to the ACK completing the handshake (Wireshark's `tcp.analysis.initial_rtt`).
    pub handshake_time_us: Option<f64>,
    /// SYN to the first payload byte (either direction).
    pub connection_time_us: Option<f64>,
    /// First client payload to first server payload.
    pub time_to_first_byte_us: Option<f64>,
    /// Minimum of the data-to-ACK RTT samples (Wireshark's `tcp.analysis.ack_rtt`).
    pub rtt_min_us: Option<f64>,
    /// Maximum of the data-to-ACK RTT samples.
    pub rtt_max_us: Option<f64>,
    /// Mean of the data-to-ACK RTT samples.
    pub rtt_avg_us: Option<f64>,
    /// Number of data-to-ACK RTT samples (frames carrying `tcp.analysis.ack_rtt`).
    pub rtt_samples: u64,
    /// Standard deviation of the data-to-ACK RTT samples.
    pub jitter_us: Option<f64>,
    /// RTT samples from TCP timestamps (TSval echoed in TSecr), count.
    pub ts_rtt_samples: u64,
    /// Minimum timestamp-based RTT.
    pub ts_rtt_min_us: Option<f64>,
    /// Mean timestamp-based RTT.
    pub ts_rtt_avg_us: Option<f64>,
    /// Maximum timestamp-based RTT.
    pub ts_rtt_max_us: Option<f64>,

    // --- throughput ---
    /// Payload bytes delivered once (retransmitted bytes excluded), both directions.
    pub goodput_bytes: u64,
    /// Goodput client to server.
    pub goodput_bytes_c2s: u64,
    /// Goodput server to client.
    pub goodput_bytes_s2c: u64,

    // --- ICMP errors quoting this flow ---
    /// ICMP/ICMPv6 error messages whose quoted header belongs to this flow.
    pub icmp_errors: u64,
    /// Of those: destination unreachable (ICMPv6: type 1).
    pub icmp_unreachable: u64,
    /// Of those: time exceeded.
    pub icmp_time_exceeded: u64,
    /// Of those: fragmentation needed (v4 type 3 code 4) or packet too big (v6 type 2).
    pub icmp_packet_too_big: u64,
    /// Of those: parameter problem.
    pub icmp_parameter_problem: u64,
    /// Type and code of the last ICMP error, as "type/code".
    pub icmp_last_error: Option<String>,

    // --- DNS (UDP or TCP port 53) ---
    /// DNS queries seen.
    pub dns_queries: u64,
    /// DNS responses matched to a query.
    pub dns_responses: u64,
    /// Responses with RCODE NXDOMAIN.
    pub dns_nxdomain: u64,
    /// Responses with RCODE SERVFAIL.
    pub dns_servfail: u64,
    /// Responses with any other non-zero RCODE.
    pub dns_other_errors: u64,
    /// Queries never answered by the time the flow ended.
    pub dns_unanswered: u64,
    /// Mean query-to-response latency.
    pub dns_latency_avg_us: Option<f64>,
    /// Maximum query-to-response latency.
    pub dns_latency_max_us: Option<f64>,
}

/// One DNS transaction (a query and its response, if one came).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DnsRecord {
    /// The flow that carried it.
    pub flow_id: String,
    /// Query time, ns since the epoch.
    pub query_ts_ns: i64,
    /// Client address.
    pub client_ip: String,
    /// Server address.
    pub server_ip: String,
    /// DNS transaction id.
    pub transaction_id: u16,
    /// First question's name, dotted.
    pub query_name: String,
    /// First question's type (1 A, 28 AAAA, ...).
    pub query_type: u16,
    /// Response code (0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, ...); `None` if unanswered.
    pub rcode: Option<u8>,
    /// Number of answer records.
    pub answers: u16,
    /// Query to response, microseconds; `None` if unanswered.
    pub latency_us: Option<f64>,
}
