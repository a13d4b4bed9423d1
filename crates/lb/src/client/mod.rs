//! Reaching backends: each worker's pool of keep-alive HTTP/1.1 connections ([`pool`]) and the shared
//! HTTP/2 client for upstreams that speak h2 or h2c ([`h2`]).
//!
//! May import: [`crate::config`], [`crate::net`], [`crate::http`]. Does not choose backends (that is
//! [`crate::upstream`]) and does not retry (that is [`crate::forward`]).

pub(crate) mod h2;
pub(crate) mod pool;
