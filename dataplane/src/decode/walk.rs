//! The layer walk: a flat loop over [`Next`] steps, so nesting costs no recursion and is
//! bounded twice (by the encapsulation layer count and by a hard step count).

use super::{Decoded, Malformed, Packet, ip, link, tunnel};

/// Maximum number of encapsulation headers followed before [`Malformed::TooDeep`].
pub(super) const MAX_ENCAP_LAYERS: u8 = 16;

/// Hard bound on loop iterations, whatever the layers are (belt and braces: every step either
/// consumes bytes or enters a counted layer, so this is never reached by a well-formed frame).
const MAX_STEPS: u32 = 64;

/// Why the walk stopped without a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// A well-formed frame without IP (EtherType or 0).
    NotIp(u16),
    /// A malformed frame.
    Bad(Malformed),
}

impl From<Malformed> for Stop {
    #[inline]
    fn from(m: Malformed) -> Self {
        Stop::Bad(m)
    }
}

/// Result of one step.
pub(super) type Res<T> = Result<T, Stop>;

/// State carried across layers.
#[derive(Debug, Default)]
pub(super) struct Ctx<'a> {
    /// The decoded packet, once the walk reaches the transport layer.
    pub(super) out: Option<Packet<'a>>,
    /// First two VLAN ids seen.
    pub(super) vlan: [Option<u16>; 2],
    /// Encapsulation bits.
    pub(super) encap: u16,
    /// Encapsulation layers entered.
    layers: u8,
}

impl Ctx<'_> {
    /// Enters one encapsulation layer, failing with `TooDeep` beyond the bound.
    #[inline]
    pub(super) fn enter(&mut self, bit: u16) -> Res<()> {
        self.layers += 1;
        if self.layers > MAX_ENCAP_LAYERS {
            return Err(Stop::Bad(Malformed::TooDeep));
        }
        self.encap |= bit;
        Ok(())
    }

    /// Records a VLAN id if fewer than two were seen.
    #[inline]
    pub(super) fn push_vlan(&mut self, id: u16) {
        if self.vlan[0].is_none() {
            self.vlan[0] = Some(id);
        } else if self.vlan[1].is_none() {
            self.vlan[1] = Some(id);
        }
    }
}

/// What to parse next.
///
/// The tag is a full `u64`: steps that are not inlined return this through memory, and a
/// one-byte tag store followed by the caller's eight-byte load of the same word defeats the
/// CPU's store-to-load forwarding (measured: half of [`run`]'s time stalled on it).
#[derive(Debug)]
#[repr(u64)]
pub(super) enum Next<'a> {
    /// An Ethernet header (destination MAC first).
    Ether(&'a [u8]),
    /// The payload of a header that named this EtherType.
    EtherType(u16, &'a [u8]),
    /// The payload of a GRE header (or of a Linux GRE tunnel device) with this protocol type;
    /// the flag tells whether the GRE sequence number bit was set (ERSPAN type I vs II).
    GrePayload(u16, bool, &'a [u8]),
    /// An 802.2 LLC header.
    Llc(&'a [u8]),
    /// An 802.11 MAC header.
    Wlan(&'a [u8]),
    /// An IP header of either version (from the version nibble).
    Ip(&'a [u8]),
    /// An IPv4 header.
    Ipv4(&'a [u8]),
    /// An IPv6 header.
    Ipv6(&'a [u8]),
    /// Finished: the packet is complete in [`Ctx::out`].
    Done,
}

/// Walks the layers from `first` to a result.
pub(super) fn run(first: Next<'_>) -> Decoded<'_> {
    let mut ctx = Ctx::default();
    let mut next = first;
    for _ in 0..MAX_STEPS {
        let step = match next {
            Next::Ether(d) => link::ethernet(d),
            Next::EtherType(t, d) => link::ethertype(&mut ctx, t, d),
            Next::GrePayload(t, seq, d) => tunnel::gre_payload(&mut ctx, t, seq, d),
            Next::Llc(d) => link::llc(d),
            Next::Wlan(d) => link::wlan(d),
            Next::Ip(d) => ip::any(&mut ctx, d),
            Next::Ipv4(d) => ip::ipv4(&mut ctx, d),
            Next::Ipv6(d) => ip::ipv6(&mut ctx, d),
            Next::Done => {
                return match ctx.out {
                    Some(p) => Decoded::Ip(p),
                    None => Decoded::Malformed(Malformed::TooDeep),
                };
            }
        };
        match step {
            Ok(n) => next = n,
            Err(s) => return stop(s),
        }
    }
    Decoded::Malformed(Malformed::TooDeep)
}

/// The result for a walk that stopped without a packet.
#[inline]
pub(super) fn stop(s: Stop) -> Decoded<'static> {
    match s {
        Stop::NotIp(t) => Decoded::NotIp(t),
        Stop::Bad(m) => Decoded::Malformed(m),
    }
}

/// Reads `N` bytes at `at`.
#[inline(always)]
pub(super) fn chunk<const N: usize>(d: &[u8], at: usize) -> Option<&[u8; N]> {
    d.get(at..)?.first_chunk()
}

/// The bytes from `at` on, or an empty slice.
#[inline(always)]
pub(super) fn tail(d: &[u8], at: usize) -> &[u8] {
    d.get(at..).unwrap_or(&[])
}
