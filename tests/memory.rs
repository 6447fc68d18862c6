//! Memory under load through the gateway binary on loopback (issue 13,
//! resource budgets): hundreds of slow connections and many large uploads
//! at once, over a small `gateway.limits.max_buffered_bytes`. The gateway's
//! peak RSS (`VmHWM` in `/proc/PID/status`) must stay within the budget
//! plus a fixed allowance, the uploads that do not fit must get a 503 (not
//! a reset), no upload may reach the server in part, and a normal sync pull
//! must succeed during the load and after it.

mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use support::counting::*;
use support::*;

const MIB: u64 = 1 << 20;
/// The buffer budget under test.
const BUDGET: u64 = 64 * MIB;
const UPLOAD: usize = 8 << 20;
const UPLOADS: usize = 40;
const SLOW_CONNECTIONS: usize = 300;
/// What the gateway may hold beyond the buffer budget (README, "Memory
/// under load"): its idle footprint, plus this much per open connection —
/// the size of a connection's read buffer, which also covers its task
/// (measured: 28 to 54 KiB per connection waiting in its head, debug
/// build)…
const PER_CONNECTION: u64 = 64 << 10;
/// …plus the engine's working memory for the bodies it inspects at once
/// and the allocator's slack.
const WORKING: u64 = 16 * MIB;

/// A `/proc/PID/status` field in bytes (`VmRSS`, `VmHWM`).
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn client(proxy: SocketAddr) -> TcpStream {
    let c = TcpStream::connect(proxy).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    c
}

/// One pull through the gateway; its status (0: no answer).
fn pull(proxy: SocketAddr, port: u16) -> u16 {
    let mut c = client(proxy);
    let path = format!("/events/view/{STORED_UUID}");
    if c.write_all(&request_head("GET", "b.test", port, &path, None))
        .is_err()
    {
        return 0;
    }
    read_response(&mut c).map_or(0, |(status, _, _)| status)
}

#[test]
fn many_large_uploads_stay_within_the_buffer_budget() {
    let started = Instant::now();
    let dir = TempDir::new("memory");
    gateway_ca(&dir.0.join("ca"));
    // A busy server: it reads each body 300 ms after its head, so the
    // gateway holds the bodies it forwards meanwhile.
    let (upstream, counts) = counting_upstream_slow("127.0.0.2", Duration::from_millis(300));
    let port = upstream.port();
    let config = json!({
        "allowlist": {"urls": [], "domains": []},
        "compartments_rules": {"can_reach": {"c1": ["c2"], "c2": ["c1"]}},
        "instances": {"a": instance_json("127.0.0.1", "a.test", 443, "c1"),
                      "b": instance_json("127.0.0.2", "b.test", port, "c2")},
        "gateway": {"tls": {"ca_cert": "ca/ca.crt", "ca_key": "ca/ca.key",
                            "upstream_ca": "ca/ca.crt", "use_system_roots": false},
                    "limits": {"max_body_bytes": 16 * MIB, "max_buffered_bytes": BUDGET}}
    });
    let cfg = dir.0.join("config.json");
    std::fs::write(&cfg, config.to_string()).unwrap();
    let proxy: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1"))
        .parse()
        .unwrap();
    let gw = Gateway::explicit(&cfg, proxy, &[], dir.0.join("gw.log"));
    let pid = gw.child.id();
    assert_eq!(pull(proxy, port), 200, "{}", gw.logs());
    let idle = status_bytes(pid, "VmRSS");

    // Hundreds of slow connections: each has sent part of a request head
    // and waits (the head timeout is 30 s, longer than this test's load).
    let mut slow: Vec<TcpStream> = (0..SLOW_CONNECTIONS)
        .map(|_| {
            let mut c = client(proxy);
            c.write_all(b"GET /events/view/").unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let with_slow = status_bytes(pid, "VmRSS");

    // Pulls keep going while the uploads run. (Seven 8.4 MB uploads fill
    // 59 of the 64 MiB and an eighth does not fit, so the pulls' small
    // answers always find room: a full budget would refuse them too.)
    let loading = Arc::new(AtomicBool::new(true));
    let puller = {
        let loading = loading.clone();
        std::thread::spawn(move || {
            let mut statuses = Vec::new();
            while loading.load(Ordering::SeqCst) && statuses.len() < 200 {
                statuses.push(pull(proxy, port));
                std::thread::sleep(Duration::from_millis(200));
            }
            statuses
        })
    };

    // Many large uploads at once, each a distinct event.
    let uploads: Vec<_> = (0..UPLOADS)
        .map(|i| {
            std::thread::spawn(move || {
                let uuid = format!("9d0e1f2a-3b4c-4d5e-8f6a-{i:012}");
                let body = event_of_size(&uuid, UPLOAD);
                let mut c = client(proxy);
                let head = request_head("POST", "b.test", port, "/events/add", Some(body.len()));
                // A refused upload is answered at its head; the gateway
                // drains the rest so the answer is read, not reset.
                let sent = c.write_all(&head).is_ok() && c.write_all(&body).is_ok();
                let answer = read_response(&mut c);
                (sent, answer.map(|(status, head, _)| (status, head)))
            })
        })
        .collect();
    let mut peak_sampled = 0;
    let answers: Vec<_> = uploads
        .into_iter()
        .map(|u| {
            while !u.is_finished() {
                peak_sampled = peak_sampled.max(status_bytes(pid, "VmRSS"));
                std::thread::sleep(Duration::from_millis(20));
            }
            u.join().unwrap()
        })
        .collect();
    loading.store(false, Ordering::SeqCst);
    let during = puller.join().unwrap();
    // VmHWM is the kernel's high-water mark; a sample can be a few pages
    // ahead of it (its counters are synchronised lazily).
    let peak = status_bytes(pid, "VmHWM").max(peak_sampled);
    let connections = (SLOW_CONNECTIONS + UPLOADS + 1) as u64;
    let allowance = idle + connections * PER_CONNECTION + WORKING;

    let ok = answers
        .iter()
        .filter(|(_, a)| matches!(a, Some((200, _))))
        .count();
    let shed = answers
        .iter()
        .filter(|(_, a)| matches!(a, Some((503, h)) if h.contains("Retry-After: 5")))
        .count();
    let logs = gw.logs();
    eprintln!(
        "memory: idle RSS {} KiB, with {SLOW_CONNECTIONS} slow connections {} KiB, peak (VmHWM) {} KiB \
         (sampled {} KiB), budget {} KiB + allowance {} KiB (idle + {connections} x {} KiB + {} KiB); uploads {ok} forwarded, {shed} shed with 503; \
         pulls during load {}; {:.1} s",
        idle / 1024,
        with_slow / 1024,
        peak / 1024,
        peak_sampled / 1024,
        BUDGET / 1024,
        allowance / 1024,
        PER_CONNECTION / 1024,
        WORKING / 1024,
        during.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        ok + shed,
        UPLOADS,
        "every upload answered 200 or 503: {answers:?}\n{logs}"
    );
    assert!(shed > 0 && ok > 0, "{ok} forwarded, {shed} shed\n{logs}");
    // The server got whole bodies only, one per 200.
    assert_eq!((counts.complete() as usize, counts.partial()), (ok, 0));
    // (Every upload's uuid has the same length, so every body too.)
    let body_len = event_of_size(&format!("9d0e1f2a-3b4c-4d5e-8f6a-{:012}", 0), UPLOAD).len();
    assert_eq!(counts.bytes.load(Ordering::SeqCst) as usize, ok * body_len);
    assert!(
        !during.is_empty() && during.iter().all(|s| *s == 200),
        "pulls during the load: {during:?}"
    );
    assert!(
        peak <= BUDGET + allowance,
        "peak RSS {} KiB over budget {} KiB + allowance {} KiB",
        peak / 1024,
        BUDGET / 1024,
        allowance / 1024
    );

    // After: the slow connections leave, a pull still works.
    slow.clear();
    assert_eq!(pull(proxy, port), 200, "{}", gw.logs());
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}
