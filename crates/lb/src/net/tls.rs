//! TLS termination: certificates, SNI and ALPN on the listeners in `server.listen_tls`.
//!
//! # What terminating TLS means
//!
//! The client's TLS session ends at the proxy: `lb` holds the certificate and private key, decrypts,
//! routes and balances the plain request as usual, and talks to the backends on its own connections.
//! That is what lets a balancer look at the path, headers and cookies at all; the price is that the
//! proxy must be trusted with the keys. (The alternative, TCP pass-through, balances encrypted bytes
//! it cannot read.)
//!
//! # Several sites on one address: SNI
//!
//! A client names the site it wants in the TLS handshake (Server Name Indication, RFC 6066), before any
//! HTTP is sent. Each `[[server.tls]]` entry lists the `names` its certificate is for (`*.example.com`
//! matches one label); the resolver here picks the entry whose names match, and the **first** entry
//! for a client that sends no name or one nobody lists (nginx's `default_server`). Matching is
//! case-insensitive, as DNS names are.
//!
//! # New certificates without a restart
//!
//! Certificates expire, so they are replaced far more often than a proxy is restarted. The resolver
//! rustls asks for a certificate ([`Certificates`]) holds the loaded set behind an `ArcSwap` and reads
//! it once per handshake: a reload loads and checks the new files first ([`CertSet::load`]; a missing
//! or mismatched key refuses the whole reload), then swaps the set in one store. Handshakes from then
//! on present the new certificates; connections already open keep the one they were set up with (a
//! certificate is only used during the handshake). This is what `nginx -s reload` gives its users, and
//! what Envoy's SDS does for a listener, without a new listening socket.
//!
//! # Expiry
//!
//! A certificate that expires unnoticed takes the site down for every client at the same second. So
//! loading a set also reads each leaf certificate's `notAfter` ([`CertExpiry`]); the metrics show it as
//! `lb_tls_certificate_expiry_seconds{name=...}`, replaced on every reload, and an alert fires when it
//! comes too close (`monitoring/alerts.yml`).
//!
//! # HTTP/2 or HTTP/1.1: ALPN
//!
//! In the same handshake the client lists the protocols it speaks (Application-Layer Protocol
//! Negotiation, RFC 7301) and the server picks one. `lb` offers `h2` first, then `http/1.1`; the
//! accept loop then serves the connection with hyper's HTTP/2 or HTTP/1 server accordingly.
//!
//! # Choices
//!
//! rustls rather than OpenSSL: memory-safe, no system library to match, and its `ring` crypto
//! provider builds with a C compiler alone (no cmake, no assembler), which is what this machine has.
//! TLS 1.2 and 1.3 with rustls's safe defaults; no client certificates.
//!
//! The same in nginx: `listen 443 ssl http2; ssl_certificate ...; ssl_certificate_key ...;` per
//! `server_name`. HAProxy: `bind :443 ssl crt /etc/haproxy/certs/ alpn h2,http/1.1` (a directory of
//! PEM files, picked by SNI).

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};

use crate::config::CertConfig;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds nothing usable.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// rustls refused the configuration.
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

impl TlsError {
    /// TLS listeners but no certificate to present.
    pub fn no_certificate() -> TlsError {
        TlsError::File { path: "[[server.tls]]".into(), why: "no certificate configured".into() }
    }
}

/// Picks a certificate by the client's SNI name; the first is the default.
#[derive(Debug, Default)]
struct SniResolver {
    certs: Vec<(Vec<String>, Arc<CertifiedKey>)>,
}

impl SniResolver {
    fn pick(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let matching = name.and_then(|n| {
            self.certs.iter().find(|(names, _)| names.iter().any(|pattern| name_matches(pattern, n)))
        });
        matching.or_else(|| self.certs.first()).map(|(_, key)| Arc::clone(key))
    }
}

/// When one `[[server.tls]]` certificate stops being valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertExpiry {
    /// The entry's first SNI name, or its certificate file when it lists no name.
    pub name: String,
    /// The leaf certificate's `notAfter`, in seconds since the Unix epoch.
    pub not_after: i64,
}

/// A set of certificates loaded from `[[server.tls]]` and checked (each key matches its certificate),
/// ready to be put in force with [`Certificates::replace`].
#[derive(Debug, Default)]
pub struct CertSet {
    resolver: SniResolver,
    /// One per certificate, in the order of the file.
    expiry: Vec<CertExpiry>,
}

impl CertSet {
    /// Read and check every certificate and key. An empty list gives an empty set, which fails every
    /// handshake; the config check refuses `listen_tls` without a certificate, so no client meets it.
    pub fn load(certs: &[CertConfig]) -> Result<CertSet, TlsError> {
        let provider = ring::default_provider();
        let mut set = CertSet::default();
        for c in certs {
            let bad =
                |path: &Path, why: &str| TlsError::File { path: path.display().to_string(), why: why.into() };
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read_pem(&c.cert)?)
                .collect::<Result<_, _>>()
                .map_err(|e| bad(&c.cert, &e.to_string()))?;
            let Some(leaf) = chain.first() else {
                return Err(bad(&c.cert, "no certificate (expected PEM \"BEGIN CERTIFICATE\")"));
            };
            let not_after = not_after(leaf).map_err(|why| bad(&c.cert, &why))?;
            let name = c.names.first().cloned().unwrap_or_else(|| c.cert.display().to_string());
            set.expiry.push(CertExpiry { name, not_after });
            let key =
                PrivateKeyDer::from_pem_slice(&read_pem(&c.key)?).map_err(|e| bad(&c.key, &e.to_string()))?;
            let signing =
                provider.key_provider.load_private_key(key).map_err(|e| bad(&c.key, &e.to_string()))?;
            let certified = CertifiedKey::new(chain, signing);
            certified
                .keys_match()
                .map_err(|e| bad(&c.key, &format!("does not match {}: {e}", c.cert.display())))?;
            set.resolver.certs.push((c.names.clone(), Arc::new(certified)));
        }
        Ok(set)
    }

    /// How many certificates it holds.
    pub fn len(&self) -> usize {
        self.resolver.certs.len()
    }

    /// True when it holds none.
    pub fn is_empty(&self) -> bool {
        self.resolver.certs.is_empty()
    }

    /// When each certificate expires, in the order of `[[server.tls]]`.
    pub fn expiry(&self) -> &[CertExpiry] {
        &self.expiry
    }
}

/// The `notAfter` of a DER certificate as Unix seconds. rustls reads a certificate only during a
/// handshake, so this is also the first time the bytes are parsed as X.509: a file that is PEM but not
/// a certificate is refused here, at load, instead of at every handshake.
fn not_after(leaf: &CertificateDer<'_>) -> Result<i64, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    Ok(cert.validity().not_after.timestamp())
}

/// The certificates in force: rustls's resolver for every TLS listener, swapped whole by a reload.
///
/// One `ArcSwap` load per handshake (not per request): cheap next to the handshake's own crypto, and
/// no lock, so a reload never waits for handshakes nor they for it.
#[derive(Debug)]
pub struct Certificates {
    current: ArcSwap<SniResolver>,
}

impl Certificates {
    /// Start with `set` in force.
    pub fn new(set: CertSet) -> Arc<Self> {
        Arc::new(Certificates { current: ArcSwap::from_pointee(set.resolver) })
    }

    /// Put `set` in force for the handshakes that start from now on.
    pub fn replace(&self, set: CertSet) {
        self.current.store(Arc::new(set.resolver));
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load().pick(hello.server_name())
    }
}

/// Does `name` match `pattern` (`a.example.com`, or `*.example.com` for exactly one more label)?
pub fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(suffix)),
        None => pattern.eq_ignore_ascii_case(name),
    }
}

fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File { path: path.display().to_string(), why: e.to_string() })
}

/// The acceptor for `certs` (at least one), offering h2 and http/1.1; its certificates are fixed.
pub fn acceptor(certs: &[CertConfig]) -> Result<TlsAcceptor, TlsError> {
    let set = CertSet::load(certs)?;
    if set.is_empty() {
        return Err(TlsError::no_certificate());
    }
    terminator(Certificates::new(set))
}

/// The acceptor every TLS listener shares: certificates from `certs` (which a reload replaces), ALPN
/// offering h2 then http/1.1.
pub fn terminator(certs: Arc<Certificates>) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_wildcards() {
        assert!(name_matches("lb.test", "LB.test"));
        assert!(name_matches("*.lb.test", "api.lb.test"));
        assert!(!name_matches("*.lb.test", "lb.test"), "a wildcard needs a label");
        assert!(!name_matches("*.lb.test", "a.b.lb.test"), "exactly one label");
        assert!(!name_matches("lb.test", "other.test"));
    }

    fn generated(dir: &Path, name: &str) -> CertConfig {
        let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap_or_else(|e| panic!("{e}"));
        let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
        std::fs::write(&cert, ck.cert.pem()).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap_or_else(|e| panic!("{e}"));
        CertConfig { cert, key, names: vec![name.to_string()] }
    }

    #[test]
    fn sni_picks_by_name_and_falls_back_to_the_first() {
        let dir = std::env::temp_dir().join(format!("lb-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let (a, b) = (generated(&dir, "a.test"), generated(&dir, "b.test"));
        assert!(acceptor(&[a.clone(), b.clone()]).is_ok());
        let provider = ring::default_provider();
        let load = |c: &CertConfig| {
            let chain =
                CertificateDer::pem_file_iter(&c.cert).unwrap_or_else(|e| panic!("{e}")).flatten().collect();
            let key = PrivateKeyDer::from_pem_file(&c.key).unwrap_or_else(|e| panic!("{e}"));
            let signing = provider.key_provider.load_private_key(key).unwrap_or_else(|e| panic!("{e}"));
            Arc::new(CertifiedKey::new(chain, signing))
        };
        let r = SniResolver { certs: vec![(a.names.clone(), load(&a)), (b.names.clone(), load(&b))] };
        let leaf = |k: Option<Arc<CertifiedKey>>| k.map(|k| k.cert[0].clone());
        assert_eq!(leaf(r.pick(Some("b.test"))), Some(r.certs[1].1.cert[0].clone()));
        assert_eq!(leaf(r.pick(Some("other.test"))), Some(r.certs[0].1.cert[0].clone()), "default");
        assert_eq!(leaf(r.pick(None)), Some(r.certs[0].1.cert[0].clone()), "no SNI");
        // A key that belongs to another certificate is refused up front.
        let mixed = CertConfig { key: b.key.clone(), ..a.clone() };
        assert!(acceptor(&[mixed]).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn expiry_is_each_leaf_not_after_named_by_its_first_name() {
        let certs = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/certs");
        let entry = |file: &str, names: &[&str]| CertConfig {
            cert: certs.join(format!("{file}.pem")),
            key: certs.join(format!("{file}.key")),
            names: names.iter().map(|n| n.to_string()).collect(),
        };
        let set = CertSet::load(&[
            entry("a.lb.test", &["a.lb.test", "*.a.lb.test"]),
            entry("backend.lb.test", &["backend.lb.test"]),
            entry("b.lb.test", &[]),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        // `openssl x509 -enddate -noout -in FILE` prints notAfter=Nov 23 17:20:56 2036 GMT for a and b
        // and notAfter=Nov 23 18:53:16 2036 GMT for backend; `date -d '...' +%s` gives these seconds.
        let b_file = certs.join("b.lb.test.pem").display().to_string();
        let got: Vec<(&str, i64)> = set.expiry().iter().map(|e| (e.name.as_str(), e.not_after)).collect();
        assert_eq!(
            got,
            [
                ("a.lb.test", 2_111_073_656),
                ("backend.lb.test", 2_111_079_196),
                (b_file.as_str(), 2_111_073_656)
            ]
        );
        // PEM that holds no X.509 certificate is refused at load, naming the file.
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let bad = CertConfig { cert: junk, ..entry("a.lb.test", &["a.lb.test"]) };
        let Err(err) = CertSet::load(&[bad]) else { panic!("junk loaded as a certificate") };
        assert!(err.to_string().contains("junk.pem: not an X.509 certificate"), "{err}");
    }

    #[test]
    fn a_replaced_set_answers_the_next_handshake() {
        let dir = std::env::temp_dir().join(format!("lb-tls-replace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let (a, b) = (generated(&dir, "a.test"), generated(&dir, "b.test"));
        let load = |c: &CertConfig| CertSet::load(std::slice::from_ref(c)).unwrap_or_else(|e| panic!("{e}"));
        let pem_der = |c: &CertConfig| {
            CertificateDer::from_pem_file(&c.cert).unwrap_or_else(|e| panic!("{e}")).to_vec()
        };
        let store = Certificates::new(load(&a));
        let leaf = || store.current.load().pick(Some("b.test")).map(|k| k.cert[0].to_vec());
        assert_eq!(leaf(), Some(pem_der(&a)), "a is the only, hence the default");
        store.replace(load(&b));
        assert_eq!(leaf(), Some(pem_der(&b)));
        // A set with a missing key is refused while loading, before it could reach the store.
        let missing = CertConfig { key: dir.join("missing.key"), ..a.clone() };
        let Err(err) = CertSet::load(&[missing]) else { panic!("a missing key was loaded") };
        let err = err.to_string();
        assert!(err.contains("missing.key"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
