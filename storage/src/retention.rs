//! Retention of the flow and packet stores: limits by total bytes and by age, separately for
//! packets (`ROOT/pcap`) and flows (`ROOT/flows`).
//!
//! [`enforce`] lists the *published* files of each kind — names that parse as
//! `<start-ns>-<writer-id>.parquet` or `<start-ns>-<writer-id>.pcap.zst` inside a
//! `date=YYYY-MM-DD/hour=HH` partition. Hidden temporary files (`.….tmp`: open segments,
//! files being written, indexes being published) and anything else that does not parse are
//! never deleted, nor counted. Files are ordered oldest first by the `<start-ns>` of their
//! name (ties by path).
//!
//! # Age rule
//!
//! A file is deleted for age only when *all* its data is older than `now_ns - max_age_ns`,
//! judged from its partition alone (no file is parsed):
//!
//! * a flow file in hour `H` holds records whose `last_seen_ns` lies in hour `H`, so all of
//!   its data is before `(H + 1) h`;
//! * a packet segment in hour `H` starts in hour `H` and spans at most
//!   [`MAX_SEGMENT_SPAN_NS`], so all of its packets are before `(H + 1) h + MAX_SEGMENT_SPAN_NS`
//!   (the bound [`read_packets`](crate::pcap::read_packets) prunes with).
//!
//! A file is expired when that bound is at or before `now_ns - max_age_ns`; data younger than
//! the maximum age is therefore never deleted (a file may outlive the age by up to one hour,
//! or two for segments).
//!
//! # Size rule
//!
//! After the age pass, the oldest remaining files are deleted one by one until the kind's
//! total is within its byte limit; deletion stops as soon as it is. The packet total counts
//! each segment plus its `.idx`; temporary files are not counted.
//!
//! # Packet segments and their indexes
//!
//! A segment and its `<segment>.idx` are deleted together, the index first: readers skip a
//! segment without an index, so a reader never finds an index whose segment is gone. A
//! segment whose index is not there is handled by whether its temporary index
//! `.<segment>.idx.tmp` is: if it is, the writer is publishing it (or [`recover`](crate::pcap::recover)
//! will) and it is left alone, though counted in the remaining bytes; if it is not, it is an
//! orphan (for instance of a deletion interrupted between the index and the segment) and is
//! treated as any other segment.
//!
//! # Partitions
//!
//! An hour directory that this run emptied is removed, then its date directory if that is
//! empty too. Directories that were already empty are left alone (a writer may be about to
//! publish into them).
//!
//! A file that disappears while retention runs (another process deleted it) is not an error.

use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
};

use crate::partition::{HOUR_NS, parse_date_dir, parse_hour_dir};
use crate::pcap::MAX_SEGMENT_SPAN_NS;

/// Retention limits; `None` means no limit of that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Largest total size of the packet store (segments plus their indexes), in bytes.
    pub pcap_max_bytes: Option<u64>,
    /// Largest age of packets, in nanoseconds (must not be negative).
    pub pcap_max_age_ns: Option<i64>,
    /// Largest total size of the flow store, in bytes.
    pub flows_max_bytes: Option<u64>,
    /// Largest age of flow records, in nanoseconds (must not be negative).
    pub flows_max_age_ns: Option<i64>,
}

/// Which store a file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreKind {
    /// Packet segments under `ROOT/pcap`.
    Pcap,
    /// Flow files under `ROOT/flows`.
    Flows,
}

impl StoreKind {
    /// `pcap` or `flows`.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Pcap => "pcap",
            StoreKind::Flows => "flows",
        }
    }
}

/// Why a file was deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeleteReason {
    /// All of its data was older than the maximum age.
    Age,
    /// Its store was over its byte limit and it was the oldest file.
    Size,
}

impl DeleteReason {
    /// `age` or `size`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeleteReason::Age => "age",
            DeleteReason::Size => "size",
        }
    }
}

/// One deleted file (for packets: one segment, together with its index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedFile {
    /// The flow file or the packet segment.
    pub path: PathBuf,
    /// Bytes freed (for packets: segment plus index).
    pub bytes: u64,
    /// Why it was deleted.
    pub reason: DeleteReason,
}

/// What retention did to one store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KindReport {
    /// Files deleted (a packet segment and its index count as one).
    pub files_deleted: usize,
    /// Bytes freed.
    pub bytes_freed: u64,
    /// The deleted files, in deletion order (oldest first within each reason).
    pub deleted: Vec<DeletedFile>,
    /// Bytes of published files left in the store.
    pub bytes_remaining: u64,
}

/// What [`enforce`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// The packet store.
    pub pcap: KindReport,
    /// The flow store.
    pub flows: KindReport,
}

impl RetentionReport {
    /// One log line per deleted file:
    /// `retention: deleted PATH (N bytes, reason: age|size)`.
    pub fn log_lines(&self) -> Vec<String> {
        self.pcap
            .deleted
            .iter()
            .chain(&self.flows.deleted)
            .map(|d| {
                format!(
                    "retention: deleted {} ({} bytes, reason: {})",
                    d.path.display(),
                    d.bytes,
                    d.reason.as_str()
                )
            })
            .collect()
    }

    /// Files deleted from both stores.
    pub fn files_deleted(&self) -> usize {
        self.pcap.files_deleted + self.flows.files_deleted
    }

    /// Bytes freed in both stores.
    pub fn bytes_freed(&self) -> u64 {
        self.pcap.bytes_freed + self.flows.bytes_freed
    }
}

/// The log lines of [`RetentionReport::log_lines`], one per line.
impl fmt::Display for RetentionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in self.log_lines() {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

/// Errors of [`enforce`].
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// A file system operation failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was attempted (`list directory`, `delete file`, …).
        op: &'static str,
        /// The path it was attempted on.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The policy is unusable.
    #[error("invalid retention policy: {0}")]
    InvalidPolicy(&'static str),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RetentionError + 'a {
    move |source| RetentionError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// One published file: a flow file, or a segment with its index.
#[derive(Debug)]
struct Entry {
    start_ns: i64,
    path: PathBuf,
    /// The segment's index, when it exists.
    index: Option<PathBuf>,
    bytes: u64,
    /// Exclusive upper bound of the file's data times, from its partition.
    data_end_ns: i128,
    hour_dir: PathBuf,
    /// Whether retention may delete it (false for a segment being published).
    deletable: bool,
}

/// Applies `policy` to the stores under `root` at time `now_ns` (nanoseconds since the
/// epoch): deletes expired files, then the oldest files of a store over its byte limit.
pub fn enforce(
    root: &Path,
    policy: &RetentionPolicy,
    now_ns: i64,
) -> Result<RetentionReport, RetentionError> {
    if policy.pcap_max_age_ns.is_some_and(|a| a < 0) {
        return Err(RetentionError::InvalidPolicy(
            "pcap_max_age_ns must not be negative",
        ));
    }
    if policy.flows_max_age_ns.is_some_and(|a| a < 0) {
        return Err(RetentionError::InvalidPolicy(
            "flows_max_age_ns must not be negative",
        ));
    }
    let pcap = enforce_kind(
        root,
        StoreKind::Pcap,
        policy.pcap_max_bytes,
        policy.pcap_max_age_ns,
        now_ns,
    )?;
    let flows = enforce_kind(
        root,
        StoreKind::Flows,
        policy.flows_max_bytes,
        policy.flows_max_age_ns,
        now_ns,
    )?;
    Ok(RetentionReport { pcap, flows })
}

fn enforce_kind(
    root: &Path,
    kind: StoreKind,
    max_bytes: Option<u64>,
    max_age_ns: Option<i64>,
    now_ns: i64,
) -> Result<KindReport, RetentionError> {
    let base = root.join(kind.as_str());
    let mut entries = list(&base, kind)?;
    entries.sort_by(|a, b| (a.start_ns, &a.path).cmp(&(b.start_ns, &b.path)));
    let mut report = KindReport::default();
    let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
    let mut emptied: Vec<PathBuf> = Vec::new();
    let mut kept = Vec::with_capacity(entries.len());

    if let Some(age) = max_age_ns {
        let cutoff = i128::from(now_ns) - i128::from(age);
        for e in entries {
            if e.deletable && e.data_end_ns <= cutoff {
                total -= e.bytes;
                delete(e, DeleteReason::Age, &mut report, &mut emptied)?;
            } else {
                kept.push(e);
            }
        }
    } else {
        kept = entries;
    }

    if let Some(max) = max_bytes {
        for e in kept {
            if total <= max {
                break;
            }
            if e.deletable {
                total -= e.bytes;
                delete(e, DeleteReason::Size, &mut report, &mut emptied)?;
            }
        }
    }
    report.bytes_remaining = total;

    emptied.sort();
    emptied.dedup();
    for hour_dir in emptied {
        if remove_empty_dir(&hour_dir)?
            && let Some(date_dir) = hour_dir.parent()
        {
            remove_empty_dir(date_dir)?;
        }
    }
    Ok(report)
}

/// Deletes one entry (index first, then segment) and records it.
fn delete(
    e: Entry,
    reason: DeleteReason,
    report: &mut KindReport,
    emptied: &mut Vec<PathBuf>,
) -> Result<(), RetentionError> {
    let mut removed = false;
    if let Some(index) = &e.index {
        removed |= remove_file(index)?;
    }
    removed |= remove_file(&e.path)?;
    if removed {
        report.files_deleted += 1;
        report.bytes_freed += e.bytes;
        report.deleted.push(DeletedFile {
            path: e.path,
            bytes: e.bytes,
            reason,
        });
    }
    emptied.push(e.hour_dir);
    Ok(())
}

/// Removes a file; `false` if it was already gone.
fn remove_file(path: &Path) -> Result<bool, RetentionError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("delete file", path)(e)),
    }
}

/// Removes a directory if it is empty; `true` if it is gone.
fn remove_empty_dir(dir: &Path) -> Result<bool, RetentionError> {
    let empty = match fs::read_dir(dir) {
        Ok(mut it) => it.next().is_none(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(io_err("list directory", dir)(e)),
    };
    if !empty {
        return Ok(false);
    }
    match fs::remove_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        // A writer published into it meanwhile (ENOTEMPTY, or EEXIST on some systems).
        Err(e)
            if e.kind() == io::ErrorKind::DirectoryNotEmpty
                || e.kind() == io::ErrorKind::AlreadyExists =>
        {
            Ok(false)
        }
        Err(e) => Err(io_err("remove directory", dir)(e)),
    }
}

/// `(path, name)` of a directory's entries; a missing directory has none.
fn read_names(dir: &Path) -> Result<Vec<(PathBuf, String)>, RetentionError> {
    let it = match fs::read_dir(dir) {
        Ok(it) => it,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list directory", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in it {
        let entry = entry.map_err(io_err("list directory", dir))?;
        // Names that are not UTF-8 are never published names.
        if let Ok(name) = entry.file_name().into_string() {
            out.push((entry.path(), name));
        }
    }
    Ok(out)
}

/// The size of a regular file; `None` if it is gone or not a regular file.
fn file_size(path: &Path) -> Result<Option<u64>, RetentionError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => Ok(Some(m.len())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read metadata of", path)(e)),
    }
}

fn exists(path: &Path) -> Result<bool, RetentionError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("read metadata of", path)(e)),
    }
}

/// The `<start-ns>` of a published name `<start-ns>-<writer-id><suffix>`.
fn parse_name(name: &str, suffix: &str) -> Option<i64> {
    let (start, writer) = name.strip_suffix(suffix)?.rsplit_once('-')?;
    if !(1..=64).contains(&writer.len())
        || !writer
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return None;
    }
    start.parse().ok()
}

/// The published files of one store.
fn list(base: &Path, kind: StoreKind) -> Result<Vec<Entry>, RetentionError> {
    let (suffix, span) = match kind {
        StoreKind::Pcap => (".pcap.zst", i128::from(MAX_SEGMENT_SPAN_NS)),
        StoreKind::Flows => (".parquet", 0),
    };
    let mut out = Vec::new();
    for (date_path, date_name) in read_names(base)? {
        let Some(day) = parse_date_dir(&date_name) else {
            continue;
        };
        if !date_path.is_dir() {
            continue;
        }
        for (hour_path, hour_name) in read_names(&date_path)? {
            let Some(hh) = parse_hour_dir(&hour_name) else {
                continue;
            };
            if !hour_path.is_dir() {
                continue;
            }
            let hour = i128::from(day) * 24 + i128::from(hh);
            let data_end_ns = (hour + 1) * i128::from(HOUR_NS) + span;
            for (path, name) in read_names(&hour_path)? {
                let Some(start_ns) = parse_name(&name, suffix) else {
                    continue;
                };
                let Some(mut bytes) = file_size(&path)? else {
                    continue;
                };
                let mut index = None;
                let mut deletable = true;
                if kind == StoreKind::Pcap {
                    // The temporary index first: it is renamed to the index after the
                    // segment was published, so if it is gone by now the index is there.
                    let tmp_index = hour_path.join(format!(".{name}.idx.tmp"));
                    let publishing = exists(&tmp_index)?;
                    let idx = hour_path.join(format!("{name}.idx"));
                    match file_size(&idx)? {
                        Some(n) => {
                            bytes += n;
                            index = Some(idx);
                        }
                        None => deletable = !publishing,
                    }
                }
                out.push(Entry {
                    start_ns,
                    path,
                    index,
                    bytes,
                    data_end_ns,
                    hour_dir: hour_path.clone(),
                    deletable,
                });
            }
        }
    }
    Ok(out)
}
