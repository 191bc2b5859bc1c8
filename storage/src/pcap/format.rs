//! Byte formats: the pcap global header and record headers, the seek table, the index.

use std::path::Path;

use super::{INDEX_VERSION, PcapError, Result};

/// Nanosecond pcap magic, as written (little-endian `a1b23c4d`).
pub(crate) const PCAP_NS_MAGIC: u32 = 0xa1b2_3c4d;
pub(crate) const PCAP_HEADER_LEN: usize = 24;
pub(crate) const RECORD_HEADER_LEN: usize = 16;
pub(crate) const SKIPPABLE_MAGIC: u32 = 0x184D_2A5E;
pub(crate) const SEEKABLE_MAGIC: u32 = 0x8F92_EAB1;
const INDEX_MAGIC: &[u8; 8] = b"TVPCAPIX";
const NS_PER_SEC: i64 = 1_000_000_000;

/// The 24-byte global header of a nanosecond pcap stream.
pub(crate) fn pcap_header(link_type: u32, snap_len: u32) -> [u8; PCAP_HEADER_LEN] {
    let mut h = [0u8; PCAP_HEADER_LEN];
    h[0..4].copy_from_slice(&PCAP_NS_MAGIC.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    // thiszone and sigfigs stay 0.
    h[16..20].copy_from_slice(&snap_len.to_le_bytes());
    h[20..24].copy_from_slice(&link_type.to_le_bytes());
    h
}

/// Whether a nanosecond pcap record can hold `ts_ns`.
pub(crate) fn ts_in_range(ts_ns: i64) -> bool {
    (0..(i64::from(u32::MAX) + 1) * NS_PER_SEC).contains(&ts_ns)
}

/// Appends a record header (the time must satisfy [`ts_in_range`]).
pub(crate) fn push_record_header(out: &mut Vec<u8>, ts_ns: i64, caplen: u32, origlen: u32) {
    let secs = (ts_ns / NS_PER_SEC) as u32;
    let nanos = (ts_ns % NS_PER_SEC) as u32;
    out.extend_from_slice(&secs.to_le_bytes());
    out.extend_from_slice(&nanos.to_le_bytes());
    out.extend_from_slice(&caplen.to_le_bytes());
    out.extend_from_slice(&origlen.to_le_bytes());
}

/// The time and total length (header included) of the record at the start of `bytes`.
pub(crate) fn parse_record(bytes: &[u8]) -> Option<(i64, usize)> {
    let h = bytes.get(..RECORD_HEADER_LEN)?;
    let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let ts = i64::from(word(0)) * NS_PER_SEC + i64::from(word(4));
    let len = RECORD_HEADER_LEN + word(8) as usize;
    (bytes.len() >= len).then_some((ts, len))
}

/// The seek table skippable frame for frames of `(compressed, decompressed)` sizes.
pub(crate) fn seek_table(frames: &[(u32, u32)]) -> Vec<u8> {
    let payload = frames.len() * 8 + 9;
    let mut out = Vec::with_capacity(8 + payload);
    out.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
    out.extend_from_slice(&(payload as u32).to_le_bytes());
    for &(c, d) in frames {
        out.extend_from_slice(&c.to_le_bytes());
        out.extend_from_slice(&d.to_le_bytes());
    }
    out.extend_from_slice(&(frames.len() as u32).to_le_bytes());
    out.push(0); // descriptor: no checksums
    out.extend_from_slice(&SEEKABLE_MAGIC.to_le_bytes());
    out
}

/// One frame of a segment, as its index describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FrameInfo {
    /// Offset of the zstd frame in the segment file.
    pub offset: u64,
    /// Compressed size of the frame.
    pub compressed_size: u32,
    /// Size of the pcap bytes it holds.
    pub decompressed_size: u32,
    /// Smallest packet time in the frame (ns since the epoch).
    pub min_ts: i64,
    /// Largest packet time in the frame.
    pub max_ts: i64,
    /// Packets in the frame.
    pub packets: u32,
    /// The distinct flow ids of the frame's packets, ascending.
    pub flows: Vec<u64>,
    /// Per packet, in record order, the position of its flow id in [`flows`](Self::flows).
    pub packet_flows: Vec<u32>,
}

impl FrameInfo {
    /// Appends the frame's index entry (see the [module docs](crate::pcap)).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.compressed_size.to_le_bytes());
        out.extend_from_slice(&self.decompressed_size.to_le_bytes());
        out.extend_from_slice(&self.min_ts.to_le_bytes());
        out.extend_from_slice(&self.max_ts.to_le_bytes());
        out.extend_from_slice(&self.packets.to_le_bytes());
        out.extend_from_slice(&(self.flows.len() as u32).to_le_bytes());
        for id in &self.flows {
            out.extend_from_slice(&id.to_le_bytes());
        }
        for &slot in &self.packet_flows {
            let mut v = slot;
            while v >= 0x80 {
                out.push((v as u8) | 0x80);
                v >>= 7;
            }
            out.push(v as u8);
        }
    }

    /// Parses one index entry at the cursor.
    fn decode(r: &mut Cursor<'_>) -> Result<FrameInfo> {
        let total = r.bytes.len();
        let offset = r.u64()?;
        let compressed_size = r.u32()?;
        let decompressed_size = r.u32()?;
        let min_ts = r.u64()? as i64;
        let max_ts = r.u64()? as i64;
        let packets = r.u32()?;
        let n_flows = r.u32()? as usize;
        if n_flows > total / 8 || packets as usize > total {
            return Err(r.err("counts exceed the file"));
        }
        let mut flows = Vec::with_capacity(n_flows);
        for _ in 0..n_flows {
            flows.push(r.u64()?);
        }
        if flows.windows(2).any(|w| w[0] >= w[1]) {
            return Err(r.err("flow ids not ascending"));
        }
        let mut packet_flows = Vec::with_capacity(packets as usize);
        for _ in 0..packets {
            let slot = r.varint()?;
            if slot as usize >= n_flows {
                return Err(r.err("flow position out of range"));
            }
            packet_flows.push(slot);
        }
        Ok(FrameInfo {
            offset,
            compressed_size,
            decompressed_size,
            min_ts,
            max_ts,
            packets,
            flows,
            packet_flows,
        })
    }

    /// Parses a whole buffer holding exactly one index entry (a journal record).
    pub(crate) fn decode_one(bytes: &[u8], path: &Path) -> Result<FrameInfo> {
        let mut r = Cursor {
            bytes,
            pos: 0,
            path,
        };
        let f = FrameInfo::decode(&mut r)?;
        if r.pos != bytes.len() {
            return Err(r.err("trailing bytes"));
        }
        Ok(f)
    }

    /// Whether the frame may hold packets of `[from_ns, to_ns]`.
    pub fn overlaps(&self, from_ns: i64, to_ns: i64) -> bool {
        self.min_ts <= to_ns && self.max_ts >= from_ns
    }
}

/// A segment's index: the link type and snap length of its pcap stream and its frames.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SegmentIndex {
    /// pcap link type (LINKTYPE_*).
    pub link_type: u32,
    /// pcap snap length.
    pub snap_len: u32,
    /// Packets in the segment.
    pub packets: u64,
    /// Smallest packet time.
    pub min_ts: i64,
    /// Largest packet time.
    pub max_ts: i64,
    /// The frames, in file order.
    pub frames: Vec<FrameInfo>,
}

impl SegmentIndex {
    /// The index file's bytes (format version 1, see the [module docs](crate::pcap)).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(INDEX_MAGIC);
        out.extend_from_slice(&INDEX_VERSION.to_le_bytes());
        out.extend_from_slice(&self.link_type.to_le_bytes());
        out.extend_from_slice(&self.snap_len.to_le_bytes());
        out.extend_from_slice(&(self.frames.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.packets.to_le_bytes());
        out.extend_from_slice(&self.min_ts.to_le_bytes());
        out.extend_from_slice(&self.max_ts.to_le_bytes());
        for f in &self.frames {
            f.encode(&mut out);
        }
        out
    }

    /// Parses an index file's bytes (`path` names it in errors).
    pub fn decode(bytes: &[u8], path: &Path) -> Result<SegmentIndex> {
        let mut r = Cursor {
            bytes,
            pos: 0,
            path,
        };
        if r.take(8)? != INDEX_MAGIC {
            return Err(PcapError::corrupt(path, "not a tapvault pcap index"));
        }
        let version = r.u32()?;
        if version != INDEX_VERSION {
            return Err(PcapError::UnsupportedVersion {
                path: path.to_owned(),
                version,
            });
        }
        let link_type = r.u32()?;
        let snap_len = r.u32()?;
        let frame_count = r.u32()? as usize;
        let packets = r.u64()?;
        let min_ts = r.u64()? as i64;
        let max_ts = r.u64()? as i64;
        let mut frames = Vec::with_capacity(frame_count.min(bytes.len() / 40));
        for _ in 0..frame_count {
            frames.push(FrameInfo::decode(&mut r)?);
        }
        if r.pos != bytes.len() {
            return Err(r.err("trailing bytes"));
        }
        Ok(SegmentIndex {
            link_type,
            snap_len,
            packets,
            min_ts,
            max_ts,
            frames,
        })
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn err(&self, reason: &str) -> PcapError {
        PcapError::corrupt(self.path, format!("index: {reason} at byte {}", self.pos))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let s = self
            .bytes
            .get(self.pos..self.pos + n)
            .ok_or_else(|| self.err("truncated"))?;
        self.pos += n;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn varint(&mut self) -> Result<u32> {
        let mut v: u32 = 0;
        for shift in (0..35).step_by(7) {
            let b = self.take(1)?[0];
            v |= u32::from(b & 0x7f)
                .checked_shl(shift)
                .filter(|_| shift < 28 || b & 0x7f < 0x10)
                .ok_or_else(|| self.err("varint overflow"))?;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err("varint too long"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_round_trip_and_corruption() {
        let index = SegmentIndex {
            link_type: 1,
            snap_len: 65_535,
            packets: 3,
            min_ts: 5,
            max_ts: 9,
            frames: vec![FrameInfo {
                offset: 0,
                compressed_size: 100,
                decompressed_size: 200,
                min_ts: 5,
                max_ts: 9,
                packets: 3,
                flows: vec![7, u64::MAX],
                packet_flows: vec![0, 1, 300],
            }],
        };
        let p = Path::new("x.idx");
        // Position 300 is out of range for two flows.
        assert!(SegmentIndex::decode(&index.encode(), p).is_err());
        let mut ok = index.clone();
        ok.frames[0].packet_flows = vec![0, 1, 1];
        let bytes = ok.encode();
        assert_eq!(SegmentIndex::decode(&bytes, p).unwrap(), ok);
        for cut in 0..bytes.len() {
            assert!(SegmentIndex::decode(&bytes[..cut], p).is_err());
        }
        let mut v2 = bytes.clone();
        v2[8] = 2;
        assert!(matches!(
            SegmentIndex::decode(&v2, p),
            Err(PcapError::UnsupportedVersion { version: 2, .. })
        ));
    }

    #[test]
    fn records() {
        let mut v = Vec::new();
        push_record_header(&mut v, 1_700_000_000_123_456_789, 3, 60);
        v.extend_from_slice(b"abc");
        assert_eq!(parse_record(&v), Some((1_700_000_000_123_456_789, 19)));
        assert_eq!(parse_record(&v[..18]), None);
        assert!(ts_in_range(0));
        assert!(!ts_in_range(-1));
        assert!(!ts_in_range((1 << 32) * 1_000_000_000));
    }
}
