//! Router deployment helpers: the nftables capture ruleset rendered from the
//! policy, so capture and policy cannot drift apart.

pub mod nftables;
