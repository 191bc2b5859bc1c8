//! Loading and validation, one test per class of bad input.

use std::path::Path;

use crate::*;

const NO_ENV: [(&str, &str); 0] = [];

/// A valid minimal configuration for the tests to break.
const GOOD: &str = r#"
[capture]
interface = "eth1"
"#;

fn load(text: &str) -> std::result::Result<Config, LoadError> {
    Config::from_toml(text)
}

fn keys_of(e: &LoadError) -> Vec<String> {
    e.keys().into_iter().map(String::from).collect()
}

/// The single key of an `Invalid` error, and its message.
fn one_bad(text: &str) -> (String, String) {
    let e = load(text).expect_err(text);
    let msg = e.to_string();
    let keys = keys_of(&e);
    assert_eq!(keys.len(), 1, "expected one problem in {text}, got: {msg}");
    (keys[0].clone(), msg)
}

#[test]
fn default_file_is_the_default_config() {
    let table: toml::Table = DEFAULT_TOML.parse().expect("tapvault.toml is TOML");
    let parsed: Config = table
        .clone()
        .try_into()
        .expect("tapvault.toml deserialises");
    assert_eq!(parsed, Config::default());
    // Every key of every section appears in the file, so the file documents them all.
    let mut in_file = Vec::new();
    super::load::keys_in(&table, &mut in_file);
    for (k, _) in keys() {
        assert!(
            in_file.contains(&k),
            "`{k}` is missing from config/tapvault.toml"
        );
    }
    assert_eq!(
        in_file.len(),
        keys().len(),
        "tapvault.toml has keys the structs lack"
    );
    // Fields of filter rules live in a commented example.
    for field in ["action =", "networks =", "ports ="] {
        assert!(
            DEFAULT_TOML.contains(field),
            "rule field {field} is not documented"
        );
    }
    // Every key is preceded by a comment line.
    let lines: Vec<&str> = DEFAULT_TOML.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if !l.starts_with('#') && !l.starts_with('[') && l.contains(" = ") {
            assert!(
                lines[i - 1].starts_with('#'),
                "line {} has no comment: {l}",
                i + 1
            );
        }
    }
}

#[test]
fn default_config_fails_only_for_the_interface() {
    let errs = Config::default().problems();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].key, "capture.interface");
    load(GOOD).expect("minimal config is valid");
}

#[test]
fn unknown_keys_are_named() {
    let (key, msg) = one_bad("[capture]\ninterface = \"eth1\"\numem_frame = 64\n");
    assert_eq!(key, "capture.umem_frame", "{msg}");
    assert!(msg.contains("unknown field"), "{msg}");
    assert!(msg.ends_with("(did you mean umem_frames?)"), "{msg}");
    let (key, _) = one_bad("[captur]\ninterface = \"eth1\"\n");
    assert_eq!(key, "captur");
    let (key, _) =
        one_bad("[capture]\ninterface = \"eth1\"\n[storage.retention.pcap]\nmax_byte = \"1GiB\"\n");
    assert_eq!(key, "storage.retention.pcap.max_byte");
    let (key, _) = one_bad(
        "[capture]\ninterface = \"eth1\"\n[capture.filter]\nrules = [{ action = \"drop\", port = [22] }]\n",
    );
    assert_eq!(key, "capture.filter.rules[0].port");
}

#[test]
fn type_errors_are_named() {
    let (key, msg) = one_bad("[capture]\ninterface = \"eth1\"\numem_frames = \"lots\"\n");
    assert_eq!(key, "capture.umem_frames");
    assert!(msg.contains("invalid type"), "{msg}");
    let (key, msg) = one_bad("[capture]\ninterface = \"eth1\"\nsource = \"pcap\"\n");
    assert_eq!(key, "capture.source");
    assert!(msg.contains("af_xdp"), "lists the accepted values: {msg}");
    let (key, _) = one_bad("[capture]\ninterface = \"eth1\"\numem_frames = -1\n");
    assert_eq!(key, "capture.umem_frames");
    let (key, _) = one_bad("[capture]\ninterface = \"eth1\"\n[api]\nlisten = \"localhost\"\n");
    assert_eq!(key, "api.listen");
    let (key, _) = one_bad("[capture]\ninterface = \"eth1\"\nqueues = \"some\"\n");
    assert_eq!(key, "capture.queues");
    // A syntax error is reported with its line.
    let e = load("[capture\n").unwrap_err();
    assert!(matches!(e, LoadError::Syntax { .. }), "{e}");
    assert!(e.to_string().contains("line 1"), "{e}");
}

#[test]
fn bad_durations_and_sizes() {
    let (key, msg) = one_bad("[capture]\ninterface = \"eth1\"\n[storage]\nsegment_span = \"60\"\n");
    assert_eq!(key, "storage.segment_span");
    assert!(msg.contains("has no unit"), "{msg}");
    let (key, msg) =
        one_bad("[capture]\ninterface = \"eth1\"\n[storage]\nflush_interval = \"1 fortnight\"\n");
    assert_eq!(key, "storage.flush_interval");
    assert!(msg.contains("invalid duration"), "{msg}");
    let (key, msg) =
        one_bad("[capture]\ninterface = \"eth1\"\n[storage]\nsegment_max_bytes = \"64mb\"\n");
    assert_eq!(key, "storage.segment_max_bytes");
    assert!(
        msg.contains("unknown unit \\\"mb\\\"") || msg.contains("unknown unit \"mb\""),
        "{msg}"
    );
    let (key, _) = one_bad("[capture]\ninterface = \"eth1\"\n[api]\nmax_pcap_bytes = -5\n");
    assert_eq!(key, "api.max_pcap_bytes");
    // Correct forms load.
    let c = load("[capture]\ninterface = \"eth1\"\n[storage]\nsegment_span = \"5m\"\nsegment_max_bytes = \"1.5GiB\"\n").unwrap();
    assert_eq!(c.storage.segment_span.get().as_secs(), 300);
    assert_eq!(c.storage.segment_max_bytes.get(), 3 << 29);
}

#[test]
fn out_of_range_values() {
    let cases = [
        ("[capture]\nsnap_len = 40", "capture.snap_len"),
        ("[capture]\nsnap_len = 200000", "capture.snap_len"),
        ("[capture]\numem_frames = 5000", "capture.umem_frames"),
        ("[capture]\nframe_size = 3000", "capture.frame_size"),
        ("[capture]\nframe_size = 8192", "capture.frame_size"),
        ("[capture]\nqueues = [1, 1]", "capture.queues"),
        ("[capture]\ncpus = [0, 0]", "capture.cpus"),
        (
            "[capture]\nbusy_poll = true\nbusy_poll_budget = 0",
            "capture.busy_poll_budget",
        ),
        (
            "[capture.filter]\nrules = [{ action = \"drop\", networks = [\"10.0.0.1/8\"] }]",
            "capture.filter.rules[0].networks[0]",
        ),
        ("[flow]\nmax_flows = 3", "flow.max_flows"),
        (
            "[storage]\ndata_dir = \"var/lib/tapvault\"",
            "storage.data_dir",
        ),
        ("[storage]\nsegment_span = \"2h\"", "storage.segment_span"),
        ("[storage]\nzstd_level = 0", "storage.zstd_level"),
        ("[storage]\nzstd_level = -131073", "storage.zstd_level"),
        ("[storage]\nzstd_level = 23", "storage.zstd_level"),
        (
            "[storage]\nflush_interval = \"1ms\"",
            "storage.flush_interval",
        ),
        ("[api]\nrequest_timeout = \"0s\"", "api.request_timeout"),
        ("[api]\nmax_rows = 0", "api.max_rows"),
        ("[api]\ntoken = \"short\"", "api.token"),
        ("[log]\nlevel = \"loud\"", "log.level"),
    ];
    for (snippet, key) in cases {
        // Every snippet gets a valid interface.
        let text = if snippet.starts_with("[capture]\n") {
            snippet.replacen("[capture]\n", "[capture]\ninterface = \"eth1\"\n", 1)
        } else {
            format!("[capture]\ninterface = \"eth1\"\n{snippet}")
        };
        let (k, msg) = one_bad(&text);
        assert_eq!(k, key, "{text}: {msg}");
    }
}

#[test]
fn zstd_fast_levels_are_accepted() {
    for level in [-131_072, -1000, -3, -1, 1, 22] {
        let c = load(&format!("{GOOD}\n[storage]\nzstd_level = {level}\n")).expect("valid level");
        assert_eq!(c.storage.zstd_level, level);
    }
    let (_, msg) = one_bad(&format!("{GOOD}\n[storage]\nzstd_level = -131073\n"));
    assert!(
        msg.contains("-131073 is neither a level 1..=22 nor a fast level -131072..=-1"),
        "{msg}"
    );
}

#[test]
fn impossible_combinations() {
    let cases = [
        // af_xdp-only options with another source.
        (
            "[capture]\nsource = \"af_packet\"\ninterface = \"eth1\"\numem_frames = 8192",
            "capture.umem_frames",
        ),
        (
            "[capture]\nsource = \"af_packet\"\ninterface = \"eth1\"\nqueues = [0]",
            "capture.queues",
        ),
        (
            "[capture]\nsource = \"af_packet\"\ninterface = \"eth1\"\n[capture.filter]\ndefault_action = \"drop\"",
            "capture.filter",
        ),
        // af_packet-only options with af_xdp.
        (
            "[capture]\ninterface = \"eth1\"\nblock_count = 8",
            "capture.block_count",
        ),
        // A source without what it needs.
        ("[capture]\nsource = \"file\"", "capture.file_path"),
        ("[capture]\nsource = \"af_packet\"", "capture.interface"),
        // Contradictions.
        (
            "[capture]\ninterface = \"eth1\"\nxdp_mode = \"skb\"\nzero_copy = \"on\"",
            "capture.zero_copy",
        ),
        (
            "[capture]\ninterface = \"eth1\"\nbusy_poll_budget = 32",
            "capture.busy_poll_budget",
        ),
        (
            "[capture]\nsource = \"af_packet\"\ninterface = \"eth1\"\nsnap_len = 9000\nblock_size = \"8KiB\"",
            "capture.block_size",
        ),
        (
            "[capture]\ninterface = \"eth1\"\n[api]\nlisten = \"0.0.0.0:8080\"",
            "api.listen",
        ),
        (
            "[capture]\ninterface = \"eth1\"\n[api]\ntoken = \"0123456789abcdef\"\ntoken_file = \"/etc/tapvault/token\"",
            "api.token",
        ),
        (
            "[capture]\ninterface = \"eth1\"\n[storage]\nsegment_max_bytes = \"2MiB\"\nframe_max_bytes = \"4MiB\"",
            "storage.segment_max_bytes",
        ),
        (
            "[capture]\ninterface = \"eth1\"\n[storage]\nframe_span = \"2m\"",
            "storage.frame_span",
        ),
        (
            "[capture]\ninterface = \"eth1\"\n[storage.retention.pcap]\nmax_bytes = \"300MiB\"",
            "storage.retention.pcap.max_bytes",
        ),
        (
            "[capture]\ninterface = \"eth1\"\n[storage.retention.pcap]\nmax_age = \"10s\"",
            "storage.retention.pcap.max_age",
        ),
    ];
    for (text, key) in cases {
        let (k, msg) = one_bad(text);
        assert_eq!(k, key, "{text}: {msg}");
    }
    // A non-loopback listener with a token is fine; so is af_packet with its own options.
    load("[capture]\ninterface = \"eth1\"\n[api]\nlisten = \"0.0.0.0:8080\"\ntoken_file = \"/run/secrets/token\"\n").unwrap();
    load("[capture]\nsource = \"af_packet\"\ninterface = \"eth1\"\nblock_count = 8\nfanout_group = 7\n").unwrap();
    // Several problems are all reported.
    let e = load("[capture]\nsnap_len = 1\n[api]\nmax_rows = 0\n").unwrap_err();
    assert_eq!(
        keys_of(&e),
        ["capture.interface", "capture.snap_len", "api.max_rows"],
        "{e}"
    );
}

#[test]
fn env_overrides_the_file() {
    let env = [
        ("TAPVAULT_CAPTURE_INTERFACE", "eth7"),
        ("TAPVAULT_CAPTURE_QUEUES", "0-2"),
        ("TAPVAULT_CAPTURE_CPUS", "2,3"),
        ("TAPVAULT_CAPTURE_NEED_WAKEUP", "false"),
        ("TAPVAULT_FLOW_IDLE_TIMEOUT_SECS", "60"),
        ("TAPVAULT_STORAGE_RETENTION_PCAP_MAX_BYTES", "500GiB"),
        ("TAPVAULT_LOG_FORMAT", "json"),
        ("PATH", "/usr/bin"),
        ("TAPVAULT_UNRELATED", "x"),
    ];
    let c = Config::load_str(Some((Path::new("f.toml"), GOOD)), env, &[]).unwrap();
    assert_eq!(c.capture.interface, "eth7");
    assert_eq!(c.capture.queues, Queues::List(vec![0, 1, 2]));
    assert_eq!(c.capture.cpus, [2, 3]);
    assert!(!c.capture.need_wakeup);
    assert_eq!(c.flow.idle_timeout_secs, 60.0);
    assert_eq!(c.storage.retention.pcap.max_bytes, ByteSize::gib(500));
    assert_eq!(c.log.format, LogFormat::Json);

    // A misspelt variable is an error with a hint.
    let e = Config::load_str(None, [("TAPVAULT_CAPTURE_INTERFAC", "eth1")], &[]).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("TAPVAULT_CAPTURE_INTERFAC")
            && msg.contains("did you mean TAPVAULT_CAPTURE_INTERFACE"),
        "{msg}"
    );
    // A bad value names the variable.
    let e = Config::load_str(
        Some((Path::new("f.toml"), GOOD)),
        [("TAPVAULT_CAPTURE_UMEM_FRAMES", "many")],
        &[],
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("TAPVAULT_CAPTURE_UMEM_FRAMES")
            && e.to_string().contains("not an integer"),
        "{e}"
    );
    // A value of the right type but out of range says where it came from.
    let e = Config::load_str(
        Some((Path::new("f.toml"), GOOD)),
        [("TAPVAULT_CAPTURE_UMEM_FRAMES", "100")],
        &[],
    )
    .unwrap_err();
    assert_eq!(keys_of(&e), ["capture.umem_frames"]);
    assert!(
        e.to_string()
            .contains("from environment variable TAPVAULT_CAPTURE_UMEM_FRAMES"),
        "{e}"
    );
    // Every key has a distinct variable.
    let mut names: Vec<String> = keys().iter().map(|(k, _)| env_name(k)).collect();
    let n = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), n);
}

#[test]
fn flags_override_env_and_file() {
    let file = "[capture]\ninterface = \"eth1\"\nsnap_len = 1000\n[api]\nmax_rows = 10\n";
    let env = [
        ("TAPVAULT_CAPTURE_INTERFACE", "eth2"),
        ("TAPVAULT_CAPTURE_SNAP_LEN", "2000"),
    ];
    let flags = vec![
        "capture.interface=eth3".to_string(),
        "capture.filter.rules=[{action = \"drop\", ports = [22]}]".to_string(),
        "capture.interface=eth4".to_string(),
    ];
    let c = Config::load_str(Some((Path::new("f.toml"), file)), env, &flags).unwrap();
    assert_eq!(c.capture.interface, "eth4", "the last flag wins");
    assert_eq!(c.capture.snap_len, 2000, "env beats the file");
    assert_eq!(c.api.max_rows, 10, "the file beats the default");
    assert_eq!(c.capture.filter.rules[0].ports, [22]);

    let e = Config::load_str(None, NO_ENV, &["capture.interfase=eth1".into()]).unwrap_err();
    assert!(
        e.to_string().contains("did you mean capture.interface"),
        "{e}"
    );
    let e = Config::load_str(None, NO_ENV, &["capture.interface".into()]).unwrap_err();
    assert!(e.to_string().contains("section.key=value"), "{e}");
    let e = Config::load_str(
        Some((Path::new("f.toml"), GOOD)),
        NO_ENV,
        &["capture.snap_len=5".into()],
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("from flag --set capture.snap_len=5"),
        "{e}"
    );
    let e = Config::load_str(
        Some((Path::new("f.toml"), GOOD)),
        NO_ENV,
        &["capture.busy_poll=maybe".into()],
    )
    .unwrap_err();
    assert!(e.to_string().contains("not a boolean"), "{e}");
}

#[test]
fn file_errors_name_the_file() {
    let e = Config::load(Some(Path::new("/nonexistent/tapvault.toml")), NO_ENV, &[]).unwrap_err();
    assert!(matches!(e, LoadError::Read { .. }));
    assert!(e.to_string().contains("/nonexistent/tapvault.toml"));
    let e = Config::load_str(
        Some((
            Path::new("/etc/tv.toml"),
            "[capture]\ninterface = \"eth1\"\nsnap_len = 5\n",
        )),
        NO_ENV,
        &[],
    )
    .unwrap_err();
    assert!(e.to_string().contains("(from /etc/tv.toml)"), "{e}");
}

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tapvault-config-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn host_checks() {
    let dir = tmpdir("host");
    let host = host::Host::system();
    let mut c = load("[capture]\ninterface = \"lo\"\n").unwrap();
    c.storage.data_dir = dir.join("data");
    assert_eq!(host::problems(&c, &host), Vec::<Error>::new());
    // More queues than the interface has (lo has one RX queue).
    c.capture.queues = Queues::List(vec![0, 5]);
    let p = host::problems(&c, &host);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key, "capture.queues");
    assert!(p[0].reason.contains("lo has 1 RX queue"), "{}", p[0].reason);
    c.capture.queues = Queues::All;
    c.capture.workers = 4;
    assert_eq!(host::problems(&c, &host)[0].key, "capture.workers");
    c.capture.workers = 0;
    // A missing interface.
    c.capture.interface = format!("tvx{}", std::process::id());
    assert_eq!(host::problems(&c, &host)[0].key, "capture.interface");
    c.capture.interface = "lo".into();
    // A data directory that cannot exist (its parent is a file) or cannot be written.
    std::fs::write(dir.join("file"), b"x").unwrap();
    c.storage.data_dir = dir.join("file/data");
    let p = host::problems(&c, &host);
    assert_eq!(p[0].key, "storage.data_dir", "{p:?}");
    c.storage.data_dir = "/proc/tapvault".into();
    assert_eq!(host::problems(&c, &host)[0].key, "storage.data_dir");
    c.storage.data_dir = dir.clone();
    // An offline CPU.
    c.capture.cpus = vec![4095];
    assert_eq!(host::problems(&c, &host)[0].key, "capture.cpus");
    c.capture.cpus = vec![];
    // A token file that is missing or too short.
    c.api.token_file = dir.join("token");
    assert_eq!(host::problems(&c, &host)[0].key, "api.token_file");
    std::fs::write(dir.join("token"), "short\n").unwrap();
    assert_eq!(host::problems(&c, &host)[0].key, "api.token_file");
    std::fs::write(dir.join("token"), "  0123456789abcdef0123\n").unwrap();
    assert!(host::problems(&c, &host).is_empty());
    assert_eq!(
        c.api_token().unwrap().as_deref(),
        Some("0123456789abcdef0123")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cpu_lists() {
    assert_eq!(host::parse_cpu_list("0-3,6"), Ok(vec![0, 1, 2, 3, 6]));
    assert_eq!(host::parse_cpu_list("0"), Ok(vec![0]));
    assert!(host::parse_cpu_list("a").is_err());
}

#[test]
fn flow_pipeline_mode() {
    // Default, and each accepted value (file, environment, --set).
    assert_eq!(load(GOOD).unwrap().flow.pipeline, PipelineMode::Auto);
    for (v, want) in [
        ("auto", PipelineMode::Auto),
        ("inline", PipelineMode::Inline),
        ("threaded", PipelineMode::Threaded),
    ] {
        let c = load(&format!("{GOOD}[flow]\npipeline = \"{v}\"\n")).unwrap();
        assert_eq!(c.flow.pipeline, want);
        assert_eq!(want.as_str(), v);
        let c = Config::load_str(
            Some((Path::new("f.toml"), GOOD)),
            [("TAPVAULT_FLOW_PIPELINE", v)],
            &[],
        )
        .unwrap();
        assert_eq!(c.flow.pipeline, want);
        let c = Config::load_str(
            Some((Path::new("f.toml"), GOOD)),
            NO_ENV,
            &[format!("flow.pipeline={v}")],
        )
        .unwrap();
        assert_eq!(c.flow.pipeline, want);
    }
    // A bad value names the key and lists the accepted values.
    let (key, msg) = one_bad(&format!("{GOOD}[flow]\npipeline = \"fast\"\n"));
    assert_eq!(key, "flow.pipeline", "{msg}");
    for v in ["auto", "inline", "threaded"] {
        assert!(msg.contains(v), "lists `{v}`: {msg}");
    }
    // Inline with more than one shard or source, as far as the file tells.
    for (text, says) in [
        (
            "[flow]\npipeline = \"inline\"\nshards = 2\n",
            "flow.shards is 2",
        ),
        (
            "[capture]\nsource = \"af_packet\"\ninterface = \"eth1\"\nworkers = 2\n[flow]\npipeline = \"inline\"\n",
            "capture.workers asks for 2 sources",
        ),
        (
            "[capture]\ninterface = \"eth1\"\nqueues = [0, 1, 2]\n[flow]\npipeline = \"inline\"\n",
            "capture.queues asks for 3 sources",
        ),
    ] {
        let text = if text.starts_with("[capture]") {
            text.to_string()
        } else {
            format!("{GOOD}{text}")
        };
        let (key, msg) = one_bad(&text);
        assert_eq!(key, "flow.pipeline", "{text}: {msg}");
        assert!(msg.contains(says), "{text}: {msg}");
    }
    // One shard, one worker or one queue is fine; so is threaded with many.
    for text in [
        "[capture]\ninterface = \"eth1\"\n[flow]\npipeline = \"inline\"\nshards = 1\n",
        "[capture]\nsource = \"af_packet\"\ninterface = \"eth1\"\nworkers = 1\n[flow]\npipeline = \"inline\"\n",
        "[capture]\ninterface = \"eth1\"\nqueues = [3]\n[flow]\npipeline = \"inline\"\n",
        "[capture]\ninterface = \"eth1\"\nqueues = [0, 1]\n[flow]\npipeline = \"threaded\"\nshards = 4\n",
    ] {
        load(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    }
}
