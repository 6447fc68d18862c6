//! The chunked decoder: decoding the input in one call, one byte at a time,
//! and split at fuzzer-chosen points must agree on success, decoded bytes
//! and where the body ended. An incremental decoder that depended on how
//! reads happened to split the stream would let a peer frame one body two
//! ways.
#![no_main]

use libfuzzer_sys::fuzz_target;
use misp_guard_gw::http::chunked::{encode_chunk, ChunkedDecoder, LAST_CHUNK};

/// Feeds `input` in the given pieces; returns (decoded, consumed, done) or
/// None on a framing error.
fn decode_in_pieces(input: &[u8], cuts: &[usize]) -> Option<(Vec<u8>, usize, bool)> {
    let mut d = ChunkedDecoder::default();
    let mut out = Vec::new();
    let mut start = 0;
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    bounds.push(input.len());
    bounds.sort_unstable();
    for end in bounds {
        if end <= start {
            continue;
        }
        let piece = &input[start..end];
        let n = d.decode(piece, &mut out).ok()?;
        assert!(n <= piece.len());
        if n < piece.len() {
            // Only a finished body leaves input unconsumed.
            assert!(d.is_done());
            return Some((out, start + n, true));
        }
        start = end;
        if d.is_done() {
            break;
        }
    }
    Some((out, start, d.is_done()))
}

fuzz_target!(|data: &[u8]| {
    let (cut_bytes, input) = data.split_at(data.len().min(4));
    let cuts: Vec<usize> = cut_bytes.iter().map(|b| usize::from(*b) * 7).collect();
    let whole = decode_in_pieces(input, &[]);
    let every: Vec<usize> = (1..input.len()).collect();
    let bytewise = decode_in_pieces(input, &every);
    let split = decode_in_pieces(input, &cuts);
    assert_eq!(whole, bytewise, "one call vs byte at a time");
    assert_eq!(whole, split, "one call vs split at {cuts:?}");

    // Re-framing: the encoder's output of arbitrary pieces decodes to them.
    let mut wire = Vec::new();
    for piece in input.chunks(cut_bytes.first().map_or(5, |b| usize::from(*b).max(1))) {
        encode_chunk(piece, &mut wire);
    }
    wire.extend_from_slice(LAST_CHUNK);
    let (out, n, done) = decode_in_pieces(&wire, &[]).expect("encoder output decodes");
    assert_eq!((out.as_slice(), n, done), (input, wire.len(), true));
});
