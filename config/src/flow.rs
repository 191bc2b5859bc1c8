//! `[flow]`: the flow tables.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{CaptureConfig, Error, Queues, Result, SourceKind};

/// How live capture runs its flow table (`flow.pipeline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineMode {
    /// `inline` when there is exactly one source and the process may use one CPU (the
    /// worker and the shard would share a core anyway), else `threaded`.
    #[default]
    Auto,
    /// Run to completion: the one worker thread decodes, spills and updates the one flow
    /// table itself, with no hand-off queue or shard thread. Needs exactly one source and at
    /// most one shard.
    Inline,
    /// Workers hand descriptors to shard threads through bounded queues.
    Threaded,
}

impl PipelineMode {
    /// The name as written in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            PipelineMode::Auto => "auto",
            PipelineMode::Inline => "inline",
            PipelineMode::Threaded => "threaded",
        }
    }
}

/// Flow-table settings (`[flow]` in the configuration file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowConfig {
    /// Number of flow shards (threads that own a flow table). `0` means automatic: one per
    /// available core minus the reader, each on its own thread (on a single core, one shard
    /// inline with the reader). Default: 0.
    pub shards: usize,
    /// Maximum number of flows held across all shards; when full, the least recently active
    /// half-open flow is evicted first, then the least recently active established flow.
    /// Every eviction is counted. Default: 1,000,000.
    pub max_flows: usize,
    /// Seconds without a packet after which an established flow is closed with
    /// `close_reason = idle_timeout`. Default: 300. `0` disables.
    pub idle_timeout_secs: f64,
    /// Seconds without a packet after which a half-open TCP flow (handshake not completed and
    /// no data both ways) is closed as `stale`. Default: 10. `0` disables.
    pub stale_timeout_secs: f64,
    /// Seconds a TCP flow lingers after it closed (FIN both ways, or RST) so late
    /// retransmissions and ACKs are still attributed to it. Default: 5. `0` closes at once.
    pub close_linger_secs: f64,
    /// Seconds between interim records of long-lived flows. Default: 0 (off).
    pub interim_interval_secs: f64,
    /// Width of the time windows for handshake RTT percentiles, seconds. Default: 60.
    pub rtt_window_secs: f64,
    /// Live capture: `"threaded"` (workers hand descriptors to shard threads), `"inline"`
    /// (one source and one shard: the worker thread updates the flow table itself, no
    /// hand-off or thread switch per batch) or `"auto"` (inline when there is one source
    /// and the process may use one CPU). `tapvault analyze` ignores it (see `--threaded`).
    /// Default: `"auto"`.
    pub pipeline: PipelineMode,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            shards: 0,
            max_flows: 1_000_000,
            idle_timeout_secs: 300.0,
            stale_timeout_secs: 10.0,
            close_linger_secs: 5.0,
            interim_interval_secs: 0.0,
            rtt_window_secs: 60.0,
            pipeline: PipelineMode::Auto,
        }
    }
}

fn secs(key: &str, v: f64) -> Result<()> {
    if v.is_finite() && (0.0..=365.0 * 86_400.0).contains(&v) {
        Ok(())
    } else {
        Err(Error {
            key: key.into(),
            reason: format!("{v} is not a number of seconds between 0 and one year"),
        })
    }
}

impl FlowConfig {
    /// Checks every value; the error names the key and the accepted range.
    pub fn validate(&self) -> Result<()> {
        if self.shards > 256 {
            return Err(Error {
                key: "flow.shards".into(),
                reason: format!("{} shards; at most 256 are supported", self.shards),
            });
        }
        if self.max_flows < 16 || self.max_flows > 100_000_000 {
            return Err(Error {
                key: "flow.max_flows".into(),
                reason: format!("{} is outside 16..=100000000", self.max_flows),
            });
        }
        secs("flow.idle_timeout_secs", self.idle_timeout_secs)?;
        secs("flow.stale_timeout_secs", self.stale_timeout_secs)?;
        secs("flow.close_linger_secs", self.close_linger_secs)?;
        secs("flow.interim_interval_secs", self.interim_interval_secs)?;
        secs("flow.rtt_window_secs", self.rtt_window_secs)?;
        if self.rtt_window_secs < 1.0 {
            return Err(Error {
                key: "flow.rtt_window_secs".into(),
                reason: "must be at least 1 second".into(),
            });
        }
        if self.pipeline == PipelineMode::Inline && self.shards > 1 {
            return Err(Error {
                key: "flow.pipeline".into(),
                reason: format!(
                    "\"inline\" runs one flow table on the worker's thread, but flow.shards is {}; \
                     set flow.shards to 0 or 1, or flow.pipeline to \"threaded\"",
                    self.shards
                ),
            });
        }
        Ok(())
    }

    /// `flow.pipeline = "inline"` with more sources than one, as far as the configuration
    /// alone tells (`capture.workers` for AF_PACKET, a list of `capture.queues` for AF_XDP;
    /// the automatic counts are checked when the capture starts).
    pub(crate) fn check_sources(&self, c: &CaptureConfig) -> Option<Error> {
        if self.pipeline != PipelineMode::Inline {
            return None;
        }
        let (n, key) = match (c.source, &c.queues) {
            (SourceKind::AfPacket, _) => (c.workers as usize, "capture.workers"),
            (SourceKind::AfXdp, Queues::List(l)) => (l.len(), "capture.queues"),
            _ => return None,
        };
        (n > 1).then(|| Error {
            key: "flow.pipeline".into(),
            reason: format!(
                "\"inline\" runs one source on one thread, but {key} asks for {n} sources; \
                 capture one queue, or set flow.pipeline to \"threaded\""
            ),
        })
    }

    /// A duration in nanoseconds, `None` when the setting is 0 (disabled).
    pub fn nanos(secs: f64) -> Option<i64> {
        (secs > 0.0).then(|| Duration::from_secs_f64(secs).as_nanos() as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        FlowConfig::default().validate().unwrap();
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut c = FlowConfig {
            max_flows: 3,
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "flow.max_flows");
        c.max_flows = 100;
        c.stale_timeout_secs = -1.0;
        assert_eq!(c.validate().unwrap_err().key, "flow.stale_timeout_secs");
        c.stale_timeout_secs = f64::NAN;
        assert_eq!(c.validate().unwrap_err().key, "flow.stale_timeout_secs");
        c.stale_timeout_secs = 1.0;
        c.rtt_window_secs = 0.5;
        assert_eq!(c.validate().unwrap_err().key, "flow.rtt_window_secs");
    }

    #[test]
    fn inline_pipeline_needs_one_shard() {
        let mut c = FlowConfig {
            pipeline: PipelineMode::Inline,
            ..Default::default()
        };
        for ok in [0, 1] {
            c.shards = ok;
            c.validate().unwrap();
        }
        c.shards = 2;
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, "flow.pipeline");
        assert!(e.reason.contains("flow.shards is 2"), "{e}");
        c.pipeline = PipelineMode::Threaded;
        c.validate().unwrap();
    }
}
