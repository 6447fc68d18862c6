//! The content rules of POLICY.md §3, applied to the typed views of
//! `model`. Order follows misp-guard exactly (the first violation is the
//! reason reported), with this gateway's extra carriers and canonical-value
//! checks slotted in where the field they harden is read.

use super::model::{
    Analyst, AnalystEntry, AnalystList, Attribute, AttributeDoc, ClusterRelation, ClusterTag, Dist,
    EmbeddedEventDoc, Event, EventDoc, EventReport, EventRow, Galaxy, GalaxyCluster, Listed,
    Object, ObjectDoc, Proposal, RelatedEvent, SharingGroup, Tag, TagLink,
};
use super::reading::{Checked, Ctx, Violation};
use crate::policy::RequiredTaxonomy;

fn rule(reason: String) -> Checked {
    Err(Violation::Rule(reason))
}

/// The things that carry a distribution, with misp-guard's wording.
#[derive(Clone, Copy)]
pub enum Subject {
    Event,
    EventReport,
    Attribute,
    Object,
    GalaxyCluster,
    /// A `GalaxyClusterRelation[]` / `RelationshipInbound[]` element.
    ClusterRelation,
    AnalystData,
    RelatedEvent,
}

/// What an event body is to the MISP that reads it (both store its
/// records). A relationship's related event, only displayed (a
/// *display-only carrier*, MISP-IMPORT.md), is `related_event`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EventRole {
    /// A pushed event or a pulled `events/view` answer: imported by
    /// `Event::_add`/`_edit`; must carry `Attribute` and `Object` lists.
    Imported,
    /// The event a push is answered with (`R-PUSH-ANSWER`): the receiver's
    /// stored event; the lists are absent from `metadata` answers.
    Answer,
}

impl Subject {
    fn blocked(self, level: u8) -> String {
        match self {
            Subject::Event => format!("event has blocked distribution level: {level}"),
            Subject::EventReport => format!("event report has blocked distribution level: {level}"),
            Subject::Attribute => format!("attribute with a blocked distribution level: {level}"),
            Subject::Object => format!("object with a blocked distribution level: {level}"),
            Subject::GalaxyCluster => {
                format!("galaxy cluster has blocked distribution level: {level}")
            }
            Subject::ClusterRelation => {
                format!("galaxy cluster relation has blocked distribution level: {level}")
            }
            Subject::AnalystData => format!("analyst data has blocked distribution level: {level}"),
            Subject::RelatedEvent => {
                format!("related event has blocked distribution level: {level}")
            }
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Subject::Event => "event",
            Subject::EventReport => "event report",
            Subject::Attribute => "attribute",
            Subject::Object => "object",
            Subject::GalaxyCluster => "galaxy cluster",
            Subject::ClusterRelation => "galaxy cluster relation",
            Subject::AnalystData => "analyst data",
            Subject::RelatedEvent => "related event",
        }
    }
}

/// `required`: misp-guard fails on a missing distribution everywhere except
/// on attributes, where it is optional (MISP then applies its default).
fn distribution(ctx: &Ctx, subject: Subject, dist: &Dist, required: bool) -> Checked {
    match dist {
        Dist::Level(level) if ctx.rules.blocked_distribution[*level as usize] => {
            rule(subject.blocked(*level))
        }
        Dist::Level(_) => Ok(()),
        Dist::Missing if required => rule(format!("{} has no distribution", subject.noun())),
        Dist::Missing => Ok(()),
        Dist::Invalid(raw) => rule(format!(
            "{} has a non-canonical distribution value: {raw}",
            subject.noun()
        )),
    }
}

/// Every tag MISP would attach: `Tag[].name`, `EventTag[]/AttributeTag[].Tag.name`
/// and the `tag_name` of each galaxy cluster.
fn tag_names<'x>(
    tags: &'x Option<Vec<Tag>>,
    links: &'x Option<Vec<TagLink>>,
    galaxies: &'x Option<Vec<Galaxy>>,
) -> impl Iterator<Item = &'x str> + Clone {
    let plain = tags.iter().flatten().map(|t| &*t.name);
    let linked = links.iter().flatten().map(|l| &*l.Tag.name);
    let clusters = galaxies
        .iter()
        .flatten()
        .flat_map(|g| g.GalaxyCluster.iter().flatten())
        .filter_map(|c| c.tag_name.as_deref());
    plain.chain(linked).chain(clusters)
}

/// The tags that count towards a required taxonomy (R-REQTAX-ASYM): only
/// the record's own `Tag[]`, and only tags MISP keeps (not `local`: the
/// puller drops those). `EventTag[]`/`AttributeTag[]` (ignored by
/// `_edit`) and galaxy `tag_name`s (ignored by `_add` and `_edit`) may be
/// blocked but never satisfy a requirement.
fn counted_tags<'x>(tags: &'x Option<Vec<Tag>>) -> impl Iterator<Item = &'x str> + Clone {
    tags.iter()
        .flatten()
        .filter(|t| !t.local.0)
        .map(|t| &*t.name)
}

/// Whether `tag` is, for MISP, a tag of `taxonomy` (and one of its allowed
/// tags when the list is set). MISP finds tags by name in a `utf8mb3_bin`
/// column through `LOWER()`: trailing spaces are ignored, leading ones are
/// not, ASCII case is folded. Anything beyond that is compared byte for
/// byte, so a name with any other whitespace at its ends, or non-ASCII
/// characters that only Unicode folding would equate, does not count.
fn satisfies(tag: &str, taxonomy: &RequiredTaxonomy) -> bool {
    let name = tag.trim_end_matches(' ');
    let (Some(first), Some(last)) = (name.chars().next(), name.chars().last()) else {
        return false;
    };
    if first.is_whitespace() || last.is_whitespace() {
        return false;
    }
    let prefix = taxonomy.prefix.as_bytes();
    if name.len() < prefix.len() || !name.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix) {
        return false;
    }
    if taxonomy.allowed.is_empty() {
        return true;
    }
    if name.is_ascii() {
        taxonomy.allowed.contains(name)
    } else {
        taxonomy.allowed.iter().any(|allowed| allowed == name)
    }
}

/// Required taxonomies over the tags that count (`counted_tags`).
/// `has_carrier` is whether any tag list was present at all: misp-guard
/// reports a missing list differently from a list that lacks the taxonomy.
fn required_taxonomies<'x>(
    ctx: &Ctx,
    subject: Subject,
    has_carrier: bool,
    tags: impl Iterator<Item = &'x str> + Clone,
) -> Checked {
    let required = &ctx.rules.required_taxonomies;
    if required.is_empty() {
        return Ok(());
    }
    if !has_carrier {
        return rule(format!("{} is missing required taxonomies", subject.noun()));
    }
    for taxonomy in required {
        let satisfied = tags.clone().any(|t| satisfies(t, taxonomy));
        if !satisfied {
            // misp-guard words this as "event ..." for attributes too; SIEM
            // rules match on it, so it stays.
            return rule(format!(
                "event is missing required taxonomy: {}",
                taxonomy.name
            ));
        }
    }
    Ok(())
}

fn sharing_group(ctx: &Ctx, subject: Subject, sg: &Option<Box<SharingGroup>>) -> Checked {
    let Some(sg) = sg else { return Ok(()) };
    if ctx.rules.blocked_sharing_groups.contains(&sg.uuid) {
        let prefix = match subject {
            Subject::Event => "event has blocked sharing group uuid",
            Subject::Object => "object with a blocked sharing group uuid",
            Subject::EventReport => "event report has blocked sharing group uuid",
            Subject::GalaxyCluster => "galaxy cluster has blocked sharing group uuid",
            Subject::ClusterRelation => "galaxy cluster relation has blocked sharing group uuid",
            Subject::RelatedEvent => "related event has blocked sharing group uuid",
            Subject::AnalystData => "analyst data has blocked sharing group uuid",
            Subject::Attribute => "attribute with a blocked sharing group uuid",
        };
        return rule(format!("{prefix}: {}", sg.uuid));
    }
    let Some(user_org) = ctx.user_org else {
        return Ok(());
    };
    let member = sg.SharingGroupOrg.iter().flatten().any(|o| {
        o.Organisation
            .as_ref()
            .and_then(|org| org.uuid.as_deref())
            .is_some_and(|uuid| uuid.trim().eq_ignore_ascii_case(user_org.trim()))
    });
    let all_orgs = sg.SharingGroupServer.iter().flatten().any(|s| s.all_orgs.0);
    if member || all_orgs {
        Ok(())
    } else {
        rule(format!(
            "user with organisation uuid: {user_org} (X-UserOrgUUID) not in sharing group"
        ))
    }
}

/// R-SG-LOCALID and R-SG-UNRESOLVED, for any record with a distribution:
/// at distribution 4 the sharing group must be named by a `SharingGroup`
/// object (its uuid is required by the model, so `has_sg` means "has a
/// uuid"). Without one, MISP imports `sharing_group_id` as a local id of
/// the receiver (or stores distribution 0), which the gateway cannot map:
/// refused on every `captured` record. A display-only record (served,
/// never stored: related events, relationship targets) is MISP's own
/// shape without it, and is refused only when the rules block some sharing
/// group (the gateway could not tell whether it is that one).
/// `noun` is the record's name in the reason ("note", "event report", …).
pub fn sharing_group_identified(
    ctx: &Ctx,
    noun: &str,
    dist: &Dist,
    has_sg: bool,
    captured: bool,
) -> Checked {
    if *dist != Dist::Level(4) || has_sg {
        return Ok(());
    }
    if captured {
        rule(format!(
            "{noun} has distribution 4 but no SharingGroup uuid"
        ))
    } else if !ctx.rules.blocked_sharing_groups.is_empty() {
        rule(format!(
            "{noun} has distribution 4 with a sharing group the gateway cannot identify"
        ))
    } else {
        Ok(())
    }
}

/// A `Dist`/`SharingGroup` pair: the sharing group's own checks, then
/// whether it is identified at distribution 4.
fn distributed_sharing_group(
    ctx: &Ctx,
    subject: Subject,
    dist: &Dist,
    sg: &Option<Box<SharingGroup>>,
    captured: bool,
) -> Checked {
    sharing_group(ctx, subject, sg)?;
    sharing_group_identified(ctx, subject.noun(), dist, sg.is_some(), captured)
}

fn wrapper(present: bool, reason: &str) -> Checked {
    if present {
        rule(reason.to_string())
    } else {
        Ok(())
    }
}

/// R-REPORT-WRAP, R-DIST, R-REPORT-SG, R-SG-LOCALID and the report's own
/// analyst data, on one report MISP stores.
pub fn event_report(ctx: &Ctx, r: &EventReport) -> Checked {
    event_report_as(ctx, r, true)
}

/// `captured: false` for a report shown in a relationship's related event
/// (display-only: R-SG-UNRESOLVED instead of R-SG-LOCALID).
fn event_report_as(ctx: &Ctx, r: &EventReport, captured: bool) -> Checked {
    wrapper(
        r.wraps_report.0,
        "event report element wraps an EventReport; refusing the ambiguous payload",
    )?;
    distribution(ctx, Subject::EventReport, &r.distribution, true)?;
    distributed_sharing_group(
        ctx,
        Subject::EventReport,
        &r.distribution,
        &r.SharingGroup,
        captured,
    )?;
    analyst_lists(ctx, &r.Note, &r.Opinion, &r.Relationship)
}

/// R-RELATED-EVENT: each correlating event the receiver serves.
fn related_events(ctx: &Ctx, list: &Option<Vec<RelatedEvent>>) -> Checked {
    for r in list.iter().flatten() {
        let row = &r.Event;
        distribution(ctx, Subject::RelatedEvent, &row.distribution, true)?;
        distributed_sharing_group(
            ctx,
            Subject::RelatedEvent,
            &row.distribution,
            &row.SharingGroup,
            false,
        )?;
    }
    Ok(())
}

/// R-EVENT-GALAXY: a cluster that states a distribution is a full cluster
/// (answers) and judged as one; a sharing group is checked whenever present.
fn galaxy_clusters(ctx: &Ctx, galaxies: &Option<Vec<Galaxy>>, captured: bool) -> Checked {
    let clusters = galaxies
        .iter()
        .flatten()
        .flat_map(|g| g.GalaxyCluster.iter().flatten());
    for c in clusters {
        galaxy_cluster_in_event(ctx, c, captured)?;
    }
    Ok(())
}

fn galaxy_cluster_in_event(ctx: &Ctx, c: &ClusterTag, captured: bool) -> Checked {
    distribution(ctx, Subject::GalaxyCluster, &c.distribution, false)?;
    distributed_sharing_group(
        ctx,
        Subject::GalaxyCluster,
        &c.distribution,
        &c.SharingGroup,
        captured,
    )?;
    for r in c.GalaxyClusterRelation.iter().flatten() {
        cluster_relation(ctx, r, true)?;
    }
    Ok(())
}

/// R-RELATED-ATTR: correlation data MISP's sync never asks for.
fn correlations(granular: bool, extension: bool) -> Checked {
    if granular {
        return rule(
            "event answer carries RelatedAttribute; MISP's sync never asks for them".into(),
        );
    }
    if extension {
        return rule(
            "event answer carries extensionEvents; MISP's sync never asks for them".into(),
        );
    }
    Ok(())
}

/// Event-level checks, then `Attribute[]`, `Object[]` and
/// `ShadowAttribute[]` (required lists for an `Imported` event). A
/// relationship's related event (`Related`) is checked at event level,
/// plus any attributes or objects it happens to carry.
pub fn event(ctx: &Ctx, ev: &Event, role: EventRole) -> Checked {
    let tags = tag_names(&ev.Tag, &ev.EventTag, &ev.Galaxy);
    for name in tags.clone() {
        if ctx.rules.blocked_tags.contains(name) {
            return rule(format!("event has blocked tag: {name}"));
        }
    }
    let has_carrier = ev.Tag.is_some() || ev.EventTag.is_some() || tags.clone().next().is_some();
    required_taxonomies(ctx, Subject::Event, has_carrier, counted_tags(&ev.Tag))?;
    distribution(ctx, Subject::Event, &ev.distribution, true)?;
    for report in ev.EventReport.iter().flatten() {
        event_report(ctx, report)?;
    }
    distributed_sharing_group(
        ctx,
        Subject::Event,
        &ev.distribution,
        &ev.SharingGroup,
        true,
    )?;
    galaxy_clusters(ctx, &ev.Galaxy, true)?;
    related_events(ctx, &ev.RelatedEvent)?;
    correlations(ev.RelatedAttribute.0, ev.extensionEvents.0)?;
    analyst_lists(ctx, &ev.Note, &ev.Opinion, &ev.Relationship)?;

    let lists_required = role == EventRole::Imported;
    if lists_required && ev.Attribute.is_absent() {
        return rule("event has no Attribute list".into());
    }
    listed(ctx, &ev.Attribute)?;
    if lists_required && ev.Object.is_absent() {
        return rule("event has no Object list".into());
    }
    listed(ctx, &ev.Object)?;
    // Event-level proposals are imported with the event too.
    listed(ctx, &ev.ShadowAttribute)
}

/// A record checked on its own, as an element of a `Listed` field: the
/// streaming reader calls this as each element is parsed.
pub trait Check {
    fn check(&self, ctx: &Ctx) -> Checked;
}

impl Check for Attribute<'_> {
    fn check(&self, ctx: &Ctx) -> Checked {
        attribute(ctx, self)
    }
}

impl Check for Proposal<'_> {
    fn check(&self, ctx: &Ctx) -> Checked {
        proposal(ctx, &self.0)
    }
}

impl Check for Object<'_> {
    fn check(&self, ctx: &Ctx) -> Checked {
        object(ctx, self)
    }
}

/// A list's first violation, whichever reader filled it.
fn listed<T: Check>(ctx: &Ctx, list: &Listed<T>) -> Checked {
    match list {
        Listed::Absent => Ok(()),
        Listed::Items(items) => items.iter().try_for_each(|item| item.check(ctx)),
        Listed::Streamed(first_violation) => match first_violation {
            Some(v) => Err(v.clone()),
            None => Ok(()),
        },
    }
}

/// An attribute or proposal MISP stores (in an event, an object, a
/// proposal push or index).
pub fn attribute(ctx: &Ctx, a: &Attribute) -> Checked {
    attribute_as(ctx, a, AttrRole::Stored)
}

/// A proposal (`ShadowAttribute`, event or attribute level, pushed or
/// indexed): checked as an attribute, except that MISP proposals carry no
/// tags, so no required taxonomy is asked of them (MISP-IMPORT.md
/// `K-PROPOSALS`); blocked tags still are.
pub fn proposal(ctx: &Ctx, a: &Attribute) -> Checked {
    attribute_as(ctx, a, AttrRole::Proposal)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum AttrRole {
    Stored,
    Proposal,
}

/// R-CAT-DEFAULT: MISP files an attribute or proposal whose category is
/// PHP-empty under its type's default category (describeTypes), which may
/// be a blocked one; `" 0"` and blanks are refused too.
fn category_given(category: &str) -> Checked {
    match category.trim() {
        "" | "0" => rule(
            "attribute has an empty category; MISP would file it under its type's default category"
                .into(),
        ),
        _ => Ok(()),
    }
}

/// What every attribute is judged by, stored or only shown: category
/// (`R-CAT-DEFAULT`, `R-ATTR-CAT`), type, distribution and blocked tags in
/// every carrier.
fn attribute_labels(ctx: &Ctx, a: &Attribute) -> Checked {
    let r = ctx.rules;
    category_given(&a.category)?;
    if r.blocked_attribute_categories.contains(&a.category) {
        return rule(format!("attribute with a blocked category: {}", a.category));
    }
    if r.blocked_attribute_types.contains(&a.kind) {
        return rule(format!("attribute with a blocked type: {}", a.kind));
    }
    distribution(ctx, Subject::Attribute, &a.distribution, false)?;
    for name in tag_names(&a.Tag, &a.AttributeTag, &a.Galaxy) {
        if r.blocked_tags.contains(name) {
            return rule(format!("attribute with a blocked tag: {name}"));
        }
    }
    Ok(())
}

fn attribute_as(ctx: &Ctx, a: &Attribute, role: AttrRole) -> Checked {
    wrapper(
        a.wraps_attribute.0,
        "attribute element wraps an Attribute; refusing the ambiguous payload",
    )?;
    if matches!(
        a.ShadowAttribute,
        Some(super::model::Proposals::WrapsObject)
    ) {
        return rule(
            "attribute element wraps a ShadowAttribute; refusing the ambiguous payload".into(),
        );
    }
    attribute_labels(ctx, a)?;
    let tags = tag_names(&a.Tag, &a.AttributeTag, &a.Galaxy);
    let has_carrier = a.Tag.is_some() || a.AttributeTag.is_some() || tags.clone().next().is_some();
    if role != AttrRole::Proposal {
        required_taxonomies(ctx, Subject::Attribute, has_carrier, counted_tags(&a.Tag))?;
    }
    distributed_sharing_group(
        ctx,
        Subject::Attribute,
        &a.distribution,
        &a.SharingGroup,
        true,
    )?;
    galaxy_clusters(ctx, &a.Galaxy, true)?;
    correlations(a.RelatedAttribute.0, false)?;
    for proposal in a.ShadowAttribute.iter().flat_map(|p| p.items()) {
        attribute_as(ctx, proposal, AttrRole::Proposal)?;
    }
    analyst_lists(ctx, &a.Note, &a.Opinion, &a.Relationship)
}

/// An object MISP stores (in an event). A relationship's related object,
/// served but never stored, is `related_object`.
pub fn object(ctx: &Ctx, o: &Object) -> Checked {
    wrapper(
        o.wraps_object.0,
        "object element wraps an Object; refusing the ambiguous payload",
    )?;
    distribution(ctx, Subject::Object, &o.distribution, true)?;
    distributed_sharing_group(ctx, Subject::Object, &o.distribution, &o.SharingGroup, true)?;
    if ctx.rules.blocked_object_types.contains(&o.name) {
        return rule(format!("object with a blocked type: {}", o.name));
    }
    for a in &o.Attribute {
        attribute_as(ctx, a, AttrRole::Stored)?;
    }
    analyst_lists(ctx, &o.Note, &o.Opinion, &o.Relationship)
}

/// The one cluster check (`R-CLUSTER-DIST`, `R-CLUSTER-SG`,
/// `R-SG-LOCALID`, `R-CLUSTER-REL`): a `pushCluster` element, a
/// `galaxy_clusters/view` answer, and a full cluster inside an event
/// (`R-EVENT-GALAXY` calls it for clusters that carry a distribution).
/// `tag_name` is left to the caller's tag rules.
pub fn galaxy_cluster(ctx: &Ctx, c: &GalaxyCluster) -> Checked {
    distribution(ctx, Subject::GalaxyCluster, &c.distribution, true)?;
    distributed_sharing_group(
        ctx,
        Subject::GalaxyCluster,
        &c.distribution,
        &c.SharingGroup,
        true,
    )?;
    for r in c.GalaxyClusterRelation.iter().flatten() {
        cluster_relation(ctx, r, true)?;
    }
    // Inbound relations belong to other clusters and were not yet seen
    // without a distribution on a real MISP: judged, but not required.
    for r in c.RelationshipInbound.iter().flatten() {
        cluster_relation(ctx, r, false)?;
    }
    analyst_lists(ctx, &c.Note, &c.Opinion, &c.Relationship)
}

/// `R-CLUSTER-REL`: one relation element. MISP drops a relation without a
/// distribution; refusing it is the safe side. Required taxonomies are not
/// demanded (MISP's relations often carry no tag).
fn cluster_relation(ctx: &Ctx, r: &ClusterRelation, dist_required: bool) -> Checked {
    if r.GalaxyClusterRelation.0 {
        return rule(
            "galaxy cluster relation wraps a GalaxyClusterRelation; refusing the ambiguous payload"
                .into(),
        );
    }
    distribution(
        ctx,
        Subject::ClusterRelation,
        &r.distribution,
        dist_required,
    )?;
    let plain = r.Tag.iter().flatten().map(|t| &*t.name);
    let linked = r.GalaxyClusterRelationTag.iter().flatten().flat_map(|t| {
        t.name
            .as_deref()
            .into_iter()
            .chain(t.Tag.as_ref().map(|t| &*t.name))
    });
    for name in plain.chain(linked) {
        if ctx.rules.blocked_tags.contains(name) {
            return rule(format!(
                "galaxy cluster relation with a blocked tag: {name}"
            ));
        }
    }
    distributed_sharing_group(
        ctx,
        Subject::ClusterRelation,
        &r.distribution,
        &r.SharingGroup,
        true,
    )
}

/// How deep analyst records may nest inside each other. MISP serves depth
/// 2 by default and pushes flat records; anything deeper is refused with a
/// reason of its own rather than walked (`R-ANALYST-RECURSE`).
pub const ANALYST_MAX_DEPTH: usize = 16;

#[derive(Clone, Copy, PartialEq, Eq)]
enum AnalystKind {
    Note,
    Opinion,
    Relationship,
}

impl AnalystKind {
    fn name(self) -> &'static str {
        match self {
            AnalystKind::Note => "Note",
            AnalystKind::Opinion => "Opinion",
            AnalystKind::Relationship => "Relationship",
        }
    }
}

/// The one analyst-data check for every carrier: the `Note[]`,
/// `Opinion[]` and `Relationship[]` members of an event, attribute, object,
/// event report, cluster (`R-ANALYST-RECURSE` and the rules it applies to
/// each record).
pub fn analyst_lists(
    ctx: &Ctx,
    notes: &Option<AnalystList>,
    opinions: &Option<AnalystList>,
    relationships: &Option<AnalystList>,
) -> Checked {
    analyst_children(ctx, notes, opinions, relationships, 1)
}

/// Analyst lists whose elements sit at nesting level `depth` (1 for the
/// lists of a non-analyst carrier).
fn analyst_children(
    ctx: &Ctx,
    notes: &Option<AnalystList>,
    opinions: &Option<AnalystList>,
    relationships: &Option<AnalystList>,
    depth: usize,
) -> Checked {
    for (kind, list) in [
        (AnalystKind::Note, notes),
        (AnalystKind::Opinion, opinions),
        (AnalystKind::Relationship, relationships),
    ] {
        let items = match list {
            None => continue,
            Some(AnalystList::Items(items)) => items,
            // `R-ANALYST-WRAP`: MISP would save the wrapped object instead.
            Some(AnalystList::Wrapper) => {
                return rule(format!(
                    "analyst data element wraps a {} object; refusing the ambiguous payload",
                    kind.name()
                ))
            }
            Some(AnalystList::Scalar) => {
                return rule(format!("analyst data `{}` is not a list", kind.name()))
            }
        };
        if items.is_empty() {
            continue;
        }
        if depth > ANALYST_MAX_DEPTH {
            return rule(format!(
                "analyst data nested deeper than {ANALYST_MAX_DEPTH} levels"
            ));
        }
        for item in items {
            // `R-ANALYST-TYPE` (a): MISP files the element by its own
            // `note_type_name`, not by the list it sits in.
            if let Some(declared) = item.note_type_name.as_deref() {
                if declared != kind.name() {
                    return rule(type_confusion(declared, kind));
                }
            }
            analyst_record(ctx, kind, item, depth)?;
        }
    }
    Ok(())
}

fn type_confusion(declared: &str, kind: AnalystKind) -> String {
    let shown: String = declared.chars().take(32).collect();
    format!(
        "analyst data declares note_type_name {shown:?} inside {}; refusing the ambiguous payload",
        kind.name()
    )
}

/// One note, opinion or relationship at nesting level `depth`, then its
/// children (`R-ANALYST-DIST`, `R-ANALYST-SG`, `R-SG-LOCALID`, `R-REL-*`).
fn analyst_record(ctx: &Ctx, kind: AnalystKind, rec: &Analyst, depth: usize) -> Checked {
    distribution(ctx, Subject::AnalystData, &rec.distribution, true)?;
    distributed_sharing_group(
        ctx,
        Subject::AnalystData,
        &rec.distribution,
        &rec.SharingGroup,
        true,
    )?;
    if kind == AnalystKind::Relationship {
        related_target(ctx, rec, depth)?;
    }
    analyst_children(ctx, &rec.Note, &rec.Opinion, &rec.Relationship, depth + 1)
}

/// A `pushAnalystData` body or an `analyst_data/index` element:
/// `{"<Type>": {...}}` with exactly one wrapper (`R-ANALYST-BARE`,
/// `R-ANALYST-TYPE` (b), (c)), then the record at depth 1.
pub fn analyst_entry(ctx: &Ctx, e: &AnalystEntry) -> Checked {
    let wrappers = [
        (AnalystKind::Note, &e.Note),
        (AnalystKind::Opinion, &e.Opinion),
        (AnalystKind::Relationship, &e.Relationship),
    ];
    let mut present = wrappers.iter().filter(|(_, r)| r.is_some());
    let Some(&(kind, Some(rec))) = present.next() else {
        return rule("analyst data has no Note, Opinion or Relationship".into());
    };
    if present.next().is_some() || e.note_type_name.0 {
        return rule(
            "analyst data body has several wrappers or a top-level note_type_name; refusing the ambiguous payload"
                .into(),
        );
    }
    if let Some(declared) = rec.note_type_name.as_deref() {
        if declared != kind.name() {
            return rule(type_confusion(declared, kind));
        }
    }
    analyst_record(ctx, kind, rec, 1)
}

/// Is this raw JSON value an empty list, however spaced?
fn is_empty_list(raw: &str) -> bool {
    raw.strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .is_some_and(|inner| inner.trim().is_empty())
}

/// What a relationship points at (`R-REL-TARGET`, `R-REL-SHAPES`,
/// `R-REL-ANALYST`, `R-REL-EVENTDIST`). MISP never stores
/// `related_object`, but its bytes cross the boundary, so what it shows is
/// judged — without required taxonomies, which MISP's serialisation never
/// includes (the target is judged on its own sync path). `depth` is the
/// relationship's own nesting level, carried into analyst data the target
/// may hold.
fn related_target(ctx: &Ctx, r: &Analyst, depth: usize) -> Checked {
    let kind = r.related_object_type.as_deref();
    if let Some(k @ ("Note" | "Opinion" | "Relationship")) = kind {
        // MISP 2.5 cannot serialise these (every read of one fails), so its
        // sync never sends one, and storing one breaks the receiver.
        return rule(format!(
            "relationship to {k} is not supported by MISP 2.5; refusing"
        ));
    }
    let shown = || -> String { kind.map_or("(no type)".into(), |k| k.chars().take(32).collect()) };
    let Some(raw) = r.related_object else {
        return match kind {
            // MISP always sets it for a typed relationship.
            Some(_) => rule(format!("relationship to {} has no related_object", shown())),
            None => Ok(()),
        };
    };
    let json = raw.get();
    // `[]` is what MISP serves for a target it cannot show or never resolves.
    if is_empty_list(json) {
        return Ok(());
    }
    // Otherwise only `{"<Type>": {...}}` for the three types MISP resolves.
    let never_served = || {
        rule(format!(
            "relationship to {} carries a related_object MISP 2.5 never serves",
            shown()
        ))
    };
    if !json.starts_with('{') {
        return never_served();
    }
    match kind {
        Some("Event") => related_event(ctx, &serde_json::from_str::<EventDoc>(json)?.Event, depth),
        Some("Attribute") => {
            let a = serde_json::from_str::<AttributeDoc>(json)?;
            related_attribute(ctx, &a.Attribute, depth)?;
            let e = serde_json::from_str::<EmbeddedEventDoc>(json)?;
            embedded_event(ctx, "attribute", e.Attribute.and_then(|a| a.Event))
        }
        Some("Object") => {
            let o = serde_json::from_str::<ObjectDoc>(json)?;
            related_object(ctx, &o.Object, depth)?;
            let e = serde_json::from_str::<EmbeddedEventDoc>(json)?;
            embedded_event(ctx, "object", e.Object.and_then(|o| o.Event))
        }
        _ => never_served(),
    }
}

/// A related event row: blocked tags, distribution, sharing group, and any
/// report, attribute, proposal, object or analyst data it happens to carry
/// (MISP's row has none of them; whatever crosses is judged).
fn related_event(ctx: &Ctx, ev: &Event, depth: usize) -> Checked {
    for name in tag_names(&ev.Tag, &ev.EventTag, &ev.Galaxy) {
        if ctx.rules.blocked_tags.contains(name) {
            return rule(format!("event has blocked tag: {name}"));
        }
    }
    distribution(ctx, Subject::Event, &ev.distribution, true)?;
    for report in ev.EventReport.iter().flatten() {
        event_report_as(ctx, report, false)?;
    }
    distributed_sharing_group(
        ctx,
        Subject::Event,
        &ev.distribution,
        &ev.SharingGroup,
        false,
    )?;
    galaxy_clusters(ctx, &ev.Galaxy, false)?;
    related_events(ctx, &ev.RelatedEvent)?;
    correlations(ev.RelatedAttribute.0, ev.extensionEvents.0)?;
    if let Listed::Items(items) = &ev.Attribute {
        items
            .iter()
            .try_for_each(|a| related_attribute(ctx, a, depth))?;
    }
    if let Listed::Items(items) = &ev.ShadowAttribute {
        items
            .iter()
            .try_for_each(|p| related_attribute(ctx, &p.0, depth))?;
    }
    if let Listed::Items(items) = &ev.Object {
        items
            .iter()
            .try_for_each(|o| related_object(ctx, o, depth))?;
    }
    analyst_children(ctx, &ev.Note, &ev.Opinion, &ev.Relationship, depth + 1)
}

/// A related attribute: type, category (also not empty), distribution, tags, sharing group,
/// proposals and analyst data; not required taxonomies (see
/// `related_target`).
fn related_attribute(ctx: &Ctx, a: &Attribute, depth: usize) -> Checked {
    // `R-CAT-DEFAULT` applies too: MISP serves the stored category, never
    // an empty one.
    attribute_labels(ctx, a)?;
    wrapper(
        a.wraps_attribute.0,
        "attribute element wraps an Attribute; refusing the ambiguous payload",
    )?;
    distributed_sharing_group(
        ctx,
        Subject::Attribute,
        &a.distribution,
        &a.SharingGroup,
        false,
    )?;
    galaxy_clusters(ctx, &a.Galaxy, false)?;
    correlations(a.RelatedAttribute.0, false)?;
    for proposal in a.ShadowAttribute.iter().flat_map(|p| p.items()) {
        related_attribute(ctx, proposal, depth)?;
    }
    analyst_children(ctx, &a.Note, &a.Opinion, &a.Relationship, depth + 1)
}

/// A related object: name, distribution, sharing group, its attributes if
/// present (MISP omits them), analyst data.
fn related_object(ctx: &Ctx, o: &Object, depth: usize) -> Checked {
    wrapper(
        o.wraps_object.0,
        "object element wraps an Object; refusing the ambiguous payload",
    )?;
    distribution(ctx, Subject::Object, &o.distribution, true)?;
    distributed_sharing_group(
        ctx,
        Subject::Object,
        &o.distribution,
        &o.SharingGroup,
        false,
    )?;
    if ctx.rules.blocked_object_types.contains(&o.name) {
        return rule(format!("object with a blocked type: {}", o.name));
    }
    for a in &o.Attribute {
        related_attribute(ctx, a, depth)?;
    }
    analyst_children(ctx, &o.Note, &o.Opinion, &o.Relationship, depth + 1)
}

/// `R-REL-EVENTDIST`: the event row embedded in a related attribute or
/// object. Its distribution decides who may see the target (an attribute
/// at 5 inherits it), so it is judged like the target's own.
fn embedded_event(ctx: &Ctx, noun: &str, ev: Option<EventRow>) -> Checked {
    let Some(ev) = ev else { return Ok(()) };
    match &ev.distribution {
        Dist::Level(level) if ctx.rules.blocked_distribution[*level as usize] => {
            return rule(format!(
                "related {noun}'s event has blocked distribution level: {level}"
            ))
        }
        Dist::Invalid(raw) => {
            return rule(format!(
                "related {noun}'s event has a non-canonical distribution value: {raw}"
            ))
        }
        Dist::Level(_) | Dist::Missing => {}
    }
    sharing_group(ctx, Subject::Event, &ev.SharingGroup)?;
    // Display-only: R-SG-UNRESOLVED.
    sharing_group_identified(
        ctx,
        "related event",
        &ev.distribution,
        ev.SharingGroup.is_some(),
        false,
    )
}
