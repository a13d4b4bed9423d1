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
//! `[upstream.tls]` sets how `lb` checks the backend's certificate: against the CA certificates in
//! `ca` (a PEM file), or not at all when `insecure_skip_verify = true` is written out (only for a
//! backend on a trusted network with a self-signed certificate; the name says what it costs).
//! `server_name` overrides the name sent in SNI and checked in the certificate (by default the
//! backend's host).
//!
//! # What this path does not do (yet)
//!
//! It picks one backend and sends once: no retry on another backend (the HTTP/1.1 path's retry loop
//! and budget are not shared with it), and failures are counted in the metrics and fed to outlier
//! detection but do not trigger a second attempt. HTTP/1.1 over TLS to backends is not available: the
//! HTTP/1.1 client speaks plain TCP.
//!
//! The same elsewhere: nginx `grpc_pass grpcs://...` (nginx's `proxy_pass` speaks only HTTP/1.x to
//! backends); HAProxy `server s1 10.0.0.1:443 ssl alpn h2 ca-file ca.pem` or `proto h2`; Envoy
//! `http2_protocol_options` on the cluster with a `transport_socket` for TLS.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{Either, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use lb_algorithms::now_nanos;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::crypto::{CryptoProvider, ring, verify_tls12_signature, verify_tls13_signature};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{self, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::metrics::{FailureKind, Metrics};
use crate::outlier::{self, Outcome};
use crate::proxy::{ClientBody, ClientInfo, ProxyBody, error_response};
use crate::tls::TlsError;
use crate::upstream::{Upstream, UpstreamState};

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

/// `[upstream.tls]`: how to check a backend's certificate.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// PEM file of the CA certificates to trust (relative paths: to the config file).
    pub ca: Option<std::path::PathBuf>,
    /// Accept any certificate. Only when written out, and only for a trusted network.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// The name to send in SNI and check in the certificate (default: the backend's host).
    pub server_name: Option<String>,
}

/// The body sent to an HTTP/2 backend.
pub type H2Body = Either<ClientBody, Empty<Bytes>>;

/// One upstream's HTTP/2 client (cheap to clone; the pool inside is shared).
#[derive(Clone)]
pub struct H2Client {
    client: Client<Connector, H2Body>,
    scheme: &'static str,
}

impl std::fmt::Debug for H2Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Client").field("scheme", &self.scheme).finish()
    }
}

impl H2Client {
    /// The client for an upstream with this protocol and TLS settings; `None` for HTTP/1.1.
    pub fn new(
        protocol: Protocol,
        tls: Option<&UpstreamTls>,
        connect: Duration,
    ) -> Result<Option<H2Client>, TlsError> {
        let tls = match (protocol, tls) {
            (Protocol::Http1, _) => return Ok(None),
            (Protocol::H2c, _) => None,
            (Protocol::H2, Some(t)) => Some(connector(t)?),
            (Protocol::H2, None) => {
                return Err(TlsError::File {
                    path: "[upstream.tls]".into(),
                    why: "protocol = \"h2\" needs [upstream.tls] with ca or insecure_skip_verify = true"
                        .into(),
                });
            }
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let client = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(Connector { tls: tls.map(Arc::new), connect });
        Ok(Some(H2Client { client, scheme }))
    }
}

fn connector(t: &UpstreamTls) -> Result<(TlsConnector, Option<ServerName<'static>>), TlsError> {
    let provider = Arc::new(ring::default_provider());
    let builder =
        ClientConfig::builder_with_provider(Arc::clone(&provider)).with_safe_default_protocol_versions()?;
    let mut config = if t.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth()
    } else {
        let Some(ca) = &t.ca else {
            return Err(TlsError::File {
                path: "[upstream.tls]".into(),
                why: "give ca = \"file.pem\", or insecure_skip_verify = true".into(),
            });
        };
        let bad = |why: String| TlsError::File { path: ca.display().to_string(), why };
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad(e.to_string()))? {
            roots.add(cert.map_err(|e| bad(e.to_string()))?).map_err(|e| bad(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(bad("no CA certificate in it".into()));
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let name =
        match &t.server_name {
            Some(n) => Some(ServerName::try_from(n.clone()).map_err(|e| TlsError::File {
                path: "[upstream.tls] server_name".into(),
                why: e.to_string(),
            })?),
            None => None,
        };
    Ok((TlsConnector::from(Arc::new(config)), name))
}

/// Checks signatures (so the handshake is still a real handshake) but not the certificate chain or
/// name: what `insecure_skip_verify = true` asks for.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Opens TCP (and TLS) connections for the HTTP/2 client.
#[derive(Clone)]
struct Connector {
    tls: Option<Arc<(TlsConnector, Option<ServerName<'static>>)>>,
    connect: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<H2Io>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (tls, connect) = (self.tls.clone(), self.connect);
        Box::pin(async move {
            let authority = uri.authority().ok_or("no host in the backend URI")?.clone();
            let port = authority.port_u16().ok_or("no port in the backend address")?;
            let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_string();
            let tcp = tokio::time::timeout(connect, TcpStream::connect((host.as_str(), port)))
                .await
                .map_err(|_| format!("connect timeout ({connect:?})"))??;
            tcp.set_nodelay(true)?;
            let Some(tls) = tls else { return Ok(TokioIo::new(H2Io::Plain(tcp))) };
            let (connector, name) = &*tls;
            let name = match name {
                Some(n) => n.clone(),
                None => ServerName::try_from(host)?,
            };
            let stream = connector.connect(name, tcp).await?;
            Ok(TokioIo::new(H2Io::Tls(Box::new(stream))))
        })
    }
}

/// A backend connection, plain or TLS.
#[derive(Debug)]
enum H2Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for H2Io {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for H2Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            H2Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            H2Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for H2Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            H2Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            H2Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            H2Io::Plain(s) => Pin::new(s).poll_flush(cx),
            H2Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            H2Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            H2Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
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
