//! What the event readers, the typed views and the content rules share:
//! the context a check runs in, why a body may not pass, and how a
//! streamed record's fields are read. It sits below `model` (whose
//! `schema!` records generate their streaming dispatch against
//! `StreamField`), `checks` (the rules) and `stream` (the readers, which
//! implement `StreamField`), so none of those three imports another one
//! back.

use std::sync::Arc;

use serde::de::{self, MapAccess};

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

/// The rules in force plus, on event pulls, the org the pulling user belongs
/// to (`X-UserOrgUUID`).
pub struct Ctx<'r> {
    pub rules: &'r Rules,
    pub user_org: Option<&'r str>,
}

/// One list element read by the incremental reader: its violation (if
/// any) and the bytes it took, or the parse error.
pub type ElementRead = Result<(Option<Violation>, usize), serde_json::Error>;

/// How the streaming reader reads one field type of a `schema!` record
/// marked `[streamed]`: `Listed` fields element by element, everything else
/// as serde's derive would. A field of a type without an impl here does not
/// compile, rather than being read differently by the two readers.
pub trait StreamField<'de>: Sized {
    fn read<A: MapAccess<'de>>(map: &mut A, ctx: &Ctx) -> Result<Self, A::Error>;

    /// For a `Listed` field, the incremental reader's element step: the
    /// element at the start of `text` read and checked, exactly as
    /// `ListSeed` does it, with the length it took. `None` for every other
    /// field type.
    fn element(_text: &'de str, _ctx: &Ctx) -> Option<ElementRead> {
        None
    }

    /// For a `Listed` field, the list read element by element elsewhere
    /// (its first violation). `None` for every other field type.
    fn streamed(_first: Option<Violation>) -> Option<Self> {
        None
    }
}

/// Duplicate-key guard for hand-written visitors (derived ones have their
/// own): the keys read so far, at most a dozen per object.
#[derive(Default)]
pub struct Seen(Vec<&'static str>);

impl Seen {
    pub fn once<E: de::Error>(&mut self, name: &'static str) -> Result<(), E> {
        if self.0.contains(&name) {
            return Err(E::duplicate_field(name));
        }
        self.0.push(name);
        Ok(())
    }
}
