//! tapvault's XDP program.
//!
//! For every frame: parse Ethernet, up to two VLAN tags, IPv4 or IPv6 (skipping up to three
//! IPv6 extension headers) and the TCP/UDP ports; apply the capture filter (rules and how
//! they combine: `tapvault_xdp_abi`'s crate docs); then, for a frame to capture whose RX
//! queue has an AF_XDP socket in `TV_XSKS`: truncate it to the snap length, write
//! `PacketMeta` (TAI arrival time, wire length) in front of it and redirect it to the
//! socket. Two entry points share the code: `tapvault_xdp` puts the metadata in the XDP
//! metadata area, `tapvault_xdp_head` inside the packet data (for kernels that refuse
//! `bpf_xdp_adjust_meta`); user space loads the first the kernel accepts. Per-CPU counters
//! record every outcome: seen = redirected + filtered + no_socket + errors.
//!
//! Built by `scripts/build-xdp.sh` into `dataplane/xdp/tapvault-xdp.bpf.o`.

#![no_std]
#![no_main]

use core::mem::size_of;

use aya_ebpf::{
    helpers::generated::{
        bpf_ktime_get_tai_ns, bpf_xdp_adjust_head, bpf_xdp_adjust_meta, bpf_xdp_adjust_tail,
    },
    macros::{map, xdp},
    maps::{Array, LpmTrie, PerCpuArray, XskMap, lpm_trie::Key},
    programs::XdpContext,
};
use tapvault_xdp_abi::{
    COUNTER_COUNT, CTR_ERRORS, CTR_FILTERED, CTR_META_FAILED, CTR_NO_SOCKET, CTR_NON_IP,
    CTR_REDIRECTED, CTR_REDIRECTED_BYTES, CTR_SEEN, CTR_SEEN_BYTES, CTR_TRUNC_FAILED,
    CTR_TRUNCATED, Config, FLAG_CONFIGURED, FLAG_NET4_RULES, FLAG_NET6_RULES, FLAG_PORT_RULES,
    MAX_NET_RULES, MAX_QUEUES, META_LEN, META_MAGIC, PORT_COUNT, PacketMeta, RULE_KEEP, RULE_NONE,
    XDP_PASS, combine, port_rule_for,
};

#[map(name = "TV_CONFIG")]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

#[map(name = "TV_COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

#[map(name = "TV_XSKS")]
static XSKS: XskMap = XskMap::with_max_entries(MAX_QUEUES, 0);

#[map(name = "TV_NET4")]
static NET4: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(MAX_NET_RULES, 0);

#[map(name = "TV_NET6")]
static NET6: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(MAX_NET_RULES, 0);

#[map(name = "TV_PORTS")]
static PORTS: Array<u32> = Array::with_max_entries(PORT_COUNT, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
/// The pre-standard QinQ outer tag some switches still send.
const ETH_P_QINQ1: u16 = 0x9100;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPV6_HOPOPTS: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_DSTOPTS: u8 = 60;

/// The program: every return path counts exactly one terminal outcome. The metadata goes in
/// the metadata area in front of the frame (`bpf_xdp_adjust_meta`).
#[xdp]
pub fn tapvault_xdp(ctx: XdpContext) -> u32 {
    run::<false>(ctx)
}

/// The same program for kernels whose verifier refuses `bpf_xdp_adjust_meta` to XDP programs
/// (seen on a locked-down 6.18 build): the metadata goes inside the packet data, in front of
/// the frame (`bpf_xdp_adjust_head`), and user space strips it. A frame that cannot get it
/// is passed to the kernel (an error), never redirected without it; one whose redirect
/// fails after all is given back without it.
#[xdp]
pub fn tapvault_xdp_head(ctx: XdpContext) -> u32 {
    run::<true>(ctx)
}

#[inline(always)]
fn run<const IN_DATA: bool>(ctx: XdpContext) -> u32 {
    let len = ctx.data_end() - ctx.data();
    count(CTR_SEEN, 1);
    count(CTR_SEEN_BYTES, len as u64);
    let Some(cfg) = CONFIG.get(0) else {
        count(CTR_ERRORS, 1);
        return XDP_PASS;
    };
    if cfg.flags & FLAG_CONFIGURED == 0 {
        count(CTR_ERRORS, 1);
        return XDP_PASS;
    }
    if classify(&ctx, cfg) != RULE_KEEP {
        count(CTR_FILTERED, 1);
        return XDP_PASS;
    }
    let queue = ctx.rx_queue_index();
    if XSKS.get(queue).is_none() {
        count(CTR_NO_SOCKET, 1);
        return cfg.no_socket_action;
    }
    // SAFETY: a helper without arguments, allowed in XDP programs since Linux 6.1.
    let ts = unsafe { bpf_ktime_get_tai_ns() };
    // In the in-data variant every redirected frame carries the prefix, so user space never
    // gets a frame without one whose own bytes could pass for it. A frame that cannot get
    // it is passed to the kernel, untouched, and counted as an error (and in
    // CTR_META_FAILED).
    if IN_DATA && !write_meta_in_data(&ctx, ts, len as u32) {
        count(CTR_ERRORS, 1);
        return XDP_PASS;
    }
    let snap = cfg.snap_len as usize;
    if snap != 0 && len > snap {
        // SAFETY: `ctx.ctx` is the program's context; a negative delta shrinks the frame,
        // and the kernel refuses (returns < 0) a delta that would leave less than 14 bytes.
        let r = unsafe { bpf_xdp_adjust_tail(ctx.ctx.cast(), -((len - snap) as i32)) };
        count(
            if r == 0 {
                CTR_TRUNCATED
            } else {
                CTR_TRUNC_FAILED
            },
            1,
        );
    }
    if !IN_DATA {
        write_meta(&ctx, ts, len as u32);
    }
    match XSKS.redirect(queue, 0) {
        Ok(action) => {
            count(CTR_REDIRECTED, 1);
            count(CTR_REDIRECTED_BYTES, len as u64);
            action
        }
        Err(_) => {
            // The socket went away between the lookup and the redirect.
            if IN_DATA {
                // SAFETY: `ctx.ctx` is the program's context; this takes back exactly the
                // META_LEN bytes `write_meta_in_data` put in front.
                unsafe { bpf_xdp_adjust_head(ctx.ctx.cast(), META_LEN as i32) };
            }
            count(CTR_NO_SOCKET, 1);
            cfg.no_socket_action
        }
    }
}

/// Grows the frame at its head by `META_LEN` bytes and writes the arrival time and wire
/// length there; returns whether it did. Counts `CTR_META_FAILED` when there is no headroom.
#[inline(always)]
fn write_meta_in_data(ctx: &XdpContext, ts: u64, orig_len: u32) -> bool {
    // SAFETY: `ctx.ctx` is the program's context; the kernel checks the headroom and
    // returns < 0 when a negative delta does not fit.
    let r = unsafe { bpf_xdp_adjust_head(ctx.ctx.cast(), -(META_LEN as i32)) };
    if r != 0 {
        count(CTR_META_FAILED, 1);
        return false;
    }
    // The helper invalidated the packet pointers: read them again.
    let start = ctx.data();
    if start + META_LEN > ctx.data_end() {
        // Cannot happen (the frame just grew by META_LEN); the verifier needs the check.
        // SAFETY: as above; gives back the bytes just taken.
        unsafe { bpf_xdp_adjust_head(ctx.ctx.cast(), META_LEN as i32) };
        count(CTR_META_FAILED, 1);
        return false;
    }
    let m = PacketMeta {
        ts_tai_ns: ts,
        orig_len,
        magic: META_MAGIC,
    };
    // SAFETY: the check above proves META_LEN writable bytes at `start`; unaligned because
    // the packet data has no alignment guarantee.
    unsafe { core::ptr::write_unaligned(start as *mut PacketMeta, m) };
    true
}

/// Grows the metadata area by `META_LEN` bytes and writes the arrival time and wire length
/// into it; counts `CTR_META_FAILED` when the driver leaves no room.
#[inline(always)]
fn write_meta(ctx: &XdpContext, ts: u64, orig_len: u32) {
    // SAFETY: `ctx.ctx` is the program's context; the kernel checks the headroom and the
    // 4-byte alignment of the delta (META_LEN is 16) and returns < 0 on failure.
    let r = unsafe { bpf_xdp_adjust_meta(ctx.ctx.cast(), -(META_LEN as i32)) };
    if r != 0 {
        count(CTR_META_FAILED, 1);
        return;
    }
    // The helper invalidated the packet pointers: read them again.
    let meta = ctx.metadata();
    if meta + META_LEN > ctx.data() {
        count(CTR_META_FAILED, 1);
        return;
    }
    let m = PacketMeta {
        ts_tai_ns: ts,
        orig_len,
        magic: META_MAGIC,
    };
    // SAFETY: the check above proves META_LEN writable bytes at `meta` (the verifier checks
    // it too); the write is unaligned because the metadata area has no alignment guarantee.
    unsafe { core::ptr::write_unaligned(meta as *mut PacketMeta, m) };
}

/// Adds `n` to this CPU's counter `idx`.
#[inline(always)]
fn count(idx: u32, n: u64) {
    if let Some(p) = COUNTERS.get_ptr_mut(idx) {
        // SAFETY: a per-CPU array slot, valid for the program's run; nothing else on this CPU
        // touches it while the program runs (XDP runs with preemption and migration disabled).
        unsafe { *p += n };
    }
}

/// `N` bytes at `off` from the start of the frame, or `None` past its end.
#[inline(always)]
fn bytes<const N: usize>(ctx: &XdpContext, off: usize) -> Option<[u8; N]> {
    let start = ctx.data();
    if start + off + N > ctx.data_end() {
        return None;
    }
    // SAFETY: the bounds check above keeps `[start + off, start + off + N)` inside the frame
    // (the verifier checks the same), and `[u8; N]` has no alignment requirement.
    Some(unsafe { core::ptr::read_unaligned((start + off) as *const [u8; N]) })
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// The filter's verdict: `RULE_KEEP` or `RULE_DROP`.
#[inline(always)]
fn classify(ctx: &XdpContext, cfg: &Config) -> u32 {
    let Some(et) = bytes::<2>(ctx, 12) else {
        count(CTR_NON_IP, 1);
        return cfg.non_ip_action;
    };
    let mut et = be16(et);
    let mut off = ETH_HLEN;
    // Up to two VLAN tags (802.1Q, 802.1ad QinQ).
    for _ in 0..2 {
        if et == ETH_P_8021Q || et == ETH_P_8021AD || et == ETH_P_QINQ1 {
            let Some(tag) = bytes::<4>(ctx, off) else {
                count(CTR_NON_IP, 1);
                return cfg.non_ip_action;
            };
            et = be16([tag[2], tag[3]]);
            off += 4;
        }
    }
    let verdict = match et {
        ETH_P_IP => ipv4(ctx, cfg, off),
        ETH_P_IPV6 => ipv6(ctx, cfg, off),
        _ => None,
    };
    let Some(v) = verdict else {
        count(CTR_NON_IP, 1);
        return cfg.non_ip_action;
    };
    if v == RULE_NONE {
        cfg.default_action
    } else {
        v
    }
}

/// Rule lookups for an IPv4 packet at `off`; `None` when its headers are cut short.
#[inline(always)]
fn ipv4(ctx: &XdpContext, cfg: &Config, off: usize) -> Option<u32> {
    let h = bytes::<20>(ctx, off)?;
    if h[0] >> 4 != 4 {
        return None;
    }
    let ihl = ((h[0] & 0x0f) as usize) * 4;
    if ihl < 20 {
        return None;
    }
    let mut v = RULE_NONE;
    if cfg.flags & FLAG_NET4_RULES != 0 {
        let src = [h[12], h[13], h[14], h[15]];
        let dst = [h[16], h[17], h[18], h[19]];
        v = combine(v, net4(src));
        v = combine(v, net4(dst));
    }
    // A non-first fragment carries no ports.
    let frag_off = be16([h[6], h[7]]) & 0x1fff;
    if cfg.flags & FLAG_PORT_RULES != 0 && frag_off == 0 {
        v = combine(v, ports(ctx, h[9], off + ihl));
    }
    Some(v)
}

/// Rule lookups for an IPv6 packet at `off`; `None` when its fixed header is cut short.
#[inline(always)]
fn ipv6(ctx: &XdpContext, cfg: &Config, off: usize) -> Option<u32> {
    let h = bytes::<40>(ctx, off)?;
    if h[0] >> 4 != 6 {
        return None;
    }
    let mut v = RULE_NONE;
    if cfg.flags & FLAG_NET6_RULES != 0 {
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        src.copy_from_slice(&h[8..24]);
        dst.copy_from_slice(&h[24..40]);
        v = combine(v, net6(src));
        v = combine(v, net6(dst));
    }
    if cfg.flags & FLAG_PORT_RULES == 0 {
        return Some(v);
    }
    let mut nh = h[6];
    let mut l4 = off + 40;
    // Up to three extension headers: enough for hop-by-hop + routing + destination options
    // or a fragment header; beyond that the ports are not looked at (bounded work).
    for _ in 0..3 {
        match nh {
            IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS => {
                let Some(e) = bytes::<2>(ctx, l4) else {
                    return Some(v);
                };
                nh = e[0];
                l4 += (e[1] as usize + 1) * 8;
            }
            IPV6_FRAGMENT => {
                let Some(e) = bytes::<4>(ctx, l4) else {
                    return Some(v);
                };
                if be16([e[2], e[3]]) >> 3 != 0 {
                    // A non-first fragment: no ports.
                    return Some(v);
                }
                nh = e[0];
                l4 += 8;
            }
            _ => break,
        }
    }
    Some(combine(v, ports(ctx, nh, l4)))
}

/// The port rules for the TCP/UDP header at `off` (source and destination port).
#[inline(always)]
fn ports(ctx: &XdpContext, proto: u8, off: usize) -> u32 {
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return RULE_NONE;
    }
    let Some(p) = bytes::<4>(ctx, off) else {
        return RULE_NONE;
    };
    let sport = be16([p[0], p[1]]) as u32;
    let dport = be16([p[2], p[3]]) as u32;
    let s = PORTS
        .get(sport)
        .map_or(RULE_NONE, |r| port_rule_for(*r, proto));
    let d = PORTS
        .get(dport)
        .map_or(RULE_NONE, |r| port_rule_for(*r, proto));
    combine(s, d)
}

#[inline(always)]
fn net4(addr: [u8; 4]) -> u32 {
    NET4.get(Key::new(32, addr)).map_or(RULE_NONE, |r| *r)
}

#[inline(always)]
fn net6(addr: [u8; 16]) -> u32 {
    NET6.get(Key::new(128, addr)).map_or(RULE_NONE, |r| *r)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The kernel reads the license from this section; no GPL-only helper is used.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 11] = *b"Apache-2.0\0";

const _: () = assert!(size_of::<PacketMeta>() == META_LEN);
