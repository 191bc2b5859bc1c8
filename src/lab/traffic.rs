//! `tapvault traffic`: the two ends of the demo's TCP scenarios, run by the demo inside its
//! network namespaces (`ip netns exec NS tapvault traffic server|client ...`). Plain kernel
//! TCP through `std::net`, with `socket2` for the socket options std lacks (SO_RCVBUF before
//! connect, keep-alive timers).
//!
//! Each scenario has its own server port, so a flow record says which scenario it belongs to:
//! [`RR_PORT`], [`BULK_PORT`], [`SLOW_PORT`], [`KEEPALIVE_PORT`], and [`CLOSED_PORT`] where
//! nothing listens. `tests/netns.rs` relies on these numbers.

use std::{
    io::{self, BufRead, Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};

/// Short request/response connections.
pub(crate) const RR_PORT: u16 = 5001;
/// One bulk download through the bottleneck.
pub(crate) const BULK_PORT: u16 = 5002;
/// A fast sender into a slow reader with a small receive buffer.
pub(crate) const SLOW_PORT: u16 = 5003;
/// An idle connection held open with 1 s keep-alives.
pub(crate) const KEEPALIVE_PORT: u16 = 5004;
/// Nothing listens here: connecting is refused (SYN, RST).
pub(crate) const CLOSED_PORT: u16 = 5009;

/// Bytes of the bulk download.
pub(crate) const BULK_BYTES: u64 = 3 << 20;
/// Bytes the slow reader receives.
const SLOW_BYTES: u64 = 48 << 10;
/// The slow reader's SO_RCVBUF (the kernel doubles it).
pub(crate) const SLOW_RCVBUF: usize = 4096;
/// Request/response connections: (use IPv6, response bytes).
const RR: [(bool, u64); 6] = [
    (false, 300),
    (false, 2_000),
    (true, 5_000),
    (false, 12_000),
    (true, 700),
    (false, 40_000),
];

const IO_TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Arguments of the hidden `traffic` subcommand.
#[derive(clap::Args)]
pub(crate) struct TrafficArgs {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Listen on the scenario ports of each address; print "ready" once listening; exit when
    /// stdin closes (the demo holds the other end) or at the deadline.
    Server {
        /// Addresses to listen on.
        #[arg(long = "listen", required = true)]
        listen: Vec<IpAddr>,
        /// Exit after this many seconds whatever happens.
        #[arg(long, default_value_t = 60)]
        deadline: u64,
    },
    /// Run every scenario against the server once, printing one JSON line per connection.
    Client {
        /// The server's IPv4 address.
        #[arg(long)]
        server4: Ipv4Addr,
        /// The server's IPv6 address.
        #[arg(long)]
        server6: Ipv6Addr,
        /// How long the slow reader and the idle keep-alive connection last.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
}

/// Runs `tapvault traffic ...`.
pub(crate) fn run(a: TrafficArgs) -> Result<()> {
    match a.mode {
        Mode::Server { listen, deadline } => server(&listen, deadline),
        Mode::Client {
            server4,
            server6,
            seconds,
        } => client(server4, server6, seconds),
    }
}

fn server(addrs: &[IpAddr], deadline: u64) -> Result<()> {
    for &ip in addrs {
        for port in [RR_PORT, BULK_PORT, SLOW_PORT, KEEPALIVE_PORT] {
            let l = TcpListener::bind((ip, port))
                .with_context(|| format!("cannot listen on {}", SocketAddr::new(ip, port)))?;
            thread::spawn(move || {
                for s in l.incoming().flatten() {
                    thread::spawn(move || {
                        if let Err(e) = serve(port, s) {
                            eprintln!("traffic server: port {port}: {e}");
                        }
                    });
                }
            });
        }
    }
    // The demo holds our stdin: when it closes (the demo is done, or died), so do we.
    thread::spawn(|| {
        let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
        std::process::exit(0);
    });
    let mut out = io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    drop(out);
    thread::sleep(Duration::from_secs(deadline));
    eprintln!("traffic server: deadline of {deadline} s reached");
    std::process::exit(0);
}

/// Reads one request line ("<number>\n"), at most 64 bytes.
fn read_request(s: &mut TcpStream) -> io::Result<u64> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 64 {
        if s.read(&mut b)? == 0 {
            break;
        }
        if b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
    }
    std::str::from_utf8(&line)
        .ok()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad request {line:?}")))
}

fn write_bytes(s: &mut TcpStream, mut n: u64) -> io::Result<()> {
    let chunk: Vec<u8> = (0..65536u32).map(|i| b'a' + (i % 26) as u8).collect();
    while n > 0 {
        let k = n.min(chunk.len() as u64) as usize;
        s.write_all(&chunk[..k])?;
        n -= k as u64;
    }
    Ok(())
}

/// Reads until the peer's FIN.
fn drain(s: &mut TcpStream) -> io::Result<u64> {
    io::copy(s, &mut io::sink())
}

fn serve(port: u16, mut s: TcpStream) -> io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    s.set_write_timeout(Some(Duration::from_secs(60)))?;
    let n = read_request(&mut s)?;
    if port == KEEPALIVE_PORT {
        // Answer, then stay idle until the client closes: its keep-alives keep it alive.
        s.write_all(b"ok\n")?;
        drain(&mut s)?;
        return Ok(());
    }
    write_bytes(&mut s, n)?;
    s.shutdown(Shutdown::Write)?;
    drain(&mut s)?;
    Ok(())
}

/// One line of the client's report.
fn report(scenario: &str, s: Option<&TcpStream>, remote: SocketAddr, bytes: u64, t: Instant) {
    let local = s
        .and_then(|s| s.local_addr().ok())
        .map_or_else(|| "-".to_string(), |a| a.to_string());
    println!(
        "{}",
        serde_json::json!({
            "scenario": scenario,
            "local": local,
            "remote": remote.to_string(),
            "bytes": bytes,
            "ms": t.elapsed().as_millis() as u64,
        })
    );
}

fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .with_context(|| format!("cannot connect to {addr}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// Sends the request, reads the whole response, closes after the server's FIN.
fn request(s: &mut TcpStream, n: u64) -> Result<u64> {
    writeln!(s, "{n}")?;
    let got = drain(s)?;
    if got != n {
        bail!("expected {n} bytes, got {got}");
    }
    Ok(got)
}

fn client(v4: Ipv4Addr, v6: Ipv6Addr, seconds: u64) -> Result<()> {
    let ka_addr = SocketAddr::new(v4.into(), KEEPALIVE_PORT);
    let hold = Duration::from_secs(seconds);
    let ka = thread::spawn(move || keepalive(ka_addr, hold));

    // (a) short request/response connections, IPv4 and IPv6.
    for (six, n) in RR {
        let ip: IpAddr = if six { v6.into() } else { v4.into() };
        let addr = SocketAddr::new(ip, RR_PORT);
        let t = Instant::now();
        let mut s = connect(addr)?;
        let got = request(&mut s, n).with_context(|| format!("request to {addr}"))?;
        report("request_response", Some(&s), addr, got, t);
        drop(s);
        thread::sleep(Duration::from_millis(30));
    }

    // (d) a closed port: SYN, RST.
    let addr = SocketAddr::new(v4.into(), CLOSED_PORT);
    let t = Instant::now();
    match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            report("refused", None, addr, 0, t)
        }
        Err(e) => bail!("connect to closed port {addr}: expected refused, got {e}"),
        Ok(_) => bail!("connect to closed port {addr} succeeded"),
    }

    // (b) bulk download through the bottleneck.
    let addr = SocketAddr::new(v4.into(), BULK_PORT);
    let t = Instant::now();
    let mut s = connect(addr)?;
    let got = request(&mut s, BULK_BYTES).context("bulk download")?;
    report("bulk", Some(&s), addr, got, t);
    drop(s);

    // (c) a slow reader: small receive buffer, set before connect so the window (and its
    // scale) is small from the SYN on; read a little, pause, repeat.
    let addr = SocketAddr::new(v4.into(), SLOW_PORT);
    let t = Instant::now();
    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    sock.set_recv_buffer_size(SLOW_RCVBUF)?;
    sock.connect_timeout(&addr.into(), CONNECT_TIMEOUT)
        .with_context(|| format!("cannot connect to {addr}"))?;
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    writeln!(s, "{SLOW_BYTES}")?;
    // Pace the reads (4 KiB each) so that the whole transfer lasts about `seconds`.
    let reads = SLOW_BYTES / 4096;
    let pause = (hold / reads as u32).clamp(Duration::from_millis(150), Duration::from_millis(600));
    let mut buf = [0u8; 4096];
    let mut got = 0u64;
    'paced: loop {
        thread::sleep(pause);
        let mut filled = 0;
        while filled < buf.len() {
            let k = s.read(&mut buf[filled..])?;
            if k == 0 {
                got += filled as u64;
                break 'paced;
            }
            filled += k;
        }
        got += filled as u64;
    }
    if got != SLOW_BYTES {
        bail!("slow reader: expected {SLOW_BYTES} bytes, got {got}");
    }
    report("slow_reader", Some(&s), addr, got, t);
    drop(s);

    // (e) the idle keep-alive connection, started first, ends about now.
    ka.join()
        .map_err(|_| anyhow::anyhow!("keep-alive thread panicked"))??;
    Ok(())
}

fn keepalive(addr: SocketAddr, hold: Duration) -> Result<()> {
    let t = Instant::now();
    let mut s = connect(addr)?;
    SockRef::from(&s).set_tcp_keepalive(
        &TcpKeepalive::new()
            .with_time(Duration::from_secs(1))
            .with_interval(Duration::from_secs(1)),
    )?;
    writeln!(s, "0")?;
    let mut r = io::BufReader::new(s.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    if line != "ok\n" {
        bail!("keep-alive: unexpected answer {line:?}");
    }
    // Idle: only the kernel's keep-alive probes (and their ACKs) cross now.
    thread::sleep(hold);
    s.shutdown(Shutdown::Write)?;
    drain(&mut s)?;
    report("keepalive", Some(&s), addr, 0, t);
    Ok(())
}
