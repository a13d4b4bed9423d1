//! HTTP/1.1 (RFC 9112): the codec both halves share, then the client half ([`client`]: one request
//! written to a backend and its response read, in the caller's task) and the server half ([`server`]:
//! request heads parsed, request bodies read, the pieces the connection loop in
//! [`crate::server`] is built from).

pub(crate) mod client;
pub(crate) mod server;
