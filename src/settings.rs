//! The command-line side of the configuration: `--config`, `--set` and the common flags,
//! shared by every command that reads `/etc/tapvault/tapvault.toml` (`check`, `capture`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tapvault_config::{Config, DEFAULT_PATH, ENV_PREFIX};

/// Flags that choose and override the configuration file. Precedence, strongest last: the
/// file, `TAPVAULT_<SECTION>_<KEY>` environment variables, the common flags below, `--set`.
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct ConfigArgs {
    /// Configuration file [default: /etc/tapvault/tapvault.toml when it exists, else the
    /// built-in defaults].
    #[arg(short, long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Override one key, e.g. `--set capture.queues=0-3` (repeatable; the last one wins).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub(crate) set: Vec<String>,
    /// Capture interface (`capture.interface`).
    #[arg(long, value_name = "IF")]
    pub(crate) interface: Option<String>,
    /// Data directory (`storage.data_dir`).
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// API listen address (`api.listen`).
    #[arg(long, value_name = "ADDR:PORT")]
    pub(crate) listen: Option<String>,
    /// Log format, text or json (`log.format`).
    #[arg(long, value_name = "FORMAT")]
    pub(crate) log_format: Option<String>,
    /// Log level or directives (`log.level`; RUST_LOG wins when set).
    #[arg(long, value_name = "LEVEL")]
    pub(crate) log_level: Option<String>,
}

impl ConfigArgs {
    /// The file to read: `--config`, else the default path when it exists.
    pub(crate) fn file(&self) -> Option<PathBuf> {
        match &self.config {
            Some(p) => Some(p.clone()),
            None => Path::new(DEFAULT_PATH)
                .exists()
                .then(|| PathBuf::from(DEFAULT_PATH)),
        }
    }

    /// The `section.key=value` overrides the flags make, in precedence order.
    pub(crate) fn overrides(&self) -> Vec<String> {
        let mut o = Vec::new();
        let mut add = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                o.push(format!("{k}={v}"));
            }
        };
        add("capture.interface", self.interface.clone());
        add(
            "storage.data_dir",
            self.data_dir.as_ref().map(|p| p.display().to_string()),
        );
        add("api.listen", self.listen.clone());
        add("log.format", self.log_format.clone());
        add("log.level", self.log_level.clone());
        o.extend(self.set.iter().cloned());
        o
    }

    /// Loads and checks the values (not the host: see [`Config::host_problems`]).
    pub(crate) fn load(&self) -> Result<Config> {
        let file = self.file();
        Config::load(file.as_deref(), tapvault_env(), &self.overrides())
            .context("the configuration cannot be used")
    }
}

/// The environment variables that can override the configuration (the others are not
/// read, so a variable that is not UTF-8 elsewhere in the environment does no harm).
pub(crate) fn tapvault_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            k.starts_with(ENV_PREFIX)
                .then(|| (k, v.to_string_lossy().into_owned()))
        })
        .collect()
}
