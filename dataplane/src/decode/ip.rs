//! IPv4 and IPv6 headers, including the IPv6 extension-header chain.

use super::walk::{Ctx, Next, Res, tail};
use super::{Fragment, IpHeader, Malformed, transport};

/// Maximum number of IPv6 extension headers followed.
pub(super) const MAX_EXT_HEADERS: usize = 8;

/// Prefix of an IPv4-mapped IPv6 address.
const V4_MAPPED: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0];

/// An IPv4 address in IPv4-mapped IPv6 form.
#[inline(always)]
pub(crate) fn mapped(a: &[u8]) -> [u8; 16] {
    let mut m = V4_MAPPED;
    if let (Some(dst), Some(src)) = (m.get_mut(12..16), a.get(..4)) {
        dst.copy_from_slice(src);
    }
    m
}

/// An IP header of either version, by its version nibble.
#[inline]
pub(super) fn any<'a>(ctx: &mut Ctx<'a>, d: &'a [u8]) -> Res<Next<'a>> {
    match d.first().map(|b| b >> 4) {
        None => Err(Malformed::TruncatedIp.into()),
        Some(4) => ipv4(ctx, d),
        Some(6) => ipv6(ctx, d),
        Some(_) => Err(Malformed::BadIpVersion.into()),
    }
}

/// An IPv4 header and what it carries.
#[inline]
pub(super) fn ipv4<'a>(ctx: &mut Ctx<'a>, d: &'a [u8]) -> Res<Next<'a>> {
    let h: &[u8; 20] = d.first_chunk().ok_or(Malformed::TruncatedIp)?;
    if h[0] >> 4 != 4 {
        return Err(Malformed::BadIpVersion.into());
    }
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if ihl < 20 || ihl > d.len() {
        return Err(Malformed::BadIpHeaderLen.into());
    }
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    // Total length 0: a TSO/GSO capture of a super-packet; the captured length is all we have.
    let true_len = if total == 0 { d.len() } else { total };
    if true_len < ihl {
        return Err(Malformed::BadIpLength.into());
    }
    let end = true_len.min(d.len());
    let l4 = d.get(ihl..end).unwrap_or(&[]);
    let fo = u16::from_be_bytes([h[6], h[7]]);
    let frag = Fragment {
        is_fragment: fo & 0x3fff != 0,
        offset: u32::from(fo & 0x1fff) * 8,
        more: fo & 0x2000 != 0,
        id: u32::from(u16::from_be_bytes([h[4], h[5]])),
    };
    let ip = IpHeader {
        version: 4,
        src: mapped(&h[12..16]),
        dst: mapped(&h[16..20]),
        proto: h[9],
        ttl: h[8],
        frag,
    };
    transport::dispatch(ctx, ip, l4, true_len - ihl)
}

/// An IPv6 header, its extension-header chain and what it carries.
#[inline]
pub(super) fn ipv6<'a>(ctx: &mut Ctx<'a>, d: &'a [u8]) -> Res<Next<'a>> {
    let h: &[u8; 40] = d.first_chunk().ok_or(Malformed::TruncatedIp)?;
    if h[0] >> 4 != 6 {
        return Err(Malformed::BadIpVersion.into());
    }
    let plen = usize::from(u16::from_be_bytes([h[4], h[5]]));
    let rest = tail(d, 40);
    // Payload length 0: a jumbogram (hop-by-hop jumbo option) or a GSO capture; use the
    // captured length.
    let true_len = if plen == 0 { rest.len() } else { plen };
    let cap = rest.get(..true_len).unwrap_or(rest);
    let chain = ext_chain(h[6], cap)?;
    let mut src = [0u8; 16];
    src.copy_from_slice(&h[8..24]);
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&h[24..40]);
    let ip = IpHeader {
        version: 6,
        src,
        dst,
        proto: chain.proto,
        ttl: h[7],
        frag: chain.frag,
    };
    // The chain lies within `cap`, which is at most `true_len` long.
    let l4 = tail(cap, chain.len);
    transport::dispatch(ctx, ip, l4, true_len.saturating_sub(chain.len))
}

/// The end of an IPv6 extension-header chain.
#[derive(Debug, Clone, Copy)]
pub(super) struct ExtChain {
    /// The upper-layer protocol (or the next header after a fragment header).
    pub(super) proto: u8,
    /// Total length of the extension headers.
    pub(super) len: usize,
    /// Fragment header contents, if any.
    pub(super) frag: Fragment,
}

/// Walks the IPv6 extension headers starting with next-header `nh` over `d` (the IPv6 payload,
/// bounded by the payload length). Stops at the first upper-layer protocol, or after a fragment
/// header (other than an atomic fragment), whose following headers are not walked.
#[inline]
pub(super) fn ext_chain(mut nh: u8, d: &[u8]) -> Result<ExtChain, Malformed> {
    let mut off = 0usize;
    let mut frag = Fragment::default();
    let mut count = 0usize;
    loop {
        match nh {
            // Hop-by-hop, routing, fragment, destination options, AH, mobility, HIP, shim6,
            // experimental.
            0 | 43 | 44 | 60 | 51 | 135 | 139 | 140 | 253 | 254 => {
                count += 1;
                if count > MAX_EXT_HEADERS {
                    return Err(Malformed::BadIpv6ExtChain);
                }
                let e: &[u8; 8] = d
                    .get(off..)
                    .and_then(|s| s.first_chunk())
                    .ok_or(Malformed::BadIpv6ExtChain)?;
                let len = match nh {
                    44 => 8,
                    51 => (usize::from(e[1]) + 2) * 4,
                    _ => (usize::from(e[1]) + 1) * 8,
                };
                if off + len > d.len() {
                    return Err(Malformed::BadIpv6ExtChain);
                }
                let next = e[0];
                off += len;
                if nh == 44 {
                    let fo = u16::from_be_bytes([e[2], e[3]]);
                    let offset = u32::from(fo & 0xfff8);
                    let more = fo & 1 != 0;
                    // An atomic fragment (offset 0, no more fragments; RFC 6946) is a whole
                    // packet: keep walking.
                    if offset != 0 || more {
                        frag = Fragment {
                            is_fragment: true,
                            offset,
                            more,
                            id: u32::from_be_bytes([e[4], e[5], e[6], e[7]]),
                        };
                        return Ok(ExtChain {
                            proto: next,
                            len: off,
                            frag,
                        });
                    }
                }
                nh = next;
            }
            _ => {
                return Ok(ExtChain {
                    proto: nh,
                    len: off,
                    frag,
                });
            }
        }
    }
}
