//! Socket and capture layer of the gateway.
//!
//! Traffic reaches the gateway in one of three ways ([`ListenMode`](crate::vocab::ListenMode)):
//! nftables `redirect` (original destination via `SO_ORIGINAL_DST`),
//! nftables `tproxy` (original destination is the accepted socket's local
//! address) or as an explicit proxy. This module binds the listeners, recovers
//! the original destination, refuses destinations that would loop back into
//! the gateway, and opens the upstream connection (optionally from the
//! client's own address for fully transparent TPROXY operation).
//!
//! Addresses are typed ([`ClientAddr`], [`OrigDstAddr`], [`ListenAddr`]) and
//! normalised (IPv4-mapped IPv6 unwrapped) on construction, so who-is-who
//! cannot be mixed up and a v4 client seen through a `[::]` listener compares
//! equal to the IPv4 address written in the configuration.

// Everything here goes through socket2/nix safe wrappers; keep it that way.
#![deny(unsafe_code)]

pub mod addr;
pub mod error;
pub mod guard;
pub mod listen;
pub mod orig_dst;
pub mod upstream;

pub use addr::{unmap, unmap_socket_addr, ClientAddr, ListenAddr, OrigDstAddr};
pub use error::NetError;
pub use guard::{local_ip_addresses, LocalListeners};
pub use listen::bind_listener;
pub use orig_dst::{original_dst_redirect, original_dst_tproxy};
pub use upstream::connect_upstream;
