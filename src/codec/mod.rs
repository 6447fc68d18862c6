//! Content-Encoding decoding for bodies the engine must inspect.
//!
//! The decoded bytes must be exactly what the receiving MISP would decode, or
//! the body must be refused: if the gateway read a different document than
//! MISP imports, the policy would be checking the wrong thing. Hence:
//! - one gzip member / one zlib or deflate stream exactly: bytes after the
//!   end of the stream (a second member, garbage) are refused rather than
//!   ignored or concatenated, because decoders disagree on them;
//! - limits are enforced while decoding, never by trusting a size the sender
//!   claims (gzip's ISIZE is attacker-controlled);
//! - unknown codings are refused, never passed through uninspected.

use std::borrow::Cow;
use std::io::{BufRead, Read};

mod arriving;
pub use arriving::Arriving;

/// Limits for decoding one body.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Largest decoded body accepted, in bytes.
    pub max_decoded_bytes: u64,
    /// Decompression-bomb guard: decoded/encoded ratio above which decoding
    /// stops, applied only once the decoded size exceeds `ratio_floor_bytes`
    /// (small JSON bodies compress very well legitimately).
    pub max_ratio: u64,
    pub ratio_floor_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

impl Coding {
    fn name(self) -> &'static str {
        match self {
            Coding::Identity => "identity",
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
        }
    }
}

impl std::fmt::Display for Coding {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("unsupported content encoding: {0}")]
    Unsupported(String),
    #[error("too many stacked content encodings")]
    TooManyCodings,
    #[error("corrupt {0} body")]
    Corrupt(Coding),
    #[error("trailing data after {0} stream")]
    TrailingData(Coding),
    #[error("decoded body exceeds {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("decompression ratio exceeds {ratio}:1")]
    Bomb { ratio: u64 },
}

/// More layers than this is not something any MISP peer sends.
const MAX_CODINGS: usize = 4;

/// Parses Content-Encoding header values (each a comma-separated list, in
/// header order) into the codings in the order they were applied.
/// `identity` and empty list elements (RFC 9110 §5.6.1) are dropped.
pub fn parse_content_encoding<'a, I: IntoIterator<Item = &'a [u8]>>(
    values: I,
) -> Result<Vec<Coding>, DecodeError> {
    let mut out = Vec::new();
    for value in values {
        for item in value.split(|b| *b == b',') {
            let item = item.trim_ascii();
            if item.is_empty() {
                continue;
            }
            let coding = match item.to_ascii_lowercase().as_slice() {
                b"identity" => continue,
                b"gzip" | b"x-gzip" => Coding::Gzip,
                b"deflate" => Coding::Deflate,
                b"br" => Coding::Brotli,
                b"zstd" => Coding::Zstd,
                _ => return Err(DecodeError::Unsupported(printable(item))),
            };
            out.push(coding);
            if out.len() > MAX_CODINGS {
                return Err(DecodeError::TooManyCodings);
            }
        }
    }
    Ok(out)
}

/// A coding name safe to show in a log line.
fn printable(name: &[u8]) -> String {
    name.iter()
        .take(40)
        .map(|b| {
            if (0x20..0x7f).contains(b) {
                *b as char
            } else {
                '?'
            }
        })
        .collect()
}

/// Undoes `codings` (last applied first). Borrows when there is nothing to do.
pub fn decode<'a>(
    body: &'a [u8],
    codings: &[Coding],
    limits: &DecodeLimits,
) -> Result<Cow<'a, [u8]>, DecodeError> {
    let mut current: Cow<'a, [u8]> = Cow::Borrowed(body);
    for coding in codings.iter().rev() {
        if *coding == Coding::Identity {
            continue;
        }
        current = Cow::Owned(decode_one(&current, *coding, body.len() as u64, limits)?);
    }
    Ok(current)
}

fn decode_one(
    input: &[u8],
    coding: Coding,
    wire_len: u64,
    limits: &DecodeLimits,
) -> Result<Vec<u8>, DecodeError> {
    match coding {
        Coding::Identity => Ok(input.to_vec()),
        // HTTP "deflate" is zlib (RFC 1950); some peers send raw deflate.
        Coding::Gzip => single_stream(input, coding, wire_len, limits, Framing::Gzip),
        Coding::Deflate if zlib_header_ok(input) => {
            single_stream(input, coding, wire_len, limits, Framing::Zlib)
        }
        Coding::Deflate => single_stream(input, coding, wire_len, limits, Framing::RawDeflate),
        Coding::Brotli => {
            let mut dec = brotli_decompressor::Decompressor::new(input, 64 * 1024);
            let out = read_limited(&mut dec, coding, input.len(), wire_len, limits)?;
            // The decompressor reads its input in buffer-sized chunks, so
            // whatever is left after the stream's end cannot be told apart
            // reliably; a stream that ends early is caught as Corrupt above.
            Ok(out)
        }
        Coding::Zstd => {
            let mut dec = zstd::stream::read::Decoder::with_buffer(input)
                .map_err(|_| DecodeError::Corrupt(coding))?;
            read_limited(&mut dec, coding, input.len(), wire_len, limits)
        }
    }
}

/// The flate2 formats, all decoded as exactly one stream.
enum Framing {
    Gzip,
    Zlib,
    RawDeflate,
}

/// Decodes one gzip member / zlib / raw deflate stream and refuses anything
/// after its end.
fn single_stream(
    input: &[u8],
    coding: Coding,
    wire_len: u64,
    limits: &DecodeLimits,
    framing: Framing,
) -> Result<Vec<u8>, DecodeError> {
    use flate2::bufread::{DeflateDecoder, GzDecoder, ZlibDecoder};
    let mut rest = input;
    let out = {
        let r = &mut rest;
        let n = input.len();
        match framing {
            Framing::Gzip => read_limited(&mut GzDecoder::new(r), coding, n, wire_len, limits),
            Framing::Zlib => read_limited(&mut ZlibDecoder::new(r), coding, n, wire_len, limits),
            Framing::RawDeflate => {
                read_limited(&mut DeflateDecoder::new(r), coding, n, wire_len, limits)
            }
        }
    }?;
    no_trailing(rest, coding)?;
    Ok(out)
}

/// A zlib header: CM = 8 (deflate), window ≤ 32 KiB, FCHECK valid.
fn zlib_header_ok(input: &[u8]) -> bool {
    match input {
        [cmf, flg, ..] => {
            cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0
        }
        _ => false,
    }
}

/// What is left of the input after the decoder stopped must be nothing.
fn no_trailing<R: BufRead>(mut rest: R, coding: Coding) -> Result<(), DecodeError> {
    match rest.fill_buf() {
        Ok([]) => Ok(()),
        _ => Err(DecodeError::TrailingData(coding)),
    }
}

const CHUNK: usize = 64 * 1024;

/// Reads a decoder to the end, enforcing the limits as bytes arrive.
fn read_limited<R: Read>(
    dec: &mut R,
    coding: Coding,
    input_len: usize,
    wire_len: u64,
    limits: &DecodeLimits,
) -> Result<Vec<u8>, DecodeError> {
    let initial = (input_len as u64)
        .saturating_mul(4)
        .min(limits.max_decoded_bytes)
        .min(64 << 20) as usize;
    let mut out = Vec::with_capacity(initial);
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let n = match dec.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(DecodeError::Corrupt(coding)),
        };
        let total = (out.len() + n) as u64;
        if total > limits.max_decoded_bytes {
            return Err(DecodeError::TooLarge {
                limit: limits.max_decoded_bytes,
            });
        }
        if total > limits.ratio_floor_bytes
            && total > limits.max_ratio.saturating_mul(wire_len.max(1))
        {
            return Err(DecodeError::Bomb {
                ratio: limits.max_ratio,
            });
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests;
