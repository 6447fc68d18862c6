//! Gzip undone while the body arrives, for a reader that looks at a push
//! before it is whole (`engine::incremental`). MISP compresses every push
//! over 1 KB when the receiving MISP says it can read gzip, so this is how
//! large pushes really travel.
//!
//! The one-shot [`super::decode`] stays the reference: this decoder only
//! vouches for a body when that one would decode it to the same bytes
//! without error — one gzip member ending exactly at the body's end, CRC
//! and length verified, within the limits. Anything else (a second member
//! or other trailing bytes, corruption, a limit reached) makes it give up,
//! and the caller decodes the whole body the one-shot way, which words the
//! refusal. A valid member has exactly one decoding, so the bytes agree.

use std::io::Write;

use flate2::write::GzDecoder;

use super::DecodeLimits;

pub struct GzipArriving {
    /// Decodes into the Vec: the body decoded so far.
    decoder: Option<GzDecoder<Vec<u8>>>,
    /// Wire bytes given to the decoder.
    fed: usize,
    limits: DecodeLimits,
}

impl GzipArriving {
    pub fn new(limits: DecodeLimits) -> Self {
        GzipArriving {
            decoder: Some(GzDecoder::new(Vec::new())),
            fed: 0,
            limits,
        }
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
                // Ok(0): the member has ended and bytes follow it.
                Ok(0) | Err(_) => ok = false,
                Ok(n) => fresh = &fresh[n..],
            }
            ok &= dec.get_ref().len() as u64 <= self.limits.max_decoded_bytes;
        }
        if !ok {
            self.decoder = None;
        }
        self.decoder.as_ref().map(|d| d.get_ref().as_slice())
    }

    /// The whole body decoded, when the one-shot decoder would give exactly
    /// these bytes; `None`: decode it the one-shot way.
    pub fn finish(mut self, wire: &[u8]) -> Option<Vec<u8>> {
        self.feed(wire)?;
        let decoded = self.decoder?.finish().ok()?;
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

    /// Fed in `piece`-byte arrivals: the decoded prefixes only grow, and
    /// the end is the one-shot decoding or nothing.
    fn arriving(wire: &[u8], piece: usize) -> Option<Vec<u8>> {
        let mut g = GzipArriving::new(LIMITS);
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
    fn a_member_decodes_as_the_one_shot_decoder_does_in_any_pieces() {
        let text: Vec<u8> = (0..50_000u32)
            .flat_map(|i| i.to_string().into_bytes())
            .collect();
        let wire = gzip(&text);
        let one_shot = decode(&wire, &[Coding::Gzip], &LIMITS).unwrap();
        for piece in [1, 10, 4096, wire.len()] {
            assert_eq!(arriving(&wire, piece).as_deref(), Some(&*one_shot));
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
}
