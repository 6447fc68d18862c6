//! A blocked value planted in every carrier of `model::SCHEMA`, wherever its
//! record occurs in an event (down to two levels of nesting), checked
//! through both readers of a pushed event: the buffered typed view
//! (`model::Event` derived by serde, then `checks::event`) and the
//! streaming reader (`stream::check_event_body`).
//!
//! The carriers are enumerated from the schema itself, so a field added to
//! `schema!` is planted here without touching this file. The samples and
//! the expected reasons are written here, independently of `checks`; the
//! matches on `Record` and `Carrier` are exhaustive, so a new record or
//! carrier kind does not compile until it has a sample.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::config;
use crate::engine::checks::{self, Checked, Ctx, Violation};
use crate::engine::model::{Carrier, Event, Record, SCHEMA};
use crate::engine::stream;

const BLOCKED_SG: &str = "b9e656ba-b9c0-4506-83ed-7b54b43a57cb";

/// Blocks one value of each kind; no required taxonomies, so an untagged
/// record is allowed and only the planted value can block.
const POLICY: &str = r#"{
  "allowlist": {"urls": [], "domains": []},
  "compartments_rules": {"can_reach": {"c1": ["c1"]}},
  "instances": {
    "a": {"ip": "10.1.0.1", "host": "a.example", "port": 443, "compartment_id": "c1", "affiliation": "",
          "taxonomies_rules": {"required_taxonomies": [], "allowed_tags": {}, "blocked_tags": ["tlp:red"]},
          "blocked_distribution_levels": ["0"],
          "blocked_sharing_groups_uuids": ["b9e656ba-b9c0-4506-83ed-7b54b43a57cb"],
          "blocked_attribute_types": ["passport-number"], "blocked_attribute_categories": ["Person"],
          "blocked_object_types": ["person"]}
  }
}"#;

/// How deep records are nested into each other's carriers.
const DEPTH: usize = 2;

/// A record of each kind that every rule of `POLICY` allows.
fn allowed(record: Record) -> Value {
    match record {
        Record::Event => json!({"distribution": "1", "Attribute": [], "Object": []}),
        Record::Attribute => json!({
            "category": "Network activity", "type": "ip-dst",
            "value": "198.51.100.7", "distribution": "5"
        }),
        Record::Object => json!({"name": "domain-ip", "distribution": "5", "Attribute": []}),
    }
}

/// misp-guard's wording for a blocked tag on `record`.
fn tag_reason(record: Record) -> String {
    match record {
        Record::Event => "event has blocked tag: tlp:red".into(),
        Record::Attribute => "attribute with a blocked tag: tlp:red".into(),
        Record::Object => panic!("objects carry no tags yet: choose the reason wording here"),
    }
}

/// The values planted directly in a field of `carrier` kind on `record`,
/// each with the reason it must be blocked with.
fn planted(record: Record, carrier: Carrier) -> Vec<(Value, String)> {
    let blocked_attribute = json!({"category": "Person", "type": "text", "value": "x"});
    let blocked_object = json!({"name": "person", "distribution": "5", "Attribute": []});
    let dist0 = || json!([{"distribution": "0"}]);
    match carrier {
        Carrier::Distribution => {
            let noun = match record {
                Record::Event => "event has",
                Record::Attribute => "attribute with a",
                Record::Object => "object with a",
            };
            vec![(json!("0"), format!("{noun} blocked distribution level: 0"))]
        }
        Carrier::Tags => vec![(json!([{"name": "tlp:red"}]), tag_reason(record))],
        Carrier::TagLinks => vec![(json!([{"Tag": {"name": "tlp:red"}}]), tag_reason(record))],
        Carrier::Galaxies => vec![(
            json!([{"GalaxyCluster": [{"tag_name": "tlp:red"}]}]),
            tag_reason(record),
        )],
        Carrier::SharingGroup => {
            let noun = match record {
                Record::Event => "event has",
                Record::Attribute => "attribute with a",
                Record::Object => "object with a",
            };
            vec![(
                json!({"uuid": BLOCKED_SG}),
                format!("{noun} blocked sharing group uuid: {BLOCKED_SG}"),
            )]
        }
        Carrier::EventReports => vec![(
            dist0(),
            "event report has blocked distribution level: 0".into(),
        )],
        Carrier::AnalystData | Carrier::Relationships => vec![(
            dist0(),
            "analyst data has blocked distribution level: 0".into(),
        )],
        Carrier::Attributes | Carrier::Proposals => vec![(
            json!([blocked_attribute]),
            "attribute with a blocked category: Person".into(),
        )],
        Carrier::Objects => vec![(
            json!([blocked_object]),
            "object with a blocked type: person".into(),
        )],
        Carrier::Category => vec![(
            json!("Person"),
            "attribute with a blocked category: Person".into(),
        )],
        Carrier::AttributeType => vec![(
            json!("passport-number"),
            "attribute with a blocked type: passport-number".into(),
        )],
        Carrier::ObjectName => vec![(json!("person"), "object with a blocked type: person".into())],
    }
}

type Wrap = fn(Value) -> Value;

/// The records a field of `carrier` kind holds, and how one element of
/// that record is written into the field.
fn contained(carrier: Carrier) -> Vec<(Record, Wrap)> {
    fn related(kind: &str, v: Value) -> Value {
        json!([{"distribution": "5", "related_object_type": kind, "related_object": {kind: v}}])
    }
    match carrier {
        Carrier::Attributes | Carrier::Proposals => vec![(Record::Attribute, |v| json!([v]))],
        Carrier::Objects => vec![(Record::Object, |v| json!([v]))],
        Carrier::Relationships => vec![
            (Record::Event, |v| related("Event", v)),
            (Record::Attribute, |v| related("Attribute", v)),
            (Record::Object, |v| related("Object", v)),
        ],
        Carrier::Distribution
        | Carrier::Tags
        | Carrier::TagLinks
        | Carrier::Galaxies
        | Carrier::SharingGroup
        | Carrier::EventReports
        | Carrier::AnalystData
        | Carrier::Category
        | Carrier::AttributeType
        | Carrier::ObjectName => vec![],
    }
}

fn carriers(record: Record) -> &'static [(&'static str, Carrier)] {
    SCHEMA
        .iter()
        .find(|(r, _)| *r == record)
        .map(|(_, c)| *c)
        .expect("every record is in SCHEMA")
}

struct Case {
    /// Where the value is planted, e.g. `Event.Object[Object.Attribute[Attribute.Tag]]`.
    path: String,
    /// The record holding the planted value.
    record: Value,
    reason: String,
}

/// Every planted case for `record`: its own carriers, then (while `depth`
/// lasts) every case of the records its carriers hold.
fn cases(record: Record, depth: usize, seen: &mut BTreeSet<(String, &'static str)>) -> Vec<Case> {
    let mut out = Vec::new();
    for &(key, carrier) in carriers(record) {
        seen.insert((format!("{record:?}"), key));
        for (value, reason) in planted(record, carrier) {
            let mut v = allowed(record);
            v[key] = value;
            out.push(Case {
                path: format!("{record:?}.{key}"),
                record: v,
                reason,
            });
        }
        if depth == 0 {
            continue;
        }
        for (child, wrap) in contained(carrier) {
            for case in cases(child, depth - 1, seen) {
                let mut v = allowed(record);
                v[key] = wrap(case.record);
                out.push(Case {
                    path: format!("{record:?}.{key}[{}]", case.path),
                    record: v,
                    reason: case.reason,
                });
            }
        }
    }
    out
}

/// The buffered reader: the whole event built by serde, then checked.
fn buffered(ctx: &Ctx, body: &str) -> Checked {
    #[derive(Deserialize)]
    #[allow(non_snake_case)]
    struct Doc<'a> {
        #[serde(borrow)]
        Event: Event<'a>,
    }
    let doc: Doc = serde_json::from_str(body)?;
    checks::event(ctx, &doc.Event, true)
}

fn reason(outcome: Checked) -> String {
    match outcome {
        Ok(()) => "allowed".into(),
        Err(Violation::Rule(r)) => r,
        Err(Violation::Malformed(e)) => format!("malformed: {e}"),
    }
}

fn with_rules<T>(f: impl FnOnce(&Ctx) -> T) -> T {
    let p = config::from_slice(POLICY.as_bytes(), Path::new("carriers.json")).unwrap();
    let id = p.instance_by_host("a.example").unwrap();
    f(&Ctx {
        rules: &p.instance(id).rules,
        user_org: None,
    })
}

#[test]
fn every_carrier_blocks_in_both_readers() {
    with_rules(|ctx| {
        let control = json!({"Event": allowed(Record::Event)}).to_string();
        assert_eq!(reason(buffered(ctx, &control)), "allowed");
        assert_eq!(reason(stream::check_event_body(ctx, &control)), "allowed");

        let mut seen = BTreeSet::new();
        let all = cases(Record::Event, DEPTH, &mut seen);
        let mut failures = Vec::new();
        for case in &all {
            let body = json!({"Event": case.record}).to_string();
            let got_buffered = reason(buffered(ctx, &body));
            let got_streamed = reason(stream::check_event_body(ctx, &body));
            if got_buffered != case.reason || got_streamed != case.reason {
                failures.push(format!(
                    "{}: expected {:?}, buffered {got_buffered:?}, streamed {got_streamed:?}",
                    case.path, case.reason
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} planted carriers not blocked as expected:\n{}",
            failures.len(),
            all.len(),
            failures.join("\n")
        );

        // Every field of every record was planted: a record added to the
        // schema but held by no carrier's `contained` would be skipped.
        let declared: BTreeSet<(String, &str)> = SCHEMA
            .iter()
            .flat_map(|(r, fields)| fields.iter().map(move |(k, _)| (format!("{r:?}"), *k)))
            .collect();
        assert_eq!(seen, declared, "fields of the schema never planted");
    });
}

/// Both readers read the same keys of an event: each one given twice is a
/// duplicate for both (MISP would read the last copy).
#[test]
fn every_event_key_is_read_once_by_both_readers() {
    with_rules(|ctx| {
        for &(key, _) in carriers(Record::Event) {
            let body = format!(r#"{{"Event": {{"{key}": null, "{key}": null}}}}"#);
            for (reader, outcome) in [
                ("buffered", buffered(ctx, &body)),
                ("streamed", stream::check_event_body(ctx, &body)),
            ] {
                let got = reason(outcome);
                assert!(
                    got.contains(&format!("duplicate field `{key}`")),
                    "{reader} reader, {key} twice: {got}"
                );
            }
        }
    });
}
