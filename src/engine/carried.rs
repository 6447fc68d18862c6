//! Which MISP objects a body carried, for the audit trail: the uuid of the
//! event (or cluster, proposal, analyst entry) of a push, or the list of
//! them for bulk pushes and pulls. Only uuids are returned, never content.
//!
//! This is a separate, lenient reading of a body the engine has already
//! decided on: it never influences a verdict (a body it cannot read simply
//! carries no uuids here), so it can stay apart from the checking readers
//! (`body`, `stream`) and from the `schema!` carriers.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{Exchange, HeaderList, Response};
use crate::codec::{self, DecodeLimits};
use crate::policy::{Policy, RequestBody, ResponseBody};

/// More uuids than this in one body are not listed (the audit line stays
/// bounded); [`Carried::truncated`] says so.
pub const MAX_UUIDS: usize = 10_000;

/// Keys under which MISP wraps one object whose `uuid` names it.
const WRAPPERS: [&str; 6] = [
    "Event",
    "GalaxyCluster",
    "ShadowAttribute",
    "Note",
    "Opinion",
    "Relationship",
];

/// The uuids a body carried, in body order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Carried {
    pub uuids: Vec<String>,
    /// More than [`MAX_UUIDS`] were carried.
    pub truncated: bool,
}

impl Carried {
    fn push(&mut self, uuid: String) {
        if self.uuids.len() < MAX_UUIDS {
            self.uuids.push(uuid);
        } else {
            self.truncated = true;
        }
    }
}

/// The objects a request body (a push) carried.
pub fn request<H: HeaderList + ?Sized>(
    policy: &Policy,
    exchange: &Exchange,
    headers: &H,
    body: &[u8],
) -> Carried {
    match exchange {
        Exchange::Sync { endpoint, .. } if endpoint.request_body() != RequestBody::Uninspected => {
            read(policy, headers, body)
        }
        _ => Carried::default(),
    }
}

/// The objects a response body (a pull, a push answer) carried.
pub fn response<H: HeaderList + ?Sized>(
    policy: &Policy,
    exchange: &Exchange,
    resp: &Response<'_, H>,
) -> Carried {
    match exchange {
        Exchange::Sync { endpoint, .. }
            if endpoint.response_body() != ResponseBody::Uninspected =>
        {
            read(policy, resp.headers, resp.body)
        }
        _ => Carried::default(),
    }
}

fn read<H: HeaderList + ?Sized>(policy: &Policy, headers: &H, body: &[u8]) -> Carried {
    let limits = &policy.limits;
    let Ok(codings) = codec::parse_content_encoding(headers.values("content-encoding")) else {
        return Carried::default();
    };
    let Ok(decoded) = codec::decode(
        body,
        &codings,
        &DecodeLimits {
            max_decoded_bytes: limits.max_decoded_body_bytes,
            max_ratio: limits.max_decompression_ratio,
            ratio_floor_bytes: limits.decompression_ratio_floor_bytes,
        },
    ) else {
        return Carried::default();
    };
    uuids_in(&decoded)
}

/// The uuids of the objects in a decoded JSON body: a wrapped object
/// (`{"Event": {"uuid": …}}`), a bare one (`{"uuid": …}`), a list of
/// either, or MISP's `{"response": [...]}` search answer.
pub fn uuids_in(json: &[u8]) -> Carried {
    let mut out = Carried::default();
    let mut de = serde_json::Deserializer::from_slice(json);
    // A body this reader cannot follow carries what was read until then.
    let _ = Level {
        out: &mut out,
        depth: 0,
    }
    .deserialize(&mut de);
    out
}

/// Reads a `uuid` member's value, noting it when it is one.
fn note_uuid<'de, A: MapAccess<'de>>(map: &mut A, out: &mut Carried) -> Result<(), A::Error> {
    if let Some(uuid) = map.next_value::<Option<String>>()? {
        if looks_like_uuid(&uuid) {
            out.push(uuid);
        }
    }
    Ok(())
}

/// A uuid as MISP writes it: 36 characters of hex digits and hyphens.
/// Anything else is not reported (the audit never carries content).
fn looks_like_uuid(s: &str) -> bool {
    s.len() == 36 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// Reads one value at the top (depth 0) or inside a `response` list /
/// top-level list (depth 1); deeper values are skipped.
struct Level<'o> {
    out: &'o mut Carried,
    depth: u8,
}

impl<'de> DeserializeSeed<'de> for Level<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Level<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a MISP object or a list of them")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth > 1 {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(());
        }
        while seq
            .next_element_seed(Level {
                out: &mut *self.out,
                depth: self.depth + 1,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if WRAPPERS.contains(&key.as_ref()) {
                map.next_value_seed(OwnUuid {
                    out: &mut *self.out,
                })?;
            } else if key == "uuid" {
                note_uuid(&mut map, self.out)?;
            } else if key == "response" && self.depth == 0 {
                map.next_value_seed(Level {
                    out: &mut *self.out,
                    depth: 1,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }

    // Scalars carry no object.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// A wrapped object: only its own `uuid` is read, and noted as soon as it
/// is, so a body cut short (a push blocked while it arrived) still names
/// its event.
struct OwnUuid<'o> {
    out: &'o mut Carried,
}

impl<'de> DeserializeSeed<'de> for OwnUuid<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for OwnUuid<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a MISP object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut named = false;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "uuid" && !named {
                named = true;
                note_uuid(&mut map, self.out)?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U1: &str = "385283a1-b5e0-4e10-a532-dce11c365a56";
    const U2: &str = "5e6a1f2b-0c3d-4e5f-8a9b-0c1d2e3f4a5b";

    #[test]
    fn a_body_cut_short_names_the_event_read_so_far() {
        let body = format!(r#"{{"Event":{{"info":"x","uuid":"{U1}","Attribute":[{{"uuid":"{U2}"#);
        assert_eq!(uuids_in(body.as_bytes()).uuids, vec![U1.to_string()]);
    }

    #[test]
    fn wrapped_event_names_its_own_uuid_only() {
        let body =
            format!(r#"{{"Event":{{"info":"x","uuid":"{U1}","Attribute":[{{"uuid":"{U2}"}}]}}}}"#);
        assert_eq!(uuids_in(body.as_bytes()).uuids, vec![U1.to_string()]);
    }

    #[test]
    fn lists_and_search_answers_name_every_object() {
        let list = format!(r#"[{{"GalaxyCluster":{{"uuid":"{U1}"}}}},{{"uuid":"{U2}"}}]"#);
        assert_eq!(uuids_in(list.as_bytes()).uuids, vec![U1, U2]);
        let search = format!(r#"{{"response":[{{"Event":{{"uuid":"{U2}"}}}}]}}"#);
        assert_eq!(uuids_in(search.as_bytes()).uuids, vec![U2]);
    }

    #[test]
    fn content_is_never_reported() {
        // A "uuid" that is not one (free text) and values of other keys
        // stay out of the audit.
        let body = r#"{"Event":{"uuid":"secret text, not a uuid"},"info":"385283a1-b5e0-4e10-a532-dce11c365a56x"}"#;
        assert!(uuids_in(body.as_bytes()).uuids.is_empty());
    }

    #[test]
    fn unreadable_bodies_carry_nothing() {
        assert_eq!(uuids_in(b"not json"), Carried::default());
    }

    fn policy() -> Policy {
        let config = r#"{
          "allowlist": {"urls": [], "domains": []},
          "compartments_rules": {"can_reach": {"c1": ["c1"]}},
          "instances": {
            "a": {"ip": "10.1.0.1", "host": "a.example", "port": 443, "compartment_id": "c1", "affiliation": "",
                  "taxonomies_rules": {"required_taxonomies": [], "allowed_tags": {}, "blocked_tags": []},
                  "blocked_distribution_levels": [], "blocked_sharing_groups_uuids": [],
                  "blocked_attribute_types": [], "blocked_attribute_categories": [], "blocked_object_types": []},
            "b": {"ip": "10.1.0.2", "host": "b.example", "port": 443, "compartment_id": "c1", "affiliation": "",
                  "taxonomies_rules": {"required_taxonomies": [], "allowed_tags": {}, "blocked_tags": []},
                  "blocked_distribution_levels": [], "blocked_sharing_groups_uuids": [],
                  "blocked_attribute_types": [], "blocked_attribute_categories": [], "blocked_object_types": []}
          }
        }"#;
        crate::config::from_slice(config.as_bytes(), std::path::Path::new("carried.json")).unwrap()
    }

    fn sync(policy: &Policy, method: &str, path: &str) -> Exchange {
        Exchange::Sync {
            endpoint: policy.endpoint(method, path).unwrap(),
            src: crate::policy::InstanceId(0),
            dst: crate::policy::InstanceId(1),
        }
    }

    #[test]
    fn only_bodies_the_policy_reads_are_read_for_uuids() {
        let p = policy();
        let body = format!(r#"{{"Event":{{"uuid":"{U1}"}}}}"#);
        let json: &[(&str, &str)] = &[("Content-Type", "application/json")];
        let push = sync(&p, "POST", "/events/add");
        let version = sync(&p, "GET", "/servers/getVersion");
        let allowlisted = Exchange::Allowlisted {
            note: String::new(),
        };
        assert_eq!(request(&p, &push, json, body.as_bytes()).uuids, vec![U1]);
        assert!(request(&p, &version, json, body.as_bytes())
            .uuids
            .is_empty());
        assert!(request(&p, &allowlisted, json, body.as_bytes())
            .uuids
            .is_empty());
        let answer = |x: &Exchange| {
            let r = Response {
                status: 200,
                headers: json,
                body: body.as_bytes(),
            };
            response(&p, x, &r).uuids
        };
        assert_eq!(answer(&push), vec![U1]);
        assert!(answer(&version).is_empty());
        assert!(answer(&allowlisted).is_empty());
        // A body whose encoding cannot be decoded carries nothing here.
        let unknown: &[(&str, &str)] = &[("Content-Encoding", "x-unknown")];
        assert!(request(&p, &push, unknown, body.as_bytes())
            .uuids
            .is_empty());
    }

    #[test]
    fn only_real_uuids_at_the_reading_depth_are_reported() {
        for (body, expected) in [
            // A bare `uuid` that is not one.
            (r#"{"uuid":"not a uuid"}"#.to_string(), vec![]),
            // Hex but short, and 36 characters that are not hex.
            (r#"{"uuid":"abc123"}"#.to_string(), vec![]),
            (format!(r#"{{"uuid":"{}"}}"#, "z".repeat(36)), vec![]),
            // Objects under other keys are content, not the object pushed.
            (format!(r#"{{"Other":{{"uuid":"{U1}"}}}}"#), vec![]),
            // `response` counts only at the top.
            (format!(r#"[{{"response":[{{"uuid":"{U1}"}}]}}]"#), vec![]),
            // Lists: two levels are read, deeper ones skipped.
            (format!(r#"[[{{"uuid":"{U1}"}}]]"#), vec![U1]),
            (format!(r#"[[[{{"uuid":"{U1}"}}]]]"#), vec![]),
        ] {
            assert_eq!(uuids_in(body.as_bytes()).uuids, expected, "{body}");
        }
        let err = Level {
            out: &mut Carried::default(),
            depth: 0,
        }
        .deserialize(serde::de::value::BytesDeserializer::<serde::de::value::Error>::new(b"x"))
        .unwrap_err();
        assert!(
            err.to_string().contains("a MISP object or a list of them"),
            "{err}"
        );
    }

    #[test]
    fn the_list_is_bounded() {
        let one = format!(r#"{{"uuid":"{U1}"}}"#);
        let body = format!("[{}]", vec![one; MAX_UUIDS + 2].join(","));
        let c = uuids_in(body.as_bytes());
        assert_eq!(c.uuids.len(), MAX_UUIDS);
        assert!(c.truncated);
    }
}
