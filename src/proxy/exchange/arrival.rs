//! An inspected body watched as it arrives: a pushed event (the request)
//! or a pulled one (the answer) is fed to the engine's incremental reader
//! as it is read (`engine::request_body_reader`,
//! `engine::response_body_reader`), so its verdict is ready when the last
//! byte is, and a body blocked by an element is stopped there instead of
//! being read to its end. Bodies the reader does not take are decided
//! whole, as before.
//!
//! A large body is parsed on a thread of its own while this task goes on
//! reading (and decrypting) the next bytes: on a router with a core to
//! spare the parse then runs beside the transfer instead of after it. The
//! thread owns the growing body (each piece read is handed over, so the
//! body is held once) and hands it back with the verdict at the end.
//! Smaller bodies are parsed inline after each read, where a thread
//! hand-off costs more than it saves.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::sync::Arc;

use crate::engine::carried::{self, Carried};
use crate::engine::{self, Block, BodyReader, Exchange, Response};
use crate::http::head::Headers;
use crate::http::io::{HttpError, HttpIo};
use crate::http::Framing;
use crate::policy::Policy;
use crate::proxy::stream::BoxIo;

/// Bodies at least this large (declared length) are parsed on a thread of
/// their own.
const OFFLOAD_FROM: u64 = 1 << 20;

/// At most this many bytes read but not yet taken in by the parsing thread
/// (asked of the buffer budget with the body).
const IN_FLIGHT: u64 = 1 << 20;

/// Bytes handed to the parsing thread and not yet taken in by it.
#[derive(Default)]
struct Backlog {
    bytes: AtomicU64,
    taken: tokio::sync::Notify,
}

impl Backlog {
    fn add(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Relaxed);
    }

    fn taken(&self, n: usize) {
        self.bytes.fetch_sub(n as u64, Relaxed);
        self.taken.notify_one();
    }

    /// Waits until the backlog is under `limit`.
    async fn below(&self, limit: u64) {
        loop {
            let taken = self.taken.notified();
            if self.bytes.load(Relaxed) < limit {
                return;
            }
            taken.await;
        }
    }
}

/// Which body of the exchange arrives.
#[derive(Clone, Copy)]
enum Of {
    Request,
    /// The answer, with its status.
    Response(u16),
}

impl Of {
    /// The uuids `so_far` carries, for the log line and the audit record.
    fn named(self, policy: &Policy, x: &Exchange, headers: &Headers, so_far: &[u8]) -> Carried {
        let hs = headers.as_slice();
        match self {
            Of::Request => carried::request(policy, x, hs, so_far),
            Of::Response(status) => {
                let r = Response {
                    status,
                    headers: hs,
                    body: so_far,
                };
                carried::response(policy, x, &r)
            }
        }
    }
}

pub struct Arrival<'a> {
    policy: &'a Arc<Policy>,
    exchange: &'a Exchange,
    headers: &'a Headers,
    of: Of,
    reader: Option<BodyReader>,
    /// Monitor mode forwards a blocked body whole: no early stop.
    stops_early: bool,
    early: Option<(Block, Carried)>,
    /// The verdict a parsing thread gave on the whole body.
    decided: Option<Result<(), Block>>,
    count_exact: bool,
}

/// What the parsing thread is given: pieces of the body, then its end.
enum Piece {
    Data(Vec<u8>),
    End,
}

/// What the parsing thread gives back.
enum Parsed {
    /// Blocked before the end: the block and what the body carried so far.
    Early(Block, Carried),
    /// The whole body and its verdict.
    Whole(Vec<u8>, Result<(), Block>),
}

impl<'a> Arrival<'a> {
    /// The request's body (`headers`: the request's).
    pub fn request(
        policy: &'a Arc<Policy>,
        exchange: &'a Exchange,
        headers: &'a Headers,
        monitored: bool,
    ) -> Self {
        let reader = engine::request_body_reader(policy, exchange, headers.as_slice());
        Self::new(policy, exchange, headers, Of::Request, reader, monitored)
    }

    /// The answer's body (`status`, `headers`: the answer's).
    pub fn response(
        policy: &'a Arc<Policy>,
        exchange: &'a Exchange,
        status: u16,
        headers: &'a Headers,
        monitored: bool,
    ) -> Self {
        let hs = headers.as_slice();
        let reader = engine::response_body_reader(policy, exchange, status, hs);
        let of = Of::Response(status);
        Self::new(policy, exchange, headers, of, reader, monitored)
    }

    fn new(
        policy: &'a Arc<Policy>,
        exchange: &'a Exchange,
        headers: &'a Headers,
        of: Of,
        reader: Option<BodyReader>,
        monitored: bool,
    ) -> Self {
        Arrival {
            policy,
            exchange,
            headers,
            of,
            reader,
            stops_early: !monitored,
            early: None,
            decided: None,
            count_exact: true,
        }
    }

    /// Reads the body from `peer` (at most `max` bytes, `grant` asked
    /// before it is held), watching it as it arrives. `Stopped`: blocked
    /// before its end ([`stopped`](Self::stopped) tells why).
    pub async fn receive(
        &mut self,
        peer: &mut HttpIo<BoxIo>,
        framing: Framing,
        max: u64,
        grant: impl FnMut(u64) -> bool,
    ) -> Result<Vec<u8>, HttpError> {
        match (self.reader.take(), framing) {
            (Some(reader), Framing::Length(n)) if n >= OFFLOAD_FROM && n <= max => {
                self.receive_offloaded(reader, peer, n, grant).await
            }
            (reader, _) => {
                self.reader = reader;
                let observe = |so_far: &[u8]| self.observe(so_far);
                peer.read_body_observed(framing, max, grant, observe).await
            }
        }
    }

    /// Shown the body received so far after each read; `false` stops the
    /// read: the body is blocked whatever follows.
    fn observe(&mut self, so_far: &[u8]) -> bool {
        let Some(reader) = self.reader.as_mut() else {
            return true;
        };
        match reader.feed(self.policy, so_far) {
            Some(block) if self.stops_early => {
                // What the log line names: the uuids read so far.
                let named = self
                    .of
                    .named(self.policy, self.exchange, self.headers, so_far);
                self.early = Some((block, named));
                false
            }
            _ => true,
        }
    }

    async fn receive_offloaded(
        &mut self,
        reader: BodyReader,
        peer: &mut HttpIo<BoxIo>,
        len: u64,
        grant: impl FnOnce(u64) -> bool,
    ) -> Result<Vec<u8>, HttpError> {
        let (pieces, inbox) = mpsc::channel();
        let (done, answer) = tokio::sync::oneshot::channel();
        let parser = Parser {
            reader,
            policy: self.policy.clone(),
            exchange: self.exchange.clone(),
            headers: self.headers.clone(),
            of: self.of,
            stops_early: self.stops_early,
            len,
        };
        let backlog = Arc::new(Backlog::default());
        let taken = backlog.clone();
        tokio::task::spawn_blocking(move || {
            let parsed = parser.run(inbox, &taken);
            if let Some(p) = parsed {
                let _ = done.send(p);
            }
        });
        // A send fails once the thread has stopped reading: blocked. The
        // read also gives way to the thread's early answer, for a client
        // that waits for it before sending the rest.
        let mut sent = 0u64;
        let mut answer = answer;
        let read = {
            // Pieces handed over but not yet taken in by the thread stay
            // under `IN_FLIGHT`: the body is held once, not twice, when
            // parsing is slower than the network.
            let pace = || backlog.below(IN_FLIGHT);
            // The budget holds the body and the pieces on their way to it.
            let grant = |n: u64| grant(n + IN_FLIGHT.min(n));
            let read = peer.read_body_pieces(len, grant, pace, |piece| {
                sent += piece.len() as u64;
                backlog.add(piece.len());
                pieces.send(Piece::Data(piece)).is_ok()
            });
            tokio::pin!(read);
            tokio::select! {
                r = &mut read => Ok(r),
                p = &mut answer => Err(p),
            }
        };
        let read = match read {
            Ok(r) => r,
            Err(parsed) => return self.parsed(parsed, sent, false),
        };
        if read.is_ok() {
            let _ = pieces.send(Piece::End);
        }
        // Dropped on a failed read: the thread stops without a verdict.
        drop(pieces);
        let received = match read {
            Ok(n) => n,
            Err(HttpError::Stopped { received }) => received,
            Err(e) => return Err(e),
        };
        let parsed = answer.await;
        self.parsed(parsed, received, true)
    }

    /// The thread's answer: the body and its verdict, or a block before
    /// the end (`received` bytes read, counted exactly or not).
    fn parsed(
        &mut self,
        parsed: Result<Parsed, tokio::sync::oneshot::error::RecvError>,
        received: u64,
        exact: bool,
    ) -> Result<Vec<u8>, HttpError> {
        self.count_exact = exact;
        match parsed {
            Ok(Parsed::Whole(body, verdict)) => {
                self.decided = Some(verdict);
                Ok(body)
            }
            Ok(Parsed::Early(block, named)) => {
                self.early = Some((block, named));
                Err(HttpError::Stopped { received })
            }
            // The thread died (a panic): fail closed, nothing forwarded.
            Err(_) => {
                let b = Block::with_status(500, "inspection of the request body failed");
                self.early = Some((b, Carried::default()));
                Err(HttpError::Stopped { received })
            }
        }
    }

    /// Whether `Stopped`'s count is exact: a read cut short while waiting
    /// for the client may have taken bytes it did not count.
    pub fn count_exact(&self) -> bool {
        self.count_exact
    }

    /// The block that stopped the read, and what the body carried so far.
    pub fn stopped(&mut self) -> Option<(Block, Carried)> {
        self.early.take()
    }

    /// The verdict on the whole body (`engine::request_body`'s or
    /// `engine::response`'s).
    pub fn verdict(self, body: &[u8]) -> Result<(), Block> {
        if let Some(verdict) = self.decided {
            return verdict;
        }
        let (policy, x, hs) = (&**self.policy, self.exchange, self.headers.as_slice());
        match (self.reader, self.of) {
            (Some(r), _) => r.finish(policy, hs, body),
            (None, Of::Request) => engine::request_body(policy, x, hs, body),
            (None, Of::Response(status)) => {
                let r = Response {
                    status,
                    headers: hs,
                    body,
                };
                engine::response(policy, x, &r)
            }
        }
    }
}

/// The parsing thread's charge: the body's reader and what it needs.
struct Parser {
    reader: BodyReader,
    policy: Arc<Policy>,
    exchange: Exchange,
    headers: Headers,
    of: Of,
    stops_early: bool,
    len: u64,
}

impl Parser {
    /// Holds the body as its pieces come, feeds the reader, and ends with
    /// the verdict — or early with a block, or with nothing when the read
    /// failed (its sender dropped before `End`).
    fn run(mut self, inbox: mpsc::Receiver<Piece>, backlog: &Backlog) -> Option<Parsed> {
        let (policy, hs) = (&*self.policy, self.headers.as_slice());
        let mut body = Vec::with_capacity(self.len as usize);
        loop {
            match inbox.recv().ok()? {
                Piece::Data(piece) => {
                    body.extend_from_slice(&piece);
                    backlog.taken(piece.len());
                    drop(piece);
                    if let Some(block) = self.reader.feed(policy, &body) {
                        if self.stops_early {
                            let named = self.of.named(policy, &self.exchange, &self.headers, &body);
                            return Some(Parsed::Early(block, named));
                        }
                    }
                }
                Piece::End => {
                    let verdict = self.reader.finish(policy, hs, &body);
                    return Some(Parsed::Whole(body, verdict));
                }
            }
        }
    }
}
