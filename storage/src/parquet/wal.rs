//! The flow log: a write-ahead log of flow records that [`FlowStore`](crate::FlowStore)
//! appends to and syncs every flush interval, converted into Parquet files when it rotates
//! (and by recovery after a crash).
//!
//! # Format (version 1)
//!
//! `ROOT/flows/.wal/<writer-id>-<generation>.wal`: the header (magic `TVFLOWAL`, version u32
//! LE), then records: payload length u32 LE, CRC-32 of the payload u32 LE, payload. A
//! payload is a kind byte and its body: `1` and a flow record as a JSON object (the JSON
//! lines form of [`FlowRecord`]), or `2` and nothing (the commit marker). A reader stops at
//! the first record that is incomplete or fails its checksum: that is where the writer was
//! cut off.
//!
//! # Conversion
//!
//! Converting generation `g` of writer `w` (see [`convert`]):
//!
//! 1. without a commit marker: remove any `.w-g-*.parquet.ready` files (an earlier attempt
//!    was cut off), write the log's records into one Parquet file per hour (temporary name,
//!    synced), rename each to `.w-g-<start-ns>.parquet.ready` and sync its directory, then
//!    append the commit marker to the log and sync it;
//! 2. rename every `.w-g-<start-ns>.parquet.ready` to its final name `<start-ns>-w.parquet`
//!    (an earlier start if taken) and sync its directory;
//! 3. remove the log and sync its directory.
//!
//! A crash before the commit marker is durable leaves the log authoritative (step 1 starts
//! over); after it, the `.ready` files are (steps 2 and 3 finish). So each record is
//! published exactly once, and readers (which skip hidden files) never see a partial set.

use std::{
    fs::{self, File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
};

use super::{
    Error, FlowParquetWriter, Result,
    layout::{file_name, flows_dir, parse_date_dir, parse_hour_dir},
    writer::sync_dir,
};
use crate::{FlowRecord, partition::valid_writer_id};

const MAGIC: &[u8; 8] = b"TVFLOWAL";
const VERSION: u32 = 1;
pub(crate) const HEADER_LEN: usize = 12;
const KIND_RECORD: u8 = 1;
const KIND_COMMIT: u8 = 2;
const READY_SUFFIX: &str = ".parquet.ready";

/// `ROOT/flows/.wal`.
pub(crate) fn wal_dir(root: &Path) -> PathBuf {
    flows_dir(root).join(".wal")
}

/// `ROOT/flows/.wal/<writer-id>-<generation>.wal`.
pub(crate) fn wal_path(root: &Path, writer_id: &str, generation: u64) -> PathBuf {
    wal_dir(root).join(format!("{writer_id}-{generation}.wal"))
}

/// The writer id and generation of a log's file name.
pub(crate) fn parse_wal_name(name: &str) -> Option<(String, u64)> {
    let (writer, generation) = name.strip_suffix(".wal")?.rsplit_once('-')?;
    valid_writer_id(writer).then_some(())?;
    Some((writer.to_owned(), generation.parse().ok()?))
}

/// `.<writer-id>-<generation>-<start-ns>.parquet.ready`.
pub(crate) fn ready_name(writer_id: &str, generation: u64, start_ns: i64) -> String {
    format!(".{writer_id}-{generation}-{start_ns}{READY_SUFFIX}")
}

fn parse_ready_name(name: &str) -> Option<(&str, u64, i64)> {
    let stem = name.strip_prefix('.')?.strip_suffix(READY_SUFFIX)?;
    let mut parts = stem.splitn(3, '-');
    let writer = parts.next()?;
    let generation = parts.next()?.parse().ok()?;
    let start = parts.next()?.parse().ok()?;
    Some((writer, generation, start))
}

/// The log's header.
pub(crate) fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..].copy_from_slice(&VERSION.to_le_bytes());
    h
}

/// Appends one record (`kind` and `body`) to `out`.
fn push(out: &mut Vec<u8>, kind: u8, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 8]);
    out.push(kind);
    body(out);
    let len = (out.len() - start - 8) as u32;
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Appends a flow record to `out` in log form.
pub(crate) fn push_record(out: &mut Vec<u8>, record: &FlowRecord) {
    push(out, KIND_RECORD, |b| {
        record.write_json_line(b);
        // The JSON line's newline is not part of the object.
        if b.last() == Some(&b'\n') {
            b.pop();
        }
    });
}

/// What a log holds, up to its first incomplete or damaged record.
#[derive(Debug, Default)]
pub(crate) struct Contents {
    pub(crate) records: Vec<FlowRecord>,
    pub(crate) committed: bool,
    /// Records whose checksum held but whose JSON did not parse (counted, skipped).
    pub(crate) unreadable: u64,
}

/// Reads a log; a missing or damaged header reads as empty.
pub(crate) fn read(path: &Path) -> Result<Contents> {
    let bytes = fs::read(path).map_err(Error::io("read", path))?;
    let mut out = Contents::default();
    if bytes.len() < HEADER_LEN || bytes[..8] != *MAGIC || bytes[8..12] != VERSION.to_le_bytes() {
        return Ok(out);
    }
    let word = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let mut pos = HEADER_LEN;
    while pos + 8 <= bytes.len() {
        let len = word(pos) as usize;
        let crc = word(pos + 4);
        let Some(payload) = bytes.get(pos + 8..pos + 8 + len) else {
            break;
        };
        if payload.is_empty() || crc32fast::hash(payload) != crc {
            break;
        }
        match payload[0] {
            KIND_RECORD => match serde_json::from_slice::<FlowRecord>(&payload[1..]) {
                Ok(r) => out.records.push(r),
                Err(_) => out.unreadable += 1,
            },
            KIND_COMMIT => out.committed = true,
            _ => out.unreadable += 1,
        }
        pos += 8 + len;
    }
    Ok(out)
}

/// The `.ready` files of `writer_id`'s generation `generation` under `ROOT/flows`.
fn ready_files(root: &Path, writer_id: &str, generation: u64) -> Result<Vec<(PathBuf, i64)>> {
    let mut out = Vec::new();
    for (path, _) in all_ready(root)? {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some((w, g, start)) = parse_ready_name(name)
            && w == writer_id
            && g == generation
        {
            out.push((path.clone(), start));
        }
    }
    Ok(out)
}

/// Every `.ready` file under `ROOT/flows`, with its writer id and generation.
fn all_ready(root: &Path) -> Result<Vec<(PathBuf, (String, u64))>> {
    let mut out = Vec::new();
    let flows = flows_dir(root);
    if !flows.is_dir() {
        return Ok(out);
    }
    for date in fs::read_dir(&flows).map_err(Error::io("read directory", &flows))? {
        let date = date.map_err(Error::io("read directory", &flows))?;
        if parse_date_dir(&date.file_name().to_string_lossy()).is_none() {
            continue;
        }
        let date = date.path();
        for hour in fs::read_dir(&date).map_err(Error::io("read directory", &date))? {
            let hour = hour.map_err(Error::io("read directory", &date))?;
            if parse_hour_dir(&hour.file_name().to_string_lossy()).is_none() {
                continue;
            }
            let hour = hour.path();
            for f in fs::read_dir(&hour).map_err(Error::io("read directory", &hour))? {
                let f = f.map_err(Error::io("read directory", &hour))?;
                let name = f.file_name().to_string_lossy().into_owned();
                if let Some((w, g, _)) = parse_ready_name(&name) {
                    out.push((f.path(), (w.to_owned(), g)));
                }
            }
        }
    }
    Ok(out)
}

/// Renames a `.ready` file to its final name in its directory and syncs the directory.
fn finalize(path: &Path, writer_id: &str, start: i64) -> Result<PathBuf> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut start = start;
    let mut target = dir.join(file_name(start, writer_id));
    while target.exists() {
        start -= 1;
        target = dir.join(file_name(start, writer_id));
    }
    fs::rename(path, &target).map_err(Error::io("rename", path))?;
    sync_dir(dir)?;
    Ok(target)
}

/// Removes `writer_id`'s temporary Parquet files (`.<writer-id>-<seq>.parquet.tmp`) under
/// `ROOT/flows`: an attempt that failed (a full disk) leaves them.
fn remove_tmp(root: &Path, writer_id: &str) {
    let prefix = format!(".{writer_id}-");
    let flows = flows_dir(root);
    let Ok(dates) = fs::read_dir(&flows) else {
        return;
    };
    for date in dates.flatten() {
        let Ok(hours) = fs::read_dir(date.path()) else {
            continue;
        };
        for hour in hours.flatten() {
            let Ok(files) = fs::read_dir(hour.path()) else {
                continue;
            };
            for f in files.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if name.starts_with(&prefix) && name.ends_with(".parquet.tmp") {
                    let _ = fs::remove_file(f.path());
                }
            }
        }
    }
}

/// What converting one log did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Converted {
    /// Parquet files published.
    pub(crate) files: Vec<PathBuf>,
    /// Records in them (0 when an earlier, cut-off conversion had already written them).
    pub(crate) records: u64,
    /// Records of the log that could not be parsed.
    pub(crate) unreadable: u64,
}

/// Converts a log into Parquet files and removes it (see the [module docs](self)). Safe to
/// call again after a failure or a crash at any point.
pub(crate) fn convert(root: &Path, log: &Path) -> Result<Converted> {
    let name = log.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let Some((writer_id, generation)) = parse_wal_name(name) else {
        return Err(Error::Io {
            op: "parse flow log name",
            path: log.to_owned(),
            source: std::io::Error::other("not <writer-id>-<generation>.wal"),
        });
    };
    let contents = read(log)?;
    let mut done = Converted {
        unreadable: contents.unreadable,
        ..Converted::default()
    };
    let mut ready = ready_files(root, &writer_id, generation)?;
    if !contents.committed {
        for (path, _) in ready.drain(..) {
            fs::remove_file(&path).map_err(Error::io("remove", &path))?;
        }
        if !contents.records.is_empty() {
            done.records = contents.records.len() as u64;
            let written = (|| {
                let mut w = FlowParquetWriter::for_wal(root, &writer_id, generation)?;
                w.write_all(contents.records)?;
                w.flush()
            })();
            let paths = match written {
                Ok(p) => p,
                Err(e) => {
                    remove_tmp(root, &writer_id);
                    for (path, _) in ready_files(root, &writer_id, generation)? {
                        let _ = fs::remove_file(path);
                    }
                    return Err(e);
                }
            };
            let mut marker = Vec::new();
            push(&mut marker, KIND_COMMIT, |_| {});
            let mut f = OpenOptions::new()
                .append(true)
                .open(log)
                .map_err(Error::io("open", log))?;
            f.write_all(&marker)
                .and_then(|()| f.sync_data())
                .map_err(Error::io("write", log))?;
            for p in paths {
                let start = p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(parse_ready_name)
                    .map(|(_, _, s)| s)
                    .unwrap_or(0);
                ready.push((p, start));
            }
        }
    }
    for (path, start) in ready {
        done.files.push(finalize(&path, &writer_id, start)?);
    }
    fs::remove_file(log).map_err(Error::io("remove", log))?;
    if let Some(dir) = log.parent() {
        sync_dir(dir)?;
    }
    Ok(done)
}

/// The logs under `ROOT/flows/.wal`, oldest generation first; of one writer if given.
pub(crate) fn list(root: &Path, writer_id: Option<&str>) -> Result<Vec<(PathBuf, u64)>> {
    let dir = wal_dir(root);
    let mut out = Vec::new();
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io("read directory", &dir)(e)),
    };
    for e in entries {
        let e = e.map_err(Error::io("read directory", &dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some((w, g)) = parse_wal_name(&name)
            && writer_id.is_none_or(|id| id == w)
        {
            out.push((e.path(), g));
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    Ok(out)
}

/// What [`recover_logs`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct RecoveredLogs {
    pub(crate) logs: usize,
    pub(crate) files: Vec<PathBuf>,
    pub(crate) records: u64,
    pub(crate) unreadable: u64,
}

/// Converts every log left under `ROOT/flows/.wal` and publishes `.ready` files whose log is
/// gone (a crash between the last rename and the log's removal cannot leave any, but a
/// crash between two renames of step 2 can leave some with the log still there, which
/// [`convert`] handles). Run before any [`FlowStore`](crate::FlowStore) starts.
pub(crate) fn recover_logs(root: &Path) -> Result<RecoveredLogs> {
    let mut done = RecoveredLogs::default();
    for (log, _) in list(root, None)? {
        let c = convert(root, &log)?;
        done.logs += 1;
        done.files.extend(c.files);
        done.records += c.records;
        done.unreadable += c.unreadable;
    }
    for (path, (writer, _)) in all_ready(root)? {
        let start = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_ready_name)
            .map(|(_, _, s)| s)
            .unwrap_or(0);
        done.files.push(finalize(&path, &writer, start)?);
    }
    Ok(done)
}

/// Creates a new log with its header, synced with its directory entry.
pub(crate) fn create(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent()
        && !dir.is_dir()
    {
        fs::create_dir_all(dir).map_err(Error::io("create directory", dir))?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
    }
    let mut f = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(path)
        .map_err(Error::io("create", path))?;
    f.write_all(&header())
        .and_then(|()| f.sync_data())
        .map_err(Error::io("write", path))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            parse_wal_name("shard_1-17.wal"),
            Some(("shard_1".into(), 17))
        );
        assert_eq!(parse_wal_name("a-b-1.wal"), None);
        assert_eq!(
            parse_ready_name(&ready_name("w_1", 3, -5)),
            Some(("w_1", 3, -5))
        );
        assert_eq!(parse_ready_name(".w-3.parquet.tmp"), None);
    }

    #[test]
    fn log_reads_up_to_damage() {
        let dir = std::env::temp_dir().join(format!("tapvault-wal-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w-0.wal");
        let mut bytes = header().to_vec();
        let recs: Vec<FlowRecord> = (0..3)
            .map(|i| FlowRecord {
                flow_id: format!("{i:016x}"),
                first_seen_ns: i,
                last_seen_ns: i + 1,
                initial_rtt_us: Some(0.1 + i as f64),
                ..FlowRecord::default()
            })
            .collect();
        let mut ends = Vec::new();
        for r in &recs {
            push_record(&mut bytes, r);
            ends.push(bytes.len());
        }
        for cut in HEADER_LEN..=bytes.len() {
            fs::write(&path, &bytes[..cut]).unwrap();
            let c = read(&path).unwrap();
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            assert_eq!(c.records, recs[..whole], "cut at {cut}");
            assert!(!c.committed);
        }
        // A flipped byte in the second record ends the log after the first.
        let mut bad = bytes.clone();
        bad[ends[0] + 12] ^= 1;
        fs::write(&path, &bad).unwrap();
        assert_eq!(read(&path).unwrap().records, recs[..1]);
        push(&mut bytes, KIND_COMMIT, |_| {});
        fs::write(&path, &bytes).unwrap();
        assert!(read(&path).unwrap().committed);
        fs::remove_dir_all(&dir).unwrap();
    }
}
