//! The XDP program's user side: load the embedded object (`dataplane/xdp/tapvault-xdp.bpf.o`,
//! built from `xdp-prog/` by `scripts/build-xdp.sh`), configure it (capture filter, snap
//! length, no-socket policy), register AF_XDP sockets per RX queue, attach it to an interface,
//! read its per-CPU counters, detach.
//!
//! Typical use, for an interface with N RX queues: [`open_capture`] does it all (load,
//! one socket per queue, register, attach), in the order that loses nothing:
//!
//! ```no_run
//! # use tapvault_dataplane::live::{xdp::*, xsk::*};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cap = open_capture(
//!     "eth1",
//!     &[0, 1],
//!     &XskOptions::default(),
//!     &XdpOptions::default(),
//!     AttachMode::Auto,
//! )?;
//! // Receive from cap.sockets while cap.program stays alive; detach it at the end.
//! # Ok(()) }
//! ```
//!
//! The steps one by one (what [`open_capture`] does):
//!
//! ```no_run
//! # use tapvault_dataplane::live::{xdp::*, xsk::*};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut prog = XdpProgram::load(&XdpOptions::default())?;
//! let mut socks = Vec::new();
//! for q in 0..2 {
//!     let s = XskSocket::open("eth1", q, &XskOptions::default())?;
//!     prog.register_socket(q, &s)?;
//!     socks.push(s);
//! }
//! let mode = prog.attach("eth1", AttachMode::Auto)?;
//! # Ok(()) }
//! ```

use std::{fmt, io, net::IpAddr, os::fd::AsFd};

use aya::{
    Ebpf, include_bytes_aligned,
    maps::{Array, MapData, PerCpuArray, XskMap, lpm_trie::Key, lpm_trie::LpmTrie},
    programs::{ProgramError, Xdp, XdpMode, xdp::XdpLinkId},
};
use tapvault_xdp_abi as abi;

use super::xsk::{XskOptions, XskSocket};

/// The XDP object, aligned as aya's ELF parser needs.
static OBJECT: &[u8] = include_bytes_aligned!("../../xdp/tapvault-xdp.bpf.o");

/// Errors of the XDP program's user side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The embedded object could not be loaded into the kernel.
    #[error("cannot load the XDP program: {source}")]
    Load {
        /// aya's error (the verifier log, when the verifier refused).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A map the program should have is missing or has the wrong type.
    #[error("the XDP object has no usable map `{name}`: {detail}")]
    Map {
        /// Map name.
        name: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// Bad options.
    #[error("invalid XDP option: {0}")]
    Invalid(String),
    /// An AF_XDP socket of [`open_capture`] could not be opened.
    #[error("cannot open an AF_XDP socket on `{iface}` queue {queue}: {source}")]
    Socket {
        /// Interface.
        iface: String,
        /// RX queue.
        queue: u32,
        /// The socket's error (it names the step that failed).
        #[source]
        source: io::Error,
    },
    /// Writing or reading a map failed.
    #[error("{what}: {source}")]
    MapIo {
        /// What was being done.
        what: String,
        /// aya's error.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// Attaching failed in every mode tried.
    #[error("cannot attach XDP to `{iface}` in {mode} mode: {source}")]
    Attach {
        /// Interface.
        iface: String,
        /// Mode(s) tried.
        mode: String,
        /// The last error.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// Detaching failed.
    #[error("cannot detach XDP from `{iface}`: {source}")]
    Detach {
        /// Interface.
        iface: String,
        /// aya's error.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How to attach the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttachMode {
    /// Native (driver) XDP; fails when the driver has none.
    Driver,
    /// Generic XDP in the kernel's stack (`xdpgeneric`): works everywhere, slower, and on
    /// multi-queue veth every frame arrives on queue 0.
    Skb,
    /// Driver mode, else generic mode; [`XdpProgram::attach`] reports which one worked.
    #[default]
    Auto,
}

/// The mode the program is attached in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActiveMode {
    /// Native XDP.
    Driver,
    /// Generic XDP.
    Skb,
}

impl fmt::Display for ActiveMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ActiveMode::Driver => "driver",
            ActiveMode::Skb => "skb",
        })
    }
}

/// What a filter rule (or the default) does with the frames it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleAction {
    /// Capture them.
    Keep,
    /// Do not capture them; they are passed to the kernel, never dropped by the filter.
    Drop,
}

impl RuleAction {
    fn abi(self) -> u32 {
        match self {
            RuleAction::Keep => abi::RULE_KEEP,
            RuleAction::Drop => abi::RULE_DROP,
        }
    }
}

/// A network rule: frames whose source or destination address lies in `addr/prefix_len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetRule {
    /// Network address (host bits are ignored).
    pub addr: IpAddr,
    /// Prefix length: 0..=32 for IPv4, 0..=128 for IPv6.
    pub prefix_len: u8,
    /// What to do with matching frames.
    pub action: RuleAction,
}

/// Which transport protocol a port rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortProto {
    /// TCP only.
    Tcp,
    /// UDP only.
    Udp,
    /// TCP and UDP.
    Both,
}

/// A port rule: TCP/UDP frames whose source or destination port is `port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRule {
    /// Port number.
    pub port: u16,
    /// Protocol(s).
    pub proto: PortProto,
    /// What to do with matching frames.
    pub action: RuleAction,
}

/// The capture filter applied in the kernel. How rules combine is documented in
/// `tapvault_xdp_abi` (and ARCHITECTURE.md): per address the longest prefix decides; across
/// the source/destination address and port lookups, Drop beats Keep beats no match; with no
/// match, `default` decides. Frames that are not IP follow `non_ip`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureFilter {
    /// For IP frames no rule matches.
    pub default: RuleAction,
    /// For frames that are not IPv4/IPv6, or too short to parse.
    pub non_ip: RuleAction,
    /// Network rules (at most [`abi::MAX_NET_RULES`] per address family; one rule per
    /// network).
    pub nets: Vec<NetRule>,
    /// Port rules (one per port and protocol).
    pub ports: Vec<PortRule>,
}

impl Default for CaptureFilter {
    /// Capture everything.
    fn default() -> Self {
        CaptureFilter {
            default: RuleAction::Keep,
            non_ip: RuleAction::Keep,
            nets: Vec::new(),
            ports: Vec::new(),
        }
    }
}

/// What happens to a frame to capture when no AF_XDP socket is bound to its RX queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NoSocketPolicy {
    /// Give it to the kernel (the default: a misconfigured appliance, or one whose capture
    /// process died, still forwards the management traffic on that link).
    #[default]
    Pass,
    /// Drop it (a dedicated capture port where the kernel has nothing to do with the frames).
    Drop,
}

/// Options of [`XdpProgram::load`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct XdpOptions {
    /// Truncate captured frames to this many bytes; 0: never. Otherwise at least
    /// [`abi::MIN_SNAP_LEN`].
    pub snap_len: u32,
    /// See [`NoSocketPolicy`].
    pub no_socket: NoSocketPolicy,
    /// The capture filter.
    pub filter: CaptureFilter,
}

/// The program's counters, summed over CPUs. Terminal outcomes: `seen = redirected +
/// filtered + no_socket + errors` (checked by [`XdpCounters::unaccounted`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpCounters {
    /// Frames the program ran on.
    pub seen: u64,
    /// Their wire bytes.
    pub seen_bytes: u64,
    /// Frames redirected to an AF_XDP socket.
    pub redirected: u64,
    /// Their wire bytes (before truncation).
    pub redirected_bytes: u64,
    /// Frames the filter rejected (passed to the kernel).
    pub filtered: u64,
    /// Frames to capture whose queue had no socket (passed or dropped by the policy).
    pub no_socket: u64,
    /// Frames passed because of an internal failure (config missing; in the in-data
    /// variant, no headroom for the metadata prefix).
    pub errors: u64,
    /// Redirected frames truncated to the snap length.
    pub truncated: u64,
    /// Frames without metadata (no headroom for it): redirected without it, or in the
    /// in-data variant passed to the kernel (and counted in `errors`).
    pub meta_failed: u64,
    /// Redirected frames that could not be truncated (sent whole).
    pub trunc_failed: u64,
    /// Frames that were not IP (or too short to parse).
    pub non_ip: u64,
    /// Where the program puts `PacketMeta`: `false` in the XDP metadata area
    /// (`tapvault_xdp`), `true` inside the packet data (`tapvault_xdp_head`, for kernels that
    /// refuse `bpf_xdp_adjust_meta`). Not a counter: which program runs.
    pub meta_in_data: bool,
}

impl XdpCounters {
    /// `seen` minus every terminal outcome: 0 when every frame is accounted for. (Counters are
    /// per CPU and read one after another, so a read during traffic may be off by the frames
    /// in flight; at rest it is exact.)
    pub fn unaccounted(&self) -> i128 {
        self.seen as i128 - (self.redirected + self.filtered + self.no_socket + self.errors) as i128
    }
}

/// The loaded program and its maps; attached once [`XdpProgram::attach`] succeeds, detached
/// by [`XdpProgram::detach`] or on drop.
pub struct XdpProgram {
    ebpf: Ebpf,
    /// The program of the object that is loaded ([`abi::PROG_NAME`] or
    /// [`abi::PROG_NAME_META_IN_DATA`]).
    prog_name: &'static str,
    attached: Option<(String, XdpLinkId, ActiveMode)>,
}

impl fmt::Debug for XdpProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdpProgram")
            .field("program", &self.prog_name)
            .field("attached", &self.attached)
            .finish_non_exhaustive()
    }
}

fn map_err(name: &'static str, e: impl fmt::Display) -> Error {
    Error::Map {
        name,
        detail: e.to_string(),
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(aya::maps::MapError) -> Error {
    let what = what.into();
    move |source| Error::MapIo {
        what,
        source: Box::new(source),
    }
}

/// Loads program `name` of the object into the kernel.
fn load_program(ebpf: &mut Ebpf, name: &str) -> std::result::Result<(), ProgramError> {
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or_else(|| ProgramError::InvalidName {
            name: name.to_string(),
        })?
        .try_into()?;
    prog.load()
}

/// Whether the verifier refused the program because the kernel does not offer
/// `bpf_xdp_adjust_meta` to XDP programs.
fn refuses_adjust_meta(e: &ProgramError) -> bool {
    match e {
        ProgramError::LoadError { verifier_log, .. } => verifier_log
            .to_string()
            .contains("cannot use helper bpf_xdp_adjust_meta"),
        _ => false,
    }
}

impl XdpProgram {
    /// Loads the program into the kernel and writes its configuration; nothing is attached
    /// yet.
    pub fn load(opts: &XdpOptions) -> Result<Self> {
        validate(opts)?;
        let mut ebpf = Ebpf::load(OBJECT).map_err(|e| Error::Load {
            source: Box::new(e),
        })?;
        // The program that writes the metadata in the metadata area first; if the kernel's
        // verifier refuses that helper to XDP programs (a locked-down 6.18 build here does),
        // the variant that writes it inside the packet data.
        let prog_name = match load_program(&mut ebpf, abi::PROG_NAME) {
            Ok(()) => abi::PROG_NAME,
            Err(e) if refuses_adjust_meta(&e) => {
                load_program(&mut ebpf, abi::PROG_NAME_META_IN_DATA).map_err(|e2| Error::Load {
                    source: format!(
                        "the verifier refused both `{}` ({e}) and `{}` ({e2})",
                        abi::PROG_NAME,
                        abi::PROG_NAME_META_IN_DATA
                    )
                    .into(),
                })?;
                abi::PROG_NAME_META_IN_DATA
            }
            Err(e) => {
                return Err(Error::Load {
                    source: Box::new(e),
                });
            }
        };
        let mut p = XdpProgram {
            ebpf,
            prog_name,
            attached: None,
        };
        p.configure(opts)?;
        Ok(p)
    }

    /// Inserts one address family's network rules (prefix length, masked address, action)
    /// into the LPM trie `name`; returns whether there was any.
    fn load_trie<const N: usize>(
        &mut self,
        name: &'static str,
        rules: impl Iterator<Item = (u8, [u8; N], u32)>,
    ) -> Result<bool> {
        let mut trie: LpmTrie<&mut MapData, [u8; N], u32> = LpmTrie::try_from(
            self.ebpf
                .map_mut(name)
                .ok_or_else(|| map_err(name, "missing"))?,
        )
        .map_err(|e| map_err(name, e))?;
        let mut any = false;
        for (prefix_len, addr, action) in rules {
            trie.insert(&Key::new(u32::from(prefix_len), addr), action, 0)
                .map_err(io_err(format!(
                    "cannot add the rule for {}/{prefix_len}",
                    fmt_addr(addr)
                )))?;
            any = true;
        }
        Ok(any)
    }

    fn configure(&mut self, opts: &XdpOptions) -> Result<()> {
        let f = &opts.filter;
        let mut flags = abi::FLAG_CONFIGURED;
        let v4 = f.nets.iter().filter_map(|r| match r.addr {
            IpAddr::V4(a) => Some((
                r.prefix_len,
                mask4(a.octets(), r.prefix_len),
                r.action.abi(),
            )),
            IpAddr::V6(_) => None,
        });
        if self.load_trie(abi::MAP_NET4, v4)? {
            flags |= abi::FLAG_NET4_RULES;
        }
        let v6 = f.nets.iter().filter_map(|r| match r.addr {
            IpAddr::V6(a) => Some((
                r.prefix_len,
                mask6(a.octets(), r.prefix_len),
                r.action.abi(),
            )),
            IpAddr::V4(_) => None,
        });
        if self.load_trie(abi::MAP_NET6, v6)? {
            flags |= abi::FLAG_NET6_RULES;
        }
        {
            let mut ports: Array<&mut MapData, u32> = Array::try_from(
                self.ebpf
                    .map_mut(abi::MAP_PORTS)
                    .ok_or_else(|| map_err(abi::MAP_PORTS, "missing"))?,
            )
            .map_err(|e| map_err(abi::MAP_PORTS, e))?;
            let mut table: std::collections::BTreeMap<u16, (u32, u32)> = Default::default();
            for r in &f.ports {
                let e = table
                    .entry(r.port)
                    .or_insert((abi::RULE_NONE, abi::RULE_NONE));
                if matches!(r.proto, PortProto::Tcp | PortProto::Both) {
                    e.0 = r.action.abi();
                }
                if matches!(r.proto, PortProto::Udp | PortProto::Both) {
                    e.1 = r.action.abi();
                }
            }
            for (port, (tcp, udp)) in table {
                ports
                    .set(u32::from(port), abi::port_rule(tcp, udp), 0)
                    .map_err(io_err(format!("cannot add the rule for port {port}")))?;
                flags |= abi::FLAG_PORT_RULES;
            }
        }
        let cfg = abi::Config {
            snap_len: opts.snap_len,
            no_socket_action: match opts.no_socket {
                NoSocketPolicy::Pass => abi::XDP_PASS,
                NoSocketPolicy::Drop => abi::XDP_DROP,
            },
            default_action: f.default.abi(),
            non_ip_action: f.non_ip.abi(),
            flags,
            reserved: 0,
        };
        let mut config: Array<&mut MapData, abi::Config> = Array::try_from(
            self.ebpf
                .map_mut(abi::MAP_CONFIG)
                .ok_or_else(|| map_err(abi::MAP_CONFIG, "missing"))?,
        )
        .map_err(|e| map_err(abi::MAP_CONFIG, e))?;
        config
            .set(0, cfg, 0)
            .map_err(io_err("cannot write the XDP config"))?;
        Ok(())
    }

    /// Puts an AF_XDP socket (bound to RX queue `queue` of the interface this program is or
    /// will be attached to) into the XSKMAP, so frames of that queue are redirected to it,
    /// and tells the socket where this program puts each frame's metadata.
    pub fn register_socket(&mut self, queue: u32, socket: &XskSocket) -> Result<()> {
        if queue >= abi::MAX_QUEUES {
            return Err(Error::Invalid(format!(
                "queue {queue} is beyond the XSKMAP's {} entries",
                abi::MAX_QUEUES
            )));
        }
        socket.set_meta_in_data(self.meta_in_data());
        let mut xsks = self.xsk_map()?;
        xsks.set(queue, socket.as_fd(), 0).map_err(io_err(format!(
            "cannot register the socket of queue {queue}"
        )))
    }

    /// The loaded program.
    fn program(&mut self) -> Result<&mut Xdp> {
        self.ebpf
            .program_mut(self.prog_name)
            .ok_or_else(|| Error::Invalid("program missing".into()))?
            .try_into()
            .map_err(|e: ProgramError| Error::Load {
                source: Box::new(e),
            })
    }

    /// Whether the loaded program writes each frame's metadata inside the packet data, in
    /// front of the frame (the kernel refused `bpf_xdp_adjust_meta`), rather than in the
    /// metadata area. Either way every frame reaches user space with its kernel arrival time
    /// and wire length.
    pub fn meta_in_data(&self) -> bool {
        self.prog_name == abi::PROG_NAME_META_IN_DATA
    }

    /// Removes the socket of RX queue `queue` from the XSKMAP: its frames then get the
    /// no-socket policy.
    pub fn unregister_socket(&mut self, queue: u32) -> Result<()> {
        let mut xsks = self.xsk_map()?;
        xsks.unset(queue)
            .map_err(io_err(format!("cannot remove the socket of queue {queue}")))
    }

    fn xsk_map(&mut self) -> Result<XskMap<&mut MapData>> {
        XskMap::try_from(
            self.ebpf
                .map_mut(abi::MAP_XSKS)
                .ok_or_else(|| map_err(abi::MAP_XSKS, "missing"))?,
        )
        .map_err(|e| map_err(abi::MAP_XSKS, e))
    }

    /// Attaches the program to `iface` (in the calling thread's network namespace); returns
    /// the mode that worked. Errors name the interface and every mode tried.
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<ActiveMode> {
        if let Some((i, _, m)) = &self.attached {
            return Err(Error::Invalid(format!(
                "already attached to `{i}` in {m} mode"
            )));
        }
        let prog = self.program()?;
        let tries: &[(ActiveMode, XdpMode)] = match mode {
            AttachMode::Driver => &[(ActiveMode::Driver, XdpMode::Driver)],
            AttachMode::Skb => &[(ActiveMode::Skb, XdpMode::Skb)],
            AttachMode::Auto => &[
                (ActiveMode::Driver, XdpMode::Driver),
                (ActiveMode::Skb, XdpMode::Skb),
            ],
        };
        let mut last = None;
        for &(active, xm) in tries {
            match prog.attach(iface, xm) {
                Ok(id) => {
                    self.attached = Some((iface.to_string(), id, active));
                    return Ok(active);
                }
                Err(e) => last = Some(e),
            }
        }
        let mode = match mode {
            AttachMode::Driver => "driver",
            AttachMode::Skb => "skb",
            AttachMode::Auto => "driver and skb",
        };
        Err(Error::Attach {
            iface: iface.to_string(),
            mode: mode.to_string(),
            source: Box::new(last.unwrap_or(aya::programs::ProgramError::AlreadyAttached)),
        })
    }

    /// The interface and mode the program is attached in, if it is.
    pub fn attached(&self) -> Option<(&str, ActiveMode)> {
        self.attached.as_ref().map(|(i, _, m)| (i.as_str(), *m))
    }

    /// Detaches the program (no-op when not attached). Dropping the program detaches too,
    /// ignoring errors.
    pub fn detach(&mut self) -> Result<()> {
        let Some((iface, id, _)) = self.attached.take() else {
            return Ok(());
        };
        let prog = self.program()?;
        prog.detach(id).map_err(|source| Error::Detach {
            iface,
            source: Box::new(source),
        })
    }

    /// The counters, summed over CPUs.
    pub fn counters(&self) -> Result<XdpCounters> {
        let map: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(
            self.ebpf
                .map(abi::MAP_COUNTERS)
                .ok_or_else(|| map_err(abi::MAP_COUNTERS, "missing"))?,
        )
        .map_err(|e| map_err(abi::MAP_COUNTERS, e))?;
        let mut v = [0u64; abi::COUNTER_COUNT as usize];
        for (i, slot) in v.iter_mut().enumerate() {
            let per_cpu = map
                .get(&(i as u32), 0)
                .map_err(io_err(format!("cannot read XDP counter {i}")))?;
            *slot = per_cpu.iter().sum();
        }
        let g = |i: u32| v[i as usize];
        Ok(XdpCounters {
            seen: g(abi::CTR_SEEN),
            seen_bytes: g(abi::CTR_SEEN_BYTES),
            redirected: g(abi::CTR_REDIRECTED),
            redirected_bytes: g(abi::CTR_REDIRECTED_BYTES),
            filtered: g(abi::CTR_FILTERED),
            no_socket: g(abi::CTR_NO_SOCKET),
            errors: g(abi::CTR_ERRORS),
            truncated: g(abi::CTR_TRUNCATED),
            meta_failed: g(abi::CTR_META_FAILED),
            trunc_failed: g(abi::CTR_TRUNC_FAILED),
            non_ip: g(abi::CTR_NON_IP),
            meta_in_data: self.meta_in_data(),
        })
    }
}

impl Drop for XdpProgram {
    fn drop(&mut self) {
        // aya would detach when `ebpf` drops too; doing it here keeps the order explicit.
        let _ = self.detach();
    }
}

/// The XDP program attached to an interface and one AF_XDP socket per RX queue, as
/// [`open_capture`] returns them.
#[derive(Debug)]
pub struct XdpCapture {
    /// The program, attached. Keep it while the sockets receive: dropping it detaches it,
    /// and [`XdpProgram::counters`] reads its counters until then.
    pub program: XdpProgram,
    /// One socket per queue, in the order of the `queues` given.
    pub sockets: Vec<XskSocket>,
    /// The mode the program is attached in.
    pub mode: ActiveMode,
}

/// Loads the XDP program with `xdp`, opens an AF_XDP socket with `xsk` on each of `queues` of
/// `iface` and registers it in the program's XSKMAP, then attaches the program in `mode`
/// (everything in the calling thread's network namespace). Attaching comes last, so no frame
/// of a listed queue meets the no-socket policy for want of a socket not yet registered. On
/// error nothing stays attached or open.
pub fn open_capture(
    iface: &str,
    queues: &[u32],
    xsk: &XskOptions,
    xdp: &XdpOptions,
    mode: AttachMode,
) -> Result<XdpCapture> {
    if queues.is_empty() {
        return Err(Error::Invalid(format!(
            "no RX queue of `{iface}` to open an AF_XDP socket on"
        )));
    }
    let mut program = XdpProgram::load(xdp)?;
    let mut sockets = Vec::with_capacity(queues.len());
    for &queue in queues {
        let socket = XskSocket::open(iface, queue, xsk).map_err(|source| Error::Socket {
            iface: iface.to_string(),
            queue,
            source,
        })?;
        program.register_socket(queue, &socket)?;
        sockets.push(socket);
    }
    let mode = program.attach(iface, mode)?;
    Ok(XdpCapture {
        program,
        sockets,
        mode,
    })
}

fn validate(opts: &XdpOptions) -> Result<()> {
    if opts.snap_len != 0 && opts.snap_len < abi::MIN_SNAP_LEN {
        return Err(Error::Invalid(format!(
            "snap length {} is below the minimum of {} (0 means no truncation)",
            opts.snap_len,
            abi::MIN_SNAP_LEN
        )));
    }
    let mut seen = std::collections::HashSet::new();
    let (mut n4, mut n6) = (0u32, 0u32);
    for r in &opts.filter.nets {
        let max = if r.addr.is_ipv4() { 32 } else { 128 };
        if r.prefix_len > max {
            return Err(Error::Invalid(format!(
                "prefix length /{} is longer than {max} bits in the rule for {}",
                r.prefix_len, r.addr
            )));
        }
        let masked = match r.addr {
            IpAddr::V4(a) => IpAddr::from(mask4(a.octets(), r.prefix_len)),
            IpAddr::V6(a) => IpAddr::from(mask6(a.octets(), r.prefix_len)),
        };
        if !seen.insert((masked, r.prefix_len)) {
            return Err(Error::Invalid(format!(
                "two rules for the network {masked}/{}",
                r.prefix_len
            )));
        }
        if r.addr.is_ipv4() {
            n4 += 1;
        } else {
            n6 += 1;
        }
    }
    if n4 > abi::MAX_NET_RULES || n6 > abi::MAX_NET_RULES {
        return Err(Error::Invalid(format!(
            "{n4} IPv4 and {n6} IPv6 network rules: at most {} each",
            abi::MAX_NET_RULES
        )));
    }
    let mut ports = std::collections::HashSet::new();
    for r in &opts.filter.ports {
        let protos: &[u8] = match r.proto {
            PortProto::Tcp => &[6],
            PortProto::Udp => &[17],
            PortProto::Both => &[6, 17],
        };
        for &p in protos {
            if !ports.insert((r.port, p)) {
                return Err(Error::Invalid(format!(
                    "two rules for {} port {}",
                    if p == 6 { "TCP" } else { "UDP" },
                    r.port
                )));
            }
        }
    }
    Ok(())
}

/// An address of 4 or 16 bytes as text, for messages.
fn fmt_addr<const N: usize>(a: [u8; N]) -> String {
    if let Ok(b) = <[u8; 4]>::try_from(&a[..]) {
        std::net::Ipv4Addr::from(b).to_string()
    } else if let Ok(b) = <[u8; 16]>::try_from(&a[..]) {
        std::net::Ipv6Addr::from(b).to_string()
    } else {
        format!("{a:?}")
    }
}

fn mask4(mut a: [u8; 4], prefix: u8) -> [u8; 4] {
    mask(&mut a, prefix);
    a
}

fn mask6(mut a: [u8; 16], prefix: u8) -> [u8; 16] {
    mask(&mut a, prefix);
    a
}

fn mask(a: &mut [u8], prefix: u8) {
    for (i, b) in a.iter_mut().enumerate() {
        let bits = (prefix as usize).saturating_sub(i * 8).min(8);
        *b &= if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn masks_host_bits() {
        assert_eq!(mask4([10, 1, 2, 3], 8), [10, 0, 0, 0]);
        assert_eq!(mask4([10, 1, 2, 3], 0), [0, 0, 0, 0]);
        assert_eq!(mask4([10, 1, 2, 255], 30), [10, 1, 2, 252]);
        assert_eq!(mask4([10, 1, 2, 3], 32), [10, 1, 2, 3]);
    }

    /// No queue is bad input, refused before anything is loaded or opened (so no privileges
    /// are needed to see it).
    #[test]
    fn open_capture_needs_a_queue() {
        let e = open_capture(
            "eth9",
            &[],
            &XskOptions::default(),
            &XdpOptions::default(),
            AttachMode::Auto,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid XDP option: no RX queue of `eth9` to open an AF_XDP socket on"
        );
    }

    #[test]
    fn rejects_bad_options() {
        let mut o = XdpOptions {
            snap_len: 20,
            ..Default::default()
        };
        assert!(
            validate(&o)
                .unwrap_err()
                .to_string()
                .contains("snap length 20")
        );
        o.snap_len = 0;
        o.filter.nets.push(NetRule {
            addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)),
            prefix_len: 33,
            action: RuleAction::Drop,
        });
        assert!(validate(&o).unwrap_err().to_string().contains("/33"));
        o.filter.nets[0].prefix_len = 8;
        o.filter.nets.push(NetRule {
            addr: IpAddr::V4(Ipv4Addr::new(10, 9, 0, 0)),
            prefix_len: 8,
            action: RuleAction::Keep,
        });
        assert!(validate(&o).unwrap_err().to_string().contains("10.0.0.0/8"));
        o.filter.nets.pop();
        o.filter.ports = vec![
            PortRule {
                port: 22,
                proto: PortProto::Both,
                action: RuleAction::Drop,
            },
            PortRule {
                port: 22,
                proto: PortProto::Udp,
                action: RuleAction::Keep,
            },
        ];
        assert!(
            validate(&o)
                .unwrap_err()
                .to_string()
                .contains("UDP port 22")
        );
    }
}
