//! misp-guard-gw: a transparent gateway that enforces the misp-guard policy
//! on MISP server synchronisation.
//!
//! - [`config`]: misp-guard's `config.json` (+ `gateway` section), validated
//!   and compiled once into a [`policy::Policy`].
//! - [`engine`]: the pure filter engine (policy in, flow in, verdict out).
//! - [`codec`]: Content-Encoding decoding with size and ratio limits.
//! - [`http`]: strict HTTP/1.1 heads, framing and re-framing.
//! - [`net`]: capture — typed addresses, original destination, listeners.
//! - [`tls`]: the gateway CA, minted leaves, TLS towards client and server.
//! - [`deploy`]: the nftables capture ruleset rendered from the policy.
//! - [`ops`]: operating it — audit trail, metrics, health.
//! - [`cli`]: the `misp-guard-gw` subcommands.

#![forbid(unsafe_code)]

pub mod cli;
pub mod codec;
pub mod config;
pub mod deploy;
pub mod engine;
pub mod http;
pub mod net;
pub mod ops;
pub mod policy;
pub mod proxy;
pub mod tls;
pub mod vocab;
