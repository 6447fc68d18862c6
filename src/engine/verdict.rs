//! What the engine answers: a [`Block`] (status, reason) or a pass, and the
//! one log-line format every block is reported in.

use std::fmt;

/// A refused request or response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// HTTP status the client gets (403 for policy decisions).
    pub status: u16,
    /// The block reason, worded as misp-guard words it where misp-guard has
    /// the rule (SIEM rules match on these strings).
    pub reason: String,
    /// An extra log line misp-guard emits for some blocks
    /// (`rejecting non allowed request to <path>`).
    pub detail: Option<String>,
}

impl Block {
    pub fn forbidden(reason: impl Into<String>) -> Block {
        Block {
            status: 403,
            reason: reason.into(),
            detail: None,
        }
    }

    pub fn with_status(status: u16, reason: impl Into<String>) -> Block {
        Block {
            status,
            reason: reason.into(),
            detail: None,
        }
    }

    /// `request blocked: [METHOD]path - reason`, safe to write to a log.
    pub fn log_line(&self, method: &str, path: &str) -> String {
        format!(
            "request blocked: [{}]{} - {}",
            Sanitized(method),
            Sanitized(path),
            Sanitized(&self.reason)
        )
    }
}

/// Displays a string with control characters removed, so a crafted path or
/// tag cannot forge extra log lines (log injection).
pub struct Sanitized<'a>(pub &'a str);

impl fmt::Display for Sanitized<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        for part in self.0.split(|c: char| c.is_control()) {
            f.write_str(part)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_line_strips_control_characters() {
        let b = Block::forbidden("event has blocked tag: tlp:red\n2026 fake line");
        assert_eq!(
            b.log_line("POST", "/events/add\r\n\x1b[31m"),
            "request blocked: [POST]/events/add[31m - event has blocked tag: tlp:red2026 fake line"
        );
    }
}
