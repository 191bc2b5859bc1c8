//! A minimal HTTP/1.1 GET client for tapvault's own API, so that `tapvault status` and the
//! tests need no HTTP client library: one request per connection (`Connection: close`), the
//! whole response read into memory, chunked and `Content-Length` bodies decoded. Not a
//! general client: no TLS, redirects, keep-alive or content codings.
//!
//! ```no_run
//! # fn main() -> Result<(), tapvault_api::client::Error> {
//! use std::time::Duration;
//!
//! let addr = "127.0.0.1:7480".parse().expect("an address");
//! let r = tapvault_api::client::get(addr, "/api/v1/status", None, Duration::from_secs(30))?;
//! assert_eq!(r.status, 200);
//! # Ok(()) }
//! ```

use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

/// How long connecting may take: the API runs on this host or next to it, so one that does
/// not accept within this is down, not slow.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors of [`get`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request target or token would not make a valid request line or header.
    #[error("invalid request: {reason}")]
    InvalidRequest {
        /// What is wrong.
        reason: String,
    },
    /// Connecting failed (nothing listening, or no answer within [`CONNECT_TIMEOUT`]).
    #[error("cannot connect to {addr}")]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Sending the request or reading the response failed (including a read time-out).
    #[error("HTTP exchange with {addr} failed")]
    Io {
        /// The address.
        addr: SocketAddr,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The response is not well-formed HTTP/1.1.
    #[error("malformed HTTP response from {addr}: {reason}")]
    Malformed {
        /// The address.
        addr: SocketAddr,
        /// What is wrong.
        reason: String,
    },
}

/// A response: status code, header fields and the decoded body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header fields in the order received, names in lower case, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body, without any transfer coding.
    pub body: Vec<u8>,
}

impl Response {
    /// The value of the first header field called `name` (any case), if there is one.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `GET target` to `addr`, with `Authorization: Bearer <token>` when a token is given,
/// and returns the whole response. `target` is an origin-form request target (`/path?query`,
/// already percent-encoded); `read_timeout` bounds each wait for data from the server.
pub fn get(
    addr: SocketAddr,
    target: &str,
    token: Option<&str>,
    read_timeout: Duration,
) -> Result<Response, Error> {
    let request = request(addr, target, token)?;
    let mut s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|source| Error::Connect { addr, source })?;
    let io = |source| Error::Io { addr, source };
    s.set_read_timeout(Some(read_timeout)).map_err(io)?;
    s.write_all(request.as_bytes()).map_err(io)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(io)?;
    parse_response(&raw).map_err(|reason| Error::Malformed { addr, reason })
}

/// The request's bytes; refuses what would break the request line or a header (whitespace
/// or control characters), as those would let a caller's input forge another header.
fn request(addr: SocketAddr, target: &str, token: Option<&str>) -> Result<String, Error> {
    let unsafe_char = |s: &str| s.bytes().any(|b| b.is_ascii_control() || b == b' ');
    if !target.starts_with('/') || unsafe_char(target) {
        return Err(Error::InvalidRequest {
            reason: format!(
                "the target `{}` must start with `/` and hold no spaces or control characters",
                target.escape_debug()
            ),
        });
    }
    let auth = match token {
        Some(t) if t.is_empty() || unsafe_char(t) => {
            return Err(Error::InvalidRequest {
                reason: "the bearer token must be non-empty, without spaces or control characters"
                    .into(),
            });
        }
        Some(t) => format!("Authorization: Bearer {t}\r\n"),
        None => String::new(),
    };
    Ok(format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    ))
}

/// Parses a complete response (everything the server sent before closing).
fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let end = find(raw, b"\r\n\r\n").ok_or("no end of the header (a blank line)")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "the header is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or_default(), parts.next());
    let status = match code {
        Some(c)
            if version.starts_with("HTTP/1.")
                && c.len() == 3
                && c.bytes().all(|b| b.is_ascii_digit()) =>
        {
            c.parse::<u16>().ok()
        }
        _ => None,
    }
    .filter(|c| (100..=599).contains(c))
    .ok_or_else(|| format!("bad status line `{}`", status_line.escape_debug()))?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .filter(|(n, _)| !n.is_empty() && !n.contains([' ', '\t']))
            .ok_or_else(|| format!("bad header line `{}`", line.escape_debug()))?;
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut r = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let rest = &raw[end + 4..];
    r.body = match (r.header("transfer-encoding"), r.header("content-length")) {
        // Chunked wins over a Content-Length (RFC 9112, section 6.3).
        (Some(te), _) if te.eq_ignore_ascii_case("chunked") => dechunk(rest)?,
        (Some(te), _) => return Err(format!("unsupported transfer coding `{te}`")),
        (None, Some(len)) => {
            let len: usize = len
                .parse()
                .map_err(|_| format!("bad Content-Length `{len}`"))?;
            if rest.len() < len {
                return Err(format!(
                    "the body ends after {} of its {len} bytes",
                    rest.len()
                ));
            }
            rest[..len].to_vec()
        }
        // Neither: the body runs to the end of the connection.
        (None, None) => rest.to_vec(),
    };
    Ok(r)
}

/// Decodes a chunked body: `<hex size>[;extensions]\r\n<data>\r\n`, repeated, ending with a
/// zero-size chunk (trailer fields after it are ignored).
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = find(rest, b"\r\n").ok_or("the chunked body ends inside a chunk-size line")?;
        let line =
            std::str::from_utf8(&rest[..eol]).map_err(|_| "a chunk-size line is not text")?;
        let hex = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(hex, 16)
            .ok()
            .filter(|_| !hex.starts_with('+'))
            .ok_or_else(|| format!("bad chunk size `{}`", line.escape_debug()))?;
        if size == 0 {
            return Ok(out);
        }
        let data = &rest[eol + 2..];
        if data.len() < size {
            return Err(format!(
                "the chunked body ends inside a chunk ({} of {size} bytes)",
                data.len()
            ));
        }
        if data.get(size..size + 2) != Some(b"\r\n") {
            return Err("a chunk is not followed by CRLF".into());
        }
        out.extend_from_slice(&data[..size]);
        rest = &data[size + 2..];
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn content_length_body() {
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}",
        )
        .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("Content-Length"), Some("7"));
        assert_eq!(r.body, b"{\"a\":1}");
        // Bytes past the length are not the body.
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA").unwrap();
        assert_eq!(r.body, b"ok");
        let e = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort").unwrap_err();
        assert_eq!(e, "the body ends after 5 of its 10 bytes");
        let e = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n").unwrap_err();
        assert_eq!(e, "bad Content-Length `-1`");
    }

    #[test]
    fn chunked_body() {
        let r = parse_response(
            b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: Chunked\r\n\r\n\
              5\r\nhello\r\n7;name=value\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.body, b"hello, world");
        // A body holding CRLF and a chunk size above 9.
        let r =
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\ne\r\nab\r\n\r\ncdefghij\r\n0\r\n\r\n")
                .unwrap();
        assert_eq!(r.body, b"ab\r\n\r\ncdefghij");
        // Chunked wins over Content-Length.
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, b"x");
        for (raw, want) in [
            (
                &b"5\r\nhel"[..],
                "the chunked body ends inside a chunk (3 of 5 bytes)",
            ),
            (b"5\r\nhelloXY0\r\n\r\n", "a chunk is not followed by CRLF"),
            (b"zz\r\n", "bad chunk size `zz`"),
            (b"+5\r\nhello\r\n0\r\n\r\n", "bad chunk size `+5`"),
            (
                b"5\r\nhello\r\n",
                "the chunked body ends inside a chunk-size line",
            ),
            (
                b"ffffffffffffffffffff\r\n",
                "bad chunk size `ffffffffffffffffffff`",
            ),
        ] {
            let mut resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            resp.extend_from_slice(raw);
            assert_eq!(parse_response(&resp).unwrap_err(), want);
        }
    }

    #[test]
    fn malformed_heads() {
        for (raw, want) in [
            (
                &b"HTTP/1.1 200 OK\r\n"[..],
                "no end of the header (a blank line)",
            ),
            (
                b"HTTP/1.1 20 OK\r\n\r\n",
                "bad status line `HTTP/1.1 20 OK`",
            ),
            (
                b"HTTP/1.1 +20 OK\r\n\r\n",
                "bad status line `HTTP/1.1 +20 OK`",
            ),
            (b"SSH-2.0 x\r\n\r\n", "bad status line `SSH-2.0 x`"),
            (
                b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
                "bad header line `no colon`",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                "unsupported transfer coding `gzip`",
            ),
        ] {
            assert_eq!(parse_response(raw).unwrap_err(), want);
        }
        // Without a length the body runs to the end.
        let r = parse_response(b"HTTP/1.0 200 OK\r\n\r\nall of it").unwrap();
        assert_eq!(r.body, b"all of it");
    }

    #[test]
    fn request_is_checked() {
        let addr: SocketAddr = "[::1]:7480".parse().unwrap();
        assert_eq!(
            request(addr, "/api/v1/status?x=1", Some("t0k")).unwrap(),
            "GET /api/v1/status?x=1 HTTP/1.1\r\nHost: [::1]:7480\r\n\
             Authorization: Bearer t0k\r\nConnection: close\r\n\r\n"
        );
        for (target, token) in [
            ("api/v1/status", None),
            ("/a b", None),
            ("/a\r\nX-Evil: 1", None),
            ("/", Some("t\r\nX-Evil: 1")),
            ("/", Some("")),
        ] {
            assert!(
                matches!(
                    request(addr, target, token),
                    Err(Error::InvalidRequest { .. })
                ),
                "{target:?} {token:?}"
            );
        }
    }

    /// A real exchange over loopback: what the server receives, and the answer decoded.
    #[test]
    fn get_over_loopback() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while find(&req, b"\r\n\r\n").is_none() {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "the client closed before the request ended");
                req.extend_from_slice(&buf[..n]);
            }
            s.write_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            )
            .unwrap();
            String::from_utf8(req).unwrap()
        });
        let r = get(addr, "/metrics", Some("secret"), Duration::from_secs(10)).unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"abc"[..]));
        let req = server.join().unwrap();
        assert!(req.starts_with("GET /metrics HTTP/1.1\r\n"), "{req}");
        assert!(
            req.contains("\r\nAuthorization: Bearer secret\r\n"),
            "{req}"
        );
        // Nothing listens there any more.
        assert!(matches!(
            get(addr, "/", None, Duration::from_secs(1)),
            Err(Error::Connect { .. })
        ));
    }
}
