//! DNS discovery: the backends of an `[upstream.dns]` group are what a DNS name resolves to, kept up to
//! date while the proxy runs.
//!
//! # The loop
//!
//! One task per such group resolves the name (A and AAAA records: one backend per address on the
//! configured port; or SRV records: target, port and weight from each record of the lowest priority),
//! hands the answer to [`Upstream::sync_discovered`], and sleeps until the answer's TTL runs out,
//! clamped to `min_refresh..=max_refresh`. The group's set is an `ArcSwap` snapshot rebuilt on change,
//! the same machinery as the admin API's add and remove, so requests never see a half-built set:
//!
//! - an address that **appears** joins (with slow start when configured); the backends that stay are the
//!   same `Arc<Backend>`s, with their health, in-flight counts, EWMA and metrics, and a hashing
//!   algorithm keeps their keys where they were;
//! - an address that **disappears** is drained: `Draining` at once (no new request picks it), removed
//!   from the set once its requests in flight have finished (checked every [`SWEEP`] while any backend is
//!   leaving), so a scale-down loses no request;
//! - a **failed or empty** answer changes nothing: the group keeps its last good set (a resolver that
//!   hiccups must not empty the group), the log says so, `lb_dns_resolutions_total{result="error"}` or
//!   `{result="empty"}` counts it and `lb_dns_stale` is 1 until an answer arrives; the next try is after
//!   `min_refresh`.
//!
//! Names are looked up as a system resolver would: a short name (`backend` in Docker Compose,
//! `toy-backend` in Kubernetes) goes through the `search` domains of resolv.conf; a trailing dot makes a
//! name absolute. The resolver's own cache is cleared before each resolution: the refresh bounds decide how often the
//! DNS server is asked, not a second TTL cache in between. Health checks, outlier detection, metrics and
//! the admin API need nothing special: they walk the group's current set.
//!
//! The group starts empty (answered 503 until the first answer, which is asked for at once); a reload
//! restarts the loop, and the group keeps its set meanwhile.
//!
//! # The same thing elsewhere
//!
//! - nginx: `server app.internal:9001 resolve;` in an upstream with a `zone` and a `resolver` (open
//!   source since 1.27.3), re-resolved at the TTL or the resolver's `valid=`.
//! - HAProxy: `server-template app 10 _http._tcp.app.internal resolvers dns init-addr none` with a
//!   `resolvers` section; `hold valid` keeps the last answer.
//! - Envoy: a `STRICT_DNS` cluster, `dns_refresh_rate`, `respect_dns_ttl`; a failed resolution keeps the
//!   hosts it had.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use lb_algorithms::BackendSpec;
use tokio::task::{JoinHandle, JoinSet};

use crate::config::{DnsConfig, DnsQuery};
use crate::observe::metrics::{DnsOutcome, Metrics};
use crate::upstream::{Upstream, Upstreams};

/// How often a group with leaving backends looks whether their requests have finished.
pub const SWEEP: Duration = Duration::from_millis(100);

/// The longest one resolution may take (each query's timeout; a dead server fails faster).
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Start one discovery loop per `[upstream.dns]` group, until `stop`.
pub fn spawn(
    upstreams: Arc<Upstreams>,
    metrics: Arc<Metrics>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut loops = JoinSet::new();
        for upstream in upstreams.all() {
            if upstream.config.dns.is_some() {
                loops.spawn(run(upstream, Arc::clone(&metrics)));
            }
        }
        stop.await;
        // Dropping the set aborts the loops.
        drop(loops);
    })
}

/// Follow one group's DNS name forever.
async fn run(upstream: Arc<Upstream>, metrics: Arc<Metrics>) {
    let Some(dns) = upstream.config.dns.clone() else { return };
    let resolver = match resolver(&dns) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(upstream = %upstream.name, "DNS discovery cannot start: {e}");
            metrics.record_dns(&upstream.name, DnsOutcome::Error);
            return;
        }
    };
    loop {
        let wait = match resolve(&resolver, &dns).await {
            Ok((specs, ttl)) if !specs.is_empty() => {
                metrics.record_dns(&upstream.name, DnsOutcome::Ok);
                follow(&upstream, &specs);
                dns.refresh_after(ttl)
            }
            Ok(_) => {
                tracing::warn!(upstream = %upstream.name, name = dns.target(), kept = upstream.load().set.len(),
                    "DNS answer has no address; keeping the last good set");
                metrics.record_dns(&upstream.name, DnsOutcome::Empty);
                dns.min_refresh
            }
            Err(e) => {
                tracing::warn!(upstream = %upstream.name, name = dns.target(), kept = upstream.load().set.len(),
                    "DNS resolution failed, keeping the last good set: {e}");
                metrics.record_dns(&upstream.name, DnsOutcome::Error);
                dns.min_refresh
            }
        };
        sleep_sweeping(&upstream, wait).await;
    }
}

/// Apply one good answer and log what changed.
fn follow(upstream: &Upstream, specs: &[BackendSpec]) {
    match upstream.sync_discovered(specs) {
        Ok(change) if !change.is_empty() => tracing::info!(
            upstream = %upstream.name,
            added = ?change.added,
            reweighted = ?change.reweighted,
            draining = ?change.leaving,
            returned = ?change.returned,
            "DNS answer changed the backends"
        ),
        Ok(_) => {}
        Err(e) => tracing::error!(upstream = %upstream.name, "DNS answer refused: {e}"),
    }
}

/// Sleep `wait`, removing leaving backends whose requests have finished meanwhile.
async fn sleep_sweeping(upstream: &Upstream, wait: Duration) {
    let until = tokio::time::Instant::now() + wait;
    loop {
        sweep(upstream);
        if upstream.leaving().is_empty() {
            tokio::time::sleep_until(until).await;
            return;
        }
        let now = tokio::time::Instant::now();
        if now >= until {
            return;
        }
        tokio::time::sleep_until(until.min(now + SWEEP)).await;
    }
}

fn sweep(upstream: &Upstream) {
    match upstream.sweep_leaving() {
        Ok(removed) if !removed.is_empty() => {
            tracing::info!(upstream = %upstream.name, removed = ?removed, "drained backends removed");
        }
        Ok(_) => {}
        Err(e) => tracing::error!(upstream = %upstream.name, "removing drained backends: {e}"),
    }
}

/// A resolver for `dns`: its `resolver` address (no hosts file: that server is the authority asked
/// for), or the system's configuration.
fn resolver(dns: &DnsConfig) -> Result<TokioResolver, String> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = match dns.resolver {
        Some(addr) => {
            let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                .into_iter()
                .map(|mut c| {
                    c.port = addr.port();
                    c
                })
                .collect();
            let server = NameServerConfig::new(addr.ip(), true, connections);
            let mut b =
                TokioResolver::builder_with_config(ResolverConfig::from_name_servers(vec![server]), provider);
            b.options_mut().use_hosts_file = ResolveHosts::Never;
            b
        }
        None => {
            TokioResolver::builder(provider).map_err(|e| format!("reading the system's resolv.conf: {e}"))?
        }
    };
    let options = builder.options_mut();
    options.timeout = QUERY_TIMEOUT;
    options.attempts = 1;
    builder.build().map_err(|e| e.to_string())
}

/// One resolution: the backends the answer names (sorted, without duplicates) and how long it is valid.
async fn resolve(resolver: &TokioResolver, dns: &DnsConfig) -> Result<(Vec<BackendSpec>, Duration), String> {
    resolver.clear_cache();
    let now = Instant::now();
    let (mut specs, valid_until) = match &dns.query {
        DnsQuery::Name { name, port } => {
            let answer = match resolver.lookup_ip(name.as_str()).await {
                Ok(a) => a,
                Err(e) if e.is_no_records_found() => return Ok((Vec::new(), Duration::ZERO)),
                Err(e) => return Err(e.to_string()),
            };
            let specs =
                answer.iter().map(|ip| BackendSpec::new(SocketAddr::new(ip, *port).to_string())).collect();
            (specs, answer.valid_until())
        }
        DnsQuery::Srv(srv) => match resolve_srv(resolver, srv).await? {
            Some(found) => found,
            None => return Ok((Vec::new(), Duration::ZERO)),
        },
    };
    specs.sort_by(|a, b| a.addr.cmp(&b.addr));
    specs.dedup_by(|a, b| a.addr == b.addr);
    Ok((specs, valid_until.saturating_duration_since(now)))
}

/// SRV records of `srv`: the lowest priority's targets, each resolved to its addresses with the record's
/// port and weight (weight 0 counts as 1: every backend here gets some traffic). `None`: no records.
async fn resolve_srv(
    resolver: &TokioResolver,
    srv: &str,
) -> Result<Option<(Vec<BackendSpec>, Instant)>, String> {
    let answer = match resolver.srv_lookup(srv).await {
        Ok(a) => a,
        Err(e) if e.is_no_records_found() => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let records: Vec<_> = answer
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    let Some(lowest) = records.iter().map(|s| s.priority).min() else { return Ok(None) };
    let mut valid_until = answer.valid_until();
    let mut specs = Vec::new();
    for s in records.iter().filter(|s| s.priority == lowest) {
        let target = s.target.to_string();
        let ips =
            resolver.lookup_ip(target.as_str()).await.map_err(|e| format!("SRV target {target}: {e}"))?;
        valid_until = valid_until.min(ips.valid_until());
        for ip in ips.iter() {
            specs.push(BackendSpec::weighted(SocketAddr::new(ip, s.port).to_string(), u32::from(s.weight)));
        }
    }
    Ok(Some((specs, valid_until)))
}
