//! Request and response heads: parsed with httparse, then held to the rules
//! httparse is lenient about (bare LF, obs-fold, control characters).

use std::fmt;

/// Most headers a MISP sync message carries is ~20; 100 is generous.
pub const MAX_HEADERS: usize = 100;

/// How large a head may be: its bytes up to the blank line, and its number
/// of fields (`gateway.limits.max_header_bytes` / `max_header_count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    pub max_bytes: usize,
    pub max_fields: usize,
}

/// A byte limit alone keeps the default field count.
impl From<usize> for HeadLimits {
    fn from(max_bytes: usize) -> Self {
        HeadLimits {
            max_bytes,
            max_fields: MAX_HEADERS,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// Header fields in arrival order (names as received, matched without case).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, Vec<u8>)>);

impl Headers {
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    pub fn get_all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s [u8]> + 's {
        self.0
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    pub fn push(&mut self, name: &str, value: impl Into<Vec<u8>>) {
        self.0.push((name.to_string(), value.into()));
    }

    pub fn as_slice(&self) -> &[(String, Vec<u8>)] {
        &self.0
    }

    /// Does a comma-separated header (e.g. Connection) list `token`?
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.get_all(name)
            .flat_map(|v| v.split(|b| *b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub target: String,
    pub version: Version,
    pub headers: Headers,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub version: Version,
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
}

/// A head that cannot be accepted, with the status to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// Larger than the head byte limit (431).
    TooLarge,
    /// More header fields than the limit (431).
    TooManyFields(usize),
    /// Not valid or ambiguous HTTP/1.1 (400); the text names the rule.
    Malformed(&'static str),
    /// Not HTTP/1.0 or 1.1 (505).
    Version,
}

impl HeadError {
    pub fn status(&self) -> u16 {
        match self {
            HeadError::TooLarge | HeadError::TooManyFields(_) => 431,
            HeadError::Malformed(_) => 400,
            HeadError::Version => 505,
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            HeadError::TooLarge => {
                f.write_str("header section too large (gateway.limits.max_header_bytes)")
            }
            HeadError::TooManyFields(n) => write!(
                f,
                "more than {n} header fields (gateway.limits.max_header_count)"
            ),
            HeadError::Malformed(why) => write!(f, "malformed HTTP message: {why}"),
            HeadError::Version => f.write_str("unsupported HTTP version"),
        }
    }
}

impl std::error::Error for HeadError {}

/// Finds the end of a head (`\r\n\r\n`) and checks the raw lines before
/// httparse sees them. Returns the head length including the blank line.
fn head_len(buf: &[u8], max: usize) -> Result<Option<usize>, HeadError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        // A bare LF blank line ("\n\n") would end the head for httparse.
        if buf.windows(2).any(|w| w == b"\n\n") {
            return Err(HeadError::Malformed("bare LF line ending"));
        }
        return if buf.len() > max {
            Err(HeadError::TooLarge)
        } else {
            Ok(None)
        };
    };
    let len = end + 4;
    if len > max {
        return Err(HeadError::TooLarge);
    }
    let head = &buf[..len];
    for (i, b) in head.iter().enumerate() {
        if *b == b'\n' && (i == 0 || head[i - 1] != b'\r') {
            return Err(HeadError::Malformed("bare LF line ending"));
        }
        if *b == b'\r' && head.get(i + 1) != Some(&b'\n') {
            return Err(HeadError::Malformed("bare CR"));
        }
    }
    // obs-fold: a field line starting with whitespace continues the previous
    // one; RFC 9112 §5.2 lets a server reject it, and we must.
    if head
        .windows(3)
        .any(|w| w[0] == b'\n' && (w[1] == b' ' || w[1] == b'\t') && w[2] != b'\r')
    {
        return Err(HeadError::Malformed("obsolete line folding"));
    }
    Ok(Some(len))
}

fn convert_headers(raw: &[httparse::Header]) -> Result<Headers, HeadError> {
    let mut out = Vec::with_capacity(raw.len());
    for h in raw {
        if h.value
            .iter()
            .any(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f)
        {
            return Err(HeadError::Malformed("control character in a header value"));
        }
        out.push((h.name.to_string(), h.value.trim_ascii().to_vec()));
    }
    Ok(Headers(out))
}

fn version(v: Option<u8>) -> Result<Version, HeadError> {
    match v {
        Some(0) => Ok(Version::Http10),
        Some(1) => Ok(Version::Http11),
        _ => Err(HeadError::Version),
    }
}

fn map_err(e: httparse::Error, max_fields: usize) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooManyFields(max_fields),
        httparse::Error::Version => HeadError::Version,
        httparse::Error::HeaderName => HeadError::Malformed("invalid header name"),
        httparse::Error::HeaderValue => HeadError::Malformed("invalid header value"),
        httparse::Error::Token => HeadError::Malformed("invalid method or token"),
        httparse::Error::NewLine => HeadError::Malformed("invalid line ending"),
        httparse::Error::Status => HeadError::Malformed("invalid status"),
    }
}

/// Parses a request head at the start of `buf`: Ok(None) until complete.
pub fn parse_request(
    buf: &[u8],
    limits: impl Into<HeadLimits>,
) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let limits = limits.into();
    let Some(len) = head_len(buf, limits.max_bytes)? else {
        return Ok(None);
    };
    let mut raw = vec![httparse::EMPTY_HEADER; limits.max_fields];
    let mut req = httparse::Request::new(&mut raw);
    let parsed = req.parse(&buf[..len]);
    match parsed.map_err(|e| map_err(e, limits.max_fields))? {
        httparse::Status::Complete(n) if n == len => {}
        _ => return Err(HeadError::Malformed("incomplete request head")),
    }
    let method = req.method.unwrap_or_default().to_string();
    let target = req.path.unwrap_or_default().to_string();
    let form_ok = match method.as_str() {
        "CONNECT" => !target.starts_with('/') && target.contains(':'),
        "OPTIONS" if target == "*" => true,
        _ => {
            target.starts_with('/')
                || target.starts_with("http://")
                || target.starts_with("https://")
        }
    };
    if !form_ok {
        return Err(HeadError::Malformed("invalid request target"));
    }
    Ok(Some((
        RequestHead {
            method,
            target,
            version: version(req.version)?,
            headers: convert_headers(req.headers)?,
        },
        len,
    )))
}

/// Parses a response head at the start of `buf`: Ok(None) until complete.
pub fn parse_response(
    buf: &[u8],
    limits: impl Into<HeadLimits>,
) -> Result<Option<(ResponseHead, usize)>, HeadError> {
    let limits = limits.into();
    let Some(len) = head_len(buf, limits.max_bytes)? else {
        return Ok(None);
    };
    let mut raw = vec![httparse::EMPTY_HEADER; limits.max_fields];
    let mut resp = httparse::Response::new(&mut raw);
    let parsed = resp.parse(&buf[..len]);
    match parsed.map_err(|e| map_err(e, limits.max_fields))? {
        httparse::Status::Complete(n) if n == len => {}
        _ => return Err(HeadError::Malformed("incomplete response head")),
    }
    Ok(Some((
        ResponseHead {
            version: version(resp.version)?,
            status: resp.code.unwrap_or_default(),
            reason: resp.reason.unwrap_or_default().to_string(),
            headers: convert_headers(resp.headers)?,
        },
        len,
    )))
}

/// Serialises a head line and fields (CRLF endings, blank line at the end).
pub fn write_head(first_line: &str, headers: &Headers, out: &mut Vec<u8>) {
    out.extend_from_slice(first_line.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &headers.0 {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 64 * 1024;

    #[test]
    fn parses_and_reports_length() {
        let buf = b"POST /events/add HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}GET /x HTTP/1.1\r\n\r\n";
        let (h, n) = parse_request(buf, MAX).unwrap().unwrap();
        assert_eq!(
            (h.method.as_str(), h.target.as_str(), h.version),
            ("POST", "/events/add", Version::Http11)
        );
        assert_eq!(h.headers.get("content-length"), Some(&b"2"[..]));
        assert_eq!(&buf[n..n + 2], b"{}");
        let (h2, _) = parse_request(&buf[n + 2..], MAX).unwrap().unwrap();
        assert_eq!(h2.target, "/x");
    }

    #[test]
    fn incomplete_then_too_large() {
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n", MAX),
            Ok(None)
        );
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(100));
        assert_eq!(parse_request(big.as_bytes(), 64), Err(HeadError::TooLarge));
        let exact = "GET / HTTP/1.1\r\n\r\n";
        assert!(parse_request(exact.as_bytes(), exact.len())
            .unwrap()
            .is_some());
        assert_eq!(
            parse_request(exact.as_bytes(), exact.len() - 1),
            Err(HeadError::TooLarge)
        );
    }

    #[test]
    fn ambiguous_heads_are_rejected() {
        for (raw, why) in [
            (&b"GET / HTTP/1.1\nHost: a\r\n\r\n"[..], "bare LF"),
            (b"GET / HTTP/1.1\r\nHost: a\n\n", "bare LF end"),
            (b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", "obs-fold"),
            (b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n", "control char"),
            (b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", "bare CR"),
            (b"GET x HTTP/1.1\r\n\r\n", "target"),
            (b"GET * HTTP/1.1\r\n\r\n", "asterisk"),
            (b"CONNECT /x HTTP/1.1\r\n\r\n", "connect origin form"),
            (b"GE T / HTTP/1.1\r\n\r\n", "method"),
            (b"GET / HTTP/1.1\r\nBad Name: a\r\n\r\n", "name"),
        ] {
            assert!(parse_request(raw, MAX).is_err(), "{why}");
        }
        assert_eq!(
            parse_request(b"GET / HTTP/2.0\r\n\r\n", MAX),
            Err(HeadError::Version)
        );
        assert!(
            parse_request(b"CONNECT a.example:443 HTTP/1.1\r\n\r\n", MAX)
                .unwrap()
                .is_some()
        );
        assert!(
            parse_request(b"GET http://a.example/x HTTP/1.1\r\n\r\n", MAX)
                .unwrap()
                .is_some()
        );
        assert!(parse_request(b"OPTIONS * HTTP/1.1\r\n\r\n", MAX)
            .unwrap()
            .is_some());
    }

    #[test]
    fn header_count_limit() {
        let mut ok = String::from("GET / HTTP/1.1\r\n");
        for i in 0..MAX_HEADERS {
            ok.push_str(&format!("X-{i}: v\r\n"));
        }
        let over = format!("{ok}X-last: v\r\n\r\n");
        ok.push_str("\r\n");
        assert!(parse_request(ok.as_bytes(), MAX).unwrap().is_some());
        assert_eq!(
            parse_request(over.as_bytes(), MAX),
            Err(HeadError::TooManyFields(MAX_HEADERS))
        );
    }

    #[test]
    fn configured_field_count_and_size_for_requests_and_responses() {
        let limits = HeadLimits {
            max_bytes: 300,
            max_fields: 3,
        };
        let fields = |n: usize| (0..n).map(|i| format!("X-{i}: v\r\n")).collect::<String>();
        let req = |n: usize| format!("GET / HTTP/1.1\r\n{}\r\n", fields(n));
        let resp = |n: usize| format!("HTTP/1.1 200 OK\r\n{}\r\n", fields(n));
        assert!(parse_request(req(3).as_bytes(), limits).unwrap().is_some());
        assert!(parse_response(resp(3).as_bytes(), limits)
            .unwrap()
            .is_some());
        assert_eq!(
            parse_request(req(4).as_bytes(), limits),
            Err(HeadError::TooManyFields(3))
        );
        assert_eq!(
            parse_response(resp(4).as_bytes(), limits),
            Err(HeadError::TooManyFields(3))
        );
        let long = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(300));
        assert_eq!(
            parse_response(long.as_bytes(), limits),
            Err(HeadError::TooLarge)
        );
        assert_eq!(HeadError::TooManyFields(3).status(), 431);
        assert!(HeadError::TooManyFields(3)
            .to_string()
            .contains("more than 3 header fields (gateway.limits.max_header_count)"));
    }

    #[test]
    fn responses() {
        let (h, n) = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", MAX)
            .unwrap()
            .unwrap();
        assert_eq!((h.status, h.reason.as_str(), n), (200, "OK", 38));
        assert!(parse_response(b"HTTP/1.1 200 OK\nX: y\r\n\r\n", MAX).is_err());
    }

    #[test]
    fn tokens_and_serialisation() {
        let mut h = Headers::default();
        h.push("Connection", "keep-alive, Upgrade");
        assert!(h.has_token("connection", "upgrade"));
        assert!(!h.has_token("connection", "close"));
        let mut out = Vec::new();
        write_head("HTTP/1.1 200 OK", &h, &mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Upgrade\r\n\r\n"
        );
    }
}
