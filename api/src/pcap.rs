//! `GET /api/v1/pcap`: packets of a time range, of one flow, or matching a filter, as a
//! nanosecond pcap file.
//!
//! Only frames the segment indexes select are decompressed (time overlap, and for a flow the
//! frame's flow set). Bounds: a range without `flow_id` may span at most the configured
//! maximum (400 otherwise); the answer may hold at most the configured bytes. The index
//! gives an upper bound of the answer's size before anything is read: when it is within the
//! limit the file is streamed as it is read; when the frames that lie wholly inside an
//! unfiltered range already exceed it, the request is refused up front (413); otherwise
//! (filters make the size unknowable from the index) the answer is assembled up to the
//! limit and sent only if it fits, else 413. A 200 is therefore never a truncated file.

use std::{cmp::Reverse, collections::BinaryHeap, path::PathBuf, sync::Arc};

use axum::{
    body::{Body, Bytes},
    extract::{RawQuery, State},
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use tapvault_dataplane::flow::key::FlowKey;
use tapvault_storage::{SegmentReader, pcap::segments_overlapping};

use crate::{
    AppState,
    bpf::{self, Expr},
    error::ApiError,
    flows::{parse_flow_id, records_of},
    params::{ParamSpec, Params},
    time::{format_compact, format_rfc3339},
    window::Window,
};

pub(crate) const PCAP_PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "from",
        repeated: false,
        schema: r#"{"type":"string"}"#,
        example: "5m",
        description: "Start of the range (required unless flow_id is given): RFC 3339 or relative (30s, 15m, 2h). With flow_id it narrows the flow's own span.",
    },
    ParamSpec {
        name: "to",
        repeated: false,
        schema: r#"{"type":"string"}"#,
        example: "now",
        description: "End of the range, inclusive (default now; with flow_id, the flow's last packet).",
    },
    ParamSpec {
        name: "flow_id",
        repeated: false,
        schema: r#"{"type":"string","pattern":"^[0-9a-fA-F]{16}$"}"#,
        example: "0123456789abcdef",
        description: "Only the packets of this flow (16 hex digits, as in flow records), over its first to last packet (narrowed by from/to). Without from/to the whole store is searched for the flow's record; the pcap_url of /api/v1/flows/{flow_id} carries both.",
    },
    ParamSpec {
        name: "filter",
        repeated: false,
        schema: r#"{"type":"string"}"#,
        example: "tcp and (port 80 or port 443) and not net 10.0.0.0/8",
        description: "tcpdump-like filter on the innermost IP header: [tcp|udp|icmp|icmp6|ip|ip6] [src|dst|src or dst|src and dst] (host ADDR | net CIDR | port N | portrange N-M), tcp, udp, icmp, icmp6, ip, ip6, combined with and/&&, or/||, not/!, parentheses.",
    },
];

/// Where to look and what to keep.
struct Plan {
    win: Window,
    flow: Option<u64>,
    flow_id: Option<String>,
    filter: Option<Expr>,
    segments: Vec<(SegmentReader, Vec<usize>)>,
    link_type: u32,
    snap_len: u32,
    upper_bytes: u64,
    lower_bytes: u64,
}

const PCAP_HEADER_LEN: u64 = 24;
const RECORD_HEADER_LEN: usize = 16;

fn pcap_header(link_type: u32, snap_len: u32) -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&0xa1b2_3c4du32.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    h[16..20].copy_from_slice(&snap_len.to_le_bytes());
    h[20..24].copy_from_slice(&link_type.to_le_bytes());
    h
}

fn plan(st: &AppState, p: &Params, keep_going: &dyn Fn() -> bool) -> Result<Plan, ApiError> {
    let now = st.opts.now_ns();
    let filter = p
        .get("filter")
        .map(|f| bpf::parse(f).map_err(|e| ApiError::bad("filter", e.to_string())))
        .transpose()?;
    let (win, flow, flow_id) = match p.get("flow_id") {
        Some(id) => {
            let id = parse_flow_id(id, "flow_id")?;
            let search = Window::optional(p, now)?;
            let recs = records_of(st, &id, search, keep_going)?;
            if recs.is_empty() {
                return Err(ApiError::NotFound(format!(
                    "no flow `{id}` between {} and {}",
                    format_rfc3339(search.from),
                    format_rfc3339(search.to)
                )));
            }
            let key = FlowKey::of_record(&recs[0]).ok_or_else(|| {
                ApiError::internal("flow key", format!("record {id} has no usable key"))
            })?;
            let first = recs.iter().map(|r| r.first_seen_ns).min().unwrap_or(0);
            let last = recs.iter().map(|r| r.last_seen_ns).max().unwrap_or(0);
            let win = Window {
                from: first.max(search.from),
                to: last.min(search.to),
            };
            (win, Some(key.hash64()), Some(id))
        }
        None => {
            let win = Window::from_params(p, now, true)?;
            let span = win.to.saturating_sub(win.from);
            if span > st.opts.max_pcap_span_ns {
                return Err(ApiError::bad(
                    "to",
                    format!(
                        "the range spans {:.0} s, more than the maximum of {:.0} s for a pcap without flow_id; narrow it or give a flow_id",
                        span as f64 / 1e9,
                        st.opts.max_pcap_span_ns as f64 / 1e9
                    ),
                ));
            }
            (win, None, None)
        }
    };
    let mut stats = tapvault_storage::pcap::ReadStats::default();
    let paths: Vec<PathBuf> =
        segments_overlapping(&st.opts.data_dir, win.from, win.to, &mut stats)?;
    let mut segments = Vec::new();
    let mut link: Option<(u32, u32)> = None;
    let (mut upper, mut lower) = (PCAP_HEADER_LEN, PCAP_HEADER_LEN);
    for path in paths {
        if !keep_going() {
            return Err(ApiError::Timeout);
        }
        let seg = SegmentReader::open(&path)?;
        let idx = seg.index();
        let mut frames = Vec::new();
        for (i, f) in idx.frames.iter().enumerate() {
            if !f.overlaps(win.from, win.to) || f.packets == 0 {
                continue;
            }
            let own = match flow {
                Some(h) => match f.flows.binary_search(&h) {
                    Ok(slot) => f
                        .packet_flows
                        .iter()
                        .filter(|&&s| s as usize == slot)
                        .count(),
                    Err(_) => continue,
                },
                None => f.packets as usize,
            };
            let body = u64::from(f.decompressed_size).saturating_sub(if i == 0 {
                PCAP_HEADER_LEN
            } else {
                0
            });
            let bound = if flow.is_some() {
                body.min(own as u64 * (RECORD_HEADER_LEN as u64 + u64::from(idx.snap_len)))
            } else {
                body
            };
            upper += bound;
            if flow.is_none() && filter.is_none() && f.min_ts >= win.from && f.max_ts <= win.to {
                lower += body;
            }
            frames.push(i);
        }
        if frames.is_empty() {
            continue;
        }
        match link {
            Some((lt, _)) if lt != idx.link_type => {
                return Err(ApiError::bad(
                    "from",
                    format!(
                        "the range holds packets of two link types ({lt} and {}), which one pcap file cannot hold; narrow the range or add a flow_id",
                        idx.link_type
                    ),
                ));
            }
            Some((lt, snap)) => link = Some((lt, snap.max(idx.snap_len))),
            None => link = Some((idx.link_type, idx.snap_len)),
        }
        segments.push((seg, frames));
    }
    let (link_type, snap_len) = link.unwrap_or((1, tapvault_storage::pcap::MAX_SNAP_LEN));
    Ok(Plan {
        win,
        flow,
        flow_id,
        filter,
        segments,
        link_type,
        snap_len,
        upper_bytes: upper,
        lower_bytes: lower,
    })
}

/// One segment's selected frames, record by record.
struct SegCursor {
    seg: SegmentReader,
    frames: Vec<usize>,
    next_frame: usize,
    buf: Vec<u8>,
    /// (time, start, length) of the frame's records that match.
    recs: Vec<(i64, usize, usize)>,
    next_rec: usize,
}

impl SegCursor {
    /// Loads frames until one has a matching record; false when the segment is done.
    fn fill(&mut self, plan: &PlanView<'_>) -> Result<bool, ApiError> {
        while self.next_rec >= self.recs.len() {
            let Some(&fi) = self.frames.get(self.next_frame) else {
                return Ok(false);
            };
            self.next_frame += 1;
            self.buf = self.seg.read_frame(fi)?;
            self.recs.clear();
            self.next_rec = 0;
            let f = &self.seg.index().frames[fi];
            let slot = plan
                .flow
                .and_then(|h| f.flows.binary_search(&h).ok())
                .map(|s| s as u32);
            let mut pos = if fi == 0 { PCAP_HEADER_LEN as usize } else { 0 };
            for n in 0..f.packets as usize {
                let Some(h) = self.buf.get(pos..pos + RECORD_HEADER_LEN) else {
                    return Err(ApiError::internal(
                        "packet store",
                        format!("frame {fi}: truncated record {n}"),
                    ));
                };
                let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
                let ts = i64::from(word(0)) * 1_000_000_000 + i64::from(word(4));
                let len = RECORD_HEADER_LEN + word(8) as usize;
                if pos + len > self.buf.len() {
                    return Err(ApiError::internal(
                        "packet store",
                        format!("frame {fi}: record {n} overruns the frame"),
                    ));
                }
                let flow_ok = match (plan.flow, slot) {
                    (None, _) => true,
                    (Some(_), Some(s)) => f.packet_flows.get(n) == Some(&s),
                    (Some(_), None) => false,
                };
                let time_ok = (plan.win.from..=plan.win.to).contains(&ts);
                let filter_ok = flow_ok
                    && time_ok
                    && plan.filter.is_none_or(|e| {
                        e.matches(
                            bpf::view(
                                plan.link_type,
                                &self.buf[pos + RECORD_HEADER_LEN..pos + len],
                            )
                            .as_ref(),
                        )
                    });
                if filter_ok {
                    self.recs.push((ts, pos, len));
                }
                pos += len;
            }
        }
        Ok(true)
    }
}

struct PlanView<'a> {
    win: Window,
    flow: Option<u64>,
    filter: Option<&'a Expr>,
    link_type: u32,
}

/// Writes the pcap (header, then records merged by time across segments, ties in segment
/// order) to `sink`; the sink answers false to stop early.
fn produce(
    plan: Plan,
    keep_going: &dyn Fn() -> bool,
    sink: &mut dyn FnMut(&[u8]) -> Result<bool, ApiError>,
) -> Result<(), ApiError> {
    if !sink(&pcap_header(plan.link_type, plan.snap_len))? {
        return Ok(());
    }
    let view = PlanView {
        win: plan.win,
        flow: plan.flow,
        filter: plan.filter.as_ref(),
        link_type: plan.link_type,
    };
    let mut cursors: Vec<SegCursor> = plan
        .segments
        .into_iter()
        .map(|(seg, frames)| SegCursor {
            seg,
            frames,
            next_frame: 0,
            buf: Vec::new(),
            recs: Vec::new(),
            next_rec: 0,
        })
        .collect();
    let mut heap = BinaryHeap::new();
    for (i, c) in cursors.iter_mut().enumerate() {
        if c.fill(&view)? {
            heap.push(Reverse((c.recs[c.next_rec].0, i)));
        }
    }
    let mut n = 0u64;
    while let Some(Reverse((_, i))) = heap.pop() {
        n += 1;
        if n.is_multiple_of(4096) && !keep_going() {
            return Err(ApiError::Timeout);
        }
        let c = &mut cursors[i];
        let (_, start, len) = c.recs[c.next_rec];
        if !sink(&c.buf[start..start + len])? {
            return Ok(());
        }
        c.next_rec += 1;
        if c.fill(&view)? {
            heap.push(Reverse((c.recs[c.next_rec].0, i)));
        }
    }
    Ok(())
}

pub(crate) async fn get(
    State(st): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref(), PCAP_PARAMS)?;
    let st2 = st.clone();
    let plan = st.blocking(move |kg| plan(&st2, &p, kg)).await?;
    let max = st.opts.max_pcap_bytes;
    if plan.lower_bytes > max {
        return Err(too_large(plan.lower_bytes, max, true));
    }
    let name = format!(
        "tapvault-{}-{}{}.pcap",
        format_compact(plan.win.from),
        format_compact(plan.win.to),
        plan.flow_id
            .as_deref()
            .map(|f| format!("-{f}"))
            .unwrap_or_default()
    );
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/vnd.tcpdump.pcap"),
        ),
        (
            header::CONTENT_DISPOSITION,
            HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
                .map_err(|e| ApiError::internal("header", e))?,
        ),
    ];
    if plan.upper_bytes <= max {
        // Fits by the index's bound: stream as it is read.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
        // The body streams at the client's pace: allow it 20 request time-outs.
        let deadline = std::time::Instant::now() + st.opts.request_timeout * 20;
        tokio::task::spawn_blocking(move || {
            let keep_going = || std::time::Instant::now() < deadline;
            let mut chunk = Vec::with_capacity(256 * 1024);
            let mut sink = |b: &[u8]| -> Result<bool, ApiError> {
                chunk.extend_from_slice(b);
                if chunk.len() >= 256 * 1024 {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(256 * 1024));
                    return Ok(tx.blocking_send(Ok(Bytes::from(full))).is_ok());
                }
                Ok(true)
            };
            let r = produce(plan, &keep_going, &mut sink);
            match r {
                Ok(()) => {
                    if !chunk.is_empty() {
                        let _ = tx.blocking_send(Ok(Bytes::from(chunk)));
                    }
                }
                Err(e) => {
                    // Headers are gone: end the body with an error so the client sees a
                    // broken transfer, never a silently short file.
                    eprintln!("tapvault api: pcap stream aborted: {e:?}");
                    let _ = tx.blocking_send(Err(std::io::Error::other("pcap stream aborted")));
                }
            }
        });
        let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
        return Ok((headers, body).into_response());
    }
    // The size is unknown up front: assemble up to the limit.
    let out = st
        .blocking(move |kg| {
            let mut out = Vec::new();
            let mut over = false;
            produce(plan, kg, &mut |b: &[u8]| {
                if out.len() as u64 + b.len() as u64 > max {
                    over = true;
                    return Ok(false);
                }
                out.extend_from_slice(b);
                Ok(true)
            })?;
            Ok((out, over))
        })
        .await?;
    if out.1 {
        return Err(too_large(out.0.len() as u64, max, false));
    }
    Ok((headers, out.0).into_response())
}

fn too_large(bytes: u64, max: u64, up_front: bool) -> ApiError {
    ApiError::TooLarge {
        message: if up_front {
            format!(
                "the range holds at least {bytes} bytes of packets, more than the maximum of {max} bytes; narrow the range or add flow_id or filter"
            )
        } else {
            format!(
                "the matching packets exceed the maximum of {max} bytes; narrow the range or the filter"
            )
        },
        parameter: "to".into(),
    }
}
