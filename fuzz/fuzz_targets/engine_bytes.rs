//! The engine's body stages (request body and response) on arbitrary bytes,
//! for every inspected sync endpoint, with and without a Content-Encoding.
#![no_main]

#[path = "../common/mod.rs"]
mod common;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use misp_guard_gw::policy::Policy;

fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(common::policy)
}

const ENCODINGS: [Option<&str>; 5] = [
    None,
    Some("gzip"),
    Some("deflate"),
    Some("br"),
    Some("zstd"),
];

fuzz_target!(|data: &[u8]| {
    let [endpoint, extra, body @ ..] = data else {
        return;
    };
    let (method, path) = common::ENDPOINTS[usize::from(*endpoint) % common::ENDPOINTS.len()];
    let mut headers: common::Headers = vec![("Content-Type".into(), b"application/json".to_vec())];
    if extra & 0x80 != 0 {
        headers.push(("X-UserOrgUUID".into(), common::USER_ORG.into()));
    }
    if let Some(coding) = ENCODINGS[usize::from(extra & 0x7) % ENCODINGS.len()] {
        headers.push(("Content-Encoding".into(), coding.into()));
    }
    let status = [200, 201, 204, 304, 403, 404, 500][usize::from(extra >> 3 & 0x7) % 7];
    let x = common::exchange(policy(), method, path, &headers);
    common::body_stages(policy(), &x, &headers, status, body);
});
