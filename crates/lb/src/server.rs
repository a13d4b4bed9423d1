//! Worker threads, listeners, the accept loop and graceful shutdown.
//!
//! # One runtime per core, nothing shared on the request path
//!
//! `workers = N` starts N OS threads, each running a single-threaded tokio runtime with its *own*
//! listening socket on the same address (`SO_REUSEPORT`: the kernel spreads new connections over the
//! sockets) and its own upstream connection pool ([`crate::pool`]). A request is accepted, forwarded and
//! answered on one thread, so the hot path needs no lock and no cross-thread wake-up; the only shared
//! writes are the balancer's and the metrics' relaxed atomics. This is nginx's and HAProxy's design
//! (worker processes or threads, each with its own event loop), as opposed to a work-stealing runtime
//! that moves tasks between cores.
//!
//! A port already taken must fail loudly rather than be silently shared with another process through
//! `SO_REUSEPORT`: with one worker the option is not set at all, with more a probe socket without it
//! checks the port first.
//!
//! The control plane (admin API, health checks, the outlier unejector) runs on the runtime that called
//! [`start`]; it is idle almost all the time.
//!
//! # Shutdown
//!
//! [`Running::shutdown`] (or Ctrl-C / SIGTERM through [`run`]): every worker stops accepting, asks each
//! open connection to close after its current request (hyper's graceful shutdown: keep-alive off, idle
//! connections closed at once), and waits up to `shutdown_grace` for them; what is left is cut.
//!
//! The accept loop ([`serve_listener`]) and the forwarding function (`proxy::Worker::handle`) are
//! separate so TLS, HTTP/2 or a hot-reloaded routing table can be slotted in at one place each.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use lb_algorithms::now_nanos;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{AdminState, router};
use crate::metrics::Metrics;
use crate::proxy::{ClientInfo, Shared, Worker};
use crate::upstream::Upstreams;
use crate::{Config, Error};

/// How long a client connection may sit between requests (or take to send its headers) before it is
/// closed.
pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A running proxy, started by [`start`].
#[derive(Debug)]
pub struct Running {
    /// The client-facing addresses actually bound (port 0 in the config becomes a real port here).
    pub listen: Vec<SocketAddr>,
    /// The admin API's address, if enabled.
    pub admin: Option<SocketAddr>,
    /// The live upstream groups (tests change backends and health through them).
    pub upstreams: Arc<Upstreams>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
    workers: Vec<std::thread::JoinHandle<()>>,
    control: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stop accepting, let requests in flight finish (up to `shutdown_grace`), and return when every
    /// worker thread has exited.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let workers = self.workers;
        // Joining threads blocks; do it off the async runtime.
        let _ = tokio::task::spawn_blocking(move || {
            for w in workers {
                let _ = w.join();
            }
        })
        .await;
        for task in self.control {
            let _ = task.await;
        }
    }

    /// The first client-facing address as a URL, e.g. `http://127.0.0.1:8080`.
    pub fn url(&self) -> String {
        self.listen.first().map_or_else(String::new, |a| format!("http://{a}"))
    }
}

/// Start the proxy: bind every listener (errors now, not later), start the workers and the control
/// plane, and return. Must be called inside a tokio runtime.
pub async fn start(config: Config) -> Result<Running, Error> {
    let upstreams = Arc::new(Upstreams::new(&config.upstreams)?);
    let metrics = Arc::new(Metrics::for_upstreams(&upstreams));
    let admin_config = config.admin.clone();
    let shared = Arc::new(Shared {
        upstreams: Arc::clone(&upstreams),
        metrics: Arc::clone(&metrics),
        explain: admin_config.as_ref().is_some_and(|a| a.explain),
        access_log: admin_config.as_ref().is_some_and(|a| a.access_log),
    });
    let workers = if config.server.workers == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        config.server.workers
    };

    // Bind all sockets up front. For port 0, the first socket picks the port and the others join it.
    let mut bound = Vec::new();
    let mut per_worker: Vec<Vec<std::net::TcpListener>> = (0..workers).map(|_| Vec::new()).collect();
    for &requested in &config.server.listen {
        let mut addr = requested;
        if workers > 1 && requested.port() != 0 {
            // With SO_REUSEPORT on every socket, the kernel would let us share a port that another
            // process (another lb, say) already listens on, and split its clients with it. A probe
            // bound *without* SO_REUSEPORT fails on a taken port, which is the error we want.
            probe(requested).map_err(|error| Error::Bind { addr: requested, error })?;
        }
        for (w, listeners) in per_worker.iter_mut().enumerate() {
            let l = bind(addr, workers > 1).map_err(|error| Error::Bind { addr, error })?;
            if w == 0 {
                addr = l.local_addr().map_err(|error| Error::Bind { addr, error })?;
                bound.push(addr);
            }
            listeners.push(l);
        }
    }

    let (stop, stop_rx) = watch::channel(false);
    let grace = config.server.shutdown_grace;
    let mut threads = Vec::with_capacity(workers);
    for (i, listeners) in per_worker.into_iter().enumerate() {
        let shared = Arc::clone(&shared);
        let stop_rx = stop_rx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("lb-worker-{i}"))
            .spawn(move || worker_thread(i, listeners, shared, stop_rx, grace))
            .map_err(|error| Error::Worker { worker: i, error })?;
        threads.push(thread);
    }

    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|&s| s).await;
    };
    let mut control = vec![
        crate::health::spawn(Arc::clone(&upstreams), stopped(stop_rx.clone())),
        crate::outlier::spawn_unejector(Arc::clone(&upstreams), stopped(stop_rx.clone())),
    ];
    let mut admin = None;
    if let Some(addr) = admin_config.and_then(|a| a.listen) {
        let listener = TcpListener::bind(addr).await.map_err(|error| Error::Bind { addr, error })?;
        admin = Some(listener.local_addr().map_err(|error| Error::Bind { addr, error })?);
        let app = router(AdminState { upstreams: Arc::clone(&upstreams), metrics: Arc::clone(&metrics) });
        let shutdown = stopped(stop_rx.clone());
        control.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                tracing::error!("admin server: {e}");
            }
        }));
    }
    tracing::info!(listen = ?bound, admin = ?admin, workers, "lb started");
    Ok(Running { listen: bound, admin, upstreams, metrics, stop, workers: threads, control })
}

/// Start, wait for `shutdown` to complete, then shut down gracefully.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let running = start(config).await?;
    shutdown.await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

fn bind(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // SO_REUSEADDR: restart at once even with connections of the previous run in TIME_WAIT.
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Bind (without listening, so no client can land on it) and close: does the port look free?
fn probe(addr: SocketAddr) -> std::io::Result<()> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())
}

fn worker_thread(
    index: usize,
    listeners: Vec<std::net::TcpListener>,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("worker {index}: cannot build its runtime: {e}");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let worker = Rc::new(Worker::new(shared, index as u32 + 1));
        let graceful = Rc::new(GracefulShutdown::new());
        let mut loops = Vec::new();
        for l in listeners {
            match TcpListener::from_std(l) {
                Ok(l) => loops.push(tokio::task::spawn_local(serve_listener(
                    l,
                    Rc::clone(&worker),
                    Rc::clone(&graceful),
                    stop.clone(),
                ))),
                Err(e) => tracing::error!("worker {index}: listener: {e}"),
            }
        }
        let sweeper = tokio::task::spawn_local(sweep_pool(Rc::clone(&worker)));
        for l in loops {
            let _ = l.await;
        }
        sweeper.abort();
        // Every accept loop has returned, so this is the last reference.
        if let Ok(graceful) = Rc::try_unwrap(graceful)
            && tokio::time::timeout(grace, graceful.shutdown()).await.is_err()
        {
            tracing::warn!("worker {index}: connections still open after {grace:?}; closing them");
        }
    });
}

/// Accept clients on one listener until `stop`, serving each connection on this thread.
pub async fn serve_listener(
    listener: TcpListener,
    worker: Rc<Worker>,
    graceful: Rc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(CLIENT_IDLE_TIMEOUT).keep_alive(true);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly rather than spin.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.wait_for(|&s| s) => return,
        };
        let _ = stream.set_nodelay(true);
        let w = Rc::clone(&worker);
        let client = Rc::new(ClientInfo::new(peer));
        let service = service_fn(move |req| Rc::clone(&w).handle(req, Rc::clone(&client)));
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::task::spawn_local(async move {
            // A client that goes away mid-request is routine, not worth a log line per connection.
            let _ = conn.await;
        });
    }
}

/// Close idle pooled connections past their deadline, every second.
async fn sweep_pool(worker: Rc<Worker>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        worker.pool().sweep(now_nanos());
    }
}
