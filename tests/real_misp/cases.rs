//! The real-MISP suite's table: one row per request through the gateway,
//! with what MISP must and must not hold afterwards.

use serde_json::{json, Value};

use super::bodies::*;

/// One row: a request through the gateway and what MISP must hold after.
pub struct Case {
    pub name: &'static str,
    /// An event posted straight to MISP first (`seed_event`, tagged
    /// `seed_tags`): what the case edits, sights, annotates, proposes to
    /// or pulls.
    pub seed: bool,
    pub seed_tags: &'static [&'static str],
    /// POST with `body`, or GET.
    pub method: &'static str,
    pub path: fn(&Ids) -> String,
    pub body: fn(&Ids) -> Value,
    /// The gateway's expected answer.
    pub status: u16,
    /// Must not appear in the gateway's answer (data flowing back); MISP's
    /// own answer to the control must hold every one.
    pub answer_forbidden: fn(&Ids) -> Vec<String>,
    /// Must appear in MISP's read-back (uuids, tag names).
    pub stored: fn(&Ids) -> Vec<String>,
    /// Must not appear in MISP's read-back; the control run straight to
    /// MISP must store every one of them (and everything in `stored`).
    pub forbidden: fn(&Ids) -> Vec<String>,
    /// A known engine gap: why this case fails today.
    pub gap: Option<&'static str>,
}

impl Case {
    pub fn request_body(&self, i: &Ids) -> Option<Value> {
        (self.method != "GET").then(|| (self.body)(i))
    }
}

/// The tlp:red tag as MISP serves it inside an event (`"name":"tlp:red"`):
/// what a leaked answer would carry. The tag name alone is no marker, since
/// the gateway's own refusal names it in its reason (issue 14 item 7).
const RED_TAG_AS_SERVED: &str = r#""name":"tlp:red""#;

/// The defaults a row leaves out (`..BASE`).
pub const BASE: Case = Case {
    name: "",
    seed: false,
    seed_tags: &["tlp:green"],
    method: "POST",
    path: push_add,
    body: no_body,
    status: 200,
    answer_forbidden: nothing,
    stored: nothing,
    forbidden: nothing,
    gap: None,
};

pub fn no_body(_: &Ids) -> Value {
    Value::Null
}

// ---- the table ----

pub fn push_add(_: &Ids) -> String {
    "/events/add/metadata:1".into()
}
pub fn push_edit(i: &Ids) -> String {
    format!("/events/edit/{}/metadata:1", i.ev)
}
pub fn plain_edit(i: &Ids) -> String {
    format!("/events/edit/{}", i.ev)
}
pub fn push_cluster(_: &Ids) -> String {
    "/galaxies/pushCluster".into()
}
pub fn push_analyst(_: &Ids) -> String {
    "/analyst_data/pushAnalystData".into()
}
pub fn push_sightings(i: &Ids) -> String {
    format!("/sightings/bulkSaveSightings/{}", i.ev)
}
pub fn push_proposals(i: &Ids) -> String {
    format!("/events/pushProposals/{}", i.ev)
}

pub fn nothing(_: &Ids) -> Vec<String> {
    vec![]
}
/// A refused new event leaves no trace at all.
pub fn event_absent_and(i: &Ids, more: &[&str]) -> Vec<String> {
    let mut v = vec![i.ev.clone()];
    v.extend(more.iter().map(|s| s.to_string()));
    v
}

pub fn cases() -> Vec<Case> {
    vec![
        // ---- legitimate pushes: everything arrives ----
        Case {
            name: "allowed event with attribute, object, tags, report and notes",
            seed: false,
            path: push_add,
            body: |i| {
                event(
                    i,
                    json!({"Object": [domain_ip_object(i, json!({}))],
                    "EventReport": [report(i, "5")],
                    "Note": [note(&i.n1, &i.ev, "Event", "5", i)],
                    "Attribute": [attribute(&i.a1, i, json!({"Tag": tags(&["tlp:green"]),
                        "Note": [note(&i.n2, &i.a1, "Attribute", "5", i)]}))]}),
                )
            },
            status: 200,
            stored: |i| {
                vec![
                    i.ev.clone(),
                    i.a1.clone(),
                    i.o1.clone(),
                    i.oa1.clone(),
                    i.r1.clone(),
                    i.n1.clone(),
                    i.n2.clone(),
                    "tlp:green".into(),
                ]
            },
            forbidden: nothing,
            gap: None,
            ..BASE
        },
        Case {
            name: "allowed sync edit adds an attribute",
            seed: true,
            path: push_edit,
            body: |i| edit(i, json!({}), json!({})),
            status: 200,
            stored: |i| vec![i.ev.clone(), i.a1.clone(), i.a2.clone()],
            forbidden: nothing,
            gap: None,
            ..BASE
        },
        Case {
            name: "allowed plain edit adds an attribute",
            seed: true,
            path: plain_edit,
            body: |i| edit(i, json!({}), json!({})),
            status: 200,
            stored: |i| vec![i.ev.clone(), i.a2.clone()],
            forbidden: nothing,
            gap: None,
            ..BASE
        },
        Case {
            name: "allowed galaxy cluster push",
            seed: false,
            path: push_cluster,
            body: |i| cluster(i, json!({})),
            status: 200,
            stored: |i| vec![i.gc.clone(), i.gx.clone()],
            forbidden: nothing,
            gap: None,
            ..BASE
        },
        Case {
            name: "allowed analyst data push",
            seed: true,
            path: push_analyst,
            body: |i| json!({"Note": note(&i.n1, &i.ev, "Event", "1", i)}),
            status: 200,
            stored: |i| vec![i.n1.clone()],
            forbidden: nothing,
            gap: None,
            ..BASE
        },
        Case {
            name: "allowed sightings push",
            seed: true,
            path: push_sightings,
            body: sighting,
            status: 200,
            stored: |i| vec![i.s1.clone()],
            forbidden: nothing,
            gap: None,
            ..BASE
        },
        Case {
            name: "allowed proposal push",
            seed: true,
            path: push_proposals,
            body: |i| proposal(i, json!({})),
            status: 200,
            stored: |i| vec![i.p1.clone()],
            forbidden: nothing,
            gap: None,
            ..BASE
        },
        // ---- tlp:red in each carrier ----
        Case {
            name: "tlp:red event tag",
            seed: false,
            path: push_add,
            body: |i| event(i, json!({"Tag": tags(&["tlp:green", "tlp:red"])})),
            status: 403,
            stored: nothing,
            forbidden: |i| event_absent_and(i, &["tlp:red"]),
            gap: None,
            ..BASE
        },
        Case {
            name: "tlp:red attribute tag",
            seed: false,
            path: push_add,
            body: |i| {
                event(
                    i,
                    json!({"Attribute": [attribute(&i.a1, i, json!({"Tag": tags(&["tlp:red"])}))]}),
                )
            },
            status: 403,
            stored: nothing,
            forbidden: |i| event_absent_and(i, &["tlp:red"]),
            gap: None,
            ..BASE
        },
        Case {
            name: "tlp:red object attribute tag",
            seed: false,
            path: push_add,
            body: |i| {
                let mut o = domain_ip_object(i, json!({}));
                o["Attribute"][0]["Tag"] = tags(&["tlp:red"]);
                event(i, json!({"Object": [o]}))
            },
            status: 403,
            stored: nothing,
            forbidden: |i| event_absent_and(i, &["tlp:red"]),
            gap: None,
            ..BASE
        },
        Case {
            name: "TLP:RED event tag (MISP matches tag names case-insensitively)",
            seed: false,
            path: push_add,
            body: |i| event(i, json!({"Tag": tags(&["tlp:green", "TLP:RED"])})),
            status: 403,
            stored: nothing,
            forbidden: |i| event_absent_and(i, &["tlp:red"]),
            gap: None,
            ..BASE
        },
        Case {
            name: "tlp:red with a trailing space (MISP ignores trailing spaces)",
            seed: false,
            path: push_add,
            body: |i| event(i, json!({"Tag": tags(&["tlp:green", "tlp:red "])})),
            status: 403,
            stored: nothing,
            forbidden: |i| event_absent_and(i, &["tlp:red"]),
            gap: None,
            ..BASE
        },
        Case {
            name: "tlp:red tag added by a sync edit",
            seed: true,
            path: push_edit,
            body: |i| {
                edit(
                    i,
                    json!({"Tag": tags(&["tlp:green", "tlp:red"])}),
                    json!({}),
                )
            },
            status: 403,
            stored: |i| vec![i.ev.clone()],
            forbidden: |i| vec![i.a2.clone(), "tlp:red".into()],
            gap: None,
            ..BASE
        },
        // ---- distribution 0 in each carrier ----
        Case {
            name: "distribution-0 event",
            seed: false,
            path: push_add,
            body: |i| event(i, json!({"distribution": "0"})),
            status: 403,
            stored: nothing,
            forbidden: |i| event_absent_and(i, &[]),
            gap: None,
            ..BASE
        },
        Case {
            name: "distribution-0 attribute",
            seed: false,
            path: push_add,
            body: |i| {
                event(
                    i,
                    json!({"Attribute": [attribute(&i.a1, i, json!({"distribution": "0"}))]}),
                )
            },
            status: 403,
            stored: nothing,
            forbidden: |i| event_absent_and(i, &[&i.a1]),
            gap: None,
            ..BASE
        },
        Case {
            name: "distribution-0 attribute added by a sync edit",
            seed: true,
            path: push_edit,
            body: |i| edit(i, json!({}), json!({"distribution": "0"})),
            status: 403,
            stored: |i| vec![i.ev.clone()],
            forbidden: |i| vec![i.a2.clone()],
            gap: None,
            ..BASE
        },
        Case {
            name: "distribution-0 object",
            seed: false,
            path: push_add,
            body: |i| {
                event(
                    i,
                    json!({"Object": [domain_ip_object(i, json!({"distribution": "0"}))]}),
                )
            },
            status: 403,
            stored: nothing,
            forbidden: |i| event_absent_and(i, &[&i.o1]),
            gap: None,
            ..BASE
        },
        Case {
            name: "distribution-0 event report",
            seed: false,
            path: push_add,
            body: |i| event(i, json!({"EventReport": [report(i, "0")]})),
            status: 403,
            stored: nothing,
            forbidden: |i| event_absent_and(i, &[&i.r1]),
            gap: None,
            ..BASE
        },
        Case {
            name: "distribution-0 note on the event",
            seed: false,
            path: push_add,
            body: |i| event(i, json!({"Note": [note(&i.n1, &i.ev, "Event", "0", i)]})),
            status: 403,
            stored: nothing,
            forbidden: |i| event_absent_and(i, &[&i.n1]),
            gap: None,
            ..BASE
        },
        Case {
            name: "distribution-0 note on an attribute",
            seed: false,
            path: push_add,
            body: |i| {
                event(
                    i,
                    json!({"Attribute": [attribute(&i.a1, i, json!({"Note": [note(&i.n1, &i.a1, "Attribute", "0", i)]}))]}),
                )
            },
            status: 403,
            stored: nothing,
            forbidden: |i| event_absent_and(i, &[&i.n1]),
            gap: None,
            ..BASE
        },
        Case {
            name: "distribution-0 standalone analyst data push",
            seed: true,
            path: push_analyst,
            body: |i| json!({"Note": note(&i.n1, &i.ev, "Event", "0", i)}),
            status: 403,
            stored: |i| vec![i.ev.clone()],
            forbidden: |i| vec![i.n1.clone()],
            gap: None,
            ..BASE
        },
        Case {
            // MISP captures every level of a standalone push (children first).
            // (Nested notes inside an event body make MISP 2.5.1 fail with
            // HTTP 500 and store nothing, so that form is not a case.)
            name: "distribution-0 note nested in a pushed note",
            seed: true,
            path: push_analyst,
            body: |i| {
                let mut outer = note(&i.n1, &i.ev, "Event", "1", i);
                outer["Note"] = json!([note(&i.n2, &i.n1, "Note", "0", i)]);
                json!({"Note": outer})
            },
            status: 403,
            stored: |i| vec![i.ev.clone()],
            forbidden: |i| vec![i.n2.clone()],
            ..BASE
        },
        Case {
            name: "distribution-0 galaxy cluster",
            seed: false,
            path: push_cluster,
            body: |i| cluster(i, json!({"distribution": "0"})),
            status: 403,
            stored: nothing,
            forbidden: |i| vec![i.gc.clone()],
            gap: None,
            ..BASE
        },
        // ---- blocked sharing group ----
        Case {
            name: "event shared with a blocked sharing group",
            seed: false,
            path: push_add,
            body: |i| {
                event(
                    i,
                    json!({"distribution": "4", "SharingGroup": sharing_group(i)}),
                )
            },
            status: 403,
            stored: nothing,
            forbidden: |i| event_absent_and(i, &[]),
            gap: None,
            ..BASE
        },
        Case {
            name: "attribute shared with a blocked sharing group",
            seed: false,
            path: push_add,
            body: |i| {
                event(
                    i,
                    json!({"Attribute": [attribute(&i.a1, i, json!({"distribution": "4", "SharingGroup": sharing_group(i)}))]}),
                )
            },
            status: 403,
            stored: nothing,
            forbidden: |i| event_absent_and(i, &[&i.a1]),
            gap: None,
            ..BASE
        },
        // ---- blocked object type, category, attribute type ----
        Case {
            name: "person object",
            seed: false,
            path: push_add,
            body: |i| event(i, json!({"Object": [person_object(i)]})),
            status: 403,
            stored: nothing,
            forbidden: |i| event_absent_and(i, &[&i.o1]),
            gap: None,
            ..BASE
        },
        Case {
            name: "Person-category attribute",
            seed: false,
            path: push_add,
            body: |i| {
                event(
                    i,
                    json!({"Attribute": [attribute(&i.a1, i, json!({"type": "first-name", "category": "Person", "value": "Mallory"}))]}),
                )
            },
            status: 403,
            stored: nothing,
            forbidden: |i| event_absent_and(i, &[&i.a1]),
            gap: None,
            ..BASE
        },
        Case {
            name: "passport-number attribute",
            seed: false,
            path: push_add,
            body: |i| {
                event(
                    i,
                    json!({"Attribute": [attribute(&i.a1, i, json!({"type": "passport-number", "category": "Person", "value": "X1234567"}))]}),
                )
            },
            status: 403,
            stored: nothing,
            forbidden: |i| event_absent_and(i, &[&i.a1]),
            gap: None,
            ..BASE
        },
        Case {
            name: "Person-category proposal",
            seed: true,
            path: push_proposals,
            body: |i| {
                proposal(
                    i,
                    json!({"type": "first-name", "category": "Person", "value": "Mallory"}),
                )
            },
            status: 403,
            stored: |i| vec![i.ev.clone()],
            forbidden: |i| vec![i.p1.clone()],
            gap: None,
            ..BASE
        },
        // ---- shapes MISP reads differently from the engine ----
        Case {
            name: "attribute without category gets its type's default (Person)",
            seed: false,
            path: push_add,
            body: |i| {
                let mut a = attribute(&i.a1, i, json!({"type": "first-name", "value": "Mallory"}));
                a.as_object_mut().unwrap().remove("category");
                event(i, json!({"Attribute": [a]}))
            },
            status: 403,
            stored: nothing,
            forbidden: |i| event_absent_and(i, &[&i.a1]),
            gap: None,
            ..BASE
        },
        Case {
            name: "person object wrapped in its own Object member",
            seed: false,
            path: push_add,
            body: |i| event(i, json!({"Object": [{"Object": person_object(i)}]})),
            status: 403,
            stored: nothing,
            forbidden: |i| event_absent_and(i, &[&i.o1]),
            gap: None,
            ..BASE
        },
        Case {
            name: "distribution-0 report wrapped in its own EventReport member",
            seed: false,
            path: push_add,
            body: |i| event(i, json!({"EventReport": [{"EventReport": report(i, "0")}]})),
            status: 403,
            stored: nothing,
            forbidden: |i| event_absent_and(i, &[&i.r1]),
            gap: None,
            ..BASE
        },
        Case {
            name: "distribution-0 note wrapped in its own Note member",
            seed: false,
            path: push_add,
            body: |i| {
                event(
                    i,
                    json!({"Note": [{"Note": note(&i.n1, &i.ev, "Event", "0", i)}]}),
                )
            },
            status: 403,
            stored: nothing,
            forbidden: |i| event_absent_and(i, &[&i.n1]),
            gap: None,
            ..BASE
        },
        Case {
            name: "tlp:red event inside a response wrapper",
            seed: false,
            path: push_add,
            body: |i| json!({"response": event(i, json!({"Tag": tags(&["tlp:red"])}))}),
            status: 403,
            stored: nothing,
            forbidden: |i| event_absent_and(i, &["tlp:red"]),
            gap: None,
            ..BASE
        },
        // ---- more carriers MISP reads ----
        Case {
            name: "tlp:red in the event's EventTag list",
            seed: false,
            path: push_add,
            body: |i| event(i, json!({"EventTag": [{"Tag": {"name": "tlp:red"}}]})),
            status: 403,
            stored: nothing,
            forbidden: |i| event_absent_and(i, &["tlp:red"]),
            gap: None,
            ..BASE
        },
        Case {
            name: "tlp:red as a single Tag object instead of a list",
            seed: false,
            path: push_add,
            body: |i| event(i, json!({"Tag": {"name": "tlp:red"}})),
            status: 403,
            stored: nothing,
            forbidden: |i| event_absent_and(i, &["tlp:red"]),
            gap: None,
            ..BASE
        },
        Case {
            name: "tlp:red in an attribute's AttributeTag list",
            seed: false,
            path: push_add,
            body: |i| {
                event(
                    i,
                    json!({"Attribute": [attribute(&i.a1, i, json!({"AttributeTag": [{"Tag": {"name": "tlp:red"}}]}))]}),
                )
            },
            status: 403,
            stored: nothing,
            forbidden: |i| event_absent_and(i, &["tlp:red"]),
            gap: None,
            ..BASE
        },
        Case {
            name: "distribution 0 as a JSON number",
            seed: false,
            path: push_add,
            body: |i| {
                event(
                    i,
                    json!({"Attribute": [attribute(&i.a1, i, json!({"distribution": 0}))]}),
                )
            },
            status: 403,
            stored: nothing,
            forbidden: |i| event_absent_and(i, &[&i.a1]),
            gap: None,
            ..BASE
        },
        Case {
            name: "Person-category attribute inside an allowed object",
            seed: false,
            path: push_add,
            body: |i| {
                let mut o = domain_ip_object(i, json!({}));
                o["Attribute"][0]["category"] = json!("Person");
                o["Attribute"][0]["type"] = json!("text");
                o["Attribute"][0]["object_relation"] = json!("text");
                event(i, json!({"Object": [o]}))
            },
            status: 403,
            stored: nothing,
            forbidden: |i| event_absent_and(i, &[&i.oa1]),
            gap: None,
            ..BASE
        },
        Case {
            name: "distribution-0 opinion on the event",
            seed: false,
            path: push_add,
            body: |i| {
                event(
                    i,
                    json!({"Opinion": [opinion(&i.n1, &i.ev, "Event", "0", i)]}),
                )
            },
            status: 403,
            stored: nothing,
            forbidden: |i| event_absent_and(i, &[&i.n1]),
            gap: None,
            ..BASE
        },
        Case {
            name: "distribution-0 opinion in a pushed note",
            seed: true,
            path: push_analyst,
            body: |i| {
                let mut outer = note(&i.n1, &i.ev, "Event", "1", i);
                outer["Opinion"] = json!([opinion(&i.n2, &i.n1, "Note", "0", i)]);
                json!({"Note": outer})
            },
            status: 403,
            stored: |i| vec![i.ev.clone()],
            forbidden: |i| vec![i.n2.clone()],
            ..BASE
        },
        Case {
            name: "event report shared with a blocked sharing group",
            seed: false,
            path: push_add,
            body: |i| {
                let mut r = report(i, "4");
                r["SharingGroup"] = sharing_group(i);
                event(i, json!({"EventReport": [r]}))
            },
            status: 403,
            stored: nothing,
            forbidden: |i| event_absent_and(i, &[&i.r1]),
            ..BASE
        },
        Case {
            name: "note shared with a blocked sharing group",
            seed: true,
            path: push_analyst,
            body: |i| {
                let mut n = note(&i.n1, &i.ev, "Event", "4", i);
                n["SharingGroup"] = sharing_group(i);
                json!({"Note": n})
            },
            status: 403,
            stored: |i| vec![i.ev.clone()],
            forbidden: |i| vec![i.n1.clone()],
            ..BASE
        },
        Case {
            name: "galaxy cluster shared with a blocked sharing group",
            seed: false,
            path: push_cluster,
            body: |i| {
                cluster(
                    i,
                    json!({"distribution": "4", "SharingGroup": sharing_group(i)}),
                )
            },
            status: 403,
            stored: nothing,
            forbidden: |i| vec![i.gc.clone()],
            ..BASE
        },
        Case {
            name: "attribute naming the blocked sharing group only by MISP's local id",
            seed: false,
            path: push_add,
            body: |i| {
                event(
                    i,
                    json!({"Attribute": [attribute(&i.a1, i, json!({"distribution": "4", "sharing_group_id": i.sg_id}))]}),
                )
            },
            status: 403,
            stored: nothing,
            forbidden: |i| event_absent_and(i, &[&i.a1]),
            ..BASE
        },
        Case {
            name: "tlp:red tag on a galaxy cluster relation",
            seed: false,
            path: push_cluster,
            body: |i| {
                cluster(
                    i,
                    json!({"GalaxyClusterRelation": [{"galaxy_cluster_uuid": i.gc,
                        "referenced_galaxy_cluster_uuid": i.gx, "referenced_galaxy_cluster_type": "related-to",
                        "distribution": "1", "default": false, "Tag": [{"name": "tlp:red"}]}]}),
                )
            },
            status: 403,
            stored: nothing,
            forbidden: |i| vec![i.gc.clone(), "tlp:red".into()],
            ..BASE
        },
        Case {
            name: "proposal without category gets its type's default (Person)",
            seed: true,
            path: push_proposals,
            body: |i| {
                let mut p = proposal(i, json!({"type": "first-name", "value": "Mallory"}));
                p[0].as_object_mut().unwrap().remove("category");
                p
            },
            status: 403,
            stored: |i| vec![i.ev.clone()],
            forbidden: |i| vec![i.p1.clone()],
            gap: None,
            ..BASE
        },
        // ---- data flowing back: pulls and the answers to pushes ----
        Case {
            name: "allowed pull of an event",
            seed: true,
            method: "GET",
            path: |i| format!("/events/view/{}", i.ev),
            status: 200,
            stored: |i| vec![i.ev.clone()],
            ..BASE
        },
        Case {
            name: "pull of a tlp:red event",
            seed: true,
            seed_tags: &["tlp:green", "tlp:red"],
            method: "GET",
            path: |i| format!("/events/view/{}", i.ev),
            status: 403,
            answer_forbidden: |_| vec![RED_TAG_AS_SERVED.into()],
            ..BASE
        },
        Case {
            // MISP stores the edit, then answers with the whole stored event.
            name: "answer to a plain edit carries the stored tlp:red tag",
            seed: true,
            seed_tags: &["tlp:green", "tlp:red"],
            path: plain_edit,
            body: |i| edit(i, json!({}), json!({})),
            status: 403,
            answer_forbidden: |_| vec![RED_TAG_AS_SERVED.into()],
            ..BASE
        },
        Case {
            name: "answer to a sync edit carries the stored tlp:red tag",
            seed: true,
            seed_tags: &["tlp:green", "tlp:red"],
            path: push_edit,
            body: |i| edit(i, json!({}), json!({})),
            status: 403,
            answer_forbidden: |_| vec![RED_TAG_AS_SERVED.into()],
            ..BASE
        },
        Case {
            // The index MISP's pull asks for (Server::getEventIndexFromServer,
            // with a pull rule naming an organisation): minimal, no tags.
            name: "allowed minimal event index",
            seed: true,
            path: |_| "/events/index".into(),
            body: |i| json!({"org": [i.org], "minimal": 1, "published": 1}),
            status: 200,
            stored: |i| vec![i.ev.clone()],
            ..BASE
        },
        Case {
            // MISP unwraps `request` and case-folds keys before reading the
            // filters, so this asks for the full index with tags.
            name: "full index of a tlp:red event asked through a request wrapper",
            seed: true,
            seed_tags: &["tlp:green", "tlp:red"],
            path: |_| "/events/index".into(),
            body: |i| json!({"request": {"Minimal": "0", "eventid": i.ev}}),
            status: 403,
            answer_forbidden: |_| vec![RED_TAG_AS_SERVED.into()],
            ..BASE
        },
        // ---- shapes MISP's own sync sends (must not be refused) ----
        Case {
            // MISP leaves out an object's Attribute list when none of its
            // attributes is visible to the sync user.
            name: "allowed object without an Attribute key",
            path: push_add,
            body: |i| {
                let mut o = domain_ip_object(i, json!({}));
                o.as_object_mut().unwrap().remove("Attribute");
                event(i, json!({"Object": [o]}))
            },
            status: 200,
            // MISP drops an object without attributes; the event stays.
            stored: |i| vec![i.ev.clone(), i.a1.clone()],
            ..BASE
        },
        Case {
            // As ServerSyncTool pushes it: related_object is the Object as
            // MISP serialises it, here without an Attribute list.
            name: "allowed relationship from an attribute to an object",
            seed: true,
            path: push_analyst,
            body: |i| {
                let mut r = note(&i.n1, &i.a1, "Attribute", "1", i);
                let m = r.as_object_mut().unwrap();
                m.remove("note");
                m.insert("note_type_name".into(), json!("Relationship"));
                m.insert("relationship_type".into(), json!("related-to"));
                m.insert("related_object_uuid".into(), json!(i.o1));
                m.insert("related_object_type".into(), json!("Object"));
                let mut o = domain_ip_object(i, json!({}));
                o.as_object_mut().unwrap().remove("Attribute");
                m.insert("related_object".into(), json!({"Object": o}));
                json!({"Relationship": r})
            },
            status: 200,
            stored: |i| vec![i.n1.clone()],
            ..BASE
        },
    ]
}
