//! The compact descriptor that crosses from a decoding worker to a flow shard.
//!
//! A shard never sees the frame: it gets the timestamp, the flow key and hash, the direction,
//! the TCP header fields and options, lengths, and for DNS the first bytes of the payload.

use super::key::{Direction, FlowKey};
use crate::decode::{Packet, TcpHeader, Transport};

/// Bytes of payload carried for DNS (ports 53/5353/5355); enough for the header and a
/// question of ordinary length.
pub const SNIPPET_LEN: usize = 128;

/// The TCP header fields the flow shard uses: a slimmer copy of [`TcpHeader`] (no ports,
/// which are in the key, and no SACK blocks), so the descriptor stays small.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Segment {
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Segment length (`tcp.len`), from the IP length fields.
    pub seg_len: u32,
    /// Flags, see [`crate::decode::tcp_flags`].
    pub flags: u16,
    /// Raw (unscaled) window field.
    pub window: u16,
    /// Window scale option (raw shift), if present.
    pub wscale: Option<u8>,
    /// Timestamps option (TSval, TSecr), if present.
    pub timestamps: Option<(u32, u32)>,
}

impl From<&TcpHeader> for Segment {
    #[inline]
    fn from(t: &TcpHeader) -> Segment {
        Segment {
            seq: t.seq,
            ack: t.ack,
            seg_len: t.seg_len,
            flags: t.flags,
            window: t.window,
            wscale: t.options.wscale,
            timestamps: t.options.timestamps,
        }
    }
}

/// What kind of packet a descriptor describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A TCP segment; the header is in [`PacketDesc::tcp`].
    Tcp,
    /// A UDP datagram with this payload length.
    Udp {
        /// UDP payload length.
        payload_len: u32,
    },
    /// An ICMP informational message (echo and the like) of its own flow.
    Icmp {
        /// ICMP type.
        icmp_type: u8,
        /// ICMP code.
        code: u8,
        /// ICMP payload length.
        payload_len: u32,
    },
    /// An ICMP error quoting the flow in [`PacketDesc::key`]; it is counted on that flow.
    IcmpError {
        /// ICMP type.
        icmp_type: u8,
        /// ICMP code.
        code: u8,
        /// ICMPv6.
        v6: bool,
    },
    /// An IP fragment without a usable transport header.
    Fragment,
    /// Another IP protocol.
    Other,
}

/// One packet as a flow shard needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketDesc {
    /// Frame number in the source, from 1 (for per-frame diagnostics).
    pub frame_no: u64,
    /// Capture time, ns since the epoch.
    pub ts_ns: i64,
    /// `key.hash64()`.
    pub hash: u64,
    /// Normalised flow key.
    pub key: FlowKey,
    /// Direction of this packet relative to the key.
    pub dir: Direction,
    /// Frame length on the wire.
    pub frame_len: u32,
    /// VLAN ids.
    pub vlan: [Option<u16>; 2],
    /// What it is.
    pub kind: Kind,
    /// The TCP header fields when `kind == Kind::Tcp`.
    pub tcp: Segment,
    /// Start of the payload for DNS (at most [`SNIPPET_LEN`] bytes), otherwise `None`: kept
    /// out of line so the descriptor of an ordinary packet stays small.
    pub snippet: Option<Box<[u8]>>,
}

/// True for the ports whose payload the shard parses (DNS, mDNS, LLMNR).
#[inline]
pub fn is_dns_port(p: u16) -> bool {
    matches!(p, 53 | 5353 | 5355)
}

impl PacketDesc {
    /// Builds the descriptor of a decoded packet.
    #[inline]
    pub fn from_packet(frame_no: u64, ts_ns: i64, frame_len: u32, p: &Packet<'_>) -> PacketDesc {
        let mut tcp = Segment::default();
        let mut want_snippet = false;
        let (key, dir, kind) = match p.transport {
            Transport::Icmp(i) if i.is_error() && i.quoted.is_some() => {
                let q = i.quoted.unwrap_or_default();
                let (key, dir) =
                    FlowKey::new(q.ip_version, q.proto, q.src, q.src_port, q.dst, q.dst_port);
                (
                    key,
                    dir,
                    Kind::IcmpError {
                        icmp_type: i.icmp_type,
                        code: i.code,
                        v6: i.v6,
                    },
                )
            }
            _ => {
                let (key, dir) = FlowKey::of_packet(p);
                let kind = match p.transport {
                    Transport::Tcp(t) => {
                        tcp = Segment::from(&t);
                        want_snippet = is_dns_port(t.src_port) || is_dns_port(t.dst_port);
                        Kind::Tcp
                    }
                    Transport::Udp(u) => {
                        want_snippet = is_dns_port(u.src_port) || is_dns_port(u.dst_port);
                        Kind::Udp {
                            payload_len: u.payload_len,
                        }
                    }
                    Transport::Icmp(i) => Kind::Icmp {
                        icmp_type: i.icmp_type,
                        code: i.code,
                        payload_len: p.payload.len() as u32,
                    },
                    Transport::Fragment => Kind::Fragment,
                    Transport::Other => Kind::Other,
                };
                (key, dir, kind)
            }
        };
        let snippet = (want_snippet && !p.payload.is_empty())
            .then(|| Box::from(&p.payload[..p.payload.len().min(SNIPPET_LEN)]));
        PacketDesc {
            frame_no,
            ts_ns,
            hash: key.hash64(),
            key,
            dir,
            frame_len,
            vlan: p.vlan,
            kind,
            tcp,
            snippet,
        }
    }

    /// The DNS payload snippet.
    pub fn snippet(&self) -> &[u8] {
        self.snippet.as_deref().unwrap_or(&[])
    }
}
