//! `tapvault status`: the live health of a running tapvault, read from its API
//! (`GET /api/v1/status`) at the configured listen address, with the configured token.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, Result, bail};
use serde_json::Value;

#[derive(clap::Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    config: crate::settings::ConfigArgs,
    /// Ask this address instead of `api.listen` (ADDR:PORT); the configuration is then not
    /// read (give --token-file if the API wants a token).
    #[arg(long, value_name = "ADDR:PORT")]
    url: Option<SocketAddr>,
    /// With --url: the file holding the bearer token.
    #[arg(long, value_name = "FILE", requires = "url")]
    token_file: Option<std::path::PathBuf>,
    /// Print the status document as JSON.
    #[arg(long)]
    json: bool,
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

pub(crate) fn status(a: StatusArgs) -> Result<()> {
    let (addr, token) = match a.url {
        Some(addr) => {
            let token = match &a.token_file {
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .with_context(|| format!("cannot read `{}`", p.display()))?
                        .trim()
                        .to_owned(),
                ),
                None => None,
            };
            (addr, token)
        }
        None => {
            let cfg = a.config.load()?;
            (cfg.api.listen, cfg.api_token().context("api.token_file")?)
        }
    };
    let r = tapvault_api::client::get(
        addr,
        "/api/v1/status",
        token.as_deref(),
        Duration::from_secs(30),
    )
    .map_err(|e| match e {
        tapvault_api::client::Error::Connect { source, .. } => anyhow::Error::new(source).context(
            format!("cannot connect to tapvault's API at {addr} (is it running?)"),
        ),
        e => e.into(),
    })?;
    let body = r.body;
    match r.status {
        200 => {}
        401 => bail!("the API at {addr} wants a bearer token: set api.token or api.token_file"),
        c => bail!(
            "the API at {addr} answered {c}: {}",
            String::from_utf8_lossy(&body)
        ),
    }
    let v: Value = serde_json::from_slice(&body).context("the status is not JSON")?;
    if a.json {
        println!("{v}");
        return Ok(());
    }
    println!(
        "tapvault at {addr}: {} ({}), up {:.0} s",
        v["mode"].as_str().unwrap_or("?"),
        match (v["mode"].as_str(), v["capture_ready"].as_bool()) {
            (Some("history"), _) => "no capture, stored history only",
            (_, Some(true)) => "capture ready",
            _ => "capture NOT ready",
        },
        v["uptime_seconds"].as_f64().unwrap_or(0.0)
    );
    for q in v["queues"].as_array().into_iter().flatten() {
        let d = &q["drops"];
        println!(
            "  queue {} {}: {} packets, {} bytes; drops: ring full {}, fill ring empty {}, \
             invalid {}, hand-off {}",
            n(&q["queue"]),
            q["interface"].as_str().unwrap_or(""),
            n(&q["packets"]),
            n(&q["bytes"]),
            n(&d["ring_full"]),
            n(&d["fill_ring_empty"]),
            n(&d["invalid_descs"]),
            n(&d["handoff_full"])
        );
    }
    if let Some(x) = v["xdp"].as_object() {
        let g = |k: &str| x.get(k).map_or(0, n);
        println!(
            "  xdp: seen {}, redirected {}, filtered {}, no socket {}, errors {}; metadata in {}",
            g("seen"),
            g("redirected"),
            g("filtered"),
            g("no_socket"),
            g("errors"),
            x.get("metadata").and_then(Value::as_str).unwrap_or("?")
        );
    }
    if let Some(x) = v["interface"].as_object() {
        let g = |k: &str| x.get(k).map_or(0, n);
        println!(
            "  interface {}: received {}, dropped {}, fifo {}, frame {}, errors {}",
            x.get("name").and_then(Value::as_str).unwrap_or("?"),
            g("rx_packets"),
            g("rx_dropped"),
            g("rx_fifo_errors"),
            g("rx_frame_errors"),
            g("rx_errors")
        );
        if let Some(b) = x.get("host_backlog_dropped").and_then(Value::as_u64) {
            println!("  host input backlog drops (all interfaces): {b}");
        }
        // The driver's loss counters that moved (all of them are in the JSON).
        let moved: Vec<String> = x
            .get("driver_drops")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter(|(_, v)| v.as_u64().unwrap_or(0) > 0)
            .map(|(k, v)| format!("{k} {}", n(v)))
            .collect();
        if !moved.is_empty() {
            println!("  driver drops: {}", moved.join(", "));
        }
    }
    for s in v["shards"].as_array().into_iter().flatten() {
        println!(
            "  shard {}: {} packets, {}/{} flows, {} evictions, {} timeouts",
            n(&s["shard"]),
            n(&s["packets"]),
            n(&s["flows_active"]),
            n(&s["flows_capacity"]),
            n(&s["evictions"]),
            n(&s["timeouts"])
        );
    }
    let st = &v["storage"];
    println!(
        "  storage: {} bytes written, {} segments ({} frames passed through uncompressed), \
         {} flow files, {} packets not stored, lag {} s, free {} bytes{}",
        n(&st["bytes_written"]),
        n(&st["segments_written"]),
        n(&st["frames_passed_through"]),
        n(&st["flow_files_written"]),
        n(&st["packets_dropped"]),
        st["lag_seconds"]
            .as_f64()
            .map_or("-".into(), |l| format!("{l:.1}")),
        st["free_bytes"]
            .as_u64()
            .map_or("-".into(), |f| f.to_string()),
        if st["paused_disk_full"] == true {
            ", PAUSED: disk full"
        } else {
            ""
        }
    );
    Ok(())
}
