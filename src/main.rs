//! `tapvault`: the command-line entry point (offline analysis now; capture, API and demo as
//! they land).

use std::{
    io::{self, BufWriter, IsTerminal, Write},
    os::fd::AsFd,
    path::PathBuf,
    process::ExitCode,
};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tapvault_config::FlowConfig;
use tapvault_dataplane::{
    decode::{LinkType, Malformed},
    engine::{self, AnalyzeOptions, Health},
    flow::{table::Sink, tcp::flags as af},
};
use tapvault_storage::{DnsRecord, FlowRecord};

/// `tapvault capture`: the live pipeline with storage.
mod capture;

/// `tapvault check`: the configuration and what the host supports.
mod check;
/// `tapvault demo` and its hidden `traffic` helper: real TCP in network namespaces.
mod lab;
/// Logging setup (tracing, text or JSON).
mod logging;
/// systemd readiness and watchdog notifications.
mod notify;
/// `tapvault serve`: the HTTP API over stored history.
mod serve;
/// `--config`, `--set` and the common configuration flags.
mod settings;
/// `tapvault storage-soak` (hidden): the crash test's writing process.
mod soak;
/// `tapvault status`: a running tapvault's health, from its API.
mod status;

/// mimalloc: per-thread heaps suit the pipeline, where records are built on shard threads and
/// freed on the output thread (glibc's allocator spent a tenth of the CPU on that hand-off).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tapvault",
    version,
    about = "Packet capture with Wireshark-grade TCP expert metrics"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a capture file (pcap or pcapng, plain, .gz or .zst) through the flow engine and
    /// print one record per connection and a health summary.
    Analyze(AnalyzeArgs),
    /// Capture live (or replay a capture file through the live pipeline), analyse every
    /// connection and store packets and flow records.
    Capture(CaptureArgs),
    /// Demonstration (root): real Linux TCP between network namespaces through a lossy
    /// bottleneck (bulk, slow reader, refused, keep-alive, request/response), captured with
    /// tcpdump and analyzed; prints the flows and what to look at.
    Demo(lab::DemoArgs),
    /// Validate the configuration and report what this host supports for it (kernel, BPF,
    /// AF_XDP/AF_PACKET, XDP modes, queues, RSS, memlock, disk space). Exits 1 when the
    /// configuration is invalid or the configured source cannot work here.
    Check(check::CheckArgs),
    /// Serve the HTTP API (flows, pcap, insights, status) over a storage directory, without
    /// capturing.
    Serve(serve::ServeArgs),
    /// Show a running tapvault's health (queues, drops, shards, storage) from its API.
    Status(status::StatusArgs),
    /// One end of the demo's traffic, run inside a namespace by `tapvault demo`.
    #[command(hide = true)]
    Traffic(lab::TrafficArgs),
    /// Benchmark traffic generator: realistic TCP flows at high packet rates (root).
    #[command(hide = true)]
    Blast(lab::blast::BlastArgs),
    /// Benchmark ceiling: receive and count frames from live sources, then print counters.
    #[command(hide = true)]
    Rxbench(lab::rxbench::RxBenchArgs),
    /// Writes deterministic packets and flow records through the storage services and logs
    /// what they acknowledged (the SIGKILL crash test's writer).
    #[command(hide = true)]
    StorageSoak(soak::SoakArgs),
}

#[derive(clap::Args)]
struct CaptureArgs {
    #[command(flatten)]
    config: settings::ConfigArgs,
    /// Replay this capture file through the live pipeline (sets `capture.source = "file"`
    /// and `capture.file_path`).
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// Open the capture sockets inside this network namespace (a name under /run/netns);
    /// storage and the API stay in the current one.
    #[arg(long, value_name = "NS")]
    netns: Option<String>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Print a status line every SECS seconds (0: never).
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    status_every: f64,
    /// Write the final counters as JSON to this file.
    #[arg(long, value_name = "PATH")]
    report_json: Option<PathBuf>,
    /// Do not serve the HTTP API.
    #[arg(long)]
    no_api: bool,
}

fn secs(name: &str, v: f64) -> Result<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(v)
        .map_err(|_| anyhow::anyhow!("--{name} must be a non-negative number of seconds, not {v}"))
}

fn capture_cmd(mut a: CaptureArgs) -> Result<()> {
    if let Some(f) = &a.file {
        a.config.set.insert(0, "capture.source=file".into());
        a.config
            .set
            .insert(1, format!("capture.file_path={}", f.display()));
    }
    let cfg = a.config.load()?;
    logging::init(cfg.log.format, &cfg.log.level)?;
    let settings = capture::Settings {
        duration: a.duration.map(|d| secs("duration", d)).transpose()?,
        status_every: secs("status-every", a.status_every)?,
        serve_api: !a.no_api,
        netns: a.netns.clone(),
        config: cfg,
    };
    let (r, xdp, storage, iface) = capture::run(&settings)?;
    let summary = capture::report_json(&r, xdp.as_ref(), storage.as_ref(), iface.as_ref());
    eprintln!("tapvault: capture ended: {summary}");
    if let Some(p) = &a.report_json {
        std::fs::write(p, format!("{summary}\n"))
            .with_context(|| format!("cannot write `{}`", p.display()))?;
    }
    Ok(())
}

#[derive(clap::Args)]
struct AnalyzeArgs {
    /// The capture file.
    file: PathBuf,
    /// Write JSON lines (one flat record per flow, the metric-set field names) to stdout
    /// instead of a table; the summary goes to stderr.
    #[arg(long)]
    json: bool,
    /// Write the capture health summary as JSON to this file.
    #[arg(long, value_name = "PATH")]
    summary_json: Option<PathBuf>,
    /// Also store every flow record as Parquet under DIR/flows/date=YYYY-MM-DD/hour=HH/ and
    /// every frame in zstd pcap segments under DIR/pcap/... (the storage layout the API
    /// reads).
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,
    /// With --store, store only the flow records, not the packets.
    #[arg(long, requires = "store")]
    no_pcap: bool,
    /// Write DNS transactions as JSON lines to this file.
    #[arg(long, value_name = "PATH")]
    dns_json: Option<PathBuf>,
    /// Flow shards (threads owning a flow table); 0 = one per core minus the reader.
    #[arg(long, default_value_t = FlowConfig::default().shards)]
    shards: usize,
    /// Maximum flows held at once (evicting half-open ones first when full).
    #[arg(long, default_value_t = FlowConfig::default().max_flows)]
    max_flows: usize,
    /// Idle timeout of established flows, seconds (0 = never).
    #[arg(long, default_value_t = FlowConfig::default().idle_timeout_secs)]
    idle_timeout: f64,
    /// Stale timeout of half-open TCP flows, seconds (0 = never).
    #[arg(long, default_value_t = FlowConfig::default().stale_timeout_secs)]
    stale_timeout: f64,
    /// Seconds a closed (FIN/RST) flow lingers for late packets.
    #[arg(long, default_value_t = FlowConfig::default().close_linger_secs)]
    close_linger: f64,
    /// Emit interim records of open flows every this many seconds (0 = off).
    #[arg(long, default_value_t = FlowConfig::default().interim_interval_secs)]
    interim: f64,
    /// Width of the handshake-RTT percentile windows, seconds.
    #[arg(long, default_value_t = FlowConfig::default().rtt_window_secs)]
    rtt_window: f64,
    /// Print every TCP frame's analysis flags (frame number, flow id, flags) to stderr.
    #[arg(long, hide = true)]
    frames: bool,
    /// Run the flow shards on their own threads even when there is only one (the reader and
    /// decoder then run beside it, on another core).
    #[arg(long)]
    threaded: bool,
    /// Never show a progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Print no flow records, only the health summary (for very large captures and tests).
    #[arg(long, conflicts_with = "json")]
    no_records: bool,
}

/// `analyze --store`: every frame into pcap segments, one writer per link type (a segment
/// has one), indexed by flow hash.
struct StoreSpill {
    root: PathBuf,
    writers: Vec<(u32, tapvault_storage::SegmentWriter)>,
    segments: usize,
    err: Option<tapvault_storage::PcapError>,
}

impl StoreSpill {
    fn new(root: &std::path::Path) -> StoreSpill {
        StoreSpill {
            root: root.to_path_buf(),
            writers: Vec::new(),
            segments: 0,
            err: None,
        }
    }

    fn writer(
        &mut self,
        linktype: u32,
    ) -> Result<&mut tapvault_storage::SegmentWriter, tapvault_storage::PcapError> {
        let i = match self.writers.iter().position(|(l, _)| *l == linktype) {
            Some(i) => i,
            None => {
                let w = tapvault_storage::SegmentWriter::new(
                    &self.root,
                    &format!("analyze_lt{linktype}"),
                    tapvault_storage::SegmentOptions::default()
                        .link_type(linktype)
                        .snap_len(tapvault_storage::pcap::MAX_SNAP_LEN),
                )?;
                self.writers.push((linktype, w));
                self.writers.len() - 1
            }
        };
        Ok(&mut self.writers[i].1)
    }

    /// Publishes the open segments; the number of segments written in all.
    fn finish(mut self) -> Result<usize, tapvault_storage::PcapError> {
        if let Some(e) = self.err.take() {
            return Err(e);
        }
        for (_, w) in std::mem::take(&mut self.writers) {
            self.segments += usize::from(w.close()?.is_some());
        }
        Ok(self.segments)
    }
}

impl engine::PacketSpill for StoreSpill {
    fn packet(&mut self, linktype: LinkType, ts_ns: i64, orig_len: u32, data: &[u8], flow: u64) {
        if self.err.is_some() {
            return;
        }
        let r = self
            .writer(linktype.0)
            .and_then(|w| w.write(ts_ns, orig_len, data, flow));
        match r {
            Ok(published) => self.segments += usize::from(published.is_some()),
            Err(e) => self.err = Some(e),
        }
    }
}

/// Bytes of JSON lines gathered before one write to stdout.
const JSON_BLOCK: usize = 256 << 10;

/// JSON lines for stdout, formatted straight into one block buffer that goes to the file
/// descriptor in single large writes. (Through `io::stdout()`, every line was formatted into
/// a scratch buffer, copied into a `BufWriter`, and split again at the last newline by
/// stdout's line buffering: two extra copies of ~400 MB on a large capture.)
struct JsonLines {
    out: std::fs::File,
    buf: Vec<u8>,
}

impl JsonLines {
    fn stdout() -> io::Result<JsonLines> {
        // Flush whatever std buffered for fd 1 first, so order is kept.
        io::stdout().flush()?;
        let fd = io::stdout().as_fd().try_clone_to_owned()?;
        Ok(JsonLines {
            out: std::fs::File::from(fd),
            buf: Vec::with_capacity(JSON_BLOCK + (16 << 10)),
        })
    }

    fn record(&mut self, rec: &FlowRecord) -> io::Result<()> {
        rec.write_json_line(&mut self.buf);
        if self.buf.len() >= JSON_BLOCK {
            self.flush()
        } else {
            Ok(())
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let r = self.out.write_all(&self.buf);
        self.buf.clear();
        r
    }
}

struct CliSink {
    json: Option<JsonLines>,
    keep_table: bool,
    parquet: Option<tapvault_storage::FlowParquetWriter>,
    store_err: Option<tapvault_storage::Error>,
    table: Vec<TableRow>,
    dns: Option<BufWriter<std::fs::File>>,
    frames: bool,
    err: Option<io::Error>,
}

impl CliSink {
    fn keep(&mut self, r: io::Result<()>) {
        if let Err(e) = r {
            self.err.get_or_insert(e);
        }
    }
}

impl Sink for CliSink {
    fn record(&mut self, rec: FlowRecord) {
        match &mut self.json {
            Some(out) => {
                let r = out.record(&rec);
                self.keep(r);
            }
            None if self.keep_table => self.table.push(table_row(&rec)),
            None => {}
        }
        // Last, so the record moves into the store without a copy.
        if let Some(w) = &mut self.parquet
            && let Err(e) = w.write(rec)
        {
            self.store_err.get_or_insert(e);
        }
    }
    fn dns(&mut self, rec: DnsRecord) {
        if let Some(out) = &mut self.dns {
            let r = serde_json::to_writer(&mut *out, &rec)
                .map_err(io::Error::other)
                .and_then(|()| out.write_all(b"\n"));
            self.keep(r);
        }
    }
    fn frame(&mut self, n: u64, id: u64, flags: u32) {
        let names: Vec<&str> = af::NAMES
            .iter()
            .filter(|(b, _)| flags & b != 0)
            .map(|(_, n)| *n)
            .collect();
        eprintln!("frame {n} flow {id:016x} {}", names.join(","));
    }
    fn wants_frames(&self) -> bool {
        self.frames
    }
}

fn health_json(h: &Health) -> serde_json::Value {
    let malformed: serde_json::Map<String, serde_json::Value> = Malformed::ALL
        .iter()
        .map(|m| (m.as_str().to_string(), h.malformed[m.index()].into()))
        .collect();
    let f = &h.flows;
    serde_json::json!({
        "frames": h.frames,
        "bytes": h.bytes,
        "ip_packets": h.ip_packets,
        "not_ip": h.not_ip,
        "malformed_total": h.malformed_total(),
        "malformed": malformed,
        "unsupported_linktype": h.unsupported_linktype,
        "ip_fragments": h.defrag.fragments,
        "ip_datagrams_reassembled": h.defrag.reassembled,
        "ip_datagrams_dropped": h.defrag.dropped_datagrams,
        "ip_fragments_bad": h.defrag.bad_fragments,
        "truncated_tail": h.truncated_tail,
        "skipped_records": h.skipped_records,
        "shards": h.shards,
        "flows_created": f.flows_created,
        "records": f.records,
        "interim_records": f.interim_records,
        "evictions": f.evictions,
        "idle_timeouts": f.idle_timeouts,
        "stale_timeouts": f.stale_timeouts,
        "port_reuses": f.port_reuses,
        "icmp_errors_unmatched": f.icmp_errors_unmatched,
        "peak_flows": f.peak_flows,
        "peak_rss_bytes": peak_rss_bytes(),
        "handshake_rtt_windows": h.rtt_windows.iter().map(|w| serde_json::json!({
            "start_ns": w.start_ns, "count": w.count,
            "p50_us": w.p50_us, "p90_us": w.p90_us, "p99_us": w.p99_us,
        })).collect::<Vec<_>>(),
    })
}

/// This process's peak resident set size (Linux `VmHWM`), if known.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn print_summary(out: &mut dyn Write, h: &Health) -> io::Result<()> {
    writeln!(out, "capture health:")?;
    writeln!(
        out,
        "  frames {}  bytes {}  ip {}  non-ip {}  fragments {} (reassembled {}, dropped {})  malformed {}{}",
        h.frames,
        h.bytes,
        h.ip_packets,
        h.not_ip,
        h.defrag.fragments,
        h.defrag.reassembled,
        h.defrag.dropped_datagrams + h.defrag.bad_fragments,
        h.malformed_total(),
        if h.truncated_tail {
            "  (file cut short in the middle of a packet)"
        } else {
            ""
        }
    )?;
    for m in Malformed::ALL {
        let n = h.malformed[m.index()];
        if n > 0 {
            writeln!(out, "    malformed {}: {n}", m.as_str())?;
        }
    }
    if h.unsupported_linktype > 0 {
        writeln!(
            out,
            "  unsupported link type frames {}",
            h.unsupported_linktype
        )?;
    }
    let f = &h.flows;
    writeln!(
        out,
        "  flows {}  shards {}  peak open {}  evictions {}  idle timeouts {}  stale {}  port reuse {}  unmatched icmp errors {}",
        f.flows_created,
        h.shards,
        f.peak_flows,
        f.evictions,
        f.idle_timeouts,
        f.stale_timeouts,
        f.port_reuses,
        f.icmp_errors_unmatched
    )?;
    if let Some(rss) = peak_rss_bytes() {
        writeln!(
            out,
            "  peak memory {:.1} MiB",
            rss as f64 / (1024.0 * 1024.0)
        )?;
    }
    for w in &h.rtt_windows {
        writeln!(
            out,
            "  handshake rtt window {}: n={} p50={}us p90={}us p99={}us",
            w.start_ns / 1_000_000_000,
            w.count,
            w.p50_us,
            w.p90_us,
            w.p99_us
        )?;
    }
    Ok(())
}

/// `addr:port`, with IPv6 addresses in brackets.
fn endpoint(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// One line of the flow table, formatted when the record arrives: holding every record of a
/// large capture until the end would cost far more memory than these lines.
struct TableRow {
    first_seen_ns: i64,
    flow_id: String,
    line: String,
}

const TABLE_HEADER: [&str; 14] = [
    "flow_id", "proto", "client", "server", "state", "cmp", "pkts", "bytes", "retx", "dup", "ooo",
    "lost", "zwin", "irtt_ms",
];

fn table_line(c: [&str; 14]) -> String {
    format!(
        "{:<16} {:<6} {:>41} {:>41} {:<20} {:>3} {:>8} {:>10} {:>5} {:>5} {:>5} {:>5} {:>5} {:>9}",
        c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10], c[11], c[12], c[13]
    )
}

fn table_row(r: &FlowRecord) -> TableRow {
    let irtt = r
        .handshake_time_us
        .map_or_else(|| "-".to_string(), |v| format!("{:.3}", v / 1e3));
    let n = |v: u64| v.to_string();
    let line = table_line([
        &r.flow_id,
        &r.proto,
        &endpoint(&r.client_ip, r.client_port),
        &endpoint(&r.server_ip, r.server_port),
        r.state.as_str(),
        &r.connection_completeness.to_string(),
        &n(r.packets_c2s + r.packets_s2c),
        &n(r.bytes_c2s + r.bytes_s2c),
        &n(r.retransmissions),
        &n(r.dup_acks),
        &n(r.out_of_order),
        &n(r.missing_segments),
        &n(r.zero_window_events),
        &irtt,
    ]);
    TableRow {
        first_seen_ns: r.first_seen_ns,
        flow_id: r.flow_id.clone(),
        line,
    }
}

fn print_rows(out: &mut dyn Write, rows: &mut [TableRow]) -> io::Result<()> {
    rows.sort_by(|a, b| (a.first_seen_ns, &a.flow_id).cmp(&(b.first_seen_ns, &b.flow_id)));
    writeln!(out, "{}", table_line(TABLE_HEADER))?;
    for r in rows.iter() {
        writeln!(out, "{}", r.line)?;
    }
    Ok(())
}

/// Prints flow records as a table, in order of first packet.
fn print_table(out: &mut dyn Write, recs: &mut [FlowRecord]) -> io::Result<()> {
    let mut rows: Vec<TableRow> = recs.iter().map(table_row).collect();
    print_rows(out, &mut rows)
}

fn analyze(a: AnalyzeArgs) -> Result<()> {
    let flow = FlowConfig {
        shards: a.shards,
        max_flows: a.max_flows,
        idle_timeout_secs: a.idle_timeout,
        stale_timeout_secs: a.stale_timeout,
        close_linger_secs: a.close_linger,
        interim_interval_secs: a.interim,
        rtt_window_secs: a.rtt_window,
        // Live capture only; analyze has --threaded.
        pipeline: Default::default(),
    };
    let opts = AnalyzeOptions {
        flow,
        threaded: a.threaded,
        frames: a.frames,
    };
    let dns = match &a.dns_json {
        Some(p) => Some(BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create `{}`", p.display()))?,
        )),
        None => None,
    };
    let parquet = match &a.store {
        Some(dir) => {
            let removed = tapvault_storage::recover(dir)
                .with_context(|| format!("cannot recover `{}`", dir.display()))?;
            for p in removed {
                eprintln!("tapvault: removed incomplete file {}", p.display());
            }
            Some(
                tapvault_storage::FlowParquetWriter::new(
                    dir,
                    "analyze",
                    tapvault_storage::WriterOptions::default(),
                )
                .with_context(|| format!("cannot write flows under `{}`", dir.display()))?,
            )
        }
        None => None,
    };
    let mut sink = CliSink {
        json: if a.json {
            Some(JsonLines::stdout().context("cannot write to stdout")?)
        } else {
            None
        },
        keep_table: !a.no_records,
        parquet,
        store_err: None,
        table: Vec::new(),
        dns,
        frames: a.frames,
        err: None,
    };
    let bar = (!a.no_progress && io::stderr().is_terminal()).then(|| {
        let pb = indicatif::ProgressBar::new(0);
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb
    });
    let mut progress = |done: u64, total: u64| {
        if let Some(pb) = &bar {
            pb.set_length(total);
            pb.set_position(done);
        }
    };
    let mut spill = match &a.store {
        Some(dir) if !a.no_pcap => Some(StoreSpill::new(dir)),
        _ => None,
    };
    let health = engine::analyze_file_spill(
        &a.file,
        &opts,
        &mut sink,
        spill.as_mut().map(|s| s as &mut dyn engine::PacketSpill),
        &mut progress,
    )
    .with_context(|| format!("analysis of `{}` failed", a.file.display()))?;
    if let Some(s) = spill {
        let segments = s.finish().context("failed to store packets")?;
        eprintln!(
            "tapvault: stored packets in {segments} pcap segment(s) under {}",
            a.store
                .as_deref()
                .unwrap_or(std::path::Path::new(""))
                .display()
        );
    }
    if let Some(pb) = &bar {
        pb.finish_and_clear();
    }
    if let Some(out) = &mut sink.json {
        let r = out.flush();
        sink.keep(r);
    }
    if let Some(out) = &mut sink.dns {
        let r = out.flush();
        sink.keep(r);
    }
    if let Some(e) = sink.err.take()
        && e.kind() != io::ErrorKind::BrokenPipe
    {
        return Err(e).context("failed to write output");
    }
    if let Some(e) = sink.store_err.take() {
        return Err(e).context("failed to store flow records");
    }
    if let Some(w) = sink.parquet.take() {
        let files = w.close().context("failed to store flow records")?;
        eprintln!(
            "tapvault: stored flow records in {} Parquet file(s) under {}",
            files.len(),
            a.store
                .as_deref()
                .unwrap_or(std::path::Path::new(""))
                .display()
        );
    }
    if let Some(p) = &a.summary_json {
        std::fs::write(p, serde_json::to_vec_pretty(&health_json(&health))?)
            .with_context(|| format!("cannot write `{}`", p.display()))?;
    }
    if a.json {
        print_summary(&mut io::stderr().lock(), &health)?;
    } else {
        let mut out = BufWriter::new(io::stdout().lock());
        if !a.no_records {
            print_rows(&mut out, &mut sink.table)?;
            writeln!(out)?;
        }
        print_summary(&mut out, &health)?;
        out.flush()?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Analyze(a) => analyze(a),
        Cmd::Capture(a) => capture_cmd(a),
        Cmd::Demo(a) => lab::demo(a),
        Cmd::Traffic(a) => lab::traffic(a),
        Cmd::Check(a) => match check::check(a) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        Cmd::Blast(a) => lab::blast::run(a),
        Cmd::Rxbench(a) => lab::rxbench::run(a),
        Cmd::StorageSoak(a) => soak::soak(a),
        Cmd::Status(a) => status::status(a),
        Cmd::Serve(a) => serve::serve(a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tapvault: error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
