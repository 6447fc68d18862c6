use std::io::Write;

use super::*;

const LIMITS: DecodeLimits = DecodeLimits {
    max_decoded_bytes: 1 << 30,
    max_ratio: 1000,
    ratio_floor_bytes: 1 << 20,
};

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 1, 22);
        w.write_all(data).unwrap();
    }
    out
}

fn parse(values: &[&str]) -> Result<Vec<Coding>, DecodeError> {
    parse_content_encoding(values.iter().map(|v| v.as_bytes()))
}

const DATA: &[u8] = br#"{"Event": {"info": "caf\u00e9", "distribution": "1"}}"#;

#[test]
fn header_parsing() {
    assert_eq!(parse(&[]), Ok(vec![]));
    assert_eq!(parse(&["GZIP"]), Ok(vec![Coding::Gzip]));
    assert_eq!(
        parse(&[" x-gzip , br "]),
        Ok(vec![Coding::Gzip, Coding::Brotli])
    );
    assert_eq!(parse(&["identity", ",,", "zstd"]), Ok(vec![Coding::Zstd]));
    assert_eq!(
        parse(&["deflate", "br"]),
        Ok(vec![Coding::Deflate, Coding::Brotli])
    );
    assert_eq!(
        parse(&["gzip, foo"]),
        Err(DecodeError::Unsupported("foo".into()))
    );
    assert_eq!(
        parse(&["compress"]),
        Err(DecodeError::Unsupported("compress".into()))
    );
    assert_eq!(
        parse(&["gzip,gzip,gzip,gzip,gzip"]),
        Err(DecodeError::TooManyCodings)
    );
    assert_eq!(
        parse_content_encoding([&b"g\x01zip"[..]]),
        Err(DecodeError::Unsupported("g?zip".into()))
    );
}

#[test]
fn round_trips() {
    for (coding, encoded) in [
        (Coding::Gzip, gzip(DATA)),
        (Coding::Deflate, zlib(DATA)),
        (Coding::Deflate, raw_deflate(DATA)),
        (Coding::Brotli, brotli(DATA)),
        (Coding::Zstd, zstd::encode_all(DATA, 1).unwrap()),
    ] {
        assert_eq!(
            &*decode(&encoded, &[coding], &LIMITS).unwrap(),
            DATA,
            "{coding}"
        );
    }
}

#[test]
fn identity_borrows() {
    assert!(matches!(
        decode(DATA, &[], &LIMITS).unwrap(),
        Cow::Borrowed(_)
    ));
    assert!(matches!(
        decode(DATA, &[Coding::Identity], &LIMITS).unwrap(),
        Cow::Borrowed(_)
    ));
}

#[test]
fn stacked_codings_are_undone_in_reverse() {
    // Content-Encoding: gzip, br  → gzip applied first, then brotli.
    let encoded = brotli(&gzip(DATA));
    let codings = parse(&["gzip, br"]).unwrap();
    assert_eq!(&*decode(&encoded, &codings, &LIMITS).unwrap(), DATA);
    assert!(decode(&encoded, &[Coding::Brotli, Coding::Gzip], &LIMITS).is_err());
}

#[test]
fn trailing_members_and_garbage_are_refused() {
    let mut two = gzip(DATA);
    two.extend(gzip(b"{\"Event\": {}}"));
    assert_eq!(
        decode(&two, &[Coding::Gzip], &LIMITS),
        Err(DecodeError::TrailingData(Coding::Gzip))
    );
    let mut z = zlib(DATA);
    z.extend_from_slice(b"garbage");
    assert_eq!(
        decode(&z, &[Coding::Deflate], &LIMITS),
        Err(DecodeError::TrailingData(Coding::Deflate))
    );
}

#[test]
fn truncated_streams_are_corrupt() {
    let big: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    for (coding, encoded) in [
        (Coding::Gzip, gzip(&big)),
        (Coding::Deflate, zlib(&big)),
        (Coding::Brotli, brotli(&big)),
        (Coding::Zstd, zstd::encode_all(&big[..], 1).unwrap()),
    ] {
        let cut = &encoded[..encoded.len() / 2];
        assert_eq!(
            decode(cut, &[coding], &LIMITS),
            Err(DecodeError::Corrupt(coding)),
            "{coding}"
        );
    }
    assert_eq!(
        decode(b"not gzip", &[Coding::Gzip], &LIMITS),
        Err(DecodeError::Corrupt(Coding::Gzip))
    );
}

#[test]
fn size_limit_is_exact() {
    let encoded = gzip(DATA);
    let n = DATA.len() as u64;
    let at = |max| DecodeLimits {
        max_decoded_bytes: max,
        ..LIMITS
    };
    assert!(decode(&encoded, &[Coding::Gzip], &at(n)).is_ok());
    assert_eq!(
        decode(&encoded, &[Coding::Gzip], &at(n - 1)),
        Err(DecodeError::TooLarge { limit: n - 1 })
    );
}

#[test]
fn bombs_are_stopped() {
    let zeros = vec![0u8; 64 << 20];
    let encoded = gzip(&zeros);
    let limits = DecodeLimits {
        max_decoded_bytes: 1 << 30,
        max_ratio: 100,
        ratio_floor_bytes: 1 << 20,
    };
    assert_eq!(
        decode(&encoded, &[Coding::Gzip], &limits),
        Err(DecodeError::Bomb { ratio: 100 })
    );
    // Below the floor the ratio does not apply.
    let small = gzip(&vec![0u8; 512 << 10]);
    assert!(decode(&small, &[Coding::Gzip], &limits).is_ok());
}
