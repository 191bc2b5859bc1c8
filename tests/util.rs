use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

/// A network namespace or a link a test made, deleted on drop, a failing test's included.
/// Tests only ever guard names they created (unique per process and test).
pub(crate) struct IpGuard {
    /// `netns` or `link`.
    kind: &'static str,
    pub(crate) name: String,
}

impl IpGuard {
    /// Deletes namespace `name` on drop (with the links inside it).
    pub(crate) fn netns(name: impl Into<String>) -> IpGuard {
        IpGuard {
            kind: "netns",
            name: name.into(),
        }
    }

    /// Deletes link `name` (and a veth's peer with it) on drop.
    pub(crate) fn link(name: impl Into<String>) -> IpGuard {
        IpGuard {
            kind: "link",
            name: name.into(),
        }
    }
}

impl Drop for IpGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args([self.kind, "del", &self.name])
            .output();
    }
}

/// A fresh scratch directory under the temporary directory, removed on drop when the test
/// passed, kept (and named on stderr) for inspection when it failed.
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Scratch {
    pub(crate) fn new(tag: &str) -> Scratch {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "tapvault-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("scratch dir");
        Scratch(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} for inspection", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The `shared/` directory beside the repository, or `None` (after printing why) when it is
/// missing and we are not in CI. In CI a missing `shared/` is a failure.
pub(crate) fn shared_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    if dir.join("testdata/captures").is_dir() {
        return Some(dir);
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but {} is missing", dir.display());
    }
    eprintln!(
        "SKIPPED: {} not found (and CI is unset); differential tests need it",
        dir.display()
    );
    None
}

/// Whether the tests run as root (the real user id in `/proc/self/status`).
pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// False, after saying why, when a privileged test must skip: not root and `CI` unset. In CI
/// it is always true, so a privileged test runs there and fails if it cannot. `what` names
/// the test and what it needs root for.
pub(crate) fn privileged(what: &str) -> bool {
    if is_root() || std::env::var_os("CI").is_some() {
        return true;
    }
    eprintln!("SKIPPED: {what} needs root and CI is unset; run the tests as root");
    false
}

/// Runs `tapvault analyze FILE --json` with extra arguments; returns the records.
pub(crate) fn analyze_json(file: &Path, extra: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_tapvault"))
        .arg("analyze")
        .arg(file)
        .args(["--json", "--no-progress"])
        .args(extra)
        .output()
        .expect("run tapvault");
    assert!(
        out.status.success(),
        "tapvault analyze {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8 output")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON record per line"))
        .collect()
}

/// tshark's `frame.time_epoch` string ("1285862902.700271000") as ns.
pub(crate) fn epoch_ns(s: &str) -> i64 {
    let (secs, frac) = s.split_once('.').unwrap_or((s, "0"));
    let mut frac = frac.to_string();
    frac.truncate(9);
    while frac.len() < 9 {
        frac.push('0');
    }
    secs.parse::<i64>().expect("seconds") * 1_000_000_000 + frac.parse::<i64>().expect("ns")
}

/// Writes a classic pcap (microseconds, Ethernet) of `frames` (timestamp ns, bytes).
pub(crate) fn write_pcap(path: &Path, frames: impl IntoIterator<Item = (i64, Vec<u8>)>) {
    use std::io::Write;
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).expect("create pcap"));
    let mut hdr = Vec::new();
    hdr.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    hdr.extend_from_slice(&2u16.to_le_bytes());
    hdr.extend_from_slice(&4u16.to_le_bytes());
    hdr.extend_from_slice(&[0; 8]);
    hdr.extend_from_slice(&65535u32.to_le_bytes());
    hdr.extend_from_slice(&1u32.to_le_bytes());
    w.write_all(&hdr).expect("write");
    for (ts, data) in frames {
        let mut rec = Vec::with_capacity(16);
        rec.extend_from_slice(&((ts / 1_000_000_000) as u32).to_le_bytes());
        rec.extend_from_slice(&((ts % 1_000_000_000 / 1000) as u32).to_le_bytes());
        rec.extend_from_slice(&(data.len() as u32).to_le_bytes());
        rec.extend_from_slice(&(data.len() as u32).to_le_bytes());
        w.write_all(&rec).expect("write");
        w.write_all(&data).expect("write");
    }
    w.flush().expect("flush");
}

/// An Ethernet/IPv4/TCP frame (no options, checksums zero).
#[expect(
    clippy::too_many_arguments,
    reason = "a TCP segment has this many fields"
)]
pub(crate) fn tcp4_frame(
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
    let total = 20 + 20 + payload.len();
    f.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        6,
        0,
        0,
    ]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&ack.to_be_bytes());
    f.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// Runs `tapvault` with arguments; returns (success, stdout, stderr).
pub(crate) fn run(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tapvault"))
        .args(args)
        .output()
        .expect("run tapvault");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// tshark's path, or `None` (after printing why) when it is missing and CI is unset. The
/// test command installs it; in CI its absence is a failure.
pub(crate) fn tshark() -> Option<PathBuf> {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join("tshark");
        if p.exists() {
            return Some(p);
        }
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but tshark is not installed (scripts/setup.sh installs it)");
    }
    eprintln!("SKIPPED: tshark is not installed; run scripts/test.sh to install it");
    None
}

/// Runs a command (stdin closed) and panics with its stderr unless it succeeds.
pub(crate) fn sh(args: &[&str]) {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
