//! Sockets and what wraps them: the listening sockets ([`listeners`]), TLS toward clients ([`tls`]) and
//! toward backends ([`backend_tls`]), a client connection's transport ([`io`]), and the limits and
//! watchdog that keep a connection from holding the proxy hostage ([`limits`]), and the process's
//! open-files limit with the warning when descriptors run out ([`fds`]), and the handing of listening
//! sockets to a new process on a binary upgrade ([`handoff`]).
//!
//! May import: [`crate::config`]. Knows nothing of HTTP messages beyond ALPN names.

pub(crate) mod backend_tls;
pub mod fds;
pub mod handoff;
pub(crate) mod io;
pub(crate) mod limits;
pub(crate) mod listeners;
pub(crate) mod tls;
