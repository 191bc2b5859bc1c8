//! The live pipeline (workers, shard hand-off, output thread) fed by a capture file: it must
//! produce exactly the records `tapvault analyze` produces, and its counters must add up;
//! threaded (shard threads) and inline (the worker runs the flow table) alike.

use std::sync::{Arc, Mutex, atomic::Ordering::Relaxed};

use tapvault_config::FlowConfig;
use tapvault_dataplane::live::{
    RxSource,
    file::{FileSource, Speed},
    pipeline::{Clock, NoSpill, Pipeline, PipelineOptions, RecordSink, WorkerSpill},
};
use tapvault_storage::{DnsRecord, FlowRecord};

#[derive(Clone, Default)]
struct Collect(Arc<Mutex<(Vec<FlowRecord>, usize, bool)>>);

impl RecordSink for Collect {
    fn record(&mut self, rec: FlowRecord) {
        self.0.lock().unwrap().0.push(rec);
    }
    fn dns(&mut self, _rec: DnsRecord) {
        self.0.lock().unwrap().1 += 1;
    }
    fn tick(&mut self, _now_ns: i64) {}
    fn finish(&mut self) {
        self.0.lock().unwrap().2 = true;
    }
}

fn sorted(mut v: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    v.sort_by(|a, b| a["flow_id"].as_str().cmp(&b["flow_id"].as_str()));
    v
}

#[test]
fn file_source_through_the_pipeline_equals_analyze() {
    let Some(shared) = crate::util::shared_dir() else {
        return;
    };
    for name in [
        "ssh.pcap",
        "retransmit-fast009.pcap",
        "iso-download.pcap.gz",
        "smb3_multichannel.pcap",
    ] {
        let cap = shared.join("testdata/captures").join(name);
        let want = sorted(crate::util::analyze_json(&cap, &[]));
        // (shards, inline)
        for (shards, inline) in [(1, false), (3, false), (1, true)] {
            let mode = if inline { "inline" } else { "threaded" };
            let src = FileSource::open(&cap, Speed::Max).expect("open");
            let opts = PipelineOptions {
                flow: FlowConfig {
                    shards,
                    ..FlowConfig::default()
                },
                clock: Clock::Packet,
                link_type: src.link_type(),
                inline,
                ..PipelineOptions::default()
            };
            let sink = Collect::default();
            let p = Pipeline::start(
                vec![Box::new(src) as Box<dyn RxSource>],
                vec![Box::new(NoSpill) as Box<dyn WorkerSpill>],
                Box::new(sink.clone()),
                &opts,
            )
            .expect("start");
            let stats = p.stats();
            let t0 = std::time::Instant::now();
            while !p.workers_done() {
                assert!(
                    t0.elapsed().as_secs() < 60,
                    "{name}: pipeline did not finish"
                );
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let report = p.stop().expect("stop");
            let got = std::mem::take(&mut sink.0.lock().unwrap().0);
            assert!(sink.0.lock().unwrap().2, "record sink finished");
            let got = sorted(
                got.iter()
                    .map(|r| serde_json::to_value(r).unwrap())
                    .collect(),
            );
            assert_eq!(got.len(), want.len(), "{name} shards {shards} {mode}");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g, w, "{name} shards {shards} {mode}");
            }
            // Inline, the worker owned the table: no shard thread ran.
            assert_eq!(report.inline, inline, "{name}");
            assert_eq!(
                report.shard_threads,
                if inline { 0 } else { shards },
                "{name} {mode}"
            );
            // Counters add up: every frame is IP, not IP, or malformed; no hand-off loss
            // from a file (the worker waits only at the end, but a full queue drops).
            let malformed: u64 = report.malformed.iter().sum();
            assert!(report.frames > 0);
            assert_eq!(
                report.frames,
                report.ip_packets + report.not_ip + malformed,
                "{name}"
            );
            assert_eq!(report.source.received, report.frames);
            assert_eq!(report.handoff_dropped, 0, "{name}: hand-off drops");
            assert_eq!(report.flows.records as usize, want.len());
            // Every descriptor handed off (inline: processed by the worker's table) reached
            // a table, and the live shard counters say so too.
            let handed: u64 = stats
                .workers
                .iter()
                .map(|w| w.handed_off.load(Relaxed))
                .sum();
            assert!(handed > 0 && handed <= report.ip_packets, "{name} {mode}");
            assert_eq!(handed, report.flows.packets, "{name} {mode}");
            let shard_packets: u64 = stats.shards.iter().map(|s| s.packets.load(Relaxed)).sum();
            assert_eq!(shard_packets, report.flows.packets, "{name} {mode}");
            assert_eq!(stats.shards.len(), shards, "{name} {mode}");
            assert_eq!(
                stats.records_out.load(Relaxed),
                (want.len() + sink.0.lock().unwrap().1) as u64,
                "{name} {mode}: records and DNS transactions reached the output thread"
            );
        }
    }
}

/// Runs `tapvault capture --file CAP` (no API, storage in a scratch directory) with extra
/// arguments, behind `prefix` (e.g. `taskset -c 0`); returns success, the report JSON and
/// stderr.
fn capture_file(
    cap: &std::path::Path,
    tag: &str,
    prefix: &[&str],
    extra: &[&str],
) -> (bool, serde_json::Value, String) {
    let dir = std::env::temp_dir().join(format!(
        "tapvault-live-{tag}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let exe = env!("CARGO_BIN_EXE_tapvault");
    let mut cmd = match prefix.split_first() {
        Some((p, rest)) => {
            let mut c = std::process::Command::new(p);
            c.args(rest).arg(exe);
            c
        }
        None => std::process::Command::new(exe),
    };
    let report = dir.join("report.json");
    let out = cmd
        .args(["capture", "--no-api", "--status-every", "0", "--file"])
        .arg(cap)
        .arg("--data-dir")
        .arg(dir.join("store"))
        .arg("--report-json")
        .arg(&report)
        .args(extra)
        .output()
        .expect("run tapvault capture");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let v = std::fs::read(&report)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null);
    std::fs::remove_dir_all(&dir).ok();
    (out.status.success(), v, err)
}

/// `flow.pipeline` reaches `tapvault capture`: forced inline, and chosen by `auto` when the
/// process may use one CPU (taskset, as the live benchmark runs it); the mode shows in the
/// start-up line and the report, the records are analyze's, the counters add up; inline with
/// two shards is refused naming the key.
#[test]
fn capture_runs_the_pipeline_mode_the_config_asks_for() {
    let Some(shared) = crate::util::shared_dir() else {
        return;
    };
    let cap = shared.join("testdata/captures/ssh.pcap");
    let want = crate::util::analyze_json(&cap, &[]).len() as u64;
    assert!(want >= 20, "{want} records");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let auto = if cores == 1 { "inline" } else { "threaded" };
    for (tag, prefix, extra, mode) in [
        (
            "inline",
            &[][..],
            &["--set", "flow.pipeline=inline"][..],
            "inline",
        ),
        (
            "threaded",
            &[],
            &["--set", "flow.pipeline=threaded"],
            "threaded",
        ),
        ("auto", &[], &[], auto),
        ("auto1cpu", &["taskset", "-c", "0"], &[], "inline"),
    ] {
        let (ok, r, err) = capture_file(&cap, tag, prefix, extra);
        assert!(ok, "{tag}: {err}");
        assert_eq!(r["pipeline"], mode, "{tag}: {r}");
        let threads = r["shard_threads"].as_u64().expect("shard_threads");
        if mode == "inline" {
            assert_eq!(threads, 0, "{tag}: {r}");
            assert!(err.contains("(inline pipeline"), "{tag}: {err}");
        } else {
            assert!(threads >= 1, "{tag}: {r}");
            assert!(err.contains("(threaded pipeline"), "{tag}: {err}");
        }
        let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} in {r}"));
        assert_eq!(n("records"), want, "{tag}: {r}");
        assert!(n("frames") > 0);
        assert_eq!(
            n("frames"),
            n("ip_packets") + n("not_ip") + n("malformed"),
            "{tag}: {r}"
        );
        assert_eq!(n("handoff_dropped"), 0, "{tag}: {r}");
    }
    let (ok, _, err) = capture_file(
        &cap,
        "bad",
        &[],
        &["--set", "flow.pipeline=inline", "--set", "flow.shards=2"],
    );
    assert!(!ok, "inline with two shards started");
    assert!(
        err.contains("flow.pipeline") && err.contains("flow.shards is 2"),
        "{err}"
    );
}
