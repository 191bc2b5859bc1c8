//! The ABI between tapvault's XDP program (`xdp-prog/`) and its user-space loader
//! (`tapvault_dataplane::live::xdp`): map names, the configuration record, counter indices,
//! filter rules and the per-packet metadata the program writes in front of each frame.
//!
//! Everything here is `#[repr(C)]` plain old data built from fixed-width integers (no `bool`,
//! no enums, no implicit padding), so both sides agree on every byte. The crate is `no_std`
//! and has no dependencies unless the `user` feature adds the `aya::Pod` impls.
//!
//! # How the capture filter combines rules
//!
//! For an IP frame the program looks up, when the corresponding rule set is not empty:
//! the longest prefix matching the source address and the longest prefix matching the
//! destination address (in [`MAP_NET4`] or [`MAP_NET6`]), and, for TCP and UDP (not for
//! non-first fragments), the rules of the source port and of the destination port (in
//! [`MAP_PORTS`], per protocol). Each lookup yields [`RULE_NONE`], [`RULE_KEEP`] or
//! [`RULE_DROP`]. Then:
//!
//! 1. if any lookup yields `RULE_DROP`, the frame is filtered;
//! 2. else if any lookup yields `RULE_KEEP`, the frame is captured;
//! 3. else [`Config::default_action`] decides.
//!
//! So within one address the most specific prefix wins (a `/32` KEEP inside a `/8` DROP keeps
//! that host), and across lookups DROP beats KEEP beats nothing. Frames that are not IPv4 or
//! IPv6 (ARP, LLDP, ...) and IP frames too short to hold their headers follow
//! [`Config::non_ip_action`]. Filtered frames get `XDP_PASS`: they are left to the kernel,
//! never dropped by the filter, so a filter cannot cut a management link.

#![no_std]

/// Name of the XDP program in the object.
pub const PROG_NAME: &str = "tapvault_xdp";

/// The same program with [`PacketMeta`] written inside the packet data, in front of the
/// frame (for kernels that refuse `bpf_xdp_adjust_meta` to XDP programs); user space strips
/// it.
pub const PROG_NAME_META_IN_DATA: &str = "tapvault_xdp_head";

/// `Array<Config>` with one entry (index 0).
pub const MAP_CONFIG: &str = "TV_CONFIG";
/// `PerCpuArray<u64>` with [`COUNTER_COUNT`] entries, indexed by the `CTR_*` constants.
pub const MAP_COUNTERS: &str = "TV_COUNTERS";
/// `XskMap` indexed by RX queue id: the AF_XDP socket of each queue.
pub const MAP_XSKS: &str = "TV_XSKS";
/// `LpmTrie<[u8; 4], u32>`: IPv4 network rules (address in network byte order).
pub const MAP_NET4: &str = "TV_NET4";
/// `LpmTrie<[u8; 16], u32>`: IPv6 network rules (address in network byte order).
pub const MAP_NET6: &str = "TV_NET6";
/// `Array<u32>` of [`PORT_COUNT`] entries indexed by port number: [`port_rule`] values.
pub const MAP_PORTS: &str = "TV_PORTS";

/// Capacity of [`MAP_XSKS`]: the highest usable RX queue id is this minus one.
pub const MAX_QUEUES: u32 = 256;
/// Capacity of each network rule trie.
pub const MAX_NET_RULES: u32 = 4096;
/// Entries of [`MAP_PORTS`]: one per port number.
pub const PORT_COUNT: u32 = 65536;

/// No rule matched.
pub const RULE_NONE: u32 = 0;
/// Capture frames that match.
pub const RULE_KEEP: u32 = 1;
/// Do not capture frames that match (they are passed to the kernel).
pub const RULE_DROP: u32 = 2;

/// `XDP_ABORTED` (from `enum xdp_action` in `include/uapi/linux/bpf.h`).
pub const XDP_ABORTED: u32 = 0;
/// `XDP_DROP`.
pub const XDP_DROP: u32 = 1;
/// `XDP_PASS`.
pub const XDP_PASS: u32 = 2;
/// `XDP_REDIRECT`.
pub const XDP_REDIRECT: u32 = 4;

/// [`Config::flags`]: [`MAP_NET4`] holds at least one rule.
pub const FLAG_NET4_RULES: u32 = 1;
/// [`Config::flags`]: [`MAP_NET6`] holds at least one rule.
pub const FLAG_NET6_RULES: u32 = 1 << 1;
/// [`Config::flags`]: [`MAP_PORTS`] holds at least one rule.
pub const FLAG_PORT_RULES: u32 = 1 << 2;
/// [`Config::flags`]: the user side has written the config (a zeroed entry means "not
/// configured", and the program then passes every frame, counted as an error).
pub const FLAG_CONFIGURED: u32 = 1 << 31;

/// The program's configuration, entry 0 of [`MAP_CONFIG`].
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Config {
    /// Truncate captured frames to this many bytes (0: never). The original length travels
    /// in [`PacketMeta::orig_len`]. The loader accepts 0 or at least [`MIN_SNAP_LEN`].
    pub snap_len: u32,
    /// What happens to a frame that would be captured but no socket is bound to its RX
    /// queue: [`XDP_PASS`] (default) or [`XDP_DROP`].
    pub no_socket_action: u32,
    /// [`RULE_KEEP`] or [`RULE_DROP`] for IP frames no rule matches.
    pub default_action: u32,
    /// [`RULE_KEEP`] or [`RULE_DROP`] for frames that are not IPv4/IPv6 or too short to parse.
    pub non_ip_action: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Zero.
    pub reserved: u32,
}

/// The smallest snap length the loader accepts (an Ethernet header plus an IPv6 header and
/// a TCP header without options is 74 bytes; 64 keeps at least the IPv4 and TCP headers).
pub const MIN_SNAP_LEN: u32 = 64;

/// Frames the program saw (every call).
pub const CTR_SEEN: u32 = 0;
/// Bytes (wire length) of the frames seen.
pub const CTR_SEEN_BYTES: u32 = 1;
/// Frames redirected to an AF_XDP socket (terminal).
pub const CTR_REDIRECTED: u32 = 2;
/// Wire bytes of the frames redirected.
pub const CTR_REDIRECTED_BYTES: u32 = 3;
/// Frames the capture filter rejected, passed to the kernel (terminal).
pub const CTR_FILTERED: u32 = 4;
/// Frames to capture whose RX queue had no socket; they got `no_socket_action` (terminal).
pub const CTR_NO_SOCKET: u32 = 5;
/// Frames passed because of an internal failure: the config entry missing or never
/// written, or, in the [`PROG_NAME_META_IN_DATA`] variant, no headroom for the metadata
/// prefix (terminal).
pub const CTR_ERRORS: u32 = 6;
/// Redirected frames that were truncated to the snap length (not terminal).
pub const CTR_TRUNCATED: u32 = 7;
/// Frames without metadata for lack of headroom (not terminal): redirected without it when
/// `bpf_xdp_adjust_meta` failed; in the [`PROG_NAME_META_IN_DATA`] variant passed to the
/// kernel instead and also counted in [`CTR_ERRORS`], so that every frame it redirects
/// carries the prefix.
pub const CTR_META_FAILED: u32 = 8;
/// Redirected frames that should have been truncated but `bpf_xdp_adjust_tail` failed; they
/// went whole (not terminal).
pub const CTR_TRUNC_FAILED: u32 = 9;
/// Frames that were not IPv4/IPv6 or too short to parse (not terminal).
pub const CTR_NON_IP: u32 = 10;
/// Number of counters.
pub const COUNTER_COUNT: u32 = 11;

/// `PacketMeta::magic` when the program wrote the metadata.
pub const META_MAGIC: u32 = 0x7476_6d31; // "tvm1"

/// What the program writes immediately in front of each redirected frame with
/// `bpf_xdp_adjust_meta` (so it ends where the frame begins), or, in the
/// [`PROG_NAME_META_IN_DATA`] variant, with `bpf_xdp_adjust_head` as the first 16 bytes of
/// the frame's data (user space strips them). 16 bytes, a multiple of 4 as the kernel
/// requires.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketMeta {
    /// Arrival time from `bpf_ktime_get_tai_ns`: CLOCK_TAI in nanoseconds. User space
    /// subtracts the TAI-UTC offset (an integer number of seconds, read with
    /// `clock_gettime`) to get CLOCK_REALTIME.
    pub ts_tai_ns: u64,
    /// Length of the frame on the wire, before any truncation.
    pub orig_len: u32,
    /// [`META_MAGIC`]. User space clears it after reading each frame, so a frame whose
    /// metadata did not arrive is never read with a stale one.
    pub magic: u32,
}

/// Size of [`PacketMeta`] in bytes.
pub const META_LEN: usize = core::mem::size_of::<PacketMeta>();

/// A [`MAP_PORTS`] value: the rule for TCP in bits 0..8, for UDP in bits 8..16.
pub const fn port_rule(tcp: u32, udp: u32) -> u32 {
    (tcp & 0xff) | ((udp & 0xff) << 8)
}

/// The rule for IP protocol `proto` (6 TCP, 17 UDP) in a [`MAP_PORTS`] value.
pub const fn port_rule_for(value: u32, proto: u8) -> u32 {
    match proto {
        6 => value & 0xff,
        17 => (value >> 8) & 0xff,
        _ => RULE_NONE,
    }
}

/// Combines two lookup results: DROP beats KEEP beats NONE.
pub const fn combine(a: u32, b: u32) -> u32 {
    if a == RULE_DROP || b == RULE_DROP {
        RULE_DROP
    } else if a == RULE_KEEP || b == RULE_KEEP {
        RULE_KEEP
    } else {
        RULE_NONE
    }
}

// The layouts both sides rely on: no padding, metadata a multiple of 4 and at most 32 bytes
// (what `bpf_xdp_adjust_meta` accepts).
const _: () = {
    assert!(core::mem::size_of::<Config>() == 24);
    assert!(META_LEN == 16);
    assert!(META_LEN.is_multiple_of(4) && META_LEN <= 32);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `Config` is `repr(C)`, made of six `u32` (no padding), and every bit pattern is
    // a valid value.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: `PacketMeta` is `repr(C)`: a `u64` then two `u32` (16 bytes, no padding), and
    // every bit pattern is a valid value.
    unsafe impl aya::Pod for super::PacketMeta {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_combine_drop_over_keep_over_none() {
        assert_eq!(combine(RULE_NONE, RULE_NONE), RULE_NONE);
        assert_eq!(combine(RULE_KEEP, RULE_NONE), RULE_KEEP);
        assert_eq!(combine(RULE_NONE, RULE_DROP), RULE_DROP);
        assert_eq!(combine(RULE_KEEP, RULE_DROP), RULE_DROP);
        let v = port_rule(RULE_KEEP, RULE_DROP);
        assert_eq!(port_rule_for(v, 6), RULE_KEEP);
        assert_eq!(port_rule_for(v, 17), RULE_DROP);
        assert_eq!(port_rule_for(v, 1), RULE_NONE);
    }
}
