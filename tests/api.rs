//! The HTTP API over real HTTP on loopback, against storage written by `tapvault analyze
//! --store` from real captures: flows equal the engine's records, filters and paging are
//! exact at their boundaries, pcaps open in tshark and hold the stored packets, auth is
//! enforced, every bad-input class gets its 400, and schemathesis finds no 5xx.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, OnceLock},
    time::Duration,
};

use serde_json::Value;
use tapvault_api::{ApiOptions, ApiServer, NoCapture, QueueStatus, StatusSnapshot, StatusSource};

/// The captures stored together (different years, so their time ranges never mix).
const CAPTURES: &[&str] = &["ssh.pcap", "var-services-std-ports.pcap", "ipv6.pcap"];

struct Fixture {
    dir: PathBuf,
    /// Per capture: the engine's records (from `--json` of the same run that stored them).
    records: BTreeMap<&'static str, Vec<Value>>,
}

/// One store for the whole test binary, written once.
fn fixture() -> Option<&'static Fixture> {
    static F: OnceLock<Option<Fixture>> = OnceLock::new();
    F.get_or_init(|| {
        let shared = crate::util::shared_dir()?;
        // Under the target directory (one store per checkout, rewritten each run).
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("api-store");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut records = BTreeMap::new();
        for cap in CAPTURES {
            let recs = crate::util::analyze_json(
                &shared.join("testdata/captures").join(cap),
                &["--store", dir.to_str().expect("utf-8 temp dir")],
            );
            assert!(!recs.is_empty(), "{cap}");
            records.insert(*cap, recs);
        }
        Some(Fixture { dir, records })
    })
    .as_ref()
}

fn server(dir: &Path, tweak: impl FnOnce(ApiOptions) -> ApiOptions) -> ApiServer {
    let opts = tweak(ApiOptions::new(dir).listen("127.0.0.1:0".parse().expect("addr")));
    ApiServer::start(opts, Arc::new(NoCapture::new())).expect("start the API server")
}

/// A response of [`http_get`].
type Resp = tapvault_api::client::Response;

/// The body as JSON, for the assertions.
trait JsonBody {
    fn json(&self) -> Value;
}

impl JsonBody for Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body[..self.body.len().min(500)])
            )
        })
    }
}

/// A GET over loopback with the API's own client (chunked bodies decoded).
fn http_get(addr: SocketAddr, target: &str, token: Option<&str>) -> Resp {
    tapvault_api::client::get(addr, target, token, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("GET {target}: {e}"))
}

/// RFC 3339 with nanoseconds (formatted here, not by the server's formatter; the civil date
/// from storage's arithmetic, which its unit tests check against known dates).
fn rfc3339(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let frac = ns.rem_euclid(1_000_000_000);
    let (y, m, d) = tapvault_storage::civil_from_days(secs.div_euclid(86_400));
    let tod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:09}Z",
        tod / 3600,
        tod / 60 % 60,
        tod % 60
    )
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes the values of `k=v&k=v` (values already encoded stay as they are).
fn enc_query(q: &str) -> String {
    q.split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !v.contains('%') => format!("{k}={}", enc(v)),
            _ => kv.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn span(recs: &[Value]) -> (i64, i64) {
    let first = recs
        .iter()
        .map(|r| r["first_seen_ns"].as_i64().expect("ns"))
        .min()
        .expect("records");
    let last = recs
        .iter()
        .map(|r| r["last_seen_ns"].as_i64().expect("ns"))
        .max()
        .expect("records");
    (first, last)
}

fn key(r: &Value) -> (String, i64, i64) {
    (
        r["flow_id"].as_str().expect("flow_id").to_owned(),
        r["last_seen_ns"].as_i64().expect("ns"),
        r["first_seen_ns"].as_i64().expect("ns"),
    )
}

/// All flows of a query (following cursors), in the order served.
fn all_pages(addr: SocketAddr, query: &str, limit: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let c = cursor
            .as_deref()
            .map(|c| format!("&cursor={c}"))
            .unwrap_or_default();
        let r = http_get(
            addr,
            &format!("/api/v1/flows?{}&limit={limit}{c}", enc_query(query)),
            None,
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        let flows = v["flows"].as_array().expect("flows");
        assert!(flows.len() <= limit);
        assert_eq!(v["count"].as_u64(), Some(flows.len() as u64));
        out.extend(flows.iter().cloned());
        match v["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(flows.len(), limit, "a short page must be the last");
                cursor = Some(c.to_owned());
            }
            None => return out,
        }
    }
    panic!("paging did not end");
}

#[test]
fn flows_equal_engine_records() {
    let Some(f) = fixture() else { return };
    let srv = server(&f.dir, |o| o);
    let all: Vec<Value> = f.records.values().flatten().cloned().collect();
    for (cap, recs) in &f.records {
        let (from, to) = span(recs);
        // ssh.pcap spans years and overlaps the others: expect every capture's records
        // that overlap the window.
        let in_window: Vec<Value> = all
            .iter()
            .filter(|r| {
                r["first_seen_ns"].as_i64().unwrap() <= to
                    && r["last_seen_ns"].as_i64().unwrap() >= from
            })
            .cloned()
            .collect();
        assert!(in_window.len() >= recs.len());
        let r = http_get(
            srv.local_addr(),
            &format!(
                "/api/v1/flows?from={}&to={}&limit=10000",
                enc(&rfc3339(from)),
                enc(&rfc3339(to))
            ),
            None,
        );
        assert_eq!(r.status, 200, "{cap}");
        assert_eq!(r.header("content-type"), Some("application/json"));
        let v = r.json();
        let mut got: Vec<Value> = v["flows"].as_array().expect("flows").clone();
        let mut want = in_window;
        got.sort_by_key(key);
        want.sort_by_key(key);
        assert_eq!(got.len(), want.len(), "{cap}");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "{cap}: served record differs from the engine's");
        }
        // The default order is first_seen_ns ascending, ties by flow_id.
        let served: Vec<Value> = v["flows"].as_array().expect("flows").clone();
        let mut sorted = served.clone();
        sorted.sort_by_key(|r| {
            let (id, last, first) = key(r);
            (first, id, last)
        });
        assert_eq!(served, sorted, "{cap}: default order");
    }
}

/// The same filters evaluated here, on the engine's records, without the server's code.
fn expected(
    recs: &[Value],
    from: i64,
    to: i64,
    pred: impl Fn(&Value) -> bool,
) -> Vec<(String, i64, i64)> {
    let mut v: Vec<_> = recs
        .iter()
        .filter(|r| {
            r["first_seen_ns"].as_i64().unwrap() <= to
                && r["last_seen_ns"].as_i64().unwrap() >= from
        })
        .filter(|r| pred(r))
        .map(key)
        .collect();
    v.sort();
    v
}

/// A filter evaluated on an engine record.
type Pred<'a> = Box<dyn Fn(&Value) -> bool + 'a>;

#[test]
fn filters_are_exact() {
    let Some(f) = fixture() else { return };
    let srv = server(&f.dir, |o| o);
    let all: Vec<Value> = f.records.values().flatten().cloned().collect();
    let (from, to) = (i64::MIN / 2, i64::MAX / 2);
    let window = format!(
        "from={}&to={}",
        enc(&rfc3339(0)),
        enc(&rfc3339(4_000_000_000_000_000_000))
    );
    let num = |r: &Value, k: &str| r[k].as_f64();
    let s = |r: &Value, k: &str| r[k].as_str().unwrap_or_default().to_owned();
    let in_v4 = |a: &str, net: [u8; 4], bits: u32| {
        a.parse::<std::net::Ipv4Addr>().is_ok_and(|a| {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(a) & mask == u32::from(std::net::Ipv4Addr::from(net)) & mask
        })
    };
    // A client address and a server port that exist, so the filters select something.
    let some = all
        .iter()
        .find(|r| s(r, "proto") == "tcp")
        .expect("a tcp flow");
    let client = s(some, "client_ip");
    let sport = some["server_port"].as_u64().unwrap();
    let v6 = all
        .iter()
        .find(|r| r["ip_version"] == 6)
        .expect("an IPv6 flow");
    let v6_server = s(v6, "server_ip");
    let cases: Vec<(String, Pred)> = vec![
        ("proto=tcp".into(), Box::new(|r| s(r, "proto") == "tcp")),
        (
            "proto=udp,icmp".into(),
            Box::new(|r| ["udp", "icmp"].contains(&s(r, "proto").as_str())),
        ),
        (
            format!("port={sport}"),
            Box::new(move |r| r["client_port"] == sport || r["server_port"] == sport),
        ),
        (format!("client={}", enc(&client)), {
            let c = client.clone();
            Box::new(move |r| s(r, "client_ip") == c)
        }),
        (format!("ip={}", enc(&client)), {
            let c = client.clone();
            Box::new(move |r| s(r, "client_ip") == c || s(r, "server_ip") == c)
        }),
        (
            "ip=192.168.0.0%2F16".into(),
            Box::new(move |r| {
                in_v4(&s(r, "client_ip"), [192, 168, 0, 0], 16)
                    || in_v4(&s(r, "server_ip"), [192, 168, 0, 0], 16)
            }),
        ),
        (format!("server={}", enc(&v6_server)), {
            let c = v6_server.clone();
            Box::new(move |r| s(r, "server_ip") == c)
        }),
        (
            "server=2000::%2F3".into(),
            Box::new(|r| {
                s(r, "server_ip")
                    .parse::<std::net::Ipv6Addr>()
                    .is_ok_and(|a| a.segments()[0] & 0xe000 == 0x2000)
            }),
        ),
        (
            "state=closed,reset".into(),
            Box::new(|r| ["closed", "reset"].contains(&s(r, "state").as_str())),
        ),
        (
            "completeness=31".into(),
            Box::new(|r| r["connection_completeness"] == 31),
        ),
        (
            "where=retransmissions>0".into(),
            Box::new(move |r| num(r, "retransmissions").unwrap() > 0.0),
        ),
        (
            "where=retransmission_rate%3E%3D0.01".into(),
            Box::new(move |r| num(r, "retransmission_rate").unwrap() >= 0.01),
        ),
        (
            "where=rtt_max_us>10*rtt_min_us".into(),
            Box::new(
                move |r| match (num(r, "rtt_max_us"), num(r, "rtt_min_us")) {
                    (Some(a), Some(b)) => a > 10.0 * b,
                    _ => false,
                },
            ),
        ),
        (
            "where=handshake_time_us<1000&where=packets_c2s>=5&proto=tcp".into(),
            Box::new(move |r| {
                num(r, "handshake_time_us").is_some_and(|h| h < 1000.0)
                    && num(r, "packets_c2s").unwrap() >= 5.0
                    && s(r, "proto") == "tcp"
            }),
        ),
        (
            "where=dup_acks!=0".into(),
            Box::new(move |r| num(r, "dup_acks").unwrap() != 0.0),
        ),
    ];
    let mut nonempty = 0;
    for (q, pred) in &cases {
        let got = all_pages(srv.local_addr(), &format!("{window}&{q}"), 10_000);
        let mut got: Vec<_> = got.iter().map(key).collect();
        got.sort();
        let want = expected(&all, from, to, pred);
        assert_eq!(got, want, "filter {q}");
        nonempty += usize::from(!want.is_empty());
    }
    assert!(
        nonempty >= cases.len() - 3,
        "most filters should select something"
    );

    // Time boundaries are inclusive to the nanosecond, on both ends.
    let recs = &f.records["ssh.pcap"];
    for r in recs.iter().take(8) {
        let first = r["first_seen_ns"].as_i64().unwrap();
        let last = r["last_seen_ns"].as_i64().unwrap();
        for (a, b) in [
            (last, last + 5),
            (first - 5, first),
            (last + 1, last + 10),
            (first - 10, first - 1),
        ] {
            let q = format!("from={}&to={}", enc(&rfc3339(a)), enc(&rfc3339(b)));
            let got: BTreeSet<_> = all_pages(srv.local_addr(), &q, 10_000)
                .iter()
                .map(key)
                .collect();
            let want: BTreeSet<_> = expected(&all, a, b, |_| true).into_iter().collect();
            assert_eq!(got, want, "window {a}..{b}");
            assert_eq!(got.contains(&key(r)), a <= last && b >= first);
        }
    }
}

#[test]
fn paging_is_exact_with_ties() {
    let Some(f) = fixture() else { return };
    let srv = server(&f.dir, |o| o);
    let all: Vec<Value> = f.records.values().flatten().cloned().collect();
    let window = format!(
        "from={}&to={}",
        enc(&rfc3339(0)),
        enc(&rfc3339(4_000_000_000_000_000_000))
    );
    for sort in [
        "state",
        "retransmissions",
        "rtt_min_us",
        "client_ip",
        "first_seen_ns",
    ] {
        for order in ["asc", "desc"] {
            let q = format!("{window}&sort={sort}&order={order}");
            let one = all_pages(srv.local_addr(), &q, 10_000);
            assert_eq!(one.len(), all.len());
            let limits: &[usize] = if sort == "state" && order == "asc" {
                &[1, 2, 7]
            } else {
                &[3, 7]
            };
            for &limit in limits {
                let paged = all_pages(srv.local_addr(), &q, limit);
                assert_eq!(
                    paged.iter().map(key).collect::<Vec<_>>(),
                    one.iter().map(key).collect::<Vec<_>>(),
                    "sort={sort} order={order} limit={limit}"
                );
            }
            // The order is the sort field (nulls last), ties by flow_id, last, first.
            for w in one.windows(2) {
                let (a, b) = (&w[0][sort], &w[1][sort]);
                if a.is_null() {
                    assert!(b.is_null(), "{sort}: nulls last");
                    continue;
                }
                if b.is_null() {
                    continue;
                }
                let ord = match (a.as_f64(), b.as_f64()) {
                    (Some(x), Some(y)) => x.partial_cmp(&y).unwrap(),
                    _ => a.as_str().cmp(&b.as_str()),
                };
                let ord = if order == "desc" { ord.reverse() } else { ord };
                assert!(ord.is_le(), "{sort} {order}: {a} then {b}");
                if ord.is_eq() {
                    assert!(key(&w[0]) < key(&w[1]), "tie order");
                }
            }
        }
    }
    // CSV pages: the cursor is in X-Next-Cursor, rows match the JSON.
    let r = http_get(
        srv.local_addr(),
        &format!("/api/v1/flows?{window}&format=csv&limit=5"),
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/csv; charset=utf-8"));
    let text = String::from_utf8(r.body.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6);
    assert!(lines[0].starts_with("flow_id,first_seen_ns,last_seen_ns,"));
    let cur = r.header("x-next-cursor").expect("next cursor").to_owned();
    let r2 = http_get(
        srv.local_addr(),
        &format!("/api/v1/flows?{window}&format=csv&limit=5&cursor={cur}"),
        None,
    );
    let first_json = all_pages(srv.local_addr(), &window, 10_000);
    let second: Vec<&str> = std::str::from_utf8(&r2.body)
        .unwrap()
        .lines()
        .skip(1)
        .collect();
    assert_eq!(
        second[0].split(',').next(),
        first_json[5]["flow_id"].as_str()
    );
}

fn pcap_records(bytes: &[u8]) -> Vec<(i64, Vec<u8>)> {
    assert!(bytes.len() >= 24, "pcap header");
    assert_eq!(
        &bytes[..4],
        &0xa1b2_3c4du32.to_le_bytes(),
        "nanosecond pcap magic"
    );
    let mut out = Vec::new();
    let mut pos = 24;
    let w = |p: usize| u32::from_le_bytes([bytes[p], bytes[p + 1], bytes[p + 2], bytes[p + 3]]);
    while pos < bytes.len() {
        let ts = i64::from(w(pos)) * 1_000_000_000 + i64::from(w(pos + 4));
        let cap = w(pos + 8) as usize;
        out.push((ts, bytes[pos + 16..pos + 16 + cap].to_vec()));
        pos += 16 + cap;
    }
    assert_eq!(pos, bytes.len());
    out
}

fn tshark_count(file: &Path, display_filter: Option<&str>) -> usize {
    let tshark = crate::util::tshark().expect("tshark");
    let mut c = Command::new(tshark);
    c.arg("-r")
        .arg(file)
        .args(["-T", "fields", "-e", "frame.number"]);
    if let Some(f) = display_filter {
        c.args(["-Y", f]);
    }
    let out = c.output().expect("run tshark");
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn pcap_opens_in_tshark_and_equals_stored_packets() {
    let Some(f) = fixture() else { return };
    if crate::util::tshark().is_none() {
        return;
    }
    let srv = server(&f.dir, |o| {
        o.max_pcap_span(Duration::from_secs(365 * 86_400))
    });
    let shared = crate::util::shared_dir().expect("shared");
    let tmp = f.dir.join("out");
    std::fs::create_dir_all(&tmp).unwrap();
    let recs = &f.records["var-services-std-ports.pcap"];
    let (from, to) = span(recs);
    // The whole capture's range (37 s; no other capture overlaps it).
    let q = format!("from={}&to={}", enc(&rfc3339(from)), enc(&rfc3339(to)));
    let r = http_get(srv.local_addr(), &format!("/api/v1/pcap?{q}"), None);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.tcpdump.pcap")
    );
    let cd = r.header("content-disposition").expect("disposition");
    assert!(
        cd.starts_with("attachment; filename=\"tapvault-") && cd.ends_with(".pcap\""),
        "{cd}"
    );
    let (stored, _) = tapvault_storage::pcap::read_packets(&f.dir, from, to, None).expect("stored");
    assert!(
        r.body == stored,
        "served pcap differs from the stored packets"
    );
    let file = tmp.join("all.pcap");
    std::fs::write(&file, &r.body).unwrap();
    let original = shared.join("testdata/captures/var-services-std-ports.pcap");
    assert_eq!(tshark_count(&file, None), tshark_count(&original, None));

    // tcpdump-like filters against tshark's display filters on the original capture.
    let some = recs.iter().find(|r| r["proto"] == "tcp").unwrap();
    let client = some["client_ip"].as_str().unwrap();
    let port = some["client_port"].as_u64().unwrap();
    for (filter, display) in [
        (format!("host {client}"), format!("ip.addr == {client}")),
        (
            format!("src host {client} and tcp"),
            format!("ip.src == {client} && tcp"),
        ),
        (format!("tcp port {port}"), format!("tcp.port == {port}")),
        (
            format!("not (tcp port {port}) and tcp"),
            format!("!(tcp.port == {port}) && tcp"),
        ),
        ("udp or icmp".to_owned(), "udp || icmp".to_owned()),
        (
            "net 0.0.0.0/0 and not port 22".to_owned(),
            "ip && !(tcp.port == 22 || udp.port == 22)".to_owned(),
        ),
    ] {
        let r = http_get(
            srv.local_addr(),
            &format!("/api/v1/pcap?{q}&filter={}", enc(&filter)),
            None,
        );
        assert_eq!(
            r.status,
            200,
            "{filter}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let file = tmp.join("filtered.pcap");
        std::fs::write(&file, &r.body).unwrap();
        let want = tshark_count(&original, Some(&display));
        assert_eq!(pcap_records(&r.body).len(), want, "{filter} vs {display}");
        assert_eq!(tshark_count(&file, None), want, "{filter}: tshark reads it");
    }

    // One flow through its record's pcap_url: its packets, as stored, in tshark.
    let recs = &f.records["ssh.pcap"];
    let mut checked = 0;
    for rec in recs {
        let id = rec["flow_id"].as_str().unwrap();
        let r = http_get(srv.local_addr(), &format!("/api/v1/flows/{id}"), None);
        assert_eq!(r.status, 200);
        let v = r.json();
        let url = v["pcap_url"].as_str().unwrap().to_owned();
        let r = http_get(srv.local_addr(), &url, None);
        assert_eq!(r.status, 200, "{url}");
        let cd = r.header("content-disposition").unwrap();
        assert!(cd.contains(&format!("-{id}.pcap")), "{cd}");
        let record: tapvault_storage::FlowRecord =
            serde_json::from_value(v["flow"].clone()).unwrap();
        let hash = tapvault_dataplane::flow::key::FlowKey::of_record(&record)
            .unwrap()
            .hash64();
        let (stored, _) = tapvault_storage::pcap::read_packets(
            &f.dir,
            record.first_seen_ns,
            record.last_seen_ns,
            Some(hash),
        )
        .unwrap();
        assert!(
            r.body == stored,
            "flow {id}: served packets differ from stored"
        );
        let n = pcap_records(&r.body).len() as u64;
        assert_eq!(
            n,
            record.packets_c2s + record.packets_s2c + record.icmp_errors,
            "flow {id}"
        );
        if checked < 3 {
            let file = tmp.join("flow.pcap");
            std::fs::write(&file, &r.body).unwrap();
            assert_eq!(tshark_count(&file, None) as u64, n);
        }
        checked += 1;
    }
    assert_eq!(checked, recs.len());
}

#[test]
fn flow_by_id_returns_the_record() {
    let Some(f) = fixture() else { return };
    let srv = server(&f.dir, |o| o);
    for recs in f.records.values() {
        for rec in recs {
            let id = rec["flow_id"].as_str().unwrap();
            let r = http_get(
                srv.local_addr(),
                &format!("/api/v1/flows/{}", id.to_uppercase()),
                None,
            );
            assert_eq!(r.status, 200);
            let v = r.json();
            // The latest record of the id (interim records share it).
            let latest = recs
                .iter()
                .filter(|x| x["flow_id"] == rec["flow_id"])
                .max_by_key(|x| (x["last_seen_ns"].as_i64(), x["first_seen_ns"].as_i64()))
                .unwrap();
            assert_eq!(&v["flow"], latest);
        }
    }
    let r = http_get(srv.local_addr(), "/api/v1/flows/0000000000000000", None);
    assert_eq!(r.status, 404);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("0000000000000000")
    );
}

#[test]
fn auth_is_enforced() {
    let Some(f) = fixture() else { return };
    let srv = server(&f.dir, |o| o.token(Some("s3cret-t0ken".into())));
    let a = srv.local_addr();
    for path in [
        "/api/v1/flows?from=1h",
        "/api/v1/pcap?from=1m",
        "/api/v1/insights",
        "/api/v1/status",
        "/metrics",
        "/api/v1/flows/0000000000000000",
    ] {
        let r = http_get(a, path, None);
        assert_eq!(r.status, 401, "{path} without a token");
        assert!(
            r.header("www-authenticate")
                .is_some_and(|h| h.starts_with("Bearer"))
        );
        assert_eq!(
            http_get(a, path, Some("wrong")).status,
            401,
            "{path} wrong token"
        );
        assert_eq!(
            http_get(a, path, Some("s3cret-t0ke")).status,
            401,
            "{path} prefix"
        );
        let ok = http_get(a, path, Some("s3cret-t0ken"));
        assert!(
            ok.status != 401 && ok.status < 500,
            "{path} with the token: {}",
            ok.status
        );
    }
    for open in ["/healthz", "/readyz", "/api/v1/openapi.json"] {
        assert_eq!(http_get(a, open, None).status, 200, "{open}");
    }
    // Non-loopback without a token: refused, by the library and the CLI.
    let err = ApiServer::start(
        ApiOptions::new(&f.dir).listen("0.0.0.0:0".parse().unwrap()),
        Arc::new(NoCapture::new()),
    )
    .expect_err("must refuse");
    assert!(err.to_string().contains("without a bearer token"), "{err}");
    let (ok, _, stderr) = crate::util::run(&[
        std::ffi::OsStr::new("serve"),
        std::ffi::OsStr::new("--data-dir"),
        f.dir.as_os_str(),
        std::ffi::OsStr::new("--listen"),
        std::ffi::OsStr::new("0.0.0.0:0"),
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without a bearer token"),
        "{stderr}"
    );
}

#[test]
fn bad_inputs_get_400() {
    let Some(f) = fixture() else { return };
    let srv = server(&f.dir, |o| o.max_pcap_bytes(4096).max_rows(50));
    let a = srv.local_addr();
    let (from, to) = span(&f.records["ssh.pcap"]);
    let w = format!("from={}&to={}", enc(&rfc3339(from)), enc(&rfc3339(to)));
    let first = all_pages(a, &w, 5);
    let cursor = {
        let r = http_get(a, &format!("/api/v1/flows?{w}&limit=2"), None).json();
        r["next_cursor"].as_str().unwrap().to_owned()
    };
    let cases: Vec<(String, &str, &str)> = vec![
        (
            "/api/v1/flows?from=1h&bogus=1".into(),
            "bogus",
            "unknown parameter",
        ),
        (
            "/api/v1/flows?from=1h&from=2h".into(),
            "from",
            "more than once",
        ),
        ("/api/v1/flows".into(), "from", "missing `from`"),
        ("/api/v1/flows?from=yesterday".into(), "from", "not a time"),
        (
            "/api/v1/flows?from=2023-02-30T00:00:00Z".into(),
            "from",
            "no such date",
        ),
        (
            "/api/v1/flows?from=2023-01-01T00:00:00".into(),
            "from",
            "missing UTC offset",
        ),
        ("/api/v1/flows?from=1h&to=2h".into(), "to", "inverted range"),
        (
            "/api/v1/flows?from=1h&sort=nope".into(),
            "sort",
            "not a field",
        ),
        (
            "/api/v1/flows?from=1h&order=up".into(),
            "order",
            "not asc or desc",
        ),
        ("/api/v1/flows?from=1h&limit=0".into(), "limit", "1 to 50"),
        ("/api/v1/flows?from=1h&limit=51".into(), "limit", "1 to 50"),
        (
            "/api/v1/flows?from=1h&format=xml".into(),
            "format",
            "not json or csv",
        ),
        (
            "/api/v1/flows?from=1h&ip=10.0.0.1%2F8".into(),
            "ip",
            "host bits",
        ),
        (
            "/api/v1/flows?from=1h&client=nope".into(),
            "client",
            "not an IPv4 or IPv6",
        ),
        (
            "/api/v1/flows?from=1h&port=70000".into(),
            "port",
            "not a port",
        ),
        (
            "/api/v1/flows?from=1h&proto=tcpp".into(),
            "proto",
            "not a protocol",
        ),
        (
            "/api/v1/flows?from=1h&state=weird".into(),
            "state",
            "not a state",
        ),
        (
            "/api/v1/flows?from=1h&completeness=64".into(),
            "completeness",
            "0 to 63",
        ),
        (
            "/api/v1/flows?from=1h&where=retransmission_rate".into(),
            "where",
            "no comparison",
        ),
        (
            "/api/v1/flows?from=1h&where=nope%3E1".into(),
            "where",
            "unknown field `nope`",
        ),
        (
            "/api/v1/flows?from=1h&where=client_ip%3D1".into(),
            "where",
            "is text",
        ),
        (
            "/api/v1/flows?from=1h&where=rtt_max_us%3Ex".into(),
            "where",
            "must be a number",
        ),
        (
            "/api/v1/flows?from=1h&cursor=zz".into(),
            "cursor",
            "malformed cursor",
        ),
        (
            format!("/api/v1/flows?{w}&proto=udp&cursor={cursor}"),
            "cursor",
            "another query",
        ),
        ("/api/v1/flows/xyz".into(), "flow_id", "not a flow id"),
        (
            "/api/v1/flows/..%2F..%2Fetc%2Fpasswd".into(),
            "flow_id",
            "not a flow id",
        ),
        (
            "/api/v1/flows/00000000000000000".into(),
            "flow_id",
            "not a flow id",
        ),
        (
            "/api/v1/flows/0000000000000000?bogus=1".into(),
            "bogus",
            "unknown parameter",
        ),
        ("/api/v1/pcap".into(), "from", "missing `from`"),
        ("/api/v1/pcap?from=1d".into(), "to", "more than the maximum"),
        (
            "/api/v1/pcap?from=1m&filter=host".into(),
            "filter",
            "after `host`",
        ),
        (
            "/api/v1/pcap?from=1m&filter=tcp%20and%20(port%2080".into(),
            "filter",
            "missing `)`",
        ),
        (
            "/api/v1/pcap?from=1m&filter=host%20example.com".into(),
            "filter",
            "not an IPv4 or IPv6 address",
        ),
        (
            "/api/v1/pcap?from=1m&filter=bogus".into(),
            "filter",
            "unknown primitive",
        ),
        ("/api/v1/pcap?flow_id=12".into(), "flow_id", "not a flow id"),
        ("/api/v1/insights?limit=x".into(), "limit", "not an integer"),
        (
            "/api/v1/insights?from=5m&to=10m".into(),
            "to",
            "inverted range",
        ),
        ("/api/v1/status?x=1".into(), "x", "takes no parameters"),
        ("/metrics?x=1".into(), "x", "takes no parameters"),
        ("/healthz?x=1".into(), "x", "takes no parameters"),
    ];
    for (path, param, msg) in &cases {
        let r = http_get(a, path, None);
        assert_eq!(
            r.status,
            400,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let v = r.json();
        assert_eq!(v["parameter"].as_str(), Some(*param), "{path}: {v}");
        assert!(v["error"].as_str().unwrap().contains(msg), "{path}: {v}");
    }
    // Size bound: a whole capture does not fit in 4096 bytes, with or without a filter.
    let (vf, vt) = span(&f.records["var-services-std-ports.pcap"]);
    let vw = format!("from={}&to={}", enc(&rfc3339(vf)), enc(&rfc3339(vt)));
    for extra in ["", "&filter=tcp"] {
        let r = http_get(a, &format!("/api/v1/pcap?{vw}{extra}"), None);
        assert_eq!(r.status, 413, "{extra}");
        assert!(
            r.json()["error"]
                .as_str()
                .unwrap()
                .contains("maximum of 4096 bytes")
        );
    }
    // A tiny flow does fit.
    let small = f.records["ssh.pcap"]
        .iter()
        .min_by_key(|r| r["bytes_c2s"].as_u64().unwrap() + r["bytes_s2c"].as_u64().unwrap())
        .unwrap();
    let r = http_get(
        a,
        &format!(
            "/api/v1/pcap?flow_id={}",
            small["flow_id"].as_str().unwrap()
        ),
        None,
    );
    assert_eq!(r.status, 200);
    assert!(!first.is_empty());
    let r = http_get(a, "/api/v1/nothing", None);
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].is_string());
}

#[test]
fn insights_and_status() {
    let Some(f) = fixture() else { return };
    struct Live;
    impl StatusSource for Live {
        fn snapshot(&self) -> StatusSnapshot {
            let mut s = StatusSnapshot::new("live");
            s.capture_attached = true;
            s.capture_ready = false;
            s.not_ready_reason = Some("XDP not attached yet".into());
            let mut q = QueueStatus::default();
            q.interface = "eth0".into();
            q.queue = 2;
            q.packets = 1234;
            q.drops.ring_full = 7;
            s.queues.push(q);
            s
        }
    }
    let recs = &f.records["var-services-std-ports.pcap"];
    let (from, to) = span(recs);
    let srv = server(&f.dir, |o| o);
    let q = format!(
        "from={}&to={}&limit=3",
        enc(&rfc3339(from)),
        enc(&rfc3339(to))
    );
    let v = http_get(srv.local_addr(), &format!("/api/v1/insights?{q}"), None).json();
    assert_eq!(v["flows"].as_u64(), Some(recs.len() as u64));
    let mut hs: Vec<f64> = recs
        .iter()
        .filter_map(|r| r["handshake_time_us"].as_f64())
        .collect();
    hs.sort_by(f64::total_cmp);
    assert_eq!(
        v["handshake_rtt_us"]["count"].as_u64(),
        Some(hs.len() as u64)
    );
    if !hs.is_empty() {
        // HDR histogram, 3 significant digits: within 0.1 % of the exact nearest-rank value.
        let p50 = hs[(hs.len() as f64 * 0.5).ceil() as usize - 1];
        let got = v["handshake_rtt_us"]["p50"].as_f64().unwrap();
        assert!(
            (got - p50).abs() <= p50 * 0.002 + 0.001,
            "p50 {got} vs {p50}"
        );
        let slowest = &v["top"]["slowest_handshakes"]["flows"][0]["handshake_time_us"];
        assert_eq!(slowest.as_f64(), hs.last().copied());
    }
    let resets = recs.iter().filter(|r| r["state"] == "reset").count();
    assert_eq!(v["top"]["resets"]["matching"].as_u64(), Some(resets as u64));

    let s = http_get(srv.local_addr(), "/api/v1/status", None).json();
    assert_eq!(s["mode"], "history");
    assert_eq!(http_get(srv.local_addr(), "/readyz", None).status, 200);
    drop(srv);

    let live = ApiServer::start(
        ApiOptions::new(&f.dir).listen("127.0.0.1:0".parse().unwrap()),
        Arc::new(Live),
    )
    .unwrap();
    let r = http_get(live.local_addr(), "/readyz", None);
    assert_eq!(r.status, 503);
    assert!(
        r.json()["reasons"][0]
            .as_str()
            .unwrap()
            .contains("XDP not attached")
    );
    let m = http_get(live.local_addr(), "/metrics", None);
    assert_eq!(m.status, 200);
    let text = String::from_utf8(m.body).unwrap();
    assert!(text.contains("# TYPE tapvault_queue_packets_total counter"));
    assert!(text.contains("tapvault_queue_packets_total{interface=\"eth0\",queue=\"2\"} 1234"));
    assert!(text.contains(
        "tapvault_queue_drops_total{interface=\"eth0\",queue=\"2\",stage=\"ring_full\"} 7"
    ));
    live.shutdown().unwrap();
}

/// The document matches what is served: every path answers, every documented query
/// parameter is accepted, an undocumented one is refused, and the flow schema's fields are
/// the served record's.
#[test]
fn openapi_is_true() {
    let Some(f) = fixture() else { return };
    let srv = server(&f.dir, |o| o);
    let a = srv.local_addr();
    let doc = http_get(a, "/api/v1/openapi.json", None).json();
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 9);
    for (path, item) in paths {
        let concrete = path.replace(
            "{flow_id}",
            f.records["ssh.pcap"][0]["flow_id"].as_str().unwrap(),
        );
        let base = if concrete.contains("/flows") && !concrete.contains("/flows/")
            || concrete.ends_with("/pcap")
        {
            "from=1m".to_owned()
        } else {
            String::new()
        };
        let r = http_get(a, &format!("{concrete}?{base}"), None);
        assert_ne!(r.status, 404, "{path} is documented but not served");
        assert!(r.status < 500, "{path}");
        for p in item["get"]["parameters"].as_array().unwrap() {
            if p["in"] != "query" || p["name"] == "cursor" {
                continue;
            }
            let name = p["name"].as_str().unwrap();
            let ex = match &p["example"] {
                Value::Array(v) => v[0].as_str().unwrap().to_owned(),
                Value::String(s) => s.clone(),
                other => panic!("{path} {name}: example {other}"),
            };
            let q = if name == "from" || base.is_empty() {
                format!("{name}={}", enc(&ex))
            } else {
                format!("{base}&{name}={}", enc(&ex))
            };
            let r = http_get(a, &format!("{concrete}?{q}"), None);
            assert!(
                r.status == 200 || r.status == 404,
                "{path} {name}={ex}: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
        let r = http_get(a, &format!("{concrete}?undocumented=1"), None);
        assert_eq!(r.status, 400, "{path} accepts an undocumented parameter");
    }
    let schema = doc["components"]["schemas"]["FlowRecord"]["properties"]
        .as_object()
        .unwrap();
    let rec = f.records["ssh.pcap"][0].as_object().unwrap();
    let a_keys: BTreeSet<&String> = schema.keys().collect();
    let b_keys: BTreeSet<&String> = rec.keys().collect();
    assert_eq!(a_keys, b_keys);
    // A served path that is not documented answers 404.
    assert_eq!(http_get(a, "/api/v2/flows", None).status, 404);
}

/// schemathesis (PyPI) against the live document: no 5xx, bounded in time.
#[test]
fn schemathesis_finds_no_server_errors() {
    let Some(f) = fixture() else { return };
    // schemathesis installs its CLI as `st`; make sure that is what we found.
    let st = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("st"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .find(|p| {
            p.is_file()
                && Command::new(p).arg("--help").output().is_ok_and(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .to_lowercase()
                        .contains("property-based api testing")
                })
        });
    let Some(st) = st else {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but schemathesis is not installed (scripts/setup.sh installs it)");
        }
        eprintln!("SKIPPED: schemathesis (`st`) is not installed; run scripts/setup.sh");
        return;
    };
    let srv = server(&f.dir, |o| o.request_timeout(Duration::from_secs(10)));
    let url = format!("http://{}/api/v1/openapi.json", srv.local_addr());
    // st writes a .schemathesis/ cache where it runs: keep it out of the checkout.
    let cwd = f.dir.join("schemathesis");
    std::fs::create_dir_all(&cwd).unwrap();
    let out = Command::new("timeout")
        .current_dir(&cwd)
        .args(["110", st.to_str().unwrap(), "run", &url])
        .args(["--checks", "not_a_server_error", "--max-examples", "40"])
        .args(["--seed", "1", "--request-timeout", "20"])
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis failed ({:?}):\n{stdout}\n{stderr}",
        out.status.code()
    );
}
