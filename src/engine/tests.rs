//! Engine tests on the project's own fixtures: one per hardening rule of
//! POLICY.md §4 and per MISP 2.5 endpoint of §5, each written so it fails
//! without the rule it covers. (misp-guard's own scenarios run in
//! `tests/conformance.rs`.)

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;

use serde_json::{json, Value};

use super::*;
use crate::config;

/// Every carrier of `model::SCHEMA`, planted and checked through both readers.
mod carriers;
/// The event-record rules of MISP-IMPORT.md §3.2 on their own helpers.
mod event_records;

/// Analyst records at every depth, clusters and relationship targets.
mod analyst;

const POLICY: &str = r#"{
  "allowlist": {"urls": ["https://feeds.example.org/list.txt"], "domains": ["updates.example.org"]},
  "compartments_rules": {"can_reach": {"c1": ["c1", "c2"], "c2": ["c1", "c2"], "c3": ["c3"]}},
  "instances": {
    "a": {"ip": "10.1.0.1", "host": "a.example", "port": 443, "compartment_id": "c1", "affiliation": "",
          "taxonomies_rules": {"required_taxonomies": [], "allowed_tags": {}, "blocked_tags": ["tlp:red"]},
          "blocked_distribution_levels": ["0"],
          "blocked_sharing_groups_uuids": ["b9e656ba-b9c0-4506-83ed-7b54b43a57cb"],
          "blocked_attribute_types": ["passport-number"], "blocked_attribute_categories": ["Person"],
          "blocked_object_types": ["person"]},
    "b": {"ip": "10.2.0.1", "host": "b.example", "port": 8443, "compartment_id": "c2", "affiliation": "",
          "taxonomies_rules": {"required_taxonomies": ["tlp"], "allowed_tags": {"tlp": ["tlp:green", "tlp:clear"]},
                               "blocked_tags": ["internal"]},
          "blocked_distribution_levels": [], "blocked_sharing_groups_uuids": [],
          "blocked_attribute_types": [], "blocked_attribute_categories": [], "blocked_object_types": []},
    "c": {"ip": "fd00::3", "host": "c.example", "port": 443, "compartment_id": "c3", "affiliation": "",
          "taxonomies_rules": {"required_taxonomies": [], "allowed_tags": {}, "blocked_tags": []},
          "blocked_distribution_levels": [], "blocked_sharing_groups_uuids": [],
          "blocked_attribute_types": [], "blocked_attribute_categories": [], "blocked_object_types": []}
  }
}"#;

const UUID: &str = "385283a1-b5e0-4e10-a532-dce11c365a56";

fn policy() -> Policy {
    config::from_slice(POLICY.as_bytes(), Path::new("engine-tests.json")).unwrap()
}

type Headers = Vec<(String, String)>;

fn json_ct() -> Headers {
    vec![("Content-Type".into(), "application/json".into())]
}

#[allow(clippy::too_many_arguments)]
/// A request from `client` to `host`:`port` with an optional original
/// destination; returns the head-stage outcome.
fn head(
    p: &Policy,
    client: &str,
    host: &str,
    port: u16,
    dst_ip: Option<&str>,
    method: &str,
    path: &str,
    headers: &Headers,
) -> Result<Exchange, Block> {
    request_head(
        p,
        &RequestHead {
            client_ip: client.parse::<IpAddr>().unwrap(),
            host,
            port,
            scheme: Scheme::Https,
            dst_ip: dst_ip.map(|d| d.parse().unwrap()),
            method,
            path,
            headers: headers.as_slice(),
        },
    )
}

/// Push `body` from a (10.1.0.1) to b.example:8443 at `path` with `headers`.
fn push_with(path: &str, headers: Headers, body: &[u8]) -> Result<(), Block> {
    let p = policy();
    let x = head(
        &p,
        "10.1.0.1",
        "b.example",
        8443,
        None,
        "POST",
        path,
        &headers,
    )?;
    assert!(x.inspects_request_body(), "{path} must be inspected");
    request_body(&p, &x, headers.as_slice(), body)
}

fn push(body: &Value) -> Result<(), Block> {
    push_with(
        "/events/add/metadata:1",
        json_ct(),
        body.to_string().as_bytes(),
    )
}

fn reason(r: Result<(), Block>) -> String {
    r.expect_err("expected a block").reason
}

/// Pull: b (10.2.0.1) fetches from a.example (a's rules apply).
fn pull_with(path: &str, headers: Headers, body: &[u8]) -> Result<(), Block> {
    let p = policy();
    let x = head(
        &p,
        "10.2.0.1",
        "a.example",
        443,
        None,
        "GET",
        path,
        &json_ct(),
    )?;
    assert!(x.inspects_response_body(), "{path} must be inspected");
    response(
        &p,
        &x,
        &Response {
            status: 200,
            headers: headers.as_slice(),
            body,
        },
    )
}

fn pull_event(body: &Value) -> Result<(), Block> {
    pull_with(
        &format!("/events/view/{UUID}"),
        json_ct(),
        body.to_string().as_bytes(),
    )
}

fn attribute(kind: &str) -> Value {
    json!({"type": kind, "category": "Network activity", "value": "x", "distribution": "5", "Tag": [{"name": "tlp:green"}]})
}

/// An event that passes a's rules (pull) and a's rules as source (push).
fn event() -> Value {
    json!({"Event": {
        "info": "ok", "distribution": "1",
        "Tag": [{"name": "tlp:green"}],
        "Attribute": [attribute("ip-src")],
        "Object": [{"name": "file", "distribution": "5", "Attribute": [attribute("md5")]}]
    }})
}

#[test]
fn baseline_event_passes_both_ways() {
    push(&event()).unwrap();
    pull_event(&event()).unwrap();
}

// --- who talks to whom ---------------------------------------------------

#[test]
fn compartments_ports_and_sources() {
    let p = policy();
    let h = json_ct();
    let r = |client, host, port| {
        head(
            &p,
            client,
            host,
            port,
            None,
            "GET",
            "/servers/getVersion",
            &h,
        )
        .map(drop)
    };
    r("10.1.0.1", "b.example", 8443).unwrap();
    assert_eq!(
        r("10.1.0.1", "b.example", 443).unwrap_err().reason,
        "destination port is not allowed"
    );
    assert_eq!(
        r("10.1.0.1", "c.example", 443).unwrap_err().reason,
        "cannot reach compartment"
    );
    assert_eq!(
        r("fd00::3", "a.example", 443).unwrap_err().reason,
        "cannot reach compartment"
    );
    assert_eq!(
        r("10.9.9.9", "b.example", 8443).unwrap_err().reason,
        "source host 10.9.9.9 does not exist in instances hosts mapping"
    );
    // A v4 client seen on a dual-stack socket is the same peer.
    r("::ffff:10.1.0.1", "B.Example", 8443).unwrap();
    // The instance's IP literal names it as well as its host.
    r("10.1.0.1", "10.2.0.1", 8443).unwrap();
}

#[test]
fn allowlist_checks_only_the_source() {
    let p = policy();
    let h = json_ct();
    let x = head(
        &p,
        "10.2.0.1",
        "Updates.Example.Org",
        443,
        None,
        "POST",
        "/anything",
        &h,
    )
    .unwrap();
    assert_eq!(
        x.note(),
        Some("domain updates.example.org was allowed by the allowlist")
    );
    assert!(!x.inspects_request_body() && !x.inspects_response_body());
    let x = head(
        &p,
        "10.2.0.1",
        "feeds.example.org",
        443,
        None,
        "GET",
        "/list.txt",
        &h,
    )
    .unwrap();
    assert_eq!(
        x.note(),
        Some("url https://feeds.example.org/list.txt was allowed by the allowlist")
    );
    // Exact path and query only.
    assert!(head(
        &p,
        "10.2.0.1",
        "feeds.example.org",
        443,
        None,
        "GET",
        "/list.txt?x",
        &h
    )
    .is_err());
    assert!(head(
        &p,
        "10.9.9.9",
        "updates.example.org",
        443,
        None,
        "GET",
        "/",
        &h
    )
    .is_err());
}

#[test]
fn consistent_destination_in_transparent_mode() {
    let p = policy();
    let h = json_ct();
    let t = |host, dst| {
        head(
            &p,
            "10.1.0.1",
            host,
            8443,
            Some(dst),
            "GET",
            "/servers/getVersion",
            &h,
        )
        .map(drop)
    };
    t("b.example", "10.2.0.1").unwrap();
    t("10.2.0.1", "10.2.0.1").unwrap();
    assert_eq!(
        t("a.example", "10.2.0.1").unwrap_err().reason,
        "destination host a.example does not match the original destination 10.2.0.1"
    );
    assert_eq!(
        t("b.example", "10.7.7.7").unwrap_err().reason,
        "destination host 10.7.7.7 does not exist in instances hosts mapping"
    );
    // An allowlisted name cannot unlock an instance address.
    assert!(t("updates.example.org", "10.2.0.1").is_err());
}

/// No relay: in transparent mode the allowlist never applies, so a Host
/// naming an allowlisted domain or URL cannot make the gateway connect to a
/// client-chosen address; an instance address on another port is refused
/// too. The same names pass in explicit mode (no original destination).
#[test]
fn transparent_mode_serves_instance_addresses_only() {
    let p = policy();
    let h = json_ct();
    let transparent = |host: &str, port: u16, dst: Option<&str>, path: &str| {
        head(&p, "10.1.0.1", host, port, dst, "GET", path, &h)
    };
    for (host, path) in [
        ("updates.example.org", "/"),
        ("feeds.example.org", "/list.txt"),
    ] {
        assert!(matches!(
            transparent(host, 443, None, path),
            Ok(Exchange::Allowlisted { .. })
        ));
        assert_eq!(
            reason(transparent(host, 443, Some("192.0.2.10"), path).map(drop)),
            "destination host 192.0.2.10 does not exist in instances hosts mapping"
        );
    }
    assert_eq!(
        reason(transparent("b.example", 443, Some("10.2.0.1"), "/servers/getVersion").map(drop)),
        "destination port is not allowed"
    );
    // The rule itself: an instance's ip:port, nothing else (mapped IPv6
    // addresses are the IPv4 ones).
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let b = p.instance_by_host("b.example").unwrap();
    assert_eq!(transparent_destination(&p, ip("10.2.0.1"), 8443), Ok(b));
    assert_eq!(
        transparent_destination(&p, ip("::ffff:10.2.0.1"), 8443),
        Ok(b)
    );
    assert!(transparent_destination(&p, ip("10.2.0.1"), 443).is_err());
    assert!(transparent_destination(&p, ip("192.0.2.10"), 8443).is_err());
    // An unknown source is still reported first, as misp-guard orders it.
    assert!(reason(
        head(
            &p,
            "10.9.0.9",
            "updates.example.org",
            443,
            Some("192.0.2.10"),
            "GET",
            "/",
            &h
        )
        .map(drop)
    )
    .starts_with("source host"));
}

// --- path, method, content type -------------------------------------------

#[test]
fn path_tricks_are_blocked_before_endpoint_matching() {
    let p = policy();
    let h = json_ct();
    for path in [
        "/events/add/../../events/restSearch",
        "/events/add/%2e%2e/x",
        "/events//add",
        "/events/add\\x",
    ] {
        let b = head(&p, "10.1.0.1", "b.example", 8443, None, "POST", path, &h).unwrap_err();
        assert!(
            b.reason.starts_with("path not allowed: "),
            "{path}: {}",
            b.reason
        );
    }
    let b = head(&p, "10.1.0.1", "b.example", 8443, None, "GET", "/users", &h).unwrap_err();
    assert_eq!(b.reason, "endpoint not allowed");
    assert_eq!(
        b.detail.as_deref(),
        Some("rejecting non allowed request to /users")
    );
}

#[test]
fn method_override_headers_are_blocked() {
    for name in [
        "X-HTTP-Method-Override",
        "x-http-method",
        "X-Method-Override",
    ] {
        let mut h = json_ct();
        h.push((name.into(), "DELETE".into()));
        let r = push_with("/events/add/metadata:1", h, event().to_string().as_bytes());
        assert!(reason(r).starts_with("method override header"), "{name}");
    }
}

#[test]
fn content_type_must_be_json() {
    let body = event().to_string();
    let with = |ct: &[&str]| {
        let h = ct
            .iter()
            .map(|v| ("Content-Type".to_string(), v.to_string()))
            .collect();
        push_with("/events/add/metadata:1", h, body.as_bytes())
    };
    with(&["application/json"]).unwrap();
    with(&["Application/JSON; charset=UTF-8"]).unwrap();
    for bad in [
        &[][..],
        &["application/x-www-form-urlencoded"],
        &["text/plain"],
        &["application/json; charset=latin1"],
        &["application/json", "application/json"],
    ] {
        assert_eq!(with(bad).unwrap_err().status, 415, "{bad:?}");
    }
}

// --- fail closed, canonical values, duplicates ----------------------------

#[test]
fn unparseable_or_unexpected_bodies_are_blocked() {
    let bad: [(&[u8], &str); 7] = [
        (b"", "invalid JSON body"),
        (b"{\"Event\": ", "invalid JSON body"),
        (b"[]", "unexpected error, rejecting request"),
        (b"{}", "no `Event` property in request body"),
        (
            br#"{"Event": {"distribution": 1, "Attribute": {}, "Object": []}}"#,
            "unexpected error, rejecting request",
        ),
        (
            br#"{"Event": {"distribution": 1, "Attribute": [{"type": "md5"}], "Object": []}}"#,
            "missing field `category`",
        ),
        (
            br#"{"Event": {"distribution": 1, "Attribute": []}}"#,
            "event has no Object list",
        ),
    ];
    for (body, want) in bad {
        let r = reason(push_with("/events/add", json_ct(), body));
        assert!(r.contains(want), "{}: {r}", String::from_utf8_lossy(body));
    }
    let r = reason(pull_event(
        &json!({"Event": {"distribution": "1", "Tag": "tlp:red", "Attribute": [], "Object": []}}),
    ));
    assert!(r.starts_with("unexpected error, rejecting response"), "{r}");
}

#[test]
fn non_canonical_distributions_are_blocked() {
    for d in [
        json!("0.0"),
        json!(" 0"),
        json!(true),
        json!("00"),
        json!(1.0),
        json!("1 "),
        json!(null),
        json!(7),
    ] {
        let mut ev = event();
        ev["Event"]["distribution"] = d.clone();
        assert!(
            reason(pull_event(&ev)).contains("non-canonical distribution"),
            "event {d}"
        );
        let mut ev = event();
        ev["Event"]["Attribute"][0]["distribution"] = d.clone();
        assert!(
            reason(pull_event(&ev)).contains("attribute has a non-canonical"),
            "attribute {d}"
        );
    }
    let mut ev = event();
    ev["Event"]["distribution"] = json!(0);
    assert_eq!(
        reason(pull_event(&ev)),
        "event has blocked distribution level: 0"
    );
}

#[test]
fn duplicate_keys_in_read_fields_are_blocked() {
    let body =
        br#"{"Event": {"distribution": "3", "distribution": "0", "Attribute": [], "Object": []}}"#;
    assert!(reason(push_with("/events/add", json_ct(), body))
        .starts_with("duplicate key `distribution`"));
    let body = br#"{"Event": {"distribution": "1", "Tag": [{"name": "tlp:green"}], "Tag": [{"name": "internal"}], "Attribute": [], "Object": []}}"#;
    assert!(reason(push_with("/events/add", json_ct(), body)).starts_with("duplicate key `Tag`"));
    let body = br#"{"Event": {"distribution": "1", "Attribute": [], "Object": []}, "Event": {"distribution": "0"}}"#;
    assert!(reason(push_with("/events/add", json_ct(), body)).starts_with("duplicate key `Event`"));
}

// --- carriers, wrappers, matching -----------------------------------------

#[test]
fn alternative_tag_carriers_are_checked() {
    let mut ev = event();
    ev["Event"]["EventTag"] = json!([{"Tag": {"name": "tlp:red"}}]);
    assert_eq!(reason(pull_event(&ev)), "event has blocked tag: tlp:red");
    let mut ev = event();
    ev["Event"]["Galaxy"] = json!([{"GalaxyCluster": [{"tag_name": "TLP:RED"}]}]);
    assert_eq!(reason(pull_event(&ev)), "event has blocked tag: TLP:RED");
    let mut ev = event();
    ev["Event"]["Object"][0]["Attribute"][0]["AttributeTag"] =
        json!([{"Tag": {"name": "tlp:red"}}]);
    assert_eq!(
        reason(pull_event(&ev)),
        "attribute with a blocked tag: tlp:red"
    );
    let mut ev = event();
    ev["Event"]["ShadowAttribute"] = json!([attribute("passport-number")]);
    assert_eq!(
        reason(pull_event(&ev)),
        "attribute with a blocked type: passport-number"
    );
}

#[test]
fn required_taxonomies_accept_any_carrier_and_respect_allowed_tags() {
    // b requires tlp ∈ {tlp:green, tlp:clear}; b pushes to a, b's rules.
    let p = policy();
    let push_b = |ev: &Value| {
        let h = json_ct();
        let x = head(
            &p,
            "10.2.0.1",
            "a.example",
            443,
            None,
            "POST",
            "/events/add",
            &h,
        )
        .unwrap();
        request_body(&p, &x, h.as_slice(), ev.to_string().as_bytes())
    };
    push_b(&event()).unwrap();
    let mut ev = event();
    ev["Event"]["Tag"] = json!([{"name": "tlp:amber"}]);
    assert_eq!(
        reason(push_b(&ev)),
        "event is missing required taxonomy: tlp"
    );
    let mut ev = event();
    ev["Event"].as_object_mut().unwrap().remove("Tag");
    assert_eq!(reason(push_b(&ev)), "event is missing required taxonomies");
    // R-REQTAX-ASYM: only `Tag[]` counts, as MISP equates names (trailing
    // spaces and ASCII case ignored, leading spaces significant), and
    // local tags never count.
    ev["Event"]["EventTag"] = json!([{"Tag": {"name": "tlp:green"}}]);
    assert_eq!(
        reason(push_b(&ev)),
        "event is missing required taxonomy: tlp"
    );
    ev["Event"]["Tag"] = json!([{"name": " TLP:Green"}]);
    assert_eq!(
        reason(push_b(&ev)),
        "event is missing required taxonomy: tlp"
    );
    ev["Event"]["Tag"] = json!([{"name": "tlp:green", "local": true}]);
    assert_eq!(
        reason(push_b(&ev)),
        "event is missing required taxonomy: tlp"
    );
    ev["Event"]["Tag"] = json!([{"name": "TLP:Green  ", "local": "0"}]);
    push_b(&ev).unwrap();
    let mut ev = event();
    ev["Event"]["Attribute"][0]["Tag"] = json!([]);
    assert_eq!(
        reason(push_b(&ev)),
        "event is missing required taxonomy: tlp"
    );
}

#[test]
fn matching_trims_and_ignores_case() {
    let cases = [
        (
            "/Event/Tag/0/name",
            json!(" TLP:Red "),
            "event has blocked tag:  TLP:Red ",
        ),
        (
            "/Event/Attribute/0/type",
            json!("Passport-Number"),
            "attribute with a blocked type: Passport-Number",
        ),
        (
            "/Event/Attribute/0/category",
            json!("person "),
            "attribute with a blocked category: person ",
        ),
        (
            "/Event/Object/0/name",
            json!("PERSON"),
            "object with a blocked type: PERSON",
        ),
    ];
    for (ptr, v, want) in cases {
        let mut ev = event();
        *ev.pointer_mut(ptr).unwrap() = v;
        assert_eq!(reason(pull_event(&ev)), want);
    }
    let mut ev = event();
    ev["Event"]["SharingGroup"] = json!({"uuid": "B9E656BA-B9C0-4506-83ED-7B54B43A57CB"});
    assert_eq!(
        reason(pull_event(&ev)),
        "event has blocked sharing group uuid: B9E656BA-B9C0-4506-83ED-7B54B43A57CB"
    );
}

#[test]
fn body_wrappers_are_refused() {
    for key in ["response", "request"] {
        let mut ev = event();
        ev[key] = json!({"Event": {"distribution": "0", "Attribute": [], "Object": []}});
        assert!(
            reason(push(&ev)).contains("`response` or `request`"),
            "{key}"
        );
        let mut ev = event();
        ev[key] = Value::Null;
        assert!(push(&ev).is_err(), "{key}: null");
    }
}

#[test]
fn x_user_org_uuid_membership() {
    let org = "8b9661a3-8544-4f8d-94be-cd7ebe87e922";
    let sg = |orgs: Value, all: bool| {
        json!({"uuid": "11111111-1111-1111-1111-111111111111",
        "SharingGroupOrg": orgs, "SharingGroupServer": [{"all_orgs": all}]})
    };
    let pull = |ev: &Value, headers: Headers| {
        pull_with(
            &format!("/events/view/{UUID}"),
            headers,
            ev.to_string().as_bytes(),
        )
    };
    let hdr = |vals: &[&str]| {
        let mut h = json_ct();
        h.extend(
            vals.iter()
                .map(|v| ("X-UserOrgUUID".to_string(), v.to_string())),
        );
        h
    };
    let mut ev = event();
    ev["Event"]["Attribute"][0]["SharingGroup"] =
        sg(json!([{"Organisation": {"uuid": "other"}}]), false);
    assert_eq!(
        reason(pull(&ev, hdr(&[org]))),
        format!("user with organisation uuid: {org} (X-UserOrgUUID) not in sharing group")
    );
    pull(&ev, json_ct()).unwrap();
    ev["Event"]["Attribute"][0]["SharingGroup"] = sg(
        json!([{"Organisation": {"uuid": org.to_uppercase()}}]),
        false,
    );
    pull(&ev, hdr(&[org])).unwrap();
    ev["Event"]["Attribute"][0]["SharingGroup"] = sg(json!([]), true);
    pull(&ev, hdr(&[org])).unwrap();
    assert_eq!(
        reason(pull(&ev, hdr(&[org, org]))),
        "several X-UserOrgUUID headers"
    );
}

#[test]
fn push_uses_source_rules_and_pull_destination_rules() {
    let p = policy();
    let h = json_ct();
    let mut ev = event();
    ev["Event"]["Tag"] = json!([{"name": "tlp:green"}, {"name": "internal"}]);
    // a → b push: a's rules (internal is not blocked by a).
    let x = head(
        &p,
        "10.1.0.1",
        "b.example",
        8443,
        None,
        "POST",
        "/events/add",
        &h,
    )
    .unwrap();
    request_body(&p, &x, h.as_slice(), ev.to_string().as_bytes()).unwrap();
    // a pulls from b: b's rules block "internal".
    let x = head(
        &p,
        "10.1.0.1",
        "b.example",
        8443,
        None,
        "GET",
        &format!("/events/view/{UUID}"),
        &h,
    )
    .unwrap();
    let b = response(
        &p,
        &x,
        &Response {
            status: 200,
            headers: h.as_slice(),
            body: ev.to_string().as_bytes(),
        },
    )
    .unwrap_err();
    assert_eq!(b.reason, "event has blocked tag: internal");
    assert_eq!(b.status, 403);
}

// --- Content-Encoding ------------------------------------------------------

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn encoded_bodies_are_decoded_for_inspection() {
    let mut ev = event();
    ev["Event"]["Tag"] = json!([{"name": "tlp:red"}]);
    let mut h = json_ct();
    h.push(("Content-Encoding".into(), "gzip".into()));
    let r = push_with("/events/add", h.clone(), &gzip(ev.to_string().as_bytes()));
    assert_eq!(reason(r), "event has blocked tag: tlp:red");
    push_with(
        "/events/add",
        h.clone(),
        &gzip(event().to_string().as_bytes()),
    )
    .unwrap();
    let zstd = zstd::encode_all(ev.to_string().as_bytes(), 1).unwrap();
    let mut hz = json_ct();
    hz.push(("Content-Encoding".into(), "zstd".into()));
    assert_eq!(
        reason(pull_with(&format!("/events/view/{UUID}"), hz, &zstd)),
        "event has blocked tag: tlp:red"
    );
    // Undecodable or unknown encodings are never passed uninspected.
    assert_eq!(
        push_with("/events/add", h, b"not gzip").unwrap_err().status,
        400
    );
    let mut hu = json_ct();
    hu.push(("Content-Encoding".into(), "gzip, x-custom".into()));
    assert_eq!(push_with("/events/add", hu, b"{}").unwrap_err().status, 415);
}

#[test]
fn decoded_size_is_limited() {
    let cfg = POLICY.replacen(
        "\"allowlist\"",
        "\"gateway\": {\"limits\": {\"max_decoded_body_bytes\": 1000}}, \"allowlist\"",
        1,
    );
    let p = config::from_slice(cfg.as_bytes(), Path::new("t.json")).unwrap();
    let mut h = json_ct();
    h.push(("Content-Encoding".into(), "gzip".into()));
    let x = head(
        &p,
        "10.1.0.1",
        "b.example",
        8443,
        None,
        "POST",
        "/events/add",
        &h,
    )
    .unwrap();
    let big = format!("{{\"Event\": {{\"info\": \"{}\"}}}}", "a".repeat(5000));
    assert_eq!(
        request_body(&p, &x, h.as_slice(), &gzip(big.as_bytes()))
            .unwrap_err()
            .status,
        413
    );
}

// --- MISP 2.5 endpoints (POLICY.md §5) -------------------------------------

#[test]
fn push_proposals_are_inspected_wrapped_or_bare() {
    let path = "/events/pushProposals/42";
    let send = |v: Value| push_with(path, json_ct(), v.to_string().as_bytes());
    send(json!([{"ShadowAttribute": attribute("md5")}, attribute("sha1")])).unwrap();
    assert_eq!(
        reason(send(
            json!([{"ShadowAttribute": attribute("passport-number")}])
        )),
        "attribute with a blocked type: passport-number"
    );
    assert_eq!(
        reason(send(json!([attribute("passport-number")]))),
        "attribute with a blocked type: passport-number"
    );
    let mut both = attribute("md5");
    both["ShadowAttribute"] = attribute("md5");
    assert!(reason(send(json!([both]))).contains("ambiguous"));
    push_with(&format!("/events/pushProposals/{UUID}"), json_ct(), b"[]").unwrap();
}

#[test]
fn edit_by_numeric_id_is_inspected_like_edit_by_uuid() {
    let mut ev = event();
    ev["Event"]["Tag"] = json!([{"name": "tlp:red"}]);
    let r = push_with(
        "/events/edit/123/metadata:1",
        json_ct(),
        ev.to_string().as_bytes(),
    );
    assert_eq!(reason(r), "event has blocked tag: tlp:red");
}

#[test]
fn sighting_filter_and_report_probe_are_routed() {
    let p = policy();
    let h = json_ct();
    let x = head(
        &p,
        "10.1.0.1",
        "b.example",
        8443,
        None,
        "POST",
        &format!("/sightings/filterSightingUuidsForPush/{UUID}"),
        &h,
    )
    .unwrap();
    assert!(!x.inspects_request_body() && !x.inspects_response_body());
    let x = head(
        &p,
        "10.1.0.1",
        "b.example",
        8443,
        None,
        "GET",
        "/eventReports/add",
        &h,
    )
    .unwrap();
    assert!(!x.inspects_request_body() && !x.inspects_response_body());
}

#[test]
fn multi_uuid_analyst_data_index_is_inspected() {
    let path = format!("/analyst_data/index/Note/uuid[]:{UUID}/uuid[]:{UUID}.json");
    let ok = json!([{"Note": {"distribution": "1"}}, {"Note": {"distribution": "2"}}]);
    pull_with(&path, json_ct(), ok.to_string().as_bytes()).unwrap();
    let bad = json!([{"Note": {"distribution": "1"}}, {"Note": {"distribution": 0}}]);
    assert_eq!(
        reason(pull_with(&path, json_ct(), bad.to_string().as_bytes())),
        "analyst data has blocked distribution level: 0"
    );
    assert!(
        reason(pull_with(&path, json_ct(), b"[{}]")).contains("no Note, Opinion or Relationship")
    );
}

#[test]
fn relationships_are_followed_into_related_objects() {
    let rel = |kind: &str, obj: Value| json!({"Relationship": {"distribution": "1", "related_object_type": kind, "related_object": obj}});
    let send = |v: Value| {
        push_with(
            "/analyst_data/pushAnalystData",
            json_ct(),
            v.to_string().as_bytes(),
        )
    };
    send(rel("Event", json!({"Event": {"distribution": "1"}}))).unwrap();
    assert_eq!(
        reason(send(rel("Event", json!({"Event": {"distribution": "0"}})))),
        "event has blocked distribution level: 0"
    );
    assert_eq!(
        reason(send(rel(
            "Attribute",
            json!({"Attribute": attribute("passport-number")})
        ))),
        "attribute with a blocked type: passport-number"
    );
    assert!(reason(send(rel("Event", Value::Null))).contains("no related_object"));
    let nested = rel(
        "Relationship",
        rel("Note", json!({"distribution": "0"}))["Relationship"].clone(),
    );
    // MISP 2.5 cannot serialise a relationship to analyst data.
    assert_eq!(
        reason(send(nested)),
        "relationship to Relationship is not supported by MISP 2.5; refusing"
    );
}

#[test]
fn streamed_event_reports_in_policy_order_whatever_the_key_order() {
    // Attributes (with a blocked one) come before the event-level Tag in the
    // JSON; the event-level rule must still be the reason reported.
    let body = br#"{"Event": {"Attribute": [{"type": "passport-number", "category": "Other"}],
        "Object": [{"name": "person", "distribution": "1", "Attribute": []}],
        "distribution": "1", "Tag": [{"name": "tlp:red"}]}}"#;
    assert_eq!(
        reason(push_with("/events/add", json_ct(), body)),
        "event has blocked tag: tlp:red"
    );
    // Without the tag: attributes before objects, first violation wins.
    let body = br#"{"Event": {"Object": [{"name": "person", "distribution": "1", "Attribute": []}],
        "Attribute": [{"type": "md5", "category": "Other"}, {"type": "passport-number", "category": "Other"},
                      {"type": "email", "category": "Other"}],
        "distribution": "1"}}"#;
    assert_eq!(
        reason(push_with("/events/add", json_ct(), body)),
        "attribute with a blocked type: passport-number"
    );
    // A malformed element after a violation still makes the body malformed.
    let body = br#"{"Event": {"distribution": "1", "Object": [],
        "Attribute": [{"type": "passport-number", "category": "Other"}, {"type": 5, "category": "Other"}]}}"#;
    assert!(reason(push_with("/events/add", json_ct(), body)).starts_with("unexpected error"));
    // `"Event": null` is no event; trailing garbage is invalid JSON.
    assert_eq!(
        reason(push_with("/events/add", json_ct(), br#"{"Event": null}"#)),
        "no `Event` property in request body"
    );
    assert_eq!(
        reason(push(&event()).and_then(|_| push_with(
            "/events/add",
            json_ct(),
            (event().to_string() + "x").as_bytes()
        ))),
        "invalid JSON body"
    );
}

#[test]
fn connection_time_decisions() {
    let p = policy();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let inst = |id: &str| {
        Destination::Instance(InstanceId(
            p.instances.iter().position(|i| i.id == id).unwrap() as u16,
        ))
    };
    assert_eq!(
        connection(&p, ip("10.1.0.1"), None, Some("b.example"), 8443),
        Ok(inst("b"))
    );
    assert_eq!(
        connection(&p, ip("10.1.0.1"), Some(ip("10.2.0.1")), None, 8443),
        Ok(inst("b"))
    );
    assert_eq!(
        connection(
            &p,
            ip("10.1.0.1"),
            Some(ip("10.2.0.1")),
            Some("b.example"),
            8443
        ),
        Ok(inst("b"))
    );
    assert_eq!(
        connection(&p, ip("10.1.0.1"), None, Some("updates.example.org"), 443),
        Ok(Destination::Allowlisted)
    );
    assert_eq!(
        connection(&p, ip("10.1.0.1"), None, Some("feeds.example.org"), 443),
        Ok(Destination::Allowlisted)
    );
    let reason = |r: Result<Destination, Block>| r.unwrap_err().reason;
    assert_eq!(
        reason(connection(&p, ip("10.1.0.1"), None, Some("b.example"), 443)),
        "destination port is not allowed"
    );
    assert_eq!(
        reason(connection(&p, ip("10.1.0.1"), None, Some("c.example"), 443)),
        "cannot reach compartment"
    );
    assert!(reason(connection(
        &p,
        ip("10.1.0.1"),
        Some(ip("10.2.0.1")),
        Some("a.example"),
        8443
    ))
    .contains("does not match"));
    assert!(reason(connection(
        &p,
        ip("10.1.0.1"),
        Some(ip("10.2.0.1")),
        Some("updates.example.org"),
        8443
    ))
    .contains("does not match"));
    assert!(reason(connection(
        &p,
        ip("10.1.0.1"),
        None,
        Some("evil.example"),
        443
    ))
    .contains("does not exist"));
    assert!(reason(connection(
        &p,
        ip("10.1.0.1"),
        Some(ip("192.0.2.1")),
        None,
        443
    ))
    .contains("192.0.2.1 does not exist"));
    assert!(reason(connection(
        &p,
        ip("10.9.0.1"),
        None,
        Some("updates.example.org"),
        443
    ))
    .starts_with("source host"));
    // A transparent connection to a non-instance address is refused even
    // when its SNI names an allowlisted host (no relay).
    assert_eq!(
        reason(connection(
            &p,
            ip("10.1.0.1"),
            Some(ip("192.0.2.1")),
            Some("updates.example.org"),
            443
        )),
        "destination host 192.0.2.1 does not exist in instances hosts mapping"
    );
    assert_eq!(
        reason(connection(
            &p,
            ip("10.1.0.1"),
            Some(ip("10.2.0.1")),
            None,
            443
        )),
        "destination port is not allowed"
    );
    assert!(connection(
        &p,
        ip("10.1.0.1"),
        Some(ip("192.0.2.1")),
        Some("b.example"),
        8443
    )
    .is_err());
}

#[test]
fn non_utf8_bodies_are_invalid_json() {
    let mut body = event().to_string().into_bytes();
    let at = body.windows(2).position(|w| w == b"ok").unwrap();
    body[at] = 0xff;
    assert_eq!(
        reason(push_with("/events/add", json_ct(), &body)),
        "invalid JSON body"
    );
    assert_eq!(
        reason(pull_with(&format!("/events/view/{UUID}"), json_ct(), &body)),
        "invalid JSON body"
    );
}
