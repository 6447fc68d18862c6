//! HTTP/1.1 on both legs (RFC 9112), strict: the gateway parses heads with
//! `httparse`, decides framing itself and re-frames every body it forwards,
//! so no ambiguity in one peer's framing can reach the other (request
//! smuggling). Pure parsing lives in `head`, `framing` and `chunked`; the
//! async edges in `io`.

pub mod chunked;
pub mod framing;
pub mod head;
pub mod io;
pub mod rate;

pub use framing::{request_framing, response_framing, Framing};
pub use head::{HeadError, Headers, RequestHead, ResponseHead, Version};
