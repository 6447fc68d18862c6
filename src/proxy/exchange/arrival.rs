//! A request body watched as it arrives: the pushed event is fed to the
//! engine's incremental reader after every read
//! (`engine::request_body_reader`), so its verdict is ready when the last
//! byte is, and a push blocked by an element is stopped there instead of
//! being read to its end. Bodies the reader does not take are decided
//! whole, as before.

use crate::engine::carried::{self, Carried};
use crate::engine::{self, Block, BodyReader, Exchange};
use crate::http::head::Headers;
use crate::policy::Policy;

pub struct Arrival<'a> {
    policy: &'a Policy,
    exchange: &'a Exchange,
    headers: &'a Headers,
    reader: Option<BodyReader>,
    /// Monitor mode forwards a blocked push whole: no early stop.
    stops_early: bool,
    early: Option<(Block, Carried)>,
}

impl<'a> Arrival<'a> {
    pub fn new(
        policy: &'a Policy,
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
        }
    }

    /// Shown the body received so far after each read; `false` stops the
    /// read: the push is blocked whatever follows.
    pub fn observe(&mut self, so_far: &[u8]) -> bool {
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

    /// The block that stopped the read, and what the body carried so far.
    pub fn stopped(&mut self) -> Option<(Block, Carried)> {
        self.early.take()
    }

    /// The verdict on the whole body (`engine::request_body`'s).
    pub fn verdict(self, body: &[u8]) -> Result<(), Block> {
        let hs = self.headers.as_slice();
        match self.reader {
            Some(r) => r.finish(self.policy, hs, body),
            None => engine::request_body(self.policy, self.exchange, hs, body),
        }
    }
}
