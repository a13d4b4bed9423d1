//! Worker threads, listeners, the accept loop and graceful shutdown.
//!
//! # One runtime per core, nothing shared on the request path
//!
//! `workers = N` starts N OS threads, each running a single-threaded tokio runtime with its *own*
//! listening socket on the same address (`SO_REUSEPORT`: the kernel spreads new connections over the
//! sockets) and its own upstream connection pool ([`crate::client::pool`]). A request is accepted, forwarded and
//! answered on one thread, so the hot path needs no lock and no cross-thread wake-up; the only shared
//! writes are the balancer's and the metrics' relaxed atomics. This is nginx's and HAProxy's design
//! (worker processes or threads, each with its own event loop), as opposed to a work-stealing runtime
//! that moves tasks between cores.
//!
//! A worker receives its sockets over a channel, those of the start and those a reload adds later
//! ([`crate::net::listeners`]), and runs one accept loop per socket.
//!
//! A port already taken must fail loudly rather than be silently shared with another process through
//! `SO_REUSEPORT`: with one worker the option is not set at all, with more a probe socket without it
//! checks the port first.
//!
//! The control plane (admin API, health checks, the outlier unejector) runs on the runtime that called
//! [`start`]; it is idle almost all the time.
//!
//! # A connection's life
//!
//! Accept; if `server.limits.max_connections` are open, close at once (and count it). Otherwise the
//! connection is served as HTTP/1.x by this project's own server loop ([`crate::http::h1::server`]: keep-alive,
//! pipelining, upgrades for WebSocket, its own idle/header/body timeouts) or, when it opens with the
//! HTTP/2 preface, as HTTP/2 (h2c with prior knowledge) by hyper, with a watchdog for its timeouts
//! ([`crate::net::limits::ConnWatch`]). On a `listen_tls` listener the TLS handshake comes first
//! ([`crate::net::tls`]) and ALPN decides between HTTP/2 and HTTP/1.1. Every request runs through
//! `proxy::Worker::handle` on this thread.
//!
//! # Shutdown
//!
//! [`Running::shutdown`] (or Ctrl-C / SIGTERM through [`run`]): every worker closes its listeners (new
//! connections are refused from then on), asks each open connection to close after its current
//! request (idle keep-alive connections close at once, or, if answered less than a second ago, after
//! serving the request their client may already have sent; a request in progress gets `Connection: close`
//! on its response; HTTP/2 connections get hyper's GOAWAY), and waits up to
//! `server.shutdown_timeout` for them, WebSocket tunnels included; what is left is cut. The admin API
//! stays up until then, its `/ready` answering 503 (`crate::control::probes`), so an orchestrator
//! sees the drain rather than a refused connection; after a binary upgrade it closes at once instead,
//! and the new process answers on the same socket.
//!
//! # Layer
//!
//! The top of the runtime: it starts everything below. [`http1`] is the HTTP/1.x connection loop; HTTP/2
//! clients are served by hyper here. May import every layer except [`crate::cli`].

mod h2_streams;
pub(crate) mod http1;
pub(crate) mod upgrade;

use std::cell::Cell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::Request;
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use lb_algorithms::now_nanos;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::ServerLimits;
use crate::control::admin::{AdminState, router};
use crate::control::admin_access::Access;
use crate::control::probes::Readiness;
use crate::control::reload::{Live, ReloadError, ReloadReport, Reloader};
use crate::control::{Settings, Shared};
use crate::forward::Worker;
use crate::http::ClientBody;
use crate::net::fds::Throttle;
use crate::net::handoff::{Handed, Kind};
use crate::net::io::ClientIo;
use crate::net::limits::{self, ConnWatch, WatchedIo};
use crate::net::listeners::{Control, Listeners, Mode, NewListener};
use crate::observe::metrics::Metrics;
use crate::upstream::Upstreams;
use crate::{Config, Error};

/// A running proxy, started by [`start`].
#[derive(Debug)]
pub struct Running {
    /// The client-facing addresses bound at start (port 0 in the config becomes a real port here);
    /// after a reload, [`Reloader::listening`] has those in use.
    pub listen: Vec<SocketAddr>,
    /// The TLS addresses bound at start (`server.listen_tls`).
    pub listen_tls: Vec<SocketAddr>,
    /// The admin API's address, if enabled.
    pub admin: Option<SocketAddr>,
    /// The live upstream groups (tests change backends and health through them).
    pub upstreams: Arc<Upstreams>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// Applies a new configuration (`SIGHUP` and admin `POST /reload` go through it).
    pub reloader: Arc<Reloader>,
    stop: watch::Sender<bool>,
    /// Stops the admin API: after the workers on shutdown, at once after a binary upgrade.
    admin_stop: watch::Sender<bool>,
    /// What `/ready` answers from.
    readiness: Arc<Readiness>,
    workers: Vec<std::thread::JoinHandle<()>>,
    control: Vec<JoinHandle<()>>,
    /// A second descriptor of the admin API's socket, with its address as configured, for a binary
    /// upgrade ([`Running::handoff`]).
    admin_copy: Option<(SocketAddr, std::net::TcpListener)>,
}

impl Running {
    /// Stop accepting, let requests in flight finish (up to `shutdown_grace`), and return when every
    /// worker thread has exited.
    pub async fn shutdown(self) {
        // The copies kept for an upgrade would keep the ports listening after the workers close
        // theirs (a binary upgrade has handed its own copies over by now).
        self.readiness.mark_draining();
        self.reloader.release_sockets();
        drop(self.admin_copy);
        let _ = self.stop.send(true);
        let workers = self.workers;
        // Joining threads blocks; do it off the async runtime.
        let _ = tokio::task::spawn_blocking(move || {
            for w in workers {
                let _ = w.join();
            }
        })
        .await;
        // The admin API (and its `/ready`, 503 meanwhile) outlived the drain; now it closes too.
        let _ = self.admin_stop.send(true);
        for task in self.control {
            let _ = task.await;
        }
        self.reloader.join().await;
    }

    /// Close the admin API now rather than after the drain: the process that took over its socket
    /// answers there from now on (a binary upgrade).
    pub fn close_admin(&self) {
        let _ = self.admin_stop.send(true);
    }

    /// Read the configuration file again and switch to it (see [`crate::control::reload`]).
    pub fn reload(&self) -> Result<ReloadReport, ReloadError> {
        self.reloader.reload_file()
    }

    /// A copy of every listening socket, the admin API's included, for the process that replaces
    /// this one (see [`crate::net::handoff`]).
    pub fn handoff(&self) -> std::io::Result<Vec<Handed>> {
        let mut handed = self.reloader.handoff()?;
        if let Some((requested, socket)) = &self.admin_copy {
            let bound = socket.local_addr()?;
            handed.push(Handed {
                kind: Kind::Admin,
                requested: *requested,
                bound,
                sockets: vec![socket.try_clone()?],
            });
        }
        Ok(handed)
    }

    /// The first client-facing address as a URL, e.g. `http://127.0.0.1:8080`.
    pub fn url(&self) -> String {
        self.listen.first().map_or_else(String::new, |a| format!("http://{a}"))
    }
}

/// Start the proxy: bind every listener (errors now, not later), start the workers and the control
/// plane, and return. Must be called inside a tokio runtime.
pub async fn start(config: Config) -> Result<Running, Error> {
    start_with(config, Vec::new()).await
}

/// [`start`], using `handed` (sockets a previous process handed over on a binary upgrade) for the
/// addresses they are bound to instead of binding those again.
pub async fn start_with(config: Config, mut handed: Vec<Handed>) -> Result<Running, Error> {
    let upstreams = Arc::new(Upstreams::new(&config.upstreams)?);
    let metrics = Arc::new(Metrics::for_upstreams(&upstreams));
    let admin_config = config.admin.clone();
    // A file has been refused by `Config::parse` already; this catches quick mode (`--admin 0.0.0.0:..`)
    // and embedders, before anything is bound.
    if let Some(reason) = admin_config.as_ref().and_then(crate::config::AdminConfig::open_to_the_network) {
        return Err(Error::AdminOpen(reason));
    }
    let settings = Settings::of(&config);
    let shared = Arc::new(Shared {
        upstreams: Arc::clone(&upstreams),
        metrics: Arc::clone(&metrics),
        settings: ArcSwap::from_pointee(settings),
        trusted_proxies: ArcSwap::from_pointee(config.server.trusted_proxies.clone()),
    });
    metrics.connections.set_max(settings.limits.max_connections);
    let workers = match config.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };

    let (certs, tls) = tls_terminator(&config, &metrics)?;
    // Bind all sockets up front, and queue each worker's for it before it starts.
    let (mut listeners, incoming) = Listeners::new(workers);
    let admin_socket = handed.iter().position(|h| h.kind == Kind::Admin).map(|i| handed.swap_remove(i));
    listeners.adopt(handed);
    let plan = listeners.plan(&config.server.listen, &config.server.listen_tls)?;
    listeners.commit(plan);
    let (bound, bound_tls) = listeners.addresses();

    let (stop, stop_rx) = watch::channel(false);
    let ctx = ListenCtx { shared: Arc::clone(&shared), stop: stop_rx.clone(), tls };
    let threads = spawn_workers(incoming, &ctx)?;

    let mut control = Vec::new();
    // The reloader owns the health checks and the unejector (a reload restarts them over the new
    // groups), and everything else a reload changes: settings, certificates, listeners.
    let readiness = Arc::new(Readiness::new());
    let live =
        Live { shared: Arc::clone(&shared), certs, listeners, workers, readiness: Arc::clone(&readiness) };
    let reloader = Reloader::start(config, live, stop_rx.clone());
    let (admin_stop, admin_stop_rx) = watch::channel(false);
    let (mut admin, mut admin_copy) = (None, None);
    if let Some((addr, token)) = admin_config.and_then(|a| Some((a.listen?, a.token))) {
        let state = |bound| AdminState {
            upstreams: Arc::clone(&upstreams),
            metrics: Arc::clone(&metrics),
            reloader: Some(Arc::clone(&reloader)),
            access: Arc::new(Access::new(bound, token)),
            stop: Some(stop_rx.clone()),
        };
        let inherited = admin_socket.filter(|h| h.requested == addr || h.bound == addr);
        let listener = admin_listener(addr, inherited)?;
        admin_copy = listener.try_clone().ok().map(|copy| (addr, copy));
        let probes = crate::control::probes::router(Arc::clone(&readiness));
        let (bound, task) = serve_admin(addr, listener, state, probes, admin_stop_rx)?;
        admin = Some(bound);
        control.push(task);
    }
    tracing::info!(listen = ?bound, listen_tls = ?bound_tls, admin = ?admin, workers, "lb started");
    Ok(Running {
        listen: bound,
        listen_tls: bound_tls,
        admin,
        upstreams,
        metrics,
        reloader,
        stop,
        admin_stop,
        readiness,
        workers: threads,
        control,
        admin_copy,
    })
}

/// One acceptor for every TLS listener, even when there is none yet: a reload may add one. Its
/// certificates are the part a reload replaces.
fn tls_terminator(
    config: &Config,
    metrics: &Metrics,
) -> Result<(Arc<crate::net::tls::Certificates>, tokio_rustls::TlsAcceptor), Error> {
    let certs = crate::net::tls::CertSet::load(&config.server.tls)?;
    if certs.is_empty() && !config.server.listen_tls.is_empty() {
        return Err(crate::net::tls::TlsError::no_certificate().into());
    }
    metrics.set_certificates(certs.expiry());
    let certs = crate::net::tls::Certificates::new(certs);
    let tls = crate::net::tls::terminator(Arc::clone(&certs))?;
    Ok((certs, tls))
}

/// One thread per worker, each with its channel of listening sockets.
fn spawn_workers(
    incoming: Vec<mpsc::UnboundedReceiver<NewListener>>,
    ctx: &ListenCtx,
) -> Result<Vec<std::thread::JoinHandle<()>>, Error> {
    let mut threads = Vec::with_capacity(incoming.len());
    for (i, incoming) in incoming.into_iter().enumerate() {
        let ctx = ctx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("lb-worker-{i}"))
            .spawn(move || worker_thread(i, incoming, ctx))
            .map_err(|error| Error::Worker { worker: i, error })?;
        threads.push(thread);
    }
    Ok(threads)
}

/// The admin API's socket: the one a previous process handed over, or a new one on `addr`.
fn admin_listener(addr: SocketAddr, inherited: Option<Handed>) -> Result<std::net::TcpListener, Error> {
    if let Some(socket) = inherited.and_then(|h| h.sockets.into_iter().next()) {
        return Ok(socket);
    }
    let bind = || {
        let socket = std::net::TcpListener::bind(addr)?;
        socket.set_nonblocking(true)?;
        Ok(socket)
    };
    bind().map_err(|error| Error::Bind { addr, error })
}

/// Serve the admin API on `listener` until `stop` turns true. Returns the bound address (port 0
/// picks one) and the server's task. `probes` (`/live`, `/ready`) are merged in after the admin
/// router's access rules, which therefore do not apply to them (see `control/probes.rs`).
fn serve_admin(
    addr: SocketAddr,
    listener: std::net::TcpListener,
    state: impl FnOnce(SocketAddr) -> AdminState,
    probes: axum::Router,
    mut stop: watch::Receiver<bool>,
) -> Result<(SocketAddr, JoinHandle<()>), Error> {
    let listener = TcpListener::from_std(listener).map_err(|error| Error::Bind { addr, error })?;
    let bound = listener.local_addr().map_err(|error| Error::Bind { addr, error })?;
    let app = router(state(bound)).merge(probes);
    let shutdown = async move {
        let _ = stop.wait_for(|&s| s).await;
    };
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!("admin server: {e}");
        }
    });
    Ok((bound, task))
}

/// Start, wait for `shutdown` to complete, then shut down gracefully.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let running = start(config).await?;
    shutdown.await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

fn worker_thread(index: usize, mut incoming: mpsc::UnboundedReceiver<NewListener>, ctx: ListenCtx) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("worker {index}: cannot build its runtime: {e}");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let worker = Rc::new(Worker::new(Arc::clone(&ctx.shared), index as u32 + 1));
        let tracker = Rc::new(ConnTracker::default());
        let sweeper = tokio::task::spawn_local(sweep_pool(Rc::clone(&worker)));
        // Listening sockets arrive on `incoming`: those of the start, then those a reload adds.
        let mut loops: Vec<JoinHandle<()>> = Vec::new();
        let mut stop = ctx.stop.clone();
        loop {
            let new = tokio::select! {
                new = incoming.recv() => new,
                _ = stop.wait_for(|&s| s) => break,
            };
            let Some(NewListener { socket, control }) = new else {
                // No more reloads can come; serve what we have until the stop.
                let _ = stop.wait_for(|&s| s).await;
                break;
            };
            match TcpListener::from_std(socket) {
                Ok(l) => {
                    loops.retain(|l| !l.is_finished());
                    let (worker, tracker) = (Rc::clone(&worker), Rc::clone(&tracker));
                    loops.push(tokio::task::spawn_local(serve_listener(
                        l,
                        control,
                        worker,
                        tracker,
                        ctx.clone(),
                    )));
                }
                Err(e) => tracing::error!("worker {index}: listener: {e}"),
            }
        }
        for l in loops {
            let _ = l.await;
        }
        sweeper.abort();
        // The listeners are closed now (new connections are refused); every open connection has been
        // told to finish its current request and close. Wait for them, up to the grace period in force
        // now (a reload may have changed it); what is left when this returns is cut when the runtime
        // drops its tasks.
        let grace = ctx.shared.settings().shutdown_grace;
        if tokio::time::timeout(grace, tracker.all_closed()).await.is_err() {
            tracing::warn!(
                "worker {index}: {} connections still open after {grace:?}; closing them",
                tracker.open.get()
            );
        }
    });
}

/// What every accept loop needs besides its socket.
#[derive(Clone)]
pub struct ListenCtx {
    /// What every worker shares.
    pub shared: Arc<Shared>,
    /// Set to true to stop.
    pub stop: watch::Receiver<bool>,
    /// The TLS acceptor (certificates, SNI, ALPN), for listeners in TLS mode.
    pub tls: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for ListenCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenCtx").finish_non_exhaustive()
    }
}

/// The client connections of one worker still open, so shutdown can wait for them.
#[derive(Debug, Default)]
pub struct ConnTracker {
    open: Cell<usize>,
    closed: tokio::sync::Notify,
}

/// One tracked connection (or WebSocket tunnel); dropping it counts it closed.
#[derive(Debug)]
pub struct TrackedConn(Rc<ConnTracker>);

impl ConnTracker {
    /// Count one more open connection.
    pub fn track(self: &Rc<Self>) -> TrackedConn {
        self.open.set(self.open.get() + 1);
        TrackedConn(Rc::clone(self))
    }

    async fn all_closed(&self) {
        while self.open.get() > 0 {
            self.closed.notified().await;
        }
    }
}

impl Drop for TrackedConn {
    fn drop(&mut self) {
        let t = &self.0;
        t.open.set(t.open.get().saturating_sub(1));
        if t.open.get() == 0 {
            t.closed.notify_waiters();
        }
    }
}

/// One "accept failed" warning per this long, for all listeners and workers together; the line says
/// how many failures it stands for (`suppressed`: those since the last line).
static ACCEPT_WARNINGS: Throttle = Throttle::new(Duration::from_secs(5));

/// Accept clients on one listener until `stop`, or until a reload closes it, serving each connection
/// on this thread, as plain HTTP or TLS as the listener's mode says.
pub async fn serve_listener(
    listener: TcpListener,
    mut control: Control,
    worker: Rc<Worker>,
    tracker: Rc<ConnTracker>,
    ctx: ListenCtx,
) {
    let mut stop = ctx.stop.clone();
    let connections = Arc::clone(&ctx.shared.metrics.connections);
    let mut mode = control.mode();
    loop {
        if mode == Mode::Closed {
            // Dropping the socket refuses new connects; those already accepted go on.
            return;
        }
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly rather than spin, and
                    // say so once per few seconds, not at every try (see `net/fds.rs`).
                    if let Some(suppressed) = ACCEPT_WARNINGS.allow(lb_algorithms::now_nanos()) {
                        tracing::warn!(suppressed, "accept: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            changed = control.changed() => {
                mode = changed;
                continue;
            }
            _ = stop.wait_for(|&s| s) => return,
        };
        // A reload may have switched this listener to TLS (or back) while the connection waited:
        // `select!` has no preference between a ready accept and a ready change, so look again (one
        // atomic load). A listener being closed serves what it has accepted as it was, then stops.
        let accepted_as = mode;
        if control.has_changed() {
            mode = control.mode();
        }
        let serve_as = if mode == Mode::Closed { accepted_as } else { mode };
        // Over the cap: accept and close at once. Leaving it in the backlog instead would make the
        // client wait for a connect timeout and still hold a kernel slot; a prompt close lets it retry
        // elsewhere. HAProxy's maxconn does the opposite (stops accepting); both are common.
        let Some(slot) = connections.try_acquire() else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let tracked = tracker.track();
        // The limits in force now hold for this connection's life, even if a reload changes them.
        let limits = ctx.shared.settings().limits;
        let (worker, stop) = (Rc::clone(&worker), ctx.stop.clone());
        match (serve_as == Mode::Tls).then(|| ctx.tls.clone()) {
            None => tokio::task::spawn_local(async move {
                serve_connection(stream, peer, worker, stop, limits).await;
                drop((slot, tracked));
            }),
            Some(tls) => tokio::task::spawn_local(async move {
                serve_tls_connection(tls, stream, peer, worker, stop, limits).await;
                drop((slot, tracked));
            }),
        };
    }
}

/// Runs hyper's HTTP/2 connection tasks (one per stream) on this worker's thread: the request
/// handler holds `Rc`s, so it cannot be sent to another.
#[derive(Debug, Clone, Copy)]
pub struct LocalExec;

impl<F: Future + 'static> hyper::rt::Executor<F> for LocalExec {
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

/// The HTTP/2 connection preface a client with prior knowledge (h2c) starts with.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serve one client connection: HTTP/1.1 (with upgrades) or, when it opens with the HTTP/2 preface,
/// HTTP/2 (h2c with prior knowledge).
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    worker: Rc<Worker>,
    stop: watch::Receiver<bool>,
    limits: ServerLimits,
) {
    let h2 = match tokio::time::timeout(limits.header_read_timeout, starts_with_h2_preface(&stream)).await {
        Ok(Ok(h2)) => h2,
        // Silent past the header timeout, or gone: nothing to serve.
        _ => return,
    };
    if h2 {
        // Boxed: hyper's HTTP/2 connection state is large, and every connection's task would carry
        // room for it otherwise, HTTP/1 ones included. Only HTTP/2 needs the watchdog (the HTTP/1
        // loop keeps its own timeouts).
        let watch = ConnWatch::new(limits);
        Box::pin(serve_io(WatchedIo::new(stream, Arc::clone(&watch)), peer, false, worker, stop, watch))
            .await;
    } else {
        crate::server::http1::serve(ClientIo::Plain(stream), false, peer, worker, stop, limits).await;
    }
}

/// Serve one TLS client connection: the handshake (bounded by the header read timeout, since a
/// client that never finishes it is a slowloris too), then HTTP/2 when ALPN chose `h2`, else HTTP/1.1.
async fn serve_tls_connection(
    tls: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    worker: Rc<Worker>,
    stop: watch::Receiver<bool>,
    limits: ServerLimits,
) {
    let watch = ConnWatch::new(limits);
    // The watchdog sees the encrypted bytes: progress is progress, and the TLS framing overhead on a
    // body (about 0.2%) is well inside the body limit's slack.
    let io = WatchedIo::new(stream, Arc::clone(&watch));
    let stream = match tokio::time::timeout(limits.header_read_timeout, tls.accept(io)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, "TLS handshake failed: {e}");
            return;
        }
        Err(_) => return,
    };
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        serve_io(stream, peer, true, worker, stop, watch).await;
    } else {
        crate::server::http1::serve(ClientIo::Tls(Box::new(stream)), true, peer, worker, stop, limits).await;
    }
}

/// Does the client speak HTTP/2 first? Peeks, so nothing is consumed.
async fn starts_with_h2_preface(stream: &TcpStream) -> std::io::Result<bool> {
    let mut buf = [0u8; 24];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(false);
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Ok(false);
        }
        if n == H2_PREFACE.len() {
            return Ok(true);
        }
        // A prefix of the preface so far (rare: the preface is one small write). `peek` would return
        // the same bytes at once, so wait a little for the rest; the caller's timeout bounds this.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Serve HTTP/2 (hyper's server) on an established, possibly decrypted, connection. HTTP/1.x clients
/// go to [`crate::http::h1::server`] instead.
pub async fn serve_io<I>(
    io: I,
    peer: SocketAddr,
    https: bool,
    worker: Rc<Worker>,
    stop: watch::Receiver<bool>,
    watch: Arc<ConnWatch>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = watch.limits();
    let client = Rc::new(worker.client_info(peer, https));
    let w = Arc::clone(&watch);
    let streams = h2_streams::Streams::new(limits.send_timeout);
    let s = Rc::clone(&streams);
    let service = service_fn(move |req: Request<Incoming>| {
        let guard = w.request_started(!req.body().is_end_stream());
        let handled = Rc::clone(&worker).handle(req.map(ClientBody::H2), Rc::clone(&client));
        let streams = Rc::clone(&s);
        async move {
            let (mut parts, mut body) = handled.await?.into_parts();
            // hyper's HTTP/2 server writes a map: an HTTP/1 backend's fields go into it.
            body.fields_into(&mut parts.headers);
            let body = limits::Tracked::new(streams.watch(body), guard);
            Ok::<_, Infallible>(http::Response::from_parts(parts, body))
        }
    });
    let mut http = hyper::server::conn::http2::Builder::new(LocalExec);
    http.timer(TokioTimer::new()).max_header_list_size(limits.max_header_bytes as u32);
    drive(http.serve_connection(TokioIo::new(io), service), stop, watch, &streams).await;
}

/// A hyper server connection that can be asked to finish its current requests and close.
trait Graceful: Future<Output = Result<(), hyper::Error>> {
    fn begin_shutdown(self: Pin<&mut Self>);
}

impl<I, S, B> Graceful for hyper::server::conn::http2::Connection<I, S, LocalExec>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    LocalExec: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn begin_shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Run a connection to its end, unless its watchdog fires (drop it) or the proxy stops (let the
/// current requests finish, then close; idle connections close at once), sweeping its stalled
/// streams meanwhile (see [`h2_streams`]).
async fn drive<C: Graceful>(
    conn: C,
    mut stop: watch::Receiver<bool>,
    watch: Arc<ConnWatch>,
    streams: &h2_streams::Streams,
) {
    tokio::pin!(conn);
    let sweeping = streams.sweep();
    tokio::pin!(sweeping);
    let mut stopping = false;
    loop {
        tokio::select! {
            // A client that goes away mid-request is routine, not worth a log line per connection.
            _ = conn.as_mut() => return,
            () = sweeping.as_mut() => return,
            why = watch.expired() => {
                tracing::debug!("closing a client connection: {why}");
                return;
            }
            _ = stop.wait_for(|&s| s), if !stopping => {
                stopping = true;
                conn.as_mut().begin_shutdown();
            }
        }
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
