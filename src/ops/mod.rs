//! Operating the gateway: the audit trail of every decided exchange, the
//! Prometheus metrics, and the health/metrics listener. Everything here
//! sits beside the data path and must never hold or refuse an exchange.

pub mod audit;
pub mod health;
pub mod metrics;
