//! HTTP-level refusals that depend only on the request head: the method
//! and the headers that would change what the exchange is (a protocol
//! switch, a tunnel, an expectation the gateway cannot honour, a Host
//! naming another destination). They run first in [`super::request_head`],
//! for allowlisted and sync requests alike, so the live gateway and
//! `evaluate` refuse the same heads with the same status and reason.

use super::{Block, HeaderList, Sanitized};
use crate::policy::Policy;
use crate::vocab::split_host_port;

/// Methods that may cross the gateway, spelled as RFC 9110 registers them.
/// CakePHP routes on the method string as sent, and MISP sync only uses
/// GET, HEAD and POST; any other spelling (`get`, `Post`) or extension
/// method would be treated differently by each hop. CONNECT and TRACE are
/// absent on purpose: a tunnel inside the tunnel, and an echo of the
/// request (credentials included) back to the client.
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"];

/// The only expectation the gateway can meet: it answers `100 Continue`
/// itself once the head is allowed, and never forwards `Expect`.
const CONTINUE: &[u8] = b"100-continue";

/// Refuses a head whose method or protocol headers are not plain HTTP/1.1
/// request/response (checked in this order).
pub fn check<H: HeaderList + ?Sized>(method: &str, headers: &H) -> Result<(), Block> {
    if method == "CONNECT" || headers.values("upgrade").next().is_some() {
        return Err(Block::forbidden(
            "protocol upgrades and nested CONNECT are not allowed",
        ));
    }
    if !METHODS.contains(&method) {
        return Err(Block::forbidden(format!(
            "method {} is not allowed",
            Sanitized(method)
        )));
    }
    let mut expect = headers.values("expect");
    if let Some(first) = expect.next() {
        let several = expect.next().is_some();
        if several || !first.trim_ascii().eq_ignore_ascii_case(CONTINUE) {
            return Err(Block::with_status(417, "unsupported Expect"));
        }
    }
    Ok(())
}

/// The Host header against `host`, the destination the request is decided
/// on (the connection's TLS SNI or CONNECT authority, the absolute-form
/// target, or the Host header itself). One Host at most, well formed, and
/// naming that destination: the same name in any case, or another name of
/// the same instance (its IP literal — a MISP configured with
/// `https://<ip>` sends `Host: <ip>` and no SNI). MISP builds absolute URLs
/// from Host, so one naming another instance is refused.
pub fn host_header<H: HeaderList + ?Sized>(
    policy: &Policy,
    host: &str,
    headers: &H,
) -> Result<(), Block> {
    let mut values = headers.values("host");
    let Some(first) = values.next() else {
        return Ok(());
    };
    if values.next().is_some() {
        return Err(Block::with_status(400, "several Host headers"));
    }
    let named = std::str::from_utf8(first)
        .ok()
        .and_then(split_host_port)
        .ok_or_else(|| Block::with_status(400, "invalid Host header"))?
        .0;
    if names_same_destination(policy, host, &named) {
        Ok(())
    } else {
        Err(Block::forbidden(format!(
            "Host {} does not match the connection's destination {}",
            Sanitized(&named),
            Sanitized(host)
        )))
    }
}

/// Whether two names designate the same destination: equal in any case, or
/// both names of one instance.
pub fn names_same_destination(policy: &Policy, a: &str, b: &str) -> bool {
    if a.eq_ignore_ascii_case(b) {
        return true;
    }
    match (policy.instance_by_host(a), policy.instance_by_host(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn verdict(method: &str, headers: &[(&str, &str)]) -> Result<(), (u16, String)> {
        check(method, headers).map_err(|b| (b.status, b.reason))
    }

    #[test]
    fn plain_sync_heads_pass() {
        assert_eq!(verdict("GET", &[]), Ok(()));
        assert_eq!(verdict("HEAD", &[("Accept", "application/json")]), Ok(()));
        assert_eq!(verdict("POST", &[("Expect", "100-continue")]), Ok(()));
        assert_eq!(verdict("POST", &[("expect", "100-Continue ")]), Ok(()));
    }

    #[test]
    fn upgrades_and_tunnels_are_refused() {
        let why = (
            403,
            "protocol upgrades and nested CONNECT are not allowed".to_string(),
        );
        assert_eq!(verdict("CONNECT", &[]), Err(why.clone()));
        assert_eq!(
            verdict("GET", &[("Upgrade", "websocket")]),
            Err(why.clone())
        );
        assert_eq!(verdict("GET", &[("upgrade", "")]), Err(why));
    }

    #[test]
    fn method_must_be_spelled_as_registered() {
        for m in ["get", "Post", "TRACE", "PROPFIND", "GETX"] {
            assert_eq!(
                verdict(m, &[]),
                Err((403, format!("method {m} is not allowed"))),
                "{m}"
            );
        }
        for m in ["PUT", "DELETE", "OPTIONS", "PATCH"] {
            assert_eq!(verdict(m, &[]), Ok(()), "{m}");
        }
    }

    #[test]
    fn only_one_100_continue_expectation() {
        let why = Err((417, "unsupported Expect".to_string()));
        assert_eq!(verdict("POST", &[("Expect", "something-else")]), why);
        assert_eq!(verdict("POST", &[("Expect", "")]), why);
        assert_eq!(
            verdict(
                "POST",
                &[("Expect", "100-continue"), ("Expect", "100-continue")]
            ),
            why
        );
    }

    fn two_instances() -> Policy {
        let inst = |ip: &str, host: &str| {
            let id = host.replace('.', "_");
            format!(
                r#""{id}": {{"ip": "{ip}", "host": "{host}", "port": 443, "compartment_id": "c",
                "affiliation": "", "taxonomies_rules": {{"required_taxonomies": [], "allowed_tags": {{}},
                "blocked_tags": []}}, "blocked_distribution_levels": [], "blocked_sharing_groups_uuids": [],
                "blocked_attribute_types": [], "blocked_attribute_categories": [], "blocked_object_types": []}}"#
            )
        };
        let config = format!(
            r#"{{"allowlist": {{"urls": [], "domains": ["feeds.test"]}},
            "compartments_rules": {{"can_reach": {{"c": ["c"]}}}},
            "instances": {{{}, {}}}}}"#,
            inst("192.0.2.10", "a.test"),
            inst("192.0.2.20", "b.test")
        );
        crate::config::from_slice(config.as_bytes(), Path::new("t.json")).unwrap()
    }

    #[test]
    fn host_may_name_the_destination_by_ip_or_any_case() {
        let policy = two_instances();
        let same = |a, b| names_same_destination(&policy, a, b);
        assert!(same("a.test", "a.test"));
        assert!(same("a.test", "A.Test"));
        assert!(same("a.test", "192.0.2.10"));
        assert!(same("feeds.test", "FEEDS.test"));
        // Another instance, by name or address, or an unknown name: refused.
        assert!(!same("a.test", "b.test"));
        assert!(!same("a.test", "192.0.2.20"));
        assert!(!same("a.test", "c.test"));
        assert!(!same("feeds.test", "a.test"));
    }

    #[test]
    fn host_header_checks() {
        let policy = two_instances();
        let host = |values: &[&str]| {
            let h: Vec<(&str, &str)> = values.iter().map(|v| ("Host", *v)).collect();
            host_header(&policy, "a.test", h.as_slice()).map_err(|b| (b.status, b.reason))
        };
        assert_eq!(host(&[]), Ok(()));
        assert_eq!(host(&["a.test:443"]), Ok(()));
        assert_eq!(host(&["192.0.2.10"]), Ok(()));
        assert_eq!(
            host(&["a.test", "a.test"]),
            Err((400, "several Host headers".into()))
        );
        assert_eq!(
            host(&["a.test:x"]),
            Err((400, "invalid Host header".into()))
        );
        assert_eq!(
            host(&["b.test"]),
            Err((
                403,
                "Host b.test does not match the connection's destination a.test".into()
            ))
        );
    }

    #[test]
    fn upgrade_is_reported_before_method_and_expect() {
        assert_eq!(
            verdict("get", &[("Upgrade", "h2c"), ("Expect", "x")]).map_err(|e| e.0),
            Err(403)
        );
        assert_eq!(
            verdict("get", &[("Expect", "x")]),
            Err((403, "method get is not allowed".into()))
        );
    }
}
