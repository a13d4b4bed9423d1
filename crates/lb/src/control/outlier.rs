//! Passive outlier detection: eject a backend that keeps failing real requests, for a while.
//!
//! # The idea
//!
//! Active health checks (see `health.rs`) ask a backend "are you alive?" every few seconds on a path
//! built to answer yes. A backend can answer `/health` with 200 and still fail every real request: a
//! broken dependency, a full disk, a bad deploy of one route. Outlier detection watches the traffic the
//! proxy is already sending: after `consecutive_failures` failed attempts in a row (connect error,
//! timeout, broken connection, or a 5xx answer), or `consecutive_connect_failures` failed connects in a
//! row, the backend is **ejected**: taken out of the pick for `base_ejection_time`.
//!
//! It is **on by default** (5 failures, or 1 failed connect, for 10 s): a refused connect is the surest
//! sign there is (nothing listens there), and without this a dead backend would keep its share of the
//! picks, each one costing a retry, until the retry budget ran dry and clients got 502s. Quick mode
//! turns it off with `--no-passive-health`, a config with `enabled = false`. When the time is up it comes back; with slow start configured it ramps up from
//! 10% of its weight rather than taking a full share at once, so a backend that is still sick hurts only a
//! few requests before it is caught again.
//!
//! A repeat offender stays out longer: the n-th ejection in a row lasts `base_ejection_time x n`, capped
//! at `max_ejection_time`. The multiplier goes back to zero once the backend has stayed in for
//! `max_ejection_time` without being ejected. (Envoy instead lowers it by one per clean detection
//! interval; the effect is the same, forgiveness after a quiet period, with one less timer.)
//!
//! # The cap
//!
//! Ejecting is a guess that the backend is the problem. If half the fleet fails at once, the problem is
//! more likely shared (the database, the network, the proxy itself), and ejecting everyone would turn a
//! partial outage into a total one. So at most `max_ejection_percent` of a group's backends are ejected at
//! once, and, as in Envoy, at least one ejection is always allowed even when the percentage rounds down to
//! zero (with 3 backends and 10%, one may still go). The panic threshold (see `lb_algorithms::backend`) is
//! the second safety net: below it, ejected backends are picked again anyway.
//!
//! # Cost
//!
//! [`observe`] runs after every attempt. A success costs one relaxed load (and a store only if the
//! counter was not already zero, so healthy traffic does not bounce a cache line between cores); a
//! failure costs one `fetch_add`. Only the attempt that reaches the threshold does more: an O(n) scan of
//! the group to apply the cap. The state lives in the backend's [`BackendStats`], so it survives backend
//! list changes exactly as the counters do.
//!
//! Returning ejected backends is done by [`spawn_unejector`], a background task that wakes a few times per
//! base ejection time; [`uneject_due`] is the step it repeats, which tests call with an explicit `now`.
//!
//! # The same thing elsewhere
//!
//! - Envoy: `outlier_detection { consecutive_5xx: 5, base_ejection_time: 30s, max_ejection_time: 300s,
//!   max_ejection_percent: 10 }`, which is what this module follows.
//! - nginx (open source): `server ... max_fails=1 fail_timeout=10s` (its defaults, counting connect errors
//!   and timeouts, not 5xx), a fixed time with no growth and no cap.
//! - HAProxy: `observe layer7 error-limit 5 on-error mark-down`, which marks the server down until the
//!   active health check brings it back.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use lb_algorithms::{BackendSet, Health, Nanos, now_nanos};
use tokio::task::JoinHandle;

use crate::config::OutlierConfig;
use crate::upstream::stats::BackendStats;
use crate::upstream::{Upstream, UpstreamState, Upstreams};
/// What one attempt to a backend came to, as outlier detection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response that was not a 5xx.
    Success,
    /// Timeout, broken connection or a 5xx response.
    Failure,
    /// The connection could not be made (refused, timed out, TLS handshake failed).
    ConnectFailure,
}

/// Record the outcome of an attempt to backend `index` of `state` (the snapshot the proxy picked from),
/// ejecting it if this failure is one too many. The proxy calls this after every attempt.
#[inline]
pub fn observe(
    config: &OutlierConfig,
    upstream: &Upstream,
    state: &UpstreamState,
    index: usize,
    outcome: Outcome,
    now: Nanos,
) {
    observe_in(config, &upstream.name, &state.set, &state.stats, index, outcome, now);
}

/// [`observe`] on the parts it needs, so tests can drive it with a plain set.
pub(crate) fn observe_in(
    config: &OutlierConfig,
    upstream: &str,
    set: &BackendSet,
    stats: &[Arc<BackendStats>],
    index: usize,
    outcome: Outcome,
    now: Nanos,
) -> bool {
    let Some(s) = stats.get(index) else { return false };
    match outcome {
        Outcome::Success => {
            if s.consecutive_failures.load(Relaxed) != 0 {
                s.consecutive_failures.store(0, Relaxed);
            }
            false
        }
        Outcome::Failure | Outcome::ConnectFailure => {
            let failures = s.consecutive_failures.fetch_add(1, Relaxed).saturating_add(1);
            failures >= config.threshold(outcome == Outcome::ConnectFailure)
                && eject(config, upstream, set, stats, index, failures, now)
        }
    }
}

/// Try to eject backend `index`; false if it is not healthy (already out, or draining) or the cap forbids.
fn eject(
    config: &OutlierConfig,
    upstream: &str,
    set: &BackendSet,
    stats: &[Arc<BackendStats>],
    index: usize,
    failures: u32,
    now: Nanos,
) -> bool {
    let (Some(backend), Some(s)) = (set.get(index), stats.get(index)) else { return false };
    if backend.health() != Health::Healthy {
        return false;
    }
    let allowed = config.max_ejected(set.len());
    let ejected = || set.backends().iter().filter(|b| b.health() == Health::Ejected).count();
    if ejected() >= allowed {
        tracing::debug!(
            %upstream,
            backend = %backend.addr(),
            allowed,
            "ejection skipped: max_ejection_percent"
        );
        return false;
    }
    // Two threads can pass the check above at once for two different backends. Rather than lock, eject
    // first and count again: whoever finds the group over the cap takes its own ejection back. The
    // failure counter keeps growing, so the next failure simply tries again.
    let previous = set.set_health(index, Health::Ejected, now);
    if previous != Some(Health::Healthy) {
        // An operator drained it (or a health check marked it down) between our read and our write.
        if let Some(previous) = previous {
            set.set_health(index, previous, now);
        }
        return false;
    }
    if ejected() > allowed {
        set.set_health(index, Health::Healthy, now);
        return false;
    }

    let quiet = now.saturating_sub(s.returned_at.load(Relaxed));
    if s.returned_at.load(Relaxed) != 0 && quiet >= duration_nanos(config.max_ejection_time) {
        // Forgiven: it stayed in for a whole max_ejection_time since it last came back.
        s.ejection_level.store(0, Relaxed);
    }
    let level = s.ejection_level.fetch_add(1, Relaxed).saturating_add(1);
    let duration = config.ejection_time(level);
    s.ejected_until.store(now.saturating_add(duration_nanos(duration)).max(1), Relaxed);
    s.consecutive_failures.store(0, Relaxed);
    s.count_ejection();
    tracing::warn!(
        %upstream,
        backend = %backend.addr(),
        failures,
        level,
        ejected_for = %crate::config::format_duration(duration),
        "backend ejected"
    );
    true
}

/// Return every backend of the group whose ejection has ended by `now` (to `Healthy`; its slow start, if
/// configured, begins now). Returns how many came back.
pub fn uneject_due(upstream: &str, set: &BackendSet, stats: &[Arc<BackendStats>], now: Nanos) -> usize {
    let mut returned = 0;
    for (i, (backend, s)) in set.backends().iter().zip(stats).enumerate() {
        let until = s.ejected_until.load(Relaxed);
        if until == 0 || now < until {
            continue;
        }
        // Only one caller wins the exchange, so a backend is returned (and logged) once.
        if s.ejected_until.compare_exchange(until, 0, Relaxed, Relaxed).is_err() {
            continue;
        }
        s.returned_at.store(now, Relaxed);
        s.consecutive_failures.store(0, Relaxed);
        // Only undo our own ejection: if an operator drained the backend or a health check marked it
        // down meanwhile, that decision stands.
        if backend.health() == Health::Ejected {
            match set.set_health(i, Health::Healthy, now) {
                Some(Health::Ejected) => {}
                Some(other) => {
                    set.set_health(i, other, now);
                    continue;
                }
                None => continue,
            }
            returned += 1;
            tracing::info!(%upstream, backend = %backend.addr(), "backend returned after ejection");
        }
    }
    returned
}

/// Return ejected backends when their time is up, for every upstream with outlier detection, until
/// `shutdown` completes.
///
/// It wakes every tenth of the shortest `base_ejection_time` (between 10 ms and 1 s), so a backend comes
/// back at most 10% late; the wake-up is a scan of a few atomics per backend.
pub fn spawn_unejector(
    upstreams: Arc<Upstreams>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    let tick = upstreams
        .all()
        .iter()
        .filter_map(|u| u.config.outlier_detection.as_ref())
        .map(|c| c.base_ejection_time / 10)
        .min()
        .map(|t| t.clamp(Duration::from_millis(10), Duration::from_secs(1)));
    tokio::spawn(async move {
        let Some(tick) = tick else { return };
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = interval.tick() => {}
            }
            let now = now_nanos();
            for upstream in upstreams.all().iter() {
                if upstream.config.outlier_detection.is_some() {
                    let state = upstream.load();
                    uneject_due(&upstream.name, &state.set, &state.stats, now);
                }
            }
        }
    })
}

fn duration_nanos(d: Duration) -> Nanos {
    Nanos::try_from(d.as_nanos()).unwrap_or(Nanos::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_algorithms::{BackendSpec, SetOptions};
    use serde::Deserialize;

    const SEC: Nanos = 1_000_000_000;

    fn group(n: usize) -> (Arc<BackendSet>, Vec<Arc<BackendStats>>) {
        let specs: Vec<_> = (0..n).map(|i| BackendSpec::new(format!("10.0.0.{i}:80"))).collect();
        let stats = specs.iter().map(|s| Arc::new(BackendStats::new(&s.addr))).collect();
        // Panic mode off: these tests look at health, not at what the balancer would do with it.
        (BackendSet::new(specs, SetOptions { panic_threshold: 0.0, ..SetOptions::default() }), stats)
    }

    fn config(failures: u32, percent: u32) -> OutlierConfig {
        OutlierConfig {
            enabled: true,
            consecutive_failures: failures,
            consecutive_connect_failures: 0,
            base_ejection_time: Duration::from_secs(10),
            max_ejection_time: Duration::from_secs(35),
            max_ejection_percent: percent,
        }
    }

    fn fail(
        c: &OutlierConfig,
        set: &BackendSet,
        stats: &[Arc<BackendStats>],
        i: usize,
        times: u32,
        now: Nanos,
    ) -> bool {
        // Every failure is recorded (no short circuit), as the proxy would record them.
        let mut ejected = false;
        for _ in 0..times {
            ejected |= observe_in(c, "app", set, stats, i, Outcome::Failure, now);
        }
        ejected
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_resets_the_count() {
        let (set, stats) = group(4);
        let c = config(3, 50);
        assert!(!fail(&c, &set, &stats, 0, 2, SEC));
        observe_in(&c, "app", &set, &stats, 0, Outcome::Success, SEC);
        assert_eq!(stats[0].consecutive_failures(), 0);
        assert!(!fail(&c, &set, &stats, 0, 2, SEC), "2 after the success: not yet");
        assert!(fail(&c, &set, &stats, 0, 1, SEC), "the third in a row ejects");
        assert_eq!(set.backends()[0].health(), Health::Ejected);
        assert_eq!(stats[0].ejections(), 1);
        assert_eq!(stats[0].ejected_until(), Some(11 * SEC));
    }

    #[test]
    fn one_failed_connect_ejects_by_default_other_failures_take_five() {
        let (set, stats) = group(3);
        let c = OutlierConfig::default();
        assert!(observe_in(&c, "app", &set, &stats, 0, Outcome::ConnectFailure, SEC), "nginx's max_fails=1");
        assert_eq!(set.backends()[0].health(), Health::Ejected);
        assert_eq!(stats[0].ejected_until(), Some(11 * SEC), "for fail_timeout=10s");
        // A timeout, a broken connection or a 5xx: five in a row (one ejection already uses the 50%).
        let c = OutlierConfig { max_ejection_percent: 100, ..c };
        assert!(!fail(&c, &set, &stats, 1, 4, SEC));
        assert!(fail(&c, &set, &stats, 1, 1, SEC));
    }

    #[test]
    fn the_connect_threshold_never_exceeds_the_general_one_and_zero_means_none() {
        let c = |connect, any| OutlierConfig {
            consecutive_connect_failures: connect,
            consecutive_failures: any,
            ..OutlierConfig::default()
        };
        assert_eq!((c(1, 5).threshold(true), c(1, 5).threshold(false)), (1, 5));
        assert_eq!(c(3, 2).threshold(true), 2);
        assert_eq!(c(0, 5).threshold(true), 5);
        assert_eq!(c(0, 0).threshold(false), 1, "0 failures would eject on a success");
    }

    #[test]
    fn ejected_backends_return_when_their_time_is_up_and_repeat_offenders_stay_out_longer() {
        let (set, stats) = group(4);
        let c = config(1, 50);
        // Ejection times with base 10 s, max 35 s: level 1 -> 10 s, 2 -> 20 s, 3 -> 30 s, 4 -> 35 s (cap).
        let mut now = SEC;
        for expected in [10, 20, 30, 35, 35] {
            assert!(fail(&c, &set, &stats, 2, 1, now));
            let out_for = stats[2].ejected_until().map(|t| (t - now) / SEC);
            assert_eq!(out_for, Some(expected));
            assert_eq!(uneject_due("app", &set, &stats, now + expected * SEC - 1), 0, "one ns early");
            assert_eq!(set.backends()[2].health(), Health::Ejected);
            now += expected * SEC;
            assert_eq!(uneject_due("app", &set, &stats, now), 1);
            assert_eq!(set.backends()[2].health(), Health::Healthy);
            assert_eq!(uneject_due("app", &set, &stats, now), 0, "returned once only");
            now += SEC; // fails again one second after coming back
        }
        assert_eq!(stats[2].ejections(), 5);

        // After staying in for max_ejection_time (35 s) the multiplier is forgiven: back to 10 s.
        now += 35 * SEC;
        assert!(fail(&c, &set, &stats, 2, 1, now));
        assert_eq!(stats[2].ejected_until(), Some(now + 10 * SEC));
    }

    #[test]
    fn at_most_max_ejection_percent_are_ejected_at_once() {
        let (set, stats) = group(4);
        let c = config(1, 50); // 50% of 4: two may be out
        assert!(fail(&c, &set, &stats, 0, 1, SEC)); // out until 11 s
        assert!(fail(&c, &set, &stats, 1, 1, 5 * SEC)); // out until 15 s
        assert!(!fail(&c, &set, &stats, 2, 5, 5 * SEC), "a third would exceed 50%");
        assert_eq!(set.backends()[2].health(), Health::Healthy);
        // Once backend 0 returns, the next failure of backend 2 may eject it (its count kept growing).
        assert_eq!(uneject_due("app", &set, &stats, 11 * SEC), 1);
        assert!(fail(&c, &set, &stats, 2, 1, 11 * SEC));
        assert!(!fail(&c, &set, &stats, 3, 1, 11 * SEC));
    }

    #[test]
    fn at_least_one_ejection_is_always_allowed() {
        let (set, stats) = group(3);
        let c = config(1, 10); // 10% of 3 rounds down to 0; one is allowed anyway
        assert_eq!(c.max_ejected(3), 1);
        assert!(fail(&c, &set, &stats, 0, 1, SEC));
        assert!(!fail(&c, &set, &stats, 1, 1, SEC));
    }

    #[test]
    fn draining_and_unhealthy_backends_are_not_ejected_and_drains_survive_an_ejection_ending() {
        let (set, stats) = group(4);
        let c = config(1, 100);
        set.set_health(0, Health::Draining, 0);
        set.set_health(1, Health::Unhealthy, 0);
        assert!(!fail(&c, &set, &stats, 0, 3, SEC));
        assert!(!fail(&c, &set, &stats, 1, 3, SEC));
        assert_eq!(set.backends()[0].health(), Health::Draining);

        assert!(fail(&c, &set, &stats, 2, 1, SEC));
        set.set_health(2, Health::Draining, 2 * SEC); // the operator drains it while ejected
        assert_eq!(uneject_due("app", &set, &stats, 20 * SEC), 0);
        assert_eq!(set.backends()[2].health(), Health::Draining);
        assert_eq!(stats[2].ejected_until(), None);
    }

    proptest::proptest! {
        /// Whatever the order of successes, failures and the passing of time: never more ejected than
        /// the cap allows, a drained backend is never ejected, and an ejection never outlasts its time.
        #[test]
        fn the_cap_and_the_drain_always_hold(
            n in 1usize..8,
            percent in 0u32..=100,
            steps in proptest::collection::vec((0usize..8, proptest::bool::ANY, 0u64..4 * SEC), 1..200),
        ) {
            let (set, stats) = group(n);
            set.set_health(0, Health::Draining, 0);
            let c = config(2, percent);
            let mut now = 1;
            for (i, failed, advance) in steps {
                now += advance;
                uneject_due("app", &set, &stats, now);
                let outcome = if failed { Outcome::Failure } else { Outcome::Success };
                observe_in(&c, "app", &set, &stats, i % n, outcome, now);
                let ejected: Vec<usize> =
                    (0..n).filter(|&j| set.backends()[j].health() == Health::Ejected).collect();
                proptest::prop_assert!(ejected.len() <= c.max_ejected(n));
                proptest::prop_assert_eq!(set.backends()[0].health(), Health::Draining);
                for j in ejected {
                    let until = stats[j].ejected_until().unwrap_or(0);
                    proptest::prop_assert!(until > now && until - now <= 35 * SEC);
                }
            }
        }
    }

    #[test]
    fn config_parses_humantime_and_rejects_unknown_fields() {
        #[derive(Deserialize)]
        struct Wrap {
            o: OutlierConfig,
        }
        let w: Wrap =
            toml::from_str("[o]\nconsecutive_failures = 2\nbase_ejection_time = \"500ms\"").expect("valid");
        assert_eq!(w.o.consecutive_failures, 2);
        assert_eq!(w.o.base_ejection_time, Duration::from_millis(500));
        assert_eq!(w.o.max_ejection_time, Duration::from_secs(300), "default");
        assert_eq!(w.o.consecutive_connect_failures, 1, "default");
        assert!(toml::from_str::<Wrap>("[o]\nconsecutive_errors = 2").is_err());
    }
}
