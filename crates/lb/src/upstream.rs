//! Upstream groups: the live backend list of each group, swapped atomically when it changes, and the
//! routing table that maps a request's host and path to a group.
//!
//! # One atomic load per request
//!
//! The proxy reads an upstream's state ([`UpstreamState`]: the backend set, the balancer over it, the
//! per-backend metrics) with one `ArcSwap::load_full`, then works on that snapshot for the whole request.
//! A change (the admin API adds a backend, a future hot reload replaces the list) builds a complete new
//! state next to the old one and swaps the pointer. Requests that started on the old state finish on it:
//! their `InFlightGuard`s keep the old `Backend`s alive, and [`lb_algorithms::BackendSet::rebuild`] hands
//! the *same* `Arc<Backend>` to the new set for every backend that stays, so in-flight counts, EWMA and
//! health carry over. Pingora's load-balancing crate works the same way.
//!
//! Writers (the admin API, health checks flipping nothing but an atomic) are rare; the mutex that
//! serialises rebuilds is never touched by the request path.
//!
//! Health changes do not rebuild anything: [`Upstream::set_health`] is one atomic store on the current
//! set, and every pick reads health as it goes.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use lb_algorithms::{BackendSet, BackendSpec, Balancer, Health, build, now_nanos};

use crate::Error;
use crate::config::UpstreamConfig;
use crate::metrics::BackendStats;
use crate::retry::RetryBudget;

/// One upstream group.
#[derive(Debug)]
pub struct Upstream {
    /// Its name (unique).
    pub name: String,
    /// Its configuration as loaded (the backend list in it is the *initial* one; see [`Upstream::load`]).
    pub config: UpstreamConfig,
    state: ArcSwap<UpstreamState>,
    /// Serialises rebuilds so two admin calls cannot lose each other's change.
    write: Mutex<()>,
    /// The retry budget, shared by every worker thread.
    pub(crate) budget: RetryBudget,
}

/// A consistent snapshot of one group: the set, the balancer over exactly that set, and the metrics of
/// each backend at the same index.
#[derive(Debug)]
pub struct UpstreamState {
    /// The backends.
    pub set: Arc<BackendSet>,
    /// The algorithm over `set`.
    pub balancer: Arc<dyn Balancer>,
    /// Per-backend counters, parallel to `set.backends()`, kept across rebuilds by address.
    pub stats: Vec<Arc<BackendStats>>,
}

impl Upstream {
    /// Build a group from its configuration (fails when the algorithm rejects its options).
    pub fn new(config: UpstreamConfig) -> Result<Upstream, Error> {
        let set = BackendSet::new(config.backends.clone(), config.set_options());
        let state = Self::assemble(&config, set, &[])?;
        Ok(Upstream {
            name: config.name.clone(),
            budget: RetryBudget::new(config.retry.budget_ratio, config.retry.budget_min_per_sec),
            config,
            state: ArcSwap::from_pointee(state),
            write: Mutex::new(()),
        })
    }

    fn assemble(
        config: &UpstreamConfig,
        set: Arc<BackendSet>,
        old_stats: &[Arc<BackendStats>],
    ) -> Result<UpstreamState, Error> {
        let balancer = build(config.algorithm, Arc::clone(&set), &config.options.algorithm_options())
            .map_err(|error| Error::Algorithm { upstream: config.name.clone(), error })?;
        let stats = set
            .backends()
            .iter()
            .map(|b| match old_stats.iter().find(|s| s.addr() == b.addr()) {
                Some(s) => Arc::clone(s),
                None => Arc::new(BackendStats::new(b.addr())),
            })
            .collect();
        Ok(UpstreamState { set, balancer, stats })
    }

    /// The current state: one atomic load. Hold the `Arc` for the whole request.
    #[inline]
    pub fn load(&self) -> Arc<UpstreamState> {
        self.state.load_full()
    }

    /// Replace the backend list. Backends that stay keep their state and metrics; new ones start
    /// healthy (and ramp, with slow start).
    pub fn set_backends(&self, specs: Vec<BackendSpec>) -> Result<(), Error> {
        let _write = self.write.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.replace(specs)
    }

    fn replace(&self, specs: Vec<BackendSpec>) -> Result<(), Error> {
        for (i, s) in specs.iter().enumerate() {
            crate::config::check_backend_addr(&s.addr)
                .map_err(|reason| Error::BadBackend { upstream: self.name.clone(), reason })?;
            if specs[..i].iter().any(|t| t.addr == s.addr) {
                return Err(Error::BadBackend {
                    upstream: self.name.clone(),
                    reason: format!("backend {} is listed twice", s.addr),
                });
            }
        }
        let old = self.load();
        let set = old.set.rebuild(specs, now_nanos());
        let state = Self::assemble(&self.config, set, &old.stats)?;
        self.state.store(Arc::new(state));
        Ok(())
    }

    /// Add one backend (an error if its address is already there).
    pub fn add_backend(&self, spec: BackendSpec) -> Result<(), Error> {
        let _write = self.write.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let old = self.load();
        let mut specs = specs_of(&old.set);
        specs.push(spec);
        self.replace(specs)
    }

    /// Remove one backend by address (an error if it is not there). Requests in flight to it finish.
    pub fn remove_backend(&self, addr: &str) -> Result<(), Error> {
        let _write = self.write.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let old = self.load();
        let mut specs = specs_of(&old.set);
        let before = specs.len();
        specs.retain(|s| s.addr != addr);
        if specs.len() == before {
            return Err(Error::UnknownBackend { upstream: self.name.clone(), addr: addr.to_string() });
        }
        self.replace(specs)
    }

    /// Set one backend's health by address on the current set; false if there is no such backend.
    pub fn set_health(&self, addr: &str, health: Health) -> bool {
        let state = self.load();
        match state.set.position(addr) {
            Some(i) => state.set.set_health(i, health, now_nanos()).is_some(),
            None => false,
        }
    }
}

fn specs_of(set: &BackendSet) -> Vec<BackendSpec> {
    set.backends().iter().map(|b| BackendSpec::weighted(b.addr(), b.weight())).collect()
}

/// Every group, and the routing from (host, path) to a group.
#[derive(Debug)]
pub struct Upstreams {
    all: Vec<Arc<Upstream>>,
    /// Indices into `all`, most specific route first: longer path prefix first, then groups that name
    /// hosts before those that take any host.
    routes: Vec<usize>,
}

impl Upstreams {
    /// Build every group of a configuration.
    pub fn new(configs: &[UpstreamConfig]) -> Result<Upstreams, Error> {
        let all =
            configs.iter().cloned().map(|c| Upstream::new(c).map(Arc::new)).collect::<Result<Vec<_>, _>>()?;
        let mut routes: Vec<usize> = (0..all.len()).collect();
        // A stable sort keeps file order among equals, so the first of two identical routes wins.
        routes.sort_by_key(|&i| {
            let c = &all[i].config;
            (std::cmp::Reverse(c.path_prefix.len()), c.hosts.is_empty())
        });
        Ok(Upstreams { all, routes })
    }

    /// Every group, in configuration order.
    pub fn all(&self) -> &[Arc<Upstream>] {
        &self.all
    }

    /// A group by name.
    pub fn get(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.all.iter().find(|u| u.name == name)
    }

    /// The group for a request: hosts must match when the group lists any (the port of the Host header
    /// is ignored, case too), and the longest matching path prefix wins.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<&Arc<Upstream>> {
        let host = host.map(strip_port);
        self.routes.iter().map(|&i| &self.all[i]).find(|u| {
            let c = &u.config;
            path.starts_with(c.path_prefix.as_str())
                && (c.hosts.is_empty()
                    || host.is_some_and(|h| c.hosts.iter().any(|x| x.eq_ignore_ascii_case(h))))
        })
    }
}

/// `example.com:8080` -> `example.com`; `[::1]:8080` -> `[::1]`.
fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_algorithms::Algorithm;

    fn group(name: &str, prefix: &str, hosts: &[&str]) -> UpstreamConfig {
        let mut c = UpstreamConfig::new(name, Algorithm::RoundRobin, vec![BackendSpec::new("127.0.0.1:1")]);
        c.path_prefix = prefix.to_string();
        c.hosts = hosts.iter().map(|h| h.to_string()).collect();
        c
    }

    fn routed(u: &Upstreams, host: Option<&str>, path: &str) -> Option<String> {
        u.route(host, path).map(|u| u.name.clone())
    }

    #[test]
    fn longest_prefix_wins_and_hosts_must_match() -> Result<(), Error> {
        let u = Upstreams::new(&[
            group("root", "/", &[]),
            group("api", "/api/", &[]),
            group("shop", "/", &["shop.example"]),
        ])?;
        assert_eq!(routed(&u, None, "/api/users").as_deref(), Some("api"));
        assert_eq!(routed(&u, Some("shop.example:8080"), "/cart").as_deref(), Some("shop"));
        assert_eq!(routed(&u, Some("SHOP.example"), "/api/x").as_deref(), Some("api"), "longer prefix first");
        assert_eq!(routed(&u, Some("other"), "/cart").as_deref(), Some("root"));
        let only_api = Upstreams::new(&[group("api", "/api/", &[])])?;
        assert_eq!(routed(&only_api, None, "/"), None);
        Ok(())
    }

    #[test]
    fn rebuild_keeps_stats_and_state_of_backends_that_stay() -> Result<(), Error> {
        let up = Upstream::new(UpstreamConfig::new(
            "app",
            Algorithm::RoundRobin,
            vec![BackendSpec::new("127.0.0.1:1"), BackendSpec::new("127.0.0.1:2")],
        ))?;
        let before = up.load();
        let guard = before.set.start(1, 1);
        up.add_backend(BackendSpec::new("127.0.0.1:3"))?;
        assert!(up.add_backend(BackendSpec::new("127.0.0.1:3")).is_err(), "duplicates are refused");
        up.remove_backend("127.0.0.1:1")?;
        let after = up.load();
        assert_eq!(after.set.len(), 2);
        assert!(Arc::ptr_eq(&after.stats[0], &before.stats[1]), "127.0.0.1:2 kept its metrics");
        assert_eq!(after.set.backends()[0].in_flight(), 1, "and its in-flight count");
        drop(guard);
        assert!(up.set_health("127.0.0.1:3", Health::Draining));
        assert!(!up.set_health("127.0.0.1:1", Health::Draining), "removed");
        assert!(matches!(up.remove_backend("127.0.0.1:1"), Err(Error::UnknownBackend { .. })));
        Ok(())
    }
}
