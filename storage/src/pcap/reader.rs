//! Extracting packets of a time range (and optionally one flow) as a pcap stream.

use std::{
    fs::{self, File},
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
};

use super::{
    MAX_SEGMENT_SPAN_NS, MAX_SNAP_LEN, PcapError, Result,
    format::{PCAP_HEADER_LEN, SegmentIndex, parse_record, pcap_header},
    layout::{HOUR_NS, index_path, parse_date_dir, parse_hour_dir, parse_segment_name, pcap_dir},
};
use crate::partition::sorted_entries;

/// What a read opened and skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadStats {
    /// Segments whose index was read.
    pub segments_read: usize,
    /// Segments skipped by their name (they start after the range).
    pub segments_skipped: usize,
    /// Segments without an index (not yet published, or left by a crash before
    /// [`recover`](super::recover) ran); they are not read.
    pub segments_without_index: usize,
    /// Frames decompressed.
    pub frames_read: usize,
    /// Frames of read indexes that were not decompressed (time or flow cannot match).
    pub frames_skipped: usize,
    /// Compressed bytes read from segments (indexes not counted).
    pub compressed_bytes_read: u64,
    /// Packets returned.
    pub packets: usize,
}

/// One published segment and its index.
#[derive(Debug)]
pub struct SegmentReader {
    path: PathBuf,
    file: File,
    index: SegmentIndex,
}

impl SegmentReader {
    /// Opens a segment (`….pcap.zst`) and reads its index (`….pcap.zst.idx`).
    pub fn open(segment: &Path) -> Result<SegmentReader> {
        let idx = index_path(segment);
        let bytes = fs::read(&idx).map_err(PcapError::io("read", &idx))?;
        let index = SegmentIndex::decode(&bytes, &idx)?;
        let file = File::open(segment).map_err(PcapError::io("open", segment))?;
        let len = file
            .metadata()
            .map_err(PcapError::io("stat", segment))?
            .len();
        // Frames are in file order and do not overlap (padding may lie between them).
        let mut end = 0u64;
        for f in &index.frames {
            if f.offset < end {
                return Err(PcapError::corrupt(&idx, "frames overlap"));
            }
            end = f.offset + u64::from(f.compressed_size);
        }
        if end > len {
            return Err(PcapError::corrupt(segment, "shorter than its index says"));
        }
        Ok(SegmentReader {
            path: segment.to_owned(),
            file,
            index,
        })
    }

    /// The segment's index.
    pub fn index(&self) -> &SegmentIndex {
        &self.index
    }

    /// The pcap bytes of frame `i` (the first also holds the global header).
    pub fn read_frame(&mut self, i: usize) -> Result<Vec<u8>> {
        let f = self
            .index
            .frames
            .get(i)
            .ok_or_else(|| PcapError::corrupt(&self.path, format!("no frame {i}")))?;
        let mut compressed = vec![0u8; f.compressed_size as usize];
        self.file
            .seek(SeekFrom::Start(f.offset))
            .and_then(|_| self.file.read_exact(&mut compressed))
            .map_err(PcapError::io("read", &self.path))?;
        let out = zstd::bulk::decompress(&compressed, f.decompressed_size as usize)
            .map_err(PcapError::io("decompress", &self.path))?;
        if out.len() != f.decompressed_size as usize {
            return Err(PcapError::corrupt(
                &self.path,
                format!("frame {i} has another size than its index says"),
            ));
        }
        Ok(out)
    }

    /// Appends to `out` the records of frame `i` in `[from_ns, to_ns]` (and of `flow`),
    /// as `(time, record bytes)`.
    fn matching(
        &mut self,
        i: usize,
        from_ns: i64,
        to_ns: i64,
        flow: Option<u64>,
        out: &mut Vec<(i64, Vec<u8>)>,
    ) -> Result<()> {
        let bytes = self.read_frame(i)?;
        let frame = &self.index.frames[i];
        let slot = match flow {
            Some(id) => match frame.flows.binary_search(&id) {
                Ok(s) => Some(s as u32),
                Err(_) => return Ok(()),
            },
            None => None,
        };
        let mut pos = if i == 0 { PCAP_HEADER_LEN } else { 0 };
        for n in 0..frame.packets as usize {
            let (ts, len) = parse_record(&bytes[pos.min(bytes.len())..]).ok_or_else(|| {
                PcapError::corrupt(&self.path, format!("frame {i}: truncated record {n}"))
            })?;
            let flow_ok = slot.is_none_or(|s| frame.packet_flows.get(n) == Some(&s));
            if flow_ok && (from_ns..=to_ns).contains(&ts) {
                out.push((ts, bytes[pos..pos + len].to_vec()));
            }
            pos += len;
        }
        if pos != bytes.len() {
            return Err(PcapError::corrupt(
                &self.path,
                format!("frame {i}: bytes after its last record"),
            ));
        }
        Ok(())
    }
}

/// The packets of `[from_ns, to_ns]` (both inclusive), of flow `flow` if given, as one
/// nanosecond pcap stream in time order (packets of equal time keep their stored order),
/// with counts of what was read and skipped.
///
/// Hour directories that cannot hold the range are not listed, segments that start after
/// it are skipped by their names, and within a segment only the frames whose time span
/// overlaps the range (and whose flow set holds `flow`) are decompressed. The stream's
/// header has the segments' link type and largest snap length (Ethernet and 262 144 when no
/// segment matched); segments of different link types are an error.
pub fn read_packets(
    root: &Path,
    from_ns: i64,
    to_ns: i64,
    flow: Option<u64>,
) -> Result<(Vec<u8>, ReadStats)> {
    let mut stats = ReadStats::default();
    let mut records: Vec<(i64, Vec<u8>)> = Vec::new();
    let mut link: Option<(u32, u32)> = None;
    for path in segments_overlapping(root, from_ns, to_ns, &mut stats)? {
        let mut seg = SegmentReader::open(&path)?;
        stats.segments_read += 1;
        let (lt, snap) = (seg.index.link_type, seg.index.snap_len);
        for i in 0..seg.index.frames.len() {
            let f = &seg.index.frames[i];
            let may = f.overlaps(from_ns, to_ns)
                && flow.is_none_or(|id| f.flows.binary_search(&id).is_ok());
            if !may {
                stats.frames_skipped += 1;
                continue;
            }
            match link {
                Some((first, _)) if first != lt => {
                    return Err(PcapError::MixedLinkTypes { first, other: lt });
                }
                Some((_, s)) => link = Some((lt, s.max(snap))),
                None => link = Some((lt, snap)),
            }
            stats.frames_read += 1;
            stats.compressed_bytes_read += u64::from(f.compressed_size);
            seg.matching(i, from_ns, to_ns, flow, &mut records)?;
        }
    }
    records.sort_by_key(|r| r.0);
    let (link_type, snap_len) = link.unwrap_or((1, MAX_SNAP_LEN));
    let mut out =
        Vec::with_capacity(PCAP_HEADER_LEN + records.iter().map(|r| r.1.len()).sum::<usize>());
    out.extend_from_slice(&pcap_header(link_type, snap_len));
    for (_, r) in &records {
        out.extend_from_slice(r);
    }
    stats.packets = records.len();
    Ok((out, stats))
}

/// The published segments (those with an index) that may hold packets of `[from_ns, to_ns]`,
/// in directory order (hour, then start time, then name), pruned as [`read_packets`] prunes:
/// hour directories that cannot hold the range are not listed and segments that start
/// after it are skipped by their names. The counts of skipped segments and of segments
/// without an index go to `stats`. For callers that extract frame by frame
/// ([`SegmentReader::read_frame`]) under their own limits.
pub fn segments_overlapping(
    root: &Path,
    from_ns: i64,
    to_ns: i64,
    stats: &mut ReadStats,
) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let dir = pcap_dir(root);
    if from_ns > to_ns || !dir.is_dir() {
        return Ok(out);
    }
    let (from, to) = (i128::from(from_ns), i128::from(to_ns));
    let hour = i128::from(HOUR_NS);
    // A segment's packets lie in [its hour's start, its hour's end + MAX_SEGMENT_SPAN_NS).
    let usable =
        |h: i128| h * hour <= to && (h + 1) * hour + i128::from(MAX_SEGMENT_SPAN_NS) > from;
    for (date_path, day) in sorted_entries(&dir, parse_date_dir)
        .map_err(PcapError::io("read directory", dir.as_path()))?
    {
        if !(0..24).any(|hh| usable(i128::from(day) * 24 + hh)) {
            continue;
        }
        for (hour_path, hh) in sorted_entries(&date_path, parse_hour_dir)
            .map_err(PcapError::io("read directory", date_path.as_path()))?
        {
            if !usable(i128::from(day) * 24 + i128::from(hh)) {
                continue;
            }
            for (path, start) in sorted_entries(&hour_path, parse_segment_name)
                .map_err(PcapError::io("read directory", hour_path.as_path()))?
            {
                if start > to_ns {
                    stats.segments_skipped += 1;
                } else if !index_path(&path).is_file() {
                    stats.segments_without_index += 1;
                } else {
                    out.push(path);
                }
            }
        }
    }
    Ok(out)
}
