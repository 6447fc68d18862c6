//! Stage tests for what the engine decides besides bodies' content: the
//! HTTP-level refusals of the head stage, and which answers the response
//! stage reads (event push answers, MISP errors, the minimal index).

use std::net::IpAddr;
use std::path::Path;

use serde_json::{json, Value};

use super::*;
use crate::config;

/// a (c1) may reach b (c2). a blocks tlp:red, b blocks tlp:amber: an
/// amber event may leave a, but b's stored copy may not come back.
const POLICY: &str = r#"{
  "allowlist": {"urls": [], "domains": ["updates.example.org"]},
  "compartments_rules": {"can_reach": {"c1": ["c2"], "c2": ["c1"]}},
  "instances": {
    "a": {"ip": "10.1.0.1", "host": "a.example", "port": 443, "compartment_id": "c1", "affiliation": "",
          "taxonomies_rules": {"required_taxonomies": [], "allowed_tags": {}, "blocked_tags": ["tlp:red"]},
          "blocked_distribution_levels": [], "blocked_sharing_groups_uuids": [],
          "blocked_attribute_types": [], "blocked_attribute_categories": [], "blocked_object_types": []},
    "b": {"ip": "10.2.0.1", "host": "b.example", "port": 443, "compartment_id": "c2", "affiliation": "",
          "taxonomies_rules": {"required_taxonomies": [], "allowed_tags": {}, "blocked_tags": ["tlp:amber"]},
          "blocked_distribution_levels": [], "blocked_sharing_groups_uuids": [],
          "blocked_attribute_types": [], "blocked_attribute_categories": [], "blocked_object_types": []}
  }
}"#;

const UUID: &str = "385283a1-b5e0-4e10-a532-dce11c365a56";

fn policy() -> Policy {
    config::from_slice(POLICY.as_bytes(), Path::new("stage-tests.json")).unwrap()
}

type Headers = Vec<(String, String)>;

/// The head stage for a request from a to `host`.
fn head(
    p: &Policy,
    host: &str,
    method: &str,
    path: &str,
    headers: &Headers,
) -> Result<Exchange, Block> {
    request_head(
        p,
        &RequestHead {
            client_ip: "10.1.0.1".parse::<IpAddr>().unwrap(),
            host,
            port: 443,
            scheme: Scheme::Https,
            dst_ip: None,
            method,
            path,
            headers: headers.as_slice(),
        },
    )
}

/// The response stage for `method path` from a to b answered `status` `body`.
fn answer(method: &str, path: &str, status: u16, body: &Value) -> Result<(), (u16, String)> {
    let p = policy();
    let x = head(&p, "b.example", method, path, &vec![]).expect("head allowed");
    assert!(x.inspects_response_body(), "{method} {path}");
    let body = body.to_string().into_bytes();
    let headers: Headers = vec![("Content-Type".into(), "application/json".into())];
    response(
        &p,
        &x,
        &Response {
            status,
            headers: headers.as_slice(),
            body: &body,
        },
    )
    .map_err(|b| (b.status, b.reason))
}

fn stored_event(tag: &str, with_attributes: bool) -> Value {
    let mut ev = json!({"Event": {"id": "7", "uuid": UUID, "info": "stored on b", "distribution": "1",
        "Org": {"uuid": "9af0faab-e2b9-4f09-af6a-eb6ece9d4cfa"}, "Tag": [{"name": tag}]}});
    if with_attributes {
        ev["Event"]["Attribute"] = json!([{"type": "domain", "category": "Network activity",
            "value": "x.example", "distribution": "5"}]);
        ev["Event"]["Object"] = json!([]);
    }
    ev
}

#[test]
fn push_answers_are_read_with_the_answering_instance_rules() {
    let edit = format!("/events/edit/{UUID}");
    let edit_meta = format!("/events/edit/{UUID}/metadata:1");
    for path in ["/events/add", "/events/add/metadata:1", &edit, &edit_meta] {
        let full = !path.ends_with("metadata:1");
        assert_eq!(
            answer("POST", path, 200, &stored_event("tlp:green", full)),
            Ok(()),
            "{path}"
        );
        // b's rule applies to what b answers, even in the metadata form.
        assert_eq!(
            answer("POST", path, 200, &stored_event("tlp:amber", full)),
            Err((403, "event has blocked tag: tlp:amber".into())),
            "{path}"
        );
        // a's rules are for what a sends, not for what b answers.
        assert_eq!(
            answer("POST", path, 200, &stored_event("tlp:red", full)),
            Ok(()),
            "{path}"
        );
        // Attributes and objects are read when the answer carries them.
        let mut inner = stored_event("tlp:green", true);
        inner["Event"]["Attribute"][0]["Tag"] = json!([{"name": "tlp:amber"}]);
        assert_eq!(
            answer("POST", path, 200, &inner).map_err(|e| e.0),
            Err(403),
            "{path}"
        );
        // An answer that is not the stored event is not passed on.
        assert_eq!(
            answer("POST", path, 200, &json!({})).map_err(|e| e.0),
            Err(403),
            "{path}"
        );
    }
}

#[test]
fn misp_errors_pass_with_their_status() {
    let errors = [
        (
            404,
            json!({"name": "Event already exists, if you would like to edit it, use the url in the location header.",
                     "message": "Event already exists, if you would like to edit it, use the url in the location header.",
                     "url": "/events/add/metadata:1"}),
        ),
        (
            403,
            json!({"saved": false, "name": "Could not edit Event", "message": "Could not edit Event",
                     "url": "/events/edit/7", "errors": "Event could not be saved: Event in the request not newer than the local copy.", "id": "7"}),
        ),
        (
            500,
            json!({"name": "An Internal Error Has Occurred.", "message": "An Internal Error Has Occurred.", "url": "/events/add"}),
        ),
    ];
    for (status, body) in &errors {
        assert_eq!(
            answer("POST", "/events/add/metadata:1", *status, body),
            Ok(()),
            "{body}"
        );
        assert_eq!(
            answer("GET", &format!("/events/view/{UUID}"), *status, body),
            Ok(()),
            "{body}"
        );
    }
    // A success status is never read as an error: it must be the event.
    assert!(answer("POST", "/events/add", 200, &errors[0].1).is_err());
    assert!(answer("POST", "/events/add", 302, &errors[0].1).is_err());
    // An error status does not let data through: anything not shaped as a
    // MISP error is read as the endpoint's answer.
    // R-PUSH-ANSWER: a push answered with an error status carries no event,
    // whether or not the event would pass.
    let mut leaky = stored_event("tlp:amber", true);
    leaky["message"] = json!("x");
    assert_eq!(
        answer("POST", "/events/add", 404, &leaky),
        Err((403, "push answer with status 404 carries an Event".into()))
    );
    assert_eq!(
        answer("POST", "/events/add", 403, &stored_event("tlp:green", true)),
        Err((403, "push answer with status 403 carries an Event".into()))
    );
}

#[test]
fn events_index_answer_must_be_minimal() {
    let minimal = json!([{"id": "1", "timestamp": "1796063319", "sighting_timestamp": "0",
        "published": true, "uuid": UUID, "orgc_uuid": "9af0faab-e2b9-4f09-af6a-eb6ece9d4cfa"}]);
    assert_eq!(answer("POST", "/events/index", 200, &minimal), Ok(()));
    let full = json!([{"id": "1", "uuid": UUID, "info": "secret", "distribution": "0",
        "EventTag": [{"Tag": {"name": "tlp:amber"}}]}]);
    assert_eq!(
        answer("POST", "/events/index", 200, &full),
        Err((
            403,
            "events index response is not minimal: entry 0 has field `EventTag`".into()
        ))
    );
}

#[test]
fn cluster_search_answer_must_be_minimal() {
    let path = "/galaxy_clusters/restSearch";
    let minimal = json!({"response": [{"GalaxyCluster": {"uuid": UUID, "version": "1"}}]});
    assert_eq!(answer("POST", path, 200, &minimal), Ok(()));
    let full = json!({"response": [{"GalaxyCluster": {"uuid": UUID, "version": "1",
        "tag_name": "misp-galaxy:threat-actor=\"x\"", "GalaxyElement": []}}]});
    assert_eq!(
        answer("POST", path, 200, &full),
        Err((
            403,
            "galaxy cluster search response is not minimal: entry 0 has field `GalaxyElement`"
                .into()
        ))
    );
}

#[test]
fn protocol_refusals_come_first_even_for_allowlisted_hosts() {
    let p = policy();
    let up: Headers = vec![("Upgrade".into(), "websocket".into())];
    let expect: Headers = vec![("Expect".into(), "200-ok".into())];
    let refused = |host: &str, method: &str, h: &Headers| {
        head(&p, host, method, "/servers/getVersion", h)
            .map(drop)
            .map_err(|b| (b.status, b.reason))
    };
    for host in ["updates.example.org", "b.example"] {
        assert_eq!(
            refused(host, "GET", &up),
            Err((
                403,
                "protocol upgrades and nested CONNECT are not allowed".into()
            ))
        );
        assert_eq!(
            refused(host, "get", &vec![]),
            Err((403, "method get is not allowed".into()))
        );
        assert_eq!(
            refused(host, "GET", &expect),
            Err((417, "unsupported Expect".into()))
        );
        assert_eq!(refused(host, "GET", &vec![]), Ok(()));
    }
}

#[test]
fn oversize_request_bodies_are_refused_inspected_or_not() {
    let p = policy();
    let max = p.limits.max_body_bytes;
    assert_eq!(request_body_size(&p, max), Ok(()));
    assert_eq!(
        request_body_size(&p, max + 1),
        Err(Block::with_status(
            413,
            format!("request body exceeds {max} bytes")
        ))
    );
}

#[test]
fn bodiless_statuses_pass_on_inspected_endpoints() {
    // MISP asks for the event index with the ETag of its cached copy before
    // every sighting push; the 304 that answers it has no body.
    let p = policy();
    let headers: Headers = vec![];
    for (method, path) in [
        ("POST", "/events/index"),
        ("GET", &*format!("/events/view/{UUID}")),
    ] {
        let x = head(&p, "b.example", method, path, &vec![]).expect("head allowed");
        for status in [204, 304] {
            let r = Response {
                status,
                headers: headers.as_slice(),
                body: b"",
            };
            assert_eq!(response(&p, &x, &r), Ok(()), "{method} {path} {status}");
        }
        // A 200 without a body is still no index and no event.
        let r = Response {
            status: 200,
            headers: headers.as_slice(),
            body: b"",
        };
        assert!(response(&p, &x, &r).is_err(), "{method} {path} 200 empty");
    }
}
