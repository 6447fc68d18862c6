//! What a pull may ask for: the named parameters of `GET /events/view/…`
//! and the search filters of `POST /events/index`,
//! `/galaxy_clusters/restSearch` and `/sightings/restSearch/event`
//! (docs/MISP-IMPORT.md `R-VIEW-PARAMS`, `R-INDEX-PARAMS`,
//! `R-CLUSTER-SEARCH-PARAMS`, `R-MINPUB`, `R-SIGHT-REQ`).
//!
//! MISP reads these requests more loosely than the exact keys its own
//! puller sends: a `request` member replaces the whole body, keys are
//! case-folded and `search…`-prefixed onto the filters, and many view
//! parameters serve data the puller never asks for (correlations,
//! extension events, another user's view). Rather than mirror that
//! harvesting, the gateway accepts only what MISP 2.5's puller sends and
//! refuses every other spelling (section 4 of the spec).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::model::SearchFilters;
use super::reading::{Checked, Violation};
use super::Sanitized;

/// The named parameters MISP 2.5 puts after `/events/view/<id>`:
/// `Server::__pullEvent` (`deleted[]` 0 and 1, `excludeGalaxy`, the three
/// correlation/warninglist switches off, `excludeLocalTags` for
/// non-internal servers) and `Sighting::pullSightingOldWay` (the same plus
/// `includeAttachments:0`, `noEventReports:1`, `noShadowAttributes:1`).
/// `ServerSyncTool::createParams` writes a list as `key[]:v` and a scalar
/// as `key:v`. Every one of them narrows what is served.
const VIEW_PARAMS: [&str; 13] = [
    "deleted[]:0",
    "deleted[]:1",
    "deleted:0",
    "deleted:1",
    "excludeGalaxy:1",
    "includeEventCorrelations:0",
    "includeFeedCorrelations:0",
    "includeWarninglistHits:0",
    "excludeLocalTags:0",
    "excludeLocalTags:1",
    "includeAttachments:0",
    "noEventReports:1",
    "noShadowAttributes:1",
];

/// `R-VIEW-PARAMS`: `path` (with its query) is `/events/view/<id>` then
/// only named parameters of [`VIEW_PARAMS`], each at most once; no query,
/// no extension. `<id>` is an event uuid (`Server::pull` by index or by
/// uuid) or a numeric id (`Server::pull` with a numeric technique, "pull
/// this event").
pub fn view_path(path: &str) -> Result<(), String> {
    let refused = |what: &str| {
        format!(
            "events/view parameter not used by MISP's pull: {}",
            Sanitized(&shorten(what))
        )
    };
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    if let Some(q) = query {
        return Err(refused(&format!("?{q}")));
    }
    let Some(rest) = path.strip_prefix("/events/view/") else {
        return Err("events/view must name an event by uuid or numeric id".into());
    };
    let mut segments = rest.split('/');
    let id = segments.next().unwrap_or_default();
    if !is_event_id(id) {
        return Err(format!(
            "events/view must name an event by uuid or numeric id, got {}",
            Sanitized(&shorten(id))
        ));
    }
    let mut seen = [false; VIEW_PARAMS.len()];
    for segment in segments {
        match VIEW_PARAMS.iter().position(|p| *p == segment) {
            Some(i) if !seen[i] => seen[i] = true,
            Some(_) => return Err(refused(&format!("{segment} (twice)"))),
            None => return Err(refused(segment)),
        }
    }
    Ok(())
}

/// A uuid as MISP's `Validation::uuid` accepts it (hexadecimal 8-4-4-4-12,
/// either case), or a numeric id as `is_numeric` would take it from MISP's
/// own puller (digits only, at most 20).
fn is_event_id(id: &str) -> bool {
    let numeric = (1..=20).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit());
    numeric || is_uuid(id)
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A name shown in a block reason: at most 64 characters.
fn shorten(s: &str) -> Cow<'_, str> {
    match s.char_indices().nth(64) {
        Some((i, _)) => Cow::Owned(format!("{}...", &s[..i])),
        None => Cow::Borrowed(s),
    }
}

/// The two filters `R-MINPUB` holds to 1, the only ones other keys may
/// not be folded onto.
const HELD: [&str; 2] = ["minimal", "published"];

/// The request-wrapper refusal shared by every search body.
const REQUEST_MEMBER: &str =
    "search filters carry a `request` member; refusing the ambiguous payload";

/// `POST /events/index` (`R-INDEX-PARAMS`, then `R-MINPUB`).
/// `EventsController::index` replaces the body by a `request` member, then
/// renames every key whose lower-cased form, or whose rest after a
/// case-sensitive `search` prefix lower-cased, is one of its filters onto
/// that filter, the last key in body order winning. So `"MINIMAL": 0` or
/// `"searchminimal": 0` beside `"minimal": 1` gets the full index. Only the
/// exact `minimal` and `published` may set those two; other filters (the
/// puller's pull rules, operators' `url_params`) are not touched.
pub fn events_index(body: &str) -> Checked {
    let filters: Filters = serde_json::from_str(body)?;
    for (key, _) in &filters.0 {
        if key == "request" {
            return Err(Violation::Rule(REQUEST_MEMBER.into()));
        }
        if let Some(held) = folds_onto_held(key) {
            if key != held {
                return Err(Violation::Rule(format!(
                    "events/index filter `{}` would override {held}; refusing the ambiguous payload",
                    Sanitized(&shorten(key))
                )));
            }
        }
    }
    minimal_published(body, &filters, "/events/index")
}

/// The filter of [`HELD`] that `EventsController::index` renames `key`
/// onto, if any. PHP's `strtolower` folds ASCII letters only.
fn folds_onto_held(key: &str) -> Option<&'static str> {
    let rest = key.strip_prefix("search");
    HELD.into_iter().find(|held| {
        key.eq_ignore_ascii_case(held) || rest.is_some_and(|r| r.eq_ignore_ascii_case(held))
    })
}

/// `POST /galaxy_clusters/restSearch` (`R-CLUSTER-SEARCH-PARAMS`, then
/// `R-MINPUB`). `AppController::_harvestParameters` unwraps a `request`
/// member but then takes exact-case keys only, so nothing else folds.
pub fn cluster_search(body: &str) -> Checked {
    let filters: Filters = serde_json::from_str(body)?;
    if filters.0.iter().any(|(k, _)| k == "request") {
        return Err(Violation::Rule(REQUEST_MEMBER.into()));
    }
    minimal_published(body, &filters, "/galaxy_clusters/restSearch")
}

/// `R-MINPUB`: the exact keys `minimal` and `published`, each once, equal
/// to 1 as misp-guard compares them.
fn minimal_published(body: &str, filters: &Filters, label: &str) -> Checked {
    let mut found = [None; HELD.len()];
    for (key, value) in &filters.0 {
        if let Some(i) = HELD.iter().position(|h| key == h) {
            if found[i].replace(*value).is_some() {
                // PHP keeps the last copy (`R-DUP-KEY`). The derived
                // reader reports the duplicate with its position.
                serde_json::from_str::<SearchFilters>(body)?;
                return Err(Violation::Rule(format!(
                    "duplicate key `{key}` in JSON body"
                )));
            }
        }
    }
    if found.iter().all(|v| SearchFilters::is_one(*v)) {
        Ok(())
    } else {
        Err(Violation::Rule(format!(
            "{{'minimal': 1, 'published': 1}} is required for {label} requests"
        )))
    }
}

/// The keys `ServerSyncTool::fetchSightingsForEvents` sends.
const SIGHTING_SEARCH_KEYS: [&str; 5] = ["returnFormat", "last", "includeUuid", "uuid", "org_id"];

/// `POST /sightings/restSearch/event` (`R-SIGHT-REQ`): only the keys MISP's
/// puller sends, `returnFormat` (if present) `"json"`. `includeAttribute`
/// and `includeEvent` would add the sighted attribute and its event to
/// every row; `request` would replace the whole body; `context`, `id`,
/// `type` change what is searched. An empty body passes (MISP answers 400
/// and serves nothing; misp-guard's conformance pull sends one).
pub fn sightings_search(body: &str) -> Checked {
    let filters: Filters = serde_json::from_str(body)?;
    for (key, value) in &filters.0 {
        if !SIGHTING_SEARCH_KEYS.contains(&key.as_ref()) {
            return Err(Violation::Rule(format!(
                "sightings search key `{}` is not sent by MISP's pull",
                Sanitized(&shorten(key))
            )));
        }
        if key == "returnFormat" && value.get() != r#""json""# {
            return Err(Violation::Rule(
                "sightings search returnFormat must be \"json\"".into(),
            ));
        }
    }
    Ok(())
}

/// A JSON object's members in body order, duplicates kept, values unread.
/// Keys are unescaped (`"min\u0069mal"` is `minimal`, as PHP reads it).
struct Filters<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Filters<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Members<'a> {
            type Value = Filters<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object of search filters")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut members = Vec::new();
                while let Some(Key(k)) = map.next_key()? {
                    let v: &'de RawValue = map.next_value()?;
                    members.push((k, v));
                }
                Ok(Filters(members))
            }
        }
        d.deserialize_map(Members(std::marker::PhantomData))
    }
}

/// An object key, borrowed from the body unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct K<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for K<'a> {
            type Value = Key<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(K(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "385283a1-b5e0-4e10-a532-dce11c365a56";
    /// `Server::__pullEvent` for a non-internal server.
    const PULL: &str = "/deleted[]:0/deleted[]:1/excludeGalaxy:1/includeEventCorrelations:0/includeFeedCorrelations:0/includeWarninglistHits:0/excludeLocalTags:1";

    fn reason(c: Checked) -> Option<String> {
        match c {
            Ok(()) => None,
            Err(Violation::Rule(r)) => Some(r),
            Err(Violation::Malformed(e)) => Some(format!("malformed: {e}")),
        }
    }

    #[test]
    fn rule_r_view_params_puller_paths_pass() {
        for path in [
            format!("/events/view/{U}{PULL}"),
            format!("/events/view/{U}"),
            format!("/events/view/{}", U.to_ascii_uppercase()),
            format!("/events/view/42{PULL}"),
            format!("/events/view/{}", "9".repeat(20)),
            // Sighting::pullSightingOldWay, every parameter.
            format!("/events/view/{U}/{}", VIEW_PARAMS.join("/")),
        ] {
            assert_eq!(view_path(&path), Ok(()), "{path}");
        }
    }

    #[test]
    fn rule_r_view_params_other_parameters_are_refused() {
        let p = |s: &str| format!("events/view parameter not used by MISP's pull: {s}");
        for (path, want) in [
            (format!("/events/view/{U}/extended:1"), p("extended:1")),
            (
                format!("/events/view/{U}{PULL}/includeGranularCorrelations:1"),
                p("includeGranularCorrelations:1"),
            ),
            (format!("/events/view/{U}/deleted:2"), p("deleted:2")),
            (format!("/events/view/{U}/"), p("")),
            (format!("/events/view/{U}?x=1"), p("?x=1")),
            (format!("/events/view/{U}{PULL}?"), p("?")),
            (
                format!("/events/view/{U}/deleted[]:0/deleted[]:0"),
                p("deleted[]:0 (twice)"),
            ),
            (
                format!("/events/view/{U}/{}", "x".repeat(70)),
                p(&format!("{}...", "x".repeat(64))),
            ),
        ] {
            assert_eq!(view_path(&path), Err(want), "{path}");
        }
    }

    #[test]
    fn rule_r_view_params_event_must_be_named() {
        let got =
            |s: &str| format!("events/view must name an event by uuid or numeric id, got {s}");
        for (path, want) in [
            (format!("/events/view/{U}.json"), got(&format!("{U}.json"))),
            ("/events/view/".to_string(), got("")),
            ("/events/view/index".to_string(), got("index")),
            (
                format!("/events/view/{}", "1".repeat(21)),
                got(&"1".repeat(21)),
            ),
            ("/events/view/-1".to_string(), got("-1")),
            // Right length, wrong grouping or not hexadecimal.
            (
                "/events/view/385283a1b-5e0-4e10-a532-dce11c365a56".to_string(),
                got("385283a1b-5e0-4e10-a532-dce11c365a56"),
            ),
            (
                "/events/view/385283a1-b5e0-4e10-a532-dce11c365a5g".to_string(),
                got("385283a1-b5e0-4e10-a532-dce11c365a5g"),
            ),
            (
                "/events/view/385283a1-b5e0-4e10-a532-dce11c365a56-0".to_string(),
                got("385283a1-b5e0-4e10-a532-dce11c365a56-0"),
            ),
            (
                "/events/view/385283a1-b5e0-4e10-a532".to_string(),
                got("385283a1-b5e0-4e10-a532"),
            ),
        ] {
            assert_eq!(view_path(&path), Err(want), "{path}");
        }
        assert_eq!(
            view_path("/events/viewx/1"),
            Err("events/view must name an event by uuid or numeric id".into())
        );
    }

    #[test]
    fn rule_r_index_params() {
        assert_eq!(reason(events_index(r#"{"minimal":1,"published":1}"#)), None);
        let rules = r#"{"tag":["tlp:clear","!tlp:red"],"org":["x"],"searchall":"y",
            "searchsearchminimal":0,"minimalx":0,"Xminimal":0,"minimal":1,"published":1}"#;
        assert_eq!(reason(events_index(rules)), None);
        for (key, held) in [
            ("MINIMAL", "minimal"),
            ("Minimal", "minimal"),
            ("searchminimal", "minimal"),
            ("searchMiNiMaL", "minimal"),
            ("PUBLISHED", "published"),
            ("searchpublished", "published"),
            ("searchPublished", "published"),
        ] {
            let body = format!(r#"{{"minimal":1,"published":1,"{key}":0}}"#);
            assert_eq!(
                reason(events_index(&body)),
                Some(format!(
                    "events/index filter `{key}` would override {held}; refusing the ambiguous payload"
                )),
                "{body}"
            );
        }
        // The prefix is case-sensitive in MISP: `SearchMinimal` is not folded
        // by the prefix rule, nor is it `minimal` in any case.
        assert_eq!(
            reason(events_index(
                r#"{"minimal":1,"published":1,"SearchMinimal":0}"#
            )),
            None
        );
        // Escapes are undone before the comparison, as PHP does.
        assert!(reason(events_index(
            r#"{"minimal":1,"published":1,"MIN\u0049MAL":0}"#
        ))
        .unwrap()
        .contains("`MINIMAL` would override minimal"));
        for request in ["{}", r#""""#, "null", "0"] {
            let body = format!(r#"{{"minimal":1,"published":1,"request":{request}}}"#);
            assert_eq!(reason(events_index(&body)).as_deref(), Some(REQUEST_MEMBER));
        }
        assert!(reason(events_index("[]")).unwrap().starts_with("malformed"));
    }

    #[test]
    fn rule_r_cluster_search_params() {
        let legit = r#"{"published":1,"minimal":1,"custom":1}"#;
        assert_eq!(reason(cluster_search(legit)), None);
        // Exact-case keys only here: nothing folds.
        assert_eq!(
            reason(cluster_search(r#"{"published":1,"minimal":1,"MINIMAL":0}"#)),
            None
        );
        for request in [r#"{"custom":1}"#, r#""""#, "null"] {
            let body = format!(r#"{{"published":1,"minimal":1,"request":{request}}}"#);
            assert_eq!(
                reason(cluster_search(&body)).as_deref(),
                Some(REQUEST_MEMBER)
            );
        }
        assert_eq!(
            reason(cluster_search(r#"{"minimal":1}"#)).as_deref(),
            Some("{'minimal': 1, 'published': 1} is required for /galaxy_clusters/restSearch requests")
        );
    }

    #[test]
    fn rule_r_minpub() {
        let need = Some(
            "{'minimal': 1, 'published': 1} is required for /events/index requests".to_string(),
        );
        for ok in [
            r#"{"minimal":1,"published":1}"#,
            r#"{"minimal":true,"published":1.0}"#,
        ] {
            assert_eq!(reason(events_index(ok)), None, "{ok}");
        }
        for bad in [
            r#"{"minimal":0,"published":1}"#,
            r#"{"minimal":1,"published":0}"#,
            r#"{"minimal":1}"#,
            r#"{"published":1}"#,
            r#"{"minimal":"1","published":1}"#,
            "{}",
        ] {
            assert_eq!(reason(events_index(bad)), need, "{bad}");
        }
        for dup in [
            r#"{"minimal":1,"published":1,"minimal":0}"#,
            r#"{"published":1,"minimal":1,"published":1}"#,
        ] {
            let got = reason(events_index(dup)).unwrap();
            assert!(
                got.starts_with("malformed: duplicate field"),
                "{dup}: {got}"
            );
        }
    }

    #[test]
    fn readers_say_what_they_expected() {
        // Only seen in a debug log, but it should name the shape.
        let e = serde_json::from_str::<Filters>("[]").err().unwrap();
        assert!(
            e.to_string().contains("a JSON object of search filters"),
            "{e}"
        );
        let e = serde_json::from_str::<Key>("1").err().unwrap();
        assert!(e.to_string().contains("an object key"), "{e}");
    }

    #[test]
    fn rule_r_sight_req() {
        for ok in [
            r#"{"returnFormat":"json","last":0,"includeUuid":true,"uuid":["u"]}"#,
            r#"{"returnFormat":"json","last":0,"includeUuid":true,"uuid":["u"],"org_id":["!o"]}"#,
            r#"{"last":0,"includeUuid":true}"#,
            "{}",
        ] {
            assert_eq!(reason(sightings_search(ok)), None, "{ok}");
        }
        for key in [
            "includeAttribute",
            "includeEvent",
            "request",
            "context",
            "id",
            "type",
            "ReturnFormat",
        ] {
            let body = format!(r#"{{"returnFormat":"json","last":0,"{key}":1}}"#);
            assert_eq!(
                reason(sightings_search(&body)),
                Some(format!(
                    "sightings search key `{key}` is not sent by MISP's pull"
                )),
                "{body}"
            );
        }
        for format in [r#""xml""#, r#""JSON""#, "1", "null"] {
            let body = format!(r#"{{"returnFormat":{format}}}"#);
            assert_eq!(
                reason(sightings_search(&body)).as_deref(),
                Some("sightings search returnFormat must be \"json\""),
                "{body}"
            );
        }
        assert!(reason(sightings_search("[]"))
            .unwrap()
            .starts_with("malformed"));
    }
}
