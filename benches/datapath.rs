//! Data-path benchmark (`cargo bench --bench datapath`): the gateway binary
//! in explicit-proxy mode on loopback, TLS on both legs, side by side with a
//! direct client→server TLS connection in the same run.
//!
//! Rows: small keep-alive requests (`GET /servers/getVersion`) with 1, 8 and
//! 64 concurrent clients (requests/s, p50/p99 latency), and event pushes of
//! 1, 10 and 50 MB (time per push, MB/s, gateway peak RSS). Every loop is
//! bounded in count and time. Writes `target/bench/datapath.json`.
//! `--quick`: fewer requests, pushes up to 10 MB.

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use misp_guard_gw::http::io::HttpIo;
use misp_guard_gw::tls;
use serde_json::json;
use support::*;
use tokio::net::TcpStream;

type Client = HttpIo<tokio_rustls::client::TlsStream<TcpStream>>;

async fn direct(server: SocketAddr, ca: &Path) -> Client {
    let config = client_config(ca);
    let tcp = TcpStream::connect(server).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    HttpIo::new(
        tls::connect(config, "b.test", tcp, Duration::from_secs(5))
            .await
            .unwrap(),
    )
}

fn get() -> Vec<u8> {
    b"GET /servers/getVersion HTTP/1.1\r\nHost: b.test\r\nAuthorization: k\r\nAccept: application/json\r\n\r\n".to_vec()
}

fn push(body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST /events/add/metadata:1 HTTP/1.1\r\nHost: b.test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// A MISP-shaped event of about `size` bytes that the policy allows, or
/// (`blocked_last`) blocks at its very last attribute, so the gateway must
/// read and inspect all of it before refusing.
fn event(size: usize, blocked_last: bool) -> Vec<u8> {
    let mut attrs = Vec::new();
    let mut len = 0;
    let mut i = 0;
    while len < size {
        let a = json!({"id": i.to_string(), "type": "ip-dst", "category": "Network activity", "to_ids": true,
            "uuid": format!("{:08x}-0000-4000-8000-{:012x}", i, i), "distribution": "5", "comment": "bench \"x\"",
            "value": format!("198.51.{}.{}", (i / 250) % 250, i % 250), "timestamp": "1700000000",
            "Tag": [{"name": "tlp:green"}]});
        len += a.to_string().len() + 1;
        attrs.push(a);
        i += 1;
    }
    if blocked_last {
        attrs.last_mut().unwrap()["Tag"] = json!([{"name": "tlp:red"}]);
    }
    json!({"Event": {"info": "bench", "distribution": "1", "Tag": [{"name": "tlp:green"}], "Attribute": attrs, "Object": []}})
        .to_string()
        .into_bytes()
}

struct Latency {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
}

/// `clients` keep-alive connections issuing GETs for `per_client` requests
/// or `budget`, whichever ends first.
async fn small_requests<F, Fut>(
    connect: F,
    clients: usize,
    per_client: usize,
    budget: Duration,
) -> Latency
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Client>,
{
    let mut conns = Vec::new();
    for _ in 0..clients {
        let mut c = connect().await;
        // One untimed request first: through the gateway it opens the
        // upstream connection (TCP + TLS handshake), which a direct client
        // did in connect(). Timed rows are then keep-alive steady state.
        c.write_all(&get()).await.unwrap();
        assert_eq!(
            read_answer(&mut c, "GET").await.expect("answer").status,
            200
        );
        conns.push(c);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut c in conns {
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_client);
            let req = get();
            for _ in 0..per_client {
                if started.elapsed() > budget {
                    break;
                }
                let t = Instant::now();
                c.write_all(&req).await.unwrap();
                let a = read_answer(&mut c, "GET").await.expect("answer");
                assert_eq!(a.status, 200);
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort();
    let pct =
        |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1e6;
    Latency {
        rps: all.len() as f64 / secs,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    }
}

/// User + system CPU time of a process (Linux `/proc/PID/stat`).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name start with the state;
    // utime and stime are the 12th and 13th of them, in clock ticks (100
    // per second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    (tick(11) + tick(12)) as f64 / 100.0
}

fn vm_hwm_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Best of three pushes (`push`) or pulls of `body` over one connection.
async fn measure_transfer(mut c: Client, push: bool, body: &[u8]) -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let t = if push {
            timed_push(&mut c, body).await
        } else {
            timed_pull(&mut c, body.len()).await
        };
        best = best.min(t);
    }
    best
}

async fn timed_pull(c: &mut Client, len: usize) -> Duration {
    let req = b"GET /events/view/385283a1-b5e0-4e10-a532-dce11c365a56 HTTP/1.1\r\nHost: b.test\r\nAccept: application/json\r\n\r\n";
    let t = Instant::now();
    c.write_all(req).await.unwrap();
    let a = read_answer(c, "GET").await.expect("answer");
    assert_eq!((a.status, a.body.len()), (200, len));
    t.elapsed()
}

async fn timed_push(c: &mut Client, body: &[u8]) -> Duration {
    timed_push_answered(c, body, 200).await
}

async fn timed_push_answered(c: &mut Client, body: &[u8], status: u16) -> Duration {
    let req = push(body);
    let t = Instant::now();
    c.write_all(&req).await.unwrap();
    let a = read_answer(c, "POST").await.expect("answer");
    assert_eq!(a.status, status);
    t.elapsed()
}

/// Best of three pushes the gateway refuses (a fresh connection each: the
/// gateway may close after a refusal).
async fn measure_blocked<V, VF>(via: V, body: &[u8]) -> Duration
where
    V: Fn() -> VF,
    VF: std::future::Future<Output = Client>,
{
    let mut best = Duration::MAX;
    for _ in 0..3 {
        best = best.min(timed_push_answered(&mut via().await, body, 403).await);
    }
    best
}

/// All rows: small requests and transfers, direct vs via the gateway.
async fn measure<D, DF, V, VF>(
    dir_conn: D,
    via: V,
    gw_pid: u32,
    quick: bool,
    pull_body: &Mutex<Vec<u8>>,
    received: &Log,
) -> Vec<serde_json::Value>
where
    D: Fn() -> DF + Copy,
    DF: std::future::Future<Output = Client>,
    V: Fn() -> VF + Copy,
    VF: std::future::Future<Output = Client>,
{
    let mut rows = Vec::new();
    println!(
        "{:<34} {:>12} {:>12} {:>9}",
        "small requests (GET getVersion)", "direct", "gateway", "ratio"
    );
    let per = if quick { 300 } else { 3000 };
    // --transfers-only / --small-only: one half of the rows (profiling).
    let client_counts: &[usize] = match std::env::args().any(|a| a == "--transfers-only") {
        true => &[],
        false => &[1, 8, 64],
    };
    for &clients in client_counts {
        let per_client = (per / clients).max(50);
        let budget = Duration::from_secs(if quick { 3 } else { 10 });
        let d = small_requests(dir_conn, clients, per_client, budget).await;
        let (cpu0, t0) = (cpu_seconds(gw_pid), Instant::now());
        let g = small_requests(via, clients, per_client, budget).await;
        let gw_cpu = (cpu_seconds(gw_pid) - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
        println!(
            "{:<34} {:>12} {:>12.0}",
            format!("{clients} client(s) gateway CPU %"),
            "",
            gw_cpu
        );
        rows.push(json!({"row": format!("{clients} clients gateway CPU %"), "gateway": gw_cpu}));
        for (what, dv, gv) in [
            ("req/s", d.rps, g.rps),
            ("p50 µs", d.p50_us, g.p50_us),
            ("p99 µs", d.p99_us, g.p99_us),
        ] {
            let shown = format!("{clients} client(s) {what}");
            latency_row(
                &mut rows,
                &shown,
                &format!("{clients} clients {what}"),
                dv,
                gv,
            );
        }
    }
    println!(
        "{:<34} {:>12} {:>12} {:>9} {:>14}",
        "push/pull (allowed, TLS both legs)", "direct ms", "gateway ms", "ratio", "gw peak RSS MB"
    );
    let sizes: &[usize] = if std::env::args().any(|a| a == "--small-only") {
        &[]
    } else if quick {
        &[1 << 20, 10 << 20]
    } else {
        &[1 << 20, 10 << 20, 50 << 20]
    };
    for &size in sizes {
        let body = event(size, false);
        let mb = body.len() as f64 / 1e6;
        *pull_body.lock().unwrap() = body.clone();
        for (what, push) in [("push", true), ("pull", false)] {
            // Reset the gateway's peak-RSS mark so each row reports its own.
            let _ = std::fs::write(format!("/proc/{gw_pid}/clear_refs"), "5");
            let d = measure_transfer(dir_conn().await, push, &body).await;
            let g = measure_transfer(via().await, push, &body).await;
            received.lock().unwrap().clear();
            let shown = format!(
                "{what} {mb:.1} MB ({:.0} MB/s via gw)",
                mb / g.as_secs_f64()
            );
            let key = format!("{what} {mb:.1} MB");
            transfer_row(&mut rows, &shown, &key, d, g, gw_pid);
        }
        // Blocked at the last attribute: the gateway reads and inspects it
        // all, then answers 403; compared with the direct allowed push.
        let blocked = event(size, true);
        let _ = std::fs::write(format!("/proc/{gw_pid}/clear_refs"), "5");
        let d = measure_transfer(dir_conn().await, true, &body).await;
        received.lock().unwrap().clear();
        let g = measure_blocked(via, &blocked).await;
        assert!(
            received.lock().unwrap().is_empty(),
            "a blocked push reached the server"
        );
        let shown = format!("push {mb:.1} MB blocked at last attr");
        let key = format!("push {mb:.1} MB blocked at last attribute");
        transfer_row(&mut rows, &shown, &key, d, g, gw_pid);
    }
    if let Some(&size) = sizes.last() {
        // One client's small requests while another connection pushes the
        // largest event over and over: does inspecting it stall the rest?
        let body = event(size, false);
        let d = small_during_pushes(dir_conn, &body).await;
        let g = small_during_pushes(via, &body).await;
        received.lock().unwrap().clear();
        let mb = body.len() as f64 / 1e6;
        for (what, dv, gv) in [
            ("p50 µs", d.p50_us, g.p50_us),
            ("p99 µs", d.p99_us, g.p99_us),
        ] {
            let shown = format!("during {mb:.0} MB pushes: {what}");
            let key = format!("1 client during {mb:.0} MB pushes {what}");
            latency_row(&mut rows, &shown, &key, dv, gv);
        }
    }
    rows
}

/// Prints and records one direct-vs-gateway latency or rate row.
fn latency_row(rows: &mut Vec<serde_json::Value>, shown: &str, key: &str, dv: f64, gv: f64) {
    println!("{shown:<34} {dv:>12.0} {gv:>12.0} {:>9.2}", gv / dv);
    rows.push(json!({"row": key, "direct": dv, "gateway": gv, "ratio": gv / dv}));
}

/// Prints and records one transfer row: direct and gateway times and the
/// gateway's peak RSS since the caller reset it.
fn transfer_row(
    rows: &mut Vec<serde_json::Value>,
    shown: &str,
    key: &str,
    d: Duration,
    g: Duration,
    gw_pid: u32,
) {
    let (dm, gm) = (d.as_secs_f64() * 1e3, g.as_secs_f64() * 1e3);
    let rss = vm_hwm_kb(gw_pid) as f64 / 1024.0;
    println!(
        "{shown:<34} {dm:>12.1} {gm:>12.1} {:>9.2} {rss:>14.1}",
        gm / dm
    );
    rows.push(
        json!({"row": key, "direct_ms": dm, "gateway_ms": gm, "added_ms": gm - dm,
        "gateway_peak_rss_mb": rss}),
    );
}

/// Small requests on one connection while another pushes `body`
/// repeatedly (at most 3 s or 20 pushes).
async fn small_during_pushes<F, Fut>(connect: F, body: &[u8]) -> Latency
where
    F: Fn() -> Fut + Copy,
    Fut: std::future::Future<Output = Client>,
{
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut pusher = connect().await;
    let (stop2, body) = (stop.clone(), body.to_vec());
    let pushes = tokio::spawn(async move {
        for _ in 0..20 {
            if stop2.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            timed_push(&mut pusher, &body).await;
        }
    });
    let lat = small_requests(connect, 1, 100_000, Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    pushes.await.unwrap();
    lat
}

/// `--transparent` (root): the same rows with the gateway behind nftables
/// REDIRECT in its own network namespace, client and server in theirs
/// (topology of tests/support/netns.rs). Direct = the same server on a
/// port the rules do not capture.
fn transparent(quick: bool) -> Vec<serde_json::Value> {
    use support::netns::{in_netns, prerequisites_met, run, Topology};
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
    let srv = in_netns(&topo.srv, move || async move {
        let (_, log) = misp_upstream(
            "10.231.3.2:8443".parse().unwrap(),
            "b.test",
            &ca_gw_leg,
            pull2.clone(),
        )
        .await;
        let _direct = misp_upstream(
            "10.231.3.2:9443".parse().unwrap(),
            "b.test",
            &ca_direct,
            pull2,
        )
        .await;
        tx.send(log).unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(900), stop_rx).await;
    });
    let received = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("servers up");
    let cfg = json!({
        "allowlist": {"urls": [], "domains": []},
        "compartments_rules": {"can_reach": {"c1": ["c1", "c2"], "c2": ["c1", "c2"]}},
        "instances": {"a": instance_json("10.231.1.2", "a.test", 443, "c1"), "b": instance_json("10.231.3.2", "b.test", 8443, "c2")},
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
    run(
        &[
            "ip",
            "netns",
            "exec",
            &topo.gw,
            apply,
            "--rules",
            d.join("rules.nft").to_str().unwrap(),
        ],
        None,
    )
    .unwrap();
    let mut gw = Gateway::start_wrapped(
        &["ip", "netns", "exec", &topo.gw],
        &["run", "--config", cfg_path.to_str().unwrap()],
        d.join("gw.log"),
    );
    let gw_pid = gw.child.id();
    let (gw_ca, direct_ca) = (d.join("ca/ca.crt"), d.join("direct-ca.crt"));
    let rows = support::netns::join(in_netns(&topo.cli, move || async move {
        let via = || async { direct("10.231.3.2:8443".parse().unwrap(), &gw_ca).await };
        let dir_conn = || async { direct("10.231.3.2:9443".parse().unwrap(), &direct_ca).await };
        measure(dir_conn, via, gw_pid, quick, &pull, &received).await
    }));
    assert_eq!(gw.terminate(), Some(0));
    let _ = stop_tx.send(());
    let _ = srv.join();
    rows
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    if std::env::args().any(|a| a == "--transparent") {
        println!("== transparent REDIRECT, network namespaces");
        let rows = tokio::task::spawn_blocking(move || transparent(quick))
            .await
            .unwrap();
        write_results("datapath-transparent.json", &rows);
        return;
    }
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
    let mut gw = Gateway::start(
        &[
            "run",
            "--config",
            dir.0.join("config.json").to_str().unwrap(),
            "--explicit",
            &proxy.to_string(),
        ],
        dir.0.join("gw.log"),
    );
    let gw_pid = gw.child.id();
    let gw_ca = dir.0.join("ca/ca.crt");
    let port = server.port();
    let via = || {
        let gw_ca = gw_ca.clone();
        async move {
            let c = connect_tunnel(proxy, "b.test", port, &gw_ca)
                .await
                .expect("tunnel");
            c
        }
    };
    let dir_conn = || {
        let ca = server_ca.clone();
        async move { direct(server, &ca).await }
    };

    let rows = measure(dir_conn, via, gw_pid, quick, &pull_body, &received).await;
    assert_eq!(gw.terminate(), Some(0));
    write_results("datapath.json", &rows);
}

/// Writes `rows` to target/bench/`name` (read by scripts/bench.sh).
fn write_results(name: &str, rows: &[serde_json::Value]) {
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    let _ = std::fs::create_dir_all(&out);
    let path = out.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(rows).unwrap()).unwrap();
    println!("results: {}", path.display());
}
