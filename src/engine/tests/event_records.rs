//! Unit tests of the helpers behind the event-record rules of
//! `docs/MISP-IMPORT.md` §3.2 (the rules themselves are proven end to end
//! by `tests/misp_import/rules/*.json`): PHP's `empty()`, MISP's tag-name
//! equality for required taxonomies, the map-only records, the sharing-group
//! identity helper other record kinds call, and push answers by status.

use std::path::Path;

use serde_json::json;

use crate::config;
use crate::engine::answers::push_answer;
use crate::engine::checks;
use crate::engine::incremental::agree::checked as check_event_body;
use crate::engine::model::{Dist, NonEmpty, PhpTruthy, Proposals, SharingGroup, Tag};
use crate::engine::reading::{Checked, Ctx, Violation};
use crate::engine::stream::EventBody;

const POLICY: &str = r#"{
  "allowlist": {"urls": [], "domains": []},
  "compartments_rules": {"can_reach": {"c1": ["c1"]}},
  "instances": {
    "a": {"ip": "10.1.0.1", "host": "a.example", "port": 443, "compartment_id": "c1", "affiliation": "",
          "taxonomies_rules": {"required_taxonomies": ["tlp"],
                               "allowed_tags": {"tlp": ["tlp:clear", "tlp:green"]},
                               "blocked_tags": ["tlp:red"]},
          "blocked_distribution_levels": ["0"],
          "blocked_sharing_groups_uuids": ["b9e656ba-b9c0-4506-83ed-7b54b43a57cb"],
          "blocked_attribute_types": [], "blocked_attribute_categories": ["Person"],
          "blocked_object_types": []},
    "intl": {"ip": "10.1.0.4", "host": "intl.example", "port": 443, "compartment_id": "c1", "affiliation": "",
          "taxonomies_rules": {"required_taxonomies": ["tlp"], "allowed_tags": {"tlp": ["tlp:grün"]}, "blocked_tags": []},
          "blocked_distribution_levels": [], "blocked_sharing_groups_uuids": [],
          "blocked_attribute_types": [], "blocked_attribute_categories": [], "blocked_object_types": []},
    "prefix": {"ip": "10.1.0.3", "host": "prefix.example", "port": 443, "compartment_id": "c1", "affiliation": "",
          "taxonomies_rules": {"required_taxonomies": ["tlp"], "allowed_tags": {}, "blocked_tags": []},
          "blocked_distribution_levels": [], "blocked_sharing_groups_uuids": [],
          "blocked_attribute_types": [], "blocked_attribute_categories": [], "blocked_object_types": []},
    "open": {"ip": "10.1.0.2", "host": "open.example", "port": 443, "compartment_id": "c1", "affiliation": "",
          "taxonomies_rules": {"required_taxonomies": [], "allowed_tags": {}, "blocked_tags": []},
          "blocked_distribution_levels": [], "blocked_sharing_groups_uuids": [],
          "blocked_attribute_types": [], "blocked_attribute_categories": [], "blocked_object_types": []}
  }
}"#;

fn with_ctx(host: &str, f: impl FnOnce(&Ctx)) {
    let p = config::from_slice(POLICY.as_bytes(), Path::new("event_records.json")).unwrap();
    let rules = &p.instance(p.instance_by_host(host).unwrap()).rules;
    f(&Ctx {
        rules,
        user_org: None,
    });
}

fn reason(c: Checked) -> String {
    match c {
        Ok(()) => "allowed".into(),
        Err(Violation::Rule(r)) => r,
        Err(Violation::Malformed(e)) => format!("malformed: {e}"),
    }
}

#[test]
fn php_empty_as_misp_reads_local() {
    let local = |v: &str| {
        serde_json::from_str::<Tag>(&format!(r#"{{"name": "t", "local": {v}}}"#))
            .unwrap()
            .local
            .0
    };
    for falsy in [
        "false", "null", "0", "0.0", r#""""#, r#""0""#, "[]", "{}", "[ ]",
    ] {
        assert!(!local(falsy), "{falsy} is empty() in PHP");
    }
    for truthy in [
        "true",
        "1",
        "-1",
        "0.5",
        r#""1""#,
        r#""0.0""#,
        r#"" ""#,
        "[0]",
        r#"{"a":0}"#,
    ] {
        assert!(local(truthy), "{truthy} is not empty() in PHP");
    }
    let absent: Tag = serde_json::from_str(r#"{"name": "t"}"#).unwrap();
    assert_eq!(absent.local, PhpTruthy(false));
    let non_empty = |v: &str| serde_json::from_str::<NonEmpty>(v).unwrap().0;
    assert!(!non_empty("[]") && !non_empty("{}") && !non_empty("null") && !non_empty("[\n]"));
    assert!(non_empty("[{}]") && non_empty(r#"{"1":[]}"#) && non_empty("0"));
}

#[test]
fn required_taxonomy_counts_names_as_misp_equates_them() {
    with_ctx("a.example", |ctx| {
        let ev = |tags: serde_json::Value| {
            json!({"Event": {"distribution": "1", "Tag": tags, "Attribute": [], "Object": []}})
                .to_string()
        };
        let check = |tags| reason(check_event_body(ctx, &ev(tags), EventBody::Pushed));
        let missing = "event is missing required taxonomy: tlp";
        for counts in ["tlp:clear", "TLP:Green", "tlp:clear   "] {
            assert_eq!(check(json!([{ "name": counts }])), "allowed", "{counts:?}");
        }
        for ignored in [
            " tlp:clear",
            "\ttlp:clear",
            "tlp:clear\t",
            "tlp:clear\u{a0}",
            "tlp:cleaR\u{301}",
            "tlp:amber",
            "",
        ] {
            assert_eq!(check(json!([{ "name": ignored }])), missing, "{ignored:?}");
        }
        assert_eq!(
            check(json!([{"name": "tlp:clear", "local": 1}])),
            missing,
            "a local tag is dropped by the puller"
        );
        assert_eq!(
            check(json!([{"name": "tlp:clear", "local": false}])),
            "allowed"
        );
        // Blocking still sees every spelling.
        assert_eq!(
            check(json!([{"name": "tlp:clear"}, {"name": " TLP:RED "}])),
            "event has blocked tag:  TLP:RED "
        );
    });
}

#[test]
fn required_taxonomy_without_allowed_tags_is_a_name_prefix() {
    with_ctx("prefix.example", |ctx| {
        let check = |ev: serde_json::Value| {
            reason(check_event_body(ctx, &ev.to_string(), EventBody::Pushed))
        };
        let tagged = |tags: serde_json::Value| json!({"Event": {"distribution": "1", "Tag": tags, "Attribute": [], "Object": []}});
        let missing = "event is missing required taxonomy: tlp";
        // Any tag of the taxonomy counts when no allowed list narrows it,
        // down to the bare namespace `tlp:` (misp-guard's prefix test).
        for counts in ["tlp:", "TLP:amber", "tlp:anything-else"] {
            assert_eq!(
                check(tagged(json!([{ "name": counts }]))),
                "allowed",
                "{counts:?}"
            );
        }
        // Shorter than the prefix, the prefix without its colon, another
        // taxonomy of the same length or longer: none counts.
        for not in ["tl", "tlp", "tlpx", "pap:green", "xtlp:green"] {
            assert_eq!(check(tagged(json!([{ "name": not }]))), missing, "{not:?}");
        }
    });
}

#[test]
fn a_present_tag_list_even_empty_words_the_missing_taxonomy_by_name() {
    // misp-guard says "missing required taxonomies" only when the record
    // has no tag list at all; any list (Tag, EventTag/AttributeTag, even
    // empty) gets the taxonomy named. SIEM rules match on the wording.
    with_ctx("prefix.example", |ctx| {
        let check = |ev: serde_json::Value| {
            reason(check_event_body(ctx, &ev.to_string(), EventBody::Pushed))
        };
        let named = "event is missing required taxonomy: tlp";
        let bare = |extra: serde_json::Value| {
            let mut ev = json!({"Event": {"distribution": "1", "Attribute": [], "Object": []}});
            for (k, v) in extra.as_object().unwrap() {
                ev["Event"][k] = v.clone();
            }
            ev
        };
        assert_eq!(
            check(bare(json!({}))),
            "event is missing required taxonomies"
        );
        assert_eq!(check(bare(json!({"Tag": []}))), named);
        assert_eq!(check(bare(json!({"EventTag": []}))), named);
        assert_eq!(
            check(bare(json!({"EventTag": [{"Tag": {"name": "tlp:green"}}]}))),
            named,
            "EventTag is read for blocking, never counted"
        );
        // The same for an attribute of an event that has its taxonomy.
        let with_attribute = |attr_tags: serde_json::Value| {
            let mut attr = json!({"type": "domain", "category": "Network activity",
                "value": "a.example", "distribution": "5"});
            for (k, v) in attr_tags.as_object().unwrap() {
                attr[k] = v.clone();
            }
            json!({"Event": {"distribution": "1", "Tag": [{"name": "tlp:green"}],
                "Attribute": [attr], "Object": []}})
        };
        assert_eq!(
            check(with_attribute(json!({}))),
            "attribute is missing required taxonomies"
        );
        assert_eq!(check(with_attribute(json!({"Tag": []}))), named);
        assert_eq!(check(with_attribute(json!({"AttributeTag": []}))), named);
        assert_eq!(
            check(with_attribute(json!({"Tag": [{"name": "tlp:green"}]}))),
            "allowed"
        );
    });
}

#[test]
fn records_refuse_arrays_where_objects_are_expected() {
    // Without the map-only reading, serde takes `["u"]` as `{"uuid": "u"}`.
    assert!(
        serde_json::from_str::<SharingGroup>(r#"["b9e656ba-b9c0-4506-83ed-7b54b43a57cb"]"#)
            .is_err()
    );
    assert!(serde_json::from_str::<Tag>(r#"["tlp:clear"]"#).is_err());
    let sg: SharingGroup = serde_json::from_str(r#"{"uuid": "u"}"#).unwrap();
    assert_eq!(sg.uuid, "u");
    // Duplicate keys stay errors through the map-only reading.
    assert!(serde_json::from_str::<Tag>(r#"{"name": "a", "name": "b"}"#).is_err());
    with_ctx("open.example", |ctx| {
        for body in [
            json!({"Event": {"distribution": "1", "Attribute": [["Other", "text"]], "Object": []}}),
            json!({"Event": {"distribution": "1", "Attribute": [], "Object": [["5", "file"]]}}),
            json!({"Event": {"distribution": "1", "Attribute": [], "Object": [], "EventReport": [["1"]]}}),
            json!({"Event": {"distribution": "1", "Attribute": [], "Object": [], "Tag": [["x"]]}}),
        ] {
            let got = reason(check_event_body(ctx, &body.to_string(), EventBody::Pushed));
            assert!(
                got.starts_with("malformed: invalid type: sequence"),
                "{body}: {got}"
            );
        }
    });
}

#[test]
fn sharing_group_identity_for_captured_and_display_only_records() {
    let four = Dist::Level(4);
    with_ctx("a.example", |ctx| {
        let f = |dist: &Dist, has_sg, captured| {
            reason(checks::sharing_group_identified(
                ctx, "note", dist, has_sg, captured,
            ))
        };
        assert_eq!(
            f(&four, false, true),
            "note has distribution 4 but no SharingGroup uuid"
        );
        assert_eq!(
            f(&four, false, false),
            "note has distribution 4 with a sharing group the gateway cannot identify"
        );
        assert_eq!(f(&four, true, true), "allowed");
        assert_eq!(f(&Dist::Level(3), false, true), "allowed");
        assert_eq!(f(&Dist::Missing, false, true), "allowed");
    });
    // Display-only rows without their SG are MISP's own shape: refused only
    // when some sharing group is blocked.
    with_ctx("open.example", |ctx| {
        assert_eq!(
            reason(checks::sharing_group_identified(
                ctx,
                "related event",
                &four,
                false,
                false
            )),
            "allowed"
        );
        assert_eq!(
            reason(checks::sharing_group_identified(
                ctx, "event", &four, false, true
            )),
            "event has distribution 4 but no SharingGroup uuid"
        );
    });
}

#[test]
fn push_answers_by_status() {
    with_ctx("open.example", |ctx| {
        let metadata = json!({"Event": {"distribution": "3", "Tag": [], "RelatedEvent": []},
                              "errors": []})
        .to_string();
        assert_eq!(reason(push_answer(ctx, 200, &metadata)), "allowed");
        assert_eq!(reason(push_answer(ctx, 201, &metadata)), "allowed");
        assert_eq!(
            reason(push_answer(ctx, 404, &metadata)),
            "push answer with status 404 carries an Event"
        );
        assert_eq!(
            reason(push_answer(ctx, 500, r#"{"message": "x", "Event": null}"#)),
            "push answer with status 500 carries an Event"
        );
        assert_eq!(reason(push_answer(ctx, 404, "")), "allowed");
        assert_eq!(
            reason(push_answer(ctx, 403, r#"{"errors": "not newer"}"#)),
            "allowed"
        );
        assert_eq!(
            reason(push_answer(ctx, 302, "")),
            "push answer with status 302 is neither an event nor a MISP error"
        );
        assert!(reason(push_answer(ctx, 502, "<html>")).starts_with("malformed"));
        let sighting = json!({"Event": {"distribution": "3"}, "Sighting": []}).to_string();
        assert_eq!(
            reason(push_answer(ctx, 200, &sighting)),
            "event body has a top-level `Sighting` beside `Event`; refusing the ambiguous payload"
        );
        // A pushed request may not carry `errors`; an answer may.
        let pushed = json!({"Event": {"distribution": "3", "Attribute": [], "Object": []},
                            "errors": []})
        .to_string();
        assert_eq!(
            reason(check_event_body(ctx, &pushed, EventBody::Pushed)),
            "event body has a top-level `errors` beside `Event`; refusing the ambiguous payload"
        );
        assert_eq!(
            reason(check_event_body(ctx, &pushed, EventBody::Pulled)),
            "allowed"
        );
    });
}

#[test]
fn distribution_levels_from_every_integer_form_and_quoted_invalid_ones() {
    use serde::de::value::{BytesDeserializer, Error as DeError};
    use serde::de::IntoDeserializer;
    use serde::Deserialize;
    // serde_json hands non-negative integers to visit_u64; other readers
    // (and a future serde_json) may use visit_i64 for them.
    let from_i64 = |v: i64| Dist::deserialize(IntoDeserializer::<DeError>::into_deserializer(v));
    assert!(matches!(from_i64(0), Ok(Dist::Level(0))));
    assert!(matches!(from_i64(5), Ok(Dist::Level(5))));
    assert!(matches!(from_i64(6), Ok(Dist::Invalid(s)) if &*s == "6"));
    assert!(matches!(from_i64(-1), Ok(Dist::Invalid(s)) if &*s == "-1"));
    // A form JSON never produces: the error says what was expected.
    let err = Dist::deserialize(BytesDeserializer::<DeError>::new(b"1")).unwrap_err();
    assert!(err.to_string().contains("a distribution level"), "{err}");
    // Invalid strings are quoted into the reason, cut at 32 characters.
    let from_str = |s: &str| serde_json::from_str::<Dist>(&serde_json::to_string(s).unwrap());
    assert!(matches!(from_str("abc"), Ok(Dist::Invalid(s)) if &*s == "\"abc\""));
    let long = "x".repeat(40);
    let cut = format!("\"{}\"...", "x".repeat(32));
    assert!(matches!(from_str(&long), Ok(Dist::Invalid(s)) if *s == cut));
    let exact = "y".repeat(32);
    let whole = format!("\"{exact}\"");
    assert!(matches!(from_str(&exact), Ok(Dist::Invalid(s)) if *s == whole));
}

#[test]
fn proposals_are_a_list_or_a_wrapped_object_and_nothing_else() {
    fn read(s: &str) -> serde_json::Result<Proposals<'_>> {
        serde_json::from_str(s)
    }
    assert!(matches!(read("[]"), Ok(Proposals::List(v)) if v.is_empty()));
    assert!(matches!(
        read(r#"{"value": "x"}"#),
        Ok(Proposals::WrapsObject)
    ));
    for other in ["5", r#""x""#, "true"] {
        let err = read(other).unwrap_err().to_string();
        assert!(
            err.contains("expected a list of proposals"),
            "{other}: {err}"
        );
    }
}

#[test]
fn the_streaming_reader_names_what_it_expected() {
    with_ctx("open.example", |ctx| {
        let check = |body: &str| reason(check_event_body(ctx, body, EventBody::Pushed));
        for (body, expected) in [
            ("[]", "expected an object with an `Event`"),
            (r#"{"Event": 5}"#, "expected an event object"),
            (
                r#"{"Event": {"distribution": "1", "Attribute": 5, "Object": []}}"#,
                "expected a list",
            ),
        ] {
            let got = check(body);
            assert!(
                got.starts_with("malformed: ") && got.contains(expected),
                "{body}: {got}"
            );
        }
        // `null` is absent, for the event and for a list.
        assert!(check(r#"{"Event": null}"#) != "allowed");
        assert_eq!(
            check(r#"{"Event": {"distribution": "1", "Attribute": null, "Object": []}}"#),
            check(r#"{"Event": {"distribution": "1", "Object": []}}"#)
        );
    });
}

#[test]
fn a_non_ascii_allowed_tag_counts_only_byte_for_byte() {
    // A name with any non-ASCII character counts only when it is the
    // allowed one byte for byte (the conservative side of MISP's
    // LOWER() on a utf8mb3_bin column: what is not surely equated is not
    // counted as present).
    with_ctx("intl.example", |ctx| {
        let check = |name: &str| {
            let ev = json!({"Event": {"distribution": "1", "Tag": [{"name": name}],
                "Attribute": [], "Object": []}});
            reason(check_event_body(ctx, &ev.to_string(), EventBody::Pushed))
        };
        assert_eq!(check("tlp:grün"), "allowed");
        let missing = "event is missing required taxonomy: tlp";
        assert_eq!(check("TLP:grün"), missing);
        assert_eq!(check("tlp:grÜn"), missing);
        assert_eq!(check("tlp:gru\u{308}n"), missing, "another normal form");
        assert_eq!(check("tlp:grü"), missing);
    });
}
