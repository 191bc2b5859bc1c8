//! tapvault's typed configuration.
//!
//! The entry point is [`Config`], the whole appliance's settings, read from TOML by
//! [`Config::load`] (file, then `TAPVAULT_<SECTION>_<KEY>` environment variables, then
//! `--set section.key=value` flags). Its sections are [`CaptureConfig`] (`[capture]`),
//! [`FlowConfig`] (`[flow]`, also used alone by `tapvault analyze`), [`StorageConfig`]
//! (`[storage]`), [`ApiConfig`] (`[api]`) and [`LogConfig`] (`[log]`). The commented default
//! file is [`DEFAULT_TOML`] (`config/tapvault.toml`).
//!
//! Checks come in two kinds: [`Config::problems`] looks at the values alone (ranges and
//! impossible combinations), [`Config::host_problems`] at the machine (the interface and its
//! queues, CPUs, the data directory, the token file). Every [`Error`] names its key as a
//! dotted path (`capture.umem_frames`, `capture.filter.rules[0].networks[1]`).
#![deny(missing_docs)]

use serde::{Deserialize, Serialize};

mod api;
mod capture;
mod flow;
pub mod host;
mod load;
mod storage;
mod units;

pub use api::{ApiConfig, LogConfig, LogFormat, MIN_TOKEN_LEN};
pub use capture::{
    CaptureConfig, FileSpeed, FilterAction, FilterConfig, FilterRule, MAX_FILTER_NETWORKS,
    MAX_FILTER_RULES, MAX_SNAP_LEN, MIN_SNAP_LEN, Network, NoSocketAction, Queues, SourceKind,
    XdpMode, ZeroCopy,
};
pub use flow::{FlowConfig, PipelineMode};
pub use load::{DEFAULT_PATH, ENV_PREFIX, LoadError, Origin, Problem, env_name, keys};
pub use storage::{RetentionConfig, StorageConfig, StoreRetention};
pub use units::{ByteSize, HumanDuration};

/// The default configuration file, fully commented: it parses to [`Config::default()`].
pub const DEFAULT_TOML: &str = include_str!("../tapvault.toml");

/// A configuration value that cannot work.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("invalid configuration `{key}`: {reason}")]
pub struct Error {
    /// Dotted key, e.g. `flow.max_flows` or `capture.filter.rules[0].ports`.
    pub key: String,
    /// What is wrong and what is accepted.
    pub reason: String,
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Collects every problem instead of stopping at the first.
#[derive(Debug, Default)]
pub(crate) struct Problems(pub(crate) Vec<Error>);

impl Problems {
    pub(crate) fn bad(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.0.push(Error {
            key: key.into(),
            reason: reason.into(),
        });
    }
}

/// The whole configuration (`/etc/tapvault/tapvault.toml`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[capture]`: the packet source.
    pub capture: CaptureConfig,
    /// `[flow]`: the flow tables.
    pub flow: FlowConfig,
    /// `[storage]`: packets, flow records, retention.
    pub storage: StorageConfig,
    /// `[api]`: the HTTP API.
    pub api: ApiConfig,
    /// `[log]`: logging.
    pub log: LogConfig,
}

impl Config {
    /// Every problem of the values alone: ranges, formats and impossible combinations.
    pub fn problems(&self) -> Vec<Error> {
        let mut p = Problems::default();
        self.capture.check(&mut p);
        if let Err(e) = self.flow.validate() {
            p.0.push(e);
        }
        p.0.extend(self.flow.check_sources(&self.capture));
        self.storage.check(&mut p);
        self.api.check(&mut p);
        self.log.check(&mut p);
        p.0
    }

    /// The first of [`Config::problems`], if any.
    pub fn validate(&self) -> Result<()> {
        match self.problems().into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Every problem this machine has with the configuration: the interface is missing or
    /// has fewer queues than asked for, a CPU is offline, the data directory is not a
    /// writable directory, the token file or capture file cannot be read.
    pub fn host_problems(&self) -> Vec<Error> {
        host::problems(self, &host::Host::system())
    }

    /// The API token: `api.token`, or the trimmed contents of `api.token_file`; `None` when
    /// neither is set.
    pub fn api_token(&self) -> Result<Option<String>> {
        if !self.api.token.is_empty() {
            return Ok(Some(self.api.token.trim().to_string()));
        }
        if self.api.token_file.as_os_str().is_empty() {
            return Ok(None);
        }
        host::read_token(&self.api.token_file).map(Some)
    }
}

#[cfg(test)]
mod tests;
