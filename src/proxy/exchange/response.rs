//! The answer's phases of an exchange (4. response head, 5. response body):
//! read from upstream, decided when the policy reads it — nothing of an
//! inspected answer reaches the client before it is allowed, and a refused
//! one is a 403 with none of the upstream body — else streamed.

use std::time::Instant;

use super::arrival::Arrival;
use super::hop;
use super::phases::{grant, Phases, Relayed, Side, Stop};
use super::upstream::write_message;
use super::{head_limits, Upstream};
use crate::engine::{self, Block, Exchange, Response};
use crate::http::head::{write_head, RequestHead, ResponseHead, Version};
use crate::http::io::{HttpError, HttpIo};
use crate::http::{response_framing, Framing};
use crate::ops::audit::Stage;
use crate::proxy::buffer_budget::Reservation;
use crate::proxy::stream::BoxIo;

/// An upstream answer's head, read.
pub struct Answer {
    resp: ResponseHead,
    framing: Framing,
    status_line: String,
}

impl Phases<'_> {
    // --------------------------------------------------- 4. response head

    /// The answer's head (interim 1xx answers are dropped: we sent our own
    /// 100 Continue, and upgrades are refused) and its framing.
    pub async fn response_head(
        &mut self,
        up: &mut Upstream,
        path: &str,
        forwarded_at: Instant,
    ) -> Result<(ResponseHead, Framing), Stop> {
        self.trail.stage(Stage::ResponseHead);
        let wait = self.policy.gateway.timeouts.upstream_response;
        let resp = loop {
            let read = up.io.read_response_head(head_limits(self.policy));
            match tokio::time::timeout(wait, read).await {
                Ok(Ok(h)) if h.status == 101 => {
                    return Err(self.refuse(502, "upstream switched protocols", path))
                }
                Ok(Ok(h)) if (100..200).contains(&h.status) => continue,
                Ok(Ok(h)) => break h,
                Ok(Err(e)) => {
                    self.shared.metrics.upstream_error("response");
                    return Err(self.upstream_failed("upstream response", &e, path));
                }
                Err(_) => {
                    self.shared.metrics.upstream_error("timeout");
                    let why = "upstream response timed out";
                    tracing::warn!(client = %self.target.client_ip(), "{why}");
                    return Err(self.failed(504, why, path));
                }
            }
        };
        self.trail.upstream(forwarded_at.elapsed());
        let framing = match response_framing(&self.method, &resp) {
            Ok(f) => f,
            Err(e) => {
                let why = format!("upstream response: {e}");
                tracing::warn!(client = %self.target.client_ip(), "{why}");
                return Err(self.failed(502, &why, path));
            }
        };
        Ok((resp, framing))
    }

    // --------------------------------------------------- 5. response body

    /// Buffers and decides the answer when the policy reads it (a block
    /// answers 403 with none of it), else streams it.
    #[allow(clippy::too_many_arguments)]
    pub async fn response_body(
        &mut self,
        client: &mut HttpIo<BoxIo>,
        up: &mut Upstream,
        head: &RequestHead,
        exchange: &Exchange,
        path: &str,
        resp: ResponseHead,
        resp_framing: Framing,
        monitored_push: bool,
    ) -> Result<Relayed, Stop> {
        self.trail.stage(Stage::ResponseBody);
        let upstream_closes = resp_framing == Framing::Close
            || resp.headers.has_token("connection", "close")
            || resp.version == Version::Http10;
        let keep = hop::client_keeps_alive(head) && !upstream_closes;
        let status_line = format!("HTTP/1.1 {} {}", resp.status, resp.reason);
        let relayed = Relayed {
            keep,
            upstream_closes,
        };
        if exchange.inspects_response_body() {
            let answer = Answer {
                resp,
                framing: resp_framing,
                status_line,
            };
            self.relay_inspected(client, up, exchange, path, answer, monitored_push, relayed)
                .await
        } else {
            let chunked_out = hop::chunk_streamed_answer(resp_framing, head.version);
            let out = hop::response_headers(&resp.headers, resp_framing, keep, None, chunked_out);
            let mut wire = Vec::new();
            write_head(&status_line, &out, &mut wire);
            self.trail.allow(resp.status);
            match up
                .io
                .copy_body(&wire, resp_framing, u64::MAX, &mut client.io, chunked_out)
                .await
            {
                Ok(n) => self.trail.response_bytes(n),
                Err(e) => {
                    tracing::warn!(client = %self.target.client_ip(), "streaming response failed: {e}");
                    return Err(Stop::Close);
                }
            }
            // Until-close without chunking: the end is the close.
            let ends_with_close = resp_framing == Framing::Close && !chunked_out;
            Ok(Relayed {
                keep: keep && !ends_with_close,
                ..relayed
            })
        }
    }

    /// An answer the policy reads: buffered within the budget, decided,
    /// then sent whole with its length (a block: 403, none of it). A pulled
    /// event is read as it arrives (`arrival`): its verdict is ready with
    /// its last byte, and one blocked early is refused without reading the
    /// rest (the upstream connection is then closed, never reused).
    #[allow(clippy::too_many_arguments)]
    async fn relay_inspected(
        &mut self,
        client: &mut HttpIo<BoxIo>,
        up: &mut Upstream,
        exchange: &Exchange,
        path: &str,
        answer: Answer,
        monitored_push: bool,
        relayed: Relayed,
    ) -> Result<Relayed, Stop> {
        let Answer {
            resp,
            framing: resp_framing,
            status_line,
        } = answer;
        // Held until the answer is written: the budget covers the body.
        let mut hold = self.shared.buffers.reservation();
        let monitored = monitored_push || self.monitors(exchange, Side::Destination);
        let (policy, status) = (self.policy, resp.status);
        let mut arrival = Arrival::response(policy, exchange, status, &resp.headers, monitored);
        let body = self
            .receive_answer(up, &mut arrival, resp_framing, &mut hold, path)
            .await?;
        let r = Response {
            status: resp.status,
            headers: resp.headers.as_slice(),
            body: &body,
        };
        self.trail.response_bytes(body.len() as u64);
        if self.trail.enabled() {
            self.trail
                .carried(engine::carried::response(self.policy, exchange, &r));
        }
        // Inspection time: what is left of it once the last byte is in.
        let finished = Instant::now();
        let verdict = arrival.verdict(&body);
        self.trail.inspected(body.len() as u64, finished.elapsed());
        if let Err(b) = verdict {
            if !self.trail.enabled() {
                self.trail
                    .carried(engine::carried::response(self.policy, exchange, &r));
            }
            if monitored {
                self.would_block(&b, path);
            } else {
                // Whatever the cause, a refused response is a 403 with none
                // of the upstream's body.
                return Err(self.blocked(&Block { status: 403, ..b }, path));
            }
        }
        let out = hop::response_headers(
            &resp.headers,
            resp_framing,
            relayed.keep,
            Some(body.len()),
            false,
        );
        let mut wire = Vec::new();
        write_head(&status_line, &out, &mut wire);
        self.trail.allow(resp.status);
        write_message(&mut client.io, wire, &body)
            .await
            .map_err(|_| Stop::Close)?;
        Ok(relayed)
    }

    /// The inspected answer's body, read within the budget (`hold`) as it
    /// arrives; a block before its end, the budget or the body limit
    /// exceeded, or an upstream failure is the exchange's `Stop`.
    async fn receive_answer(
        &mut self,
        up: &mut Upstream,
        arrival: &mut Arrival<'_>,
        framing: Framing,
        hold: &mut Reservation,
        path: &str,
    ) -> Result<Vec<u8>, Stop> {
        let (limit, max_body) = (
            self.policy.limits.max_buffered_bytes,
            self.policy.limits.max_body_bytes,
        );
        let mut over = None;
        let read = arrival.receive(&mut up.io, framing, max_body, |n| {
            grant(hold, n, limit, &mut over)
        });
        match read.await {
            Ok(b) => Ok(b),
            Err(HttpError::Stopped { received }) => {
                let (b, named) = arrival.stopped().ok_or(Stop::Close)?;
                self.trail.response_bytes(received);
                self.trail.carried(named);
                Err(self.blocked(&Block { status: 403, ..b }, path))
            }
            // The request went through; its answer cannot be held for
            // inspection now. Nothing of it reaches the client.
            Err(HttpError::NotGranted) => Err(match over {
                Some(e) => self.over_budget(&e, path),
                None => Stop::Close,
            }),
            Err(HttpError::BodyTooLarge(n)) => {
                // Fail closed: a response over the body limit is not passed
                // on uninspected; that limit is the policy's, so a block.
                let b = Block::forbidden(format!(
                    "response body could not be inspected: body exceeds {n} bytes"
                ));
                Err(self.blocked(&b, path))
            }
            // An upstream that resets, stalls or mis-frames its body is the
            // upstream's failure, not a policy decision: nothing of it is
            // passed on, and the client may retry rather than record a
            // block.
            Err(e) => Err(self.upstream_failed("upstream response body", &e, path)),
        }
    }
}
