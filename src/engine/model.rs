//! Typed, borrowing views of the MISP JSON the policy reads.
//!
//! Only the fields a rule looks at are declared; everything else is skipped
//! by serde without being built. Strings borrow from the body when they have
//! no escapes, so a 50 MB event costs little more than its structure.
//!
//! Two properties of serde's derived structs carry security weight here:
//! - a key that appears twice in one object is an error ("duplicate field"),
//!   because MISP's PHP decoder keeps the *last* value while a naive checker
//!   reads the first (POLICY.md §4);
//! - a declared field of the wrong JSON type is an error, never a pass.
//!
//! Field names mirror MISP's (`Tag`, `EventTag`, ...) so this file reads next
//! to a MISP event. `#[serde(flatten)]` and untagged enums are avoided: both
//! buffer content and lose the duplicate-key check.

#![allow(non_snake_case)]

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

type Str<'a> = Cow<'a, str>;

/// A MISP distribution level as it appeared on the wire.
///
/// Only the integers 0–5 and their exact decimal strings are canonical.
/// PHP's integer cast reads `"0.0"`, `" 0"`, `true` or `"00"` as 0, so any
/// other spelling is kept as `Invalid` and blocked rather than guessed at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Dist {
    #[default]
    Missing,
    Level(u8),
    Invalid(Box<str>),
}

impl<'de> Deserialize<'de> for Dist {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Dist;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a distribution level")
            }
            fn visit_u64<E>(self, v: u64) -> Result<Dist, E> {
                Ok(if v <= 5 {
                    Dist::Level(v as u8)
                } else {
                    Dist::Invalid(v.to_string().into())
                })
            }
            fn visit_i64<E>(self, v: i64) -> Result<Dist, E> {
                Ok(match u64::try_from(v) {
                    Ok(u) if u <= 5 => Dist::Level(u as u8),
                    _ => Dist::Invalid(v.to_string().into()),
                })
            }
            fn visit_f64<E>(self, v: f64) -> Result<Dist, E> {
                Ok(Dist::Invalid(format!("{v:?}").into()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Dist, E> {
                Ok(match v.as_bytes() {
                    [d @ b'0'..=b'5'] => Dist::Level(d - b'0'),
                    _ => Dist::Invalid(quote_short(v).into()),
                })
            }
            fn visit_bool<E>(self, v: bool) -> Result<Dist, E> {
                Ok(Dist::Invalid(v.to_string().into()))
            }
            fn visit_unit<E>(self) -> Result<Dist, E> {
                Ok(Dist::Invalid("null".into()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Dist, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Dist::Invalid("[...]".into()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Dist, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Dist::Invalid("{...}".into()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A string value shown in a block reason: quoted, at most 32 characters.
fn quote_short(v: &str) -> String {
    let short: String = v.chars().take(32).collect();
    if short.len() < v.len() {
        format!("{short:?}...")
    } else {
        format!("{short:?}")
    }
}

/// A JSON value MISP reads as PHP truthiness, restricted to the spellings
/// MISP itself emits (`true`, `1`, `"1"`); anything else counts as false,
/// which is the blocking direction wherever it is used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Truthy(pub bool);

impl<'de> Deserialize<'de> for Truthy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <&RawValue>::deserialize(d)?;
        Ok(Truthy(matches!(raw.get(), "true" | "1" | "\"1\"")))
    }
}

/// Marks that a key was present, whatever its value (even `null`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Present(pub bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(d)?;
        Ok(Present(true))
    }
}

/// An event's fields the policy reads. The top-level event of a push or
/// pull is visited by `engine::stream` (which fills the event-level fields
/// and streams the lists); a relationship's related event uses this derive.
#[derive(Debug, Default, Deserialize)]
pub struct Event<'a> {
    #[serde(default)]
    pub distribution: Dist,
    #[serde(borrow, default)]
    pub Tag: Option<Vec<Tag<'a>>>,
    #[serde(borrow, default)]
    pub EventTag: Option<Vec<TagLink<'a>>>,
    #[serde(borrow, default)]
    pub Galaxy: Option<Vec<Galaxy<'a>>>,
    #[serde(default)]
    pub EventReport: Option<Vec<Distributed>>,
    #[serde(borrow, default)]
    pub SharingGroup: Option<Box<SharingGroup<'a>>>,
    #[serde(default)]
    pub Note: Option<Vec<Distributed>>,
    #[serde(default)]
    pub Opinion: Option<Vec<Distributed>>,
    #[serde(borrow, default)]
    pub Relationship: Option<Vec<Relationship<'a>>>,
    #[serde(borrow, default)]
    pub Attribute: Option<Vec<Attribute<'a>>>,
    #[serde(borrow, default)]
    pub Object: Option<Vec<Object<'a>>>,
    #[serde(borrow, default)]
    pub ShadowAttribute: Option<Vec<Attribute<'a>>>,
}

#[derive(Debug, Deserialize)]
pub struct Tag<'a> {
    #[serde(borrow)]
    pub name: Str<'a>,
}

/// `EventTag[]` / `AttributeTag[]`: MISP also imports tags given this way.
#[derive(Debug, Deserialize)]
pub struct TagLink<'a> {
    #[serde(borrow)]
    pub Tag: Tag<'a>,
}

/// `Galaxy[]`: MISP attaches each cluster's `tag_name` as a tag.
#[derive(Debug, Deserialize)]
pub struct Galaxy<'a> {
    #[serde(borrow, default)]
    pub GalaxyCluster: Option<Vec<ClusterTag<'a>>>,
}

#[derive(Debug, Deserialize)]
pub struct ClusterTag<'a> {
    #[serde(borrow, default)]
    pub tag_name: Option<Str<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct SharingGroup<'a> {
    #[serde(borrow)]
    pub uuid: Str<'a>,
    #[serde(borrow, default)]
    pub SharingGroupOrg: Option<Vec<SharingGroupOrg<'a>>>,
    #[serde(default)]
    pub SharingGroupServer: Option<Vec<SharingGroupServer>>,
}

#[derive(Debug, Deserialize)]
pub struct SharingGroupOrg<'a> {
    #[serde(borrow, default)]
    pub Organisation: Option<OrgRef<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct OrgRef<'a> {
    #[serde(borrow, default)]
    pub uuid: Option<Str<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct SharingGroupServer {
    #[serde(default)]
    pub all_orgs: Truthy,
}

#[derive(Debug, Deserialize)]
pub struct Attribute<'a> {
    #[serde(borrow)]
    pub category: Str<'a>,
    #[serde(borrow, rename = "type")]
    pub kind: Str<'a>,
    #[serde(default)]
    pub distribution: Dist,
    #[serde(borrow, default)]
    pub Tag: Option<Vec<Tag<'a>>>,
    #[serde(borrow, default)]
    pub AttributeTag: Option<Vec<TagLink<'a>>>,
    #[serde(borrow, default)]
    pub Galaxy: Option<Vec<Galaxy<'a>>>,
    #[serde(borrow, default)]
    pub SharingGroup: Option<Box<SharingGroup<'a>>>,
    #[serde(borrow, default)]
    pub ShadowAttribute: Option<Vec<Attribute<'a>>>,
    #[serde(default)]
    pub Note: Option<Vec<Distributed>>,
    #[serde(default)]
    pub Opinion: Option<Vec<Distributed>>,
    #[serde(borrow, default)]
    pub Relationship: Option<Vec<Relationship<'a>>>,
}

#[derive(Debug, Deserialize)]
pub struct Object<'a> {
    #[serde(default)]
    pub distribution: Dist,
    #[serde(borrow, default)]
    pub SharingGroup: Option<Box<SharingGroup<'a>>>,
    #[serde(borrow)]
    pub name: Str<'a>,
    #[serde(borrow)]
    pub Attribute: Vec<Attribute<'a>>,
    #[serde(default)]
    pub Note: Option<Vec<Distributed>>,
    #[serde(default)]
    pub Opinion: Option<Vec<Distributed>>,
    #[serde(borrow, default)]
    pub Relationship: Option<Vec<Relationship<'a>>>,
}

/// Anything whose only policy field is its distribution: event reports,
/// notes, opinions, galaxy clusters.
#[derive(Debug, Deserialize)]
pub struct Distributed {
    #[serde(default)]
    pub distribution: Dist,
}

/// An analyst relationship. What `related_object` holds depends on
/// `related_object_type`, so it is kept raw and parsed once the type is known.
#[derive(Debug, Deserialize)]
pub struct Relationship<'a> {
    #[serde(default)]
    pub distribution: Dist,
    #[serde(borrow, default)]
    pub related_object_type: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub related_object: Option<&'a RawValue>,
}

/// `{"Note"|"Opinion"|"Relationship": {...}}` (analyst data push and index).
#[derive(Debug, Deserialize)]
pub struct AnalystEntry<'a> {
    #[serde(default)]
    pub Note: Option<Distributed>,
    #[serde(default)]
    pub Opinion: Option<Distributed>,
    #[serde(borrow, default)]
    pub Relationship: Option<Relationship<'a>>,
}

/// `{"GalaxyCluster": {...}}`.
#[derive(Debug, Deserialize)]
pub struct GalaxyClusterDoc {
    pub GalaxyCluster: Distributed,
}

/// `{"Object": {...}}` as a relationship's related object.
#[derive(Debug, Deserialize)]
pub struct ObjectDoc<'a> {
    #[serde(borrow)]
    pub Object: Object<'a>,
}

/// `{"Attribute": {...}}` as a relationship's related object.
#[derive(Debug, Deserialize)]
pub struct AttributeDoc<'a> {
    #[serde(borrow)]
    pub Attribute: Attribute<'a>,
}

/// `{"ShadowAttribute": {...}}`: shadow-attribute index entries, and the
/// wrapped form of a pushed proposal.
#[derive(Debug, Deserialize)]
pub struct ShadowAttributeDoc<'a> {
    #[serde(borrow)]
    pub ShadowAttribute: Attribute<'a>,
}

/// First look at a pushed proposal: wrapped (`{"ShadowAttribute": {...}}`)
/// or a bare attribute (whose own `ShadowAttribute` would be a list).
#[derive(Debug, Deserialize)]
pub struct ProposalProbe<'a> {
    #[serde(borrow, default)]
    pub ShadowAttribute: Option<&'a RawValue>,
    #[serde(rename = "type", default)]
    pub kind: Present,
    #[serde(default)]
    pub category: Present,
    #[serde(default)]
    pub value: Present,
}

/// Search filters of `/events/index` and `/galaxy_clusters/restSearch`.
#[derive(Debug, Deserialize)]
pub struct SearchFilters<'a> {
    #[serde(borrow, default)]
    pub minimal: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub published: Option<&'a RawValue>,
}

impl SearchFilters<'_> {
    /// misp-guard compares with Python's `== 1`, which `1`, `1.0` and `true`
    /// satisfy; nothing else does.
    pub fn is_one(v: Option<&RawValue>) -> bool {
        match v.map(RawValue::get) {
            Some("true") => true,
            Some(s) => s.parse::<f64>().is_ok_and(|f| f == 1.0) && !s.starts_with('"'),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dist(json: &str) -> Dist {
        #[derive(Deserialize)]
        struct W {
            #[serde(default)]
            distribution: Dist,
        }
        serde_json::from_str::<W>(json).unwrap().distribution
    }

    #[test]
    fn canonical_distributions() {
        assert_eq!(dist(r#"{"distribution": 0}"#), Dist::Level(0));
        assert_eq!(dist(r#"{"distribution": "5"}"#), Dist::Level(5));
        assert_eq!(dist(r#"{}"#), Dist::Missing);
        for bad in [
            r#""0.0""#,
            r#"" 0""#,
            "true",
            r#""00""#,
            "0.0",
            "6",
            "-1",
            "null",
            r#""""#,
            "[0]",
            r#"{"a":0}"#,
            r#""0 ""#,
        ] {
            assert!(
                matches!(
                    dist(&format!(r#"{{"distribution": {bad}}}"#)),
                    Dist::Invalid(_)
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let r =
            serde_json::from_str::<Distributed>(r#"{"distribution": "0", "distribution": "3"}"#);
        assert!(r.unwrap_err().to_string().contains("duplicate field"));
        // An escaped spelling of the same key is the same key.
        let r = serde_json::from_str::<Distributed>(
            r#"{"distribution": "0", "distributio\u006e": "3"}"#,
        );
        assert!(r.is_err());
    }

    #[test]
    fn truthy_and_one() {
        let t = |s: &str| {
            serde_json::from_str::<SharingGroupServer>(&format!(r#"{{"all_orgs": {s}}}"#))
                .unwrap()
                .all_orgs
                .0
        };
        assert!(t("true") && t("1") && t(r#""1""#));
        assert!(!t("false") && !t(r#""0""#) && !t(r#""yes""#) && !t("null"));
        let one =
            |s: &str| SearchFilters::is_one(Some(&*RawValue::from_string(s.to_string()).unwrap()));
        assert!(one("1") && one("1.0") && one("true"));
        assert!(!one("0") && !one(r#""1""#) && !one("2") && !SearchFilters::is_one(None));
    }
}
