//! A request body watched as it arrives: the pushed event is fed to the
//! engine's incremental reader as it is read (`engine::request_body_reader`),
//! so its verdict is ready when the last byte is, and a push blocked by an
//! element is stopped there instead of being read to its end. Bodies the
//! reader does not take are decided whole, as before.
//!
//! A large push is parsed on a thread of its own while this task goes on
//! reading (and decrypting) the next bytes: on a router with two cores or
//! more the parse then costs the push no time of its own. The thread owns
//! the growing body (each piece read is handed over, so the body is held
//! once) and hands it back with the verdict at the end. Smaller bodies are
//! parsed inline after each read, where a thread hand-off costs more than
//! it saves.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::sync::Arc;

use crate::engine::carried::{self, Carried};
use crate::engine::{self, Block, BodyReader, Exchange};
use crate::http::head::Headers;
use crate::http::io::{HttpError, HttpIo};
use crate::http::Framing;
use crate::policy::Policy;
use crate::proxy::stream::BoxIo;

/// Pushes at least this large (declared length) are parsed on a thread of
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

pub struct Arrival<'a> {
    policy: &'a Arc<Policy>,
    exchange: &'a Exchange,
    headers: &'a Headers,
    reader: Option<BodyReader>,
    /// Monitor mode forwards a blocked push whole: no early stop.
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
    pub fn new(
        policy: &'a Arc<Policy>,
        exchange: &'a Exchange,
        headers: &'a Headers,
        monitored: bool,
    ) -> Self {
        Arrival {
            policy,
            exchange,
            headers,
            reader: engine::request_body_reader(policy, exchange, headers.as_slice()),
            stops_early: !monitored,
            early: None,
            decided: None,
            count_exact: true,
        }
    }

    /// Reads the body (at most `max` bytes, `grant` asked before it is
    /// held), watching it as it arrives. `Stopped`: blocked before its end
    /// ([`stopped`](Self::stopped) tells why).
    pub async fn receive(
        &mut self,
        client: &mut HttpIo<BoxIo>,
        framing: Framing,
        max: u64,
        grant: impl FnMut(u64) -> bool,
    ) -> Result<Vec<u8>, HttpError> {
        match (self.reader.take(), framing) {
            (Some(reader), Framing::Length(n)) if n >= OFFLOAD_FROM && n <= max => {
                self.receive_offloaded(reader, client, n, grant).await
            }
            (reader, _) => {
                self.reader = reader;
                let observe = |so_far: &[u8]| self.observe(so_far);
                client
                    .read_body_observed(framing, max, grant, observe)
                    .await
            }
        }
    }

    /// Shown the body received so far after each read; `false` stops the
    /// read: the push is blocked whatever follows.
    fn observe(&mut self, so_far: &[u8]) -> bool {
        let Some(reader) = self.reader.as_mut() else {
            return true;
        };
        match reader.feed(self.policy, so_far) {
            Some(block) if self.stops_early => {
                // What the log line names: the uuids read so far.
                let hs = self.headers.as_slice();
                let named = carried::request(self.policy, self.exchange, hs, so_far);
                self.early = Some((block, named));
                false
            }
            _ => true,
        }
    }

    async fn receive_offloaded(
        &mut self,
        reader: BodyReader,
        client: &mut HttpIo<BoxIo>,
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
        let sent = AtomicU64::new(0);
        let mut answer = answer;
        let read = {
            // Pieces handed over but not yet taken in by the thread stay
            // under `IN_FLIGHT`: the body is held once, not twice, when
            // parsing is slower than the network.
            let pace = || backlog.below(IN_FLIGHT);
            // The budget holds the body and the pieces on their way to it.
            let grant = |n: u64| grant(n + IN_FLIGHT.min(n));
            let read = client.read_body_pieces(len, grant, pace, |piece| {
                sent.fetch_add(piece.len() as u64, Relaxed);
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
            Err(parsed) => return self.parsed(parsed, sent.load(Relaxed), false),
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

    /// The verdict on the whole body (`engine::request_body`'s).
    pub fn verdict(self, body: &[u8]) -> Result<(), Block> {
        if let Some(verdict) = self.decided {
            return verdict;
        }
        let hs = self.headers.as_slice();
        match self.reader {
            Some(r) => r.finish(self.policy, hs, body),
            None => engine::request_body(self.policy, self.exchange, hs, body),
        }
    }
}

/// The parsing thread's charge: the push's reader and what it needs.
struct Parser {
    reader: BodyReader,
    policy: Arc<Policy>,
    exchange: Exchange,
    headers: Headers,
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
                            let named = carried::request(policy, &self.exchange, hs, &body);
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
