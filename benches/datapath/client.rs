//! The benchmark's client side: what a route is (direct, through the
//! gateway, through nginx), how a TLS connection over it is opened, and the
//! requests and event bodies the rows send.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use misp_guard_gw::http::io::HttpIo;
use misp_guard_gw::tls;
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub type Tls = tokio_rustls::client::TlsStream<TcpStream>;
pub type Client = HttpIo<Tls>;
type Opening = Pin<Box<dyn Future<Output = Client> + Send>>;
pub type Connect = Arc<dyn Fn() -> Opening + Send + Sync>;

/// One column of the tables: how a client reaches the server, and which
/// processes (if any) sit in between, for their CPU time and peak RSS.
#[derive(Clone)]
pub struct Route {
    pub name: &'static str,
    pub connect: Connect,
    /// Processes in the path (gateway; nginx master and workers). Empty for
    /// a direct connection.
    pub pids: Vec<u32>,
    /// Whether the route applies the policy, i.e. refuses blocked pushes.
    pub filters: bool,
}

const SNI: &str = "b.test";
const HANDSHAKE: Duration = Duration::from_secs(5);
/// Longest wait for any one read: a stalled proxy fails the run instead
/// of hanging it.
const READ: Duration = Duration::from_secs(30);

fn client(tls: Tls) -> Client {
    let mut c = HttpIo::new(tls);
    c.set_read_timeout(READ);
    c
}

/// Opens TLS to `addr` directly (or through a REDIRECT on the way).
/// `config` is shared by every connection of a route, so a server that
/// offers session resumption gets resumed handshakes, as from one client
/// process.
pub fn tls_to(addr: SocketAddr, config: Arc<ClientConfig>) -> Connect {
    Arc::new(move || {
        let config = config.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(addr)
                .await
                .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
            tcp.set_nodelay(true).unwrap();
            client(tls::connect(config, SNI, tcp, HANDSHAKE).await.unwrap())
        })
    })
}

/// Opens a CONNECT tunnel through the explicit proxy at `proxy` to
/// `b.test:port`, then TLS inside it.
pub fn tunnel(proxy: SocketAddr, port: u16, config: Arc<ClientConfig>) -> Connect {
    Arc::new(move || {
        let config = config.clone();
        Box::pin(async move {
            let mut tcp = TcpStream::connect(proxy).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let connect = format!("CONNECT {SNI}:{port} HTTP/1.1\r\nHost: {SNI}:{port}\r\n\r\n");
            tcp.write_all(connect.as_bytes()).await.unwrap();
            // Byte by byte: nothing of the TLS stream may be read here.
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut b = [0u8; 1];
                assert_eq!(tcp.read(&mut b).await.unwrap(), 1, "CONNECT answer cut");
                head.push(b[0]);
            }
            assert!(head.starts_with(b"HTTP/1.1 200"), "CONNECT refused");
            client(tls::connect(config, SNI, tcp, HANDSHAKE).await.unwrap())
        })
    })
}

/// The small request of the latency rows.
pub fn get(close: bool) -> Vec<u8> {
    let connection = if close { "Connection: close\r\n" } else { "" };
    format!("GET /servers/getVersion HTTP/1.1\r\nHost: b.test\r\nAuthorization: k\r\nAccept: application/json\r\n{connection}\r\n")
        .into_bytes()
}

pub const PULL: &[u8] = b"GET /events/view/385283a1-b5e0-4e10-a532-dce11c365a56 HTTP/1.1\r\nHost: b.test\r\nAccept: application/json\r\n\r\n";

/// The head of an event push of `len` body bytes.
pub fn push_head(len: usize) -> Vec<u8> {
    format!(
        "POST /events/add/metadata:1 HTTP/1.1\r\nHost: b.test\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    )
    .into_bytes()
}

/// Which attribute of a benchmark event carries the blocked tag.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Blocked {
    /// None: the policy allows the event.
    Nowhere,
    /// The first attribute: the evidence arrives with the first bytes.
    First,
    /// The last attribute: the evidence arrives with the last bytes.
    Last,
}

/// A MISP-shaped event of about `size` bytes: `tlp:green`, distribution
/// 1, attributes first in the body so that `Blocked::First` puts the
/// evidence right after the request head.
pub fn event(size: usize, blocked: Blocked) -> Vec<u8> {
    let attribute = |i: usize, tag: &str| {
        format!(
            r#"{{"id":"{i}","type":"ip-dst","category":"Network activity","to_ids":true,"uuid":"{i:08x}-0000-4000-8000-{i:012x}","distribution":"5","comment":"bench \"x\"","value":"198.51.{}.{}","timestamp":"1700000000","Tag":[{{"name":"{tag}"}}]}}"#,
            (i / 250) % 250,
            i % 250
        )
    };
    let mut attrs = Vec::new();
    let mut len = 0;
    while len < size {
        let a = attribute(attrs.len(), "tlp:green");
        len += a.len() + 1;
        attrs.push(a);
    }
    let last = attrs.len() - 1;
    match blocked {
        Blocked::Nowhere => {}
        Blocked::First => attrs[0] = attribute(0, "tlp:red"),
        Blocked::Last => attrs[last] = attribute(last, "tlp:red"),
    }
    format!(
        r#"{{"Event":{{"Attribute":[{}],"info":"bench","distribution":"1","Tag":[{{"name":"tlp:green"}}],"Object":[]}}}}"#,
        attrs.join(",")
    )
    .into_bytes()
}
