//! Logging: `tracing` events to stderr, as text or JSON lines, filtered by `RUST_LOG` when it
//! is set, else by `[log] level` (or `--log-level`). Under systemd (`$JOURNAL_STREAM` set)
//! text lines carry no timestamp, since the journal adds its own.

use anyhow::{Context, Result};
use tapvault_config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Call once, early; a second call fails.
pub(crate) fn init(format: LogFormat, level: &str) -> Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => {
            EnvFilter::try_new(&v).with_context(|| format!("invalid RUST_LOG `{v}`"))?
        }
        _ => EnvFilter::try_new(level).with_context(|| format!("invalid log level `{level}`"))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let res = match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .flatten_event(true)
            .try_init(),
        LogFormat::Text if std::env::var_os("JOURNAL_STREAM").is_some() => {
            builder.with_ansi(false).without_time().try_init()
        }
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
    res.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}
