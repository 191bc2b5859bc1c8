//! The demo's lab: three network namespaces in a line, client — router — server, joined by
//! two veth pairs, with a TBF bottleneck on the router's egress toward the client. Everything
//! is created by [`Lab::setup`] and deleted by [`Lab::teardown`], which [`Drop`] runs too, so
//! success, error, panic and Ctrl-C all clean up. Only what this lab created is touched.
//!
//! Why a router namespace, not a bottleneck on the server's own veth: a qdisc on the sender's
//! own egress does not lose packets on the wire. TCP Small Queues keeps only a couple of
//! segments per socket in the qdisc, and when the qdisc does drop one, `tcp_transmit_skb` gets
//! `NET_XMIT_DROP` and TCP simply sends it again later: it never reached the capture point, so
//! the capture shows no loss at all. Forwarded packets have no socket behind them, so the
//! router's queue overflows like a real bottleneck's and the capture (on the client's veth,
//! downstream of the loss) shows what a tap near a client sees: gaps, duplicate ACKs with
//! SACK, fast retransmissions.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// The bottleneck: rate, bucket and queue of the router's TBF toward the client.
pub(crate) const TBF: [&str; 6] = ["rate", "20mbit", "burst", "32kbit", "limit", "30000"];

/// Client side of the client—router link.
pub(crate) const CLIENT4: &str = "10.99.1.2";
const ROUTER4_C: &str = "10.99.1.1";
const ROUTER4_S: &str = "10.99.2.1";
/// The server's address.
pub(crate) const SERVER4: &str = "10.99.2.2";
const CLIENT6: &str = "fd00:99:1::2";
const ROUTER6_C: &str = "fd00:99:1::1";
const ROUTER6_S: &str = "fd00:99:2::1";
/// The server's IPv6 address.
pub(crate) const SERVER6: &str = "fd00:99:2::2";

/// A process the lab started.
struct Proc {
    name: &'static str,
    child: Child,
    /// Stopped with SIGINT first (tcpdump, to flush the capture), else killed.
    graceful: bool,
}

/// Names of everything in one lab; `tag` (the demo's pid) makes them unique per run.
pub(crate) struct Lab {
    /// Client namespace.
    pub(crate) ns_client: String,
    /// Router namespace.
    pub(crate) ns_router: String,
    /// Server namespace.
    pub(crate) ns_server: String,
    /// The client's veth, where the capture runs.
    pub(crate) veth_client: String,
    veth_router_c: String,
    veth_router_s: String,
    veth_server: String,
    /// The SPAN namespace: where mirrored traffic arrives (see [`Lab::setup_span`]).
    pub(crate) ns_tap: String,
    /// Mirror ports in the tap namespace, one per [`Lab::setup_span`] mirror.
    pub(crate) span_ports: Vec<String>,
    /// Namespaces this lab created (and so deletes).
    created: Vec<String>,
    procs: Vec<Proc>,
}

/// Runs a command to completion; an error carries the command line and its stderr.
pub(crate) fn run(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{}`", args[0]))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Sends a signal with kill(1): the binary crate stays free of `unsafe`.
fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Waits up to `limit` for a child to exit.
fn wait_for(child: &mut Child, limit: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Lines of a child's pipe, read by a thread: a channel for waiting on one line, and a log of
/// all of them.
pub(crate) struct Lines {
    rx: mpsc::Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Lines {
    fn spawn<R: std::io::Read + Send + 'static>(r: R) -> Self {
        let (tx, rx) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = Arc::clone(&log);
        thread::spawn(move || {
            for line in BufReader::new(r).lines() {
                let Ok(line) = line else { break };
                if let Ok(mut v) = l.lock() {
                    v.push(line.clone());
                }
                let _ = tx.send(line);
            }
        });
        Lines { rx, log }
    }

    /// Waits for a line containing `needle`; gives up at `limit`, on EOF, or when `stop` is set.
    pub(crate) fn wait_for(&self, needle: &str, limit: Duration, stop: &AtomicBool) -> Result<()> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if stop.load(Ordering::SeqCst) {
                bail!("interrupted");
            }
            match self.rx.recv_timeout(Duration::from_millis(50)) {
                Ok(l) if l.contains(needle) => return Ok(()),
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        bail!(
            "did not see `{needle}` within {limit:?}; output so far: {}",
            self.all().join(" / ")
        )
    }

    /// Every line read so far.
    pub(crate) fn all(&self) -> Vec<String> {
        self.log.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// A started child's handles.
pub(crate) struct Started {
    /// Index into the lab's processes.
    pub(crate) idx: usize,
    /// Its stdout lines.
    pub(crate) stdout: Lines,
    /// Its stderr lines.
    pub(crate) stderr: Lines,
    /// Its stdin (dropping it closes the pipe).
    pub(crate) stdin: Option<ChildStdin>,
}

impl Lab {
    /// Names for a lab tagged `tag`; nothing is created yet.
    pub(crate) fn new(tag: u32) -> Self {
        // Interface names must stay within 15 bytes: "tv" + up to 7 digits + 1 letter.
        Lab {
            ns_client: format!("tvd{tag}c"),
            ns_router: format!("tvd{tag}r"),
            ns_server: format!("tvd{tag}s"),
            veth_client: format!("tv{tag}a"),
            veth_router_c: format!("tv{tag}b"),
            veth_router_s: format!("tv{tag}c"),
            veth_server: format!("tv{tag}d"),
            ns_tap: format!("tvd{tag}t"),
            span_ports: Vec::new(),
            created: Vec::new(),
            procs: Vec::new(),
        }
    }

    /// Creates the namespaces, links, addresses, routes, offload settings and the bottleneck.
    pub(crate) fn setup(&mut self) -> Result<()> {
        for ns in [&self.ns_client, &self.ns_router, &self.ns_server] {
            if Path::new("/run/netns").join(ns).exists() {
                bail!(
                    "network namespace `{ns}` already exists (left by an earlier run that was \
                     killed?); remove it with `ip netns del {ns}`"
                );
            }
        }
        for ns in [
            self.ns_client.clone(),
            self.ns_router.clone(),
            self.ns_server.clone(),
        ] {
            run(&["ip", "netns", "add", &ns])?;
            self.created.push(ns.clone());
            // No duplicate address detection on the links created next: with it, link-local
            // addresses stay tentative for a second or so, neighbour solicitations go
            // unanswered and the first IPv6 SYN is lost.
            run(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.default.accept_dad=0",
                "net.ipv6.conf.default.dad_transmits=0",
            ])?;
        }
        let (c, r, s) = (&self.ns_client, &self.ns_router, &self.ns_server);
        // Each veth is created directly inside its namespace: nothing ever appears in the
        // namespace the demo runs in.
        run(&[
            "ip",
            "link",
            "add",
            &self.veth_client,
            "netns",
            c,
            "type",
            "veth",
            "peer",
            "name",
            &self.veth_router_c,
            "netns",
            r,
        ])?;
        run(&[
            "ip",
            "link",
            "add",
            &self.veth_router_s,
            "netns",
            r,
            "type",
            "veth",
            "peer",
            "name",
            &self.veth_server,
            "netns",
            s,
        ])?;
        let links = [
            (c, &self.veth_client, CLIENT4, CLIENT6),
            (r, &self.veth_router_c, ROUTER4_C, ROUTER6_C),
            (r, &self.veth_router_s, ROUTER4_S, ROUTER6_S),
            (s, &self.veth_server, SERVER4, SERVER6),
        ];
        for (ns, dev, a4, a6) in links {
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{a4}/24"),
                "dev",
                dev,
            ])?;
            // nodad: usable at once, no duplicate address detection delay.
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{a6}/64"),
                "dev",
                dev,
                "nodad",
            ])?;
            // Segments as on a wire: MTU-sized (no TSO/GSO/GRO), with real checksums.
            run(&[
                "ip", "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off", "tso", "off", "gso",
                "off", "gro", "off",
            ])
            .context("turning offloads off failed (is ethtool installed?)")?;
            run(&["ip", "-n", ns, "link", "set", dev, "up"])?;
        }
        for ns in [c, r, s] {
            run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        run(&["ip", "-n", c, "route", "add", "default", "via", ROUTER4_C])?;
        run(&[
            "ip", "-n", c, "-6", "route", "add", "default", "via", ROUTER6_C,
        ])?;
        run(&["ip", "-n", s, "route", "add", "default", "via", ROUTER4_S])?;
        run(&[
            "ip", "-n", s, "-6", "route", "add", "default", "via", ROUTER6_S,
        ])?;
        run(&[
            "ip",
            "netns",
            "exec",
            r,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
        ])?;
        let mut tbf = vec![
            "ip",
            "netns",
            "exec",
            r,
            "tc",
            "qdisc",
            "add",
            "dev",
            &self.veth_router_c,
            "root",
            "tbf",
        ];
        tbf.extend(TBF);
        run(&tbf)?;
        Ok(())
    }

    /// Emulates SPAN ports: a namespace `ns_tap` with `mirrors` veth ports (each with
    /// `queues` RX/TX queues) that receive a copy of every frame the client's veth sends and
    /// receives, through tc `mirred` on the client's veth (ingress and egress), as a switch
    /// mirrors a port. The ports' ends in the client namespace are down-stream only: no
    /// addresses, offloads off, so mirrored frames arrive as they were on the wire.
    pub(crate) fn setup_span(&mut self, mirrors: usize, queues: usize) -> Result<()> {
        let (c, t) = (self.ns_client.clone(), self.ns_tap.clone());
        if Path::new("/run/netns").join(&t).exists() {
            bail!("network namespace `{t}` already exists; remove it with `ip netns del {t}`");
        }
        run(&["ip", "netns", "add", &t])?;
        self.created.push(t.clone());
        let q = queues.max(1).to_string();
        let tag = self.veth_client.trim_end_matches('a').to_owned();
        let mut mirror_devs = Vec::new();
        for k in 0..mirrors {
            let (m, p) = (format!("{tag}m{k}"), format!("{tag}t{k}"));
            run(&[
                "ip",
                "link",
                "add",
                &m,
                "netns",
                &c,
                "numtxqueues",
                &q,
                "numrxqueues",
                &q,
                "type",
                "veth",
                "peer",
                "name",
                &p,
                "netns",
                &t,
                "numtxqueues",
                &q,
                "numrxqueues",
                &q,
            ])?;
            for (ns, dev) in [(&c, &m), (&t, &p)] {
                run(&[
                    "ip", "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off", "tso", "off",
                    "gso", "off", "gro", "off",
                ])
                .context("turning offloads off failed (is ethtool installed?)")?;
                // No IPv6 on the mirror link: otherwise its own router solicitations and
                // MLD reports would be captured beside the mirrored traffic.
                run(&[
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "sysctl",
                    "-qw",
                    &format!("net.ipv6.conf.{dev}.disable_ipv6=1"),
                ])?;
                run(&["ip", "-n", ns, "link", "set", dev, "up"])?;
            }
            mirror_devs.push(m);
            self.span_ports.push(p);
        }
        let dev = self.veth_client.clone();
        run(&["ip", "-n", &c, "link", "set", &dev, "promisc", "on"])?;
        run(&["tc", "-n", &c, "qdisc", "add", "dev", &dev, "clsact"])?;
        for dir in ["ingress", "egress"] {
            let mut args: Vec<String> = [
                "tc", "-n", &c, "filter", "add", "dev", &dev, dir, "protocol", "all", "prio", "1",
                "u32", "match", "u32", "0", "0",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            for m in &mirror_devs {
                args.extend(
                    ["action", "mirred", "egress", "mirror", "dev", m, "pipe"]
                        .iter()
                        .map(|s| s.to_string()),
                );
            }
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&refs)?;
        }
        Ok(())
    }

    /// Starts `program args` inside namespace `ns` with piped stdio and keeps it for teardown.
    pub(crate) fn spawn(
        &mut self,
        name: &'static str,
        ns: &str,
        program: &str,
        args: &[&str],
        graceful: bool,
    ) -> Result<Started> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {name} in `{ns}`"))?;
        let stdin = child.stdin.take();
        let stdout = Lines::spawn(child.stdout.take().context("stdout")?);
        let stderr = Lines::spawn(child.stderr.take().context("stderr")?);
        self.procs.push(Proc {
            name,
            child,
            graceful,
        });
        Ok(Started {
            idx: self.procs.len() - 1,
            stdout,
            stderr,
            stdin,
        })
    }

    /// Waits for a process to exit (polling `stop`), up to `limit`; returns its success.
    pub(crate) fn wait(&mut self, idx: usize, limit: Duration, stop: &AtomicBool) -> Result<bool> {
        let p = &mut self.procs[idx];
        let t = Instant::now();
        loop {
            if let Some(st) = p.child.try_wait()? {
                return Ok(st.success());
            }
            if stop.load(Ordering::SeqCst) {
                bail!("interrupted");
            }
            if t.elapsed() > limit {
                bail!("{} did not finish within {limit:?}", p.name);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops a process: SIGINT (then SIGTERM, then SIGKILL) for graceful ones, else SIGKILL.
    pub(crate) fn stop(&mut self, idx: usize) {
        let p = &mut self.procs[idx];
        if let Ok(Some(_)) = p.child.try_wait() {
            return;
        }
        if p.graceful {
            // `ip netns exec` execs, and `timeout` passes INT and TERM on to tcpdump.
            signal(p.child.id(), "-INT");
            if wait_for(&mut p.child, Duration::from_secs(3)) {
                return;
            }
            signal(p.child.id(), "-TERM");
            if wait_for(&mut p.child, Duration::from_secs(2)) {
                return;
            }
        }
        let _ = p.child.kill();
        let _ = p.child.wait();
    }

    /// Stops every process, then deletes the namespaces (and with them the veths and the
    /// qdisc). Returns what could not be removed. Idempotent.
    pub(crate) fn teardown(&mut self) -> Vec<String> {
        for i in 0..self.procs.len() {
            self.stop(i);
        }
        self.procs.clear();
        let mut left = Vec::new();
        for ns in std::mem::take(&mut self.created).into_iter().rev() {
            // A process still inside would keep the namespace (and its veth) alive after the
            // name is gone: only processes this lab started can be in a namespace it created.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<u32>() {
                        signal(pid, "-KILL");
                    }
                }
            }
            if let Err(e) = run(&["ip", "netns", "del", &ns]) {
                left.push(format!("{ns}: {e}"));
            }
        }
        left
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for e in self.teardown() {
            eprintln!("tapvault demo: cleanup: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_interface_name_limit() {
        // pid_max is at most 2^22 = 4194304: seven digits.
        let lab = Lab::new(4_194_304);
        let tag = lab.veth_client.trim_end_matches('a');
        assert!(format!("{tag}m9").len() <= 15);
        for n in [
            &lab.veth_client,
            &lab.veth_router_c,
            &lab.veth_router_s,
            &lab.veth_server,
        ] {
            assert!(n.len() <= 15, "{n} is longer than IFNAMSIZ - 1");
        }
        let other = Lab::new(4_194_303);
        assert_ne!(lab.ns_client, other.ns_client);
        assert_ne!(lab.veth_client, other.veth_client);
    }
}
