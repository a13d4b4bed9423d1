//! One request's attempts: which backend next, what each outcome means, and when to stop.
//!
//! # One set of rules for every way of talking to a backend
//!
//! A request reaches a backend in one of three ways: the pooled HTTP/1.1 client (`proxy.rs`), the
//! HTTP/2 client (`h2_upstream.rs`) or a dedicated connection for an upgrade (`upgrade.rs`). How the
//! bytes travel differs; what happens *around* an attempt must not, or the same failing backend would be
//! retried by one path and not by another, counted here and not there. So each path runs its own loop
//! (it alone knows how to send) and asks [`Attempts`] at each step:
//!
//! ```text
//! loop {
//!     next()            pick, excluding backends tried or full (circuit breaker); 503 if none left
//!     send, the path's own way
//!     answered(status)  metrics, latency (EWMA), outlier detection; Retry on 502/503/504 if replayable
//!     failed(kind)      metrics, outlier detection; retry if nothing was sent, or replayable and broken
//! }
//! ```
//!
//! A retry always needs three things: another attempt allowed (`[upstream.retry] attempts`), a backend
//! not tried yet, and a token from the upstream's budget (`retry.rs`), except after a failed connect,
//! which takes no token: nothing was sent, and the budget is there to keep retries from piling load on
//! overloaded backends, which a refused connect adds none to. (A dead backend's share of the picks
//! would otherwise outrun the budget: one of three is a third of the traffic against a 20% budget.)
//! A retry that finds no other backend is no retry: its token goes back and it does not count in
//! `lb_retries_total` (with one backend left, every failure would otherwise "retry"). When one is
//! missing, the client gets the last failure as it was (its 502, 503 or 504), not a generic error.
//!
//! With explain on (`X-Lb-Explain: 1`), the same bookkeeping becomes the `X-Lb-*` response headers:
//! the backend, the algorithm and its reason, the backends skipped and why, the attempts, and why each
//! retry happened; whichever path answered. While an admin dashboard is open, a sample of requests
//! makes the same explanation for the dashboard's decision list instead (or as well); with none open,
//! asking costs one relaxed load (see `observe/decisions.rs`).

use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use lb_algorithms::{Explain, InFlightGuard, Nanos, PickRequest, SkipReason, now_nanos};

use crate::control::outlier::{self, Outcome};
use crate::forward::{ProxyBody, error_response, no_backend_message};
use crate::observe::decisions::Decision;
use crate::observe::metrics::Metrics;
use crate::upstream::retry::is_retryable_status;
use crate::upstream::stats::FailureKind;
use crate::upstream::{Upstream, UpstreamState};

static X_LB_BACKEND: HeaderName = HeaderName::from_static("x-lb-backend");
static X_LB_ALGORITHM: HeaderName = HeaderName::from_static("x-lb-algorithm");
static X_LB_REASON: HeaderName = HeaderName::from_static("x-lb-reason");
static X_LB_SKIPPED: HeaderName = HeaderName::from_static("x-lb-skipped");
static X_LB_ATTEMPTS: HeaderName = HeaderName::from_static("x-lb-attempts");
static X_LB_RETRY: HeaderName = HeaderName::from_static("x-lb-retry");

/// The backend picked for one attempt, counted in flight until `guard` drops.
#[derive(Debug)]
pub(crate) struct Picked {
    /// Its index in the state's set.
    pub index: usize,
    /// Held while the backend works on this request (into the response body when it answers).
    pub guard: InFlightGuard,
    /// When it was picked: the attempt's latency is measured from here.
    pub now: Nanos,
    /// The same moment as a timer instant (one clock read serves both): the attempt's deadlines start
    /// here.
    pub at: tokio::time::Instant,
}

/// What to do with a backend's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answered {
    /// Hand it to the client; the time it arrived.
    Deliver(Nanos),
    /// Worth another backend (502/503/504 to a replayable request): try the next one.
    Retry,
}

/// How many attempts a request took and where the last went, for the access log of the paths that
/// run their loop outside `proxy.rs` (HTTP/2 upstreams, upgrades).
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Attempts made.
    pub attempts: u32,
    /// The backend of the last one (an index into the state's set).
    pub last_backend: Option<usize>,
}

/// The bookkeeping of one request's attempts.
pub(crate) struct Attempts<'a> {
    upstream: &'a Upstream,
    state: &'a UpstreamState,
    metrics: &'a Metrics,
    /// May the request be sent again after it reached a backend (idempotent, no body)?
    replayable: bool,
    max_attempts: u32,
    /// Backends this request tried or skipped: the next pick excludes them.
    tried: Vec<usize>,
    /// Filled while explaining: for the headers, the dashboard, or both.
    explain: Option<Explain>,
    /// The client gets the `X-Lb-*` headers.
    headers: bool,
    /// The dashboard gets this request's decision.
    record: bool,
    /// Why each retry happened (explain only).
    retries: Vec<String>,
    /// Attempts made so far.
    pub attempts: u32,
    /// The backend of the latest attempt.
    pub last_backend: Option<usize>,
    /// The answer we would give if the retry finds no other backend.
    last_failure: Option<(StatusCode, String)>,
    /// A retry was decided, and why; it is counted (metric, budget token, explain) only once another
    /// backend has actually been found for it.
    pending_retry: Option<String>,
    /// The pending retry follows a failed connect, so it takes no budget token.
    retry_is_free: bool,
    /// Kept up to date for the caller's access log, if it asked.
    tally: Option<&'a mut Tally>,
}

impl<'a> Attempts<'a> {
    /// Start counting; `explain` when the client asked (and the proxy allows) for the `X-Lb-*` headers.
    pub fn new(
        upstream: &'a Upstream,
        state: &'a UpstreamState,
        metrics: &'a Metrics,
        explain: bool,
        replayable: bool,
    ) -> Self {
        // One relaxed load when no dashboard is open.
        let record = metrics.decisions.sample();
        Attempts {
            upstream,
            state,
            metrics,
            replayable,
            max_attempts: upstream.config.retry.attempts.max(1),
            tried: Vec::new(),
            explain: (explain || record).then(Explain::default),
            headers: explain,
            record,
            retries: Vec::new(),
            attempts: 0,
            last_backend: None,
            last_failure: None,
            pending_retry: None,
            retry_is_free: false,
            tally: None,
        }
    }

    /// Keep `tally` up to date with each attempt (for the access log).
    pub fn tallied(mut self, tally: &'a mut Tally) -> Self {
        self.tally = Some(tally);
        self
    }

    /// Pick the backend for the next attempt, passing over those already tried and those at their
    /// in-flight cap; the answer to give instead when there is none (boxed: the rare path, and a bare
    /// `Response` would make every `Ok` as large as it).
    pub fn next(
        &mut self,
        key: Option<u64>,
        request_id: &HeaderValue,
    ) -> Result<Picked, Box<Response<ProxyBody>>> {
        let state = self.state;
        // A retry takes its budget token before the pick, so a refused retry does not move the
        // balancer (round robin would otherwise skip a backend for a pick nobody used); the token goes
        // back if no other backend turns up.
        let mut retrying = self.pending_retry.take();
        let paid = retrying.is_some() && !std::mem::take(&mut self.retry_is_free);
        if paid && !self.may_retry(now_nanos()) {
            return Err(Box::new(self.give_up(request_id)));
        }
        loop {
            let at = tokio::time::Instant::now();
            let now = lb_algorithms::nanos_at(at.into_std());
            let pick = {
                let req = PickRequest { key, exclude: &self.tried, now };
                state.balancer.pick(&req, self.explain.as_mut())
            };
            let Some(index) = pick else {
                if paid {
                    self.upstream.budget.refund();
                }
                return Err(Box::new(self.no_backend(request_id)));
            };
            let Some(backend) = state.set.get(index) else { return Err(Box::new(self.internal(request_id))) };
            if backend.in_flight() >= self.upstream.config.limits.max_in_flight_per_backend {
                // Circuit breaker: this backend is full; try another without spending an attempt.
                self.tried.push(index);
                if let Some(e) = self.explain.as_mut() {
                    e.skipped.push((index, SkipReason::OverCapacity));
                }
                continue;
            }
            if let Some(why) = retrying.take() {
                // There is another backend: now the retry is real.
                self.metrics.record_retry(&self.upstream.name);
                if self.explain.is_some() {
                    self.retries.push(why);
                }
            }
            self.attempts += 1;
            self.last_backend = Some(index);
            if let Some(t) = self.tally.as_deref_mut() {
                t.attempts = self.attempts;
                t.last_backend = Some(index);
            }
            let Some(guard) = state.set.start(index, now) else {
                return Err(Box::new(self.internal(request_id)));
            };
            return Ok(Picked { index, guard, now, at });
        }
    }

    /// The address of the backend at `index`.
    pub fn addr(&self, index: usize) -> &'a str {
        self.state.set.get(index).map_or("?", |b| b.addr())
    }

    /// Could another attempt follow this one?
    pub fn can_retry(&self) -> bool {
        self.attempts < self.max_attempts
    }

    /// The backend answered `status`: metrics, latency, outlier detection; and whether to try another.
    pub fn answered(&mut self, picked: &Picked, status: StatusCode) -> Answered {
        let code = status.as_u16();
        let done = now_nanos();
        picked.guard.record_latency(done, self.state.set.options().ewma_decay);
        let elapsed = Duration::from_nanos(done.saturating_sub(picked.now));
        if let Some(stats) = self.state.stats.get(picked.index) {
            self.metrics.record_response(self.upstream, stats, code, elapsed);
        }
        self.observe(picked.index, if code >= 500 { Outcome::Failure } else { Outcome::Success }, done);
        if self.replayable && is_retryable_status(code) && self.can_retry() {
            let why = format!("{} answered {code}", self.addr(picked.index));
            self.last_failure = Some((status, format!("backend {why}\n")));
            self.retry(picked.index, why, false);
            return Answered::Retry;
        }
        Answered::Deliver(done)
    }

    /// The attempt failed without an answer. `unsent`: not a byte of the request reached the backend,
    /// so it may go elsewhere whatever its method. `None` means retry; otherwise the client's answer.
    pub fn failed(
        &mut self,
        picked: Picked,
        kind: FailureKind,
        message: &str,
        unsent: bool,
        request_id: &HeaderValue,
    ) -> Option<Response<ProxyBody>> {
        let index = picked.index;
        drop(picked.guard);
        let done = now_nanos();
        if let Some(stats) = self.state.stats.get(index) {
            self.metrics.record_failure(stats, kind);
        }
        let connect = kind == FailureKind::Connect;
        self.observe(index, if connect { Outcome::ConnectFailure } else { Outcome::Failure }, done);
        let status = match kind {
            FailureKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            FailureKind::Connect | FailureKind::Broken => StatusCode::BAD_GATEWAY,
        };
        // Retry: anything that never left (its body is still untouched), or a replayable request
        // that broke. Timeouts are not retried (see retry.rs).
        let retryable = unsent || (self.replayable && kind == FailureKind::Broken);
        let addr = self.addr(index);
        let body = format!("backend {addr}: {message}\n");
        if retryable && self.can_retry() && kind != FailureKind::Timeout {
            self.last_failure = Some((status, body));
            self.retry(index, format!("{addr}: {message}"), connect);
            return None;
        }
        Some(self.error(status, body, request_id))
    }

    /// The request itself was bad (its body broke off): 400, no backend blamed, never retried.
    pub fn client_fault(&mut self, message: &str, request_id: &HeaderValue) -> Response<ProxyBody> {
        self.error(StatusCode::BAD_REQUEST, format!("bad request body: {message}\n"), request_id)
    }

    fn observe(&self, index: usize, outcome: Outcome, now: Nanos) {
        if let Some(config) = &self.upstream.config.outlier_detection {
            outlier::observe(config, self.upstream, self.state, index, outcome, now);
        }
    }

    /// Is there budget for one more try? Counts the refusal when not.
    fn may_retry(&self, now: Nanos) -> bool {
        if self.upstream.budget.try_withdraw(now) {
            true
        } else {
            self.metrics.record_retry_budget_exhausted(&self.upstream.name);
            false
        }
    }

    /// Decide on a retry away from `index`; [`Attempts::next`] makes it real if it finds a backend.
    /// `free`: it takes no budget token (a failed connect).
    fn retry(&mut self, index: usize, why: String, free: bool) {
        self.tried.push(index);
        self.pending_retry = Some(why);
        self.retry_is_free = free;
    }

    /// No retry after all: the client gets the last failure as it was.
    fn give_up(&mut self, request_id: &HeaderValue) -> Response<ProxyBody> {
        self.pending_retry = None;
        self.retry_is_free = false;
        match self.last_failure.take() {
            Some((status, body)) => self.error(status, body, request_id),
            None => self.internal(request_id),
        }
    }

    fn no_backend(&mut self, request_id: &HeaderValue) -> Response<ProxyBody> {
        if self.last_failure.is_some() {
            // A retry found no other backend to try: nothing was retried, nothing is counted.
            return self.give_up(request_id);
        }
        self.metrics.record_no_backend(&self.upstream.name);
        self.error(StatusCode::SERVICE_UNAVAILABLE, no_backend_message(&self.upstream.name), request_id)
    }

    /// A bug, not a backend's fault (an index the set does not have): 502 rather than a panic.
    pub fn internal(&mut self, request_id: &HeaderValue) -> Response<ProxyBody> {
        self.error(StatusCode::BAD_GATEWAY, "internal error: no such backend\n".into(), request_id)
    }

    /// An error answer, with the explain headers when asked for.
    pub fn error(
        &mut self,
        status: StatusCode,
        body: String,
        request_id: &HeaderValue,
    ) -> Response<ProxyBody> {
        let mut response = error_response(status, body, request_id);
        self.explain_headers(status, response.headers_mut());
        response
    }

    /// Add the `X-Lb-*` headers to the client's answer with this status, and send the decision to the
    /// dashboard; once, and only when explain is on for this request or it was sampled for the dashboard.
    pub fn explain_headers(&mut self, status: StatusCode, headers: &mut HeaderMap) {
        let Some(explain) = self.explain.take() else { return };
        if self.record {
            self.record_decision(&explain, status);
        }
        if !self.headers {
            return;
        }
        let set = &self.state.set;
        let addr = |i: usize| set.get(i).map_or("?", |b| b.addr());
        let mut put = |name: &HeaderName, value: String| {
            // Reasons are ours and ASCII, but a backend address from the config could in theory hold
            // anything; a header we cannot encode is left out rather than failing the response.
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name.clone(), v);
            }
        };
        if let Some(i) = self.last_backend {
            put(&X_LB_BACKEND, addr(i).to_string());
        }
        put(&X_LB_ALGORITHM, self.upstream.config.algorithm.name().to_string());
        put(&X_LB_REASON, explain.reason.clone());
        if !explain.skipped.is_empty() {
            let skipped: Vec<String> =
                explain.skipped.iter().map(|(i, why)| format!("{}={why}", addr(*i))).collect();
            put(&X_LB_SKIPPED, skipped.join(", "));
        }
        put(&X_LB_ATTEMPTS, self.attempts.to_string());
        if !self.retries.is_empty() {
            put(&X_LB_RETRY, self.retries.join("; "));
        }
    }

    /// What the explain headers say, for the dashboard's decision list.
    fn record_decision(&self, explain: &Explain, status: StatusCode) {
        let set = &self.state.set;
        let addr = |i: usize| set.get(i).map_or("?", |b| b.addr());
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.metrics.decisions.record(Decision {
            at_ms,
            upstream: self.upstream.name.clone(),
            backend: self.last_backend.map(|i| addr(i).to_string()),
            algorithm: self.upstream.config.algorithm.name(),
            reason: explain.reason.clone(),
            skipped: explain.skipped.iter().map(|(i, why)| format!("{}={why}", addr(*i))).collect(),
            attempts: self.attempts,
            retries: self.retries.clone(),
            status: status.as_u16(),
        });
    }
}
