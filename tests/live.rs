//! The live pipeline (workers, shard hand-off, output thread) fed by a capture file: it must
//! produce exactly the records `tapvault analyze` produces, and its counters must add up.

use std::sync::{Arc, Mutex};

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
        for shards in [1, 3] {
            let src = FileSource::open(&cap, Speed::Max).expect("open");
            let opts = PipelineOptions {
                flow: FlowConfig {
                    shards,
                    ..FlowConfig::default()
                },
                clock: Clock::Packet,
                link_type: src.link_type(),
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
            assert_eq!(got.len(), want.len(), "{name} shards {shards}");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g, w, "{name} shards {shards}");
            }
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
        }
    }
}
