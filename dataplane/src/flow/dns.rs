//! DNS header and first-question parsing, for query/response latency and response codes.

/// What a DNS message says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DnsMsg {
    pub(crate) id: u16,
    pub(crate) is_response: bool,
    pub(crate) rcode: u8,
    pub(crate) answers: u16,
    pub(crate) qtype: u16,
    /// Dotted name of the first question; may be cut short if the snippet was.
    pub(crate) name: String,
}

/// Parses a DNS message from the start of a UDP payload (or a TCP payload, after its 2-byte
/// length prefix, when `tcp` is set). `None` if it does not look like DNS.
pub(crate) fn parse(buf: &[u8], tcp: bool) -> Option<DnsMsg> {
    let buf = if tcp { buf.get(2..)? } else { buf };
    let hdr = buf.get(..12)?;
    let id = u16::from_be_bytes([hdr[0], hdr[1]]);
    let flags = u16::from_be_bytes([hdr[2], hdr[3]]);
    let opcode = (flags >> 11) & 0xf;
    if opcode > 6 {
        return None;
    }
    let qdcount = u16::from_be_bytes([hdr[4], hdr[5]]);
    let answers = u16::from_be_bytes([hdr[6], hdr[7]]);
    let mut name = String::new();
    let mut qtype = 0;
    if qdcount > 0 {
        let mut i = 12;
        let mut labels = 0;
        while let Some(&len) = buf.get(i) {
            if len == 0 {
                i += 1;
                if let Some(t) = buf.get(i..i + 2) {
                    qtype = u16::from_be_bytes([t[0], t[1]]);
                }
                break;
            }
            if len & 0xc0 != 0 || labels > 127 {
                // A question name does not use compression; anything else is not DNS.
                return None;
            }
            let end = (i + 1 + len as usize).min(buf.len());
            if !name.is_empty() {
                name.push('.');
            }
            for &b in &buf[i + 1..end] {
                if b.is_ascii_graphic() {
                    name.push(b as char);
                } else {
                    name.push_str(&format!("\\{b:03}"));
                }
            }
            i = end;
            labels += 1;
        }
    }
    Some(DnsMsg {
        id,
        is_response: flags & 0x8000 != 0,
        rcode: (flags & 0xf) as u8,
        answers,
        qtype,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query() -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
        q
    }

    #[test]
    fn parses_query_and_nxdomain_response() {
        let q = parse(&query(), false).unwrap();
        assert_eq!((q.id, q.is_response, q.qtype), (0x1234, false, 1));
        assert_eq!(q.name, "example.com");
        let mut r = query();
        r[2] = 0x81;
        r[3] = 0x83;
        let r = parse(&r, false).unwrap();
        assert!(r.is_response);
        assert_eq!(r.rcode, 3);
    }

    #[test]
    fn tcp_framing_and_garbage() {
        let mut t = vec![0, 29];
        t.extend(query());
        assert_eq!(parse(&t, true).unwrap().name, "example.com");
        assert!(parse(&[1, 2, 3], false).is_none());
        for n in 0..query().len() {
            let _ = parse(&query()[..n], false);
        }
    }
}
