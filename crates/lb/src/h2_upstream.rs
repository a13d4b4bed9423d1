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
//! The same elsewhere: nginx `grpc_pass grpcs://...` (nginx's `proxy_pass` speaks only HTTP/1.x to
//! backends); HAProxy `server s1 10.0.0.1:443 ssl alpn h2 ca-file ca.pem` or `proto h2`; Envoy
//! `http2_protocol_options` on the cluster with a `transport_socket` for TLS.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{Either, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use lb_algorithms::now_nanos;
use serde::Deserialize;

use crate::metrics::{FailureKind, Metrics};
use crate::outlier::{self, Outcome};
use crate::proxy::{ClientBody, ClientInfo, ProxyBody, error_response};
use crate::tls::TlsError;
use crate::upstream::{Upstream, UpstreamState};
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
pub type H2Body = Either<ClientBody, Empty<Bytes>>;

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

/// Send one request to a backend of an HTTP/2 upstream (see the module docs: one attempt, no retry).
#[allow(clippy::too_many_arguments)]
pub async fn forward(
    h2: &H2Client,
    req: Request<ClientBody>,
    client: &ClientInfo,
    upstream: &Upstream,
    state: &UpstreamState,
    key: Option<u64>,
    metrics: &Metrics,
    request_id: &HeaderValue,
) -> Response<ProxyBody> {
    let now = now_nanos();
    let index = match crate::proxy::pick_once(state, upstream, key, now, metrics, request_id) {
        Ok(index) => index,
        Err(response) => return *response,
    };
    let (Some(backend), Some(stats), Some(guard)) =
        (state.set.get(index), state.stats.get(index), state.set.start(index, now))
    else {
        return error_response(
            StatusCode::BAD_GATEWAY,
            "internal error: no such backend\n".into(),
            request_id,
        );
    };
    let addr = backend.addr().to_string();
    let (mut parts, body) = req.into_parts();
    crate::proxy::add_forwarding_headers(&mut parts.headers, client);
    let pq = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    parts.uri = match Uri::try_from(format!("{}://{addr}{pq}", h2.scheme)) {
        Ok(u) => u,
        Err(e) => {
            return error_response(StatusCode::BAD_GATEWAY, format!("backend {addr}: {e}\n"), request_id);
        }
    };
    parts.version = http::Version::HTTP_11;
    let body: H2Body =
        if http_body::Body::is_end_stream(&body) { Either::Right(Empty::new()) } else { Either::Left(body) };
    let observe = |outcome: Outcome| {
        if let Some(config) = &upstream.config.outlier_detection {
            outlier::observe(config, upstream, state, index, outcome, now_nanos());
        }
    };
    let timeouts = upstream.config.timeouts;
    let sent =
        tokio::time::timeout(timeouts.response_headers, h2.client.request(Request::from_parts(parts, body)))
            .await;
    let response = match sent {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            metrics.record_failure(stats, FailureKind::Broken);
            observe(Outcome::Failure);
            let why = std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
            return error_response(StatusCode::BAD_GATEWAY, format!("backend {addr}: {why}\n"), request_id);
        }
        Err(_) => {
            metrics.record_failure(stats, FailureKind::Timeout);
            observe(Outcome::Failure);
            let msg = format!("backend {addr}: response_headers timeout\n");
            return error_response(StatusCode::GATEWAY_TIMEOUT, msg, request_id);
        }
    };
    let status = response.status().as_u16();
    let done = now_nanos();
    guard.record_latency(done, state.set.options().ewma_decay);
    metrics.record_response(upstream, stats, status, Duration::from_nanos(done.saturating_sub(now)));
    observe(if status >= 500 { Outcome::Failure } else { Outcome::Success });
    let (mut parts, body) = response.into_parts();
    crate::proxy::strip_hop_by_hop(&mut parts.headers);
    parts.version = http::Version::HTTP_11;
    if !parts.headers.contains_key("x-request-id") {
        parts.headers.insert(http::HeaderName::from_static("x-request-id"), request_id.clone());
    }
    Response::from_parts(parts, ProxyBody::streamed(body, guard))
}
