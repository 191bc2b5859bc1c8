//! Live health: the [`StatusSource`] trait the capture pipeline implements, the snapshot it
//! returns, `GET /api/v1/status`, `GET /metrics` (Prometheus text), `/healthz`, `/readyz`.

use std::{collections::BTreeMap, fmt::Write as _, path::PathBuf, sync::Arc};

use axum::{
    Json,
    extract::{RawQuery, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::{AppState, error::ApiError, params::Params};

/// Supplies live capture health. The `tapvault` binary implements it over the live
/// pipeline; [`NoCapture`] serves history only. Called once per status, metrics or readiness
/// request, on a blocking thread: it may take locks or read counters, but should be quick.
pub trait StatusSource: Send + Sync {
    /// The current counters.
    fn snapshot(&self) -> StatusSnapshot;
}

/// Everything `/api/v1/status` and `/metrics` report. Counters are totals since the
/// capture started.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[non_exhaustive]
pub struct StatusSnapshot {
    /// `live` (a capture is attached) or `history` (serving stored data only).
    pub mode: String,
    /// A capture is attached and running.
    pub capture_attached: bool,
    /// The capture is ready (sockets bound, XDP attached, first poll done); `/readyz`
    /// answers 503 while a live capture is not ready. Ignored when no capture is attached.
    pub capture_ready: bool,
    /// Why the capture is not ready, if it is not.
    pub not_ready_reason: Option<String>,
    /// Seconds since the capture (or the server) started.
    pub uptime_seconds: f64,
    /// Per NIC queue (AF_XDP socket).
    pub queues: Vec<QueueStatus>,
    /// Per flow shard.
    pub shards: Vec<ShardStatus>,
    /// The storage writers.
    pub storage: StorageStatus,
    /// The XDP program's counters, summed over CPUs (AF_XDP capture only).
    pub xdp: Option<XdpCounters>,
    /// The capture interface's own receive counters since the capture started (live capture
    /// only): what the NIC or its driver lost before any XDP program or socket saw it.
    pub interface: Option<InterfaceStatus>,
}

/// An interface's receive counters since the capture started, from the kernel's device
/// statistics (`/proc/net/dev` of the capture's namespace).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[non_exhaustive]
pub struct InterfaceStatus {
    /// Interface name.
    pub name: String,
    /// Frames the device received.
    pub rx_packets: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Dropped by the device or driver (`rx_dropped + rx_missed_errors`; missed: no NIC
    /// descriptor free, the usual loss at line rate).
    pub rx_dropped: u64,
    /// FIFO overruns.
    pub rx_fifo_errors: u64,
    /// Framing faults (length, overrun, CRC, frame alignment).
    pub rx_frame_errors: u64,
    /// Receive errors of any kind (the faults above among them).
    pub rx_errors: u64,
    /// Frames the kernel dropped host-wide because a CPU's input backlog was full
    /// (`netdev_max_backlog`, `/proc/net/softnet_stat`): every interface's traffic, not this
    /// one's alone. AF_PACKET capture behind RPS or a driver without NAPI (veth) loses frames
    /// there before any socket sees them. `null` if unreadable.
    pub host_backlog_dropped: Option<u64>,
    /// The driver's own receive-loss statistics (`ethtool -S`: drops, misses, discards,
    /// missing buffers, errors, per queue where the driver counts per queue), by the
    /// driver's names, since the capture started. `null` when the driver reports no
    /// statistics (or they could not be read now).
    pub driver_drops: Option<BTreeMap<String, u64>>,
}

impl StatusSnapshot {
    /// An empty snapshot of the given mode.
    pub fn new(mode: &str) -> StatusSnapshot {
        StatusSnapshot {
            mode: mode.to_owned(),
            ..StatusSnapshot::default()
        }
    }
}

/// One receive queue (one AF_XDP socket or AF_PACKET ring).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[non_exhaustive]
pub struct QueueStatus {
    /// Interface name.
    pub interface: String,
    /// Queue id.
    pub queue: u32,
    /// Packets received.
    pub packets: u64,
    /// Bytes received (frame lengths).
    pub bytes: u64,
    /// Drops by stage.
    pub drops: QueueDrops,
    /// AF_PACKET: times the kernel froze the ring because user space left it full
    /// (`tp_freeze_q_cnt`). Not drops: frames that found the ring full are in
    /// `drops.ring_full`.
    pub ring_freezes: u64,
}

/// A queue's drops, by the stage that dropped (`XDP_STATISTICS` and ours).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[non_exhaustive]
pub struct QueueDrops {
    /// Dropped by the kernel for reasons the other stages do not name. Neither source
    /// reports such drops today (AF_XDP's `rx_dropped` counts the fill ring's, which are
    /// in `fill_ring_empty`; AF_PACKET's `tp_drops` are `ring_full`), so it reads 0.
    pub kernel: u64,
    /// `rx_ring_full`: the RX ring was full (user space too slow).
    pub ring_full: u64,
    /// `rx_fill_ring_empty_descs`: no free frame in the fill ring.
    pub fill_ring_empty: u64,
    /// `rx_invalid_descs`: invalid descriptors.
    pub invalid_descs: u64,
    /// Dropped after the socket because the hand-off to the shards was full.
    pub handoff_full: u64,
}

/// The XDP program's outcomes, summed over CPUs. Every frame it sees has one:
/// `seen = redirected + filtered + no_socket + errors`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[non_exhaustive]
pub struct XdpCounters {
    /// Frames the program saw.
    pub seen: u64,
    /// Redirected to an AF_XDP socket.
    pub redirected: u64,
    /// Not captured because of the capture filter (passed to the kernel).
    pub filtered: u64,
    /// Arrived on a queue without a socket (passed or dropped as configured).
    pub no_socket: u64,
    /// Program errors (no configuration).
    pub errors: u64,
    /// Truncated to the snap length (not terminal).
    pub truncated: u64,
    /// Redirected without the arrival-time metadata (no headroom for it; not terminal): the
    /// socket stamps them with its batch's time.
    pub meta_failed: u64,
    /// Where the program puts each frame's arrival time and wire length: `meta_area` (the
    /// XDP metadata area) or `packet_data` (in front of the frame, for kernels whose verifier
    /// refuses `bpf_xdp_adjust_meta`; user space strips it). Which program variant runs.
    pub metadata: String,
}

/// One flow shard.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[non_exhaustive]
pub struct ShardStatus {
    /// Shard index.
    pub shard: u32,
    /// Packet descriptors processed.
    pub packets: u64,
    /// Flows in the table now.
    pub flows_active: u64,
    /// The table's capacity.
    pub flows_capacity: u64,
    /// Flows evicted to make room.
    pub evictions: u64,
    /// Flows ended by a timeout.
    pub timeouts: u64,
    /// Descriptors dropped because this shard's input queue was full.
    pub queue_drops: u64,
}

/// The storage writers.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[non_exhaustive]
pub struct StorageStatus {
    /// Packets the packet writers accepted into segments.
    pub packets_written: u64,
    /// Flow records the flow writer accepted.
    pub records_accepted: u64,
    /// Flow records the flow writer dropped (its memory buffer was full while writing was
    /// paused); also counted in `errors`.
    pub records_dropped: u64,
    /// Bytes written to packet segments and flow files.
    pub bytes_written: u64,
    /// Packet segments published.
    pub segments_written: u64,
    /// zstd frames of packets stored uncompressed (raw zstd blocks) because the traffic did not
    /// compress (`storage.zstd_adaptive`).
    pub frames_passed_through: u64,
    /// Flow files published.
    pub flow_files_written: u64,
    /// Packets dropped by the storage writer (queue full, disk full, errors).
    pub packets_dropped: u64,
    /// How far the newest stored packet lags behind the newest captured one, seconds.
    pub lag_seconds: Option<f64>,
    /// Free bytes on the data directory's file system.
    pub free_bytes: Option<u64>,
    /// Writing is paused because the disk is full.
    pub paused_disk_full: bool,
    /// Write errors.
    pub errors: u64,
}

/// A [`StatusSource`] for serving stored history without a capture.
#[derive(Debug)]
pub struct NoCapture {
    started: std::time::Instant,
}

impl NoCapture {
    /// A provider whose uptime counts from now.
    pub fn new() -> NoCapture {
        NoCapture {
            started: std::time::Instant::now(),
        }
    }
}

impl Default for NoCapture {
    fn default() -> Self {
        NoCapture::new()
    }
}

impl StatusSource for NoCapture {
    fn snapshot(&self) -> StatusSnapshot {
        StatusSnapshot {
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            ..StatusSnapshot::new("history")
        }
    }
}

async fn snapshot(st: &Arc<AppState>) -> Result<StatusSnapshot, ApiError> {
    let src = st.status.clone();
    tokio::task::spawn_blocking(move || src.snapshot())
        .await
        .map_err(|e| ApiError::internal("status provider", e))
}

pub(crate) async fn status(
    State(st): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    Ok(Json(snapshot(&st).await?).into_response())
}

pub(crate) async fn healthz(RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    Ok(Json(serde_json::json!({ "status": "ok" })).into_response())
}

fn storage_readable(dir: &PathBuf) -> Result<(), String> {
    std::fs::read_dir(dir)
        .map(|_| ())
        .map_err(|e| format!("data directory `{}` is not readable: {e}", dir.display()))
}

pub(crate) async fn readyz(
    State(st): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    let snap = snapshot(&st).await?;
    let mut reasons = Vec::new();
    if let Err(e) = storage_readable(&st.opts.data_dir) {
        reasons.push(e);
    }
    if snap.capture_attached && !snap.capture_ready {
        reasons.push(
            snap.not_ready_reason
                .clone()
                .unwrap_or_else(|| "capture is not ready".into()),
        );
    }
    let ready = reasons.is_empty();
    let body = serde_json::json!({
        "ready": ready,
        "mode": snap.mode,
        "capture_attached": snap.capture_attached,
        "reasons": reasons,
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((code, Json(body)).into_response())
}

/// Prometheus label value escaping (backslash, quote, newline).
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, String)], v: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", esc(val));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {v}");
    }

    /// A family of one sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, labels: &[(&str, String)], v: f64) {
        self.head(name, kind, help);
        self.sample(name, labels, v);
    }

    /// One sample of `name` per `(label value, count)` in `by`: `labels` plus `key` set to
    /// that value (a counter broken down by stage, outcome or reason).
    fn breakdown(
        &mut self,
        name: &str,
        labels: &[(&'static str, String)],
        key: &'static str,
        by: &[(&str, u64)],
    ) {
        let mut l = labels.to_vec();
        l.push((key, String::new()));
        for &(value, v) in by {
            if let Some(last) = l.last_mut() {
                value.clone_into(&mut last.1);
            }
            self.sample(name, &l, v as f64);
        }
    }

    /// A family with one sample per item.
    fn each<T>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        items: &[T],
        labels: impl Fn(&T) -> Vec<(&'static str, String)>,
        value: impl Fn(&T) -> f64,
    ) {
        self.head(name, kind, help);
        for it in items {
            self.sample(name, &labels(it), value(it));
        }
    }
}

/// The Prometheus text exposition (format 0.0.4) of a snapshot and the API's own counters.
pub(crate) fn prometheus(s: &StatusSnapshot, requests: &[(u16, u64)]) -> String {
    let mut out = String::new();
    let mut f = Family { out: &mut out };
    f.single(
        "tapvault_up",
        "gauge",
        "1 while the tapvault API answers.",
        &[],
        1.0,
    );
    f.single(
        "tapvault_capture_attached",
        "gauge",
        "1 when a live capture is attached, 0 when serving history only.",
        &[],
        f64::from(u8::from(s.capture_attached)),
    );
    f.single(
        "tapvault_uptime_seconds",
        "gauge",
        "Seconds since the capture or server started.",
        &[],
        s.uptime_seconds,
    );
    let q = |x: &QueueStatus| {
        vec![
            ("interface", x.interface.clone()),
            ("queue", x.queue.to_string()),
        ]
    };
    f.each(
        "tapvault_queue_packets_total",
        "counter",
        "Packets received per queue.",
        &s.queues,
        q,
        |x| x.packets as f64,
    );
    f.each(
        "tapvault_queue_bytes_total",
        "counter",
        "Bytes received per queue.",
        &s.queues,
        q,
        |x| x.bytes as f64,
    );
    f.each(
        "tapvault_queue_ring_freezes_total",
        "counter",
        "AF_PACKET ring freezes per queue (the ring was full; not drops).",
        &s.queues,
        q,
        |x| x.ring_freezes as f64,
    );
    f.head(
        "tapvault_queue_drops_total",
        "counter",
        "Packets dropped per queue, by stage (kernel, ring_full, fill_ring_empty, invalid_descs, handoff_full).",
    );
    for x in &s.queues {
        f.breakdown(
            "tapvault_queue_drops_total",
            &q(x),
            "stage",
            &[
                ("kernel", x.drops.kernel),
                ("ring_full", x.drops.ring_full),
                ("fill_ring_empty", x.drops.fill_ring_empty),
                ("invalid_descs", x.drops.invalid_descs),
                ("handoff_full", x.drops.handoff_full),
            ],
        );
    }
    if let Some(x) = &s.xdp {
        f.head(
            "tapvault_xdp_frames_total",
            "counter",
            "Frames the XDP program handled, by outcome (seen, redirected, filtered, no_socket, error, truncated, meta_failed).",
        );
        f.breakdown(
            "tapvault_xdp_frames_total",
            &[],
            "outcome",
            &[
                ("seen", x.seen),
                ("redirected", x.redirected),
                ("filtered", x.filtered),
                ("no_socket", x.no_socket),
                ("error", x.errors),
                ("truncated", x.truncated),
                ("meta_failed", x.meta_failed),
            ],
        );
        f.single("tapvault_xdp_program_info", "gauge", "The XDP program variant: where it puts each frame's metadata (meta_area or packet_data).", &[("metadata", x.metadata.clone())], 1.0);
    }
    if let Some(x) = &s.interface {
        let l = [("interface", x.name.clone())];
        f.single(
            "tapvault_interface_rx_packets_total",
            "counter",
            "Frames the capture interface received since the capture started (device statistics).",
            &l,
            x.rx_packets as f64,
        );
        f.head(
            "tapvault_interface_rx_drops_total",
            "counter",
            "Frames the capture interface's device or driver lost since the capture started, by reason (dropped includes missed; errors counts every receive error).",
        );
        f.breakdown(
            "tapvault_interface_rx_drops_total",
            &l,
            "reason",
            &[
                ("dropped", x.rx_dropped),
                ("fifo", x.rx_fifo_errors),
                ("frame", x.rx_frame_errors),
                ("errors", x.rx_errors),
            ],
        );
        if let Some(d) = &x.driver_drops {
            f.head(
                "tapvault_interface_driver_drops_total",
                "counter",
                "The capture interface driver's own receive-loss statistics (ethtool -S names) since the capture started.",
            );
            let by: Vec<(&str, u64)> = d.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            f.breakdown("tapvault_interface_driver_drops_total", &l, "counter", &by);
        }
        if let Some(v) = x.host_backlog_dropped {
            f.single("tapvault_host_backlog_drops_total", "counter", "Frames the kernel dropped host-wide for a full CPU input backlog (netdev_max_backlog) since the capture started; every interface's traffic.", &[], v as f64);
        }
    }
    let sh = |x: &ShardStatus| vec![("shard", x.shard.to_string())];
    f.each(
        "tapvault_shard_packets_total",
        "counter",
        "Packet descriptors processed per flow shard.",
        &s.shards,
        sh,
        |x| x.packets as f64,
    );
    f.each(
        "tapvault_shard_flows_active",
        "gauge",
        "Flows in the shard's table.",
        &s.shards,
        sh,
        |x| x.flows_active as f64,
    );
    f.each(
        "tapvault_shard_flows_capacity",
        "gauge",
        "Capacity of the shard's flow table.",
        &s.shards,
        sh,
        |x| x.flows_capacity as f64,
    );
    f.each(
        "tapvault_shard_evictions_total",
        "counter",
        "Flows evicted to make room, per shard.",
        &s.shards,
        sh,
        |x| x.evictions as f64,
    );
    f.each(
        "tapvault_shard_timeouts_total",
        "counter",
        "Flows ended by a timeout, per shard.",
        &s.shards,
        sh,
        |x| x.timeouts as f64,
    );
    f.each(
        "tapvault_shard_queue_drops_total",
        "counter",
        "Descriptors dropped because the shard's queue was full.",
        &s.shards,
        sh,
        |x| x.queue_drops as f64,
    );
    let st = &s.storage;
    for (name, help, v) in [
        (
            "tapvault_storage_packets_written_total",
            "Packets the packet writers accepted.",
            st.packets_written,
        ),
        (
            "tapvault_storage_records_accepted_total",
            "Flow records the flow writer accepted.",
            st.records_accepted,
        ),
        (
            "tapvault_storage_records_dropped_total",
            "Flow records the flow writer dropped (buffer full while paused).",
            st.records_dropped,
        ),
    ] {
        f.single(name, "counter", help, &[], v as f64);
    }
    f.single(
        "tapvault_storage_bytes_written_total",
        "counter",
        "Bytes written to segments and flow files.",
        &[],
        st.bytes_written as f64,
    );
    f.single(
        "tapvault_storage_segments_written_total",
        "counter",
        "Packet segments published.",
        &[],
        st.segments_written as f64,
    );
    f.single(
        "tapvault_storage_frames_passed_through_total",
        "counter",
        "Packet frames stored uncompressed (raw zstd blocks) because the traffic did not compress.",
        &[],
        st.frames_passed_through as f64,
    );
    f.single(
        "tapvault_storage_flow_files_written_total",
        "counter",
        "Flow files published.",
        &[],
        st.flow_files_written as f64,
    );
    f.single(
        "tapvault_storage_packets_dropped_total",
        "counter",
        "Packets the storage writer dropped.",
        &[],
        st.packets_dropped as f64,
    );
    f.single(
        "tapvault_storage_errors_total",
        "counter",
        "Storage write errors.",
        &[],
        st.errors as f64,
    );
    f.single(
        "tapvault_storage_paused_disk_full",
        "gauge",
        "1 while writing is paused because the disk is full.",
        &[],
        f64::from(u8::from(st.paused_disk_full)),
    );
    if let Some(lag) = st.lag_seconds {
        f.single(
            "tapvault_storage_lag_seconds",
            "gauge",
            "Newest captured minus newest stored packet time.",
            &[],
            lag,
        );
    }
    if let Some(free) = st.free_bytes {
        f.single(
            "tapvault_storage_free_bytes",
            "gauge",
            "Free bytes on the data directory's file system.",
            &[],
            free as f64,
        );
    }
    f.head(
        "tapvault_api_requests_total",
        "counter",
        "API requests answered, by status code.",
    );
    for (code, n) in requests {
        f.sample(
            "tapvault_api_requests_total",
            &[("code", code.to_string())],
            *n as f64,
        );
    }
    out
}

pub(crate) async fn metrics(
    State(st): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    let snap = snapshot(&st).await?;
    let body = prometheus(&snap, &st.request_counts());
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every family has HELP and TYPE before its samples, once, and sample lines parse.
    #[test]
    fn exposition_is_well_formed() {
        let mut s = StatusSnapshot::new("live");
        s.queues.push(QueueStatus {
            interface: "eth\"0".into(),
            queue: 3,
            packets: 10,
            ..QueueStatus::default()
        });
        s.shards.push(ShardStatus {
            shard: 1,
            flows_active: 5,
            ..ShardStatus::default()
        });
        s.storage.lag_seconds = Some(0.5);
        s.storage.frames_passed_through = 12;
        s.xdp = Some(XdpCounters {
            seen: 7,
            metadata: "packet_data".into(),
            ..XdpCounters::default()
        });
        s.interface = Some(InterfaceStatus {
            name: "eth1".into(),
            rx_packets: 99,
            rx_dropped: 3,
            host_backlog_dropped: Some(8),
            driver_drops: Some(BTreeMap::from([("rx_queue_0_drops".to_owned(), 5)])),
            ..InterfaceStatus::default()
        });
        let text = prometheus(&s, &[(200, 4), (400, 1)]);
        let mut typed = std::collections::HashMap::new();
        let mut helped = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(r) = line.strip_prefix("# HELP ") {
                assert!(
                    helped.insert(r.split(' ').next().unwrap().to_owned()),
                    "{line}"
                );
            } else if let Some(r) = line.strip_prefix("# TYPE ") {
                let mut it = r.split(' ');
                let name = it.next().unwrap().to_owned();
                let kind = it.next().unwrap();
                assert!(["counter", "gauge"].contains(&kind));
                assert!(helped.contains(&name), "TYPE before HELP: {line}");
                assert!(typed.insert(name.clone(), kind).is_none(), "{line}");
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "{name}");
                }
            } else {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(typed.contains_key(name), "sample before TYPE: {line}");
                let v = line.rsplit(' ').next().unwrap();
                assert!(v.parse::<f64>().is_ok(), "{line}");
            }
        }
        assert!(
            text.contains("tapvault_queue_packets_total{interface=\"eth\\\"0\",queue=\"3\"} 10")
        );
        assert!(text.contains("tapvault_shard_flows_active{shard=\"1\"} 5"));
        assert!(text.contains("tapvault_api_requests_total{code=\"400\"} 1"));
        assert!(text.contains("tapvault_xdp_frames_total{outcome=\"seen\"} 7"));
        assert!(text.contains(
            "tapvault_queue_drops_total{interface=\"eth\\\"0\",queue=\"3\",stage=\"handoff_full\"} 0"
        ));
        assert!(text.contains("tapvault_xdp_frames_total{outcome=\"meta_failed\"} 0"));
        assert!(text.contains("tapvault_xdp_program_info{metadata=\"packet_data\"} 1"));
        assert!(text.contains("tapvault_interface_rx_packets_total{interface=\"eth1\"} 99"));
        assert!(text.contains("\ntapvault_host_backlog_drops_total 8\n"));
        assert!(text.contains(
            "tapvault_interface_driver_drops_total{interface=\"eth1\",counter=\"rx_queue_0_drops\"} 5"
        ));
        assert!(text.contains("\ntapvault_storage_frames_passed_through_total 12\n"));
        assert!(text.contains(
            "tapvault_interface_rx_drops_total{interface=\"eth1\",reason=\"dropped\"} 3"
        ));
    }
}
