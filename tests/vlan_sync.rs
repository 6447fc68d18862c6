//! MISP sync across a router between two VLAN compartments (root, network
//! namespaces), deployed as an operator would: `config.sample.json`'s policy,
//! the shipped nftables file applied by the shipped script inside the router
//! namespace, the gateway binary capturing transparently (REDIRECT, TPROXY).
//!
//! Two MISP-like servers with in-memory stores sit in compartments `secret`
//! (VLAN 10) and `restricted` (VLAN 20) of a trunk into the router
//! (`scripts/demo/topology.sh`). The secret server replays MISP's real push
//! and pull sequences against the restricted one; the test then asserts what
//! each store holds: allowed data arrives intact, blocked data never does,
//! non-sync requests are refused, and the restricted compartment, which may
//! not reach the secret one, cannot. A table of MISP-IMPORT.md audit rows
//! replays attacks shaped as MISP would read them (refused, their marker
//! never seen by the receiving server) beside the legitimate MISP 2.5 shape
//! of each endpoint (stored as sent). One case uses curl with no proxy
//! settings as the client. The restricted instance is served with the
//! operator's own certificate (`gateway.instances.<id>.cert`), not a minted one.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;

use misp_guard_gw::tls::{self, CertificateAuthority};
use serde_json::{json, Value};
use support::misp::{serve, MispServer, Store};
use support::netns::{curl, in_netns, join, prerequisites_met, run, unique_name, Remote, WAIT};
use support::sync::{connection_test, pull, push, Client, PROPOSALS_PATH, VIEW_SUFFIX};
use support::{gateway_ca, gateway_cli, sample_policy, write_pem, Gateway, TempDir};

const SECRET: (&str, &str) = ("192.0.2.10:443", "misp.secret.example");
const RESTRICTED: (&str, &str) = ("198.51.100.10:443", "misp.restricted.example");
/// Put into every object that must be blocked: it may never be seen by the
/// receiving side, in any request or response body.
const MARKER: &str = "MUST-NOT-CROSS";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// ------------------------------------------------------------ topology

/// The namespaces of `scripts/demo/topology.sh`, deleted on drop.
struct Vlans {
    prefix: String,
}

impl Vlans {
    fn up() -> Vlans {
        let prefix = unique_name("mgwv");
        let vlans = Vlans { prefix };
        let out = Command::new(root().join("scripts/demo/topology.sh"))
            .args(["up", &vlans.prefix])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "topology: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let kind = String::from_utf8_lossy(&out.stdout);
        eprintln!("{}: VLAN segments are {}", vlans.prefix, kind.trim());
        vlans
    }

    fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }
}

impl Drop for Vlans {
    fn drop(&mut self) {
        let script = root().join("scripts/demo/topology.sh");
        if let Err(e) = run(&[script.to_str().unwrap(), "down", &self.prefix], None) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// A MISP-like server in namespace `ns`, until the returned sender drops.
fn start_server(
    ns: String,
    (addr, host): (&str, &str),
    ca_file: PathBuf,
    seed: Store,
) -> (MispServer, tokio::sync::oneshot::Sender<()>) {
    let (addr, host): (SocketAddr, String) = (addr.parse().unwrap(), host.to_string());
    let (tx, rx) = mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    in_netns(&ns, move || async move {
        tx.send(serve(addr, &host, &ca_file, seed).await).unwrap();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(300), stop_rx).await;
    });
    (rx.recv_timeout(WAIT).expect("server up"), stop_tx)
}

// ------------------------------------------------------------ MISP data

fn uuid(n: u32) -> String {
    format!("5f0c{n:04x}-0000-4000-8000-00000000{n:04x}")
}

fn attribute(n: u32, kind: &str, category: &str, value: &str) -> Value {
    json!({"uuid": uuid(n), "type": kind, "category": category, "value": value,
        "distribution": "5", "to_ids": true, "Tag": [{"name": "tlp:green"}]})
}

fn event(n: u32, tags: &[&str], attributes: Vec<Value>, timestamp: &str) -> Value {
    let tags: Vec<Value> = tags.iter().map(|t| json!({"name": t})).collect();
    json!({"Event": {"uuid": uuid(n), "info": format!("event {n}"), "distribution": "1",
        "published": true, "timestamp": timestamp, "analysis": "2", "threat_level_id": "3",
        "Orgc": {"name": "ORGNAME", "uuid": uuid(9000)}, "Tag": tags,
        "Attribute": attributes, "Object": [
            {"uuid": uuid(n + 500), "name": "domain-ip", "distribution": "5", "Attribute": [
                attribute(n + 600, "domain", "Network activity", "c2.example")]}]}})
}

fn cluster(n: u32, distribution: &str, value: &str) -> Value {
    json!({"GalaxyCluster": {"uuid": uuid(n), "version": "1", "distribution": distribution,
        "value": value, "type": "threat-actor", "published": true}})
}

fn sighting(n: u32, event: u32) -> Value {
    json!({"Sighting": {"uuid": uuid(n), "event_uuid": uuid(event), "type": "0",
        "date_sighting": "1700000000", "source": ""}})
}

fn analyst(kind: &str, n: u32, distribution: &str, text: &str) -> Value {
    json!({ kind: {"uuid": uuid(n), "distribution": distribution, "note": text,
        "opinion": "75", "comment": text, "modified": "2026-11-01 10:00:00",
        "object_uuid": uuid(1), "object_type": "Event"}})
}

fn proposal(n: u32, event: u32, kind: &str, value: &str) -> Value {
    json!({"ShadowAttribute": {"uuid": uuid(n), "event_uuid": uuid(event), "type": kind,
        "category": "Payload delivery", "value": value, "Tag": [{"name": "tlp:green"}]}})
}

/// The secret server's data. `config.sample.json` lets `misp_secret` push
/// only tlp:clear/white/green, never distribution 0 or 4, e-mail or passport
/// attributes, the Person category or person objects.
fn secret_seed() -> Store {
    let ip = |n| attribute(n, "ip-dst", "Network activity", "203.0.113.7");
    let mut s = Store::default();
    for v in [
        event(1, &["tlp:green"], vec![ip(11)], "1700000100"),
        // Already on the remote in an older version: HEAD 200, then an edit.
        event(2, &["tlp:clear"], vec![ip(21)], "1700000200"),
        event(
            3,
            &["tlp:red"],
            vec![attribute(31, "text", "Other", MARKER)],
            "1700000300",
        ),
        event(
            4,
            &["tlp:green"],
            vec![attribute(41, "email", "Network activity", MARKER)],
            "1700000400",
        ),
        cluster(51, "1", "APT-Allowed"),
        cluster(52, "0", MARKER),
        sighting(61, 1),
        sighting(62, 1),
        sighting(63, 3),
        analyst("Note", 71, "1", "shareable note"),
        proposal(81, 1, "md5", "d41d8cd98f00b204e9800998ecf8427e"),
        proposal(82, 2, "passport-number", MARKER),
        analyst("Note", 72, "0", MARKER),
    ] {
        s.put(v);
    }
    s
}

/// The restricted server's data; a pull is checked with `misp_restricted`'s
/// rules (no tlp:red, no distribution 0).
fn restricted_seed() -> Store {
    let ip = |n| attribute(n, "ip-dst", "Network activity", "198.18.0.1");
    let mut old = event(2, &["tlp:clear"], vec![ip(21)], "1600000000");
    old["Event"]["info"] = json!("older version");
    let mut dist0 = attribute(131, "text", "Other", MARKER);
    dist0["distribution"] = json!("0");
    let mut s = Store::default();
    for v in [
        old,
        event(101, &["tlp:green"], vec![ip(111)], "1700001000"),
        event(
            102,
            &["tlp:red"],
            vec![attribute(121, "text", "Other", MARKER)],
            "1700002000",
        ),
        event(103, &["tlp:green"], vec![dist0], "1700003000"),
        proposal(141, 101, "md5", "d41d8cd98f00b204e9800998ecf8427e"),
        proposal(142, 101, "sha1", "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
        cluster(151, "1", "Pullable cluster"),
        cluster(152, "0", MARKER),
        sighting(161, 101),
        analyst("Note", 171, "1", "pullable note"),
        analyst("Opinion", 172, "0", MARKER),
    ] {
        s.put(v);
    }
    s
}

// ------------------------------------------------------------ deployment

/// `config.sample.json` with only its TLS material pointed at this test's
/// files, written under the same name so `misp-guard-gw nft` renders it
/// exactly as the shipped files.
fn sample_config(dir: &Path) -> PathBuf {
    let mut config = sample_policy();
    // The operator's own certificate for this name (say, the one the site's
    // CA issued for the real server) instead of a minted leaf.
    let restricted = &mut config["gateway"]["instances"]["misp_restricted"];
    restricted["cert"] = json!("restricted-site.crt");
    restricted["key"] = json!("restricted-site.key");
    let path = dir.join("config.sample.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    path
}

/// A certificate for misp.restricted.example (and its address) from a
/// site CA, as `restricted-site.{crt,key}`; returns the site CA's file.
fn site_certificate(dir: &Path) -> PathBuf {
    let site = CertificateAuthority::generate("site CA").unwrap();
    let ip = RESTRICTED.0.parse::<SocketAddr>().unwrap().ip();
    let leaf = tls::mint_leaf(&site, RESTRICTED.1, &[ip]).unwrap();
    write_pem(
        &dir.join("restricted-site.crt"),
        &tls::der_to_pem("CERTIFICATE", &leaf.cert_der),
    );
    write_pem(
        &dir.join("restricted-site.key"),
        &tls::der_to_pem("PRIVATE KEY", leaf.key_der.secret_pkcs8_der()),
    );
    write_pem(&dir.join("site-ca.crt"), &site.cert_pem());
    dir.join("site-ca.crt")
}

/// The shipped rules describe this policy, then go into the router with the
/// shipped script.
fn apply_shipped_rules(vlans: &Vlans, config: &Path, mode: &str) {
    let rendered = gateway_cli(&["nft", "--config", config.to_str().unwrap(), "--mode", mode]);
    let shipped = std::fs::read(root().join(format!("nftables/{mode}.nft"))).unwrap();
    assert_eq!(
        rendered, shipped,
        "shipped nftables/{mode}.nft does not match the policy"
    );
    let apply = root().join("scripts/apply-nftables.sh");
    run(
        &[
            "ip",
            "netns",
            "exec",
            &vlans.ns("rtr"),
            apply.to_str().unwrap(),
            "--mode",
            mode,
            // Its record goes with the test, not into the host's /run.
            "--state-dir",
            config.parent().unwrap().to_str().unwrap(),
        ],
        None,
    )
    .unwrap_or_else(|e| panic!("apply {mode} rules: {e}"));
}

/// Everything in `pulled` that the secret server did not have before.
fn pulled_from(pulled: &Store, before: &Store) -> String {
    fn fresh<K: Ord, V: PartialEq + std::fmt::Debug>(
        now: &std::collections::BTreeMap<K, V>,
        was: &std::collections::BTreeMap<K, V>,
    ) -> String {
        let new = now.iter().filter(|(k, v)| was.get(k) != Some(v));
        new.map(|(_, v)| format!("{v:?}")).collect()
    }
    [
        fresh(&pulled.events, &before.events),
        fresh(&pulled.clusters, &before.clusters),
        fresh(&pulled.sightings, &before.sightings),
        fresh(&pulled.analyst, &before.analyst),
        fresh(&pulled.proposals, &before.proposals),
    ]
    .concat()
}

/// Whether any request body the server received contains `needle`.
fn sees(server: &MispServer, needle: &str) -> bool {
    let needle = needle.as_bytes();
    let seen = server.seen.lock().unwrap();
    seen.iter()
        .any(|s| s.body.windows(needle.len()).any(|w| w == needle))
}

// ------------------------------------------------------------ audit rows

/// One row of docs/MISP-IMPORT.md replayed through the live gateway: an
/// attack built the way MISP would read it, refused for `reason` without
/// its forbidden part (which carries `marker(rule)`) reaching the receiving
/// server, and the legitimate MISP 2.5 shape of the same endpoint, stored
/// exactly as sent.
struct AuditRow {
    rule: &'static str,
    path: &'static str,
    attack: Value,
    reason: &'static str,
    legit: Value,
}

/// Planted in a row's forbidden part; contains `MARKER`, so the suite's
/// own marker search covers it too.
fn marker(rule: &str) -> String {
    format!("{MARKER} {rule}")
}

/// A distribution-1 note on event 1 whose `key` member holds `children`.
fn note_with(n: u32, key: &str, children: Value) -> Value {
    let mut note = analyst("Note", n, "1", "parent note");
    note["Note"][key] = children;
    note
}

/// A note or opinion on note `parent`, as MISP nests children.
fn child(kind: &str, n: u32, parent: u32, distribution: &str, text: &str) -> Value {
    let mut c = analyst(kind, n, distribution, text)[kind].take();
    c["object_uuid"] = json!(uuid(parent));
    c["object_type"] = json!("Note");
    c
}

/// A relationship from attribute 11 (event 1) to a `kind` whose
/// `related_object` is `target`, as MISP's pushAnalystData sends it.
fn relationship(n: u32, kind: &str, target: Value) -> Value {
    json!({"Relationship": {"uuid": uuid(n), "object_uuid": uuid(11),
        "object_type": "Attribute", "distribution": "1", "modified": "2026-11-01 10:00:00",
        "relationship_type": "related-to", "related_object_uuid": uuid(n + 1),
        "related_object_type": kind, "note_type_name": "Relationship",
        "related_object": target}})
}

/// A pushCluster body: one cluster with one relation tagged `tag`.
fn cluster_with_relation(n: u32, tag: &str, relation_type: &str) -> Value {
    let mut c = cluster(n, "1", "Related cluster");
    c["GalaxyCluster"]["GalaxyClusterRelation"] = json!([{
        "referenced_galaxy_cluster_uuid": uuid(n + 1),
        "referenced_galaxy_cluster_type": relation_type, "distribution": "3",
        "Tag": [{"name": tag}]}]);
    json!([c])
}

/// Rows already enforced with `config.sample.json`'s `misp_secret` rules
/// (checked with `misp-guard-gw evaluate` first).
fn audit_rows() -> Vec<AuditRow> {
    let wrapped = |rule| {
        let mut e = event(301, &["tlp:green"], vec![], "1700003010");
        e["response"] = event(
            302,
            &["tlp:red"],
            vec![attribute(303, "text", "Other", &marker(rule))],
            "1700003020",
        );
        e
    };
    vec![
        AuditRow {
            rule: "R-EVENT-WRAP",
            path: "/events/add/metadata:1",
            attack: wrapped("R-EVENT-WRAP"),
            reason: "body wraps the event in `response` or `request`",
            legit: event(304, &["tlp:green"], vec![], "1700003040"),
        },
        AuditRow {
            rule: "R-ANALYST-RECURSE",
            path: "/analyst_data/pushAnalystData",
            attack: note_with(
                311,
                "Opinion",
                json!([child(
                    "Opinion",
                    312,
                    311,
                    "0",
                    &marker("R-ANALYST-RECURSE")
                )]),
            ),
            reason: "analyst data has blocked distribution level: 0",
            legit: note_with(
                313,
                "Opinion",
                json!([child("Opinion", 314, 313, "1", "shareable opinion")]),
            ),
        },
        AuditRow {
            rule: "R-ANALYST-WRAP",
            path: "/analyst_data/pushAnalystData",
            // A shareable list element whose inner `Note`, the one MISP saves, is not.
            attack: note_with(
                321,
                "Note",
                json!([{"distribution": "1",
                    "Note": child("Note", 322, 321, "0", &marker("R-ANALYST-WRAP"))}]),
            ),
            reason: "analyst data element wraps a Note object",
            legit: note_with(
                323,
                "Note",
                json!([child("Note", 324, 323, "1", "shareable child")]),
            ),
        },
        AuditRow {
            rule: "R-CLUSTER-REL",
            path: "/galaxies/pushCluster",
            attack: cluster_with_relation(331, "tlp:red", &marker("R-CLUSTER-REL")),
            reason: "galaxy cluster relation with a blocked tag: tlp:red",
            legit: cluster_with_relation(333, "tlp:green", "related-to"),
        },
        AuditRow {
            rule: "R-REL-SHAPES",
            path: "/analyst_data/pushAnalystData",
            // MISP serves `[]` for a cluster target, never its content.
            attack: relationship(
                341,
                "GalaxyCluster",
                json!({"GalaxyCluster": {"uuid": uuid(342), "distribution": "0",
                    "value": marker("R-REL-SHAPES")}}),
            ),
            reason: "relationship to GalaxyCluster carries a related_object MISP 2.5 never serves",
            // The false block this row fixed: MISP serves an object target
            // without an `Attribute` list when none is visible to the user.
            legit: relationship(
                343,
                "Object",
                json!({"Object": {"uuid": uuid(344), "name": "domain-ip", "distribution": "5",
                    "sharing_group_id": "0",
                    "Event": {"uuid": uuid(1), "distribution": "1", "info": "event 1"}}}),
            ),
        },
        AuditRow {
            rule: "R-OBJ-WRAP",
            path: "/events/add/metadata:1",
            // MISP saves the inner `Object` (a person) instead of the element.
            attack: with_event_list(
                event(351, &["tlp:green"], vec![], "1700003510"),
                "Object",
                json!({"uuid": uuid(352), "name": "file", "distribution": "5", "Attribute": [],
                    "Object": {"uuid": uuid(353), "name": "person", "distribution": "0",
                        "Attribute": [attribute(354, "first-name", "Person", &marker("R-OBJ-WRAP"))]}}),
            ),
            reason: "object element wraps an Object; refusing the ambiguous payload",
            legit: event(355, &["tlp:green"], vec![], "1700003550"),
        },
        AuditRow {
            rule: "R-CAT-DEFAULT",
            path: "/events/add/metadata:1",
            // MISP files an empty category under the type's default: Person.
            attack: event(
                361,
                &["tlp:green"],
                vec![attribute(362, "first-name", "", &marker("R-CAT-DEFAULT"))],
                "1700003610",
            ),
            reason: "attribute has an empty category",
            legit: event(
                363,
                &["tlp:green"],
                vec![attribute(364, "text", "Other", "a shareable note")],
                "1700003630",
            ),
        },
        AuditRow {
            rule: "R-REPORT-WRAP",
            path: "/events/add/metadata:1",
            // On add MISP saves the inner `EventReport` instead of the element.
            attack: with_event_list(
                event(371, &["tlp:green"], vec![], "1700003710"),
                "EventReport",
                json!({"uuid": uuid(372), "name": "outer", "content": "", "distribution": "1",
                    "EventReport": {"uuid": uuid(373), "name": "inner",
                        "content": marker("R-REPORT-WRAP"), "distribution": "0"}}),
            ),
            reason: "event report element wraps an EventReport; refusing the ambiguous payload",
            legit: with_event_list(
                event(374, &["tlp:green"], vec![], "1700003740"),
                "EventReport",
                json!({"uuid": uuid(375), "name": "report", "content": "shareable", "distribution": "1"}),
            ),
        },
        // R-SG-LOCALID is not replayed here: config.sample.json blocks
        // distribution 4 itself, so its attack would be refused by R-DIST
        // (it is covered by tests/misp_import and tests/real_misp).
    ]
}

/// `event` with one more element in its `key` list (`Object`, `EventReport`).
fn with_event_list(mut event: Value, key: &str, element: Value) -> Value {
    match event["Event"][key].as_array_mut() {
        Some(list) => list.push(element),
        None => event["Event"][key] = json!([element]),
    }
    event
}

/// Whether `store` holds `item` (`{"Event"|"GalaxyCluster"|<analyst kind>:
/// {...}}`) exactly as it was sent.
fn holds(store: &Store, item: &Value) -> bool {
    let Some((kind, obj)) = item.as_object().and_then(|o| o.iter().next()) else {
        return false;
    };
    let uuid = obj["uuid"].as_str().unwrap_or_default().to_string();
    let held = match kind.as_str() {
        "Event" => store.events.get(&uuid),
        "GalaxyCluster" => store.clusters.get(&uuid),
        _ => store.analyst.get(&(kind.clone(), uuid)),
    };
    held == Some(item)
}

/// The secret compartment's client sends every row's attack, then its
/// legitimate shape, to the restricted server through the gateway.
fn replay_audit_rows(ns: &str, ca: &Path, restricted: &MispServer, gw: &Gateway) {
    let rows = audit_rows();
    let bodies: Vec<(&'static str, Value)> = rows
        .iter()
        .flat_map(|r| [(r.path, r.attack.clone()), (r.path, r.legit.clone())])
        .collect();
    let ca = ca.to_path_buf();
    let statuses = join(in_netns(ns, move || async move {
        let mut c = Client::new(RESTRICTED.0.parse().unwrap(), RESTRICTED.1, &ca);
        let mut statuses = Vec::new();
        for (path, body) in bodies {
            statuses.push(c.request("POST", path, Some(&body)).await.0);
        }
        statuses
    }));
    let logs = gw.logs();
    let store = restricted.store.lock().unwrap().clone();
    for (row, got) in rows.iter().zip(statuses.chunks(2)) {
        assert_eq!(got, [403, 200], "{}: attack, legit\n{logs}", row.rule);
        let refusal = format!("request blocked: [POST]{} - {}", row.path, row.reason);
        assert!(
            logs.contains(&refusal),
            "{}: no {refusal:?}\n{logs}",
            row.rule
        );
        assert!(
            !sees(restricted, &marker(row.rule)),
            "{}: forbidden data reached the restricted server",
            row.rule
        );
        let legit = match &row.legit {
            Value::Array(list) => list.iter().collect(),
            one => vec![one],
        };
        assert!(
            legit.into_iter().all(|item| holds(&store, item)),
            "{}: legitimate shape not stored as sent",
            row.rule
        );
    }
}

// ------------------------------------------------------------ the suite

fn sync_across_vlans(test: &str, mode: &str) {
    if !prerequisites_met(test) {
        return;
    }
    let vlans = Vlans::up();
    let dir = TempDir::new("vlan");
    let d = &dir.0;
    // Clients trust the site CA for the restricted server (whose
    // certificate the operator supplied) and the gateway CA for the rest.
    let gateway_ca = gateway_ca(&d.join("ca"));
    let ca = site_certificate(d);
    let (secret, _stop_secret) = start_server(
        vlans.ns("secret"),
        SECRET,
        d.join("secret-ca.crt"),
        secret_seed(),
    );
    let (restricted, _stop_restricted) = start_server(
        vlans.ns("restricted"),
        RESTRICTED,
        d.join("restricted-ca.crt"),
        restricted_seed(),
    );
    let config = sample_config(d);
    apply_shipped_rules(&vlans, &config, mode);
    let mut gw = Gateway::start_wrapped(
        &["ip", "netns", "exec", &vlans.ns("rtr")],
        &["run", "--config", config.to_str().unwrap()],
        d.join("gw.log"),
    );

    // The secret MISP pushes to and pulls from the restricted one, then
    // tries requests that are not sync.
    let ca2 = ca.clone();
    let (steps, pulled) = join(in_netns(&vlans.ns("secret"), move || async move {
        let mut c = Client::new(RESTRICTED.0.parse().unwrap(), RESTRICTED.1, &ca2);
        let local = secret_seed();
        connection_test(&mut c).await.expect("test connection");
        push(&mut c, &local).await.expect("push");
        let mut pulled = local.clone();
        pull(&mut c, &mut pulled).await.expect("pull");
        for (method, path) in [
            ("GET", "/users/login"),
            ("POST", "/admin/users/add"),
            ("POST", "/attributes/restSearch"),
            (
                "POST",
                "/events/delete/5f0c0001-0000-4000-8000-000000000001",
            ),
        ] {
            c.request(method, path, Some(&json!({}))).await;
        }
        (c.steps, pulled)
    }));
    let status = |method: &str, path: &str| {
        steps
            .iter()
            .rev()
            .find(|s| s.method == method && s.path == path)
            .map(|s| s.status)
            .unwrap_or_else(|| panic!("{method} {path} was not sent: {steps:#?}"))
    };
    let logs = gw.logs();
    let store = restricted.store.lock().unwrap().clone();
    let seed = secret_seed();

    // Push: allowed events arrive byte-exact (new → add, known → edit).
    assert_eq!(status("HEAD", &format!("/events/view/{}", uuid(2))), 200);
    assert_eq!(
        status("POST", &format!("/events/edit/{}/metadata:1", uuid(2))),
        200,
        "{logs}"
    );
    for n in [1, 2] {
        let sent = serde_json::to_vec(&seed.events[&uuid(n)]).unwrap();
        assert_eq!(
            store.raw_events.get(&uuid(n)),
            Some(&sent),
            "event {n} must arrive intact"
        );
    }
    for n in [3, 4] {
        assert!(
            !store.events.contains_key(&uuid(n)),
            "blocked event {n} arrived"
        );
    }
    assert_eq!(
        steps
            .iter()
            .filter(|s| s.path == "/events/add/metadata:1")
            .map(|s| s.status)
            .collect::<Vec<_>>(),
        vec![200, 403, 403],
        "{steps:#?}"
    );
    assert!(store.clusters.contains_key(&uuid(51)) && !store.clusters.contains_key(&uuid(52)));
    assert!(store.proposals.contains_key(&uuid(81)) && !store.proposals.contains_key(&uuid(82)));
    assert_eq!(
        status("POST", &format!("/events/pushProposals/{}", uuid(2))),
        403
    );
    assert!(store.sightings.contains_key(&uuid(61)) && store.sightings.contains_key(&uuid(62)));
    assert!(
        !store.sightings.contains_key(&uuid(63)),
        "sighting of a blocked event"
    );
    assert!(store.analyst.contains_key(&("Note".into(), uuid(71))));
    assert!(!store.analyst.contains_key(&("Note".into(), uuid(72))));
    assert!(
        !sees(&restricted, MARKER),
        "blocked data reached the restricted server"
    );

    // Pull: checked with the restricted instance's rules.
    assert_eq!(
        status("GET", &format!("/events/view/{}{VIEW_SUFFIX}", uuid(101))),
        200
    );
    for n in [102, 103] {
        assert_eq!(
            status("GET", &format!("/events/view/{}{VIEW_SUFFIX}", uuid(n))),
            403
        );
        assert!(
            !pulled.events.contains_key(&uuid(n)),
            "blocked event {n} was pulled"
        );
    }
    assert_eq!(
        pulled.events[&uuid(101)],
        restricted_seed().events[&uuid(101)]
    );
    assert_eq!(status("GET", PROPOSALS_PATH), 200);
    assert!(pulled.proposals.contains_key(&uuid(141)) && pulled.proposals.contains_key(&uuid(142)));
    assert!(pulled.clusters.contains_key(&uuid(151)) && !pulled.clusters.contains_key(&uuid(152)));
    assert_eq!(
        status("GET", &format!("/galaxy_clusters/view/{}", uuid(152))),
        403
    );
    assert!(pulled.sightings.contains_key(&uuid(161)));
    assert!(pulled.analyst.contains_key(&("Note".into(), uuid(171))));
    assert!(!pulled.analyst.contains_key(&("Opinion".into(), uuid(172))));
    assert!(
        !pulled_from(&pulled, &seed).contains(MARKER),
        "blocked data was pulled"
    );

    // Not sync: refused by the gateway, never seen by the server.
    for path in ["/users/login", "/admin/users/add", "/attributes/restSearch"] {
        let method = if path == "/users/login" {
            "GET"
        } else {
            "POST"
        };
        assert_eq!(status(method, path), 403, "{method} {path}");
    }
    let seen = restricted.paths();
    assert!(
        !seen.iter().any(|p| p.contains("/users/login")
            || p.contains("/admin/")
            || p.contains("/attributes/")
            || p.contains("/events/delete/")),
        "non-sync request reached the server: {seen:?}"
    );

    // A MISP configured with the server's address sends no SNI: its leaf
    // names the instance and carries that address (and only that one).
    let ca4 = ca.clone();
    let by_ip = join(in_netns(&vlans.ns("secret"), move || async move {
        let mut c = Client::new(RESTRICTED.0.parse().unwrap(), "198.51.100.10", &ca4);
        c.request("GET", "/servers/getVersion", None).await.0
    }));
    assert_eq!(by_ip, 200, "connect by IP without SNI:\n{}", gw.logs());

    // Plain HTTP to the MISP port (sync is always TLS): refused, unseen.
    let before = restricted.seen.lock().unwrap().len();
    let answer = join(in_netns(&vlans.ns("secret"), || async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(RESTRICTED.0).await.unwrap();
        let request = "GET /servers/getVersion HTTP/1.1\r\nHost: misp.restricted.example\r\n\r\n";
        let _ = tcp.write_all(request.as_bytes()).await;
        let mut answer = Vec::new();
        let read = tcp.read_to_end(&mut answer);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), read).await;
        answer
    }));
    assert!(
        !answer.starts_with(b"HTTP/1.1 200"),
        "plain HTTP was answered"
    );
    assert_eq!(restricted.seen.lock().unwrap().len(), before);

    // The restricted compartment may not reach the secret one: no answer,
    // and the secret server sees nothing at all.
    let ca3 = gateway_ca.clone();
    let refused = join(in_netns(&vlans.ns("restricted"), move || async move {
        let mut c = Client::new(SECRET.0.parse().unwrap(), SECRET.1, &ca3);
        let _ = push(&mut c, &restricted_seed()).await;
        let mut local = Store::default();
        let _ = pull(&mut c, &mut local).await;
        (c.steps, local)
    }));
    assert!(refused.0.iter().all(|s| s.status == 0), "{:?}", refused.0);
    assert!(refused.1.events.is_empty());
    assert!(
        secret.seen.lock().unwrap().is_empty(),
        "the secret server was reached"
    );

    // curl, no proxy settings: an allowed push lands, a tlp:amber one does not.
    let allowed = event(5, &["tlp:green"], vec![], "1700000500").to_string();
    let amber = event(6, &["tlp:amber"], vec![], "1700000600").to_string();
    let to = Remote {
        host: RESTRICTED.1,
        port: 443,
        ip: "198.51.100.10",
    };
    for (body, expected) in [(&allowed, 200), (&amber, 403)] {
        let file = d.join("push.json");
        std::fs::write(&file, body).unwrap();
        let (code, _) = curl(
            &vlans.ns("secret"),
            &ca,
            &to,
            "POST",
            "/events/add/metadata:1",
            Some(&file),
            &d.join("out"),
        );
        assert_eq!(code, expected, "curl push; gateway log:\n{}", gw.logs());
    }
    let store = restricted.store.lock().unwrap().clone();
    assert_eq!(
        store.raw_events.get(&uuid(5)).map(Vec::as_slice),
        Some(allowed.as_bytes())
    );
    assert!(!store.events.contains_key(&uuid(6)));

    // Audit rows (issue 14): attacks shaped as MISP reads them stay out,
    // the MISP 2.5 shapes of the same endpoints arrive.
    replay_audit_rows(&vlans.ns("secret"), &ca, &restricted, &gw);

    let logs = gw.logs();
    for reason in [
        "event has blocked tag: tlp:red",
        "attribute with a blocked type: email",
        "event has blocked tag: tlp:amber",
        "cannot reach compartment",
    ] {
        assert!(logs.contains(reason), "log lacks {reason:?}:\n{logs}");
    }
    assert_eq!(gw.terminate(), Some(0), "{logs}");
}

#[test]
fn misp_sync_across_vlans_redirect() {
    sync_across_vlans("misp_sync_across_vlans_redirect", "redirect");
}

#[test]
fn misp_sync_across_vlans_tproxy() {
    sync_across_vlans("misp_sync_across_vlans_tproxy", "tproxy");
}
