//! The pull requests' rules (`params.rs`) as the stages apply them: the
//! `events/view` path in the head stage, the request bodies of
//! `events/view`, `events/index`, `galaxy_clusters/restSearch` and
//! `sightings/restSearch/event` in the body stage, the sightings answer in
//! the response stage.

use std::net::IpAddr;
use std::path::Path;

use super::*;
use crate::config;

/// a and b reach each other; a blocks distribution 0 (the only content
/// rule used here).
const POLICY: &str = r#"{
  "allowlist": {"urls": [], "domains": []},
  "compartments_rules": {"can_reach": {"c1": ["c2"], "c2": ["c1"]}},
  "instances": {
    "a": {"ip": "10.1.0.1", "host": "a.example", "port": 443, "compartment_id": "c1", "affiliation": "",
          "taxonomies_rules": {"required_taxonomies": [], "allowed_tags": {}, "blocked_tags": []},
          "blocked_distribution_levels": ["0"], "blocked_sharing_groups_uuids": [],
          "blocked_attribute_types": [], "blocked_attribute_categories": [], "blocked_object_types": []},
    "b": {"ip": "10.2.0.1", "host": "b.example", "port": 443, "compartment_id": "c2", "affiliation": "",
          "taxonomies_rules": {"required_taxonomies": [], "allowed_tags": {}, "blocked_tags": []},
          "blocked_distribution_levels": [], "blocked_sharing_groups_uuids": [],
          "blocked_attribute_types": [], "blocked_attribute_categories": [], "blocked_object_types": []}
  }
}"#;

const UUID: &str = "385283a1-b5e0-4e10-a532-dce11c365a56";
const PULL: &str = "/deleted[]:0/deleted[]:1/excludeGalaxy:1/includeEventCorrelations:0/includeFeedCorrelations:0/includeWarninglistHits:0/excludeLocalTags:1";

fn policy() -> Policy {
    config::from_slice(POLICY.as_bytes(), Path::new("pull-stage-tests.json")).unwrap()
}

type Headers = Vec<(String, String)>;

fn json_type() -> Headers {
    vec![("Content-Type".into(), "application/json".into())]
}

fn head(p: &Policy, method: &str, path: &str) -> Result<Exchange, Block> {
    let none: Headers = vec![];
    request_head(
        p,
        &RequestHead {
            client_ip: "10.1.0.1".parse::<IpAddr>().unwrap(),
            host: "b.example",
            port: 443,
            scheme: Scheme::Https,
            dst_ip: None,
            method,
            path,
            headers: none.as_slice(),
        },
    )
}

/// Head then body stage; the block's status and reason.
fn send(method: &str, path: &str, headers: &Headers, body: &[u8]) -> Result<(), (u16, String)> {
    let p = policy();
    let x = head(&p, method, path).map_err(|b| (b.status, b.reason))?;
    assert!(x.inspects_request_body(), "{method} {path}");
    request_body(&p, &x, headers.as_slice(), body).map_err(|b| (b.status, b.reason))
}

#[test]
fn view_path_is_checked_in_the_head_stage() {
    let p = policy();
    assert!(head(&p, "GET", &format!("/events/view/{UUID}{PULL}")).is_ok());
    let b = head(&p, "GET", &format!("/events/view/{UUID}/extended:1")).unwrap_err();
    assert_eq!(
        (b.status, b.reason.as_str()),
        (
            403,
            "events/view parameter not used by MISP's pull: extended:1"
        )
    );
    // Other endpoints' paths are not held to the view's parameters.
    assert!(head(
        &p,
        "GET",
        "/shadow_attributes/index/all:1/timestamp:0/limit:1000/page:1/deleted[]:0/deleted[]:1.json"
    )
    .is_ok());
    // Not even an endpoint sharing the prefix gets through.
    assert!(head(&p, "GET", &format!("/events/viewGraph/{UUID}")).is_err());
}

#[test]
fn view_request_carries_no_body() {
    let path = format!("/events/view/{UUID}{PULL}");
    assert_eq!(send("GET", &path, &vec![], b""), Ok(()));
    assert_eq!(send("GET", &path, &json_type(), b""), Ok(()));
    let refused = Err((
        403,
        "request body not allowed: MISP's pull sends this request without one".to_string(),
    ));
    assert_eq!(
        send("GET", &path, &json_type(), br#"{"extended":1}"#),
        refused
    );
    assert_eq!(send("GET", &path, &vec![], b" "), refused);
}

#[test]
fn sightings_search_body() {
    let path = "/sightings/restSearch/event";
    // The empty body needs no content type (misp-guard's pull sends one).
    assert_eq!(send("POST", path, &vec![], b""), Ok(()));
    assert_eq!(send("POST", path, &json_type(), b""), Ok(()));
    let legit = br#"{"returnFormat":"json","last":0,"includeUuid":true,"uuid":["u"]}"#;
    assert_eq!(send("POST", path, &json_type(), legit), Ok(()));
    // A body is a JSON body like any other.
    assert_eq!(
        send("POST", path, &vec![], legit).map_err(|e| e.0),
        Err(415)
    );
    assert_eq!(
        send("POST", path, &json_type(), br#"{"includeAttribute":1}"#),
        Err((
            403,
            "sightings search key `includeAttribute` is not sent by MISP's pull".into()
        ))
    );
}

#[test]
fn search_bodies_are_routed_to_their_rules() {
    let index = "/events/index";
    let clusters = "/galaxy_clusters/restSearch";
    let legit = br#"{"minimal":1,"published":1}"#;
    assert_eq!(send("POST", index, &json_type(), legit), Ok(()));
    assert_eq!(send("POST", clusters, &json_type(), legit), Ok(()));
    // Folding is an events/index matter only.
    let folded = br#"{"minimal":1,"published":1,"MINIMAL":0}"#;
    assert_eq!(
        send("POST", index, &json_type(), folded).map_err(|e| e.0),
        Err(403)
    );
    assert_eq!(send("POST", clusters, &json_type(), folded), Ok(()));
    assert_eq!(
        send("POST", clusters, &json_type(), br#"{"minimal":1}"#),
        Err((
            403,
            "{'minimal': 1, 'published': 1} is required for /galaxy_clusters/restSearch requests"
                .into()
        ))
    );
}

#[test]
fn sightings_answer_is_read() {
    let p = policy();
    let x = head(&p, "POST", "/sightings/restSearch/event").unwrap();
    assert!(x.inspects_response_body());
    let h = json_type();
    let answer = |body: &[u8]| {
        response(
            &p,
            &x,
            &Response {
                status: 200,
                headers: h.as_slice(),
                body,
            },
        )
        .map_err(|b| (b.status, b.reason))
    };
    assert_eq!(
        answer(br#"{"response":[{"Sighting":{"value":"v"}}]}"#),
        Ok(())
    );
    assert_eq!(
        answer(br#"{"response":[{"Sighting":{"value":"v","Attribute":{"type":"x"}}}]}"#),
        Err((403, "sightings answer carries Attribute data".into()))
    );
}

#[test]
fn a_refused_answer_is_a_plain_403() {
    // Whatever made the answer unreadable (here: too large), the client
    // gets 403, never the 413 a request would get.
    let mut p = policy();
    p.limits.max_body_bytes = 8;
    let x = head(&p, "POST", "/sightings/restSearch/event").unwrap();
    let h = json_type();
    let b = response(
        &p,
        &x,
        &Response {
            status: 200,
            headers: h.as_slice(),
            body: br#"{"response":[]}"#,
        },
    )
    .unwrap_err();
    assert_eq!(b.status, 403, "{}", b.reason);
}

#[test]
fn body_size_limits_are_inclusive() {
    let path = "/events/index";
    let body = br#"{"minimal":1,"published":1}"#;
    let n = body.len() as u64;
    let mut p = policy();
    let x = head(&p, "POST", path).unwrap();
    let h = json_type();
    let mut check = |max_body: u64, max_decoded: u64| {
        p.limits.max_body_bytes = max_body;
        p.limits.max_decoded_body_bytes = max_decoded;
        request_body(&p, &x, h.as_slice(), body).map_err(|b| (b.status, b.reason))
    };
    assert_eq!(check(n, n), Ok(()));
    assert_eq!(
        check(n - 1, n),
        Err((413, format!("request body exceeds {} bytes", n - 1)))
    );
    // An identity body is its own decoded body: held to that limit too.
    assert_eq!(
        check(n, n - 1),
        Err((413, format!("decoded body exceeds {} bytes", n - 1)))
    );
}

#[test]
fn content_type_parameters_other_than_charset_are_ignored() {
    let path = "/events/index";
    let body = br#"{"minimal":1,"published":1}"#;
    let with = |ct: &str| {
        let h: Headers = vec![("Content-Type".into(), ct.into())];
        send("POST", path, &h, body).map_err(|e| e.0)
    };
    assert_eq!(with("application/json; boundary=x"), Ok(()));
    assert_eq!(with("application/json; charset=\"UTF-8\""), Ok(()));
    assert_eq!(with("application/json; charset=latin1"), Err(415));
}

#[test]
fn pushed_clusters_are_read() {
    let body = br#"[{"GalaxyCluster":{"uuid":"24b4f8ed-65e0-4183-808f-ae3e718a011a","distribution":"0"}}]"#;
    assert_eq!(
        send("POST", "/galaxies/pushCluster", &json_type(), body),
        Err((
            403,
            "galaxy cluster has blocked distribution level: 0".into()
        ))
    );
}

#[test]
fn proposals_wrapped_and_bare() {
    let path = format!("/events/pushProposals/{UUID}");
    let push = |body: &str| send("POST", &path, &json_type(), body.as_bytes());
    let sa = r#"{"type":"ip-dst","category":"Network activity","value":"198.51.100.7"}"#;
    assert_eq!(push(&format!(r#"[{{"ShadowAttribute":{sa}}}]"#)), Ok(()));
    assert_eq!(push(&format!("[{sa}]")), Ok(()));
    // A non-object ShadowAttribute member is not a wrapper: read as bare
    // (serde reads `null` as absent, so a list stands for it here).
    let bare_list =
        r#"[{"type":"ip-dst","category":"Network activity","value":"v","ShadowAttribute":[]}]"#;
    assert_eq!(push(bare_list), Ok(()));
    // Any one bare field beside the wrapper is ambiguous.
    for field in [
        r#""type":"ip-dst""#,
        r#""category":"Other""#,
        r#""value":"v""#,
    ] {
        assert_eq!(
            push(&format!(r#"[{{"ShadowAttribute":{sa},{field}}}]"#)),
            Err((
                403,
                "proposal is both wrapped and bare; refusing the ambiguous payload".into()
            )),
            "{field}"
        );
    }
}

#[test]
fn shape_errors_are_named_as_such() {
    let got = send("POST", "/events/index", &json_type(), b"[]").unwrap_err();
    assert!(
        got.1
            .starts_with("unexpected error, rejecting request: unexpected JSON shape (line 1"),
        "{}",
        got.1
    );
}
