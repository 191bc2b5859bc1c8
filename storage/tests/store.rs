use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
};

use tapvault_storage::{
    FlowRecord, FlowStore, Maintenance, PacketStore, PauseReason, RetentionPolicy, SegmentOptions,
    SegmentReader, StoreOptions, pcap, read_flows,
};

use crate::util::TempDir;

const SEC: i64 = 1_000_000_000;
const T0: i64 = 1_700_000_000 * SEC;

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop (also on panic).
struct Tmpfs(TempDir);

impl Tmpfs {
    /// `None` (after saying why) when not root and `CI` is unset; a failure in CI.
    fn mount(name: &str, size: &str) -> Option<Tmpfs> {
        let uid = Command::new("id").arg("-u").output().ok();
        let root = uid.is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        if !root {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set: the disk-full test must run as root"
            );
            eprintln!("SKIPPED: mounting a tmpfs needs root (and CI is unset)");
            return None;
        }
        let dir = TempDir::new(name);
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir.0)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount tmpfs on {}", dir.0.display());
        Some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0.0).status();
    }
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 1000 incompressible bytes for packet `i`.
fn packet(i: u64) -> Vec<u8> {
    (0..125)
        .flat_map(|k| mix(i * 131 + k).to_le_bytes())
        .collect()
}

fn record(i: u64, ts: i64) -> FlowRecord {
    FlowRecord {
        flow_id: format!("{i:016x}"),
        first_seen_ns: ts,
        last_seen_ns: ts,
        proto: "tcp".into(),
        ..FlowRecord::default()
    }
}

type Lines = Arc<Mutex<Vec<String>>>;

fn options(lines: &Lines) -> StoreOptions {
    let lines = Arc::clone(lines);
    StoreOptions::default()
        .retry_interval_ns(SEC)
        .flow_publish_interval_ns(5 * SEC)
        .log(Arc::new(move |l| lines.lock().unwrap().push(l.to_owned())))
}

fn count(lines: &Lines, needle: &str) -> usize {
    lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(needle))
        .count()
}

fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn full_disk_pauses_packets_keeps_flows_and_resumes() {
    let Some(fs_) = Tmpfs::mount("diskfull", "6m") else {
        return;
    };
    let root = fs_.0.0.join("store");
    let lines: Lines = Arc::default();
    let seg = SegmentOptions::default().segment_max_span_ns(SEC);
    let mut packets = PacketStore::open(&root, "w0", seg, options(&lines)).unwrap();
    let mut flows = FlowStore::open(&root, "w0", options(&lines)).unwrap();
    let mut ts = T0;
    let mut i = 0u64;
    let mut records = 0u64;
    // 1000-byte incompressible packets, 4 MB per simulated second, until the disk is full.
    while packets.current_stats().paused.is_none() && i < 20_000 {
        packets.write(ts, 1000, &packet(i), i % 7);
        if i.is_multiple_of(100) {
            flows.write(&record(records, ts));
            records += 1;
            packets.tick(ts);
            flows.tick(ts);
        }
        i += 1;
        ts += 250_000;
    }
    let s = packets.current_stats().clone();
    assert_eq!(s.paused, Some(PauseReason::DiskFull), "{s:?}");
    assert!(
        s.last_error.as_deref().unwrap_or("").contains("No space"),
        "{s:?}"
    );
    // Keep going while full: packets are counted, records are kept.
    for _ in 0..2000 {
        packets.write(ts, 1000, &packet(i), 0);
        if i.is_multiple_of(100) {
            flows.write(&record(records, ts));
            records += 1;
            packets.tick(ts);
            flows.tick(ts);
        }
        i += 1;
        ts += 250_000;
    }
    let s = packets.current_stats().clone();
    // Half a second: too early for the first retry (one retry interval after the pause).
    assert_eq!(s.paused, Some(PauseReason::DiskFull), "{s:?}");
    assert!(s.spill_dropped_disk_full >= 2000, "{s:?}");
    assert_eq!(s.pause_episodes, 1);
    assert_eq!(count(&lines, "pcap spill paused"), 1, "logged once");
    assert_eq!(
        s.packets_written + s.spill_dropped_disk_full,
        i,
        "every packet is stored or counted"
    );
    let f = flows.stats().snapshot();
    assert_eq!(f.dropped_buffer_full, 0);
    assert_eq!(f.records_accepted, records);

    // Retention frees space; the next retry resumes spill.
    let freed = Maintenance::new(
        &root,
        RetentionPolicy {
            pcap_max_bytes: Some(1 << 20),
            ..RetentionPolicy::default()
        },
        options(&lines).log,
    )
    .run_once(ts)
    .unwrap();
    assert!(freed.pcap.files_deleted > 0);
    // Should a resumption not hold (a write that fails on the I/O thread shows at the next
    // sync and pauses again, in the same episode), the retry after it resumes.
    for _ in 0..3 {
        ts += 2 * SEC;
        packets.tick(ts);
        flows.tick(ts);
        if packets.current_stats().paused.is_none() {
            break;
        }
    }
    assert_eq!(
        packets.current_stats().paused,
        None,
        "{:?}",
        packets.current_stats()
    );
    // Logged once the first packets after it are on disk.
    assert_eq!(
        count(&lines, "pcap spill resumed"),
        0,
        "{:?} {:?}",
        lines.lock().unwrap(),
        packets.current_stats()
    );
    let before = packets.current_stats().segments_published;
    let dropped = packets.current_stats().spill_dropped_disk_full;
    for _ in 0..500 {
        packets.write(ts, 1000, &packet(i), 1);
        i += 1;
        ts += 1_000_000;
    }
    flows.write(&record(records, ts));
    records += 1;
    let p = packets.close();
    let f = flows.close();
    assert_eq!(
        p.spill_dropped_disk_full, dropped,
        "nothing dropped after resuming"
    );
    assert_eq!(count(&lines, "pcap spill resumed"), 1);
    assert_eq!(count(&lines, "pcap spill paused"), 1);
    assert_eq!(p.pause_episodes, 1);
    assert!(p.segments_published > before);
    assert_eq!(f.dropped_buffer_full, 0);
    assert_eq!(f.records_published, records, "{f:?}");

    // No corrupt or temporary file; every segment reads back and restores with zstd.
    let files = all_files(&root);
    for p in &files {
        let name = p.file_name().unwrap().to_string_lossy();
        assert!(
            !name.starts_with('.'),
            "left behind: {} {:?} {p:?}",
            p.display(),
            lines.lock().unwrap()
        );
        if name.ends_with(".pcap.zst") {
            let r = SegmentReader::open(p).unwrap();
            assert!(r.index().packets > 0);
            let st = Command::new("zstd")
                .args(["-q", "-t"])
                .arg(p)
                .status()
                .unwrap();
            assert!(st.success(), "zstd -t {}", p.display());
        }
    }
    let (stream, stats) = pcap::read_packets(&root, 0, i64::MAX, None).unwrap();
    assert!(stats.packets >= 500 && stream.len() > 500 * 1000);
    let mut ids: Vec<String> = read_flows(&root, 0, i64::MAX)
        .unwrap()
        .into_iter()
        .map(|r| r.flow_id)
        .collect();
    ids.sort();
    let expected: Vec<String> = (0..records).map(|i| format!("{i:016x}")).collect();
    assert_eq!(ids, expected, "every flow record is stored, once");
}

#[test]
fn free_space_below_the_minimum_pauses_spill() {
    let dir = TempDir::new("minfree");
    let lines: Lines = Arc::default();
    let mut packets = PacketStore::open(
        &dir.0,
        "w",
        SegmentOptions::default(),
        options(&lines).min_free_bytes(u64::MAX),
    )
    .unwrap();
    packets.write(T0, 100, &packet(0), 0);
    packets.tick(T0);
    let s = packets.current_stats().clone();
    assert_eq!(s.paused, Some(PauseReason::DiskFull));
    assert!(s.free_bytes.is_some());
    // The packet written before the pause was published, not lost.
    assert_eq!((s.packets_written, s.segments_published), (1, 1));
    packets.write(T0 + 1, 100, &packet(1), 0);
    packets.tick(T0 + 3 * SEC);
    let p = packets.close();
    assert_eq!(p.spill_dropped_disk_full, 1);
    assert_eq!(count(&lines, "pcap spill paused"), 1);
    assert_eq!(count(&lines, "resumed"), 0);
}

/// Cuts a real temporary segment at every interesting offset and checks that recovery keeps
/// exactly the frames before the cut, with a correct index.
#[test]
fn recovery_keeps_every_complete_frame() {
    let dir = TempDir::new("cuts");
    let opts = SegmentOptions::default().frame_max_bytes(8 * 1024);
    let mut w = pcap::SegmentWriter::new(&dir.0, "w", opts).unwrap();
    let mut pkts = Vec::new();
    for i in 0..400u64 {
        // Half compressible, half not, so frames and padding vary.
        let mut data = packet(i);
        if i % 2 == 0 {
            data.iter_mut().for_each(|b| *b &= 0x03);
        }
        let ts = T0 + i as i64 * 1_000_000;
        w.write(ts, 1000, &data, i % 5).unwrap();
        pkts.push((ts, data));
    }
    w.seal_frame().unwrap();
    // The open segment and its journal, as a crash would leave them.
    let tmp_files: Vec<PathBuf> = all_files(&dir.0)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    let seg_tmp = tmp_files
        .iter()
        .find(|p| p.to_string_lossy().ends_with(".pcap.zst.tmp"))
        .unwrap()
        .clone();
    let journal = tmp_files
        .iter()
        .find(|p| p.to_string_lossy().ends_with(".journal.tmp"))
        .unwrap()
        .clone();
    let journal_bytes = fs::read(&journal).unwrap();
    let published = w.close().unwrap().unwrap();
    let full = fs::read(&published.segment).unwrap();
    let index = SegmentReader::open(&published.segment)
        .unwrap()
        .index()
        .clone();
    let frames = &index.frames;
    assert!(frames.len() > 10, "{} frames", frames.len());
    let last_end = frames
        .last()
        .map(|f| f.offset + u64::from(f.compressed_size))
        .unwrap();
    let mut cuts = vec![0, 1, 4, 23, full.len() - 1, full.len() - 5, full.len()];
    for f in frames {
        let (o, c) = (f.offset as usize, f.compressed_size as usize);
        cuts.extend([o, o + 1, o + c / 2, o + c - 1, o + c, o + c + 4]);
    }
    // Inside the seek table (and the padding or empty frame before it).
    cuts.extend((last_end as usize..full.len()).step_by(7));
    cuts.sort_unstable();
    cuts.dedup();
    let pdir = seg_tmp.parent().unwrap().to_path_buf();
    let case_root = dir.0.join("case");
    for cut in cuts.into_iter().filter(|&c| c <= full.len()) {
        let _ = fs::remove_dir_all(&case_root);
        let cdir = case_root.join(pdir.strip_prefix(&dir.0).unwrap());
        fs::create_dir_all(&cdir).unwrap();
        fs::write(cdir.join(seg_tmp.file_name().unwrap()), &full[..cut]).unwrap();
        fs::write(cdir.join(journal.file_name().unwrap()), &journal_bytes).unwrap();
        let done = pcap::recover(&case_root).unwrap();
        let keep = frames
            .iter()
            .take_while(|f| f.offset + u64::from(f.compressed_size) <= cut as u64)
            .count();
        if keep == 0 {
            assert!(done.recovered.is_empty(), "cut {cut}");
            assert!(all_files(&case_root).is_empty(), "cut {cut}: files removed");
            continue;
        }
        assert_eq!(done.recovered.len(), 1, "cut {cut}");
        let r = SegmentReader::open(&done.recovered[0].segment).unwrap();
        assert_eq!(r.index().frames, frames[..keep], "cut {cut}: index");
        let n: u64 = frames[..keep].iter().map(|f| u64::from(f.packets)).sum();
        assert_eq!(r.index().packets, n);
        let (stream, _) = pcap::read_packets(&case_root, 0, i64::MAX, None).unwrap();
        // The pcap stream restored by a plain zstd decoder equals our reader's.
        let restored =
            zstd::stream::decode_all(&fs::read(&done.recovered[0].segment).unwrap()[..]).unwrap();
        assert_eq!(restored, stream, "cut {cut}: zstd restores the same pcap");
        let mut pos = 24;
        for (k, (ts, data)) in pkts.iter().take(n as usize).enumerate() {
            let secs = u32::from_le_bytes(stream[pos..pos + 4].try_into().unwrap());
            let nanos = u32::from_le_bytes(stream[pos + 4..pos + 8].try_into().unwrap());
            assert_eq!(
                i64::from(secs) * SEC + i64::from(nanos),
                *ts,
                "cut {cut} packet {k}"
            );
            assert_eq!(&stream[pos + 16..pos + 16 + data.len()], &data[..]);
            pos += 16 + data.len();
        }
        assert_eq!(pos, stream.len(), "cut {cut}: no extra packet");
    }
    // A journal cut short keeps the frames it still lists.
    let _ = fs::remove_dir_all(&case_root);
    let cdir = case_root.join(pdir.strip_prefix(&dir.0).unwrap());
    fs::create_dir_all(&cdir).unwrap();
    fs::write(cdir.join(seg_tmp.file_name().unwrap()), &full).unwrap();
    fs::write(
        cdir.join(journal.file_name().unwrap()),
        &journal_bytes[..journal_bytes.len() - 3],
    )
    .unwrap();
    let done = pcap::recover(&case_root).unwrap();
    let r = SegmentReader::open(&done.recovered[0].segment).unwrap();
    assert_eq!(r.index().frames, frames[..frames.len() - 1]);
}
