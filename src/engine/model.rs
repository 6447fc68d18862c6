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
//! The records read field by field (`Event`, `Attribute`, `Object`) are
//! declared once, in the `schema!` invocation below: it generates the serde
//! struct (the buffered reader), the streaming reader's field dispatch for
//! the top-level event (`engine::stream`) and the `SCHEMA` list the carrier
//! test plants blocked values in. A new carrier is added there, and only
//! there, then given its rule in `checks`.
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

use super::reading::{Ctx, Seen, StreamField, Violation};

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

/// PHP-truthiness of a member MISP tests with `empty()`: absent, `null`,
/// `false`, `0`, `0.0`, `""`, `"0"`, `[]` and `{}` are false, everything
/// else true. Read exactly (not restricted like `Truthy`), because it decides
/// what MISP *drops* (a `local` tag), so erring towards "true" would count
/// a tag MISP keeps as if it were dropped and vice versa.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhpTruthy(pub bool);

impl<'de> Deserialize<'de> for PhpTruthy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <&RawValue>::deserialize(d)?;
        let v = raw.get();
        let empty = match v.as_bytes().first() {
            Some(b'"') => matches!(v, r#""""# | r#""0""#),
            Some(b'[') | Some(b'{') => v[1..v.len() - 1].trim().is_empty(),
            Some(b'n') | Some(b'f') => true,
            // Numbers: zero in any spelling is empty. (`true` lands here
            // too and, not being a number, is truthy.)
            _ => v.parse::<f64>().is_ok_and(|f| f == 0.0),
        };
        Ok(PhpTruthy(!empty))
    }
}

/// A member whose presence with any non-empty value is the point: `[]`,
/// `{}`, `null` (and absence) read as empty, anything else as present.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NonEmpty(pub bool);

impl<'de> Deserialize<'de> for NonEmpty {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <&RawValue>::deserialize(d)?;
        let v = raw.get();
        let empty = v == "null"
            || (matches!(v.as_bytes().first(), Some(b'[') | Some(b'{'))
                && v[1..v.len() - 1].trim().is_empty());
        Ok(NonEmpty(!empty))
    }
}

/// R-SEQ-AS-MAP: serde's derived structs also read a JSON *array* as the
/// struct's fields in order (`"SharingGroup": ["x"]` as a sharing group
/// with uuid "x"), while PHP reads a list. `MapOnly` is handed to a derived
/// struct's deserializer (generated with `#[serde(remote = "Self")]`, see
/// `map_only!`) and turns its request for a struct into a request for a
/// map, so an array is a type error (`R-SHAPE`).
pub struct MapOnly<D>(pub D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for MapOnly<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(v)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(v)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// Gives a struct derived with `#[serde(remote = "Self")]` its
/// `Deserialize` impl, reading through `MapOnly` (objects only).
macro_rules! map_only {
    ($($name:ident $(<$lt:lifetime>)?),* $(,)?) => {$(
        impl<'de $(: $lt, $lt)?> Deserialize<'de> for $name $(<$lt>)? {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $name::deserialize(MapOnly(d))
            }
        }
    )*};
}

/// What a record's field carries, as far as the policy is concerned. Each
/// kind has its rule in `checks` and its planted sample in the carrier test
/// (`engine::tests::carriers`), whose matches on it are exhaustive: a new
/// kind does not compile until it is tested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// A distribution level.
    Distribution,
    /// `Tag[]`: tag names.
    Tags,
    /// `EventTag[]` / `AttributeTag[]`: `{"Tag": {"name"}}` links.
    TagLinks,
    /// `Galaxy[]`: each cluster's `tag_name`, which MISP attaches as a tag.
    Galaxies,
    /// A sharing group: blocked uuids, and membership on pulls.
    SharingGroup,
    /// `EventReport[]`, each with a distribution.
    EventReports,
    /// `Note[]` / `Opinion[]`, each with a distribution.
    AnalystData,
    /// `Relationship[]`: a distribution and the related object.
    Relationships,
    /// A list of attributes.
    Attributes,
    /// A list of proposals (`ShadowAttribute[]`), checked as attributes.
    Proposals,
    /// A list of objects.
    Objects,
    /// An attribute's category.
    Category,
    /// An attribute's type.
    AttributeType,
    /// An object's template name.
    ObjectName,
    /// A member MISP would unwrap and import instead of the element that
    /// holds it (`Object` in an object, `EventReport` in a report,
    /// `Attribute` in an attribute): refused whatever its value.
    Wrapper,
    /// `RelatedEvent[]`: the receiver's correlating events (answers).
    RelatedEvents,
    /// `RelatedAttribute` / `extensionEvents`: correlation data MISP's sync
    /// never asks for, refused when non-empty.
    Correlations,
}

/// The single definition of the records the policy reads field by field.
///
/// Each field is declared once, with its serde attributes, its JSON key
/// (`as "key"` when it differs from the Rust name) and its `Carrier` kind.
/// From this the macro generates:
/// - the serde-derived struct (the buffered reader);
/// - for records marked `[streamed]`, `read_streamed`: the field dispatch of
///   the streaming reader (`engine::stream`), which reads every field the
///   derived struct reads, and streams `Listed` fields element by element;
/// - `SCHEMA`: every record with its (JSON key, carrier) pairs, which the
///   carrier test walks to plant a blocked value in each.
///
/// So a carrier added here is read by both readers and tested; `checks`
/// must then use it (the carrier test fails until it blocks).
///
/// The streaming dispatch matches the JSON key only and starts from
/// `Default`: on a `[streamed]` record, no serde `alias`, `flatten` or
/// `skip`, and every field optional (`default`); the carrier tests check
/// the keys, the defaults and the skips.
macro_rules! schema {
    ($(
        $(#[$attr:meta])*
        $([$mode:ident])? struct $name:ident<$lt:lifetime> {
            $(
                $(#[$fattr:meta])*
                $field:ident $(as $key:literal)? : $ty:ty => $carrier:ident
            ),* $(,)?
        }
    )*) => {
        /// The records `schema!` defines.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Record { $($name),* }

        /// Every record with its fields' JSON keys and carrier kinds, in
        /// declaration order.
        pub const SCHEMA: &[(Record, &[(&str, Carrier)])] = &[$(
            (Record::$name, &[$( (schema!(@key $field $($key)?), Carrier::$carrier) ),*])
        ),*];

        $(
            $(#[$attr])*
            #[derive(Debug, Deserialize)]
            #[serde(remote = "Self")]
            pub struct $name<$lt> {
                $(
                    $(#[$fattr])*
                    $(#[serde(rename = $key)])?
                    pub $field: $ty,
                )*
            }

            map_only!($name<$lt>);
            schema!(@reader [$($mode)?] $name<$lt> { $( $field $(as $key)? : $ty ),* });
        )*
    };

    (@key $field:ident) => { stringify!($field) };
    (@key $field:ident $key:literal) => { $key };

    (@reader [] $name:ident<$lt:lifetime> { $( $field:ident $(as $key:literal)? : $ty:ty ),* }) => {};
    (@reader [streamed] $name:ident<$lt:lifetime> { $( $field:ident $(as $key:literal)? : $ty:ty ),* }) => {
        impl<$lt> $name<$lt> {
            /// The streaming reader's field dispatch: reads `key`'s value
            /// into its field and returns true, or returns false for a key
            /// the policy does not read (the caller skips its value). Each
            /// key may appear once, as with the derived reader.
            pub fn read_streamed<A: MapAccess<$lt>>(
                &mut self,
                key: &str,
                map: &mut A,
                ctx: &Ctx,
                seen: &mut Seen,
            ) -> Result<bool, A::Error> {
                $(
                    if key == schema!(@key $field $($key)?) {
                        seen.once(schema!(@key $field $($key)?))?;
                        self.$field = StreamField::read(map, ctx)?;
                        return Ok(true);
                    }
                )*
                Ok(false)
            }

            /// Whether `key` names a `Listed` field (read element by element).
            pub fn streams_list(key: &str) -> bool {
                $(
                    if key == schema!(@key $field $($key)?) {
                        return <$ty as StreamField<$lt>>::streamed(None).is_some();
                    }
                )*
                false
            }

            /// The incremental reader's list dispatch (`engine::incremental`):
            /// when `key` names a `Listed` field, reads the element at the
            /// start of `text` and checks it, as the streaming reader's list
            /// does.
            /// `None`: `key` is not a streamed list.
            pub fn list_element(
                key: &str,
                text: &$lt str,
                ctx: &Ctx,
            ) -> Option<super::reading::ElementRead> {
                $(
                    if key == schema!(@key $field $($key)?) {
                        return <$ty as StreamField<$lt>>::element(text, ctx);
                    }
                )*
                None
            }

            /// Fills the `Listed` field `key` with a list read element by
            /// element elsewhere (`first`: its first violation) and returns
            /// true; false for any other key. Each key may appear once.
            pub fn put_streamed<E: serde::de::Error>(
                &mut self,
                key: &str,
                first: Option<Violation>,
                seen: &mut Seen,
            ) -> Result<bool, E> {
                $(
                    if key == schema!(@key $field $($key)?) {
                        let Some(list) = <$ty as StreamField<$lt>>::streamed(first) else {
                            return Ok(false);
                        };
                        seen.once(schema!(@key $field $($key)?))?;
                        self.$field = list;
                        return Ok(true);
                    }
                )*
                Ok(false)
            }
        }
    };
}

schema! {
    /// An event's fields the policy reads: the top-level event of a push or
    /// pull (streamed) and a relationship's related event (buffered).
    #[derive(Default)]
    [streamed] struct Event<'a> {
        #[serde(default)]
        distribution: Dist => Distribution,
        #[serde(borrow, default)]
        Tag: Option<Vec<Tag<'a>>> => Tags,
        #[serde(borrow, default)]
        EventTag: Option<Vec<TagLink<'a>>> => TagLinks,
        #[serde(borrow, default)]
        Galaxy: Option<Vec<Galaxy<'a>>> => Galaxies,
        #[serde(borrow, default)]
        EventReport: Option<Vec<EventReport<'a>>> => EventReports,
        #[serde(borrow, default)]
        SharingGroup: Option<Box<SharingGroup<'a>>> => SharingGroup,
        /// The receiver's correlating events (push answers, views).
        #[serde(borrow, default)]
        RelatedEvent: Option<Vec<RelatedEvent<'a>>> => RelatedEvents,
        /// Granular correlations (`includeGranularCorrelations`).
        #[serde(default)]
        RelatedAttribute: NonEmpty => Correlations,
        /// Extension events' titles (`extended`).
        #[serde(default)]
        extensionEvents: NonEmpty => Correlations,
        #[serde(borrow, default)]
        Note: Option<AnalystList<'a>> => AnalystData,
        #[serde(borrow, default)]
        Opinion: Option<AnalystList<'a>> => AnalystData,
        #[serde(borrow, default)]
        Relationship: Option<AnalystList<'a>> => Relationships,
        #[serde(borrow, default)]
        Attribute: Listed<Attribute<'a>> => Attributes,
        #[serde(borrow, default)]
        Object: Listed<Object<'a>> => Objects,
        /// Event-level proposals are imported with the event too.
        #[serde(borrow, default)]
        ShadowAttribute: Listed<Proposal<'a>> => Proposals,
    }

    /// An attribute, or a proposal (`ShadowAttribute`), which MISP imports
    /// with the same fields.
    struct Attribute<'a> {
        #[serde(borrow)]
        category: Str<'a> => Category,
        #[serde(borrow)]
        kind as "type": Str<'a> => AttributeType,
        #[serde(default)]
        distribution: Dist => Distribution,
        #[serde(borrow, default)]
        Tag: Option<Vec<Tag<'a>>> => Tags,
        #[serde(borrow, default)]
        AttributeTag: Option<Vec<TagLink<'a>>> => TagLinks,
        #[serde(borrow, default)]
        Galaxy: Option<Vec<Galaxy<'a>>> => Galaxies,
        #[serde(borrow, default)]
        SharingGroup: Option<Box<SharingGroup<'a>>> => SharingGroup,
        #[serde(borrow, default)]
        ShadowAttribute: Option<Proposals<'a>> => Proposals,
        /// MISP does not unwrap an inner `Attribute` today [T9]; refused so
        /// a future MISP that does cannot be fed a hidden one.
        #[serde(default)]
        wraps_attribute as "Attribute": Present => Wrapper,
        #[serde(default)]
        RelatedAttribute: NonEmpty => Correlations,
        #[serde(borrow, default)]
        Note: Option<AnalystList<'a>> => AnalystData,
        #[serde(borrow, default)]
        Opinion: Option<AnalystList<'a>> => AnalystData,
        #[serde(borrow, default)]
        Relationship: Option<AnalystList<'a>> => Relationships,
    }

    struct Object<'a> {
        #[serde(default)]
        distribution: Dist => Distribution,
        #[serde(borrow, default)]
        SharingGroup: Option<Box<SharingGroup<'a>>> => SharingGroup,
        #[serde(borrow)]
        name: Str<'a> => ObjectName,
        /// `MispObject:captureObject` imports this member *instead of* the
        /// element (R-OBJ-WRAP).
        #[serde(default)]
        wraps_object as "Object": Present => Wrapper,
        /// MISP omits the key when no attribute is visible to the user it
        /// serialises for (`Event:fetchEvent`, a relationship's related
        /// object): absent means none, not an error (`R-OBJ-NOATTR`).
        #[serde(borrow, default)]
        Attribute: Vec<Attribute<'a>> => Attributes,
        #[serde(borrow, default)]
        Note: Option<AnalystList<'a>> => AnalystData,
        #[serde(borrow, default)]
        Opinion: Option<AnalystList<'a>> => AnalystData,
        #[serde(borrow, default)]
        Relationship: Option<AnalystList<'a>> => Relationships,
    }

    /// An `EventReport[]` element.
    struct EventReport<'a> {
        #[serde(default)]
        distribution: Dist => Distribution,
        #[serde(borrow, default)]
        SharingGroup: Option<Box<SharingGroup<'a>>> => SharingGroup,
        /// `EventReport:captureReport` (add) imports this member *instead
        /// of* the element (R-REPORT-WRAP).
        #[serde(default)]
        wraps_report as "EventReport": Present => Wrapper,
        /// A report's own analyst data, imported with it on edit.
        #[serde(borrow, default)]
        Note: Option<AnalystList<'a>> => AnalystData,
        #[serde(borrow, default)]
        Opinion: Option<AnalystList<'a>> => AnalystData,
        #[serde(borrow, default)]
        Relationship: Option<AnalystList<'a>> => Relationships,
    }

    /// A `RelatedEvent[]` element's `Event`: a row of the receiver's
    /// correlating event, served, never stored (display-only).
    struct RelatedEventRow<'a> {
        #[serde(default)]
        distribution: Dist => Distribution,
        #[serde(borrow, default)]
        SharingGroup: Option<Box<SharingGroup<'a>>> => SharingGroup,
    }
}

/// `{"Event": {...}}`, one element of `RelatedEvent[]`.
#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
pub struct RelatedEvent<'a> {
    #[serde(borrow)]
    pub Event: RelatedEventRow<'a>,
}

/// A proposal (`ShadowAttribute`): read as an attribute, but MISP keeps
/// proposals without tags, so required taxonomies are not asked of it.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct Proposal<'a>(#[serde(borrow)] pub Attribute<'a>);

/// An attribute's `ShadowAttribute` member: the list of its proposals, or
/// an object, which is a wrapped attribute (R-ATTR-WRAP) rather than
/// proposals.
#[derive(Debug)]
pub enum Proposals<'a> {
    List(Vec<Attribute<'a>>),
    WrapsObject,
}

impl<'de: 'a, 'a> Deserialize<'de> for Proposals<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Proposals<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of proposals")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(a) = seq.next_element()? {
                    items.push(a);
                }
                Ok(Proposals::List(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Proposals::WrapsObject)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl<'a> Proposals<'a> {
    pub fn items(&self) -> &[Attribute<'a>] {
        match self {
            Proposals::List(items) => items,
            Proposals::WrapsObject => &[],
        }
    }
}

/// A list of records the policy checks element by element. The buffered
/// reader (serde) keeps the elements; the streaming reader checks each one
/// as it is parsed, drops it and keeps only the first violation. Either way
/// `checks::event` reads the list in the same place of its rule order.
#[derive(Debug, Default)]
pub enum Listed<T> {
    /// Absent or `null` (as a derived `Option` reads it).
    #[default]
    Absent,
    /// Read by the buffered reader.
    Items(Vec<T>),
    /// Read by the streaming reader: the first element's violation, if any.
    Streamed(Option<Violation>),
}

impl<T> Listed<T> {
    pub fn is_absent(&self) -> bool {
        matches!(self, Listed::Absent)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Listed<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Option::<Vec<T>>::deserialize(d)? {
            Some(items) => Listed::Items(items),
            None => Listed::Absent,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
pub struct Tag<'a> {
    #[serde(borrow)]
    pub name: Str<'a>,
    /// A local tag: MISP's puller drops it, so it never counts towards a
    /// required taxonomy (R-REQTAX-ASYM); it is still checked for blocking.
    #[serde(default)]
    pub local: PhpTruthy,
}

/// `EventTag[]` / `AttributeTag[]`: MISP also imports tags given this way.
#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
pub struct TagLink<'a> {
    #[serde(borrow)]
    pub Tag: Tag<'a>,
}

/// `Galaxy[]`: MISP attaches each cluster's `tag_name` as a tag.
#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
pub struct Galaxy<'a> {
    #[serde(borrow, default)]
    pub GalaxyCluster: Option<Vec<ClusterTag<'a>>>,
}

/// A cluster inside `Galaxy[]`. Push bodies carry `Galaxy: []`; answers
/// carry the receiver's full clusters, judged as clusters when they state a
/// distribution (R-EVENT-GALAXY).
#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
pub struct ClusterTag<'a> {
    #[serde(borrow, default)]
    pub tag_name: Option<Str<'a>>,
    #[serde(default)]
    pub distribution: Dist,
    #[serde(borrow, default)]
    pub SharingGroup: Option<Box<SharingGroup<'a>>>,
    /// A full cluster's relations (answers): judged as in `pushCluster`.
    #[serde(borrow, default)]
    pub GalaxyClusterRelation: Option<Vec<ClusterRelation<'a>>>,
}

map_only!(
    RelatedEvent<'a>,
    Tag<'a>,
    TagLink<'a>,
    Galaxy<'a>,
    ClusterTag<'a>,
    SharingGroup<'a>,
    SharingGroupOrg<'a>,
    OrgRef<'a>,
    SharingGroupServer,
);

#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
pub struct SharingGroup<'a> {
    #[serde(borrow)]
    pub uuid: Str<'a>,
    #[serde(borrow, default)]
    pub SharingGroupOrg: Option<Vec<SharingGroupOrg<'a>>>,
    #[serde(default)]
    pub SharingGroupServer: Option<Vec<SharingGroupServer>>,
}

#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
pub struct SharingGroupOrg<'a> {
    #[serde(borrow, default)]
    pub Organisation: Option<OrgRef<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
pub struct OrgRef<'a> {
    #[serde(borrow, default)]
    pub uuid: Option<Str<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
pub struct SharingGroupServer {
    #[serde(default)]
    pub all_orgs: Truthy,
}

/// Anything whose only policy field is its distribution: event reports,
/// notes, opinions, galaxy clusters.
#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
pub struct Distributed {
    #[serde(default)]
    pub distribution: Dist,
}

/// A note, opinion or relationship at any depth: the top-level record of
/// `pushAnalystData` and `analyst_data/index`, and every element of a
/// `Note[]`/`Opinion[]`/`Relationship[]` list on an event, attribute,
/// object, report, cluster or another analyst record. MISP captures all
/// three with one function (`AnalystData:captureAnalystData`), so they
/// share one reader; what `related_object` holds depends on
/// `related_object_type`, so it is kept raw and parsed once the type is
/// known (`checks::relationship`).
#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
pub struct Analyst<'a> {
    #[serde(default)]
    pub distribution: Dist,
    #[serde(borrow, default)]
    pub SharingGroup: Option<Box<SharingGroup<'a>>>,
    /// MISP types a record by this first (`R-ANALYST-TYPE`).
    #[serde(borrow, default)]
    pub note_type_name: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub related_object_type: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub related_object: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub Note: Option<AnalystList<'a>>,
    #[serde(borrow, default)]
    pub Opinion: Option<AnalystList<'a>>,
    #[serde(borrow, default)]
    pub Relationship: Option<AnalystList<'a>>,
}

/// A `Note`/`Opinion`/`Relationship` member of a record, as MISP may read
/// it. Only a list is MISP's own shape; an object is the per-element
/// wrapper MISP would save instead of the record (`R-ANALYST-WRAP`) and a
/// scalar makes MISP fail mid-import, so both are kept as markers (their
/// content skipped, not built) for `checks` to refuse. `null` is read as
/// an absent member by the surrounding `Option`.
#[derive(Debug)]
pub enum AnalystList<'a> {
    Items(Vec<Analyst<'a>>),
    Wrapper,
    Scalar,
}

impl<'de: 'a, 'a> Deserialize<'de> for AnalystList<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = AnalystList<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of analyst records")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(item) = seq.next_element::<Analyst<'a>>()? {
                    items.push(item);
                }
                Ok(AnalystList::Items(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(AnalystList::Wrapper)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(AnalystList::Scalar)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(AnalystList::Scalar)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(AnalystList::Scalar)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(AnalystList::Scalar)
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(AnalystList::Scalar)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// `{"Note"|"Opinion"|"Relationship": {...}}`: a `pushAnalystData` body and
/// each element of an `analyst_data/index` answer. `note_type_name` is
/// read only to refuse it at this level (`R-ANALYST-TYPE`).
#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
pub struct AnalystEntry<'a> {
    #[serde(borrow, default)]
    pub Note: Option<Analyst<'a>>,
    #[serde(borrow, default)]
    pub Opinion: Option<Analyst<'a>>,
    #[serde(borrow, default)]
    pub Relationship: Option<Analyst<'a>>,
    #[serde(default)]
    pub note_type_name: Present,
}

/// `{"GalaxyCluster": {...}}`: a `pushCluster` element and the
/// `galaxy_clusters/view` answer.
#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
pub struct GalaxyClusterDoc<'a> {
    #[serde(borrow)]
    pub GalaxyCluster: GalaxyCluster<'a>,
}

/// A galaxy cluster as MISP pushes and serves it (`checks::galaxy_cluster`).
#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
pub struct GalaxyCluster<'a> {
    #[serde(default)]
    pub distribution: Dist,
    #[serde(borrow, default)]
    pub SharingGroup: Option<Box<SharingGroup<'a>>>,
    /// Not judged by `checks::galaxy_cluster`: MISP recomputes it when it
    /// captures a cluster. Inside events it is the tag MISP would attach,
    /// which the event's tag rules read.
    #[serde(borrow, default)]
    pub tag_name: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub GalaxyClusterRelation: Option<Vec<ClusterRelation<'a>>>,
    /// Relations of other clusters towards this one (`galaxy_clusters/view`).
    #[serde(borrow, default)]
    pub RelationshipInbound: Option<Vec<ClusterRelation<'a>>>,
    #[serde(borrow, default)]
    pub Note: Option<AnalystList<'a>>,
    #[serde(borrow, default)]
    pub Opinion: Option<AnalystList<'a>>,
    #[serde(borrow, default)]
    pub Relationship: Option<AnalystList<'a>>,
}

/// A `GalaxyClusterRelation[]` (or `RelationshipInbound[]`) element.
#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
pub struct ClusterRelation<'a> {
    #[serde(default)]
    pub distribution: Dist,
    #[serde(borrow, default)]
    pub SharingGroup: Option<Box<SharingGroup<'a>>>,
    #[serde(borrow, default)]
    pub Tag: Option<Vec<Tag<'a>>>,
    /// MISP takes the relation's tags from here when it is non-empty.
    #[serde(borrow, default)]
    pub GalaxyClusterRelationTag: Option<Vec<RelationTag<'a>>>,
    /// MISP saves this member instead of the element (`R-CLUSTER-REL`).
    #[serde(default)]
    pub GalaxyClusterRelation: Present,
}

/// `GalaxyClusterRelationTag[]`: `{"name"}` on push, `{"Tag":{"name"}}` in
/// some serialisations; both are read.
#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
pub struct RelationTag<'a> {
    #[serde(borrow, default)]
    pub name: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub Tag: Option<Tag<'a>>,
}

/// `{"Event": {...}}` as a relationship's related object.
#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
pub struct EventDoc<'a> {
    #[serde(borrow)]
    pub Event: Event<'a>,
}

/// The `Event` row MISP embeds in a related attribute or object
/// (`Relationship:getRelatedElement`): read on a second, shallow pass over
/// the related object, which is small and display-only (`R-REL-EVENTDIST`).
#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
pub struct EmbeddedEventDoc<'a> {
    #[serde(borrow, default)]
    pub Attribute: Option<EmbeddedEvent<'a>>,
    #[serde(borrow, default)]
    pub Object: Option<EmbeddedEvent<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
pub struct EmbeddedEvent<'a> {
    #[serde(borrow, default)]
    pub Event: Option<EventRow<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
pub struct EventRow<'a> {
    #[serde(default)]
    pub distribution: Dist,
    #[serde(borrow, default)]
    pub SharingGroup: Option<Box<SharingGroup<'a>>>,
}

/// `{"Object": {...}}` as a relationship's related object.
#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
pub struct ObjectDoc<'a> {
    #[serde(borrow)]
    pub Object: Object<'a>,
}

/// `{"Attribute": {...}}` as a relationship's related object.
#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
pub struct AttributeDoc<'a> {
    #[serde(borrow)]
    pub Attribute: Attribute<'a>,
}

// `R-SEQ-AS-MAP` for the analyst, cluster and relationship-target views.
map_only!(
    Distributed,
    Analyst<'a>,
    AnalystEntry<'a>,
    GalaxyClusterDoc<'a>,
    GalaxyCluster<'a>,
    ClusterRelation<'a>,
    RelationTag<'a>,
    EventDoc<'a>,
    EmbeddedEventDoc<'a>,
    EmbeddedEvent<'a>,
    EventRow<'a>,
    ObjectDoc<'a>,
    AttributeDoc<'a>,
);

/// `{"ShadowAttribute": {...}}`: shadow-attribute index entries, and the
/// wrapped form of a pushed proposal.
#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
pub struct ShadowAttributeDoc<'a> {
    #[serde(borrow)]
    pub ShadowAttribute: Attribute<'a>,
}

/// First look at a pushed proposal: wrapped (`{"ShadowAttribute": {...}}`)
/// or a bare attribute (whose own `ShadowAttribute` would be a list).
#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
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

map_only!(ShadowAttributeDoc<'a>, ProposalProbe<'a>);

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
