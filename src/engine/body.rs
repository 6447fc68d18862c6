//! Reading a body the policy must inspect: size limit, Content-Encoding,
//! content type, JSON shape — then the content checks. Every failure to
//! understand the body is a block (fail closed); nothing is passed
//! uninspected.

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::checks;
use super::incremental::{EventReader, Progress};
use super::model::{AnalystEntry, GalaxyClusterDoc, ProposalProbe, ShadowAttributeDoc};
use super::params;
use super::reading::{Ctx, Violation};
use super::stream::EventBody;
use super::{Block, HeaderList, Response, Sanitized};
use crate::codec::{self, Arriving, DecodeError, DecodeLimits};
use crate::policy::{Policy, RequestBody, ResponseBody, Rules};

/// Which side of the exchange a body belongs to; only changes wording.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Request,
    Response,
}

impl Side {
    fn word(self) -> &'static str {
        match self {
            Side::Request => "request",
            Side::Response => "response",
        }
    }

    /// A refusal as this side words it: an answer is never forwarded after
    /// a block, so every refusal of one is a plain 403 whatever the cause.
    fn refusal(self, b: Block) -> Block {
        match self {
            Side::Request => b,
            Side::Response => Block { status: 403, ..b },
        }
    }
}

pub(super) fn check_request<H: HeaderList + ?Sized>(
    policy: &Policy,
    rules: &Rules,
    kind: RequestBody,
    headers: &H,
    body: &[u8],
) -> Result<(), Block> {
    let side = Side::Request;
    match kind {
        // Nothing to decode or type: any byte at all is refused.
        RequestBody::Empty => return empty(body),
        // MISP answers an empty search with 400 and serves nothing.
        RequestBody::SightingsSearch if body.is_empty() => return Ok(()),
        _ => {}
    }
    json_content_type(headers)?;
    let decoded = decode(policy, headers, body, side)?;
    let decoded = utf8(&decoded)?;
    let ctx = Ctx {
        rules,
        user_org: None,
    };
    let outcome = match kind {
        RequestBody::Uninspected => Ok(()),
        RequestBody::Event => event(&ctx, decoded, EventBody::Pushed),
        RequestBody::EventIndexFilters => params::events_index(decoded),
        RequestBody::ClusterSearchFilters => params::cluster_search(decoded),
        RequestBody::SightingsSearch => params::sightings_search(decoded),
        // Returned above.
        RequestBody::Empty => Ok(()),
        RequestBody::GalaxyClusters => galaxy_clusters(&ctx, decoded),
        RequestBody::AnalystData => serde_json::from_str::<AnalystEntry>(decoded)
            .map_err(Violation::from)
            .and_then(|e| checks::analyst_entry(&ctx, &e)),
        RequestBody::Proposals => proposals(&ctx, decoded),
    };
    outcome.map_err(|v| violation_block(v, side))
}

/// An event body read as it arrives (`engine::BodyReader`): the
/// incremental reader fed the body so far, through its decoder when it is
/// compressed. A push: MISP compresses pushes over 1 KB with brotli or gzip
/// for a receiver that reads it. A pulled event: a MISP behind Apache's
/// mod_deflate answers in gzip.
pub(super) struct ArrivingEvent {
    reader: EventReader,
    decoder: Option<Arriving>,
    side: Side,
    /// A pulled event's `X-UserOrgUUID` (`check_response` reads it).
    user_org: Option<String>,
}

impl ArrivingEvent {
    /// For a push whose head passes what `check_request` checks of heads
    /// (content type) and whose Content-Encoding is none, or gzip or br
    /// alone.
    pub(super) fn push<H: HeaderList + ?Sized>(policy: &Policy, headers: &H) -> Option<Self> {
        json_content_type(headers).ok()?;
        Self::new(policy, headers, Side::Request, None)
    }

    /// For an `events/view` answer whose head passes what `check_response`
    /// checks of heads (one `X-UserOrgUUID` at most) and whose
    /// Content-Encoding is none, or gzip or br alone. The caller takes only
    /// answers that `engine::response` decides by the event check alone
    /// (not 4xx/5xx, which may be MISP's errors).
    pub(super) fn pull<H: HeaderList + ?Sized>(policy: &Policy, headers: &H) -> Option<Self> {
        let user_org = user_org_uuid(headers).ok()?;
        Self::new(policy, headers, Side::Response, user_org)
    }

    fn new<H: HeaderList + ?Sized>(
        policy: &Policy,
        headers: &H,
        side: Side,
        user_org: Option<String>,
    ) -> Option<Self> {
        let codings = codec::parse_content_encoding(headers.values("content-encoding")).ok()?;
        let decoder = match codings.as_slice() {
            [] => None,
            [coding] => Some(Arriving::new(*coding, decode_limits(policy))?),
            _ => return None,
        };
        let kind = match side {
            Side::Request => EventBody::Pushed,
            Side::Response => EventBody::Pulled,
        };
        Some(ArrivingEvent {
            reader: EventReader::new(kind),
            decoder,
            side,
            user_org,
        })
    }

    pub(super) fn feed(&mut self, rules: &Rules, wire: &[u8]) -> Option<Block> {
        let ctx = Ctx {
            rules,
            user_org: self.user_org.as_deref(),
        };
        let decoded = match self.decoder.as_mut() {
            Some(d) => d.feed(wire)?,
            None => wire,
        };
        match self.reader.feed(&ctx, decoded) {
            Progress::Blocked(v) => Some(self.side.refusal(violation_block(v, self.side))),
            Progress::Reading => None,
        }
    }

    /// `check_request` for the pushed event, `check_response` for the
    /// pulled one, with what was read as it arrived in the place of the
    /// decoding and the event read: the same checks in the same order, so
    /// the same verdict.
    pub(super) fn finish<H: HeaderList + ?Sized>(
        self,
        policy: &Policy,
        rules: &Rules,
        headers: &H,
        wire: &[u8],
    ) -> Result<(), Block> {
        let (side, kind) = (self.side, self.reader.kind());
        let refusal = |b: Block| side.refusal(b);
        if side == Side::Request {
            json_content_type(headers)?;
        }
        let ctx = Ctx {
            rules,
            user_org: self.user_org.as_deref(),
        };
        let (decoded, reader) = match self.decoder {
            None => (
                decode(policy, headers, wire, side).map_err(refusal)?,
                Some(self.reader),
            ),
            Some(d) => {
                // `decode`'s first check, before the decoder's result.
                within_body_limit(policy, wire, side).map_err(refusal)?;
                match d.finish(wire) {
                    Some(d) => (Cow::Owned(d), Some(self.reader)),
                    // Decoded the one-shot way, which words any refusal;
                    // the incremental reader's view is not used.
                    None => (decode(policy, headers, wire, side).map_err(refusal)?, None),
                }
            }
        };
        let outcome = match reader.and_then(|r| r.finish(&ctx, &decoded)) {
            // The reader validated all of it as UTF-8.
            Some(checked) => checked,
            None => event(&ctx, utf8(&decoded)?, kind),
        };
        outcome.map_err(|v| refusal(violation_block(v, side)))
    }
}

pub(super) fn check_response<H: HeaderList + ?Sized>(
    policy: &Policy,
    rules: &Rules,
    kind: ResponseBody,
    resp: &Response<'_, H>,
) -> Result<(), Block> {
    let side = Side::Response;
    let forbid = |b: Block| side.refusal(b);
    let decoded = decode(policy, resp.headers, resp.body, side).map_err(forbid)?;
    let decoded = utf8(&decoded)?;
    let user_org = user_org_uuid(resp.headers).map_err(forbid)?;
    let ctx = Ctx {
        rules,
        user_org: user_org.as_deref(),
    };
    let outcome = match kind {
        ResponseBody::Uninspected => Ok(()),
        ResponseBody::Event => event(&ctx, decoded, EventBody::Pulled),
        ResponseBody::ShadowAttributes => serde_json::from_str::<Vec<ShadowAttributeDoc>>(decoded)
            .map_err(Violation::from)
            .and_then(|list| {
                list.iter()
                    .try_for_each(|sa| checks::proposal(&ctx, &sa.ShadowAttribute))
            }),
        ResponseBody::GalaxyCluster => serde_json::from_str::<GalaxyClusterDoc>(decoded)
            .map_err(Violation::from)
            .and_then(|c| checks::galaxy_cluster(&ctx, &c.GalaxyCluster)),
        ResponseBody::Sightings => super::answers::sightings(decoded),
        ResponseBody::AnalystDataList => serde_json::from_str::<Vec<AnalystEntry>>(decoded)
            .map_err(Violation::from)
            .and_then(|list| list.iter().try_for_each(|e| checks::analyst_entry(&ctx, e))),
        ResponseBody::StoredEvent => super::answers::push_answer(&ctx, resp.status, decoded),
        ResponseBody::MinimalEventIndex => super::answers::minimal_event_index(decoded),
        ResponseBody::MinimalClusterIndex => super::answers::minimal_cluster_index(decoded),
        ResponseBody::MispError => super::answers::misp_error(decoded),
    };
    outcome.map_err(|v| forbid(violation_block(v, side)))
}

/// JSON text is UTF-8 (RFC 8259 §8.1) and PHP's json_decode rejects
/// anything else, so the whole body is validated once, up front; the
/// parser then reads strings without re-checking each one.
fn utf8(body: &[u8]) -> Result<&str, Block> {
    std::str::from_utf8(body).map_err(|_| Block::forbidden("invalid JSON body"))
}

/// Undoes Content-Encoding within the policy's limits.
fn decode<'b, H: HeaderList + ?Sized>(
    policy: &Policy,
    headers: &H,
    body: &'b [u8],
    side: Side,
) -> Result<Cow<'b, [u8]>, Block> {
    let limits = &policy.limits;
    within_body_limit(policy, body, side)?;
    let codings =
        codec::parse_content_encoding(headers.values("content-encoding")).map_err(decode_block)?;
    let decoded = codec::decode(body, &codings, &decode_limits(policy)).map_err(decode_block)?;
    if decoded.len() as u64 > limits.max_decoded_body_bytes {
        return Err(decode_block(DecodeError::TooLarge {
            limit: limits.max_decoded_body_bytes,
        }));
    }
    Ok(decoded)
}

fn within_body_limit(policy: &Policy, body: &[u8], side: Side) -> Result<(), Block> {
    let max = policy.limits.max_body_bytes;
    if body.len() as u64 > max {
        return Err(Block::with_status(
            413,
            format!("{} body exceeds {max} bytes", side.word()),
        ));
    }
    Ok(())
}

fn decode_limits(policy: &Policy) -> DecodeLimits {
    let limits = &policy.limits;
    DecodeLimits {
        max_decoded_bytes: limits.max_decoded_body_bytes,
        max_ratio: limits.max_decompression_ratio,
        ratio_floor_bytes: limits.decompression_ratio_floor_bytes,
    }
}

fn decode_block(e: DecodeError) -> Block {
    let status = match e {
        DecodeError::Unsupported(_) | DecodeError::TooManyCodings => 415,
        DecodeError::TooLarge { .. } | DecodeError::Bomb { .. } => 413,
        _ => 400,
    };
    Block::with_status(status, e.to_string())
}

/// MISP sync sends `application/json`; CakePHP would feed a form-encoded
/// body to the same controller, parsed differently from what is checked here.
fn json_content_type<H: HeaderList + ?Sized>(headers: &H) -> Result<(), Block> {
    let mut values = headers.values("content-type");
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(Block::with_status(
            415,
            "request body must have exactly one Content-Type: application/json",
        ));
    };
    let value = String::from_utf8_lossy(value);
    let mut parts = value.split(';');
    let media = parts.next().unwrap_or_default().trim();
    let charset_ok = parts.all(|p| match p.split_once('=') {
        Some((k, v)) if k.trim().eq_ignore_ascii_case("charset") => {
            v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        }
        _ => true,
    });
    if media.eq_ignore_ascii_case("application/json") && charset_ok {
        Ok(())
    } else {
        let shown: String = value.chars().take(64).collect();
        Err(Block::with_status(
            415,
            format!(
                "request content type must be application/json, got {}",
                Sanitized(&shown)
            ),
        ))
    }
}

/// The `X-UserOrgUUID` response header MISP sets with
/// `Security.user_org_uuid_in_response_header`. Several copies are ambiguous.
fn user_org_uuid<H: HeaderList + ?Sized>(headers: &H) -> Result<Option<String>, Block> {
    let mut values = headers.values("x-userorguuid");
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => Ok(Some(String::from_utf8_lossy(v).trim().to_string())),
        (Some(_), Some(_)) => Err(Block::forbidden("several X-UserOrgUUID headers")),
    }
}

fn event(ctx: &Ctx, body: &str, kind: EventBody) -> Result<(), Violation> {
    super::stream::check_event_body(ctx, body, kind)
}

/// A request that must carry no body (`RequestBody::Empty`).
fn empty(body: &[u8]) -> Result<(), Block> {
    if body.is_empty() {
        Ok(())
    } else {
        Err(Block::forbidden(
            "request body not allowed: MISP's pull sends this request without one",
        ))
    }
}

fn galaxy_clusters(ctx: &Ctx, body: &str) -> Result<(), Violation> {
    let list: Vec<GalaxyClusterDoc> = serde_json::from_str(body)?;
    list.iter()
        .try_for_each(|c| checks::galaxy_cluster(ctx, &c.GalaxyCluster))
}

/// `/events/pushProposals`: a list of proposals, each wrapped as
/// `{"ShadowAttribute": {...}}` or given bare.
fn proposals(ctx: &Ctx, body: &str) -> Result<(), Violation> {
    let entries: Vec<&RawValue> = serde_json::from_str(body)?;
    for raw in entries {
        let probe: ProposalProbe = serde_json::from_str(raw.get())?;
        match probe.ShadowAttribute {
            Some(inner) if inner.get().starts_with('{') => {
                if probe.kind.0 || probe.category.0 || probe.value.0 {
                    return Err(Violation::Rule(
                        "proposal is both wrapped and bare; refusing the ambiguous payload".into(),
                    ));
                }
                let sa: ShadowAttributeDoc = serde_json::from_str(raw.get())?;
                checks::proposal(ctx, &sa.ShadowAttribute)?;
            }
            _ => checks::proposal(ctx, &serde_json::from_str(raw.get())?)?,
        }
    }
    Ok(())
}

/// Turns a violation into the block reason: rule texts as they are; JSON
/// problems in misp-guard's words, with a detail that names fields and
/// positions but never quotes body content into the log.
fn violation_block(v: Violation, side: Side) -> Block {
    match v {
        Violation::Rule(reason) => Block::forbidden(reason),
        Violation::Malformed(e) => {
            use serde_json::error::Category;
            let msg = e.to_string();
            let reason = match e.classify() {
                Category::Syntax | Category::Eof | Category::Io => "invalid JSON body".to_string(),
                Category::Data if msg.starts_with("duplicate field") => {
                    let field = msg.split('`').nth(1).unwrap_or("?");
                    format!(
                        "duplicate key `{field}` in JSON body (line {} column {})",
                        e.line(),
                        e.column()
                    )
                }
                Category::Data if msg.starts_with("missing field") => {
                    let field = msg.split('`').nth(1).unwrap_or("?");
                    format!(
                        "unexpected error, rejecting {}: missing field `{field}` (line {} column {})",
                        side.word(),
                        e.line(),
                        e.column()
                    )
                }
                Category::Data => format!(
                    "unexpected error, rejecting {}: unexpected JSON shape (line {} column {})",
                    side.word(),
                    e.line(),
                    e.column()
                ),
            };
            Block::forbidden(reason)
        }
    }
}
