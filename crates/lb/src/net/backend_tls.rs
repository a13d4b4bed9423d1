//! TLS to backends: `[upstream.tls]`, for HTTP/1.1 (the pooled client in `h1.rs`), HTTP/2
//! (`protocol = "h2"`), WebSocket tunnels and active health checks alike.
//!
//! # Why a proxy encrypts towards its backends too
//!
//! Terminating TLS at the proxy (`tls.rs`) protects the client's leg. The leg from the proxy to the
//! backend crosses a network too: another rack, another zone, a cloud provider's fabric. Where that
//! network is not trusted (or a compliance rule says "encrypted everywhere"), the proxy opens TLS to the
//! backend as a client would: it checks the backend's certificate against a CA it trusts and the name
//! it expects, then sends the request inside.
//!
//! # What is checked
//!
//! `[upstream.tls]` says how: `ca` is a PEM file of the CA certificates to trust (an internal CA, or
//! the backend's own self-signed certificate if that is not marked as a CA: rustls refuses a CA
//! certificate as a server's own, and `openssl req -x509` marks it so by default; the test
//! certificates in `config/certs/` show both kinds), or `insecure_skip_verify = true`, written out, accepts
//! any certificate (the handshake still happens, so the traffic is encrypted, but anyone on the path
//! can pretend to be the backend: a trusted network only). The name sent in SNI and checked in the
//! certificate is the backend's host (`10.0.0.5`, `api.internal`), or `server_name` for all backends of
//! the upstream: backends are usually listed by IP while their certificate names a service.
//!
//! # What it costs, and where it is paid
//!
//! A TLS handshake is a round trip more than TCP and some public-key arithmetic, so it is what the
//! keep-alive pool saves most: a pooled connection pays it once for thousands of requests. The
//! `rustls::ClientConfig` (root store, verifier, ALPN) is built once per upstream when the
//! configuration is loaded or reloaded, and shared by every connection (an `Arc`); sharing it also
//! shares rustls's session cache, so a new connection to a backend seen before resumes its session
//! instead of repeating the full handshake. The handshake runs inside the upstream's connect timeout:
//! a backend that accepts TCP but never answers the handshake fails like one that does not answer.
//!
//! A certificate that does not check out is a **connect failure**: 502 with the reason
//! (`invalid peer certificate: UnknownIssuer`), counted against the backend by outlier detection, and
//! retried on another backend like a refused connection (not a byte of the request was sent).
//!
//! Plain connections pay nothing for this: [`BackendStream`] is an enum, and its plain variant is the
//! `TcpStream` itself (no box, no virtual call); only the TLS variant is boxed, so a pooled plain
//! connection stays as small as before.
//!
//! # The same elsewhere
//!
//! nginx `proxy_pass https://app; proxy_ssl_verify on; proxy_ssl_trusted_certificate ca.pem;
//! proxy_ssl_name app.internal; proxy_ssl_server_name on;` (nginx verifies nothing unless told to; `lb`
//! verifies unless told not to). HAProxy `server s1 10.0.0.5:443 ssl verify required ca-file ca.pem
//! sni str(app.internal)`. Envoy: a cluster `transport_socket` with an `UpstreamTlsContext`
//! (`validation_context.trusted_ca`, `sni`).

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::crypto::{CryptoProvider, ring, verify_tls12_signature, verify_tls13_signature};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{self, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::UpstreamTls;
use crate::net::tls::TlsError;

/// One upstream's TLS client settings, built once (config load or reload) and shared by all its
/// connections.
pub struct BackendTls {
    connector: TlsConnector,
    server_name: Option<ServerName<'static>>,
    /// Which pooled connections these settings may reuse (see [`BackendTls::pool_id`]).
    pool_id: u64,
}

impl std::fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTls")
            .field("server_name", &self.server_name)
            .field("alpn", &self.connector.config().alpn_protocols)
            .finish()
    }
}

impl BackendTls {
    /// Build the client settings: the CA file is read now, so a missing or empty one is an error at
    /// load time rather than on the first request. `alpn` is what to offer (`http/1.1` or `h2`).
    pub fn new(t: &UpstreamTls, alpn: &[u8]) -> Result<BackendTls, TlsError> {
        let provider = Arc::new(ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?;
        // What a pooled connection's verification depended on: the same settings (and CA bytes) may
        // reuse it, other settings to the same address may not. Hashed, so a reload with unchanged
        // settings keeps the pool warm.
        let mut id = std::hash::DefaultHasher::new();
        (alpn, t.insecure_skip_verify, &t.server_name).hash(&mut id);
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
            let pem = std::fs::read(ca).map_err(|e| bad(e.to_string()))?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| bad(e.to_string()))?;
                cert.as_ref().hash(&mut id);
                roots.add(cert).map_err(|e| bad(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(bad("no CA certificate in it (expected PEM \"BEGIN CERTIFICATE\")".into()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        config.alpn_protocols = vec![alpn.to_vec()];
        let server_name = match &t.server_name {
            Some(n) => Some(ServerName::try_from(n.clone()).map_err(|e| TlsError::File {
                path: "[upstream.tls] server_name".into(),
                why: format!("{n:?}: {e}"),
            })?),
            None => None,
        };
        // 0 is the plain connections' id.
        let pool_id = id.finish().max(1);
        Ok(BackendTls { connector: TlsConnector::from(Arc::new(config)), server_name, pool_id })
    }

    /// The id pooled connections made with these settings carry (plain ones carry 0). Two upstreams
    /// with the same backend address share a pool list, and this keeps a TLS connection from being
    /// handed to a plain upstream, a plain one to a TLS upstream, or a connection verified against one
    /// CA to an upstream that trusts another.
    pub fn pool_id(&self) -> u64 {
        self.pool_id
    }

    /// The handshake on a connected socket; `host` is the backend's host (for SNI, unless
    /// `server_name` is set).
    async fn handshake(&self, host: &str, tcp: TcpStream) -> Result<TlsStream<TcpStream>, String> {
        let name = match &self.server_name {
            Some(n) => n.clone(),
            None => ServerName::try_from(host.to_string())
                .map_err(|e| format!("{host:?} is not a name TLS can check ({e}); set server_name"))?,
        };
        let shown = match &name {
            ServerName::DnsName(d) => d.as_ref().to_string(),
            ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
            other => format!("{other:?}"),
        };
        self.connector.connect(name, tcp).await.map_err(|e| format!("TLS handshake with {shown}: {e}"))
    }
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

/// Why a new backend connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP connect or DNS failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The connect timeout passed (TCP and TLS handshake together).
    #[error("connect timeout ({0:?})")]
    Timeout(Duration),
    /// The TLS handshake failed: the certificate did not check out, or the backend does not speak TLS.
    #[error("{0}")]
    Tls(String),
}

/// Open a connection to `addr` (`ip:port`, or `host:port` resolved now) with `TCP_NODELAY` (a proxy
/// writes whole requests and wants them on the wire now, not after Nagle's 40 ms), then the TLS
/// handshake when `tls` is set; all within `timeout`.
pub async fn connect(
    addr: &str,
    timeout: Duration,
    tls: Option<&BackendTls>,
) -> Result<BackendStream, ConnectError> {
    let open = async {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let Some(tls) = tls else { return Ok(BackendStream::Plain(tcp)) };
        let host =
            addr.rsplit_once(':').map_or(addr, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
        let stream = tls.handshake(host, tcp).await.map_err(ConnectError::Tls)?;
        Ok(BackendStream::Tls(Box::new(stream)))
    };
    match tokio::time::timeout(timeout, open).await {
        Ok(result) => result,
        Err(_) => Err(ConnectError::Timeout(timeout)),
    }
}

/// A connection to a backend: plain TCP, or TLS over TCP.
#[derive(Debug)]
pub enum BackendStream {
    /// Plain TCP: the common case, no indirection.
    Plain(TcpStream),
    /// TLS. Boxed: a rustls session is over a kilobyte, and the plain variant should not carry that.
    Tls(Box<TlsStream<TcpStream>>),
}

impl BackendStream {
    /// The backend's address, if the socket still knows it.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        match self {
            BackendStream::Plain(s) => s.peer_addr(),
            BackendStream::Tls(s) => s.get_ref().0.peer_addr(),
        }
    }

    /// Wait until the socket underneath is readable (tests: a FIN arrived).
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            BackendStream::Plain(s) => s.readable().await,
            BackendStream::Tls(s) => s.get_ref().0.readable().await,
        }
    }
}

impl Drop for BackendStream {
    /// A TLS connection says goodbye before it closes: a `close_notify` alert, so the backend can tell
    /// a deliberate close (an idle connection swept from the pool, a broken exchange abandoned) from a
    /// truncation, which many servers log as an error. Written only if the socket takes it at once: a
    /// drop cannot wait, and a lost goodbye costs a log line at worst.
    fn drop(&mut self) {
        if let BackendStream::Tls(tls) = self {
            let (tcp, session) = tls.get_mut();
            session.send_close_notify();
            let mut socket = NoWait(tcp);
            while session.wants_write() {
                match session.write_tls(&mut socket) {
                    Ok(n) if n > 0 => {}
                    _ => break,
                }
            }
        }
    }
}

/// `io::Write` over a tokio socket that never blocks: what the socket does not take now is dropped.
struct NoWait<'a>(&'a TcpStream);

impl io::Write for NoWait<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsyncRead for BackendStream {
    #[inline]
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendStream {
    #[inline]
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            BackendStream::Plain(s) => s.is_write_vectored(),
            BackendStream::Tls(s) => s.is_write_vectored(),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_flush(cx),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Connection for BackendStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// Opens backend connections (TCP, and TLS when the upstream has `[upstream.tls]`) for the clients
/// built on hyper-util: the HTTP/2 upstream client and the active health checks. The URI's scheme is
/// not looked at; the upstream's settings decide.
#[derive(Debug, Clone)]
pub struct BackendConnector {
    tls: Option<Arc<BackendTls>>,
    connect: Duration,
}

impl BackendConnector {
    /// A connector with these TLS settings (none: plain TCP) and connect timeout.
    pub fn new(tls: Option<Arc<BackendTls>>, connect: Duration) -> Self {
        BackendConnector { tls, connect }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<Uri> for BackendConnector {
    type Response = TokioIo<BackendStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (tls, timeout) = (self.tls.clone(), self.connect);
        Box::pin(async move {
            let authority = uri.authority().ok_or("no host in the backend URI")?;
            if authority.port_u16().is_none() {
                return Err("no port in the backend address".into());
            }
            let stream = connect(authority.as_str(), timeout, tls.as_deref()).await?;
            Ok(TokioIo::new(stream))
        })
    }
}
