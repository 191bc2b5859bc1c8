//! `[api]` and `[log]`.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{ByteSize, HumanDuration, Problems};

/// The shortest bearer token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// `[api]`: the HTTP API (flows, pcap extraction, health, status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address and port to listen on. Anything but a loopback address needs `token` or
    /// `token_file`. Default: `"127.0.0.1:8080"`.
    pub listen: SocketAddr,
    /// Bearer token every request must carry (`Authorization: Bearer TOKEN`), at least 16
    /// characters. Prefer `token_file`, which keeps the secret out of the configuration.
    /// Default: empty (no token).
    pub token: String,
    /// File holding the bearer token (surrounding white space ignored), an absolute path.
    /// Default: empty (none).
    pub token_file: PathBuf,
    /// Longest time range one pcap download may cover. Default: `"1h"`.
    pub max_pcap_span: HumanDuration,
    /// Largest pcap one download may return; larger answers are cut there and say so.
    /// Default: `"1GiB"`.
    pub max_pcap_bytes: ByteSize,
    /// Requests taking longer are aborted, 1s to 1h. Default: `"30s"`.
    pub request_timeout: HumanDuration,
    /// Most flow records one query returns, 1 to 10000000. Default: 100000.
    pub max_rows: u64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            token: String::new(),
            token_file: PathBuf::new(),
            max_pcap_span: HumanDuration::from_secs(3600),
            max_pcap_bytes: ByteSize::gib(1),
            request_timeout: HumanDuration::from_secs(30),
            max_rows: 100_000,
        }
    }
}

impl ApiConfig {
    pub(crate) fn check(&self, p: &mut Problems) {
        let has_file = !self.token_file.as_os_str().is_empty();
        if !self.token.is_empty() && has_file {
            p.bad(
                "api.token",
                "both api.token and api.token_file are set; keep one",
            );
        }
        if !self.token.is_empty() && self.token.trim().chars().count() < MIN_TOKEN_LEN {
            p.bad(
                "api.token",
                format!("shorter than {MIN_TOKEN_LEN} characters; use a long random string (e.g. `openssl rand -hex 32`)"),
            );
        }
        if has_file && !self.token_file.is_absolute() {
            p.bad(
                "api.token_file",
                format!("\"{}\" is not an absolute path", self.token_file.display()),
            );
        }
        if !self.listen.ip().is_loopback() && self.token.is_empty() && !has_file {
            p.bad(
                "api.listen",
                format!(
                    "{} is reachable from other hosts but no api.token or api.token_file is set; set one or listen on 127.0.0.1",
                    self.listen
                ),
            );
        }
        if self.max_pcap_span.is_zero()
            || self.max_pcap_span.get() > Duration::from_secs(7 * 86_400)
        {
            p.bad(
                "api.max_pcap_span",
                format!("{} is outside (0s, 7days]", self.max_pcap_span),
            );
        }
        if self.max_pcap_bytes < ByteSize::mib(1) {
            p.bad(
                "api.max_pcap_bytes",
                format!("{} is below the minimum of 1MiB", self.max_pcap_bytes),
            );
        }
        let t = self.request_timeout.get();
        if t < Duration::from_secs(1) || t > Duration::from_secs(3600) {
            p.bad(
                "api.request_timeout",
                format!("{} is outside 1s..=1h", self.request_timeout),
            );
        }
        if !(1..=10_000_000).contains(&self.max_rows) {
            p.bad(
                "api.max_rows",
                format!("{} is outside 1..=10000000", self.max_rows),
            );
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for journald/Loki/Elasticsearch pipelines).
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`. Default: `text`.
    pub format: LogFormat,
    /// Level filter: `error`, `warn`, `info`, `debug`, `trace`, or per-module directives
    /// such as `"info,tapvault_dataplane=debug"`. `RUST_LOG`, when set, wins. Default:
    /// `"info"`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

impl LogConfig {
    pub(crate) fn check(&self, p: &mut Problems) {
        if self.level.trim().is_empty() {
            p.bad(
                "log.level",
                "empty; use one of off, error, warn, info, debug, trace",
            );
            return;
        }
        for d in self
            .level
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
        {
            let (target, level) = match d.rsplit_once('=') {
                Some((t, l)) => (Some(t), l),
                None => (None, d),
            };
            let target_ok = target.is_none_or(|t| {
                !t.is_empty()
                    && t.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            });
            if !target_ok || !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
                p.bad(
                    "log.level",
                    format!("\"{d}\" is not a level (off, error, warn, info, debug, trace) or a `module=level` directive"),
                );
            }
        }
    }
}
