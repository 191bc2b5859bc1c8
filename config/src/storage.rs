//! `[storage]`: where packets and flow records go, and how long they stay.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{ByteSize, HumanDuration, Problems};

/// zstd's fast levels that `storage.zstd_level` accepts besides 1..=22 (`zstd --fast=N` is
/// level -N), down to zstd's minimum (`ZSTD_minCLevel()`).
const ZSTD_FAST_LEVELS: std::ops::RangeInclusive<i32> = -(1 << 17)..=-1;

/// Limits of one store; `0` means no limit of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreRetention {
    /// Largest total size of the store; the oldest files go first. Default: `"0"` (none;
    /// `storage.min_free` still protects the disk).
    pub max_bytes: ByteSize,
    /// Largest age of what the store keeps. Default: `"0s"` (none).
    pub max_age: HumanDuration,
}

impl Default for StoreRetention {
    fn default() -> Self {
        StoreRetention {
            max_bytes: ByteSize(0),
            max_age: HumanDuration::from_secs(0),
        }
    }
}

impl StoreRetention {
    /// `max_bytes` as an optional limit.
    pub fn max_bytes(&self) -> Option<u64> {
        (self.max_bytes.get() > 0).then_some(self.max_bytes.get())
    }
    /// `max_age` in nanoseconds, as an optional limit.
    pub fn max_age_ns(&self) -> Option<i64> {
        (!self.max_age.is_zero()).then(|| self.max_age.as_nanos_i64())
    }
}

/// `[storage.retention]`: one limit set per store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// The packet store (`DATA_DIR/pcap`).
    pub pcap: StoreRetention,
    /// The flow-record store (`DATA_DIR/flows`).
    pub flows: StoreRetention,
}

/// `[storage]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Root of the stores (`pcap/`, `flows/`). Must be an absolute path, writable by
    /// tapvault. Default: `"/var/lib/tapvault"`.
    pub data_dir: PathBuf,
    /// Keep raw packets (pcap.zst segments). Default: true.
    pub pcap: bool,
    /// A segment ends this long after its first packet, 1s to 1h. Default: `"60s"`.
    pub segment_span: HumanDuration,
    /// A segment ends after this many compressed bytes, at least 1MiB and at least
    /// `frame_max_bytes`. Default: `"256MiB"`.
    pub segment_max_bytes: ByteSize,
    /// A zstd frame (the unit of seeking) spans at most this much time, 1ms to
    /// `segment_span`. Default: `"1s"`.
    pub frame_span: HumanDuration,
    /// A zstd frame holds at most this many uncompressed bytes, 4KiB to 1GiB. Default:
    /// `"1MiB"`.
    pub frame_max_bytes: ByteSize,
    /// zstd level of packet segments: 1 to 22, or one of zstd's fast levels, -131072 to -1
    /// (`zstd --fast=N` is level -N). Fast levels store literals without entropy coding and
    /// skip ahead faster the lower they go: -1 compresses HTTP-like cleartext about 1.3x
    /// faster than 1 for about 13 % more bytes; around -1000 the data is stored almost as
    /// it is, at several GB/s. Default: 1.
    pub zstd_level: i32,
    /// Store traffic that does not compress (encrypted payloads) as it is: after a zstd
    /// frame that `zstd_level` shrank by less than 8 %, the next frames are stored as raw
    /// zstd blocks (a copy, readable by any zstd reader), and every 16th tries `zstd_level`
    /// again. Counted in the status as `storage.frames_passed_through`. Default: true.
    pub zstd_adaptive: bool,
    /// Open frames and flow files are written out at least this often, 10ms to 60s, which
    /// bounds what a crash loses. Default: `"1s"`.
    pub flush_interval: HumanDuration,
    /// Free space kept on the data directory's file system: below it the oldest files are
    /// deleted (packets first) and, if that is not enough, packet storage pauses (counted).
    /// Default: `"1GiB"`.
    pub min_free: ByteSize,
    /// Retention per store.
    pub retention: RetentionConfig,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("/var/lib/tapvault"),
            pcap: true,
            segment_span: HumanDuration::from_secs(60),
            segment_max_bytes: ByteSize::mib(256),
            frame_span: HumanDuration::from_secs(1),
            frame_max_bytes: ByteSize::mib(1),
            zstd_level: 1,
            zstd_adaptive: true,
            flush_interval: HumanDuration::from_secs(1),
            min_free: ByteSize::gib(1),
            retention: RetentionConfig::default(),
        }
    }
}

impl StorageConfig {
    pub(crate) fn check(&self, p: &mut Problems) {
        if !self.data_dir.is_absolute() {
            p.bad(
                "storage.data_dir",
                format!("\"{}\" is not an absolute path", self.data_dir.display()),
            );
        }
        let span = self.segment_span.get();
        if span < std::time::Duration::from_secs(1) || span > std::time::Duration::from_secs(3600) {
            p.bad(
                "storage.segment_span",
                format!("{} is outside 1s..=1h", self.segment_span),
            );
        }
        if self.segment_max_bytes < ByteSize::mib(1) {
            p.bad(
                "storage.segment_max_bytes",
                format!("{} is below the minimum of 1MiB", self.segment_max_bytes),
            );
        } else if self.segment_max_bytes < self.frame_max_bytes {
            p.bad(
                "storage.segment_max_bytes",
                format!(
                    "{} is smaller than storage.frame_max_bytes ({}); a segment holds whole frames",
                    self.segment_max_bytes, self.frame_max_bytes
                ),
            );
        }
        if self.frame_span.get() < std::time::Duration::from_millis(1) {
            p.bad(
                "storage.frame_span",
                format!("{} is below 1ms", self.frame_span),
            );
        } else if self.frame_span > self.segment_span {
            p.bad(
                "storage.frame_span",
                format!(
                    "{} is longer than storage.segment_span ({})",
                    self.frame_span, self.segment_span
                ),
            );
        }
        if !(4096..=1 << 30).contains(&self.frame_max_bytes.get()) {
            p.bad(
                "storage.frame_max_bytes",
                format!("{} is outside 4KiB..=1GiB", self.frame_max_bytes),
            );
        }
        if !(ZSTD_FAST_LEVELS.contains(&self.zstd_level) || (1..=22).contains(&self.zstd_level)) {
            p.bad(
                "storage.zstd_level",
                format!(
                    "{} is neither a level 1..=22 nor a fast level {}..={}",
                    self.zstd_level,
                    ZSTD_FAST_LEVELS.start(),
                    ZSTD_FAST_LEVELS.end()
                ),
            );
        }
        let fi = self.flush_interval.get();
        if fi < std::time::Duration::from_millis(10) || fi > std::time::Duration::from_secs(60) {
            p.bad(
                "storage.flush_interval",
                format!("{} is outside 10ms..=60s", self.flush_interval),
            );
        }
        let r = &self.retention;
        if let Some(max) = r.pcap.max_bytes()
            && max < 2 * self.segment_max_bytes.get()
        {
            p.bad(
                "storage.retention.pcap.max_bytes",
                format!(
                    "{} is less than two segments (storage.segment_max_bytes = {}); the open segment alone can fill it",
                    r.pcap.max_bytes, self.segment_max_bytes
                ),
            );
        }
        if let Some(max) = r.flows.max_bytes()
            && max < ByteSize::mib(16).get()
        {
            p.bad(
                "storage.retention.flows.max_bytes",
                format!("{} is below the minimum of 16MiB", r.flows.max_bytes),
            );
        }
        if !r.pcap.max_age.is_zero() && r.pcap.max_age < self.segment_span {
            p.bad(
                "storage.retention.pcap.max_age",
                format!(
                    "{} is shorter than storage.segment_span ({}); segments are deleted whole",
                    r.pcap.max_age, self.segment_span
                ),
            );
        }
        if !r.flows.max_age.is_zero()
            && r.flows.max_age.get() < std::time::Duration::from_secs(3600)
        {
            p.bad(
                "storage.retention.flows.max_age",
                format!(
                    "{} is shorter than one hour; flow files are hourly",
                    r.flows.max_age
                ),
            );
        }
    }
}
