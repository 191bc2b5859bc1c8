//! Retention of the flow and packet stores, on fake published files of known sizes.

use std::{
    fs,
    path::{Path, PathBuf},
};

use crate::util::TempDir;
use tapvault_storage::retention::{
    DeleteReason, RetentionError, RetentionPolicy, StoreKind, enforce,
};

const HOUR: i64 = 3_600_000_000_000;
/// 2023-11-14 is day 19675 since the epoch.
const DAY: i64 = 19_675;

/// Start of hour `hh` of 2023-11-14 (hh may reach into the next day).
fn hour_start(hh: i64) -> i64 {
    (DAY * 24 + hh) * HOUR
}

/// `ROOT/<kind>/date=…/hour=…` of hour `hh` of 2023-11-14 (hh 24.. is 2023-11-15).
fn part(root: &Path, kind: StoreKind, hh: i64) -> PathBuf {
    let (date, h) = if hh < 24 {
        ("2023-11-14", hh)
    } else {
        ("2023-11-15", hh - 24)
    };
    root.join(kind.as_str())
        .join(format!("date={date}"))
        .join(format!("hour={h:02}"))
}

fn put(path: &Path, len: usize) -> PathBuf {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, vec![0u8; len]).unwrap();
    path.to_path_buf()
}

/// A published flow file in hour `hh` starting `offset` ns into it.
fn flow(root: &Path, hh: i64, offset: i64, len: usize) -> PathBuf {
    let start = hour_start(hh) + offset;
    put(
        &part(root, StoreKind::Flows, hh).join(format!("{start}-w1.parquet")),
        len,
    )
}

/// A published segment (with an index of `idx_len` bytes, if any) in hour `hh`.
fn segment(root: &Path, hh: i64, offset: i64, len: usize, idx_len: Option<usize>) -> PathBuf {
    let start = hour_start(hh) + offset;
    let seg = put(
        &part(root, StoreKind::Pcap, hh).join(format!("{start}-w1.pcap.zst")),
        len,
    );
    if let Some(n) = idx_len {
        put(&idx(&seg), n);
    }
    seg
}

fn idx(seg: &Path) -> PathBuf {
    let mut s = seg.as_os_str().to_owned();
    s.push(".idx");
    PathBuf::from(s)
}

#[test]
fn size_limit_deletes_oldest_first_and_stops_when_under() {
    let dir = TempDir::new("size");
    let root = &dir.0;
    // Created out of order; in the same hour, ordered by start-ns.
    let c = flow(root, 22, 10, 100);
    let a = flow(root, 20, 0, 100);
    let b2 = flow(root, 21, 20, 100);
    let b1 = flow(root, 21, 5, 100);
    let policy = RetentionPolicy {
        flows_max_bytes: Some(250),
        ..Default::default()
    };
    let report = enforce(root, &policy, hour_start(23)).unwrap();
    let deleted: Vec<_> = report
        .flows
        .deleted
        .iter()
        .map(|d| d.path.clone())
        .collect();
    assert_eq!(deleted, [a.clone(), b1.clone()]);
    assert!(
        report
            .flows
            .deleted
            .iter()
            .all(|d| d.reason == DeleteReason::Size)
    );
    assert_eq!(report.flows.files_deleted, 2);
    assert_eq!(report.flows.bytes_freed, 200);
    assert_eq!(report.flows.bytes_remaining, 200);
    assert!(!a.exists() && !b1.exists() && b2.exists() && c.exists());
    assert_eq!(report.pcap, Default::default());

    // Exactly at the limit: nothing more to do.
    let policy = RetentionPolicy {
        flows_max_bytes: Some(200),
        ..Default::default()
    };
    let report = enforce(root, &policy, hour_start(23)).unwrap();
    assert_eq!(report.flows.files_deleted, 0);
    assert_eq!(report.flows.bytes_remaining, 200);
    assert_eq!(report.to_string(), "");
}

#[test]
fn age_limit_deletes_only_fully_expired_partitions() {
    let dir = TempDir::new("age");
    let root = &dir.0;
    let f20 = flow(root, 20, 0, 10);
    let f21 = flow(root, 21, 0, 10);
    let f22 = flow(root, 22, 0, 10);
    let s20 = segment(root, 20, 0, 10, Some(3));
    let s21 = segment(root, 21, 0, 10, Some(3));
    // Cutoff is 21:30: hour 20's flows ended by 21:00; hour 21's may run to 22:00.
    let policy = RetentionPolicy {
        flows_max_age_ns: Some(HOUR),
        pcap_max_age_ns: Some(HOUR),
        ..Default::default()
    };
    let now = hour_start(22) + HOUR / 2;
    let report = enforce(root, &policy, now).unwrap();
    assert_eq!(report.flows.files_deleted, 1);
    assert_eq!(report.flows.deleted[0].path, f20);
    assert_eq!(report.flows.deleted[0].reason, DeleteReason::Age);
    assert_eq!(report.flows.bytes_remaining, 20);
    assert!(!f20.exists() && f21.exists() && f22.exists());
    // Hour 20's segment may hold packets until 22:00 (one hour span past its hour).
    assert_eq!(report.pcap.files_deleted, 0);
    assert!(s20.exists());

    // At 23:00 exactly, hour 20's segment data (< 22:00) is all older than the cutoff.
    let report = enforce(root, &policy, hour_start(23)).unwrap();
    assert_eq!(report.pcap.files_deleted, 1);
    assert_eq!(report.pcap.deleted[0].path, s20);
    assert_eq!(report.pcap.bytes_freed, 13);
    assert_eq!(report.pcap.bytes_remaining, 13);
    assert!(!s20.exists() && !idx(&s20).exists() && s21.exists());
    assert_eq!(report.flows.deleted[0].path, f21);
    assert!(f22.exists());
}

#[test]
fn age_then_size() {
    let dir = TempDir::new("age-size");
    let root = &dir.0;
    let old = flow(root, 10, 0, 50);
    let mid = flow(root, 21, 0, 50);
    let new = flow(root, 22, 0, 50);
    let policy = RetentionPolicy {
        flows_max_age_ns: Some(2 * HOUR),
        flows_max_bytes: Some(60),
        ..Default::default()
    };
    let report = enforce(root, &policy, hour_start(22) + 1).unwrap();
    let got: Vec<_> = report
        .flows
        .deleted
        .iter()
        .map(|d| (d.path.clone(), d.reason))
        .collect();
    assert_eq!(got, [(old, DeleteReason::Age), (mid, DeleteReason::Size)]);
    assert!(new.exists());
    assert_eq!(report.flows.bytes_remaining, 50);
}

#[test]
fn segment_and_index_deleted_together() {
    let dir = TempDir::new("pcap");
    let root = &dir.0;
    let s1 = segment(root, 20, 0, 100, Some(20));
    let s2 = segment(root, 21, 0, 100, Some(20));
    let policy = RetentionPolicy {
        pcap_max_bytes: Some(120),
        ..Default::default()
    };
    let report = enforce(root, &policy, hour_start(23)).unwrap();
    assert_eq!(report.pcap.files_deleted, 1);
    assert_eq!(report.pcap.bytes_freed, 120);
    assert_eq!(report.pcap.bytes_remaining, 120);
    assert_eq!(report.pcap.deleted[0].path, s1);
    assert!(!s1.exists() && !idx(&s1).exists());
    assert!(s2.exists() && idx(&s2).exists());
    assert_eq!(
        report.to_string(),
        format!(
            "retention: deleted {} (120 bytes, reason: size)\n",
            s1.display()
        )
    );
    assert_eq!(report.log_lines().len(), 1);
}

#[test]
fn segment_without_index() {
    let dir = TempDir::new("no-index");
    let root = &dir.0;
    // Being published: its temporary index exists, so it is left alone.
    let publishing = segment(root, 20, 0, 100, None);
    let name = publishing.file_name().unwrap().to_str().unwrap();
    let tmp_idx = put(&publishing.with_file_name(format!(".{name}.idx.tmp")), 7);
    // Orphan (a deletion interrupted between index and segment): deletable.
    let orphan = segment(root, 21, 0, 100, None);
    // An index without its segment is not a published file.
    let lone_idx = put(
        &part(root, StoreKind::Pcap, 21).join("5-w1.pcap.zst.idx"),
        9,
    );
    let policy = RetentionPolicy {
        pcap_max_bytes: Some(0),
        ..Default::default()
    };
    let report = enforce(root, &policy, hour_start(23)).unwrap();
    assert_eq!(report.pcap.files_deleted, 1);
    assert_eq!(report.pcap.deleted[0].path, orphan);
    assert_eq!(report.pcap.bytes_remaining, 100);
    assert!(publishing.exists() && tmp_idx.exists() && lone_idx.exists());
    assert!(!orphan.exists());
}

#[test]
fn temp_and_unknown_files_are_never_deleted() {
    let dir = TempDir::new("temp");
    let root = &dir.0;
    let p = part(root, StoreKind::Flows, 20);
    let keep = [
        put(&p.join(".w1-0.parquet.tmp"), 10),
        put(&p.join("notes.txt"), 10),
        put(&p.join("abc-w1.parquet"), 10),
        put(&p.join("5-bad-writer!.parquet"), 10),
        put(&p.join("5-w1.parquet.tmp"), 10),
        put(&root.join("flows/misc/5-w1.parquet"), 10),
        put(&root.join("flows/date=2023-11-14/5-w1.parquet"), 10),
        put(
            &part(root, StoreKind::Pcap, 20).join(".w1-0.pcap.zst.tmp"),
            10,
        ),
        put(&root.join("other/date=2023-11-14/hour=20/5-w1.parquet"), 10),
    ];
    let published = flow(root, 20, 0, 10);
    let policy = RetentionPolicy {
        pcap_max_bytes: Some(0),
        pcap_max_age_ns: Some(0),
        flows_max_bytes: Some(0),
        flows_max_age_ns: Some(0),
    };
    let report = enforce(root, &policy, i64::MAX).unwrap();
    assert_eq!(report.flows.files_deleted, 1);
    assert_eq!(report.flows.bytes_remaining, 0);
    assert_eq!(report.pcap.files_deleted, 0);
    assert!(!published.exists());
    for k in &keep {
        assert!(k.exists(), "{} was deleted", k.display());
    }
    // The partition still holds temporary files, so it stays.
    assert!(p.is_dir());
}

#[test]
fn emptied_partition_dirs_are_removed() {
    let dir = TempDir::new("dirs");
    let root = &dir.0;
    flow(root, 20, 0, 10);
    flow(root, 21, 0, 10);
    let keep = flow(root, 24, 0, 10);
    // Already empty: not ours to remove.
    let empty = part(root, StoreKind::Flows, 25);
    fs::create_dir_all(&empty).unwrap();
    let policy = RetentionPolicy {
        flows_max_bytes: Some(10),
        ..Default::default()
    };
    let report = enforce(root, &policy, hour_start(30)).unwrap();
    assert_eq!(report.flows.files_deleted, 2);
    assert!(!root.join("flows/date=2023-11-14").exists());
    assert!(keep.exists());
    assert!(empty.is_dir());
    assert!(root.join("flows").is_dir());
}

#[test]
fn flows_and_pcap_limits_are_independent() {
    let dir = TempDir::new("independent");
    let root = &dir.0;
    let f = flow(root, 20, 0, 100);
    let s = segment(root, 20, 0, 100, Some(10));
    let policy = RetentionPolicy {
        flows_max_bytes: Some(0),
        pcap_max_bytes: Some(1000),
        ..Default::default()
    };
    let report = enforce(root, &policy, hour_start(30)).unwrap();
    assert!(!f.exists() && s.exists() && idx(&s).exists());
    assert_eq!(report.flows.files_deleted, 1);
    assert_eq!(report.pcap.files_deleted, 0);
    assert_eq!(report.pcap.bytes_remaining, 110);
    assert_eq!(report.files_deleted(), 1);
    assert_eq!(report.bytes_freed(), 100);

    let policy = RetentionPolicy {
        pcap_max_age_ns: Some(HOUR),
        ..Default::default()
    };
    let report = enforce(root, &policy, hour_start(30)).unwrap();
    assert_eq!(report.pcap.files_deleted, 1);
    assert_eq!(report.flows.files_deleted, 0);
    assert!(!s.exists() && !idx(&s).exists());
}

#[test]
fn missing_store_and_bad_policy() {
    let dir = TempDir::new("empty");
    let report = enforce(&dir.0, &RetentionPolicy::default(), 0).unwrap();
    assert_eq!(report, Default::default());
    let bad = RetentionPolicy {
        flows_max_age_ns: Some(-1),
        ..Default::default()
    };
    let err = enforce(&dir.0, &bad, 0).unwrap_err();
    assert!(matches!(err, RetentionError::InvalidPolicy(_)));
    assert_eq!(
        err.to_string(),
        "invalid retention policy: flows_max_age_ns must not be negative"
    );
}
