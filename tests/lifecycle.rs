//! Issue 12: the boundary stays closed in every lifecycle state (root,
//! network namespaces). On `scripts/demo/topology.sh`'s router, the unit's
//! own command lines (read from `systemd/misp-guard-gw.service`, paths
//! pointed at this build and a temp dir) start, reload, stop and restart the
//! gateway; after each step the secret compartment pushes to the restricted
//! MISP with curl and the test reads the restricted server's store:
//! a `tlp:red` event never arrives (no answer while no gateway runs, 403
//! while it runs), and an allowed event arrives again once it runs.
//!
//! curl trusts both the gateway CA and the real server's CA, so a push the
//! router forwarded uninspected would be answered 200 and stored: a drop
//! here is the guard's doing, not a failed handshake. A control in
//! `firewall_reload_while_stopped_keeps_the_guard_through_the_include`
//! shows that with no rules at all the router does forward sync.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::misp::{serve, MispServer, Store};
use support::netns::{in_netns, prerequisites_met, run, unique_name, WAIT};
use support::{gateway_ca, sample_policy, Gateway, TempDir};

const SECRET: (&str, &str) = ("192.0.2.10:443", "misp.secret.example");
const RESTRICTED: (&str, &str) = ("198.51.100.10:443", "misp.restricted.example");
const UNIT_BIN: &str = "/usr/bin/misp-guard-gw";
const UNIT_SCRIPTS: &str = "/usr/share/misp-guard-gw/scripts";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_misp-guard-gw")
}

// ------------------------------------------------------------ the unit

/// The unit's command lines and environment, with the installed paths
/// replaced by this build's.
struct Unit {
    env: BTreeMap<String, String>,
    lines: Vec<(String, String)>,
    /// `User=` is set: the gateway runs unprivileged.
    has_user: bool,
    /// `AmbientCapabilities=`, as setpriv spells them (`+net_admin,...`).
    ambient: String,
    no_new_privileges: bool,
}

impl Unit {
    /// Reads the shipped unit; `env` must name every variable it sets
    /// (a new one pointing at /etc or /run must be redirected here too).
    fn shipped(env: &[(&str, String)]) -> Unit {
        let text = std::fs::read_to_string(root().join("systemd/misp-guard-gw.service")).unwrap();
        let scripts = root().join("scripts");
        let mut unit = Unit {
            env: BTreeMap::new(),
            lines: Vec::new(),
            has_user: false,
            ambient: String::new(),
            no_new_privileges: false,
        };
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            if key == "Environment" {
                let (name, _) = value.split_once('=').expect("NAME=value");
                let ours = env
                    .iter()
                    .find(|(n, _)| *n == name)
                    .unwrap_or_else(|| panic!("the unit sets {name}; the test must redirect it"));
                unit.env.insert(name.to_string(), ours.1.clone());
            } else if key == "User" {
                unit.has_user = true;
            } else if key == "AmbientCapabilities" {
                let caps: Vec<String> = value
                    .split_whitespace()
                    .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
                    .collect();
                unit.ambient = caps.join(",");
            } else if key == "NoNewPrivileges" {
                unit.no_new_privileges = value == "yes";
            } else if key.starts_with("Exec") {
                let command = value
                    .trim_start_matches(['+', '-', '@', '!', ':'])
                    .replace(UNIT_BIN, bin())
                    .replace(UNIT_SCRIPTS, scripts.to_str().unwrap());
                unit.lines.push((key.to_string(), command));
            }
        }
        unit
    }

    fn commands(&self, key: &str) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, c)| c.as_str())
            .collect()
    }

    /// Runs every `key` line inside `ns` through sh (which expands the
    /// unit's `${VAR}`s the way systemd does for these simple lines).
    fn run(&self, key: &str, ns: &str, mainpid: Option<u32>) {
        for command in self.commands(key) {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns, "sh", "-c", command])
                .envs(&self.env);
            if let Some(pid) = mainpid {
                cmd.env("MAINPID", pid.to_string());
            }
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "{key}={command}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// ExecStartPre lines, then ExecStart (until the gateway says ready),
    /// as the unit runs it: with `User=`, as an unprivileged user (nobody)
    /// holding only the unit's ambient capabilities, so keeping the rules
    /// (it execs nft) is shown to work without root.
    fn start(&self, ns: &str, log: PathBuf) -> Gateway {
        self.run("ExecStartPre", ns, None);
        let start = self.commands("ExecStart");
        assert_eq!(start.len(), 1, "{start:?}");
        let words: Vec<String> = start[0]
            .split_whitespace()
            .map(|w| {
                self.env.iter().fold(w.to_string(), |w, (k, v)| {
                    w.replace(&format!("${{{k}}}"), v)
                })
            })
            .collect();
        assert_eq!(words[0], bin(), "{words:?}");
        let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
        let mut prefix = vec!["ip", "netns", "exec", ns];
        let (inh, amb) = (
            format!("--inh-caps={}", self.ambient),
            format!("--ambient-caps={}", self.ambient),
        );
        if self.has_user {
            prefix.extend([
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
            ]);
            prefix.extend([inh.as_str(), amb.as_str()]);
            if self.no_new_privileges {
                prefix.push("--no-new-privs");
            }
            prefix.push("--");
        }
        let gw = Gateway::start_wrapped(&prefix, &args, log);
        if self.has_user {
            let status =
                std::fs::read_to_string(format!("/proc/{}/status", gw.child.id())).unwrap();
            assert!(
                status.lines().any(|l| l.starts_with("Uid:\t65534\t")),
                "not unprivileged: {status}"
            );
        }
        gw
    }
}

// ------------------------------------------------------------ the site

/// `topology.sh`'s namespaces, the two MISP-like servers, the gateway's
/// config and files; everything deleted on drop.
struct Site {
    prefix: String,
    dir: TempDir,
    config: PathBuf,
    /// Gateway CA and the restricted server's CA, for curl.
    bundle: PathBuf,
    restricted: MispServer,
    unit: Unit,
    _stops: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Site {
    fn up(mode: &str) -> Site {
        let prefix = unique_name("mgwl");
        let out = Command::new(root().join("scripts/demo/topology.sh"))
            .args(["up", &prefix])
            .output()
            .unwrap();
        let dir = TempDir::new("lifecycle");
        let d = dir.0.clone();
        let mut stops = Vec::new();
        // From here on a panic still removes the namespaces (Drop), once
        // `site` exists; until then, by hand.
        if !out.status.success() {
            let _ = run(&[topology(), "down", &prefix], None);
            panic!("topology: {}", String::from_utf8_lossy(&out.stderr));
        }
        let (_secret, stop) =
            start_server(format!("{prefix}-secret"), SECRET, d.join("secret-ca.crt"));
        stops.push(stop);
        let (restricted, stop) = start_server(
            format!("{prefix}-restricted"),
            RESTRICTED,
            d.join("restricted-ca.crt"),
        );
        stops.push(stop);
        let gw_ca = gateway_ca(&d.join("ca"));
        let bundle = d.join("bundle.crt");
        let mut pem = std::fs::read(&gw_ca).unwrap();
        pem.extend(std::fs::read(d.join("restricted-ca.crt")).unwrap());
        std::fs::write(&bundle, pem).unwrap();
        let config = d.join("config.json");
        write_config(&config, &sample_policy());
        // The service user reads its files (the package gives them to its
        // group); here "nobody" gets read access to this test's files.
        run(&["chmod", "-R", "a+rX", d.to_str().unwrap()], None).unwrap();
        std::fs::create_dir_all(d.join("state")).unwrap();
        let unit = Unit::shipped(&[
            ("MODE", mode.to_string()),
            ("CONFIG", config.to_str().unwrap().to_string()),
            (
                "GUARD_FILE",
                d.join("guard.nft").to_str().unwrap().to_string(),
            ),
            ("STATE_DIR", d.join("state").to_str().unwrap().to_string()),
            ("MISP_GUARD_GW", bin().to_string()),
        ]);
        Site {
            prefix,
            dir,
            config,
            bundle,
            restricted,
            unit,
            _stops: stops,
        }
    }

    fn rtr(&self) -> String {
        format!("{}-rtr", self.prefix)
    }

    fn start(&self, tag: &str) -> Gateway {
        self.unit
            .start(&self.rtr(), self.dir.0.join(format!("gw-{tag}.log")))
    }

    /// curl in the secret compartment pushing event `n` tagged `tag` to the
    /// restricted MISP, as MISP's push does; the HTTP status, 0 for none.
    fn push(&self, n: u32, tag: &str) -> u16 {
        let body = self.dir.0.join(format!("event-{n}.json"));
        std::fs::write(&body, event(n, tag).to_string()).unwrap();
        let (host, ip) = (RESTRICTED.1, "198.51.100.10");
        let out = Command::new("ip")
            .args(["netns", "exec", &format!("{}-secret", self.prefix)])
            .args(["curl", "-sS", "--noproxy", "*", "--max-time", "4"])
            .arg("--cacert")
            .arg(&self.bundle)
            .args(["--resolve", &format!("{host}:443:{ip}")])
            .args(["-o", "/dev/null", "-w", "%{http_code}"])
            .args(["-H", "Content-Type: application/json"])
            .arg("--data-binary")
            .arg(format!("@{}", body.display()))
            .arg(format!("https://{host}/events/add/metadata:1"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }

    fn stored(&self, n: u32) -> bool {
        self.restricted
            .store
            .lock()
            .unwrap()
            .events
            .contains_key(&uuid(n))
    }

    /// No gateway runs: nothing is answered and nothing arrives, a tlp:red
    /// event (`red`) nor an allowed one (`allowed`): sync is dropped, not
    /// forwarded uninspected.
    fn assert_sync_dropped(&self, state: &str, red: u32, allowed: u32) {
        assert_eq!(self.push(red, "tlp:red"), 0, "{state}: tlp:red answered");
        assert_eq!(self.push(allowed, "tlp:green"), 0, "{state}: answered");
        assert!(!self.stored(red), "{state}: tlp:red event stored");
        assert!(!self.stored(allowed), "{state}: uninspected event stored");
    }

    /// The gateway runs: tlp:red is refused by it, an allowed push lands.
    fn assert_sync_filtered(&self, state: &str, red: u32, allowed: u32, gw: &Gateway) {
        assert_eq!(self.push(red, "tlp:red"), 403, "{state}: {}", gw.logs());
        assert_eq!(
            self.push(allowed, "tlp:green"),
            200,
            "{state}: {}",
            gw.logs()
        );
        assert!(!self.stored(red), "{state}: tlp:red event stored");
        assert!(self.stored(allowed), "{state}: allowed event missing");
    }

    fn nft(&self, args: &[&str]) -> Result<(), String> {
        let rtr = self.rtr();
        let mut full = vec!["ip", "netns", "exec", &rtr, "nft"];
        full.extend_from_slice(args);
        run(&full, None)
    }

    fn table_loaded(&self, table: &str) -> bool {
        self.nft(&["list", "table", "inet", table]).is_ok()
    }

    fn capture_listing(&self) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.rtr(), "nft", "list", "table", "inet"])
            .arg("misp_guard_gw")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        if let Err(e) = run(&[topology(), "down", &self.prefix], None) {
            eprintln!("cleanup: {e}");
        }
    }
}

fn topology() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo/topology.sh")
}

fn start_server(
    ns: String,
    (addr, host): (&str, &str),
    ca_file: PathBuf,
) -> (MispServer, tokio::sync::oneshot::Sender<()>) {
    let (addr, host): (SocketAddr, String) = (addr.parse().unwrap(), host.to_string());
    let (tx, rx) = mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    in_netns(&ns, move || async move {
        tx.send(serve(addr, &host, &ca_file, Store::default()).await)
            .unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(300), stop_rx).await;
    });
    (rx.recv_timeout(WAIT).expect("server up"), stop_tx)
}

fn write_config(path: &Path, config: &Value) {
    std::fs::write(path, serde_json::to_string_pretty(config).unwrap()).unwrap();
}

fn uuid(n: u32) -> String {
    format!("5f0c{n:04x}-0000-4000-8000-00000000{n:04x}")
}

fn event(n: u32, tag: &str) -> Value {
    json!({"Event": {"uuid": uuid(n), "info": format!("lifecycle event {n}"),
        "distribution": "1", "published": true, "timestamp": "1700000000",
        "analysis": "2", "threat_level_id": "3",
        "Orgc": {"name": "ORGNAME", "uuid": uuid(9000)},
        "Tag": [{"name": tag}], "Attribute": [], "Object": []}})
}

/// Polls `done` every 50 ms for up to `limit`; the time it took.
fn within(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

// ------------------------------------------------------------ the states

/// Crash (SIGKILL) and graceful stop (SIGTERM), each followed by the
/// unit's stop action: sync stays dropped until the unit starts the
/// gateway again (Restart=on-failure, or an operator's start).
fn killed_then_stop_action(test: &str, signal: &str) {
    if !prerequisites_met(test) {
        return;
    }
    let site = Site::up("redirect");
    let mut gw = site.start("first");
    site.assert_sync_filtered("running", 1, 2, &gw);
    let pid = gw.child.id();
    run(&["kill", signal, &pid.to_string()], None).unwrap();
    assert!(
        within(Duration::from_secs(15), || matches!(
            gw.child.try_wait(),
            Ok(Some(_))
        ))
        .is_some(),
        "gateway did not exit on {signal}"
    );
    site.unit.run("ExecStopPost", &site.rtr(), Some(pid));
    assert!(
        site.table_loaded("misp_guard_gw_guard"),
        "stop removed the guard"
    );
    site.assert_sync_dropped(&format!("after {signal} and the stop action"), 3, 4);
    let gw = site.start("again");
    site.assert_sync_filtered("started again", 5, 6, &gw);
}

#[test]
fn sigkill_and_stop_action_keep_sync_dropped() {
    killed_then_stop_action("sigkill_and_stop_action_keep_sync_dropped", "-KILL");
}

#[test]
fn sigterm_and_stop_action_keep_sync_dropped() {
    killed_then_stop_action("sigterm_and_stop_action_keep_sync_dropped", "-TERM");
}

/// `systemctl restart` in TPROXY mode: stop (SIGTERM, stop action), then
/// start; in between TPROXY finds no socket and the guard drops the flow.
#[test]
fn restart_in_tproxy_mode_keeps_sync_dropped_in_between() {
    if !prerequisites_met("restart_in_tproxy_mode_keeps_sync_dropped_in_between") {
        return;
    }
    let site = Site::up("tproxy");
    let mut gw = site.start("first");
    site.assert_sync_filtered("running (tproxy)", 11, 12, &gw);
    let pid = gw.child.id();
    assert_eq!(gw.terminate(), Some(0), "{}", gw.logs());
    site.unit.run("ExecStopPost", &site.rtr(), Some(pid));
    site.assert_sync_dropped("between stop and start (tproxy)", 13, 14);
    let gw = site.start("restarted");
    site.assert_sync_filtered("restarted (tproxy)", 15, 16, &gw);
}

/// `nft flush ruleset` while the gateway runs (a firewall reload without
/// the include): the gateway notices and restores both tables within a few
/// seconds, logging an error; sync is then filtered again.
#[test]
fn flush_ruleset_while_running_is_restored() {
    if !prerequisites_met("flush_ruleset_while_running_is_restored") {
        return;
    }
    let site = Site::up("redirect");
    let gw = site.start("running");
    site.assert_sync_filtered("before the flush", 21, 22, &gw);
    let before = site.capture_listing();
    site.nft(&["flush", "ruleset"]).unwrap();
    let took = within(Duration::from_secs(5), || {
        site.table_loaded("misp_guard_gw") && site.table_loaded("misp_guard_gw_guard")
    })
    .unwrap_or_else(|| panic!("tables not restored: {}", gw.logs()));
    eprintln!("flush_ruleset_while_running_is_restored: tables back after {took:?}");
    assert_eq!(site.capture_listing(), before);
    assert!(
        gw.logs()
            .contains("restoring them from the running policy (restoration 1)"),
        "{}",
        gw.logs()
    );
    site.assert_sync_filtered("after the restoration", 23, 24, &gw);
}

/// Stopped gateway, `flush ruleset` (nothing left: the control push shows
/// the router then forwards sync uninspected), then a firewall reload of an
/// /etc/nftables.conf-like file that includes the guard file as the README
/// says: the guard is back and sync is dropped again; a start captures.
#[test]
fn firewall_reload_while_stopped_keeps_the_guard_through_the_include() {
    if !prerequisites_met("firewall_reload_while_stopped_keeps_the_guard_through_the_include") {
        return;
    }
    let site = Site::up("redirect");
    let mut gw = site.start("first");
    assert_eq!(gw.terminate(), Some(0));
    site.unit.run("ExecStopPost", &site.rtr(), None);
    site.assert_sync_dropped("stopped", 31, 32);
    site.nft(&["flush", "ruleset"]).unwrap();
    // Control: no rules, no gateway → forwarded (the hazard the guard stops).
    assert_eq!(site.push(33, "tlp:green"), 200, "control push");
    assert!(site.stored(33));
    let conf = site.dir.0.join("nftables.conf");
    let include = site.dir.0.join("guard*.nft");
    std::fs::write(
        &conf,
        format!(
            "flush ruleset\n\ntable inet filter {{\n  chain forward {{\n    type filter hook forward priority filter; policy accept;\n  }}\n}}\n\ninclude \"{}\"\n",
            include.display()
        ),
    )
    .unwrap();
    site.nft(&["-f", conf.to_str().unwrap()]).unwrap();
    assert!(site.table_loaded("misp_guard_gw_guard"));
    site.assert_sync_dropped("stopped, firewall reloaded", 34, 35);
    let gw = site.start("again");
    site.assert_sync_filtered("started", 36, 37, &gw);
}

/// A reload (the unit's ExecReload lines) that adds an instance: the
/// gateway loads the new sets before it commits the policy, so the new
/// instance is captured, and the guard file follows. A reload whose rules
/// cannot be made fails whole: old rules, old policy.
#[test]
fn reload_adding_an_instance_captures_it() {
    if !prerequisites_met("reload_adding_an_instance_captures_it") {
        return;
    }
    let site = Site::up("redirect");
    let mut only_secret = sample_policy();
    only_secret["instances"]
        .as_object_mut()
        .unwrap()
        .remove("misp_restricted");
    only_secret["gateway"]["instances"]
        .as_object_mut()
        .unwrap()
        .remove("misp_restricted");
    only_secret["compartments_rules"]["can_reach"] = json!({"secret": ["secret"]});
    write_config(&site.config, &only_secret);
    let gw = site.start("before");
    assert!(!site.capture_listing().contains("198.51.100.10"));
    write_config(&site.config, &sample_policy());
    site.unit
        .run("ExecReload", &site.rtr(), Some(gw.child.id()));
    let took = within(Duration::from_secs(5), || {
        site.capture_listing().contains("198.51.100.10 . 443")
    })
    .unwrap_or_else(|| panic!("new instance not captured: {}", gw.logs()));
    eprintln!("reload_adding_an_instance_captures_it: captured after {took:?}");
    // The rules are loaded just before the policy is committed: wait for it.
    within(Duration::from_secs(5), || {
        gw.logs().contains("policy reloaded")
    })
    .unwrap_or_else(|| panic!("no reload: {}", gw.logs()));
    let guard = std::fs::read_to_string(site.dir.0.join("guard.nft")).unwrap();
    assert!(guard.contains("198.51.100.10 . 443"), "{guard}");
    site.assert_sync_filtered("after the reload", 41, 42, &gw);
    // The gateway's own check sees what it loaded: no restoration.
    assert!(!gw.logs().contains("restoring"), "{}", gw.logs());

    // A policy whose rules cannot be made (no redirect listener for the
    // redirect capture) fails the reload: rules and policy stay as they were.
    let captured = site.capture_listing();
    let mut no_redirect = sample_policy();
    no_redirect["gateway"]["listeners"] = json!([{"mode": "tproxy", "listen": "[::]:15002"}]);
    no_redirect["compartments_rules"]["can_reach"]["secret"] = json!(["secret"]);
    write_config(&site.config, &no_redirect);
    site.unit
        .run("ExecReload", &site.rtr(), Some(gw.child.id()));
    within(Duration::from_secs(5), || {
        gw.logs().contains("reload failed")
    })
    .unwrap_or_else(|| panic!("reload did not fail: {}", gw.logs()));
    assert!(gw.logs().contains("no redirect listener"), "{}", gw.logs());
    assert_eq!(site.capture_listing(), captured);
    // Still the old policy: secret may reach restricted.
    site.assert_sync_filtered("after the failed reload", 43, 44, &gw);
}

/// Issue 12 item 7: the compartments meet only through the router. With
/// the router's forwarding off, the secret host cannot reach the restricted
/// MISP at all, and no compartment host can address the VXLAN underlay.
#[test]
fn compartments_meet_only_through_the_router() {
    if !prerequisites_met("compartments_meet_only_through_the_router") {
        return;
    }
    let site = Site::up("redirect");
    let rtr = site.rtr();
    let connect = |ip: &'static str, port: u16| {
        let ns = format!("{}-secret", site.prefix);
        support::netns::join(in_netns(&ns, move || async move {
            let to = SocketAddr::new(ip.parse().unwrap(), port);
            let attempt = tokio::net::TcpStream::connect(to);
            matches!(
                tokio::time::timeout(Duration::from_secs(2), attempt).await,
                Ok(Ok(_))
            )
        }))
    };
    assert!(connect("198.51.100.10", 443), "forwarding router, no rules");
    run(
        &[
            "ip",
            "netns",
            "exec",
            &rtr,
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.ip_forward=0",
        ],
        None,
    )
    .unwrap();
    assert!(!connect("198.51.100.10", 443), "reached without the router");
    // Neither router nor switch has an address on the underlay.
    for role in ["rtr", "sw", "secret", "restricted"] {
        let out = Command::new("ip")
            .args(["-n", &format!("{}-{role}", site.prefix), "-4", "addr"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !text.contains("169.254.231."),
            "{role} is on the underlay: {text}"
        );
    }
    // And the router, the compartments' only gateway, has no route there.
    assert!(
        run(&["ip", "-n", &rtr, "route", "get", "169.254.231.2"], None).is_err(),
        "the router routes to the underlay"
    );
}

/// Issue 12 item 7: the guard drops packets entering a compartment
/// interface with a source address of another compartment. The secret host
/// sends from a restricted address: the guard's anti-spoofing rule counts
/// and drops those packets, and nothing reaches the restricted server; the
/// same host with its own address is served.
#[test]
fn spoofed_sources_are_dropped_at_the_compartment_interface() {
    if !prerequisites_met("spoofed_sources_are_dropped_at_the_compartment_interface") {
        return;
    }
    let site = Site::up("redirect");
    let gw = site.start("spoof");
    let secret = format!("{}-secret", site.prefix);
    run(
        &[
            "ip",
            "-n",
            &secret,
            "addr",
            "add",
            "198.51.100.77/32",
            "dev",
            "eth0",
            "nodad",
        ],
        None,
    )
    .unwrap();
    let counted = || {
        let out = Command::new("ip")
            .args(["netns", "exec", &site.rtr(), "nft", "list", "chain", "inet"])
            .args(["misp_guard_gw_guard", "anti_spoofing"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split("counter packets ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no counter: {text}"))
    };
    let before = counted();
    let seen_before = site.restricted.seen.lock().unwrap().len();
    // To the restricted MISP and to a port nobody captures.
    for port in [443u16, 9] {
        let reached = support::netns::join(in_netns(&secret, move || async move {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("198.51.100.77:0".parse().unwrap()).unwrap();
            let to = SocketAddr::new("198.51.100.10".parse().unwrap(), port);
            matches!(
                tokio::time::timeout(Duration::from_secs(2), socket.connect(to)).await,
                Ok(Ok(_))
            )
        }));
        assert!(!reached, "spoofed connection to port {port} completed");
    }
    assert!(counted() > before, "the anti-spoofing rule dropped nothing");
    assert_eq!(site.restricted.seen.lock().unwrap().len(), seen_before);
    site.assert_sync_filtered("own address", 51, 52, &gw);
}

/// `/readyz` follows the tables the gateway keeps: 200 while they are
/// loaded, 503 naming the missing table right after `nft flush ruleset`,
/// 200 again once the gateway has restored them.
#[test]
fn readyz_goes_unready_while_the_tables_are_missing() {
    if !prerequisites_met("readyz_goes_unready_while_the_tables_are_missing") {
        return;
    }
    let site = Site::up("redirect");
    let mut config = sample_policy();
    // Inside the router namespace: only this test reaches it.
    config["gateway"]["metrics"] = json!({"listen": "127.0.0.1:19090"});
    write_config(&site.config, &config);
    let gw = site.start("readyz");
    let readyz =
        "curl -s -o /dev/null -w '%{http_code}\\n' --max-time 2 http://127.0.0.1:19090/readyz";
    let in_router = |script: &str| {
        let out = Command::new("ip")
            .args(["netns", "exec", &site.rtr(), "sh", "-c", script])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(in_router(readyz).trim(), "200", "{}", gw.logs());
    // Flush and ask at once, from one shell in the namespace (the keeper
    // checks every second); then keep asking every 0.1 s until ready again,
    // for at most ~15 s (a loaded machine delays the keeper's nft calls;
    // a bound by count alone was over in a second there).
    let answers = in_router(&format!(
        "nft flush ruleset; s=0; for i in $(seq 1 150); do c=$({readyz}); echo $c; \
         [ \"$c\" = 503 ] && s=1; [ $s = 1 ] && [ \"$c\" = 200 ] && break; sleep 0.1; done"
    ));
    let codes: Vec<&str> = answers.lines().collect();
    let first_503 = codes.iter().position(|c| *c == "503");
    assert!(
        first_503.is_some(),
        "never unready: {codes:?}\n{}",
        gw.logs()
    );
    let back = codes[first_503.unwrap()..].iter().position(|c| *c == "200");
    assert!(
        back.is_some(),
        "never ready again: {codes:?}\n{}",
        gw.logs()
    );
    let body = in_router("curl -s --max-time 2 http://127.0.0.1:19090/readyz");
    assert_eq!(body, "ready\n");
    let metrics = in_router("curl -s --max-time 2 http://127.0.0.1:19090/metrics");
    assert!(
        metrics.contains("misp_guard_gw_rules_restorations_total 1"),
        "{metrics}"
    );
}

/// The audit trail on the transparent path, the gateway running as the
/// unit runs it: an allowed and a refused push, each one JSON line naming
/// the redirect listener, both instances and compartments, the SNI and the
/// event uuid.
#[test]
fn transparent_pushes_are_audited() {
    if !prerequisites_met("transparent_pushes_are_audited") {
        return;
    }
    let site = Site::up("redirect");
    let audit_dir = site.dir.0.join("audit");
    std::fs::create_dir_all(&audit_dir).unwrap();
    // The unit's unprivileged user writes the trail.
    run(&["chmod", "a+rwx", audit_dir.to_str().unwrap()], None).unwrap();
    let mut config = sample_policy();
    config["gateway"]["audit_log"] = json!("audit/audit.jsonl");
    write_config(&site.config, &config);
    let gw = site.start("audit");
    site.assert_sync_filtered("audited", 31, 32, &gw);
    let path = audit_dir.join("audit.jsonl");
    let mut lines: Vec<Value> = Vec::new();
    within(Duration::from_secs(5), || {
        lines = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        lines.len() >= 2
    })
    .unwrap_or_else(|| panic!("audit lines: {lines:?}\n{}", gw.logs()));
    let (red, ok) = (&lines[0], &lines[1]);
    for l in [red, ok] {
        assert_eq!(l["listener"], "redirect", "{l}");
        assert_eq!(l["src_instance"], "misp_secret", "{l}");
        assert_eq!(l["dst_instance"], "misp_restricted", "{l}");
        assert!(
            l["src_compartment"].is_string() && l["dst_compartment"].is_string(),
            "{l}"
        );
        assert_eq!(l["sni"], RESTRICTED.1, "{l}");
        assert_eq!(l["path"], "/events/add/metadata:1", "{l}");
    }
    assert_eq!(red["decision"], "block");
    assert_eq!(red["reason"], "event has blocked tag: tlp:red");
    assert_eq!(red["uuids"], json!([uuid(31)]));
    assert_eq!(ok["decision"], "allow");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["uuids"][0], uuid(32));
}
