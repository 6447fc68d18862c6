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
use crate::engine::checks::{self, EventRole};
use crate::engine::model::{Carrier, Event, Record, SCHEMA};
use crate::engine::reading::{Checked, Ctx, Violation};
use crate::engine::stream::EventBody;

/// The streaming reader's verdict; the incremental reader must agree.
fn streamed(ctx: &Ctx, body: &str) -> Checked {
    crate::engine::incremental::agree::checked(ctx, body, EventBody::Pushed)
}

const BLOCKED_SG: &str = "b9e656ba-b9c0-4506-83ed-7b54b43a57cb";
/// The pulling user's org (`X-UserOrgUUID`) on pulls.
const USER_ORG: &str = "5d0e3a4c-1f2b-4c6d-8e9f-a0b1c2d3e4f5";

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
        Record::EventReport | Record::RelatedEventRow => json!({"distribution": "1"}),
    }
}

/// misp-guard's wording for a blocked tag on `record`.
fn tag_reason(record: Record) -> String {
    match record {
        Record::Event => "event has blocked tag: tlp:red".into(),
        Record::Attribute => "attribute with a blocked tag: tlp:red".into(),
        Record::Object | Record::EventReport | Record::RelatedEventRow => {
            panic!("{record:?} carries no tags yet: choose the reason wording here")
        }
    }
}

/// A value planted in a field, with the reason it must be blocked with on
/// a push (no user org) and on a pull (`USER_ORG`); "allowed" where a side
/// must let it pass.
struct Sample {
    value: Value,
    push: String,
    pull: String,
}

fn both(value: Value, reason: impl Into<String>) -> Sample {
    let reason = reason.into();
    Sample {
        value,
        push: reason.clone(),
        pull: reason,
    }
}

/// The values planted directly in a field of `carrier` kind on `record`.
fn planted(record: Record, key: &str, carrier: Carrier) -> Vec<Sample> {
    let blocked_attribute = json!({"category": "Person", "type": "text", "value": "x"});
    let blocked_object = json!({"name": "person", "distribution": "5", "Attribute": []});
    let dist0 = || json!([{"distribution": "0"}]);
    match carrier {
        Carrier::Distribution => {
            let noun = match record {
                Record::Event => "event has",
                Record::Attribute => "attribute with a",
                Record::Object => "object with a",
                Record::EventReport => "event report has",
                Record::RelatedEventRow => "related event has",
            };
            vec![both(
                json!("0"),
                format!("{noun} blocked distribution level: 0"),
            )]
        }
        Carrier::Tags => vec![both(json!([{"name": "tlp:red"}]), tag_reason(record))],
        Carrier::TagLinks => vec![both(
            json!([{"Tag": {"name": "tlp:red"}}]),
            tag_reason(record),
        )],
        Carrier::Galaxies => vec![both(
            json!([{"GalaxyCluster": [{"tag_name": "tlp:red"}]}]),
            tag_reason(record),
        )],
        Carrier::SharingGroup => {
            let noun = match record {
                Record::Event => "event has",
                Record::Attribute => "attribute with a",
                Record::Object => "object with a",
                Record::EventReport => "event report has",
                Record::RelatedEventRow => "related event has",
            };
            vec![
                both(
                    json!({"uuid": BLOCKED_SG}),
                    format!("{noun} blocked sharing group uuid: {BLOCKED_SG}"),
                ),
                // Allowed uuid, but the pulling user's org is not a member.
                Sample {
                    value: json!({
                        "uuid": "0f3c1e5a-7b2d-4e6f-8a9b-0c1d2e3f4a5b",
                        "SharingGroupOrg": [{"Organisation": {"uuid": "another-org"}}],
                        "SharingGroupServer": [{"all_orgs": false}]
                    }),
                    push: "allowed".into(),
                    pull: format!(
                        "user with organisation uuid: {USER_ORG} (X-UserOrgUUID) not in sharing group"
                    ),
                },
            ]
        }
        Carrier::EventReports => vec![both(
            dist0(),
            "event report has blocked distribution level: 0",
        )],
        Carrier::AnalystData => vec![both(
            dist0(),
            "analyst data has blocked distribution level: 0",
        )],
        // The relationship itself, then each related type that is not a
        // record of the schema (those are planted through `contained`):
        // MISP serves `[]` for those, and cannot serialise a relationship
        // to analyst data at all.
        Carrier::Relationships => {
            let related = |kind: &str, object: Value| json!([{"distribution": "5", "related_object_type": kind, "related_object": object}]);
            let analyst = "analyst data has blocked distribution level: 0";
            vec![
                both(dist0(), analyst),
                both(
                    related(
                        "GalaxyCluster",
                        json!({"GalaxyCluster": {"distribution": "0"}}),
                    ),
                    "relationship to GalaxyCluster carries a related_object MISP 2.5 never serves",
                ),
                both(
                    related("Note", json!([])),
                    "relationship to Note is not supported by MISP 2.5; refusing",
                ),
                both(
                    related("Opinion", json!({"distribution": "0"})),
                    "relationship to Opinion is not supported by MISP 2.5; refusing",
                ),
                both(
                    related("Relationship", json!({"distribution": "0"})),
                    "relationship to Relationship is not supported by MISP 2.5; refusing",
                ),
            ]
        }
        Carrier::Attributes | Carrier::Proposals => vec![both(
            json!([blocked_attribute]),
            "attribute with a blocked category: Person",
        )],
        Carrier::Objects => vec![both(
            json!([blocked_object]),
            "object with a blocked type: person",
        )],
        Carrier::Category => vec![both(
            json!("Person"),
            "attribute with a blocked category: Person",
        )],
        Carrier::AttributeType => vec![both(
            json!("passport-number"),
            "attribute with a blocked type: passport-number",
        )],
        Carrier::ObjectName => vec![both(json!("person"), "object with a blocked type: person")],
        Carrier::Wrapper => {
            let reason = match record {
                Record::Object => "object element wraps an Object",
                Record::Attribute => "attribute element wraps an Attribute",
                Record::EventReport => "event report element wraps an EventReport",
                Record::Event | Record::RelatedEventRow => {
                    panic!("{record:?} has no wrapper member: choose the reason wording here")
                }
            };
            vec![both(
                json!({}),
                format!("{reason}; refusing the ambiguous payload"),
            )]
        }
        Carrier::RelatedEvents => vec![both(
            json!([{"Event": {"distribution": "0"}}]),
            "related event has blocked distribution level: 0",
        )],
        Carrier::Correlations => vec![both(
            json!([{"id": "1"}]),
            format!("event answer carries {key}; MISP's sync never asks for them"),
        )],
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
        Carrier::EventReports => vec![(Record::EventReport, |v| json!([v]))],
        Carrier::RelatedEvents => vec![(Record::RelatedEventRow, |v| json!([{"Event": v}]))],
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
        | Carrier::AnalystData
        | Carrier::Category
        | Carrier::AttributeType
        | Carrier::ObjectName
        | Carrier::Wrapper
        | Carrier::Correlations => vec![],
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
    push: String,
    pull: String,
}

/// Every planted case for `record`: its own carriers, then (while `depth`
/// lasts) every case of the records its carriers hold.
fn cases(record: Record, depth: usize, seen: &mut BTreeSet<(String, &'static str)>) -> Vec<Case> {
    let mut out = Vec::new();
    for &(key, carrier) in carriers(record) {
        seen.insert((format!("{record:?}"), key));
        for sample in planted(record, key, carrier) {
            let mut v = allowed(record);
            v[key] = sample.value;
            out.push(Case {
                path: format!("{record:?}.{key}"),
                record: v,
                push: sample.push,
                pull: sample.pull,
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
                    push: case.push,
                    pull: case.pull,
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
    checks::event(ctx, &doc.Event, EventRole::Imported)
}

fn reason(outcome: Checked) -> String {
    match outcome {
        Ok(()) => "allowed".into(),
        Err(Violation::Rule(r)) => r,
        Err(Violation::Malformed(e)) => format!("malformed: {e}"),
    }
}

/// Runs `f` with the push context (no user org) and the pull context
/// (`USER_ORG`), labelled.
fn with_rules(mut f: impl FnMut(&str, &Ctx)) {
    let p = config::from_slice(POLICY.as_bytes(), Path::new("carriers.json")).unwrap();
    let rules = &p.instance(p.instance_by_host("a.example").unwrap()).rules;
    f(
        "push",
        &Ctx {
            rules,
            user_org: None,
        },
    );
    f(
        "pull",
        &Ctx {
            rules,
            user_org: Some(USER_ORG),
        },
    );
}

#[test]
fn every_carrier_blocks_in_both_readers() {
    let mut seen = BTreeSet::new();
    let all = cases(Record::Event, DEPTH, &mut seen);
    let mut failures = Vec::new();
    with_rules(|side, ctx| {
        let control = json!({"Event": allowed(Record::Event)}).to_string();
        assert_eq!(reason(buffered(ctx, &control)), "allowed", "{side}");
        assert_eq!(reason(streamed(ctx, &control)), "allowed", "{side}");
        for case in &all {
            let expected = if side == "push" {
                &case.push
            } else {
                &case.pull
            };
            let body = json!({"Event": case.record}).to_string();
            let got_buffered = reason(buffered(ctx, &body));
            let got_streamed = reason(streamed(ctx, &body));
            if &got_buffered != expected || &got_streamed != expected {
                failures.push(format!(
                    "{side} {}: expected {expected:?}, buffered {got_buffered:?}, streamed {got_streamed:?}",
                    case.path
                ));
            }
        }
    });
    assert!(
        failures.is_empty(),
        "{} of {} planted carriers (push and pull) not blocked as expected:\n{}",
        failures.len(),
        2 * all.len(),
        failures.join("\n")
    );

    // Every field of every record was planted: a record added to the
    // schema but held by no carrier's `contained` would be skipped.
    let declared: BTreeSet<(String, &str)> = SCHEMA
        .iter()
        .flat_map(|(r, fields)| fields.iter().map(move |(k, _)| (format!("{r:?}"), *k)))
        .collect();
    assert_eq!(seen, declared, "fields of the schema never planted");
}

/// Both readers read the same keys of an event: each one given twice is a
/// duplicate for both (MISP would read the last copy).
#[test]
fn every_event_key_is_read_once_by_both_readers() {
    with_rules(|side, ctx| {
        for &(key, _) in carriers(Record::Event) {
            let body = format!(r#"{{"Event": {{"{key}": null, "{key}": null}}}}"#);
            for (reader, outcome) in [
                ("buffered", buffered(ctx, &body)),
                ("streamed", streamed(ctx, &body)),
            ] {
                let got = reason(outcome);
                assert!(
                    got.contains(&format!("duplicate field `{key}`")),
                    "{side}, {reader} reader, {key} twice: {got}"
                );
            }
        }
    });
}

/// Both readers agree on an event lacking any one key: the streaming
/// reader starts from `Event::default()`, so a field the derived reader
/// required would pass there unnoticed.
#[test]
fn every_event_key_absent_reads_the_same() {
    with_rules(|side, ctx| {
        for &(key, _) in carriers(Record::Event) {
            let mut event = allowed(Record::Event);
            event.as_object_mut().unwrap().remove(key);
            let body = json!({ "Event": event }).to_string();
            assert_eq!(
                reason(buffered(ctx, &body)),
                reason(streamed(ctx, &body)),
                "{side}, event without {key}"
            );
        }
    });
}
