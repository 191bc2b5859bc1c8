//! Checks of the configuration against this machine, read from sysfs and the file system
//! (no privileges needed): the interface and its RX queues, online CPUs, the data
//! directory, the token and capture files.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use crate::{Config, Error, Problems, Queues, SourceKind};

/// Where the machine's facts are read from (replaceable in tests).
#[derive(Debug, Clone)]
pub struct Host {
    /// `/sys/class/net`.
    pub sys_class_net: PathBuf,
    /// `/sys/devices/system/cpu/online`.
    pub cpu_online: PathBuf,
}

impl Host {
    /// The running system.
    pub fn system() -> Host {
        Host {
            sys_class_net: PathBuf::from("/sys/class/net"),
            cpu_online: PathBuf::from("/sys/devices/system/cpu/online"),
        }
    }

    /// True when the interface exists.
    pub fn has_interface(&self, name: &str) -> bool {
        !name.is_empty() && !name.contains('/') && self.sys_class_net.join(name).exists()
    }

    /// The number of RX queues of an interface (`/sys/class/net/IF/queues/rx-N`).
    pub fn rx_queues(&self, name: &str) -> io::Result<u32> {
        let mut n = 0;
        for e in fs::read_dir(self.sys_class_net.join(name).join("queues"))? {
            if e?.file_name().to_string_lossy().starts_with("rx-") {
                n += 1;
            }
        }
        Ok(n)
    }

    /// The online CPU ids.
    pub fn online_cpus(&self) -> io::Result<Vec<u32>> {
        parse_cpu_list(fs::read_to_string(&self.cpu_online)?.trim())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// Parses the kernel's CPU list format (`0-3,6,8-9`).
pub fn parse_cpu_list(s: &str) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let n = |t: &str| {
            t.parse::<u32>()
                .map_err(|_| format!("bad cpu list \"{s}\""))
        };
        match part.split_once('-') {
            Some((a, b)) => out.extend(n(a)?..=n(b)?),
            None => out.push(n(part)?),
        }
    }
    Ok(out)
}

/// Whether tapvault can create files in `dir` (creating it if needed): probes by creating
/// and removing a file, which is the only answer that holds for root and read-only mounts.
pub fn check_writable_dir(dir: &Path) -> Result<(), String> {
    match fs::metadata(dir) {
        Ok(m) if !m.is_dir() => return Err(format!("\"{}\" is not a directory", dir.display())),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // It will be created: its nearest existing ancestor must take a new directory.
            let mut anc = dir.parent();
            while let Some(a) = anc {
                if a.exists() {
                    return check_writable_dir(a).map_err(|e| {
                        format!(
                            "\"{}\" does not exist and cannot be created: {e}",
                            dir.display()
                        )
                    });
                }
                anc = a.parent();
            }
            return Err(format!("\"{}\" has no existing ancestor", dir.display()));
        }
        Err(e) => return Err(format!("cannot inspect \"{}\": {e}", dir.display())),
    }
    let probe = dir.join(format!(".tapvault-write-probe-{}", std::process::id()));
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(format!("\"{}\" is not writable: {e}", dir.display())),
    }
}

/// Reads a token file: trimmed, at least [`crate::MIN_TOKEN_LEN`] characters.
pub fn read_token(path: &Path) -> Result<String, Error> {
    let err = |reason: String| Error {
        key: "api.token_file".into(),
        reason,
    };
    let text = fs::read_to_string(path)
        .map_err(|e| err(format!("cannot read \"{}\": {e}", path.display())))?;
    let t = text.trim();
    if t.chars().count() < crate::MIN_TOKEN_LEN {
        return Err(err(format!(
            "the token in \"{}\" is shorter than {} characters",
            path.display(),
            crate::MIN_TOKEN_LEN
        )));
    }
    Ok(t.to_string())
}

/// Every problem `host` has with `cfg` (see [`Config::host_problems`]).
pub fn problems(cfg: &Config, host: &Host) -> Vec<Error> {
    let mut p = Problems::default();
    let c = &cfg.capture;
    if c.source != SourceKind::File && !c.interface.is_empty() {
        if !host.has_interface(&c.interface) {
            p.bad(
                "capture.interface",
                format!(
                    "no interface named \"{}\" on this host (see `ip link`)",
                    c.interface
                ),
            );
        } else {
            match host.rx_queues(&c.interface) {
                Ok(n) => {
                    if let Queues::List(l) = &c.queues
                        && let Some(q) = l.iter().find(|&&q| q >= n)
                    {
                        p.bad(
                            "capture.queues",
                            format!(
                                "queue {q} does not exist: {} has {n} RX queue{} (0 to {})",
                                c.interface,
                                if n == 1 { "" } else { "s" },
                                n.saturating_sub(1)
                            ),
                        );
                    }
                    let selected = match &c.queues {
                        Queues::All => n,
                        Queues::List(l) => l.len() as u32,
                    };
                    if c.source == SourceKind::AfXdp && c.workers > selected {
                        p.bad(
                            "capture.workers",
                            format!(
                                "{} workers for {selected} queue{}: each worker serves at least one queue",
                                c.workers,
                                if selected == 1 { "" } else { "s" }
                            ),
                        );
                    }
                }
                Err(e) => p.bad(
                    "capture.interface",
                    format!("cannot read the RX queues of {}: {e}", c.interface),
                ),
            }
        }
    }
    if !c.cpus.is_empty() {
        match host.online_cpus() {
            Ok(online) => {
                if let Some(cpu) = c.cpus.iter().find(|x| !online.contains(x)) {
                    p.bad(
                        "capture.cpus",
                        format!("cpu {cpu} is not online (online: {online:?})"),
                    );
                }
            }
            Err(e) => p.bad("capture.cpus", format!("cannot read the online CPUs: {e}")),
        }
    }
    if c.source == SourceKind::File
        && !c.file_path.as_os_str().is_empty()
        && let Err(e) = fs::File::open(&c.file_path)
    {
        p.bad(
            "capture.file_path",
            format!("cannot open \"{}\": {e}", c.file_path.display()),
        );
    }
    if cfg.storage.data_dir.is_absolute()
        && let Err(e) = check_writable_dir(&cfg.storage.data_dir)
    {
        p.bad("storage.data_dir", e);
    }
    if cfg.api.token.is_empty()
        && !cfg.api.token_file.as_os_str().is_empty()
        && let Err(e) = read_token(&cfg.api.token_file)
    {
        p.0.push(e);
    }
    p.0
}
