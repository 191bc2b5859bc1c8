//! Transport headers: TCP (with options), UDP (with VXLAN recognition), ICMP and ICMPv6 (with
//! the quoted connection of error messages), and the IP-in-IP / GRE hand-off.

use super::walk::{Ctx, Next, Res, chunk, tail};
use super::{
    IcmpHeader, IpHeader, MAX_SACK_BLOCKS, Malformed, Packet, Quoted, TcpHeader, TcpOptions,
    Transport, UdpHeader, encap, ip, tunnel,
};

/// Dispatch on the IP protocol. `l4` is the captured part of the IP payload, `l4_len` its true
/// length from the IP length fields (`l4.len() <= l4_len`).
#[inline]
pub(super) fn dispatch<'a>(
    ctx: &mut Ctx<'a>,
    ip: IpHeader,
    l4: &'a [u8],
    l4_len: usize,
) -> Res<Next<'a>> {
    // A fragment stops here, tunnel or not: the engine reassembles the datagram (as Wireshark
    // does) and decodes it whole in the frame that completes it.
    let whole = !ip.frag.is_fragment;
    match ip.proto {
        4 if whole => {
            ctx.enter(encap::IPIP)?;
            return Ok(Next::Ipv4(l4));
        }
        41 if whole => {
            ctx.enter(encap::IPIP)?;
            return Ok(Next::Ipv6(l4));
        }
        47 if whole => return tunnel::gre(ctx, l4),
        _ => {}
    }
    // The packet is built in place in `ctx` (not returned through every layer's `Next`,
    // which would copy it at each step).
    let done = |ctx: &mut Ctx<'a>, transport, payload| {
        ctx.out = Some(Packet {
            vlan: ctx.vlan,
            encap: ctx.encap,
            ip,
            transport,
            payload,
        });
        Next::Done
    };
    if ip.frag.is_fragment {
        return Ok(done(ctx, Transport::Fragment, l4));
    }
    match ip.proto {
        6 => {
            let (tcp, payload) = tcp(l4, l4_len)?;
            Ok(done(ctx, Transport::Tcp(tcp), payload))
        }
        17 => {
            let (udp, payload) = udp(l4, l4_len)?;
            if tunnel::VXLAN_PORTS.contains(&udp.dst_port)
                && let Some(inner) = tunnel::vxlan(payload)
            {
                ctx.enter(encap::VXLAN)?;
                return Ok(Next::Ether(inner));
            }
            Ok(done(ctx, Transport::Udp(udp), payload))
        }
        1 => {
            let (icmp, payload) = icmp(l4, false)?;
            Ok(done(ctx, Transport::Icmp(icmp), payload))
        }
        58 => {
            let (icmp, payload) = icmp(l4, true)?;
            Ok(done(ctx, Transport::Icmp(icmp), payload))
        }
        _ => Ok(done(ctx, Transport::Other, l4)),
    }
}

/// A TCP header. The segment length comes from `l4_len` (the IP length fields).
#[inline]
fn tcp(l4: &[u8], l4_len: usize) -> Result<(TcpHeader, &[u8]), Malformed> {
    if l4_len < 20 {
        return Err(Malformed::BadIpLength);
    }
    let h: &[u8; 20] = l4.first_chunk().ok_or(Malformed::TruncatedTcp)?;
    let hl = usize::from(h[12] >> 4) * 4;
    if hl < 20 || hl > l4_len {
        return Err(Malformed::BadTcpHeaderLen);
    }
    let opts = l4.get(20..hl).ok_or(Malformed::TruncatedTcp)?;
    let tcp = TcpHeader {
        src_port: u16::from_be_bytes([h[0], h[1]]),
        dst_port: u16::from_be_bytes([h[2], h[3]]),
        seq: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        ack: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
        flags: u16::from_be_bytes([h[12], h[13]]) & 0x01ff,
        window: u16::from_be_bytes([h[14], h[15]]),
        header_len: hl as u8,
        options: if opts.is_empty() {
            TcpOptions::default()
        } else {
            tcp_options(opts)
        },
        seg_len: (l4_len - hl) as u32,
    };
    Ok((tcp, tail(l4, hl)))
}

/// Parses TCP options. A malformed length (below 2 or past the header) stops parsing; a known
/// option with an unexpected length is skipped.
#[inline]
pub(crate) fn tcp_options(mut o: &[u8]) -> TcpOptions {
    let mut opts = TcpOptions::default();
    loop {
        let (kind, rest) = match o {
            [] | [0, ..] => break,
            [1, rest @ ..] => {
                o = rest;
                continue;
            }
            [kind, rest @ ..] => (*kind, rest),
        };
        let Some(&len) = rest.first() else { break };
        let len = usize::from(len);
        if len < 2 || len > o.len() {
            break;
        }
        let body = o.get(2..len).unwrap_or(&[]);
        match (kind, body) {
            (2, &[a, b]) => opts.mss = Some(u16::from_be_bytes([a, b])),
            (3, &[s]) => opts.wscale = Some(s),
            (4, &[]) => opts.sack_permitted = true,
            (5, blocks) if !blocks.is_empty() && blocks.len() % 8 == 0 => {
                let mut n = 0;
                for (slot, b) in opts.sack.iter_mut().zip(blocks.chunks_exact(8)) {
                    if let Some(b) = b.first_chunk::<8>() {
                        *slot = (
                            u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                            u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
                        );
                        n += 1;
                    }
                }
                opts.sack_count = n.min(MAX_SACK_BLOCKS) as u8;
            }
            (8, &[a, b, c, d, e, f, g, h]) => {
                opts.timestamps = Some((
                    u32::from_be_bytes([a, b, c, d]),
                    u32::from_be_bytes([e, f, g, h]),
                ));
            }
            _ => {}
        }
        o = tail(o, len);
    }
    opts
}

/// A UDP header. A length field of 0 or beyond the IP length is replaced by the IP length;
/// one below 8 is malformed.
#[inline]
fn udp(l4: &[u8], l4_len: usize) -> Result<(UdpHeader, &[u8]), Malformed> {
    let h: &[u8; 8] = l4.first_chunk().ok_or(Malformed::BadUdp)?;
    if l4_len < 8 {
        return Err(Malformed::BadUdp);
    }
    let ulen = usize::from(u16::from_be_bytes([h[4], h[5]]));
    let len = match ulen {
        0 => l4_len,
        1..8 => return Err(Malformed::BadUdp),
        n if n > l4_len => l4_len,
        n => n,
    };
    let payload = l4.get(8..len.min(l4.len())).unwrap_or(&[]);
    Ok((
        UdpHeader {
            src_port: u16::from_be_bytes([h[0], h[1]]),
            dst_port: u16::from_be_bytes([h[2], h[3]]),
            payload_len: (len - 8) as u32,
        },
        payload,
    ))
}

/// An ICMP or ICMPv6 header (8 bytes); for error messages, the quoted connection.
#[inline]
fn icmp(l4: &[u8], v6: bool) -> Result<(IcmpHeader, &[u8]), Malformed> {
    let h: &[u8; 8] = l4.first_chunk().ok_or(Malformed::TruncatedIcmp)?;
    let (icmp_type, code) = (h[0], h[1]);
    let (echo, error) = if v6 {
        (matches!(icmp_type, 128 | 129), matches!(icmp_type, 1..=4))
    } else {
        (
            matches!(icmp_type, 0 | 8),
            matches!(icmp_type, 3 | 4 | 5 | 11 | 12),
        )
    };
    let body = tail(l4, 8);
    Ok((
        IcmpHeader {
            icmp_type,
            code,
            v6,
            echo_id: if echo {
                u16::from_be_bytes([h[4], h[5]])
            } else {
                0
            },
            quoted: if error { quoted(body) } else { None },
        },
        body,
    ))
}

/// The IP header (and the ports of the TCP/UDP header) quoted by an ICMP error message.
#[inline]
fn quoted(d: &[u8]) -> Option<Quoted> {
    let (ip_version, src, dst, proto, l4, non_first) = match d.first()? >> 4 {
        4 => {
            let h: &[u8; 20] = d.first_chunk()?;
            let ihl = usize::from(h[0] & 0x0f) * 4;
            if ihl < 20 {
                return None;
            }
            let l4 = d.get(ihl..)?;
            let fo = u16::from_be_bytes([h[6], h[7]]);
            (
                4,
                ip::mapped(&h[12..16]),
                ip::mapped(&h[16..20]),
                h[9],
                l4,
                fo & 0x1fff != 0,
            )
        }
        6 => {
            let h: &[u8; 40] = d.first_chunk()?;
            let rest = tail(d, 40);
            let chain = ip::ext_chain(h[6], rest).ok()?;
            let mut src = [0u8; 16];
            src.copy_from_slice(&h[8..24]);
            let mut dst = [0u8; 16];
            dst.copy_from_slice(&h[24..40]);
            (
                6,
                src,
                dst,
                chain.proto,
                tail(rest, chain.len),
                chain.frag.offset != 0,
            )
        }
        _ => return None,
    };
    let (src_port, dst_port) = match chunk::<4>(l4, 0) {
        Some(p) if !non_first && matches!(proto, 6 | 17) => (
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        ),
        _ => (0, 0),
    };
    Some(Quoted {
        ip_version,
        src,
        dst,
        proto,
        src_port,
        dst_port,
    })
}
