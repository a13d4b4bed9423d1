//! What any HTTP/1 proxy needs and nothing of ours: the HTTP/1.1 codec with its client and server halves
//! ([`h1`]), the fields a proxy adds and removes ([`forwarding`]), and the request body either server
//! side hands over ([`body`]).
//!
//! May import: [`crate::config`] (limits) and [`crate::net`] (the transports it reads and writes).
//! Knows nothing of upstreams, backends, balancing or metrics.

pub(crate) mod body;
pub(crate) mod forwarding;
pub(crate) mod h1;

pub(crate) use body::ClientBody;
pub(crate) use forwarding::ClientInfo;
