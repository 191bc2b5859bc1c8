//! The OpenAPI 3.0 document, built from the same tables the server uses: the route list,
//! each endpoint's parameter specs and the flow record's fields.

use serde_json::{Map, Value, json};

use crate::{
    fields::{FIELDS, Kind},
    params::ParamSpec,
};

/// How an endpoint is documented.
#[derive(Debug)]
pub(crate) struct RouteDoc {
    pub(crate) path: &'static str,
    pub(crate) summary: &'static str,
    pub(crate) description: &'static str,
    pub(crate) params: &'static [ParamSpec],
    /// Requires the bearer token (when one is configured).
    pub(crate) auth: bool,
    /// Path parameters: (name, schema, description).
    pub(crate) path_params: &'static [(&'static str, &'static str, &'static str)],
    /// Success status, content type and schema (JSON text; `$ref`s into components).
    pub(crate) ok: (&'static str, &'static str, &'static str),
    /// Error statuses it may answer besides 401 (for auth routes).
    pub(crate) errors: &'static [&'static str],
}

fn flow_record_schema() -> Value {
    let mut props = Map::new();
    for f in FIELDS {
        let mut s = match f.kind {
            Kind::Text => json!({"type": "string"}),
            Kind::Int => json!({"type": "integer", "minimum": 0}),
            Kind::Time => json!({"type": "integer", "format": "int64"}),
            Kind::Float => json!({"type": "number"}),
        };
        if f.nullable {
            s["nullable"] = true.into();
        }
        s["description"] = f.description.into();
        props.insert(f.name.to_owned(), s);
    }
    let required: Vec<&str> = FIELDS.iter().map(|f| f.name).collect();
    json!({
        "type": "object",
        "description": "One connection's record: the product's flow schema (JSON, Parquet and API use these names).",
        "properties": props,
        "required": required,
        "additionalProperties": false,
    })
}

fn status_schema() -> Value {
    let obj = |props: Value| json!({"type": "object", "properties": props});
    let int = json!({"type": "integer", "minimum": 0});
    let q = obj(json!({
        "interface": {"type": "string"}, "queue": int, "packets": int, "bytes": int,
        "drops": obj(json!({"kernel": int, "ring_full": int, "fill_ring_empty": int, "invalid_descs": int, "handoff_full": int})),
        "ring_freezes": int,
    }));
    let sh = obj(json!({
        "shard": int, "packets": int, "flows_active": int, "flows_capacity": int,
        "evictions": int, "timeouts": int, "queue_drops": int,
    }));
    let storage = obj(json!({
        "packets_written": int, "records_accepted": int, "records_dropped": int,
        "bytes_written": int, "segments_written": int, "frames_passed_through": int, "flow_files_written": int,
        "packets_dropped": int, "lag_seconds": {"type": "number", "nullable": true},
        "free_bytes": {"type": "integer", "nullable": true}, "paused_disk_full": {"type": "boolean"},
        "errors": int,
    }));
    obj(json!({
        "mode": {"type": "string", "enum": ["live", "history"]},
        "capture_attached": {"type": "boolean"},
        "capture_ready": {"type": "boolean"},
        "not_ready_reason": {"type": "string", "nullable": true},
        "uptime_seconds": {"type": "number"},
        "queues": {"type": "array", "items": q},
        "shards": {"type": "array", "items": sh},
        "storage": storage,
        "interface": {"type": "object", "nullable": true, "properties": {"name": {"type": "string"}, "rx_packets": int, "rx_bytes": int, "rx_dropped": int, "rx_fifo_errors": int, "rx_frame_errors": int, "rx_errors": int, "host_backlog_dropped": {"type": "integer", "nullable": true}, "driver_drops": {"type": "object", "nullable": true, "additionalProperties": int}}},
        "xdp": {"type": "object", "nullable": true, "properties": {"seen": int, "redirected": int, "filtered": int, "no_socket": int, "errors": int, "truncated": int, "meta_failed": int, "metadata": {"type": "string", "enum": ["meta_area", "packet_data"]}}},
    }))
}

fn components() -> Value {
    let flow_list = json!({"type": "array", "items": {"$ref": "#/components/schemas/FlowRecord"}});
    let ranked = json!({"type": "object", "properties": {
        "matching": {"type": "integer"}, "flows": flow_list.clone()}});
    let pct = json!({"type": "number", "nullable": true});
    json!({
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
            "description": "Required on data endpoints when the server has a token configured."}},
        "schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {
                "error": {"type": "string", "description": "What is wrong."},
                "parameter": {"type": "string", "description": "The parameter at fault, when one is."}}},
            "FlowRecord": flow_record_schema(),
            "FlowPage": {"type": "object", "required": ["from", "to", "count", "next_cursor", "scan", "flows"], "properties": {
                "from": {"type": "string", "format": "date-time"},
                "to": {"type": "string", "format": "date-time"},
                "count": {"type": "integer"},
                "next_cursor": {"type": "string", "nullable": true, "description": "Pass as `cursor` for the next page; null on the last page."},
                "scan": {"type": "object", "properties": {
                    "files_read": {"type": "integer"}, "files_skipped": {"type": "integer"},
                    "row_groups_read": {"type": "integer"}, "row_groups_skipped": {"type": "integer"}}},
                "flows": flow_list}},
            "FlowDetail": {"type": "object", "required": ["flow", "records", "pcap_url"], "properties": {
                "flow": {"$ref": "#/components/schemas/FlowRecord"},
                "records": {"type": "integer", "description": "Records stored for this flow id (interim records and the final one); `flow` is the latest."},
                "pcap_url": {"type": "string", "description": "Relative URL of the flow's packets."}}},
            "Insights": {"type": "object", "properties": {
                "from": {"type": "string", "format": "date-time"},
                "to": {"type": "string", "format": "date-time"},
                "flows": {"type": "integer"},
                "handshake_rtt_us": {"type": "object", "properties": {
                    "count": {"type": "integer"}, "p50": pct, "p90": pct, "p99": pct, "max": pct}},
                "top": {"type": "object", "properties": {
                    "retransmission_rate": ranked, "zero_window_events": ranked, "resets": ranked,
                    "refused": ranked, "slowest_handshakes": ranked}}}},
            "Status": status_schema(),
            "Health": {"type": "object", "properties": {"status": {"type": "string"}}},
            "Ready": {"type": "object", "properties": {
                "ready": {"type": "boolean"}, "mode": {"type": "string"},
                "capture_attached": {"type": "boolean"},
                "reasons": {"type": "array", "items": {"type": "string"}}}},
        }
    })
}

fn error_response(desc: &str) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

/// The document.
pub(crate) fn document(routes: &[&RouteDoc]) -> Value {
    let mut paths = Map::new();
    for r in routes {
        let mut params: Vec<Value> = r
            .path_params
            .iter()
            .map(|(name, schema, desc)| {
                json!({"name": name, "in": "path", "required": true, "description": desc,
                    "schema": serde_json::from_str::<Value>(schema).unwrap_or(Value::Null)})
            })
            .collect();
        for p in r.params {
            let schema: Value = serde_json::from_str(p.schema).unwrap_or(Value::Null);
            let mut v = json!({"name": p.name, "in": "query", "required": false,
                "description": p.description});
            if p.repeated {
                v["schema"] = json!({"type": "array", "items": schema});
                v["style"] = "form".into();
                v["explode"] = true.into();
            } else {
                v["schema"] = schema;
            }
            if !p.example.is_empty() {
                v["example"] = if p.repeated {
                    json!([p.example])
                } else {
                    p.example.into()
                };
            }
            params.push(v);
        }
        let (code, ctype, schema) = r.ok;
        let schema: Value = serde_json::from_str(schema).unwrap_or(Value::Null);
        let mut responses = Map::new();
        let mut content = Map::new();
        content.insert(ctype.to_owned(), json!({"schema": schema}));
        if r.path == "/api/v1/flows" {
            content.insert("text/csv".into(), json!({"schema": {"type": "string"}}));
        }
        responses.insert(
            code.to_owned(),
            json!({"description": "Success.", "content": content}),
        );
        for e in r.errors {
            let desc = match *e {
                "400" => "A parameter is malformed, unknown, repeated or out of range.",
                "404" => "Not found.",
                "413" => "The answer would exceed the configured maximum size.",
                "503" => "The request ran out of time, or (readyz) the service is not ready.",
                _ => "Error.",
            };
            responses.insert((*e).to_owned(), error_response(desc));
        }
        if r.auth {
            responses.insert(
                "401".into(),
                error_response("Missing or wrong bearer token (only when a token is configured)."),
            );
        }
        let mut op = json!({
            "summary": r.summary,
            "description": r.description,
            "operationId": r.path.trim_start_matches('/').replace(['/', '{', '}', '.'], "_"),
            "parameters": params,
            "responses": responses,
        });
        if r.auth {
            op["security"] = json!([{"bearer": []}]);
        } else {
            op["security"] = json!([]);
        }
        paths.insert(r.path.to_owned(), json!({"get": op}));
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "tapvault",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Flows and packets by time range, insights, live capture health. Times are RFC 3339 or relative to now (15m, 2h, 1d). Unknown parameters, repeated single parameters and malformed values are answered with 400 and {\"error\", \"parameter\"}. When the server has a bearer token, every endpoint except /healthz, /readyz and this document requires `Authorization: Bearer <token>`.",
        },
        "paths": paths,
        "components": components(),
    })
}
