//! Answers the response stage reads besides pulls: the event a push is
//! answered with, MISP's API errors (how a 4xx/5xx of an inspected endpoint
//! passes with its status) and the minimal event index. All are checked on
//! the decoded body (see `body::check_response`).

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::Deserialize;

use super::reading::{Checked, Ctx, Violation};
use super::stream::{self, EventBody};

/// R-PUSH-ANSWER: the answer to `events/add` / `events/edit`.
///
/// A 2xx answer is the event as the receiving server stored it
/// (`fetchEvent` → `__restResponse`): read by the streaming event reader
/// with every event rule, `Event` and `errors` as the only top-level keys;
/// the `Attribute` and `Object` lists are walked when present but not
/// required, since the `metadata` answer MISP's sync asks for leaves them
/// out (and whether MISP took `metadata` as set is PHP's truthiness, so
/// the body decides, never the path).
///
/// A 4xx/5xx answer must not carry an event: the body is empty or a JSON
/// object without an `Event` member (MISP's errors, which `response`
/// already lets through with their status, are such objects). A non-2xx
/// answer with an `Event` would otherwise hand the pusher the receiver's
/// event under an error status, unchecked by the 2xx path. Other statuses
/// (1xx, 3xx) are refused: MISP answers a push with neither.
pub fn push_answer(ctx: &Ctx, status: u16, body: &str) -> Checked {
    if (200..300).contains(&status) {
        return stream::check_event_body(ctx, body, EventBody::PushAnswer);
    }
    if !(400..600).contains(&status) {
        // 1xx/3xx: MISP answers a push with the event or an error, never
        // with these; nothing to read, nothing to forward.
        return Err(Violation::Rule(format!(
            "push answer with status {status} is neither an event nor a MISP error"
        )));
    }
    if body.trim().is_empty() {
        return Ok(());
    }
    let members: BTreeMap<Cow<str>, IgnoredAny> = serde_json::from_str(body)?;
    if members.contains_key("Event") {
        return Err(Violation::Rule(format!(
            "push answer with status {status} carries an Event"
        )));
    }
    Ok(())
}

/// The members MISP puts in an API error: the exception renderer writes
/// `name`, `message`, `url` (and `errors` for validation failures);
/// `RestResponseComponent::saveFailResponse` adds `saved` and `id`, and
/// `success` appears in its success-shaped failures. Anything else (an
/// `Event`, a `data` member) is not an error and is read as the endpoint's
/// data instead.
const ERROR_MEMBERS: [&str; 7] = ["name", "message", "url", "errors", "saved", "success", "id"];

/// A MISP API error object. It says why a call failed; MISP puts no event,
/// attribute or tag records in one.
pub fn misp_error(body: &str) -> Checked {
    let members: BTreeMap<String, IgnoredAny> = serde_json::from_str(body)?;
    match members
        .keys()
        .find(|k| !ERROR_MEMBERS.contains(&k.as_str()))
    {
        Some(k) => Err(Violation::Rule(format!(
            "error response carries member `{k}`"
        ))),
        None if members.contains_key("message") || members.contains_key("errors") => Ok(()),
        None => Err(Violation::Rule(
            "error response has neither message nor errors".into(),
        )),
    }
}

/// The fields of one `/events/index` entry with `minimal` set
/// (EventsController::index: `id, timestamp, sighting_timestamp,
/// published, uuid, protected` fetched, `orgc_uuid` added, `protected`
/// removed again). None of them is a policy carrier.
const MINIMAL_INDEX_FIELDS: [&str; 7] = [
    "id",
    "timestamp",
    "sighting_timestamp",
    "published",
    "uuid",
    "orgc_uuid",
    "protected",
];

/// A minimal event index: a list of entries with only the fields above. A
/// full index (info, tags, distribution, orgs) is refused: the request was
/// allowed only because it asked for the minimal one.
pub fn minimal_event_index(body: &str) -> Checked {
    let entries: Vec<BTreeMap<String, IgnoredAny>> = serde_json::from_str(body)?;
    for (i, entry) in entries.iter().enumerate() {
        if let Some(k) = entry
            .keys()
            .find(|k| !MINIMAL_INDEX_FIELDS.contains(&k.as_str()))
        {
            return Err(Violation::Rule(format!(
                "events index response is not minimal: entry {i} has field `{}`",
                super::Sanitized(k)
            )));
        }
    }
    Ok(())
}

/// One entry of a minimal cluster search: `{"GalaxyCluster": {"uuid",
/// "version"}}` (GalaxyCluster::restSearch fetches only those two fields
/// when `minimal` is set).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case)]
struct MinimalCluster {
    GalaxyCluster: BTreeMap<String, IgnoredAny>,
}

/// The answer to `/galaxy_clusters/restSearch`: MISP wraps the list in
/// `response` (Server::getElligibleClusterIdsFromServerForPull unwraps it
/// when present, so a bare list is read the same way).
#[derive(Deserialize)]
#[serde(untagged)]
enum ClusterSearch {
    Wrapped(WrappedClusters),
    Bare(Vec<MinimalCluster>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WrappedClusters {
    response: Vec<MinimalCluster>,
}

/// A minimal cluster search: clusters named by uuid and version only. A
/// full cluster (tags, distribution, elements, sharing group) is refused:
/// the request was allowed only because it asked for the minimal form.
pub fn minimal_cluster_index(body: &str) -> Checked {
    let list = match serde_json::from_str::<ClusterSearch>(body) {
        Ok(ClusterSearch::Wrapped(WrappedClusters { response }))
        | Ok(ClusterSearch::Bare(response)) => response,
        Err(_) => {
            return Err(Violation::Rule(
                "galaxy cluster search response is not a list of minimal clusters".into(),
            ))
        }
    };
    for (i, c) in list.iter().enumerate() {
        if let Some(k) = c
            .GalaxyCluster
            .keys()
            .find(|k| !matches!(k.as_str(), "uuid" | "version"))
        {
            return Err(Violation::Rule(format!(
                "galaxy cluster search response is not minimal: entry {i} has field `{}`",
                super::Sanitized(k)
            )));
        }
    }
    Ok(())
}

/// The answer to `/sightings/restSearch/event` as MISP's puller reads it
/// (`ServerSyncTool::fetchSightingsForEvents` takes `response`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SightingsAnswer {
    #[serde(default)]
    response: Option<Vec<SightingRow>>,
}

/// One row: `{"Sighting": {...}}` and nothing beside it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case)]
struct SightingRow {
    Sighting: SightingFields,
}

/// The members of a sighting the policy cares about: `includeAttribute`
/// adds the sighted `Attribute` (type, category, value, tags' carriers),
/// `includeEvent` its `Event` (info, orgs). MISP's puller asks for neither.
#[derive(Deserialize)]
#[allow(non_snake_case)]
struct SightingFields {
    #[serde(default)]
    Attribute: Option<IgnoredAny>,
    #[serde(default)]
    Event: Option<IgnoredAny>,
}

/// `R-SIGHT-RESP`: `{"response": [{"Sighting": {...}}, ...]}` with no
/// `Attribute` or `Event` in any row; `{}` and `[]` (nothing found) pass.
/// Each row still carries the sighted value: that is MISP's own sync shape
/// (`K-SIGHTINGS`).
pub fn sightings(body: &str) -> Checked {
    if body.trim_start().starts_with('[') {
        let rows: Vec<IgnoredAny> = serde_json::from_str(body)?;
        return if rows.is_empty() {
            Ok(())
        } else {
            Err(Violation::Rule(
                "sightings answer is a bare list; MISP answers {\"response\": [...]}".into(),
            ))
        };
    }
    let answer: SightingsAnswer = serde_json::from_str(body)?;
    for row in answer.response.iter().flatten() {
        let carried = if row.Sighting.Attribute.is_some() {
            "Attribute"
        } else if row.Sighting.Event.is_some() {
            "Event"
        } else {
            continue;
        };
        return Err(Violation::Rule(format!(
            "sightings answer carries {carried} data"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(c: Checked) -> Option<String> {
        match c {
            Ok(()) => None,
            Err(Violation::Rule(r)) => Some(r),
            Err(Violation::Malformed(e)) => Some(format!("malformed: {e}")),
        }
    }

    #[test]
    fn misp_errors_as_misp_renders_them() {
        // Exception renderer (404 on an unknown event, seen on MISP 2.5).
        let not_found =
            r#"{"name":"Invalid event","message":"Invalid event","url":"\/events\/edit\/1"}"#;
        assert_eq!(reason(misp_error(not_found)), None);
        // saveFailResponse (403 on a failed add, seen on MISP 2.5).
        let failed = r#"{"saved":false,"name":"Could not add Event","message":"Could not add Event",
            "url":"/events/add","errors":{"Event":{"info":["Info cannot be empty."]}}}"#;
        assert_eq!(reason(misp_error(failed)), None);
        assert_eq!(reason(misp_error(r#"{"errors":"x","id":"12"}"#)), None);
    }

    #[test]
    fn anything_else_is_not_an_error() {
        let event = r#"{"Event":{"Tag":[{"name":"tlp:red"}]},"message":"x"}"#;
        assert_eq!(
            reason(misp_error(event)).as_deref(),
            Some("error response carries member `Event`")
        );
        assert!(reason(misp_error(r#"{"name":"x"}"#)).is_some());
        assert!(reason(misp_error("[]")).unwrap().starts_with("malformed"));
        assert!(reason(misp_error("<html>"))
            .unwrap()
            .starts_with("malformed"));
    }

    #[test]
    fn minimal_index_entries_pass() {
        let index = r#"[{"id":"1","timestamp":"1796063319","sighting_timestamp":"0",
            "published":true,"uuid":"87433a8a-53e2-45c7-91fa-8a2135ba3515",
            "orgc_uuid":"9af0faab-e2b9-4f09-af6a-eb6ece9d4cfa"}]"#;
        assert_eq!(reason(minimal_event_index(index)), None);
        assert_eq!(reason(minimal_event_index("[]")), None);
    }

    #[test]
    fn minimal_cluster_search_as_misp_answers_it() {
        let wrapped = r#"{"response": [{"GalaxyCluster":{"uuid":"24b4f8ed-65e0-4183-808f-ae3e718a011a","version":"1"}}]}"#;
        assert_eq!(reason(minimal_cluster_index(wrapped)), None);
        assert_eq!(reason(minimal_cluster_index(r#"{"response": []}"#)), None);
        assert_eq!(
            reason(minimal_cluster_index(
                r#"[{"GalaxyCluster":{"uuid":"u","version":"3"}}]"#
            )),
            None
        );
    }

    #[test]
    fn full_cluster_search_is_refused() {
        let full = r#"{"response": [{"GalaxyCluster":{"uuid":"u","version":"1"}},
            {"GalaxyCluster":{"uuid":"v","version":"1","tag_name":"misp-galaxy:x=\"y\"","distribution":"0"}}]}"#;
        assert_eq!(
            reason(minimal_cluster_index(full)).as_deref(),
            Some("galaxy cluster search response is not minimal: entry 1 has field `distribution`")
        );
        // Anything beside the cluster in an entry, or beside `response`.
        for other in [
            r#"[{"GalaxyCluster":{"uuid":"u"},"Galaxy":{}}]"#,
            r#"{"response": [], "Tag": []}"#,
            r#"{"GalaxyCluster":{"uuid":"u"}}"#,
        ] {
            assert_eq!(
                reason(minimal_cluster_index(other)).as_deref(),
                Some("galaxy cluster search response is not a list of minimal clusters"),
                "{other}"
            );
        }
    }

    #[test]
    fn rule_r_sight_resp() {
        // Real MISP 2.5 rows (the puller's search, then with includeAttribute
        // and includeEvent).
        let row = r#""id":"3","attribute_id":"16","event_id":"26","org_id":"0",
            "date_sighting":"1796063525","uuid":"1741df2e-0141-4a6d-9730-20b79d63836f",
            "source":"auditpull","type":"0","value":"198.51.100.7",
            "attribute_uuid":"74fb8dc4-2994-4c54-b64a-20bfbc5ff513",
            "event_uuid":"8805b4ad-9c85-4395-a7df-5b38a58a1b0a""#;
        let attribute = r#""Attribute":{"id":"16","type":"ip-dst","category":"Network activity","value":"198.51.100.7"}"#;
        let event = r#""Event":{"id":"26","info":"t","Orgc":{"name":"ORGNAME"}}"#;
        for ok in [
            format!(r#"{{"response":[{{"Sighting":{{{row}}}}}]}}"#),
            format!(r#"{{"response":[{{"Sighting":{{{row},"Attribute":null}}}}]}}"#),
            r#"{"response":[]}"#.to_string(),
            "{}".to_string(),
            "[]".to_string(),
            " []".to_string(),
        ] {
            assert_eq!(reason(sightings(&ok)), None, "{ok}");
        }
        let carried = |what: &str| Some(format!("sightings answer carries {what} data"));
        for (bad, want) in [
            (
                format!(r#"{{"response":[{{"Sighting":{{{row},{attribute},{event}}}}}]}}"#),
                carried("Attribute"),
            ),
            (
                format!(
                    r#"{{"response":[{{"Sighting":{{{row}}}}},{{"Sighting":{{{row},{event}}}}}]}}"#
                ),
                carried("Event"),
            ),
            (
                format!(r#"[{{"Sighting":{{{row}}}}}]"#),
                Some(r#"sightings answer is a bare list; MISP answers {"response": [...]}"#.into()),
            ),
        ] {
            assert_eq!(reason(sightings(&bad)), want, "{bad}");
        }
        for shape in [
            format!(r#"{{"response":[{{"Sighting":{{{row}}},{attribute}}}]}}"#),
            format!(r#"{{"response":[],{attribute}}}"#),
            r#"{"response":[{}]}"#.to_string(),
            r#"{"response":{}}"#.to_string(),
            r#"{"response":[],"response":[]}"#.to_string(),
            "[".to_string(),
        ] {
            assert!(
                reason(sightings(&shape)).unwrap().starts_with("malformed"),
                "{shape}"
            );
        }
    }

    #[test]
    fn full_index_is_refused() {
        let full = r#"[{"id":"1","uuid":"u"},{"id":"2","info":"secret","EventTag":[]}]"#;
        assert_eq!(
            reason(minimal_event_index(full)).as_deref(),
            Some("events index response is not minimal: entry 1 has field `EventTag`")
        );
        assert!(reason(minimal_event_index("{}"))
            .unwrap()
            .starts_with("malformed"));
    }
}
