//! Answers the gateway writes itself.
//!
//! Every refusal is a JSON error in the shape MISP's own API errors have
//! (`{"name", "message", "url", "errors"}`, `Content-Type: application/json`),
//! whatever the status: MISP's sync client json-decodes the body of a failed
//! call inside its error handler (`Event::uploadEventToServer` reads
//! `errors`), and a body it cannot decode aborts the whole push at the first
//! refused event. `name`, `message` and `errors` carry the block reason,
//! worded as in the log.

use serde::Serialize;

use crate::http::head::{write_head, Headers};

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        408 => "Request Timeout",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// The body of a refusal, fields in the order MISP renders them.
#[derive(Serialize)]
struct MispError<'a> {
    /// MISP's exception renderer puts the exception's message in both
    /// `name` and `message`; the gateway puts the reason there. MISP's sync
    /// client logs most failed calls as "Remote server returns HTTP error
    /// code N …: " plus the body's first 100 characters, so the reason must
    /// come first to be seen there.
    name: &'a str,
    message: &'a str,
    /// The request path as the client sent it (empty when the refusal
    /// comes before a request could be read).
    url: &'a str,
    errors: &'a str,
}

/// The JSON body of a refusal.
pub fn error_body(reason: &str, url: &str) -> Vec<u8> {
    let e = MispError {
        name: reason,
        message: reason,
        url,
        errors: reason,
    };
    // Serializing a struct of strings cannot fail.
    serde_json::to_vec(&e).unwrap_or_default()
}

/// A complete refusal that closes the connection. `method` is the refused
/// request's method ("" when none was read): the answer to a HEAD request
/// announces its body's length but carries none (RFC 9110 §9.3.2).
pub fn refusal(method: &str, status: u16, reason: &str, url: &str) -> Vec<u8> {
    refusal_with(method, status, reason, url, Headers::default())
}

/// Seconds a client is asked to wait after a 503 for lack of memory: long
/// enough for the buffered bodies of the moment to be decided and sent.
pub const RETRY_AFTER_SECS: u64 = 5;

/// A 503 for work the gateway sheds (a memory budget is used up), with
/// `Retry-After`: the request was not forwarded and may be sent again.
pub fn busy(method: &str, reason: &str, url: &str) -> Vec<u8> {
    let mut h = Headers::default();
    h.push("Retry-After", RETRY_AFTER_SECS.to_string());
    refusal_with(method, 503, reason, url, h)
}

fn refusal_with(method: &str, status: u16, reason: &str, url: &str, mut h: Headers) -> Vec<u8> {
    let body = error_body(reason, url);
    h.push("Content-Type", "application/json; charset=UTF-8");
    h.push("Content-Length", body.len().to_string());
    h.push("Connection", "close");
    let mut out = Vec::new();
    write_head(
        &format!("HTTP/1.1 {status} {}", reason_phrase(status)),
        &h,
        &mut out,
    );
    if method != "HEAD" {
        out.extend_from_slice(&body);
    }
    out
}

/// A refusal written before any request was understood (unreadable head,
/// head timeout, a refused CONNECT): the status phrase is the only reason.
/// Kept under this name for the connection-level callers (`conn.rs`).
pub fn plain(status: u16) -> Vec<u8> {
    refusal("", status, reason_phrase(status), "")
}

pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
pub const CONNECT_OK: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn split(answer: &[u8]) -> (String, serde_json::Value) {
        let text = String::from_utf8(answer.to_vec()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (head.to_string(), serde_json::from_str(body).unwrap())
    }

    #[test]
    fn policy_refusal_is_a_misp_api_error() {
        let reason = "event has blocked tag: tlp:red";
        let answer = refusal("POST", 403, reason, "/events/add/metadata:1");
        let (head, body) = split(&answer);
        assert!(head.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{head}");
        assert!(head.contains("\r\nContent-Type: application/json; charset=UTF-8"));
        assert!(head.contains("\r\nConnection: close"));
        let len = answer.len() - head.len() - 4;
        assert!(
            head.contains(&format!("\r\nContent-Length: {len}")),
            "{head}"
        );
        // The keys MISP's JSON errors have, in its order; `errors` is a
        // string so uploadEventToServer can log it as is.
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.ends_with(&format!(
                r#"{{"name":"{reason}","message":"{reason}","url":"/events/add/metadata:1","errors":"{reason}"}}"#
            )),
            "{text}"
        );
        assert_eq!(body.as_object().unwrap().len(), 4);
        assert_eq!(body["name"], reason);
        assert_eq!(body["message"], reason);
        assert_eq!(body["url"], "/events/add/metadata:1");
        assert_eq!(body["errors"], reason);
    }

    #[test]
    fn every_status_answers_json_with_its_phrase() {
        for status in [400, 403, 408, 413, 415, 417, 431, 502, 503, 504] {
            let (head, body) = split(&plain(status));
            let phrase = reason_phrase(status);
            assert!(
                head.starts_with(&format!("HTTP/1.1 {status} {phrase}\r\n")),
                "{head}"
            );
            assert!(head.contains("Content-Type: application/json"));
            assert_eq!(body["name"], phrase);
            assert_eq!(body["errors"], phrase);
            assert_eq!(body["url"], "");
        }
    }

    #[test]
    fn reason_with_quotes_and_controls_stays_valid_json() {
        let reason = "bad \"tag\"\n\u{1b}[31m";
        let (_, body) = split(&refusal("GET", 403, reason, "/a\"b"));
        assert_eq!(body["errors"], reason);
        assert_eq!(body["url"], "/a\"b");
    }

    #[test]
    fn reason_is_within_what_misp_logs_of_a_failed_call() {
        // HttpSocketHttpException quotes the body's first 100 characters.
        let reason = "event has blocked tag: tlp:red";
        let body = error_body(reason, "/events/add/metadata:1");
        assert!(String::from_utf8_lossy(&body[..100]).contains(reason));
    }

    #[test]
    fn busy_is_a_503_with_retry_after() {
        let reason = "body buffer budget exceeded: 1 bytes buffered";
        let answer = busy("POST", reason, "/events/add");
        let (head, body) = split(&answer);
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{head}"
        );
        assert!(
            head.contains(&format!("\r\nRetry-After: {RETRY_AFTER_SECS}\r\n")),
            "{head}"
        );
        assert!(head.contains("\r\nConnection: close"));
        assert_eq!(body["errors"], reason);
        assert_eq!(body["url"], "/events/add");
    }

    #[test]
    fn head_refusal_has_no_body() {
        let answer = String::from_utf8(refusal("HEAD", 403, "endpoint not allowed", "/x")).unwrap();
        assert!(answer.ends_with("\r\n\r\n"), "{answer}");
        assert!(!answer.contains("Content-Length: 0"));
    }
}
