//! A MISP-like HTTPS server with an in-memory store, implementing the sync
//! endpoints of POLICY.md the way MISP answers them (enough for MISP's own
//! push and pull sequences, see `sync.rs`). Tests seed a store, let the
//! servers sync through the gateway and then assert what each store holds.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use misp_guard_gw::http::io::HttpIo;
use misp_guard_gw::http::request_framing;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::server_tls;

/// Analyst-data kinds, in MISP's order.
pub const ANALYST_KINDS: [&str; 3] = ["Note", "Opinion", "Relationship"];

/// What one MISP instance holds. Objects are kept as MISP serialises them;
/// `raw_events` keeps the exact bytes of each event pushed to this server.
#[derive(Debug, Default, Clone)]
pub struct Store {
    /// Event uuid → `{"Event": {...}}`.
    pub events: BTreeMap<String, Value>,
    pub raw_events: BTreeMap<String, Vec<u8>>,
    /// Cluster uuid → `{"GalaxyCluster": {...}}`.
    pub clusters: BTreeMap<String, Value>,
    /// Sighting uuid → `{"Sighting": {...}}` (with `event_uuid`).
    pub sightings: BTreeMap<String, Value>,
    /// (kind, uuid) → `{kind: {...}}`.
    pub analyst: BTreeMap<(String, String), Value>,
    /// Proposal uuid → `{"ShadowAttribute": {...}}`.
    pub proposals: BTreeMap<String, Value>,
}

impl Store {
    /// Files a MISP object by its wrapper key (`{"Event": {...}}`,
    /// `GalaxyCluster`, `Sighting`, `ShadowAttribute`, or analyst data).
    pub fn put(&mut self, v: Value) {
        let (kind, obj) = v
            .as_object()
            .and_then(|o| o.iter().next())
            .expect("wrapped");
        let (kind, uuid) = (kind.clone(), uuid_of(obj));
        match kind.as_str() {
            "Event" => self.events.insert(uuid, v),
            "GalaxyCluster" => self.clusters.insert(uuid, v),
            "Sighting" => self.sightings.insert(uuid, v),
            "ShadowAttribute" => self.proposals.insert(uuid, v),
            _ => self.analyst.insert((kind, uuid), v),
        };
    }

    /// The minimal analyst-data index, `{kind: [{uuid: modified}]}`: what
    /// `indexMinimal` answers and what a push offers for filtering.
    pub fn analyst_index(&self) -> Value {
        let mut index = json!({});
        for kind in ANALYST_KINDS {
            let entries: Vec<Value> = self
                .analyst
                .iter()
                .filter(|((k, _), _)| k == kind)
                .map(|((_, u), v)| json!({ u.as_str(): v[kind]["modified"] }))
                .collect();
            index[kind] = Value::Array(entries);
        }
        index
    }
}

pub type SharedStore = Arc<Mutex<Store>>;

/// One request as the server saw it (after decoding the body).
#[derive(Debug, Clone)]
pub struct Seen {
    pub peer: SocketAddr,
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

/// A running server: its store and every request it received.
#[derive(Clone)]
pub struct MispServer {
    pub store: SharedStore,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl MispServer {
    pub fn paths(&self) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .map(|s| format!("{} {}", s.method, s.path))
            .collect()
    }
}

/// The elements of a JSON list (none for anything else).
pub fn items(v: &Value) -> std::slice::Iter<'_, Value> {
    v.as_array().map_or([].iter(), |a| a.iter())
}

/// The entries of a minimal analyst-data index, `{kind: [{uuid: modified}]}`
/// (what indexMinimal answers and filterAnalystDataForPush takes and
/// answers): (kind, uuid, the entry itself).
pub fn analyst_index_entries(index: &Value) -> Vec<(&'static str, &str, &Value)> {
    let mut out = Vec::new();
    for kind in ANALYST_KINDS {
        for entry in items(&index[kind]) {
            if let Some(uuid) = entry.as_object().and_then(|o| o.keys().next()) {
                out.push((kind, uuid.as_str(), entry));
            }
        }
    }
    out
}

pub fn uuid_of(v: &Value) -> String {
    v["uuid"].as_str().unwrap_or_default().to_string()
}

/// Serves MISP's sync endpoints for `name` at `addr` (certificate from a
/// new CA written to `ca_file`), backed by `store`.
pub async fn serve(addr: SocketAddr, name: &str, ca_file: &Path, store: Store) -> MispServer {
    let tls = server_tls(addr, name, ca_file);
    let listener = TcpListener::bind(addr).await.unwrap();
    let server = MispServer {
        store: Arc::new(Mutex::new(store)),
        seen: Arc::default(),
    };
    let srv = server.clone();
    tokio::spawn(async move {
        while let Ok((tcp, peer)) = listener.accept().await {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
            let srv = srv.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut io = HttpIo::new(stream);
                while let Ok(Some(head)) = io.read_request_head(65536).await {
                    let Ok(framing) = request_framing(&head) else {
                        return;
                    };
                    let Ok(raw) = io.read_body(framing, 1 << 30).await else {
                        return;
                    };
                    let body = decode(head.headers.get("content-encoding"), raw);
                    srv.seen.lock().unwrap().push(Seen {
                        peer,
                        method: head.method.clone(),
                        path: head.target.clone(),
                        body: body.clone(),
                    });
                    let (status, answer) = {
                        let mut store = srv.store.lock().unwrap();
                        route(&mut store, &head.method, &head.target, &body)
                    };
                    let text = answer.to_string();
                    let reason = if status == 200 { "OK" } else { "Not Found" };
                    let mut out = format!(
                        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                        text.len()
                    )
                    .into_bytes();
                    if head.method != "HEAD" {
                        out.extend_from_slice(text.as_bytes());
                    }
                    if io.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    server
}

/// MISP compresses sync bodies with gzip when the remote offers it.
fn decode(encoding: Option<&[u8]>, raw: Vec<u8>) -> Vec<u8> {
    match encoding {
        Some(e) if e.eq_ignore_ascii_case(b"gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(raw.as_slice())
                .read_to_end(&mut out)
                .expect("gzip body");
            out
        }
        _ => raw,
    }
}

/// MISP serialises timestamps as strings of seconds.
fn timestamp(event: &Value) -> u64 {
    event["timestamp"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

fn not_found() -> (u16, Value) {
    (404, json!({"name": "Not Found", "message": "Not Found"}))
}

/// The part of `path` after `prefix` up to the next `/`.
fn segment<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
    let rest = path.strip_prefix(prefix)?;
    Some(rest.split('/').next().unwrap_or(rest))
}

/// MISP's answer to one sync request.
fn route(store: &mut Store, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let input: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    match (method, path) {
        ("GET", "/servers/getVersion") => (
            200,
            json!({"version": "2.5.2", "pymisp_recommended_version": "2.5.2", "perm_sync": true,
                "perm_sighting": true, "perm_galaxy_editor": true, "perm_analyst_data": true,
                "request_encoding": ["gzip", "br"], "filter_sighting_uuids": true}),
        ),
        ("GET", "/users/view/me.json") => (
            200,
            json!({"User": {"id": "1", "email": "sync@misp.test", "role_id": "5"},
                "Role": {"id": "5", "name": "Sync user", "perm_sync": true}}),
        ),
        ("POST", "/servers/postTest") => (200, json!({"body": input, "headers": {}})),
        ("POST", "/events/filterEventIdsForPush") => {
            // The offered events this server lacks or holds in an older version.
            let wanted: Vec<Value> = items(&input)
                .map(|e| &e["Event"])
                .filter(|e| match store.events.get(&uuid_of(e)) {
                    Some(held) => timestamp(&held["Event"]) < timestamp(e),
                    None => true,
                })
                .map(|e| e["uuid"].clone())
                .collect();
            (200, Value::Array(wanted))
        }
        ("POST", p) if p.starts_with("/events/pushProposals/") => {
            let proposals = input.as_array().cloned().unwrap_or_default();
            for p in &proposals {
                store.put(p.clone());
            }
            (
                200,
                json!({"message": format!("{} proposal(s) saved", proposals.len())}),
            )
        }
        ("HEAD", p) if p.starts_with("/events/view/") => {
            match store
                .events
                .contains_key(segment(p, "/events/view/").unwrap())
            {
                true => (200, Value::Null),
                false => not_found(),
            }
        }
        ("POST", p) if p.starts_with("/events/add") => {
            let uuid = uuid_of(&input["Event"]);
            if store.events.contains_key(&uuid) {
                return (403, json!({"message": "Event already exists"}));
            }
            store.raw_events.insert(uuid.clone(), body.to_vec());
            store.events.insert(uuid, input.clone());
            (200, input)
        }
        ("POST", p) if p.starts_with("/events/edit/") => {
            let uuid = segment(p, "/events/edit/").unwrap().to_string();
            if !store.events.contains_key(&uuid) {
                return not_found();
            }
            store.raw_events.insert(uuid.clone(), body.to_vec());
            store.events.insert(uuid, input.clone());
            (200, input)
        }
        ("GET", p) if p.starts_with("/events/view/") => {
            match store.events.get(segment(p, "/events/view/").unwrap()) {
                Some(e) => (200, e.clone()),
                None => not_found(),
            }
        }
        ("POST", "/events/index") => {
            // minimal: 1 — what MISP's pull compares before fetching.
            let index: Vec<Value> = store
                .events
                .values()
                .map(|e| {
                    let e = &e["Event"];
                    json!({"uuid": e["uuid"], "timestamp": e["timestamp"], "published": true})
                })
                .collect();
            (200, Value::Array(index))
        }
        ("POST", "/galaxies/pushCluster") => {
            let clusters = input.as_array().cloned().unwrap_or_default();
            for c in &clusters {
                store.put(c.clone());
            }
            (200, json!({"saved": clusters.len()}))
        }
        ("POST", "/galaxy_clusters/restSearch") => {
            let minimal: Vec<Value> = store
                .clusters
                .values()
                .map(|c| {
                    json!({"GalaxyCluster": {"uuid": c["GalaxyCluster"]["uuid"],
                    "version": c["GalaxyCluster"]["version"]}})
                })
                .collect();
            (200, Value::Array(minimal))
        }
        ("GET", p) if p.starts_with("/galaxy_clusters/view/") => {
            match store
                .clusters
                .get(segment(p, "/galaxy_clusters/view/").unwrap())
            {
                Some(c) => (200, c.clone()),
                None => not_found(),
            }
        }
        ("POST", p) if p.starts_with("/sightings/filterSightingUuidsForPush/") => {
            // The subset of the offered uuids this server does not have yet.
            let missing: Vec<Value> = items(&input)
                .filter(|u| !store.sightings.contains_key(u.as_str().unwrap_or_default()))
                .cloned()
                .collect();
            (200, Value::Array(missing))
        }
        ("POST", p) if p.starts_with("/sightings/bulkSaveSightings/") => {
            for s in items(&input) {
                store.put(s.clone());
            }
            (200, json!({"message": "Sightings saved"}))
        }
        // MISP 2.5 wraps the rows in `response` (the puller reads only that).
        ("POST", "/sightings/restSearch/event") => (
            200,
            json!({"response": store.sightings.values().cloned().collect::<Vec<_>>()}),
        ),
        ("GET", p) if p.starts_with("/shadow_attributes/index") => (
            200,
            Value::Array(store.proposals.values().cloned().collect()),
        ),
        ("POST", "/analyst_data/indexMinimal") => (200, store.analyst_index()),
        ("POST", "/analyst_data/filterAnalystDataForPush") => {
            // Offered: {kind: [{uuid: modified}]}; answer: those missing here.
            let mut missing = json!({});
            for kind in ANALYST_KINDS {
                missing[kind] = json!([]);
            }
            for (kind, uuid, entry) in analyst_index_entries(&input) {
                if !store
                    .analyst
                    .contains_key(&(kind.to_string(), uuid.to_string()))
                {
                    missing[kind].as_array_mut().unwrap().push(entry.clone());
                }
            }
            (200, missing)
        }
        ("POST", "/analyst_data/pushAnalystData") => {
            if input.as_object().is_none_or(|o| o.is_empty()) {
                return (403, json!({"message": "Invalid analyst data"}));
            }
            store.put(input.clone());
            (200, input)
        }
        ("GET", p) if p.starts_with("/analyst_data/index/") => {
            // /analyst_data/index/<Kind>/uuid[]:<u>/uuid[]:<u>.json
            let rest = p.trim_start_matches("/analyst_data/index/");
            let rest = rest.strip_suffix(".json").unwrap_or(rest);
            let mut parts = rest.split('/');
            let kind = parts.next().unwrap_or_default().to_string();
            let list: Vec<Value> = parts
                .filter_map(|s| s.strip_prefix("uuid[]:"))
                .filter_map(|u| store.analyst.get(&(kind.clone(), u.to_string())).cloned())
                .collect();
            (200, Value::Array(list))
        }
        _ => not_found(),
    }
}
