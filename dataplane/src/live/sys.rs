//! Small system-call wrappers live capture needs: the clocks, per-thread network namespaces,
//! CPU pinning, an interface's receive counters, and a raw AF_PACKET sender (for labs, tests
//! and traffic generators).

use std::{
    ffi::CString,
    fs::File,
    io::{self, Read, Seek, SeekFrom},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
};

/// Reads `clock` in nanoseconds.
pub fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes it. The clocks used
    // here (REALTIME, TAI, MONOTONIC) always exist on Linux, so it cannot fail.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// CLOCK_REALTIME in nanoseconds since the Unix epoch.
pub fn realtime_ns() -> i64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// CLOCK_REALTIME minus CLOCK_TAI in nanoseconds: minus the kernel's TAI offset, a whole
/// number of seconds (0 when nothing set it, -37 s with a leap-second-aware NTP daemon). The
/// two reads are nanoseconds apart, so rounding to the second gives the offset exactly.
pub fn realtime_minus_tai_ns() -> i64 {
    let tai = clock_ns(libc::CLOCK_TAI);
    let real = clock_ns(libc::CLOCK_REALTIME);
    let d = real - tai;
    (d as f64 / 1e9).round() as i64 * 1_000_000_000
}

/// The calling thread in another network namespace until dropped, when it returns to the
/// namespace it came from. Sockets, netlink requests and interface-name lookups made by this
/// thread meanwhile happen in that namespace; other threads are not affected.
#[derive(Debug)]
pub struct NetnsGuard {
    back: File,
}

impl NetnsGuard {
    /// Enters the named namespace (`/run/netns/NAME`, as `ip netns add` creates).
    pub fn enter(name: &str) -> io::Result<Self> {
        Self::enter_path(&Path::new("/run/netns").join(name))
    }

    /// Enters the namespace of a namespace file (for example `/proc/PID/ns/net`).
    pub fn enter_path(path: &Path) -> io::Result<Self> {
        let back = File::open("/proc/thread-self/ns/net")?;
        let target = File::open(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open network namespace {}: {e}", path.display()),
            )
        })?;
        setns(&target).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot enter network namespace {}: {e}", path.display()),
            )
        })?;
        Ok(NetnsGuard { back })
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if let Err(e) = setns(&self.back) {
            // The thread would go on in the wrong namespace: nothing it does next is safe.
            panic!("cannot return to the original network namespace: {e}");
        }
    }
}

fn setns(f: &File) -> io::Result<()> {
    // SAFETY: setns takes a valid open namespace fd (borrowed from `f` for the call) and a
    // namespace type; it changes only the calling thread's namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An interface's receive counters as the kernel keeps them for the whole device (its
/// `/proc/net/dev` line): what the NIC or its driver lost before any socket or XDP program
/// saw the frame. Cumulative since the device came up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IfaceCounters {
    /// Frames received (`rx_packets`).
    pub packets: u64,
    /// Bytes received (`rx_bytes`).
    pub bytes: u64,
    /// Receive errors of any kind (`rx_errors`).
    pub errors: u64,
    /// Frames dropped by the device or driver: `rx_dropped + rx_missed_errors` (missed: the
    /// NIC had no descriptor for them, the usual loss at line rate).
    pub dropped: u64,
    /// FIFO overruns (`rx_fifo_errors`).
    pub fifo: u64,
    /// Framing faults: `rx_length_errors + rx_over_errors + rx_crc_errors +
    /// rx_frame_errors`.
    pub frame: u64,
}

impl IfaceCounters {
    /// `self - earlier`, field by field (0 where a counter went backwards: a driver reset).
    pub fn since(&self, earlier: &IfaceCounters) -> IfaceCounters {
        IfaceCounters {
            packets: self.packets.saturating_sub(earlier.packets),
            bytes: self.bytes.saturating_sub(earlier.bytes),
            errors: self.errors.saturating_sub(earlier.errors),
            dropped: self.dropped.saturating_sub(earlier.dropped),
            fifo: self.fifo.saturating_sub(earlier.fifo),
            frame: self.frame.saturating_sub(earlier.frame),
        }
    }
}

/// Reads one interface's [`IfaceCounters`] from `/proc/net/dev` of the network namespace
/// the calling thread was in when it was opened (the file keeps that namespace), so a
/// capture that opened its sockets in another namespace reads that namespace's device.
#[derive(Debug)]
pub struct IfaceStats {
    iface: String,
    file: File,
    buf: String,
}

impl IfaceStats {
    /// Opens the counters of `iface` in the calling thread's namespace; fails if it has no
    /// such interface.
    pub fn open(iface: &str) -> io::Result<Self> {
        let mut s = IfaceStats {
            iface: iface.to_owned(),
            file: File::open("/proc/thread-self/net/dev")?,
            buf: String::new(),
        };
        s.read()?;
        Ok(s)
    }

    /// The interface's counters now.
    pub fn read(&mut self) -> io::Result<IfaceCounters> {
        self.buf.clear();
        self.file.seek(SeekFrom::Start(0))?;
        self.file.read_to_string(&mut self.buf)?;
        parse_net_dev(&self.buf, &self.iface).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("interface `{}` is not in /proc/net/dev", self.iface),
            )
        })
    }
}

/// `iface`'s receive counters from `/proc/net/dev` text: after `NAME:`, the receive columns
/// bytes, packets, errs, drop, fifo, frame, compressed, multicast.
fn parse_net_dev(text: &str, iface: &str) -> Option<IfaceCounters> {
    text.lines().find_map(|line| {
        let (name, rest) = line.split_once(':')?;
        if name.trim() != iface {
            return None;
        }
        let mut v = rest.split_whitespace().map(|x| x.parse::<u64>().ok());
        let mut next = || v.next().flatten();
        Some(IfaceCounters {
            bytes: next()?,
            packets: next()?,
            errors: next()?,
            dropped: next()?,
            fifo: next()?,
            frame: next()?,
        })
    })
}

/// Frames the kernel dropped because a CPU's input backlog was full (`netdev_max_backlog`),
/// summed over CPUs, since boot: the second column of `/proc/net/softnet_stat`. Host-wide,
/// every interface's traffic together. Frames from drivers without NAPI (veth without XDP)
/// or steered by RPS wait in that backlog before any packet socket sees them, so an
/// AF_PACKET capture loses frames there that no socket counter shows.
pub fn softnet_dropped() -> io::Result<u64> {
    let text = std::fs::read_to_string("/proc/net/softnet_stat")?;
    parse_softnet_dropped(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "/proc/net/softnet_stat has no readable `dropped` column",
        )
    })
}

/// The sum of the second (hexadecimal) column of `/proc/net/softnet_stat` text.
fn parse_softnet_dropped(text: &str) -> Option<u64> {
    let mut sum = 0u64;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let col = line.split_whitespace().nth(1)?;
        sum += u64::from_str_radix(col, 16).ok()?;
    }
    Some(sum)
}

/// Pins the calling thread to one CPU.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cpu {cpu} is out of range"),
        ));
    }
    // SAFETY: `cpu` is below CPU_SETSIZE (checked), so the bit is inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the size passed.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The index of a network interface in the calling thread's namespace.
pub fn if_index(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {name:?} contains a NUL byte"),
        )
    })?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface named `{name}`"),
        ));
    }
    Ok(idx)
}

/// An AF_PACKET raw socket bound to one interface that sends whole Ethernet frames (with
/// `PACKET_QDISC_BYPASS`, so frames go straight to the driver).
#[derive(Debug)]
pub struct RawSender {
    fd: OwnedFd,
    ifindex: u32,
}

impl RawSender {
    /// Opens the socket on `iface` (in the calling thread's network namespace).
    pub fn open(iface: &str) -> io::Result<Self> {
        let ifindex = if_index(iface)?;
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                0, // send only: receive nothing
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let one: libc::c_int = 1;
        // SAFETY: valid fd, option value pointer and length of a c_int.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(RawSender { fd, ifindex })
    }

    /// Sends one frame (Ethernet header included).
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid start.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = self.ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(frame.get(..6).unwrap_or(&[0; 6]));
        // SAFETY: `frame` is valid for `frame.len()` bytes and `addr` for its size.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != frame.len() {
            return Err(io::Error::other(format!(
                "short send: {n} of {} bytes",
                frame.len()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// `/proc/net/dev` as the kernel writes it: names padded on the left, or run into the
    /// first number when they are long.
    #[test]
    fn net_dev_lines_parse() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:  123456     789    0    0    0     0          0         0   123456     789    0    0    0     0       0          0
tv9t0: 9876543210 12345678 7 6 5 4 0 3 1 2 0 0 0 0 0 0
";
        let c = super::parse_net_dev(text, "tv9t0").unwrap();
        assert_eq!(
            c,
            super::IfaceCounters {
                bytes: 9_876_543_210,
                packets: 12_345_678,
                errors: 7,
                dropped: 6,
                fifo: 5,
                frame: 4,
            }
        );
        assert_eq!(super::parse_net_dev(text, "lo").unwrap().packets, 789);
        assert!(super::parse_net_dev(text, "tv9").is_none());
        assert!(super::parse_net_dev("x: 1 2", "x").is_none(), "short line");
        let later = super::IfaceCounters {
            packets: 12_345_680,
            dropped: 5,
            ..c
        };
        let d = later.since(&c);
        assert_eq!((d.packets, d.dropped, d.bytes), (2, 0, 0));
    }

    #[test]
    fn softnet_dropped_sums_the_second_column() {
        let text = "00d2af43 00000000 00000001 00000000\n0abbe94d 00035a23 00000003 00000000\n";
        assert_eq!(super::parse_softnet_dropped(text), Some(0x35a23));
        assert_eq!(super::parse_softnet_dropped(""), Some(0));
        assert_eq!(super::parse_softnet_dropped("0001\n"), None);
        assert_eq!(super::parse_softnet_dropped("1 zz\n"), None);
        assert!(super::softnet_dropped().is_ok());
    }

    /// The loopback device of this namespace is always there and counts.
    #[test]
    fn loopback_counters_read() {
        let mut s = super::IfaceStats::open("lo").unwrap();
        let a = s.read().unwrap();
        let b = s.read().unwrap();
        assert!(b.packets >= a.packets);
        assert!(super::IfaceStats::open("no-such-if0").is_err());
    }

    use super::*;

    #[test]
    fn tai_offset_is_whole_seconds() {
        assert_eq!(realtime_minus_tai_ns() % 1_000_000_000, 0);
    }

    #[test]
    fn unknown_interface_is_named_in_the_error() {
        let e = if_index("tv-no-such-if").unwrap_err();
        assert!(e.to_string().contains("tv-no-such-if"), "{e}");
    }
}
