//! Root + network-namespace integration tests of the capture layer.
//!
//! Three namespaces per test, created here and deleted by a Drop guard:
//!
//! ```text
//!  cli 10.231.1.2 ── c0 ═ g0 ── gw 10.231.1.1 | 10.231.3.1 ── g1 ═ s0 ── srv 10.231.3.2
//!      fd00:231:1::2                fd00:231:1::1 | fd00:231:3::1          fd00:231:3::2
//! ```
//!
//! The veth pairs are created directly inside the namespaces and nftables
//! rules, policy routes and sysctls are applied only inside `gw`, so the
//! host's own interfaces, rules and routes are never touched and no packet
//! leaves the namespaces. Test code enters a namespace by `setns` on a fresh
//! thread, then builds its tokio runtime and sockets there.
//!
//! Without root or without `ip`/`nft` the tests print a skip notice and
//! pass, unless `MISP_GW_REQUIRE_NETNS=1`, which turns the skip into failure.

mod support;

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc;
use std::thread;

use support::netns::{
    in_netns, join, prerequisites_met, tproxy_ruleset, Topology, SYNC_PORT, WAIT,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use misp_guard_gw::net as gwnet;
use misp_guard_gw::vocab::ListenMode;

use gwnet::{
    bind_listener, connect_upstream, local_ip_addresses, original_dst_redirect,
    original_dst_tproxy, ClientAddr, LocalListeners,
};

// ---------------------------------------------------------------- actors

/// Connects from the client namespace to `to` and returns the line the
/// gateway answers with.
fn client(topo: &Topology, to: SocketAddr) -> String {
    join(in_netns(&topo.cli, move || async move {
        let mut s = timeout(WAIT, TcpStream::connect(to))
            .await
            .unwrap_or_else(|_| panic!("connect {to}: timed out"))
            .unwrap_or_else(|e| panic!("connect {to}: {e}"));
        let mut answer = String::new();
        timeout(WAIT, s.read_to_string(&mut answer))
            .await
            .expect("reading gateway answer timed out")
            .expect("reading gateway answer");
        answer.trim().to_owned()
    }))
}

/// The gateway: binds `[::]:0` for `kind` inside gw, reports its port, then
/// serves `conns` connections, answering each with one line describing what
/// it recovered.
fn gateway(topo: &Topology, kind: ListenMode, conns: usize) -> (u16, thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let h = in_netns(&topo.gw, move || async move {
        let l = bind_listener("[::]:0".parse().unwrap(), kind, 64).expect("bind gateway listener");
        let me = l.local_addr().unwrap();
        tx.send(me.port()).unwrap();
        let listeners = LocalListeners::new([me]);
        let local_ips = local_ip_addresses().expect("getifaddrs");
        for _ in 0..conns {
            let (mut s, peer) = timeout(WAIT, l.accept())
                .await
                .expect("accept timed out")
                .unwrap();
            let answer = handle(kind, &s, ClientAddr::new(peer), &listeners, &local_ips).await;
            s.write_all(answer.as_bytes()).await.unwrap();
            s.shutdown().await.unwrap();
        }
    });
    let port = rx.recv_timeout(WAIT).expect("gateway did not start");
    (port, h)
}

async fn handle(
    kind: ListenMode,
    s: &TcpStream,
    client: ClientAddr,
    listeners: &LocalListeners,
    local_ips: &[IpAddr],
) -> String {
    let dst = match kind {
        ListenMode::Redirect => original_dst_redirect(s),
        ListenMode::Tproxy => original_dst_tproxy(s),
        ListenMode::Explicit => unreachable!(),
    };
    let dst = match dst {
        Ok(d) => d,
        Err(e) => return format!("err {e}"),
    };
    if listeners.is_self(dst, local_ips) {
        return format!("self {dst}");
    }
    if kind == ListenMode::Redirect {
        return format!("ok {dst}");
    }
    // TPROXY: go on to the real server, from the client's own address.
    let mut up = match connect_upstream(dst.addr(), Some(client.ip()), WAIT).await {
        Ok(u) => u,
        Err(e) => return format!("err upstream {e}"),
    };
    let mut seen = String::new();
    timeout(WAIT, up.read_to_string(&mut seen))
        .await
        .expect("server timed out")
        .unwrap();
    format!("ok {dst} {}", seen.trim())
}

/// A server in srv on `[::]:8443` that tells each peer its address.
fn server(topo: &Topology, conns: usize) -> thread::JoinHandle<()> {
    let (tx, rx) = mpsc::channel();
    let h = in_netns(&topo.srv, move || async move {
        let l = bind_listener(
            SocketAddr::from(([0u16; 8], SYNC_PORT)),
            ListenMode::Explicit,
            16,
        )
        .expect("bind server");
        tx.send(()).unwrap();
        for _ in 0..conns {
            let (mut s, peer) = timeout(WAIT, l.accept())
                .await
                .expect("server accept timed out")
                .unwrap();
            s.write_all(ClientAddr::new(peer).ip().to_string().as_bytes())
                .await
                .unwrap();
            s.shutdown().await.unwrap();
        }
    });
    rx.recv_timeout(WAIT).expect("server did not start");
    h
}

// ---------------------------------------------------------------- tests

#[test]
fn redirect_recovers_original_destination_v4_and_v6() {
    if !prerequisites_met("redirect_recovers_original_destination_v4_and_v6") {
        return;
    }
    let topo = Topology::new();
    // Four connections: v4 + v6 redirected, v4 + v6 dialled directly.
    let (port, gw) = gateway(&topo, ListenMode::Redirect, 4);
    topo.nft(&format!(
        "table inet mgw_test {{
            chain pre {{
                type nat hook prerouting priority dstnat; policy accept;
                tcp dport {SYNC_PORT} redirect to :{port}
            }}
        }}"
    ))
    .unwrap_or_else(|e| panic!("load redirect ruleset: {e}"));

    // Fake servers routed via gw: they exist nowhere, only the rule answers.
    // The [::] listener sees the v4 client as ::ffff:10.231.1.2, which must
    // still select SO_ORIGINAL_DST (not IP6T_SO_ORIGINAL_DST).
    for dialled in ["10.231.2.99:8443", "[fd00:231:2::99]:8443"] {
        let dialled: SocketAddr = dialled.parse().unwrap();
        assert_eq!(client(&topo, dialled), format!("ok {dialled}"));
    }
    // Dialling the gateway's listener directly: conntrack knows the flow but
    // without NAT, so the "original destination" is the gateway itself.
    for gw_ip in ["10.231.1.1", "fd00:231:1::1"] {
        let direct = SocketAddr::new(gw_ip.parse().unwrap(), port);
        assert_eq!(client(&topo, direct), format!("self {direct}"));
    }
    join(gw);
}

#[test]
fn redirect_without_nat_entry_is_a_connection_error() {
    if !prerequisites_met("redirect_without_nat_entry_is_a_connection_error") {
        return;
    }
    let topo = Topology::new();
    // srv has no nftables rules at all, so no conntrack NAT entry exists.
    let outcome = join(in_netns(&topo.srv, || async {
        let l = bind_listener("127.0.0.1:0".parse().unwrap(), ListenMode::Redirect, 4).unwrap();
        let a = l.local_addr().unwrap();
        let (c, s) = tokio::join!(
            timeout(WAIT, TcpStream::connect(a)),
            timeout(WAIT, l.accept())
        );
        let _c = c.unwrap().unwrap();
        let (s, _) = s.unwrap().unwrap();
        (a, original_dst_redirect(&s))
    }));
    match outcome {
        (_, Err(e)) => {
            assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
            assert!(
                e.to_string()
                    .starts_with("no NAT entry: connection was not redirected"),
                "{e}"
            );
        }
        // Should conntrack be active in a fresh namespace after all, the flow
        // is un-NATed and must at least report the listener itself.
        (a, Ok(dst)) => {
            let _ = writeln!(
                io::stderr(),
                "note: conntrack active in a fresh netns; got {dst}"
            );
            assert_eq!(dst.addr(), a);
        }
    }
}

#[test]
fn tproxy_recovers_destination_and_connects_from_client_address() {
    if !prerequisites_met("tproxy_recovers_destination_and_connects_from_client_address") {
        return;
    }
    let topo = Topology::new();
    // Probe kernel support (nft_tproxy, nft_socket) before any thread waits
    // on it; the real port is only known once the gateway has bound.
    if let Err(e) = topo.nft(&tproxy_ruleset(9)) {
        if std::env::var("MISP_GW_REQUIRE_NETNS").as_deref() == Ok("1") {
            panic!("load tproxy ruleset: {e}");
        }
        let _ = writeln!(
            io::stderr(),
            "SKIP tproxy: kernel lacks tproxy support: {e}"
        );
        return;
    }
    // Policy routing: marked packets are delivered locally, both for new
    // flows handed to the listener and for replies to the spoofed upstream.
    topo.tproxy_routing();
    let srv = server(&topo, 2);
    let (port, gw) = gateway(&topo, ListenMode::Tproxy, 2);
    topo.nft(&format!(
        "delete table inet mgw_test\n{}",
        tproxy_ruleset(port)
    ))
    .unwrap_or_else(|e| panic!("load tproxy ruleset: {e}"));

    for (dialled, client_ip) in [
        ("10.231.3.2:8443", "10.231.1.2"),
        ("[fd00:231:3::2]:8443", "fd00:231:1::2"),
    ] {
        let dialled: SocketAddr = dialled.parse().unwrap();
        // The gateway must see the server's address as destination, and the
        // server must see the client's address as peer.
        assert_eq!(client(&topo, dialled), format!("ok {dialled} {client_ip}"));
    }
    join(gw);
    join(srv);
}
