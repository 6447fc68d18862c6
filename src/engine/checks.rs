//! The content rules of POLICY.md §3, applied to the typed views of
//! `model`. Order follows misp-guard exactly (the first violation is the
//! reason reported), with this gateway's extra carriers and canonical-value
//! checks slotted in where the field they harden is read.

use std::sync::Arc;

use serde::Deserialize;

use super::model::{
    Attribute, AttributeDoc, ClusterTag, Dist, Distributed, Event, EventReport, Galaxy,
    GalaxyClusterDoc, Listed, Object, ObjectDoc, Proposal, RelatedEvent, Relationship,
    SharingGroup, Tag, TagLink,
};
use crate::policy::{RequiredTaxonomy, Rules};

/// Why a body may not pass. Cloneable (the error shared) because a
/// streamed list keeps its first violation inside the `Event` it fills,
/// which `event` then reads by reference.
#[derive(Debug, Clone)]
pub enum Violation {
    /// A rule matched; the text is the block reason.
    Rule(String),
    /// A field the policy reads is missing, duplicated or of the wrong type.
    Malformed(Arc<serde_json::Error>),
}

impl From<serde_json::Error> for Violation {
    fn from(e: serde_json::Error) -> Self {
        Violation::Malformed(Arc::new(e))
    }
}

pub type Checked = Result<(), Violation>;

fn rule(reason: String) -> Checked {
    Err(Violation::Rule(reason))
}

/// The rules in force plus, on event pulls, the org the pulling user belongs
/// to (`X-UserOrgUUID`).
pub struct Ctx<'r> {
    pub rules: &'r Rules,
    pub user_org: Option<&'r str>,
}

/// The things that carry a distribution, with misp-guard's wording.
#[derive(Clone, Copy)]
pub enum Subject {
    Event,
    EventReport,
    Attribute,
    Object,
    GalaxyCluster,
    AnalystData,
    RelatedEvent,
}

/// What an event body is to the MISP that reads it. MISP stores the
/// records of `Imported` and `Answer` events; a relationship's related
/// event is only displayed (a *display-only carrier*, MISP-IMPORT.md).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EventRole {
    /// A pushed event or a pulled `events/view` answer: imported by
    /// `Event::_add`/`_edit`; must carry `Attribute` and `Object` lists.
    Imported,
    /// The event a push is answered with (`R-PUSH-ANSWER`): the receiver's
    /// stored event; the lists are absent from `metadata` answers.
    Answer,
    /// A relationship's `related_object` event: served, never stored.
    Related,
}

impl EventRole {
    fn captured(self) -> bool {
        !matches!(self, EventRole::Related)
    }
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

/// R-REPORT-WRAP, R-DIST, R-REPORT-SG, R-SG-LOCALID on one report.
pub fn event_report(ctx: &Ctx, r: &EventReport) -> Checked {
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
        true,
    )
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
    )
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

fn analyst_data(
    ctx: &Ctx,
    notes: &Option<Vec<Distributed>>,
    opinions: &Option<Vec<Distributed>>,
) -> Checked {
    for item in notes.iter().flatten().chain(opinions.iter().flatten()) {
        distribution(ctx, Subject::AnalystData, &item.distribution, true)?;
    }
    Ok(())
}

fn relationships(ctx: &Ctx, list: &Option<Vec<Relationship>>) -> Checked {
    for r in list.iter().flatten() {
        relationship(ctx, r)?;
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
        role.captured(),
    )?;
    galaxy_clusters(ctx, &ev.Galaxy, role.captured())?;
    related_events(ctx, &ev.RelatedEvent)?;
    correlations(ev.RelatedAttribute.0, ev.extensionEvents.0)?;
    analyst_data(ctx, &ev.Note, &ev.Opinion)?;
    relationships(ctx, &ev.Relationship)?;

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

/// A relationship's related attribute: served, never stored.
pub fn related_attribute(ctx: &Ctx, a: &Attribute) -> Checked {
    attribute_as(ctx, a, AttrRole::Related)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum AttrRole {
    Stored,
    Proposal,
    Related,
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

fn attribute_as(ctx: &Ctx, a: &Attribute, role: AttrRole) -> Checked {
    let r = ctx.rules;
    let captured = role != AttrRole::Related;
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
    category_given(&a.category)?;
    if r.blocked_attribute_categories.contains(&a.category) {
        return rule(format!("attribute with a blocked category: {}", a.category));
    }
    if r.blocked_attribute_types.contains(&a.kind) {
        return rule(format!("attribute with a blocked type: {}", a.kind));
    }
    distribution(ctx, Subject::Attribute, &a.distribution, false)?;
    let tags = tag_names(&a.Tag, &a.AttributeTag, &a.Galaxy);
    for name in tags.clone() {
        if r.blocked_tags.contains(name) {
            return rule(format!("attribute with a blocked tag: {name}"));
        }
    }
    let has_carrier = a.Tag.is_some() || a.AttributeTag.is_some() || tags.clone().next().is_some();
    if role != AttrRole::Proposal {
        required_taxonomies(ctx, Subject::Attribute, has_carrier, counted_tags(&a.Tag))?;
    }
    distributed_sharing_group(
        ctx,
        Subject::Attribute,
        &a.distribution,
        &a.SharingGroup,
        captured,
    )?;
    galaxy_clusters(ctx, &a.Galaxy, captured)?;
    if a.RelatedAttribute.0 {
        correlations(true, false)?;
    }
    let proposals_role = if captured {
        AttrRole::Proposal
    } else {
        AttrRole::Related
    };
    for proposal in a.ShadowAttribute.iter().flat_map(|p| p.items()) {
        attribute_as(ctx, proposal, proposals_role)?;
    }
    analyst_data(ctx, &a.Note, &a.Opinion)?;
    relationships(ctx, &a.Relationship)
}

/// An object MISP stores (in an event).
pub fn object(ctx: &Ctx, o: &Object) -> Checked {
    object_as(ctx, o, true)
}

/// A relationship's related object: served, never stored.
pub fn related_object(ctx: &Ctx, o: &Object) -> Checked {
    object_as(ctx, o, false)
}

fn object_as(ctx: &Ctx, o: &Object, captured: bool) -> Checked {
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
        captured,
    )?;
    if ctx.rules.blocked_object_types.contains(&o.name) {
        return rule(format!("object with a blocked type: {}", o.name));
    }
    let role = if captured {
        AttrRole::Stored
    } else {
        AttrRole::Related
    };
    for a in &o.Attribute {
        attribute_as(ctx, a, role)?;
    }
    analyst_data(ctx, &o.Note, &o.Opinion)?;
    relationships(ctx, &o.Relationship)
}

pub fn galaxy_cluster(ctx: &Ctx, c: &GalaxyClusterDoc) -> Checked {
    distribution(
        ctx,
        Subject::GalaxyCluster,
        &c.GalaxyCluster.distribution,
        true,
    )
}

pub fn analyst(ctx: &Ctx, d: &Distributed) -> Checked {
    distribution(ctx, Subject::AnalystData, &d.distribution, true)
}

/// A relationship's own distribution, then whatever it points at.
/// Nesting is bounded by serde_json's recursion limit on the whole body.
pub fn relationship(ctx: &Ctx, r: &Relationship) -> Checked {
    distribution(ctx, Subject::AnalystData, &r.distribution, true)?;
    let Some(kind) = r.related_object_type.as_deref() else {
        return Ok(());
    };
    let known = matches!(
        kind,
        "Event" | "Object" | "Attribute" | "GalaxyCluster" | "Note" | "Opinion" | "Relationship"
    );
    if !known {
        return Ok(());
    }
    let Some(raw) = r.related_object else {
        return rule(format!("relationship to {kind} has no related_object"));
    };
    let json = raw.get();
    match kind {
        "Event" => {
            #[derive(Deserialize)]
            #[allow(non_snake_case)]
            struct Doc<'a> {
                #[serde(borrow)]
                Event: Event<'a>,
            }
            let doc = serde_json::from_str::<Doc>(json)?;
            event(ctx, &doc.Event, EventRole::Related)
        }
        "Object" => related_object(ctx, &serde_json::from_str::<ObjectDoc>(json)?.Object),
        "Attribute" => {
            related_attribute(ctx, &serde_json::from_str::<AttributeDoc>(json)?.Attribute)
        }
        "GalaxyCluster" => galaxy_cluster(ctx, &serde_json::from_str(json)?),
        "Note" | "Opinion" => analyst(ctx, &serde_json::from_str(json)?),
        _ => relationship(ctx, &serde_json::from_str(json)?),
    }
}
