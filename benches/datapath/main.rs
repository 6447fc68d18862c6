//! Data-path benchmark (`cargo bench --bench datapath`): the gateway binary
//! side by side with a direct client→server TLS connection in the same
//! run, TLS on both legs, on the same upstream server.
//!
//! Default: explicit-proxy mode on loopback (direct, gateway).
//! `--transparent` (root, ip, nft): the gateway behind nftables REDIRECT in
//! its own network namespace, client and server in theirs (topology of
//! tests/support/netns.rs), plus a third column: nginx as a TLS-terminating
//! reverse proxy in the gateway's namespace, captured the same way
//! (nginx.rs says how it is configured).
//!
//! Rows (rows.rs): small keep-alive requests with 1, 8 and 64 clients
//! (req/s, p50/p99, proxy CPU); a new TLS connection per request with 8
//! clients; 1, 10 and 50 MB pushes and pulls (time, time added over
//! direct, peak RSS); pushes blocked at their first and at their last
//! attribute (time from the request head to the 403, gateway only); one
//! client's latency while the largest event is pushed on another
//! connection. Every loop is bounded in count and time. Writes
//! `target/bench/datapath.json` or `datapath-transparent.json`.
//! `--quick`: fewer requests, transfers up to 10 MB.

#[path = "../../tests/support/mod.rs"]
mod support;

mod client;
mod nginx;
mod procfs;
mod rows;
mod table;
mod targets;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::{tls_to, tunnel, Route};
use serde_json::json;
use support::*;

/// Explicit mode on loopback: direct, and the gateway through CONNECT.
async fn explicit(quick: bool) -> Vec<serde_json::Value> {
    let dir = TempDir::new("bench");
    let pull = Arc::new(Mutex::new(Vec::new()));
    let pull_body = pull.clone();
    let server_ca = dir.0.join("server-ca.crt");
    let (server, received) =
        misp_upstream("127.0.0.2:0".parse().unwrap(), "b.test", &server_ca, pull).await;
    gateway_ca(&dir.0.join("ca"));
    let cfg = json!({
        "allowlist": {"urls": [], "domains": []},
        "compartments_rules": {"can_reach": {"c1": ["c1", "c2"], "c2": ["c1", "c2"]}},
        "instances": {"a": instance_json("127.0.0.1", "a.test", 443, "c1"), "b": instance_json("127.0.0.2", "b.test", server.port(), "c2")},
        "gateway": {"tls": {"ca_cert": "ca/ca.crt", "ca_key": "ca/ca.key", "upstream_ca": "server-ca.crt", "use_system_roots": false}}
    });
    std::fs::write(dir.0.join("config.json"), cfg.to_string()).unwrap();
    let proxy: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1"))
        .parse()
        .unwrap();
    let mut gw = Gateway::explicit(&dir.0.join("config.json"), proxy, &[], dir.0.join("gw.log"));
    let routes = [
        Route {
            name: "direct",
            connect: tls_to(server, client_config(&server_ca)),
            pids: Vec::new(),
            filters: false,
        },
        Route {
            name: "gateway",
            connect: tunnel(
                proxy,
                server.port(),
                client_config(&dir.0.join("ca/ca.crt")),
            ),
            pids: vec![gw.child.id()],
            filters: true,
        },
    ];
    let rows = rows::measure(&routes, quick, &pull_body, &received).await;
    assert_eq!(gw.terminate(), Some(0));
    rows
}

/// Server address and ports of the transparent run: the gateway captures
/// the instance's port, nginx a port of its own, the direct port is not
/// captured (routed through the gateway's namespace untouched).
const SERVER: &str = "10.231.3.2";
const GATEWAY_PORT: u16 = 8443;
const DIRECT_PORT: u16 = 9443;
const NGINX_PORT: u16 = 7443;
const NGINX_LISTEN: u16 = 15002;

/// `--transparent` (root): the gateway behind nftables REDIRECT in its own
/// network namespace, client and server in theirs, and nginx beside the
/// gateway. Direct = the same server on a port the rules do not capture.
fn transparent(quick: bool) -> Vec<serde_json::Value> {
    use support::netns::{in_netns, join, prerequisites_met, run, Topology};
    assert!(
        prerequisites_met("datapath --transparent"),
        "needs root, ip and nft"
    );
    let topo = Topology::new();
    let dir = TempDir::new("bench-netns");
    let d = dir.0.clone();
    let bin = env!("CARGO_BIN_EXE_misp-guard-gw");
    gateway_ca(&d.join("ca"));
    let pull = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel::<Log>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ca_gw_leg, ca_direct, pull2) =
        (d.join("srv-ca.crt"), d.join("direct-ca.crt"), pull.clone());
    let srv = server_in_netns(&topo.srv, move || async move {
        let at = |port: u16| format!("{SERVER}:{port}").parse().unwrap();
        let (_, log) = misp_upstream(at(GATEWAY_PORT), "b.test", &ca_gw_leg, pull2.clone()).await;
        let _direct = misp_upstream(at(DIRECT_PORT), "b.test", &ca_direct, pull2).await;
        tx.send(log).unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(900), stop_rx).await;
    });
    let received = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("servers up");
    let cfg = json!({
        "allowlist": {"urls": [], "domains": []},
        "compartments_rules": {"can_reach": {"c1": ["c1", "c2"], "c2": ["c1", "c2"]}},
        "instances": {"a": instance_json("10.231.1.2", "a.test", 443, "c1"), "b": instance_json(SERVER, "b.test", GATEWAY_PORT, "c2")},
        "gateway": {"listeners": [{"mode": "redirect", "listen": "[::]:15001"}], "capture_interfaces": ["g0"],
                    "tls": {"ca_cert": "ca/ca.crt", "ca_key": "ca/ca.key", "upstream_ca": "srv-ca.crt", "use_system_roots": false}}
    });
    let cfg_path = d.join("config.json");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let rules = std::process::Command::new(bin)
        .args(["nft", "--config"])
        .arg(&cfg_path)
        .args(["--mode", "redirect"])
        .output()
        .unwrap();
    assert!(rules.status.success());
    std::fs::write(d.join("rules.nft"), &rules.stdout).unwrap();
    let apply = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/apply-nftables.sh");
    let rules_file = d.join("rules.nft");
    let apply_args = [
        "ip",
        "netns",
        "exec",
        &topo.gw,
        apply,
        "--rules",
        rules_file.to_str().unwrap(),
    ];
    run(&apply_args, None).unwrap();
    let mut gw = Gateway::start_wrapped(
        &["ip", "netns", "exec", &topo.gw],
        &["run", "--config", cfg_path.to_str().unwrap()],
        d.join("gw.log"),
    );
    let server = |port: u16| -> SocketAddr { format!("{SERVER}:{port}").parse().unwrap() };
    let gw_ca = d.join("ca/ca.crt");
    let mut routes = vec![
        Route {
            name: "direct",
            connect: tls_to(server(DIRECT_PORT), client_config(&d.join("direct-ca.crt"))),
            pids: Vec::new(),
            filters: false,
        },
        Route {
            name: "gateway",
            connect: tls_to(server(GATEWAY_PORT), client_config(&gw_ca)),
            pids: vec![gw.child.id()],
            filters: true,
        },
    ];
    let mut ngx = None;
    if Path::new(nginx::BINARY).exists() {
        // Captured like the gateway: the client connects to the server's
        // address, REDIRECT on the compartment side hands it to nginx.
        topo.nft(&format!(
            "table inet mgw_bench_nginx {{
                chain capture {{
                    type nat hook prerouting priority dstnat; policy accept;
                    iifname \"g0\" ip daddr {SERVER} tcp dport {NGINX_PORT} redirect to :{NGINX_LISTEN}
                }}
            }}"
        ))
        .unwrap();
        let nginx_dir = d.join("nginx");
        std::fs::create_dir_all(&nginx_dir).unwrap();
        // As many workers as the gateway's runtime has worker threads
        // (tokio's default: one per CPU).
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let setup = nginx::Setup {
            dir: &nginx_dir,
            port: NGINX_LISTEN,
            upstream: server(GATEWAY_PORT),
            server_name: "b.test",
            ca_cert: &gw_ca,
            ca_key: &d.join("ca/ca.key"),
            upstream_ca: &d.join("srv-ca.crt"),
            workers,
        };
        let gw_ns = topo.gw.clone();
        let listening = move || {
            join(in_netns(&gw_ns, || async {
                tokio::net::TcpStream::connect(("127.0.0.1", NGINX_LISTEN))
                    .await
                    .is_ok()
            }))
        };
        let n = nginx::Nginx::start(&topo.gw, &setup, SERVER.parse().unwrap(), listening);
        println!("nginx {}: {workers} worker process(es)", nginx::BINARY);
        routes.push(Route {
            name: "nginx",
            connect: tls_to(server(NGINX_PORT), client_config(&gw_ca)),
            pids: n.pids.clone(),
            filters: false,
        });
        ngx = Some(n);
    } else {
        println!("{} not found: no nginx column", nginx::BINARY);
    }
    let rows = join(in_netns(&topo.cli, move || async move {
        rows::measure(&routes, quick, &pull, &received).await
    }));
    if let Some(mut n) = ngx {
        assert!(n.stop(), "nginx did not stop: {}", n.logs());
    }
    assert_eq!(gw.terminate(), Some(0));
    let _ = stop_tx.send(());
    let _ = srv.join();
    rows
}

/// Runs the upstream server `f` on a thread inside namespace `ns`, on a
/// two-worker runtime as in the loopback run (tests' `in_netns` has one
/// thread): a server thread busy parsing a 50 MB push would otherwise stall
/// every other request, whatever route it came through. Threads the
/// runtime starts inherit the namespace of the thread that starts them.
fn server_in_netns<F, Fut>(ns: &str, f: F) -> std::thread::JoinHandle<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f())
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // Other work on the machine shows in every row: say how much there was.
    println!("load average: {}", load_average());
    if std::env::args().any(|a| a == "--transparent") {
        println!("== transparent REDIRECT, network namespaces");
        let rows = tokio::task::spawn_blocking(move || transparent(quick))
            .await
            .unwrap();
        write_results("datapath-transparent.json", &rows);
        targets::print(&rows);
        println!("load average: {}", load_average());
        return;
    }
    let rows = explicit(quick).await;
    write_results("datapath.json", &rows);
    println!("load average: {}", load_average());
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`).
fn load_average() -> String {
    let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// Writes `rows` to target/bench/`name` (read by scripts/bench.sh).
fn write_results(name: &str, rows: &[serde_json::Value]) {
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    let _ = std::fs::create_dir_all(&out);
    let path = out.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(rows).unwrap()).unwrap();
    println!("results: {}", path.display());
}
