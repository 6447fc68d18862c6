//! The ground floor: words every layer shares — how a listener receives
//! its connections, IP addresses as compared, names and URLs as parsed. It
//! depends on nothing else of the crate, so config, policy, engine, network
//! and data path can all use it without importing one another.

mod ip;
mod listen;
mod names;

pub use ip::{parse_ip, unmap, unmap_socket_addr};
pub use listen::ListenMode;
pub use names::{is_hostname, is_id, is_uuid, parse_url, split_host_port, AllowedUrl, Scheme};
