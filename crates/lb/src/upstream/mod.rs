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
//!
//! # Layer
//!
//! Owns the groups, the routing table, each backend's counters ([`stats`]) and the retry budget and
//! rules ([`retry`]). May import [`crate::config`], [`crate::net`] (backend TLS) and [`crate::client`]
//! (an upstream's HTTP/2 client).

pub(crate) mod retry;
pub(crate) mod stats;

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use lb_algorithms::{BackendSet, BackendSpec, Balancer, Health, build, now_nanos};

use crate::Error;
use crate::client::h2::H2Client;
use crate::config::UpstreamConfig;
use crate::net::backend_tls::BackendTls;
use crate::upstream::retry::RetryBudget;
use crate::upstream::stats::BackendStats;

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
    /// Backends that DNS discovery stopped seeing: draining, removed once their in-flight count is 0
    /// (see [`Upstream::sync_discovered`]). Carried over by a reload.
    leaving: Mutex<Vec<String>>,
    /// The retry budget, shared by every worker thread.
    pub(crate) budget: RetryBudget,
    /// For `protocol = "h2c"` or `"h2"`: the HTTP/2 client (see `h2_upstream.rs`).
    pub(crate) h2: Option<H2Client>,
    /// `[upstream.tls]` made ready: one rustls client configuration shared by every connection to
    /// these backends, whatever opens it (the pool, the HTTP/2 client, upgrades, health checks).
    pub(crate) tls: Option<Arc<BackendTls>>,
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
        Self::with_set(config, set, &[])
    }

    /// A group built from `config` that takes over `old`'s backend state where it can (see
    /// [`Upstreams::reload`]).
    fn carry_over(config: UpstreamConfig, old: Option<&Upstream>) -> Result<Upstream, Error> {
        let Some(old) = old else { return Upstream::new(config) };
        let was = old.load();
        // A DNS upstream keeps what DNS found until its discovery loop, restarted by the reload, resolves
        // again (and drains what the new answer lacks): a reload never empties it.
        let (specs, leaving) = match config.dns {
            Some(_) => (specs_of(&was.set), lock(&old.leaving).clone()),
            None => (config.backends.clone(), Vec::new()),
        };
        // `rebuild` keeps the old set's options; when those changed (slow start, panic threshold,
        // EWMA decay) the backends start afresh rather than run with stale options.
        let set = if *was.set.options() == config.set_options() {
            was.set.rebuild(specs, now_nanos())
        } else {
            BackendSet::new(specs, config.set_options())
        };
        let upstream = Self::with_set(config, set, &was.stats)?;
        *lock(&upstream.leaving) = leaving;
        Ok(upstream)
    }

    /// A group over `set`, keeping the stats of backends found in `stats` (by address). Its TLS
    /// settings are built afresh (the CA file is read again, so a rotated CA takes effect); pooled
    /// connections made under identical settings stay usable, since the pool id hashes the settings.
    fn with_set(
        config: UpstreamConfig,
        set: Arc<BackendSet>,
        stats: &[Arc<BackendStats>],
    ) -> Result<Upstream, Error> {
        let state = Self::assemble(&config, set, stats)?;
        let tls = Self::backend_tls(&config)?;
        Ok(Upstream {
            name: config.name.clone(),
            budget: RetryBudget::new(config.retry.budget_ratio, config.retry.budget_min_per_sec),
            h2: Self::h2_client(&config, tls.clone())?,
            tls,
            config,
            state: ArcSwap::from_pointee(state),
            write: Mutex::new(()),
            leaving: Mutex::new(Vec::new()),
        })
    }

    fn h2_client(config: &UpstreamConfig, tls: Option<Arc<BackendTls>>) -> Result<Option<H2Client>, Error> {
        H2Client::new(config.protocol, tls, config.timeouts.connect)
            .map_err(|e| Error::BadBackend { upstream: config.name.clone(), reason: e.to_string() })
    }

    fn backend_tls(config: &UpstreamConfig) -> Result<Option<Arc<BackendTls>>, Error> {
        let Some(t) = &config.tls else { return Ok(None) };
        BackendTls::new(t, config.protocol.alpn())
            .map(|tls| Some(Arc::new(tls)))
            .map_err(|e| Error::BadBackend { upstream: config.name.clone(), reason: e.to_string() })
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

    /// Add one backend (an error if its address is already there, or if DNS owns this group's list).
    pub fn add_backend(&self, spec: BackendSpec) -> Result<(), Error> {
        self.not_discovered("add")?;
        let _write = self.write.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let old = self.load();
        let mut specs = specs_of(&old.set);
        specs.push(spec);
        self.replace(specs)
    }

    /// Remove one backend by address (an error if it is not there). Requests in flight to it finish.
    pub fn remove_backend(&self, addr: &str) -> Result<(), Error> {
        self.not_discovered("remove")?;
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

    /// Change one backend's weight in place (an error if it is not there). Its health (draining,
    /// ejected, unhealthy), counters and outlier state carry over, and it keeps its place in the list;
    /// its in-flight count and latency average start afresh, as for a backend just added (requests in
    /// flight finish on the old entry), and with slow start it ramps up to the new weight.
    pub fn set_weight(&self, addr: &str, weight: u32) -> Result<(), Error> {
        let _write = self.write.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let old = self.load();
        let Some(index) = old.set.position(addr) else {
            return Err(Error::UnknownBackend { upstream: self.name.clone(), addr: addr.to_string() });
        };
        let mut specs = specs_of(&old.set);
        specs[index].weight = weight.max(1);
        let now = now_nanos();
        let set = old.set.rebuild(specs, now);
        // Before the swap, so no request ever sees a drained or ejected backend as healthy.
        let health = old.set.backends()[index].health();
        if health != Health::Healthy {
            set.set_health(index, health, now);
        }
        let state = Self::assemble(&self.config, set, &old.stats)?;
        self.state.store(Arc::new(state));
        Ok(())
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

impl Upstream {
    /// Where a backend of this group came from, as `GET /backends` shows it: `dns NAME` for a group
    /// whose list DNS owns, else `config` for one the configuration lists, `admin` for one added
    /// through the admin API.
    pub fn origin(&self, addr: &str) -> String {
        match &self.config.dns {
            Some(dns) => format!("dns {}", dns.target()),
            None if self.config.backends.iter().any(|b| b.addr == addr) => "config".to_string(),
            None => "admin".to_string(),
        }
    }

    fn not_discovered(&self, what: &str) -> Result<(), Error> {
        match &self.config.dns {
            None => Ok(()),
            Some(dns) => Err(Error::BadBackend {
                upstream: self.name.clone(),
                reason: format!(
                    "its backends are found by DNS ({}): change the DNS records to {what} one (drain works)",
                    dns.target()
                ),
            }),
        }
    }

    /// Make the group follow a DNS answer (`wanted`, never empty: an empty answer keeps the last set).
    ///
    /// An address that is new joins (with slow start when configured) without touching the others'
    /// state: the backends that stay are the same `Arc<Backend>`s. One that is gone is *drained*: marked
    /// `Draining` (no new requests) and remembered as leaving; [`Upstream::sweep_leaving`] removes it once
    /// its requests in flight have finished. One that comes back while leaving is healthy again.
    pub fn sync_discovered(&self, wanted: &[BackendSpec]) -> Result<Discovered, Error> {
        let _write = self.write.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut leaving = lock(&self.leaving);
        let old = self.load();
        let mut change = Discovered::default();
        let mut specs: Vec<BackendSpec> = specs_of(&old.set);
        for w in wanted {
            match specs.iter_mut().find(|s| s.addr == w.addr) {
                // A new weight (SRV) is a new backend entry in the set; the old one's requests finish.
                Some(s) if s.weight != w.weight => {
                    s.weight = w.weight;
                    change.reweighted.push(w.addr.clone());
                }
                Some(_) => {}
                None => {
                    specs.push(w.clone());
                    change.added.push(w.addr.clone());
                }
            }
            if let Some(i) = leaving.iter().position(|a| *a == w.addr) {
                leaving.remove(i);
                change.returned.push(w.addr.clone());
            }
        }
        if !change.added.is_empty() || !change.reweighted.is_empty() {
            // Sorted by address: two balancers that see the same answer build the same set, in the same
            // order, whatever order the changes reached them in (Maglev's table depends on the order).
            specs.sort_by(|a, b| a.addr.cmp(&b.addr));
            self.replace(specs)?;
        }
        let now = self.load();
        for (i, b) in now.set.backends().iter().enumerate() {
            let gone = !wanted.iter().any(|w| w.addr == b.addr());
            if gone && !leaving.iter().any(|a| a == b.addr()) {
                now.set.set_health(i, Health::Draining, now_nanos());
                leaving.push(b.addr().to_string());
                change.leaving.push(b.addr().to_string());
            } else if change.returned.iter().any(|a| a == b.addr()) && b.health() == Health::Draining {
                // Back to healthy; health checks take it out again at their next round if it is down.
                now.set.set_health(i, Health::Healthy, now_nanos());
            }
        }
        Ok(change)
    }

    /// Remove the leaving backends whose requests in flight have all finished; returns their addresses.
    pub fn sweep_leaving(&self) -> Result<Vec<String>, Error> {
        let _write = self.write.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut leaving = lock(&self.leaving);
        let state = self.load();
        let done: Vec<String> = leaving
            .iter()
            .filter(|a| state.set.position(a).is_none_or(|i| state.set.backends()[i].in_flight() == 0))
            .cloned()
            .collect();
        if done.is_empty() {
            return Ok(done);
        }
        let specs: Vec<BackendSpec> =
            specs_of(&state.set).into_iter().filter(|s| !done.contains(&s.addr)).collect();
        self.replace(specs)?;
        leaving.retain(|a| !done.contains(a));
        Ok(done)
    }

    /// Backends leaving the group (drained after DNS stopped naming them), not yet removed.
    pub fn leaving(&self) -> Vec<String> {
        lock(&self.leaving).clone()
    }
}

/// What one DNS answer changed in a group ([`Upstream::sync_discovered`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// Addresses that joined.
    pub added: Vec<String>,
    /// Addresses whose weight changed (a new SRV weight).
    pub reweighted: Vec<String>,
    /// Addresses that the answer no longer has: draining from now on.
    pub leaving: Vec<String>,
    /// Addresses that were leaving and are back in the answer.
    pub returned: Vec<String>,
}

impl Discovered {
    /// Did the answer change anything?
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.reweighted.is_empty()
            && self.leaving.is_empty()
            && self.returned.is_empty()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn specs_of(set: &BackendSet) -> Vec<BackendSpec> {
    set.backends().iter().map(|b| BackendSpec::weighted(b.addr(), b.weight())).collect()
}

/// Every group, and the routing from (host, path) to a group; the whole table is replaced at once on a
/// configuration reload ([`Upstreams::reload`]), so a request routes on either the old table or the new,
/// never on a mixture.
#[derive(Debug)]
pub struct Upstreams {
    table: ArcSwap<Table>,
    /// Serialises reloads.
    write: Mutex<()>,
}

#[derive(Debug)]
struct Table {
    all: Arc<Vec<Arc<Upstream>>>,
    /// Indices into `all`, most specific route first: longer path prefix first, then groups that name
    /// hosts before those that take any host.
    routes: Vec<usize>,
}

impl Table {
    fn new(all: Vec<Arc<Upstream>>) -> Table {
        let mut routes: Vec<usize> = (0..all.len()).collect();
        // A stable sort keeps file order among equals, so the first of two identical routes wins.
        routes.sort_by_key(|&i| {
            let c = &all[i].config;
            (std::cmp::Reverse(c.path_prefix.len()), c.hosts.is_empty())
        });
        Table { all: Arc::new(all), routes }
    }
}

/// A snapshot of every group, in configuration order: a slice (`.iter()`, `[i]`, `.len()`), and
/// iterable with `for u in upstreams.all()` as before reloads existed.
#[derive(Debug, Clone)]
pub struct UpstreamList(Arc<Vec<Arc<Upstream>>>);

impl std::ops::Deref for UpstreamList {
    type Target = [Arc<Upstream>];

    fn deref(&self) -> &[Arc<Upstream>] {
        &self.0
    }
}

impl IntoIterator for UpstreamList {
    type Item = Arc<Upstream>;
    type IntoIter = std::vec::IntoIter<Arc<Upstream>>;

    fn into_iter(self) -> Self::IntoIter {
        // A few `Arc` clones; this is never on the request path.
        self.0.iter().cloned().collect::<Vec<_>>().into_iter()
    }
}

impl<'a> IntoIterator for &'a UpstreamList {
    type Item = &'a Arc<Upstream>;
    type IntoIter = std::slice::Iter<'a, Arc<Upstream>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// What a reload changed, by upstream name and backend address.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReloadSummary {
    /// Upstreams that are new.
    pub added_upstreams: Vec<String>,
    /// Upstreams that are gone.
    pub removed_upstreams: Vec<String>,
    /// `upstream/addr` of backends that are new.
    pub added_backends: Vec<String>,
    /// `upstream/addr` of backends that are gone (their requests in flight finish).
    pub removed_backends: Vec<String>,
    /// Backends whose state (health, EWMA, in-flight count, pooled connections, metrics) carried over.
    pub kept_backends: usize,
}

impl Upstreams {
    /// Build every group of a configuration.
    pub fn new(configs: &[UpstreamConfig]) -> Result<Upstreams, Error> {
        let all =
            configs.iter().cloned().map(|c| Upstream::new(c).map(Arc::new)).collect::<Result<Vec<_>, _>>()?;
        Ok(Upstreams { table: ArcSwap::from_pointee(Table::new(all)), write: Mutex::new(()) })
    }

    /// Every group, in configuration order (a snapshot: a reload does not change it under you).
    pub fn all(&self) -> UpstreamList {
        UpstreamList(Arc::clone(&self.table.load().all))
    }

    /// A group by name.
    pub fn get(&self, name: &str) -> Option<Arc<Upstream>> {
        self.table.load().all.iter().find(|u| u.name == name).cloned()
    }

    /// The group for a request: hosts must match when the group lists any (the port of the Host header
    /// is ignored, case too), and the longest matching path prefix wins.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<Arc<Upstream>> {
        let host = host.map(strip_port);
        // A guard, not a clone of the table's `Arc`: one atomic load on the request path.
        let table = self.table.load();
        table
            .routes
            .iter()
            .map(|&i| &table.all[i])
            .find(|u| {
                let c = &u.config;
                path.starts_with(c.path_prefix.as_str())
                    && (c.hosts.is_empty()
                        || host.is_some_and(|h| c.hosts.iter().any(|x| x.eq_ignore_ascii_case(h))))
            })
            .cloned()
    }

    /// Replace every group with those of a new configuration, keeping what can be kept.
    ///
    /// A group whose name stays is rebuilt with its new settings, but its backends that stay (same
    /// address and weight) are the *same* `Arc<Backend>`s, with their health, EWMA, in-flight counts
    /// and slow-start ramp, and their metrics carry over by address. Requests already routed finish on
    /// the group they started on. Nothing is changed if any group fails to build.
    pub fn reload(&self, configs: &[UpstreamConfig]) -> Result<ReloadSummary, Error> {
        let _write = self.write.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let old = self.table.load_full();
        let mut summary = ReloadSummary::default();
        let mut all = Vec::with_capacity(configs.len());
        for config in configs {
            let before = old.all.iter().find(|u| u.name == config.name);
            let upstream = Upstream::carry_over(config.clone(), before.map(|u| &**u))?;
            let now: Vec<String> =
                upstream.load().set.backends().iter().map(|b| b.addr().to_string()).collect();
            match before {
                None => {
                    summary.added_upstreams.push(config.name.clone());
                    summary.added_backends.extend(now.iter().map(|a| format!("{}/{a}", config.name)));
                }
                Some(b) => {
                    let was = b.load();
                    let was_set = &was.set;
                    let new_state = upstream.load();
                    for (i, addr) in now.iter().enumerate() {
                        match was_set.position(addr) {
                            Some(j) if Arc::ptr_eq(&was_set.backends()[j], &new_state.set.backends()[i]) => {
                                summary.kept_backends += 1;
                            }
                            _ => summary.added_backends.push(format!("{}/{addr}", config.name)),
                        }
                    }
                    for b in was_set.backends() {
                        if !now.iter().any(|a| a == b.addr()) {
                            summary.removed_backends.push(format!("{}/{}", config.name, b.addr()));
                        }
                    }
                }
            }
            all.push(Arc::new(upstream));
        }
        for u in old.all.iter() {
            if !configs.iter().any(|c| c.name == u.name) {
                summary.removed_upstreams.push(u.name.clone());
            }
        }
        self.table.store(Arc::new(Table::new(all)));
        Ok(summary)
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
    fn reload_swaps_the_table_and_keeps_backends_that_stay() -> Result<(), Error> {
        let a = |addrs: &[&str]| {
            UpstreamConfig::new(
                "app",
                Algorithm::RoundRobin,
                addrs.iter().map(|a| BackendSpec::new(*a)).collect(),
            )
        };
        let u = Upstreams::new(&[a(&["127.0.0.1:1", "127.0.0.1:2"])])?;
        let before = u.get("app").map(|g| g.load()).ok_or(Error::UnknownUpstream("app".into()))?;
        let guard = before.set.start(1, 1);
        let mut api = group("api", "/api/", &[]);
        api.backends = vec![BackendSpec::new("127.0.0.1:9")];
        let summary = u.reload(&[a(&["127.0.0.1:2", "127.0.0.1:3"]), api])?;
        assert_eq!(summary.added_upstreams, ["api"]);
        assert_eq!(summary.added_backends, ["app/127.0.0.1:3", "api/127.0.0.1:9"]);
        assert_eq!(summary.removed_backends, ["app/127.0.0.1:1"]);
        assert_eq!(summary.kept_backends, 1);
        assert_eq!(routed(&u, None, "/api/x").as_deref(), Some("api"), "the new route is live");
        let after = u.get("app").map(|g| g.load()).ok_or(Error::UnknownUpstream("app".into()))?;
        assert!(
            Arc::ptr_eq(&after.set.backends()[0], &before.set.backends()[1]),
            "127.0.0.1:2 is the same backend"
        );
        assert!(Arc::ptr_eq(&after.stats[0], &before.stats[1]), "with the same metrics");
        assert_eq!(after.set.backends()[0].in_flight(), 1, "and its request in flight");
        drop(guard);
        assert_eq!(after.set.backends()[0].in_flight(), 0);
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

    fn discovered(algorithm: Algorithm) -> Result<Upstream, Error> {
        let mut c = UpstreamConfig::new("app", algorithm, Vec::new());
        c.dns = Some(crate::config::DnsConfig::name("app.test", 1, None));
        Upstream::new(c)
    }

    fn answer(addrs: &[&str]) -> Vec<BackendSpec> {
        addrs.iter().map(|a| BackendSpec::new(*a)).collect()
    }

    fn addrs_and_health(up: &Upstream) -> Vec<(String, &'static str)> {
        up.load().set.backends().iter().map(|b| (b.addr().to_string(), b.health().as_str())).collect()
    }

    #[test]
    fn a_dns_answer_adds_keeps_and_drains_then_sweeps_when_idle() -> Result<(), Error> {
        let up = discovered(Algorithm::LeastConnections)?;
        let change = up.sync_discovered(&answer(&["127.0.0.12:1", "127.0.0.11:1"]))?;
        assert_eq!(change.added, ["127.0.0.12:1", "127.0.0.11:1"]);
        let before = up.load();
        let busy = before.set.start(0, 1);
        let change = up.sync_discovered(&answer(&["127.0.0.12:1", "127.0.0.13:1"]))?;
        assert_eq!(
            (change.added.as_slice(), change.leaving.as_slice()),
            (&["127.0.0.13:1".to_string()][..], &["127.0.0.11:1".to_string()][..])
        );
        assert_eq!(
            addrs_and_health(&up),
            [
                ("127.0.0.11:1".into(), "draining"),
                ("127.0.0.12:1".into(), "healthy"),
                ("127.0.0.13:1".into(), "healthy")
            ],
            "sorted by address; the gone one drains"
        );
        let after = up.load();
        assert!(
            Arc::ptr_eq(&before.set.backends()[1], &after.set.backends()[1]),
            "127.0.0.12 is the same backend"
        );
        assert!(Arc::ptr_eq(&before.stats[1], &after.stats[1]), "with the same metrics");
        assert_eq!(up.sweep_leaving()?, Vec::<String>::new(), "a request is still in flight on 127.0.0.11");
        assert!(
            up.sync_discovered(&answer(&["127.0.0.12:1", "127.0.0.13:1"]))?.is_empty(),
            "same answer: no change"
        );
        drop(busy);
        assert_eq!(up.sweep_leaving()?, ["127.0.0.11:1"]);
        assert_eq!(addrs_and_health(&up).len(), 2);
        assert!(up.leaving().is_empty());
        Ok(())
    }

    #[test]
    fn a_leaving_backend_that_comes_back_is_healthy_again_and_admin_changes_are_refused() -> Result<(), Error>
    {
        let up = discovered(Algorithm::RoundRobin)?;
        up.sync_discovered(&answer(&["127.0.0.11:1", "127.0.0.12:1"]))?;
        let busy = up.load().set.start(1, 1);
        up.sync_discovered(&answer(&["127.0.0.11:1"]))?;
        assert_eq!(addrs_and_health(&up)[1].1, "draining");
        let change = up.sync_discovered(&answer(&["127.0.0.11:1", "127.0.0.12:1"]))?;
        assert_eq!(change.returned, ["127.0.0.12:1"]);
        assert_eq!(addrs_and_health(&up)[1].1, "healthy");
        drop(busy);
        assert!(up.sweep_leaving()?.is_empty(), "no longer leaving");
        assert!(matches!(up.add_backend(BackendSpec::new("127.0.0.9:1")), Err(Error::BadBackend { .. })));
        assert!(matches!(up.remove_backend("127.0.0.11:1"), Err(Error::BadBackend { .. })));
        assert_eq!(up.origin("127.0.0.11:1"), "dns app.test");
        Ok(())
    }

    #[test]
    fn hashing_keeps_the_keys_of_backends_that_stay_across_dns_changes() -> Result<(), Error> {
        for algorithm in [Algorithm::RingHash, Algorithm::Maglev, Algorithm::Rendezvous] {
            let up = discovered(algorithm)?;
            let two = answer(&["127.0.0.11:1", "127.0.0.12:1"]);
            up.sync_discovered(&two)?;
            let picks = |up: &Upstream| -> Vec<String> {
                let state = up.load();
                (0..500u64)
                    .map(|k| {
                        let req = lb_algorithms::PickRequest::new(1)
                            .with_key(Some(k.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
                        state
                            .balancer
                            .pick(&req, None)
                            .map_or_else(String::new, |i| state.set.backends()[i].addr().to_string())
                    })
                    .collect()
            };
            let before = picks(&up);
            up.sync_discovered(&answer(&["127.0.0.11:1", "127.0.0.12:1", "127.0.0.13:1", "127.0.0.14:1"]))?;
            let grown = picks(&up);
            let moved_between_old = before
                .iter()
                .zip(&grown)
                .filter(|(b, g)| b != g && !g.ends_with(".13:1") && !g.ends_with(".14:1"))
                .count();
            assert_eq!(moved_between_old, 0, "{algorithm:?}: a key moves only to a new backend");
            assert!(grown.iter().any(|g| g.ends_with(".13:1")), "{algorithm:?}: the new ones get keys");
            up.sync_discovered(&two)?;
            assert_eq!(up.sweep_leaving()?.len(), 2);
            assert_eq!(picks(&up), before, "{algorithm:?}: back to two, back to the same keys");
        }
        Ok(())
    }
}
