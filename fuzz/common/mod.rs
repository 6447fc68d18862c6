//! What the engine targets share: a fixed policy and the inspected sync
//! endpoints between its two instances.

use std::net::IpAddr;
use std::path::Path;

use misp_guard_gw::config;
use misp_guard_gw::engine::{self, Block, Exchange, RequestHead, Response, Scheme};
use misp_guard_gw::policy::Policy;

/// a (c1) and b (c2) may reach each other; every rule kind has a value.
const POLICY: &str = r#"{
  "allowlist": {"urls": [], "domains": []},
  "compartments_rules": {"can_reach": {"c1": ["c2"], "c2": ["c1"]}},
  "instances": {
    "a": {"ip": "10.1.0.1", "host": "a.example", "port": 443, "compartment_id": "c1", "affiliation": "",
          "taxonomies_rules": {"required_taxonomies": ["tlp"], "allowed_tags": {"tlp": ["tlp:white", "tlp:green"]},
                               "blocked_tags": ["tlp:red"]},
          "blocked_distribution_levels": ["0"],
          "blocked_sharing_groups_uuids": ["b9e656ba-b9c0-4506-83ed-7b54b43a57cb"],
          "blocked_attribute_types": ["passport-number"], "blocked_attribute_categories": ["Person"],
          "blocked_object_types": ["person"]},
    "b": {"ip": "10.2.0.1", "host": "b.example", "port": 443, "compartment_id": "c2", "affiliation": "",
          "taxonomies_rules": {"required_taxonomies": [], "allowed_tags": {}, "blocked_tags": ["tlp:amber"]},
          "blocked_distribution_levels": ["1"], "blocked_sharing_groups_uuids": [],
          "blocked_attribute_types": [], "blocked_attribute_categories": [], "blocked_object_types": []}
  }
}"#;

/// (Not every target uses both.)
#[allow(dead_code)]
pub const UUID: &str = "385283a1-b5e0-4e10-a532-dce11c365a56";
#[allow(dead_code)]
pub const USER_ORG: &str = "5d0e3a4c-1f2b-4c6d-8e9f-a0b1c2d3e4f5";

pub fn policy() -> Policy {
    config::from_slice(POLICY.as_bytes(), Path::new("fuzz-policy.json")).expect("fuzz policy loads")
}

/// Every sync endpoint whose request or response body the engine reads.
pub const ENDPOINTS: &[(&str, &str)] = &[
    ("POST", "/events/add"),
    ("POST", "/events/edit/385283a1-b5e0-4e10-a532-dce11c365a56"),
    ("POST", "/events/index"),
    ("GET", "/events/view/385283a1-b5e0-4e10-a532-dce11c365a56"),
    ("POST", "/galaxy_clusters/restSearch"),
    ("POST", "/galaxies/pushCluster"),
    (
        "GET",
        "/galaxy_clusters/view/385283a1-b5e0-4e10-a532-dce11c365a56",
    ),
    (
        "GET",
        "/shadow_attributes/index/385283a1-b5e0-4e10-a532-dce11c365a56",
    ),
    ("POST", "/sightings/restSearch/event"),
    ("POST", "/analyst_data/pushAnalystData"),
    (
        "GET",
        "/analyst_data/index/Note/uuid[]:385283a1-b5e0-4e10-a532-dce11c365a56.json",
    ),
    (
        "POST",
        "/events/pushProposals/385283a1-b5e0-4e10-a532-dce11c365a56",
    ),
];

pub type Headers = Vec<(String, Vec<u8>)>;

/// The head stage for `method path` from a to b; these are all allowed.
pub fn exchange(policy: &Policy, method: &str, path: &str, headers: &Headers) -> Exchange {
    engine::request_head(
        policy,
        &RequestHead {
            client_ip: "10.1.0.1".parse::<IpAddr>().unwrap(),
            host: "b.example",
            port: 443,
            scheme: Scheme::Https,
            dst_ip: None,
            method,
            path,
            headers: headers.as_slice(),
        },
    )
    .unwrap_or_else(|b| panic!("{method} {path} refused at the head: {}", b.reason))
}

/// Runs the body stages the exchange calls for; the blocks they return.
pub fn body_stages(
    policy: &Policy,
    x: &Exchange,
    headers: &Headers,
    status: u16,
    body: &[u8],
) -> (Option<Block>, Option<Block>) {
    let request = x
        .inspects_request_body()
        .then(|| engine::request_body(policy, x, headers.as_slice(), body).err())
        .flatten();
    if x.inspects_request_body() {
        let reader = || engine::request_body_reader(policy, x, headers.as_slice());
        while_arriving(policy, reader, headers, body, &request);
    }
    let response = x
        .inspects_response_body()
        .then(|| {
            engine::response(
                policy,
                x,
                &Response {
                    status,
                    headers: headers.as_slice(),
                    body,
                },
            )
            .err()
        })
        .flatten();
    if x.inspects_response_body() {
        let reader = || engine::response_body_reader(policy, x, status, headers.as_slice());
        while_arriving(policy, reader, headers, body, &response);
    }
    for block in request.iter().chain(response.iter()) {
        // A refusal is an HTTP error status with a reason to log.
        assert!((400..600).contains(&block.status), "{block:?}");
        assert!(!block.reason.is_empty());
    }
    (request, response)
}

/// The gateway reads a pushed or a pulled event as it arrives: fed in
/// pieces (of a few sizes chosen from the body), the incremental reader
/// (`new_reader`) must end with the whole-body stage's verdict (status and
/// reason), and block early only a body that stage blocks.
pub fn while_arriving(
    policy: &Policy,
    new_reader: impl Fn() -> Option<engine::BodyReader>,
    headers: &Headers,
    body: &[u8],
    whole: &Option<Block>,
) {
    let pieces = [1 + body.len() % 7, 1 + body.len() / 3, body.len().max(1)];
    for piece in pieces {
        let Some(mut reader) = new_reader() else {
            return;
        };
        let mut end = 0;
        while end < body.len() {
            end = (end + piece).min(body.len());
            if let Some(b) = reader.feed(policy, &body[..end]) {
                assert!(whole.is_some(), "early block {b:?} of a body the stage allows");
            }
        }
        let got = reader.finish(policy, headers.as_slice(), body).err();
        assert_eq!(
            got.as_ref().map(|b| (b.status, &b.reason)),
            whole.as_ref().map(|b| (b.status, &b.reason)),
            "read as it arrived in pieces of {piece}"
        );
    }
}
