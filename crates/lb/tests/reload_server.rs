//! Reloading more than the upstreams: certificates, `[server.limits]`, the `[admin]` switches and the
//! listening addresses, each checked from the client's side after a reload through the admin API.
//!
//! Run with `cargo nextest run -p lb --test reload_server`.
//!
//! Each test starts `lb` in-process on a config file in a temp dir, rewrites the file, and posts
//! `/reload`. Certificates are made with rcgen; a client that accepts any certificate and reports the
//! one it was shown (reqwest's `tls_info`) tells which one `lb` presented.

mod proxy_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use lb::Config;
use proxy_support::{CLIENT_TIMEOUT, backends, client};
use toy_backend::Backend;

/// A config file: `server` is the body of `[server]` (workers, listen addresses, then `[server.limits]`
/// or `[[server.tls]]`), `admin` goes into `[admin]` after its `listen`; one round-robin upstream "app".
fn write_config(path: &Path, server: &str, admin: &str, backends: &[&Backend]) {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{}\"", b.addr())).collect();
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n{admin}\n\n\
         [[upstream]]\nname = \"app\"\nalgorithm = \"round-robin\"\nbackends = [{}]\n\n\
         [server]\nshutdown_timeout = \"2s\"\n{server}\n",
        list.join(", ")
    );
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

async fn start(path: &Path) -> lb::Running {
    let config = Config::load(path).unwrap_or_else(|e| panic!("{e}"));
    lb::start(config).await.unwrap_or_else(|e| panic!("{e}"))
}

/// `POST /reload`: the status and the JSON answer.
async fn reload(lb: &lb::Running) -> (u16, serde_json::Value) {
    let admin = lb.admin.unwrap_or_else(|| panic!("no admin"));
    let resp = client().post(format!("http://{admin}/reload")).send().await.unwrap_or_else(|e| panic!("{e}"));
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_else(|e| panic!("{e}")))
}

/// A free loopback port: bound, then let go. A config file cannot say "port 0 and tell me".
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A self-signed certificate for `lb.test` written to `name.pem` and `name.key`; returns its DER.
fn cert(dir: &Path, name: &str) -> Vec<u8> {
    let ck =
        rcgen::generate_simple_self_signed(vec!["lb.test".to_string()]).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join(format!("{name}.pem")), ck.cert.pem()).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join(format!("{name}.key")), ck.signing_key.serialize_pem())
        .unwrap_or_else(|e| panic!("{e}"));
    ck.cert.der().to_vec()
}

/// The certificate `lb` presents to a new TLS client for `lb.test` on `addr`. A new client each time:
/// a fresh handshake, no session resumed from an earlier one.
async fn presented(addr: SocketAddr) -> Vec<u8> {
    let client = reqwest::Client::builder()
        .timeout(CLIENT_TIMEOUT)
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .tls_info(true)
        .resolve("lb.test", addr)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let resp = client
        .get(format!("https://lb.test:{}/", addr.port()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(resp.status(), 200);
    let info = resp.extensions().get::<reqwest::tls::TlsInfo>().unwrap_or_else(|| panic!("no TLS info"));
    info.peer_certificate().unwrap_or_else(|| panic!("no peer certificate")).to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_puts_new_certificates_in_force_and_a_bad_key_changes_nothing() {
    let all = backends(1).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = (cert(dir.path(), "a"), cert(dir.path(), "b"));
    assert_ne!(a, b);
    let path = dir.path().join("lb.toml");
    let tls = |name: &str| {
        format!(
            "workers = 1\nlisten = \"127.0.0.1:0\"\nlisten_tls = \"127.0.0.1:0\"\n\n\
             [[server.tls]]\ncert = \"{name}.pem\"\nkey = \"{name}.key\"\nnames = [\"lb.test\"]\n"
        )
    };
    write_config(&path, &tls("a"), "", &[&all[0]]);
    let lb = start(&path).await;
    let addr = lb.listen_tls[0];
    assert_eq!(presented(addr).await, a);

    // A connection set up with A before the reload.
    let before = reqwest::Client::builder()
        .timeout(CLIENT_TIMEOUT)
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .tls_info(true)
        .resolve("lb.test", addr)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let url = format!("https://lb.test:{}/", addr.port());
    let first = before.get(&url).send().await.unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(first.status(), 200);
    let _ = first.text().await;

    write_config(&path, &tls("b"), "", &[&all[0]]);
    let (status, report) = reload(&lb).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["certificates"], 1, "{report}");
    assert_eq!(report["warnings"], serde_json::json!([]), "{report}");
    assert_eq!(presented(addr).await, b, "a new handshake gets the new certificate");
    // The connection opened before the reload is still open and still carries A (reqwest reuses it).
    let again = before.get(&url).send().await.unwrap_or_else(|e| panic!("{e:?}"));
    let info = again.extensions().get::<reqwest::tls::TlsInfo>().and_then(|i| i.peer_certificate());
    assert_eq!(info.map(<[u8]>::to_vec), Some(a.clone()), "an open connection keeps its certificate");

    // A missing key refuses the whole reload, with the file named; B serves on.
    let broken = tls("b").replace("key = \"b.key\"", "key = \"missing.key\"");
    write_config(&path, &broken, "", &[&all[0]]);
    let (status, report) = reload(&lb).await;
    assert_eq!(status, 400, "{report}");
    let error = report["error"].as_str().unwrap_or_default();
    assert!(error.contains("missing.key"), "{error}");
    assert_eq!(presented(addr).await, b, "the old certificates keep serving");

    // Renewal in place: new files at the same paths, the file itself unchanged. A reload reads them.
    let c = cert(dir.path(), "b");
    write_config(&path, &tls("b"), "", &[&all[0]]);
    let (status, report) = reload(&lb).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(presented(addr).await, c, "files are read again even when the config did not change");

    // The plain address moves to listen_tls: same sockets (binding it again would fail while they are
    // open), now speaking TLS.
    let plain = lb.listen[0];
    let moved = tls("b").replace(
        "listen = \"127.0.0.1:0\"\nlisten_tls = \"127.0.0.1:0\"",
        &format!("listen = []\nlisten_tls = [\"127.0.0.1:0\", \"{plain}\"]"),
    );
    write_config(&path, &moved, "", &[&all[0]]);
    let (status, report) = reload(&lb).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["listen_removed"], serde_json::json!([format!("http://{plain}")]), "{report}");
    assert_eq!(report["listen_added"], serde_json::json!([format!("https://{plain}")]), "{report}");
    assert_eq!(presented(plain).await, c);
    assert_eq!(lb.reloader.listening(), (vec![], vec![addr, plain]));
    lb.shutdown().await;
}

/// Send `request` on a new connection and return the status line's code (0: closed without one).
fn raw_status(addr: SocketAddr, request: &[u8]) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}"));
    s.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap_or_else(|e| panic!("{e}"));
    // The proxy may answer and close before reading all of an oversized head: ignore write errors.
    let _ = s.write_all(request);
    let mut head = [0u8; 12];
    let mut n = 0;
    while n < head.len() {
        match s.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    std::str::from_utf8(&head[..n]).ok().and_then(|h| h.get(9..12)).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_limits_and_switches_for_new_connections_and_requests() {
    let all = backends(1).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("lb.toml");
    write_config(&path, "workers = 1\nlisten = \"127.0.0.1:0\"\n", "explain = false\n", &[&all[0]]);
    let lb = start(&path).await;
    let addr = lb.listen[0];
    // A 4 KiB header: well inside the default 16 KiB.
    let big = format!("GET / HTTP/1.1\r\nHost: lb.test\r\nX-Big: {}\r\n\r\n", "a".repeat(4096));
    assert_eq!(raw_status(addr, big.as_bytes()), 200);
    let explained = |c: reqwest::Client| async move {
        let resp = c.get(format!("http://{addr}/")).header("x-lb-explain", "1").send().await;
        let resp = resp.unwrap_or_else(|e| panic!("{e}"));
        resp.headers().get("x-lb-backend").map(|v| v.to_str().unwrap_or_default().to_string())
    };
    assert_eq!(explained(client()).await, None, "explain is off");

    // One connection open across the reload, idle between requests.
    let mut held = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}"));
    held.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap_or_else(|e| panic!("{e}"));
    held.write_all(b"GET / HTTP/1.1\r\nHost: lb.test\r\n\r\n").unwrap_or_else(|e| panic!("{e}"));
    let mut buf = [0u8; 512];
    let n = held.read(&mut buf).unwrap_or_else(|e| panic!("{e}"));
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));

    write_config(
        &path,
        "workers = 1\nlisten = \"127.0.0.1:0\"\n\n[server.limits]\nmax_header_bytes = 2048\nmax_connections = 1\n",
        "explain = true\n",
        &[&all[0]],
    );
    let (status, report) = reload(&lb).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["settings_changed"], serde_json::json!(["server.limits", "admin.explain"]), "{report}");
    assert_eq!(report["listen_added"], serde_json::json!([]), "`127.0.0.1:0` again is the same socket");

    // max_connections = 1 applies at once: the held connection is the one, so a new one is closed
    // at once (no status) and counted.
    let refused = lb.metrics.connections.refused();
    assert_eq!(raw_status(addr, big.as_bytes()), 0);
    assert_eq!(lb.metrics.connections.refused(), refused + 1);
    drop(held);
    // Closing it frees the place (the worker notices the close on its own schedule: poll, bounded).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while lb.metrics.connections.open() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the held connection was never counted closed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A new connection gets the new header limit: the same 4 KiB header is now too large.
    assert_eq!(raw_status(addr, big.as_bytes()), 431);
    // And new requests the new switch.
    assert_eq!(explained(client()).await, Some(all[0].addr().to_string()));
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_and_removes_listen_addresses_on_every_worker() {
    let all = backends(2).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("lb.toml");
    let (first, second) = (free_port(), free_port());
    // Two workers, so "every worker" is tested: each has its own socket on each address, and a worker
    // that missed one would leave its share of the connections unanswered.
    let rewrite = |ports: &[u16], backend: &Backend, workers: usize| {
        let list: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
        let server = format!("workers = {workers}\nlisten = [{}]\n", list.join(", "));
        write_config(&path, &server, "", &[backend]);
    };
    rewrite(&[first], &all[0], 2);
    let lb = start(&path).await;
    let on = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let get_all = |port: u16| async move {
        // New connections each time (a new client): spread over both workers' sockets.
        for _ in 0..16 {
            let (status, _) = proxy_support::get(&client(), &format!("http://{}/", on(port))).await;
            assert_eq!(status, 200, "port {port}");
        }
    };
    get_all(first).await;

    rewrite(&[first, second], &all[0], 2);
    let (status, report) = reload(&lb).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["listen_added"], serde_json::json!([format!("http://{}", on(second))]));
    assert_eq!(report["listen_removed"], serde_json::json!([]));
    assert_eq!(lb.reloader.listening().0, vec![on(first), on(second)]);
    get_all(second).await;
    get_all(first).await;

    // A keep-alive connection on the second address, open while it is removed.
    let mut held = TcpStream::connect(on(second)).unwrap_or_else(|e| panic!("{e}"));
    held.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap_or_else(|e| panic!("{e}"));
    let ask = |s: &mut TcpStream| {
        s.write_all(b"GET / HTTP/1.1\r\nHost: lb.test\r\n\r\n").unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap_or_else(|e| panic!("{e}"));
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    assert!(ask(&mut held).starts_with("HTTP/1.1 200"));

    rewrite(&[first], &all[0], 2);
    let (status, report) = reload(&lb).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["listen_removed"], serde_json::json!([format!("http://{}", on(second))]));
    // Closed on both workers by the time the reload answered: every connect is refused.
    for _ in 0..16 {
        let err = TcpStream::connect(on(second)).map(|_| ()).err();
        assert_eq!(err.map(|e| e.kind()), Some(std::io::ErrorKind::ConnectionRefused));
    }
    // The connection accepted before goes on.
    assert!(ask(&mut held).starts_with("HTTP/1.1 200"), "an open connection outlives its listener");
    get_all(first).await;

    // An address in use refuses the whole reload, the backend change in the same file included.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let taken_port = taken.local_addr().map(|a| a.port()).unwrap_or_else(|e| panic!("{e}"));
    rewrite(&[first, taken_port], &all[1], 2);
    let (status, report) = reload(&lb).await;
    assert_eq!(status, 400, "{report}");
    let error = report["error"].as_str().unwrap_or_default();
    assert!(error.starts_with(&format!("cannot listen on {}: ", on(taken_port))), "{error}");
    let (_, body) = proxy_support::get(&client(), &format!("http://{}/", on(first))).await;
    assert_eq!(body.trim(), "backend-1", "the old upstreams serve on");
    assert_eq!(lb.reloader.listening().0, vec![on(first)]);

    // Workers cannot change without a restart: the reload applies the rest and says so.
    rewrite(&[first], &all[1], 3);
    let (status, report) = reload(&lb).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report["warnings"],
        serde_json::json!(["server.workers: 3 in the file, 2 running: restart lb to apply it"])
    );
    let (_, body) = proxy_support::get(&client(), &format!("http://{}/", on(first))).await;
    assert_eq!(body.trim(), "backend-2", "the rest of the file is applied");
    drop(taken);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_the_shutdown_timeout_of_the_next_shutdown() {
    let all = backends(1).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("lb.toml");
    // write_config sets 2 s; a later line for the same key would be a TOML error, so edit the text.
    write_config(&path, "workers = 1\nlisten = \"127.0.0.1:0\"\n", "", &[&all[0]]);
    let lb = start(&path).await;
    let text = std::fs::read_to_string(&path).unwrap_or_default().replace("\"2s\"", "\"200ms\"");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    let (status, report) = reload(&lb).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["settings_changed"], serde_json::json!(["server.shutdown_timeout"]), "{report}");

    // A 3 s request in flight: the shutdown cuts it after 200 ms, not after the 2 s of the start.
    let url = format!("{}/delay/3000", lb.url());
    let slow = tokio::spawn(async move { client().get(url).send().await.map(|r| r.status().as_u16()) });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while all[0].requests() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the slow request never reached the backend");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = tokio::time::Instant::now();
    lb.shutdown().await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(1500),
        "shutdown took {took:?}"
    );
    let cut = slow.await.unwrap_or_else(|e| panic!("{e}"));
    assert!(cut.is_err(), "the slow request was cut, not answered: {cut:?}");
}
