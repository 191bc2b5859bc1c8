//! Real Linux TCP against tshark: `tapvault demo` runs its scenarios (request/response over
//! IPv4 and IPv6, a bulk download through a lossy bottleneck, a slow reader, a refused connect,
//! an idle connection with keep-alives) between network namespaces and captures them with
//! tcpdump; tshark 4.0.17 (through `gt.py`) and `tapvault analyze` then read the same capture
//! and must agree on every compared field of every TCP stream.
//!
//! Privileged: it needs root (namespaces, veths, a qdisc, tcpdump) and tcpdump, ethtool,
//! iproute2 and tshark installed. It skips, saying so, only when not root and `CI` is unset;
//! in CI it always runs, and fails if it cannot.

use std::{process::Command, time::Instant};

use serde_json::Value;

use crate::{
    differential::{NO_TIMEOUTS, compare},
    util::{IpGuard, Scratch, analyze_json, shared_dir},
};

/// Server ports of the demo's scenarios (`src/lab/traffic.rs`).
const RR_PORT: u64 = 5001;
const BULK_PORT: u64 = 5002;
const SLOW_PORT: u64 = 5003;
const KEEPALIVE_PORT: u64 = 5004;
const CLOSED_PORT: u64 = 5009;

/// The TCP records whose server port is `port`.
fn by_port(records: &[Value], port: u64) -> Vec<&Value> {
    records
        .iter()
        .filter(|r| r["proto"] == "tcp" && r["server_port"].as_u64() == Some(port))
        .collect()
}

fn n(r: &Value, k: &str) -> u64 {
    r[k].as_u64()
        .unwrap_or_else(|| panic!("field {k} missing in {r}"))
}

/// Runs `tapvault demo --compare` into `dir` with extra arguments; checks that it succeeded,
/// that live capture and tcpdump + analyze agreed, and that the capture's counters add up.
/// Returns stdout.
fn run_demo(dir: &std::path::Path, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tapvault"))
        .args(["demo", "--seconds", "4", "--keep", "--compare"])
        .args(extra)
        .arg("--out")
        .arg(dir)
        .output()
        .expect("run tapvault demo");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tapvault demo {extra:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let cmp = stdout
        .lines()
        .find(|l| l.starts_with("compare: "))
        .unwrap_or_else(|| panic!("no comparison line:\n{stdout}"));
    assert!(cmp.contains(" 0 differences"), "{cmp}");
    let matched: u64 = cmp
        .split(", ")
        .find_map(|p| p.strip_suffix(" matched"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{cmp}"));
    assert!(matched >= 10, "{cmp}");
    let capture: Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("capture: "))
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_else(|| panic!("no capture counters:\n{stdout}"));
    let c = |k: &str| n(&capture, k);
    assert!(c("frames") > 1000, "{capture}");
    // Counters add up: every frame received was decoded one way or another; nothing was
    // lost between the kernel and the flow shards on this light load.
    assert_eq!(c("frames"), c("kernel_received"), "{capture}");
    assert_eq!(
        c("frames"),
        c("ip_packets") + c("not_ip") + c("malformed"),
        "{capture}"
    );
    // XDP (AF_XDP source): every frame the program saw has one terminal outcome, and what
    // it redirected is what the sockets delivered.
    if capture["xdp"].is_object() {
        let x = |k: &str| n(&capture["xdp"], k);
        assert_eq!(
            x("seen"),
            x("redirected") + x("filtered") + x("no_socket") + x("errors"),
            "{capture}"
        );
        assert_eq!(x("redirected"), c("frames"), "{capture}");
        assert_eq!(x("meta_failed"), 0, "{capture}");
        // The report names the program variant that ran, as the start-up line did.
        let said = if stderr.contains("per-frame metadata in the packet data") {
            "packet_data"
        } else if stderr.contains("per-frame metadata in the XDP metadata area") {
            "meta_area"
        } else {
            panic!("no XDP start-up line:\n{stderr}")
        };
        assert_eq!(capture["xdp"]["metadata"], said, "{capture}");
    }
    // The capture interface's device counters: everything the sockets got, the device
    // received (it may have received a few more before the capture attached), and the
    // device lost nothing on this light load.
    let i = |k: &str| n(&capture["interface"], k);
    assert!(
        capture["interface"]["name"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{capture}"
    );
    assert!(i("rx_packets") >= c("frames"), "{capture}");
    // Host-wide (other tests' traffic too), so only its presence is certain.
    assert!(
        capture["interface"]["host_backlog_dropped"].is_u64(),
        "{capture}"
    );
    assert!(i("rx_bytes") > 0, "{capture}");
    for k in [
        "rx_dropped",
        "rx_fifo_errors",
        "rx_frame_errors",
        "rx_errors",
    ] {
        assert_eq!(i(k), 0, "interface.{k}: {capture}");
    }
    // The capture port is a veth: its driver counts drops per queue (`ethtool -S`), and
    // lost nothing either.
    let driver = capture["interface"]["driver_drops"]
        .as_object()
        .unwrap_or_else(|| panic!("no driver statistics: {capture}"));
    assert!(driver.contains_key("rx_queue_0_drops"), "{capture}");
    assert!(driver.contains_key("rx_queue_0_xdp_drops"), "{capture}");
    for (k, v) in driver {
        assert_eq!(v.as_u64(), Some(0), "interface.driver_drops.{k}: {capture}");
    }
    // The live status the API served, taken while the capture ran: the same device and XDP
    // variant, counters no further than the final report's.
    let live: Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("live status: "))
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_else(|| panic!("no live status:\n{stdout}"));
    assert_eq!(live["capture_attached"], true, "{live}");
    assert_eq!(
        live["interface"]["name"], capture["interface"]["name"],
        "{live}"
    );
    let rx = n(&live["interface"], "rx_packets");
    assert!(rx > 0 && rx <= i("rx_packets"), "{live}");
    assert_eq!(
        live["xdp"]["metadata"], capture["xdp"]["metadata"],
        "{live}"
    );
    let per_worker: u64 = capture["worker_frames"]
        .as_array()
        .expect("worker_frames")
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(per_worker, c("frames"), "{capture}");
    for k in [
        "handoff_dropped",
        "kernel_ring_full",
        "kernel_fill_ring_empty",
        "kernel_invalid_descs",
        "source_errors",
    ] {
        assert_eq!(c(k), 0, "{k}: {capture}");
    }
    stdout
}

/// Both workers received frames (the report's `worker_frames`).
fn both_workers_used(stdout: &str) {
    let capture: Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("capture: "))
        .and_then(|j| serde_json::from_str(j).ok())
        .expect("capture counters");
    let w = capture["worker_frames"].as_array().expect("worker_frames");
    assert_eq!(w.len(), 2, "{capture}");
    assert!(
        w.iter().all(|v| v.as_u64().unwrap() > 0),
        "both sockets got traffic: {capture}"
    );
}

/// XDP + AF_XDP on a two-queue SPAN port (veth queues by sending CPU, so the two directions
/// of a flow often arrive on different sockets): traffic spreads over both sockets, both
/// directions of every flow meet in one flow table (per-direction counts equal the
/// reference's), and nothing is lost.
#[test]
fn live_af_xdp_two_queues() {
    if !crate::util::privileged("live AF_XDP capture (live_af_xdp_two_queues)") {
        return;
    }
    let scratch = Scratch::new("xsk2-demo");
    let stdout = run_demo(&scratch.0, &["--queues", "2"]);
    both_workers_used(&stdout);
}

/// Live capture through AF_PACKET (the node mode), two fanout members on a two-queue SPAN
/// port: the same records as tcpdump + analyze, and both sockets used.
#[test]
fn live_af_packet_matches_tcpdump() {
    if !crate::util::privileged("live AF_PACKET capture (live_af_packet_matches_tcpdump)") {
        return;
    }
    let scratch = Scratch::new("afp-demo");
    let stdout = run_demo(&scratch.0, &["--source", "af_packet", "--queues", "2"]);
    both_workers_used(&stdout);
}

/// Live capture through AF_PACKET with the run-to-completion pipeline forced
/// (`flow.pipeline = "inline"`: the worker updates the flow table itself, no shard thread):
/// the same records as tcpdump + analyze, every counter adding up (`run_demo`), and the
/// report says inline ran.
#[test]
fn live_af_packet_inline_matches_tcpdump() {
    if !crate::util::privileged("live AF_PACKET capture (live_af_packet_inline_matches_tcpdump)") {
        return;
    }
    let scratch = Scratch::new("afp-inline-demo");
    let stdout = run_demo(
        &scratch.0,
        &["--source", "af_packet", "--pipeline", "inline"],
    );
    let capture: Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("capture: "))
        .and_then(|j| serde_json::from_str(j).ok())
        .expect("capture counters");
    assert_eq!(capture["pipeline"], "inline", "{capture}");
    assert_eq!(capture["shard_threads"], 0, "{capture}");
    assert!(n(&capture, "records") >= 10, "{capture}");
    // Forced inline on two fanout members: refused, naming the key.
    let out = Command::new(env!("CARGO_BIN_EXE_tapvault"))
        .args([
            "demo",
            "--seconds",
            "3",
            "--source",
            "af_packet",
            "--queues",
            "2",
        ])
        .args(["--pipeline", "inline"])
        .output()
        .expect("run tapvault demo");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "inline on two sources ran: {err}");
    assert!(
        err.contains(
            "flow.pipeline: \"inline\" needs exactly one source, but the capture opened 2"
        ),
        "{err}"
    );
}

#[test]
fn demo_capture_matches_tshark() {
    if !crate::util::privileged("the netns test (namespaces, veths, tcpdump)") {
        return;
    }
    let Some(shared) = shared_dir() else { return };
    let gt = shared.join("testdata/gt.py");
    assert!(gt.is_file(), "{} is missing", gt.display());
    let t0 = Instant::now();
    let scratch = Scratch::new("netns-test");
    let dir = scratch.0.clone();

    // 1. Real kernel TCP, captured live through XDP + AF_XDP on a SPAN port, and by tcpdump
    //    on a second mirror; the demo compares the two (exits non-zero on a difference).
    let stdout = run_demo(&dir, &[]);
    let pcap = dir.join("demo.pcap");
    assert!(
        pcap.is_file(),
        "no capture at {}:\n{stdout}",
        pcap.display()
    );
    let t_demo = t0.elapsed();

    // 2. tshark's view of it.
    let st = Command::new("python3")
        .arg(&gt)
        .arg("--outdir")
        .arg(&dir)
        .arg(&pcap)
        .status()
        .expect("run python3 gt.py (is python3 installed?)");
    assert!(
        st.success(),
        "gt.py failed on {} (is tshark installed?)",
        pcap.display()
    );
    let expected_path = dir.join("demo.pcap.expected.json");
    let expected: Value =
        serde_json::from_slice(&std::fs::read(&expected_path).expect("read the expected file"))
            .expect("expected JSON");
    let t_tshark = t0.elapsed() - t_demo;

    // 3. Ours, with tshark's (absent) timeouts, and the comparison.
    let records = analyze_json(&pcap, NO_TIMEOUTS);
    let diffs = compare("demo.pcap", &expected, &records);
    let streams = expected["streams"].as_array().map_or(0, Vec::len);
    eprintln!(
        "netns: demo {:.1} s, gt.py {:.1} s; {streams} streams, {} tcp records, {} differences",
        t_demo.as_secs_f64(),
        t_tshark.as_secs_f64(),
        records.iter().filter(|r| r["proto"] == "tcp").count(),
        diffs.len()
    );
    assert!(
        diffs.is_empty(),
        "tapvault differs from tshark on real Linux TCP ({}):\n{}\ndemo output:\n{stdout}",
        pcap.display(),
        diffs
            .iter()
            .map(|(c, s, f, e, a)| format!("  {c} stream {s} {f}: tshark {e}, tapvault {a}"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // 4. The scenarios did what they are for.
    let rr = by_port(&records, RR_PORT);
    assert_eq!(rr.len(), 6, "request/response connections");
    assert!(
        rr.iter().any(|r| n(r, "ip_version") == 6),
        "an IPv6 connection"
    );
    for r in &rr {
        assert_eq!(r["state"], "closed", "request/response closes cleanly: {r}");
        assert_eq!(n(r, "connection_completeness"), 31, "{r}");
    }
    let bulk = by_port(&records, BULK_PORT);
    assert_eq!(bulk.len(), 1);
    assert!(
        n(bulk[0], "retransmissions") > 0 && n(bulk[0], "dup_acks") > 0,
        "the bottleneck loses segments of the bulk download: {}",
        bulk[0]
    );
    let slow = by_port(&records, SLOW_PORT);
    assert_eq!(slow.len(), 1);
    assert!(
        n(slow[0], "zero_window_events") > 0 && n(slow[0], "window_updates") > 0,
        "the slow reader advertises zero windows, then opens: {}",
        slow[0]
    );
    let refused = by_port(&records, CLOSED_PORT);
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["state"], "refused", "{}", refused[0]);
    let s = expected["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .find(|s| s["server_port"].as_u64() == Some(CLOSED_PORT))
        .expect("tshark sees the refused connect");
    // SYN, then RST+ACK: tshark's completeness counts the RST's ACK bit too (1 + 4 + 32).
    assert_eq!(s["completeness"], 37, "{s}");
    let ka = by_port(&records, KEEPALIVE_PORT);
    assert_eq!(ka.len(), 1);
    assert!(
        n(ka[0], "keepalive_count") >= 2 && n(ka[0], "keepalive_ack_count") >= 1,
        "1 s keep-alives on the idle connection: {}",
        ka[0]
    );
    eprintln!("netns: total {:.1} s", t0.elapsed().as_secs_f64());
    drop(scratch);
}

/// A GET over loopback (`base` is `http://ADDR:PORT`): status code and body.
fn http_get(base: &str, path: &str) -> (u16, Vec<u8>) {
    let addr = base
        .trim_start_matches("http://")
        .parse()
        .unwrap_or_else(|e| panic!("the API address `{base}`: {e}"));
    let r = tapvault_api::client::get(addr, path, None, std::time::Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    (r.status, r.body)
}

/// The README's demo command (`bash scripts/demo.sh`, with the binary the tests built) from a
/// clean state: it prints the flows, the hints and the API's address, and while it serves,
/// the API answers: flows with the bulk download's retransmissions, insights, metrics, and
/// the bulk flow's packets as a pcap that tshark reads.
#[test]
fn readme_demo_prints_and_serves() {
    use std::io::BufRead;
    if !crate::util::privileged("the README demo (readme_demo_prints_and_serves)") {
        return;
    }
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    assert!(
        readme.contains("bash scripts/demo.sh"),
        "README's demo command"
    );
    let scratch = Scratch::new("readme-demo");
    let mut child = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo.sh"))
        .args(["--seconds", "3", "--out"])
        .arg(&scratch.0)
        .env("TAPVAULT_DEMO_BIN", env!("CARGO_BIN_EXE_tapvault"))
        .env("TAPVAULT_DEMO_SERVE", "60")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run scripts/demo.sh");
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let mut printed = Vec::new();
    let mut base = None;
    let t0 = Instant::now();
    for l in lines.by_ref() {
        let l = l.expect("a line");
        printed.push(l.clone());
        if let Some(rest) = l.strip_prefix("API: ") {
            base = rest.split("/api/v1/").next().map(str::to_owned);
        }
        if base.is_some() && l.contains("/metrics") {
            break;
        }
        assert!(t0.elapsed().as_secs() < 120, "demo too slow");
    }
    let text = printed.join("\n");
    let base = base.unwrap_or_else(|| panic!("no API line:\n{text}"));
    for needle in [
        "what to look at:",
        "bulk download through the",
        "slow reader",
        "connect to a closed port",
        "capture: {",
    ] {
        assert!(text.contains(needle), "`{needle}` missing:\n{text}");
    }
    let (code, body) = http_get(&base, "/healthz");
    assert_eq!(code, 200);
    drop(body);
    let (code, body) = http_get(
        &base,
        "/api/v1/flows?from=1h&where=retransmissions%3E0&limit=50",
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).expect("flows JSON");
    let flows = v["flows"].as_array().expect("flows array");
    let bulk = flows
        .iter()
        .find(|f| f["server_port"].as_u64() == Some(BULK_PORT))
        .unwrap_or_else(|| panic!("the bulk download has retransmissions: {v}"));
    let (code, body) = http_get(&base, "/api/v1/insights?from=1h");
    assert_eq!(code, 200);
    let ins: Value = serde_json::from_slice(&body).expect("insights JSON");
    assert!(ins["flows"].as_u64().unwrap() >= 10, "{ins}");
    let (code, body) = http_get(&base, "/metrics");
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&body).contains("# TYPE"));
    let id = bulk["flow_id"].as_str().unwrap();
    let (code, pcap) = http_get(&base, &format!("/api/v1/pcap?flow_id={id}"));
    assert_eq!(code, 200);
    let file = scratch.0.join("bulk.pcap");
    std::fs::write(&file, &pcap).unwrap();
    let out = Command::new("tshark")
        .args(["-r"])
        .arg(&file)
        .args(["-T", "fields", "-e", "frame.number"])
        .output()
        .expect("run tshark");
    assert!(out.status.success(), "tshark cannot read the flow's pcap");
    let frames = String::from_utf8_lossy(&out.stdout).lines().count() as u64;
    assert_eq!(
        frames,
        bulk["packets_c2s"].as_u64().unwrap() + bulk["packets_s2c"].as_u64().unwrap(),
        "the flow's pcap holds exactly its packets"
    );
    // Ctrl-C ends the serving; the demo then exits cleanly.
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    for _ in lines {}
    let st = child.wait().expect("demo exit");
    assert!(st.success(), "demo exit status {st}");
}

/// A capture in another namespace whose interface is not there says so, naming the
/// namespace, before it opens anything.
#[test]
fn capture_names_a_missing_interface_in_its_namespace() {
    if !crate::util::privileged("capture_names_a_missing_interface_in_its_namespace") {
        return;
    }
    let ns = IpGuard::netns(format!("tvmiss{}", std::process::id()));
    let ok = Command::new("ip")
        .args(["netns", "add", &ns.name])
        .status()
        .expect("ip netns add");
    assert!(ok.success());
    for source in ["af_packet", "af_xdp"] {
        let out = Command::new(env!("CARGO_BIN_EXE_tapvault"))
            .args([
                "capture",
                "--no-api",
                "--netns",
                &ns.name,
                "--duration",
                "1",
            ])
            .args(["--set", "capture.interface=nope0"])
            .args(["--set", &format!("capture.source={source}")])
            .output()
            .expect("run tapvault capture");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{source}: {err}");
        assert!(
            err.contains(&format!(
                "capture.interface: no interface named \"nope0\" in namespace `{}`",
                ns.name
            )),
            "{source}: {err}"
        );
    }
}
