//! How a connection reaches a listener: one type for the config, the
//! command line, the listeners and the nftables rules.

/// How a listener receives its connections; decides how it is bound and
/// how the original destination is recovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenMode {
    /// nftables `redirect`/`dnat`: original destination via SO_ORIGINAL_DST.
    Redirect,
    /// nftables `tproxy`: original destination is the socket's local address.
    Tproxy,
    /// HTTP proxy (CONNECT and absolute-form), as MISP's `Proxy.host`.
    Explicit,
}

impl ListenMode {
    pub fn parse(s: &str) -> Option<ListenMode> {
        match s {
            "redirect" => Some(ListenMode::Redirect),
            "tproxy" => Some(ListenMode::Tproxy),
            "explicit" => Some(ListenMode::Explicit),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ListenMode::Redirect => "redirect",
            ListenMode::Tproxy => "tproxy",
            ListenMode::Explicit => "explicit",
        }
    }

    /// Modes the nftables rules capture for (`nft --mode`, `--nftables`).
    pub fn parse_capture(s: &str) -> Option<ListenMode> {
        ListenMode::parse(s).filter(|m| *m != ListenMode::Explicit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_capture_excludes_explicit() {
        for m in [
            ListenMode::Redirect,
            ListenMode::Tproxy,
            ListenMode::Explicit,
        ] {
            assert_eq!(ListenMode::parse(m.as_str()), Some(m));
        }
        assert_eq!(ListenMode::parse("Redirect"), None);
        assert_eq!(
            ListenMode::parse_capture("tproxy"),
            Some(ListenMode::Tproxy)
        );
        assert_eq!(
            ListenMode::parse_capture("redirect"),
            Some(ListenMode::Redirect)
        );
        assert_eq!(ListenMode::parse_capture("explicit"), None);
    }
}
