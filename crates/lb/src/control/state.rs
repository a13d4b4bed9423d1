//! The proxy's live state: what every worker reads per request, and what a reload replaces.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::config::{ProxyNet, ServerLimits};
use crate::observe::metrics::Metrics;
use crate::upstream::Upstreams;

/// What every worker shares: the routing table, the metrics, the switches.
#[derive(Debug)]
pub struct Shared {
    /// Every upstream group and the routes to them.
    pub upstreams: Arc<Upstreams>,
    /// The metrics every request updates.
    pub metrics: Arc<Metrics>,
    /// The switches and limits in force; a reload stores new ones. Read with [`Shared::settings`].
    pub settings: ArcSwap<Settings>,
    /// `[server] trusted_proxies`, read once per accepted connection ([`Shared::trusts`]); apart from
    /// [`Settings`] because a list is not `Copy`, and a request copies its settings.
    pub trusted_proxies: ArcSwap<Vec<ProxyNet>>,
}

impl Shared {
    /// The settings in force now, copied out: one `ArcSwap` load (no lock, no reference count
    /// touched), and the request keeps its copy even if a reload stores new ones meanwhile.
    pub fn settings(&self) -> Settings {
        **self.settings.load()
    }

    /// Is a client connecting from `ip` a proxy whose forwarding fields are passed on?
    pub fn trusts(&self, ip: std::net::IpAddr) -> bool {
        let nets = self.trusted_proxies.load();
        !nets.is_empty() && nets.iter().any(|n| n.contains(ip))
    }
}

/// What a reload may change in how requests and connections are handled (`[server]` and `[admin]`
/// switches). Read once per request and once per accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Honour `X-Lb-Explain: 1`.
    pub explain: bool,
    /// Log one JSON line per request.
    pub access_log: bool,
    /// `[server.limits]`: a connection keeps the ones in force when it was accepted (its timeouts and
    /// header size); the request checks in `validate.rs` read `max_body_bytes` per request.
    pub limits: ServerLimits,
    /// How long open connections get to finish on shutdown.
    pub shutdown_grace: Duration,
}

impl Settings {
    /// The settings a configuration asks for.
    pub fn of(config: &crate::Config) -> Settings {
        let admin = config.admin.as_ref();
        Settings {
            explain: admin.is_some_and(|a| a.explain),
            access_log: admin.is_some_and(|a| a.access_log),
            limits: config.server.limits,
            shutdown_grace: config.server.shutdown_grace,
        }
    }
}
