//! `GET /live` and `GET /ready`: the two questions an orchestrator asks a process, on the admin port.
//!
//! | path | 200 | 503 |
//! |---|---|---|
//! | `/live` | the process serves HTTP: its admin runtime answers | never (no answer at all is the failure) |
//! | `/ready` | send it traffic | before the first round of active health checks has run, when any upstream has `[upstream.health_check]`; and from the moment shutdown begins until the process exits |
//!
//! **Why two.** Kubernetes restarts a container whose *liveness* probe fails, and takes a pod out of its
//! Service's endpoints while its *readiness* probe fails. A proxy that is shutting down is alive (it
//! must not be killed: it is finishing requests) but not ready (it must get no new ones). A proxy that
//! has just started with health checks configured does not yet know which backends are down: every
//! backend starts healthy (see `health.rs`), so traffic sent before the first round could go to a dead
//! one. Hence 503 until that round has run: Envoy's admin `/ready` does the same, answering 503 until
//! the server is `LIVE`, which waits for its clusters to warm up (their first active health checks
//! included), and again while it drains.
//! Readiness never goes back to 503 because backends are down: a pod whose backends are all down is
//! still the best place for a request (it answers 503 quickly), and failing readiness on every lb
//! replica at once would empty the Service. Once ready, a reload does not make it unready.
//!
//! **Shutdown.** From the stop signal until the process exits, `/ready` answers 503 while the workers
//! finish their requests in flight (up to `server.shutdown_timeout`); the admin API stays up until
//! they are done, so the probe sees the drain instead of a refused connection.
//!
//! **Access.** These two paths are exempt from the admin API's rules (`admin_access.rs`): no `Host`
//! check, no token. The kubelet sends its probe to the pod's IP (`Host: 10.244.1.7:9900`), with no
//! `Authorization` header unless a secret is written into the pod spec in plain text, so requiring
//! either would make the probes unusable. In return they reveal nothing an attacker could use: a fixed
//! word (`live`, `ready`, `starting`, `draining`), no backend, no address, no version, and they change
//! nothing. Kubernetes' own API server exempts `/livez` and `/readyz` the same way (its
//! `system:public-info-viewer` role lets anyone read them); Envoy and HAProxy serve their health
//! endpoints (`/ready`, `monitor-uri`) without authentication too.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// What `/ready` answers from: two flags, written by the health checks and by shutdown.
#[derive(Debug, Default)]
pub struct Readiness {
    /// Every upstream with health checks has had one full round (or none has checks).
    checked: AtomicBool,
    /// Shutdown has begun.
    draining: AtomicBool,
}

impl Readiness {
    /// A process that has not yet run its health checks and is not shutting down.
    pub fn new() -> Readiness {
        Readiness::default()
    }

    /// The first round of health checks has run on every upstream that has them. Stays set.
    pub fn mark_checked(&self) {
        self.checked.store(true, Ordering::Release);
    }

    /// Shutdown has begun: `/ready` answers 503 from now on.
    pub fn mark_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// The state `/ready` reports.
    pub fn state(&self) -> ReadyState {
        if self.draining.load(Ordering::Acquire) {
            ReadyState::Draining
        } else if !self.checked.load(Ordering::Acquire) {
            ReadyState::Starting
        } else {
            ReadyState::Ready
        }
    }
}

/// What `/ready` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyState {
    /// Waiting for the first round of health checks.
    Starting,
    /// Serving.
    Ready,
    /// Shutting down: finishing the requests in flight.
    Draining,
}

/// Counts down the upstreams whose first round of checks is still to come, and marks the process
/// checked when the last one is done. One per start of the health checks (a reload starts them again;
/// once checked, the process stays checked).
#[derive(Debug)]
pub struct FirstRound {
    readiness: Arc<Readiness>,
    left: AtomicUsize,
}

impl FirstRound {
    /// `upstreams` loops are starting; with none, the process is checked at once.
    pub fn new(readiness: Arc<Readiness>, upstreams: usize) -> FirstRound {
        if upstreams == 0 {
            readiness.mark_checked();
        }
        FirstRound { readiness, left: AtomicUsize::new(upstreams) }
    }

    /// One upstream's loop has finished its first round. Call once per loop.
    pub fn done(&self) {
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.readiness.mark_checked();
        }
    }
}

/// The two routes, with their state applied: merge them into the admin router *after* its access
/// layer, so the rules do not apply to them (see "Access" above).
pub fn router<S: Clone + Send + Sync + 'static>(readiness: Arc<Readiness>) -> Router<S> {
    Router::new().route("/live", get(live)).route("/ready", get(ready)).with_state(readiness)
}

fn text(status: StatusCode, word: &'static str) -> Response {
    // `no-store`: a cache between the prober and lb must never answer for it.
    (status, [(header::CACHE_CONTROL, "no-store")], word).into_response()
}

async fn live() -> Response {
    text(StatusCode::OK, "live\n")
}

async fn ready(State(readiness): State<Arc<Readiness>>) -> Response {
    match readiness.state() {
        ReadyState::Ready => text(StatusCode::OK, "ready\n"),
        ReadyState::Starting => text(StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
        ReadyState::Draining => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_after_every_first_round_and_never_while_draining() {
        let readiness = Arc::new(Readiness::new());
        assert_eq!(readiness.state(), ReadyState::Starting);
        let round = FirstRound::new(Arc::clone(&readiness), 2);
        round.done();
        assert_eq!(readiness.state(), ReadyState::Starting, "one upstream of two checked");
        round.done();
        assert_eq!(readiness.state(), ReadyState::Ready);
        // A reload starts the checks again: the process stays ready meanwhile.
        let again = FirstRound::new(Arc::clone(&readiness), 1);
        assert_eq!(readiness.state(), ReadyState::Ready);
        again.done();
        readiness.mark_draining();
        assert_eq!(readiness.state(), ReadyState::Draining);
    }

    #[test]
    fn no_health_checks_means_ready_at_once() {
        let readiness = Arc::new(Readiness::new());
        let _round = FirstRound::new(Arc::clone(&readiness), 0);
        assert_eq!(readiness.state(), ReadyState::Ready);
    }
}
