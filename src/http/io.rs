//! The async edge of the HTTP layer: a buffered reader over a stream that
//! reads heads and bodies with the pure parsers. Timeouts are the caller's
//! (it wraps each call in `tokio::time::timeout`).

use std::fmt;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::chunked::{self, ChunkedDecoder};
use super::framing::Framing;
use super::head::{self, HeadError, HeadLimits, RequestHead, ResponseHead};
use super::rate::{MinRate, RateClock};

const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug)]
pub enum HttpError {
    Io(std::io::Error),
    Head(HeadError),
    /// The body is larger than allowed (413).
    BodyTooLarge(u64),
    /// The peer closed in the middle of a message.
    UnexpectedEof,
    /// The caller did not grant the memory a buffered body needed (503;
    /// the caller knows why).
    NotGranted,
    /// The body came slower than the minimum rate allows (408).
    TooSlow(MinRate),
    /// The caller's observer stopped the read (it decided on the bytes so
    /// far); `received` body bytes were read.
    Stopped {
        received: u64,
    },
}

impl HttpError {
    /// The status to answer a client with, when one can still be sent.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::Head(h) => h.status(),
            HttpError::BodyTooLarge(_) => 413,
            HttpError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => 408,
            HttpError::NotGranted => 503,
            HttpError::TooSlow(_) => 408,
            // The caller answers with its own decision.
            HttpError::Stopped { .. } => 403,
            HttpError::Io(_) | HttpError::UnexpectedEof => 400,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            HttpError::Io(e) => write!(f, "i/o error: {e}"),
            HttpError::Head(h) => h.fmt(f),
            HttpError::BodyTooLarge(max) => write!(f, "body exceeds {max} bytes"),
            HttpError::UnexpectedEof => f.write_str("connection closed mid-message"),
            HttpError::NotGranted => f.write_str("no memory granted for the body"),
            HttpError::TooSlow(m) => write!(
                f,
                "body slower than {} bytes/s after {} s (gateway.timeouts.body_min_rate)",
                m.bytes_per_sec,
                m.grace.as_secs()
            ),
            HttpError::Stopped { received } => {
                write!(f, "body read stopped after {received} bytes")
            }
        }
    }
}

impl std::error::Error for HttpError {}

impl From<std::io::Error> for HttpError {
    fn from(e: std::io::Error) -> Self {
        HttpError::Io(e)
    }
}

impl From<HeadError> for HttpError {
    fn from(e: HeadError) -> Self {
        HttpError::Head(e)
    }
}

/// A stream plus the bytes read from it but not consumed yet (the start of
/// a pipelined request, or of a body).
pub struct HttpIo<S> {
    pub io: S,
    buf: Vec<u8>,
    /// Longest wait for any single read (a stalled peer), if set.
    read_timeout: Option<std::time::Duration>,
    /// Minimum rate of each body read from this stream, if set.
    body_rate: Option<MinRate>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> HttpIo<S> {
    pub fn new(io: S) -> Self {
        HttpIo {
            io,
            buf: Vec::new(),
            read_timeout: None,
            body_rate: None,
        }
    }

    pub fn set_read_timeout(&mut self, timeout: std::time::Duration) {
        self.read_timeout = Some(timeout);
    }

    /// Every body read from now on must keep to `rate` (see `rate`).
    pub fn set_body_min_rate(&mut self, rate: MinRate) {
        self.body_rate = Some(rate);
    }

    /// A fresh account for a body about to be read (bytes already
    /// buffered count as received).
    fn body_clock(&self) -> Option<RateClock> {
        self.body_rate.map(|m| {
            let mut c = RateClock::new(m);
            c.record(self.buf.len() as u64, std::time::Duration::ZERO);
            c
        })
    }

    /// The stream and the bytes read from it but not consumed.
    pub fn into_parts(self) -> (S, Vec<u8>) {
        (self.io, self.buf)
    }

    pub fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Reads more bytes into the buffer; Ok(0) at EOF.
    async fn fill(&mut self) -> Result<usize, HttpError> {
        self.buf.reserve(READ_CHUNK);
        let timeout = self.read_timeout;
        Ok(read_with_timeout(&mut self.io, &mut self.buf, timeout).await?)
    }

    /// `fill` for a body: also bounded by what its rate has earned.
    async fn fill_body(&mut self, clock: &mut Option<RateClock>) -> Result<usize, HttpError> {
        self.buf.reserve(READ_CHUNK);
        let timeout = self.read_timeout;
        body_read(&mut self.io, &mut self.buf, timeout, clock).await
    }

    /// The next request head; Ok(None) on a clean close before any byte.
    pub async fn read_request_head(
        &mut self,
        limits: impl Into<HeadLimits>,
    ) -> Result<Option<RequestHead>, HttpError> {
        let limits = limits.into();
        loop {
            if let Some((head, n)) = head::parse_request(&self.buf, limits)? {
                self.buf.drain(..n);
                return Ok(Some(head));
            }
            let n = match self.fill().await {
                Ok(n) => n,
                // A TLS client that closes between requests without a
                // close_notify (rustls: UnexpectedEof) has simply gone;
                // mid-head it is an error like any other.
                Err(HttpError::Io(e))
                    if e.kind() == std::io::ErrorKind::UnexpectedEof && self.buf.is_empty() =>
                {
                    0
                }
                Err(e) => return Err(e),
            };
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(HttpError::UnexpectedEof)
                };
            }
        }
    }

    pub async fn read_response_head(
        &mut self,
        limits: impl Into<HeadLimits>,
    ) -> Result<ResponseHead, HttpError> {
        let limits = limits.into();
        loop {
            if let Some((head, n)) = head::parse_response(&self.buf, limits)? {
                self.buf.drain(..n);
                return Ok(head);
            }
            if self.fill().await? == 0 {
                return Err(HttpError::UnexpectedEof);
            }
        }
    }

    /// Reads a whole body (transfer coding removed) of at most `max` bytes.
    pub async fn read_body(&mut self, framing: Framing, max: u64) -> Result<Vec<u8>, HttpError> {
        self.read_body_granted(framing, max, |_| true).await
    }

    /// [`read_body`](Self::read_body), asking `grant(bytes)` before the
    /// buffer may hold `bytes` (its capacity, in total): once for a known
    /// length, before reading any of it; as it grows for chunked and
    /// close-delimited bodies. `false` ends the read with `NotGranted` and
    /// the buffer is dropped.
    pub async fn read_body_granted(
        &mut self,
        framing: Framing,
        max: u64,
        grant: impl FnMut(u64) -> bool,
    ) -> Result<Vec<u8>, HttpError> {
        self.read_body_observed(framing, max, grant, |_| true).await
    }

    /// [`read_body_granted`](Self::read_body_granted), showing the body
    /// received so far to `observe` after each read (it only ever grows);
    /// `false` stops the read with `Stopped` — the caller has decided on
    /// what it saw and the rest of the body is still unread.
    pub async fn read_body_observed(
        &mut self,
        framing: Framing,
        max: u64,
        mut grant: impl FnMut(u64) -> bool,
        mut observe: impl FnMut(&[u8]) -> bool,
    ) -> Result<Vec<u8>, HttpError> {
        let stopped = |out: &Vec<u8>| HttpError::Stopped {
            received: out.len() as u64,
        };
        if let Framing::Length(n) = framing {
            // Known length: one allocation, bytes read straight into it.
            if n > max {
                return Err(HttpError::BodyTooLarge(max));
            }
            if !grant(n) {
                return Err(HttpError::NotGranted);
            }
            let n = n as usize;
            let mut clock = self.body_clock();
            let mut out = Vec::with_capacity(n);
            let buffered = self.buf.len().min(n);
            out.extend(self.buf.drain(..buffered));
            if !out.is_empty() && !observe(&out) {
                return Err(stopped(&out));
            }
            while out.len() < n {
                let mut limited = (&mut self.io).take((n - out.len()) as u64);
                if body_read(&mut limited, &mut out, self.read_timeout, &mut clock).await? == 0 {
                    return Err(HttpError::UnexpectedEof);
                }
                if !observe(&out) {
                    return Err(stopped(&out));
                }
            }
            return Ok(out);
        }
        let mut out = Vec::new();
        self.body(framing, max, |chunk| {
            let needed = out.len() + chunk.len();
            if needed > out.capacity() {
                // Grow as a Vec would (doubling, at least one read's worth),
                // never past the body limit, and hold exactly that.
                let cap = (out.capacity() * 2)
                    .max(READ_CHUNK)
                    .min(usize::try_from(max).unwrap_or(usize::MAX))
                    .max(needed);
                if !grant(cap as u64) {
                    return Err(HttpError::NotGranted);
                }
                out.reserve_exact(cap - out.len());
            }
            out.extend_from_slice(chunk);
            if !chunk.is_empty() && !observe(&out) {
                return Err(stopped(&out));
            }
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// Reads a body of known length `len` without holding it: each piece
    /// as read goes to `sink`, which owns it (and may hand it to another
    /// thread without a copy). `grant(len)` is asked first, as by
    /// [`read_body_granted`](Self::read_body_granted); `pace` is awaited
    /// before each read, so a slow consumer of the pieces holds the reading
    /// back; `false` from `sink` stops the read with `Stopped`.
    pub async fn read_body_pieces<P: std::future::Future<Output = ()>>(
        &mut self,
        len: u64,
        grant: impl FnOnce(u64) -> bool,
        mut pace: impl FnMut() -> P,
        mut sink: impl FnMut(Vec<u8>) -> bool,
    ) -> Result<u64, HttpError> {
        if !grant(len) {
            return Err(HttpError::NotGranted);
        }
        let stopped = |received: u64| HttpError::Stopped { received };
        let mut clock = self.body_clock();
        let mut total = 0u64;
        let buffered = self.buf.len().min(len as usize);
        if buffered > 0 {
            total = buffered as u64;
            let keep = sink(self.buf.drain(..buffered).collect());
            if !keep {
                return Err(stopped(total));
            }
        }
        while total < len {
            pace().await;
            let want = (len - total).min(READ_CHUNK as u64);
            let mut piece = Vec::with_capacity(want as usize);
            let mut limited = (&mut self.io).take(want);
            let read = body_read(&mut limited, &mut piece, self.read_timeout, &mut clock).await?;
            if read == 0 {
                return Err(HttpError::UnexpectedEof);
            }
            total += read as u64;
            // Held as long as it is in flight: its size is what was read
            // (glibc shrinks in place, without a copy).
            piece.shrink_to_fit();
            if !sink(piece) {
                return Err(stopped(total));
            }
        }
        Ok(total)
    }

    /// Streams a body to `dst` behind `head` (written in the same first
    /// write, so a small message leaves in one segment), re-framed: Length
    /// bodies as they are (the head carries Content-Length), chunked and
    /// close-delimited bodies as fresh chunks when `chunked_out`, else raw
    /// until close.
    pub async fn copy_body<W: AsyncWrite + Unpin>(
        &mut self,
        head: &[u8],
        framing: Framing,
        max: u64,
        dst: &mut W,
        chunked_out: bool,
    ) -> Result<u64, HttpError> {
        let mut total = 0u64;
        let mut pending = Vec::with_capacity(READ_CHUNK + head.len() + 32);
        pending.extend_from_slice(head);
        let mut write_err = None;
        // Gather in `pending` and flush as it fills; writes happen between
        // reads so a slow writer applies back-pressure to the reader.
        let mut sink = |chunk: &[u8], pending: &mut Vec<u8>| {
            total += chunk.len() as u64;
            if chunked_out {
                chunked::encode_chunk(chunk, pending);
            } else {
                pending.extend_from_slice(chunk);
            }
            Ok(())
        };
        self.body_streaming(framing, max, &mut pending, &mut sink, dst, &mut write_err)
            .await?;
        if let Some(e) = write_err {
            return Err(HttpError::Io(e));
        }
        if chunked_out {
            pending.extend_from_slice(chunked::LAST_CHUNK);
        }
        dst.write_all(&pending).await?;
        dst.flush().await?;
        Ok(total)
    }

    async fn body_streaming<W: AsyncWrite + Unpin>(
        &mut self,
        framing: Framing,
        max: u64,
        pending: &mut Vec<u8>,
        sink: &mut impl FnMut(&[u8], &mut Vec<u8>) -> Result<(), HttpError>,
        dst: &mut W,
        write_err: &mut Option<std::io::Error>,
    ) -> Result<(), HttpError> {
        let mut decoder = ChunkedDecoder::default();
        let mut remaining = match framing {
            Framing::None => return Ok(()),
            Framing::Length(n) if n > max => return Err(HttpError::BodyTooLarge(max)),
            Framing::Length(n) => n,
            Framing::Chunked | Framing::Close => u64::MAX,
        };
        let mut seen = 0u64;
        let mut scratch = Vec::new();
        let mut clock = self.body_clock();
        loop {
            if self.buf.is_empty() && self.fill_body(&mut clock).await? == 0 {
                return match framing {
                    Framing::Close => Ok(()),
                    _ => Err(HttpError::UnexpectedEof),
                };
            }
            let consumed = match framing {
                Framing::Chunked => {
                    scratch.clear();
                    let n = decoder.decode(&self.buf, &mut scratch)?;
                    seen += scratch.len() as u64;
                    if seen > max {
                        return Err(HttpError::BodyTooLarge(max));
                    }
                    sink(&scratch, pending)?;
                    n
                }
                _ => {
                    let n = (self.buf.len() as u64).min(remaining) as usize;
                    seen += n as u64;
                    if seen > max {
                        return Err(HttpError::BodyTooLarge(max));
                    }
                    sink(&self.buf[..n], pending)?;
                    remaining -= n as u64;
                    n
                }
            };
            self.buf.drain(..consumed);
            if pending.len() >= READ_CHUNK {
                if let Err(e) = dst.write_all(pending).await {
                    *write_err = Some(e);
                    return Ok(());
                }
                pending.clear();
            }
            let finished = match framing {
                Framing::Chunked => decoder.is_done(),
                Framing::Length(_) => remaining == 0,
                _ => false,
            };
            if finished {
                return Ok(());
            }
        }
    }

    async fn body(
        &mut self,
        framing: Framing,
        max: u64,
        mut f: impl FnMut(&[u8]) -> Result<(), HttpError>,
    ) -> Result<(), HttpError> {
        let mut sink = tokio::io::sink();
        let mut pending = Vec::new();
        let mut err = None;
        let mut adapter = |chunk: &[u8], _: &mut Vec<u8>| f(chunk);
        self.body_streaming(
            framing,
            max,
            &mut pending,
            &mut adapter,
            &mut sink,
            &mut err,
        )
        .await
    }

    pub async fn write_all(&mut self, bytes: &[u8]) -> Result<(), HttpError> {
        self.io.write_all(bytes).await?;
        self.io.flush().await?;
        Ok(())
    }
}

/// One read of a body: bounded by the per-read `timeout` and by what the
/// body's rate `clock` allows; the time waited is charged to the clock.
async fn body_read<R: AsyncRead + Unpin>(
    r: &mut R,
    out: &mut Vec<u8>,
    timeout: Option<std::time::Duration>,
    clock: &mut Option<RateClock>,
) -> Result<usize, HttpError> {
    let Some(c) = clock else {
        return Ok(read_with_timeout(r, out, timeout).await?);
    };
    let allowed = c.remaining();
    let rate_bound = timeout.is_none_or(|t| allowed < t);
    let wait = if rate_bound { Some(allowed) } else { timeout };
    let started = tokio::time::Instant::now();
    let read = read_with_timeout(r, out, wait).await;
    let took = started.elapsed();
    match read {
        Ok(n) => {
            c.record(n as u64, took);
            if c.exceeded() {
                return Err(HttpError::TooSlow(c.min()));
            }
            Ok(n)
        }
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut && rate_bound => {
            Err(HttpError::TooSlow(c.min()))
        }
        Err(e) => Err(e.into()),
    }
}

/// One read appended to `out` (no zeroing), bounded by `timeout`.
async fn read_with_timeout<R: AsyncRead + Unpin>(
    r: &mut R,
    out: &mut Vec<u8>,
    timeout: Option<std::time::Duration>,
) -> std::io::Result<usize> {
    if out.capacity() == out.len() {
        out.reserve(READ_CHUNK);
    }
    let read = r.read_buf(out);
    match timeout {
        None => read.await,
        Some(t) => tokio::time::timeout(t, read).await.unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "read timed out",
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` one byte per read through a duplex pipe.
    async fn reader(input: &[u8]) -> HttpIo<tokio::io::DuplexStream> {
        let (a, mut b) = tokio::io::duplex(1);
        let data = input.to_vec();
        tokio::spawn(async move {
            for byte in data {
                if b.write_all(&[byte]).await.is_err() {
                    return;
                }
            }
        });
        HttpIo::new(a)
    }

    /// Reads `data`, then fails with `kind` (as rustls reports a peer that
    /// closed without close_notify).
    struct ThenFail {
        data: Vec<u8>,
        kind: std::io::ErrorKind,
    }

    impl tokio::io::AsyncRead for ThenFail {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if self.data.is_empty() {
                return std::task::Poll::Ready(Err(self.kind.into()));
            }
            let data = std::mem::take(&mut self.data);
            buf.put_slice(&data);
            std::task::Poll::Ready(Ok(()))
        }
    }

    impl tokio::io::AsyncWrite for ThenFail {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            b: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::task::Poll::Ready(Ok(b.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_tls_peer_gone_between_requests_is_a_clean_close() {
        use std::io::ErrorKind;
        let gone = |data: &[u8], kind| {
            HttpIo::new(ThenFail {
                data: data.to_vec(),
                kind,
            })
        };
        // Between requests: no request, no error.
        let mut io = gone(b"", ErrorKind::UnexpectedEof);
        assert!(matches!(io.read_request_head(65536).await, Ok(None)));
        // Mid-head: an error, as before.
        let mut io = gone(b"GET / HT", ErrorKind::UnexpectedEof);
        assert!(io.read_request_head(65536).await.is_err());
        // Other failures stay errors.
        let mut io = gone(b"", ErrorKind::ConnectionReset);
        assert!(io.read_request_head(65536).await.is_err());
    }

    #[tokio::test]
    async fn pipelined_heads_and_bodies_byte_by_byte() {
        let raw = b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcPOST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxy\r\n0\r\n\r\n";
        let mut io = reader(raw).await;
        let h = io.read_request_head(65536).await.unwrap().unwrap();
        assert_eq!(h.target, "/a");
        let f = super::super::request_framing(&h).unwrap();
        assert_eq!(io.read_body(f, 100).await.unwrap(), b"abc");
        let h = io.read_request_head(65536).await.unwrap().unwrap();
        let f = super::super::request_framing(&h).unwrap();
        assert_eq!(io.read_body(f, 100).await.unwrap(), b"xy");
        assert!(io.read_request_head(65536).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn body_limits_and_truncation() {
        let mut io = reader(b"abcdef").await;
        assert!(matches!(
            io.read_body(Framing::Length(6), 5).await,
            Err(HttpError::BodyTooLarge(5))
        ));
        let mut io = reader(b"2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n").await;
        assert!(matches!(
            io.read_body(Framing::Chunked, 3).await,
            Err(HttpError::BodyTooLarge(3))
        ));
        let mut io = reader(b"abc").await;
        assert!(matches!(
            io.read_body(Framing::Length(6), 10).await,
            Err(HttpError::UnexpectedEof)
        ));
        let mut io = reader(b"until close").await;
        assert_eq!(
            io.read_body(Framing::Close, 100).await.unwrap(),
            b"until close"
        );
    }

    #[tokio::test]
    async fn an_observer_sees_the_body_grow_and_may_stop_it() {
        // Known length and chunked: each look is a longer prefix; `false`
        // stops the read, saying how much was read.
        let chunked = b"3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n";
        for (input, framing) in [
            (&b"abcdef"[..], Framing::Length(6)),
            (&chunked[..], Framing::Chunked),
        ] {
            let mut io = reader(input).await;
            let mut seen: Vec<Vec<u8>> = Vec::new();
            let body = io
                .read_body_observed(
                    framing,
                    100,
                    |_| true,
                    |so_far| {
                        seen.push(so_far.to_vec());
                        true
                    },
                )
                .await
                .unwrap();
            assert_eq!(body, b"abcdef");
            assert!(seen.windows(2).all(|w| w[1].starts_with(&w[0])), "{seen:?}");
            assert_eq!(seen.last().unwrap(), b"abcdef");
            let mut io = reader(input).await;
            let stopped = io
                .read_body_observed(framing, 100, |_| true, |so_far| so_far.len() < 2)
                .await;
            assert!(
                matches!(stopped, Err(HttpError::Stopped { received: 2 })),
                "{stopped:?}"
            );
        }
    }

    #[tokio::test]
    async fn pieces_are_handed_on_paced_and_stoppable() {
        let mut io = reader(b"abcdef").await;
        let (mut got, mut paced) = (Vec::new(), 0);
        let n = io
            .read_body_pieces(
                6,
                |n| n == 6,
                || {
                    paced += 1;
                    std::future::ready(())
                },
                |piece| {
                    got.extend_from_slice(&piece);
                    true
                },
            )
            .await
            .unwrap();
        // One byte per read through the pipe: paced before each of them.
        assert_eq!((n, got.as_slice(), paced), (6, &b"abcdef"[..], 6));
        let mut io = reader(b"abcdef").await;
        let stopped = io
            .read_body_pieces(6, |_| true, || std::future::ready(()), |_| false)
            .await;
        assert!(matches!(stopped, Err(HttpError::Stopped { received: 1 })));
        let mut io = reader(b"abcdef").await;
        let refused = io
            .read_body_pieces(6, |_| false, || std::future::ready(()), |_| true)
            .await;
        assert!(matches!(refused, Err(HttpError::NotGranted)));
    }

    #[tokio::test]
    async fn granted_reads_ask_before_holding_bytes() {
        // Known length: one grant of the whole length before any byte.
        let mut io = reader(b"abcdef").await;
        let mut asked = Vec::new();
        let body = io
            .read_body_granted(Framing::Length(6), 100, |n| {
                asked.push(n);
                true
            })
            .await
            .unwrap();
        assert_eq!(
            (body.as_slice(), asked.as_slice()),
            (&b"abcdef"[..], &[6][..])
        );
        let mut io = reader(b"abcdef").await;
        assert!(matches!(
            io.read_body_granted(Framing::Length(6), 100, |_| false)
                .await,
            Err(HttpError::NotGranted)
        ));
        // Chunked: grants grow with the buffer's capacity, which never
        // passes what was granted, and never past the body limit.
        let mut raw = Vec::new();
        for _ in 0..3 {
            raw.extend_from_slice(format!("{:x}\r\n", 50_000).as_bytes());
            raw.extend(std::iter::repeat_n(b'x', 50_000));
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"0\r\n\r\n");
        let (a, mut b) = tokio::io::duplex(1 << 20);
        b.write_all(&raw).await.unwrap();
        let mut io = HttpIo::new(a);
        let mut asked = Vec::new();
        let body = io
            .read_body_granted(Framing::Chunked, 200_000, |n| {
                asked.push(n);
                true
            })
            .await
            .unwrap();
        assert_eq!(body.len(), 150_000);
        assert!(body.capacity() as u64 <= *asked.last().unwrap());
        assert!(asked.windows(2).all(|w| w[0] < w[1]), "{asked:?}");
        assert!(
            (150_000..=200_000).contains(asked.last().unwrap()),
            "{asked:?}"
        );
        // A refusal part-way stops the read.
        let (a, mut b) = tokio::io::duplex(1 << 20);
        b.write_all(&raw).await.unwrap();
        let mut io = HttpIo::new(a);
        let mut grants = 0;
        let r = io
            .read_body_granted(Framing::Chunked, 1 << 20, |n| {
                grants += 1;
                n <= 70_000
            })
            .await;
        assert!(matches!(r, Err(HttpError::NotGranted)), "{r:?}");
        assert!(grants >= 2);
    }

    #[tokio::test]
    async fn copy_body_reframes() {
        let mut io = reader(b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nT: x\r\n\r\n").await;
        let mut out = Vec::new();
        assert_eq!(
            io.copy_body(b"", Framing::Chunked, 100, &mut out, true)
                .await
                .unwrap(),
            5
        );
        // Fresh chunks (one per read here), the peer's extension and
        // trailer gone.
        let mut d = ChunkedDecoder::default();
        let mut body = Vec::new();
        assert_eq!(d.decode(&out, &mut body).unwrap(), out.len());
        assert!(d.is_done());
        assert_eq!(body, b"abcde");
        assert!(!out.windows(3).any(|w| w == b"ext") && !out.windows(2).any(|w| w == b"T:"));
        let mut io = reader(b"hello").await;
        let mut out = Vec::new();
        io.copy_body(b"HEAD ", Framing::Length(5), 100, &mut out, false)
            .await
            .unwrap();
        assert_eq!(out, b"HEAD hello");
    }
}
