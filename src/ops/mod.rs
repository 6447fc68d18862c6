//! Operating the gateway: the audit trail of every decided exchange.
//! Everything here sits beside the data path and must never hold or
//! refuse an exchange.

pub mod audit;
