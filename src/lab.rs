//! `tapvault demo`: real Linux TCP in a lab of network namespaces, captured with tcpdump and
//! run through the same analysis as `tapvault analyze`.
//!
//! The lab ([`netns::Lab`]) is client — router — server, with a 20 Mbit/s TBF bottleneck
//! with a short queue on the router toward the client. The scenarios ([`traffic`]) are
//! short request/response connections over IPv4 and IPv6, a bulk download that overflows the
//! bottleneck (loss, duplicate ACKs, SACK, fast retransmissions), a slow reader with a tiny
//! receive buffer (zero windows, probes, window updates), a connection to a closed port
//! (refused) and an idle connection kept alive by 1 s keep-alives. The capture point is the
//! client's veth: what a tap in front of a client would see.
//!
//! Live XDP capture replaces tcpdump later; the lab and the scenarios stay.

/// `tapvault blast`: the TCP traffic generator of the live benchmark.
pub(crate) mod blast;
/// Live records against `tapvault analyze` of a reference capture.
mod compare;
mod netns;
/// `tapvault rxbench`: the bare receive-and-drop loop of the live benchmark.
pub(crate) mod rxbench;
mod traffic;

use std::{
    io::{self, BufWriter, Write},
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use tapvault_config::FlowConfig;
use tapvault_dataplane::{
    engine::{self, AnalyzeOptions},
    flow::table::Sink,
};
use tapvault_storage::{FlowRecord, FlowState};
pub(crate) use traffic::{TrafficArgs, run as traffic};

use self::{
    netns::Lab,
    traffic::{BULK_PORT, CLOSED_PORT, KEEPALIVE_PORT, RR_PORT, SLOW_PORT},
};

/// Arguments of `tapvault demo`.
#[derive(clap::Args)]
pub(crate) struct DemoArgs {
    /// Directory for the store (`data/`), the reference capture (`demo.pcap`) and the
    /// comparison (`compare.json`), created if missing and always kept. Default: a fresh
    /// temporary directory, removed at exit unless --keep is given.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// How long the slow reader and the idle keep-alive connection last, seconds; the whole
    /// demo takes a few seconds more.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(3..=60))]
    seconds: u64,
    /// Keep the temporary directory after the demo.
    #[arg(long)]
    keep: bool,
    /// How tapvault captures the SPAN port: `af_xdp` (XDP program + AF_XDP sockets, the
    /// appliance) or `af_packet` (TPACKET_V3, the node mode).
    #[arg(long, default_value = "af_xdp", value_parser = ["af_xdp", "af_packet"])]
    source: String,
    /// RX queues of the SPAN port (one AF_XDP socket or fanout member per queue).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=8))]
    queues: u64,
    /// After the traffic, serve the HTTP API over the store for this many seconds (or until
    /// Ctrl-C), and print example requests.
    #[arg(long, default_value_t = 0, value_name = "SECS")]
    serve: u64,
    /// Loopback port of the API (0: any free port).
    #[arg(long, default_value_t = 0)]
    api_port: u16,
    /// How tapvault runs its flow table (`flow.pipeline`): `auto`, `inline` (the worker
    /// updates the flow table itself; one queue only) or `threaded` (shard threads).
    #[arg(long, default_value = "auto", value_parser = ["auto", "inline", "threaded"])]
    pipeline: String,
    /// Also compare tapvault's live records with `tapvault analyze` on tcpdump's capture of
    /// the same traffic (a second mirror port), and write the differences to
    /// `compare.json`; exits with an error when they differ.
    #[arg(long)]
    compare: bool,
}

/// Removes the temporary output directory on every path, unless it is to be kept.
struct OutDir {
    path: PathBuf,
    remove: bool,
}

impl Drop for OutDir {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn ensure_root() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").context("cannot read /proc")?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .context("no Uid line in /proc/self/status")?;
    if euid != "0" {
        bail!(
            "`tapvault demo` must run as root: it creates network namespaces, veths and a \
             qdisc, and runs tcpdump (try `sudo tapvault demo`)"
        );
    }
    Ok(())
}

fn ensure_tools() -> Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let missing: Vec<&str> = [
        "ip", "tc", "ethtool", "tcpdump", "timeout", "kill", "sysctl", "taskset",
    ]
    .into_iter()
    .filter(|t| !std::env::split_paths(&path).any(|d| d.join(t).is_file()))
    .collect();
    if !missing.is_empty() {
        bail!(
            "`tapvault demo` needs {} in PATH (Debian: apt-get install iproute2 ethtool tcpdump \
             procps coreutils)",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Runs `tapvault demo`.
pub(crate) fn demo(a: DemoArgs) -> Result<()> {
    ensure_root()?;
    ensure_tools()?;
    let stop = crate::capture::stop_flag();
    let t0 = Instant::now();
    let pid = std::process::id();
    let (dir, temp) = match &a.out {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("tapvault-demo-{pid}")),
            true,
        ),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let dir = dir.canonicalize()?;
    let out_dir = OutDir {
        path: dir.clone(),
        remove: temp && !a.keep,
    };
    let pcap = dir.join("demo.pcap");
    let data = dir.join("data");
    let exe = std::env::current_exe().context("cannot find the tapvault binary")?;
    let exe = exe.to_str().context("the binary's path is not UTF-8")?;

    let mut lab = Lab::new(pid);
    lab.setup()?;
    // Two mirror ports: tapvault on the first, tcpdump (the reference) on the second.
    lab.setup_span(2, a.queues as usize)?;
    eprintln!(
        "lab: namespaces {} — {} — {} (client — router — server); the client's port {} is \
         mirrored to {} in namespace {} (tapvault, {}) and to {} (tcpdump)",
        lab.ns_client,
        lab.ns_router,
        lab.ns_server,
        lab.veth_client,
        lab.span_ports[0],
        lab.ns_tap,
        a.source,
        lab.span_ports[1]
    );
    let (ns_client, ns_server, ns_tap) = (
        lab.ns_client.clone(),
        lab.ns_server.clone(),
        lab.ns_tap.clone(),
    );

    // The reference capture: `timeout` bounds tcpdump's life even if this process is killed
    // with SIGKILL, and passes our SIGINT on to it. -Z root: write the file as root.
    let limit = (a.seconds + 60).to_string();
    let pcap_s = pcap.to_str().context("the output path is not UTF-8")?;
    let span_ref = lab.span_ports[1].clone();
    let cap = lab.spawn(
        "tcpdump",
        &ns_tap,
        "timeout",
        &[
            "-s",
            "INT",
            &limit,
            "tcpdump",
            "-i",
            &span_ref,
            "-w",
            pcap_s,
            "-s",
            "0",
            "-U",
            // Hand every packet over at once: otherwise the last block of packets (up to
            // a second) is still in the kernel ring when tcpdump is stopped, and is lost.
            "--immediate-mode",
            "-Z",
            "root",
            "--time-stamp-precision",
            "nano",
        ],
        true,
    )?;
    cap.stderr
        .wait_for("listening on", Duration::from_secs(10), &stop)
        .context("tcpdump did not start")?;

    // tapvault itself, in this process: sockets opened inside the tap namespace, storage
    // and the API here.
    let mut config = tapvault_config::Config::default();
    config.capture.source = match a.source.as_str() {
        "af_packet" => tapvault_config::SourceKind::AfPacket,
        _ => tapvault_config::SourceKind::AfXdp,
    };
    config.capture.interface = lab.span_ports[0].clone();
    config.capture.workers = a.queues as u32;
    config.capture.queues = tapvault_config::Queues::List((0..a.queues as u32).collect());
    config.flow.pipeline = match a.pipeline.as_str() {
        "inline" => tapvault_config::PipelineMode::Inline,
        "threaded" => tapvault_config::PipelineMode::Threaded,
        _ => tapvault_config::PipelineMode::Auto,
    };
    config.storage.data_dir = data.clone();
    std::fs::create_dir_all(&data)?;
    let settings = crate::capture::Settings {
        config,
        netns: Some(ns_tap.clone()),
        duration: None,
        status_every: Duration::ZERO,
        serve_api: true,
    };
    let tee: crate::capture::Tee = Default::default();
    let capture = crate::capture::Capture::start(&settings, Some(tee.clone()))?;
    eprintln!("{}", capture.started_line());
    // The API on an ephemeral loopback port, live while capturing, then over the store.
    let api_opts = crate::capture::api_options(&settings.config)?
        .listen(std::net::SocketAddr::from(([127, 0, 0, 1], a.api_port)));
    let live_api =
        tapvault_api::ApiServer::start(api_opts.clone(), capture.status_source(Some(data.clone())))
            .context("cannot start the API")?;
    let api_addr = live_api.local_addr();
    eprintln!("tapvault: API (live status) on http://{api_addr}/api/v1/status");

    // With one capture queue, the traffic runs on one CPU: veth hands frames across CPUs
    // through per-CPU backlogs, so frames sent from two CPUs can reach a mirror port out of
    // order, and the two mirrors (tapvault's and tcpdump's) would not see the same order.
    // With several queues it runs unpinned, so that it spreads over them (veth picks the
    // queue by sending CPU).
    let pin: Vec<&str> = if a.queues == 1 {
        vec!["-c", "0", exe]
    } else {
        vec!["-c", "0-1023", exe]
    };
    let srv = lab.spawn(
        "traffic server",
        &ns_server,
        "taskset",
        &[
            &pin[..],
            &[
                "traffic",
                "server",
                "--listen",
                netns::SERVER4,
                "--listen",
                netns::SERVER6,
                "--deadline",
                &limit,
            ],
        ]
        .concat(),
        false,
    )?;
    srv.stdout
        .wait_for("ready", Duration::from_secs(10), &stop)
        .with_context(|| format!("traffic server: {}", srv.stderr.all().join(" / ")))?;

    eprintln!("traffic: running the scenarios (about {} s)", a.seconds + 3);
    let t_traffic = Instant::now();
    let seconds = a.seconds.to_string();
    let cli = lab.spawn(
        "traffic client",
        &ns_client,
        "taskset",
        &[
            &pin[..],
            &[
                "traffic",
                "client",
                "--server4",
                netns::SERVER4,
                "--server6",
                netns::SERVER6,
                "--seconds",
                &seconds,
            ],
        ]
        .concat(),
        false,
    )?;
    let ok = lab.wait(cli.idx, Duration::from_secs(a.seconds + 30), &stop)?;
    if !ok {
        // A Ctrl-C reaches the client (same process group) as fast as our handler.
        std::thread::sleep(Duration::from_millis(100));
        if stop.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        bail!("traffic client failed: {}", cli.stderr.all().join(" / "));
    }
    let traffic_secs = t_traffic.elapsed().as_secs_f64();
    // Let the last ACKs of the closes reach both captures before stopping them.
    std::thread::sleep(Duration::from_millis(300));
    lab.stop(cap.idx);
    // The live status as the API serves it, taken while the capture still runs.
    let live_status = serde_json::to_value(capture.status_source(None).snapshot())?;
    let (report, xdp, storage, iface) = capture.stop()?;
    live_api.shutdown().context("API")?;
    drop(srv.stdin);
    let _ = lab.wait(srv.idx, Duration::from_secs(2), &stop);
    let left = lab.teardown();
    if !left.is_empty() {
        bail!("cleanup failed: {}", left.join("; "));
    }
    let tcpdump_stats: Vec<String> = cap
        .stderr
        .all()
        .into_iter()
        .filter(|l| l.contains("packets"))
        .collect();

    let mut live = std::mem::take(&mut *tee.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    let mut out = BufWriter::new(io::stdout().lock());
    crate::print_table(&mut out, &mut live)?;
    writeln!(out)?;
    writeln!(
        out,
        "capture: {}",
        crate::capture::report_json(&report, xdp.as_ref(), storage.as_ref(), iface.as_ref())
    )?;
    if a.compare {
        writeln!(out, "live status: {live_status}")?;
    }
    writeln!(out)?;
    let scenarios: Vec<serde_json::Value> = cli
        .stdout
        .all()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    hints(&mut out, &live, &scenarios)?;
    writeln!(out)?;
    let mut differences = 0;
    if a.compare {
        let opts = AnalyzeOptions {
            flow: FlowConfig::default(),
            threaded: false,
            frames: false,
        };
        let mut sink = Records(Vec::new());
        engine::analyze_file(&pcap, &opts, &mut sink, &mut |_, _| {})
            .with_context(|| format!("analysis of `{}` failed", pcap.display()))?;
        // One queue: every field. Several: veth stamps each queue's frames when its NAPI
        // poll runs, so the order of a flow's two directions across queues is not the
        // wire's at the microsecond level; only order-free fields are comparable.
        let order_free = a.queues > 1;
        // The live store's packets, as one capture, to measure how the two captures'
        // stamps of the same frames differ: that bounds how far time fields may differ.
        let (live_pcap, _) = tapvault_storage::pcap::read_packets(&data, i64::MIN, i64::MAX, None)
            .context("reading the live store's packets")?;
        let live_pcap_path = dir.join("live.pcap");
        std::fs::write(&live_pcap_path, live_pcap)
            .with_context(|| format!("cannot write `{}`", live_pcap_path.display()))?;
        let skew = compare::StampSkew::measure(&live_pcap_path, &pcap)?;
        let cmp = compare::compare(&live, &sink.0, order_free, skew.tolerance_us());
        differences = cmp.differences.len();
        std::fs::write(
            dir.join("compare.json"),
            serde_json::to_string_pretty(&cmp.to_json())?,
        )?;
        writeln!(
            out,
            "compare: live {} flows, tcpdump + analyze {} flows, {} matched, {} differences \
             ({} fields, times within {:.0} us; {} multicast flow(s) not compared)",
            live.len(),
            sink.0.len(),
            cmp.matched,
            differences,
            if order_free {
                "order-free (and _ns)"
            } else {
                "all"
            },
            cmp.tolerance_us,
            cmp.ignored
        )?;
        writeln!(
            out,
            "  stamps: {} frame(s) in both captures ({} live only, {} reference only), \
             live - tcpdump {:.0}..{:.0} us",
            skew.paired, skew.unpaired.0, skew.unpaired.1, skew.min_us, skew.max_us
        )?;
        for d in cmp.differences.iter().take(20) {
            writeln!(out, "  {d}")?;
        }
        for d in cmp.reclassified.iter().take(20) {
            writeln!(
                out,
                "  {d} (accepted: retransmissions + out_of_order equal; the split depends on \
                 stamp timing)"
            )?;
        }
    }
    writeln!(
        out,
        "traffic {traffic_secs:.1} s, demo {:.1} s; reference tcpdump: {}",
        t0.elapsed().as_secs_f64(),
        tcpdump_stats.join(", ")
    )?;
    if out_dir.remove {
        writeln!(
            out,
            "store and capture: {} (removed at exit: pass --keep or --out DIR to keep them)",
            dir.display()
        )?;
    } else {
        writeln!(out, "store: {}", data.display())?;
        writeln!(out, "reference capture: {}", pcap.display())?;
        writeln!(
            out,
            "  open it in Wireshark, or: tapvault analyze {} --json",
            pcap.display()
        )?;
    }
    if a.serve > 0 {
        let api = tapvault_api::ApiServer::start(
            api_opts.listen(api_addr),
            Arc::new(tapvault_api::NoCapture::new()),
        )
        .context("cannot serve the API over the store")?;
        let base = format!("http://{}", api.local_addr());
        let bulk = live
            .iter()
            .filter(|r| r.server_port == BULK_PORT)
            .max_by_key(|r| r.payload_bytes_s2c);
        writeln!(out)?;
        writeln!(
            out,
            "API: {base}/api/v1/ (for {} s, or until Ctrl-C)",
            a.serve
        )?;
        writeln!(out, "  curl -s '{base}/api/v1/insights?from=10m'")?;
        writeln!(
            out,
            "  curl -s '{base}/api/v1/flows?from=10m&where=retransmissions%3E0&sort=retransmission_rate&order=desc'"
        )?;
        if let Some(r) = bulk {
            writeln!(
                out,
                "  curl -s -o bulk.pcap '{base}/api/v1/pcap?flow_id={}'   # then: wireshark bulk.pcap",
                r.flow_id
            )?;
        }
        writeln!(out, "  curl -s '{base}/metrics'")?;
        out.flush()?;
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(a.serve) && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
        api.shutdown().context("API")?;
    }
    out.flush()?;
    if differences > 0 {
        bail!("live capture and tcpdump + analyze differ on {differences} field(s)");
    }
    Ok(())
}

/// Collects the flow records.
struct Records(Vec<FlowRecord>);

impl Sink for Records {
    fn record(&mut self, rec: FlowRecord) {
        self.0.push(rec);
    }
}

fn endpoint(r: &FlowRecord) -> String {
    let fmt = |ip: &str, port: u16| {
        if ip.contains(':') {
            format!("[{ip}]:{port}")
        } else {
            format!("{ip}:{port}")
        }
    };
    format!(
        "{} -> {}",
        fmt(&r.client_ip, r.client_port),
        fmt(&r.server_ip, r.server_port)
    )
}

/// "What to look at": each scenario's flow and the expert events it is there to show.
fn hints(
    out: &mut dyn Write,
    recs: &[FlowRecord],
    scenarios: &[serde_json::Value],
) -> io::Result<()> {
    writeln!(out, "what to look at:")?;
    let tcp = |port: u16| {
        recs.iter()
            .filter(move |r| r.proto == "tcp" && r.server_port == port)
    };
    if let Some(r) = tcp(BULK_PORT).max_by_key(|r| r.payload_bytes_s2c) {
        let secs = scenarios
            .iter()
            .find(|s| s["scenario"] == "bulk")
            .and_then(|s| s["ms"].as_u64())
            .map_or_else(String::new, |ms| format!(" in {:.1} s", ms as f64 / 1e3));
        writeln!(
            out,
            "  bulk download through the {} bottleneck ({} MiB{secs}), {}:",
            netns::TBF[1],
            traffic::BULK_BYTES >> 20,
            endpoint(r)
        )?;
        writeln!(
            out,
            "    retransmissions {} (fast {}, spurious {}), previous segment not captured {}, \
             dup ACKs {}, out of order {}  [flow {}]",
            r.retransmissions,
            r.fast_retransmissions,
            r.spurious_retransmissions,
            r.missing_segments,
            r.dup_acks,
            r.out_of_order,
            r.flow_id
        )?;
    }
    if let Some(r) = tcp(SLOW_PORT).next() {
        writeln!(
            out,
            "  slow reader (SO_RCVBUF {} B, paced reads), {}:",
            traffic::SLOW_RCVBUF,
            endpoint(r)
        )?;
        writeln!(
            out,
            "    zero windows {}, zero-window probes {} (+ acks {}), window updates {}, window \
             full {}, keep-alives {}  [flow {}]",
            r.zero_window_events,
            r.zero_window_probes,
            r.zero_window_probe_acks,
            r.window_updates,
            r.window_full_events,
            r.keepalive_count,
            r.flow_id
        )?;
        if r.keepalive_count > 0 && r.zero_window_probes == 0 {
            writeln!(
                out,
                "    (Linux probes a zero window with an empty segment one byte below the next \
                 sequence number: Wireshark calls it a keep-alive, not a zero-window probe)"
            )?;
        }
    }
    for r in tcp(CLOSED_PORT) {
        writeln!(
            out,
            "  connect to a closed port, {}: state {}, completeness {}, SYN {} RST {}  [flow {}]",
            endpoint(r),
            state(r.state),
            r.connection_completeness,
            r.syn_count,
            r.rst_count,
            r.flow_id
        )?;
    }
    if let Some(r) = tcp(KEEPALIVE_PORT).next() {
        writeln!(
            out,
            "  idle connection with 1 s keep-alives, {}: keep-alives {}, keep-alive ACKs {}  \
             [flow {}]",
            endpoint(r),
            r.keepalive_count,
            r.keepalive_ack_count,
            r.flow_id
        )?;
    }
    let rr: Vec<&FlowRecord> = tcp(RR_PORT).collect();
    if !rr.is_empty() {
        let v6 = rr.iter().filter(|r| r.ip_version == 6).count();
        let irtt: Vec<f64> = rr.iter().filter_map(|r| r.handshake_time_us).collect();
        let closed = rr.iter().filter(|r| r.state == FlowState::Closed).count();
        writeln!(
            out,
            "  {} request/response connections ({} IPv6), {} closed with FIN both ways, \
             handshake RTT {}",
            rr.len(),
            v6,
            closed,
            if irtt.is_empty() {
                "-".to_string()
            } else {
                format!(
                    "{:.0}..{:.0} us",
                    irtt.iter().copied().fold(f64::INFINITY, f64::min),
                    irtt.iter().copied().fold(0.0, f64::max)
                )
            }
        )?;
    }
    Ok(())
}

fn state(s: FlowState) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}
