use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use crate::util::TempDir;
use tapvault_storage::{
    CloseReason, FlowParquetWriter, FlowRecord, FlowState, WriterOptions, read_flows,
    read_flows_with_stats, recover,
};

/// 2023-11-14T22:00:00Z.
const T0: i64 = 1_699_999_200_000_000_000;
const HOUR: i64 = 3_600_000_000_000;
const SEC: i64 = 1_000_000_000;

/// A record with every field set, the optional ones alternating between `Some` and `None`.
fn full(i: u64, first: i64, last: i64) -> FlowRecord {
    let some = i.is_multiple_of(2);
    let f = i as f64;
    FlowRecord {
        flow_id: format!("{i:016x}"),
        first_seen_ns: first,
        last_seen_ns: last,
        vlan_outer: some.then_some(100 + i as u16),
        vlan_inner: some.then_some(4094),
        proto: if some { "tcp" } else { "udp" }.into(),
        ip_version: if some { 6 } else { 4 },
        client_ip: if some {
            format!("2001:db8::{i:x}")
        } else {
            format!("192.0.2.{}", i % 256)
        },
        client_port: 40_000 + i as u16,
        server_ip: if some {
            "fe80::1%eth0".into()
        } else {
            "10.0.0.1".into()
        },
        server_port: 443,
        client_by: "syn".into(),
        packets_c2s: 1 + i,
        packets_s2c: 2 + i,
        bytes_c2s: 3 + i,
        bytes_s2c: u64::MAX - i,
        payload_bytes_c2s: 5 + i,
        payload_bytes_s2c: 6 + i,
        close_reason: if some {
            CloseReason::PortReuse
        } else {
            CloseReason::IdleTimeout
        },
        state: if some {
            FlowState::HalfClosed
        } else {
            FlowState::IncompleteHandshake
        },
        ip_fragments: 7 + i,
        retransmissions: 8 + i,
        fast_retransmissions: 9 + i,
        spurious_retransmissions: 10 + i,
        retransmission_rate: f / 1000.0,
        zero_window_events: 11 + i,
        zero_window_probes: 12 + i,
        zero_window_probe_acks: 13 + i,
        window_full_events: 14 + i,
        window_updates: 15 + i,
        window_scale_client: some.then_some(7),
        window_scale_server: (!some).then_some(14),
        avg_receive_window: some.then_some(65535.5 + f),
        out_of_order: 16 + i,
        dup_acks: 17 + i,
        missing_segments: 18 + i,
        acked_unseen: 19 + i,
        rst_count: 20 + i,
        fin_count: 21 + i,
        syn_count: 22 + i,
        syn_ack_count: 23 + i,
        keepalive_count: 24 + i,
        keepalive_ack_count: 25 + i,
        reused_ports: 26 + i,
        connection_completeness: 31,
        history: format!("ShAD\u{e9}\u{1F600}\"\n{i}"),
        initial_rtt_us: some.then_some(0.1 + f),
        handshake_time_us: (!some).then_some(1e300),
        connection_time_us: some.then_some(f64::INFINITY),
        time_to_first_byte_us: some.then_some(-0.0),
        rtt_min_us: some.then_some(1.0),
        rtt_max_us: some.then_some(123_456_789.0),
        rtt_avg_us: some.then_some(f / 3.0),
        rtt_samples: 27 + i,
        jitter_us: some.then_some(f64::MIN_POSITIVE),
        ts_rtt_samples: 28 + i,
        ts_rtt_min_us: some.then_some(2.0),
        ts_rtt_avg_us: some.then_some(3.0),
        ts_rtt_max_us: some.then_some(4.0),
        goodput_bytes: 29 + i,
        goodput_bytes_c2s: 30 + i,
        goodput_bytes_s2c: 31 + i,
        icmp_errors: 32 + i,
        icmp_unreachable: 33 + i,
        icmp_time_exceeded: 34 + i,
        icmp_packet_too_big: 35 + i,
        icmp_parameter_problem: 36 + i,
        icmp_last_error: some.then(|| "3/4".into()),
        dns_queries: 37 + i,
        dns_responses: 38 + i,
        dns_nxdomain: 39 + i,
        dns_servfail: 40 + i,
        dns_other_errors: 41 + i,
        dns_unanswered: 42 + i,
        dns_latency_avg_us: (!some).then_some(5.5),
        dns_latency_max_us: some.then_some(6.5),
    }
}

/// A minimal record spanning `[first, last]`.
fn span(id: &str, first: i64, last: i64) -> FlowRecord {
    FlowRecord {
        flow_id: id.into(),
        first_seen_ns: first,
        last_seen_ns: last,
        ..Default::default()
    }
}

fn write(root: &Path, id: &str, options: WriterOptions, records: &[FlowRecord]) -> Vec<PathBuf> {
    let mut w = FlowParquetWriter::new(root, id, options).unwrap();
    w.write_all(records.iter().cloned()).unwrap();
    w.close().unwrap()
}

fn sorted(mut records: Vec<FlowRecord>) -> Vec<FlowRecord> {
    records.sort_by(|a, b| a.flow_id.cmp(&b.flow_id));
    records
}

fn ids(records: &[FlowRecord]) -> Vec<&str> {
    let mut ids: Vec<&str> = records.iter().map(|r| r.flow_id.as_str()).collect();
    ids.sort_unstable();
    ids
}

/// Every `.parquet` and `.parquet.tmp` file under `dir`, relative to it, sorted.
fn files(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn round_trip_every_field() {
    let dir = TempDir::new("round-trip");
    let records: Vec<FlowRecord> = (0..300)
        .map(|i| {
            let first = T0 + i as i64 * SEC;
            full(i, first, first + (i as i64 % 7) * HOUR / 3)
        })
        .collect();
    let published = write(
        &dir.0,
        "w0",
        WriterOptions::default().row_group_rows(64),
        &records,
    );
    assert!(
        published.len() >= 2,
        "records span several hours: {published:?}"
    );
    let back = read_flows(&dir.0, i64::MIN, i64::MAX).unwrap();
    assert_eq!(back.len(), records.len());
    let (back, records) = (sorted(back), sorted(records));
    for (b, r) in back.iter().zip(&records) {
        assert_eq!(b, r);
        // -0.0 == 0.0 for PartialEq; check the sign survived too.
        assert_eq!(
            b.time_to_first_byte_us.map(f64::to_bits),
            r.time_to_first_byte_us.map(f64::to_bits)
        );
    }
}

#[test]
fn range_boundaries_are_inclusive() {
    let dir = TempDir::new("boundaries");
    let (from, to) = (T0 + 100 * SEC, T0 + 200 * SEC);
    let records = [
        span("before", T0, from - 1),
        span("ends_at_from", T0, from),
        span("inside", from + 1, to - 1),
        span("covers", T0, to + 1),
        span("starts_at_to", to, to + 10 * SEC),
        span("after", to + 1, to + 2),
        // Starts before the range and ends two hours later, in a later partition.
        span("long", from - 5, to + 2 * HOUR),
        span("after_later_hour", to + HOUR, to + 2 * HOUR),
    ];
    write(&dir.0, "w0", WriterOptions::default(), &records);
    let got = read_flows(&dir.0, from, to).unwrap();
    assert_eq!(
        ids(&got),
        ["covers", "ends_at_from", "inside", "long", "starts_at_to"]
    );
    // A single instant.
    let got = read_flows(&dir.0, to, to).unwrap();
    assert_eq!(ids(&got), ["covers", "long", "starts_at_to"]);
    // An empty or inverted range.
    assert!(read_flows(&dir.0, to, from).unwrap().is_empty());
    // The returned records are the full records.
    let all = read_flows(&dir.0, i64::MIN, i64::MAX).unwrap();
    assert_eq!(sorted(all), sorted(records.to_vec()));
}

#[test]
fn partitions_by_last_seen_hour() {
    let dir = TempDir::new("partitions");
    let records = [
        span("a", T0 + 10 * SEC, T0 + 20 * SEC),
        span("b", T0 + 30 * SEC, T0 + 40 * SEC),
        // Started at 22:59:59, ended at 23:00:05: the 23 partition.
        span("c", T0 + HOUR - SEC, T0 + HOUR + 5 * SEC),
        // The next day.
        span("d", T0 + 2 * HOUR + SEC, T0 + 2 * HOUR + 2 * SEC),
    ];
    let published = write(&dir.0, "shard_7", WriterOptions::default(), &records);
    assert_eq!(published.len(), 3);
    let expect = [
        format!(
            "flows/date=2023-11-14/hour=22/{}-shard_7.parquet",
            T0 + 10 * SEC
        ),
        format!(
            "flows/date=2023-11-14/hour=23/{}-shard_7.parquet",
            T0 + HOUR - SEC
        ),
        format!(
            "flows/date=2023-11-15/hour=00/{}-shard_7.parquet",
            T0 + 2 * HOUR + SEC
        ),
    ];
    assert_eq!(files(&dir.0), expect);
    let mut published: Vec<String> = published
        .iter()
        .map(|p| {
            p.strip_prefix(&dir.0)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    published.sort();
    assert_eq!(published, expect);
    // Reading one hour reads that hour's records (and not the earlier partition's).
    let (got, stats) = read_flows_with_stats(&dir.0, T0 + HOUR, T0 + HOUR + 10 * SEC).unwrap();
    assert_eq!(ids(&got), ["c"]);
    assert_eq!(stats.files_read, 1, "{stats:?}");
    assert_eq!(stats.files_skipped, 1, "{stats:?}");
}

#[test]
fn files_roll_at_max_rows_and_flushes_add_files() {
    let dir = TempDir::new("roll");
    let mut w =
        FlowParquetWriter::new(&dir.0, "w1", WriterOptions::default().max_rows_per_file(10))
            .unwrap();
    let mut published = Vec::new();
    for i in 0..25 {
        w.write(span(&format!("r{i:02}"), T0 + i * SEC, T0 + i * SEC))
            .unwrap();
    }
    // Two full files were published as they filled up; the rest is still buffered.
    assert_eq!(
        files(&dir.0)
            .iter()
            .filter(|f| f.ends_with(".parquet"))
            .count(),
        2
    );
    assert_eq!(read_flows(&dir.0, i64::MIN, i64::MAX).unwrap().len(), 20);
    published.extend(w.flush().unwrap());
    // Same hour and same start time as a published file: a distinct name.
    w.write(span("again", T0, T0)).unwrap();
    published.extend(w.close().unwrap());
    assert_eq!(published.len(), 2);
    assert_eq!(files(&dir.0).len(), 4);
    assert!(files(&dir.0).iter().all(|f| f.ends_with(".parquet")));
    assert_eq!(read_flows(&dir.0, i64::MIN, i64::MAX).unwrap().len(), 26);
}

#[test]
fn row_groups_are_pruned_by_time() {
    let dir = TempDir::new("pruning");
    let records: Vec<FlowRecord> = (0..200)
        .map(|i| span(&format!("r{i:03}"), T0 + i * SEC, T0 + i * SEC + SEC / 2))
        .collect();
    let published = write(
        &dir.0,
        "w0",
        WriterOptions::default().row_group_rows(20),
        &records,
    );
    assert_eq!(published.len(), 1);
    let (got, stats) = read_flows_with_stats(&dir.0, T0 + 45 * SEC, T0 + 50 * SEC).unwrap();
    let expect: Vec<&str> = (45..=50).map(|i| records[i].flow_id.as_str()).collect();
    assert_eq!(ids(&got), expect);
    assert_eq!(stats.files_read, 1);
    assert_eq!(stats.row_groups_read, 1, "{stats:?}");
    assert_eq!(stats.row_groups_skipped, 9, "{stats:?}");
    // The full range reads all ten.
    let (got, stats) = read_flows_with_stats(&dir.0, T0, T0 + 1000 * SEC).unwrap();
    assert_eq!(got.len(), 200);
    assert_eq!((stats.row_groups_read, stats.row_groups_skipped), (10, 0));
}

#[test]
fn leftover_tmp_files_are_never_read_and_recover_removes_them() {
    let dir = TempDir::new("recover");
    write(
        &dir.0,
        "w0",
        WriterOptions::default(),
        &[span("published", T0, T0 + SEC)],
    );
    // A writer that dies before its flush: rows written (a row group on disk) but no footer.
    let mut w =
        FlowParquetWriter::new(&dir.0, "w1", WriterOptions::default().row_group_rows(4)).unwrap();
    for i in 0..10 {
        w.write(span(&format!("lost{i}"), T0 + i * SEC, T0 + i * SEC))
            .unwrap();
    }
    drop(w);
    // A crash leftover with a visible name, too.
    let hour_dir = dir.0.join("flows/date=2023-11-14/hour=22");
    let visible = hour_dir.join(format!("{T0}-w2.parquet.tmp"));
    fs::write(&visible, b"PAR1 half a file").unwrap();

    let mut tmp: Vec<String> = files(&dir.0)
        .into_iter()
        .filter(|f| f.ends_with(".parquet.tmp"))
        .collect();
    assert_eq!(tmp.len(), 2, "{:?}", files(&dir.0));
    assert_eq!(
        ids(&read_flows(&dir.0, i64::MIN, i64::MAX).unwrap()),
        ["published"]
    );

    let mut removed: Vec<String> = recover(&dir.0)
        .unwrap()
        .iter()
        .map(|p| {
            p.strip_prefix(&dir.0)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    removed.sort();
    tmp.sort();
    assert_eq!(removed, tmp);
    assert_eq!(
        files(&dir.0),
        [format!("flows/date=2023-11-14/hour=22/{T0}-w0.parquet")]
    );
    assert!(recover(&dir.0).unwrap().is_empty());
    // An empty store.
    let empty = TempDir::new("recover-empty");
    assert!(recover(&empty.0).unwrap().is_empty());
    assert!(read_flows(&empty.0, i64::MIN, i64::MAX).unwrap().is_empty());
}

#[test]
fn invalid_writer_ids_are_rejected() {
    let dir = TempDir::new("ids");
    for id in ["", "a-b", "a/b", "..", "é"] {
        let err = FlowParquetWriter::new(&dir.0, id, WriterOptions::default())
            .err()
            .unwrap_or_else(|| panic!("{id:?} accepted"));
        assert!(err.to_string().starts_with("invalid writer id"), "{err}");
    }
    let err = FlowParquetWriter::new(&dir.0, "w", WriterOptions::default().zstd_level(99))
        .err()
        .unwrap();
    assert_eq!(err.to_string(), "invalid zstd level 99");
}

/// Reads the files with pyarrow and DuckDB, as an analyst would.
#[test]
fn pyarrow_and_duckdb_read_the_files() {
    let probe = Command::new("python3")
        .args(["-c", "import pyarrow, duckdb"])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        let msg = "python3 with pyarrow and duckdb is not available";
        if std::env::var_os("CI").is_some() {
            panic!("{msg}: scripts/setup.sh must install them (pip install pyarrow duckdb)");
        }
        eprintln!("skipping pyarrow_and_duckdb_read_the_files: {msg}");
        return;
    }
    let dir = TempDir::new("python");
    let records: Vec<FlowRecord> = (0..50)
        .map(|i| {
            full(
                i,
                T0 + i as i64 * SEC,
                T0 + i as i64 * SEC + (i as i64 % 2) * HOUR,
            )
        })
        .collect();
    write(
        &dir.0,
        "w0",
        WriterOptions::default().row_group_rows(16),
        &records,
    );
    // A crash leftover that no reader may pick up.
    fs::write(
        dir.0
            .join("flows/date=2023-11-14/hour=22/.w9-0.parquet.tmp"),
        b"junk",
    )
    .unwrap();

    let script = r#"
import json, sys
import pyarrow as pa, pyarrow.parquet as pq, duckdb
root = sys.argv[1]
t = pq.read_table(root + "/flows")
r2 = t.filter(pa.compute.equal(t["flow_id"], "0000000000000002")).to_pylist()[0]
r3 = t.filter(pa.compute.equal(t["flow_id"], "0000000000000003")).to_pylist()[0]
meta = pq.ParquetFile(sorted(__import__("glob").glob(root + "/flows/**/*.parquet", recursive=True))[0])
md = meta.metadata
out = {
    "pa_rows": t.num_rows,
    "pa_first_seen_type": str(t.schema.field("first_seen_ns").type),
    "pa_bytes_s2c_type": str(t.schema.field("bytes_s2c").type),
    "pa_client_ip_2": r2["client_ip"],
    "pa_vlan_outer_3": r3["vlan_outer"],
    "pa_history_2": r2["history"],
    "pa_first_seen_2": r2["first_seen_ns"].isoformat(),
    "pa_version": md.metadata[b"tapvault.format_version"].decode(),
    "pa_compression": md.row_group(0).column(0).compression,
    "pa_has_stats": md.row_group(0).column(1).statistics.has_min_max,
}
glob = root + "/flows/**/*.parquet"
con = duckdb.connect()
q = lambda sql: con.execute(sql.replace("SRC", f"read_parquet('{glob}', hive_partitioning=true)")).fetchall()
out["db_rows"] = q("SELECT count(*) FROM SRC")[0][0]
row = q("SELECT client_ip, state, close_reason, hour, CAST(date AS VARCHAR), bytes_s2c::VARCHAR FROM SRC WHERE flow_id = '0000000000000003'")[0]
out["db_row_3"] = [str(v) for v in row]
# DuckDB 2 reads the columns as TIMESTAMPTZ_NS, which compares with string literals but
# not with TIMESTAMPTZ values (those need first_seen_ns::TIMESTAMPTZ).
out["db_in_range"] = q("SELECT count(*) FROM SRC WHERE first_seen_ns >= '2023-11-14 22:00:10+00' AND first_seen_ns < '2023-11-14 22:00:20+00'")[0][0]
out["db_in_range_cast"] = q("SELECT count(*) FROM SRC WHERE first_seen_ns::TIMESTAMPTZ >= TIMESTAMPTZ '2023-11-14 22:00:10+00' AND last_seen_ns::TIMESTAMPTZ < TIMESTAMPTZ '2023-11-14 22:00:20+00'")[0][0]
out["db_v6"] = q("SELECT count(*) FROM SRC WHERE client_ip LIKE '2001:db8::%'")[0][0]
print(json.dumps(out))
"#;
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&dir.0)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let expect = serde_json::json!({
        "pa_rows": 50,
        "pa_first_seen_type": "timestamp[ns, tz=UTC]",
        "pa_bytes_s2c_type": "uint64",
        "pa_client_ip_2": "2001:db8::2",
        "pa_vlan_outer_3": null,
        "pa_history_2": "ShAD\u{e9}\u{1F600}\"\n2",
        "pa_first_seen_2": "2023-11-14T22:00:02+00:00",
        "pa_version": "1",
        "pa_compression": "ZSTD",
        "pa_has_stats": true,
        "db_rows": 50,
        // Record 3 ends an hour after it starts: the 23 partition.
        "db_row_3": ["192.0.2.3", "incomplete_handshake", "idle_timeout", "23", "2023-11-14",
                     (u64::MAX - 3).to_string()],
        "db_in_range": 10,
        // Of those, the even ones end in the same hour.
        "db_in_range_cast": 5,
        "db_v6": 25,
    });
    assert_eq!(got, expect);
}

/// `read_flows_filtered`: the pushed-down predicate sees only its columns, selects exactly
/// what filtering the full read would, prunes like `read_flows_with_stats`, and stops when
/// asked to.
#[test]
fn filtered_read_pushes_the_predicate_down() {
    use std::sync::{Arc, Mutex};

    use arrow_array::{Array, BooleanArray, UInt64Array};
    use tapvault_storage::{FlowPredicate, read_flows_filtered};

    let dir = TempDir::new("filtered");
    let records: Vec<FlowRecord> = (0..500)
        .map(|i| {
            let first = T0 + i as i64 * SEC;
            full(i, first, first + (i as i64 % 5) * SEC)
        })
        .collect();
    write(
        &dir.0,
        "w0",
        WriterOptions::default().row_group_rows(50),
        &records,
    );
    let seen_columns = Arc::new(Mutex::new(Vec::new()));
    let seen = seen_columns.clone();
    let pred = FlowPredicate {
        columns: vec!["retransmissions".into()],
        eval: Arc::new(move |batch| {
            seen.lock().unwrap().push(batch.num_columns());
            let col = batch
                .column_by_name("retransmissions")
                .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
                .expect("the projected column");
            Ok(BooleanArray::from_iter(
                (0..col.len()).map(|i| Some(col.value(i) % 3 == 0)),
            ))
        }),
    };
    let (from, to) = (T0 + 100 * SEC, T0 + 300 * SEC);
    let (got, stats) = read_flows_filtered(&dir.0, from, to, Some(&pred), &|| true).unwrap();
    let (all, all_stats) = read_flows_with_stats(&dir.0, from, to).unwrap();
    let want: Vec<FlowRecord> = all
        .into_iter()
        .filter(|r| r.retransmissions % 3 == 0)
        .collect();
    assert!(!want.is_empty());
    assert_eq!(sorted(got), sorted(want));
    assert_eq!(stats.row_groups_skipped, all_stats.row_groups_skipped);
    assert!(stats.row_groups_skipped > 0);
    assert!(seen_columns.lock().unwrap().iter().all(|&n| n == 1));
    let (none, _) = read_flows_filtered(&dir.0, from, to, None, &|| true).unwrap();
    assert_eq!(none.len(), read_flows(&dir.0, from, to).unwrap().len());
    let stopped = read_flows_filtered(&dir.0, from, to, None, &|| false);
    assert!(matches!(stopped, Err(tapvault_storage::Error::Interrupted)));
}
