//! Seeing what the proxy does: the Prometheus counters and their rendering ([`metrics`]), the JSON
//! access log ([`access_log`]) and the live feed of routing decisions for the dashboard
//! ([`decisions`]).
//!
//! May import: [`crate::config`], [`crate::net`] (connection counts), [`crate::upstream`] (the backends
//! and their stats, read at render time). The request path only bumps counters; rendering happens on a
//! scrape.

pub(crate) mod access_log;
pub(crate) mod decisions;
pub(crate) mod metrics;
