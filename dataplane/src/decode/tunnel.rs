//! Tunnels: GRE (RFC 2784/2890, RFC 1701 routing, PPTP enhanced GRE), ERSPAN types I, II and
//! III, Aruba's 802.11-in-GRE and VXLAN.

use super::walk::{Ctx, Next, Res, Stop, chunk, tail};
use super::{Malformed, encap, link};

/// UDP destination ports on which VXLAN is recognised (IANA and the Linux default).
pub(super) const VXLAN_PORTS: [u16; 2] = [4789, 8472];

/// A GRE header (IP protocol 47).
pub(super) fn gre<'a>(ctx: &mut Ctx<'a>, d: &'a [u8]) -> Res<Next<'a>> {
    ctx.enter(encap::GRE)?;
    let h: &[u8; 4] = d.first_chunk().ok_or(Malformed::BadTunnel)?;
    let flags = u16::from_be_bytes([h[0], h[1]]);
    let proto = u16::from_be_bytes([h[2], h[3]]);
    const C: u16 = 0x8000;
    const R: u16 = 0x4000;
    const K: u16 = 0x2000;
    const S: u16 = 0x1000;
    const A: u16 = 0x0080;
    match flags & 0x0007 {
        0 => {
            let mut off = 4usize;
            if flags & (C | R) != 0 {
                off += 4; // checksum and offset
            }
            if flags & K != 0 {
                off += 4;
            }
            let seq = flags & S != 0;
            if seq {
                off += 4;
            }
            if flags & R != 0 {
                // RFC 1701 source route entries, ended by a NULL entry (family 0, length 0).
                // Every entry is at least 4 bytes, so the loop is bounded by the frame.
                loop {
                    let sre: &[u8; 4] = chunk(d, off).ok_or(Malformed::BadTunnel)?;
                    off += 4 + usize::from(sre[3]);
                    if sre[0] == 0 && sre[1] == 0 && sre[3] == 0 {
                        break;
                    }
                }
            }
            let inner = d.get(off..).ok_or(Malformed::BadTunnel)?;
            Ok(Next::GrePayload(proto, seq, inner))
        }
        1 => {
            // Enhanced GRE (PPTP, RFC 2637): key (payload length, call id) always present,
            // optional sequence and acknowledgment numbers, then a PPP frame.
            if proto != 0x880b || flags & K == 0 {
                return Err(Malformed::BadTunnel.into());
            }
            let mut off = 8usize;
            if flags & S != 0 {
                off += 4;
            }
            if flags & A != 0 {
                off += 4;
            }
            let mut ppp = d.get(off..).ok_or(Malformed::BadTunnel)?;
            if ppp.starts_with(&[0xff, 0x03]) {
                ppp = tail(ppp, 2); // address and control
            }
            // The protocol field may be compressed to one (odd) byte.
            let (pp, at) = match ppp {
                [b, ..] if b & 1 == 1 => (u16::from(*b), 1),
                [a, b, ..] => (u16::from_be_bytes([*a, *b]), 2),
                _ => return Err(Stop::NotIp(0x880b)),
            };
            link::ppp(pp, tail(ppp, at), 0x880b)
        }
        _ => Err(Malformed::BadTunnel.into()),
    }
}

/// Dispatch on a GRE protocol type.
pub(super) fn gre_payload<'a>(
    ctx: &mut Ctx<'a>,
    proto: u16,
    seq: bool,
    d: &'a [u8],
) -> Res<Next<'a>> {
    match proto {
        // Transparent Ethernet bridging.
        0x6558 => Ok(Next::Ether(d)),
        0x88be => {
            ctx.enter(encap::ERSPAN2)?;
            if !seq {
                // ERSPAN type I: no ERSPAN header (and no GRE sequence number).
                return Ok(Next::Ether(d));
            }
            let h: &[u8; 8] = d.first_chunk().ok_or(Malformed::BadTunnel)?;
            if h[0] >> 4 != 1 {
                return Err(Malformed::BadTunnel.into());
            }
            Ok(Next::Ether(tail(d, 8)))
        }
        0x22eb => {
            ctx.enter(encap::ERSPAN3)?;
            let h: &[u8; 12] = d.first_chunk().ok_or(Malformed::BadTunnel)?;
            if h[0] >> 4 != 2 {
                return Err(Malformed::BadTunnel.into());
            }
            // Last 16 bits: P(1) FT(5) HW ID(6) D(1) Gra(2) O(1).
            let ft = (h[10] >> 2) & 0x1f;
            let o = h[11] & 0x01 != 0;
            let off = if o { 20 } else { 12 };
            let inner = d.get(off..).ok_or(Malformed::BadTunnel)?;
            match ft {
                0 => Ok(Next::Ether(inner)),
                2 => Ok(Next::Ip(inner)),
                _ => Err(Stop::NotIp(0x22eb)),
            }
        }
        // Aruba access points tunnel 802.11 frames in GRE with these protocol types (the ones
        // Wireshark registers for its 802.11 dissector: 0x8200-0x8370 in steps of 0x10 and
        // 0x9000; the whole 0x8200-0x83ff block is accepted).
        0x8200..=0x83ff | 0x9000 => {
            ctx.enter(encap::WLAN)?;
            Ok(Next::Wlan(d))
        }
        _ => link::ethertype(ctx, proto, d),
    }
}

/// Recognises a VXLAN header in a UDP payload: flags 0x08 (I flag only), reserved bits zero.
/// Returns the encapsulated Ethernet frame.
#[inline]
pub(super) fn vxlan(d: &[u8]) -> Option<&[u8]> {
    let h: &[u8; 8] = d.first_chunk()?;
    if h[0] == 0x08 && h[1] == 0 && h[2] == 0 && h[3] == 0 && h[7] == 0 {
        Some(tail(d, 8))
    } else {
        None
    }
}
