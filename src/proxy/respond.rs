//! Answers the gateway writes itself.

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

/// A complete `text/plain` answer that closes the connection. A 403 says
/// only `Forbidden`, as misp-guard does: the reason is in the log, not in
/// what a possibly hostile peer reads.
pub fn plain(status: u16) -> Vec<u8> {
    let body = reason_phrase(status);
    let mut h = Headers::default();
    h.push("Content-Type", "text/plain");
    h.push("Content-Length", body.len().to_string());
    h.push("Connection", "close");
    let mut out = Vec::new();
    write_head(&format!("HTTP/1.1 {status} {body}"), &h, &mut out);
    out.extend_from_slice(body.as_bytes());
    out
}

pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
pub const CONNECT_OK: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";

#[cfg(test)]
mod tests {
    #[test]
    fn forbidden_is_misp_guard_shaped() {
        let r = String::from_utf8(super::plain(403)).unwrap();
        assert!(r.starts_with("HTTP/1.1 403 Forbidden\r\n"));
        assert!(r.contains("Content-Type: text/plain\r\n"));
        assert!(r.ends_with("\r\n\r\nForbidden"));
    }
}
