//! `lb_tls_certificate_expiry_seconds`: each `[[server.tls]]` certificate's notAfter on `/metrics`,
//! from the start and after every reload, with the committed test certificates whose notAfter is known.
//!
//! Run with `cargo nextest run -p lb --test tls_expiry`.

mod proxy_support;

use std::path::{Path, PathBuf};

use lb::Config;
use proxy_support::{backends, client, get};

/// `openssl x509 -enddate -noout -in crates/lb/config/certs/a.lb.test.pem`: Nov 23 17:20:56 2036 GMT,
/// which `date -d 'Nov 23 17:20:56 2036 GMT' +%s` turns into these seconds.
const A_NOT_AFTER: i64 = 2_111_073_656;
/// backend.lb.test.pem: Nov 23 18:53:16 2036 GMT.
const BACKEND_NOT_AFTER: i64 = 2_111_079_196;

fn certs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/certs")
}

/// A config with an admin port, one TLS listener, the certificates `files` (each for its own name),
/// and one upstream over `backend`.
fn write_config(path: &Path, files: &[&str], backend: &str) {
    let mut text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[upstream]]\nname = \"app\"\nalgorithm = \"round-robin\"\nbackends = [\"{backend}\"]\n\n\
         [server]\nworkers = 1\nlisten = \"127.0.0.1:0\"\nlisten_tls = \"127.0.0.1:0\"\n\
         shutdown_timeout = \"2s\"\n"
    );
    for f in files {
        let dir = certs();
        text.push_str(&format!(
            "\n[[server.tls]]\ncert = \"{}\"\nkey = \"{}\"\nnames = [\"{f}\"]\n",
            dir.join(format!("{f}.pem")).display(),
            dir.join(format!("{f}.key")).display()
        ));
    }
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// The `lb_tls_certificate_expiry_seconds` lines of a scrape.
async fn expiry_lines(lb: &lb::Running) -> Vec<String> {
    let admin = lb.admin.unwrap_or_else(|| panic!("no admin"));
    let (status, text) = get(&client(), &format!("http://{admin}/metrics")).await;
    assert_eq!(status, 200, "{text}");
    text.lines().filter(|l| l.starts_with("lb_tls_certificate_expiry_seconds")).map(String::from).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_is_scraped_from_the_start_and_replaced_by_a_reload() {
    let backend = &backends(1).await[0];
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("lb.toml");
    write_config(&path, &["a.lb.test", "backend.lb.test"], &backend.addr().to_string());
    let lb = lb::start(Config::load(&path).unwrap_or_else(|e| panic!("{e}")))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(
        expiry_lines(&lb).await,
        [
            format!("lb_tls_certificate_expiry_seconds{{name=\"a.lb.test\"}} {A_NOT_AFTER}"),
            format!("lb_tls_certificate_expiry_seconds{{name=\"backend.lb.test\"}} {BACKEND_NOT_AFTER}"),
        ]
    );

    // Renewal as an operator does it: the file now names only one certificate; a reload reads it.
    write_config(&path, &["backend.lb.test"], &backend.addr().to_string());
    let report = lb.reload().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.certificates, 1);
    assert_eq!(
        expiry_lines(&lb).await,
        [format!("lb_tls_certificate_expiry_seconds{{name=\"backend.lb.test\"}} {BACKEND_NOT_AFTER}")]
    );

    // A reload that fails (a key that does not exist) leaves the gauge as it was.
    let broken =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}")).replace(".key\"", ".missing\"");
    std::fs::write(&path, broken).unwrap_or_else(|e| panic!("{e}"));
    assert!(lb.reload().is_err(), "a reload with a missing key succeeded");
    assert_eq!(
        expiry_lines(&lb).await,
        [format!("lb_tls_certificate_expiry_seconds{{name=\"backend.lb.test\"}} {BACKEND_NOT_AFTER}")]
    );
    lb.shutdown().await;
}
