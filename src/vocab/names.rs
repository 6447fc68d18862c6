//! Names and their formats: ids, host names, uuids, schemes, allowlisted
//! URLs and `host[:port]` authorities. The config validates with them (in
//! place of the JSON-schema `format`/`pattern` keywords misp-guard uses);
//! the engine and the data path parse requests with the same functions.

use std::net::IpAddr;

/// `^[a-z0-9_]+$`: instance ids, compartment ids, taxonomy keys.
pub fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// RFC 1123 host name (also used for allowlisted domains): dot-separated
/// labels of letters, digits and hyphens, no label starting or ending with a
/// hyphen, labels ≤ 63 bytes, whole name ≤ 253 bytes. A trailing dot is not
/// accepted: the policy compares names literally.
pub fn is_hostname(s: &str) -> bool {
    if s.is_empty() || s.len() > 253 {
        return false;
    }
    s.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

/// 8-4-4-4-12 hexadecimal, either case.
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn default_port(&self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    pub fn parse(s: &str) -> Option<Scheme> {
        if s.eq_ignore_ascii_case("http") {
            Some(Scheme::Http)
        } else if s.eq_ignore_ascii_case("https") {
            Some(Scheme::Https)
        } else {
            None
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// An allowlisted URL, split so it can be compared with a request without
/// string formatting on the hot path: scheme, lower-cased host, port (the
/// scheme's default when absent) and the exact path+query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedUrl {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    pub path_and_query: String,
}

/// Parses `scheme://host[:port][/path][?query]` for http/https. Userinfo and
/// fragments are refused: neither can appear in a request the gateway sees.
pub fn parse_url(s: &str) -> Result<AllowedUrl, &'static str> {
    let (scheme, rest) = s.split_once("://").ok_or("not an absolute URL")?;
    let scheme = Scheme::parse(scheme).ok_or("scheme must be http or https")?;
    if s.contains('#') {
        return Err("fragments are not allowed");
    }
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if authority.contains('@') {
        return Err("user info is not allowed");
    }
    let (host, port) = split_host_port(authority).ok_or("invalid host or port")?;
    let host_ok = is_hostname(&host) || host.parse::<IpAddr>().is_ok();
    if !host_ok {
        return Err("invalid host");
    }
    let port = port.unwrap_or(scheme.default_port());
    let path_and_query = match path {
        "" => "/".to_string(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_string(),
    };
    if path_and_query.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
        return Err("path must be printable ASCII without spaces");
    }
    Ok(AllowedUrl {
        scheme,
        host,
        port,
        path_and_query,
    })
}

/// Splits `host[:port]` / `[v6][:port]`, lower-casing the host.
pub fn split_host_port(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        match after {
            "" => (h, None),
            p => (h, Some(p.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            Some(_) => return None,
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            match p.parse::<u16>() {
                Ok(0) | Err(_) => return None,
                Ok(n) => Some(n),
            }
        }
        Some(_) => return None,
    };
    Some((host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(is_id("compartment_1"));
        assert!(!is_id("Compartment"));
        assert!(!is_id("a-b"));
        assert!(!is_id(""));
    }

    #[test]
    fn hostnames() {
        assert!(is_hostname("instance1-comp1.com"));
        assert!(is_hostname("localhost"));
        assert!(!is_hostname("-a.com"));
        assert!(!is_hostname("a..com"));
        assert!(!is_hostname("a.com."));
        assert!(!is_hostname("a_b.com"));
        assert!(!is_hostname(&"a".repeat(64)));
    }

    #[test]
    fn uuids() {
        assert!(is_uuid("b9e656ba-b9c0-4506-83ed-7b54b43a57cb"));
        assert!(is_uuid("B9E656BA-B9C0-4506-83ED-7B54B43A57CB"));
        assert!(!is_uuid("b9e656ba-b9c0-4506-83ed-7b54b43a57c"));
        assert!(!is_uuid("b9e656bab9c0-4506-83ed-7b54b43a57cbx"));
    }

    #[test]
    fn urls() {
        let u = parse_url("http://www.dan.me.uk:443/torlist/?exit").unwrap();
        assert_eq!(u.scheme, Scheme::Http);
        assert_eq!(u.host, "www.dan.me.uk");
        assert_eq!(u.port, 443);
        assert_eq!(u.path_and_query, "/torlist/?exit");
        let u = parse_url("HTTPS://Example.COM").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path_and_query.as_str()),
            ("example.com", 443, "/")
        );
        let u = parse_url("https://[fd00::1]:8443?x").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path_and_query.as_str()),
            ("fd00::1", 8443, "/?x")
        );
        assert!(parse_url("ftp://a.com/").is_err());
        assert!(parse_url("https://u@a.com/").is_err());
        assert!(parse_url("https://a.com:0/").is_err());
        assert!(parse_url("https://a.com:99999/").is_err());
        assert!(parse_url("https://a.com/#x").is_err());
        assert!(parse_url("a.com/x").is_err());
    }
}
