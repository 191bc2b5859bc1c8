//! `[capture]`: where packets come from.

use std::{collections::BTreeSet, fmt, net::IpAddr, path::PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use crate::{ByteSize, Problems};

/// The largest snap length: a stored pcap record must fit in one block of a segment (the
/// storage crate's `pcap::MAX_SNAP_LEN`).
pub const MAX_SNAP_LEN: u32 = 130_048;
/// The smallest snap length accepted (Ethernet + IPv6 + TCP with options).
pub const MIN_SNAP_LEN: u32 = 128;

/// Which kind of packet source `tapvault capture` opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// An XDP program steers frames into one AF_XDP socket per NIC RX queue (appliance mode).
    AfXdp,
    /// TPACKET_V3 rings joined in a fanout group (node mode: works on any interface, needs no
    /// XDP support from the driver).
    AfPacket,
    /// A capture file replayed through the live pipeline (tests, demos).
    File,
}

impl SourceKind {
    /// The configuration-file spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::AfXdp => "af_xdp",
            SourceKind::AfPacket => "af_packet",
            SourceKind::File => "file",
        }
    }
}

/// How the XDP program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum XdpMode {
    /// Native (driver) mode; fails when the driver has no XDP support.
    Driver,
    /// Generic mode (`xdpgeneric`): works everywhere, after the kernel built an skb (slower,
    /// copy mode only).
    Skb,
    /// Driver mode when the driver supports it, else generic mode.
    Auto,
}

/// Whether AF_XDP sockets bind in zero-copy mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ZeroCopy {
    /// Try zero-copy, fall back to copy mode when the driver refuses (`EOPNOTSUPP`).
    Auto,
    /// Zero-copy or fail.
    On,
    /// Copy mode.
    Off,
}

/// What the XDP program does with frames of a queue that has no AF_XDP socket bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoSocketAction {
    /// `XDP_PASS`: hand the frame to the kernel stack (safe on an interface that also carries
    /// the host's own traffic).
    Pass,
    /// `XDP_DROP`: discard it (a dedicated tap port whose traffic the host never needs).
    Drop,
}

/// Pace of a `file` source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileSpeed {
    /// Replay at the pace of the recorded timestamps.
    Recorded,
    /// As fast as the pipeline takes it.
    Max,
}

/// The decision of a filter rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterAction {
    /// Capture the frame.
    Keep,
    /// Drop it in the XDP program (counted, never reaches user space).
    Drop,
}

/// The RX queues to capture from: `"all"`, a list `[0, 1, 2]`, or a string of ids and
/// ranges `"0-3,6"`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Queues {
    /// Every RX queue the interface has.
    #[default]
    All,
    /// These queue ids.
    List(Vec<u32>),
}

impl Queues {
    /// The selected queue ids for an interface with `available` RX queues.
    pub fn resolve(&self, available: u32) -> Vec<u32> {
        match self {
            Queues::All => (0..available).collect(),
            Queues::List(l) => l.clone(),
        }
    }
}

/// Parses `"0-3,6"` into ids.
fn parse_id_list(s: &str) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        let num = |t: &str| {
            t.trim()
                .parse::<u32>()
                .map_err(|_| format!("\"{t}\" in \"{s}\" is not a queue number"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b || b - a > 4096 {
                    return Err(format!("range \"{part}\" in \"{s}\" is empty or too long"));
                }
                out.extend(a..=b);
            }
            None => out.push(num(part)?),
        }
    }
    Ok(out)
}

impl Serialize for Queues {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Queues::All => s.serialize_str("all"),
            Queues::List(l) => l.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Queues {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Queues;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"all\", a list of queue ids such as [0, 1], or \"0-3,6\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Queues, E> {
                if v.trim() == "all" {
                    Ok(Queues::All)
                } else {
                    parse_id_list(v).map(Queues::List).map_err(E::custom)
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Queues, E> {
                u32::try_from(v)
                    .map(|q| Queues::List(vec![q]))
                    .map_err(|_| E::custom(format!("{v} is not a queue number")))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Queues, A::Error> {
                let mut l = Vec::new();
                while let Some(q) = seq.next_element::<u32>()? {
                    l.push(q);
                }
                Ok(Queues::List(l))
            }
        }
        d.deserialize_any(V)
    }
}

/// One rule of the XDP filter: networks or ports (not both in one rule) with an action. The
/// XDP program looks up the source and destination address (longest matching prefix over
/// all rules) and the source and destination port; when the answers differ, `drop` beats
/// `keep`; a frame nothing matches gets `default_action`. Addresses and ports are those of
/// the IP header the XDP program parses (outer, after up to two VLAN tags).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterRule {
    /// `keep` or `drop`.
    pub action: FilterAction,
    /// CIDR networks, e.g. `"10.0.0.0/8"`, `"2001:db8::/32"`, or single addresses.
    #[serde(default)]
    pub networks: Vec<String>,
    /// TCP/UDP ports (source or destination).
    #[serde(default)]
    pub ports: Vec<u16>,
}

/// The filter the XDP program applies before a frame reaches user space (`af_xdp` only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    /// Decision for frames no rule matches: `keep` or `drop`. Default: `keep`.
    pub default_action: FilterAction,
    /// Rules (see [`FilterRule`] for how they combine). Default: none (capture everything).
    pub rules: Vec<FilterRule>,
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig {
            default_action: FilterAction::Keep,
            rules: Vec::new(),
        }
    }
}

/// At most this many filter rules (the XDP program walks them in a bounded loop).
pub const MAX_FILTER_RULES: usize = 64;
/// At most this many networks over all rules (one LPM-trie entry each).
pub const MAX_FILTER_NETWORKS: usize = 1024;

/// A parsed CIDR network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    /// The address (host bits zero).
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl std::str::FromStr for Network {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("\"{s}\" is not an IP address or CIDR network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("\"{s}\": prefix length must be 0 to {max}"))?,
        };
        let host_bits_zero = match addr {
            IpAddr::V4(v) => prefix == 32 || u32::from(v) << prefix == 0,
            IpAddr::V6(v) => prefix == 128 || u128::from(v) << prefix == 0,
        };
        if !host_bits_zero {
            return Err(format!(
                "\"{s}\" has host bits set after the /{prefix} prefix; write the network address"
            ));
        }
        Ok(Network { addr, prefix })
    }
}

/// `[capture]`: the packet source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// `af_xdp`, `af_packet` or `file`. Default: `af_xdp`.
    pub source: SourceKind,
    /// The interface that receives the mirrored traffic (`af_xdp`, `af_packet`). Required
    /// for live sources. Default: empty.
    pub interface: String,
    /// RX queues to capture (`af_xdp`: one socket per queue): `"all"`, `[0, 1]` or
    /// `"0-3"`. Default: `"all"`.
    pub queues: Queues,
    /// Worker threads. `af_xdp`: each serves one or more queues (0 = one per queue);
    /// `af_packet`: fanout members (0 = one per RX queue of the interface). Default: 0.
    pub workers: u32,
    /// CPUs to pin workers to, in order (worker i on `cpus[i % len]`). Empty: no pinning.
    /// Default: `[]`.
    pub cpus: Vec<u32>,
    /// Bytes of each frame kept, 128 to 130048. Default: 130048.
    pub snap_len: u32,
    /// `af_xdp`: `driver`, `skb` or `auto`. Default: `auto`.
    pub xdp_mode: XdpMode,
    /// `af_xdp`: `auto`, `on` or `off`. Default: `auto`.
    pub zero_copy: ZeroCopy,
    /// `af_xdp`: UMEM frames per queue, a power of two from 64 to 1048576; the fill and RX
    /// rings get as many entries, up to 65536. Default: 16384 (64 MiB of 4 KiB frames per
    /// queue, the memory of the `af_packet` default of 64 blocks of 1 MiB). With 4096 the
    /// rings held about 12 ms of traffic, and short stalls of the worker lost frames: the
    /// loss-free rate on a veth was 344 k (64 B) and 217 k (1500 B) frames/s, against
    /// 842-972 k and 369-488 k with 16384-32768 (BENCHMARKS.md, live capture, session 7).
    pub umem_frames: u32,
    /// `af_xdp`: bytes per UMEM frame, 2048 or 4096. Default: 4096.
    pub frame_size: u32,
    /// `af_xdp`: bind with `XDP_USE_NEED_WAKEUP`. Default: true.
    pub need_wakeup: bool,
    /// `af_xdp`: preferred busy polling (`SO_PREFER_BUSY_POLL`). Default: false.
    pub busy_poll: bool,
    /// `af_xdp`: `SO_BUSY_POLL_BUDGET` when `busy_poll` is on, 1 to 1024. Default: 64.
    pub busy_poll_budget: u32,
    /// `af_xdp`: XDP verdict for queues without a socket, `pass` or `drop`. Default: `pass`.
    pub no_socket_action: NoSocketAction,
    /// `af_xdp`: the XDP filter.
    pub filter: FilterConfig,
    /// `af_packet`: TPACKET_V3 block size, a power of two multiple of 4KiB up to 1GiB.
    /// Default: `"1MiB"`.
    pub block_size: ByteSize,
    /// `af_packet`: blocks per ring, 2 to 65536. Default: 64.
    pub block_count: u32,
    /// `af_packet`: `PACKET_FANOUT` group id, 1 to 65535; 0 derives it from the process id.
    /// Default: 0.
    pub fanout_group: u16,
    /// `af_packet`: put the interface in promiscuous mode. Default: true.
    pub promiscuous: bool,
    /// `file`: the capture file to replay.
    pub file_path: PathBuf,
    /// `file`: `recorded` or `max`. Default: `max`.
    pub file_speed: FileSpeed,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            source: SourceKind::AfXdp,
            interface: String::new(),
            queues: Queues::All,
            workers: 0,
            cpus: Vec::new(),
            snap_len: MAX_SNAP_LEN,
            xdp_mode: XdpMode::Auto,
            zero_copy: ZeroCopy::Auto,
            umem_frames: 16384,
            frame_size: 4096,
            need_wakeup: true,
            busy_poll: false,
            busy_poll_budget: 64,
            no_socket_action: NoSocketAction::Pass,
            filter: FilterConfig::default(),
            block_size: ByteSize::mib(1),
            block_count: 64,
            fanout_group: 0,
            promiscuous: true,
            file_path: PathBuf::new(),
            file_speed: FileSpeed::Max,
        }
    }
}

fn dups(v: &[u32]) -> Option<u32> {
    let mut seen = BTreeSet::new();
    v.iter().copied().find(|x| !seen.insert(*x))
}

impl CaptureConfig {
    /// The keys (with their section) that have no effect with this source but differ from
    /// their default: setting them is a mistake worth stopping for.
    fn foreign_keys(&self) -> Vec<&'static str> {
        let d = CaptureConfig::default();
        let mut v = Vec::new();
        if self.source != SourceKind::AfXdp {
            let xdp = [
                ("capture.queues", self.queues != d.queues),
                ("capture.xdp_mode", self.xdp_mode != d.xdp_mode),
                ("capture.zero_copy", self.zero_copy != d.zero_copy),
                ("capture.umem_frames", self.umem_frames != d.umem_frames),
                ("capture.frame_size", self.frame_size != d.frame_size),
                ("capture.need_wakeup", self.need_wakeup != d.need_wakeup),
                ("capture.busy_poll", self.busy_poll != d.busy_poll),
                (
                    "capture.busy_poll_budget",
                    self.busy_poll_budget != d.busy_poll_budget,
                ),
                (
                    "capture.no_socket_action",
                    self.no_socket_action != d.no_socket_action,
                ),
                ("capture.filter", self.filter != d.filter),
            ];
            v.extend(xdp.iter().filter(|(_, set)| *set).map(|(k, _)| *k));
        }
        if self.source != SourceKind::AfPacket {
            let pkt = [
                ("capture.block_size", self.block_size != d.block_size),
                ("capture.block_count", self.block_count != d.block_count),
                ("capture.fanout_group", self.fanout_group != d.fanout_group),
                ("capture.promiscuous", self.promiscuous != d.promiscuous),
            ];
            v.extend(pkt.iter().filter(|(_, set)| *set).map(|(k, _)| *k));
        }
        if self.source != SourceKind::File {
            let file = [
                ("capture.file_path", self.file_path != d.file_path),
                ("capture.file_speed", self.file_speed != d.file_speed),
            ];
            v.extend(file.iter().filter(|(_, set)| *set).map(|(k, _)| *k));
        } else {
            let live = [
                ("capture.interface", self.interface != d.interface),
                ("capture.workers", self.workers != d.workers),
                ("capture.cpus", self.cpus != d.cpus),
            ];
            v.extend(live.iter().filter(|(_, set)| *set).map(|(k, _)| *k));
        }
        v
    }

    pub(crate) fn check(&self, p: &mut Problems) {
        let src = self.source.as_str();
        for key in self.foreign_keys() {
            let only = match key {
                "capture.block_size"
                | "capture.block_count"
                | "capture.fanout_group"
                | "capture.promiscuous" => "af_packet",
                "capture.file_path" | "capture.file_speed" => "file",
                "capture.interface" | "capture.workers" | "capture.cpus" => "af_xdp and af_packet",
                _ => "af_xdp",
            };
            p.bad(
                key,
                format!("applies only to source = {only}, but source is {src}; remove it"),
            );
        }
        match self.source {
            SourceKind::File => {
                if self.file_path.as_os_str().is_empty() {
                    p.bad(
                        "capture.file_path",
                        "not set; source = file needs a capture file",
                    );
                }
            }
            SourceKind::AfXdp | SourceKind::AfPacket => {
                if self.interface.is_empty() {
                    p.bad(
                        "capture.interface",
                        "not set; name the interface that receives the mirrored traffic, e.g. interface = \"eth1\"",
                    );
                } else if self.interface.len() > 15
                    || self.interface.contains(['/', ' ', '\t', '\n'])
                    || self.interface == "."
                    || self.interface == ".."
                {
                    p.bad(
                        "capture.interface",
                        format!("\"{}\" is not a valid interface name (at most 15 characters, no '/' or spaces)", self.interface),
                    );
                }
            }
        }
        if let Queues::List(l) = &self.queues {
            if l.is_empty() {
                p.bad(
                    "capture.queues",
                    "empty list; use \"all\" or name at least one queue",
                );
            }
            if let Some(q) = dups(l) {
                p.bad("capture.queues", format!("queue {q} is listed twice"));
            }
        }
        if self.workers > 1024 {
            p.bad(
                "capture.workers",
                format!("{} workers; at most 1024", self.workers),
            );
        }
        if let Some(c) = dups(&self.cpus) {
            p.bad("capture.cpus", format!("cpu {c} is listed twice"));
        }
        if !(MIN_SNAP_LEN..=MAX_SNAP_LEN).contains(&self.snap_len) {
            p.bad(
                "capture.snap_len",
                format!(
                    "{} is outside {MIN_SNAP_LEN}..={MAX_SNAP_LEN}",
                    self.snap_len
                ),
            );
        }
        if !self.umem_frames.is_power_of_two() || !(64..=1 << 20).contains(&self.umem_frames) {
            p.bad(
                "capture.umem_frames",
                format!("{} is not a power of two from 64 to 1048576 (the fill and RX rings are sized from it)", self.umem_frames),
            );
        }
        if !self.frame_size.is_power_of_two() {
            p.bad(
                "capture.frame_size",
                format!(
                    "{} is not a power of two; use 2048 or 4096",
                    self.frame_size
                ),
            );
        } else if !(2048..=4096).contains(&self.frame_size) {
            p.bad(
                "capture.frame_size",
                format!(
                    "{} is out of range; AF_XDP frames are 2048 or 4096 bytes",
                    self.frame_size
                ),
            );
        }
        if !(1..=1024).contains(&self.busy_poll_budget) {
            p.bad(
                "capture.busy_poll_budget",
                format!("{} is outside 1..=1024", self.busy_poll_budget),
            );
        } else if !self.busy_poll
            && self.busy_poll_budget != CaptureConfig::default().busy_poll_budget
        {
            p.bad(
                "capture.busy_poll_budget",
                "set, but busy_poll is false; turn busy_poll on or remove it",
            );
        }
        if self.zero_copy == ZeroCopy::On && self.xdp_mode == XdpMode::Skb {
            p.bad(
                "capture.zero_copy",
                "on is impossible with xdp_mode = skb (generic XDP is copy mode only); use xdp_mode = driver or zero_copy = auto",
            );
        }
        let mut networks = 0;
        if self.filter.rules.len() > MAX_FILTER_RULES {
            p.bad(
                "capture.filter.rules",
                format!(
                    "{} rules; at most {MAX_FILTER_RULES}",
                    self.filter.rules.len()
                ),
            );
        }
        for (i, r) in self.filter.rules.iter().enumerate() {
            for (j, n) in r.networks.iter().enumerate() {
                networks += 1;
                if let Err(e) = n.parse::<Network>() {
                    p.bad(format!("capture.filter.rules[{i}].networks[{j}]"), e);
                }
            }
            if !r.networks.is_empty() && !r.ports.is_empty() {
                p.bad(
                    format!("capture.filter.rules[{i}]"),
                    "a rule lists networks or ports, not both (the XDP program looks them up \
                     separately; \"network AND port\" cannot be expressed); split it into two rules",
                );
            }
            if r.networks.is_empty() && r.ports.is_empty() {
                p.bad(
                    format!("capture.filter.rules[{i}]"),
                    "a rule needs networks or ports",
                );
            }
            if r.ports.contains(&0) {
                p.bad(
                    format!("capture.filter.rules[{i}].ports"),
                    "port 0 never matches",
                );
            }
        }
        if networks > MAX_FILTER_NETWORKS {
            p.bad(
                "capture.filter.rules",
                format!("{networks} networks in all; at most {MAX_FILTER_NETWORKS}"),
            );
        }
        let bs = self.block_size.get();
        if !bs.is_power_of_two() || !(4096..=1 << 30).contains(&bs) {
            p.bad(
                "capture.block_size",
                format!("{} is not a power of two from 4KiB to 1GiB (TPACKET_V3 blocks are whole pages, a power of two of them)", self.block_size),
            );
        } else if self.source == SourceKind::AfPacket && bs < u64::from(self.snap_len) + 128 {
            p.bad(
                "capture.block_size",
                format!("{} cannot hold one frame of snap_len {} plus its headers; raise block_size or lower snap_len", self.block_size, self.snap_len),
            );
        }
        if !(2..=65536).contains(&self.block_count) {
            p.bad(
                "capture.block_count",
                format!("{} is outside 2..=65536", self.block_count),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        assert_eq!(
            "10.0.0.0/8".parse::<Network>(),
            Ok(Network {
                addr: "10.0.0.0".parse().unwrap(),
                prefix: 8
            })
        );
        assert_eq!("2001:db8::1".parse::<Network>().unwrap().prefix, 128);
        assert!(
            "10.0.0.1/8"
                .parse::<Network>()
                .unwrap_err()
                .contains("host bits")
        );
        assert!(
            "10.0.0.0/33"
                .parse::<Network>()
                .unwrap_err()
                .contains("0 to 32")
        );
        assert!("ten/8".parse::<Network>().is_err());
    }

    #[test]
    fn id_lists() {
        assert_eq!(parse_id_list("0-3,6"), Ok(vec![0, 1, 2, 3, 6]));
        assert!(parse_id_list("3-1").is_err());
        assert!(parse_id_list("x").is_err());
    }
}
