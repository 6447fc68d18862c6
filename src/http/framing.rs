//! Message body length (RFC 9112 §6). Anything ambiguous is an error: the
//! gateway and the server must never disagree on where a body ends.

use super::head::{HeadError, Headers, RequestHead, ResponseHead, Version};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    Length(u64),
    Chunked,
    /// Response body ends when the server closes (no length, not chunked).
    Close,
}

/// Framing of a request body. Requests without Content-Length or
/// Transfer-Encoding have no body (§6.3 rule 7).
pub fn request_framing(h: &RequestHead) -> Result<Framing, HeadError> {
    Ok(match declared(&h.headers, h.version)? {
        Some(f) => f,
        None => Framing::None,
    })
}

/// Framing of a response to `request_method`.
pub fn response_framing(request_method: &str, h: &ResponseHead) -> Result<Framing, HeadError> {
    if request_method == "HEAD"
        || (100..200).contains(&h.status)
        || h.status == 204
        || h.status == 304
    {
        return Ok(Framing::None);
    }
    if request_method == "CONNECT" && (200..300).contains(&h.status) {
        return Ok(Framing::None);
    }
    Ok(declared(&h.headers, h.version)?.unwrap_or(Framing::Close))
}

fn declared(headers: &Headers, version: Version) -> Result<Option<Framing>, HeadError> {
    let te: Vec<&[u8]> = headers.get_all("transfer-encoding").collect();
    let cl: Vec<&[u8]> = headers.get_all("content-length").collect();
    if !te.is_empty() {
        if !cl.is_empty() {
            return Err(HeadError::Malformed(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        if version == Version::Http10 {
            return Err(HeadError::Malformed("Transfer-Encoding in HTTP/1.0"));
        }
        // MISP never sends another transfer coding; exactly `chunked` once.
        if te.len() != 1 || !te[0].trim_ascii().eq_ignore_ascii_case(b"chunked") {
            return Err(HeadError::Malformed(
                "Transfer-Encoding other than a single chunked",
            ));
        }
        return Ok(Some(Framing::Chunked));
    }
    match cl.as_slice() {
        [] => Ok(None),
        [v] => parse_length(v).map(|n| Some(Framing::Length(n))),
        _ => Err(HeadError::Malformed("several Content-Length fields")),
    }
}

fn parse_length(v: &[u8]) -> Result<u64, HeadError> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::Malformed("invalid Content-Length"));
    }
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(HeadError::Malformed("invalid Content-Length"))
}

#[cfg(test)]
mod tests {
    use super::super::head::{parse_request, parse_response};
    use super::*;

    fn req(raw: &str) -> Result<Framing, HeadError> {
        let (h, _) = parse_request(raw.as_bytes(), 65536).unwrap().unwrap();
        request_framing(&h)
    }

    #[test]
    fn request_rules() {
        assert_eq!(req("GET / HTTP/1.1\r\n\r\n"), Ok(Framing::None));
        assert_eq!(
            req("POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n"),
            Ok(Framing::Length(12))
        );
        assert_eq!(
            req("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n"),
            Ok(Framing::Chunked)
        );
        for bad in [
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5,5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5 5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(req(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn response_rules() {
        let resp = |method: &str, raw: &str| {
            let (h, _) = parse_response(raw.as_bytes(), 65536).unwrap().unwrap();
            response_framing(method, &h)
        };
        assert_eq!(
            resp("HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"),
            Ok(Framing::None)
        );
        assert_eq!(
            resp("GET", "HTTP/1.1 204 No Content\r\n\r\n"),
            Ok(Framing::None)
        );
        assert_eq!(
            resp(
                "GET",
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n"
            ),
            Ok(Framing::None)
        );
        assert_eq!(resp("GET", "HTTP/1.1 200 OK\r\n\r\n"), Ok(Framing::Close));
        assert_eq!(
            resp("GET", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n"),
            Ok(Framing::Length(3))
        );
        assert!(resp(
            "GET",
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .is_err());
    }
}
