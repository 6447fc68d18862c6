//! The filter engine: policy in, flow in, verdict out.
//!
//! It is pure — no sockets, clocks or globals — so the gateway, the
//! `evaluate` command and the tests run exactly the same decisions. A flow is
//! decided in up to three stages, matching what the data path knows when:
//!
//! 1. [`request_head`]: the HTTP-level refusals ([`protocol`]: upgrades,
//!    nested CONNECT, method spelling, `Expect`), then who is talking to
//!    whom (allowlist, source and destination instance, compartments,
//!    port), path hardening, endpoint allowlist. Yields an [`Exchange`]
//!    that says which bodies must be read.
//! 2. [`request_body`]: for pushes, the decoded request body against the
//!    *source* instance's rules. Called only when
//!    [`Exchange::inspects_request_body`].
//! 3. [`response`]: for pulls and for the answers to event pushes (which
//!    carry the event as the receiving server stored it), the decoded
//!    response body against the *destination* (answering) instance's rules.
//!    Called only when [`Exchange::inspects_response_body`].

pub mod answers;
pub mod body;
pub mod carried;
pub mod checks;
pub mod incremental;
pub mod model;
pub mod params;
pub mod path;
pub mod protocol;
pub mod reading;
pub mod stream;
pub mod verdict;

use std::net::IpAddr;

pub use verdict::{Block, Sanitized};

use crate::policy::{Endpoint, InstanceId, Policy, RequestBody, ResponseBody};
use crate::vocab::unmap;
pub use crate::vocab::Scheme;

/// Header access the engine needs: every value of a header, in order.
pub trait HeaderList {
    fn values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s [u8]> + 's;
}

impl<N: AsRef<str>, V: AsRef<[u8]>> HeaderList for [(N, V)] {
    fn values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s [u8]> + 's {
        self.iter()
            .filter(move |(n, _)| n.as_ref().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }
}

/// Everything known about a request once its head has been read.
pub struct RequestHead<'a, H: HeaderList + ?Sized> {
    /// The connecting peer (a MISP instance, if the policy knows it).
    pub client_ip: IpAddr,
    /// Destination host as the client named it: CONNECT authority or
    /// absolute-form host (explicit proxy), else the Host header / SNI.
    pub host: &'a str,
    /// Destination port (CONNECT/absolute-form port, or the original
    /// destination port in transparent mode).
    pub port: u16,
    pub scheme: Scheme,
    /// Original destination address recovered from a transparent capture.
    /// When present it decides the destination instance (POLICY.md §4
    /// "consistent destination").
    pub dst_ip: Option<IpAddr>,
    pub method: &'a str,
    /// Path with query, as sent.
    pub path: &'a str,
    pub headers: &'a H,
}

/// A response as the upstream sent it (body after transfer decoding, with
/// its Content-Encoding still applied).
pub struct Response<'a, H: HeaderList + ?Sized> {
    pub status: u16,
    pub headers: &'a H,
    pub body: &'a [u8],
}

/// The outcome of the head stage for a request that may proceed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exchange {
    /// Matched the allowlist: only the source was checked, no other rule
    /// applies to the request or its response.
    Allowlisted { note: String },
    /// A MISP sync call between two instances.
    Sync {
        endpoint: Endpoint,
        src: InstanceId,
        dst: InstanceId,
    },
}

impl Exchange {
    /// Must the request body be buffered and passed to [`request_body`]?
    pub fn inspects_request_body(&self) -> bool {
        matches!(self, Exchange::Sync { endpoint, .. } if endpoint.request_body() != RequestBody::Uninspected)
    }

    /// Must the response body be buffered and passed to [`response`]?
    pub fn inspects_response_body(&self) -> bool {
        matches!(self, Exchange::Sync { endpoint, .. } if endpoint.response_body() != ResponseBody::Uninspected)
    }

    /// An informational log line (allowlist hits).
    pub fn note(&self) -> Option<&str> {
        match self {
            Exchange::Allowlisted { note } => Some(note),
            Exchange::Sync { .. } => None,
        }
    }
}

/// Headers CakePHP honours to change the method it routes on; a request
/// carrying one would reach a different action than the one allowed here.
const METHOD_OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Stage 1: decide on the request head.
pub fn request_head<H: HeaderList + ?Sized>(
    policy: &Policy,
    req: &RequestHead<'_, H>,
) -> Result<Exchange, Block> {
    protocol::check(req.method, req.headers)?;
    protocol::host_header(policy, req.host, req.headers)?;
    let client_ip = unmap(req.client_ip);
    let dst_ip = req.dst_ip.map(unmap);
    let host = req.host.trim_end_matches('.');
    // Transparent mode (an original destination is known): only an
    // instance's `ip:port` is served and the allowlist never applies — it
    // keys on names the client controls (see [`transparent_destination`]).
    let transparent_dst = if let Some(ip) = dst_ip {
        // misp-guard's order: the source is reported before the destination.
        source(policy, client_ip)?;
        Some((ip, transparent_destination(policy, ip, req.port)?))
    } else {
        let note = if policy.url_is_allowlisted(&req.scheme, host, req.port, req.path) {
            // Spelled as misp-guard (mitmproxy) spells a URL: the port only
            // when it is not the scheme's default.
            let port = if req.port == req.scheme.default_port() {
                String::new()
            } else {
                format!(":{}", req.port)
            };
            Some(format!(
                "url {}://{}{port}{} was allowed by the allowlist",
                req.scheme.as_str(),
                host.to_ascii_lowercase(),
                Sanitized(req.path)
            ))
        } else if policy.domain_is_allowlisted(host) {
            Some(format!(
                "domain {} was allowed by the allowlist",
                host.to_ascii_lowercase()
            ))
        } else {
            None
        };
        if let Some(note) = note {
            source(policy, client_ip)?;
            return Ok(Exchange::Allowlisted { note });
        }
        None
    };

    let src = source(policy, client_ip)?;
    let dst = match transparent_dst {
        Some((ip, dst)) => {
            let named = policy.instance_by_host(host);
            if named != Some(dst) {
                return Err(Block::forbidden(format!(
                    "destination host {} does not match the original destination {ip}",
                    Sanitized(host)
                )));
            }
            dst
        }
        None => policy.instance_by_host(host).ok_or_else(|| {
            Block::forbidden(format!(
                "destination host {} does not exist in instances hosts mapping",
                Sanitized(host)
            ))
        })?,
    };
    let (src_inst, dst_inst) = (policy.instance(src), policy.instance(dst));
    if !policy.can_reach(src_inst.compartment, dst_inst.compartment) {
        return Err(Block::forbidden("cannot reach compartment"));
    }
    if req.port != dst_inst.port {
        return Err(Block::forbidden("destination port is not allowed"));
    }
    if let Err(why) = path::check(req.path) {
        return Err(Block::forbidden(format!("path not allowed: {why}")));
    }
    let Some(endpoint) = policy.endpoint(req.method, req.path) else {
        return Err(Block {
            status: 403,
            reason: "endpoint not allowed".into(),
            detail: Some(format!(
                "rejecting non allowed request to {}",
                Sanitized(req.path)
            )),
        });
    };
    for name in METHOD_OVERRIDE_HEADERS {
        if req.headers.values(name).next().is_some() {
            return Err(Block::forbidden(format!(
                "method override header {name} is not allowed"
            )));
        }
    }
    // The route admits any `events/view` path; only the puller's own
    // parameters may reach MISP (R-VIEW-PARAMS).
    if endpoint == Endpoint::EventsView {
        params::view_path(req.path).map_err(Block::forbidden)?;
    }
    Ok(Exchange::Sync { endpoint, src, dst })
}

/// Where a connection is going, decided before any byte is forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    Instance(InstanceId),
    /// An allowlisted domain or URL host (not an instance).
    Allowlisted,
}

/// Connection-time decision (POLICY.md §2.5, "at connection time too"): the
/// source must be an instance; the destination an instance reachable from
/// it on its configured port, or an allowlisted host. `host` is the CONNECT
/// authority or TLS SNI when known; `dst_ip` the original destination in
/// transparent mode. Every request on the connection is still decided by
/// [`request_head`].
pub fn connection(
    policy: &Policy,
    client_ip: IpAddr,
    dst_ip: Option<IpAddr>,
    host: Option<&str>,
    port: u16,
) -> Result<Destination, Block> {
    let src = source(policy, unmap(client_ip))?;
    // In transparent mode the original destination decides and must be an
    // instance's `ip:port` (no relay); a host name (SNI) may then only
    // confirm it. Without one, the host decides.
    let dst = match dst_ip {
        Some(ip) => Some(transparent_destination(policy, ip, port)?),
        None => host.and_then(|h| policy.instance_by_host(h)),
    };
    let dst = match (dst, host) {
        (Some(dst), Some(h)) if policy.instance_by_host(h) != Some(dst) => {
            return Err(Block::forbidden(format!(
                "destination host {} does not match the original destination {}",
                Sanitized(h),
                policy.instance(dst).ip
            )))
        }
        (Some(dst), _) => dst,
        (None, Some(h))
            if policy.domain_is_allowlisted(h) || policy.url_host_is_allowlisted(h, port) =>
        {
            return Ok(Destination::Allowlisted)
        }
        (None, h) => {
            // Only reached without an original destination (see above).
            let shown = h.map_or_else(|| "(none)".to_string(), |h| Sanitized(h).to_string());
            return Err(Block::forbidden(format!(
                "destination host {shown} does not exist in instances hosts mapping"
            )));
        }
    };
    let (s, d) = (policy.instance(src), policy.instance(dst));
    if !policy.can_reach(s.compartment, d.compartment) {
        return Err(Block::forbidden("cannot reach compartment"));
    }
    if port != d.port {
        return Err(Block::forbidden("destination port is not allowed"));
    }
    Ok(Destination::Instance(dst))
}

/// No relay (transparent mode): a capture hands the gateway whatever
/// address the client dialled, so only a configured instance's `ip:port` is
/// served. Any other original destination is refused before an upstream
/// connection is made, whatever the Host header or SNI names: the allowlist
/// is for explicit-mode clients, where the gateway itself resolves the name.
/// Otherwise a client could make the gateway connect, from the router
/// itself, to any address it chooses.
pub fn transparent_destination(
    policy: &Policy,
    dst_ip: IpAddr,
    port: u16,
) -> Result<InstanceId, Block> {
    let ip = unmap(dst_ip);
    let dst = policy.instance_by_ip(ip).ok_or_else(|| {
        Block::forbidden(format!(
            "destination host {ip} does not exist in instances hosts mapping"
        ))
    })?;
    if policy.instance(dst).port != port {
        return Err(Block::forbidden("destination port is not allowed"));
    }
    Ok(dst)
}

fn source(policy: &Policy, client_ip: IpAddr) -> Result<InstanceId, Block> {
    policy.instance_by_ip(client_ip).ok_or_else(|| {
        Block::forbidden(format!(
            "source host {client_ip} does not exist in instances hosts mapping"
        ))
    })
}

/// Between stages 1 and 2: no request body larger than
/// `limits.max_body_bytes` crosses, inspected or streamed (413). The data
/// path applies it to a declared `Content-Length` before reading the body
/// (and to a chunked body while streaming it); `evaluate` to the flow's body.
pub fn request_body_size(policy: &Policy, len: u64) -> Result<(), Block> {
    let max = policy.limits.max_body_bytes;
    if len > max {
        return Err(Block::with_status(
            413,
            format!("request body exceeds {max} bytes"),
        ));
    }
    Ok(())
}

/// Stage 2: decide on a buffered request body (pushes: source rules).
pub fn request_body<H: HeaderList + ?Sized>(
    policy: &Policy,
    exchange: &Exchange,
    headers: &H,
    body: &[u8],
) -> Result<(), Block> {
    let Exchange::Sync { endpoint, src, .. } = exchange else {
        return Ok(());
    };
    let kind = endpoint.request_body();
    if kind == RequestBody::Uninspected {
        return Ok(());
    }
    body::check_request(policy, &policy.instance(*src).rules, kind, headers, body)
}

/// Stage 2 while the body arrives: a reader of a pushed event, for the
/// bodies it can read as they come (JSON content type; no Content-Encoding,
/// or gzip or br alone); `None` for every other body, which `request_body`
/// decides once it is whole.
pub fn request_body_reader<H: HeaderList + ?Sized>(
    policy: &Policy,
    exchange: &Exchange,
    headers: &H,
) -> Option<BodyReader> {
    let Exchange::Sync { endpoint, src, .. } = exchange else {
        return None;
    };
    if endpoint.request_body() != RequestBody::Event {
        return None;
    }
    let event = body::ArrivingEvent::push(policy, headers)?;
    Some(BodyReader {
        event,
        rules_of: *src,
    })
}

/// Stage 3 while the answer arrives: a reader of a pulled event
/// (`events/view`), for the answers it can read as they come (any status
/// `response` decides by the event check alone: not 204/304, which carry
/// no body, nor 4xx/5xx, which may be MISP's errors; at most one
/// `X-UserOrgUUID`; no Content-Encoding, or gzip or br alone); `None` for
/// every other answer, which `response` decides once it is whole.
pub fn response_body_reader<H: HeaderList + ?Sized>(
    policy: &Policy,
    exchange: &Exchange,
    status: u16,
    headers: &H,
) -> Option<BodyReader> {
    let Exchange::Sync { endpoint, dst, .. } = exchange else {
        return None;
    };
    if endpoint.response_body() != ResponseBody::Event
        || matches!(status, 204 | 304)
        || may_be_misp_error(status)
    {
        return None;
    }
    let event = body::ArrivingEvent::pull(policy, headers)?;
    Some(BodyReader {
        event,
        rules_of: *dst,
    })
}

/// An event read as it arrives (`request_body_reader`,
/// `response_body_reader`).
pub struct BodyReader {
    event: body::ArrivingEvent,
    /// The instance whose rules decide: the source of a push, the
    /// destination of a pull.
    rules_of: InstanceId,
}

impl BodyReader {
    /// Reads the body received so far (it only grows). `Some` once it is
    /// blocked whatever follows: the body need not be read further. The
    /// reason names the first element that breaks a rule; a whole-body
    /// read may name an event-level violation of the same body first.
    pub fn feed(&mut self, policy: &Policy, so_far: &[u8]) -> Option<Block> {
        self.event
            .feed(&policy.instance(self.rules_of).rules, so_far)
    }

    /// The verdict on the whole body: `request_body`'s (a push) or
    /// `response`'s (a pull), computed mostly while it arrived.
    pub fn finish<H: HeaderList + ?Sized>(
        self,
        policy: &Policy,
        headers: &H,
        body: &[u8],
    ) -> Result<(), Block> {
        let rules = &policy.instance(self.rules_of).rules;
        self.event.finish(policy, rules, headers, body)
    }
}

/// Stage 3: decide on a buffered response (destination rules).
///
/// A 4xx/5xx answer that is one of MISP's API errors passes with its
/// status: sync clients act on them (a 404 with `Location` on
/// `events/add` makes MISP retry as an edit; a 403 "not newer than the
/// local copy" is expected). Any other answer, whatever its status, must
/// pass the endpoint's check.
pub fn response<H: HeaderList + ?Sized>(
    policy: &Policy,
    exchange: &Exchange,
    resp: &Response<'_, H>,
) -> Result<(), Block> {
    let Exchange::Sync { endpoint, dst, .. } = exchange else {
        return Ok(());
    };
    let kind = endpoint.response_body();
    if kind == ResponseBody::Uninspected {
        return Ok(());
    }
    // 204 and 304 carry no body by HTTP's framing (the data path reads
    // none), so there is nothing to inspect. MISP's sync relies on 304: the
    // event index is asked for with the ETag of its cached copy
    // (Server::getEventIndexFromServer, before every sighting push), and
    // refusing the 304 stops that push.
    if matches!(resp.status, 204 | 304) && resp.body.is_empty() {
        return Ok(());
    }
    let rules = &policy.instance(*dst).rules;
    if may_be_misp_error(resp.status)
        && body::check_response(policy, rules, ResponseBody::MispError, resp).is_ok()
    {
        return Ok(());
    }
    body::check_response(policy, rules, kind, resp)
}

/// A status whose answer `response` first tries as one of MISP's API
/// errors (passed with its status) before the endpoint's own check.
fn may_be_misp_error(status: u16) -> bool {
    (400..600).contains(&status)
}

#[cfg(test)]
mod body_stage_tests;
#[cfg(test)]
mod stage_tests;
#[cfg(test)]
mod tests;
