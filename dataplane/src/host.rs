//! What this host supports for live capture, asked of the kernel itself: the BPF syscall (by
//! loading a two-instruction XDP program), AF_XDP and AF_PACKET sockets, an interface's XDP
//! features (the `netdev` generic-netlink family, kernel 6.3+), its driver, channels and RSS
//! configuration (ethtool ioctls), and the locked-memory limit. `tapvault check` reports these.
//!
//! Every probe returns its own `io::Result`, so an unprivileged run reports "permission
//! denied" per probe instead of failing as a whole. Nothing here changes the interface: no
//! XDP program is attached (some drivers reset their rings on attach).

use std::{
    ffi::CString,
    fs::File,
    io::{self, Read, Write},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
};

/// The kernel release (`uname -r`).
pub fn kernel_release() -> io::Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/osrelease")?
        .trim()
        .to_string())
}

/// Opens a socket.
fn socket(domain: i32, ty: i32, proto: i32) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; a non-negative result is a new descriptor that
    // nothing else owns, so OwnedFd may close it.
    unsafe {
        let fd = libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Whether an AF_XDP socket can be created (kernel support and CAP_NET_RAW).
pub fn af_xdp_socket() -> io::Result<()> {
    socket(libc::AF_XDP, libc::SOCK_RAW, 0).map(drop)
}

/// Whether an AF_PACKET socket can be created (CAP_NET_RAW).
pub fn af_packet_socket() -> io::Result<()> {
    socket(
        libc::AF_PACKET,
        libc::SOCK_RAW,
        i32::from((libc::ETH_P_ALL as u16).to_be()),
    )
    .map(drop)
}

/// `union bpf_attr` for `BPF_PROG_LOAD`, up to the fields used (the kernel accepts a shorter
/// attribute and treats the rest as zero).
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

const BPF_PROG_LOAD: i64 = 5;
const BPF_PROG_TYPE_XDP: u32 = 6;

/// Whether this process may load an XDP program: loads `r0 = XDP_PASS; exit` (CAP_BPF and
/// CAP_NET_ADMIN, or CAP_SYS_ADMIN) and closes it at once; nothing is attached.
pub fn bpf_prog_load() -> io::Result<()> {
    // struct bpf_insn: code, dst_reg:4 | src_reg:4, off, imm (little-endian host).
    let insns: [u64; 2] = [
        // BPF_ALU64 | BPF_MOV | BPF_K, dst r0, imm XDP_PASS (2).
        0xb7 | (2u64 << 32),
        // BPF_JMP | BPF_EXIT.
        0x95,
    ];
    let license = c"GPL";
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
    };
    // SAFETY: `attr` points to initialised memory of the size passed, and the instruction
    // and license pointers it holds stay valid for the call. A non-negative result is a new
    // program descriptor owned by nobody else.
    unsafe {
        let fd = libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoadAttr,
            size_of::<ProgLoadAttr>(),
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        drop(OwnedFd::from_raw_fd(fd as i32));
    }
    Ok(())
}

/// The `RLIMIT_MEMLOCK` soft and hard limits in bytes (`None` = unlimited). Kernels 5.11+
/// charge BPF maps and AF_XDP UMEM to the memory cgroup instead, except that UMEM
/// registration still checks this limit for processes without CAP_IPC_LOCK.
pub fn memlock_limit() -> io::Result<(Option<u64>, Option<u64>)> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the valid, exclusively borrowed `r`.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let f = |v: libc::rlim_t| (v != libc::RLIM_INFINITY).then_some(v);
    Ok((f(r.rlim_cur), f(r.rlim_max)))
}

/// Space on the file system holding `path`: (bytes available to unprivileged users, total
/// bytes).
pub fn fs_space(path: &Path) -> io::Result<(u64, u64)> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `statvfs` is plain old data, valid when zeroed.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` an exclusively borrowed statvfs that
    // the call fills in.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let frsize = st.f_frsize as u64;
    Ok((st.f_bavail as u64 * frsize, st.f_blocks as u64 * frsize))
}

/// Issues one `SIOCETHTOOL` ioctl with `buf` as the command structure (its first u32 is the
/// command), on a socket of the calling thread's network namespace.
fn ethtool(iface: &str, buf: &mut [u8]) -> io::Result<()> {
    let fd = socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
    ethtool_on(&fd, iface, buf)
}

/// [`ethtool`] on socket `fd`: the interface is looked up in the namespace `fd` was made in.
fn ethtool_on(fd: &OwnedFd, iface: &str, buf: &mut [u8]) -> io::Result<()> {
    let name = CString::new(iface).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let bytes = name.as_bytes_with_nul();
    if bytes.len() > libc::IFNAMSIZ {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: `ifreq` is plain old data, valid when zeroed.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = buf.as_mut_ptr().cast();
    // SAFETY: the ioctl reads the name from `ifr` and reads and writes the command structure
    // through `ifru_data`; every command used here writes at most the size its header in
    // `buf` declares, which the callers allocate, except ETHTOOL_GSTRINGS and ETHTOOL_GSTATS,
    // which write as many entries as the driver has at the time of the call: their caller
    // (`DriverStats`) sizes `buf` for twice the count it just read plus 64 (`buf` is
    // exclusively borrowed and outlives the call).
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Driver facts from `ETHTOOL_GDRVINFO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverInfo {
    /// Driver name (`ixgbe`, `mlx5_core`, `veth`).
    pub driver: String,
    /// Driver version.
    pub version: String,
    /// Firmware version.
    pub firmware: String,
    /// Bus address.
    pub bus_info: String,
}

/// `ETHTOOL_GDRVINFO`.
pub fn driver_info(iface: &str) -> io::Result<DriverInfo> {
    // struct ethtool_drvinfo: cmd, driver[32], version[32], fw_version[32], bus_info[32],
    // erom_version[32], reserved2[12], five u32.
    let mut b = vec![0u8; 4 + 32 * 5 + 12 + 20];
    put_u32(&mut b, 0, 0x0000_0003);
    ethtool(iface, &mut b)?;
    Ok(DriverInfo {
        driver: cstr(&b[4..36]),
        version: cstr(&b[36..68]),
        firmware: cstr(&b[68..100]),
        bus_info: cstr(&b[100..132]),
    })
}

/// The driver's own statistics (`ethtool -S`): names read once, values on demand, through a
/// socket of the namespace [`DriverStats::open`] ran in (so a capture in another namespace
/// reads its own device).
#[derive(Debug)]
pub struct DriverStats {
    fd: OwnedFd,
    iface: String,
    names: Vec<String>,
    buf: Vec<u8>,
}

/// `ETHTOOL_GSTRINGS` / `ETHTOOL_GSTATS` string set of the statistics (`ETH_SS_STATS`).
const ETH_SS_STATS: u32 = 1;
/// Bytes of one name in `ETHTOOL_GSTRINGS` (`ETH_GSTRING_LEN`).
const GSTRING_LEN: usize = 32;

impl DriverStats {
    /// Reads the names of `iface`'s driver statistics in the calling thread's namespace.
    /// Fails with `Unsupported` when the driver has none (loopback, many virtual devices).
    pub fn open(iface: &str) -> io::Result<Self> {
        let fd = socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
        let mut s = DriverStats {
            fd,
            iface: iface.to_owned(),
            names: Vec::new(),
            buf: Vec::new(),
        };
        s.read_names()?;
        if s.names.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("the driver of `{iface}` reports no statistics"),
            ));
        }
        Ok(s)
    }

    /// The statistics' names, in the order of [`read`](Self::read)'s values.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// How many statistics the driver reports now (`n_stats` of `ETHTOOL_GDRVINFO`).
    fn count(&self) -> io::Result<usize> {
        let mut b = vec![0u8; 4 + 32 * 5 + 12 + 20];
        put_u32(&mut b, 0, 0x0000_0003);
        ethtool_on(&self.fd, &self.iface, &mut b).map_err(|e| match e.raw_os_error() {
            Some(libc::EOPNOTSUPP) => io::Error::new(
                io::ErrorKind::Unsupported,
                format!("`{}` has no ethtool driver information", self.iface),
            ),
            _ => e,
        })?;
        // struct ethtool_drvinfo: ..., reserved2[12] at 164, n_priv_flags at 176, n_stats.
        Ok(u32_at(&b, 180) as usize)
    }

    fn read_names(&mut self) -> io::Result<()> {
        let n = self.count()?;
        // struct ethtool_gstrings: cmd, string_set, len, then len names of 32 bytes. The
        // kernel writes as many names as the driver has at the time of the call, whatever
        // len says, so the buffer leaves room for the set to grow in between.
        let cap = n * 2 + 64;
        let mut b = vec![0u8; 12 + cap * GSTRING_LEN];
        put_u32(&mut b, 0, 0x0000_001b);
        put_u32(&mut b, 4, ETH_SS_STATS);
        put_u32(&mut b, 8, n as u32);
        ethtool_on(&self.fd, &self.iface, &mut b)?;
        let got = (u32_at(&b, 8) as usize).min(cap);
        self.names = (0..got)
            .map(|i| cstr(&b[12 + i * GSTRING_LEN..12 + (i + 1) * GSTRING_LEN]))
            .collect();
        Ok(())
    }

    /// The values now, one per [`names`](Self::names) entry. When the driver's set changed
    /// (a reconfiguration), the names are read again first.
    pub fn read(&mut self) -> io::Result<Vec<u64>> {
        let n = self.count()?;
        if n != self.names.len() {
            self.read_names()?;
        }
        let n = self.names.len();
        // struct ethtool_stats: cmd, n_stats, then n_stats u64. The kernel writes as many
        // values as the driver has at the time of the call, whatever n_stats says, so the
        // buffer leaves room for the set to grow in between.
        let cap = n * 2 + 64;
        self.buf.clear();
        self.buf.resize(8 + cap * 8, 0);
        put_u32(&mut self.buf, 0, 0x0000_001d);
        put_u32(&mut self.buf, 4, n as u32);
        ethtool_on(&self.fd, &self.iface, &mut self.buf)?;
        let got = u32_at(&self.buf, 4) as usize;
        if got != n {
            return Err(io::Error::other(format!(
                "the driver of `{}` changed its statistics during the read ({n} names, {got} values)",
                self.iface
            )));
        }
        Ok((0..n)
            .map(|i| {
                let o = 8 + i * 8;
                u64::from_ne_bytes(self.buf[o..o + 8].try_into().expect("8 bytes"))
            })
            .collect())
    }
}

/// Whether a driver statistic named `name` counts received frames lost or damaged: no word
/// of the name starts with `tx` (words split at anything not a letter or digit), and it
/// speaks of drops, misses, discards, missing buffers or descriptors, failed allocations,
/// overruns, full queues or errors. Names are the driver's own: `rx_queue_0_drops` (veth),
/// `rx_missed_errors` (ixgbe), `rx_out_of_buffer` (mlx5), `port.rx_discards` (i40e).
pub fn is_rx_loss_stat(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    if n.split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| w.starts_with("tx"))
    {
        return false;
    }
    [
        "drop",
        "miss",
        "discard",
        "no_buf",
        "nobuf",
        "out_of_buf",
        "no_desc",
        "fail",
        "fifo",
        "overrun",
        "over_err",
        "full",
        "err",
    ]
    .iter()
    .any(|k| n.contains(k))
}

/// Channel counts from `ETHTOOL_GCHANNELS` (`ethtool -l`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channels {
    /// Maximum RX-only channels.
    pub max_rx: u32,
    /// Maximum combined channels.
    pub max_combined: u32,
    /// Current RX-only channels.
    pub rx: u32,
    /// Current combined channels.
    pub combined: u32,
}

/// `ETHTOOL_GCHANNELS`.
pub fn channels(iface: &str) -> io::Result<Channels> {
    let mut b = vec![0u8; 36];
    put_u32(&mut b, 0, 0x0000_003c);
    ethtool(iface, &mut b)?;
    Ok(Channels {
        max_rx: u32_at(&b, 4),
        max_combined: u32_at(&b, 16),
        rx: u32_at(&b, 20),
        combined: u32_at(&b, 32),
    })
}

/// The RSS configuration from `ETHTOOL_GRSSH` (`ethtool -x`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rss {
    /// Hash function bits (`ETH_RSS_HASH_TOP` = 1, `XOR` = 2, `CRC32` = 4).
    pub hfunc: u8,
    /// Input transformation bits (`RXH_XFRM_SYM_XOR` = 1, `RXH_XFRM_SYM_OR_XOR` = 2):
    /// non-zero makes the hash symmetric whatever the key.
    pub input_xfrm: u8,
    /// The hash key.
    pub key: Vec<u8>,
    /// The indirection table (hash bucket to queue).
    pub indir: Vec<u32>,
}

impl Rss {
    /// True when both directions of a connection hash alike: an input transformation is
    /// on, or the Toeplitz key is the 16-bit pattern `6d5a` repeated.
    pub fn symmetric(&self) -> bool {
        self.input_xfrm & 0x3 != 0 || (self.key.len() >= 2 && symmetric_key(&self.key))
    }

    /// The hash function's name.
    pub fn hfunc_name(&self) -> &'static str {
        match self.hfunc {
            1 => "toeplitz",
            2 => "xor",
            4 => "crc32",
            0 => "unknown",
            _ => "other",
        }
    }
}

/// True for a Toeplitz key that repeats a 16-bit pattern (`6d:5a:6d:5a:…` is the usual one),
/// which makes the hash symmetric in source and destination.
pub fn symmetric_key(key: &[u8]) -> bool {
    key.len() >= 4 && key.chunks(2).all(|c| c == &key[..c.len()])
}

/// `ETHTOOL_GRSSH`.
pub fn rss(iface: &str) -> io::Result<Rss> {
    // struct ethtool_rxfh: cmd, rss_context, indir_size, key_size, hfunc u8, input_xfrm u8,
    // rsvd8[2], rsvd32, then rss_config[]: indir_size u32s followed by key_size bytes.
    const HDR: usize = 24;
    let mut b = vec![0u8; HDR];
    put_u32(&mut b, 0, 0x0000_0046);
    ethtool(iface, &mut b)?;
    let (indir_size, key_size) = (u32_at(&b, 8) as usize, u32_at(&b, 12) as usize);
    if indir_size > 1 << 16 || key_size > 1024 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "implausible RSS sizes",
        ));
    }
    let mut b = vec![0u8; HDR + indir_size * 4 + key_size];
    put_u32(&mut b, 0, 0x0000_0046);
    put_u32(&mut b, 8, indir_size as u32);
    put_u32(&mut b, 12, key_size as u32);
    ethtool(iface, &mut b)?;
    let indir = (0..indir_size).map(|i| u32_at(&b, HDR + 4 * i)).collect();
    let k = HDR + indir_size * 4;
    Ok(Rss {
        hfunc: b[16],
        input_xfrm: b[17],
        key: b[k..k + key_size].to_vec(),
        indir,
    })
}

/// Flow types of `ETHTOOL_GRXFH`.
pub const FLOW_TYPES: [(&str, u32); 4] = [("tcp4", 1), ("udp4", 2), ("tcp6", 5), ("udp6", 6)];

/// The header fields an RSS hash covers for one flow type (`ethtool -n IF rx-flow-hash
/// tcp4`), as `RXH_*` bits.
pub fn rx_flow_hash(iface: &str, flow_type: u32) -> io::Result<u64> {
    // struct ethtool_rxnfc: cmd, flow_type, data (u64) and more; GRXFH reads and writes only
    // these (the kernel copies `offsetof(data) + sizeof(data)`), the rest is spare room.
    let mut b = vec![0u8; 256];
    put_u32(&mut b, 0, 0x0000_0029);
    put_u32(&mut b, 4, flow_type);
    ethtool(iface, &mut b)?;
    Ok(u64::from_ne_bytes(b[8..16].try_into().unwrap_or_default()))
}

/// The names of `RXH_*` bits.
pub fn rxh_names(bits: u64) -> Vec<&'static str> {
    [
        (1 << 1, "l2da"),
        (1 << 2, "vlan"),
        (1 << 3, "l3proto"),
        (1 << 4, "ip-src"),
        (1 << 5, "ip-dst"),
        (1 << 6, "l4-src-port"),
        (1 << 7, "l4-dst-port"),
        (1 << 31, "discard"),
    ]
    .iter()
    .filter(|(b, _)| bits & b != 0)
    .map(|(_, n)| *n)
    .collect()
}

/// An interface's XDP abilities as the driver declares them (`NETDEV_A_DEV_XDP_FEATURES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XdpFeatures {
    /// `NETDEV_XDP_ACT_*` bits.
    pub bits: u64,
    /// Most fragments a zero-copy AF_XDP frame may have (0 when unknown).
    pub zc_max_segs: u32,
}

impl XdpFeatures {
    /// Native (driver-mode) XDP: `NETDEV_XDP_ACT_BASIC`.
    pub fn native(&self) -> bool {
        self.bits & 1 != 0
    }
    /// `XDP_REDIRECT` into an XSKMAP from driver mode.
    pub fn redirect(&self) -> bool {
        self.bits & 2 != 0
    }
    /// Zero-copy AF_XDP: `NETDEV_XDP_ACT_XSK_ZEROCOPY`.
    pub fn zero_copy(&self) -> bool {
        self.bits & 8 != 0
    }
    /// The feature names, as `ynl` prints them.
    pub fn names(&self) -> Vec<&'static str> {
        [
            "basic",
            "redirect",
            "ndo-xmit",
            "xsk-zerocopy",
            "hw-offload",
            "rx-sg",
            "ndo-xmit-sg",
        ]
        .iter()
        .enumerate()
        .filter(|(i, _)| self.bits & (1 << i) != 0)
        .map(|(_, n)| *n)
        .collect()
    }
}

const NLMSG_ERROR: u16 = 2;
const GENL_ID_CTRL: u16 = 0x10;

fn nl_attr(out: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    out.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(payload);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// Sends one generic-netlink request and returns the attributes of the reply.
fn genl_request(
    sock: &mut File,
    family: u16,
    cmd: u8,
    attrs: &[u8],
) -> io::Result<Vec<(u16, Vec<u8>)>> {
    let len = 16 + 4 + attrs.len();
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&family.to_ne_bytes());
    msg.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    msg.extend_from_slice(&[cmd, 1, 0, 0]); // genlmsghdr: cmd, version
    msg.extend_from_slice(attrs);
    sock.write_all(&msg)?;
    let mut buf = vec![0u8; 16384];
    let n = sock.read(&mut buf)?;
    let b = &buf[..n];
    if n < 16 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "short netlink reply",
        ));
    }
    let ty = u16::from_ne_bytes([b[4], b[5]]);
    if ty == NLMSG_ERROR {
        let errno = i32::from_ne_bytes([b[16], b[17], b[18], b[19]]);
        return Err(io::Error::from_raw_os_error(-errno));
    }
    let end = (u32_at(b, 0) as usize).min(n);
    let mut attrs = Vec::new();
    let mut off = 20;
    while off + 4 <= end {
        let alen = u16::from_ne_bytes([b[off], b[off + 1]]) as usize;
        let aty = u16::from_ne_bytes([b[off + 2], b[off + 3]]) & 0x3fff;
        if alen < 4 || off + alen > end {
            break;
        }
        attrs.push((aty, b[off + 4..off + alen].to_vec()));
        off += (alen + 3) & !3;
    }
    Ok(attrs)
}

/// The XDP features the interface's driver declares, through the `netdev` generic-netlink
/// family (kernel 6.3 and later; older kernels answer `ENOENT`).
pub fn xdp_features(iface: &str) -> io::Result<XdpFeatures> {
    let ifindex: u32 =
        std::fs::read_to_string(Path::new("/sys/class/net").join(iface).join("ifindex"))?
            .trim()
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad ifindex"))?;
    let mut sock = File::from(socket(
        libc::AF_NETLINK,
        libc::SOCK_RAW,
        libc::NETLINK_GENERIC,
    )?);
    let mut a = Vec::new();
    nl_attr(&mut a, 2, b"netdev\0"); // CTRL_ATTR_FAMILY_NAME
    let reply = genl_request(&mut sock, GENL_ID_CTRL, 3, &a)?; // CTRL_CMD_GETFAMILY
    let family = reply
        .iter()
        .find(|(t, v)| *t == 1 && v.len() >= 2) // CTRL_ATTR_FAMILY_ID
        .map(|(_, v)| u16::from_ne_bytes([v[0], v[1]]))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no netdev family id"))?;
    let mut a = Vec::new();
    nl_attr(&mut a, 1, &ifindex.to_ne_bytes()); // NETDEV_A_DEV_IFINDEX
    let reply = genl_request(&mut sock, family, 1, &a)?; // NETDEV_CMD_DEV_GET
    let mut f = XdpFeatures {
        bits: 0,
        zc_max_segs: 0,
    };
    for (t, v) in reply {
        match (t, v.len()) {
            (3, 8) => f.bits = u64::from_ne_bytes(v[..8].try_into().unwrap_or_default()),
            (4, 4) => f.zc_max_segs = u32_at(&v, 0),
            _ => {}
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_keys() {
        let sym: Vec<u8> = [0x6d, 0x5a].iter().copied().cycle().take(40).collect();
        assert!(symmetric_key(&sym));
        let mut asym = sym.clone();
        asym[7] = 0x11;
        assert!(!symmetric_key(&asym));
        let rss = Rss {
            hfunc: 1,
            input_xfrm: 1,
            key: asym,
            indir: vec![],
        };
        assert!(rss.symmetric(), "sym-xor makes any key symmetric");
    }

    #[test]
    fn rx_loss_stats_are_picked_by_name() {
        for name in [
            "rx_queue_0_drops",
            "rx_queue_1_xdp_drops",
            "rx_missed_errors",
            "rx_no_buffer_count",
            "rx_out_of_buffer",
            "port.rx_discards",
            "rx_fifo_errors",
            "alloc_rx_page_failed",
            "rx_wqe_err",
            "RX_CRC_ERRORS",
        ] {
            assert!(is_rx_loss_stat(name), "{name}");
        }
        for name in [
            "rx_queue_0_xdp_packets",
            "rx_bytes",
            "tx_dropped",
            "tx_queue_0_xdp_xmit_errors",
            "rx_queue_0_xdp_tx_errors",
            "port.tx_errors",
            "txq0_drops",
            "peer_ifindex",
        ] {
            assert!(!is_rx_loss_stat(name), "{name}");
        }
    }

    #[test]
    fn loopback_has_no_driver_statistics() {
        let e = DriverStats::open("lo").expect_err("lo has no ethtool statistics");
        assert_eq!(e.kind(), io::ErrorKind::Unsupported, "{e}");
        assert!(DriverStats::open("no-such-if0").is_err());
    }

    #[test]
    fn loopback_probes() {
        // `lo` exists everywhere; these must answer without panicking, whatever the
        // privileges. lo has no RSS: the ioctl fails with EOPNOTSUPP.
        assert!(
            kernel_release()
                .unwrap()
                .chars()
                .next()
                .unwrap()
                .is_ascii_digit()
        );
        assert!(rss("lo").is_err());
        let _ = channels("lo");
        let _ = driver_info("lo");
        assert!(memlock_limit().is_ok());
        if let Ok(f) = xdp_features("lo") {
            assert!(
                !f.zero_copy(),
                "lo has no zero-copy AF_XDP: {:?}",
                f.names()
            );
        }
        assert!(driver_info("no-such-if-xyz").is_err());
    }
}
