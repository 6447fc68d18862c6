//! Router deployment: the nftables guard and capture tables rendered from
//! the policy, so capture and policy cannot drift apart, and the running
//! gateway's keeper of those tables.

pub mod nftables;
pub mod runtime;
