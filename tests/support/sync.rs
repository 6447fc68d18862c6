//! MISP's sync client, replayed: the request sequences a MISP 2.5 server
//! sends when it pushes to or pulls from a remote server (as in its
//! ServerSyncTool), with no proxy settings, against whatever address it is
//! given. Through the transparent gateway the remote's answers decide what
//! lands in which store (`misp.rs`).
#![allow(dead_code)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use misp_guard_gw::http::io::HttpIo;
use misp_guard_gw::tls;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::misp::{analyst_index_entries, items, uuid_of, Store};
use super::{client_config, read_answer};

/// The query MISP appends when it fetches an event during a pull.
pub const VIEW_SUFFIX: &str = "/deleted[]:0/deleted[]:1/excludeGalaxy:1/includeEventCorrelations:0/includeFeedCorrelations:0/includeWarninglistHits:0/excludeLocalTags:1";
pub const PROPOSALS_PATH: &str =
    "/shadow_attributes/index/all:1/timestamp:0/limit:1000/page:1/deleted[]:0/deleted[]:1.json";

/// One request of a sequence and what came of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub method: String,
    pub path: String,
    /// HTTP status, or 0 when no answer came (connection refused or cut).
    pub status: u16,
}

/// A MISP server's connection to one remote, kept alive across requests
/// (as MISP's curl client does) and re-opened after a close.
pub struct Client {
    addr: SocketAddr,
    host: String,
    tls: Arc<rustls::ClientConfig>,
    io: Option<HttpIo<TlsStream<TcpStream>>>,
    /// Compress bodies over 1 KB (the remote offered gzip in getVersion).
    gzip: bool,
    pub steps: Vec<Step>,
}

impl Client {
    /// A client for the remote `host` at `addr`, trusting `ca_file` (the
    /// gateway's CA: the client does not know there is a gateway).
    pub fn new(addr: SocketAddr, host: &str, ca_file: &Path) -> Client {
        Client {
            addr,
            host: host.to_string(),
            tls: client_config(ca_file),
            io: None,
            gzip: false,
            steps: Vec::new(),
        }
    }

    async fn connect(&mut self) -> Result<(), String> {
        let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(self.addr))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| format!("connect: {e}"))?;
        tcp.set_nodelay(true).ok();
        let stream = tls::connect(self.tls.clone(), &self.host, tcp, Duration::from_secs(5))
            .await
            .map_err(|e| format!("tls: {e}"))?;
        self.io = Some(HttpIo::new(stream));
        Ok(())
    }

    /// Sends one request; the status (0 if none came) and the JSON answer.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let (status, answer) = match self.exchange(method, path, body).await {
            Ok(a) => a,
            Err(_) => {
                self.io = None;
                (0, Value::Null)
            }
        };
        self.steps.push(Step {
            method: method.to_string(),
            path: path.to_string(),
            status,
        });
        (status, answer)
    }

    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        if self.io.is_none() {
            self.connect().await?;
        }
        let mut payload = body
            .map(|b| serde_json::to_vec(b).unwrap())
            .unwrap_or_default();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: sync-key\r\n\
             Accept: application/json\r\nContent-Type: application/json\r\n\
             User-Agent: MISP 2.5.2 - #sync\r\n",
            self.host
        );
        if self.gzip && payload.len() > 1024 {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(&payload).unwrap();
            payload = enc.finish().unwrap();
            head.push_str("Content-Encoding: gzip\r\n");
        }
        if body.is_some() {
            head.push_str(&format!("Content-Length: {}\r\n", payload.len()));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&payload);
        let io = self.io.as_mut().unwrap();
        io.write_all(&out)
            .await
            .map_err(|e| format!("write: {e}"))?;
        let answer = tokio::time::timeout(Duration::from_secs(10), read_answer(io, method))
            .await
            .map_err(|_| "answer timed out".to_string())?
            .ok_or("no answer")?;
        if answer.headers.has_token("connection", "close") {
            self.io = None;
        }
        let json = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        Ok((answer.status, json))
    }

    /// `GET /servers/getVersion`, as both sequences start; learns whether
    /// the remote takes gzip bodies.
    async fn version(&mut self) -> Result<(), String> {
        let (status, v) = self.request("GET", "/servers/getVersion", None).await;
        if status != 200 {
            return Err(format!("getVersion answered {status}"));
        }
        self.gzip = v["request_encoding"]
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e == "gzip"));
        Ok(())
    }
}

/// MISP's "test connection" of a remote server: its version, the sync
/// user, and a POST round trip.
pub async fn connection_test(c: &mut Client) -> Result<(), String> {
    c.version().await?;
    let (status, me) = c.request("GET", "/users/view/me.json", None).await;
    if status != 200 || me["Role"]["perm_sync"] != true {
        return Err(format!("users/view/me.json answered {status}: {me}"));
    }
    let probe = json!({"testString": "Testing MISP sync"});
    let (status, echo) = c.request("POST", "/servers/postTest", Some(&probe)).await;
    if status != 200 || echo["body"] != probe {
        return Err(format!("servers/postTest answered {status}: {echo}"));
    }
    Ok(())
}

/// MISP's push of `local` to the remote: the events the remote wants
/// (filterEventIdsForPush, then HEAD to choose add or edit), the proposals
/// and sightings of pushed events, galaxy clusters, analyst data.
pub async fn push(c: &mut Client, local: &Store) -> Result<(), String> {
    c.version().await?;
    let offered: Vec<Value> = local
        .events
        .values()
        .map(|e| json!({"Event": {"uuid": e["Event"]["uuid"], "timestamp": e["Event"]["timestamp"]}}))
        .collect();
    let (status, wanted) = c
        .request(
            "POST",
            "/events/filterEventIdsForPush",
            Some(&Value::Array(offered)),
        )
        .await;
    if status != 200 {
        return Err(format!("filterEventIdsForPush answered {status}"));
    }
    let wanted: Vec<&str> = wanted
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut pushed = Vec::new();
    for (uuid, event) in local
        .events
        .iter()
        .filter(|(u, _)| wanted.contains(&u.as_str()))
    {
        let (exists, _) = c
            .request("HEAD", &format!("/events/view/{uuid}"), None)
            .await;
        let path = match exists {
            200 => format!("/events/edit/{uuid}/metadata:1"),
            _ => "/events/add/metadata:1".to_string(),
        };
        if c.request("POST", &path, Some(event)).await.0 == 200 {
            pushed.push(uuid.clone());
        }
    }
    for event in &pushed {
        let proposals: Vec<Value> = local
            .proposals
            .values()
            .filter(|p| p["ShadowAttribute"]["event_uuid"] == event.as_str())
            .cloned()
            .collect();
        if !proposals.is_empty() {
            let path = format!("/events/pushProposals/{event}");
            c.request("POST", &path, Some(&Value::Array(proposals)))
                .await;
        }
    }
    // One cluster per request, so a refused cluster does not hold back others.
    for cluster in local.clusters.values() {
        let body = json!([cluster]);
        c.request("POST", "/galaxies/pushCluster", Some(&body))
            .await;
    }
    for event in &pushed {
        let mine: Vec<&Value> = local
            .sightings
            .values()
            .filter(|s| s["Sighting"]["event_uuid"] == event.as_str())
            .collect();
        if mine.is_empty() {
            continue;
        }
        let offered: Vec<Value> = mine.iter().map(|s| s["Sighting"]["uuid"].clone()).collect();
        let path = format!("/sightings/filterSightingUuidsForPush/{event}");
        let (status, wanted) = c.request("POST", &path, Some(&Value::Array(offered))).await;
        if status != 200 {
            continue;
        }
        let wanted = wanted.as_array().cloned().unwrap_or_default();
        let batch: Vec<Value> = mine
            .into_iter()
            .filter(|s| wanted.contains(&s["Sighting"]["uuid"]))
            .cloned()
            .collect();
        let path = format!("/sightings/bulkSaveSightings/{event}");
        c.request("POST", &path, Some(&Value::Array(batch))).await;
    }
    let offered = local.analyst_index();
    let (status, wanted) = c
        .request(
            "POST",
            "/analyst_data/filterAnalystDataForPush",
            Some(&offered),
        )
        .await;
    if status == 200 {
        for (kind, uuid, _) in analyst_index_entries(&wanted) {
            if let Some(obj) = local.analyst.get(&(kind.to_string(), uuid.to_string())) {
                c.request("POST", "/analyst_data/pushAnalystData", Some(obj))
                    .await;
            }
        }
    }
    Ok(())
}

/// MISP's pull from the remote into `local`: the minimal event index, each
/// new event, proposals, galaxy clusters, sightings, analyst data. What the
/// remote (through the gateway) refuses is simply not stored.
pub async fn pull(c: &mut Client, local: &mut Store) -> Result<(), String> {
    c.version().await?;
    let filter = json!({"minimal": 1, "published": 1});
    let (status, index) = c.request("POST", "/events/index", Some(&filter)).await;
    if status != 200 {
        return Err(format!("events/index answered {status}"));
    }
    for entry in items(&index) {
        let uuid = uuid_of(entry);
        let known = local.events.get(&uuid);
        if known.is_some_and(|e| e["Event"]["timestamp"] == entry["timestamp"]) {
            continue;
        }
        let (status, event) = c
            .request("GET", &format!("/events/view/{uuid}{VIEW_SUFFIX}"), None)
            .await;
        if status == 200 {
            local.put(event);
        }
    }
    let (status, proposals) = c.request("GET", PROPOSALS_PATH, None).await;
    if status == 200 {
        items(&proposals).for_each(|p| local.put(p.clone()));
    }
    let (status, clusters) = c
        .request("POST", "/galaxy_clusters/restSearch", Some(&filter))
        .await;
    let wanted: Vec<String> = match status {
        200 => items(&clusters)
            .map(|m| uuid_of(&m["GalaxyCluster"]))
            .filter(|u| !local.clusters.contains_key(u))
            .collect(),
        _ => Vec::new(),
    };
    for uuid in wanted {
        let (status, cluster) = c
            .request("GET", &format!("/galaxy_clusters/view/{uuid}"), None)
            .await;
        if status == 200 {
            local.put(cluster);
        }
    }
    let search = json!({"returnFormat": "json", "last": 0, "includeUuid": true});
    let (status, sightings) = c
        .request("POST", "/sightings/restSearch/event", Some(&search))
        .await;
    if status == 200 {
        items(&sightings["response"]).for_each(|s| local.put(s.clone()));
    }
    let (status, index) = c
        .request("POST", "/analyst_data/indexMinimal", Some(&json!({})))
        .await;
    if status == 200 {
        for (kind, uuid, _) in analyst_index_entries(&index) {
            let path = format!("/analyst_data/index/{kind}/uuid[]:{uuid}.json");
            let (status, list) = c.request("GET", &path, None).await;
            if status == 200 {
                items(&list).for_each(|obj| local.put(obj.clone()));
            }
        }
    }
    Ok(())
}
