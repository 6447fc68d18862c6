//! Request bodies for the real-MISP suite, in the shapes MISP 2.5's sync
//! sends them, and the fresh uuids each case run uses.

use serde_json::{json, Value};

use super::support::realmisp::fresh_uuid;

/// The person object template of misp-objects (the kit loads all of them).
pub const PERSON_TEMPLATE: &str = "a15b0477-e9d1-4b9c-9546-abe78a4f4248";
pub const DOMAIN_IP_TEMPLATE: &str = "43b3b146-77eb-4931-b4cc-b66c60f28734";

/// Fresh uuids for one run of one case, plus the run's blocked sharing group.
pub struct Ids {
    pub ev: String,
    pub a1: String,
    pub a2: String,
    pub o1: String,
    pub oa1: String,
    pub r1: String,
    pub n1: String,
    pub n2: String,
    pub s1: String,
    pub p1: String,
    pub gc: String,
    pub gx: String,
    pub org: String,
    /// The sharing group the policy blocks (one per test run): uuid and
    /// MISP's local id for it.
    pub sg: String,
    pub sg_id: String,
    pub now: u64,
}

/// The sharing group the policy blocks, made once per run on MISP.
pub struct BlockedSg {
    pub uuid: String,
    pub local_id: String,
}

impl Ids {
    pub fn fresh(sg: &BlockedSg) -> Ids {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        Ids {
            ev: fresh_uuid(),
            a1: fresh_uuid(),
            a2: fresh_uuid(),
            o1: fresh_uuid(),
            oa1: fresh_uuid(),
            r1: fresh_uuid(),
            n1: fresh_uuid(),
            n2: fresh_uuid(),
            s1: fresh_uuid(),
            p1: fresh_uuid(),
            gc: fresh_uuid(),
            gx: fresh_uuid(),
            org: fresh_uuid(),
            sg: sg.uuid.clone(),
            sg_id: sg.local_id.clone(),
            now,
        }
    }

    pub fn orgc(&self) -> Value {
        json!({"name": format!("MGW-PEER-{}", &self.org[..8]), "uuid": self.org, "local": false})
    }
}

// ---- body builders (shapes as MISP 2.5's sync sends them) ----

pub fn attribute(uuid: &str, i: &Ids, extra: Value) -> Value {
    merge(
        // MISP refuses a second attribute with the same type and value in
        // one event, so each value comes from the attribute's uuid.
        json!({"uuid": uuid, "type": "domain", "category": "Network activity",
               "value": format!("{}.mgw-realmisp.example", &uuid[..8]), "to_ids": false,
               "distribution": "5", "timestamp": i.now.to_string(), "comment": "", "deleted": false}),
        extra,
    )
}

pub fn domain_ip_object(i: &Ids, extra: Value) -> Value {
    merge(
        json!({"uuid": i.o1, "name": "domain-ip", "meta-category": "network",
               "template_uuid": DOMAIN_IP_TEMPLATE, "template_version": "11",
               "distribution": "5", "timestamp": i.now.to_string(), "comment": "", "deleted": false,
               "Attribute": [{"uuid": i.oa1, "type": "domain", "object_relation": "domain",
                              "category": "Network activity", "value": format!("{}.mgw-realmisp.example", &i.oa1[..8]),
                              "distribution": "5", "timestamp": i.now.to_string(), "to_ids": false}]}),
        extra,
    )
}

pub fn person_object(i: &Ids) -> Value {
    json!({"uuid": i.o1, "name": "person", "meta-category": "misc",
           "template_uuid": PERSON_TEMPLATE, "template_version": "20",
           "distribution": "5", "timestamp": i.now.to_string(), "comment": "", "deleted": false,
           "Attribute": [{"uuid": i.oa1, "type": "first-name", "object_relation": "first-name",
                          "category": "Person", "value": "Mallory",
                          "distribution": "5", "timestamp": i.now.to_string(), "to_ids": false}]})
}

pub fn report(i: &Ids, distribution: &str) -> Value {
    json!({"uuid": i.r1, "name": "mgw report", "content": "report body",
           "distribution": distribution, "timestamp": i.now.to_string(), "deleted": false})
}

pub fn note(uuid: &str, on: &str, on_type: &str, distribution: &str, i: &Ids) -> Value {
    json!({"uuid": uuid, "object_uuid": on, "object_type": on_type, "note_type_name": "Note", "note": "mgw note",
           "language": "en", "distribution": distribution, "authors": "peer@example.test",
           "created": "2026-01-02 03:04:05", "modified": "2026-01-02 03:04:05",
           "org_uuid": i.org, "orgc_uuid": i.org, "Orgc": i.orgc(), "Org": i.orgc()})
}

pub fn opinion(uuid: &str, on: &str, on_type: &str, distribution: &str, i: &Ids) -> Value {
    let mut o = note(uuid, on, on_type, distribution, i);
    let m = o.as_object_mut().unwrap();
    m.remove("note");
    m.insert("note_type_name".into(), json!("Opinion"));
    m.insert("opinion".into(), json!("75"));
    m.insert("comment".into(), json!("mgw opinion"));
    o
}

pub fn sharing_group(i: &Ids) -> Value {
    json!({"uuid": i.sg, "name": format!("mgw blocked {}", &i.sg[..8]), "releasability": "test",
           "description": "", "active": true, "roaming": false, "local": false,
           "created": "2026-01-02 03:04:05", "modified": "2026-01-02 03:04:05",
           "Organisation": i.orgc(),
           "SharingGroupOrg": [{"extend": true, "Organisation": i.orgc()}],
           "SharingGroupServer": []})
}

/// `{"Event": ...}` with one attribute and tlp:green; `extra` replaces keys.
pub fn event(i: &Ids, extra: Value) -> Value {
    let base = json!({"uuid": i.ev, "info": "misp-guard-gw real MISP suite",
        "distribution": "1", "threat_level_id": "4", "analysis": "0", "published": false,
        "date": "2026-01-02", "timestamp": i.now.to_string(), "publish_timestamp": "0",
        "sharing_group_id": "0", "disable_correlation": false, "extends_uuid": "",
        "Orgc": i.orgc(), "Tag": [{"name": "tlp:green"}],
        "Attribute": [attribute(&i.a1, i, json!({}))], "Object": [], "EventReport": []});
    json!({"Event": merge(base, extra)})
}

/// The seeded event an edit changes: same uuid, newer timestamp, a second
/// attribute `a2` (with `a2_extra`) and `extra` on the event.
pub fn edit(i: &Ids, extra: Value, a2_extra: Value) -> Value {
    let mut e = event(i, extra);
    e["Event"]["timestamp"] = json!((i.now + 10).to_string());
    e["Event"]["Attribute"]
        .as_array_mut()
        .unwrap()
        .push(attribute(&i.a2, i, a2_extra));
    e
}

pub fn seed_event(i: &Ids, tags: &[&str]) -> Value {
    let mut e = event(i, json!({"Tag": self::tags(tags)}));
    e["Event"]["timestamp"] = json!((i.now - 100).to_string());
    e["Event"]["Attribute"][0]["timestamp"] = json!((i.now - 100).to_string());
    e
}

pub fn cluster(i: &Ids, extra: Value) -> Value {
    let c = json!({"uuid": i.gc, "collection_uuid": "", "tag_name": "", "type": "mgw-test-galaxy",
        "value": format!("mgw cluster {}", &i.gc[..8]), "description": "pushed cluster", "source": "",
        "authors": [], "version": "1", "distribution": "1", "sharing_group_id": null,
        "default": false, "locked": false, "published": true, "deleted": false,
        "Galaxy": {"uuid": i.gx, "name": "mgw test galaxy", "type": "mgw-test-galaxy",
                   "description": "mgw", "version": "1", "icon": "map", "namespace": "mgw",
                   "enabled": true, "local_only": false, "kill_chain_order": {}},
        "GalaxyElement": [{"key": "k", "value": "v"}], "GalaxyClusterRelation": [],
        "Orgc": i.orgc(), "Org": i.orgc()});
    json!([{"GalaxyCluster": merge(c, extra)}])
}

pub fn sighting(i: &Ids) -> Value {
    json!([{"uuid": i.s1, "attribute_uuid": i.a1, "event_uuid": i.ev, "type": "0",
            "date_sighting": i.now.to_string(), "source": "mgw", "org_id": "0",
            "Organisation": i.orgc()}])
}

pub fn proposal(i: &Ids, extra: Value) -> Value {
    json!([merge(
        json!({"uuid": i.p1, "event_uuid": i.ev, "old_id": "0", "type": "ip-src",
        "category": "Network activity", "value": "192.0.2.77", "to_ids": false, "comment": "",
        "timestamp": i.now.to_string(), "deleted": false, "proposal_to_delete": false,
        "org_id": "1", "event_org_id": "1", "email": "peer@example.test", "first_seen": null, "last_seen": null,
        "disable_correlation": false, "Org": i.orgc(), "EventOrg": i.orgc()}),
        extra
    )])
}

/// `base` with `extra`'s top-level keys replacing its own.
pub fn merge(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
    base
}

pub fn tags(names: &[&str]) -> Value {
    Value::Array(names.iter().map(|n| json!({"name": n})).collect())
}
