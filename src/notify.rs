//! systemd's readiness protocol (`sd_notify`): datagrams such as `READY=1` or `WATCHDOG=1`
//! sent to the socket named by `$NOTIFY_SOCKET` (a path, or `@name` in the abstract
//! namespace). Without `$NOTIFY_SOCKET` (not started by systemd with `Type=notify`) every
//! call does nothing and returns `Ok(false)`.
//!
//! `tapvault capture` calls [`ready`] once the XDP program is attached and the sockets are
//! bound, then [`watchdog`] every [`watchdog_interval`] from the loop that proves progress,
//! and [`stopping`] when it begins to shut down.

use std::{
    env,
    ffi::OsStr,
    io,
    os::{
        linux::net::SocketAddrExt,
        unix::{
            ffi::OsStrExt,
            net::{SocketAddr, UnixDatagram},
        },
    },
    time::Duration,
};

/// Sends `state` (newline-separated `KEY=VALUE` assignments) to the socket `addr` names
/// (`$NOTIFY_SOCKET`'s syntax).
pub(crate) fn send_to(addr: &OsStr, state: &str) -> io::Result<()> {
    let bytes = addr.as_bytes();
    let sa = match bytes.first() {
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..])?,
        Some(b'/') => SocketAddr::from_pathname(std::path::Path::new(addr))?,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("NOTIFY_SOCKET {addr:?} is neither a path nor an abstract name"),
            ));
        }
    };
    let sock = UnixDatagram::unbound()?;
    let n = sock.send_to_addr(state.as_bytes(), &sa)?;
    if n != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short notify datagram",
        ));
    }
    Ok(())
}

/// Sends `state` to `$NOTIFY_SOCKET`; `Ok(false)` when it is unset.
pub(crate) fn notify(state: &str) -> io::Result<bool> {
    match env::var_os("NOTIFY_SOCKET") {
        Some(addr) if !addr.is_empty() => send_to(&addr, state).map(|()| true),
        _ => Ok(false),
    }
}

/// `READY=1`: start-up is complete (capture attached, API listening).
pub(crate) fn ready() -> io::Result<bool> {
    notify("READY=1")
}

/// `STATUS=...`: a one-line status `systemctl status` shows.
pub(crate) fn status(text: &str) -> io::Result<bool> {
    notify(&format!("STATUS={}", text.replace('\n', " ")))
}

/// `WATCHDOG=1`: still alive and making progress.
pub(crate) fn watchdog() -> io::Result<bool> {
    notify("WATCHDOG=1")
}

/// `STOPPING=1`: shutdown has begun.
pub(crate) fn stopping() -> io::Result<bool> {
    notify("STOPPING=1")
}

/// How often to call [`watchdog`]: half of `$WATCHDOG_USEC` (systemd's recommendation), or
/// `None` when no watchdog is armed for this process (`$WATCHDOG_PID`, when set, must be
/// ours).
pub(crate) fn watchdog_interval() -> Option<Duration> {
    interval_from(
        env::var("WATCHDOG_USEC").ok().as_deref(),
        env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn interval_from(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    if let Some(p) = pid
        && p.trim().parse::<u32>().ok() != Some(me)
    {
        return None;
    }
    let us: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    Some(Duration::from_micros(us / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("tapvault-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        send_to(path.as_os_str(), "READY=1").unwrap();
        send_to(path.as_os_str(), "STATUS=capturing on eth1").unwrap();
        let mut buf = [0u8; 256];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STATUS=capturing on eth1");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        let name = format!("tapvault-notify-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
            .unwrap();
        send_to(OsStr::new(&format!("@{name}")), "WATCHDOG=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }

    #[test]
    fn bad_addresses_fail() {
        assert!(send_to(OsStr::new("relative/path"), "READY=1").is_err());
        let missing = format!("/nonexistent-dir-{}/notify", std::process::id());
        assert!(send_to(OsStr::new(&missing), "READY=1").is_err());
    }

    #[test]
    fn watchdog_intervals() {
        assert_eq!(
            interval_from(Some("30000000"), None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            interval_from(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            interval_from(Some("30000000"), Some("8"), 7),
            None,
            "another process's watchdog"
        );
        assert_eq!(interval_from(None, None, 7), None);
        assert_eq!(interval_from(Some("0"), None, 7), None);
        assert_eq!(interval_from(Some("x"), None, 7), None);
    }
}
