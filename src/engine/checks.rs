//! The content rules of POLICY.md §3, applied to the typed views of
//! `model`. Order follows misp-guard exactly (the first violation is the
//! reason reported), with this gateway's extra carriers and canonical-value
//! checks slotted in where the field they harden is read.

use std::sync::Arc;

use serde::Deserialize;

use super::model::{
    Attribute, AttributeDoc, Dist, Distributed, Event, Galaxy, GalaxyClusterDoc, Listed, Object,
    ObjectDoc, Relationship, SharingGroup, Tag, TagLink,
};
use crate::policy::caseless::starts_with_folded;
use crate::policy::Rules;

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

/// Required taxonomies. `has_carrier` is whether any tag list was present at
/// all: misp-guard reports a missing list differently from a list that lacks
/// the taxonomy.
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
        let satisfied = tags.clone().any(|t| {
            starts_with_folded(t, &taxonomy.prefix)
                && (taxonomy.allowed.is_empty() || taxonomy.allowed.contains(t))
        });
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
            _ => "attribute with a blocked sharing group uuid",
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

/// Event-level checks; `full` also requires and walks `Attribute[]` and
/// `Object[]` (a pushed or pulled event). A relationship's related event is
/// checked at event level, plus any attributes or objects it happens to carry.
pub fn event(ctx: &Ctx, ev: &Event, full: bool) -> Checked {
    let tags = tag_names(&ev.Tag, &ev.EventTag, &ev.Galaxy);
    for name in tags.clone() {
        if ctx.rules.blocked_tags.contains(name) {
            return rule(format!("event has blocked tag: {name}"));
        }
    }
    let has_carrier = ev.Tag.is_some() || ev.EventTag.is_some() || tags.clone().next().is_some();
    required_taxonomies(ctx, Subject::Event, has_carrier, tags)?;
    distribution(ctx, Subject::Event, &ev.distribution, true)?;
    for report in ev.EventReport.iter().flatten() {
        distribution(ctx, Subject::EventReport, &report.distribution, true)?;
    }
    sharing_group(ctx, Subject::Event, &ev.SharingGroup)?;
    analyst_data(ctx, &ev.Note, &ev.Opinion)?;
    relationships(ctx, &ev.Relationship)?;

    if full && ev.Attribute.is_absent() {
        return rule("event has no Attribute list".into());
    }
    listed(ctx, &ev.Attribute)?;
    if full && ev.Object.is_absent() {
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

pub fn attribute(ctx: &Ctx, a: &Attribute) -> Checked {
    let r = ctx.rules;
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
    required_taxonomies(ctx, Subject::Attribute, has_carrier, tags)?;
    sharing_group(ctx, Subject::Attribute, &a.SharingGroup)?;
    for proposal in a.ShadowAttribute.iter().flatten() {
        attribute(ctx, proposal)?;
    }
    analyst_data(ctx, &a.Note, &a.Opinion)?;
    relationships(ctx, &a.Relationship)
}

pub fn object(ctx: &Ctx, o: &Object) -> Checked {
    distribution(ctx, Subject::Object, &o.distribution, true)?;
    sharing_group(ctx, Subject::Object, &o.SharingGroup)?;
    if ctx.rules.blocked_object_types.contains(&o.name) {
        return rule(format!("object with a blocked type: {}", o.name));
    }
    for a in &o.Attribute {
        attribute(ctx, a)?;
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
            event(ctx, &serde_json::from_str::<Doc>(json)?.Event, false)
        }
        "Object" => object(ctx, &serde_json::from_str::<ObjectDoc>(json)?.Object),
        "Attribute" => attribute(ctx, &serde_json::from_str::<AttributeDoc>(json)?.Attribute),
        "GalaxyCluster" => galaxy_cluster(ctx, &serde_json::from_str(json)?),
        "Note" | "Opinion" => analyst(ctx, &serde_json::from_str(json)?),
        _ => relationship(ctx, &serde_json::from_str(json)?),
    }
}
