use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use crate::util::TempDir;
use tapvault_storage::{
    PcapError, SegmentOptions, SegmentReader, SegmentWriter,
    pcap::{self, read_packets},
};

/// 2023-11-14T22:59:50Z: ten seconds before an hour boundary.
const T0: i64 = 1_700_002_790_000_000_000;
const SEC: i64 = 1_000_000_000;
const MS: i64 = 1_000_000;

#[derive(Clone, Debug)]
struct Pkt {
    ts: i64,
    orig: u32,
    data: Vec<u8>,
    flow: u64,
}

/// `n` packets from `start`, 0 to 8 ms apart, of 20 to 1500 bytes, over 16 flows; flow
/// `0xdead` only appears in the packets `rare` covers.
fn packets(n: usize, start: i64, rare: std::ops::Range<usize>) -> Vec<Pkt> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut ts = start;
    (0..n)
        .map(|i| {
            ts += (next() % (8 * MS as u64)) as i64;
            let len = 20 + (next() % 1481) as usize;
            let flow = if rare.contains(&i) {
                0xdead
            } else {
                1000 + next() % 16
            };
            let data: Vec<u8> = (0..len)
                .map(|j| {
                    if j < 34 {
                        (flow as u8) ^ j as u8
                    } else {
                        next() as u8 % 4
                    }
                })
                .collect();
            Pkt {
                ts,
                orig: len as u32 + (i % 3) as u32,
                data,
                flow,
            }
        })
        .collect()
}

/// The pcap record of a packet as stored with snap length `snap`.
fn record(p: &Pkt, snap: usize) -> Vec<u8> {
    let cap = p.data.len().min(snap);
    let mut r = Vec::new();
    r.extend_from_slice(&((p.ts / SEC) as u32).to_le_bytes());
    r.extend_from_slice(&((p.ts % SEC) as u32).to_le_bytes());
    r.extend_from_slice(&(cap as u32).to_le_bytes());
    r.extend_from_slice(&p.orig.to_le_bytes());
    r.extend_from_slice(&p.data[..cap]);
    r
}

/// Splits a nanosecond little-endian pcap stream into (link type, snap length, records).
fn parse_pcap(bytes: &[u8]) -> (u32, u32, Vec<Vec<u8>>) {
    let word = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
    assert!(bytes.len() >= 24, "no global header");
    assert_eq!(word(bytes, 0), 0xa1b2_3c4d, "magic");
    assert_eq!(&bytes[4..8], &[2, 0, 4, 0], "version 2.4");
    let mut records = Vec::new();
    let mut pos = 24;
    while pos < bytes.len() {
        let len = 16 + word(bytes, pos + 8) as usize;
        assert!(pos + len <= bytes.len(), "truncated record");
        records.push(bytes[pos..pos + len].to_vec());
        pos += len;
    }
    (word(bytes, 20), word(bytes, 16), records)
}

fn write(root: &Path, id: &str, options: SegmentOptions, pkts: &[Pkt]) -> Vec<PathBuf> {
    let mut w = SegmentWriter::new(root, id, options).unwrap();
    let mut segments = Vec::new();
    for p in pkts {
        segments.extend(w.write(p.ts, p.orig, &p.data, p.flow).unwrap());
    }
    segments.extend(w.close().unwrap());
    for s in &segments {
        assert!(s.segment.is_file() && s.index.is_file());
    }
    segments.into_iter().map(|s| s.segment).collect()
}

/// Small frames (16 KiB or 100 ms) and 4 s segments, so a few thousand packets make
/// several segments of many frames.
fn small() -> SegmentOptions {
    SegmentOptions::default()
        .frame_max_bytes(16 * 1024)
        .frame_max_span_ns(100 * MS)
        .segment_max_span_ns(4 * SEC)
}

fn zstd_d(path: &Path) -> Vec<u8> {
    let out = Command::new("zstd")
        .args(["-d", "-q", "-c"])
        .arg(path)
        .output()
        .expect("zstd is installed (Debian package `zstd`)");
    assert!(out.status.success(), "zstd -d failed: {out:?}");
    out.stdout
}

#[test]
fn round_trip_is_byte_identical_across_segments_and_frames() {
    let dir = TempDir::new("roundtrip");
    let pkts = packets(4000, T0, 0..0);
    let segments = write(&dir.0, "w_0", small(), &pkts);
    assert!(segments.len() >= 3, "{segments:?}");
    // Placement: by the first packet's hour; the range crosses 23:00.
    let names: Vec<String> = segments
        .iter()
        .map(|s| s.strip_prefix(&dir.0).unwrap().display().to_string())
        .collect();
    assert_eq!(
        names[0],
        format!("pcap/date=2023-11-14/hour=22/{}-w_0.pcap.zst", pkts[0].ts)
    );
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("pcap/date=2023-11-14/hour=23/"))
    );
    let mut frames = 0;
    for s in &segments {
        frames += SegmentReader::open(s).unwrap().index().frames.len();
    }
    assert!(frames > 2 * segments.len(), "{frames} frames");

    let last = pkts.last().unwrap().ts;
    let (bytes, stats) = read_packets(&dir.0, T0, last, None).unwrap();
    let (link, snap, records) = parse_pcap(&bytes);
    assert_eq!((link, snap), (1, 130_048));
    let expected: Vec<Vec<u8>> = pkts.iter().map(|p| record(p, usize::MAX)).collect();
    assert_eq!(records.len(), expected.len());
    assert!(records == expected, "records differ");
    assert_eq!(stats.frames_read, frames);
    assert_eq!(stats.frames_skipped, 0);
    assert_eq!(stats.packets, pkts.len());
    let total: u64 = segments
        .iter()
        .map(|s| fs::metadata(s).unwrap().len())
        .sum();
    assert!(stats.compressed_bytes_read > 0 && stats.compressed_bytes_read < total);
}

/// zstd's fast levels (negative) store literals without entropy coding: the packets read
/// back the same, and the output is clearly larger than level 1's on these low-entropy
/// payloads (so the level really reaches the compressor).
#[test]
fn fast_zstd_levels_round_trip_and_store_more_bytes() {
    let pkts = packets(3000, T0, 0..0);
    let last = pkts.last().unwrap().ts;
    let expected: Vec<Vec<u8>> = pkts.iter().map(|p| record(p, usize::MAX)).collect();
    let mut sizes = Vec::new();
    for level in [1, -5] {
        let dir = TempDir::new(&format!("level{level}"));
        let segments = write(&dir.0, "w_0", small().zstd_level(level), &pkts);
        let (bytes, _) = read_packets(&dir.0, T0, last, None).unwrap();
        let (_, _, records) = parse_pcap(&bytes);
        assert!(records == expected, "level {level}: records differ");
        // The standard tool reads every segment.
        for s in &segments {
            let _ = zstd_d(s);
        }
        sizes.push(
            segments
                .iter()
                .map(|s| fs::metadata(s).unwrap().len())
                .sum::<u64>(),
        );
    }
    assert!(
        sizes[1] as f64 > 1.2 * sizes[0] as f64,
        "level -5 wrote {} bytes, level 1 {}",
        sizes[1],
        sizes[0]
    );
}

/// `n` packets of 1400 pseudo-random bytes (encrypted traffic), 100 µs apart from `start`.
fn random_packets(n: usize, start: i64) -> Vec<Pkt> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..n)
        .map(|i| {
            let data: Vec<u8> = (0..1400)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 24) as u8
                })
                .collect();
            Pkt {
                ts: start + i as i64 * 100_000,
                orig: 1400,
                data,
                flow: 7,
            }
        })
        .collect()
}

/// Writes `pkts` with `options`; returns the writer's pass-through frame count and the
/// bytes of its segments, after checking that every packet reads back.
fn write_adaptive(tag: &str, options: SegmentOptions, pkts: &[Pkt]) -> (u64, u64) {
    let dir = TempDir::new(tag);
    let mut w = SegmentWriter::new(&dir.0, "w_0", options).unwrap();
    let mut segments = Vec::new();
    for p in pkts {
        segments.extend(w.write(p.ts, p.orig, &p.data, p.flow).unwrap());
    }
    let passed = w.pass_through_frames();
    segments.extend(w.close().unwrap());
    let (bytes, _) = read_packets(&dir.0, pkts[0].ts, pkts.last().unwrap().ts, None).unwrap();
    let (_, _, records) = parse_pcap(&bytes);
    let expected: Vec<Vec<u8>> = pkts.iter().map(|p| record(p, usize::MAX)).collect();
    assert!(records == expected, "{tag}: records differ");
    let size = segments
        .iter()
        .map(|s| {
            let _ = zstd_d(&s.segment);
            // tshark 4.0 reads the frames passed through (its block-layout quirk included).
            if let Some(numbers) = tshark_frame_numbers(&s.segment) {
                assert_eq!(
                    numbers.len() as u64,
                    s.packets,
                    "{tag}: {}",
                    s.segment.display()
                );
            }
            fs::metadata(&s.segment).unwrap().len()
        })
        .sum();
    (passed, size)
}

/// `zstd_adaptive`: traffic that does not compress is passed through (and reads back the
/// same), traffic that does is compressed, and after a switch to compressible traffic the
/// writer compresses again within a probe interval.
#[test]
fn adaptive_level_passes_incompressible_traffic_through() {
    let random = random_packets(3000, T0);
    let options = || SegmentOptions::default().frame_max_bytes(64 * 1024);
    let (passed, _) = write_adaptive("adaptive-random", options(), &random);
    // 3000 x 1.4 KB in 64 KiB frames: about 65 frames, all but the first (and the probes)
    // passed through.
    assert!(passed >= 50, "{passed} frames passed through");
    // Default frames (1 MiB) cross tshark's 131 075-byte blocks: passed-through frames that
    // do are laid out (and read) as well.
    let many = random_packets(12_000, T0);
    let (passed, _) = write_adaptive("adaptive-crossing", SegmentOptions::default(), &many);
    assert!(passed >= 8, "{passed} large frames passed through");
    let (passed, _) = write_adaptive("adaptive-off", options().zstd_adaptive(false), &random);
    assert_eq!(passed, 0);
    let text = packets(3000, T0, 0..0);
    let (passed, _) = write_adaptive("adaptive-text", options(), &text);
    assert_eq!(passed, 0, "compressible traffic was passed through");
    // Random traffic, then compressible traffic: the second part is compressed (not passed
    // through) once a probe sees it.
    let later = text.last().unwrap().ts + SEC;
    let mut mixed = random.clone();
    mixed.extend(packets(3000, later, 0..0));
    let (passed_mixed, size_mixed) = write_adaptive("adaptive-mixed", options(), &mixed);
    let (_, size_text) = write_adaptive(
        "adaptive-text-alone",
        options(),
        &packets(3000, later, 0..0),
    );
    let random_bytes: u64 = random.iter().map(|p| 16 + p.data.len() as u64).sum();
    assert!(
        size_mixed < random_bytes + size_text * 3 / 2,
        "mixed {size_mixed} bytes: the compressible part was not compressed \
         ({random_bytes} random bytes, {size_text} for the compressible part alone)"
    );
    assert!(
        passed_mixed >= 50,
        "{passed_mixed} frames of the mixed traffic passed through"
    );
}

#[test]
fn time_range_reads_only_overlapping_frames_and_returns_exactly_its_packets() {
    let dir = TempDir::new("range");
    let pkts = packets(3000, T0, 0..0);
    write(&dir.0, "w_0", small(), &pkts);
    // Boundaries are inclusive and fall on packet times.
    let (from, to) = (pkts[1000].ts, pkts[1200].ts);
    let (bytes, stats) = read_packets(&dir.0, from, to, None).unwrap();
    let (_, _, records) = parse_pcap(&bytes);
    let expected: Vec<Vec<u8>> = pkts
        .iter()
        .filter(|p| (from..=to).contains(&p.ts))
        .map(|p| record(p, usize::MAX))
        .collect();
    assert!(expected.len() >= 201);
    assert!(records == expected, "range records differ");
    assert!(stats.frames_skipped > 0, "{stats:?}");
    assert!(stats.frames_read < stats.frames_skipped, "{stats:?}");
    assert!(stats.frames_read >= 1);
    // A segment that starts after the range is skipped by its name.
    let (_, stats) = read_packets(&dir.0, T0, T0 + MS, None).unwrap();
    assert!(stats.segments_skipped > 0, "{stats:?}");
    // Empty results still make a valid stream.
    let (bytes, stats) = read_packets(&dir.0, T0 - 10 * SEC, T0 - SEC, None).unwrap();
    assert_eq!(parse_pcap(&bytes).2.len(), 0);
    assert_eq!(stats.frames_read, 0);
    let (bytes, _) = read_packets(&dir.0, 5, 4, None).unwrap();
    assert_eq!(bytes.len(), 24);
}

#[test]
fn flow_extraction_reads_only_frames_holding_the_flow() {
    let dir = TempDir::new("flow");
    let pkts = packets(3000, T0, 1500..1530);
    write(&dir.0, "w_0", small(), &pkts);
    let last = pkts.last().unwrap().ts;
    let (bytes, stats) = read_packets(&dir.0, T0, last, Some(0xdead)).unwrap();
    let (_, _, records) = parse_pcap(&bytes);
    let expected: Vec<Vec<u8>> = pkts[1500..1530]
        .iter()
        .map(|p| record(p, usize::MAX))
        .collect();
    assert!(records == expected, "flow records differ");
    assert!(stats.frames_read <= 3, "{stats:?}");
    assert!(stats.frames_skipped > 10, "{stats:?}");
    // A common flow within a range: exactly its packets there.
    let (from, to) = (pkts[100].ts, pkts[2500].ts);
    let (bytes, _) = read_packets(&dir.0, from, to, Some(1003)).unwrap();
    let expected: Vec<Vec<u8>> = pkts
        .iter()
        .filter(|p| p.flow == 1003 && (from..=to).contains(&p.ts))
        .map(|p| record(p, usize::MAX))
        .collect();
    assert!(!expected.is_empty());
    assert!(parse_pcap(&bytes).2 == expected);
    // An unknown flow reads nothing.
    let (bytes, stats) = read_packets(&dir.0, T0, last, Some(42)).unwrap();
    assert_eq!(parse_pcap(&bytes).2.len(), 0);
    assert_eq!(stats.frames_read, 0);
    assert_eq!(stats.compressed_bytes_read, 0);
}

#[test]
fn out_of_order_packets_come_back_in_time_order() {
    let dir = TempDir::new("order");
    let mut pkts = packets(50, T0 + 20 * SEC, 0..0);
    pkts.swap(10, 11);
    pkts.swap(30, 40);
    write(&dir.0, "w_0", SegmentOptions::default(), &pkts);
    let (bytes, _) = read_packets(&dir.0, 0, i64::MAX, None).unwrap();
    let mut sorted = pkts.clone();
    sorted.sort_by_key(|p| p.ts);
    let expected: Vec<Vec<u8>> = sorted.iter().map(|p| record(p, usize::MAX)).collect();
    assert!(parse_pcap(&bytes).2 == expected);
}

/// Parses the seek table at the end of a segment: (compressed, decompressed) per frame.
fn parse_seek_table(file: &[u8]) -> Vec<(u32, u32)> {
    let word = |i: usize| u32::from_le_bytes(file[i..i + 4].try_into().unwrap());
    let n = file.len();
    assert_eq!(word(n - 4), 0x8F92_EAB1, "seekable magic");
    let descriptor = file[n - 5];
    assert_eq!(descriptor & 0x80, 0, "no checksums");
    assert_eq!(descriptor & 0x7c, 0, "reserved bits");
    let frames = word(n - 9) as usize;
    let size = frames * 8 + 9;
    let start = n - 8 - size;
    assert_eq!(word(start), 0x184D_2A5E, "skippable frame magic");
    assert_eq!(word(start + 4) as usize, size, "skippable frame size");
    (0..frames)
        .map(|i| (word(start + 8 + 8 * i), word(start + 12 + 8 * i)))
        .collect()
}

/// Bytes of the empty blocks (raw or RLE of size 0, compressed of 2 bytes: no literals, no
/// sequences) that pad the end of the zstd frame `frame`.
fn inner_padding_bytes(frame: &[u8]) -> usize {
    let fhd = frame[4];
    let single = (fhd >> 5) & 1;
    let dict = [0, 1, 2, 4][usize::from(fhd & 3)];
    let fcs = [usize::from(single), 2, 4, 8][usize::from(fhd >> 6)];
    let mut at = 5 + (1 - usize::from(single)) + dict + fcs;
    let mut padding = 0;
    loop {
        let h = u32::from_le_bytes([frame[at], frame[at + 1], frame[at + 2], 0]);
        let (last, kind, size) = (h & 1 == 1, (h >> 1) & 3, (h >> 3) as usize);
        let body = if kind == 1 { 1 } else { size };
        let empty = match kind {
            0 | 1 => size == 0,
            _ => size == 2 && frame[at + 3..at + 5] == [0, 0],
        };
        if empty {
            padding += 3 + body;
        } else {
            padding = 0;
        }
        at += 3 + body;
        if last {
            assert_eq!(at, frame.len(), "a frame ends with its last block");
            return padding;
        }
    }
}

/// Checks the layout Wireshark 4.0 needs (see the `pcap` module docs), from the seek table
/// alone: a frame that crosses a 131 075-byte block boundary ends exactly on a later one;
/// where another frame ends (other than the file), the block holding that position starts
/// with a zstd frame and has at least 4 bytes left, or the frame ends on a block boundary;
/// and a zstd frame starts on every boundary a frame ends on. Returns how many frames cross
/// a boundary.
fn assert_wireshark_layout(file: &[u8], table: &[(u32, u32)]) -> usize {
    const BLOCK: usize = 131_075;
    let is_zstd = |at: usize| file[at..at + 4] == [0x28, 0xb5, 0x2f, 0xfd];
    let mut starts = std::collections::BTreeSet::new();
    let mut offset = 0usize;
    for &(c, _) in table {
        starts.insert(offset);
        offset += c as usize;
    }
    let mut crossing = 0;
    let mut offset = 0usize;
    for &(c, _) in table {
        let (s, e) = (offset, offset + c as usize);
        offset = e;
        if s / BLOCK != (e - 1) / BLOCK {
            crossing += 1;
            assert!(
                is_zstd(s),
                "frame {s}..{e} crosses a boundary and is not zstd"
            );
            assert_eq!(
                e % BLOCK,
                0,
                "frame {s}..{e} crosses a boundary, ends inside a block"
            );
        }
        if e % BLOCK == 0 {
            assert!(
                is_zstd(e),
                "frame at {e} (a block start) is not a zstd frame"
            );
        } else {
            let block = e / BLOCK * BLOCK;
            assert!(
                starts.contains(&block),
                "block {block} starts inside a frame"
            );
            assert!(
                is_zstd(block),
                "block {block} does not start with a zstd frame"
            );
            assert!(
                BLOCK - e % BLOCK >= 4,
                "frame ends {e} too close to a boundary"
            );
        }
    }
    crossing
}

#[test]
fn seek_table_parses_and_zstd_restores_the_pcap() {
    let dir = TempDir::new("seek");
    let pkts = packets(2000, T0, 0..0);
    let segments = write(&dir.0, "w_0", small(), &pkts);
    let mut records = Vec::new();
    for s in &segments {
        let file = fs::read(s).unwrap();
        let table = parse_seek_table(&file);
        assert_wireshark_layout(&file, &table);
        let reader = SegmentReader::open(s).unwrap();
        let index = reader.index();
        let compressed: u64 = table.iter().map(|t| u64::from(t.0)).sum();
        assert_eq!(
            compressed + 8 + 8 * table.len() as u64 + 9,
            file.len() as u64
        );
        // Each entry is one complete frame of the stated sizes: the data frames, in the
        // index's order, and padding (skippable or empty frames) that decompresses to nothing.
        let mut offset = 0usize;
        let mut data = index.frames.iter();
        for &(c, d) in &table {
            let frame = &file[offset..offset + c as usize];
            if d == 0 {
                let magic = u32::from_le_bytes(frame[..4].try_into().unwrap());
                assert!(magic == 0x184D_2A5E || magic == 0xFD2F_B528, "{magic:x}");
                if magic == 0x184D_2A5E {
                    let size = u32::from_le_bytes(frame[4..8].try_into().unwrap());
                    assert_eq!(size as usize + 8, frame.len());
                } else {
                    assert!(zstd::bulk::decompress(frame, 16).unwrap().is_empty());
                }
            } else {
                let f = data.next().expect("a data frame in the index");
                assert_eq!(
                    (f.offset as usize, f.compressed_size, f.decompressed_size),
                    (offset, c, d)
                );
                let out = zstd::bulk::decompress(frame, d as usize).unwrap();
                assert_eq!(out.len(), d as usize);
                // The frame holds whole records (the first also the global header).
                let body = if offset == 0 { &out[24..] } else { &out[..] };
                let mut pcap = vec![0u8; 24];
                pcap[..4].copy_from_slice(&0xa1b2_3c4du32.to_le_bytes());
                pcap[4..8].copy_from_slice(&[2, 0, 4, 0]);
                pcap.extend_from_slice(body);
                assert_eq!(parse_pcap(&pcap).2.len(), f.packets as usize);
            }
            offset += c as usize;
        }
        assert!(data.next().is_none());
        let restored = zstd_d(s);
        let decompressed: u64 = table.iter().map(|t| u64::from(t.1)).sum();
        assert_eq!(restored.len() as u64, decompressed);
        let (link, snap, recs) = parse_pcap(&restored);
        assert_eq!((link, snap), (1, 130_048));
        assert_eq!(recs.len() as u64, index.packets);
        records.extend(recs);
    }
    let expected: Vec<Vec<u8>> = pkts.iter().map(|p| record(p, usize::MAX)).collect();
    assert!(
        records == expected,
        "zstd -d output differs from what was written"
    );
}

/// The frame numbers `tshark -r` prints for a file, or `None` (after a message) when tshark
/// cannot run outside CI.
fn tshark_frame_numbers(path: &Path) -> Option<Vec<u64>> {
    let out = match Command::new("tshark")
        .arg("-r")
        .arg(path)
        .args(["-T", "fields", "-e", "frame.number"])
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "tshark is required in CI: {e}"
            );
            eprintln!("skipping tshark check: tshark not runnable ({e})");
            return None;
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tshark failed on {}: {stderr}",
        path.display()
    );
    assert!(
        !stderr.contains("appears to") && !stderr.contains("damaged"),
        "{stderr}"
    );
    Some(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect(),
    )
}

#[test]
fn tshark_reads_a_stored_segment_as_is() {
    let dir = TempDir::new("tshark");
    let pkts = packets(1500, T0 - 30 * SEC, 0..0);
    let options = small().link_type(1).snap_len(1000);
    let segments = write(&dir.0, "w_0", options, &pkts);
    assert!(segments.len() >= 2);
    for s in &segments {
        let Some(numbers) = tshark_frame_numbers(s) else {
            return;
        };
        let expected = SegmentReader::open(s).unwrap().index().packets;
        assert!(expected > 0);
        assert_eq!(
            numbers,
            (1..=expected).collect::<Vec<_>>(),
            "{}",
            s.display()
        );
    }
}

/// Default options (1 MiB frames) on megabytes of mixed traffic: compressible packets,
/// incompressible ones and a few of the largest snap length. The segment spans many of
/// Wireshark 4.0's 128 KiB read blocks, so frames are cut and padded at block boundaries;
/// tshark, zstd and the reader must all see every packet, and padding must cost little.
#[test]
fn large_segments_span_many_blocks_and_stay_readable() {
    // Typical traffic: padding costs well under 1 %. On a slow link (packets up to 8 ms
    // apart) frames end on time and keep to a block; on a busy one (1 us apart) they grow
    // to `frame_max_bytes` across block boundaries.
    let (overhead, crossing, frame_bytes) = large_segment(false, false);
    assert!(overhead < 0.01 && crossing == 0, "{overhead} {crossing}");
    assert!(frame_bytes < 300_000, "{frame_bytes}");
    let (overhead, crossing, frame_bytes) = large_segment(false, true);
    assert!(overhead < 0.01 && crossing > 10, "{overhead} {crossing}");
    assert!((700_000..2_100_000).contains(&frame_bytes), "{frame_bytes}");
    // Worst case: incompressible jumbo packets leave gaps they do not fit in.
    assert!(large_segment(true, false).0 < 0.08);
    assert!(large_segment(true, true).0 < 0.08);
}

/// Writes and checks a segment; returns the share of the file that is not data frames, the
/// frames that cross a block boundary and the frames' mean uncompressed size.
fn large_segment(mixed: bool, busy: bool) -> (f64, usize, usize) {
    let dir = TempDir::new("blocks");
    let mut pkts = packets(if mixed { 12_000 } else { 40_000 }, T0, 0..0);
    let mut x: u64 = 0x1234_5678_9abc_def1;
    for (i, p) in pkts.iter_mut().enumerate() {
        if busy {
            p.ts = T0 + i as i64 * 1_000;
        }
        if mixed && (i % 7 == 0 || i % 1000 == 999) {
            let len = if i % 1000 == 999 { 200_000 } else { 9000 };
            p.data = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            p.orig = len as u32;
        }
    }
    let options = SegmentOptions::default().segment_max_span_ns(3_600 * SEC);
    let segments = write(&dir.0, "w_0", options, &pkts);
    assert_eq!(segments.len(), 1);
    let seg = &segments[0];
    let file = fs::read(seg).unwrap();
    assert!(file.len() > 20 * 131_075, "{}", file.len());
    let table = parse_seek_table(&file);
    let crossing = assert_wireshark_layout(&file, &table);
    let index = SegmentReader::open(seg).unwrap().index().clone();
    let data: u64 = index
        .frames
        .iter()
        .map(|f| u64::from(f.compressed_size))
        .sum();
    // Padding is skippable frames between data frames, and empty zstd blocks that end the
    // data frames that cross a block boundary.
    let inner: usize = index
        .frames
        .iter()
        .map(|f| {
            let at = f.offset as usize;
            inner_padding_bytes(&file[at..at + f.compressed_size as usize])
        })
        .sum();
    let overhead = (file.len() as u64 - data + inner as u64) as f64 / file.len() as f64;
    let snap = 130_048usize;
    let expected: Vec<Vec<u8>> = pkts.iter().map(|p| record(p, snap)).collect();
    assert!(parse_pcap(&zstd_d(seg)).2 == expected, "zstd -d differs");
    let (bytes, _) = read_packets(&dir.0, 0, i64::MAX, None).unwrap();
    assert!(parse_pcap(&bytes).2 == expected, "reader differs");
    if let Some(numbers) = tshark_frame_numbers(seg) {
        assert_eq!(numbers.len(), pkts.len());
        assert_eq!(numbers.last(), Some(&(pkts.len() as u64)));
    }
    let frame_bytes = index
        .frames
        .iter()
        .map(|f| f.decompressed_size as usize)
        .sum::<usize>()
        / index.frames.len();
    eprintln!(
        "mixed {mixed} busy {busy}: {} bytes, {} frames ({crossing} crossing a boundary, \
         {frame_bytes} bytes on average), padding and seek table {overhead:.4}",
        file.len(),
        index.frames.len()
    );
    (overhead, crossing, frame_bytes)
}

#[test]
fn snap_length_truncates_caplen_and_keeps_origlen() {
    let dir = TempDir::new("snap");
    let pkts = packets(200, T0, 0..0);
    let segments = write(&dir.0, "w_0", SegmentOptions::default().snap_len(64), &pkts);
    let (bytes, _) = read_packets(&dir.0, 0, i64::MAX, None).unwrap();
    let (_, snap, records) = parse_pcap(&bytes);
    assert_eq!(snap, 64);
    assert_eq!(records.len(), pkts.len());
    for (r, p) in records.iter().zip(&pkts) {
        let caplen = u32::from_le_bytes(r[8..12].try_into().unwrap());
        let origlen = u32::from_le_bytes(r[12..16].try_into().unwrap());
        assert_eq!(caplen as usize, p.data.len().min(64));
        assert_eq!(origlen, p.orig);
        assert_eq!(&r[16..], &p.data[..caplen as usize]);
        assert_eq!(r, &record(p, 64));
    }
    // zstd -d agrees with the reader.
    let restored = zstd_d(&segments[0]);
    let (_, snap, recs) = parse_pcap(&restored);
    assert_eq!(snap, 64);
    assert!(recs == records);
}

#[test]
fn segments_roll_by_size() {
    let dir = TempDir::new("size");
    let pkts = packets(2000, T0, 0..0);
    let options = small()
        .segment_max_span_ns(3_600 * SEC)
        .segment_max_bytes(64 * 1024);
    let segments = write(&dir.0, "w_0", options, &pkts);
    assert!(segments.len() >= 4, "{}", segments.len());
    for s in &segments {
        // At most one frame (16 KiB of pcap, compressed) past the limit, plus the seek table.
        assert!(fs::metadata(s).unwrap().len() < 64 * 1024 + 17 * 1024);
    }
    let (bytes, _) = read_packets(&dir.0, 0, i64::MAX, None).unwrap();
    let expected: Vec<Vec<u8>> = pkts.iter().map(|p| record(p, usize::MAX)).collect();
    assert!(parse_pcap(&bytes).2 == expected);
}

/// Every file under `dir`, relative to it.
fn files(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn unfinished_segments_are_invisible_and_recover_cleans_up() {
    let dir = TempDir::new("recover");
    let pkts = packets(300, T0 - 20 * SEC, 0..0);
    let segments = write(&dir.0, "w_0", small(), &pkts[..100]);
    let mut w = SegmentWriter::new(&dir.0, "w_1", small()).unwrap();
    for p in &pkts[100..] {
        w.write(p.ts, p.orig, &p.data, p.flow).unwrap();
    }
    // A crash: the open segment's complete frames are on disk, the pending packets are not.
    let lost = w.pending_packets();
    assert!(lost > 0 && lost < 200);
    drop(w);
    let tmp: Vec<String> = files(&dir.0)
        .into_iter()
        .filter(|f| f.ends_with(".pcap.zst.tmp"))
        .collect();
    assert_eq!(tmp.len(), 1, "{:?}", files(&dir.0));
    let (bytes, _) = read_packets(&dir.0, 0, i64::MAX, None).unwrap();
    let before = parse_pcap(&bytes).2.len();
    assert!(before >= 100);

    // A crash between the segment's rename and the index's: the index is published.
    let seg = &segments[0];
    let idx = PathBuf::from(format!("{}.idx", seg.display()));
    let name = seg.file_name().unwrap().to_str().unwrap();
    let idx_tmp = seg.with_file_name(format!(".{name}.idx.tmp"));
    fs::rename(&idx, &idx_tmp).unwrap();
    let (_, stats) = read_packets(&dir.0, 0, i64::MAX, None).unwrap();
    assert_eq!(stats.segments_without_index, 1);
    // And an index whose segment never got its name is removed.
    let orphan = seg.with_file_name(format!(".{}-w_9.pcap.zst.idx.tmp", T0));
    fs::write(&orphan, b"x").unwrap();

    let done = pcap::recover(&dir.0).unwrap();
    assert_eq!(done.published, vec![idx.clone()]);
    let removed: Vec<String> = done
        .removed
        .iter()
        .map(|p| p.strip_prefix(&dir.0).unwrap().display().to_string())
        .collect();
    assert_eq!(
        removed,
        vec![orphan.strip_prefix(&dir.0).unwrap().display().to_string()]
    );
    // The temporary segment is published with its complete frames.
    assert_eq!(done.recovered.len(), 1);
    assert_eq!(
        before as u64 + done.recovered[0].packets,
        300 - lost as u64,
        "every packet of a complete frame is kept"
    );
    assert!(files(&dir.0).iter().all(|f| !f.ends_with(".tmp")));
    let (bytes, stats) = read_packets(&dir.0, 0, i64::MAX, None).unwrap();
    assert_eq!(stats.segments_without_index, 0);
    let expected: Vec<Vec<u8>> = pkts[..300 - lost]
        .iter()
        .map(|p| record(p, usize::MAX))
        .collect();
    assert!(parse_pcap(&bytes).2 == expected);
    assert_eq!(pcap::recover(&dir.0).unwrap(), pcap::Recovered::default());
}

#[test]
fn invalid_input_is_rejected() {
    let dir = TempDir::new("invalid");
    for id in ["", "a-b", "x/y"] {
        assert!(matches!(
            SegmentWriter::new(&dir.0, id, SegmentOptions::default()),
            Err(PcapError::InvalidWriterId { .. })
        ));
    }
    for options in [
        SegmentOptions::default().snap_len(0),
        SegmentOptions::default().snap_len(130_049),
        SegmentOptions::default().frame_max_bytes(0),
        SegmentOptions::default().frame_max_span_ns(0),
        SegmentOptions::default().segment_max_span_ns(3_600 * SEC + 1),
        SegmentOptions::default().zstd_level(100),
    ] {
        assert!(matches!(
            SegmentWriter::new(&dir.0, "w", options),
            Err(PcapError::InvalidOption(_))
        ));
    }
    let mut w = SegmentWriter::new(&dir.0, "w", SegmentOptions::default()).unwrap();
    for ts in [-1, (1 << 32) * SEC] {
        assert!(matches!(
            w.write(ts, 1, b"x", 0),
            Err(PcapError::TimestampOutOfRange { .. })
        ));
    }
    assert_eq!(w.close().unwrap(), None);
}
