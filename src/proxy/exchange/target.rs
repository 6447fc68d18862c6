//! The request target read in the light of the connection's binding:
//! origin-form on a bound connection (its Host decided by the binding),
//! absolute-form `http://` on the explicit proxy.

use super::Target;
use crate::http::head::{RequestHead, Version};
use crate::vocab::{split_host_port, Scheme};

/// Request fields once the target form and Host are understood.
pub struct Parsed {
    /// Host the engine decides on.
    pub host: String,
    pub port: u16,
    pub path: String,
    pub scheme: Scheme,
}

/// Where the request goes. Whether its Host header names that destination
/// is the engine's decision (`engine::protocol::host_header`), taken with
/// the same reason by `evaluate`.
pub fn parse_target(target: &Target, head: &RequestHead) -> Result<Parsed, (u16, String)> {
    let bad = |why: &str| (400, why.to_string());
    let hosts: Vec<&[u8]> = head.headers.get_all("host").collect();
    let host_header = match hosts.as_slice() {
        [] if head.version == Version::Http10 => None,
        [h] => Some(
            std::str::from_utf8(h)
                .ok()
                .and_then(split_host_port)
                .ok_or_else(|| bad("invalid Host header"))?
                .0,
        ),
        [] => return Err(bad("missing Host header")),
        _ => return Err(bad("several Host headers")),
    };
    let scheme = if target.client_tls() {
        Scheme::Https
    } else {
        Scheme::Http
    };
    if target.absolute_form() {
        let rest = head.target.strip_prefix("http://").ok_or_else(|| {
            bad("explicit proxy requests must be CONNECT or absolute-form http://")
        })?;
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        let (host, port) =
            split_host_port(authority).ok_or_else(|| bad("invalid request target"))?;
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        return Ok(Parsed {
            host,
            port: port.unwrap_or(80),
            path,
            scheme: Scheme::Http,
        });
    }
    if !head.target.starts_with('/') {
        return Err(bad("request target must be origin-form"));
    }
    let host = match (target.bound_host(), host_header) {
        (Some(bound), _) => bound.to_string(),
        (None, Some(h)) => h,
        (None, None) => match target.orig_dst() {
            Some(dst) => dst.ip().to_string(),
            None => return Err(bad("missing Host header")),
        },
    };
    Ok(Parsed {
        host,
        port: target.port(),
        path: head.target.clone(),
        scheme,
    })
}
