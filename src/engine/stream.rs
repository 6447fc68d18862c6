//! Streaming inspection of a pushed or pulled event.
//!
//! A 50 MB event holds tens of thousands of attributes. Building them all
//! into a `Vec` before checking costs memory (a large fraction of the body)
//! and time (allocation, copying, cache misses). Here the event object is
//! visited by hand: every element of `Attribute[]`, `Object[]` and
//! `ShadowAttribute[]` is deserialized, checked and dropped on the spot,
//! keeping only the first violation of each list. Parsing still continues
//! to the end, so a malformed element anywhere blocks the body (fail
//! closed), and the reported reason is exactly the one the sequential order
//! of `checks::event` would give: event-level rules first, then attributes,
//! then objects, then proposals.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::checks::{self, Checked, Ctx, Violation};
use super::model::{Attribute, Event, Object, Present};

/// What one streamed list yielded.
#[derive(Default)]
pub struct ListOutcome {
    pub present: bool,
    pub first_violation: Option<Violation>,
}

/// The top-level body: `{"Event": {...}}` plus the wrapper keys MISP unwraps.
pub struct StreamedDoc<'a> {
    pub event: Option<StreamedEvent<'a>>,
    pub wrapped: bool,
}

pub struct StreamedEvent<'a> {
    /// Event-level fields; its lists are left empty.
    pub fields: Event<'a>,
    pub attributes: ListOutcome,
    pub objects: ListOutcome,
    pub proposals: ListOutcome,
}

/// Parses and checks an event body in one pass (see the module comment).
pub fn check_event_body(ctx: &Ctx, body: &str) -> Checked {
    let mut de = serde_json::Deserializer::from_str(body);
    let doc = DocSeed { ctx }.deserialize(&mut de)?;
    de.end()?;
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
    checks::event(ctx, &ev.fields, false)?;
    for (list, name) in [(ev.attributes, "Attribute"), (ev.objects, "Object")] {
        if !list.present {
            return Err(Violation::Rule(format!("event has no {name} list")));
        }
        if let Some(v) = list.first_violation {
            return Err(v);
        }
    }
    match ev.proposals.first_violation {
        Some(v) => Err(v),
        None => Ok(()),
    }
}

struct DocSeed<'c, 'r> {
    ctx: &'c Ctx<'r>,
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
        };
        let mut seen = Seen::default();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match &*key {
                "Event" => {
                    seen.once(0, "Event")?;
                    doc.event = map.next_value_seed(EventSeed { ctx: self.ctx })?;
                }
                "response" | "request" => {
                    seen.once(
                        if &*key == "response" { 1 } else { 2 },
                        if &*key == "response" {
                            "response"
                        } else {
                            "request"
                        },
                    )?;
                    map.next_value::<Present>()?;
                    doc.wrapped = true;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(doc)
    }
}

/// Duplicate-key guard for hand-written visitors (derived ones have their own).
#[derive(Default)]
struct Seen(u32);

impl Seen {
    fn once<E: de::Error>(&mut self, bit: u32, name: &'static str) -> Result<(), E> {
        if self.0 & (1 << bit) != 0 {
            return Err(E::duplicate_field(name));
        }
        self.0 |= 1 << bit;
        Ok(())
    }
}

struct EventSeed<'c, 'r> {
    ctx: &'c Ctx<'r>,
}

impl<'de> DeserializeSeed<'de> for EventSeed<'_, '_> {
    /// `None` for `"Event": null` (as a derived `Option` would read it).
    type Value = Option<StreamedEvent<'de>>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for EventSeed<'_, '_> {
    type Value = Option<StreamedEvent<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object")
    }

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
        let ctx = self.ctx;
        let mut ev = StreamedEvent {
            fields: Event::default(),
            attributes: ListOutcome::default(),
            objects: ListOutcome::default(),
            proposals: ListOutcome::default(),
        };
        let f = &mut ev.fields;
        let mut seen = Seen::default();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            // Field names as MISP spells them; each may appear once.
            match &*key {
                "distribution" => {
                    seen.once(0, "distribution")?;
                    f.distribution = map.next_value()?;
                }
                "Tag" => {
                    seen.once(1, "Tag")?;
                    f.Tag = map.next_value()?;
                }
                "EventTag" => {
                    seen.once(2, "EventTag")?;
                    f.EventTag = map.next_value()?;
                }
                "Galaxy" => {
                    seen.once(3, "Galaxy")?;
                    f.Galaxy = map.next_value()?;
                }
                "EventReport" => {
                    seen.once(4, "EventReport")?;
                    f.EventReport = map.next_value()?;
                }
                "SharingGroup" => {
                    seen.once(5, "SharingGroup")?;
                    f.SharingGroup = map.next_value()?;
                }
                "Note" => {
                    seen.once(6, "Note")?;
                    f.Note = map.next_value()?;
                }
                "Opinion" => {
                    seen.once(7, "Opinion")?;
                    f.Opinion = map.next_value()?;
                }
                "Relationship" => {
                    seen.once(8, "Relationship")?;
                    f.Relationship = map.next_value()?;
                }
                "Attribute" => {
                    seen.once(9, "Attribute")?;
                    ev.attributes =
                        map.next_value_seed(ListSeed::<Attribute>::new(ctx, checks::attribute))?;
                }
                "Object" => {
                    seen.once(10, "Object")?;
                    ev.objects =
                        map.next_value_seed(ListSeed::<Object>::new(ctx, checks::object))?;
                }
                "ShadowAttribute" => {
                    seen.once(11, "ShadowAttribute")?;
                    ev.proposals =
                        map.next_value_seed(ListSeed::<Attribute>::new(ctx, checks::attribute))?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some(ev))
    }
}

/// Streams a JSON array (or `null`, read as absent like a derived `Option`),
/// checking each element with `check` until the first violation.
struct ListSeed<'c, 'r, T> {
    ctx: &'c Ctx<'r>,
    check: fn(&Ctx, &T) -> Checked,
    _t: PhantomData<T>,
}

impl<'c, 'r, T> ListSeed<'c, 'r, T> {
    fn new(ctx: &'c Ctx<'r>, check: fn(&Ctx, &T) -> Checked) -> Self {
        ListSeed {
            ctx,
            check,
            _t: PhantomData,
        }
    }
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for ListSeed<'_, '_, T> {
    type Value = ListOutcome;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for ListSeed<'_, '_, T> {
    type Value = ListOutcome;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list")
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(ListOutcome::default())
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(ListOutcome::default())
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = ListOutcome {
            present: true,
            first_violation: None,
        };
        while let Some(item) = seq.next_element::<T>()? {
            if out.first_violation.is_none() {
                out.first_violation = (self.check)(self.ctx, &item).err();
            }
        }
        Ok(out)
    }
}
