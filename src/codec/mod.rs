//! TEMPORARY stub until the codec module lands (identity only).
use std::borrow::Cow;
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    pub max_decoded_bytes: u64,
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
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("unsupported content encoding: {0}")]
    Unsupported(String),
    #[error("too many stacked content encodings")]
    TooManyCodings,
    #[error("corrupt body")]
    Corrupt(Coding),
    #[error("trailing data")]
    TrailingData(Coding),
    #[error("decoded body exceeds {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("decompression ratio exceeds {ratio}:1")]
    Bomb { ratio: u64 },
}
pub fn parse_content_encoding<'a, I: IntoIterator<Item = &'a [u8]>>(
    values: I,
) -> Result<Vec<Coding>, DecodeError> {
    let mut v = Vec::new();
    for x in values {
        if !x.is_empty() {
            v.push(Coding::Gzip);
            return Err(DecodeError::Unsupported(String::from_utf8_lossy(x).into()));
        }
    }
    Ok(v)
}
pub fn decode<'a>(
    body: &'a [u8],
    _c: &[Coding],
    _l: &DecodeLimits,
) -> Result<Cow<'a, [u8]>, DecodeError> {
    Ok(Cow::Borrowed(body))
}
