//! The accept loop: our own, rather than `axum::serve`, because fail mode and `kill()` need to
//! reach below HTTP.
//!
//! - **Fail mode** must look like a crashed process to the client: a connection reset, no response.
//!   A new connection is reset with `SO_LINGER` 0 (close sends RST instead of FIN). A request on a
//!   connection that was already open makes the hyper service return `Err`, and hyper then tears
//!   the connection down without answering. The control routes are exempt, so that
//!   `POST /admin/fail {"fail":false}` can still reach a failing backend: for a new connection we
//!   peek (without consuming) at its first bytes to see which route it asks for.
//! - **`kill()`** drops the listener and every connection at once, like SIGKILL; **graceful
//!   shutdown** stops accepting and lets open requests finish (hyper-util's `GracefulShutdown`).
//!
//! Every connection gets `TCP_NODELAY`: small responses must leave at once, not wait for Nagle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};

use crate::app::{BackendState, Phase, app, is_control_path};

/// The error a service returns in fail mode; hyper answers it by closing the connection.
#[derive(Debug, thiserror::Error)]
#[error("fail mode: dropping the connection")]
struct FailMode;

/// Request lines that may pass a failing backend: the control routes.
const CONTROL_PREFIXES: [&[u8]; 4] = [b"GET /health", b"HEAD /health", b"GET /admin/", b"POST /admin/"];

/// Serves `listener` until the backend is drained or killed.
pub(crate) async fn serve(listener: TcpListener, state: BackendState) {
    let router = app(state.clone());
    let mut phase = state.watch_phase();
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);

    loop {
        let accepted = tokio::select! {
            biased;
            _ = phase.wait_for(|p| *p != Phase::Running) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Usually EMFILE (out of file descriptors). Back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        tokio::spawn(connection(
            stream,
            peer,
            state.clone(),
            router.clone(),
            builder.clone(),
            graceful.watcher(),
        ));
    }
    drop(listener);
    if *phase.borrow() == Phase::Killed {
        return;
    }
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = phase.wait_for(|p| *p == Phase::Killed) => {}
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    state: BackendState,
    router: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: Watcher,
) {
    if state.fail() && !asks_for_control_route(&stream).await {
        // Zero linger: closing sends RST at once, and the client sees "connection reset".
        let _ = stream.set_zero_linger();
        return;
    }
    let _ = stream.set_nodelay(true);
    let mut phase = state.watch_phase();
    let router = TowerToHyperService::new(router);
    let service = service_fn(move |mut req: hyper::Request<Incoming>| {
        let response = if state.fail() && !is_control_path(req.uri().path()) {
            None
        } else {
            req.extensions_mut().insert(ConnectInfo(peer));
            Some(hyper::service::Service::call(&router, req))
        };
        async move {
            match response {
                Some(response) => response.await.map_err(|never| match never {}),
                None => Err(FailMode),
            }
        }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
    tokio::select! {
        // Errors here are routine (the client went away, fail mode); there is nobody to tell.
        _ = watcher.watch(conn) => {}
        // Returning drops the connection, and with it the socket.
        _ = phase.wait_for(|p| *p == Phase::Killed) => {}
    }
}

/// Peeks at the start of the first request, without consuming it, to see whether it is for a
/// control route. Gives up after a second: a client that sends nothing gets the reset.
async fn asks_for_control_route(stream: &TcpStream) -> bool {
    let look = async {
        let mut buf = [0u8; 16];
        loop {
            let n = stream.peek(&mut buf).await.ok()?;
            let seen = buf.get(..n)?;
            if n == 0 {
                return Some(false);
            }
            if CONTROL_PREFIXES.iter().any(|p| seen.starts_with(p)) {
                return Some(true);
            }
            if !CONTROL_PREFIXES.iter().any(|p| p.starts_with(seen)) {
                return Some(false);
            }
            // A prefix of a control request line has arrived; wait for the rest. `peek` would
            // return the same bytes again at once, so sleep instead of spinning.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    matches!(tokio::time::timeout(Duration::from_secs(1), look).await, Ok(Some(true)))
}
