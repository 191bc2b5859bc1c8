//! `GET /api/v1/insights`: the top problem connections of a window and the handshake RTT
//! percentiles of its flows.

use std::{cmp::Ordering, sync::Arc};

use axum::{
    Json,
    extract::{RawQuery, State},
    response::{IntoResponse, Response},
};
use hdrhistogram::Histogram;
use tapvault_storage::{FlowRecord, FlowState, read_flows_filtered};

use crate::{
    AppState,
    error::ApiError,
    params::{ParamSpec, Params},
    time::format_rfc3339,
    window::Window,
};

pub(crate) const INSIGHTS_PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "from",
        repeated: false,
        schema: r#"{"type":"string"}"#,
        example: "15m",
        description: "Start of the window (default one hour before `to`): RFC 3339 or relative (15m, 2h).",
    },
    crate::window::TO,
    ParamSpec {
        name: "limit",
        repeated: false,
        schema: r#"{"type":"integer","minimum":1,"maximum":1000}"#,
        example: "10",
        description: "Connections per list (default 10, at most 1000).",
    },
];

/// The lists: name, which flows qualify, and the order (worst first).
type Rank = (
    &'static str,
    fn(&FlowRecord) -> bool,
    fn(&FlowRecord, &FlowRecord) -> Ordering,
);

const LISTS: &[Rank] = &[
    (
        "retransmission_rate",
        |r| r.retransmissions > 0,
        |a, b| {
            b.retransmission_rate
                .total_cmp(&a.retransmission_rate)
                .then(b.retransmissions.cmp(&a.retransmissions))
        },
    ),
    (
        "zero_window_events",
        |r| r.zero_window_events > 0,
        |a, b| b.zero_window_events.cmp(&a.zero_window_events),
    ),
    (
        "resets",
        |r| r.state == FlowState::Reset,
        |a, b| b.rst_count.cmp(&a.rst_count),
    ),
    (
        "refused",
        |r| r.state == FlowState::Refused,
        |a, b| b.syn_count.cmp(&a.syn_count),
    ),
    (
        "slowest_handshakes",
        |r| r.handshake_time_us.is_some(),
        |a, b| {
            b.handshake_time_us
                .unwrap_or(0.0)
                .total_cmp(&a.handshake_time_us.unwrap_or(0.0))
        },
    ),
];

pub(crate) async fn get(
    State(st): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref(), INSIGHTS_PARAMS)?;
    let win = Window::from_params(&p, st.opts.now_ns(), false)?;
    let limit = p.int("limit", 1..=1000)?.unwrap_or(10) as usize;
    let st2 = st.clone();
    let (flows, _) = st
        .blocking(move |kg| {
            read_flows_filtered(&st2.opts.data_dir, win.from, win.to, None, kg)
                .map_err(ApiError::from)
        })
        .await?;
    Ok(Json(insights(&flows, win, limit)).into_response())
}

fn insights(flows: &[FlowRecord], win: Window, limit: usize) -> serde_json::Value {
    let mut top = serde_json::Map::new();
    for (name, qualifies, order) in LISTS {
        let mut list: Vec<&FlowRecord> = flows.iter().filter(|r| qualifies(r)).collect();
        list.sort_by(|a, b| {
            order(a, b)
                .then_with(|| a.flow_id.cmp(&b.flow_id))
                .then(a.last_seen_ns.cmp(&b.last_seen_ns))
        });
        let total = list.len();
        list.truncate(limit);
        top.insert(
            (*name).to_owned(),
            serde_json::json!({ "matching": total, "flows": list }),
        );
    }
    let mut hist = Histogram::<u64>::new(3).ok();
    for us in flows.iter().filter_map(|r| r.handshake_time_us) {
        if let Some(h) = hist.as_mut() {
            // Nanoseconds, at least 1 (an HDR histogram cannot hold 0 with auto-resize off).
            let _ = h.record((us * 1000.0).round().max(1.0) as u64);
        }
    }
    let pct = |q: f64| {
        hist.as_ref()
            .filter(|h| !h.is_empty())
            .map(|h| h.value_at_quantile(q) as f64 / 1000.0)
    };
    serde_json::json!({
        "from": format_rfc3339(win.from),
        "to": format_rfc3339(win.to),
        "flows": flows.len(),
        "handshake_rtt_us": {
            "count": hist.as_ref().map_or(0, |h| h.len()),
            "p50": pct(0.5),
            "p90": pct(0.9),
            "p99": pct(0.99),
            "max": pct(1.0),
        },
        "top": top,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_and_percentiles() {
        let mk = |id: u64, rate: f64, hs: Option<f64>, state: FlowState| FlowRecord {
            flow_id: format!("{id:016x}"),
            retransmissions: u64::from(rate > 0.0),
            retransmission_rate: rate,
            handshake_time_us: hs,
            state,
            ..FlowRecord::default()
        };
        let mut flows: Vec<FlowRecord> = (1..=100)
            .map(|i| mk(i, 0.0, Some(i as f64), FlowState::Closed))
            .collect();
        flows.push(mk(200, 0.5, None, FlowState::Reset));
        flows.push(mk(201, 0.25, None, FlowState::Refused));
        let v = insights(&flows, Window { from: 0, to: 1 }, 1);
        assert_eq!(v["flows"], 102);
        let top = &v["top"];
        assert_eq!(top["retransmission_rate"]["matching"], 2);
        assert_eq!(
            top["retransmission_rate"]["flows"][0]["flow_id"],
            "00000000000000c8"
        );
        assert_eq!(top["resets"]["flows"][0]["flow_id"], "00000000000000c8");
        assert_eq!(top["refused"]["flows"][0]["flow_id"], "00000000000000c9");
        assert_eq!(
            top["slowest_handshakes"]["flows"][0]["handshake_time_us"],
            100.0
        );
        let h = &v["handshake_rtt_us"];
        assert_eq!(h["count"], 100);
        let p50 = h["p50"].as_f64().unwrap();
        let p99 = h["p99"].as_f64().unwrap();
        assert!((p50 - 50.0).abs() < 0.1, "{p50}");
        assert!((p99 - 99.0).abs() < 0.1, "{p99}");
    }
}
