//! `tapvault check`: validates the configuration and reports what this host supports for it
//! (kernel, BPF, AF_XDP and AF_PACKET sockets, the interface's XDP features, queues and RSS,
//! the locked-memory limit, the data directory's free space). Exits non-zero when the
//! configuration is invalid or something the configured source needs is missing.

use std::io::Write;

use anyhow::Result;
use serde_json::{Value, json};
use tapvault_config::{ByteSize, Config, LoadError, Origin, Queues, SourceKind, XdpMode, ZeroCopy};
use tapvault_dataplane::host;

use crate::settings::{ConfigArgs, tapvault_env};

#[derive(clap::Args)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
}

/// One line of the report.
struct Item {
    name: String,
    ok: bool,
    /// A failure makes the check fail (otherwise it is a warning or a fact).
    required: bool,
    detail: String,
}

struct Report {
    items: Vec<Item>,
    facts: serde_json::Map<String, Value>,
}

impl Report {
    fn item(
        &mut self,
        name: impl Into<String>,
        ok: bool,
        required: bool,
        detail: impl Into<String>,
    ) {
        self.items.push(Item {
            name: name.into(),
            ok,
            required,
            detail: detail.into(),
        });
    }
    fn fact(&mut self, k: &str, v: Value) {
        self.facts.insert(k.into(), v);
    }
    fn failed(&self) -> usize {
        self.items.iter().filter(|i| i.required && !i.ok).count()
    }
}

/// Effective capabilities of this process (`CapEff` in /proc/self/status).
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        })
        .unwrap_or(0)
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_IPC_LOCK: u32 = 14;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

fn err_text(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc_eperm) if libc_eperm == 1 || libc_eperm == 13 => {
            format!("{e} (missing capability)")
        }
        _ => e.to_string(),
    }
}

fn human(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{:.1}GiB", b as f64 / (1u64 << 30) as f64)
    } else {
        mib(b)
    }
}

fn mib(b: u64) -> String {
    format!("{:.1}MiB", b as f64 / (1024.0 * 1024.0))
}

fn probe_host(r: &mut Report, cfg: Option<&Config>) {
    let source = cfg.map(|c| c.capture.source);
    let live_xdp = source == Some(SourceKind::AfXdp);
    let kernel = host::kernel_release().unwrap_or_else(|e| format!("unknown ({e})"));
    r.fact("kernel", json!(kernel));
    let caps = effective_caps();
    let names = [
        ("CAP_BPF", CAP_BPF),
        ("CAP_NET_ADMIN", CAP_NET_ADMIN),
        ("CAP_NET_RAW", CAP_NET_RAW),
        ("CAP_IPC_LOCK", CAP_IPC_LOCK),
        ("CAP_PERFMON", CAP_PERFMON),
        ("CAP_SYS_ADMIN", CAP_SYS_ADMIN),
    ];
    let held: Vec<&str> = names
        .iter()
        .filter(|(_, b)| caps & (1 << b) != 0)
        .map(|(n, _)| *n)
        .collect();
    r.fact("capabilities", json!(held));

    let bpf = host::bpf_prog_load();
    r.item(
        "bpf: load an XDP program",
        bpf.is_ok(),
        live_xdp,
        bpf.as_ref().map_or_else(err_text, |()| "ok".into()),
    );
    let xsk = host::af_xdp_socket();
    r.item(
        "af_xdp: create a socket",
        xsk.is_ok(),
        live_xdp,
        xsk.as_ref().map_or_else(err_text, |()| "ok".into()),
    );
    let pkt = host::af_packet_socket();
    r.item(
        "af_packet: create a socket",
        pkt.is_ok(),
        source == Some(SourceKind::AfPacket),
        pkt.as_ref().map_or_else(err_text, |()| "ok".into()),
    );

    // Locked memory: UMEM registration charges RLIMIT_MEMLOCK unless CAP_IPC_LOCK.
    let memlock = host::memlock_limit();
    let ipc_lock = caps & (1 << CAP_IPC_LOCK) != 0;
    match &memlock {
        Ok((soft, hard)) => {
            r.fact(
                "memlock",
                json!({ "soft": soft, "hard": hard, "cap_ipc_lock": ipc_lock }),
            );
        }
        Err(e) => r.fact("memlock", json!({ "error": e.to_string() })),
    }

    let Some(cfg) = cfg else { return };
    let c = &cfg.capture;
    if c.source != SourceKind::File && !c.interface.is_empty() {
        probe_interface(r, cfg, memlock.ok(), ipc_lock);
    }
    // The data directory's file system.
    let dir = &cfg.storage.data_dir;
    let at = dir.ancestors().find(|a| a.exists()).unwrap_or(dir);
    match host::fs_space(at) {
        Ok((free, total)) => {
            r.fact(
                "storage",
                json!({ "data_dir": dir, "free_bytes": free, "total_bytes": total, "min_free_bytes": cfg.storage.min_free.get() }),
            );
            r.item(
                "storage: free space",
                free > cfg.storage.min_free.get(),
                false,
                format!(
                    "{} free of {} on {} (storage.min_free {})",
                    human(free),
                    human(total),
                    at.display(),
                    cfg.storage.min_free
                ),
            );
            let limit = cfg.storage.retention.pcap.max_bytes().unwrap_or(0)
                + cfg.storage.retention.flows.max_bytes().unwrap_or(0);
            if limit > 0 && limit + cfg.storage.min_free.get() > total {
                r.item(
                    "storage: retention fits the disk",
                    false,
                    false,
                    format!(
                        "retention max_bytes total {} plus min_free exceed the file system ({})",
                        ByteSize(limit),
                        ByteSize(total)
                    ),
                );
            }
        }
        Err(e) => r.item("storage: free space", false, false, e.to_string()),
    }
}

fn probe_interface(
    r: &mut Report,
    cfg: &Config,
    memlock: Option<(Option<u64>, Option<u64>)>,
    ipc_lock: bool,
) {
    let c = &cfg.capture;
    let ifname = c.interface.as_str();
    let sys = tapvault_config::host::Host::system();
    if !sys.has_interface(ifname) {
        return; // reported by the host problems
    }
    let mut facts = serde_json::Map::new();
    let driver = host::driver_info(ifname);
    if let Ok(d) = &driver {
        facts.insert("driver".into(), json!(d.driver));
        facts.insert("driver_version".into(), json!(d.version));
        facts.insert("firmware".into(), json!(d.firmware));
        facts.insert("bus_info".into(), json!(d.bus_info));
    }
    let rxq = sys.rx_queues(ifname).unwrap_or(0);
    facts.insert("rx_queues".into(), json!(rxq));
    if let Ok(ch) = host::channels(ifname) {
        facts.insert(
            "channels".into(),
            json!({ "rx": ch.rx, "combined": ch.combined, "max_rx": ch.max_rx, "max_combined": ch.max_combined }),
        );
    }
    // XDP: generic mode works on every interface; driver mode and zero-copy need the
    // driver, which declares them through netdev xdp-features (6.3+).
    let xdp_live = c.source == SourceKind::AfXdp;
    match host::xdp_features(ifname) {
        Ok(f) => {
            facts.insert(
                "xdp".into(),
                json!({ "features": f.names(), "driver_mode": f.native(), "skb_mode": true, "zero_copy": f.zero_copy(), "zc_max_segs": f.zc_max_segs }),
            );
            let modes = if f.native() {
                "driver, skb"
            } else {
                "skb only"
            };
            r.item(
                format!("xdp: attach modes on {ifname}"),
                !(xdp_live && c.xdp_mode == XdpMode::Driver && !f.native()),
                xdp_live,
                format!(
                    "{modes} (features: {})",
                    if f.bits == 0 {
                        "none".into()
                    } else {
                        f.names().join(" ")
                    }
                ),
            );
            r.item(
                format!("xdp: zero-copy AF_XDP on {ifname}"),
                f.zero_copy() || !(xdp_live && c.zero_copy == ZeroCopy::On),
                xdp_live && c.zero_copy == ZeroCopy::On,
                if f.zero_copy() {
                    "supported"
                } else {
                    "not supported: copy mode"
                },
            );
        }
        Err(e) => {
            facts.insert("xdp".into(), json!({ "error": e.to_string() }));
            r.item(
                format!("xdp: features of {ifname}"),
                false,
                false,
                format!("unknown ({e}); generic (skb) mode always works"),
            );
        }
    }
    match host::rss(ifname) {
        Ok(rss) if rss.key.is_empty() && rss.indir.is_empty() => {
            facts.insert(
                "rss".into(),
                json!({ "error": "the driver reports no RSS key or table" }),
            );
        }
        Ok(rss) => {
            let hash: serde_json::Map<String, Value> = host::FLOW_TYPES
                .iter()
                .filter_map(|(n, t)| {
                    host::rx_flow_hash(ifname, *t)
                        .ok()
                        .map(|b| (n.to_string(), json!(host::rxh_names(b))))
                })
                .collect();
            let key: String = rss.key.iter().map(|b| format!("{b:02x}")).collect();
            let queues_used: std::collections::BTreeSet<u32> = rss.indir.iter().copied().collect();
            r.item(
                format!("rss: symmetric hash on {ifname}"),
                rss.symmetric(),
                false,
                format!(
                    "{} hash, key {key}{}, {} buckets over {} queues; {}",
                    rss.hfunc_name(),
                    if rss.input_xfrm != 0 { " with symmetric input transform" } else { "" },
                    rss.indir.len(),
                    queues_used.len(),
                    if rss.symmetric() {
                        "both directions of a connection reach the same queue"
                    } else {
                        "the directions of a connection may reach different queues (flows still meet in one shard; set `ethtool -X IF hkey 6d:5a:...` for per-queue locality)"
                    }
                ),
            );
            facts.insert(
                "rss".into(),
                json!({ "hfunc": rss.hfunc_name(), "key": key, "symmetric": rss.symmetric(), "input_xfrm": rss.input_xfrm, "indirection_size": rss.indir.len(), "flow_hash": hash }),
            );
        }
        Err(e) => {
            facts.insert("rss".into(), json!({ "error": e.to_string() }));
        }
    }
    if xdp_live {
        let queues = match &c.queues {
            Queues::All => rxq,
            Queues::List(l) => l.len() as u32,
        };
        let need = u64::from(c.umem_frames) * u64::from(c.frame_size) * u64::from(queues);
        let soft = memlock.and_then(|(s, _)| s);
        let ok = ipc_lock || soft.is_none_or(|s| s >= need);
        r.item(
            "memlock: room for the UMEM",
            ok,
            true,
            format!(
                "UMEM {} for {queues} queue(s); RLIMIT_MEMLOCK {}{}",
                mib(need),
                soft.map_or_else(|| "unlimited".into(), mib),
                if ipc_lock {
                    ", CAP_IPC_LOCK held (limit not applied)"
                } else {
                    ""
                }
            ),
        );
    }
    r.fact("interface", Value::Object(facts));
}

pub(crate) fn check(a: CheckArgs) -> Result<bool> {
    let file = a.config.file();
    let mut r = Report {
        items: Vec::new(),
        facts: serde_json::Map::new(),
    };
    r.fact(
        "config_file",
        json!(file.as_ref().map(|p| p.display().to_string())),
    );
    let loaded = Config::load(file.as_deref(), tapvault_env(), &a.config.overrides());
    let cfg = match loaded {
        Ok(cfg) => {
            r.item("config: values", true, true, "valid");
            let host = cfg.host_problems();
            r.item(
                "config: on this host",
                host.is_empty(),
                true,
                if host.is_empty() {
                    "valid".into()
                } else {
                    String::new()
                },
            );
            for e in host {
                r.item(format!("config: {}", e.key), false, true, e.reason);
            }
            Some(cfg)
        }
        Err(LoadError::Invalid { problems }) => {
            for p in problems {
                let from = match &p.origin {
                    Origin::Default => String::new(),
                    o => format!(" (from {o})"),
                };
                r.item(
                    format!("config: {}", p.error.key),
                    false,
                    true,
                    format!("{}{from}", p.error.reason),
                );
            }
            None
        }
        Err(e) => {
            let mut msg = e.to_string();
            if let Some(src) = std::error::Error::source(&e) {
                msg.push_str(&format!(": {src}"));
            }
            r.item("config: file", false, true, msg);
            None
        }
    };
    if let Some(c) = &cfg {
        r.fact("source", json!(c.capture.source.as_str()));
        r.fact("interface_name", json!(c.capture.interface));
    }
    probe_host(&mut r, cfg.as_ref());
    let failed = r.failed();
    let mut out = std::io::stdout().lock();
    if a.json {
        let items: Vec<Value> = r
            .items
            .iter()
            .map(|i| json!({ "check": i.name, "ok": i.ok, "required": i.required, "detail": i.detail }))
            .collect();
        let mut doc = r.facts.clone();
        doc.insert("checks".into(), json!(items));
        doc.insert("ok".into(), json!(failed == 0));
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&Value::Object(doc))?
        )?;
    } else {
        writeln!(
            out,
            "config file: {}",
            file.as_ref().map_or_else(
                || "none (built-in defaults)".into(),
                |p| p.display().to_string()
            )
        )?;
        writeln!(out, "kernel: {}", r.facts["kernel"].as_str().unwrap_or("?"))?;
        if let Some(Value::Array(c)) = r.facts.get("capabilities") {
            let c: Vec<&str> = c.iter().filter_map(Value::as_str).collect();
            writeln!(
                out,
                "capabilities: {}",
                if c.is_empty() {
                    "none".into()
                } else {
                    c.join(" ")
                }
            )?;
        }
        if let Some(m) = r.facts.get("memlock")
            && let Some(obj) = m.as_object()
            && obj.contains_key("soft")
        {
            let f = |v: &Value| v.as_u64().map_or_else(|| "unlimited".into(), mib);
            writeln!(
                out,
                "memlock: soft {} hard {}",
                f(&obj["soft"]),
                f(&obj["hard"])
            )?;
        }
        if let Some(i) = r.facts.get("interface") {
            writeln!(
                out,
                "interface {}: driver {}, {} RX queue(s)",
                r.facts
                    .get("interface_name")
                    .and_then(Value::as_str)
                    .unwrap_or("?"),
                i.get("driver").and_then(Value::as_str).unwrap_or("unknown"),
                i.get("rx_queues").and_then(Value::as_u64).unwrap_or(0)
            )?;
            if let Some(fh) = i
                .get("rss")
                .and_then(|r| r.get("flow_hash"))
                .and_then(Value::as_object)
            {
                for (t, fields) in fh {
                    let f: Vec<&str> = fields
                        .as_array()
                        .map(|a| a.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    writeln!(out, "  rx-flow-hash {t}: {}", f.join(" "))?;
                }
            }
        }
        for i in &r.items {
            let tag = match (i.ok, i.required) {
                (true, _) => "ok  ",
                (false, true) => "FAIL",
                (false, false) => "warn",
            };
            writeln!(out, "[{tag}] {}: {}", i.name, i.detail)?;
        }
        writeln!(
            out,
            "{}",
            if failed == 0 {
                "result: ready".to_string()
            } else {
                format!("result: {failed} problem(s) to fix")
            }
        )?;
    }
    Ok(failed == 0)
}
