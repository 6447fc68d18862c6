//! Inspecting a pushed event while it arrives.
//!
//! A 50 MB push takes a while on the wire; checking it only once the last
//! byte is in puts the whole parse on the push's critical path, and a push
//! blocked by its first attribute would still be read to its end before the
//! client hears why. This reader is fed the body received so far, again and
//! again as it grows, and reads as far as the bytes allow: the document and
//! event objects with a small hand-written grammar (braces, keys, colons,
//! commas, whitespace), every value and every list element with serde_json
//! exactly as the streaming reader (`stream`) does. It is a pure state
//! machine: no I/O, the caller owns the buffer.
//!
//! - Each element of a streamed list (`Attribute`, `Object`,
//!   `ShadowAttribute`) is read and checked as soon as it is complete; the
//!   first one that breaks a rule is [`Progress::Blocked`] at once: every
//!   way of reading the whole body then ends in a block too (a list's
//!   violation always blocks the event), so nothing is lost by deciding
//!   early. Its reason names that element's violation, which a whole-body
//!   read may report after an event-level one when the body has several.
//! - Other event members are only delimited on the way (`IgnoredAny`) and
//!   read into the event at [`EventReader::finish`], which then applies the
//!   same document rules and checks as `stream::check_event_body`. The
//!   verdict, reason included, is the streaming reader's (tested on every
//!   body of the engine's tests and fuzzed with random splits).
//! - Anything the grammar here does not take (a syntax error, `"Event":
//!   null`, a duplicate key, bytes after the document, invalid UTF-8) makes
//!   the reader give up: `finish` then says so and the caller reads the
//!   whole body with the streaming reader, which words the error. Giving up
//!   never decides anything.
//!
//! A value that is not complete yet is tried again once the body has grown
//! by as much as was pending, so a huge value is parsed O(log n) times, not
//! once per read.

use std::ops::Range;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess};
use serde::Deserialize;
use serde_json::de::SliceRead;
use serde_json::error::Category;

use super::model::Event;
use super::reading::{Checked, Ctx, Seen, Violation};
use super::stream::{decide, EventBody, StreamedDoc};

type JsonDe<'de> = serde_json::Deserializer<SliceRead<'de>>;

/// What the reader knows after a feed.
#[derive(Debug)]
pub enum Progress {
    /// Nothing decided yet.
    Reading,
    /// The body is blocked whatever follows: a list element's violation.
    Blocked(Violation),
}

/// Where the grammar stands, between complete steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the document's `{`.
    Start,
    /// In the document object, before a member (`first`: or its `}`).
    DocMember { first: bool },
    /// In the `Event` object, before a member (`first`: or its `}`).
    EventMember { first: bool },
    /// In a streamed list, before an element (`first`: or its `]`).
    Element { first: bool },
    /// After a list's `]`: `,` or the event's `}`.
    AfterList,
    /// After the event's `}`: `,` or the document's `}`.
    AfterEvent,
    /// After the document's `}`: whitespace only.
    Done,
    /// Not this reader's to read: the whole body goes to the streaming
    /// reader at the end.
    GaveUp,
}

/// One member of the `Event` object, in order.
enum Member {
    /// Any member but a streamed list: read into the event at the end.
    Value { key: String, value: Range<usize> },
    /// A streamed list, read here: its first violation.
    List {
        key: String,
        first: Option<Violation>,
    },
}

/// The incremental reader of one event body (see the module comment).
pub struct EventReader {
    kind: EventBody,
    state: State,
    /// Bytes read by complete steps.
    pos: usize,
    /// Bytes known to be UTF-8.
    utf8: usize,
    /// Do not try the pending step again before this many bytes are in.
    retry_at: usize,
    /// Steps tried, complete or not (tests bound the re-parsing).
    tries: u64,
    members: Vec<Member>,
    /// The open list's key and its first violation.
    list: Option<(String, Option<Violation>)>,
    /// Document-level members besides `Event` (as `stream::DocSeed` reads
    /// them).
    event_seen: bool,
    wrapped_seen: (bool, bool),
    errors_seen: bool,
    other_key: Option<String>,
    /// The first list element's violation, once found.
    evidence: Option<Violation>,
    /// Whether `evidence` has been reported.
    reported: bool,
}

/// A step's outcome on the bytes in hand.
enum Step {
    /// Complete: the grammar moved on.
    Done,
    /// The bytes end inside this step.
    NeedMore,
    /// Not this reader's grammar (see `State::GaveUp`).
    GiveUp,
}

impl EventReader {
    pub fn new(kind: EventBody) -> Self {
        EventReader {
            kind,
            state: State::Start,
            pos: 0,
            utf8: 0,
            retry_at: 0,
            tries: 0,
            members: Vec::new(),
            list: None,
            event_seen: false,
            wrapped_seen: (false, false),
            errors_seen: false,
            other_key: None,
            evidence: None,
            reported: false,
        }
    }

    /// Which body this reader reads.
    pub fn kind(&self) -> EventBody {
        self.kind
    }

    /// Reads as far as `body` — everything received so far; earlier bytes
    /// never change — allows. Reports a block once, the first time it is
    /// known.
    pub fn feed(&mut self, ctx: &Ctx, body: &[u8]) -> Progress {
        if self.state == State::GaveUp || body.len() < self.retry_at {
            return Progress::Reading;
        }
        // The text starts where this feed starts; steps move `pos` on.
        let base = self.pos;
        let Some(text) = self.validated(body) else {
            self.state = State::GaveUp;
            return Progress::Reading;
        };
        while self.state != State::GaveUp && self.state != State::Done {
            let before = self.pos;
            match self.step(ctx, text, base) {
                Step::Done => {}
                Step::GiveUp => self.state = State::GaveUp,
                Step::NeedMore => {
                    self.retry_at = self.utf8 + (self.utf8 - before).max(1);
                    break;
                }
            }
            if !self.reported {
                if let Some(v) = &self.evidence {
                    // Reported at once: the caller stops the body here.
                    self.reported = true;
                    return Progress::Blocked(v.clone());
                }
            }
        }
        Progress::Reading
    }

    /// The verdict on the whole `body`, as `stream::check_event_body` gives
    /// it; `None` when this reader gave up (the caller reads it whole).
    pub fn finish(mut self, ctx: &Ctx, body: &[u8]) -> Option<Checked> {
        self.retry_at = 0;
        self.reported = true;
        let _ = self.feed(ctx, body);
        if self.state != State::Done
            || self.utf8 != body.len()
            || body[self.pos..].iter().any(|b| !is_ws(*b))
        {
            return None;
        }
        let mut event = Event::default();
        let mut seen = Seen::default();
        for m in self.members {
            let read = match m {
                Member::Value { key, value } => {
                    let mut de = JsonDe::from_slice(&body[value]);
                    event.read_streamed(&key, &mut OneValue(&mut de), ctx, &mut seen)
                }
                Member::List { key, first } => {
                    event.put_streamed::<serde_json::Error>(&key, first, &mut seen)
                }
            };
            // A wrong type or a duplicate: the streaming reader words it.
            read.ok()?;
        }
        let doc = StreamedDoc {
            event: self.event_seen.then_some(event),
            wrapped: self.wrapped_seen.0 || self.wrapped_seen.1,
            other_key: self.other_key,
        };
        Some(decide(ctx, doc, self.kind))
    }

    /// The bytes from the read position on, as text: JSON is UTF-8, and
    /// serde_json reads a `&str` without checking each string again (as
    /// the whole-body reader does). A sequence cut by the end of the bytes
    /// in hand waits for the rest; `None`: invalid UTF-8. Only the bytes
    /// not yet read by a complete step are checked again (one pending
    /// element, or a long value tried again O(log n) times).
    fn validated<'b>(&mut self, body: &'b [u8]) -> Option<&'b str> {
        let rest = &body[self.pos..];
        let text = match std::str::from_utf8(rest) {
            Ok(text) => text,
            Err(e) if e.error_len().is_none() => {
                std::str::from_utf8(&rest[..e.valid_up_to()]).ok()?
            }
            Err(_) => return None,
        };
        self.utf8 = self.pos + text.len();
        Some(text)
    }

    /// One step of the grammar from `pos` on `text`, the validated bytes
    /// from body offset `base`.
    fn step(&mut self, ctx: &Ctx, text: &str, base: usize) -> Step {
        self.tries += 1;
        let mut c = Cursor {
            text,
            base,
            at: self.pos,
        };
        let step = match self.state {
            State::Start => match c.token() {
                Some(b'{') => {
                    c.at += 1;
                    self.state = State::DocMember { first: true };
                    Step::Done
                }
                Some(_) => Step::GiveUp,
                None => Step::NeedMore,
            },
            State::DocMember { first } => self.doc_member(&mut c, first),
            State::EventMember { first } => self.event_member(&mut c, first),
            State::Element { first } => self.element(ctx, &mut c, first),
            State::AfterList => self.after(&mut c, b'}', State::AfterEvent, {
                State::EventMember { first: false }
            }),
            State::AfterEvent => self.after(&mut c, b'}', State::Done, {
                State::DocMember { first: false }
            }),
            State::Done | State::GaveUp => Step::Done,
        };
        if let Step::Done = step {
            self.pos = c.at;
        }
        step
    }

    /// `,` then `next`, or `close` then `closed`.
    fn after(&mut self, c: &mut Cursor, close: u8, closed: State, next: State) -> Step {
        match c.token() {
            Some(b',') => self.state = next,
            Some(b) if b == close => self.state = closed,
            Some(_) => return Step::GiveUp,
            None => return Step::NeedMore,
        }
        c.at += 1;
        Step::Done
    }

    fn doc_member(&mut self, c: &mut Cursor, first: bool) -> Step {
        if first && c.token() == Some(b'}') {
            c.at += 1;
            self.state = State::Done;
            return Step::Done;
        }
        let key = match c.key() {
            Ok(k) => k,
            Err(s) => return s,
        };
        if key == "Event" {
            // The event object is read member by member; anything else
            // (`null`, a wrong type, a second `Event`) is left to the
            // streaming reader.
            return match c.token() {
                Some(b'{') if !self.event_seen => {
                    c.at += 1;
                    self.event_seen = true;
                    self.state = State::EventMember { first: true };
                    Step::Done
                }
                Some(_) => Step::GiveUp,
                None => Step::NeedMore,
            };
        }
        if let Err(s) = c.value() {
            return s;
        }
        // Recorded only once the member is complete: a step that needs
        // more bytes is tried again from its key.
        let step = self.after(c, b'}', State::Done, State::DocMember { first: false });
        if !matches!(step, Step::Done) {
            return step;
        }
        let errors_allowed = self.kind != EventBody::Pushed;
        let once = match &*key {
            "response" => std::mem::replace(&mut self.wrapped_seen.0, true),
            "request" => std::mem::replace(&mut self.wrapped_seen.1, true),
            "errors" if errors_allowed => std::mem::replace(&mut self.errors_seen, true),
            other => {
                if self.other_key.is_none() {
                    self.other_key = Some(other.chars().take(64).collect());
                }
                false
            }
        };
        if once {
            return Step::GiveUp;
        }
        step
    }

    fn event_member(&mut self, c: &mut Cursor, first: bool) -> Step {
        if first && c.token() == Some(b'}') {
            c.at += 1;
            self.state = State::AfterEvent;
            return Step::Done;
        }
        let key = match c.key() {
            Ok(k) => k,
            Err(s) => return s,
        };
        if Event::streams_list(&key) && c.token() == Some(b'[') {
            c.at += 1;
            self.list = Some((key, None));
            self.state = State::Element { first: true };
            return Step::Done;
        }
        let start = c.at;
        if let Err(s) = c.value() {
            return s;
        }
        let value = start..c.at;
        let step = self.after(
            c,
            b'}',
            State::AfterEvent,
            State::EventMember { first: false },
        );
        if let Step::Done = step {
            self.members.push(Member::Value { key, value });
        }
        step
    }

    fn element(&mut self, ctx: &Ctx, c: &mut Cursor, first: bool) -> Step {
        if first && c.token() == Some(b']') {
            c.at += 1;
            return self.close_list();
        }
        let Some((key, found)) = &self.list else {
            return Step::GiveUp;
        };
        if c.token().is_none() {
            return Step::NeedMore;
        }
        let Some(rest) = c.rest() else {
            return Step::GiveUp;
        };
        let (checked, took) = match Event::list_element(key, rest, ctx) {
            Some(Ok(read)) => read,
            Some(Err(e)) => return failed(&e),
            None => return Step::GiveUp,
        };
        c.at += took;
        // The streaming reader keeps each list's first violation. An
        // element is complete only once its delimiter is in.
        let found_now = found.is_none().then_some(checked).flatten();
        let close = match c.token() {
            Some(b',') => false,
            Some(b']') => true,
            Some(_) => return Step::GiveUp,
            None => return Step::NeedMore,
        };
        c.at += 1;
        if let (Some(v), Some((_, slot))) = (found_now, self.list.as_mut()) {
            if self.evidence.is_none() {
                self.evidence = Some(v.clone());
            }
            *slot = Some(v);
        }
        if close {
            return self.close_list();
        }
        self.state = State::Element { first: false };
        Step::Done
    }

    fn close_list(&mut self) -> Step {
        let Some((key, first)) = self.list.take() else {
            return Step::GiveUp;
        };
        self.members.push(Member::List { key, first });
        self.state = State::AfterList;
        Step::Done
    }
}

/// The grammar's view of the validated text in hand: `text` starts at
/// body offset `base`; `at` is a body offset.
struct Cursor<'b> {
    text: &'b str,
    base: usize,
    at: usize,
}

impl<'b> Cursor<'b> {
    fn byte(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at - self.base).copied()
    }

    /// The text from `at` on. `at` only ever follows an ASCII delimiter
    /// or a whole value, so it is a character boundary; `None` otherwise.
    fn rest(&self) -> Option<&'b str> {
        self.text.get(self.at - self.base..)
    }

    fn skip_ws(&mut self) {
        while self.byte().is_some_and(is_ws) {
            self.at += 1;
        }
    }

    /// The next byte after whitespace (not consumed).
    fn token(&mut self) -> Option<u8> {
        self.skip_ws();
        self.byte()
    }

    /// A member's key and its `:`.
    fn key(&mut self) -> Result<String, Step> {
        match self.token() {
            Some(b'"') => {}
            Some(_) => return Err(Step::GiveUp),
            None => return Err(Step::NeedMore),
        }
        let (key, took) = one::<String>(self.rest().ok_or(Step::GiveUp)?)?;
        self.at += took;
        match self.token() {
            Some(b':') => {
                self.at += 1;
                self.skip_ws();
                Ok(key)
            }
            Some(_) => Err(Step::GiveUp),
            None => Err(Step::NeedMore),
        }
    }

    /// Delimits one value (syntax only).
    fn value(&mut self) -> Result<(), Step> {
        let (_, took) = one::<IgnoredAny>(self.rest().ok_or(Step::GiveUp)?)?;
        self.at += took;
        Ok(())
    }
}

/// The value at the start of `bytes` and the bytes it took (whitespace
/// before it included).
fn one<'de, T: Deserialize<'de>>(text: &'de str) -> Result<(T, usize), Step> {
    let mut values = serde_json::Deserializer::from_str(text).into_iter::<T>();
    match values.next() {
        Some(Ok(v)) => Ok((v, values.byte_offset())),
        Some(Err(e)) => Err(failed(&e)),
        // Whitespace only: the value has not begun to arrive.
        None => Err(Step::NeedMore),
    }
}

/// A parse error: the bytes in hand end inside the value, or it is not
/// ours to read.
fn failed(e: &serde_json::Error) -> Step {
    if e.classify() == Category::Eof {
        Step::NeedMore
    } else {
        Step::GiveUp
    }
}

/// JSON whitespace, as serde_json skips it.
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\t' | b'\r')
}

/// A map with one value, for replaying a member through the streaming
/// reader's field dispatch (`Event::read_streamed`).
struct OneValue<'a, 'de>(&'a mut JsonDe<'de>);

impl<'de> MapAccess<'de> for OneValue<'_, 'de> {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        _: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        seed.deserialize(&mut *self.0)
    }
}

/// Test support: the streaming reader's verdict, after checking that this
/// reader agrees with it however the body is cut into arrivals.
#[cfg(test)]
pub mod agree {
    use super::*;
    use crate::engine::stream::check_event_body;

    /// Feeds `body` cut at every `step` bytes; returns the early block (if
    /// any) and the final verdict (`None`: gave up).
    pub fn feed_in_steps(
        ctx: &Ctx,
        body: &[u8],
        step: usize,
        kind: EventBody,
    ) -> (Option<Violation>, Option<Checked>) {
        let mut r = EventReader::new(kind);
        let mut early = None;
        let mut end = 0;
        while end < body.len() {
            end = (end + step).min(body.len());
            if let Progress::Blocked(v) = r.feed(ctx, &body[..end]) {
                assert!(early.is_none(), "a block is reported once");
                early = Some(v);
            }
        }
        (early, r.finish(ctx, body))
    }

    fn same(a: &Checked, b: &Checked) -> bool {
        match (a, b) {
            (Ok(()), Ok(())) => true,
            (Err(Violation::Rule(x)), Err(Violation::Rule(y))) => x == y,
            (Err(Violation::Malformed(x)), Err(Violation::Malformed(y))) => {
                x.to_string() == y.to_string()
            }
            _ => false,
        }
    }

    /// `check_event_body`, asserting on the way that this reader, fed the
    /// body whole, byte by byte (small bodies) and in uneven pieces, gives
    /// the same verdict and reason (or gives up), and that an early block
    /// is only ever reported for a body the whole read blocks.
    pub fn checked(ctx: &Ctx, body: &str, kind: EventBody) -> Checked {
        let full = check_event_body(ctx, body, kind);
        let mut steps = vec![body.len().max(1), 7, 4096];
        if body.len() <= 4096 {
            steps.push(1);
        }
        for step in steps {
            let (early, finished) = feed_in_steps(ctx, body.as_bytes(), step, kind);
            if early.is_some() {
                assert!(
                    full.is_err(),
                    "early block {early:?} of an allowed body: {body}"
                );
            }
            if let Some(got) = finished {
                assert!(
                    same(&got, &full),
                    "incremental (step {step}) {got:?} vs streaming {full:?}: {body}"
                );
            }
        }
        full
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::agree::{checked, feed_in_steps};
    use super::*;
    use crate::config;

    const POLICY: &str = r#"{
      "allowlist": {"urls": [], "domains": []},
      "compartments_rules": {"can_reach": {"c1": ["c1"]}},
      "instances": {
        "a": {"ip": "10.1.0.1", "host": "a.example", "port": 443, "compartment_id": "c1", "affiliation": "",
              "taxonomies_rules": {"required_taxonomies": [], "allowed_tags": {},
                                   "blocked_tags": ["tlp:red"]},
              "blocked_distribution_levels": ["0"], "blocked_sharing_groups_uuids": [],
              "blocked_attribute_types": ["passport-number"], "blocked_attribute_categories": [],
              "blocked_object_types": ["person"]}
      }
    }"#;

    fn with_ctx(f: impl FnOnce(&Ctx)) {
        let p = config::from_slice(POLICY.as_bytes(), Path::new("incremental.json")).unwrap();
        let rules = &p.instance(p.instance_by_host("a.example").unwrap()).rules;
        f(&Ctx {
            rules,
            user_org: None,
        });
    }

    fn attribute(kind: &str, n: usize) -> serde_json::Value {
        json!({"uuid": format!("5f1c9d2e-0000-4000-8000-{n:012}"), "category": "Network activity",
               "type": kind, "value": format!("198.51.100.{}", n % 250), "distribution": "5",
               "comment": "x".repeat(40)})
    }

    /// A push as MISP sends it, pretty-printed so whitespace is everywhere.
    fn push(first_kind: &str, attributes: usize) -> String {
        let attrs: Vec<_> = (0..attributes)
            .map(|n| attribute(if n == 0 { first_kind } else { "ip-dst" }, n))
            .collect();
        serde_json::to_string_pretty(&json!({"Event": {
            "uuid": "5f1c9d2e-1111-4000-8000-000000000001", "info": "push", "distribution": 1,
            "Attribute": attrs,
            "Object": [{"name": "domain-ip", "distribution": "5",
                        "Attribute": [attribute("domain", 7)]}],
            "Tag": [{"name": "tlp:green"}]
        }}))
        .unwrap()
    }

    #[test]
    fn a_misp_push_is_read_to_the_end_in_any_pieces() {
        with_ctx(|ctx| {
            let body = push("ip-dst", 40);
            let v = checked(ctx, &body, EventBody::Pushed);
            assert!(v.is_ok(), "{v:?}");
            for step in [1, 3, 64, 1000, body.len()] {
                let (early, end) = feed_in_steps(ctx, body.as_bytes(), step, EventBody::Pushed);
                assert!(early.is_none());
                assert!(matches!(end, Some(Ok(()))), "step {step}: {end:?}");
            }
        });
    }

    #[test]
    fn a_blocked_first_attribute_is_reported_before_the_rest_arrives() {
        with_ctx(|ctx| {
            let body = push("passport-number", 2000);
            let mut r = EventReader::new(EventBody::Pushed);
            let first = body
                .find("\"uuid\": \"5f1c9d2e-0000-4000-8000-000000000001")
                .unwrap();
            // Only the first attribute and the start of the second are in.
            match r.feed(ctx, &body.as_bytes()[..first]) {
                Progress::Blocked(Violation::Rule(reason)) => {
                    assert!(reason.contains("passport-number"), "{reason}")
                }
                other => panic!("{other:?}"),
            }
            // Reported once; the read goes on for a caller that must
            // forward anyway (monitor mode) and agrees at the end.
            assert!(matches!(r.feed(ctx, body.as_bytes()), Progress::Reading));
            let full = checked(ctx, &body, EventBody::Pushed);
            let end = r.finish(ctx, body.as_bytes()).unwrap();
            assert_eq!(format!("{end:?}"), format!("{full:?}"));
        });
    }

    #[test]
    fn an_event_level_block_is_decided_at_the_end_with_the_streaming_reason() {
        with_ctx(|ctx| {
            // The blocked tag comes after the lists, as MISP orders them.
            let body = push("ip-dst", 5).replace("tlp:green", "tlp:red");
            let (early, end) = feed_in_steps(ctx, body.as_bytes(), 16, EventBody::Pushed);
            assert!(early.is_none());
            let reason = format!("{:?}", end.unwrap());
            assert!(
                reason.contains("event has blocked tag: tlp:red"),
                "{reason}"
            );
            checked(ctx, &body, EventBody::Pushed).unwrap_err();
        });
    }

    #[test]
    fn escaped_keys_are_the_keys_serde_reads() {
        with_ctx(|ctx| {
            let body =
                push("passport-number", 3).replacen("\"Attribute\"", "\"Attr\\u0069bute\"", 1);
            let (early, _) = feed_in_steps(ctx, body.as_bytes(), 50, EventBody::Pushed);
            assert!(early.is_some(), "the escaped key names the attribute list");
            checked(ctx, &body, EventBody::Pushed).unwrap_err();
        });
    }

    #[test]
    fn what_the_grammar_does_not_take_is_left_to_the_streaming_reader() {
        with_ctx(|ctx| {
            let good = push("ip-dst", 2);
            let cases = [
                format!("{good} x"),
                format!("{good}{{}}"),
                "{\"Event\": null}".to_string(),
                good.replacen("{", "{\"Event\": {}, ", 1),
                good.replacen("\"Object\"", "\"Attribute\": [], \"Object\"", 1),
                good.replacen("000000000001\"", "000000000001\",", 1),
                good.replacen("\"distribution\": 1", "\"distribution\": 1,", 1),
                good.replacen("[", "[,", 1),
                "[]".to_string(),
            ];
            for body in cases {
                let (early, end) = feed_in_steps(ctx, body.as_bytes(), 5, EventBody::Pushed);
                assert!(early.is_none(), "{body}");
                assert!(
                    end.is_none(),
                    "gave up: {end:?} {}",
                    &body[body.len().saturating_sub(80)..]
                );
                checked(ctx, &body, EventBody::Pushed).unwrap_err();
            }
            let mut bytes = good.clone().into_bytes();
            let at = good.find("push").unwrap();
            bytes[at] = 0xff;
            let (_, end) = feed_in_steps(ctx, &bytes, 5, EventBody::Pushed);
            assert!(end.is_none(), "invalid UTF-8");
        });
    }

    #[test]
    fn document_members_cut_anywhere_are_read_once() {
        with_ctx(|ctx| {
            let event = push("ip-dst", 3);
            let body = format!(
                "{{\"errors\": [\"x\"], \"response\": 12345, {}",
                &event[1..]
            );
            for step in [1, 2, 3, 5] {
                let (_, end) = feed_in_steps(ctx, body.as_bytes(), step, EventBody::Pulled);
                let reason = format!("{:?}", end.expect("read to the end"));
                assert!(reason.contains("`response` or `request`"), "{reason}");
            }
            checked(ctx, &body, EventBody::Pulled).unwrap_err();
        });
    }

    #[test]
    fn a_value_still_arriving_is_parsed_a_logarithmic_number_of_times() {
        with_ctx(|ctx| {
            let big = "y".repeat(1 << 20);
            let body = serde_json::to_string(&json!({"Event": {"info": big, "distribution": 1,
                "Attribute": [attribute("ip-dst", 1)], "Object": [], "Tag": [{"name": "tlp:green"}]}}))
            .unwrap();
            let mut r = EventReader::new(EventBody::Pushed);
            let mut end = 0;
            while end < body.len() {
                end = (end + 1024).min(body.len());
                let _ = r.feed(ctx, &body.as_bytes()[..end]);
            }
            // ~1,000 arrivals of 1 KiB; the 1 MiB member is tried about
            // log2(1024) times, not once per arrival.
            assert!(r.tries < 60, "{} tries", r.tries);
            let end = r.finish(ctx, body.as_bytes());
            assert!(matches!(end, Some(Ok(()))), "{end:?}");
        });
    }
}
