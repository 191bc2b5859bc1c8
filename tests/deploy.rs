//! Deployment artefacts checked by their own tools (systemd-analyze, kubernetes-validate,
//! hadolint), the DaemonSet's configuration, and `tapvault check` on good and bad
//! configurations (over a veth it creates, as root).

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use serde_json::Value;
use tapvault_config::Config;

use crate::util::{IpGuard, Scratch};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A tool's path, or `None` after saying why when it is missing and CI is unset (setup.sh
/// installs it; in CI its absence fails the test).
fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = [PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")];
    for dir in std::env::split_paths(&path).chain(extra) {
        let p = dir.join(name);
        if p.is_file() {
            return Some(p);
        }
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but `{name}` is not installed (scripts/setup.sh installs it)");
    }
    eprintln!("SKIPPED: `{name}` is not installed; run scripts/setup.sh");
    None
}

static SEQ: AtomicU32 = AtomicU32::new(0);

#[test]
fn systemd_unit_verifies() {
    let Some(analyze) = tool("systemd-analyze") else {
        return;
    };
    let dir = Scratch::new("unit");
    let unit = std::fs::read_to_string(repo().join("systemd/tapvault.service")).unwrap();
    // verify wants the commands to exist: point them at the binary under test.
    assert!(unit.contains(
        "ExecStart=/usr/local/bin/tapvault capture --config /etc/tapvault/tapvault.toml"
    ));
    let unit = unit.replace("/usr/local/bin/tapvault", env!("CARGO_BIN_EXE_tapvault"));
    let path = dir.0.join("tapvault.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // verify exits 0 on unknown keys and unparsable values, printing them: any line about
    // our unit is a failure.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("tapvault.service"))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify:\n{stderr}"
    );
    // And it does catch mistakes, so the check above means something.
    let broken = std::fs::read_to_string(&path)
        .unwrap()
        .replace("AF_XDP", "AF_NOPE");
    std::fs::write(&path, broken).unwrap();
    let out = Command::new(tool("systemd-analyze").unwrap())
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("AF_NOPE"));
}

#[test]
fn kubernetes_manifests_validate() {
    let Some(kv) = tool("kubernetes-validate") else {
        return;
    };
    let dir = repo().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    // Schemas are bundled with kubernetes-validate: no network needed.
    let out = Command::new(kv)
        .args(["--kubernetes-version", "1.30.0", "--strict"])
        .args(&files)
        .output()
        .expect("run kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubernetes-validate:\n{text}");
    assert_eq!(text.matches("passed").count(), files.len(), "{text}");
}

#[test]
fn containerfile_lints() {
    let Some(hadolint) = tool("hadolint") else {
        return;
    };
    let out = Command::new(hadolint)
        .arg(repo().join("deploy/Containerfile"))
        .output()
        .expect("run hadolint");
    assert!(
        out.status.success(),
        "hadolint:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The DaemonSet's configuration is valid, matches its mounts, and its retention stays
/// below the hostPath size limit.
#[test]
fn daemonset_config_fits_its_volume() {
    let cm = std::fs::read_to_string(repo().join("deploy/kubernetes/configmap.yaml")).unwrap();
    let start = cm
        .find("tapvault.toml: |\n")
        .expect("configmap holds tapvault.toml")
        + 17;
    let toml: String = cm[start..]
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    let cfg = Config::load_str(
        Some((Path::new("configmap.yaml"), &toml)),
        std::iter::empty::<(String, String)>(),
        &[],
    )
    .unwrap_or_else(|e| panic!("the ConfigMap's tapvault.toml is invalid: {e}"));
    assert_eq!(cfg.capture.source, tapvault_config::SourceKind::AfPacket);
    assert!(!cfg.api.listen.ip().is_loopback());
    let ds = std::fs::read_to_string(repo().join("deploy/kubernetes/daemonset.yaml")).unwrap();
    let token_dir = cfg.api.token_file.parent().unwrap().display().to_string();
    assert!(
        ds.contains(&format!("mountPath: {token_dir}")),
        "token file {token_dir} is mounted"
    );
    assert!(ds.contains(&format!("containerPort: {}", cfg.api.listen.port())));
    assert!(ds.contains(&format!("mountPath: {}", cfg.storage.data_dir.display())));
    // The documented hostPath budget.
    let budget: u64 = 20 << 30;
    assert!(
        ds.contains("20Gi"),
        "the DaemonSet documents the 20Gi budget"
    );
    let r = &cfg.storage.retention;
    let used = r.pcap.max_bytes().expect("pcap limit") + r.flows.max_bytes().expect("flows limit");
    assert!(
        used + cfg.storage.min_free.get() <= budget,
        "retention {used} + min_free exceeds the {budget}-byte volume"
    );
}

fn check(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tapvault"))
        .arg("check")
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run tapvault check");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn check_rejects_bad_configs() {
    let dir = Scratch::new("check-bad");
    let data = dir.0.join("data");
    let cases: [(&str, &str); 5] = [
        (
            "[capture]\ninterface = \"lo\"\numem_frames = 5000\n",
            "[FAIL] config: capture.umem_frames",
        ),
        (
            "[capture]\ninterface = \"lo\"\nbogus = 1\n",
            "[FAIL] config: capture.bogus",
        ),
        (
            "[capture]\ninterface = \"lo\"\n[api]\nlisten = \"0.0.0.0:8080\"\n",
            "[FAIL] config: api.listen",
        ),
        (
            "[capture]\ninterface = \"tvnosuchif0\"\n",
            "[FAIL] config: capture.interface",
        ),
        ("[capture\n", "[FAIL] config: file"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let f = dir.0.join(format!("bad{i}.toml"));
        std::fs::write(&f, text).unwrap();
        let (ok, out) = check(&[
            "--config",
            f.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ]);
        assert!(!ok, "check accepted {text}:\n{out}");
        assert!(out.contains(want), "expected `{want}` for {text}:\n{out}");
        assert!(out.contains("result: ") && out.contains("problem"), "{out}");
    }
    let (ok, out) = check(&["--config", "/nonexistent/tapvault.toml"]);
    assert!(
        !ok && out.contains("cannot read configuration file"),
        "{out}"
    );
    // An environment override is applied (and a misspelt one rejected).
    let good = dir.0.join("good.toml");
    std::fs::write(
        &good,
        "[capture]\nsource = \"af_packet\"\ninterface = \"lo\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tapvault"))
        .args([
            "check",
            "--config",
            good.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .env("TAPVAULT_CAPTURE_SNAP_LEN", "7")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success()
            && text.contains("capture.snap_len")
            && text.contains("TAPVAULT_CAPTURE_SNAP_LEN"),
        "{text}"
    );
}

/// A veth pair with `n` RX queues, deleted on drop.
struct Veth(IpGuard);

impl Veth {
    fn new(queues: u32) -> Veth {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let name = format!("tvck{}{n}", std::process::id() % 100_000);
        let peer = format!("{name}p");
        let q = queues.to_string();
        let st = Command::new("ip")
            .args([
                "link",
                "add",
                &name,
                "numrxqueues",
                &q,
                "numtxqueues",
                &q,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
                "numrxqueues",
                &q,
                "numtxqueues",
                &q,
            ])
            .status()
            .expect("run ip");
        assert!(st.success(), "ip link add {name} failed");
        let v = Veth(IpGuard::link(name));
        for dev in [&v.0.name, &peer] {
            assert!(
                Command::new("ip")
                    .args(["link", "set", dev, "up"])
                    .status()
                    .unwrap()
                    .success()
            );
        }
        v
    }
}

#[test]
fn check_reports_a_veth() {
    if !crate::util::privileged("check_reports_a_veth (creates a veth)") {
        return;
    }
    let veth = Veth::new(2);
    let dir = Scratch::new("check-veth");
    let cfg = dir.0.join("tapvault.toml");
    std::fs::write(
        &cfg,
        format!(
            "[capture]\nsource = \"af_xdp\"\ninterface = \"{}\"\nqueues = [0, 1]\n[storage]\ndata_dir = \"{}\"\n",
            veth.0.name,
            dir.0.join("data").display()
        ),
    )
    .unwrap();
    let (ok, out) = check(&["--config", cfg.to_str().unwrap(), "--json"]);
    assert!(ok, "{out}");
    let v: Value = serde_json::from_str(&out).expect("JSON report");
    assert_eq!(v["ok"], true);
    assert_eq!(v["source"], "af_xdp");
    assert_eq!(v["interface"]["driver"], "veth", "{out}");
    assert_eq!(v["interface"]["rx_queues"], 2, "{out}");
    // veth has native XDP (6.x) but no zero-copy AF_XDP.
    assert_eq!(v["interface"]["xdp"]["driver_mode"], true, "{out}");
    assert_eq!(v["interface"]["xdp"]["zero_copy"], false, "{out}");
    let names: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["check"].as_str())
        .collect();
    for want in [
        "bpf: load an XDP program",
        "af_xdp: create a socket",
        "memlock: room for the UMEM",
    ] {
        assert!(names.contains(&want), "{want} missing: {names:?}");
    }
    assert!(
        v["kernel"]
            .as_str()
            .unwrap()
            .starts_with(|c: char| c.is_ascii_digit())
    );

    // More queues than the veth has, and zero-copy forced on a driver without it.
    let (ok, out) = check(&[
        "--config",
        cfg.to_str().unwrap(),
        "--set",
        "capture.queues=[0, 3]",
    ]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("[FAIL] config: capture.queues: queue 3 does not exist"),
        "{out}"
    );
    let (ok, out) = check(&[
        "--config",
        cfg.to_str().unwrap(),
        "--set",
        "capture.zero_copy=on",
    ]);
    assert!(!ok, "{out}");
    assert!(out.contains("[FAIL] xdp: zero-copy AF_XDP"), "{out}");
}
