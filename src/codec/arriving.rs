//! A Content-Encoding undone while the body arrives, for a reader that
//! looks at an event before it is whole (`engine::incremental`). MISP
//! compresses every push over 1 KB when the receiving MISP says it can read
//! it: brotli when both ends have PHP's brotli extension, else gzip
//! (`ServerSyncTool::pushEvent`), so this is how large pushes really
//! travel.
//!
//! The one-shot [`super::decode`] stays the reference: this decoder only
//! vouches for a body when that one would decode it to the same bytes
//! without error — one gzip member or one brotli stream ending exactly at
//! the body's end (gzip: CRC and length verified), within the limits.
//! Anything else (a second member or other trailing bytes, corruption, a
//! stream cut short, a limit reached) makes it give up, and the caller
//! decodes the whole body the one-shot way, which words the refusal. A
//! valid stream has exactly one decoding, so the bytes agree.

use std::io::Write;

use brotli_decompressor::DecompressorWriter;
use flate2::write::GzDecoder;

use super::{Coding, DecodeLimits};

/// The write-side decoders, each decoding into a Vec (boxed: brotli's
/// state is several kB, one per arriving body).
enum Decoder {
    Gzip(Box<GzDecoder<Vec<u8>>>),
    Brotli(Box<DecompressorWriter<Vec<u8>>>),
}

impl Decoder {
    /// `Ok(0)` for bytes after the stream's end; `Err` for corruption.
    fn write(&mut self, wire: &[u8]) -> std::io::Result<usize> {
        match self {
            Decoder::Gzip(d) => d.write(wire),
            Decoder::Brotli(d) => d.write(wire),
        }
    }

    fn decoded(&self) -> &[u8] {
        match self {
            Decoder::Gzip(d) => d.get_ref(),
            Decoder::Brotli(d) => d.get_ref(),
        }
    }

    /// The whole decoding, if the stream is complete and sound.
    fn finish(self) -> Option<Vec<u8>> {
        match self {
            Decoder::Gzip(d) => d.finish().ok(),
            // `into_inner` closes the stream: an error when it is cut short.
            Decoder::Brotli(d) => d.into_inner().ok(),
        }
    }
}

pub struct Arriving {
    /// The body decoded so far, until it gives up.
    decoder: Option<Decoder>,
    /// Wire bytes given to the decoder.
    fed: usize,
    limits: DecodeLimits,
}

impl Arriving {
    /// A decoder for a body with this one coding: gzip or brotli; `None`
    /// for any other (decoded whole, the one-shot way).
    pub fn new(coding: Coding, limits: DecodeLimits) -> Option<Self> {
        let decoder = match coding {
            Coding::Gzip => Decoder::Gzip(Box::new(GzDecoder::new(Vec::new()))),
            Coding::Brotli => {
                let writer = DecompressorWriter::new(Vec::new(), 64 * 1024);
                Decoder::Brotli(Box::new(writer))
            }
            _ => return None,
        };
        Some(Arriving {
            decoder: Some(decoder),
            fed: 0,
            limits,
        })
    }

    /// Decodes what of `wire` — the body received so far; it only grows —
    /// is new. The decoded bytes so far, or `None` once it gave up.
    pub fn feed(&mut self, wire: &[u8]) -> Option<&[u8]> {
        let mut fresh = &wire[self.fed..];
        self.fed = wire.len();
        let dec = self.decoder.as_mut()?;
        let mut ok = true;
        while ok && !fresh.is_empty() {
            match dec.write(fresh) {
                // Ok(0): the stream has ended and bytes follow it.
                Ok(0) | Err(_) => ok = false,
                Ok(n) => fresh = &fresh[n..],
            }
            ok &= dec.decoded().len() as u64 <= self.limits.max_decoded_bytes;
        }
        if !ok {
            self.decoder = None;
        }
        self.decoder.as_ref().map(Decoder::decoded)
    }

    /// The whole body decoded, when the one-shot decoder would give exactly
    /// these bytes; `None`: decode it the one-shot way.
    pub fn finish(mut self, wire: &[u8]) -> Option<Vec<u8>> {
        self.feed(wire)?;
        let decoded = self.decoder?.finish()?;
        let total = decoded.len() as u64;
        let l = &self.limits;
        let bomb = total > l.ratio_floor_bytes
            && total > l.max_ratio.saturating_mul((wire.len() as u64).max(1));
        (total <= l.max_decoded_bytes && !bomb).then_some(decoded)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::write::GzEncoder;
    use flate2::Compression;

    use super::*;
    use crate::codec::{decode, Coding};

    const LIMITS: DecodeLimits = DecodeLimits {
        max_decoded_bytes: 1 << 20,
        max_ratio: 100,
        ratio_floor_bytes: 64 * 1024,
    };

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// As MISP compresses a push with PHP's brotli (quality 1, text mode).
    fn brotli(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let params = brotli::enc::BrotliEncoderParams {
            quality: 1,
            mode: brotli::enc::backward_references::BrotliEncoderMode::BROTLI_MODE_TEXT,
            ..Default::default()
        };
        brotli::BrotliCompress(&mut &data[..], &mut out, &params).unwrap();
        out
    }

    /// Fed in `piece`-byte arrivals: the decoded prefixes only grow, and
    /// the end is the one-shot decoding or nothing.
    fn arriving(wire: &[u8], piece: usize) -> Option<Vec<u8>> {
        arriving_as(Coding::Gzip, wire, piece)
    }

    fn arriving_as(coding: Coding, wire: &[u8], piece: usize) -> Option<Vec<u8>> {
        let mut g = Arriving::new(coding, LIMITS).unwrap();
        let mut end = 0;
        let mut seen = 0;
        while end < wire.len() {
            end = (end + piece).min(wire.len());
            if let Some(d) = g.feed(&wire[..end]) {
                assert!(d.len() >= seen);
                seen = d.len();
            }
        }
        g.finish(wire)
    }

    #[test]
    fn a_stream_decodes_as_the_one_shot_decoder_does_in_any_pieces() {
        let text: Vec<u8> = (0..50_000u32)
            .flat_map(|i| i.to_string().into_bytes())
            .collect();
        for (coding, wire) in [(Coding::Gzip, gzip(&text)), (Coding::Brotli, brotli(&text))] {
            let one_shot = decode(&wire, &[coding], &LIMITS).unwrap();
            assert_eq!(&*one_shot, &text[..]);
            for piece in [1, 10, 4096, wire.len()] {
                let got = arriving_as(coding, &wire, piece);
                assert_eq!(
                    got.as_deref(),
                    Some(&*one_shot),
                    "{coding:?}, pieces of {piece}"
                );
            }
        }
    }

    #[test]
    fn whatever_the_one_shot_decoder_refuses_is_not_vouched_for() {
        let text = b"{\"Event\": {}}".repeat(100);
        let wire = gzip(&text);
        let mut two_members = wire.clone();
        two_members.extend_from_slice(&gzip(b"{}"));
        let mut trailing = wire.clone();
        trailing.extend_from_slice(b" ");
        let mut bad_crc = wire.clone();
        let n = bad_crc.len();
        bad_crc[n - 8] ^= 1;
        let cut = wire[..wire.len() - 3].to_vec();
        let bomb = gzip(&vec![b' '; 900_000]);
        let too_large = gzip(
            &(0..300_000u32)
                .flat_map(|i| i.to_le_bytes())
                .collect::<Vec<_>>(),
        );
        for (name, body) in [
            ("two members", two_members),
            ("trailing byte", trailing),
            ("bad crc", bad_crc),
            ("cut short", cut),
            ("ratio", bomb),
            ("too large", too_large),
            ("not gzip", b"{\"Event\": {}}".to_vec()),
        ] {
            assert!(decode(&body, &[Coding::Gzip], &LIMITS).is_err(), "{name}");
            for piece in [1, 7, body.len()] {
                assert_eq!(arriving(&body, piece), None, "{name}, pieces of {piece}");
            }
        }
    }

    #[test]
    fn a_brotli_stream_the_one_shot_decoder_refuses_or_reads_past_is_not_vouched_for() {
        let text = b"{\"Event\": {}}".repeat(100);
        let wire = brotli(&text);
        // Bytes after the stream's end: the one-shot decoder cannot tell
        // them apart, this one gives up and leaves the body to it.
        let mut trailing = wire.clone();
        trailing.extend_from_slice(b" ");
        let cut = wire[..wire.len() - 2].to_vec();
        let bomb = brotli(&vec![b' '; 900_000]);
        let too_large = brotli(
            &(0..300_000u32)
                .flat_map(|i| i.to_le_bytes())
                .collect::<Vec<_>>(),
        );
        for (name, body, one_shot_refuses) in [
            ("trailing byte", trailing, false),
            ("cut short", cut, true),
            ("ratio", bomb, true),
            ("too large", too_large, true),
            ("not brotli", b"{\"Event\": {}}".to_vec(), true),
        ] {
            let one_shot = decode(&body, &[Coding::Brotli], &LIMITS);
            assert_eq!(one_shot.is_err(), one_shot_refuses, "{name}");
            for piece in [1, 7, body.len()] {
                let got = arriving_as(Coding::Brotli, &body, piece);
                assert_eq!(got, None, "{name}, pieces of {piece}");
            }
        }
    }

    /// Brotli has no checksum: a flipped byte may still decode, to other
    /// bytes. Whatever the one-shot decoder makes of it, this one agrees
    /// or gives up.
    #[test]
    fn a_damaged_brotli_stream_decodes_as_the_one_shot_decoder_decodes_it_or_not_at_all() {
        let text: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("{{\"n\":{i}}},").into_bytes())
            .collect();
        let wire = brotli(&text);
        for at in (0..wire.len()).step_by(wire.len() / 40 + 1) {
            for flip in [0x01, 0x55, 0xff] {
                let mut body = wire.clone();
                body[at] ^= flip;
                let one_shot = decode(&body, &[Coding::Brotli], &LIMITS).ok();
                for piece in [7, body.len()] {
                    if let Some(got) = arriving_as(Coding::Brotli, &body, piece) {
                        assert_eq!(Some(&got[..]), one_shot.as_deref(), "byte {at} ^ {flip}");
                    }
                }
            }
        }
    }

    #[test]
    fn only_gzip_and_brotli_are_undone_while_arriving() {
        assert!(Arriving::new(Coding::Gzip, LIMITS).is_some());
        assert!(Arriving::new(Coding::Brotli, LIMITS).is_some());
        for other in [Coding::Deflate, Coding::Zstd, Coding::Identity] {
            assert!(Arriving::new(other, LIMITS).is_none());
        }
    }
}
