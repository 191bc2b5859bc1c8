//! Classic pcap: a 24-byte file header, then records of a 16-byte header and the frame.
//! Micro- and nanosecond magics in both byte orders, and the "modified" (Kuznetzov) variant
//! whose record header is 24 bytes.

use super::input::{Input, MAX_RECORD};
use super::{Fault, Format, RawFrame, Status};
use crate::decode::LinkType;

/// Size of the file header.
pub(super) const FILE_HEADER: usize = 24;
/// Wireshark's maximum packet size for ordinary link types (`WTAP_MAX_PACKET_SIZE_STANDARD`).
const MAX_STANDARD_CAPLEN: u32 = 262_144;

/// What the file header says.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pcap {
    big_endian: bool,
    nanos: bool,
    /// 16, or 24 for the modified format.
    record_header: usize,
    linktype: LinkType,
    /// The largest acceptable captured length.
    max_caplen: u32,
}

/// Recognises a pcap magic at the start of `head`: the format and whether it is big-endian.
pub(super) fn detect(head: &[u8]) -> Option<(Format, bool)> {
    let magic = head.get(..4)?;
    let le = u32::from_le_bytes([magic[0], magic[1], magic[2], magic[3]]);
    let be = u32::from_be_bytes([magic[0], magic[1], magic[2], magic[3]]);
    for (value, big_endian) in [(le, false), (be, true)] {
        match value {
            0xa1b2_c3d4 | 0xa1b2_cd34 => return Some((Format::Pcap, big_endian)),
            0xa1b2_3c4d => return Some((Format::PcapNs, big_endian)),
            _ => {}
        }
    }
    None
}

impl Pcap {
    /// Parses the 24-byte file header (`head.len() >= FILE_HEADER`).
    pub(super) fn parse(head: &[u8]) -> Option<Pcap> {
        let (format, big_endian) = detect(head)?;
        let header = head.get(..FILE_HEADER)?;
        let rd = |at: usize| read_u32(header, at, big_endian);
        let modified = rd(0) == 0xa1b2_cd34;
        let snaplen = rd(16);
        // Bits 0-15: link type; bits 16-25 reserved; bit 26: FCS length present; bits 28-31:
        // FCS length in 16-bit words (LINKTYPE_FCS in the tcpdump registry).
        let linktype = LinkType(rd(20) & 0xFFFF);
        let limit = u32::try_from(MAX_RECORD).unwrap_or(u32::MAX);
        Some(Pcap {
            big_endian,
            nanos: format == Format::PcapNs,
            record_header: if modified { 24 } else { 16 },
            linktype,
            max_caplen: MAX_STANDARD_CAPLEN.max(snaplen.min(limit)),
        })
    }

    pub(super) fn linktype(&self) -> LinkType {
        self.linktype
    }

    /// Reads the next record.
    #[inline]
    pub(super) fn next<'a>(
        &self,
        input: &'a mut Input,
        status: &mut Status,
    ) -> Result<Option<RawFrame<'a>>, Fault> {
        let hl = self.record_header;
        if !input.ensure(hl)? {
            status.end(input);
            return Ok(None);
        }
        let h = input.avail();
        let be = self.big_endian;
        let ts_sec = read_u32(h, 0, be);
        let ts_frac = read_u32(h, 4, be);
        let caplen = read_u32(h, 8, be);
        let orig_len = read_u32(h, 12, be);
        if caplen > self.max_caplen {
            return Err(Fault::Corrupt {
                offset: input.offset(),
                what: format!(
                    "record captured length {caplen} exceeds the maximum {}",
                    self.max_caplen
                ),
            });
        }
        let total = hl + caplen as usize;
        if !input.ensure(total)? {
            status.end(input);
            return Ok(None);
        }
        let frac_ns = if self.nanos {
            i64::from(ts_frac)
        } else {
            i64::from(ts_frac) * 1000
        };
        let ts_ns = i64::from(ts_sec) * 1_000_000_000 + frac_ns;
        let record = input.take(total);
        Ok(Some(RawFrame {
            ts_ns,
            orig_len,
            linktype: self.linktype,
            interface: 0,
            data: record.get(hl..).unwrap_or_default(),
        }))
    }
}

#[inline(always)]
pub(super) fn read_u32(b: &[u8], at: usize, big_endian: bool) -> u32 {
    let v = [b[at], b[at + 1], b[at + 2], b[at + 3]];
    if big_endian {
        u32::from_be_bytes(v)
    } else {
        u32::from_le_bytes(v)
    }
}
