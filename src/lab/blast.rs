//! `tapvault blast`: a traffic generator of realistic TCP connections at high packet rates,
//! for the live benchmark and the AF_PACKET tests (tcpreplay tops out near 100k pps here).
//!
//! It plays both ends of `--flows` concurrent connections from one interface (or one end
//! each from two blasters, `--side`): a three-way handshake with the options Linux sends
//! (MSS, SACK permitted, timestamps, window scale), data segments from client to server of
//! the chosen frame size, a delayed ACK from the server every second segment, and a
//! FIN/FIN/ACK close. Sequence and acknowledgement numbers, window scaling and timestamps
//! are consistent, so an analyzer sees clean connections: no retransmissions, no
//! out-of-order segments, no zero windows. Finished connections are replaced by new ones
//! (new client address and port) until the packet or time budget runs out; then every open
//! connection is closed properly, within the packet budget.
//!
//! Frames go out in batches through `sendmmsg` on an AF_PACKET socket with
//! `PACKET_QDISC_BYPASS` ([`tapvault_dataplane::live::afpacket::AfPacketTx`]); an optional
//! target rate paces the batches.
//!
//! Frame sizes are Ethernet frames without the FCS, as a capture shows them. Data frames are
//! exactly `--frame-size` bytes; with frames too small for a timestamp option plus payload
//! (below 67 bytes, as the 64-byte benchmark case) the connections negotiate no timestamps
//! and carry 10 bytes of payload at 64 bytes. Frames shorter than Ethernet's 60-byte minimum
//! (pure ACKs without options) are padded to 60, as a NIC pads them on the wire.

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use tapvault_dataplane::live::afpacket::{AfPacketTx, TxOptions, is_retryable, netns_path};

/// Largest frame built: a full 1500-byte MTU plus the Ethernet header.
pub(crate) const MAX_FRAME: usize = 1514;
/// Ethernet's minimum frame without FCS; shorter frames are padded.
const MIN_FRAME: usize = 60;
const ETH_LEN: usize = 14;
const IP_LEN: usize = 20;
const TCP_LEN: usize = 20;
/// Headers of a data segment without options.
const HDRS: usize = ETH_LEN + IP_LEN + TCP_LEN;
/// The timestamp option as Linux sends it on non-SYN segments: NOP, NOP, TS.
const TS_OPT_LEN: usize = 12;
/// The server's port.
pub(crate) const SERVER_PORT: u16 = 5201;
/// Window scale both ends announce; the window field then says 502 * 128 = 64256 bytes.
const WSCALE: u8 = 7;
const WINDOW: u16 = 502;
const SYN_WINDOW: u16 = 64240;
const MSS: u16 = 1460;
/// Client and server MAC addresses (locally administered).
pub(crate) const CLIENT_MAC: [u8; 6] = [0x02, 0x74, 0x76, 0, 0, 1];
pub(crate) const SERVER_MAC: [u8; 6] = [0x02, 0x74, 0x76, 0, 0, 2];
/// The server's address; clients are 10.77.0.x.
pub(crate) const SERVER_IP: [u8; 4] = [10, 78, 0, 1];

/// TCP flag bits.
pub(crate) mod flag {
    pub(crate) const FIN: u8 = 0x01;
    pub(crate) const SYN: u8 = 0x02;
    pub(crate) const PSH: u8 = 0x08;
    pub(crate) const ACK: u8 = 0x10;
}

/// Which end's frames this blaster sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Side {
    /// Both ends (one interface plays client and server).
    Both,
    /// Only client-to-server frames.
    Client,
    /// Only server-to-client frames.
    Server,
}

/// What data segments carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Payload {
    /// The alphabet, repeated: every segment the same bytes, which compress about 50x at
    /// several GB/s. Cheapest to send.
    Pattern,
    /// Pseudo-random bytes that do not compress, like TLS or other encrypted traffic.
    Random,
    /// Generated English-like prose (words, punctuation, lines). Its short matches make it
    /// compress about 2.4x at about a quarter of the speed of the bulk capture's HTTP: the
    /// costly case for packet storage.
    Text,
}

/// Arguments of `tapvault blast`.
#[derive(clap::Args, Debug)]
pub(crate) struct BlastArgs {
    /// The interface to send on.
    #[arg(long)]
    iface: String,
    /// Send from inside this network namespace (a name under /run/netns, or a path).
    #[arg(long)]
    netns: Option<String>,
    /// Concurrent connections.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    flows: u32,
    /// Size of the data frames in bytes, Ethernet header included, FCS excluded (55 to 1514).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(55..=1514))]
    frame_size: u16,
    /// Data segments per connection before it closes and a new one starts.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    segments: u32,
    /// Packet budget (all frames of the conversation, both ends); connections are closed
    /// cleanly within it. Default: unlimited (the duration bounds the run).
    #[arg(long)]
    packets: Option<u64>,
    /// Time budget in seconds; open connections are closed cleanly when it ends.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Target rate in packets per second (frames this blaster sends); 0 = as fast as
    /// possible.
    #[arg(long, default_value_t = 0)]
    pps: u64,
    /// Pin the sending thread to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
    /// Which end's frames to send.
    #[arg(long, value_enum, default_value_t = Side::Both)]
    side: Side,
    /// Seed for initial sequence numbers and IP ids (the same seed gives the same
    /// connections).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// What the data segments carry. Segments of `random` and `text` take consecutive
    /// slices of an 8 MiB buffer, so no two segments within 8 MiB of traffic repeat each
    /// other (a packet store's compressor sees no copies).
    #[arg(long, value_enum, default_value_t = Payload::Pattern)]
    payload: Payload,
    /// Frames per `sendmmsg` call at most.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    batch: u32,
    /// Send through the qdisc instead of bypassing it. Frames that bypass the qdisc are not
    /// shown to packet sockets on the sending interface (`__dev_direct_xmit` skips
    /// `dev_queue_xmit_nit`); with this, a capture on the sender's side sees them too.
    #[arg(long)]
    no_qdisc_bypass: bool,
    /// Also write every frame sent to this pcap file (slow: for tests and inspection).
    #[arg(long, value_name = "PATH")]
    pcap: Option<PathBuf>,
}

/// One end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) mac: [u8; 6],
    pub(crate) ip: [u8; 4],
    pub(crate) port: u16,
}

/// A TCP segment to build; the payload is `payload_len` bytes of [`Builder`]'s pattern.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Segment<'a> {
    pub(crate) src: Endpoint,
    pub(crate) dst: Endpoint,
    pub(crate) ip_id: u16,
    pub(crate) seq: u32,
    pub(crate) ack: u32,
    pub(crate) flags: u8,
    pub(crate) window: u16,
    /// TCP options, a multiple of 4 bytes long, at most 40.
    pub(crate) options: &'a [u8],
    pub(crate) payload_len: usize,
}

/// Adds 16-bit big-endian words of `data` (starting at an even offset of the checksummed
/// area) to `sum`.
pub(crate) fn sum16(data: &[u8], mut sum: u64) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// Folds a one's-complement sum and complements it.
pub(crate) fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Bytes of payload the `random` and `text` payloads cycle through.
const PAYLOAD_BUF: usize = 8 << 20;
/// Slices of that buffer are this far apart: the largest payload of a 1500-byte MTU.
const SLOT: usize = 1460;

/// Builds Ethernet/IPv4/TCP frames with valid checksums. The payload's checksum is summed
/// once per slot and length, so a frame costs a header's worth of checksumming whatever its
/// size: the `pattern` payload has one slot; `random` and `text` have one every [`SLOT`]
/// bytes of an 8 MiB buffer, which successive payloads take in turn.
pub(crate) struct Builder {
    payload: Vec<u8>,
    /// Next slot to use.
    slot: usize,
    /// Per slot: (length, one's-complement sum of the slot's first `length` bytes).
    sums: Vec<(usize, u64)>,
}

impl Builder {
    pub(crate) fn new(kind: Payload, seed: u64) -> Self {
        let payload: Vec<u8> = match kind {
            Payload::Pattern => (0..SLOT).map(|i| b'a' + (i % 26) as u8).collect(),
            Payload::Random => {
                let mut x = seed;
                (0..PAYLOAD_BUF / 8)
                    .flat_map(|_| {
                        x = mix(x);
                        x.to_le_bytes()
                    })
                    .collect()
            }
            Payload::Text => text(PAYLOAD_BUF, seed),
        };
        let slots = payload.len() / SLOT;
        Builder {
            payload,
            slot: 0,
            sums: vec![(usize::MAX, 0); slots],
        }
    }

    /// The next payload of `len` bytes and its one's-complement sum.
    fn next_payload(&mut self, len: usize) -> (&[u8], u64) {
        let slot = self.slot;
        self.slot = (slot + 1) % self.sums.len();
        let bytes = &self.payload[slot * SLOT..slot * SLOT + len];
        if self.sums[slot].0 != len {
            self.sums[slot] = (len, sum16(bytes, 0));
        }
        (bytes, self.sums[slot].1)
    }

    /// Writes the frame into `out` (at least [`MAX_FRAME`] bytes); returns its length.
    /// Segments must fit a 1500-byte MTU.
    pub(crate) fn build(&mut self, s: &Segment<'_>, out: &mut [u8]) -> usize {
        let opt = s.options.len();
        debug_assert!(opt.is_multiple_of(4) && opt <= 40);
        let tcp_len = TCP_LEN + opt + s.payload_len;
        let ip_total = IP_LEN + tcp_len;
        let frame = ETH_LEN + ip_total;
        assert!(frame <= MAX_FRAME, "segment larger than the MTU");
        let len = frame.max(MIN_FRAME);
        let out = &mut out[..len];
        out[0..6].copy_from_slice(&s.dst.mac);
        out[6..12].copy_from_slice(&s.src.mac);
        out[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut out[ETH_LEN..ETH_LEN + IP_LEN];
        ip[0] = 0x45;
        ip[1] = 0;
        ip[2..4].copy_from_slice(&(ip_total as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&s.ip_id.to_be_bytes());
        ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
        ip[8] = 64;
        ip[9] = 6;
        ip[10..12].fill(0);
        ip[12..16].copy_from_slice(&s.src.ip);
        ip[16..20].copy_from_slice(&s.dst.ip);
        let c = fold(sum16(ip, 0));
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let t0 = ETH_LEN + IP_LEN;
        let tcp = &mut out[t0..t0 + TCP_LEN + opt];
        tcp[0..2].copy_from_slice(&s.src.port.to_be_bytes());
        tcp[2..4].copy_from_slice(&s.dst.port.to_be_bytes());
        tcp[4..8].copy_from_slice(&s.seq.to_be_bytes());
        tcp[8..12].copy_from_slice(&s.ack.to_be_bytes());
        tcp[12] = (((TCP_LEN + opt) / 4) as u8) << 4;
        tcp[13] = s.flags;
        tcp[14..16].copy_from_slice(&s.window.to_be_bytes());
        tcp[16..20].fill(0); // checksum, urgent pointer
        tcp[TCP_LEN..].copy_from_slice(s.options);
        // Pseudo-header: addresses, protocol, TCP length.
        let mut sum = sum16(&s.src.ip, 0);
        sum = sum16(&s.dst.ip, sum);
        sum += 6 + tcp_len as u64;
        sum = sum16(tcp, sum);
        let p0 = t0 + TCP_LEN + opt;
        if s.payload_len > 0 {
            let (bytes, payload_sum) = self.next_payload(s.payload_len);
            sum += payload_sum;
            out[p0..p0 + s.payload_len].copy_from_slice(bytes);
        }
        out[frame..].fill(0);
        let c = fold(sum);
        out[t0 + 16..t0 + 18].copy_from_slice(&c.to_be_bytes());
        len
    }
}

/// `len` bytes of English-like text: words of a small vocabulary, most of them common ones,
/// with capitals, punctuation and line breaks, from `seed`.
fn text(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: &str = "\
        the of and to a in is it that for was on are with as be at this have from or by not \
        but what all were when we there can an your which their said if will each about how \
        up out them then she many some so these would other into has more her two like him \
        see time could no make than first been its who now people my made over did down only \
        way find use may water long little very after words called just where most know get \
        through back much before go good new write our used me man too any day same right \
        look think also around another came come work three word must because does part even \
        place well such here take why things help put years different away again off went \
        old number great tell men say small every found still between name should home big \
        give air line set own under read last never us left end along while might next sound \
        below saw something thought both few those always looked show large often together \
        asked house world going want school important until form food keep children feet \
        land side without boy once animals life enough took sometimes four head above kind \
        began almost live page got earth need far hand high year mother light parts country \
        father let night following picture being study second eyes soon times story boys \
        since white days ever paper hard near sentence better best across during today \
        others however sure means knew try told young miles sun ways thing whole hear \
        example heard several change answer room sea against top turned learn point city \
        play toward five";
    let words: Vec<&[u8]> = WORDS.split_whitespace().map(str::as_bytes).collect();
    let mut x = seed ^ 0x7465_7874;
    let mut next = move || {
        x = mix(x);
        x
    };
    let mut out = Vec::with_capacity(len + 16);
    let mut sentence_start = true;
    while out.len() < len {
        let r = next();
        // Two uniform picks, the smaller one: common words come up more often.
        let i =
            ((r & 0xffff) as usize % words.len()).min((r >> 16 & 0xffff) as usize % words.len());
        let word = words[i];
        if sentence_start {
            out.push(word[0].to_ascii_uppercase());
            out.extend_from_slice(&word[1..]);
        } else {
            out.extend_from_slice(word);
        }
        sentence_start = false;
        match (r >> 32) % 100 {
            0..=6 => {
                out.extend_from_slice(b". ");
                sentence_start = true;
            }
            7..=9 => out.extend_from_slice(b", "),
            10 => {
                out.extend_from_slice(b".\n");
                sentence_start = true;
            }
            11 => out.extend_from_slice(b" ("),
            _ => out.push(b' '),
        }
    }
    out.truncate(len);
    out
}

/// SplitMix64: seeds initial sequence numbers and IP ids reproducibly.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Where a connection stands: the next frame it sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Syn,
    SynAck,
    Ack,
    Data,
    FinAck,
    LastAck,
    Done,
}

impl Stage {
    /// Frames still needed to close the connection properly once it has started.
    fn to_close(self) -> u64 {
        match self {
            Stage::Syn | Stage::Done => 0,
            Stage::SynAck => 5,
            Stage::Ack => 4,
            Stage::Data => 3,
            Stage::FinAck => 2,
            Stage::LastAck => 1,
        }
    }
}

/// One connection's state.
#[derive(Clone, Debug)]
struct Flow {
    client: Endpoint,
    server: Endpoint,
    stage: Stage,
    c_next: u32,
    s_next: u32,
    c_ip_id: u16,
    s_ip_id: u16,
    /// Timestamp clock offsets (each end has its own clock).
    c_ts_base: u32,
    s_ts_base: u32,
    /// The last TSval each end sent (echoed by the other).
    c_tsval: u32,
    s_tsval: u32,
    sent_segments: u32,
    unacked: u32,
}

impl Flow {
    fn new(k: u64, seed: u64) -> Self {
        let r = mix(seed ^ mix(k));
        let r2 = mix(r);
        let client = Endpoint {
            mac: CLIENT_MAC,
            // 10.77.0.1 - 10.77.0.254, then the next port.
            ip: [10, 77, 0, (k % 254) as u8 + 1],
            port: 1024 + ((k / 254) % 64_000) as u16,
        };
        let server = Endpoint {
            mac: SERVER_MAC,
            ip: SERVER_IP,
            port: SERVER_PORT,
        };
        Flow {
            client,
            server,
            stage: Stage::Syn,
            c_next: r as u32,
            s_next: (r >> 32) as u32,
            c_ip_id: r2 as u16,
            s_ip_id: (r2 >> 16) as u16,
            c_ts_base: (r2 >> 32) as u32 & 0x0fff_ffff,
            s_ts_base: (r2 >> 8) as u32 & 0x0fff_ffff,
            c_tsval: 0,
            s_tsval: 0,
            sent_segments: 0,
            unacked: 0,
        }
    }
}

/// The generator: what the next frame of the conversation is.
pub(crate) struct Generator {
    flows: Vec<Flow>,
    /// Next slot to serve (round robin).
    cursor: usize,
    /// Connections started so far (the next one's index).
    started: u64,
    completed: u64,
    segments: u32,
    /// Payload bytes per data segment, and whether timestamps are on.
    data_len: usize,
    timestamps: bool,
    seed: u64,
    /// Frames of the conversation generated so far (both ends) and the budget.
    generated: u64,
    budget: u64,
    /// No new connections; open ones close.
    draining: bool,
    /// Sum of `to_close` over the open connections.
    reserve: u64,
    pub(crate) data_segments: u64,
    builder: Builder,
}

/// A generated frame: its length in the caller's buffer and which end sent it.
pub(crate) struct Generated {
    pub(crate) len: usize,
    pub(crate) from_client: bool,
}

impl Generator {
    /// `frame_size` in 55..=1514 (checked by the caller's argument parser and here).
    pub(crate) fn new(
        flows: u32,
        frame_size: usize,
        segments: u32,
        budget: u64,
        seed: u64,
        payload: Payload,
    ) -> Result<Self> {
        if !(HDRS + 1..=MAX_FRAME).contains(&frame_size) {
            bail!(
                "frame size {frame_size} is outside {}..={MAX_FRAME}",
                HDRS + 1
            );
        }
        let timestamps = frame_size > HDRS + TS_OPT_LEN;
        let data_len = frame_size - HDRS - if timestamps { TS_OPT_LEN } else { 0 };
        Ok(Generator {
            flows: (0..flows as u64).map(|k| Flow::new(k, seed)).collect(),
            cursor: 0,
            started: flows as u64,
            completed: 0,
            segments,
            data_len,
            timestamps,
            seed,
            generated: 0,
            budget,
            draining: false,
            reserve: 0,
            data_segments: 0,
            builder: Builder::new(payload, seed),
        })
    }

    /// Payload bytes per data segment.
    pub(crate) fn data_len(&self) -> usize {
        self.data_len
    }

    /// Whether the connections use the timestamp option.
    pub(crate) fn timestamps(&self) -> bool {
        self.timestamps
    }

    /// Connections completed (closed with the final ACK).
    pub(crate) fn completed(&self) -> u64 {
        self.completed
    }

    /// Connections started (SYN generated).
    pub(crate) fn started(&self) -> u64 {
        self.started - self.flows.iter().filter(|f| f.stage == Stage::Syn).count() as u64
    }

    /// Frames generated so far (both ends).
    pub(crate) fn generated(&self) -> u64 {
        self.generated
    }

    /// Stop opening connections; the open ones close with their next frames.
    pub(crate) fn drain(&mut self) {
        self.draining = true;
    }

    /// Builds the next frame into `out` (at least [`MAX_FRAME`] bytes); `now_ms` is the
    /// timestamp clock. `None` when everything is closed after draining.
    pub(crate) fn next(&mut self, out: &mut [u8], now_ms: u32) -> Option<Generated> {
        if self.generated + self.reserve + 6 > self.budget {
            self.draining = true;
        }
        let n = self.flows.len();
        for _ in 0..n {
            let i = self.cursor;
            self.cursor = (self.cursor + 1) % n;
            let f = &self.flows[i];
            match f.stage {
                Stage::Done => continue,
                Stage::Syn if self.draining => continue,
                _ => {}
            }
            let g = self.step(i, out, now_ms);
            self.generated += 1;
            return Some(g);
        }
        None
    }

    fn step(&mut self, i: usize, out: &mut [u8], now_ms: u32) -> Generated {
        let ts = self.timestamps;
        let data_len = self.data_len;
        let draining = self.draining;
        let segments = self.segments;
        let f = &mut self.flows[i];
        let before = f.stage.to_close();
        let mut opts = [0u8; 20];
        let c_tsval = f.c_ts_base.wrapping_add(now_ms);
        let s_tsval = f.s_ts_base.wrapping_add(now_ms);
        // (from client?, flags, payload, options length)
        let (from_client, flags, payload, olen) = match f.stage {
            Stage::Syn => {
                let olen = syn_options(&mut opts, ts, c_tsval, 0);
                (true, flag::SYN, 0, olen)
            }
            Stage::SynAck => {
                let olen = syn_options(&mut opts, ts, s_tsval, f.c_tsval);
                (false, flag::SYN | flag::ACK, 0, olen)
            }
            Stage::Ack | Stage::LastAck => (true, flag::ACK, 0, 0),
            Stage::Data if !draining && f.unacked >= 2 => (false, flag::ACK, 0, 0),
            Stage::Data if !draining && f.sent_segments < segments => {
                (true, flag::PSH | flag::ACK, data_len, 0)
            }
            Stage::Data => (true, flag::FIN | flag::ACK, 0, 0),
            Stage::FinAck => (false, flag::FIN | flag::ACK, 0, 0),
            Stage::Done => unreachable!("done connections are skipped"),
        };
        let olen = if flags & flag::SYN == 0 && ts {
            let (val, ecr) = if from_client {
                (c_tsval, f.s_tsval)
            } else {
                (s_tsval, f.c_tsval)
            };
            ts_option(&mut opts, val, ecr)
        } else {
            olen
        };
        let (src, dst) = if from_client {
            (f.client, f.server)
        } else {
            (f.server, f.client)
        };
        let (seq, ack) = if from_client {
            (f.c_next, if f.stage == Stage::Syn { 0 } else { f.s_next })
        } else {
            (f.s_next, f.c_next)
        };
        let ip_id = if from_client {
            f.c_ip_id = f.c_ip_id.wrapping_add(1);
            f.c_ip_id
        } else {
            f.s_ip_id = f.s_ip_id.wrapping_add(1);
            f.s_ip_id
        };
        if ts {
            if from_client {
                f.c_tsval = c_tsval;
            } else {
                f.s_tsval = s_tsval;
            }
        }
        let window = if flags & flag::SYN != 0 {
            SYN_WINDOW
        } else {
            WINDOW
        };
        let seg = Segment {
            src,
            dst,
            ip_id,
            seq,
            ack,
            flags,
            window,
            options: &opts[..olen],
            payload_len: payload,
        };
        // Advance the connection.
        let len_consumed = payload as u32 + u32::from(flags & (flag::SYN | flag::FIN) != 0);
        if from_client {
            f.c_next = f.c_next.wrapping_add(len_consumed);
        } else {
            f.s_next = f.s_next.wrapping_add(len_consumed);
        }
        f.stage = match f.stage {
            Stage::Syn => Stage::SynAck,
            Stage::SynAck => Stage::Ack,
            Stage::Ack => Stage::Data,
            Stage::Data if payload > 0 => {
                f.sent_segments += 1;
                f.unacked += 1;
                Stage::Data
            }
            Stage::Data if flags & flag::FIN == 0 => {
                f.unacked = 0;
                Stage::Data
            }
            Stage::Data => Stage::FinAck,
            Stage::FinAck => Stage::LastAck,
            Stage::LastAck => Stage::Done,
            Stage::Done => Stage::Done,
        };
        if payload > 0 {
            self.data_segments += 1;
        }
        let after = f.stage.to_close();
        let done = f.stage == Stage::Done;
        self.reserve = self.reserve + after - before;
        let len = self.builder.build(&seg, out);
        if done {
            self.completed += 1;
            if !self.draining {
                self.flows[i] = Flow::new(self.started, self.seed);
                self.started += 1;
            }
        }
        Generated { len, from_client }
    }
}

/// SYN options as Linux sends them: MSS, SACK permitted, timestamps, NOP, window scale (20
/// bytes); without timestamps MSS, NOP, NOP, SACK permitted, NOP, window scale (12 bytes).
fn syn_options(o: &mut [u8; 20], ts: bool, tsval: u32, tsecr: u32) -> usize {
    let mss = MSS.to_be_bytes();
    if ts {
        o[..4].copy_from_slice(&[2, 4, mss[0], mss[1]]);
        o[4..6].copy_from_slice(&[4, 2]);
        o[6..8].copy_from_slice(&[8, 10]);
        o[8..12].copy_from_slice(&tsval.to_be_bytes());
        o[12..16].copy_from_slice(&tsecr.to_be_bytes());
        o[16..20].copy_from_slice(&[1, 3, 3, WSCALE]);
        20
    } else {
        o[..12].copy_from_slice(&[2, 4, mss[0], mss[1], 1, 1, 4, 2, 1, 3, 3, WSCALE]);
        12
    }
}

/// NOP, NOP, timestamps (12 bytes).
fn ts_option(o: &mut [u8; 20], tsval: u32, tsecr: u32) -> usize {
    o[..4].copy_from_slice(&[1, 1, 8, 10]);
    o[4..8].copy_from_slice(&tsval.to_be_bytes());
    o[8..12].copy_from_slice(&tsecr.to_be_bytes());
    12
}

/// A plain nanosecond pcap of what was sent.
struct PcapOut(BufWriter<File>);

impl PcapOut {
    fn create(path: &Path) -> Result<Self> {
        let f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut w = BufWriter::new(f);
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&0xa1b2_3c4du32.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&[0; 8]);
        h.extend_from_slice(&65535u32.to_le_bytes());
        h.extend_from_slice(&1u32.to_le_bytes());
        w.write_all(&h)?;
        Ok(PcapOut(w))
    }

    fn write(&mut self, ts_ns: i64, frame: &[u8]) -> io::Result<()> {
        let mut r = [0u8; 16];
        r[0..4].copy_from_slice(&((ts_ns / 1_000_000_000) as u32).to_le_bytes());
        r[4..8].copy_from_slice(&((ts_ns % 1_000_000_000) as u32).to_le_bytes());
        r[8..12].copy_from_slice(&(frame.len() as u32).to_le_bytes());
        r[12..16].copy_from_slice(&(frame.len() as u32).to_le_bytes());
        self.0.write_all(&r)?;
        self.0.write_all(frame)
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Runs `tapvault blast`: prints one JSON line with what was sent.
pub(crate) fn run(a: BlastArgs) -> Result<()> {
    if !(a.duration > 0.0 && a.duration <= 86_400.0) {
        bail!("--duration must be between 0 and 86400 seconds");
    }
    if let Some(cpu) = a.cpu {
        let ids = core_affinity::get_core_ids().unwrap_or_default();
        let Some(id) = ids.into_iter().find(|c| c.id == cpu) else {
            bail!("--cpu {cpu}: no such CPU available to this process");
        };
        if !core_affinity::set_for_current(id) {
            bail!("--cpu {cpu}: pinning the sending thread failed");
        }
    }
    let mut tx = AfPacketTx::open(&TxOptions {
        interface: a.iface.clone(),
        netns: a.netns.as_deref().map(netns_path),
        qdisc_bypass: !a.no_qdisc_bypass,
        send_buffer: 4 << 20,
    })
    .with_context(|| format!("cannot open a packet socket on `{}`", a.iface))?;
    let mut pcap = a.pcap.as_deref().map(PcapOut::create).transpose()?;
    let budget = a.packets.unwrap_or(u64::MAX);
    let mut g = Generator::new(
        a.flows,
        usize::from(a.frame_size),
        a.segments,
        budget,
        a.seed,
        a.payload,
    )?;
    let batch = a.batch as usize;
    // Pacing: small batches at low rates, so frames are not bunched.
    let batch = if a.pps > 0 {
        batch.min((a.pps / 20_000).max(1) as usize)
    } else {
        batch
    };
    let mut buf = vec![0u8; batch * MAX_FRAME];
    let mut lens = vec![0usize; batch];
    let limit = Duration::from_secs_f64(a.duration);
    let (mut packets, mut bytes, mut retries) = (0u64, 0u64, 0u64);
    let t0 = Instant::now();
    let mut finished = false;
    while !finished {
        let elapsed = t0.elapsed();
        if elapsed >= limit {
            g.drain();
        }
        let now_ms = elapsed.as_millis() as u32;
        let mut n = 0;
        while n < batch {
            let out = &mut buf[n * MAX_FRAME..(n + 1) * MAX_FRAME];
            let Some(fr) = g.next(out, now_ms) else {
                finished = true;
                break;
            };
            let keep = match a.side {
                Side::Both => true,
                Side::Client => fr.from_client,
                Side::Server => !fr.from_client,
            };
            if keep {
                lens[n] = fr.len;
                n += 1;
            }
        }
        if n == 0 {
            continue;
        }
        if a.pps > 0 {
            let due = Duration::from_secs_f64(packets as f64 / a.pps as f64);
            loop {
                let e = t0.elapsed();
                if e >= due {
                    break;
                }
                if due - e > Duration::from_micros(200) {
                    std::thread::sleep(due - e - Duration::from_micros(100));
                } else {
                    std::hint::spin_loop();
                }
            }
        }
        let frames: Vec<&[u8]> = (0..n)
            .map(|k| &buf[k * MAX_FRAME..k * MAX_FRAME + lens[k]])
            .collect();
        let mut done = 0;
        let mut stuck = Instant::now();
        while done < n {
            match tx.send(&frames[done..]) {
                Ok(k) => {
                    done += k;
                    stuck = Instant::now();
                }
                Err(e) if is_retryable(&e) => {
                    retries += 1;
                    if stuck.elapsed() > Duration::from_secs(2) {
                        bail!("the interface accepted no frame for 2 s: {e}");
                    }
                    std::thread::yield_now();
                }
                Err(e) => return Err(e).context("sendmmsg failed"),
            }
        }
        if let Some(p) = pcap.as_mut() {
            let ts = now_ns();
            for f in &frames {
                p.write(ts, f)?;
            }
        }
        packets += n as u64;
        bytes += frames.iter().map(|f| f.len() as u64).sum::<u64>();
    }
    let elapsed = t0.elapsed().as_secs_f64();
    if let Some(mut p) = pcap {
        p.0.flush()?;
    }
    let out = serde_json::json!({
        "iface": a.iface,
        "side": format!("{:?}", a.side).to_lowercase(),
        "frame_size": a.frame_size,
        "data_payload": g.data_len(),
        "payload": format!("{:?}", a.payload).to_lowercase(),
        "timestamps": g.timestamps(),
        "packets": packets,
        "bytes": bytes,
        "elapsed_s": elapsed,
        "pps": if elapsed > 0.0 { packets as f64 / elapsed } else { 0.0 },
        "conversation_packets": g.generated(),
        "data_segments": g.data_segments,
        "flows_started": g.started(),
        "flows_completed": g.completed(),
        "send_retries": retries,
    });
    println!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A parsed frame, checked independently of the builder.
    struct Parsed {
        src: [u8; 4],
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        payload: usize,
        options: Vec<u8>,
    }

    fn parse_and_verify(f: &[u8]) -> Parsed {
        assert!(f.len() >= MIN_FRAME, "frames are padded to 60 bytes");
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        let ip = &f[14..34];
        assert_eq!(ip[0], 0x45);
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        assert_eq!(
            f.len(),
            (14 + total).max(MIN_FRAME),
            "frame length = Ethernet + IP total length (+ padding)"
        );
        // Recompute the IP checksum over the header with the checksum field: 0 when valid.
        let mut s: u32 = 0;
        for c in ip.chunks(2) {
            s += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        assert_eq!(s, 0xffff, "IPv4 header checksum");
        let tcp = &f[34..14 + total];
        let mut s: u32 = 0;
        for c in ip[12..20].chunks(2) {
            s += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        s += 6 + tcp.len() as u32;
        for c in tcp.chunks(2) {
            let hi = u32::from(c[0]) << 8;
            s += hi | c.get(1).map_or(0, |&b| u32::from(b));
        }
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        assert_eq!(s, 0xffff, "TCP checksum");
        assert!(f[14 + total..].iter().all(|&b| b == 0), "zero padding");
        let doff = usize::from(tcp[12] >> 4) * 4;
        Parsed {
            src: [ip[12], ip[13], ip[14], ip[15]],
            sport: u16::from_be_bytes([tcp[0], tcp[1]]),
            dport: u16::from_be_bytes([tcp[2], tcp[3]]),
            seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
            ack: u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]),
            flags: tcp[13],
            payload: tcp.len() - doff,
            options: tcp[20..doff].to_vec(),
        }
    }

    #[test]
    fn checksums_of_odd_and_even_payloads_verify() {
        for kind in [Payload::Pattern, Payload::Random, Payload::Text] {
            checksums_verify(kind);
        }
    }

    fn checksums_verify(kind: Payload) {
        let mut b = Builder::new(kind, 1);
        let mut out = vec![0u8; MAX_FRAME];
        let c = Endpoint {
            mac: CLIENT_MAC,
            ip: [10, 77, 0, 9],
            port: 40000,
        };
        let s = Endpoint {
            mac: SERVER_MAC,
            ip: SERVER_IP,
            port: SERVER_PORT,
        };
        for (plen, opts) in [
            (0usize, &[][..]),
            (1, &[][..]),
            (10, &[][..]),
            (1447, &[1, 1, 8, 10, 0, 0, 0, 5, 0, 0, 0, 6][..]),
            (1460, &[][..]),
        ] {
            let seg = Segment {
                src: c,
                dst: s,
                ip_id: 0xfffe,
                seq: 0xffff_fff0,
                ack: 7,
                flags: flag::ACK | flag::PSH,
                window: WINDOW,
                options: opts,
                payload_len: plen,
            };
            let n = b.build(&seg, &mut out);
            let p = parse_and_verify(&out[..n]);
            assert_eq!(p.payload, plen);
            assert_eq!(p.seq, 0xffff_fff0);
            assert_eq!(p.options, opts);
            assert_eq!(p.sport, 40000);
        }
    }

    /// Runs a generator to completion and checks every frame and the TCP arithmetic.
    fn check_conversation(frame_size: usize, flows: u32, segments: u32, budget: u64) -> u64 {
        let mut g = Generator::new(flows, frame_size, segments, budget, 7, Payload::Pattern)
            .expect("generator");
        let mut out = vec![0u8; MAX_FRAME];
        // Per connection (client port, client address): next expected seq each way.
        let mut next: std::collections::HashMap<([u8; 4], u16), (u32, u32, u8)> =
            Default::default();
        let mut frames = 0u64;
        let mut ms = 0;
        while let Some(fr) = g.next(&mut out, ms) {
            ms += 1;
            frames += 1;
            let p = parse_and_verify(&out[..fr.len]);
            // The client's address and port: source of its frames, destination of the
            // server's (the destination address is at bytes 30..34).
            let key = if fr.from_client {
                (p.src, p.sport)
            } else {
                ([out[30], out[31], out[32], out[33]], p.dport)
            };
            if p.flags & flag::PSH != 0 {
                assert_eq!(fr.len, frame_size, "data frames are exactly the frame size");
            }
            if p.flags == flag::SYN {
                assert!(fr.from_client);
                assert!(!next.contains_key(&key), "a connection's 4-tuple is fresh");
                next.insert(key, (p.seq.wrapping_add(1), 0, 1));
                continue;
            }
            let st = next
                .get_mut(&key)
                .expect("frames belong to a started connection");
            if p.flags == flag::SYN | flag::ACK {
                assert_eq!(p.ack, st.0, "SYN-ACK acknowledges the SYN");
                st.1 = p.seq.wrapping_add(1);
                st.2 = 2;
                continue;
            }
            assert!(p.flags & flag::ACK != 0);
            let seq_len = p.payload as u32 + u32::from(p.flags & flag::FIN != 0);
            if fr.from_client {
                assert_eq!(p.seq, st.0, "client segments are in order, no gaps");
                assert_eq!(p.ack, st.1, "the client acknowledges all server data");
                st.0 = st.0.wrapping_add(seq_len);
            } else {
                assert_eq!(p.seq, st.1, "server segments are in order");
                assert!(p.ack.wrapping_sub(st.0) == 0, "ACKs cover all data sent");
                st.1 = st.1.wrapping_add(seq_len);
            }
        }
        assert!(
            frames <= budget,
            "{frames} frames exceed the budget {budget}"
        );
        assert_eq!(frames, g.generated());
        assert_eq!(
            g.started(),
            g.completed(),
            "every started connection closed"
        );
        frames
    }

    /// What the payload kinds promise: `pattern` repeats itself, `random` and `text` do not
    /// repeat between segments; zstd (level 1, 1 MiB as the packet store's frames) shrinks
    /// `pattern` many times, `random` not at all, and `text` about as much as cleartext.
    #[test]
    fn payload_kinds_compress_as_documented() {
        let ratio = |kind: Payload| {
            let mut b = Builder::new(kind, 3);
            let mut data = Vec::new();
            let mut first = Vec::new();
            while data.len() < 1 << 20 {
                let (bytes, sum) = b.next_payload(1434);
                assert_eq!(sum, sum16(bytes, 0));
                if first.is_empty() {
                    first = bytes.to_vec();
                } else if kind != Payload::Pattern && data.len() < 1434 * 16 {
                    assert_ne!(bytes, &first[..], "{kind:?} repeats within 16 segments");
                }
                data.extend_from_slice(bytes);
            }
            data.len() as f64 / zstd::bulk::compress(&data, 1).unwrap().len() as f64
        };
        let (pattern, random, text) = (
            ratio(Payload::Pattern),
            ratio(Payload::Random),
            ratio(Payload::Text),
        );
        assert!(pattern > 20.0, "pattern {pattern:.2}");
        assert!(random < 1.01, "random {random:.2}");
        assert!((2.0..5.0).contains(&text), "text {text:.2}");
    }

    #[test]
    fn conversations_are_consistent_at_64_and_1500_bytes() {
        for (size, flows, segs, budget) in [
            (64, 4, 10, 1000),
            (1500, 8, 3, 777),
            (67, 3, 1, 100),
            (1514, 1, 1000, 12),
            (64, 100, 5, 5000),
        ] {
            let n = check_conversation(size, flows, segs, budget);
            // Connections restart until the budget binds, so it is used up to at most one
            // closing sequence.
            assert!(n + 6 > budget, "{size}: generated {n} of {budget}");
        }
    }

    #[test]
    fn budget_is_used_up_to_a_closing_sequence() {
        // Every closed connection: 3 + segments + segments / 2 ACKs + 3.
        let n = check_conversation(64, 2, 4, 10_000);
        assert!(n > 10_000 - 12, "{n}");
        assert!(n <= 10_000);
    }

    #[test]
    fn timestamps_only_when_they_fit() {
        let g = Generator::new(1, 64, 1, 100, 1, Payload::Pattern).expect("64");
        assert!(!g.timestamps());
        assert_eq!(g.data_len(), 10);
        let g = Generator::new(1, 1500, 1, 100, 1, Payload::Pattern).expect("1500");
        assert!(g.timestamps());
        assert_eq!(g.data_len(), 1500 - 66);
        assert!(Generator::new(1, 54, 1, 100, 1, Payload::Pattern).is_err());
        assert!(Generator::new(1, 1515, 1, 100, 1, Payload::Pattern).is_err());
    }

    #[test]
    fn one_connection_has_the_expected_shape() {
        let mut g = Generator::new(1, 100, 3, 1_000_000, 3, Payload::Pattern).expect("generator");
        let mut out = vec![0u8; MAX_FRAME];
        let mut shape = Vec::new();
        for _ in 0..10 {
            let fr = g.next(&mut out, 5).expect("frame");
            let p = parse_and_verify(&out[..fr.len]);
            shape.push((fr.from_client, p.flags, p.payload));
        }
        use flag::*;
        assert_eq!(
            shape,
            vec![
                (true, SYN, 0),
                (false, SYN | ACK, 0),
                (true, ACK, 0),
                (true, PSH | ACK, 34),
                (true, PSH | ACK, 34),
                (false, ACK, 0),
                (true, PSH | ACK, 34),
                (true, FIN | ACK, 0),
                (false, FIN | ACK, 0),
                (true, ACK, 0),
            ]
        );
        assert_eq!(g.completed(), 1);
    }
}
