//! IP reassembly, as Wireshark does it by default: a fragmented datagram is analysed once,
//! in the frame that completes it, with that frame's time and length.
//!
//! The entry point is [`Defrag::push`]. Memory is bounded: at most [`MAX_DATAGRAMS`]
//! datagrams are held at once (the oldest incomplete one is dropped, and counted, to make
//! room) and each is at most 65,535 bytes of payload. Incomplete datagrams older than
//! [`TIMEOUT_NS`] are dropped and counted.

use std::collections::VecDeque;

use crate::decode::{IpHeader, Packet};

/// Datagrams held at once.
pub const MAX_DATAGRAMS: usize = 1024;
/// Incomplete datagrams are dropped after this long (ns), as Linux's `ipfrag_time`.
pub const TIMEOUT_NS: i64 = 30_000_000_000;
const MAX_PAYLOAD: usize = 65_535;

/// Reassembly counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefragStats {
    /// Fragments received.
    pub fragments: u64,
    /// Datagrams completed.
    pub reassembled: u64,
    /// Incomplete datagrams dropped by timeout or to make room.
    pub dropped_datagrams: u64,
    /// Fragments rejected (beyond 64 KiB, or conflicting ends).
    pub bad_fragments: u64,
}

#[derive(Debug)]
struct Datagram {
    version: u8,
    src: [u8; 16],
    dst: [u8; 16],
    id: u32,
    proto: u8,
    first_ts: i64,
    buf: Vec<u8>,
    /// Received byte ranges, merged, sorted.
    have: Vec<(u32, u32)>,
    /// Payload length, once the last fragment arrived.
    total: Option<u32>,
}

impl Datagram {
    fn complete(&self) -> bool {
        matches!((self.total, self.have.as_slice()), (Some(t), [(0, end)]) if *end == t)
    }

    fn add_range(&mut self, start: u32, end: u32) {
        self.have.push((start, end));
        self.have.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(self.have.len());
        for &(s, e) in &self.have {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.have = merged;
    }
}

/// The reassembly table of one decoding thread.
#[derive(Debug, Default)]
pub struct Defrag {
    pending: VecDeque<Datagram>,
    stats: DefragStats,
    /// The last completed datagram, rebuilt as a raw IP packet.
    out: Vec<u8>,
}

impl Defrag {
    /// Counters so far.
    pub fn stats(&self) -> DefragStats {
        self.stats
    }

    /// Adds a fragment (a decoded packet whose transport is `Transport::Fragment`, with the
    /// fragment's data as payload). When it completes a datagram, returns the datagram as a
    /// raw IP packet (an IPv4 or IPv6 header without fragmentation, then the payload), to be
    /// decoded with `LinkType::RAW`.
    pub fn push(&mut self, ts_ns: i64, p: &Packet<'_>) -> Option<&[u8]> {
        self.stats.fragments += 1;
        self.expire(ts_ns);
        let ip: &IpHeader = &p.ip;
        let (off, more) = (ip.frag.offset, ip.frag.more);
        let len = p.payload.len() as u32;
        let end = off.saturating_add(len);
        if end as usize > MAX_PAYLOAD {
            self.stats.bad_fragments += 1;
            return None;
        }
        let pos = self.pending.iter().position(|d| {
            d.id == ip.frag.id
                && d.proto == ip.proto
                && d.src == ip.src
                && d.dst == ip.dst
                && d.version == ip.version
        });
        let pos = match pos {
            Some(i) => i,
            None => {
                if self.pending.len() >= MAX_DATAGRAMS {
                    self.pending.pop_front();
                    self.stats.dropped_datagrams += 1;
                }
                self.pending.push_back(Datagram {
                    version: ip.version,
                    src: ip.src,
                    dst: ip.dst,
                    id: ip.frag.id,
                    proto: ip.proto,
                    first_ts: ts_ns,
                    buf: Vec::new(),
                    have: Vec::new(),
                    total: None,
                });
                self.pending.len() - 1
            }
        };
        let d = &mut self.pending[pos];
        if !more {
            if d.total.is_some_and(|t| t != end) || d.have.last().is_some_and(|r| r.1 > end) {
                self.stats.bad_fragments += 1;
                return None;
            }
            d.total = Some(end);
        } else if d.total.is_some_and(|t| end > t) {
            self.stats.bad_fragments += 1;
            return None;
        }
        if d.buf.len() < end as usize {
            d.buf.resize(end as usize, 0);
        }
        d.buf[off as usize..end as usize].copy_from_slice(p.payload);
        if len > 0 {
            d.add_range(off, end);
        } else if off == 0 && !more {
            d.have = vec![(0, 0)];
        }
        if !d.complete() {
            return None;
        }
        let d = self.pending.remove(pos)?;
        self.stats.reassembled += 1;
        self.out.clear();
        let plen = d.buf.len();
        if d.version == 4 {
            let total = (20 + plen).min(usize::from(u16::MAX)) as u16;
            self.out.extend_from_slice(&[0x45, 0]);
            self.out.extend_from_slice(&total.to_be_bytes());
            self.out.extend_from_slice(&[0, 0, 0, 0, 64, d.proto, 0, 0]);
            self.out.extend_from_slice(&d.src[12..]);
            self.out.extend_from_slice(&d.dst[12..]);
        } else {
            self.out.extend_from_slice(&[0x60, 0, 0, 0]);
            self.out
                .extend_from_slice(&(plen.min(usize::from(u16::MAX)) as u16).to_be_bytes());
            self.out.extend_from_slice(&[d.proto, 64]);
            self.out.extend_from_slice(&d.src);
            self.out.extend_from_slice(&d.dst);
        }
        self.out.extend_from_slice(&d.buf);
        Some(&self.out)
    }

    fn expire(&mut self, now: i64) {
        while let Some(d) = self.pending.front() {
            if now - d.first_ts <= TIMEOUT_NS {
                break;
            }
            self.pending.pop_front();
            self.stats.dropped_datagrams += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Decoded, Fragment, LinkType, Transport, decode};

    fn frag<'a>(id: u32, offset: u32, more: bool, data: &'a [u8]) -> Packet<'a> {
        let mut src = [0u8; 16];
        src[10] = 0xff;
        src[11] = 0xff;
        src[12..].copy_from_slice(&[10, 0, 0, 1]);
        let mut dst = src;
        dst[15] = 2;
        Packet {
            vlan: [None; 2],
            encap: 0,
            ip: IpHeader {
                version: 4,
                src,
                dst,
                proto: 17,
                ttl: 64,
                frag: Fragment {
                    is_fragment: true,
                    offset,
                    more,
                    id,
                },
            },
            transport: Transport::Fragment,
            payload: data,
        }
    }

    fn udp(len: usize) -> Vec<u8> {
        let mut u = vec![0x30, 0x39, 0x00, 0x35];
        u.extend_from_slice(&((8 + len) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend((0..len).map(|i| i as u8));
        u
    }

    #[test]
    fn out_of_order_fragments_reassemble_to_the_whole_datagram() {
        let dgram = udp(3000);
        let mut d = Defrag::default();
        assert!(
            d.push(0, &frag(7, 1480, true, &dgram[1480..2960]))
                .is_none()
        );
        assert!(d.push(1, &frag(7, 2960, false, &dgram[2960..])).is_none());
        let whole = d
            .push(2, &frag(7, 0, true, &dgram[..1480]))
            .expect("complete");
        match decode(LinkType::RAW, whole) {
            Decoded::Ip(p) => match p.transport {
                Transport::Udp(u) => {
                    assert_eq!((u.src_port, u.dst_port, u.payload_len), (12345, 53, 3000));
                }
                other => panic!("not UDP: {other:?}"),
            },
            other => panic!("not IP: {other:?}"),
        }
        assert_eq!(d.stats().reassembled, 1);
        assert_eq!(d.stats().fragments, 3);
    }

    #[test]
    fn incomplete_datagrams_expire_and_the_table_is_bounded() {
        let mut d = Defrag::default();
        let data = [0u8; 8];
        for id in 0..(MAX_DATAGRAMS as u32 + 10) {
            assert!(d.push(0, &frag(id, 0, true, &data)).is_none());
        }
        assert_eq!(d.stats().dropped_datagrams, 10);
        assert!(
            d.push(TIMEOUT_NS + 1, &frag(99_999, 8, true, &data))
                .is_none()
        );
        assert_eq!(d.stats().dropped_datagrams, 10 + MAX_DATAGRAMS as u64);
    }

    #[test]
    fn bogus_fragments_are_rejected() {
        let mut d = Defrag::default();
        let data = [0u8; 64];
        assert!(d.push(0, &frag(1, 65_528, true, &data)).is_none());
        assert!(d.push(0, &frag(2, 64, false, &data)).is_none());
        assert!(d.push(0, &frag(2, 256, true, &data)).is_none());
        assert_eq!(d.stats().bad_fragments, 2);
    }
}
