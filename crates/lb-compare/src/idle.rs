//! The memory figure of `lb-compare balancers`: a thousand idle client connections held open through a
//! balancer while its peak resident memory is read, each spoken to in the benchmark's protocol first, so
//! the balancer holds what a real idle client costs it (TLS state and buffers, HTTP/2 connection state).
//!
//! | protocol | each connection, before it idles |
//! |---|---|
//! | `http1` | one `GET /` answered `HTTP/1.1 200` |
//! | `https` | a TLS 1.3 handshake (ALPN http/1.1), then the same request |
//! | `h2` | a TLS 1.3 handshake (ALPN h2), then the HTTP/2 preface and SETTINGS, answered by the server's SETTINGS |
//! | `h2c` | the HTTP/2 preface and SETTINGS in clear text, answered by the server's SETTINGS |
//!
//! The TLS client verifies the balancers' certificate, `crates/lb/config/certs/backend.lb.test.pem`,
//! against the repository's test CA (`ca.lb.test.pem`) under the name `backend.lb.test`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use crate::balancers::{BenchError, Protocol};

/// The HTTP/2 connection preface, then an empty SETTINGS frame (length 0, type 4, no flags, stream 0).
const H2_HELLO: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// How each idle connection starts.
pub struct Client {
    /// TLS, when the protocol has it.
    tls: Option<TlsConnector>,
    /// HTTP/2 (preface and SETTINGS) rather than an HTTP/1.1 request.
    h2: bool,
}

impl Client {
    /// The client of `protocol`, with the test CA of the repository at `root` for TLS.
    pub fn new(protocol: Protocol, root: &Path) -> Result<Client, BenchError> {
        let tls = if protocol.tls() {
            let alpn: &[u8] = if protocol == Protocol::H2 { b"h2" } else { b"http/1.1" };
            Some(connector(&root.join("crates/lb/config/certs/ca.lb.test.pem"), alpn)?)
        } else {
            None
        };
        Ok(Client { tls, h2: matches!(protocol, Protocol::H2 | Protocol::H2c) })
    }

    /// Opens `n` connections to `port`, greets the balancer on each, and keeps those that were
    /// answered open while `measure` runs. Returns its value and how many were open.
    pub async fn hold<T>(
        &self,
        port: u16,
        n: usize,
        measure: impl FnOnce() -> T,
    ) -> Result<(T, usize), BenchError> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut conns: Vec<Box<dyn Send>> = Vec::with_capacity(n);
        let mut set = tokio::task::JoinSet::new();
        // Opened 50 at a time: a thousand SYNs (and handshakes) at once can overflow the listen backlog
        // of a busy balancer.
        for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
            for _ in chunk {
                let (tls, h2) = (self.tls.clone(), self.h2);
                set.spawn(async move { open(addr, tls, h2).await });
            }
            while let Some(r) = set.join_next().await {
                if let Ok(Some(c)) = r {
                    conns.push(c);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let open = conns.len();
        let value = measure();
        drop(conns);
        Ok((value, open))
    }
}

/// A TLS client that trusts the test CA at `ca` and offers `alpn`.
fn connector(ca: &Path, alpn: &[u8]) -> Result<TlsConnector, BenchError> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|e| BenchError::Unexpected(format!("{}: {e}", ca.display())))?;
    for cert in certs {
        let cert = cert.map_err(|e| BenchError::Unexpected(format!("{}: {e}", ca.display())))?;
        roots.add(cert).map_err(|e| BenchError::Unexpected(format!("{}: {e}", ca.display())))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| BenchError::Unexpected(format!("TLS client: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// One connection, greeted; `None` when anything failed or the answer was not the expected one.
async fn open(addr: SocketAddr, tls: Option<TlsConnector>, h2: bool) -> Option<Box<dyn Send>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    match tls {
        None => {
            let mut s = tcp;
            greet(&mut s, addr.port(), h2).await.then(|| Box::new(s) as Box<dyn Send>)
        }
        Some(connector) => {
            let name = ServerName::try_from("backend.lb.test").ok()?;
            let handshake = connector.connect(name, tcp);
            let mut s = tokio::time::timeout(Duration::from_secs(5), handshake).await.ok()?.ok()?;
            greet(&mut s, addr.port(), h2).await.then(|| Box::new(s) as Box<dyn Send>)
        }
    }
}

/// An HTTP/1.1 `GET /` answered 200, or the HTTP/2 preface answered by a SETTINGS frame.
async fn greet<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, port: u16, h2: bool) -> bool {
    let request = format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let hello = if h2 { H2_HELLO } else { request.as_bytes() };
    if s.write_all(hello).await.is_err() || s.flush().await.is_err() {
        return false;
    }
    let mut buf = [0u8; 1024];
    let Ok(Ok(got)) = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await else {
        return false;
    };
    let answer = buf.get(..got).unwrap_or_default();
    if h2 {
        // A frame header is 9 bytes; its fourth is the type, 4 for SETTINGS.
        answer.len() >= 9 && answer[3] == 4
    } else {
        answer.starts_with(b"HTTP/1.1 200")
    }
}
