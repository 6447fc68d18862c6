//! The sync endpoint allowlist: which (method, path) pairs may cross the
//! gateway at all, and for each what must be inspected.
//!
//! The patterns are misp-guard's (POLICY.md §2.6) with two deliberate
//! differences: `\w` is spelled as ASCII (non-ASCII paths never get this far,
//! see `engine::path`), and `/events/add` must be followed by `/` or the end,
//! so MISP actions that merely share the prefix (`/events/addTag`,
//! `/events/add_misp_export`, ...) are not treated as an event push. Below the
//! misp-guard table are the MISP 2.5 endpoints of POLICY.md §5.

use regex::RegexSet;

/// A MISP endpoint the gateway lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    GetVersion,
    PostTest,
    UsersViewMe,
    EventsIndex,
    FilterEventIdsForPush,
    EventsHead,
    EventsAdd,
    EventsEdit,
    SyncFilteringRules,
    EventsView,
    ShadowAttributesIndex,
    GalaxiesPushCluster,
    GalaxyClustersRestSearch,
    GalaxyClustersView,
    SightingsRestSearch,
    SightingsBulkSave,
    AnalystDataIndexMinimal,
    AnalystDataIndex,
    AnalystDataFilterForPush,
    AnalystDataPush,
    // MISP 2.5 (POLICY.md §5)
    SightingsFilterUuidsForPush,
    EventReportsProbe,
    EventsPushProposals,
}

/// What the request body must contain before it may leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    /// Not inspected: streamed through.
    Uninspected,
    /// An event (`{"Event": {...}}`), checked with the source's rules.
    Event,
    /// No body at all: a GET MISP's puller sends bare. `events/view` reads
    /// `deleted` and `extended` from the request data too; CakePHP 2 leaves
    /// that empty on a GET, but nothing the puller sends needs a body.
    Empty,
    /// `/events/index` filters: `minimal: 1, published: 1`, no `request`
    /// member, no other key MISP folds onto those two.
    EventIndexFilters,
    /// `/galaxy_clusters/restSearch` filters: `minimal: 1, published: 1`,
    /// no `request` member.
    ClusterSearchFilters,
    /// `/sightings/restSearch/event` filters: only the keys MISP's puller
    /// sends (or no body).
    SightingsSearch,
    /// A list of `{"GalaxyCluster": {...}}`.
    GalaxyClusters,
    /// One `{"Note"|"Opinion"|"Relationship": {...}}`.
    AnalystData,
    /// A list of proposals, `{"ShadowAttribute": {...}}` or bare.
    Proposals,
}

/// What the response body must contain before it may be returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseBody {
    Uninspected,
    /// An event, checked with the destination's rules and `X-UserOrgUUID`.
    Event,
    /// The answer to an event push: the event as the receiving server
    /// stored it, checked like [`ResponseBody::Event`] but without
    /// requiring the `Attribute`/`Object` lists (the `metadata:1` form
    /// leaves them out).
    StoredEvent,
    /// A list of `{"ShadowAttribute": {...}}`.
    ShadowAttributes,
    /// One `{"GalaxyCluster": {...}}`.
    GalaxyCluster,
    /// `/sightings/restSearch/event`: bare `Sighting` rows, without the
    /// sighted attribute or its event.
    Sightings,
    /// A list of analyst-data objects.
    AnalystDataList,
    /// `/events/index` asked for `minimal`: a list of entries holding only
    /// the minimal index's fields (no tags, distribution or info).
    MinimalEventIndex,
    /// `/galaxy_clusters/restSearch` asked for `minimal`: clusters named
    /// by `uuid` and `version` only.
    MinimalClusterIndex,
    /// A MISP API error (`name`, `message`, `url`, `errors`, ...): how a
    /// 4xx/5xx answer of an inspected endpoint may pass with its status.
    MispError,
}

impl Endpoint {
    pub fn request_body(self) -> RequestBody {
        use Endpoint::*;
        match self {
            EventsAdd | EventsEdit => RequestBody::Event,
            EventsIndex => RequestBody::EventIndexFilters,
            GalaxyClustersRestSearch => RequestBody::ClusterSearchFilters,
            SightingsRestSearch => RequestBody::SightingsSearch,
            EventsView => RequestBody::Empty,
            GalaxiesPushCluster => RequestBody::GalaxyClusters,
            AnalystDataPush => RequestBody::AnalystData,
            EventsPushProposals => RequestBody::Proposals,
            _ => RequestBody::Uninspected,
        }
    }

    /// What the answer must contain. Answers left uninspected carry no
    /// policy carrier (tags, distributions, sharing groups, attributes) of
    /// the answering instance, as read in MISP 2.5's controllers:
    /// `servers/getVersion` (version and permissions), `servers/postTest`
    /// (echoes the caller's own test body and headers), `users/view/me`
    /// (the sync user, its org and role), `events/filterEventIdsForPush`,
    /// `analyst_data/filterAnalystDataForPush`,
    /// `sightings/filterSightingUuidsForPush` (uuids the caller offered),
    /// `analyst_data/indexMinimal` (uuid/modified pairs, fixed fields),
    /// `HEAD events/view` (no body), `galaxies/pushCluster`,
    /// `analyst_data/pushAnalystData`, `sightings/bulkSaveSightings`,
    /// `events/pushProposals` (saved/failed counts and messages),
    /// `eventReports/add` (the API description), and
    /// `servers/getAvailableSyncFilteringRules` (the names of every tag and
    /// organisation defined on the instance, for the server-rule editor: a
    /// vocabulary, not data; refusing it for a blocked tag's name would
    /// break that editor on every instance that defines tlp:red).
    pub fn response_body(self) -> ResponseBody {
        use Endpoint::*;
        match self {
            // Pushes of events are answered with the event as the receiving
            // server stored it: `fetchEvent` then `__restResponse` in
            // EventsController add/edit. The `metadata:1` form MISP's sync
            // uses still carries the event's tags, galaxies, distribution
            // and sharing group (only attributes, objects and reports are
            // left out), so both forms are read with the pull's rules.
            EventsAdd | EventsEdit => ResponseBody::StoredEvent,
            EventsView => ResponseBody::Event,
            // The request is held to `minimal`; the answer must be minimal
            // too, so a parameter that slipped past the request check
            // cannot have a full index (tags, info, distribution) served.
            EventsIndex => ResponseBody::MinimalEventIndex,
            GalaxyClustersRestSearch => ResponseBody::MinimalClusterIndex,
            ShadowAttributesIndex => ResponseBody::ShadowAttributes,
            GalaxyClustersView => ResponseBody::GalaxyCluster,
            SightingsRestSearch => ResponseBody::Sightings,
            AnalystDataIndex => ResponseBody::AnalystDataList,
            _ => ResponseBody::Uninspected,
        }
    }
}

const UUID: &str = "[A-Za-z0-9_-]{36}";

/// (method, anchored path regex, endpoint). `{uuid}` is replaced by [`UUID`].
const ROUTES: &[(&str, &str, Endpoint)] = &[
    ("GET", r"^/servers/getVersion$", Endpoint::GetVersion),
    ("POST", r"^/servers/postTest$", Endpoint::PostTest),
    ("GET", r"^/users/view/me\.json$", Endpoint::UsersViewMe),
    ("POST", r"^/events/index$", Endpoint::EventsIndex),
    (
        "POST",
        r"^/events/filterEventIdsForPush$",
        Endpoint::FilterEventIdsForPush,
    ),
    ("HEAD", r"^/events/view/{uuid}$", Endpoint::EventsHead),
    ("POST", r"^/events/add(/.*)?$", Endpoint::EventsAdd),
    ("POST", r"^/events/edit/{uuid}.*$", Endpoint::EventsEdit),
    (
        "GET",
        r"^/servers/getAvailableSyncFilteringRules$",
        Endpoint::SyncFilteringRules,
    ),
    ("GET", r"^/events/view.*$", Endpoint::EventsView),
    (
        "GET",
        r"^/shadow_attributes/index.*$",
        Endpoint::ShadowAttributesIndex,
    ),
    (
        "POST",
        r"^/galaxies/pushCluster$",
        Endpoint::GalaxiesPushCluster,
    ),
    (
        "POST",
        r"^/galaxy_clusters/restSearch$",
        Endpoint::GalaxyClustersRestSearch,
    ),
    (
        "GET",
        r"^/galaxy_clusters/view/{uuid}$",
        Endpoint::GalaxyClustersView,
    ),
    (
        "POST",
        r"^/sightings/restSearch/event$",
        Endpoint::SightingsRestSearch,
    ),
    (
        "POST",
        r"^/sightings/bulkSaveSightings/{uuid}$",
        Endpoint::SightingsBulkSave,
    ),
    (
        "POST",
        r"^/analyst_data/indexMinimal$",
        Endpoint::AnalystDataIndexMinimal,
    ),
    (
        "GET",
        r"^/analyst_data/index/(Note|Opinion|Relationship)/uuid\[\]:{uuid}(/uuid\[\]:{uuid}){0,99}\.json$",
        Endpoint::AnalystDataIndex,
    ),
    (
        "POST",
        r"^/analyst_data/filterAnalystDataForPush$",
        Endpoint::AnalystDataFilterForPush,
    ),
    (
        "POST",
        r"^/analyst_data/pushAnalystData$",
        Endpoint::AnalystDataPush,
    ),
    // MISP 2.5
    (
        "POST",
        r"^/sightings/filterSightingUuidsForPush/{uuid}$",
        Endpoint::SightingsFilterUuidsForPush,
    ),
    ("GET", r"^/eventReports/add$", Endpoint::EventReportsProbe),
    (
        "POST",
        r"^/events/pushProposals/({uuid}|[0-9]{1,20})$",
        Endpoint::EventsPushProposals,
    ),
    // Retry of a push by numeric id after a 404 on add (MISP 2.5).
    (
        "POST",
        r"^/events/edit/[0-9]{1,20}(/.*)?$",
        Endpoint::EventsEdit,
    ),
];

/// The compiled endpoint allowlist (built once with the policy).
#[derive(Debug)]
pub struct EndpointTable {
    set: RegexSet,
}

impl EndpointTable {
    pub fn new() -> Self {
        let patterns = ROUTES.iter().map(|(_, p, _)| p.replace("{uuid}", UUID));
        // The patterns are constants covered by the tests below.
        let set = RegexSet::new(patterns).expect("endpoint patterns are valid");
        EndpointTable { set }
    }

    /// The endpoint for `method` + `path` (path includes the query, as in
    /// misp-guard), or None when the request is not part of MISP sync.
    pub fn lookup(&self, method: &str, path: &str) -> Option<Endpoint> {
        self.set
            .matches(path)
            .iter()
            .map(|i| &ROUTES[i])
            .find(|(m, _, _)| *m == method)
            .map(|(_, _, e)| *e)
    }
}

impl Default for EndpointTable {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "385283a1-b5e0-4e10-a532-dce11c365a56";

    #[test]
    fn misp_guard_table() {
        let t = EndpointTable::new();
        let cases = [
            (
                "GET",
                "/servers/getVersion".to_string(),
                Some(Endpoint::GetVersion),
            ),
            ("POST", "/servers/getVersion".to_string(), None),
            ("GET", "/servers/getVersion?x=1".to_string(), None),
            (
                "GET",
                "/users/view/me.json".to_string(),
                Some(Endpoint::UsersViewMe),
            ),
            ("GET", "/users/view/meXjson".to_string(), None),
            (
                "HEAD",
                format!("/events/view/{U}"),
                Some(Endpoint::EventsHead),
            ),
            ("HEAD", format!("/events/view/{U}/x"), None),
            (
                "GET",
                format!("/events/view/{U}/deleted[]:0"),
                Some(Endpoint::EventsView),
            ),
            (
                "POST",
                "/events/add/metadata:1".to_string(),
                Some(Endpoint::EventsAdd),
            ),
            ("POST", "/events/add".to_string(), Some(Endpoint::EventsAdd)),
            ("POST", "/events/addTag/1/2".to_string(), None),
            (
                "POST",
                format!("/events/edit/{U}/metadata:1"),
                Some(Endpoint::EventsEdit),
            ),
            (
                "POST",
                "/events/edit/12/metadata:1".to_string(),
                Some(Endpoint::EventsEdit),
            ),
            ("POST", "/events/edit/abc".to_string(), None),
            ("GET", "/users".to_string(), None),
            (
                "POST",
                format!("/sightings/bulkSaveSightings/{U}"),
                Some(Endpoint::SightingsBulkSave),
            ),
            (
                "GET",
                format!("/galaxy_clusters/view/{U}"),
                Some(Endpoint::GalaxyClustersView),
            ),
            (
                "GET",
                format!("/analyst_data/index/Note/uuid[]:{U}.json"),
                Some(Endpoint::AnalystDataIndex),
            ),
            (
                "GET",
                format!("/analyst_data/index/Event/uuid[]:{U}.json"),
                None,
            ),
            (
                "GET",
                format!("/analyst_data/index/Opinion/uuid[]:{U}/uuid[]:{U}.json"),
                Some(Endpoint::AnalystDataIndex),
            ),
            (
                "POST",
                format!("/sightings/filterSightingUuidsForPush/{U}"),
                Some(Endpoint::SightingsFilterUuidsForPush),
            ),
            (
                "GET",
                "/eventReports/add".to_string(),
                Some(Endpoint::EventReportsProbe),
            ),
            (
                "POST",
                "/events/pushProposals/42".to_string(),
                Some(Endpoint::EventsPushProposals),
            ),
            (
                "POST",
                format!("/events/pushProposals/{U}"),
                Some(Endpoint::EventsPushProposals),
            ),
        ];
        for (method, path, want) in cases {
            assert_eq!(t.lookup(method, &path), want, "{method} {path}");
        }
    }

    #[test]
    fn analyst_data_index_allows_at_most_100_uuids() {
        let t = EndpointTable::new();
        let path = |n: usize| {
            let segs: Vec<String> = (0..n).map(|_| format!("uuid[]:{U}")).collect();
            format!("/analyst_data/index/Note/{}.json", segs.join("/"))
        };
        assert!(t.lookup("GET", &path(100)).is_some());
        assert!(t.lookup("GET", &path(101)).is_none());
    }

    #[test]
    fn every_endpoint_has_its_inspection() {
        use Endpoint::*;
        use RequestBody as Q;
        use ResponseBody as A;
        for (e, req, resp) in [
            (GetVersion, Q::Uninspected, A::Uninspected),
            (PostTest, Q::Uninspected, A::Uninspected),
            (UsersViewMe, Q::Uninspected, A::Uninspected),
            (EventsIndex, Q::EventIndexFilters, A::MinimalEventIndex),
            (FilterEventIdsForPush, Q::Uninspected, A::Uninspected),
            (EventsHead, Q::Uninspected, A::Uninspected),
            (EventsAdd, Q::Event, A::StoredEvent),
            (EventsEdit, Q::Event, A::StoredEvent),
            (SyncFilteringRules, Q::Uninspected, A::Uninspected),
            (EventsView, Q::Empty, A::Event),
            (ShadowAttributesIndex, Q::Uninspected, A::ShadowAttributes),
            (GalaxiesPushCluster, Q::GalaxyClusters, A::Uninspected),
            (
                GalaxyClustersRestSearch,
                Q::ClusterSearchFilters,
                A::MinimalClusterIndex,
            ),
            (GalaxyClustersView, Q::Uninspected, A::GalaxyCluster),
            (SightingsRestSearch, Q::SightingsSearch, A::Sightings),
            (SightingsBulkSave, Q::Uninspected, A::Uninspected),
            (AnalystDataIndexMinimal, Q::Uninspected, A::Uninspected),
            (AnalystDataIndex, Q::Uninspected, A::AnalystDataList),
            (AnalystDataFilterForPush, Q::Uninspected, A::Uninspected),
            (AnalystDataPush, Q::AnalystData, A::Uninspected),
            (SightingsFilterUuidsForPush, Q::Uninspected, A::Uninspected),
            (EventReportsProbe, Q::Uninspected, A::Uninspected),
            (EventsPushProposals, Q::Proposals, A::Uninspected),
        ] {
            assert_eq!((e.request_body(), e.response_body()), (req, resp), "{e:?}");
        }
    }

    #[test]
    fn inspection_kinds() {
        assert_eq!(Endpoint::EventsAdd.request_body(), RequestBody::Event);
        assert_eq!(Endpoint::EventsView.response_body(), ResponseBody::Event);
        assert_eq!(
            Endpoint::EventsAdd.response_body(),
            ResponseBody::StoredEvent
        );
        assert_eq!(
            Endpoint::EventsEdit.response_body(),
            ResponseBody::StoredEvent
        );
        assert_eq!(
            Endpoint::EventsIndex.response_body(),
            ResponseBody::MinimalEventIndex
        );
        assert_eq!(
            Endpoint::GalaxyClustersRestSearch.response_body(),
            ResponseBody::MinimalClusterIndex
        );
        assert_eq!(
            Endpoint::EventsHead.response_body(),
            ResponseBody::Uninspected
        );
        assert_eq!(
            Endpoint::SightingsBulkSave.request_body(),
            RequestBody::Uninspected
        );
    }
}
