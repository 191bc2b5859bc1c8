//! The fast path for the frame that dominates every capture: Ethernet (at most one VLAN tag),
//! IPv4 without options or IPv6 without extension headers, and a whole TCP header.
//!
//! [`descriptor`] turns such a frame into its [`PacketDesc`] in straight-line code, without
//! the general decoder's layer walk, the [`crate::decode::Packet`] it builds and the match on
//! its transport that follows. It answers `None` for anything else, malformed or merely
//! unusual, and the caller then takes the general path ([`crate::decode::decode`] and
//! [`PacketDesc::from_packet`]). So it needs to be right only where it answers, and there its
//! descriptor must equal the general path's (tested on mutated frames in `decode/tests.rs`,
//! and end to end by every differential test against tshark).

use super::desc::{Kind, PacketDesc, Segment, is_dns_port};
use super::key::FlowKey;
use crate::decode::{LinkType, ipv4_mapped, tcp_options};

/// The descriptor of an ordinary TCP frame, or `None`: use the general path.
///
/// `None` also for TCP to or from a DNS port (53, 5353, 5355), whose payload the shard wants.
#[inline]
pub fn descriptor(
    frame_no: u64,
    ts_ns: i64,
    frame_len: u32,
    linktype: LinkType,
    frame: &[u8],
) -> Option<PacketDesc> {
    if linktype != LinkType::ETHERNET {
        return None;
    }
    let eth: &[u8; 14] = frame.first_chunk()?;
    let mut ethertype = u16::from_be_bytes([eth[12], eth[13]]);
    let mut l3 = frame.get(14..)?;
    let mut vlan = None;
    if matches!(ethertype, 0x8100 | 0x88a8 | 0x9100 | 0x9200) {
        let tag: &[u8; 4] = l3.first_chunk()?;
        vlan = Some(u16::from_be_bytes([tag[0], tag[1]]) & 0x0fff);
        ethertype = u16::from_be_bytes([tag[2], tag[3]]);
        l3 = l3.get(4..)?;
    }
    let (ip_version, src, dst, l4, l4_len) = match ethertype {
        0x0800 => {
            let h: &[u8; 20] = l3.first_chunk()?;
            // Version 4, IHL 5 (no options); not a fragment; TCP.
            if h[0] != 0x45 || u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 || h[9] != 6 {
                return None;
            }
            let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
            // Total length 0: a TSO/GSO capture; the captured length is all there is.
            let true_len = if total == 0 { l3.len() } else { total };
            let l4_len = true_len.checked_sub(20)?;
            let l4 = l3.get(20..true_len.min(l3.len()))?;
            (
                4,
                ipv4_mapped(&h[12..16]),
                ipv4_mapped(&h[16..20]),
                l4,
                l4_len,
            )
        }
        0x86dd => {
            let h: &[u8; 40] = l3.first_chunk()?;
            // Version 6, next header TCP (no extension headers).
            if h[0] >> 4 != 6 || h[6] != 6 {
                return None;
            }
            let plen = usize::from(u16::from_be_bytes([h[4], h[5]]));
            let rest = l3.get(40..)?;
            // Payload length 0: a jumbogram or a GSO capture.
            let true_len = if plen == 0 { rest.len() } else { plen };
            let l4 = rest.get(..true_len).unwrap_or(rest);
            let src: [u8; 16] = *h[8..].first_chunk()?;
            let dst: [u8; 16] = *h[24..].first_chunk()?;
            (6, src, dst, l4, true_len)
        }
        _ => return None,
    };
    let h: &[u8; 20] = l4.first_chunk()?;
    let hl = usize::from(h[12] >> 4) * 4;
    if hl < 20 || hl > l4_len {
        return None;
    }
    let opts = l4.get(20..hl)?;
    let src_port = u16::from_be_bytes([h[0], h[1]]);
    let dst_port = u16::from_be_bytes([h[2], h[3]]);
    if is_dns_port(src_port) || is_dns_port(dst_port) {
        return None;
    }
    let (wscale, timestamps) = match opts {
        [] => (None, None),
        // NOP, NOP, timestamps: what Linux puts on every segment after the handshake.
        [1, 1, 8, 10, a, b, c, d, e, f, g, h] => (
            None,
            Some((
                u32::from_be_bytes([*a, *b, *c, *d]),
                u32::from_be_bytes([*e, *f, *g, *h]),
            )),
        ),
        _ => {
            let o = tcp_options(opts);
            (o.wscale, o.timestamps)
        }
    };
    let (key, dir) = FlowKey::new(ip_version, 6, src, src_port, dst, dst_port);
    Some(PacketDesc {
        frame_no,
        ts_ns,
        hash: key.hash64(),
        key,
        dir,
        frame_len,
        vlan: [vlan, None],
        kind: Kind::Tcp,
        tcp: Segment {
            seq: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
            ack: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
            seg_len: (l4_len - hl) as u32,
            flags: u16::from_be_bytes([h[12], h[13]]) & 0x01ff,
            window: u16::from_be_bytes([h[14], h[15]]),
            wscale,
            timestamps,
        },
        snippet: None,
    })
}
