use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// The `shared/` directory beside the repository, or `None` (after printing why) when it is
/// missing and we are not in CI. In CI a missing `shared/` is a failure.
pub fn shared_dir() -> Option<PathBuf> {
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

/// Runs `tapvault analyze FILE --json` with extra arguments; returns the records.
pub fn analyze_json(file: &Path, extra: &[&str]) -> Vec<serde_json::Value> {
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
pub fn epoch_ns(s: &str) -> i64 {
    let (secs, frac) = s.split_once('.').unwrap_or((s, "0"));
    let mut frac = frac.to_string();
    frac.truncate(9);
    while frac.len() < 9 {
        frac.push('0');
    }
    secs.parse::<i64>().expect("seconds") * 1_000_000_000 + frac.parse::<i64>().expect("ns")
}
