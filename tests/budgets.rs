//! Budgets through the binary on loopback. Connections over
//! `gateway.limits.max_connections_per_client` or `max_connections` are
//! closed on accept with a log line, the admitted ones are served, and a
//! closed connection gives its place back. Bodies that would take the
//! buffered bytes over `gateway.limits.max_buffered_bytes` are answered 503
//! with `Retry-After` and never reach the server.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::json;
use support::counting::*;
use support::*;

/// A connection to `to` from the loopback address `from`.
fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: SocketAddr = format!("{from}:0").parse().unwrap();
    s.bind(&local.into()).unwrap();
    s.connect(&to.into()).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Was the connection closed by the gateway without a byte?
fn closed_at_once(mut s: TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

/// Does the gateway answer a request on this connection?
fn served(mut s: TcpStream) -> bool {
    if s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").is_err() {
        return false;
    }
    let mut b = [0u8; 9];
    s.read_exact(&mut b).is_ok() && &b == b"HTTP/1.1 "
}

#[test]
fn connections_over_budget_are_closed_and_places_come_back() {
    let dir = TempDir::new("budgets");
    gateway_ca(&dir.0.join("ca"));
    let port = free_port("127.0.0.1");
    let config = json!({
        "allowlist": {"urls": [], "domains": []},
        "compartments_rules": {"can_reach": {"c1": ["c1"]}},
        "instances": {"a": instance_json("127.0.0.1", "a.test", 443, "c1")},
        "gateway": {"tls": {"ca_cert": "ca/ca.crt", "ca_key": "ca/ca.key",
                            "upstream_ca": "ca/ca.crt", "use_system_roots": false},
                    "limits": {"max_connections": 5, "max_connections_per_client": 3}}
    });
    let cfg = dir.0.join("config.json");
    std::fs::write(&cfg, config.to_string()).unwrap();
    let proxy: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let gw = Gateway::explicit(&cfg, proxy, &[], dir.0.join("gw.log"));

    // Three idle connections from one address are admitted; a fourth is not.
    let mut held: Vec<TcpStream> = (0..3).map(|_| connect_from("127.0.0.1", proxy)).collect();
    // Let the gateway accept them before the next one.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        closed_at_once(connect_from("127.0.0.1", proxy)),
        "{}",
        gw.logs()
    );
    // Another address still gets in, up to the total of five.
    held.push(connect_from("127.0.0.3", proxy));
    held.push(connect_from("127.0.0.3", proxy));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        closed_at_once(connect_from("127.0.0.7", proxy)),
        "{}",
        gw.logs()
    );

    let deadline = Instant::now() + Duration::from_secs(5);
    while !(gw.logs().contains("max_connections_per_client")
        && gw.logs().contains("(gateway.limits.max_connections)"))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let logs = gw.logs();
    assert!(
        logs.contains("connection refused: 3 connections open from this address"),
        "{logs}"
    );
    assert!(
        logs.contains("connection refused: 5 connections open (gateway.limits.max_connections)"),
        "{logs}"
    );

    // The admitted connections are served; closing one frees its place.
    assert!(served(held.pop().unwrap()), "{}", gw.logs());
    std::thread::sleep(Duration::from_millis(300));
    assert!(served(connect_from("127.0.0.7", proxy)), "{}", gw.logs());
    assert!(served(held.remove(0)), "{}", gw.logs());
    std::thread::sleep(Duration::from_millis(300));
    assert!(served(connect_from("127.0.0.1", proxy)), "{}", gw.logs());
}

/// A gateway in explicit mode in front of a counting upstream (instance
/// `b` on 127.0.0.2), with `gateway` as its gateway section (the TLS
/// material is added).
fn start_in_front_of_counting_upstream(tag: &str, gateway: serde_json::Value) -> Rig {
    start_in_front_of(tag, gateway, stored_event())
}

/// Gateway, its explicit listener, the upstream, what the upstream
/// counted, and the directory holding config and logs.
type Rig = (
    Gateway,
    SocketAddr,
    SocketAddr,
    std::sync::Arc<Counts>,
    TempDir,
);

/// The same with an upstream that answers `answer` to every request.
fn start_in_front_of(tag: &str, gateway: serde_json::Value, answer: Vec<u8>) -> Rig {
    let (upstream, counts) = counting_upstream_answering("127.0.0.2", Duration::ZERO, answer);
    let (gw, proxy, dir) = gateway_in_front_of(tag, gateway, upstream);
    (gw, proxy, upstream, counts, dir)
}

/// A gateway in explicit mode in front of `upstream` (instance `b` on
/// 127.0.0.2; `a` on 127.0.0.1), with `gateway` as its gateway section
/// (the TLS material is added): the gateway, its listener, and the
/// directory holding config and logs.
fn gateway_in_front_of(
    tag: &str,
    mut gateway: serde_json::Value,
    upstream: SocketAddr,
) -> (Gateway, SocketAddr, TempDir) {
    let dir = TempDir::new(tag);
    gateway_ca(&dir.0.join("ca"));
    gateway["tls"] = json!({"ca_cert": "ca/ca.crt", "ca_key": "ca/ca.key",
                            "upstream_ca": "ca/ca.crt", "use_system_roots": false});
    let config = json!({
        "allowlist": {"urls": [], "domains": []},
        "compartments_rules": {"can_reach": {"c1": ["c2"], "c2": ["c1"]}},
        "instances": {"a": instance_json("127.0.0.1", "a.test", 443, "c1"),
                      "b": instance_json("127.0.0.2", "b.test", upstream.port(), "c2")},
        "gateway": gateway
    });
    let cfg = dir.0.join("config.json");
    std::fs::write(&cfg, config.to_string()).unwrap();
    let proxy: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1"))
        .parse()
        .unwrap();
    let gw = Gateway::explicit(&cfg, proxy, &[], dir.0.join("gw.log"));
    (gw, proxy, dir)
}

fn client(proxy: SocketAddr) -> TcpStream {
    let c = TcpStream::connect(proxy).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c
}

#[test]
fn bodies_over_the_buffer_budget_get_503_and_never_reach_the_server() {
    let (gw, proxy, upstream, counts, _dir) = start_in_front_of_counting_upstream(
        "buffered",
        json!({"limits": {"max_body_bytes": 1_000_000, "max_buffered_bytes": 1_500_000}}),
    );
    let push =
        |len: usize| request_head("POST", "b.test", upstream.port(), "/events/add", Some(len));
    let big = event_of_size("6f1e2d3c-4b5a-4968-8776-655443322110", 900_000);
    let small = event_of_size("7a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d", 700_000);

    // One push declares 900 kB and sends half: its reservation is held.
    let mut slow = client(proxy);
    slow.write_all(&push(big.len())).unwrap();
    slow.write_all(&big[..big.len() / 2]).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    // A second one of 700 kB does not fit in 1.5 MB: 503 with Retry-After,
    // answered although its body is sent in full (drained, not reset).
    let mut refused = client(proxy);
    refused.write_all(&push(small.len())).unwrap();
    refused.write_all(&small).unwrap();
    let (status, head, body) = read_response(&mut refused).expect("an answer, not a reset");
    assert_eq!(status, 503, "{head}\n{}", gw.logs());
    assert!(head.contains("\r\nRetry-After: 5\r\n"), "{head}");
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let reason = body["errors"].as_str().unwrap();
    let expected = format!(
        "body buffer budget exceeded: {} bytes buffered, {} more wanted, limit 1500000 (gateway.limits.max_buffered_bytes)",
        big.len(),
        small.len()
    );
    assert_eq!(reason, expected);

    // The held push completes and goes through whole; then the refused one,
    // sent again, fits: the reservations came back.
    slow.write_all(&big[big.len() / 2..]).unwrap();
    let (status, head, _) = read_response(&mut slow).unwrap();
    assert_eq!(status, 200, "{head}\n{}", gw.logs());
    let mut again = client(proxy);
    again.write_all(&push(small.len())).unwrap();
    again.write_all(&small).unwrap();
    assert_eq!(read_response(&mut again).unwrap().0, 200, "{}", gw.logs());
    assert_eq!((counts.complete(), counts.partial()), (2, 0));
    assert_eq!(
        counts.bytes.load(std::sync::atomic::Ordering::SeqCst),
        (big.len() + small.len()) as u64
    );

    // Chunked uploads reserve as they grow: one that outgrows what is left
    // while another holds its reservation is cut off with 503 too.
    let mut slow = client(proxy);
    slow.write_all(&push(big.len())).unwrap();
    slow.write_all(&big[..10]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut chunked = client(proxy);
    let head = format!(
        "POST http://b.test:{port}/events/add HTTP/1.1\r\nHost: b.test:{port}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        port = upstream.port()
    );
    chunked.write_all(head.as_bytes()).unwrap();
    let mut answered = None;
    for piece in small.chunks(64 * 1024) {
        if chunked
            .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
            .is_err()
            || chunked.write_all(piece).is_err()
            || chunked.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    let _ = chunked.write_all(b"0\r\n\r\n");
    if let Some((status, head, _)) = read_response(&mut chunked) {
        answered = Some(status);
        assert!(head.contains("Retry-After"), "{head}");
    }
    assert_eq!(answered, Some(503), "{}", gw.logs());
    drop(slow);
    assert_eq!((counts.complete(), counts.partial()), (2, 0));

    // Logged (rate-limited) and the gateway still serves.
    let logs = gw.logs();
    assert!(
        logs.contains("request blocked: [POST]/events/add - body buffer budget exceeded"),
        "{logs}"
    );
    let mut pull = client(proxy);
    pull.write_all(&request_head(
        "GET",
        "b.test",
        upstream.port(),
        &format!("/events/view/{STORED_UUID}"),
        None,
    ))
    .unwrap();
    assert_eq!(read_response(&mut pull).unwrap().0, 200, "{}", gw.logs());
}

/// Sends `head`, then one byte of a body every half second until the
/// gateway answers (bounded: 40 bytes). The answer's status and text and
/// how long it took.
fn drip(proxy: SocketAddr, head: &[u8]) -> (u16, String, Duration) {
    let mut c = client(proxy);
    c.write_all(head).unwrap();
    let started = Instant::now();
    let mut reader = c.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        for _ in 0..40 {
            if c.write_all(b" ").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    let answer = read_response(&mut reader);
    let took = started.elapsed();
    let _ = reader.shutdown(std::net::Shutdown::Both);
    sender.join().unwrap();
    let (status, _, body) = answer.unwrap_or((0, String::new(), Vec::new()));
    (status, String::from_utf8_lossy(&body).into_owned(), took)
}

#[test]
fn a_dripping_body_is_cut_with_408_once_its_grace_is_spent() {
    // Pauses of 0.5 s are well inside body_secs; only the rate cuts.
    let (gw, proxy, upstream, counts, _dir) = start_in_front_of_counting_upstream(
        "drip",
        json!({"timeouts": {"body_secs": 5, "body_min_rate": 1024, "body_min_rate_grace_secs": 2}}),
    );
    let port = upstream.port();
    // An inspected push (buffered) and an uninspected POST (streamed to the
    // server as it comes), dripped at the same time.
    let push = request_head("POST", "b.test", port, "/events/add", Some(1000));
    let streamed = request_head(
        "POST",
        "b.test",
        port,
        "/events/filterEventIdsForPush",
        Some(1000),
    );
    let buffered = std::thread::spawn(move || drip(proxy, &push));
    let (s_status, s_text, s_took) = drip(proxy, &streamed);
    let (b_status, b_text, b_took) = buffered.join().unwrap();
    for (status, text, took) in [(b_status, &b_text, b_took), (s_status, &s_text, s_took)] {
        assert_eq!(status, 408, "{text}\n{}", gw.logs());
        assert!(
            text.contains(
                "body slower than 1024 bytes/s after 2 s (gateway.timeouts.body_min_rate)"
            ),
            "{text}"
        );
        // 2 s of grace, a few bytes' worth more; never the 20 s of the drip.
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(6),
            "{took:?}"
        );
    }
    // The push never reached the server; a fast one still does.
    assert_eq!(counts.complete(), 0);
    let body = event_of_size("8b3c4d5e-6f70-4a81-9b2c-3d4e5f607182", 900_000);
    let mut c = client(proxy);
    c.write_all(&request_head(
        "POST",
        "b.test",
        port,
        "/events/add",
        Some(body.len()),
    ))
    .unwrap();
    c.write_all(&body).unwrap();
    assert_eq!(read_response(&mut c).unwrap().0, 200, "{}", gw.logs());
    assert_eq!(counts.complete(), 1);
}

/// An upstream that answers every request with `fields` extra header fields.
fn upstream_with_header_fields(fields: usize) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming().take(4) {
            let Ok(mut s) = s else { continue };
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if !matches!(s.read(&mut b), Ok(1)) {
                    break;
                }
                head.push(b[0]);
            }
            let ev = stored_event();
            let mut answer = String::from("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n");
            for i in 0..fields {
                answer.push_str(&format!("X-Field-{i}: v\r\n"));
            }
            answer.push_str(&format!("Content-Length: {}\r\n\r\n", ev.len()));
            let _ = s.write_all(answer.as_bytes());
            let _ = s.write_all(&ev);
        }
    });
    addr
}

#[test]
fn header_count_and_size_limits_answer_431_for_requests_and_502_for_responses() {
    let (gw, proxy, upstream, _counts, _dir) = start_in_front_of_counting_upstream(
        "headers",
        json!({"limits": {"max_header_count": 20, "max_header_bytes": 4096}}),
    );
    let pull = |extra: &str| {
        let mut head = request_head(
            "GET",
            "b.test",
            upstream.port(),
            &format!("/events/view/{STORED_UUID}"),
            None,
        );
        head.truncate(head.len() - 2);
        head.extend_from_slice(extra.as_bytes());
        head.extend_from_slice(b"\r\n");
        let mut c = client(proxy);
        c.write_all(&head).unwrap();
        read_response(&mut c)
            .map(|(status, _, body)| (status, String::from_utf8_lossy(&body).into_owned()))
    };
    let fields = |n: usize| (0..n).map(|i| format!("X-{i}: v\r\n")).collect::<String>();
    // Host and Accept plus 18: exactly the limit.
    assert_eq!(pull(&fields(18)).unwrap().0, 200, "{}", gw.logs());
    let (status, text) = pull(&fields(19)).unwrap();
    assert_eq!(status, 431, "{text}");
    assert!(
        text.contains("more than 20 header fields (gateway.limits.max_header_count)"),
        "{text}"
    );
    let (status, text) = pull(&format!("X-Long: {}\r\n", "a".repeat(4096))).unwrap();
    assert_eq!(status, 431, "{text}");
    assert!(text.contains("gateway.limits.max_header_bytes"), "{text}");

    // The same limits hold for the server's answer: 502, none of it passed.
    drop(gw);
    let noisy = upstream_with_header_fields(25);
    let gateway = json!({"limits": {"max_header_count": 20}});
    let (gw, proxy, _dir) = gateway_in_front_of("headers-up", gateway, noisy);
    let mut c = client(proxy);
    c.write_all(&request_head(
        "GET",
        "b.test",
        noisy.port(),
        &format!("/events/view/{STORED_UUID}"),
        None,
    ))
    .unwrap();
    let (status, head, body) = read_response(&mut c).unwrap();
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 502, "{head}{text}\n{}", gw.logs());
    assert!(!head.contains("X-Field-"), "{head}");
    assert!(
        text.contains("upstream response: more than 20 header fields"),
        "{text}"
    );
}

#[test]
fn a_flood_of_refused_connections_leaves_a_few_lines_and_a_count() {
    let (gw, proxy, _upstream, _counts, _dir) = start_in_front_of_counting_upstream(
        "flood",
        json!({"limits": {"max_connections_per_client": 1}}),
    );
    let _held = connect_from("127.0.0.1", proxy);
    std::thread::sleep(Duration::from_millis(300));
    let flood = 60;
    for _ in 0..flood {
        assert!(closed_at_once(connect_from("127.0.0.1", proxy)));
    }
    // One more in a later second brings the count of the left-out lines.
    std::thread::sleep(Duration::from_millis(1100));
    assert!(closed_at_once(connect_from("127.0.0.1", proxy)));
    let deadline = Instant::now() + Duration::from_secs(5);
    let count = |logs: &str| {
        let lines = logs
            .matches("connection refused: 1 connections open from this address")
            .count();
        let summarized: usize = logs
            .lines()
            .filter_map(|l| l.split("connections: … ").nth(1))
            .filter_map(|rest| rest.split(' ').next()?.parse::<usize>().ok())
            .sum();
        (lines, summarized)
    };
    while count(&gw.logs()).0 + count(&gw.logs()).1 < flood + 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let logs = gw.logs();
    let (lines, summarized) = count(&logs);
    // At most 10 a second: the burst spans one or two windows, plus the
    // last line.
    assert!(lines <= 21, "{lines} lines:\n{logs}");
    assert_eq!(lines + summarized, flood + 1, "{logs}");
    assert!(
        logs.contains("more refused in the last second (not logged)"),
        "{logs}"
    );
}

/// `GET path` on the plain-HTTP metrics listener; the body.
fn get_text(addr: SocketAddr, path: &str) -> String {
    let mut c = client(addr);
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    out
}

#[test]
fn answers_over_the_buffer_budget_get_503_an_audit_record_and_a_metric() {
    let answer = event_of_size("1e2f3a4b-5c6d-4e7f-8a9b-0c1d2e3f4a5b", 700_000);
    let ops: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1"))
        .parse()
        .unwrap();
    let (gw, proxy, upstream, counts, dir) = start_in_front_of(
        "buffered-answer",
        json!({"limits": {"max_body_bytes": 1_000_000, "max_buffered_bytes": 1_500_000},
               "audit_log": "audit.jsonl", "metrics": {"listen": ops.to_string()}}),
        answer.clone(),
    );
    let port = upstream.port();
    // A held push takes 900 kB of the 1.5 MB.
    let push = event_of_size("6f1e2d3c-4b5a-4968-8776-655443322110", 900_000);
    let mut slow = client(proxy);
    slow.write_all(&request_head(
        "POST",
        "b.test",
        port,
        "/events/add",
        Some(push.len()),
    ))
    .unwrap();
    slow.write_all(&push[..1000]).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    // A pull whose 700 kB answer cannot be held: 503, none of the answer.
    let path = format!("/events/view/{STORED_UUID}");
    let mut c = client(proxy);
    c.write_all(&request_head("GET", "b.test", port, &path, None))
        .unwrap();
    let (status, head, body) = read_response(&mut c).unwrap();
    assert_eq!(status, 503, "{head}\n{}", gw.logs());
    assert!(head.contains("\r\nRetry-After: 5\r\n"), "{head}");
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("body buffer budget exceeded: "), "{text}");
    assert!(!text.contains("1e2f3a4b-5c6d"), "the answer leaked: {text}");

    // Audited as a block naming the budget, counted under its reason.
    let audit = dir.0.join("audit.jsonl");
    let deadline = Instant::now() + Duration::from_secs(5);
    let record = loop {
        let found = std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|r| r["status"] == 503);
        if let Some(r) = found {
            break r;
        }
        assert!(Instant::now() < deadline, "no audit record:\n{}", gw.logs());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(record["decision"], "block", "{record}");
    assert_eq!(record["path"], path.as_str(), "{record}");
    let reason = record["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("body buffer budget exceeded: ")
            && reason.ends_with("(gateway.limits.max_buffered_bytes)"),
        "{reason}"
    );
    let metrics = get_text(ops, "/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("misp_guard_gw_exchanges_total{")
                && l.contains(r#"decision="block""#)
                && l.contains(r#"reason="body buffer budget exceeded""#)),
        "{metrics}"
    );

    // With the push through, the same pull fits and is served whole.
    slow.write_all(&push[1000..]).unwrap();
    assert_eq!(read_response(&mut slow).unwrap().0, 200, "{}", gw.logs());
    let mut c = client(proxy);
    c.write_all(&request_head("GET", "b.test", port, &path, None))
        .unwrap();
    let (status, _, body) = read_response(&mut c).unwrap();
    assert_eq!((status, body.len()), (200, answer.len()), "{}", gw.logs());
    assert_eq!((counts.complete(), counts.partial()), (1, 0));
}

/// Writes a whole event push to `b.test` through the gateway before
/// reading its answer, as MISP's client does.
fn push_whole(proxy: SocketAddr, port: u16, body: &[u8]) -> Option<(u16, String, Vec<u8>)> {
    let mut c = client(proxy);
    let head = request_head("POST", "b.test", port, "/events/add", Some(body.len()));
    c.write_all(&head).unwrap();
    c.write_all(body).unwrap();
    read_response(&mut c)
}

/// An event push of about `size` bytes whose first attribute has a
/// blocked distribution (0).
fn blocked_at_first_attribute(uuid: &str, size: usize) -> Vec<u8> {
    let text = String::from_utf8(event_of_size(uuid, size)).unwrap();
    // The event's own distribution comes first; the first attribute's next.
    let at = text
        .match_indices(r#""distribution":"1""#)
        .nth(1)
        .unwrap()
        .0;
    format!("{}\"distribution\":\"0\"{}", &text[..at], &text[at + 18..]).into_bytes()
}

/// In monitor mode a push blocked while it arrives is still read whole and
/// forwarded, byte for byte, logged as one that would be blocked: pushes
/// parsed between reads (under 1 MiB) and on their own thread alike.
#[test]
fn a_monitored_push_blocked_early_is_forwarded_whole() {
    let gateway = json!({"instances": {"a": {"mode": "monitor"}}});
    let (gw, proxy, upstream, counts, _dir) =
        start_in_front_of_counting_upstream("monitored", gateway);
    let mut sent = 0;
    for (i, size) in [(1, 300_000), (2, 4 << 20)] {
        let uuid = format!("9c4d5e6f-7081-4a92-8b3c-4d5e6f70819{i}");
        let body = blocked_at_first_attribute(&uuid, size);
        sent += body.len() as u64;
        let (status, head, _) = push_whole(proxy, upstream.port(), &body).expect("an answer");
        assert_eq!(status, 200, "{head}\n{}", gw.logs());
        assert_eq!(counts.complete(), i, "{}", gw.logs());
        let got = counts.bytes.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(got, sent, "the server got every byte");
        let logs = gw.logs();
        assert!(
            logs.lines()
                .any(|l| l.contains("would be blocked (monitor mode, forwarded)")
                    && l.contains(&uuid)
                    && l.contains("distribution")),
            "{logs}"
        );
    }
    assert_eq!(counts.partial(), 0);
}

/// A push is read as it arrives (`engine::incremental`): one whose first
/// attribute is blocked is answered 403 while most of it is still unsent,
/// nothing of it reaches the server, and the client may still send the
/// rest (drained) without a reset.
#[test]
fn a_push_blocked_at_its_first_attribute_is_answered_before_the_rest_is_sent() {
    let (gw, proxy, upstream, counts, _dir) =
        start_in_front_of_counting_upstream("early", json!({}));
    let body = blocked_at_first_attribute("8b3c4d5e-6f70-4a81-9b2c-3d4e5f607182", 8 << 20);

    let mut c = client(proxy);
    let head = request_head(
        "POST",
        "b.test",
        upstream.port(),
        "/events/add",
        Some(body.len()),
    );
    c.write_all(&head).unwrap();
    c.write_all(&body[..64 * 1024]).unwrap();
    let (status, _, answer) = read_response(&mut c).expect("an answer before the rest is sent");
    assert_eq!(status, 403, "{}", gw.logs());
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    let reason = answer["errors"].as_str().unwrap();
    assert!(reason.contains("distribution"), "{reason}");
    // The rest is drained, not refused with a reset.
    c.write_all(&body[64 * 1024..]).unwrap();
    let logs = gw.logs();
    assert!(logs.contains("request blocked: [POST]"), "{logs}");
    assert!(
        logs.contains("8b3c4d5e-6f70-4a81-9b2c-3d4e5f607182"),
        "{logs}"
    );

    // A client that writes the whole push before it reads (MISP's does)
    // reads the 403 too, not a reset.
    let answer = push_whole(proxy, upstream.port(), &body);
    let (status, _, _) = answer.expect("an answer, not a reset");
    assert_eq!(status, 403, "{}", gw.logs());

    // The same push compressed as MISP sends it (gzip, or brotli when both
    // ends have PHP's brotli): decided from the first 16 KiB of the wire.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&body).unwrap();
    let gz = gz.finish().unwrap();
    let mut br = Vec::new();
    let params = brotli::enc::BrotliEncoderParams {
        quality: 1,
        ..Default::default()
    };
    brotli::BrotliCompress(&mut &body[..], &mut br, &params).unwrap();
    for (coding, wire) in [("gzip", gz), ("br", br)] {
        let head = request_head(
            "POST",
            "b.test",
            upstream.port(),
            "/events/add",
            Some(wire.len()),
        );
        let head = String::from_utf8(head).unwrap();
        let encoding = format!("\r\nContent-Encoding: {coding}\r\n\r\n");
        let head = head.replace("\r\n\r\n", &encoding);
        let mut c = client(proxy);
        c.write_all(head.as_bytes()).unwrap();
        c.write_all(&wire[..16 * 1024]).unwrap();
        let (status, _, _) = read_response(&mut c).expect("an answer before the rest is sent");
        assert_eq!(status, 403, "{coding}: {}", gw.logs());
        c.write_all(&wire[16 * 1024..]).unwrap();
    }
    assert_eq!((counts.complete(), counts.partial()), (0, 0));
}

/// A GET of event `uuid` from `b.test` through the gateway, as MISP's
/// puller asks for it.
fn pull(proxy: SocketAddr, port: u16, uuid: &str) -> TcpStream {
    let mut c = client(proxy);
    let path = format!("/events/view/{uuid}");
    c.write_all(&request_head("GET", "b.test", port, &path, None))
        .unwrap();
    c
}

/// An upstream on 127.0.0.2 that answers one request with `answer`'s head
/// and its first `first` bytes, then holds the rest until `release`
/// (bounded: 30 s). It then tells whether the gateway closed the
/// connection before the rest was sent (a read ends within 10 s rather
/// than waiting for more from the gateway, which sends nothing more).
fn upstream_holding_answer(
    answer: Vec<u8>,
    first: usize,
) -> (
    SocketAddr,
    std::sync::mpsc::Sender<()>,
    std::sync::mpsc::Receiver<bool>,
) {
    let listener = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (release, released) = std::sync::mpsc::channel();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        let _ = read_head(&mut s);
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            answer.len()
        );
        let _ = s.write_all(head.as_bytes());
        let _ = s.write_all(&answer[..first]);
        let _ = released.recv_timeout(Duration::from_secs(30));
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let closed = match s.read(&mut [0u8; 1]) {
            Ok(0) => true,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            Ok(_) => false,
        };
        let _ = done.send(closed);
    });
    (addr, release, finished)
}

/// A pulled event is read as it arrives too (`engine::response_body_reader`):
/// an answer whose first attribute is blocked is refused with 403 while the
/// upstream still holds most of it, none of it reaches the client, and the
/// upstream connection is closed rather than read to its end.
#[test]
fn a_pull_blocked_at_its_first_attribute_is_refused_before_the_rest_arrives() {
    let uuid = "7a2b3c4d-5e6f-4a70-8b91-a2b3c4d5e6f7";
    for (size, first) in [(300_000, 16 * 1024), (8 << 20, 256 * 1024)] {
        let answer = blocked_at_first_attribute(uuid, size);
        let (upstream, release, finished) = upstream_holding_answer(answer, first);
        let (gw, proxy, _dir) = gateway_in_front_of("pull-early", json!({}), upstream);

        let mut c = pull(proxy, upstream.port(), uuid);
        // The upstream sends the rest only once the client has its answer.
        let answer = read_response(&mut c);
        let _ = release.send(());
        let (status, _, body) = answer.expect("an answer while the upstream holds the rest");
        assert_eq!(status, 403, "{size} bytes: {}", gw.logs());
        let reason = serde_json::from_slice::<serde_json::Value>(&body).unwrap();
        let reason = reason["errors"].as_str().unwrap().to_string();
        assert!(reason.contains("distribution"), "{reason}");
        assert!(!String::from_utf8_lossy(&body).contains("vvvv"));
        let logs = gw.logs();
        assert!(
            logs.contains("request blocked: [GET]/events/view/"),
            "{logs}"
        );
        assert!(logs.contains(uuid), "{logs}");
        // The gateway closed the upstream connection instead of reading on.
        let closed = finished.recv_timeout(Duration::from_secs(50)).unwrap();
        assert!(closed, "{size} bytes: the upstream connection stayed open");
    }
}

/// Allowed pulls, read as they arrive (under 1 MiB between reads, from
/// 1 MiB on a thread of their own), reach the client byte for byte; in
/// monitor mode a pull blocked early is read whole and forwarded too,
/// logged as one that would be blocked.
#[test]
fn pulls_read_as_they_arrive_are_forwarded_whole_when_allowed_or_monitored() {
    for (monitor, blocked) in [(false, false), (true, true)] {
        for size in [300_000, 4 << 20] {
            let big = size >= 1 << 20;
            let uuid = format!(
                "6b1c2d3e-4f50-4a61-8b72-c3d4e5f6a7{}{}",
                blocked as u8, big as u8
            );
            let answer = match blocked {
                true => blocked_at_first_attribute(&uuid, size),
                false => event_of_size(&uuid, size),
            };
            let gateway = match monitor {
                true => json!({"instances": {"b": {"mode": "monitor"}}}),
                false => json!({}),
            };
            let (gw, proxy, upstream, _, _dir) =
                start_in_front_of("pull-whole", gateway, answer.clone());
            let mut c = pull(proxy, upstream.port(), &uuid);
            let (status, head, body) = read_response(&mut c).expect("an answer");
            assert_eq!(status, 200, "{head}\n{}", gw.logs());
            assert!(body == answer, "{size} bytes, forwarded byte for byte");
            if blocked {
                let logs = gw.logs();
                assert!(
                    logs.lines()
                        .any(|l| l.contains("would be blocked (monitor mode, forwarded)")
                            && l.contains(&uuid)),
                    "{logs}"
                );
            }
        }
    }
}
