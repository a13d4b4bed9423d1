//! Toy backends: small HTTP servers that misbehave on request.
//!
//! Every lesson, test and benchmark in this workspace puts these behind a balancer (ours, nginx,
//! HAProxy or Envoy). Each backend answers `GET /` with its name, so you can see where a request
//! went, and has *knobs* (latency, error rate, capacity, health, fail mode) that can be set at start
//! and changed while it runs, so you can see what a balancer does when a backend gets slow, sick or
//! dies. They are meant to be honest (an overloaded backend really queues), scriptable (every knob
//! has an admin endpoint and a library call) and cheap (the backend must never be the bottleneck of
//! a proxy benchmark: `GET /` allocates nothing and logs nothing).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use toy_backend::{Knobs, start_many};
//! let backends = start_many(3, Knobs::default()).await?;
//! backends[1].set_latency("fixed:50ms".parse().expect("valid latency"));
//! println!("{} is now slow", backends[1].url());
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! The modules are private; `lib.rs` re-exports what other crates use.
//!
//! - `lib.rs`: [`Backend`], the handle to a running backend, and [`start_many`].
//! - `knobs.rs`: [`Knobs`] and [`Latency`] (flag syntax, sampling), and the lock-free live state.
//! - `app.rs`: the routes (`app`), the state they share, and the middleware that applies the knobs.
//! - `server.rs`: the accept loop: fail mode at the TCP level, graceful shutdown and `kill`.
//! - `body.rs`: the streamed `/bytes` body and the body that holds a request's in-flight slot.
//! - `main.rs`: the `toy-backend` command.

mod app;
mod body;
mod knobs;
mod server;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use knobs::{Knobs, Latency, ParseLatencyError};

use app::{BackendState, Phase};

/// How long [`Backend::shutdown`] waits for open requests before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What a backend is called, how it behaves, and the seed for its random draws.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    /// Answered by `GET /`, shown in `/info`.
    pub name: String,
    /// The knobs at start (and after `POST /admin/reset`).
    pub knobs: Knobs,
    /// Seeds latency and error draws, so a run can be repeated.
    pub seed: u64,
}

impl BackendConfig {
    /// A well-behaved backend called `name`, with seed 1.
    pub fn new(name: impl Into<String>) -> Self {
        BackendConfig { name: name.into(), knobs: Knobs::default(), seed: 1 }
    }
}

/// A running backend. Dropping the handle kills the backend (as [`Backend::kill`]); call
/// [`Backend::shutdown`] to stop it gracefully instead.
#[derive(Debug)]
pub struct Backend {
    state: BackendState,
    addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Backend {
    /// Binds `listen` (port 0 picks a free port) and starts serving.
    pub async fn start(listen: SocketAddr, config: BackendConfig) -> io::Result<Backend> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let state = BackendState::new(config, addr.port());
        let task = tokio::spawn(server::serve(listener, state.clone()));
        Ok(Backend { state, addr, task: Some(task) })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its name.
    pub fn name(&self) -> &str {
        self.state.name()
    }

    /// `http://IP:PORT`. A backend bound to `0.0.0.0` or `::` is reached through loopback.
    pub fn url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}")
    }

    /// Requests served so far: every route except `/health` and `/admin/*`.
    pub fn requests(&self) -> u64 {
        self.state.requests()
    }

    /// Requests inside the backend now, including those queued for capacity.
    pub fn in_flight(&self) -> usize {
        self.state.in_flight()
    }

    /// Sets the latency distribution.
    pub fn set_latency(&self, latency: Latency) {
        self.state.set_latency(latency);
    }

    /// Sets the injected error fraction (clamped to 0.0..=1.0).
    pub fn set_error_rate(&self, rate: f64) {
        self.state.set_error_rate(rate);
    }

    /// Limits concurrent requests (`None`: unlimited).
    pub fn set_capacity(&self, capacity: Option<usize>) {
        self.state.set_capacity(capacity);
    }

    /// Sets what `/health` reports.
    pub fn set_healthy(&self, healthy: bool) {
        self.state.set_healthy(healthy);
    }

    /// Turns fail mode on or off.
    pub fn set_fail(&self, fail: bool) {
        self.state.set_fail(fail);
    }

    /// The current knobs.
    pub fn knobs(&self) -> Knobs {
        self.state.knobs()
    }

    /// Stops accepting and waits for open requests to finish, at most `SHUTDOWN_GRACE` (10 s); then
    /// drops whatever is left.
    pub async fn shutdown(mut self) {
        self.state.set_phase(Phase::Draining);
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await.is_err()
        {
            self.state.set_phase(Phase::Killed);
            let _ = task.await;
        }
    }

    /// Stops at once, like SIGKILL: the listener closes (new connections are refused) and every
    /// open connection is dropped mid-request. Takes effect as soon as the server tasks run.
    pub fn kill(&self) {
        self.state.set_phase(Phase::Killed);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `count` backends named `backend-1` to `backend-N` on free loopback ports, all with
/// `knobs`. Backend *i* gets seed *i*, the same as `toy-backend --count N` with the default seed.
pub async fn start_many(count: usize, knobs: Knobs) -> io::Result<Vec<Backend>> {
    let mut backends = Vec::with_capacity(count);
    for i in 1..=count {
        let config = BackendConfig { name: format!("backend-{i}"), knobs: knobs.clone(), seed: i as u64 };
        backends.push(Backend::start((Ipv4Addr::LOCALHOST, 0).into(), config).await?);
    }
    Ok(backends)
}
