//! Case-insensitive, whitespace-trimmed string sets for tags, types,
//! categories, object names and sharing-group uuids.
//!
//! The hot path checks every attribute of events with tens of thousands of
//! them, so a lookup must not allocate: ASCII input (the norm) is lower-cased
//! into a stack buffer; only non-ASCII input pays for Unicode lower-casing.

use std::collections::HashSet;

#[derive(Debug, Default, Clone)]
pub struct CaselessSet {
    entries: HashSet<Box<str>>,
}

/// Longest ASCII value lower-cased on the stack; longer values allocate.
const STACK_LEN: usize = 256;

impl CaselessSet {
    pub fn new<I, S>(items: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        CaselessSet {
            entries: items.into_iter().map(|s| fold(s.as_ref()).into()).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn contains(&self, value: &str) -> bool {
        if self.entries.is_empty() {
            return false;
        }
        let value = value.trim();
        if value.is_ascii() && value.len() <= STACK_LEN {
            let mut buf = [0u8; STACK_LEN];
            let buf = &mut buf[..value.len()];
            buf.copy_from_slice(value.as_bytes());
            buf.make_ascii_lowercase();
            // ASCII in, ASCII out: always valid UTF-8.
            let lowered = std::str::from_utf8(buf).unwrap_or_default();
            self.entries.contains(lowered)
        } else {
            self.entries.contains(fold(value).as_str())
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|s| &**s)
    }
}

/// The canonical form every comparison uses: trimmed, Unicode lower case.
pub fn fold(s: &str) -> String {
    s.trim().to_lowercase()
}

/// `value` starts with `prefix` ignoring case, after trimming leading
/// whitespace of `value`. `prefix` must already be folded.
pub fn starts_with_folded(value: &str, prefix: &str) -> bool {
    let value = value.trim_start();
    if value.is_ascii() {
        value.len() >= prefix.len()
            && value.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    } else {
        fold(value).starts_with(prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_its_entries() {
        // check-config prints these counts.
        assert_eq!(CaselessSet::new(Vec::<String>::new()).len(), 0);
        assert!(CaselessSet::new(Vec::<String>::new()).is_empty());
        let s = CaselessSet::new(["a", "b", "c"]);
        assert_eq!(s.len(), 3);
        assert!(!s.is_empty());
    }

    #[test]
    fn trims_and_ignores_case() {
        let s = CaselessSet::new([" TLP:Red ", "Passport-Number"]);
        assert!(s.contains("tlp:red"));
        assert!(s.contains("  TLP:RED\t"));
        assert!(s.contains("passport-number"));
        assert!(!s.contains("tlp:amber"));
        assert!(!s.contains("tlp:re"));
    }

    #[test]
    fn non_ascii_and_long_values() {
        let s = CaselessSet::new(["ÄRGER", &"x".repeat(300)]);
        assert!(s.contains("ärger"));
        assert!(s.contains(&"X".repeat(300)));
        assert!(!CaselessSet::default().contains("a"));
    }

    #[test]
    fn prefix() {
        assert!(starts_with_folded(" TLP:green", "tlp:"));
        assert!(!starts_with_folded("tl", "tlp:"));
        assert!(!starts_with_folded("pap:green", "tlp:"));
        assert!(starts_with_folded("Ülp:x", "ülp:"));
    }
}
