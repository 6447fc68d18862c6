//! The analyst-data reader (`model::AnalystList`, `model::Analyst`) and its
//! one check (`checks::analyst_lists` / `analyst_entry`), the cluster
//! check and relationship targets, run directly on typed views.

use std::path::Path;

use serde_json::{json, Value};

use crate::config;
use crate::engine::checks::{self, ANALYST_MAX_DEPTH};
use crate::engine::model::{AnalystEntry, AnalystList, GalaxyClusterDoc};
use crate::engine::reading::{Checked, Ctx, Violation};

const POLICY: &str = r#"{
  "allowlist": {"urls": [], "domains": []},
  "compartments_rules": {"can_reach": {"c1": ["c1"]}},
  "instances": {
    "a": {"ip": "10.1.0.1", "host": "a.example", "port": 443, "compartment_id": "c1", "affiliation": "",
          "taxonomies_rules": {"required_taxonomies": ["tlp"], "allowed_tags": {}, "blocked_tags": ["tlp:red"]},
          "blocked_distribution_levels": ["0"],
          "blocked_sharing_groups_uuids": ["b9e656ba-b9c0-4506-83ed-7b54b43a57cb"],
          "blocked_attribute_types": ["passport-number"], "blocked_attribute_categories": ["Person"],
          "blocked_object_types": ["person"]}
  }
}"#;

fn reason(outcome: Checked) -> String {
    match outcome {
        Ok(()) => "allowed".into(),
        Err(Violation::Rule(r)) => r,
        Err(Violation::Malformed(e)) => format!("malformed: {e}"),
    }
}

fn with_ctx(f: impl FnOnce(&Ctx)) {
    let p = config::from_slice(POLICY.as_bytes(), Path::new("analyst.json")).unwrap();
    let rules = &p.instance(p.instance_by_host("a.example").unwrap()).rules;
    f(&Ctx {
        rules,
        user_org: None,
    })
}

fn entry(v: &Value) -> String {
    let body = v.to_string();
    let mut out = String::new();
    with_ctx(|ctx| {
        out = match serde_json::from_str::<AnalystEntry>(&body) {
            Ok(e) => reason(checks::analyst_entry(ctx, &e)),
            Err(e) => format!("malformed: {e}"),
        }
    });
    out
}

/// `levels` notes nested through `Note[]`, the innermost at `leaf`.
fn nested(levels: usize, leaf: &str) -> Value {
    let mut rec = json!({"distribution": leaf});
    for _ in 1..levels {
        rec = json!({"distribution": "3", "Note": [rec]});
    }
    json!({ "Note": rec })
}

#[test]
fn member_shapes_are_told_apart() {
    fn read(s: &str) -> Option<AnalystList<'_>> {
        serde_json::from_str(s).unwrap()
    }
    assert!(read("null").is_none());
    assert!(matches!(read("[]"), Some(AnalystList::Items(v)) if v.is_empty()));
    assert!(
        matches!(read(r#"[{"distribution":"1"}]"#), Some(AnalystList::Items(v)) if v.len() == 1)
    );
    assert!(matches!(
        read(r#"{"Note":{"distribution":"0"}}"#),
        Some(AnalystList::Wrapper)
    ));
    for scalar in ["3", "-1", "1.5", "true", r#""x""#] {
        assert!(
            matches!(read(scalar), Some(AnalystList::Scalar)),
            "{scalar}"
        );
    }
}

#[test]
fn a_form_json_never_has_names_what_was_expected() {
    use serde::de::value::{BytesDeserializer, Error as DeError};
    use serde::Deserialize;
    let err = AnalystList::deserialize(BytesDeserializer::<DeError>::new(b"[]")).unwrap_err();
    assert!(
        err.to_string().contains("a list of analyst records"),
        "{err}"
    );
}

#[test]
fn depth_is_bounded_with_its_own_reason() {
    assert_eq!(entry(&nested(ANALYST_MAX_DEPTH, "3")), "allowed");
    assert_eq!(
        entry(&nested(ANALYST_MAX_DEPTH, "0")),
        "analyst data has blocked distribution level: 0"
    );
    assert_eq!(
        entry(&nested(ANALYST_MAX_DEPTH + 1, "3")),
        format!("analyst data nested deeper than {ANALYST_MAX_DEPTH} levels")
    );
    // Empty lists below the bound are not a level.
    let mut v = nested(ANALYST_MAX_DEPTH, "3");
    let mut inner = &mut v["Note"];
    while inner.get("Note").is_some() {
        inner = &mut inner["Note"][0];
    }
    inner["Opinion"] = json!([]);
    assert_eq!(entry(&v), "allowed");
}

#[test]
fn every_kind_of_child_is_a_full_record() {
    let sg = json!({"uuid": "b9e656ba-b9c0-4506-83ed-7b54b43a57cb"});
    let cases = [
        (json!({"Opinion": [{"distribution": "4", "SharingGroup": sg}]}),
         "analyst data has blocked sharing group uuid: b9e656ba-b9c0-4506-83ed-7b54b43a57cb"),
        (json!({"Relationship": [{"distribution": "4", "sharing_group_id": "2"}]}),
         "analyst data has distribution 4 but no SharingGroup uuid"),
        (json!({"Relationship": [{"distribution": "3", "related_object_type": "Note", "related_object": []}]}),
         "relationship to Note is not supported by MISP 2.5; refusing"),
        (json!({"Note": [{"distribution": "3", "note_type_name": "Opinion"}]}),
         "analyst data declares note_type_name \"Opinion\" inside Note; refusing the ambiguous payload"),
        (json!({"Opinion": {"distribution": "0"}}),
         "analyst data element wraps a Opinion object; refusing the ambiguous payload"),
        (json!({"Note": "x"}), "analyst data `Note` is not a list"),
    ];
    for (children, expected) in cases {
        let mut rec = json!({"distribution": "3"});
        for (k, v) in children.as_object().unwrap() {
            rec[k] = v.clone();
        }
        assert_eq!(entry(&json!({ "Note": rec })), expected, "{children}");
    }
    assert_eq!(
        entry(&json!({"Note": {"distribution": "3", "Note": null}})),
        "allowed"
    );
}

#[test]
fn relationship_targets_as_misp_serves_them() {
    let rel = |kind: &str, obj: Value| json!({"Relationship": {"distribution": "3", "related_object_type": kind, "related_object": obj}});
    // MISP's own shapes: `[]` for anything, an Object without Attribute,
    // related rows without the required taxonomy.
    for (kind, obj) in [
        ("GalaxyCluster", json!([])),
        ("Event", json!([])),
        ("EventReport", json!([])),
        (
            "Object",
            json!({"Object": {"name": "domain-ip", "distribution": "5", "Event": {"distribution": "3"}}}),
        ),
        (
            "Attribute",
            json!({"Attribute": {"type": "ip-dst", "category": "Network activity", "distribution": "5", "Event": {"distribution": "1"}}}),
        ),
        ("Event", json!({"Event": {"distribution": "1"}})),
    ] {
        assert_eq!(entry(&rel(kind, obj.clone())), "allowed", "{kind} {obj}");
    }
    for (kind, obj, expected) in [
        (
            "GalaxyCluster",
            json!({"GalaxyCluster": {"distribution": "3"}}),
            "relationship to GalaxyCluster carries a related_object MISP 2.5 never serves",
        ),
        (
            "Event",
            json!([{"Event": {"distribution": "0"}}]),
            "relationship to Event carries a related_object MISP 2.5 never serves",
        ),
        (
            "Object",
            json!({"Object": {"name": "domain-ip", "distribution": "5", "Event": {"distribution": "0"}}}),
            "related object's event has blocked distribution level: 0",
        ),
        (
            "Attribute",
            json!({"Attribute": {"type": "ip-dst", "category": "Network activity", "Event": {"distribution": "00"}}}),
            "related attribute's event has a non-canonical distribution value: \"00\"",
        ),
        (
            "Attribute",
            json!({"Attribute": {"type": "first-name", "category": " "}}),
            "attribute has an empty category; MISP would file it under its type's default category",
        ),
        (
            "Object",
            json!({"Object": {"name": "domain-ip", "distribution": "5", "Attribute": [{"type": "passport-number", "category": "Other"}]}}),
            "attribute with a blocked type: passport-number",
        ),
        (
            "Attribute",
            Value::Null,
            "relationship to Attribute has no related_object",
        ),
    ] {
        assert_eq!(entry(&rel(kind, obj.clone())), expected, "{kind} {obj}");
    }
}

#[test]
fn cluster_relations_are_judged() {
    let check = |relation: Value| {
        let body =
            json!({"GalaxyCluster": {"distribution": "3", "GalaxyClusterRelation": [relation]}})
                .to_string();
        let mut out = String::new();
        with_ctx(|ctx| {
            let doc: GalaxyClusterDoc = serde_json::from_str(&body).unwrap();
            out = reason(checks::galaxy_cluster(ctx, &doc.GalaxyCluster));
        });
        out
    };
    assert_eq!(check(json!({"distribution": "3", "Tag": []})), "allowed");
    assert_eq!(check(json!({"distribution": "3"})), "allowed");
    assert_eq!(
        check(
            json!({"distribution": "3", "GalaxyClusterRelationTag": [{"Tag": {"name": " TLP:RED "}}]})
        ),
        "galaxy cluster relation with a blocked tag:  TLP:RED "
    );
    assert_eq!(
        check(json!({"Tag": []})),
        "galaxy cluster relation has no distribution"
    );
    assert_eq!(
        check(json!({"distribution": "3", "GalaxyClusterRelation": null})),
        "galaxy cluster relation wraps a GalaxyClusterRelation; refusing the ambiguous payload"
    );
}

#[test]
fn a_relationship_target_carries_its_notes_one_level_down() {
    let deeper = format!("analyst data nested deeper than {ANALYST_MAX_DEPTH} levels");
    let note = json!([{"distribution": "3"}]);
    let targets = [
        (
            "Event",
            json!({"Event": {"distribution": "3", "Note": note}}),
        ),
        (
            "Attribute",
            json!({"Attribute": {"type": "domain", "category": "Network activity",
                "value": "a.example", "distribution": "5", "Note": note}}),
        ),
        (
            "Object",
            json!({"Object": {"name": "domain-ip", "distribution": "5", "Note": note}}),
        ),
    ];
    for (ty, target) in targets {
        // A relationship at nesting level `level` (>= 2) to `target`.
        let at = |level: usize| {
            let rel =
                json!({"distribution": "3", "related_object_type": ty, "related_object": target});
            let mut rec = json!({"distribution": "3", "Relationship": [rel]});
            for _ in 2..level {
                rec = json!({"distribution": "3", "Note": [rec]});
            }
            json!({ "Note": rec })
        };
        // The target's note sits at level + 1.
        assert_eq!(entry(&at(ANALYST_MAX_DEPTH - 1)), "allowed", "{ty}");
        assert_eq!(entry(&at(ANALYST_MAX_DEPTH)), deeper, "{ty}");
    }
}
