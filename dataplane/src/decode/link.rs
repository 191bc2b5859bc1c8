//! Link layers and the layer-2 shims above them: Ethernet, 802.3 LLC/SNAP, VLAN tags, MPLS,
//! PPPoE, 802.11 data frames, Linux cooked capture, BSD loopback, NFLOG and FDDI.

use super::walk::{Ctx, Next, Res, Stop, chunk, tail};
use super::{LinkType, Malformed, encap};

/// Maximum MPLS labels in one stack before [`Malformed::TooDeep`].
const MAX_MPLS_LABELS: usize = 16;

pub(super) fn supported(lt: LinkType) -> bool {
    matches!(
        lt.0,
        0 | 1 | 10 | 12 | 14 | 101 | 105 | 108 | 113 | 228 | 229 | 239 | 276
    )
}

/// `LINKTYPE_` name of supported and a few common unsupported link types.
pub(super) fn name(lt: LinkType) -> Option<&'static str> {
    Some(match lt.0 {
        0 => "LINKTYPE_NULL",
        1 => "LINKTYPE_ETHERNET",
        6 => "LINKTYPE_IEEE802_5",
        9 => "LINKTYPE_PPP",
        10 => "LINKTYPE_FDDI",
        12 => "DLT_RAW",
        14 => "DLT_RAW",
        50 => "LINKTYPE_PPP_HDLC",
        51 => "LINKTYPE_PPP_ETHER",
        101 => "LINKTYPE_RAW",
        104 => "LINKTYPE_C_HDLC",
        105 => "LINKTYPE_IEEE802_11",
        108 => "LINKTYPE_LOOP",
        113 => "LINKTYPE_LINUX_SLL",
        119 => "LINKTYPE_IEEE802_11_PRISM",
        127 => "LINKTYPE_IEEE802_11_RADIOTAP",
        163 => "LINKTYPE_IEEE802_11_AVS",
        189 => "LINKTYPE_USB_LINUX",
        192 => "LINKTYPE_PPI",
        195 => "LINKTYPE_IEEE802_15_4_WITHFCS",
        220 => "LINKTYPE_USB_LINUX_MMAPPED",
        227 => "LINKTYPE_CAN_SOCKETCAN",
        228 => "LINKTYPE_IPV4",
        229 => "LINKTYPE_IPV6",
        239 => "LINKTYPE_NFLOG",
        249 => "LINKTYPE_USBPCAP",
        253 => "LINKTYPE_NETLINK",
        276 => "LINKTYPE_LINUX_SLL2",
        _ => return None,
    })
}

/// The first step for a frame of `lt`, or `None` if the link type is unsupported.
#[inline]
pub(super) fn start(lt: LinkType, d: &[u8]) -> Option<Res<Next<'_>>> {
    Some(match lt.0 {
        1 => Ok(Next::Ether(d)),
        101 | 12 | 14 => Ok(Next::Ip(d)),
        228 => Ok(Next::Ipv4(d)),
        229 => Ok(Next::Ipv6(d)),
        113 => sll(d),
        276 => sll2(d),
        0 => null(d, false),
        108 => null(d, true),
        239 => nflog(d),
        10 => fddi(d),
        105 => Ok(Next::Wlan(d)),
        _ => return None,
    })
}

/// Ethernet II or 802.3.
#[inline]
pub(super) fn ethernet(d: &[u8]) -> Res<Next<'_>> {
    let h: &[u8; 14] = d.first_chunk().ok_or(Malformed::TruncatedLink)?;
    type_or_len(u16::from_be_bytes([h[12], h[13]]), tail(d, 14))
}

/// A type/length field: an EtherType, or an 802.3 length followed by LLC.
#[inline]
fn type_or_len(t: u16, rest: &[u8]) -> Res<Next<'_>> {
    if t <= 1500 {
        let end = usize::from(t).min(rest.len());
        Ok(Next::Llc(rest.get(..end).unwrap_or(rest)))
    } else if t < 0x0600 {
        Err(Stop::NotIp(0))
    } else {
        Ok(Next::EtherType(t, rest))
    }
}

/// Dispatch on an EtherType.
#[inline]
pub(super) fn ethertype<'a>(ctx: &mut Ctx<'a>, t: u16, d: &'a [u8]) -> Res<Next<'a>> {
    match t {
        0x0800 => Ok(Next::Ipv4(d)),
        0x86dd => Ok(Next::Ipv6(d)),
        0x8100 | 0x88a8 | 0x9100 | 0x9200 => {
            ctx.enter(encap::VLAN)?;
            let h: &[u8; 4] = d.first_chunk().ok_or(Malformed::TruncatedEncap)?;
            ctx.push_vlan(u16::from_be_bytes([h[0], h[1]]) & 0x0fff);
            type_or_len(u16::from_be_bytes([h[2], h[3]]), tail(d, 4))
        }
        0x8847 | 0x8848 => mpls(ctx, t, d),
        0x8864 => pppoe(ctx, d),
        _ => Err(Stop::NotIp(t)),
    }
}

/// An MPLS label stack, then IPv4/IPv6 (first nibble) or an Ethernet pseudowire with control
/// word (first nibble 0).
fn mpls<'a>(ctx: &mut Ctx<'a>, t: u16, d: &'a [u8]) -> Res<Next<'a>> {
    ctx.enter(encap::MPLS)?;
    let mut off = 0;
    let mut bottom = false;
    for _ in 0..MAX_MPLS_LABELS {
        let l: &[u8; 4] = chunk(d, off).ok_or(Malformed::TruncatedEncap)?;
        off += 4;
        if l[2] & 1 != 0 {
            bottom = true;
            break;
        }
    }
    if !bottom {
        return Err(Malformed::TooDeep.into());
    }
    let rest = tail(d, off);
    let first = *rest.first().ok_or(Malformed::TruncatedEncap)?;
    match first >> 4 {
        4 => Ok(Next::Ipv4(rest)),
        6 => Ok(Next::Ipv6(rest)),
        0 => {
            // Pseudowire control word (RFC 4385): 4 bytes, then the Ethernet frame.
            if rest.len() < 4 {
                return Err(Malformed::TruncatedEncap.into());
            }
            Ok(Next::Ether(tail(rest, 4)))
        }
        _ => Err(Stop::NotIp(t)),
    }
}

/// A PPPoE session header and the PPP protocol field.
fn pppoe<'a>(ctx: &mut Ctx<'a>, d: &'a [u8]) -> Res<Next<'a>> {
    ctx.enter(encap::PPPOE)?;
    let h: &[u8; 8] = d.first_chunk().ok_or(Malformed::TruncatedEncap)?;
    if h[0] != 0x11 || h[1] != 0x00 {
        return Err(Stop::NotIp(0x8864));
    }
    // The length covers the PPP protocol field and the PPP payload.
    let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
    if len < 2 {
        return Err(Malformed::TruncatedEncap.into());
    }
    let end = (6 + len).min(d.len());
    let inner = d.get(8..end).unwrap_or(&[]);
    ppp(u16::from_be_bytes([h[6], h[7]]), inner, 0x8864)
}

/// Dispatch on a PPP protocol number.
#[inline]
pub(super) fn ppp(proto: u16, inner: &[u8], not_ip: u16) -> Res<Next<'_>> {
    match proto {
        0x0021 => Ok(Next::Ipv4(inner)),
        0x0057 => Ok(Next::Ipv6(inner)),
        _ => Err(Stop::NotIp(not_ip)),
    }
}

/// An 802.2 LLC header: SNAP to an EtherType, IP over SAP 0x06, anything else is not IP.
#[inline]
pub(super) fn llc(d: &[u8]) -> Res<Next<'_>> {
    let h: &[u8; 3] = d.first_chunk().ok_or(Malformed::TruncatedEncap)?;
    match *h {
        [0xaa, 0xaa, 0x03] => {
            let s: &[u8; 8] = d.first_chunk().ok_or(Malformed::TruncatedEncap)?;
            let t = u16::from_be_bytes([s[6], s[7]]);
            // OUI 00-00-00 (RFC 1042) and 00-00-F8 (802.1H bridge tunnel) carry EtherTypes.
            let ethertype_oui = s[3] == 0 && s[4] == 0 && (s[5] == 0 || s[5] == 0xf8);
            if !ethertype_oui || t < 0x0600 {
                return Err(Stop::NotIp(0));
            }
            Ok(Next::EtherType(t, tail(d, 8)))
        }
        [0x06, 0x06, 0x03] => Ok(Next::Ipv4(tail(d, 3))),
        _ => Err(Stop::NotIp(0)),
    }
}

/// An 802.11 data frame: MAC header, optional A-MSDU subframe header, then LLC.
/// Management, control, null-data, protected and non-first fragment frames are not IP.
pub(super) fn wlan(d: &[u8]) -> Res<Next<'_>> {
    let fc: &[u8; 2] = d.first_chunk().ok_or(Malformed::TruncatedEncap)?;
    let (fc0, fc1) = (fc[0], fc[1]);
    let version = fc0 & 0x03;
    let ftype = (fc0 >> 2) & 0x03;
    let subtype = fc0 >> 4;
    // Data frames only, and of those only subtypes that carry a body (bit 2 clear).
    if version != 0 || ftype != 2 || subtype & 0x04 != 0 {
        return Err(Stop::NotIp(0));
    }
    if fc1 & 0x40 != 0 {
        // Protected (WEP/TKIP/CCMP): the body is encrypted.
        return Err(Stop::NotIp(0));
    }
    let four_addr = fc1 & 0x03 == 0x03;
    let qos = subtype & 0x08 != 0;
    let qos_at = if four_addr { 30 } else { 24 };
    let mut hl = qos_at;
    if qos {
        hl += 2;
        if fc1 & 0x80 != 0 {
            // +HTC/Order on a QoS frame: 4-byte HT control field.
            hl += 4;
        }
    }
    let hdr = d.get(..hl).ok_or(Malformed::TruncatedEncap)?;
    // Sequence control at 22..24: the fragment number is the low nibble.
    let frag_no = hdr.get(22).copied().unwrap_or(0) & 0x0f;
    if frag_no != 0 {
        return Err(Stop::NotIp(0));
    }
    let body = tail(d, hl);
    let amsdu = qos && hdr.get(qos_at).copied().unwrap_or(0) & 0x80 != 0;
    if amsdu {
        // A-MSDU: decode the first subframe (DA, SA, length, then LLC).
        let sub: &[u8; 14] = body.first_chunk().ok_or(Malformed::TruncatedEncap)?;
        let len = usize::from(u16::from_be_bytes([sub[12], sub[13]]));
        let rest = tail(body, 14);
        return Ok(Next::Llc(rest.get(..len).unwrap_or(rest)));
    }
    Ok(Next::Llc(body))
}

/// Linux cooked capture v1: 16-byte header, protocol at 14.
fn sll(d: &[u8]) -> Res<Next<'_>> {
    let h: &[u8; 16] = d.first_chunk().ok_or(Malformed::TruncatedLink)?;
    let hatype = u16::from_be_bytes([h[2], h[3]]);
    let proto = u16::from_be_bytes([h[14], h[15]]);
    sll_proto(hatype, proto, tail(d, 16))
}

/// Linux cooked capture v2: 20-byte header, protocol at 0, ARPHRD type at 8.
fn sll2(d: &[u8]) -> Res<Next<'_>> {
    let h: &[u8; 20] = d.first_chunk().ok_or(Malformed::TruncatedLink)?;
    let proto = u16::from_be_bytes([h[0], h[1]]);
    let hatype = u16::from_be_bytes([h[8], h[9]]);
    sll_proto(hatype, proto, tail(d, 20))
}

/// The protocol field of a cooked header.
fn sll_proto(hatype: u16, proto: u16, rest: &[u8]) -> Res<Next<'_>> {
    const ARPHRD_IPGRE: u16 = 778;
    const ARPHRD_NETLINK: u16 = 824;
    match hatype {
        // GRE tunnel devices: the protocol field is the GRE protocol type.
        ARPHRD_IPGRE => Ok(Next::GrePayload(proto, false, rest)),
        ARPHRD_NETLINK => Err(Stop::NotIp(0)),
        _ => match proto {
            // ETH_P_802_2: an 802.2 LLC frame.
            0x0004 => Ok(Next::Llc(rest)),
            p if p < 0x0600 => Err(Stop::NotIp(0)),
            p => Ok(Next::EtherType(p, rest)),
        },
    }
}

/// BSD loopback: a 4-byte address family, host order (`LINKTYPE_NULL`, either byte order is
/// accepted since the writer's is unknown) or network order (`LINKTYPE_LOOP`).
fn null(d: &[u8], network_order: bool) -> Res<Next<'_>> {
    let h: &[u8; 4] = d.first_chunk().ok_or(Malformed::TruncatedLink)?;
    let af = if network_order {
        u32::from_be_bytes(*h)
    } else {
        let le = u32::from_le_bytes(*h);
        if le > 0xffff { le.swap_bytes() } else { le }
    };
    let rest = tail(d, 4);
    match af {
        2 => Ok(Next::Ipv4(rest)),
        24 | 28 | 30 => Ok(Next::Ipv6(rest)),
        _ => Err(Stop::NotIp(0)),
    }
}

/// Linux NFLOG: a 4-byte header (family, version, resource id), then TLVs whose 16-bit length
/// (including the 4-byte TLV header) and type are in the capturing host's byte order; each TLV is
/// padded to 4 bytes. The packet is in the payload TLV (type 9).
fn nflog(d: &[u8]) -> Res<Next<'_>> {
    const NFULA_PAYLOAD: u16 = 9;
    let h: &[u8; 4] = d.first_chunk().ok_or(Malformed::TruncatedLink)?;
    let family = h[0];
    let tlvs = tail(d, 4);
    // Byte order: little-endian unless the first TLV only makes sense big-endian.
    let big = match chunk::<4>(tlvs, 0) {
        Some(t) => {
            let le = usize::from(u16::from_le_bytes([t[0], t[1]]));
            let be = usize::from(u16::from_be_bytes([t[0], t[1]]));
            let ok = |l: usize| l >= 4 && l <= tlvs.len();
            !ok(le) && ok(be)
        }
        None => false,
    };
    let mut off = 0usize;
    while let Some(t) = chunk::<4>(tlvs, off) {
        let (len, ty) = if big {
            (
                u16::from_be_bytes([t[0], t[1]]),
                u16::from_be_bytes([t[2], t[3]]),
            )
        } else {
            (
                u16::from_le_bytes([t[0], t[1]]),
                u16::from_le_bytes([t[2], t[3]]),
            )
        };
        let len = usize::from(len);
        if len < 4 {
            return Err(Malformed::TruncatedLink.into());
        }
        // Mask the netlink NLA_F_NESTED / NLA_F_NET_BYTEORDER flags.
        if ty & 0x3fff == NFULA_PAYLOAD {
            let value = tlvs.get(off + 4..).unwrap_or(&[]);
            // A snapped capture may cut the payload TLV: take what there is.
            let value = value.get(..len - 4).unwrap_or(value);
            return Ok(match family {
                2 => Next::Ipv4(value),
                10 => Next::Ipv6(value),
                _ => Next::Ip(value),
            });
        }
        off += (len + 3) & !3;
    }
    // No payload TLV: a truncated or packet-less NFLOG record.
    Err(Malformed::TruncatedLink.into())
}

/// FDDI: frame control, destination and source addresses, then LLC for LLC frames.
fn fddi(d: &[u8]) -> Res<Next<'_>> {
    let h: &[u8; 13] = d.first_chunk().ok_or(Malformed::TruncatedLink)?;
    // Frame control CLFFZZZZ: FF = 01 is an LLC frame; others are MAC/SMT frames.
    if h[0] & 0x30 != 0x10 {
        return Err(Stop::NotIp(0));
    }
    Ok(Next::Llc(tail(d, 13)))
}
