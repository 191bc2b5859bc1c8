//! Support code for tapvault's benchmarks: a seeded generator of a realistic synthetic packet
//! set (many TCP connections with handshake, data both ways, delayed ACKs, losses with dup ACKs
//! carrying SACK blocks and fast retransmissions, FIN or RST teardown; some DNS over UDP;
//! Ethernet with IPv4 and some IPv6; a few 802.1Q-tagged and QinQ flows).
//!
//! Frames are built whole (full payload, as a `-s 0` capture holds them) into one contiguous
//! buffer, in capture-time order, so a benchmark walks memory the way `tapvault analyze` walks
//! a memory-mapped pcap.
#![deny(missing_docs)]

/// A tiny seeded PRNG (xorshift64*), so the packet set is the same on every run.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from `seed` (0 is replaced by a fixed non-zero value).
    pub fn new(seed: u64) -> XorShift {
        XorShift(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..hi` (`hi > lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// Shape of a synthetic packet set.
#[derive(Debug, Clone)]
pub struct SynthConfig {
    /// PRNG seed.
    pub seed: u64,
    /// TCP connections.
    pub connections: usize,
    /// Share of connections that are bulk transfers (hundreds of segments each way).
    pub bulk_share: f64,
    /// Share of connections over IPv6.
    pub ipv6_share: f64,
    /// Share of connections carried in an 802.1Q tag (a tenth of those double-tagged).
    pub vlan_share: f64,
    /// Probability that a data segment is lost before the capture point's peer (it then shows
    /// as dup ACKs with SACK and a fast retransmission).
    pub loss: f64,
    /// Share of connections that end with a RST instead of FINs.
    pub rst_share: f64,
    /// DNS query/response pairs over UDP.
    pub dns_transactions: usize,
    /// Span of connection start times, seconds.
    pub span_secs: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 0x7a9_5eed,
            connections: 2_000,
            bulk_share: 0.05,
            ipv6_share: 0.15,
            vlan_share: 0.05,
            loss: 0.01,
            rst_share: 0.05,
            dns_transactions: 1_500,
            span_secs: 20.0,
        }
    }
}

/// A synthetic capture: frames (Ethernet link type) in time order in one buffer.
#[derive(Debug, Clone, Default)]
pub struct PacketSet {
    /// All frame bytes, back to back.
    pub data: Vec<u8>,
    /// Per frame: (offset into `data`, length, timestamp in ns since the epoch).
    pub frames: Vec<(usize, u32, i64)>,
}

impl PacketSet {
    /// Number of frames.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// True if there are no frames.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Total frame bytes.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Iterates (timestamp ns, frame bytes) in capture order.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &[u8])> + '_ {
        self.frames
            .iter()
            .map(|&(off, len, ts)| (ts, &self.data[off..off + len as usize]))
    }
}

/// TCP flag bits.
mod fl {
    pub(crate) const FIN: u8 = 0x01;
    pub(crate) const SYN: u8 = 0x02;
    pub(crate) const RST: u8 = 0x04;
    pub(crate) const PSH: u8 = 0x08;
    pub(crate) const ACK: u8 = 0x10;
}

/// MSS with the timestamps option on a 1500-byte MTU: IPv4, IPv6.
const MSS: [u32; 2] = [1448, 1428];
/// Capture start: 2024-01-01T00:00:00Z.
const EPOCH_NS: i64 = 1_704_067_200_000_000_000;

struct Raw {
    ts: i64,
    frame: Vec<u8>,
}

/// One endpoint pair and the link-layer framing its packets share.
struct Path {
    v6: bool,
    vlan: [Option<u16>; 2],
    addr: [[u8; 16]; 2],
    mac: [[u8; 6]; 2],
    port: [u16; 2],
}

fn ones_complement(data: &[u8]) -> u16 {
    let mut s = 0u32;
    for c in data.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

impl Path {
    /// Ethernet (+ tags) + IP header for a packet from side `from` with `l4_len` bytes of
    /// transport header and payload.
    fn l2l3(&self, from: usize, proto: u8, l4_len: usize, ttl: u8, out: &mut Vec<u8>) {
        let to = 1 - from;
        out.extend_from_slice(&self.mac[to]);
        out.extend_from_slice(&self.mac[from]);
        for (i, v) in self.vlan.iter().enumerate() {
            if let Some(v) = v {
                let tpid: u16 = if i == 0 && self.vlan[1].is_some() {
                    0x88a8
                } else {
                    0x8100
                };
                out.extend_from_slice(&tpid.to_be_bytes());
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
        if self.v6 {
            out.extend_from_slice(&0x86ddu16.to_be_bytes());
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&(l4_len as u16).to_be_bytes());
            out.push(proto);
            out.push(ttl);
            out.extend_from_slice(&self.addr[from]);
            out.extend_from_slice(&self.addr[to]);
        } else {
            out.extend_from_slice(&0x0800u16.to_be_bytes());
            let start = out.len();
            out.extend_from_slice(&[0x45, 0]);
            out.extend_from_slice(&((20 + l4_len) as u16).to_be_bytes());
            out.extend_from_slice(&[0, 0, 0x40, 0, ttl, proto, 0, 0]);
            out.extend_from_slice(&self.addr[from][12..]);
            out.extend_from_slice(&self.addr[to][12..]);
            let c = ones_complement(&out[start..start + 20]);
            out[start + 10..start + 12].copy_from_slice(&c.to_be_bytes());
        }
    }
}

/// A TCP segment to build.
#[derive(Default)]
struct Seg<'a> {
    flags: u8,
    seq: u32,
    ack: u32,
    len: u32,
    syn_opts: bool,
    ts: Option<(u32, u32)>,
    sack: &'a [(u32, u32)],
}

/// One TCP connection being generated: side 0 is the client.
struct Conn {
    path: Path,
    isn: [u32; 2],
    /// Next sequence number each side sends.
    next: [u32; 2],
    /// Highest cumulative ACK each side has sent.
    acked: [u32; 2],
    now: i64,
    rtt: i64,
    mss: u32,
    tsval: [u32; 2],
    window: [u16; 2],
    out: Vec<Raw>,
}

impl Conn {
    fn emit(&mut self, from: usize, s: &Seg<'_>) {
        let mut opts: Vec<u8> = Vec::with_capacity(40);
        if s.syn_opts {
            opts.extend_from_slice(&[2, 4]);
            opts.extend_from_slice(&(self.mss as u16 + 12).to_be_bytes());
            opts.extend_from_slice(&[4, 2]);
        }
        if let Some((v, e)) = s.ts {
            if !s.syn_opts {
                opts.extend_from_slice(&[1, 1]);
            }
            opts.extend_from_slice(&[8, 10]);
            opts.extend_from_slice(&v.to_be_bytes());
            opts.extend_from_slice(&e.to_be_bytes());
        }
        if s.syn_opts {
            opts.extend_from_slice(&[1, 3, 3, 7]);
        }
        if !s.sack.is_empty() {
            opts.extend_from_slice(&[1, 1, 5, 2 + 8 * s.sack.len() as u8]);
            for (l, r) in s.sack {
                opts.extend_from_slice(&l.to_be_bytes());
                opts.extend_from_slice(&r.to_be_bytes());
            }
        }
        debug_assert!(opts.len().is_multiple_of(4) && opts.len() <= 40);
        let hl = 20 + opts.len();
        let l4_len = hl + s.len as usize;
        let mut f = Vec::with_capacity(14 + 8 + 40 + l4_len);
        self.path.l2l3(from, 6, l4_len, 64, &mut f);
        f.extend_from_slice(&self.path.port[from].to_be_bytes());
        f.extend_from_slice(&self.path.port[1 - from].to_be_bytes());
        f.extend_from_slice(&s.seq.to_be_bytes());
        f.extend_from_slice(&s.ack.to_be_bytes());
        f.push(((hl / 4) as u8) << 4);
        f.push(s.flags);
        f.extend_from_slice(&self.window[from].to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0]); // checksum (not verified by decoders), urgent
        f.extend_from_slice(&opts);
        // Payload: printable filler, as an HTTP body would be.
        f.extend((0..s.len).map(|i| b'a' + (i % 26) as u8));
        self.out.push(Raw {
            ts: self.now,
            frame: f,
        });
    }

    fn ts_opt(&mut self, from: usize) -> Option<(u32, u32)> {
        self.tsval[from] = self.tsval[from].wrapping_add(1);
        Some((self.tsval[from], self.tsval[1 - from]))
    }

    fn handshake(&mut self) {
        let ts = self.ts_opt(0);
        self.emit(
            0,
            &Seg {
                flags: fl::SYN,
                seq: self.isn[0],
                syn_opts: true,
                ts,
                ..Seg::default()
            },
        );
        self.now += self.rtt / 2;
        let ts = self.ts_opt(1);
        self.emit(
            1,
            &Seg {
                flags: fl::SYN | fl::ACK,
                seq: self.isn[1],
                ack: self.isn[0].wrapping_add(1),
                syn_opts: true,
                ts,
                ..Seg::default()
            },
        );
        self.now += self.rtt / 2;
        self.next = [self.isn[0].wrapping_add(1), self.isn[1].wrapping_add(1)];
        self.acked = [self.next[1], self.next[0]];
        self.pure_ack(0, &[]);
    }

    fn pure_ack(&mut self, from: usize, sack: &[(u32, u32)]) {
        let ts = self.ts_opt(from);
        self.emit(
            from,
            &Seg {
                flags: fl::ACK,
                seq: self.next[from],
                ack: self.acked[from],
                ts,
                sack,
                ..Seg::default()
            },
        );
    }

    fn data(&mut self, from: usize, seq: u32, len: u32, push: bool) {
        let ts = self.ts_opt(from);
        self.emit(
            from,
            &Seg {
                flags: fl::ACK | if push { fl::PSH } else { 0 },
                seq,
                ack: self.acked[from],
                len,
                ts,
                ..Seg::default()
            },
        );
    }

    /// Side `from` sends `bytes`; the peer ACKs every second segment. Lost segments show up
    /// as dup ACKs carrying a SACK block, then a fast retransmission and a cumulative ACK.
    fn transfer(&mut self, rng: &mut XorShift, from: usize, bytes: u32, loss: f64) {
        let to = 1 - from;
        let gap = rng.range(8_000, 40_000) as i64; // 8-40 us between segments
        let mut left = bytes;
        let mut unacked_segs = 0;
        let mut lost: Option<(u32, u32)> = None;
        let mut dups = 0;
        while left > 0 {
            let len = left.min(self.mss);
            left -= len;
            let seq = self.next[from];
            self.next[from] = seq.wrapping_add(len);
            self.now += gap;
            if lost.is_none() && left > 3 * self.mss && rng.chance(loss) {
                // Dropped upstream of the capture point: never seen.
                lost = Some((seq, len));
                continue;
            }
            self.data(from, seq, len, left == 0);
            match lost {
                Some((lseq, llen)) => {
                    // Receiver: dup ACK with the SACKed range beyond the hole.
                    self.now += 2_000;
                    let sack = [(lseq.wrapping_add(llen), self.next[from])];
                    self.pure_ack(to, &sack);
                    dups += 1;
                    if dups == 3 {
                        self.now += self.rtt / 2;
                        self.data(from, lseq, llen, false);
                        self.now += 2_000;
                        self.acked[to] = self.next[from];
                        self.pure_ack(to, &[]);
                        lost = None;
                        dups = 0;
                        unacked_segs = 0;
                    }
                }
                None => {
                    unacked_segs += 1;
                    if unacked_segs == 2 || left == 0 {
                        self.now += 2_000;
                        self.acked[to] = self.next[from];
                        self.pure_ack(to, &[]);
                        unacked_segs = 0;
                    }
                }
            }
        }
        if let Some((lseq, llen)) = lost {
            self.now += self.rtt;
            self.data(from, lseq, llen, false);
            self.now += 2_000;
            self.acked[to] = self.next[from];
            self.pure_ack(to, &[]);
        }
        self.now += self.rtt / 2;
    }

    fn close(&mut self, rst: bool) {
        if rst {
            self.emit(
                0,
                &Seg {
                    flags: fl::RST | fl::ACK,
                    seq: self.next[0],
                    ack: self.acked[0],
                    ..Seg::default()
                },
            );
            return;
        }
        for (from, first) in [(1usize, true), (0, false)] {
            let ts = self.ts_opt(from);
            self.emit(
                from,
                &Seg {
                    flags: fl::FIN | fl::ACK,
                    seq: self.next[from],
                    ack: if first {
                        self.acked[from]
                    } else {
                        self.next[1 - from].wrapping_add(1)
                    },
                    ts,
                    ..Seg::default()
                },
            );
            self.now += self.rtt / 2;
        }
        self.next = self.next.map(|n| n.wrapping_add(1));
        self.acked = [self.next[1], self.next[0]];
        self.pure_ack(1, &[]);
    }
}

fn addr(rng: &mut XorShift, v6: bool, server: bool) -> [u8; 16] {
    let mut a = [0u8; 16];
    if v6 {
        a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        a[4] = u8::from(server);
        a[8..].copy_from_slice(&rng.next_u64().to_be_bytes());
    } else {
        a[10] = 0xff;
        a[11] = 0xff;
        if server {
            a[12..].copy_from_slice(&[192, 0, 2, rng.range(1, 32) as u8]);
        } else {
            a[12..].copy_from_slice(&[
                10,
                rng.range(0, 4) as u8,
                rng.range(0, 256) as u8,
                rng.range(1, 255) as u8,
            ]);
        }
    }
    a
}

fn path(rng: &mut XorShift, cfg: &SynthConfig, server_port: u16) -> Path {
    let v6 = rng.chance(cfg.ipv6_share);
    let vlan = if rng.chance(cfg.vlan_share) {
        let outer = rng.range(1, 4095) as u16;
        if rng.chance(0.1) {
            [Some(outer), Some(rng.range(1, 4095) as u16)]
        } else {
            [Some(outer), None]
        }
    } else {
        [None, None]
    };
    let mut mac = [[0x02, 0, 0, 0, 0, 0]; 2];
    mac[0][2..].copy_from_slice(&(rng.next_u64() as u32).to_be_bytes());
    mac[1][2..].copy_from_slice(&(rng.next_u64() as u32).to_be_bytes());
    Path {
        v6,
        vlan,
        addr: [addr(rng, v6, false), addr(rng, v6, true)],
        mac,
        port: [rng.range(32_768, 61_000) as u16, server_port],
    }
}

fn dns_name(rng: &mut XorShift) -> Vec<u8> {
    let mut q = Vec::new();
    for label in [rng.range(3, 12), rng.range(4, 10), 3] {
        q.push(label as u8);
        q.extend((0..label).map(|_| b'a' + rng.range(0, 26) as u8));
    }
    q.push(0);
    q
}

fn dns_pair(rng: &mut XorShift, cfg: &SynthConfig, start: i64, out: &mut Vec<Raw>) {
    let p = path(rng, cfg, 53);
    let id = rng.next_u64() as u16;
    let name = dns_name(rng);
    let answers = rng.range(0, 3) as u16;
    for (from, resp) in [(0usize, false), (1, true)] {
        let mut msg = Vec::with_capacity(64);
        msg.extend_from_slice(&id.to_be_bytes());
        msg.extend_from_slice(if resp { &[0x81, 0x80] } else { &[0x01, 0x00] });
        msg.extend_from_slice(&[0, 1]);
        msg.extend_from_slice(&(if resp { answers } else { 0 }).to_be_bytes());
        msg.extend_from_slice(&[0, 0, 0, 0]);
        msg.extend_from_slice(&name);
        msg.extend_from_slice(&[0, 1, 0, 1]);
        if resp {
            for k in 0..answers {
                msg.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4]);
                msg.extend_from_slice(&[192, 0, 2, 100 + k as u8]);
            }
        }
        let l4_len = 8 + msg.len();
        let mut f = Vec::with_capacity(14 + 40 + l4_len);
        p.l2l3(from, 17, l4_len, 64, &mut f);
        f.extend_from_slice(&p.port[from].to_be_bytes());
        f.extend_from_slice(&p.port[1 - from].to_be_bytes());
        f.extend_from_slice(&(l4_len as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&msg);
        out.push(Raw {
            ts: start
                + if resp {
                    rng.range(200_000, 30_000_000) as i64
                } else {
                    0
                },
            frame: f,
        });
    }
}

/// Generates the packet set described by `cfg`.
pub fn generate(cfg: &SynthConfig) -> PacketSet {
    let mut rng = XorShift::new(cfg.seed);
    let span_ns = (cfg.span_secs * 1e9) as i64;
    let mut raws: Vec<Raw> = Vec::new();
    for _ in 0..cfg.connections {
        let bulk = rng.chance(cfg.bulk_share);
        let server_port = *[80u16, 443, 443, 443, 8080, 5201]
            .get(rng.range(0, 6) as usize)
            .unwrap_or(&443);
        let path = path(&mut rng, cfg, server_port);
        let mss = MSS[usize::from(path.v6)];
        let mut c = Conn {
            path,
            isn: [rng.next_u64() as u32, rng.next_u64() as u32],
            next: [0; 2],
            acked: [0; 2],
            now: EPOCH_NS + rng.range(0, span_ns as u64) as i64,
            rtt: rng.range(150_000, 40_000_000) as i64,
            mss,
            tsval: [rng.next_u64() as u32, rng.next_u64() as u32],
            window: [502, 509],
            out: Vec::new(),
        };
        c.handshake();
        let rounds = if bulk {
            rng.range(1, 4)
        } else {
            rng.range(1, 3)
        };
        for _ in 0..rounds {
            let req = rng.range(80, 900) as u32;
            c.transfer(&mut rng, 0, req, cfg.loss);
            let resp = if bulk {
                rng.range(100_000, 600_000)
            } else {
                rng.range(300, 24_000)
            } as u32;
            c.transfer(&mut rng, 1, resp, cfg.loss);
            if bulk && rng.chance(0.5) {
                // Upload in the same connection.
                let up = rng.range(50_000, 300_000) as u32;
                c.transfer(&mut rng, 0, up, cfg.loss);
            }
        }
        c.close(rng.chance(cfg.rst_share));
        raws.append(&mut c.out);
    }
    for _ in 0..cfg.dns_transactions {
        let start = EPOCH_NS + rng.range(0, span_ns as u64) as i64;
        dns_pair(&mut rng, cfg, start, &mut raws);
    }
    // Capture order; the stable sort keeps each connection's own order on equal times.
    raws.sort_by_key(|r| r.ts);
    let total: usize = raws.iter().map(|r| r.frame.len()).sum();
    let mut set = PacketSet {
        data: Vec::with_capacity(total),
        frames: Vec::with_capacity(raws.len()),
    };
    for r in raws {
        set.frames
            .push((set.data.len(), r.frame.len() as u32, r.ts));
        set.data.extend_from_slice(&r.frame);
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_sized() {
        let cfg = SynthConfig {
            connections: 50,
            dns_transactions: 10,
            ..SynthConfig::default()
        };
        let a = generate(&cfg);
        let b = generate(&cfg);
        assert_eq!(a.data, b.data);
        assert_eq!(a.frames, b.frames);
        assert!(a.len() > 50 * 8);
        assert!(
            a.iter().all(|(_, f)| f.len() <= 1514 + 8),
            "no frame over the MTU"
        );
        assert!(a.frames.windows(2).all(|w| w[0].2 <= w[1].2));
    }
}
