//! A tcpdump-like packet filter, parsed by recursive descent and evaluated on the packet the
//! engine's decoder sees (the innermost IP header, through tunnels and VLANs).
//!
//! ```text
//! expr    := and ( ("or" | "||") and )*
//! and     := unary ( ("and" | "&&") unary )*
//! unary   := ("not" | "!") unary | "(" expr ")" | term
//! term    := [proto] [dir] (host ADDR | net CIDR | port N | portrange N-M)
//!          | proto
//! dir     := src | dst | "src or dst" | "src and dst"
//! proto   := tcp | udp | icmp | icmp6 | ip | ip6
//! ```
//!
//! `tcp port 80` means `tcp and port 80`. Errors name the byte offset of the bad token.

use std::net::IpAddr;

use tapvault_dataplane::decode::{Decoded, LinkType, Transport, decode};

use crate::filter::Net;

/// Which address or port a primitive looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    Src,
    Dst,
    Either,
    Both,
}

/// A protocol primitive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    Tcp,
    Udp,
    Icmp,
    Icmp6,
    Ip,
    Ip6,
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Net(Dir, Net),
    Port(Dir, u16, u16),
    Proto(Proto),
}

/// A filter error: what is wrong and where (byte offset in the filter text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParseError {
    pub(crate) offset: usize,
    pub(crate) message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (at offset {})", self.message, self.offset)
    }
}

struct Parser<'a> {
    toks: Vec<(usize, &'a str)>,
    pos: usize,
    len: usize,
}

fn tokenize(s: &str) -> Result<Vec<(usize, &str)>, ParseError> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'(' || c == b')' {
            out.push((i, &s[i..i + 1]));
            i += 1;
        } else if s[i..].starts_with("&&") || s[i..].starts_with("||") {
            out.push((i, &s[i..i + 2]));
            i += 2;
        } else if c == b'!' {
            out.push((i, &s[i..i + 1]));
            i += 1;
        } else if c.is_ascii_alphanumeric() || matches!(c, b'.' | b':' | b'/' | b'-' | b'_') {
            let start = i;
            while i < b.len()
                && (b[i].is_ascii_alphanumeric()
                    || matches!(b[i], b'.' | b':' | b'/' | b'-' | b'_'))
            {
                i += 1;
            }
            out.push((start, &s[start..i]));
        } else {
            let ch = s[i..].chars().next().unwrap_or('?');
            return Err(ParseError {
                offset: i,
                message: format!("unexpected character `{ch}`"),
            });
        }
    }
    Ok(out)
}

/// Parses a filter; the empty filter is an error (omit the parameter instead).
pub(crate) fn parse(s: &str) -> Result<Expr, ParseError> {
    if s.len() > 4096 {
        return Err(ParseError {
            offset: 4096,
            message: "filter longer than 4096 bytes".into(),
        });
    }
    let mut p = Parser {
        toks: tokenize(s)?,
        pos: 0,
        len: s.len(),
    };
    if p.toks.is_empty() {
        return Err(ParseError {
            offset: 0,
            message: "empty filter".into(),
        });
    }
    let e = p.expr(0)?;
    if let Some((off, t)) = p.peek() {
        return Err(ParseError {
            offset: off,
            message: format!("unexpected `{t}` after a complete expression (missing `and`/`or`?)"),
        });
    }
    Ok(e)
}

const MAX_DEPTH: usize = 64;

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<(usize, &'a str)> {
        self.toks.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<(usize, &'a str)> {
        let t = self.peek();
        self.pos += usize::from(t.is_some());
        t
    }

    fn end_offset(&self) -> usize {
        self.len
    }

    fn err<T>(&self, offset: usize, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            offset,
            message: message.into(),
        })
    }

    fn expr(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let mut e = self.and(depth)?;
        while let Some((_, t)) = self.peek() {
            if t == "or" || t == "||" {
                self.pos += 1;
                let r = self.and(depth)?;
                e = Expr::Or(Box::new(e), Box::new(r));
            } else {
                break;
            }
        }
        Ok(e)
    }

    fn and(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let mut e = self.unary(depth)?;
        while let Some((_, t)) = self.peek() {
            if t == "and" || t == "&&" {
                self.pos += 1;
                let r = self.unary(depth)?;
                e = Expr::And(Box::new(e), Box::new(r));
            } else {
                break;
            }
        }
        Ok(e)
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, ParseError> {
        if depth > MAX_DEPTH {
            let off = self.peek().map_or(self.end_offset(), |t| t.0);
            return self.err(off, format!("nested deeper than {MAX_DEPTH} levels"));
        }
        match self.peek() {
            None => self.err(
                self.end_offset(),
                "unexpected end of filter: expected a primitive (host, net, port, tcp, udp, icmp), `not` or `(`",
            ),
            Some((_, "not" | "!")) => {
                self.pos += 1;
                Ok(Expr::Not(Box::new(self.unary(depth + 1)?)))
            }
            Some((off, "(")) => {
                self.pos += 1;
                let e = self.expr(depth + 1)?;
                match self.next() {
                    Some((_, ")")) => Ok(e),
                    Some((o, t)) => self.err(o, format!("expected `)` to close `(` at offset {off}, found `{t}`")),
                    None => self.err(self.end_offset(), format!("missing `)` to close `(` at offset {off}")),
                }
            }
            Some(_) => self.term(),
        }
    }

    fn proto_of(t: &str) -> Option<Proto> {
        Some(match t {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            "icmp" => Proto::Icmp,
            "icmp6" => Proto::Icmp6,
            "ip" => Proto::Ip,
            "ip6" => Proto::Ip6,
            _ => return None,
        })
    }

    fn term(&mut self) -> Result<Expr, ParseError> {
        let mut proto = None;
        if let Some((_, t)) = self.peek()
            && let Some(p) = Self::proto_of(t)
        {
            self.pos += 1;
            proto = Some(p);
            // A bare protocol unless a qualifier or primitive follows.
            match self.peek() {
                Some((_, "src" | "dst" | "host" | "net" | "port" | "portrange")) => {}
                _ => return Ok(Expr::Proto(p)),
            }
        }
        let dir = match self.peek() {
            Some((_, "src")) | Some((_, "dst")) => {
                let (_, d) = self.next().unwrap_or((0, ""));
                let d = if d == "src" { Dir::Src } else { Dir::Dst };
                // "src or dst" / "src and dst" followed by a primitive keyword.
                match (self.toks.get(self.pos), self.toks.get(self.pos + 1)) {
                    (Some((_, op @ ("or" | "and"))), Some((_, other @ ("src" | "dst"))))
                        if *other != if d == Dir::Src { "src" } else { "dst" } =>
                    {
                        let both = *op == "and";
                        self.pos += 2;
                        if both { Dir::Both } else { Dir::Either }
                    }
                    _ => d,
                }
            }
            _ => Dir::Either,
        };
        let Some((off, kw)) = self.next() else {
            return self.err(self.end_offset(), "expected host, net, port or portrange");
        };
        let prim = match kw {
            "host" => {
                let (o, a) = self.operand(off, "host", "an IPv4 or IPv6 address")?;
                let addr: IpAddr = a.parse().or_else(|_| {
                    self.err(
                        o,
                        format!(
                            "`{a}` is not an IPv4 or IPv6 address (host names are not resolved)"
                        ),
                    )
                })?;
                Expr::Net(
                    dir,
                    Net::parse(&addr.to_string()).map_err(|m| ParseError {
                        offset: o,
                        message: m,
                    })?,
                )
            }
            "net" => {
                let (o, a) = self.operand(off, "net", "a CIDR block such as 10.0.0.0/8")?;
                Expr::Net(
                    dir,
                    Net::parse(a).map_err(|m| ParseError {
                        offset: o,
                        message: m,
                    })?,
                )
            }
            "port" => {
                let (o, a) = self.operand(off, "port", "a port number")?;
                let n = port(a).map_or_else(
                    || self.err(o, format!("`{a}` is not a port number (0 to 65535)")),
                    Ok,
                )?;
                Expr::Port(dir, n, n)
            }
            "portrange" => {
                let (o, a) = self.operand(off, "portrange", "a range such as 1000-2000")?;
                let r = a
                    .split_once('-')
                    .and_then(|(l, h)| Some((port(l)?, port(h)?)));
                match r {
                    Some((l, h)) if l <= h => Expr::Port(dir, l, h),
                    _ => return self.err(o, format!("`{a}` is not a port range LOW-HIGH")),
                }
            }
            "and" | "or" | "&&" | "||" | ")" => {
                return self.err(off, format!("unexpected `{kw}`: expected a primitive"));
            }
            other => {
                return self.err(
                    off,
                    format!("unknown primitive `{other}`; expected host, net, port, portrange, tcp, udp, icmp, icmp6, ip, ip6, not or `(`"),
                );
            }
        };
        Ok(match proto {
            Some(p) => Expr::And(Box::new(Expr::Proto(p)), Box::new(prim)),
            None => prim,
        })
    }

    fn operand(
        &mut self,
        kw_off: usize,
        kw: &str,
        what: &str,
    ) -> Result<(usize, &'a str), ParseError> {
        match self.next() {
            Some((o, t)) if !matches!(t, "(" | ")" | "and" | "or" | "not" | "!" | "&&" | "||") => {
                Ok((o, t))
            }
            Some((o, t)) => self.err(
                o,
                format!("expected {what} after `{kw}` at offset {kw_off}, found `{t}`"),
            ),
            None => self.err(
                self.end_offset(),
                format!("expected {what} after `{kw}` at offset {kw_off}"),
            ),
        }
    }
}

fn port(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// What the filter needs of a packet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PacketView {
    pub(crate) v6: bool,
    pub(crate) src: IpAddr,
    pub(crate) dst: IpAddr,
    pub(crate) proto: u8,
    /// Ports for TCP and UDP.
    pub(crate) ports: Option<(u16, u16)>,
}

fn to_ip(a: [u8; 16], v6: bool) -> IpAddr {
    let v = std::net::Ipv6Addr::from(a);
    if v6 {
        IpAddr::V6(v)
    } else {
        v.to_ipv4_mapped().map_or(IpAddr::V6(v), IpAddr::V4)
    }
}

/// Decodes a stored frame for filtering; `None` for frames without IP.
pub(crate) fn view(link_type: u32, frame: &[u8]) -> Option<PacketView> {
    match decode(LinkType(link_type), frame) {
        Decoded::Ip(p) => {
            let v6 = p.ip.version == 6;
            let ports = match p.transport {
                Transport::Tcp(t) => Some((t.src_port, t.dst_port)),
                Transport::Udp(u) => Some((u.src_port, u.dst_port)),
                _ => None,
            };
            Some(PacketView {
                v6,
                src: to_ip(p.ip.src, v6),
                dst: to_ip(p.ip.dst, v6),
                proto: p.ip.proto,
                ports,
            })
        }
        _ => None,
    }
}

impl Expr {
    /// Whether a packet matches; packets without IP match only through `not`.
    pub(crate) fn matches(&self, p: Option<&PacketView>) -> bool {
        match self {
            Expr::Or(a, b) => a.matches(p) || b.matches(p),
            Expr::And(a, b) => a.matches(p) && b.matches(p),
            Expr::Not(a) => !a.matches(p),
            Expr::Net(dir, net) => p.is_some_and(|p| {
                let (s, d) = (net.contains(p.src), net.contains(p.dst));
                match dir {
                    Dir::Src => s,
                    Dir::Dst => d,
                    Dir::Either => s || d,
                    Dir::Both => s && d,
                }
            }),
            Expr::Port(dir, lo, hi) => p.and_then(|p| p.ports).is_some_and(|(s, d)| {
                let (s, d) = ((lo..=hi).contains(&&s), (lo..=hi).contains(&&d));
                match dir {
                    Dir::Src => s,
                    Dir::Dst => d,
                    Dir::Either => s || d,
                    Dir::Both => s && d,
                }
            }),
            Expr::Proto(pr) => p.is_some_and(|p| match pr {
                Proto::Tcp => p.proto == 6,
                Proto::Udp => p.proto == 17,
                Proto::Icmp => p.proto == 1,
                Proto::Icmp6 => p.proto == 58,
                Proto::Ip => !p.v6,
                Proto::Ip6 => p.v6,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(src: &str, sp: u16, dst: &str, dp: u16, proto: u8) -> PacketView {
        let src: IpAddr = src.parse().unwrap();
        PacketView {
            v6: src.is_ipv6(),
            src,
            dst: dst.parse().unwrap(),
            proto,
            ports: Some((sp, dp)),
        }
    }

    #[test]
    fn evaluates() {
        let p = pkt("10.0.0.1", 40000, "192.0.2.7", 443, 6);
        let m = |f: &str| parse(f).unwrap().matches(Some(&p));
        assert!(m("host 10.0.0.1"));
        assert!(m("src host 10.0.0.1"));
        assert!(!m("dst host 10.0.0.1"));
        assert!(m("net 192.0.2.0/24 and tcp port 443"));
        assert!(m("tcp and (port 80 or port 443)"));
        assert!(!m("udp"));
        assert!(m("not udp"));
        assert!(m("! udp && tcp"));
        assert!(m("src or dst port 443"));
        assert!(!m("src and dst port 443"));
        assert!(m("portrange 400-500"));
        assert!(m("ip"));
        assert!(!m("ip6"));
        assert!(!m("icmp or icmp6"));
        assert!(m("not (host 1.2.3.4 or port 22)"));
        assert!(!parse("tcp").unwrap().matches(None));
        assert!(parse("not tcp").unwrap().matches(None));
    }

    #[test]
    fn precise_errors() {
        let e = |f: &str| parse(f).unwrap_err();
        assert_eq!(e("host").offset, 4);
        assert!(
            e("host")
                .message
                .contains("expected an IPv4 or IPv6 address after `host`")
        );
        assert_eq!(e("tcp and (port 80").offset, 16);
        assert!(e("tcp and (port 80").message.contains("missing `)`"));
        assert_eq!(e("port 99999").offset, 5);
        assert_eq!(e("host example.com").offset, 5);
        assert_eq!(e("tcp udp").offset, 4);
        assert_eq!(e("bogus").offset, 0);
        assert_eq!(e("net 10.0.0.1/8").offset, 4);
        assert_eq!(e("tcp and").offset, 7);
        assert_eq!(e("host 1.2.3.4 $").offset, 13);
        assert_eq!(e("").offset, 0);
        assert!(parse(&"(".repeat(100)).is_err());
        assert!(parse(&"not ".repeat(100)).is_err());
    }
}
