//! tapvault's HTTP API: flows and packets by time range, insights, live capture health and
//! Prometheus metrics, over the storage layout of `tapvault-storage`.
//!
//! The entry points are [`ApiServer::start`] (runs the server on its own thread and tokio
//! runtime: for programs that are not async, such as `tapvault capture`), [`serve`] (for
//! async callers) and [`router`] (the `axum::Router`, for tests and embedding). Live health
//! comes from a [`StatusSource`]; [`NoCapture`] serves history only. [`client::get`] is the
//! small HTTP/1.1 client that `tapvault status` and the tests talk to the API with.
//!
//! Endpoints (documented in full at `GET /api/v1/openapi.json`):
//!
//! | path | what |
//! |---|---|
//! | `/api/v1/flows` | flows overlapping a window, filtered, sorted, paged (JSON or CSV) |
//! | `/api/v1/flows/{flow_id}` | one flow, all fields, with the URL of its packets |
//! | `/api/v1/pcap` | packets of a range, a flow or a tcpdump-like filter, as a pcap file |
//! | `/api/v1/insights` | top problem connections, handshake RTT percentiles |
//! | `/api/v1/status`, `/metrics` | live capture health (JSON, Prometheus text) |
//! | `/healthz`, `/readyz` | liveness, readiness (open, no token needed) |
//! | `/api/v1/openapi.json` | the OpenAPI 3 document (open) |
//!
//! Security: the server listens on 127.0.0.1 by default and refuses a non-loopback address
//! without a bearer token. With a token, every endpoint but `/healthz`, `/readyz` and the
//! OpenAPI document requires `Authorization: Bearer <token>` (compared in constant time).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod bpf;
pub mod client;
mod error;
mod fields;
mod filter;
mod flows;
mod insights;
mod openapi;
mod params;
mod pcap;
mod status;
mod time;
mod window;

use std::{
    collections::BTreeMap,
    future::Future,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderMap, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{MethodRouter, get},
};
pub use error::{Error, Result};
pub use status::{
    InterfaceStatus, NoCapture, QueueDrops, QueueStatus, ShardStatus, StatusSnapshot, StatusSource,
    StorageStatus, XdpCounters,
};
pub use time::parse_duration;

use crate::{error::ApiError, openapi::RouteDoc};

/// The API server's settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ApiOptions {
    /// Address to listen on. Default 127.0.0.1:7480. A non-loopback address requires
    /// [`token`](Self::token).
    pub listen: SocketAddr,
    /// Bearer token required on data endpoints; `None` leaves them open (loopback only).
    pub token: Option<String>,
    /// The storage root (`flows/`, `pcap/` below it).
    pub data_dir: PathBuf,
    /// Longest time range a pcap request without `flow_id` may span. Default 1 hour.
    pub max_pcap_span: Duration,
    /// Largest pcap answer, bytes. Default 1 GiB.
    pub max_pcap_bytes: u64,
    /// Time a request may take to produce its answer (503 after). A streamed pcap body may
    /// take 20 times this. Default 30 s.
    pub request_timeout: Duration,
    /// Largest `limit` of a flows page. Default 10 000.
    pub max_rows: usize,
    max_pcap_span_ns: i64,
}

impl ApiOptions {
    /// Defaults serving `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> ApiOptions {
        ApiOptions {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 7480)),
            token: None,
            data_dir: data_dir.into(),
            max_pcap_span: Duration::from_secs(3600),
            max_pcap_bytes: 1 << 30,
            request_timeout: Duration::from_secs(30),
            max_rows: 10_000,
            max_pcap_span_ns: 0,
        }
    }

    /// Sets [`listen`](Self::listen).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Sets [`token`](Self::token).
    pub fn token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// Sets [`max_pcap_span`](Self::max_pcap_span).
    pub fn max_pcap_span(mut self, d: Duration) -> Self {
        self.max_pcap_span = d;
        self
    }

    /// Sets [`max_pcap_bytes`](Self::max_pcap_bytes).
    pub fn max_pcap_bytes(mut self, n: u64) -> Self {
        self.max_pcap_bytes = n;
        self
    }

    /// Sets [`request_timeout`](Self::request_timeout).
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    /// Sets [`max_rows`](Self::max_rows).
    pub fn max_rows(mut self, n: usize) -> Self {
        self.max_rows = n;
        self
    }

    /// Checks the options: the token rule, ranges, and that the data directory is readable.
    pub fn validate(&self) -> Result<()> {
        let bad = |option, reason: &str| {
            Err(Error::InvalidOption {
                option,
                reason: reason.into(),
            })
        };
        if let Some(t) = &self.token {
            if t.is_empty() {
                return bad("token", "empty");
            }
            if !t.bytes().all(|b| b.is_ascii_graphic()) {
                return bad("token", "use printable ASCII without spaces");
            }
        }
        if !self.listen.ip().is_loopback() && self.token.is_none() {
            return Err(Error::TokenRequired {
                listen: self.listen,
            });
        }
        if self.max_rows == 0 || self.max_rows > 1_000_000 {
            return bad("max_rows", "must be 1 to 1000000");
        }
        if self.max_pcap_bytes < 24 {
            return bad(
                "max_pcap_bytes",
                "must hold at least a pcap header (24 bytes)",
            );
        }
        if self.max_pcap_span.is_zero() || self.max_pcap_span.as_nanos() > i64::MAX as u128 {
            return bad("max_pcap_span", "must be positive and under 292 years");
        }
        if self.request_timeout.is_zero() {
            return bad("request_timeout", "must be positive");
        }
        std::fs::read_dir(&self.data_dir).map_err(|source| Error::DataDir {
            path: self.data_dir.clone(),
            source,
        })?;
        Ok(())
    }

    pub(crate) fn now_ns(&self) -> i64 {
        time::now_ns()
    }
}

/// Shared by the handlers.
pub(crate) struct AppState {
    pub(crate) opts: ApiOptions,
    pub(crate) status: Arc<dyn StatusSource>,
    requests: Mutex<BTreeMap<u16, u64>>,
}

impl AppState {
    pub(crate) fn deadline(&self) -> Instant {
        Instant::now() + self.opts.request_timeout
    }

    /// Runs storage work on a blocking thread; it may poll `keep_going` to stop at the
    /// request's deadline.
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Fn() -> bool) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let deadline = self.deadline();
        tokio::task::spawn_blocking(move || {
            let keep_going = || Instant::now() < deadline;
            f(&keep_going)
        })
        .await
        .map_err(|e| ApiError::internal("worker", e))?
    }

    pub(crate) fn request_counts(&self) -> Vec<(u16, u64)> {
        self.requests
            .lock()
            .map(|m| m.iter().map(|(k, v)| (*k, *v)).collect())
            .unwrap_or_default()
    }
}

const FLOWS_OK: &str = r##"{"$ref":"#/components/schemas/FlowPage"}"##;

static ROUTES: &[RouteDoc] = &[
    RouteDoc {
        path: "/api/v1/flows",
        summary: "Flows overlapping a time window",
        description: "Flows with first_seen <= to and last_seen >= from, filtered (all filters ANDed; comma lists within a parameter ORed), sorted, and paged with an opaque cursor (keyset paging: no row is repeated or skipped across pages, ties included).",
        params: flows::FLOWS_PARAMS,
        auth: true,
        path_params: &[],
        ok: ("200", "application/json", FLOWS_OK),
        errors: &["400", "503"],
    },
    RouteDoc {
        path: "/api/v1/flows/{flow_id}",
        summary: "One flow",
        description: "The latest record of a flow id, all fields, with the URL of its packets.",
        params: flows::FLOW_PARAMS,
        auth: true,
        path_params: &[(
            "flow_id",
            r#"{"type":"string","pattern":"^[0-9a-fA-F]{16}$"}"#,
            "The flow id (16 hex digits).",
        )],
        ok: (
            "200",
            "application/json",
            r##"{"$ref":"#/components/schemas/FlowDetail"}"##,
        ),
        errors: &["400", "404", "503"],
    },
    RouteDoc {
        path: "/api/v1/pcap",
        summary: "Packets as a pcap file",
        description: "Packets of a time range, of one flow, or matching a tcpdump-like filter, as a nanosecond pcap (attachment tapvault-<from>-<to>[-<flow_id>].pcap). Only index-selected frames are read. A range without flow_id may span at most the server's max pcap span (400). The answer may hold at most the server's max pcap bytes: refused up front (413) when the index shows it cannot fit, otherwise streamed, or, when filters make the size unknowable, assembled and refused (413) if it does not fit; a 200 is never truncated.",
        params: pcap::PCAP_PARAMS,
        auth: true,
        path_params: &[],
        ok: (
            "200",
            "application/vnd.tcpdump.pcap",
            r#"{"type":"string","format":"binary"}"#,
        ),
        errors: &["400", "404", "413", "503"],
    },
    RouteDoc {
        path: "/api/v1/insights",
        summary: "Top problem connections and handshake RTT percentiles",
        description: "Per list (retransmission_rate, zero_window_events, resets, refused, slowest_handshakes) the worst connections of the window, and P50/P90/P99 of handshake_time_us over its flows (HDR histogram, 3 significant digits).",
        params: insights::INSIGHTS_PARAMS,
        auth: true,
        path_params: &[],
        ok: (
            "200",
            "application/json",
            r##"{"$ref":"#/components/schemas/Insights"}"##,
        ),
        errors: &["400", "503"],
    },
    RouteDoc {
        path: "/api/v1/status",
        summary: "Live capture health",
        description: "Per queue and per shard packets, bytes, drops by stage, flow table fill, storage lag and free space.",
        params: &[],
        auth: true,
        path_params: &[],
        ok: (
            "200",
            "application/json",
            r##"{"$ref":"#/components/schemas/Status"}"##,
        ),
        errors: &["400"],
    },
    RouteDoc {
        path: "/metrics",
        summary: "Prometheus metrics",
        description: "The status in the Prometheus text exposition format 0.0.4, plus tapvault_api_requests_total by status code.",
        params: &[],
        auth: true,
        path_params: &[],
        ok: ("200", "text/plain", r#"{"type":"string"}"#),
        errors: &["400"],
    },
    RouteDoc {
        path: "/healthz",
        summary: "Liveness",
        description: "200 while the process answers.",
        params: &[],
        auth: false,
        path_params: &[],
        ok: (
            "200",
            "application/json",
            r##"{"$ref":"#/components/schemas/Health"}"##,
        ),
        errors: &["400"],
    },
    RouteDoc {
        path: "/readyz",
        summary: "Readiness",
        description: "200 when the data directory is readable and an attached capture is ready; 503 with the reasons otherwise.",
        params: &[],
        auth: false,
        path_params: &[],
        ok: (
            "200",
            "application/json",
            r##"{"$ref":"#/components/schemas/Ready"}"##,
        ),
        errors: &["400", "503"],
    },
    RouteDoc {
        path: "/api/v1/openapi.json",
        summary: "This document",
        description: "The OpenAPI 3.0 document of the API.",
        params: &[],
        auth: false,
        path_params: &[],
        ok: ("200", "application/json", r#"{"type":"object"}"#),
        errors: &["400"],
    },
];

async fn openapi_doc(
    axum::extract::RawQuery(q): axum::extract::RawQuery,
) -> Result<Response, ApiError> {
    params::Params::parse(q.as_deref(), &[])?;
    let routes: Vec<&RouteDoc> = ROUTES.iter().collect();
    Ok(axum::Json(openapi::document(&routes)).into_response())
}

fn handler(path: &str) -> MethodRouter<Arc<AppState>> {
    match path {
        "/api/v1/flows" => get(flows::list),
        "/api/v1/flows/{flow_id}" => get(flows::one),
        "/api/v1/pcap" => get(pcap::get),
        "/api/v1/insights" => get(insights::get),
        "/api/v1/status" => get(status::status),
        "/metrics" => get(status::metrics),
        "/healthz" => get(status::healthz),
        "/readyz" => get(status::readyz),
        "/api/v1/openapi.json" => get(openapi_doc),
        // Every documented path has a handler (the `routes_match_document` test).
        _ => get(|| async { ApiError::NotFound("no such endpoint".into()) }),
    }
}

/// Constant-time comparison (no early exit on the first differing byte).
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(!x));
    }
    diff == 0
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, cred) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| cred.trim())
        })
        .is_some_and(|cred| same_secret(cred.as_bytes(), token.as_bytes()))
}

async fn auth(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(token) = &st.opts.token
        && !authorized(req.headers(), token)
    {
        return ApiError::Unauthorized.into_response();
    }
    next.run(req).await
}

async fn outer(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let resp = match tokio::time::timeout(st.opts.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::Timeout.into_response(),
    };
    if let Ok(mut m) = st.requests.lock() {
        *m.entry(resp.status().as_u16()).or_default() += 1;
    }
    resp
}

/// The router over `opts.data_dir` (options validated first).
pub fn router(opts: ApiOptions, status: Arc<dyn StatusSource>) -> Result<Router> {
    opts.validate()?;
    let mut opts = opts;
    opts.max_pcap_span_ns = opts.max_pcap_span.as_nanos() as i64;
    let st = Arc::new(AppState {
        opts,
        status,
        requests: Mutex::new(BTreeMap::new()),
    });
    let mut open = Router::new();
    let mut protected = Router::new();
    for r in ROUTES {
        if r.auth {
            protected = protected.route(r.path, handler(r.path));
        } else {
            open = open.route(r.path, handler(r.path));
        }
    }
    let protected = protected.layer(middleware::from_fn_with_state(st.clone(), auth));
    Ok(open
        .merge(protected)
        .fallback(|| async {
            error::json_error(
                StatusCode::NOT_FOUND,
                "no such endpoint; see /api/v1/openapi.json",
                None,
            )
        })
        .layer(middleware::from_fn_with_state(st.clone(), outer))
        .with_state(st))
}

/// Serves until `shutdown` completes (graceful: open requests finish).
pub async fn serve(
    opts: ApiOptions,
    status: Arc<dyn StatusSource>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listen = opts.listen;
    let app = router(opts, status)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Bind { listen, source })?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| Error::Server { source })
}

/// A server running on its own thread and runtime; [`shutdown`](Self::shutdown) stops it
/// (dropping it does too).
#[derive(Debug)]
pub struct ApiServer {
    addr: SocketAddr,
    stop: Arc<tokio::sync::Notify>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl ApiServer {
    /// Validates the options, binds the listen address (errors return here) and starts
    /// serving on a thread with a two-worker tokio runtime.
    pub fn start(opts: ApiOptions, status: Arc<dyn StatusSource>) -> Result<ApiServer> {
        let listen = opts.listen;
        let app = router(opts, status)?;
        let std_listener =
            std::net::TcpListener::bind(listen).map_err(|source| Error::Bind { listen, source })?;
        std_listener
            .set_nonblocking(true)
            .map_err(|source| Error::Bind { listen, source })?;
        let addr = std_listener
            .local_addr()
            .map_err(|source| Error::Bind { listen, source })?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(8)
            .thread_name("tapvault-api")
            .enable_all()
            .build()
            .map_err(|source| Error::Server { source })?;
        let stop = Arc::new(tokio::sync::Notify::new());
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("tapvault-api".into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(std_listener)
                        .map_err(|source| Error::Server { source })?;
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async move { stop2.notified().await })
                        .await
                        .map_err(|source| Error::Server { source })
                })
            })
            .map_err(|source| Error::Server { source })?;
        Ok(ApiServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address (the port is known here when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A function that asks the server to stop (for signal handlers); [`wait`](Self::wait)
    /// then returns.
    pub fn stopper(&self) -> impl Fn() + Send + Sync + 'static {
        let stop = self.stop.clone();
        move || stop.notify_one()
    }

    /// Blocks until the server stops (after [`stopper`](Self::stopper) was called).
    pub fn wait(mut self) -> Result<()> {
        self.join()
    }

    /// Stops the server gracefully and waits for it.
    pub fn shutdown(mut self) -> Result<()> {
        self.stop.notify_one();
        self.join()
    }

    fn join(&mut self) -> Result<()> {
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| {
                Err(Error::Server {
                    source: std::io::Error::other("the API server thread panicked"),
                })
            }),
            None => Ok(()),
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop.notify_one();
        let _ = self.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"ab"));
        assert!(!same_secret(b"", b"a"));
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(authorized(&h, "s3cret"));
        assert!(!authorized(&h, "s3cre"));
        h.insert(header::AUTHORIZATION, "Basic s3cret".parse().unwrap());
        assert!(!authorized(&h, "s3cret"));
    }

    #[test]
    fn refuses_open_non_loopback() {
        let dir = std::env::temp_dir();
        let o = ApiOptions::new(&dir).listen("0.0.0.0:0".parse().unwrap());
        assert!(matches!(o.validate(), Err(Error::TokenRequired { .. })));
        assert!(o.clone().token(Some("t0k".into())).validate().is_ok());
        assert!(
            ApiOptions::new(&dir)
                .listen("[::1]:0".parse().unwrap())
                .validate()
                .is_ok()
        );
        assert!(ApiOptions::new(dir.join("nope-nope")).validate().is_err());
        assert!(
            ApiOptions::new(&dir)
                .token(Some("a b".into()))
                .validate()
                .is_err()
        );
    }

    /// Every documented path has its own handler and every handler is documented; every
    /// documented parameter is one the handler's parser accepts (they share the spec).
    #[test]
    fn routes_match_document() {
        let doc = openapi::document(&ROUTES.iter().collect::<Vec<_>>());
        let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
        assert_eq!(paths.len(), ROUTES.len());
        for r in ROUTES {
            assert!(paths.contains(&&r.path.to_owned()));
        }
        let handled = [
            "/api/v1/flows",
            "/api/v1/flows/{flow_id}",
            "/api/v1/pcap",
            "/api/v1/insights",
            "/api/v1/status",
            "/metrics",
            "/healthz",
            "/readyz",
            "/api/v1/openapi.json",
        ];
        let mut a: Vec<&str> = ROUTES.iter().map(|r| r.path).collect();
        a.sort_unstable();
        let mut b = handled.to_vec();
        b.sort_unstable();
        assert_eq!(a, b);
        let schema = &doc["components"]["schemas"]["FlowRecord"]["properties"];
        let names: Vec<&String> = schema.as_object().unwrap().keys().collect();
        assert_eq!(names.len(), fields::FIELDS.len());
    }
}
