//! The symmetric flow key and its hash.
//!
//! Both directions of a connection normalise to the same [`FlowKey`] (the lower endpoint
//! first), so they hash to the same shard and the same table slot. [`Direction`] says which
//! way a packet went relative to that normal form.

use crate::decode::Packet;

/// Which endpoint of the normalised key sent the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Direction {
    /// From endpoint `a` (the lower one) to `b`.
    AtoB = 0,
    /// From endpoint `b` to `a`.
    BtoA = 1,
}

impl Direction {
    /// The other direction.
    #[inline]
    pub fn flip(self) -> Direction {
        match self {
            Direction::AtoB => Direction::BtoA,
            Direction::BtoA => Direction::AtoB,
        }
    }

    /// 0 or 1, for indexing per-direction arrays.
    #[inline]
    pub fn idx(self) -> usize {
        self as usize
    }
}

/// A normalised 5-tuple. IPv4 addresses are IPv4-mapped, so one type covers both versions.
/// VLAN tags and tunnel headers are not part of the key: like Wireshark's `tcp.stream`, a
/// connection is its inner addresses and ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    /// Lower endpoint address.
    pub addr_a: [u8; 16],
    /// Higher endpoint address.
    pub addr_b: [u8; 16],
    /// Port of `addr_a` (ICMP echo: the identifier on both sides).
    pub port_a: u16,
    /// Port of `addr_b`.
    pub port_b: u16,
    /// IP protocol.
    pub proto: u8,
    /// 4 or 6.
    pub ip_version: u8,
}

impl FlowKey {
    /// Builds the key of a packet sent from `src:sport` to `dst:dport`, returning the
    /// direction the packet travelled.
    #[inline]
    pub fn new(
        ip_version: u8,
        proto: u8,
        src: [u8; 16],
        sport: u16,
        dst: [u8; 16],
        dport: u16,
    ) -> (FlowKey, Direction) {
        // Compare as integers: the same order as the byte arrays (big-endian), without a
        // byte-wise memcmp per packet.
        let (s, d) = (u128::from_be_bytes(src), u128::from_be_bytes(dst));
        if (s, sport) <= (d, dport) {
            let k = FlowKey {
                addr_a: src,
                addr_b: dst,
                port_a: sport,
                port_b: dport,
                proto,
                ip_version,
            };
            (k, Direction::AtoB)
        } else {
            let k = FlowKey {
                addr_a: dst,
                addr_b: src,
                port_a: dport,
                port_b: sport,
                proto,
                ip_version,
            };
            (k, Direction::BtoA)
        }
    }

    /// The key of a decoded packet (ports from TCP/UDP, the echo identifier for ICMP echo,
    /// zero otherwise).
    #[inline]
    pub fn of_packet(p: &Packet<'_>) -> (FlowKey, Direction) {
        use crate::decode::Transport;
        let (sport, dport) = match p.transport {
            Transport::Tcp(t) => (t.src_port, t.dst_port),
            Transport::Udp(u) => (u.src_port, u.dst_port),
            Transport::Icmp(i) => (i.echo_id, i.echo_id),
            Transport::Fragment | Transport::Other => (0, 0),
        };
        FlowKey::new(p.ip.version, p.ip.proto, p.ip.src, sport, p.ip.dst, dport)
    }

    /// The symmetric 64-bit hash: the same for both directions (the key is normalised), stable
    /// across runs and platforms, so shard assignment is reproducible.
    #[inline]
    pub fn hash64(&self) -> u64 {
        const K: u64 = 0x9E37_79B9_7F4A_7C15;
        let a = u128::from_le_bytes(self.addr_a);
        let b = u128::from_le_bytes(self.addr_b);
        let mut h =
            (u64::from(self.proto) << 32) | (u64::from(self.port_a) << 16) | u64::from(self.port_b);
        for word in [a as u64, (a >> 64) as u64, b as u64, (b >> 64) as u64] {
            h = (h.rotate_left(23) ^ word).wrapping_mul(K);
        }
        // Final avalanche (from splitmix64) so the high bits used for shard choice are mixed.
        h ^= h >> 30;
        h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h ^= h >> 27;
        h = h.wrapping_mul(0x94D0_49BB_1331_11EB);
        h ^ (h >> 31)
    }

    /// The shard that owns this key among `n` shards.
    #[inline]
    pub fn shard(hash: u64, n: usize) -> usize {
        // Multiply-shift on the high half: uniform without a division.
        (((hash >> 32) * n as u64) >> 32) as usize
    }

    /// The address of endpoint `a` or `b` as text.
    pub fn addr_string(&self, which: Direction) -> String {
        let a = match which {
            Direction::AtoB => &self.addr_a,
            Direction::BtoA => &self.addr_b,
        };
        addr_to_string(self.ip_version, a)
    }
}

impl FlowKey {
    /// The key of a stored flow record, from its protocol, version, addresses and ports:
    /// what links a record to its packets in the pcap store (whose index holds
    /// [`FlowKey::hash64`] per packet). `None` when a field does not parse.
    pub fn of_record(rec: &tapvault_storage::FlowRecord) -> Option<FlowKey> {
        let proto = match rec.proto.as_str() {
            "tcp" => 6,
            "udp" => 17,
            "icmp" => 1,
            "icmpv6" => 58,
            "sctp" => 132,
            "gre" => 47,
            "esp" => 50,
            other => other.parse().ok()?,
        };
        let addr = |s: &str| -> Option<[u8; 16]> {
            Some(match s.parse::<std::net::IpAddr>().ok()? {
                std::net::IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
                std::net::IpAddr::V6(a) => a.octets(),
            })
        };
        let (key, _) = FlowKey::new(
            rec.ip_version,
            proto,
            addr(&rec.client_ip)?,
            rec.client_port,
            addr(&rec.server_ip)?,
            rec.server_port,
        );
        Some(key)
    }
}

/// Formats an address stored in 16 bytes (IPv4-mapped for version 4).
pub fn addr_to_string(ip_version: u8, a: &[u8; 16]) -> String {
    let v6 = std::net::Ipv6Addr::from(*a);
    if ip_version == 4
        && let Some(v4) = v6.to_ipv4_mapped()
    {
        // Every flow record formats two addresses; `core::fmt` took ~5 % of the engine's
        // thread on the bulk capture.
        let mut s = String::with_capacity(15);
        for (i, octet) in v4.octets().into_iter().enumerate() {
            if i > 0 {
                s.push('.');
            }
            if octet >= 100 {
                s.push(char::from(b'0' + octet / 100));
            }
            if octet >= 10 {
                s.push(char::from(b'0' + octet / 10 % 10));
            }
            s.push(char::from(b'0' + octet % 10));
        }
        s
    } else {
        v6.to_string()
    }
}

/// `v` as 16 lowercase hex digits (`format!("{v:016x}")` without `core::fmt`): flow ids.
pub fn hex16(v: u64) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    (0..16)
        .rev()
        .map(|i| char::from(DIGITS[(v >> (i * 4)) as usize & 0xf]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_and_id_text_match_std_formatting() {
        let mut x: u64 = 0x0123_4567_89ab_cdef;
        for i in 0..=255u8 {
            for o in [
                [i, 0, 255, 7],
                [9, i, 10, 100],
                [99, 199, i, 1],
                [0, 0, 0, i],
            ] {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let mapped = std::net::Ipv4Addr::from(o).to_ipv6_mapped().octets();
                let want = std::net::Ipv4Addr::from(o).to_string();
                assert_eq!(addr_to_string(4, &mapped), want);
                assert_eq!(hex16(x), format!("{x:016x}"));
            }
        }
        assert_eq!(hex16(0), "0000000000000000");
        assert_eq!(hex16(u64::MAX), "ffffffffffffffff");
        let v6: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert_eq!(addr_to_string(6, &v6.octets()), "2001:db8::1");
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> [u8; 16] {
        let mut x = [0u8; 16];
        x[10] = 0xff;
        x[11] = 0xff;
        x[12..].copy_from_slice(&[a, b, c, d]);
        x
    }

    #[test]
    fn both_directions_give_one_key_and_hash() {
        let (k1, d1) = FlowKey::new(4, 6, v4(10, 0, 0, 2), 40000, v4(10, 0, 0, 1), 80);
        let (k2, d2) = FlowKey::new(4, 6, v4(10, 0, 0, 1), 80, v4(10, 0, 0, 2), 40000);
        assert_eq!(k1, k2);
        assert_ne!(d1, d2);
        assert_eq!(k1.hash64(), k2.hash64());
        assert_eq!(k1.addr_string(Direction::AtoB), "10.0.0.1");
    }

    #[test]
    fn same_address_different_ports() {
        let a = v4(127, 0, 0, 1);
        let (k1, d1) = FlowKey::new(4, 6, a, 5000, a, 80);
        let (k2, d2) = FlowKey::new(4, 6, a, 80, a, 5000);
        assert_eq!(k1, k2);
        assert_eq!(d1, d2.flip());
    }

    #[test]
    fn shards_spread_evenly() {
        let mut counts = [0usize; 4];
        for i in 0..40_000u32 {
            let (k, _) = FlowKey::new(
                4,
                6,
                v4(10, (i >> 8) as u8, i as u8, 1),
                (i % 50_000) as u16 + 1024,
                v4(192, 168, 0, 1),
                443,
            );
            counts[FlowKey::shard(k.hash64(), 4)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }
}
