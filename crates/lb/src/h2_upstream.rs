//! HTTP/2 to backends (`protocol = "h2c"` or `"h2"` on an upstream), optionally over TLS.
//!
//! # When a backend wants HTTP/2
//!
//! Most backends are happy with HTTP/1.1 over a warm keep-alive pool, which is `lb`'s default path
//! (`h1.rs`, `pool.rs`). Some speak only HTTP/2: gRPC services, and servers that multiplex thousands
//! of slow streams over a few connections. For those, an upstream says `protocol = "h2c"` (HTTP/2 in
//! clear text, with prior knowledge) or `protocol = "h2"` (HTTP/2 over TLS, negotiated with ALPN), and
//! requests to it take this separate path: hyper-util's pooled client with `http2_only`, one
//! multiplexed connection per backend shared by every worker thread (HTTP/2 needs no more: streams,
//! not connections, carry the concurrency).
//!
//! # TLS to backends
//!
//! `[upstream.tls]` sets how `lb` checks the backend's certificate (see `upstream_tls.rs`, which the
//! HTTP/1.1 path shares); here the handshake offers `h2` in ALPN.
//!
//! # Retries
//!
//! The same rules as the HTTP/1.1 path, from the same code (`attempts.rs`): a request goes to a
//! *different* backend after a connect failure (refused, timed out, TLS handshake), and an idempotent
//! request without a body also after a broken stream or a 502/503/504, within `[upstream.retry]
//! attempts` and the retry budget. One thing is particular to this path: hyper's client takes the
//! request by value and does not give it back when the connection fails, so a request *with* a body
//! travels in a [`Reclaimable`] wrapper that hands the untouched body back for the next attempt.
//!
//! The same elsewhere: nginx `grpc_pass grpcs://...` (nginx's `proxy_pass` speaks only HTTP/1.x to
//! backends); HAProxy `server s1 10.0.0.1:443 ssl alpn h2 ca-file ca.pem` or `proto h2`; Envoy
//! `http2_protocol_options` on the cluster with a `transport_socket` for TLS.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{Either, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use tokio::time::Instant;

use crate::attempts::{Answered, Attempts, Tally};
use crate::metrics::FailureKind;
use crate::proxy::{ClientBody, ProxyBody};
use crate::retry::is_idempotent_without_body;
use crate::tls::TlsError;
use crate::upstream_tls::{BackendConnector, BackendTls};

/// `protocol` of an upstream: how `lb` talks to its backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 over TCP, pooled (the default).
    #[default]
    Http1,
    /// HTTP/2 in clear text, with prior knowledge.
    H2c,
    /// HTTP/2 over TLS (needs `[upstream.tls]`).
    H2,
}

impl Protocol {
    /// The protocol to offer in the TLS handshake's ALPN.
    pub fn alpn(self) -> &'static [u8] {
        match self {
            Protocol::Http1 => b"http/1.1",
            Protocol::H2c | Protocol::H2 => b"h2",
        }
    }
}

pub use crate::upstream_tls::UpstreamTls;

/// The body sent to an HTTP/2 backend.
pub type H2Body = Either<Reclaimable, Empty<Bytes>>;

/// One upstream's HTTP/2 client (cheap to clone; the pool inside is shared).
#[derive(Clone)]
pub struct H2Client {
    client: Client<BackendConnector, H2Body>,
    scheme: &'static str,
}

impl std::fmt::Debug for H2Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Client").field("scheme", &self.scheme).finish()
    }
}

impl H2Client {
    /// The client for an upstream with this protocol and its TLS settings (built once per upstream,
    /// see `upstream_tls.rs`); `None` for HTTP/1.1.
    pub fn new(
        protocol: Protocol,
        tls: Option<Arc<BackendTls>>,
        connect: Duration,
    ) -> Result<Option<H2Client>, TlsError> {
        let tls = match (protocol, tls) {
            (Protocol::Http1, _) => return Ok(None),
            (Protocol::H2c, _) => None,
            (Protocol::H2, Some(t)) => Some(t),
            (Protocol::H2, None) => {
                return Err(TlsError::File {
                    path: "[upstream.tls]".into(),
                    why: "protocol = \"h2\" needs [upstream.tls] with ca or insecure_skip_verify = true"
                        .into(),
                });
            }
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let client =
            Client::builder(TokioExecutor::new()).http2_only(true).build(BackendConnector::new(tls, connect));
        Ok(Some(H2Client { client, scheme }))
    }
}

/// Send a request to a backend of an HTTP/2 upstream, retrying on another backend under the same rules
/// as the HTTP/1.1 path (see `attempts.rs`).
pub(crate) async fn forward(
    h2: &H2Client,
    req: Request<ClientBody>,
    (client, upstream, state, key, metrics, request_id): crate::proxy::Routed<'_>,
    explain: bool,
    tally: &mut Tally,
) -> Response<ProxyBody> {
    let (mut parts, body) = req.into_parts();
    crate::proxy::add_forwarding_headers(&mut parts.headers, client);
    let pq = parts.uri.path_and_query().map_or("/", |pq| pq.as_str()).to_string();
    let has_body = !http_body::Body::is_end_stream(&body);
    let replayable = is_idempotent_without_body(&parts.method, has_body);
    // The body waits here until an attempt takes it; one that failed before sending gives it back.
    let mut body = has_body.then_some(body);
    let timeouts = upstream.config.timeouts;
    upstream.budget.deposit();
    let deadline = Instant::now() + timeouts.request;
    let mut ctx = Attempts::new(upstream, state, metrics, explain, replayable).tallied(tally);
    loop {
        let picked = match ctx.next(key, request_id) {
            Ok(picked) => picked,
            Err(answer) => return *answer,
        };
        let addr = ctx.addr(picked.index);
        let Ok(uri) = Uri::try_from(format!("{}://{addr}{pq}", h2.scheme)) else {
            drop(picked);
            return ctx.error(StatusCode::BAD_GATEWAY, format!("backend {addr}: invalid URI\n"), request_id);
        };
        // hyper's client consumes the request, so an attempt that may be followed by another gets its
        // own copy of the head; the last possible one takes the original.
        let home = Arc::new(Mutex::new(None));
        let sent_body: H2Body = match body.take() {
            Some(b) => Either::Left(Reclaimable { body: Some(b), home: Arc::clone(&home), touched: false }),
            None => Either::Right(Empty::new()),
        };
        let mut request = Request::new(sent_body);
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = uri;
        *request.headers_mut() =
            if ctx.can_retry() { parts.headers.clone() } else { std::mem::take(&mut parts.headers) };
        let per_attempt = Instant::now() + timeouts.response_headers;
        let (limit, which) = if deadline < per_attempt {
            (deadline, ("request", timeouts.request))
        } else {
            (per_attempt, ("response_headers", timeouts.response_headers))
        };
        let sent = tokio::time::timeout_at(limit, h2.client.request(request)).await;
        // An attempt that never touched the body left it in `home` (see `Reclaimable`).
        body = home.lock().unwrap_or_else(|p| p.into_inner()).take();
        let (kind, message, unsent) = match sent {
            Ok(Ok(response)) => match ctx.answered(&picked, response.status()) {
                Answered::Retry => continue,
                Answered::Deliver(_) => {
                    let (mut head, body) = response.into_parts();
                    crate::proxy::strip_hop_by_hop(&mut head.headers);
                    head.version = http::Version::HTTP_11;
                    if !head.headers.contains_key("x-request-id") {
                        head.headers
                            .insert(http::HeaderName::from_static("x-request-id"), request_id.clone());
                    }
                    ctx.explain_headers(&mut head.headers);
                    return Response::from_parts(head, ProxyBody::streamed(body, picked.guard));
                }
            },
            Ok(Err(e)) => {
                let why = std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
                // A connect error (refused, timed out, TLS handshake) means the request never left;
                // with a body, only if the body came back untouched.
                let unsent = e.is_connect() && (body.is_some() || !has_body);
                let kind = if e.is_connect() { FailureKind::Connect } else { FailureKind::Broken };
                (kind, why, unsent)
            }
            Err(_) => {
                let took = humantime_serde::re::humantime::format_duration(which.1);
                (FailureKind::Timeout, format!("{} timeout ({took})", which.0), false)
            }
        };
        if let Some(answer) = ctx.failed(picked, kind, &message, unsent, request_id) {
            return answer;
        }
    }
}

/// The client's request body on its way to an HTTP/2 backend, given back if the attempt ends before
/// hyper ever read from it.
///
/// hyper's client takes the request by value and does not return it when the connection cannot be
/// made, so a request with a body could not go to another backend after a refused connection,
/// though not a byte of it was sent. This wrapper is dropped with the failed request, and when it was
/// never polled it puts the body back where the retry loop finds it. (A lock taken once per attempt,
/// not per chunk: the body is polled directly.)
#[derive(Debug)]
pub struct Reclaimable {
    body: Option<ClientBody>,
    home: Arc<Mutex<Option<ClientBody>>>,
    touched: bool,
}

impl http_body::Body for Reclaimable {
    type Data = Bytes;
    type Error = <ClientBody as http_body::Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        this.touched = true;
        match this.body.as_mut() {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.as_ref().map_or_else(|| http_body::SizeHint::with_exact(0), http_body::Body::size_hint)
    }
}

impl Drop for Reclaimable {
    fn drop(&mut self) {
        if !self.touched
            && let Some(body) = self.body.take()
        {
            *self.home.lock().unwrap_or_else(|p| p.into_inner()) = Some(body);
        }
    }
}
