//! `GET /api/v1/flows` and `GET /api/v1/flows/{flow_id}`.

use std::sync::Arc;

use axum::{
    extract::{Path, RawQuery, State},
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use tapvault_storage::{FlowPredicate, FlowRecord, ReadStats, read_flows_filtered};

use crate::{
    AppState,
    error::ApiError,
    fields::{FIELDS, Value, field_index},
    filter::{FlowFilter, PagePlan, SortKey},
    params::{ParamSpec, Params},
    time::format_rfc3339,
    window::Window,
};

/// Parameters of `GET /api/v1/flows`.
pub(crate) const FLOWS_PARAMS: &[ParamSpec] = &[
    crate::window::FROM,
    crate::window::TO,
    ParamSpec {
        name: "ip",
        repeated: false,
        schema: r#"{"type":"string"}"#,
        example: "10.0.0.0/8,2001:db8::1",
        description: "Flows with either endpoint in one of these addresses or CIDR blocks (comma-separated, IPv4 or IPv6).",
    },
    ParamSpec {
        name: "client",
        repeated: false,
        schema: r#"{"type":"string"}"#,
        example: "192.168.0.0/16",
        description: "Flows whose client address is in one of these addresses or CIDR blocks (comma-separated).",
    },
    ParamSpec {
        name: "server",
        repeated: false,
        schema: r#"{"type":"string"}"#,
        example: "10.1.2.3",
        description: "Flows whose server address is in one of these addresses or CIDR blocks (comma-separated).",
    },
    ParamSpec {
        name: "port",
        repeated: false,
        schema: r#"{"type":"string"}"#,
        example: "80,443",
        description: "Flows with either port in this comma-separated list.",
    },
    ParamSpec {
        name: "proto",
        repeated: false,
        schema: r#"{"type":"string"}"#,
        example: "tcp",
        description: "Protocols, comma-separated: tcp, udp, icmp, icmpv6, sctp, gre, esp or a number 0 to 255.",
    },
    ParamSpec {
        name: "state",
        repeated: false,
        schema: r#"{"type":"string"}"#,
        example: "reset,refused",
        description: "States, comma-separated: unknown, refused, no_response, incomplete_handshake, established, closed, reset, half_closed, mid_stream, stale, stateless.",
    },
    ParamSpec {
        name: "completeness",
        repeated: false,
        schema: r#"{"type":"string"}"#,
        example: "31,47",
        description: "Exact values of Wireshark's tcp.completeness bitmask (0 to 63), comma-separated.",
    },
    ParamSpec {
        name: "where",
        repeated: true,
        schema: r#"{"type":"string"}"#,
        example: "retransmission_rate>0.05",
        description: "A threshold FIELD OP VALUE on a numeric field; OP is one of > >= < <= = !=, VALUE a number, another numeric field, or NUMBER*FIELD (e.g. rtt_max_us>10*rtt_min_us). Repeat to AND several. Null fields never match.",
    },
    ParamSpec {
        name: "sort",
        repeated: false,
        schema: r#"{"type":"string"}"#,
        example: "retransmission_rate",
        description: "Field to sort by (any field; default first_seen_ns). Ties are broken by flow_id, last_seen_ns, first_seen_ns ascending; nulls sort last in both orders.",
    },
    ParamSpec {
        name: "order",
        repeated: false,
        schema: r#"{"type":"string","enum":["asc","desc"]}"#,
        example: "desc",
        description: "Sort order (default asc).",
    },
    ParamSpec {
        name: "limit",
        repeated: false,
        schema: r#"{"type":"integer","minimum":1}"#,
        example: "100",
        description: "Rows per page (default 100, at most the server's max rows).",
    },
    ParamSpec {
        name: "cursor",
        repeated: false,
        schema: r#"{"type":"string"}"#,
        example: "",
        description: "The next_cursor of the previous page. Repeat the other parameters unchanged; the page's time window is the first page's (relative times are not re-evaluated).",
    },
    ParamSpec {
        name: "format",
        repeated: false,
        schema: r#"{"type":"string","enum":["json","csv"]}"#,
        example: "csv",
        description: "json (default) or csv (a header row of field names, then one row per flow; next page in the X-Next-Cursor header).",
    },
];

/// Parameters of `GET /api/v1/flows/{flow_id}`.
pub(crate) const FLOW_PARAMS: &[ParamSpec] = &[crate::window::FROM_OPT, crate::window::TO_OPT];

/// The cursor: the window of the first page, a fingerprint of the query, the last key.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Cursor {
    v: u8,
    q: u64,
    from: i64,
    to: i64,
    key: SortKey,
}

fn fingerprint(p: &Params) -> u64 {
    let mut pairs: Vec<&(String, String)> = p
        .pairs()
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "cursor" | "limit" | "format" | "from" | "to"))
        .collect();
    pairs.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in pairs {
        for b in k.bytes().chain([0]).chain(v.bytes()).chain([0]) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn encode_cursor(c: &Cursor) -> String {
    let json = serde_json::to_vec(c).unwrap_or_default();
    json.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_cursor(s: &str) -> Option<Cursor> {
    if !s.len().is_multiple_of(2) || s.len() > 4096 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    serde_json::from_slice::<Cursor>(&bytes?)
        .ok()
        .filter(|c| c.v == 1 && c.from <= c.to)
}

/// A page of flows.
pub(crate) struct Page {
    pub(crate) from: i64,
    pub(crate) to: i64,
    pub(crate) flows: Vec<FlowRecord>,
    pub(crate) next: Option<String>,
    pub(crate) stats: ReadStats,
}

pub(crate) async fn list(
    State(st): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref(), FLOWS_PARAMS)?;
    let csv = match p.get("format") {
        None | Some("json") => false,
        Some("csv") => true,
        Some(f) => return Err(ApiError::bad("format", format!("`{f}` is not json or csv"))),
    };
    let st2 = st.clone();
    let page = st
        .blocking(move |keep_going| query(&st2, &p, keep_going))
        .await?;
    Ok(if csv {
        csv_page(&page)
    } else {
        json_page(&page)
    })
}

fn query(st: &AppState, p: &Params, keep_going: &dyn Fn() -> bool) -> Result<Page, ApiError> {
    let filter = FlowFilter::from_params(p)?;
    let sort_name = p.get("sort").unwrap_or("first_seen_ns");
    let sort_field = field_index(sort_name).ok_or_else(|| {
        ApiError::bad(
            "sort",
            format!("`{sort_name}` is not a field of a flow record"),
        )
    })?;
    let ascending = match p.get("order") {
        None | Some("asc") => true,
        Some("desc") => false,
        Some(o) => return Err(ApiError::bad("order", format!("`{o}` is not asc or desc"))),
    };
    let max = st.opts.max_rows as u64;
    let limit = p.int("limit", 1..=max)?.unwrap_or(100.min(max)) as usize;
    // The window is parsed (and checked) even with a cursor, which then overrides it.
    let mut win = Window::from_params(p, st.opts.now_ns(), true)?;
    let fp = fingerprint(p);
    let after = match p.get("cursor") {
        None => None,
        Some(c) => {
            let c = decode_cursor(c).ok_or_else(|| {
                ApiError::bad("cursor", "malformed cursor; use a next_cursor as given")
            })?;
            if c.q != fp {
                return Err(ApiError::bad(
                    "cursor",
                    "the cursor belongs to another query: repeat the first page's filters, sort and order",
                ));
            }
            win = Window {
                from: c.from,
                to: c.to,
            };
            Some(c.key)
        }
    };
    let plan = Arc::new(PagePlan {
        filter,
        sort_field,
        ascending,
        after,
        keep: Some(limit + 1),
    });
    let pred: FlowPredicate = plan.clone().predicate();
    let (mut flows, stats) =
        read_flows_filtered(&st.opts.data_dir, win.from, win.to, Some(&pred), keep_going)?;
    let mut keyed: Vec<(SortKey, FlowRecord)> = flows
        .drain(..)
        .map(|r| (SortKey::of(&r, sort_field), r))
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0, ascending));
    let more = keyed.len() > limit;
    keyed.truncate(limit);
    let next = match (more, keyed.last()) {
        (true, Some((key, _))) => Some(encode_cursor(&Cursor {
            v: 1,
            q: fp,
            from: win.from,
            to: win.to,
            key: key.clone(),
        })),
        _ => None,
    };
    Ok(Page {
        from: win.from,
        to: win.to,
        flows: keyed.into_iter().map(|(_, r)| r).collect(),
        next,
        stats,
    })
}

fn scan_json(s: &ReadStats) -> serde_json::Value {
    serde_json::json!({
        "files_read": s.files_read,
        "files_skipped": s.files_skipped,
        "row_groups_read": s.row_groups_read,
        "row_groups_skipped": s.row_groups_skipped,
    })
}

fn json_page(page: &Page) -> Response {
    let mut body = Vec::with_capacity(256 + page.flows.len() * 1500);
    let head = serde_json::json!({
        "from": format_rfc3339(page.from),
        "to": format_rfc3339(page.to),
        "count": page.flows.len(),
        "next_cursor": page.next,
        "scan": scan_json(&page.stats),
    });
    // The head's fields, then "flows": [...]: records are written straight from the structs.
    let head = head.to_string();
    body.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
    body.extend_from_slice(b",\"flows\":[");
    for (i, r) in page.flows.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        // Serialising a FlowRecord cannot fail (no maps with non-string keys, finite or
        // null floats are written by serde_json as numbers or null).
        let _ = serde_json::to_writer(&mut body, r);
    }
    body.extend_from_slice(b"]}");
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

fn csv_cell(out: &mut String, v: Value<'_>) {
    match v {
        Value::Null => {}
        Value::Int(i) => out.push_str(&i.to_string()),
        Value::Float(f) => out.push_str(&f.to_string()),
        Value::Text(s) => {
            if s.contains([',', '"', '\n', '\r']) {
                out.push('"');
                out.push_str(&s.replace('"', "\"\""));
                out.push('"');
            } else {
                out.push_str(s);
            }
        }
    }
}

fn csv_page(page: &Page) -> Response {
    let mut out = String::new();
    out.push_str(&FIELDS.iter().map(|f| f.name).collect::<Vec<_>>().join(","));
    out.push_str("\r\n");
    for r in &page.flows {
        for i in 0..FIELDS.len() {
            if i > 0 {
                out.push(',');
            }
            csv_cell(&mut out, crate::fields::value(r, i));
        }
        out.push_str("\r\n");
    }
    let mut resp = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        )],
        out,
    )
        .into_response();
    if let Some(n) = page
        .next
        .as_deref()
        .and_then(|n| HeaderValue::from_str(n).ok())
    {
        resp.headers_mut().insert("x-next-cursor", n);
    }
    resp
}

/// A `flow_id` path segment: exactly 16 lower- or upper-case hex digits.
pub(crate) fn parse_flow_id(s: &str, parameter: &str) -> Result<String, ApiError> {
    if s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(ApiError::bad(
            parameter,
            format!(
                "`{}` is not a flow id (16 hex digits)",
                s.chars().take(64).collect::<String>()
            ),
        ))
    }
}

/// The records of one flow id in a window (interim records and the final one), oldest last
/// seen first.
pub(crate) fn records_of(
    st: &AppState,
    flow_id: &str,
    win: Window,
    keep_going: &dyn Fn() -> bool,
) -> Result<Vec<FlowRecord>, ApiError> {
    let id = flow_id.to_owned();
    let pred = FlowPredicate {
        columns: vec!["flow_id".into()],
        eval: Arc::new(move |batch| {
            let col = batch
                .column_by_name("flow_id")
                .and_then(|c| c.as_any().downcast_ref::<arrow_array::StringArray>())
                .ok_or_else(|| arrow_schema::ArrowError::SchemaError("flow_id".into()))?;
            Ok(col.iter().map(|v| Some(v == Some(id.as_str()))).collect())
        }),
    };
    let (mut recs, _) =
        read_flows_filtered(&st.opts.data_dir, win.from, win.to, Some(&pred), keep_going)?;
    recs.sort_by_key(|r| (r.last_seen_ns, r.first_seen_ns));
    Ok(recs)
}

pub(crate) async fn one(
    State(st): State<Arc<AppState>>,
    Path(flow_id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let id = parse_flow_id(&flow_id, "flow_id")?;
    let p = Params::parse(q.as_deref(), FLOW_PARAMS)?;
    let win = Window::optional(&p, st.opts.now_ns())?;
    let st2 = st.clone();
    let id2 = id.clone();
    let recs = st
        .blocking(move |keep_going| records_of(&st2, &id2, win, keep_going))
        .await?;
    let Some(last) = recs.last() else {
        return Err(ApiError::NotFound(format!(
            "no flow `{id}` between {} and {}",
            format_rfc3339(win.from),
            format_rfc3339(win.to)
        )));
    };
    let first = recs
        .iter()
        .map(|r| r.first_seen_ns)
        .min()
        .unwrap_or(last.first_seen_ns);
    let end = recs
        .iter()
        .map(|r| r.last_seen_ns)
        .max()
        .unwrap_or(last.last_seen_ns);
    let pcap_url = format!(
        "/api/v1/pcap?flow_id={id}&from={}&to={}",
        format_rfc3339(first),
        format_rfc3339(end)
    );
    let body = serde_json::json!({
        "flow": last,
        "records": recs.len(),
        "pcap_url": pcap_url,
    });
    Ok(axum::Json(body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_roundtrip() {
        let c = Cursor {
            v: 1,
            q: 42,
            from: 1,
            to: 2,
            key: SortKey {
                value: crate::fields::OwnedValue::Float(0.5),
                flow_id: "00000000000000ab".into(),
                last_seen_ns: 5,
                first_seen_ns: 4,
            },
        };
        let s = encode_cursor(&c);
        let d = decode_cursor(&s).unwrap();
        assert_eq!(d.key, c.key);
        assert!(decode_cursor("zz").is_none());
        assert!(decode_cursor(&s[1..]).is_none());
        assert!(parse_flow_id("00000000000000aB", "x").is_ok());
        for bad in [
            "../../etc/passwd",
            "0000000000000000a",
            "000000000000000g",
            "",
        ] {
            assert!(parse_flow_id(bad, "x").is_err());
        }
    }
}
