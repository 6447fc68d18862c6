//! Network-namespace scaffolding shared by the root tests: skip logic,
//! bounded commands, a three-namespace topology deleted on drop, and
//! running code inside a namespace.
//!
//! ```text
//!  cli 10.231.1.2 ── c0 ═ g0 ── gw 10.231.1.1 | 10.231.3.1 ── g1 ═ s0 ── srv 10.231.3.2
//!      fd00:231:1::2                fd00:231:1::1 | fd00:231:3::1          fd00:231:3::2
//! ```
#![allow(dead_code)]

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};

/// Upper bound for any single wait (command, accept, connect, read).
pub const WAIT: Duration = Duration::from_secs(10);
/// Port the "MISP server" listens on and the capture rules match.
pub const SYNC_PORT: u16 = 8443;

// ---------------------------------------------------------------- skipping

/// Why the netns tests cannot run here, if they cannot.
pub fn missing_prerequisite() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    // "Uid: real effective saved fs": the effective uid decides.
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|u| u.parse::<u32>().ok());
    if euid != Some(0) {
        return Some(format!("not root (euid {euid:?})"));
    }
    for (tool, arg) in [("ip", "-V"), ("nft", "--version")] {
        let ok = Command::new(tool)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return Some(format!(
                "`{tool}` not found (apt-get install iproute2 nftables)"
            ));
        }
    }
    None
}

/// Returns true when the test should go on; prints the skip otherwise.
pub fn prerequisites_met(test: &str) -> bool {
    let Some(reason) = missing_prerequisite() else {
        return true;
    };
    if std::env::var("MISP_GW_REQUIRE_NETNS").as_deref() == Ok("1") {
        panic!("{test}: netns test required (MISP_GW_REQUIRE_NETNS=1) but {reason}");
    }
    // Straight to stderr: libtest captures only the print macros, and a skip
    // must be visible in a normal `cargo test` run.
    let _ = writeln!(io::stderr(), "SKIP {test}: {reason}");
    false
}

// ---------------------------------------------------------------- commands

/// Runs a command with optional stdin, killing it after [`WAIT`].
pub fn run(args: &[&str], stdin: Option<&str>) -> Result<(), String> {
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if let Some(input) = stdin {
        // Dropping the handle closes the pipe so `nft -f -` sees EOF.
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(input.as_bytes())
            .map_err(|e| format!("{args:?}: stdin: {e}"))?;
    }
    let deadline = Instant::now() + WAIT;
    loop {
        match child.try_wait().map_err(|e| format!("{args:?}: {e}"))? {
            Some(status) => {
                let mut err = String::new();
                if let Some(mut s) = child.stderr.take() {
                    let _ = s.read_to_string(&mut err);
                }
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!("{args:?}: {status}: {}", err.trim()))
                };
            }
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{args:?}: timed out after {WAIT:?}"));
            }
            None => thread::sleep(Duration::from_millis(10)),
        }
    }
}

pub fn must(args: &[&str]) {
    run(args, None).unwrap_or_else(|e| panic!("{e}"));
}

/// Where curl sends a request: `https://host:port`, `host` resolved to `ip`
/// (no DNS in a test namespace).
pub struct Remote<'a> {
    pub host: &'a str,
    pub port: u16,
    pub ip: &'a str,
}

/// curl in `ns` as a MISP server's sync client would be: no proxy settings,
/// trusting only `ca`. Returns (HTTP status or 0, body written to `out`).
pub fn curl(
    ns: &str,
    ca: &Path,
    to: &Remote,
    method: &str,
    path: &str,
    body: Option<&Path>,
    out: &Path,
) -> (u16, Vec<u8>) {
    let ip = match to.ip.contains(':') {
        true => format!("[{}]", to.ip),
        false => to.ip.to_string(),
    };
    let (host, port) = (to.host, to.port);
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "curl", "-sS", "--noproxy", "*"])
        .args(["--max-time", "10", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("{host}:{port}:{ip}")])
        .args(["-X", method, "-o"])
        .arg(out)
        .args(["-w", "%{http_code}", "-H", "Content-Type: application/json"]);
    if let Some(b) = body {
        cmd.arg("--data-binary").arg(format!("@{}", b.display()));
    }
    cmd.arg(format!("https://{host}:{port}{path}"));
    let o = cmd.output().expect("curl");
    let code = String::from_utf8_lossy(&o.stdout).trim().parse();
    (code.unwrap_or(0), std::fs::read(out).unwrap_or_default())
}

// ---------------------------------------------------------------- topology

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A name no other test of this run uses, for its namespaces: `stem`, the
/// process id and a counter.
pub fn unique_name(stem: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{stem}{}-{n}", std::process::id())
}

/// The three namespaces of one test; deleted on drop, also during a panic.
pub struct Topology {
    pub cli: String,
    pub gw: String,
    pub srv: String,
}

impl Topology {
    pub fn new() -> Self {
        let base = unique_name("mgw-");
        let topo = Topology {
            cli: format!("{base}-cli"),
            gw: format!("{base}-gw"),
            srv: format!("{base}-srv"),
        };
        // From here on Drop cleans up whatever was created.
        for ns in [&topo.cli, &topo.gw, &topo.srv] {
            must(&["ip", "netns", "add", ns]);
            must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let (cli, gw, srv) = (topo.cli.as_str(), topo.gw.as_str(), topo.srv.as_str());
        // veths are born inside the namespaces: no host interface ever exists.
        must(&[
            "ip", "-n", cli, "link", "add", "c0", "type", "veth", "peer", "name", "g0", "netns", gw,
        ]);
        must(&[
            "ip", "-n", gw, "link", "add", "g1", "type", "veth", "peer", "name", "s0", "netns", srv,
        ]);
        for (ns, dev, v4, v6) in [
            (cli, "c0", "10.231.1.2/24", "fd00:231:1::2/64"),
            (gw, "g0", "10.231.1.1/24", "fd00:231:1::1/64"),
            (gw, "g1", "10.231.3.1/24", "fd00:231:3::1/64"),
            (srv, "s0", "10.231.3.2/24", "fd00:231:3::2/64"),
        ] {
            must(&["ip", "-n", ns, "addr", "add", v4, "dev", dev]);
            // nodad: a tentative address cannot be used for ~2 s.
            must(&["ip", "-n", ns, "addr", "add", v6, "dev", dev, "nodad"]);
            must(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        for (ns, v4gw, v6gw) in [
            (cli, "10.231.1.1", "fd00:231:1::1"),
            (srv, "10.231.3.1", "fd00:231:3::1"),
        ] {
            must(&["ip", "-n", ns, "route", "add", "default", "via", v4gw]);
            must(&["ip", "-n", ns, "-6", "route", "add", "default", "via", v6gw]);
        }
        // Per-namespace sysctls: the gw routes between cli and srv.
        must(&[
            "ip",
            "netns",
            "exec",
            gw,
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
        ]);
        topo
    }

    /// TPROXY policy routing inside `gw`: marked packets are delivered
    /// locally, for new flows handed to the listener and for replies to a
    /// spoofed (transparent-source) upstream connection.
    pub fn tproxy_routing(&self) {
        for fam in ["-4", "-6"] {
            let dst = if fam == "-4" { "0.0.0.0/0" } else { "::/0" };
            must(&[
                "ip", "-n", &self.gw, fam, "rule", "add", "fwmark", "1", "lookup", "100",
            ]);
            must(&[
                "ip", "-n", &self.gw, fam, "route", "add", "local", dst, "dev", "lo", "table",
                "100",
            ]);
        }
    }

    pub fn nft(&self, ruleset: &str) -> Result<(), String> {
        run(
            &["ip", "netns", "exec", &self.gw, "nft", "-f", "-"],
            Some(ruleset),
        )
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in [&self.cli, &self.gw, &self.srv] {
            // Deleting the namespace takes its veths, rules and routes along.
            if let Err(e) = run(&["ip", "netns", "del", ns], None) {
                let _ = writeln!(io::stderr(), "cleanup: {e}");
            }
        }
    }
}

/// Runs `f` on a new thread inside namespace `ns`, on a current-thread tokio
/// runtime created *after* entering it, so every socket belongs to `ns`.
pub fn in_netns<T, F, Fut>(ns: &str, f: F) -> thread::JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    let path = format!("/var/run/netns/{ns}");
    thread::spawn(move || {
        let fd = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // setns affects only this thread; the test's other threads stay put.
        setns(&fd, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(f())
    })
}

pub fn join<T>(h: thread::JoinHandle<T>) -> T {
    h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// TPROXY capture of TCP port 8443 to the gateway's `port`, in prerouting
/// (the only hook tproxy is valid in). `socket transparent 1` marks packets
/// of flows that already have a transparent socket: the replies to the
/// gateway's spoofed upstream connection.
pub fn tproxy_ruleset(port: u16) -> String {
    format!(
        "table inet mgw_test {{
            chain pre {{
                type filter hook prerouting priority mangle; policy accept;
                meta l4proto tcp socket transparent 1 meta mark set 1 accept
                meta nfproto ipv4 tcp dport {SYNC_PORT} tproxy ip to :{port} meta mark set 1 accept
                meta nfproto ipv6 tcp dport {SYNC_PORT} tproxy ip6 to :{port} meta mark set 1 accept
            }}
        }}"
    )
}
