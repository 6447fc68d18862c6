//! Chunked transfer coding (RFC 9112 §7.1): a strict incremental decoder and
//! the encoder the gateway re-frames streamed bodies with. Trailers are
//! read, bounded and dropped: nothing of the peer's framing is relayed.

use super::head::HeadError;

/// Longest chunk-size line (size + extensions) or trailer section.
pub const MAX_LINE: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a chunk-size line (bytes so far in `line`).
    Size,
    Data(u64),
    /// CRLF after chunk data; the number says how many of the two bytes were seen.
    DataEnd(u8),
    Trailer,
    Done,
}

#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    line: Vec<u8>,
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: State::Size,
            line: Vec::new(),
            trailer_bytes: 0,
        }
    }
}

const BAD: fn(&'static str) -> HeadError = HeadError::Malformed;

impl ChunkedDecoder {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes bytes of `input`, appending decoded body bytes to `out`.
    /// Returns how many input bytes were consumed (all of them unless the
    /// body ended inside `input`; the rest belongs to the next message).
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, HeadError> {
        let mut i = 0;
        while i < input.len() && self.state != State::Done {
            match self.state {
                State::Size | State::Trailer => {
                    let b = input[i];
                    i += 1;
                    self.line.push(b);
                    if self.state == State::Trailer {
                        self.trailer_bytes += 1;
                        if self.trailer_bytes > MAX_LINE {
                            return Err(BAD("trailer section too large"));
                        }
                    } else if self.line.len() > MAX_LINE {
                        return Err(BAD("chunk size line too long"));
                    }
                    if b == b'\n' {
                        let line = std::mem::take(&mut self.line);
                        if line.len() < 2 || line[line.len() - 2] != b'\r' {
                            return Err(BAD("bare LF in chunked framing"));
                        }
                        let line = &line[..line.len() - 2];
                        if self.state == State::Size {
                            let size = parse_size_line(line)?;
                            self.state = if size == 0 {
                                State::Trailer
                            } else {
                                State::Data(size)
                            };
                        } else if line.is_empty() {
                            self.state = State::Done;
                        } else if line
                            .iter()
                            .any(|c| (*c < 0x20 && *c != b'\t') || *c == 0x7f)
                        {
                            return Err(BAD("control character in trailer"));
                        }
                    }
                }
                State::Data(remaining) => {
                    let n = remaining.min((input.len() - i) as u64) as usize;
                    out.extend_from_slice(&input[i..i + n]);
                    i += n;
                    self.state = if remaining == n as u64 {
                        State::DataEnd(0)
                    } else {
                        State::Data(remaining - n as u64)
                    };
                }
                State::DataEnd(seen) => {
                    let want = if seen == 0 { b'\r' } else { b'\n' };
                    if input[i] != want {
                        return Err(BAD("missing CRLF after chunk data"));
                    }
                    i += 1;
                    self.state = if seen == 0 {
                        State::DataEnd(1)
                    } else {
                        State::Size
                    };
                }
                State::Done => {}
            }
        }
        Ok(i)
    }
}

/// `1*HEXDIG [BWS] *( ";" ext )`, extensions without control characters.
fn parse_size_line(line: &[u8]) -> Result<u64, HeadError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(BAD("invalid chunk size"));
    }
    let rest = &line[digits..];
    let rest_trimmed = rest.trim_ascii_start();
    if !rest_trimmed.is_empty() && rest_trimmed[0] != b';' {
        return Err(BAD("invalid chunk size"));
    }
    if rest
        .iter()
        .any(|c| (*c < 0x20 && *c != b'\t') || *c == 0x7f)
    {
        return Err(BAD("control character in chunk extension"));
    }
    let hex = std::str::from_utf8(&line[..digits]).map_err(|_| BAD("invalid chunk size"))?;
    u64::from_str_radix(hex, 16).map_err(|_| BAD("invalid chunk size"))
}

/// Appends one chunk (nothing for empty data: an empty chunk would end the body).
pub fn encode_chunk(data: &[u8], out: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, usize, bool), HeadError> {
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        let n = d.decode(input, &mut out)?;
        Ok((out, n, d.is_done()))
    }

    #[test]
    fn decodes_with_extensions_and_trailers() {
        let input = b"5;name=val\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: dropped\r\n\r\nNEXT";
        let (out, n, done) = decode_all(input).unwrap();
        assert_eq!(out, b"hello world");
        assert!(done);
        assert_eq!(&input[n..], b"NEXT");
    }

    #[test]
    fn byte_at_a_time_equals_all_at_once() {
        let input = b"a\r\n0123456789\r\n3 ; x\r\nabc\r\n0\r\n\r\n";
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        for b in input.iter() {
            assert_eq!(d.decode(std::slice::from_ref(b), &mut out).unwrap(), 1);
        }
        assert!(d.is_done());
        assert_eq!(out, decode_all(input).unwrap().0);
    }

    #[test]
    fn strictness() {
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",
            b"5;a\x01\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"g\r\n",
            b"\r\n",
            b"-5\r\n",
            b"11111111111111111\r\n",
            b"5 x\r\nhello\r\n",
            b"0\r\nX: y\n\r\n",
        ] {
            assert!(
                decode_all(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!("1;{}\r\n", "a".repeat(MAX_LINE));
        assert!(decode_all(long.as_bytes()).is_err());
    }

    #[test]
    fn encoder_round_trip() {
        let mut wire = Vec::new();
        encode_chunk(b"hello ", &mut wire);
        encode_chunk(b"", &mut wire);
        encode_chunk(b"world", &mut wire);
        wire.extend_from_slice(LAST_CHUNK);
        let (out, n, done) = decode_all(&wire).unwrap();
        assert_eq!(
            (out.as_slice(), n, done),
            (&b"hello world"[..], wire.len(), true)
        );
    }
}
