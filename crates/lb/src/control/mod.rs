//! The control plane: the live state every worker reads ([`state`]) and everything that changes it
//! while the proxy runs: active health checks ([`health`]), passive outlier detection ([`outlier`]),
//! DNS discovery of backends ([`discovery`]), hot reload ([`reload`]) and the admin API ([`admin`],
//! with its access rules in [`admin_access`], the live dashboard in [`dashboard`], and the
//! orchestrator's `/live` and `/ready` in [`probes`]).
//!
//! May import: everything below it ([`crate::config`], [`crate::net`], [`crate::client`],
//! [`crate::upstream`], [`crate::observe`]). The request path ([`crate::forward`]) sits above it: it
//! reads the state and reports outcomes to outlier detection.

pub(crate) mod admin;
pub(crate) mod admin_access;
pub(crate) mod dashboard;
pub(crate) mod discovery;
pub(crate) mod health;
pub(crate) mod outlier;
pub(crate) mod probes;
pub(crate) mod reload;
pub(crate) mod state;

pub(crate) use state::{Settings, Shared};
