//! HTTP-level refusals that depend only on the request head: the method
//! and the headers that would change what the exchange is (a protocol
//! switch, a tunnel, an expectation the gateway cannot honour). They run
//! first in [`super::request_head`], for allowlisted and sync requests
//! alike, so the live gateway and `evaluate` refuse the same heads with the
//! same status and reason.

use super::{Block, HeaderList};

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
            super::Sanitized(method)
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

#[cfg(test)]
mod tests {
    use super::check;

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
