//! `tapvault serve`: the HTTP API over stored history, without a capture.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::{Context, Result, bail};
use tapvault_api::{ApiOptions, ApiServer, NoCapture};

#[derive(clap::Args)]
pub(crate) struct ServeArgs {
    /// The storage root written by `analyze --store` or a capture (flows/, pcap/ below it).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// Address to listen on. Anything but loopback requires --token-file.
    #[arg(long, default_value = "127.0.0.1:7480", value_name = "ADDR")]
    listen: SocketAddr,
    /// File holding the bearer token required on data endpoints (one line).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Longest range of a pcap request without flow_id (30s, 15m, 1h, 1d).
    #[arg(long, default_value = "1h", value_parser = tapvault_api::parse_duration)]
    max_pcap_span: std::time::Duration,
    /// Largest pcap answer, MiB.
    #[arg(long, default_value_t = 1024)]
    max_pcap_mib: u64,
    /// Time a request may take, seconds.
    #[arg(long, default_value_t = 30)]
    request_timeout: u64,
    /// Largest page of flows.
    #[arg(long, default_value_t = 10_000)]
    max_rows: usize,
}

fn read_token(path: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read the token file `{}`", path.display()))?;
    let token = text.trim_end_matches(['\n', '\r']).to_owned();
    if token.is_empty() {
        bail!("the token file `{}` is empty", path.display());
    }
    Ok(token)
}

pub(crate) fn serve(a: ServeArgs) -> Result<()> {
    let token = a.token_file.as_deref().map(read_token).transpose()?;
    let opts = ApiOptions::new(&a.data_dir)
        .listen(a.listen)
        .token(token)
        .max_pcap_span(a.max_pcap_span)
        .max_pcap_bytes(a.max_pcap_mib.saturating_mul(1 << 20))
        .request_timeout(std::time::Duration::from_secs(a.request_timeout.max(1)))
        .max_rows(a.max_rows);
    let server = ApiServer::start(opts, Arc::new(NoCapture::new()))
        .context("cannot start the API server")?;
    eprintln!(
        "tapvault: serving {} on http://{} (history only; Ctrl-C stops)",
        a.data_dir.display(),
        server.local_addr()
    );
    let stop = server.stopper();
    ctrlc::set_handler(stop).context("cannot install the Ctrl-C handler")?;
    server.wait().context("the API server failed")?;
    Ok(())
}
