//! pcapng: a sequence of blocks (type, total length, body, total length), grouped into sections
//! that each start with a section header block fixing the byte order.
//!
//! Packets come from enhanced packet blocks, simple packet blocks and the obsolete packet block;
//! interface description blocks give each interface its link type, snap length and timestamp
//! resolution and offset. Every other block type is skipped.

use super::input::{Input, MAX_RECORD};
use super::pcap::read_u32;
use super::{Fault, RawFrame, Status};
use crate::decode::{LinkType, supports_linktype};

/// Section header block type (a palindrome, the same in both byte orders).
pub(super) const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 1;
const PACKET_BLOCK: u32 = 2;
const SPB: u32 = 3;
const EPB: u32 = 6;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
/// Block type, total length, byte-order magic, version, section length, trailing length.
const MIN_SHB: usize = 28;
/// Interfaces per section; each costs at least 20 bytes of file, this bounds memory for
/// decompression bombs.
const MAX_INTERFACES: usize = 1 << 20;

/// How an interface's timestamp units convert to nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scale {
    /// Multiply (resolution 10^-v with v <= 9).
    Mul(u64),
    /// Divide (resolution 10^-v with 9 < v <= 47).
    Div(u128),
    /// Multiply by 10^9 and shift right (resolution 2^-v).
    Shift(u32),
    /// Finer than 10^-47: always 0 ns.
    Zero,
}

impl Scale {
    fn from_tsresol(v: u8) -> Scale {
        let exp = u32::from(v & 0x7F);
        if v & 0x80 != 0 {
            Scale::Shift(exp)
        } else if exp <= 9 {
            Scale::Mul(10u64.pow(9 - exp))
        } else if exp <= 47 {
            Scale::Div(10u128.pow(exp - 9))
        } else {
            Scale::Zero
        }
    }

    #[inline]
    fn to_ns(self, units: u64) -> u128 {
        match self {
            Scale::Mul(m) => u128::from(units) * u128::from(m),
            Scale::Div(d) => u128::from(units) / d,
            // units * 10^9 < 2^94: no overflow.
            Scale::Shift(s) => (u128::from(units) * 1_000_000_000) >> s,
            Scale::Zero => 0,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Interface {
    linktype: LinkType,
    supported: bool,
    snaplen: u32,
    scale: Scale,
    /// `if_tsoffset` in nanoseconds.
    offset_ns: i128,
}

/// pcapng reader state.
#[derive(Debug)]
pub(super) struct Pcapng {
    big_endian: bool,
    /// Interfaces of the current section.
    interfaces: Vec<Interface>,
    /// Number of interfaces in earlier sections: frames carry `base + local id`.
    base: u32,
    /// Timestamp of the last packet, for simple packet blocks.
    last_ts: i64,
}

/// The packet of a packet block, located in the block.
struct Found {
    block_len: usize,
    data_at: usize,
    caplen: usize,
    ts_ns: i64,
    orig_len: u32,
    linktype: LinkType,
    interface: u32,
}

/// Checks that `head` starts with a section header block: returns its byte order.
pub(super) fn detect(head: &[u8]) -> Option<bool> {
    if head.len() < 12 || read_u32(head, 0, false) != SHB {
        return None;
    }
    match read_u32(head, 8, false) {
        BYTE_ORDER_MAGIC => Some(false),
        m if m.swap_bytes() == BYTE_ORDER_MAGIC => Some(true),
        _ => None,
    }
}

/// Total length of the section header block at the start of `head` (from [`detect`]), if valid.
pub(super) fn shb_len(head: &[u8], big_endian: bool) -> Option<usize> {
    let len = read_u32(head, 4, big_endian) as usize;
    (len.is_multiple_of(4) && (MIN_SHB..=MAX_RECORD).contains(&len)).then_some(len)
}

fn corrupt(offset: u64, what: impl Into<String>) -> Fault {
    Fault::Corrupt {
        offset,
        what: what.into(),
    }
}

impl Pcapng {
    pub(super) fn new(big_endian: bool) -> Pcapng {
        Pcapng {
            big_endian,
            interfaces: Vec::new(),
            base: 0,
            last_ts: 0,
        }
    }

    /// Reads blocks until a packet, the end, or an error. A packet on an interface with an
    /// unsupported link type is consumed and reported as [`Fault::Unsupported`].
    #[inline]
    pub(super) fn next<'a>(
        &mut self,
        input: &'a mut Input,
        status: &mut Status,
    ) -> Result<Option<RawFrame<'a>>, Fault> {
        let Some(found) = self.find_packet(input, status)? else {
            return Ok(None);
        };
        let block = input.take(found.block_len);
        let data = block
            .get(found.data_at..found.data_at + found.caplen)
            .unwrap_or_default();
        Ok(Some(RawFrame {
            ts_ns: found.ts_ns,
            orig_len: found.orig_len,
            linktype: found.linktype,
            interface: found.interface,
            data,
        }))
    }

    fn find_packet(
        &mut self,
        input: &mut Input,
        status: &mut Status,
    ) -> Result<Option<Found>, Fault> {
        loop {
            if !input.ensure(8)? {
                status.end(input);
                return Ok(None);
            }
            let offset = input.offset();
            let head = input.avail();
            let block_type = read_u32(head, 0, self.big_endian);
            if block_type == SHB {
                if !input.ensure(12)? {
                    status.end(input);
                    return Ok(None);
                }
                match detect(input.avail()) {
                    Some(big_endian) => self.big_endian = big_endian,
                    None => return Err(corrupt(offset, "bad byte-order magic in section header")),
                }
            }
            let be = self.big_endian;
            let len = read_u32(input.avail(), 4, be) as usize;
            let min = if block_type == SHB { MIN_SHB } else { 12 };
            if !len.is_multiple_of(4) || len < min {
                return Err(corrupt(
                    offset,
                    format!("invalid length {len} of block type {block_type:#x}"),
                ));
            }
            if len > MAX_RECORD {
                return Err(corrupt(
                    offset,
                    format!("block length {len} exceeds the maximum {MAX_RECORD}"),
                ));
            }
            if !input.ensure(len)? {
                status.end(input);
                return Ok(None);
            }
            let block = &input.avail()[..len];
            let trailer = read_u32(block, len - 4, be) as usize;
            if trailer != len {
                return Err(corrupt(
                    offset,
                    format!("block length {len} does not match trailing length {trailer}"),
                ));
            }
            let body = &block[8..len - 4];
            match block_type {
                SHB => self.section(body, offset)?,
                IDB => self.interface(body, offset)?,
                EPB | PACKET_BLOCK => {
                    if body.len() < 20 {
                        status.skipped += 1;
                    } else {
                        let id = if block_type == EPB {
                            read_u32(body, 0, be)
                        } else {
                            let b = [body[0], body[1]];
                            u32::from(if be {
                                u16::from_be_bytes(b)
                            } else {
                                u16::from_le_bytes(b)
                            })
                        };
                        let iface = self.lookup(id, offset)?;
                        let units = u64::from(read_u32(body, 4, be)) << 32
                            | u64::from(read_u32(body, 8, be));
                        let caplen = read_u32(body, 12, be) as usize;
                        let orig_len = read_u32(body, 16, be);
                        if caplen > body.len() - 20 {
                            status.skipped += 1;
                        } else {
                            let ts_ns = clamp(iface.scale.to_ns(units) as i128 + iface.offset_ns);
                            self.last_ts = ts_ns;
                            let found = self.found(iface, id, len, 28, caplen, ts_ns, orig_len);
                            if found.is_err() {
                                input.take(len);
                            }
                            return found;
                        }
                    }
                }
                SPB => {
                    if body.len() < 4 {
                        status.skipped += 1;
                    } else {
                        let iface = self.lookup(0, offset)?;
                        let orig_len = read_u32(body, 0, be);
                        let mut caplen = (orig_len as usize).min(body.len() - 4);
                        if iface.snaplen != 0 {
                            caplen = caplen.min(iface.snaplen as usize);
                        }
                        let found = self.found(iface, 0, len, 12, caplen, self.last_ts, orig_len);
                        if found.is_err() {
                            input.take(len);
                        }
                        return found;
                    }
                }
                _ => {}
            }
            input.take(len);
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn found(
        &self,
        iface: Interface,
        id: u32,
        block_len: usize,
        data_at: usize,
        caplen: usize,
        ts_ns: i64,
        orig_len: u32,
    ) -> Result<Option<Found>, Fault> {
        let interface = self.base.saturating_add(id);
        if !iface.supported {
            return Err(Fault::Unsupported {
                linktype: iface.linktype,
                interface,
            });
        }
        Ok(Some(Found {
            block_len,
            data_at,
            caplen,
            ts_ns,
            orig_len,
            linktype: iface.linktype,
            interface,
        }))
    }

    #[inline]
    fn lookup(&self, id: u32, offset: u64) -> Result<Interface, Fault> {
        match self.interfaces.get(id as usize) {
            Some(iface) => Ok(*iface),
            None => Err(corrupt(
                offset,
                format!(
                    "packet on interface {id}, but the section defines {} interface(s)",
                    self.interfaces.len()
                ),
            )),
        }
    }

    /// A new section: byte order (already set) and version; interfaces start over.
    fn section(&mut self, body: &[u8], offset: u64) -> Result<(), Fault> {
        let b = [body[4], body[5]];
        let major = if self.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        };
        if major != 1 {
            return Err(corrupt(
                offset,
                format!("unsupported pcapng major version {major}"),
            ));
        }
        let count = u32::try_from(self.interfaces.len()).unwrap_or(u32::MAX);
        self.base = self.base.saturating_add(count);
        self.interfaces.clear();
        Ok(())
    }

    fn interface(&mut self, body: &[u8], offset: u64) -> Result<(), Fault> {
        if body.len() < 8 {
            return Err(corrupt(offset, "interface description block too short"));
        }
        if self.interfaces.len() >= MAX_INTERFACES {
            return Err(corrupt(
                offset,
                format!("more than {MAX_INTERFACES} interfaces in one section"),
            ));
        }
        let be = self.big_endian;
        let u16_at = |at: usize| {
            let b = [body[at], body[at + 1]];
            if be {
                u16::from_be_bytes(b)
            } else {
                u16::from_le_bytes(b)
            }
        };
        let linktype = LinkType(u32::from(u16_at(0)));
        let snaplen = read_u32(body, 4, be);
        let mut scale = Scale::Mul(1000);
        let mut offset_ns = 0i128;
        // Options: code, length, value padded to 4 bytes. A malformed option list ends the
        // scan; the interface stays usable with what was read.
        let mut at = 8;
        while at + 4 <= body.len() {
            let code = u16_at(at);
            let olen = usize::from(u16_at(at + 2));
            let value_at = at + 4;
            let Some(value) = body.get(value_at..value_at + olen) else {
                break;
            };
            match (code, olen) {
                (0, _) => break,
                (9, 1) => scale = Scale::from_tsresol(value[0]),
                (14, 8) => {
                    let mut v = [0u8; 8];
                    v.copy_from_slice(value);
                    let secs = if be {
                        i64::from_be_bytes(v)
                    } else {
                        i64::from_le_bytes(v)
                    };
                    offset_ns = i128::from(secs) * 1_000_000_000;
                }
                _ => {}
            }
            at = value_at + olen.next_multiple_of(4);
        }
        self.interfaces.push(Interface {
            linktype,
            supported: supports_linktype(linktype),
            snaplen,
            scale,
            offset_ns,
        });
        Ok(())
    }
}

#[inline]
fn clamp(ns: i128) -> i64 {
    i64::try_from(ns).unwrap_or(if ns < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
mod tests {
    use super::Scale;

    #[test]
    fn tsresol_scales() {
        assert_eq!(Scale::from_tsresol(6).to_ns(1_500_000), 1_500_000_000);
        assert_eq!(Scale::from_tsresol(9).to_ns(7), 7);
        assert_eq!(Scale::from_tsresol(0).to_ns(3), 3_000_000_000);
        assert_eq!(Scale::from_tsresol(12).to_ns(5_000), 5);
        // 2^-20 s units: 2^20 units are one second.
        assert_eq!(Scale::from_tsresol(0x80 | 20).to_ns(1 << 20), 1_000_000_000);
        assert_eq!(Scale::from_tsresol(0x80 | 20).to_ns(1 << 19), 500_000_000);
        assert_eq!(Scale::from_tsresol(0x80).to_ns(2), 2_000_000_000);
        assert_eq!(Scale::from_tsresol(0x80 | 127).to_ns(u64::MAX), 0);
        assert_eq!(Scale::from_tsresol(47).to_ns(u64::MAX), 0);
        assert_eq!(Scale::from_tsresol(127).to_ns(u64::MAX), 0);
        assert_eq!(
            Scale::from_tsresol(0).to_ns(u64::MAX),
            u128::from(u64::MAX) * 1_000_000_000
        );
    }
}
