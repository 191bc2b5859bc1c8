//! An AF_XDP socket bound to one RX queue, as an [`RxSource`].
//!
//! Each socket owns its UMEM (an anonymous mapping of `frame_count * frame_size` bytes), its
//! fill and completion rings and its RX ring (no TX ring: capture only), built with
//! `xdpilone`. It binds zero-copy when asked and the driver offers it, else copy mode (veth:
//! copy only, `XDP_ZEROCOPY` fails with EOPNOTSUPP), with `XDP_USE_NEED_WAKEUP` unless turned
//! off, and optional busy polling. Frames go back to the fill ring right after the batch's
//! callback.
//!
//! Each frame's arrival time and wire length come from the metadata the XDP program writes in
//! front of it ([`tapvault_xdp_abi::PacketMeta`], CLOCK_TAI converted to CLOCK_REALTIME
//! here): in the metadata area, or inside the data as a prefix stripped here when the kernel
//! refuses `bpf_xdp_adjust_meta`
//! ([`XdpProgram::meta_in_data`](super::xdp::XdpProgram::meta_in_data)). In that variant
//! the program redirects no frame without the prefix (it passes such frames to the kernel),
//! so a frame's own bytes are never taken for one. A frame without metadata (a driver
//! without headroom for it, metadata-area variant) gets the batch's CLOCK_REALTIME and its
//! captured length, and is counted in [`XskSocket::frames_without_meta`].

use std::{
    cell::Cell,
    ffi::CString,
    fmt, io,
    num::NonZeroU32,
    os::fd::{AsFd, BorrowedFd},
    ptr::NonNull,
    time::Duration,
};

use tapvault_xdp_abi::{META_LEN, META_MAGIC, PacketMeta};
use xdpilone::{DeviceQueue, IfInfo, RingRx, Socket, SocketConfig, Umem, UmemConfig, User};

use super::{RxFrame, RxSource, SourceStats, sys};

/// `SO_BUSY_POLL` (include/uapi/asm-generic/socket.h).
const SO_BUSY_POLL: libc::c_int = 46;
/// `SO_PREFER_BUSY_POLL`.
const SO_PREFER_BUSY_POLL: libc::c_int = 69;
/// `SO_BUSY_POLL_BUDGET`.
const SO_BUSY_POLL_BUDGET: libc::c_int = 70;

/// Zero-copy or copy mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BindMode {
    /// Zero-copy only: fail when the driver does not offer it.
    ZeroCopy,
    /// Copy mode only.
    Copy,
    /// Zero-copy, else copy mode ([`XskSocket::bind_mode`] says which).
    #[default]
    Auto,
}

/// The mode a socket is bound in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActiveBind {
    /// The NIC writes into the UMEM.
    ZeroCopy,
    /// The kernel copies each frame into the UMEM.
    Copy,
}

impl fmt::Display for ActiveBind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ActiveBind::ZeroCopy => "zero-copy",
            ActiveBind::Copy => "copy",
        })
    }
}

/// Busy-polling settings (`SO_PREFER_BUSY_POLL`, `SO_BUSY_POLL`, `SO_BUSY_POLL_BUDGET`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusyPoll {
    /// Microseconds to busy-poll in a blocking call.
    pub usecs: u32,
    /// Frames per busy-poll round.
    pub budget: u32,
}

/// Options of [`XskSocket::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XskOptions {
    /// UMEM frames (at least `ring_size`: the fill ring starts full).
    pub frame_count: u32,
    /// Bytes per UMEM frame: 2048 or 4096 (the kernel needs a power of two in aligned mode).
    pub frame_size: u32,
    /// Entries of the fill and RX rings (a power of two).
    pub ring_size: u32,
    /// Frames per [`RxSource::recv_batch`] at most.
    pub batch: u32,
    /// Zero-copy or copy.
    pub bind: BindMode,
    /// `XDP_USE_NEED_WAKEUP`: the kernel says when it needs a syscall to go on.
    pub need_wakeup: bool,
    /// Busy polling, if any.
    pub busy_poll: Option<BusyPoll>,
}

impl Default for XskOptions {
    fn default() -> Self {
        XskOptions {
            frame_count: 8192,
            frame_size: 4096,
            ring_size: 4096,
            batch: 64,
            bind: BindMode::Auto,
            need_wakeup: true,
            busy_poll: None,
        }
    }
}

/// The UMEM's memory: an anonymous private mapping, populated up front and unmapped on drop.
struct Area {
    /// Owns the mapping. The kernel writes frames into it behind Rust's back, so no reference
    /// to the whole area is held: frames are reached through `ptr` only.
    _map: memmap2::MmapMut,
    ptr: NonNull<u8>,
    len: usize,
}

impl Area {
    fn new(len: usize) -> io::Result<Self> {
        let mut map = memmap2::MmapOptions::new().len(len).populate().map_anon()?;
        // The mapping does not move when `map` does, so the pointer stays valid for its life.
        let ptr =
            NonNull::new(map.as_mut_ptr()).ok_or_else(|| io::Error::other("mmap gave NULL"))?;
        Ok(Area {
            _map: map,
            ptr,
            len,
        })
    }
}

/// An AF_XDP socket on one RX queue. Register it with
/// [`XdpProgram::register_socket`](super::xdp::XdpProgram::register_socket).
pub struct XskSocket {
    name: String,
    mode: ActiveBind,
    opts: XskOptions,
    rx: RingRx,
    fq: DeviceQueue,
    user: User,
    /// Kept for its registration with the kernel (dropped before `area`).
    _umem: Umem,
    /// Frames owned by user space and not yet in the fill ring.
    free: Vec<u64>,
    /// Frames taken from the RX ring in the current batch.
    taken: Vec<u64>,
    received: u64,
    received_bytes: u64,
    no_meta: u64,
    /// Frames carry their [`PacketMeta`] inside the data, in front of the frame (set by
    /// [`XdpProgram::register_socket`](super::xdp::XdpProgram::register_socket) when the
    /// program that writes it that way is loaded).
    meta_in_data: Cell<bool>,
    // Last: unmapped after everything that points into it.
    area: Area,
}

// SAFETY: `XskSocket` exclusively owns its UMEM area (the raw pointers in `Area` and `Umem`
// point into it) and its socket; every method takes `&mut self` or only reads immutable
// configuration, and the kernel side of the rings is synchronised by the rings' atomics. So
// moving it to another thread is sound; it is not `Sync`.
unsafe impl Send for XskSocket {}

impl fmt::Debug for XskSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XskSocket")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// How long [`XskSocket::open`] waits for a busy queue to be released. The kernel frees a
/// closed socket's buffer pool, and with it the queue, from a work queue after RCU grace
/// periods: on a loaded machine (CI: two cores, tests in parallel) that once took more than
/// the 2 s this used to be.
pub const BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn errno(e: xdpilone::Errno, what: &str, iface: &str, queue: u32) -> io::Error {
    let os = io::Error::from_raw_os_error(e.get_raw());
    io::Error::new(
        os.kind(),
        format!("AF_XDP on `{iface}` queue {queue}: {what}: {os}"),
    )
}

impl XskSocket {
    /// Opens a socket on RX queue `queue` of `iface` (in the calling thread's network
    /// namespace), fills its fill ring and binds it.
    ///
    /// A queue that is busy (EBUSY) is retried for up to [`BUSY_WAIT`]: the kernel releases a
    /// closed socket's hold on its queue asynchronously (the buffer pool is freed from a
    /// work queue), so a socket reopened right after one closed, as on a quick restart, can
    /// find the queue busy for a moment. A queue held by a live socket stays busy, and the
    /// error is returned after the wait.
    pub fn open(iface: &str, queue: u32, opts: &XskOptions) -> io::Result<Self> {
        Self::open_waiting(iface, queue, opts, BUSY_WAIT)
    }

    /// [`open`](Self::open), waiting at most `busy_wait` for a busy queue.
    pub fn open_waiting(
        iface: &str,
        queue: u32,
        opts: &XskOptions,
        busy_wait: std::time::Duration,
    ) -> io::Result<Self> {
        validate(opts)?;
        let deadline = std::time::Instant::now() + busy_wait;
        loop {
            match Self::open_once(iface, queue, opts) {
                Err(e)
                    if e.kind() == io::ErrorKind::ResourceBusy
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                r => return r,
            }
        }
    }

    fn open_once(iface: &str, queue: u32, opts: &XskOptions) -> io::Result<Self> {
        match opts.bind {
            BindMode::ZeroCopy => Self::open_mode(iface, queue, opts, ActiveBind::ZeroCopy),
            BindMode::Copy => Self::open_mode(iface, queue, opts, ActiveBind::Copy),
            BindMode::Auto => match Self::open_mode(iface, queue, opts, ActiveBind::ZeroCopy) {
                Ok(s) => Ok(s),
                // No zero-copy support in the driver (veth, generic XDP): EOPNOTSUPP; some
                // drivers say EINVAL or EPROTONOSUPPORT.
                // (The error keeps the errno's kind: EOPNOTSUPP is `Unsupported`, EINVAL
                // `InvalidInput`.)
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Unsupported | io::ErrorKind::InvalidInput
                    ) =>
                {
                    Self::open_mode(iface, queue, opts, ActiveBind::Copy)
                }
                Err(e) => Err(e),
            },
        }
    }

    fn open_mode(iface: &str, queue: u32, opts: &XskOptions, mode: ActiveBind) -> io::Result<Self> {
        let e = |what: &'static str| move |err| errno(err, what, iface, queue);
        let len = opts.frame_count as usize * opts.frame_size as usize;
        let area = Area::new(len).map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("AF_XDP on `{iface}` queue {queue}: cannot map a {len}-byte UMEM: {err}"),
            )
        })?;
        let cfg = UmemConfig {
            fill_size: opts.ring_size,
            complete_size: opts.ring_size,
            frame_size: opts.frame_size,
            headroom: 0,
            flags: 0,
        };
        let slice = NonNull::slice_from_raw_parts(area.ptr, len);
        // SAFETY: `slice` is a page-aligned mapping of `len` bytes that lives in `area`, which
        // the returned socket keeps and drops last.
        let umem = unsafe { Umem::new(cfg, slice) }.map_err(e("cannot register the UMEM"))?;
        let mut info = IfInfo::invalid();
        let cname = CString::new(iface).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "interface name contains NUL")
        })?;
        info.from_name(&cname).map_err(e("no such interface"))?;
        info.set_queue(queue);
        let sock = Socket::with_shared(&info, &umem).map_err(e("cannot create the socket"))?;
        let fq = umem
            .fq_cq(&sock)
            .map_err(e("cannot create the fill and completion rings"))?;
        let mut flags = match mode {
            ActiveBind::ZeroCopy => SocketConfig::XDP_BIND_ZEROCOPY,
            ActiveBind::Copy => SocketConfig::XDP_BIND_COPY,
        };
        if opts.need_wakeup {
            flags |= SocketConfig::XDP_BIND_NEED_WAKEUP;
        }
        let user = umem
            .rx_tx(
                &sock,
                &SocketConfig {
                    rx_size: NonZeroU32::new(opts.ring_size),
                    tx_size: None,
                    bind_flags: flags,
                },
            )
            .map_err(e("cannot create the RX ring"))?;
        let rx = user.map_rx().map_err(e("cannot map the RX ring"))?;
        if let Some(bp) = opts.busy_poll {
            let fd = fq.as_raw_fd();
            setsockopt(fd, SO_PREFER_BUSY_POLL, 1)
                .and_then(|()| setsockopt(fd, SO_BUSY_POLL, bp.usecs as libc::c_int))
                .and_then(|()| setsockopt(fd, SO_BUSY_POLL_BUDGET, bp.budget as libc::c_int))
                .map_err(|err| {
                    io::Error::new(
                        err.kind(),
                        format!("AF_XDP on `{iface}` queue {queue}: busy polling: {err}"),
                    )
                })?;
        }
        let what = match mode {
            ActiveBind::ZeroCopy => "cannot bind in zero-copy mode",
            ActiveBind::Copy => "cannot bind in copy mode",
        };
        umem.bind(&user).map_err(e(what))?;
        let free = (0..u64::from(opts.frame_count))
            .rev()
            .map(|i| i * u64::from(opts.frame_size))
            .collect();
        let mut s = XskSocket {
            name: format!("xsk:{iface}/q{queue}"),
            mode,
            opts: *opts,
            rx,
            fq,
            user,
            _umem: umem,
            free,
            taken: Vec::with_capacity(opts.batch as usize),
            received: 0,
            received_bytes: 0,
            no_meta: 0,
            meta_in_data: Cell::new(false),
            area,
        };
        s.refill();
        Ok(s)
    }

    /// Zero-copy or copy.
    pub fn bind_mode(&self) -> ActiveBind {
        self.mode
    }

    /// Tells the socket where the XDP program puts each frame's metadata: in the packet data,
    /// in front of the frame (`true`), or in the metadata area before it.
    pub(super) fn set_meta_in_data(&self, in_data: bool) {
        self.meta_in_data.set(in_data);
    }

    /// Frames that arrived without the XDP program's metadata and got a per-batch user-space
    /// timestamp instead.
    pub fn frames_without_meta(&self) -> u64 {
        self.no_meta
    }

    /// Hands free frames to the fill ring, as many as it takes. `fill(n)` may reserve fewer
    /// than `n` slots (it works from a cached consumer index), so this loops until every
    /// free frame is in or the ring has no room.
    fn refill(&mut self) {
        while !self.free.is_empty() {
            let n = self.free.len() as u32;
            let mut w = self.fq.fill(n);
            let cap = w.capacity();
            if cap == 0 {
                break;
            }
            let start = self.free.len() - cap as usize;
            let put = w.insert(self.free[start..].iter().copied());
            w.commit();
            self.free.truncate(self.free.len() - put as usize);
            if put == 0 {
                break;
            }
        }
        if self.opts.need_wakeup && self.fq.needs_wakeup() {
            self.fq.wake();
        }
    }

    /// Waits up to `timeout` for the socket to become readable.
    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        let mut p = libc::pollfd {
            fd: self.fq.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd for the duration of the call.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(())
    }

    fn read_batch(&mut self, f: &mut dyn FnMut(&RxFrame<'_>)) -> io::Result<usize> {
        let mut r = self.rx.receive(self.opts.batch);
        if r.capacity() == 0 {
            return Ok(0);
        }
        let batch_real = sys::clock_ns(libc::CLOCK_REALTIME);
        let meta_in_data = self.meta_in_data.get();
        let tai_to_real = sys::realtime_minus_tai_ns();
        let fsize = u64::from(self.opts.frame_size);
        let area_len = self.area.len as u64;
        let mut n = 0;
        while let Some(d) = r.read() {
            let addr = d.addr;
            let len = u64::from(d.len);
            let frame_start = addr - addr % fsize;
            self.taken.push(frame_start);
            if addr + len > frame_start + fsize || frame_start + fsize > area_len {
                return Err(io::Error::other(format!(
                    "{}: the kernel returned descriptor {addr:#x}+{len} outside the UMEM",
                    self.name
                )));
            }
            let base = self.area.ptr.as_ptr();
            // SAFETY: `[addr, addr+len)` lies within one frame of the UMEM (checked above), the
            // kernel handed this frame to user space through the RX ring and does not touch it
            // until it is back in the fill ring, which happens after the callback returns.
            let mut data =
                unsafe { std::slice::from_raw_parts(base.add(addr as usize), len as usize) };
            let mut meta = None;
            if meta_in_data {
                // The program put the metadata in front of the frame, inside the data.
                if let Some(m) = meta_in_front(data) {
                    meta = Some(m);
                    data = &data[META_LEN..];
                }
            } else if addr >= frame_start + META_LEN as u64 {
                let mp = addr as usize - META_LEN;
                // SAFETY: `mp..addr` lies within the same frame (checked), which user space
                // owns right now; PacketMeta is plain data, read unaligned.
                let m: PacketMeta =
                    unsafe { std::ptr::read_unaligned(base.add(mp).cast::<PacketMeta>()) };
                if m.magic == META_MAGIC {
                    meta = Some(m);
                    // Clear the magic so a later frame in this slot that arrives without
                    // metadata is not read with this one.
                    // SAFETY: as above; the frame is ours until it is refilled.
                    unsafe { std::ptr::write_unaligned(base.add(mp + 12).cast::<u32>(), 0) };
                }
            }
            // The frame's own bytes, without a metadata prefix.
            let wire = data.len() as u32;
            let frame = match meta {
                Some(m) => RxFrame {
                    ts_ns: m.ts_tai_ns as i64 + tai_to_real,
                    orig_len: m.orig_len.max(wire),
                    data,
                },
                None => {
                    self.no_meta += 1;
                    RxFrame {
                        ts_ns: batch_real,
                        orig_len: wire,
                        data,
                    }
                }
            };
            f(&frame);
            self.received += 1;
            self.received_bytes += u64::from(wire);
            n += 1;
        }
        r.release();
        drop(r);
        self.free.append(&mut self.taken);
        self.refill();
        Ok(n)
    }
}

/// The [`PacketMeta`] the program put at the start of `data`, if it is there.
fn meta_in_front(data: &[u8]) -> Option<PacketMeta> {
    let b = data.get(..META_LEN)?;
    let u32_at = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&b[..8]);
    let m = PacketMeta {
        ts_tai_ns: u64::from_ne_bytes(ts),
        orig_len: u32_at(8),
        magic: u32_at(12),
    };
    (m.magic == META_MAGIC).then_some(m)
}

impl AsFd for XskSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the descriptor is open for as long as `self` (the UMEM/socket owns it) and
        // the borrow cannot outlive `self`.
        unsafe { BorrowedFd::borrow_raw(self.fq.as_raw_fd()) }
    }
}

impl RxSource for XskSocket {
    fn name(&self) -> &str {
        &self.name
    }

    fn recv_batch(
        &mut self,
        timeout: Duration,
        f: &mut dyn FnMut(&RxFrame<'_>),
    ) -> io::Result<usize> {
        let n = self.read_batch(f)?;
        if n > 0 {
            return Ok(n);
        }
        if self.opts.need_wakeup && self.fq.needs_wakeup() {
            self.fq.wake();
        }
        self.wait(timeout)?;
        self.read_batch(f)
    }

    fn stats(&mut self) -> io::Result<SourceStats> {
        let s = self
            .user
            .statistics_v2()
            .map_err(|e| io::Error::from_raw_os_error(e.get_raw()))?;
        Ok(SourceStats {
            received: self.received,
            received_bytes: self.received_bytes,
            // The kernel counts a frame it could not place because the fill ring was empty
            // in `rx_dropped` *and* in `rx_fill_ring_empty_descs` (the latter also counts
            // empty-ring observations without a drop in zero-copy drivers), so the two must
            // not be added: frames lost for want of a buffer are `rx_dropped`, frames lost
            // to a full RX ring `rx_ring_full`.
            ring_full: s.rx_ring_full,
            fill_ring_empty: s.rx_dropped,
            invalid_descs: s.rx_invalid_descs,
            freezes: 0,
        })
    }
}

fn setsockopt(fd: libc::c_int, opt: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: a valid fd, a pointer to a c_int and its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn validate(o: &XskOptions) -> io::Result<()> {
    let bad = |m: String| Err(io::Error::new(io::ErrorKind::InvalidInput, m));
    if o.frame_size != 2048 && o.frame_size != 4096 {
        return bad(format!("frame size {} is not 2048 or 4096", o.frame_size));
    }
    if !o.ring_size.is_power_of_two() || o.ring_size < 64 || o.ring_size > 1 << 16 {
        return bad(format!(
            "ring size {} is not a power of two in 64..=65536",
            o.ring_size
        ));
    }
    if o.frame_count < o.ring_size {
        return bad(format!(
            "{} frames cannot fill a ring of {}",
            o.frame_count, o.ring_size
        ));
    }
    if u64::from(o.frame_count) * u64::from(o.frame_size) > 1 << 34 {
        return bad(format!(
            "{} frames of {} bytes is more than 16 GiB of UMEM",
            o.frame_count, o.frame_size
        ));
    }
    if o.batch == 0 || o.batch > o.ring_size {
        return bad(format!("batch {} is not in 1..={}", o.batch, o.ring_size));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_in_front_of_the_frame_is_read_and_checked() {
        // The program writes `PacketMeta` as laid out in memory (repr(C)).
        assert_eq!(std::mem::offset_of!(PacketMeta, ts_tai_ns), 0);
        assert_eq!(std::mem::offset_of!(PacketMeta, orig_len), 8);
        assert_eq!(std::mem::offset_of!(PacketMeta, magic), 12);
        let m = PacketMeta {
            ts_tai_ns: 0x0123_4567_89ab_cdef,
            orig_len: 1514,
            magic: META_MAGIC,
        };
        let mut data = Vec::new();
        data.extend_from_slice(&m.ts_tai_ns.to_ne_bytes());
        data.extend_from_slice(&m.orig_len.to_ne_bytes());
        data.extend_from_slice(&m.magic.to_ne_bytes());
        data.extend_from_slice(&[0xaa; 60]);
        assert_eq!(meta_in_front(&data), Some(m));
        // No magic: a frame the program could not prefix is taken as it is.
        let mut other = data.clone();
        other[12] ^= 1;
        assert_eq!(meta_in_front(&other), None);
        assert_eq!(meta_in_front(&data[..META_LEN - 1]), None);
    }

    #[test]
    fn options_are_checked() {
        assert!(validate(&XskOptions::default()).is_ok());
        for o in [
            XskOptions {
                frame_size: 3000,
                ..Default::default()
            },
            XskOptions {
                ring_size: 1000,
                ..Default::default()
            },
            XskOptions {
                frame_count: 100,
                ..Default::default()
            },
            XskOptions {
                batch: 0,
                ..Default::default()
            },
        ] {
            assert!(validate(&o).is_err(), "{o:?}");
        }
    }
}
