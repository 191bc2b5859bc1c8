//! AF_PACKET sources for on-node mode: a TPACKET_V3 memory-mapped receive ring
//! ([`AfPacketSource`]) and a `sendmmsg` transmitter ([`AfPacketTx`]) for the traffic
//! generator.
//!
//! Why AF_PACKET and not AF_XDP on a node: an XDP program that redirects to an AF_XDP socket
//! takes the packet away from the node's stack. A packet socket gets a clone of every frame
//! (`ETH_P_ALL` taps sit beside the protocol handlers, `__netif_receive_skb_core` and
//! `dev_queue_xmit_nit` in `net/core/dev.c`), in both directions, and the node's traffic flows
//! on untouched.
//!
//! The receive ring is TPACKET_V3: the kernel fills variable-sized frames into blocks and
//! hands a block over when it is full or when its retire timer fires
//! (`prb_close_block`/`prb_retire_rx_blk_timer_expired` in `net/packet/af_packet.c`). One
//! call of [`RxSource::recv_batch`] reads one block and gives it back. Several sockets in one
//! fanout group ([`Fanout`]) split the interface's traffic between workers; with
//! [`FanoutMode::Hash`] the kernel picks the socket with `__skb_get_hash_symmetric`
//! (`fanout_demux_hash`), a flow hash that sorts addresses and ports first, so both
//! directions of a connection land on the same socket.

use std::{
    ffi::CString,
    fs::File,
    io,
    mem::{size_of, zeroed},
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    path::{Path, PathBuf},
    ptr::NonNull,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use super::{RxFrame, RxSource, SourceStats};

/// Length of an 802.1Q tag (TPID + TCI).
const VLAN_TAG_LEN: usize = 4;
/// Offset of the EtherType in an Ethernet header (after the two MAC addresses).
const ETH_ADDRS_LEN: usize = 12;
/// The largest frame the kernel can hand us without truncation (`tp_len` is 32 bits, but
/// GSO super-packets on the transmit side stay below 64 KiB plus headers).
const MAX_SNAP_LEN: u32 = 262_144;

/// Errors opening an AF_PACKET socket.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An option is out of range; `reason` says what is allowed.
    #[error("invalid AF_PACKET option `{option}`: {reason}")]
    InvalidOption {
        /// The option's name.
        option: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The network namespace could not be entered.
    #[error("cannot enter network namespace `{}`", path.display())]
    Netns {
        /// The namespace file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// No interface of that name (in the namespace the socket is opened in).
    #[error("no network interface `{interface}`")]
    NoSuchInterface {
        /// The interface name.
        interface: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A system call failed while setting the socket up.
    #[error("AF_PACKET socket on `{interface}`: {op} failed")]
    Syscall {
        /// The interface.
        interface: String,
        /// What was being done (for example `setsockopt(PACKET_RX_RING)`).
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// Result of opening an AF_PACKET socket.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a fanout group spreads frames over its sockets (`PACKET_FANOUT_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FanoutMode {
    /// By the kernel's symmetric flow hash (`PACKET_FANOUT_HASH`): both directions of a
    /// connection go to the same socket.
    #[default]
    Hash,
    /// By the CPU that received the frame (`PACKET_FANOUT_CPU`).
    Cpu,
    /// Round robin (`PACKET_FANOUT_LB`): even load, flows split.
    LoadBalance,
    /// By the NIC receive queue recorded in the skb (`PACKET_FANOUT_QM`).
    QueueMapping,
}

impl FanoutMode {
    fn bits(self) -> u32 {
        match self {
            FanoutMode::Hash => libc::PACKET_FANOUT_HASH,
            FanoutMode::Cpu => libc::PACKET_FANOUT_CPU,
            FanoutMode::LoadBalance => libc::PACKET_FANOUT_LB,
            FanoutMode::QueueMapping => libc::PACKET_FANOUT_QM,
        }
    }
}

/// Membership of a fanout group: sockets of one network namespace with the same `group`
/// (and the same mode and flags) share the interface's frames, each frame going to one of
/// them. One socket per worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fanout {
    /// Group id, unique per network namespace among the groups in use.
    pub group: u16,
    /// How frames are spread.
    pub mode: FanoutMode,
    /// `PACKET_FANOUT_FLAG_DEFRAG`: reassemble IPv4 fragments before hashing, so a fragmented
    /// datagram goes to one socket. The socket then receives the reassembled datagram instead
    /// of the fragments on the wire, which is why it is off by default: without it the
    /// symmetric hash of a fragment uses only the address pair, so all fragments of a
    /// datagram still go to one socket (not necessarily the one of the flow's other frames),
    /// and the flow engine's own reassembly sees the real fragments.
    pub defrag: bool,
}

/// Options of an [`AfPacketSource`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfPacketOptions {
    /// The interface to capture on.
    pub interface: String,
    /// Open the socket inside this network namespace (a file such as `/run/netns/NAME` or
    /// `/proc/PID/ns/net`); `None` = the caller's. The socket stays in that namespace for
    /// its lifetime; the calling thread does not move.
    pub netns: Option<PathBuf>,
    /// Size of one ring block in bytes: a multiple of the page size. A block is handed to
    /// user space as a unit, so it bounds the batch size and, with the retire timeout, the
    /// latency.
    pub block_size: u32,
    /// Number of blocks; the ring is `block_size * block_count` bytes of locked kernel
    /// memory.
    pub block_count: u32,
    /// Frame size hint (`tp_frame_size`): a multiple of 16 of at least 80 bytes and at most
    /// the block size. TPACKET_V3 packs frames by their real size; the kernel only checks
    /// this value for consistency.
    pub frame_size: u32,
    /// How long the kernel waits before handing over a block that is not full
    /// (`tp_retire_blk_tov`, millisecond resolution; zero lets the kernel pick from the
    /// link speed).
    pub retire_timeout: Duration,
    /// Bytes kept of each frame (a one-instruction classic BPF filter truncates in the
    /// kernel, as libpcap does); 0 = whole frames. Frames longer than a block can hold are
    /// truncated to the block either way. `orig_len` always tells the length on the wire.
    pub snap_len: u32,
    /// Join this fanout group; `None` = the socket gets every frame.
    pub fanout: Option<Fanout>,
    /// Put the interface into promiscuous mode while the socket is open
    /// (`PACKET_MR_PROMISC`, reference-counted by the kernel, dropped when the socket
    /// closes). Off by default: in on-node mode the node's own traffic is addressed to it,
    /// and switching a node's NIC to promiscuous mode changes what it accepts. Turn it on for
    /// a mirror or SPAN port on a real NIC, whose frames carry other hosts' MAC addresses
    /// and are otherwise dropped by the NIC's filter before any socket sees them.
    pub promiscuous: bool,
    /// Skip frames the host sends (`PACKET_IGNORE_OUTGOING`). Off by default: on a node,
    /// a connection's outgoing half exists only as transmitted frames.
    pub ignore_outgoing: bool,
}

impl AfPacketOptions {
    /// Defaults for `interface`: 32 blocks of 1 MiB, 2048-byte frame hint, 10 ms retire
    /// timeout, whole frames, no fanout, not promiscuous, outgoing frames included.
    pub fn new(interface: impl Into<String>) -> Self {
        AfPacketOptions {
            interface: interface.into(),
            netns: None,
            block_size: 1 << 20,
            block_count: 32,
            frame_size: 2048,
            retire_timeout: Duration::from_millis(10),
            snap_len: 0,
            fanout: None,
            promiscuous: false,
            ignore_outgoing: false,
        }
    }

    /// Checks the options against the kernel's rules (`packet_set_ring`), so that a bad
    /// value gets a precise message instead of the kernel's `EINVAL`.
    pub fn validate(&self) -> Result<()> {
        let bad = |option, reason: String| Err(Error::InvalidOption { option, reason });
        check_ifname(&self.interface)?;
        let page = page_size();
        if self.block_size == 0 || !(self.block_size as usize).is_multiple_of(page) {
            return bad(
                "block_size",
                format!(
                    "{} is not a positive multiple of the page size ({page})",
                    self.block_size
                ),
            );
        }
        if self.block_count == 0 {
            return bad("block_count", "must be at least 1".into());
        }
        let ring = u64::from(self.block_size) * u64::from(self.block_count);
        if ring > 1 << 34 {
            return bad(
                "block_count",
                format!("a ring of {ring} bytes is more than the 16 GiB allowed here"),
            );
        }
        let min_frame = tpacket3_hdrlen() as u32;
        if self.frame_size < min_frame
            || !self
                .frame_size
                .is_multiple_of(libc::TPACKET_ALIGNMENT as u32)
            || self.frame_size > self.block_size
        {
            return bad(
                "frame_size",
                format!(
                    "{} must be a multiple of {} between {min_frame} and the block size ({})",
                    self.frame_size,
                    libc::TPACKET_ALIGNMENT,
                    self.block_size
                ),
            );
        }
        if u64::from(self.block_size / self.frame_size) * u64::from(self.block_count)
            > u64::from(u32::MAX)
        {
            return bad("frame_size", "too many frames in the ring".into());
        }
        if self.retire_timeout.as_millis() > u128::from(u32::MAX) {
            return bad(
                "retire_timeout",
                format!("{:?} is too long", self.retire_timeout),
            );
        }
        if self.snap_len != 0 && !(14..=MAX_SNAP_LEN).contains(&self.snap_len) {
            return bad(
                "snap_len",
                format!(
                    "{} must be 0 (whole frames) or between 14 and {MAX_SNAP_LEN}",
                    self.snap_len
                ),
            );
        }
        Ok(())
    }
}

fn check_ifname(name: &str) -> Result<()> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', '\0']) {
        return Err(Error::InvalidOption {
            option: "interface",
            reason: format!(
                "`{name}` is not an interface name (1 to {} bytes, no `/`)",
                libc::IFNAMSIZ - 1
            ),
        });
    }
    Ok(())
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as usize } else { 4096 }
}

/// `TPACKET3_HDRLEN`: the frame header plus the `sockaddr_ll` the kernel writes after it.
fn tpacket3_hdrlen() -> usize {
    libc::TPACKET3_HDRLEN
}

/// A network namespace given by name (`ip netns` names live in `/run/netns`) or as a path.
pub fn netns_path(name_or_path: &str) -> PathBuf {
    if name_or_path.contains('/') {
        PathBuf::from(name_or_path)
    } else {
        Path::new("/run/netns").join(name_or_path)
    }
}

/// Runs `f` on a helper thread that first joins the network namespace at `netns` (or runs it
/// here when `None`). Sockets remember the namespace they were created in, so what `f` opens
/// works from any thread afterwards, while the caller's own thread never changes namespace.
fn in_netns<T: Send>(netns: Option<&Path>, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let Some(path) = netns else { return f() };
    let ns_err = |source| Error::Netns {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(ns_err)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns only changes this helper thread's network namespace (CLONE_NEWNET
            // is per thread); `file` is an open namespace file for the whole call.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(ns_err(io::Error::last_os_error()));
            }
            f()
        })
        .join()
        .unwrap_or_else(|_| {
            Err(ns_err(io::Error::other(
                "the namespace helper thread panicked",
            )))
        })
    })
}

/// An AF_PACKET socket: the descriptor and the interface it is bound to.
struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
    interface: String,
}

impl PacketSocket {
    /// Opens a raw packet socket that receives nothing yet (protocol 0) and finds the
    /// interface.
    fn open(interface: &str) -> Result<Self> {
        check_ifname(interface)?;
        let cname = CString::new(interface).map_err(|_| Error::InvalidOption {
            option: "interface",
            reason: "contains a NUL byte".into(),
        })?;
        // SAFETY: `cname` is a valid NUL-terminated string for the duration of the call.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            return Err(Error::NoSuchInterface {
                interface: interface.to_string(),
                source: io::Error::last_os_error(),
            });
        }
        // Protocol 0: no frames are queued before the ring exists and the socket is bound.
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(Error::Syscall {
                interface: interface.to_string(),
                op: "socket(AF_PACKET)",
                source: io::Error::last_os_error(),
            });
        }
        Ok(PacketSocket {
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            ifindex: ifindex as i32,
            interface: interface.to_string(),
        })
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn err(&self, op: &'static str) -> Error {
        Error::Syscall {
            interface: self.interface.clone(),
            op,
            source: io::Error::last_os_error(),
        }
    }

    fn setsockopt<T>(&self, level: i32, name: i32, value: &T, op: &'static str) -> Result<()> {
        // SAFETY: `value` points to a live `T` of exactly `size_of::<T>()` bytes, which is
        // what the option expects (each caller passes the kernel's type for `name`).
        let rc = unsafe {
            libc::setsockopt(
                self.raw(),
                level,
                name,
                (value as *const T).cast(),
                size_of::<T>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(self.err(op));
        }
        Ok(())
    }

    /// Binds to the interface; `protocol` (host order) 0 sends only, `ETH_P_ALL` receives
    /// every frame.
    fn bind(&self, protocol: u16) -> Result<()> {
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = protocol.to_be();
        sll.sll_ifindex = self.ifindex;
        // SAFETY: `sll` is a valid sockaddr_ll and the length passed is its size.
        let rc = unsafe {
            libc::bind(
                self.raw(),
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(self.err("bind"));
        }
        Ok(())
    }
}

/// The mapped receive ring.
struct Ring {
    base: NonNull<u8>,
    len: usize,
    block_size: usize,
    block_count: usize,
}

impl Ring {
    /// The first byte of block `i` (< `block_count`).
    fn block(&self, i: usize) -> *mut u8 {
        debug_assert!(i < self.block_count);
        // SAFETY: i < block_count, so the offset stays inside the mapping of
        // block_size * block_count bytes.
        unsafe { self.base.as_ptr().add(i * self.block_size) }
    }

    /// The status word of block `i`, shared with the kernel.
    fn status(&self, i: usize) -> &AtomicU32 {
        // SAFETY: every block starts with a `tpacket_block_desc` whose `hdr.bh1.block_status`
        // is a u32 at offset 8 (version, offset_to_priv, then the header), 4-byte aligned
        // since blocks are page aligned; AtomicU32 has the layout of u32. The kernel writes
        // this word concurrently, which is why it is only ever accessed atomically here.
        unsafe { &*self.block(i).add(8).cast::<AtomicU32>() }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly what mmap returned, and no reference into the
        // ring outlives the source (frames are only lent to callbacks).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// One AF_PACKET TPACKET_V3 receive ring on one interface (one member of a fanout group).
pub struct AfPacketSource {
    name: String,
    ring: Ring,
    /// The block to read next.
    next: usize,
    /// Bytes kept per frame (`usize::MAX` = no limit), for frames that grow by a VLAN tag.
    snap_len: usize,
    /// Frames with a restored 802.1Q tag are assembled here.
    vlan_buf: Vec<u8>,
    /// Frames and bytes handed to callbacks, and the kernel's counters summed over reads.
    stats: SourceStats,
    /// `tp_packets` summed: every frame the socket's filter accepted, delivered or dropped.
    kernel_packets: u64,
    // Declared last: the ring is unmapped before the socket closes.
    sock: PacketSocket,
}

// SAFETY: the raw ring pointer is owned exclusively by this value (the mapping is private to
// the socket, and frames are only lent to callbacks within `recv_batch`), so moving the
// source to another thread moves sole access to the ring with it.
unsafe impl Send for AfPacketSource {}

impl std::fmt::Debug for AfPacketSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfPacketSource")
            .field("name", &self.name)
            .field("blocks", &self.ring.block_count)
            .field("block_size", &self.ring.block_size)
            .finish_non_exhaustive()
    }
}

impl AfPacketSource {
    /// Opens the socket, sets the ring up, binds it to the interface with `ETH_P_ALL`,
    /// and joins the fanout group and promiscuous mode if asked. Needs CAP_NET_RAW (and
    /// CAP_SYS_ADMIN for `netns`).
    pub fn open(opts: &AfPacketOptions) -> Result<Self> {
        opts.validate()?;
        in_netns(opts.netns.as_deref(), || Self::open_here(opts))
    }

    fn open_here(opts: &AfPacketOptions) -> Result<Self> {
        let sock = PacketSocket::open(&opts.interface)?;
        let version = libc::tpacket_versions::TPACKET_V3 as libc::c_int;
        sock.setsockopt(
            libc::SOL_PACKET,
            libc::PACKET_VERSION,
            &version,
            "setsockopt(PACKET_VERSION, TPACKET_V3)",
        )?;
        if opts.snap_len != 0 {
            // `ret #snap_len`: the filter's return value is the number of bytes to keep
            // (`run_filter` in `packet_rcv`/`tpacket_rcv`), the way libpcap truncates.
            let mut prog = [libc::sock_filter {
                code: (libc::BPF_RET | libc::BPF_K) as u16,
                jt: 0,
                jf: 0,
                k: opts.snap_len,
            }];
            let fprog = libc::sock_fprog {
                len: 1,
                filter: prog.as_mut_ptr(),
            };
            sock.setsockopt(
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                &fprog,
                "setsockopt(SO_ATTACH_FILTER) for the snap length",
            )?;
        }
        if opts.ignore_outgoing {
            let one: libc::c_int = 1;
            sock.setsockopt(
                libc::SOL_PACKET,
                libc::PACKET_IGNORE_OUTGOING,
                &one,
                "setsockopt(PACKET_IGNORE_OUTGOING)",
            )?;
        }
        let req = libc::tpacket_req3 {
            tp_block_size: opts.block_size,
            tp_block_nr: opts.block_count,
            tp_frame_size: opts.frame_size,
            tp_frame_nr: opts.block_size / opts.frame_size * opts.block_count,
            tp_retire_blk_tov: opts.retire_timeout.as_millis() as u32,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        sock.setsockopt(
            libc::SOL_PACKET,
            libc::PACKET_RX_RING,
            &req,
            "setsockopt(PACKET_RX_RING)",
        )?;
        let len = opts.block_size as usize * opts.block_count as usize;
        // SAFETY: maps the ring the kernel just allocated for this socket; the length is the
        // ring's size, the result is checked, and `Ring` unmaps it exactly once.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                sock.raw(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(sock.err("mmap of the receive ring"));
        }
        let ring = Ring {
            base: NonNull::new(base.cast()).ok_or_else(|| sock.err("mmap returned null"))?,
            len,
            block_size: opts.block_size as usize,
            block_count: opts.block_count as usize,
        };
        sock.bind(libc::ETH_P_ALL as u16)?;
        if let Some(fan) = opts.fanout {
            let mut type_flags = fan.mode.bits();
            if fan.defrag {
                type_flags |= libc::PACKET_FANOUT_FLAG_DEFRAG;
            }
            let arg: libc::c_int = (u32::from(fan.group) | (type_flags << 16)) as libc::c_int;
            sock.setsockopt(
                libc::SOL_PACKET,
                libc::PACKET_FANOUT,
                &arg,
                "setsockopt(PACKET_FANOUT) (a group with this id but another mode exists?)",
            )?;
        }
        if opts.promiscuous {
            // SAFETY: packet_mreq is plain old data; all-zero is a valid value.
            let mut mreq: libc::packet_mreq = unsafe { zeroed() };
            mreq.mr_ifindex = sock.ifindex;
            mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
            sock.setsockopt(
                libc::SOL_PACKET,
                libc::PACKET_ADD_MEMBERSHIP,
                &mreq,
                "setsockopt(PACKET_ADD_MEMBERSHIP, PACKET_MR_PROMISC)",
            )?;
        }
        let name = match opts.fanout {
            Some(f) => format!("afpacket:{}/{}", opts.interface, f.group),
            None => format!("afpacket:{}", opts.interface),
        };
        let mut src = AfPacketSource {
            name,
            ring,
            next: 0,
            snap_len: if opts.snap_len == 0 {
                usize::MAX
            } else {
                opts.snap_len as usize
            },
            vlan_buf: Vec::with_capacity(2048),
            stats: SourceStats::default(),
            kernel_packets: 0,
            sock,
        };
        // Counters start at zero now: anything counted before the bind is not ours.
        src.read_kernel_stats().map_err(|source| Error::Syscall {
            interface: opts.interface.clone(),
            op: "getsockopt(PACKET_STATISTICS)",
            source,
        })?;
        src.kernel_packets = 0;
        src.stats = SourceStats::default();
        Ok(src)
    }

    /// Every frame the kernel offered this socket (delivered to the ring or dropped), summed
    /// over [`RxSource::stats`] calls (`tp_packets`).
    pub fn kernel_packets(&self) -> u64 {
        self.kernel_packets
    }

    /// Reads and resets the kernel's counters and adds them to ours.
    fn read_kernel_stats(&mut self) -> io::Result<()> {
        let mut st = libc::tpacket_stats_v3 {
            tp_packets: 0,
            tp_drops: 0,
            tp_freeze_q_cnt: 0,
        };
        let mut len = size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
        // SAFETY: `st` is a writable tpacket_stats_v3 and `len` its size; the kernel writes
        // at most `len` bytes and updates `len`.
        let rc = unsafe {
            libc::getsockopt(
                self.sock.raw(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats_v3).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // For TPACKET_V3 the kernel reports tp_packets including the drops, and resets all
        // three on every read (`packet_getsockopt`).
        self.kernel_packets += u64::from(st.tp_packets);
        self.stats.ring_full += u64::from(st.tp_drops);
        self.stats.freezes += u64::from(st.tp_freeze_q_cnt);
        Ok(())
    }

    /// Waits for the socket to become readable; false on time-out or signal.
    fn wait(&self, timeout: Duration) -> io::Result<bool> {
        let ms = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
        let mut pfd = libc::pollfd {
            fd: self.sock.raw(),
            events: libc::POLLIN | libc::POLLERR,
            revents: 0,
        };
        // SAFETY: one valid pollfd, count 1.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            };
        }
        if pfd.revents & libc::POLLERR != 0 {
            // A pending socket error, for example ENETDOWN when the interface goes away.
            let mut err: libc::c_int = 0;
            let mut len = size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: `err` is a writable c_int and `len` its size.
            let rc = unsafe {
                libc::getsockopt(
                    self.sock.raw(),
                    libc::SOL_SOCKET,
                    libc::SO_ERROR,
                    (&mut err as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            if rc == 0 && err != 0 {
                return Err(io::Error::from_raw_os_error(err));
            }
        }
        Ok(rc > 0)
    }

    /// Delivers the frames of block `i` (owned by user space) to `f`; returns how many.
    fn read_block(&mut self, i: usize, f: &mut dyn FnMut(&RxFrame<'_>)) -> usize {
        let block = self.ring.block(i);
        let bs = self.ring.block_size;
        // SAFETY: the block belongs to user space (TP_STATUS_USER was seen with Acquire
        // ordering, pairing with the kernel's smp_wmb before it set the status in
        // `prb_close_block`), so the kernel does not write it until we give it back. The
        // descriptor is at the block's start, which is page aligned.
        let desc = unsafe { &*block.cast::<libc::tpacket_block_desc>() };
        // SAFETY: TPACKET_V3 blocks always carry the `bh1` header variant.
        let (num, first) = unsafe {
            (
                desc.hdr.bh1.num_pkts as usize,
                desc.hdr.bh1.offset_to_first_pkt as usize,
            )
        };
        let hdr_len = size_of::<libc::tpacket3_hdr>();
        let mut off = first;
        let mut delivered = 0;
        for _ in 0..num {
            // Offsets come from the kernel; check them anyway so that a corrupt block can
            // never make us read outside the ring.
            if !off.is_multiple_of(4) || off.checked_add(hdr_len).is_none_or(|e| e > bs) {
                self.stats.invalid_descs += 1;
                break;
            }
            // SAFETY: `off + hdr_len <= block_size` (checked above), the offset is 4-byte
            // aligned (all fields of tpacket3_hdr are at most 4 bytes wide), and the block
            // is ours until released.
            let h = unsafe { &*block.add(off).cast::<libc::tpacket3_hdr>() };
            let mac = h.tp_mac as usize;
            let caplen = h.tp_snaplen as usize;
            if off + mac + caplen > bs {
                self.stats.invalid_descs += 1;
                break;
            }
            // SAFETY: the frame lies inside the block (checked above) and the block is ours
            // until released, which happens after the last callback.
            let data = unsafe { std::slice::from_raw_parts(block.add(off + mac), caplen) };
            let ts_ns = i64::from(h.tp_sec) * 1_000_000_000 + i64::from(h.tp_nsec);
            let status = h.tp_status;
            // As libpcap's VLAN_VALID: a nonzero TCI, or the flag (a TCI of 0 is valid too:
            // priority tagging).
            if (h.hv1.tp_vlan_tci != 0 || status & libc::TP_STATUS_VLAN_VALID != 0)
                && caplen >= ETH_ADDRS_LEN
            {
                let tpid = if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                    h.hv1.tp_vlan_tpid
                } else {
                    libc::ETH_P_8021Q as u16
                };
                let buf = &mut self.vlan_buf;
                buf.clear();
                buf.extend_from_slice(&data[..ETH_ADDRS_LEN]);
                buf.extend_from_slice(&tpid.to_be_bytes());
                buf.extend_from_slice(&(h.hv1.tp_vlan_tci as u16).to_be_bytes());
                buf.extend_from_slice(&data[ETH_ADDRS_LEN..]);
                buf.truncate(self.snap_len);
                self.stats.received_bytes += buf.len() as u64;
                f(&RxFrame {
                    ts_ns,
                    orig_len: h.tp_len.saturating_add(VLAN_TAG_LEN as u32),
                    data: buf,
                });
            } else {
                self.stats.received_bytes += caplen as u64;
                f(&RxFrame {
                    ts_ns,
                    orig_len: h.tp_len,
                    data,
                });
            }
            delivered += 1;
            off += h.tp_next_offset as usize;
        }
        self.stats.received += delivered as u64;
        delivered
    }
}

impl RxSource for AfPacketSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn recv_batch(
        &mut self,
        timeout: Duration,
        f: &mut dyn FnMut(&RxFrame<'_>),
    ) -> io::Result<usize> {
        let i = self.next;
        // Acquire pairs with the kernel's write barrier before it hands the block over.
        if self.ring.status(i).load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
            if !self.wait(timeout)? {
                return Ok(0);
            }
            if self.ring.status(i).load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
                return Ok(0);
            }
        }
        let n = self.read_block(i, f);
        // Release: our reads of the block happen before the kernel may refill it.
        self.ring
            .status(i)
            .store(libc::TP_STATUS_KERNEL, Ordering::Release);
        self.next = (i + 1) % self.ring.block_count;
        Ok(n)
    }

    fn stats(&mut self) -> io::Result<SourceStats> {
        self.read_kernel_stats()?;
        Ok(self.stats)
    }
}

/// Options of an [`AfPacketTx`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxOptions {
    /// The interface to send on.
    pub interface: String,
    /// Open the socket inside this network namespace (see [`AfPacketOptions::netns`]).
    pub netns: Option<PathBuf>,
    /// `PACKET_QDISC_BYPASS`: hand frames straight to the driver, skipping the qdisc (and
    /// its queueing and drops); a frame the driver refuses fails the send with `ENOBUFS`.
    pub qdisc_bypass: bool,
    /// Socket send buffer in bytes (`SO_SNDBUF`); 0 = the system default.
    pub send_buffer: u32,
}

/// Whether a failed [`AfPacketTx::send`] is worth retrying: the driver or a queue was full
/// (`ENOBUFS`), the socket buffer was (`EAGAIN`), or a signal interrupted the call.
pub fn is_retryable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOBUFS | libc::EAGAIN | libc::EINTR)
    )
}

/// Frames handed to the kernel per `sendmmsg` call at most.
const TX_BATCH: usize = 256;

/// A raw AF_PACKET transmitter on one interface: whole Ethernet frames out, nothing in (the
/// socket is bound with protocol 0, so it queues no received frames).
pub struct AfPacketTx {
    sock: PacketSocket,
}

impl std::fmt::Debug for AfPacketTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfPacketTx")
            .field("interface", &self.sock.interface)
            .finish_non_exhaustive()
    }
}

impl AfPacketTx {
    /// Opens and binds the socket. Needs CAP_NET_RAW (and CAP_SYS_ADMIN for `netns`).
    pub fn open(opts: &TxOptions) -> Result<Self> {
        check_ifname(&opts.interface)?;
        in_netns(opts.netns.as_deref(), || {
            let sock = PacketSocket::open(&opts.interface)?;
            if opts.qdisc_bypass {
                let one: libc::c_int = 1;
                sock.setsockopt(
                    libc::SOL_PACKET,
                    libc::PACKET_QDISC_BYPASS,
                    &one,
                    "setsockopt(PACKET_QDISC_BYPASS)",
                )?;
            }
            if opts.send_buffer > 0 {
                let v = opts.send_buffer.min(i32::MAX as u32) as libc::c_int;
                // SO_SNDBUFFORCE passes the sysctl cap as root; fall back to SO_SNDBUF.
                if sock
                    .setsockopt(libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &v, "SO_SNDBUFFORCE")
                    .is_err()
                {
                    sock.setsockopt(
                        libc::SOL_SOCKET,
                        libc::SO_SNDBUF,
                        &v,
                        "setsockopt(SO_SNDBUF)",
                    )?;
                }
            }
            sock.bind(0)?;
            Ok(AfPacketTx { sock })
        })
    }

    /// Sends frames with `sendmmsg`, in order; returns how many the kernel took (a prefix of
    /// `frames`). Fails only when not even the first frame could be sent: `ENOBUFS` (driver
    /// or queue full) and `EAGAIN` mean "try again", anything else (for example `EMSGSIZE`
    /// for a frame over the MTU, `ENETDOWN`) is a real error.
    pub fn send(&mut self, frames: &[&[u8]]) -> io::Result<usize> {
        let mut sent = 0;
        while sent < frames.len() {
            let chunk = &frames[sent..frames.len().min(sent + TX_BATCH)];
            // SAFETY: iovec and mmsghdr are plain old data; all-zero is a valid value.
            let mut iov: [libc::iovec; TX_BATCH] = unsafe { zeroed() };
            // SAFETY: as above.
            let mut msgs: [libc::mmsghdr; TX_BATCH] = unsafe { zeroed() };
            for (k, fr) in chunk.iter().enumerate() {
                iov[k].iov_base = fr.as_ptr() as *mut libc::c_void;
                iov[k].iov_len = fr.len();
                msgs[k].msg_hdr.msg_iov = &mut iov[k];
                msgs[k].msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: `msgs[..chunk.len()]` are initialised headers pointing at one iovec
            // each, which point at the caller's frames; the kernel only reads them (the
            // `*mut` is the C API's) during the call, while all of them are borrowed.
            let rc = unsafe {
                libc::sendmmsg(
                    self.sock.raw(),
                    msgs.as_mut_ptr(),
                    chunk.len() as libc::c_uint,
                    0,
                )
            };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if sent > 0 {
                    return Ok(sent);
                }
                return Err(e);
            }
            let rc = rc as usize;
            sent += rc;
            if rc < chunk.len() {
                break;
            }
        }
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        AfPacketOptions::new("eth0").validate().expect("defaults");
    }

    #[test]
    fn bad_options_are_rejected_precisely() {
        let base = AfPacketOptions::new("eth0");
        let cases: Vec<(AfPacketOptions, &str)> = vec![
            (
                AfPacketOptions {
                    block_size: 5000,
                    ..base.clone()
                },
                "block_size",
            ),
            (
                AfPacketOptions {
                    block_count: 0,
                    ..base.clone()
                },
                "block_count",
            ),
            (
                AfPacketOptions {
                    frame_size: 100,
                    ..base.clone()
                },
                "frame_size",
            ),
            (
                AfPacketOptions {
                    frame_size: 32,
                    ..base.clone()
                },
                "frame_size",
            ),
            (
                AfPacketOptions {
                    snap_len: 10,
                    ..base.clone()
                },
                "snap_len",
            ),
            (AfPacketOptions::new("a-name-far-too-long"), "interface"),
            (AfPacketOptions::new(""), "interface"),
            (AfPacketOptions::new("a/b"), "interface"),
        ];
        for (o, want) in cases {
            match o.validate() {
                Err(Error::InvalidOption { option, .. }) => assert_eq!(option, want, "{o:?}"),
                other => panic!("{o:?}: expected InvalidOption({want}), got {other:?}"),
            }
        }
    }

    #[test]
    fn netns_names_and_paths() {
        assert_eq!(netns_path("lab1"), PathBuf::from("/run/netns/lab1"));
        assert_eq!(
            netns_path("/proc/1/ns/net"),
            PathBuf::from("/proc/1/ns/net")
        );
    }

    #[test]
    fn missing_namespace_is_reported() {
        let o = AfPacketOptions {
            netns: Some(PathBuf::from("/nonexistent/netns/x")),
            ..AfPacketOptions::new("lo")
        };
        match AfPacketSource::open(&o) {
            Err(Error::Netns { path, .. }) => {
                assert_eq!(path, PathBuf::from("/nonexistent/netns/x"))
            }
            other => panic!("expected a namespace error, got {other:?}"),
        }
    }
}
