//! Structure-aware mutations of a realistic event with every carrier of
//! `engine::model::SCHEMA` filled: the fuzzer's bytes choose edits (set a
//! schema key to a policy-relevant value, splice a subtree elsewhere,
//! delete, replace, append), not raw bytes, so the JSON stays valid and the
//! checks themselves are exercised.
//!
//! Oracle: the two readers of an event (buffered serde view + `checks::event`,
//! and the streaming reader `stream::check_event_body`) must agree on
//! allowed/blocked and, for rule blocks, on the reason, on pushes and pulls;
//! and the engine's push and pull stages must not panic on the result.
#![no_main]

#[path = "../common/mod.rs"]
mod common;

use std::sync::OnceLock;

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use misp_guard_gw::engine::checks;
use misp_guard_gw::engine::reading::{Checked, Ctx, Violation};
use misp_guard_gw::engine::model::{Event, SCHEMA};
use misp_guard_gw::engine::stream;
use misp_guard_gw::policy::Policy;
use serde::Deserialize;
use serde_json::{json, Value};

fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(common::policy)
}

const SG: &str = "b9e656ba-b9c0-4506-83ed-7b54b43a57cb";

/// An event every rule of the fuzz policy allows, with each carrier present.
fn base() -> Value {
    let tag = json!({"name": "tlp:green"});
    let sg = json!({"uuid": "11111111-2222-4333-8444-555555555555",
        "SharingGroupOrg": [{"Organisation": {"uuid": common::USER_ORG}}],
        "SharingGroupServer": [{"all_orgs": false}]});
    let note = json!({"uuid": common::UUID, "distribution": "5", "note": "n"});
    let attribute = json!({"category": "Network activity", "type": "ip-dst", "value": "198.51.100.7",
        "distribution": "5", "Tag": [tag], "AttributeTag": [{"Tag": tag}],
        "Galaxy": [{"GalaxyCluster": [{"tag_name": "misp-galaxy:threat-actor=\"x\""}]}],
        "ShadowAttribute": [{"category": "Network activity", "type": "domain", "value": "a.example"}],
        "Note": [note], "Opinion": [note],
        "Relationship": [{"distribution": "5", "related_object_type": "Attribute",
                          "related_object": {"Attribute": {"category": "Other", "type": "text"}}}]});
    json!({"Event": {
        "uuid": common::UUID, "info": "fuzz", "distribution": "1", "Tag": [tag],
        "EventTag": [{"Tag": tag}],
        "Galaxy": [{"GalaxyCluster": [{"tag_name": "misp-galaxy:tool=\"y\""}]}],
        "EventReport": [{"distribution": "5"}], "SharingGroup": sg,
        "Note": [note], "Opinion": [note], "Relationship": [],
        "Attribute": [attribute],
        "Object": [{"name": "domain-ip", "distribution": "5", "Attribute": [attribute], "Note": [note]}],
        "ShadowAttribute": [{"category": "Network activity", "type": "ip-src", "value": "192.0.2.1"}]
    }})
}

/// Values a rule of the policy reacts to, plus type confusions.
fn scalar(u: &mut Unstructured) -> Result<Value> {
    Ok(match u.int_in_range(0..=27)? {
        0 => json!("tlp:red"),
        1 => json!("tlp:amber"),
        2 => json!("tlp:white"),
        3 => json!("TLP:RED"),
        4 => json!(" tlp:red"),
        5 => json!("misp-galaxy:x=\"tlp:red\""),
        6 => json!("0"),
        7 => json!("1"),
        8 => json!("4"),
        9 => json!("5"),
        10 => json!(0),
        11 => json!(1),
        12 => json!(4),
        13 => json!(-1),
        14 => json!(1e20),
        15 => json!(0.5),
        16 => json!("passport-number"),
        17 => json!("Person"),
        18 => json!("person"),
        19 => json!(SG),
        20 => json!(common::USER_ORG),
        21 => json!(""),
        22 => Value::Null,
        23 => json!(true),
        24 => json!([]),
        25 => json!({}),
        26 => json!("tlp:\u{0}red"),
        _ => json!(u.arbitrary::<String>()?),
    })
}

fn keys() -> &'static [&'static str] {
    static KEYS: OnceLock<Vec<&'static str>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut k: Vec<&'static str> = SCHEMA
            .iter()
            .flat_map(|(_, f)| f.iter().map(|(key, _)| *key))
            .collect();
        k.extend([
            "name",
            "tag_name",
            "uuid",
            "GalaxyCluster",
            "SharingGroupOrg",
            "SharingGroupServer",
            "Organisation",
            "all_orgs",
            "related_object_type",
            "related_object",
            "Event",
            "value",
            "sharing_group_id",
            "response",
            "request",
        ]);
        k.sort_unstable();
        k.dedup();
        k
    })
}

#[derive(Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

/// Every node below the top-level `Event` (paths relative to the root).
fn paths(v: &Value, cur: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
    if cur.len() > 1 {
        out.push(cur.clone());
    }
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                cur.push(Seg::Key(k.clone()));
                paths(child, cur, out);
                cur.pop();
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                cur.push(Seg::Index(i));
                paths(child, cur, out);
                cur.pop();
            }
        }
        _ => {}
    }
}

fn node<'v>(mut v: &'v mut Value, path: &[Seg]) -> &'v mut Value {
    for seg in path {
        v = match seg {
            Seg::Key(k) => &mut v[k.as_str()],
            Seg::Index(i) => &mut v[*i],
        };
    }
    v
}

fn mutate(u: &mut Unstructured, doc: &mut Value) -> Result<()> {
    for _ in 0..u.int_in_range(1..=8)? {
        let mut all = Vec::new();
        paths(&doc["Event"], &mut vec![Seg::Key("Event".into())], &mut all);
        // The Event object itself is a legal target for key edits.
        all.push(vec![Seg::Key("Event".into())]);
        let at = u.choose(&all)?.clone();
        let value = if u.ratio(1, 4)? {
            // Splice: a copy of another subtree (a tag list into an
            // attribute, an attribute into a relationship, ...).
            let from = u.choose(&all)?.clone();
            node(doc, &from).clone()
        } else {
            scalar(u)?
        };
        let target = node(doc, &at);
        match u.int_in_range(0..=3)? {
            0 => {
                if let Value::Object(m) = target {
                    m.insert(u.choose(keys())?.to_string(), value);
                }
            }
            1 => {
                if let Value::Object(m) = target {
                    let k = u
                        .choose(&m.keys().cloned().collect::<Vec<_>>())
                        .ok()
                        .cloned();
                    if let Some(k) = k {
                        m.remove(&k);
                    }
                }
            }
            2 if at.len() > 1 => *target = value,
            _ => {
                if let Value::Array(a) = target {
                    a.push(value);
                }
            }
        }
        // Bound the document so each run stays fast.
        if doc.to_string().len() > 64 * 1024 {
            break;
        }
    }
    Ok(())
}

/// The buffered reader, as the engine reads a pushed event into the model.
fn buffered(ctx: &Ctx, body: &str) -> Checked {
    #[derive(Deserialize)]
    #[allow(non_snake_case)]
    struct Doc<'a> {
        #[serde(borrow)]
        Event: Event<'a>,
    }
    let doc: Doc = serde_json::from_str(body)?;
    checks::event(ctx, &doc.Event, checks::EventRole::Imported)
}

fn describe(c: &Checked) -> String {
    match c {
        Ok(()) => "allowed".into(),
        Err(Violation::Rule(r)) => format!("rule: {r}"),
        Err(Violation::Malformed(e)) => format!("malformed: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut doc = base();
    if mutate(&mut u, &mut doc).is_err() {
        return;
    }
    let body = doc.to_string();
    let p = policy();
    let a = p.instance_by_host("a.example").unwrap();
    let rules = &p.instance(a).rules;
    for user_org in [None, Some(common::USER_ORG)] {
        let ctx = Ctx { rules, user_org };
        let b = buffered(&ctx, &body);
        let s = stream::check_event_body(&ctx, &body, stream::EventBody::Pushed);
        let same = match (&b, &s) {
            (Ok(()), Ok(())) => true,
            (Err(Violation::Rule(x)), Err(Violation::Rule(y))) => x == y,
            (Err(_), Err(_)) => true,
            _ => false,
        };
        assert!(
            same,
            "readers disagree (pull: {}): buffered {}, streamed {}\n{body}",
            user_org.is_some(),
            describe(&b),
            describe(&s)
        );
    }
    let headers: common::Headers = vec![
        ("Content-Type".into(), b"application/json".to_vec()),
        ("X-UserOrgUUID".into(), common::USER_ORG.into()),
    ];
    for (method, path) in common::ENDPOINTS {
        let x = common::exchange(p, method, path, &headers);
        common::body_stages(p, &x, &headers, 200, body.as_bytes());
    }
});
