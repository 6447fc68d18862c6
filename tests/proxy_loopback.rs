//! The data path end to end on loopback (no root needed): the real binary in
//! explicit-proxy mode, TLS on both legs, a MISP-like upstream that records
//! what it received. Pushes and pulls allowed and blocked, gzip and chunked
//! bodies, keep-alive and pipelining, refused CONNECTs, graceful shutdown.

mod support;

use std::io::Write as _;
use std::sync::{Arc, Mutex};

use serde_json::json;
use support::*;

const UUID: &str = "385283a1-b5e0-4e10-a532-dce11c365a56";

fn event(tags: &[&str]) -> Vec<u8> {
    let tags: Vec<_> = tags.iter().map(|t| json!({"name": t})).collect();
    json!({"Event": {"info": "loopback test", "distribution": "1", "Tag": tags,
        "Attribute": [{"type": "domain", "category": "Network activity", "value": "caf\u{e9}.example", "distribution": "5"}],
        "Object": []}})
    .to_string()
    .into_bytes()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn request(method: &str, path: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: b.test\r\nAuthorization: secret-auth-key\r\nAccept: application/json\r\n{extra}"
    );
    if !body.is_empty() && !extra.contains("Transfer-Encoding") {
        r.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    r.push_str("\r\n");
    let mut r = r.into_bytes();
    r.extend_from_slice(body);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_proxy_end_to_end() {
    let dir = TempDir::new("loopback");
    let pull_body = Arc::new(Mutex::new(event(&["tlp:green"])));
    let (server, received) = misp_upstream(
        "127.0.0.2:0".parse().unwrap(),
        "b.test",
        &dir.0.join("server-ca.crt"),
        pull_body.clone(),
    )
    .await;

    gateway_ca(&dir.0.join("ca"));
    let gw_port = free_port("127.0.0.1");
    let dead_port = free_port("127.0.0.4");
    let mut config = json!({
        "allowlist": {"urls": [], "domains": []},
        "compartments_rules": {"can_reach": {"c1": ["c1", "c2"], "c2": ["c1", "c2"], "c3": ["c3"]}},
        "instances": {
            "a": instance_json("127.0.0.1", "a.test", 443, "c1"),
            "b": instance_json("127.0.0.2", "b.test", server.port(), "c2"),
            "c": instance_json("127.0.0.3", "c.test", 443, "c3"),
            // Reachable by policy, but nothing listens there.
            "d": instance_json("127.0.0.4", "d.test", dead_port, "c2"),
        },
        "gateway": {"tls": {"ca_cert": "ca/ca.crt", "ca_key": "ca/ca.key", "upstream_ca": "server-ca.crt", "use_system_roots": false},
                    "limits": {"max_body_bytes": 1_000_000}}
    });
    let cfg = dir.0.join("config.json");
    std::fs::write(&cfg, config.to_string()).unwrap();
    let proxy: std::net::SocketAddr = format!("127.0.0.1:{gw_port}").parse().unwrap();
    let mut gw = Gateway::explicit(&cfg, proxy, &[], dir.0.join("gw.log"));
    let ca = dir.0.join("ca/ca.crt");
    let tunnel = || async {
        connect_tunnel(proxy, "b.test", server.port(), &ca)
            .await
            .expect("tunnel")
    };
    let seen = |path: &str| {
        received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect::<Vec<_>>()
    };

    // 1. An allowed push arrives byte-exact, reframed with Content-Length,
    //    and the sync credential still reaches the server.
    let mut c = tunnel().await;
    let ok = event(&["tlp:green"]);
    c.write_all(&request(
        "POST",
        "/events/add/metadata:1",
        "Content-Type: application/json\r\n",
        &ok,
    ))
    .await
    .unwrap();
    let a = read_answer(&mut c, "POST").await.expect("answer");
    assert_eq!(a.status, 200, "{}", gw.logs());
    let got = seen("/events/add/metadata:1");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, ok);
    assert_eq!(
        got[0].headers.get("authorization"),
        Some(&b"secret-auth-key"[..])
    );

    // 2. A blocked push is answered 403 and never reaches the server.
    let red = event(&["tlp:green", "tlp:red"]);
    let mut c = tunnel().await;
    c.write_all(&request(
        "POST",
        &format!("/events/edit/{UUID}"),
        "Content-Type: application/json\r\n",
        &red,
    ))
    .await
    .unwrap();
    let a = read_answer(&mut c, "POST").await.expect("answer");
    assert_misp_error(
        &a,
        403,
        "event has blocked tag: tlp:red",
        &format!("/events/edit/{UUID}"),
    );
    assert!(
        seen(&format!("/events/edit/{UUID}")).is_empty(),
        "blocked push reached the server"
    );
    assert!(
        gw.logs().contains(&format!(
            "request blocked: [POST]/events/edit/{UUID} - event has blocked tag: tlp:red"
        )),
        "{}",
        gw.logs()
    );
    assert!(
        !gw.logs().contains("secret-auth-key"),
        "credentials in the log"
    );

    // 3. gzip bodies: inspected decoded, forwarded as sent.
    let mut c = tunnel().await;
    let gz_red = gzip(&red);
    c.write_all(&request(
        "POST",
        "/events/add",
        "Content-Type: application/json\r\nContent-Encoding: gzip\r\n",
        &gz_red,
    ))
    .await
    .unwrap();
    assert_eq!(read_answer(&mut c, "POST").await.unwrap().status, 403);
    assert!(seen("/events/add").is_empty());
    let mut c = tunnel().await;
    let gz_ok = gzip(&ok);
    c.write_all(&request(
        "POST",
        "/events/add",
        "Content-Type: application/json\r\nContent-Encoding: gzip\r\n",
        &gz_ok,
    ))
    .await
    .unwrap();
    assert_eq!(read_answer(&mut c, "POST").await.unwrap().status, 200);
    assert_eq!(seen("/events/add")[0].body, gz_ok);

    // 4. A chunked push with Expect: 100-continue.
    let mut c = tunnel().await;
    let mut chunked = Vec::new();
    for part in ok.chunks(100) {
        chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    c.write_all(&request(
        "POST",
        "/events/add/chunked",
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n",
        &chunked,
    ))
    .await
    .unwrap();
    let cont = read_answer(&mut c, "POST").await.unwrap();
    let a = if cont.status == 100 {
        read_answer(&mut c, "POST").await.unwrap()
    } else {
        cont
    };
    assert_eq!(a.status, 200, "{}", gw.logs());
    let got = seen("/events/add/chunked");
    assert_eq!(got[0].body, ok);
    assert!(
        got[0].headers.get("expect").is_none(),
        "Expect must not be forwarded"
    );

    // 5. Pulls: allowed passes through, blocked becomes 403 with nothing of
    //    the upstream body.
    let mut c = tunnel().await;
    c.write_all(&request("GET", &format!("/events/view/{UUID}"), "", b""))
        .await
        .unwrap();
    let a = read_answer(&mut c, "GET").await.unwrap();
    assert_eq!((a.status, a.body.clone()), (200, event(&["tlp:green"])));
    *pull_body.lock().unwrap() = red.clone();
    c.write_all(&request("GET", &format!("/events/view/{UUID}"), "", b""))
        .await
        .unwrap();
    let a = read_answer(&mut c, "GET").await.unwrap();
    assert_misp_error(
        &a,
        403,
        "event has blocked tag: tlp:red",
        &format!("/events/view/{UUID}"),
    );

    // 6. Keep-alive and pipelining: two requests in one write, answered in order.
    let mut c = tunnel().await;
    let mut two = request("GET", "/servers/getVersion", "", b"");
    two.extend(request("HEAD", &format!("/events/view/{UUID}"), "", b""));
    c.write_all(&two).await.unwrap();
    assert_eq!(read_answer(&mut c, "GET").await.unwrap().status, 200);
    assert_eq!(read_answer(&mut c, "HEAD").await.unwrap().status, 200);
    let n = received.lock().unwrap().len();
    c.write_all(&request("GET", "/servers/getVersion", "", b""))
        .await
        .unwrap();
    assert_eq!(read_answer(&mut c, "GET").await.unwrap().status, 200);
    assert_eq!(received.lock().unwrap().len(), n + 1);

    // 7. Not a sync endpoint, smuggling-shaped framing, and refused CONNECTs.
    c.write_all(&request("GET", "/users", "", b""))
        .await
        .unwrap();
    assert_eq!(read_answer(&mut c, "GET").await.unwrap().status, 403);
    let mut c = tunnel().await;
    c.write_all(b"POST /events/add HTTP/1.1\r\nHost: b.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").await.unwrap();
    assert_eq!(read_answer(&mut c, "POST").await.unwrap().status, 400);
    assert_eq!(
        connect_tunnel(proxy, "evil.test", 443, &ca).await.err(),
        Some(403)
    );
    assert_eq!(
        connect_tunnel(proxy, "b.test", server.port() ^ 1, &ca)
            .await
            .err(),
        Some(403)
    );
    assert_eq!(
        connect_tunnel(proxy, "c.test", 443, &ca).await.err(),
        Some(403)
    );

    // 8. Limits and upstream failures get clear answers.
    let mut c = tunnel().await;
    // Declared too large: 413 at once, no 100 Continue, body never asked for.
    c.write_all(
        b"POST /events/add HTTP/1.1\r\nHost: b.test\r\nContent-Type: application/json\r\nContent-Length: 1500000\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(read_answer(&mut c, "POST").await.unwrap().status, 413);
    // Chunked, so the size shows only while reading: 413 as well.
    let mut c = tunnel().await;
    let mut chunked = b"POST /events/add HTTP/1.1\r\nHost: b.test\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..20 {
        chunked.extend_from_slice(format!("{:x}\r\n", 60_000).as_bytes());
        chunked.extend(std::iter::repeat_n(b' ', 60_000));
        chunked.extend_from_slice(b"\r\n");
    }
    let _ = c.write_all(&chunked).await;
    assert_eq!(
        read_answer(&mut c, "POST").await.map(|a| a.status),
        Some(413)
    );
    let mut c = tunnel().await;
    let huge_header = format!("X-Big: {}\r\n", "a".repeat(70_000));
    c.write_all(&request("GET", "/servers/getVersion", &huge_header, b""))
        .await
        .unwrap();
    assert_eq!(read_answer(&mut c, "GET").await.unwrap().status, 431);
    let mut c = connect_tunnel(proxy, "d.test", dead_port, &ca)
        .await
        .expect("tunnel to d");
    c.write_all(&request("GET", "/servers/getVersion", "", b"").replace_host("d.test"))
        .await
        .unwrap();
    assert_eq!(
        read_answer(&mut c, "GET").await.unwrap().status,
        502,
        "{}",
        gw.logs()
    );

    // 9. Upstream pins, switched by SIGHUP reloads: a wrong pin is a 502,
    //    the right one passes.
    let right_pin = {
        let tcp = tokio::net::TcpStream::connect(server).await.unwrap();
        let config = client_config(&dir.0.join("server-ca.crt"));
        let tls =
            misp_guard_gw::tls::connect(config, "b.test", tcp, std::time::Duration::from_secs(5))
                .await
                .unwrap();
        let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        misp_guard_gw::tls::format_pin(&misp_guard_gw::tls::certificate_pin(&leaf))
    };
    for (pin, want) in [("00".repeat(32), 502), (right_pin, 200)] {
        config["gateway"]["instances"] = json!({"b": {"upstream_pin_sha256": pin}});
        std::fs::write(&cfg, config.to_string()).unwrap();
        let reloads = gw.logs().matches("policy reloaded").count();
        std::process::Command::new("kill")
            .args(["-HUP", &gw.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while gw.logs().matches("policy reloaded").count() == reloads {
            assert!(
                std::time::Instant::now() < deadline,
                "no reload: {}",
                gw.logs()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let mut c = tunnel().await;
        c.write_all(&request("GET", "/servers/getVersion", "", b""))
            .await
            .unwrap();
        assert_eq!(
            read_answer(&mut c, "GET").await.unwrap().status,
            want,
            "pin {pin}: {}",
            gw.logs()
        );
    }

    // 10. SIGTERM: clean exit.
    assert_eq!(gw.terminate(), Some(0), "{}", gw.logs());
}

/// A refusal as MISP's sync client reads it: JSON in the shape of MISP's
/// API errors, the block reason in `errors`.
fn assert_misp_error(a: &Answer, status: u16, reason: &str, url: &str) {
    assert_eq!(a.status, status, "{:?}", String::from_utf8_lossy(&a.body));
    let ct = a.headers.get("content-type").unwrap_or_default();
    assert!(ct.starts_with(b"application/json"), "{ct:?}");
    let body: serde_json::Value = serde_json::from_slice(&a.body).expect("JSON refusal");
    assert_eq!(body["errors"], reason, "{body}");
    assert_eq!(body["url"], url, "{body}");
    assert_eq!(body["name"], reason, "{body}");
    assert_eq!(body["message"], reason, "{body}");
}

/// A request head sent live and through `evaluate`: method, target,
/// headers, the status both must give.
type HeadCase<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], u16);

/// Refusals that depend only on the request head, the answers to event
/// pushes, and the JSON shape of every refusal, through the live gateway —
/// each head refusal also through `evaluate`, which must agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_push_answers() {
    let dir = TempDir::new("loopback-refusals");
    let (server, received) = misp_upstream(
        "127.0.0.2:0".parse().unwrap(),
        "b.test",
        &dir.0.join("server-ca.crt"),
        Arc::new(Mutex::new(event(&["tlp:green"]))),
    )
    .await;
    gateway_ca(&dir.0.join("ca"));
    let gw_port = free_port("127.0.0.1");
    let mut b = instance_json("127.0.0.2", "b.test", server.port(), "c2");
    // What b answers is read with b's rules: it may hold tlp:amber events
    // but not hand them out. a's own rules allow amber to leave.
    b["taxonomies_rules"]["blocked_tags"] = json!(["tlp:red", "tlp:amber"]);
    let config = json!({
        "allowlist": {"urls": [], "domains": []},
        "compartments_rules": {"can_reach": {"c1": ["c2"], "c2": ["c1"]}},
        "instances": {"a": instance_json("127.0.0.1", "a.test", 443, "c1"), "b": b},
        "gateway": {"tls": {"ca_cert": "ca/ca.crt", "ca_key": "ca/ca.key", "upstream_ca": "server-ca.crt", "use_system_roots": false},
                    "limits": {"max_body_bytes": 1_000_000}}
    });
    let cfg = dir.0.join("config.json");
    std::fs::write(&cfg, config.to_string()).unwrap();
    let proxy: std::net::SocketAddr = format!("127.0.0.1:{gw_port}").parse().unwrap();
    let mut gw = Gateway::explicit(&cfg, proxy, &[], dir.0.join("gw.log"));
    let ca = dir.0.join("ca/ca.crt");
    let tunnel = || async {
        connect_tunnel(proxy, "b.test", server.port(), &ca)
            .await
            .expect("tunnel")
    };

    // 1. Head refusals: the live status equals evaluate's, for each.
    let cases: &[HeadCase] = &[
        (
            "GET",
            "/servers/getVersion",
            &[("Upgrade", "websocket")],
            403,
        ),
        (
            "POST",
            "/events/add",
            &[("Upgrade", "h2c"), ("Content-Length", "0")],
            403,
        ),
        ("CONNECT", "b.test:443", &[], 403),
        ("get", "/servers/getVersion", &[], 403),
        ("Post", "/events/add", &[("Content-Length", "0")], 403),
        ("TRACE", "/servers/getVersion", &[], 403),
        (
            "POST",
            "/events/add",
            &[("Expect", "200-ok"), ("Content-Length", "2")],
            417,
        ),
        (
            "GET",
            "/servers/getVersion",
            &[("Expect", "100-continue"), ("Expect", "100-continue")],
            417,
        ),
        ("GET", "/servers/getVersion", &[("Host", "a.test")], 403),
        (
            "GET",
            "/servers/getVersion",
            &[("Host", "b.test"), ("Host", "b.test")],
            400,
        ),
        ("GET", "/servers/getVersion", &[("Host", "b.test:x")], 400),
        // Controls: the same heads without the refused part pass.
        ("GET", "/servers/getVersion", &[("Host", "127.0.0.2")], 200),
        ("GET", "/servers/getVersion", &[], 200),
        (
            "GET",
            "/servers/getVersion",
            &[("Expect", "100-continue")],
            200,
        ),
    ];
    let mut flows = String::new();
    let mut live = Vec::new();
    for (method, path, headers, want) in cases {
        let extra: String = headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}\r\n"))
            .collect();
        let mut c = tunnel().await;
        let host = match headers.iter().any(|(n, _)| *n == "Host") {
            true => "",
            false => "Host: b.test\r\n",
        };
        let raw = format!("{method} {path} HTTP/1.1\r\n{host}{extra}\r\n");
        c.write_all(raw.as_bytes()).await.unwrap();
        let a = read_answer(&mut c, method).await.expect("answer");
        assert_eq!(
            a.status,
            *want,
            "live {method} {path} {headers:?}: {}",
            gw.logs()
        );
        if *want != 200 {
            let body: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
            assert_eq!(body["url"], *path);
            live.push((a.status, body["errors"].as_str().unwrap().to_string()));
        } else {
            live.push((a.status, String::new()));
        }
        let mut hs = serde_json::Map::new();
        for (n, v) in headers.iter() {
            let slot = hs.entry(n.to_string()).or_insert(json!([]));
            slot.as_array_mut().unwrap().push(json!(v));
        }
        let flow = json!({"client_ip": "127.0.0.1", "host": "b.test", "port": server.port(),
            "method": method, "path": path, "request_headers": hs});
        flows.push_str(&format!("{flow}\n"));
    }
    let flows_file = dir.0.join("flows.jsonl");
    std::fs::write(&flows_file, flows).unwrap();
    let out = gateway_cli(&[
        "evaluate",
        "--config",
        cfg.to_str().unwrap(),
        flows_file.to_str().unwrap(),
    ]);
    let verdicts: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(verdicts.len(), cases.len());
    for ((case, v), (status, reason)) in cases.iter().zip(&verdicts).zip(&live) {
        if *status == 200 {
            assert_eq!(v["decision"], "allow", "{case:?}: {v}");
        } else {
            assert_eq!(v["status"], *status, "{case:?}: {v}");
            assert_eq!(v["reason"], reason.as_str(), "{case:?}: {v}");
        }
    }
    // Nothing refused reached the server.
    assert!(
        received
            .lock()
            .unwrap()
            .iter()
            .all(|r| r.path == "/servers/getVersion" && r.method == "GET"),
        "{:?}",
        received
            .lock()
            .unwrap()
            .iter()
            .map(|r| (&r.method, &r.path))
            .collect::<Vec<_>>()
    );

    // An oversize body is refused even where the body is streamed
    // uninspected (sightings), live on its declared length and by evaluate
    // on the flow's body.
    let bulk = format!("/sightings/bulkSaveSightings/{UUID}");
    let mut c = tunnel().await;
    c.write_all(
        format!("POST {bulk} HTTP/1.1\r\nHost: b.test\r\nContent-Type: application/json\r\nContent-Length: 1000001\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let a = read_answer(&mut c, "POST").await.unwrap();
    assert_misp_error(&a, 413, "request body exceeds 1000000 bytes", &bulk);
    let flow = json!({"client_ip": "127.0.0.1", "host": "b.test", "port": server.port(),
        "method": "POST", "path": bulk, "request_body": "x".repeat(1_000_001)});
    std::fs::write(&flows_file, format!("{flow}\n")).unwrap();
    let out = gateway_cli(&[
        "evaluate",
        "--config",
        cfg.to_str().unwrap(),
        flows_file.to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        (v["status"].as_u64(), v["reason"].as_str()),
        (Some(413), Some("request body exceeds 1000000 bytes")),
        "{v}"
    );

    // 2. Push answers: b stores what a may send, but what b answers is read
    //    with b's rules, in the metadata:1 form sync uses and in the full
    //    form; a refused answer is a JSON 403 with none of the event.
    for path in [
        "/events/add/metadata:1".to_string(),
        format!("/events/edit/{UUID}"),
    ] {
        let mut amber = event(&["tlp:amber"]);
        let marker = format!("stored-{}", path.len());
        amber = String::from_utf8(amber)
            .unwrap()
            .replace("loopback test", &marker)
            .into_bytes();
        let mut c = tunnel().await;
        c.write_all(&request(
            "POST",
            &path,
            "Content-Type: application/json\r\n",
            &amber,
        ))
        .await
        .unwrap();
        let a = read_answer(&mut c, "POST").await.unwrap();
        assert_misp_error(&a, 403, "event has blocked tag: tlp:amber", &path);
        let text = String::from_utf8_lossy(&a.body);
        assert!(
            !text.contains(&marker) && !text.contains("example"),
            "{text}"
        );
        assert!(
            received.lock().unwrap().iter().any(|r| r.path == path),
            "the push itself was allowed and must have reached b"
        );
        assert!(
            gw.logs().contains(&format!(
                "request blocked: [POST]{path} - event has blocked tag: tlp:amber"
            )),
            "{}",
            gw.logs()
        );
        let mut c = tunnel().await;
        let green = event(&["tlp:green"]);
        c.write_all(&request(
            "POST",
            &path,
            "Content-Type: application/json\r\n",
            &green,
        ))
        .await
        .unwrap();
        let a = read_answer(&mut c, "POST").await.unwrap();
        assert_eq!(a.status, 200, "{}", gw.logs());
        let answered: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(answered["Event"]["Tag"][0]["name"], "tlp:green");
    }

    // MISP's own refusals pass with their status and headers: a second add
    // of one event is MISP's 404 "already exists" with the Location its
    // sync client retries as an edit.
    let mut with_uuid: serde_json::Value = serde_json::from_slice(&event(&["tlp:green"])).unwrap();
    with_uuid["Event"]["uuid"] = json!(UUID);
    let with_uuid = with_uuid.to_string().into_bytes();
    let mut c = tunnel().await;
    for want in [200, 404] {
        c.write_all(&request(
            "POST",
            "/events/add/metadata:1",
            "Content-Type: application/json\r\n",
            &with_uuid,
        ))
        .await
        .unwrap();
        let a = read_answer(&mut c, "POST").await.unwrap();
        assert_eq!(a.status, want, "{}", gw.logs());
        if want == 404 {
            assert!(a
                .headers
                .get("location")
                .is_some_and(|l| l.starts_with(b"/events/")));
            let body: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
            assert!(body["message"]
                .as_str()
                .unwrap()
                .starts_with("Event already exists"));
        }
    }

    // 3. Other refusals answer JSON too: endpoint not allowed (with the
    //    HEAD variant bodiless), a declared oversize body.
    let mut c = tunnel().await;
    c.write_all(&request("GET", "/users/login", "", b""))
        .await
        .unwrap();
    let a = read_answer(&mut c, "GET").await.unwrap();
    assert_misp_error(&a, 403, "endpoint not allowed", "/users/login");
    let mut c = tunnel().await;
    c.write_all(&request("HEAD", "/users/login", "", b""))
        .await
        .unwrap();
    let a = read_answer(&mut c, "HEAD").await.unwrap();
    assert_eq!(a.status, 403);
    assert!(a.body.is_empty());
    let mut c = tunnel().await;
    c.write_all(b"POST /events/add HTTP/1.1\r\nHost: b.test\r\nContent-Type: application/json\r\nContent-Length: 1500000\r\n\r\n")
        .await
        .unwrap();
    let a = read_answer(&mut c, "POST").await.unwrap();
    assert_misp_error(&a, 413, "request body exceeds 1000000 bytes", "/events/add");

    assert_eq!(gw.terminate(), Some(0), "{}", gw.logs());
}

trait ReplaceHost {
    fn replace_host(self, host: &str) -> Vec<u8>;
}

impl ReplaceHost for Vec<u8> {
    fn replace_host(self, host: &str) -> Vec<u8> {
        String::from_utf8(self)
            .unwrap()
            .replace("Host: b.test", &format!("Host: {host}"))
            .into_bytes()
    }
}
