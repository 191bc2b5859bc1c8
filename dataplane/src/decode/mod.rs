//! Zero-allocation packet decoding from a link-layer frame down to TCP, UDP or ICMP.
//!
//! The entry point is [`decode`]. It walks the link layer named by a [`LinkType`], any VLAN tags,
//! MPLS labels, PPPoE and the tunnels that mirrored traffic arrives in (GRE, ERSPAN II/III, VXLAN),
//! and stops at the innermost IP header and its transport header, as tshark shows the flow.
//! Everything it returns borrows from the input; nothing is copied or allocated.

/// A link-layer header type, as numbered by the tcpdump group's `LINKTYPE_` registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkType(pub u32);

impl LinkType {
    /// BSD loopback encapsulation (4-byte host-order address family).
    pub const NULL: LinkType = LinkType(0);
    /// Ethernet II / 802.3.
    pub const ETHERNET: LinkType = LinkType(1);
    /// FDDI (bit order of addresses irrelevant here).
    pub const FDDI: LinkType = LinkType(10);
    /// Raw IP (v4 or v6 from the version nibble).
    pub const RAW: LinkType = LinkType(101);
    /// IEEE 802.11 without radio header.
    pub const IEEE802_11: LinkType = LinkType(105);
    /// OpenBSD loopback (4-byte network-order address family).
    pub const LOOP: LinkType = LinkType(108);
    /// Linux cooked capture v1.
    pub const LINUX_SLL: LinkType = LinkType(113);
    /// Raw IPv4.
    pub const IPV4: LinkType = LinkType(228);
    /// Raw IPv6.
    pub const IPV6: LinkType = LinkType(229);
    /// Linux netfilter NFLOG.
    pub const NFLOG: LinkType = LinkType(239);
    /// Linux cooked capture v2.
    pub const LINUX_SLL2: LinkType = LinkType(276);
    /// Raw IP as some BSDs number `DLT_RAW` (found in pcap files written by them).
    pub const RAW_12: LinkType = LinkType(12);
    /// Raw IP as OpenBSD numbers `DLT_RAW` (found in pcap files written by it).
    pub const RAW_14: LinkType = LinkType(14);
}

/// TCP header flag bits (low byte of the flags field, plus NS/ECE/CWR in the high bits).
pub mod tcp_flags {
    /// No more data from sender.
    pub const FIN: u16 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u16 = 0x02;
    /// Reset the connection.
    pub const RST: u16 = 0x04;
    /// Push function.
    pub const PSH: u16 = 0x08;
    /// Acknowledgment field significant.
    pub const ACK: u16 = 0x10;
    /// Urgent pointer field significant.
    pub const URG: u16 = 0x20;
    /// ECN-Echo.
    pub const ECE: u16 = 0x40;
    /// Congestion window reduced.
    pub const CWR: u16 = 0x80;
}

/// Maximum number of SACK blocks a TCP header can carry.
pub const MAX_SACK_BLOCKS: usize = 4;

/// Parsed TCP options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpOptions {
    /// Maximum segment size.
    pub mss: Option<u16>,
    /// Window scale shift count as sent (raw, not capped).
    pub wscale: Option<u8>,
    /// SACK permitted.
    pub sack_permitted: bool,
    /// SACK blocks (left edge, right edge); `sack_count` of them are valid.
    pub sack: [(u32, u32); MAX_SACK_BLOCKS],
    /// Number of valid entries in `sack`.
    pub sack_count: u8,
    /// Timestamps option (TSval, TSecr).
    pub timestamps: Option<(u32, u32)>,
}

/// A TCP header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpHeader {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Flags, see [`tcp_flags`].
    pub flags: u16,
    /// Raw (unscaled) window field.
    pub window: u16,
    /// Header length in bytes (data offset * 4).
    pub header_len: u8,
    /// Options.
    pub options: TcpOptions,
    /// Segment length (`tcp.len`): IP payload length minus the TCP header, from the IP length
    /// fields, not from the captured length (a snapped capture still has the true length).
    pub seg_len: u32,
}

/// A UDP header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpHeader {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Payload length from the UDP length field (or the IP length when that is bogus).
    pub payload_len: u32,
}

/// The connection that an ICMP error message quotes (from the embedded IP and L4 header),
/// oriented as the quoted packet was sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quoted {
    /// 4 or 6.
    pub ip_version: u8,
    /// Source address of the quoted packet (IPv4 in IPv4-mapped IPv6 form).
    pub src: [u8; 16],
    /// Destination address of the quoted packet.
    pub dst: [u8; 16],
    /// IP protocol of the quoted packet.
    pub proto: u8,
    /// Source port of the quoted packet (0 when not TCP/UDP).
    pub src_port: u16,
    /// Destination port of the quoted packet.
    pub dst_port: u16,
}

/// An ICMP or ICMPv6 header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IcmpHeader {
    /// ICMP type.
    pub icmp_type: u8,
    /// ICMP code.
    pub code: u8,
    /// True for ICMPv6.
    pub v6: bool,
    /// Identifier for echo request/reply (0 otherwise).
    pub echo_id: u16,
    /// For error messages (unreachable, time exceeded, parameter problem, packet too big,
    /// source quench, redirect): the connection the quoted header belongs to, if it could be
    /// parsed.
    pub quoted: Option<Quoted>,
}

impl IcmpHeader {
    /// True if this is an error message (as opposed to an informational one such as echo).
    pub fn is_error(&self) -> bool {
        if self.v6 {
            self.icmp_type < 128
        } else {
            matches!(self.icmp_type, 3 | 4 | 5 | 11 | 12)
        }
    }
}

/// The transport layer found inside the innermost IP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP.
    Tcp(TcpHeader),
    /// UDP.
    Udp(UdpHeader),
    /// ICMP (v4) or ICMPv6.
    Icmp(IcmpHeader),
    /// A non-first IP fragment, or a first fragment whose transport header is incomplete:
    /// the transport header is not available. Counted and tracked as a fragment.
    Fragment,
    /// Any other IP protocol (carried as `Ip::proto`).
    Other,
}

/// IPv4 fragmentation state of a packet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fragment {
    /// True if the packet is a fragment (MF set or offset non-zero, or an IPv6 fragment header).
    pub is_fragment: bool,
    /// Fragment offset in bytes.
    pub offset: u32,
    /// More fragments follow.
    pub more: bool,
    /// IP identification.
    pub id: u32,
}

/// The innermost IP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpHeader {
    /// 4 or 6.
    pub version: u8,
    /// Source address; IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`).
    pub src: [u8; 16],
    /// Destination address, same form.
    pub dst: [u8; 16],
    /// Transport protocol (after the IPv6 extension-header chain).
    pub proto: u8,
    /// TTL / hop limit.
    pub ttl: u8,
    /// Fragmentation.
    pub frag: Fragment,
}

/// Encapsulations seen on the way to the innermost IP header, as a bit set.
pub mod encap {
    /// 802.1Q / 802.1ad tag(s).
    pub const VLAN: u16 = 1 << 0;
    /// MPLS label stack.
    pub const MPLS: u16 = 1 << 1;
    /// PPPoE session.
    pub const PPPOE: u16 = 1 << 2;
    /// GRE.
    pub const GRE: u16 = 1 << 3;
    /// ERSPAN type II.
    pub const ERSPAN2: u16 = 1 << 4;
    /// ERSPAN type III.
    pub const ERSPAN3: u16 = 1 << 5;
    /// VXLAN.
    pub const VXLAN: u16 = 1 << 6;
    /// IP in IP (4in4, 6in4, 4in6, 6in6).
    pub const IPIP: u16 = 1 << 7;
    /// 802.11 frame (e.g. Aruba GRE).
    pub const WLAN: u16 = 1 << 8;
}

/// A decoded packet: everything the flow engine needs, borrowed from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// Outer and inner VLAN ids (the first two tags seen).
    pub vlan: [Option<u16>; 2],
    /// Encapsulations traversed, see [`encap`].
    pub encap: u16,
    /// The innermost IP header.
    pub ip: IpHeader,
    /// The transport header.
    pub transport: Transport,
    /// The captured part of the transport payload (may be shorter than the true length).
    pub payload: &'a [u8],
}

/// Why a frame could not be decoded down to its innermost IP layer. Every variant is a
/// counter in the capture health summary; `as_str` is its stable name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Malformed {
    /// The link-layer header is cut short.
    TruncatedLink,
    /// A VLAN, MPLS, PPPoE, LLC/SNAP or 802.11 header is cut short.
    TruncatedEncap,
    /// A tunnel header (GRE, ERSPAN, VXLAN) is cut short or invalid.
    BadTunnel,
    /// The IP header is cut short.
    TruncatedIp,
    /// IP version field does not match (not 4 or 6 where IP was expected).
    BadIpVersion,
    /// IPv4 IHL < 5 or larger than the packet.
    BadIpHeaderLen,
    /// IP total/payload length smaller than the header.
    BadIpLength,
    /// IPv6 extension header chain cut short, too long, or looping.
    BadIpv6ExtChain,
    /// The TCP header is cut short.
    TruncatedTcp,
    /// TCP data offset < 5 or beyond the segment.
    BadTcpHeaderLen,
    /// The UDP header is cut short or its length field is bogus.
    BadUdp,
    /// The ICMP header is cut short.
    TruncatedIcmp,
    /// Too many nested encapsulations (a loop or an attack).
    TooDeep,
}

impl Malformed {
    /// Every reason, in counter order.
    pub const ALL: [Malformed; 13] = [
        Malformed::TruncatedLink,
        Malformed::TruncatedEncap,
        Malformed::BadTunnel,
        Malformed::TruncatedIp,
        Malformed::BadIpVersion,
        Malformed::BadIpHeaderLen,
        Malformed::BadIpLength,
        Malformed::BadIpv6ExtChain,
        Malformed::TruncatedTcp,
        Malformed::BadTcpHeaderLen,
        Malformed::BadUdp,
        Malformed::TruncatedIcmp,
        Malformed::TooDeep,
    ];

    /// Index into a counter array of length `Malformed::ALL.len()`.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Stable snake_case name used in summaries and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Malformed::TruncatedLink => "truncated_link",
            Malformed::TruncatedEncap => "truncated_encap",
            Malformed::BadTunnel => "bad_tunnel",
            Malformed::TruncatedIp => "truncated_ip",
            Malformed::BadIpVersion => "bad_ip_version",
            Malformed::BadIpHeaderLen => "bad_ip_header_len",
            Malformed::BadIpLength => "bad_ip_length",
            Malformed::BadIpv6ExtChain => "bad_ipv6_ext_chain",
            Malformed::TruncatedTcp => "truncated_tcp",
            Malformed::BadTcpHeaderLen => "bad_tcp_header_len",
            Malformed::BadUdp => "bad_udp",
            Malformed::TruncatedIcmp => "truncated_icmp",
            Malformed::TooDeep => "too_deep",
        }
    }
}

/// The outcome of decoding one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// An IP packet (possibly tunnelled), decoded to its transport header.
    Ip(Packet<'a>),
    /// A well-formed frame that carries no IP (ARP, LLDP, STP, ...): counted, not analysed.
    /// The value is the EtherType (or 0 when the link layer has none).
    NotIp(u16),
    /// A malformed or truncated frame.
    Malformed(Malformed),
    /// The link type is not one the decoder knows.
    UnsupportedLinkType(LinkType),
}

/// Returns true if the decoder knows `linktype`.
pub fn supports_linktype(linktype: LinkType) -> bool {
    link::supported(linktype)
}

/// Human-readable name of a link type for error messages ("LINKTYPE_ETHERNET (1)").
pub fn linktype_name(linktype: LinkType) -> String {
    match link::name(linktype) {
        Some(name) => format!("{name} ({})", linktype.0),
        None => format!("LINKTYPE {} (unknown)", linktype.0),
    }
}

/// Decodes one frame of the given link type.
///
/// Never panics and never allocates. Rules worth knowing:
///
/// * Lengths come from the IP headers (IPv4 total length, IPv6 payload length), so Ethernet
///   padding and trailing FCS bytes are excluded and a snapped capture still reports the true
///   TCP segment length. An IPv4 total length of 0 or an IPv6 payload length of 0 (TSO/GSO
///   captures, jumbograms) means "use the captured length".
/// * Any IP fragment (IPv4 MF or non-zero offset, IPv6 fragment header other than an atomic
///   fragment) yields [`Transport::Fragment`] with the fragment's data as payload, tunnel or
///   not: its transport header, even when present in a first fragment, cannot be given a true
///   segment length. The engine reassembles the datagram (as Wireshark does) and decodes it
///   whole, as [`LinkType::RAW`], in the frame that completes it.
/// * At most [`MAX_ENCAP_LAYERS`] encapsulation headers (each VLAN tag, MPLS label stack,
///   PPPoE, GRE, ERSPAN, VXLAN, 802.11 and IP-in-IP header counts as one) and at most
///   [`MAX_IPV6_EXT_HEADERS`] IPv6 extension headers are followed.
pub fn decode(linktype: LinkType, frame: &[u8]) -> Decoded<'_> {
    match link::start(linktype, frame) {
        Some(Ok(first)) => walk::run(first),
        Some(Err(stop)) => walk::stop(stop),
        None => Decoded::UnsupportedLinkType(linktype),
    }
}

pub(crate) use ip::mapped as ipv4_mapped;
pub(crate) use transport::tcp_options;

/// Maximum number of encapsulation headers followed before [`Malformed::TooDeep`].
pub const MAX_ENCAP_LAYERS: u8 = walk::MAX_ENCAP_LAYERS;

/// Maximum number of IPv6 extension headers followed before [`Malformed::BadIpv6ExtChain`].
pub const MAX_IPV6_EXT_HEADERS: usize = ip::MAX_EXT_HEADERS;

mod ip;
mod link;
mod transport;
mod tunnel;
mod walk;

#[cfg(test)]
mod tests;
