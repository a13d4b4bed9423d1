//! Lesson one: a round-robin reverse proxy, the seed's Go program ported to Rust.
//!
//! Round robin hands requests to the backends in turn: 1, 2, 3, 1, 2, 3, ... A pick is O(1) and the
//! only state is one atomic counter, shared by all connections without a lock. It is fair when the
//! backends are alike and requests cost about the same. It is blind otherwise: a backend that is
//! slow, overloaded or dead still gets its third of the traffic (a dead one answers 502 here), which
//! is what the later lessons (least connections, EWMA, health checks) fix. nginx's `upstream`
//! default, HAProxy's `balance roundrobin` and Envoy's `ROUND_ROBIN` all start from this idea.
//!
//! Go's `httputil.ReverseProxy` already forwards every method, path and query, streams bodies,
//! strips hop-by-hop headers and appends `X-Forwarded-For`, and so does this port. Where the port
//! departs from the seed, a comment says "Fix over the Go version".
//!
//! # Layout
//!
//! - `lib.rs` (this file): [`RoundRobin`] (the pick and the forwarding) and [`run`]/[`serve`] (the server).
//! - `main.rs`: the flags, with the seed's defaults.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

/// A backend list the proxy cannot use.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("backend {0}: expected http://host:port with no path")]
    BadBackend(Uri),
    #[error("no backends given")]
    NoBackends,
}

/// A response body: the backend's, streamed through, or a short one of our own (the 502).
type Body = Either<Incoming, Full<Bytes>>;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), so a proxy must not
/// pass them on.
#[rustfmt::skip]
const HOP_BY_HOP: [&str; 9] = [
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
    "proxy-authenticate", "proxy-authorization",
];

/// The balancer: the backends, the counter, and one pooled HTTP client.
#[derive(Debug)]
pub struct RoundRobin {
    backends: Vec<Uri>,
    next: AtomicUsize,
    client: Client<HttpConnector, Incoming>,
}

impl RoundRobin {
    /// Fix over the Go version: it parses the backend URL on every request and answers 500 if that
    /// fails; a bad backend is a configuration error, so it is caught here, once, at start.
    pub fn new(backends: Vec<Uri>) -> Result<Self, ConfigError> {
        Self::with_idle_pool(backends, 1024)
    }

    /// [`RoundRobin::new`] keeping at most `max_idle` idle connections per backend. 2 is Go's default
    /// (`DefaultMaxIdleConnsPerHost`): the keep-alive lesson measures what that costs under load.
    pub fn with_idle_pool(backends: Vec<Uri>, max_idle: usize) -> Result<Self, ConfigError> {
        if backends.is_empty() {
            return Err(ConfigError::NoBackends);
        }
        for b in &backends {
            let bare = b.path_and_query().is_none_or(|p| p.as_str() == "/");
            if b.scheme() != Some(&http::uri::Scheme::HTTP) || b.authority().is_none() || !bare {
                return Err(ConfigError::BadBackend(b.clone()));
            }
        }
        // Fix over the Go version: it builds a new ReverseProxy per request, and its default
        // transport keeps only 2 idle connections per backend, so under load most connections are
        // closed after one request and dialled again. One client, built once, with a large pool.
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true); // small requests leave at once, no Nagle delay
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(max_idle)
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Ok(RoundRobin { backends, next: AtomicUsize::new(0), client })
    }

    /// The next backend in turn. Go's `atomic.AddUint64` returns the *new* value, so its first
    /// request goes to `backends[1]`; `fetch_add` returns the old one, so ours starts at
    /// `backends[0]`. (`None` cannot happen: `new` refuses an empty list.)
    fn pick(&self) -> Option<&Uri> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.backends.get(n.checked_rem(self.backends.len())?)
    }

    /// Forwards one request to the next backend and returns its response, streamed.
    async fn proxy(&self, mut req: Request<Incoming>, client_ip: IpAddr) -> Response<Body> {
        let Some(backend) = self.pick() else {
            return text(StatusCode::SERVICE_UNAVAILABLE, "no backends\n".into());
        };
        // Same as Go: the backend's scheme and host, the client's path and query. The Host header
        // is left as the client sent it, as Go's NewSingleHostReverseProxy does.
        let mut parts = backend.clone().into_parts();
        parts.path_and_query = req.uri().path_and_query().cloned();
        let Ok(uri) = Uri::from_parts(parts) else {
            return text(StatusCode::BAD_REQUEST, "bad request target\n".into());
        };
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_11; // the client only speaks HTTP/1.1 upstream
        strip_hop_by_hop(req.headers_mut());
        append_forwarded_for(req.headers_mut(), client_ip);
        // The request body (`Incoming`) goes to the backend as it arrives, never collected.
        match self.client.request(req).await {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, Either::Left(body))
            }
            Err(e) => {
                tracing::warn!(%backend, error = ?e, "backend unavailable");
                // Fix over the Go version: its default error handler answers 502 with an empty
                // body; naming the backend tells a learner at once which one is down.
                let name = backend.authority().map_or("?", |a| a.as_str());
                let msg = format!("502 Bad Gateway: backend http://{name} is unavailable\n");
                text(StatusCode::BAD_GATEWAY, msg)
            }
        }
    }
}

/// Removes hop-by-hop headers, including any header the `Connection` header names
/// (`Connection: close, x-secret` makes `x-secret` hop-by-hop too).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Appends the client's IP to `X-Forwarded-For`, joining any earlier values into one, as Go does.
fn append_forwarded_for(headers: &mut HeaderMap, ip: IpAddr) {
    let mut chain: Vec<String> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    chain.push(ip.to_string());
    if let Ok(value) = HeaderValue::from_str(&chain.join(", ")) {
        headers.insert("x-forwarded-for", value);
    }
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *resp.status_mut() = status;
    let plain = HeaderValue::from_static("text/plain; charset=utf-8");
    resp.headers_mut().insert(header::CONTENT_TYPE, plain);
    resp
}

/// Serves `listener`, balancing over `backends`, until `shutdown` resolves; then finishes the
/// requests in progress.
pub async fn run(
    listener: TcpListener,
    backends: Vec<Uri>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ConfigError> {
    serve(listener, RoundRobin::new(backends)?, shutdown).await;
    Ok(())
}

/// [`run`] with a balancer already built (for instance with a small idle pool).
pub async fn serve(listener: TcpListener, lb: RoundRobin, shutdown: impl Future<Output = ()>) {
    let lb = Arc::new(lb);
    // Fix over the Go version: `http.ListenAndServe` has no header timeout (a slowloris client
    // holds a connection forever) and `log.Fatal` exits without finishing requests in flight.
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(30));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer): (_, SocketAddr) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => { // usually out of file descriptors: back off, don't spin
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let lb = lb.clone();
        let service = hyper::service::service_fn(move |req| {
            let lb = lb.clone();
            async move { Ok::<_, Infallible>(lb.proxy(req, peer.ip()).await) }
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(conn); // its error (client went away) has nobody to go to
    }
    graceful.shutdown().await;
}
