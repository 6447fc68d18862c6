//! A real MISP 2.5 (the kit in `../shared/realmisp`) as the far end of the
//! gateway: where to find it, plain-HTTP requests to it directly and through
//! the gateway's explicit listener, and reading back what it stored.
//!
//! The instance is shared with other users of the machine, so every object
//! a test makes carries fresh uuids and nothing is ever deleted.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use misp_guard_gw::http::io::HttpIo;
use serde_json::Value;
use tokio::net::{TcpSocket, TcpStream};

use super::{read_answer, Answer};

/// Where the kit's default instance keeps its settings.
const KIT_BASE: &str = "/var/tmp/misp-real";
/// Every request to MISP is bounded; a MISP that hangs fails the test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A reachable MISP: its plain-HTTP address and the admin API key.
#[derive(Debug, Clone)]
pub struct RealMisp {
    pub addr: SocketAddr,
    pub key: String,
}

/// Why no MISP can be used: the message a skipped test prints.
fn locate() -> Result<RealMisp, String> {
    let url = match std::env::var("MISP_REAL_URL") {
        Ok(u) => u,
        Err(_) => {
            let env = Path::new(KIT_BASE).join("instance.env");
            let text = std::fs::read_to_string(&env)
                .map_err(|e| format!("MISP_REAL_URL unset and {}: {e}", env.display()))?;
            let listen = text
                .lines()
                .find_map(|l| l.strip_prefix("SAVED_LISTEN="))
                .ok_or_else(|| format!("{} has no SAVED_LISTEN", env.display()))?;
            format!("http://{}", listen.trim())
        }
    };
    let authority = url
        .strip_prefix("http://")
        .map(|r| r.trim_end_matches('/'))
        .ok_or_else(|| format!("MISP_REAL_URL {url:?}: only http://ip:port is supported"))?;
    let addr: SocketAddr = authority
        .parse()
        .map_err(|_| format!("MISP_REAL_URL {url:?}: expected http://<ip>:<port>"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "MISP_REAL_URL {url:?}: tests only talk to loopback"
        ));
    }
    let key = match std::env::var("MISP_REAL_KEY") {
        Ok(k) => k,
        Err(_) => {
            let file = Path::new(KIT_BASE).join("apikey.txt");
            std::fs::read_to_string(&file)
                .map_err(|e| format!("MISP_REAL_KEY unset and {}: {e}", file.display()))?
        }
    };
    Ok(RealMisp {
        addr,
        key: key.trim().to_string(),
    })
}

impl RealMisp {
    /// The MISP to test against, or None (after saying why) when there is
    /// none and `MISP_GW_REQUIRE_REALMISP=1` is not set; with it, a missing
    /// or unhealthy MISP fails the test.
    pub async fn find(test: &str) -> Option<RealMisp> {
        let found = match locate() {
            Ok(m) => match m.direct("GET", "/servers/getVersion.json", None).await {
                Ok(a) if a.status == 200 => Ok(m),
                Ok(a) => Err(format!(
                    "{}: /servers/getVersion answered {}",
                    m.addr, a.status
                )),
                Err(e) => Err(format!("{}: {e}", m.addr)),
            },
            Err(e) => Err(e),
        };
        match found {
            Ok(m) => Some(m),
            Err(why) if std::env::var("MISP_GW_REQUIRE_REALMISP").as_deref() == Ok("1") => {
                panic!("{test}: no real MISP ({why}) and MISP_GW_REQUIRE_REALMISP=1")
            }
            Err(why) => {
                eprintln!(
                    "SKIPPED {test}: no real MISP reachable ({why}); start one with \
                     ../shared/realmisp/setup.sh, or set MISP_GW_REQUIRE_REALMISP=1 to fail instead"
                );
                None
            }
        }
    }

    /// One request straight to MISP (not through the gateway).
    pub async fn direct(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, String> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", self.addr))?;
        let wire = self.request(method, path, false, body);
        exchange(tcp, &wire, method).await
    }

    /// One request through the gateway's explicit listener `proxy`, in the
    /// absolute form MISP's own client uses with `Proxy.host`, from a socket
    /// bound to `source` (the policy's source instance).
    pub async fn via_gateway(
        &self,
        proxy: SocketAddr,
        source: IpAddr,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, String> {
        let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|e| format!("bind {source}: {e}"))?;
        let tcp = socket
            .connect(proxy)
            .await
            .map_err(|e| format!("connect {proxy}: {e}"))?;
        let wire = self.request(method, path, true, body);
        exchange(tcp, &wire, method).await
    }

    fn request(&self, method: &str, path: &str, absolute: bool, body: Option<&Value>) -> Vec<u8> {
        let target = if absolute {
            format!("http://{}{path}", self.addr)
        } else {
            path.to_string()
        };
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\n\
             Accept: application/json\r\nConnection: close\r\n",
            self.addr, self.key
        );
        if method != "GET" {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        let mut wire = head.into_bytes();
        wire.extend_from_slice(&body);
        wire
    }

    /// GET `path` directly; the JSON answer when MISP answers 200, None on
    /// 404/403 (not stored, or not visible), an error otherwise.
    pub async fn read(&self, path: &str) -> Result<Option<Value>, String> {
        let a = self.direct("GET", path, None).await?;
        match a.status {
            200 => serde_json::from_slice(&a.body)
                .map(Some)
                .map_err(|e| format!("GET {path}: answer is not JSON: {e}")),
            403 | 404 => Ok(None),
            s => Err(format!(
                "GET {path}: HTTP {s}: {}",
                String::from_utf8_lossy(&a.body)
            )),
        }
    }

    /// An event as MISP serves it to its site admin (every distribution,
    /// with reports, analyst data, sightings and proposals).
    pub async fn event(&self, uuid: &str) -> Result<Option<Value>, String> {
        self.read(&format!("/events/view/{uuid}.json")).await
    }

    pub async fn cluster(&self, uuid: &str) -> Result<Option<Value>, String> {
        self.read(&format!("/galaxy_clusters/view/{uuid}.json"))
            .await
    }

    pub async fn analyst_data(&self, kind: &str, uuid: &str) -> Result<Option<Value>, String> {
        self.read(&format!("/analyst_data/view/{kind}/{uuid}.json"))
            .await
    }
}

/// Sends `wire`, reads one answer; bounded by `REQUEST_TIMEOUT`.
async fn exchange(tcp: TcpStream, wire: &[u8], method: &str) -> Result<Answer, String> {
    let mut io = HttpIo::new(tcp);
    let run = async {
        io.write_all(wire).await.map_err(|e| e.to_string())?;
        read_answer(&mut io, method)
            .await
            .ok_or_else(|| "no complete HTTP answer".to_string())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, run)
        .await
        .map_err(|_| format!("no answer within {REQUEST_TIMEOUT:?}"))?
}

/// A fresh random uuid (the kernel's generator).
pub fn fresh_uuid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .expect("/proc/sys/kernel/random/uuid")
        .trim()
        .to_string()
}
