//! Request and response head parsing on arbitrary bytes.
//!
//! Beyond "no panic": a head that parses must report a length inside the
//! input, and must survive a round trip through the gateway's own
//! serialiser (`write_head`) unchanged, since the gateway re-writes every
//! head it forwards and the peer must read what the policy read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use misp_guard_gw::http::head::{parse_request, parse_response, write_head};
use misp_guard_gw::http::{request_framing, response_framing};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    // Small limits too, so the "too large" paths are reached.
    let max = if selector & 0x80 == 0 {
        16 * 1024
    } else {
        64 + usize::from(selector & 0x3f)
    };
    if selector & 1 == 0 {
        if let Ok(Some((head, len))) = parse_request(input, max) {
            assert!(len <= input.len() && len <= max);
            let _ = request_framing(&head);
            let mut wire = Vec::new();
            write_head(
                &format!("{} {} HTTP/1.1", head.method, head.target),
                &head.headers,
                &mut wire,
            );
            let (again, n) = parse_request(&wire, usize::MAX)
                .expect("re-written head parses")
                .expect("re-written head is complete");
            assert_eq!(n, wire.len());
            assert_eq!(
                (again.method, again.target, again.headers),
                (head.method, head.target, head.headers)
            );
        }
    } else if let Ok(Some((head, len))) = parse_response(input, max) {
        assert!(len <= input.len() && len <= max);
        for method in ["GET", "HEAD", "POST", "CONNECT"] {
            let _ = response_framing(method, &head);
        }
        let mut wire = Vec::new();
        write_head(
            &format!("HTTP/1.1 {:03} {}", head.status, head.reason),
            &head.headers,
            &mut wire,
        );
        let (again, n) = parse_response(&wire, usize::MAX)
            .expect("re-written head parses")
            .expect("re-written head is complete");
        assert_eq!(n, wire.len());
        assert_eq!(
            (again.status, again.reason, again.headers),
            (head.status, head.reason, head.headers)
        );
    }
});
