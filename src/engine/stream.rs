//! Streaming inspection of a pushed or pulled event.
//!
//! A 50 MB event holds tens of thousands of attributes. Building them all
//! into a `Vec` before checking costs memory (a large fraction of the body)
//! and time (allocation, copying, cache misses). Here the event object is
//! visited by hand: the field dispatch is generated from the same `schema!`
//! definition as the derived `model::Event` (`Event::read_streamed`), and
//! every element of a `Listed` field (`Attribute[]`, `Object[]`,
//! `ShadowAttribute[]`) is deserialized, checked and dropped on the spot,
//! keeping only the first violation of each list. Parsing still continues
//! to the end, so a malformed element anywhere blocks the body (fail
//! closed). The filled `Event` then goes through `checks::event` like a
//! buffered one, so the reason reported is exactly the one the buffered
//! reader would give.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::checks::{self, Check, EventRole};
use super::model::{Dist, Event, Listed, NonEmpty, Present};
use super::reading::{Checked, Ctx, ElementRead, Seen, StreamField, Violation};

/// The top-level body: `{"Event": {...}}` plus the wrapper keys MISP unwraps.
pub struct StreamedDoc<'a> {
    pub event: Option<Event<'a>>,
    pub wrapped: bool,
    /// The first top-level key other than `Event`, the wrappers and (in
    /// answers) `errors`.
    pub other_key: Option<String>,
}

/// Which event body is read: decides the lists required (`EventRole`)
/// and the top-level keys allowed beside `Event`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EventBody {
    /// `events/add`, `events/edit` requests: `Event` only.
    Pushed,
    /// `events/view` answers: `Event`, and MISP's top-level `errors`.
    Pulled,
    /// 2xx answers to `events/add` / `events/edit` (R-PUSH-ANSWER):
    /// `Event` and `errors`; lists optional.
    PushAnswer,
}

/// Parses and checks an event body in one pass (see the module comment).
pub fn check_event_body(ctx: &Ctx, body: &str, kind: EventBody) -> Checked {
    let mut de = serde_json::Deserializer::from_str(body);
    let doc = DocSeed {
        ctx,
        errors_allowed: kind != EventBody::Pushed,
    }
    .deserialize(&mut de)?;
    de.end()?;
    decide(ctx, doc, kind)
}

/// The document-level rules and the event's checks, once the body has been
/// read (by this reader or by `engine::incremental`).
pub fn decide(ctx: &Ctx, doc: StreamedDoc<'_>, kind: EventBody) -> Checked {
    if doc.wrapped {
        // MISP's events/add and edit unwrap these before reading `Event`, so
        // the `Event` beside them is not what MISP would import.
        return Err(Violation::Rule(
            "body wraps the event in `response` or `request`; refusing the ambiguous payload"
                .into(),
        ));
    }
    let Some(ev) = doc.event else {
        return Err(Violation::Rule(
            "no `Event` property in request body".into(),
        ));
    };
    if let Some(key) = doc.other_key {
        // R-EVENT-TOPKEYS: `_add`/`_edit` read some of these (a top-level
        // `Sighting` list is captured); MISP's push and view send none.
        return Err(Violation::Rule(format!(
            "event body has a top-level `{}` beside `Event`; refusing the ambiguous payload",
            super::Sanitized(&key)
        )));
    }
    let role = match kind {
        EventBody::Pushed | EventBody::Pulled => EventRole::Imported,
        EventBody::PushAnswer => EventRole::Answer,
    };
    checks::event(ctx, &ev, role)
}

impl<'de> StreamField<'de> for Dist {
    fn read<A: MapAccess<'de>>(map: &mut A, _: &Ctx) -> Result<Self, A::Error> {
        map.next_value()
    }
}

impl<'de> StreamField<'de> for NonEmpty {
    fn read<A: MapAccess<'de>>(map: &mut A, _: &Ctx) -> Result<Self, A::Error> {
        map.next_value()
    }
}

impl<'de, T: Deserialize<'de>> StreamField<'de> for Option<T> {
    fn read<A: MapAccess<'de>>(map: &mut A, _: &Ctx) -> Result<Self, A::Error> {
        map.next_value()
    }
}

impl<'de, T: Deserialize<'de> + Check> StreamField<'de> for Listed<T> {
    fn read<A: MapAccess<'de>>(map: &mut A, ctx: &Ctx) -> Result<Self, A::Error> {
        map.next_value_seed(ListSeed::<T> {
            ctx,
            _t: PhantomData,
        })
    }

    fn element(text: &'de str, ctx: &Ctx) -> Option<ElementRead> {
        let mut values = serde_json::Deserializer::from_str(text).into_iter::<T>();
        let read = match values.next()? {
            Ok(item) => Ok((item.check(ctx).err(), values.byte_offset())),
            Err(e) => Err(e),
        };
        Some(read)
    }

    fn streamed(first: Option<Violation>) -> Option<Self> {
        Some(Listed::Streamed(first))
    }
}

struct DocSeed<'c, 'r> {
    ctx: &'c Ctx<'r>,
    errors_allowed: bool,
}

impl<'de> DeserializeSeed<'de> for DocSeed<'_, '_> {
    type Value = StreamedDoc<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DocSeed<'_, '_> {
    type Value = StreamedDoc<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with an `Event`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut doc = StreamedDoc {
            event: None,
            wrapped: false,
            other_key: None,
        };
        let mut seen = Seen::default();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match &*key {
                "Event" => {
                    seen.once("Event")?;
                    doc.event = map.next_value_seed(EventSeed { ctx: self.ctx })?;
                }
                "response" => {
                    seen.once("response")?;
                    map.next_value::<Present>()?;
                    doc.wrapped = true;
                }
                "request" => {
                    seen.once("request")?;
                    map.next_value::<Present>()?;
                    doc.wrapped = true;
                }
                "errors" if self.errors_allowed => {
                    seen.once("errors")?;
                    map.next_value::<IgnoredAny>()?;
                }
                other => {
                    if doc.other_key.is_none() {
                        doc.other_key = Some(other.chars().take(64).collect());
                    }
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(doc)
    }
}

struct EventSeed<'c, 'r> {
    ctx: &'c Ctx<'r>,
}

impl<'de> DeserializeSeed<'de> for EventSeed<'_, '_> {
    /// `None` for `"Event": null` (as a derived `Option` would read it).
    type Value = Option<Event<'de>>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for EventSeed<'_, '_> {
    type Value = Option<Event<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object")
    }

    // `null` is an absent event. (cargo-mutants' `Ok(Default::default())`
    // for these two is the same value: equivalent mutants.)
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut ev = Event::default();
        let mut seen = Seen::default();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if !ev.read_streamed(&key, &mut map, self.ctx, &mut seen)? {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Some(ev))
    }
}

/// Streams a JSON array (or `null`, read as absent like a derived `Option`),
/// checking each element until the first violation.
struct ListSeed<'c, 'r, T> {
    ctx: &'c Ctx<'r>,
    _t: PhantomData<T>,
}

impl<'de, T: Deserialize<'de> + Check> DeserializeSeed<'de> for ListSeed<'_, '_, T> {
    type Value = Listed<T>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, T: Deserialize<'de> + Check> Visitor<'de> for ListSeed<'_, '_, T> {
    type Value = Listed<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list")
    }

    // `null` is an absent list. (`Listed::default()` is `Absent`, so
    // cargo-mutants' `Ok(Default::default())` for these two is the same
    // value: equivalent mutants.)
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Listed::Absent)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Listed::Absent)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut first_violation = None;
        while let Some(item) = seq.next_element::<T>()? {
            if first_violation.is_none() {
                first_violation = item.check(self.ctx).err();
            }
        }
        Ok(Listed::Streamed(first_violation))
    }
}
