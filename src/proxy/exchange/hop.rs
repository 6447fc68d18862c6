//! Hop-by-hop rules, pure: which headers stay on one leg, whether the
//! client keeps its connection, and the framing headers the gateway writes
//! itself on each leg (it never forwards the peer's framing, so no
//! smuggling ambiguity reaches the other side).

use crate::http::head::{Headers, RequestHead, Version};
use crate::http::Framing;

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1), plus
/// the framing and expectation headers the gateway rewrites itself.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "expect",
];

pub fn strip_hop_by_hop(h: &Headers) -> Headers {
    let listed: Vec<String> = h
        .get_all("connection")
        .flat_map(|v| v.split(|b| *b == b','))
        .map(|t| String::from_utf8_lossy(t.trim_ascii()).to_ascii_lowercase())
        .collect();
    Headers(
        h.0.iter()
            .filter(|(n, _)| {
                let n = n.to_ascii_lowercase();
                !HOP_BY_HOP.contains(&n.as_str()) && !listed.contains(&n)
            })
            .cloned()
            .collect(),
    )
}

/// Does the client want the connection kept after this exchange?
pub fn client_keeps_alive(h: &RequestHead) -> bool {
    match h.version {
        Version::Http11 => !h.headers.has_token("connection", "close"),
        Version::Http10 => h.headers.has_token("connection", "keep-alive"),
    }
}

/// The request headers sent upstream: the client's without hop-by-hop
/// ones, the Host of an absolute-form request (`host`, `port`), and the
/// framing for the body as it will be sent (`inspected`: the length of a
/// buffered body; else the client's framing, streamed).
pub fn request_headers(
    h: &Headers,
    absolute_form: Option<(&str, u16)>,
    inspected: Option<usize>,
    framing: Framing,
) -> Headers {
    let mut fwd = strip_hop_by_hop(h);
    if let Some((host, port)) = absolute_form {
        fwd.remove("host");
        let authority = if port == 80 {
            host.to_string()
        } else {
            format!("{host}:{port}")
        };
        fwd.0.insert(0, ("Host".into(), authority.into_bytes()));
    }
    match (inspected, framing) {
        // A buffered body has a known length (none for a bodiless GET).
        (Some(len), _) if framing != Framing::None || len > 0 => {
            fwd.push("Content-Length", len.to_string())
        }
        (None, Framing::Length(n)) => fwd.push("Content-Length", n.to_string()),
        (None, Framing::Chunked) => fwd.push("Transfer-Encoding", "chunked"),
        _ => {}
    }
    fwd
}

/// How an answer streamed to the client is framed: re-chunked when the
/// server's length is unknown (chunked, or until close) and the client
/// speaks HTTP/1.1; as it came otherwise.
pub fn chunk_streamed_answer(resp_framing: Framing, client: Version) -> bool {
    matches!(resp_framing, Framing::Chunked | Framing::Close) && client == Version::Http11
}

/// The answer's headers towards the client: the server's without hop-by-hop
/// ones, `Connection: close` when the connection ends after it, and the
/// framing: a buffered body's length (`inspected`), else the server's
/// length or chunking (`chunked_out`). A bodiless answer (HEAD, 304) keeps
/// its length header as information.
pub fn response_headers(
    h: &Headers,
    resp_framing: Framing,
    keep: bool,
    inspected: Option<usize>,
    chunked_out: bool,
) -> Headers {
    let mut out = strip_hop_by_hop(h);
    if resp_framing == Framing::None {
        if let Some(cl) = h.get("content-length") {
            out.push("Content-Length", cl.to_vec());
        }
    }
    if !keep {
        out.push("Connection", "close");
    }
    match (inspected, resp_framing) {
        (_, Framing::None) => {}
        (Some(len), _) => out.push("Content-Length", len.to_string()),
        (None, Framing::Length(n)) => out.push("Content-Length", n.to_string()),
        (None, Framing::Chunked | Framing::Close) if chunked_out => {
            out.push("Transfer-Encoding", "chunked")
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        Headers(
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
        )
    }

    fn names(h: &Headers) -> Vec<String> {
        h.0.iter().map(|(n, _)| n.to_ascii_lowercase()).collect()
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_stay_on_their_leg() {
        let h = headers(&[
            ("Host", "b.example"),
            ("Connection", "close, X-Secret"),
            ("X-Secret", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"),
            ("Content-Length", "5"),
            ("Expect", "100-continue"),
            ("Upgrade", "h2c"),
            ("Proxy-Authorization", "Basic x"),
            ("Authorization", "key"),
        ]);
        assert_eq!(names(&strip_hop_by_hop(&h)), ["host", "authorization"]);
    }

    #[test]
    fn keep_alive_by_version_and_connection_token() {
        let head = |version, conn: Option<&str>| RequestHead {
            method: "GET".into(),
            target: "/".into(),
            version,
            headers: headers(&conn.map(|c| vec![("Connection", c)]).unwrap_or_default()),
        };
        assert!(client_keeps_alive(&head(Version::Http11, None)));
        assert!(!client_keeps_alive(&head(Version::Http11, Some("Close"))));
        assert!(!client_keeps_alive(&head(Version::Http10, None)));
        assert!(client_keeps_alive(&head(
            Version::Http10,
            Some("keep-alive")
        )));
    }

    #[test]
    fn request_framing_is_the_gateways_own() {
        let h = headers(&[("Host", "b.example"), ("Transfer-Encoding", "chunked")]);
        let get = |f: &Headers, n: &str| f.get(n).map(|v| String::from_utf8_lossy(v).to_string());
        // A buffered chunked body leaves with its length.
        let f = request_headers(&h, None, Some(12), Framing::Chunked);
        assert_eq!(get(&f, "content-length").as_deref(), Some("12"));
        assert_eq!(get(&f, "transfer-encoding"), None);
        // Streamed: the client's framing, rewritten.
        let f = request_headers(&h, None, None, Framing::Chunked);
        assert_eq!(get(&f, "transfer-encoding").as_deref(), Some("chunked"));
        let f = request_headers(&h, None, None, Framing::Length(7));
        assert_eq!(get(&f, "content-length").as_deref(), Some("7"));
        // No body at all: no framing header (a GET stays a GET).
        let f = request_headers(&h, None, Some(0), Framing::None);
        assert_eq!(
            (get(&f, "content-length"), get(&f, "transfer-encoding")),
            (None, None)
        );
        // An empty body that was framed says so.
        let f = request_headers(&h, None, Some(0), Framing::Length(0));
        assert_eq!(get(&f, "content-length").as_deref(), Some("0"));
        // Absolute-form: Host from the request target, first.
        let f = request_headers(&h, Some(("b.example", 8080)), None, Framing::None);
        assert_eq!(f.0[0], ("Host".to_string(), b"b.example:8080".to_vec()));
        let f = request_headers(&h, Some(("b.example", 80)), None, Framing::None);
        assert_eq!(get(&f, "host").as_deref(), Some("b.example"));
        assert_eq!(f.get_all("host").count(), 1);
    }

    #[test]
    fn answer_framing_is_the_gateways_own() {
        let h = headers(&[("Content-Length", "99"), ("Connection", "keep-alive")]);
        let get = |f: &Headers, n: &str| f.get(n).map(|v| String::from_utf8_lossy(v).to_string());
        let f = response_headers(&h, Framing::Length(99), true, Some(42), false);
        assert_eq!(get(&f, "content-length").as_deref(), Some("42"));
        assert_eq!(get(&f, "connection"), None);
        let f = response_headers(&h, Framing::Length(99), false, None, false);
        assert_eq!(get(&f, "content-length").as_deref(), Some("99"));
        assert_eq!(get(&f, "connection").as_deref(), Some("close"));
        // HEAD / 304: the length is information, kept as sent.
        let f = response_headers(&h, Framing::None, true, None, false);
        assert_eq!(get(&f, "content-length").as_deref(), Some("99"));
        let f = response_headers(&headers(&[]), Framing::Close, false, None, true);
        assert_eq!(get(&f, "transfer-encoding").as_deref(), Some("chunked"));
        let f = response_headers(&headers(&[]), Framing::Close, false, None, false);
        assert_eq!(get(&f, "transfer-encoding"), None);
        assert!(chunk_streamed_answer(Framing::Chunked, Version::Http11));
        assert!(chunk_streamed_answer(Framing::Close, Version::Http11));
        assert!(!chunk_streamed_answer(Framing::Chunked, Version::Http10));
        assert!(!chunk_streamed_answer(Framing::Length(3), Version::Http11));
    }
}
