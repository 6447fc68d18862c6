//! Content-Encoding: header parsing and decoding with the size and ratio
//! limits, on arbitrary bytes under every coding, plus a gzip/zlib round
//! trip of the input. The limits must hold whatever the stream claims.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use misp_guard_gw::codec::{decode, parse_content_encoding, Coding, DecodeError, DecodeLimits};

const LIMITS: DecodeLimits = DecodeLimits {
    max_decoded_bytes: 1 << 20,
    max_ratio: 100,
    ratio_floor_bytes: 16 * 1024,
};

fuzz_target!(|data: &[u8]| {
    // First line: a Content-Encoding value; the rest: the body.
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let header = &data[..split];
    let body = data.get(split + 1..).unwrap_or_default();
    if let Ok(codings) = parse_content_encoding([header]) {
        check(body, &codings);
    }
    for coding in [Coding::Gzip, Coding::Deflate, Coding::Brotli, Coding::Zstd] {
        check(body, &[coding]);
    }

    // A valid single stream of the body decodes back to it.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(body).unwrap();
    let gz = gz.finish().unwrap();
    assert_eq!(decode(&gz, &[Coding::Gzip], &LIMITS).as_deref(), Ok(body));
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(body).unwrap();
    let z = z.finish().unwrap();
    assert_eq!(decode(&z, &[Coding::Deflate], &LIMITS).as_deref(), Ok(body));
    // ... and with anything appended it is refused, never half-read.
    let mut tail = gz.clone();
    tail.push(0);
    assert_eq!(
        decode(&tail, &[Coding::Gzip], &LIMITS).as_deref(),
        Err(&DecodeError::TrailingData(Coding::Gzip))
    );
});

fn check(body: &[u8], codings: &[Coding]) {
    if let Ok(out) = decode(body, codings, &LIMITS) {
        assert!(out.len() as u64 <= LIMITS.max_decoded_bytes);
        if codings.iter().all(|c| *c == Coding::Identity) {
            assert_eq!(&*out, body);
        }
    }
}
