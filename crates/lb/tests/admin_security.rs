//! The admin API closed by default: the attacks it used to let through, each sent as raw bytes to a
//! real admin API on 127.0.0.1 (port 0), and `lb check` refusing an admin API open to the network.
//!
//! - a bearer token, when set, is required on every request (401 without it or with a wrong one);
//! - without a token, a foreign `Host` is refused (421: DNS rebinding);
//! - a foreign `Origin` is refused (403: CSRF), and the classic CSRF, a `text/plain` POST from a
//!   page on another site, adds no backend;
//! - a write with a body that is not `application/json` is refused (415), `curl -d`'s form type too;
//! - a non-loopback `admin.listen` without a token fails `lb check` at its line, and `lb::start`;
//! - a reload cannot take the token away.
//!
//! Run with `cargo test -p lb --test admin_security`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lb::Running;
use lb::config::{AdminConfig, AdminToken, Config, UpstreamConfig};
use lb_algorithms::{Algorithm, BackendSpec};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const LB: &str = env!("CARGO_BIN_EXE_lb");
const TOKEN: &str = "t0ken-for-tests";

/// One upstream "app" with one backend that is never contacted (no health check, no traffic).
fn config(admin: AdminConfig) -> Config {
    let mut config = Config::default();
    config.server.listen = vec![SocketAddr::from(([127, 0, 0, 1], 0))];
    config.server.workers = 1;
    config.server.shutdown_grace = Duration::from_secs(1);
    config.admin = Some(admin);
    let backends = vec![BackendSpec::new("127.0.0.1:9")];
    config.upstreams.push(UpstreamConfig::new("app", Algorithm::RoundRobin, backends));
    config
}

fn loopback_admin(token: Option<&str>) -> AdminConfig {
    let token = token.map(|t| AdminToken::new(t).unwrap_or_else(|e| panic!("{e}")));
    AdminConfig { token, ..AdminConfig::on(SocketAddr::from(([127, 0, 0, 1], 0))) }
}

async fn start(admin: AdminConfig) -> (Running, SocketAddr) {
    let running = lb::start(config(admin)).await.unwrap_or_else(|e| panic!("cannot start lb: {e}"));
    let admin = running.admin.unwrap_or_else(|| panic!("admin API not bound"));
    (running, admin)
}

/// An answer: status, header block (lowercase), body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// Send `method path` with `fields` (each `Name: value`) and `body` to `addr` as raw HTTP/1.1, with
/// `Connection: close`, and read the whole answer (at most 10 s). `Host` is only what `fields` say.
async fn send(addr: SocketAddr, method: &str, path: &str, fields: &[&str], body: &str) -> Answer {
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    for f in fields {
        request += &format!("{f}\r\n");
    }
    if !body.is_empty() {
        request += &format!("Content-Length: {}\r\n", body.len());
    }
    request += "\r\n";
    request += body;
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer in 10 s"))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status =
        head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad answer {answer:?}"));
    Answer { status, head: head.to_ascii_lowercase(), body: body.to_string() }
}

fn backend_count(running: &Running) -> usize {
    running.upstreams.all()[0].load().set.backends().len()
}

const ADD: &str = r#"{"addr":"127.0.0.1:9003"}"#;

#[tokio::test]
async fn a_token_when_set_is_required_on_every_request() {
    let (running, admin) = start(loopback_admin(Some(TOKEN))).await;
    let host = format!("Host: {admin}");
    let bearer = format!("Authorization: Bearer {TOKEN}");

    let a = send(admin, "GET", "/backends", &[&host], "").await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(a.head.contains("www-authenticate: bearer realm=\"lb admin\""), "{}", a.head);
    assert!(a.body.contains("Authorization: Bearer <token>"), "{}", a.body);
    for wrong in [
        "Authorization: Bearer t0ken-for-test",
        "Authorization: Bearer t0ken-for-tests2",
        "Authorization: Basic t0ken-for-tests",
    ] {
        assert_eq!(send(admin, "GET", "/backends", &[&host, wrong], "").await.status, 401, "{wrong}");
    }
    let json = "Content-Type: application/json";
    let a = send(admin, "POST", "/upstreams/app/backends", &[&host, json], ADD).await;
    assert_eq!(a.status, 401);
    assert_eq!(backend_count(&running), 1, "an unauthenticated POST added a backend");

    let a = send(admin, "GET", "/backends", &[&host, &bearer], "").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("\"addr\":\"127.0.0.1:9\""), "{}", a.body);
    let a = send(admin, "POST", "/upstreams/app/backends", &[&host, &bearer, json], ADD).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(backend_count(&running), 2);
    running.shutdown().await;
}

#[tokio::test]
async fn without_a_token_a_foreign_host_is_refused() {
    let (running, admin) = start(loopback_admin(None)).await;
    let port = admin.port();
    for own in [format!("127.0.0.1:{port}"), format!("localhost:{port}"), format!("[::1]:{port}")] {
        let a = send(admin, "GET", "/backends", &[&format!("Host: {own}")], "").await;
        assert_eq!(a.status, 200, "Host: {own}: {}", a.body);
    }
    // A page on evil.example whose name now resolves to 127.0.0.1 (DNS rebinding) sends its own name.
    for foreign in [format!("Host: evil.example:{port}"), format!("Host: 127.0.0.1:{}", port.wrapping_add(1))]
    {
        let a = send(admin, "GET", "/backends", &[&foreign], "").await;
        assert_eq!(a.status, 421, "{foreign}: {}", a.body);
        assert!(a.body.contains("DNS-rebinding page"), "{}", a.body);
    }
    assert_eq!(send(admin, "GET", "/backends", &[], "").await.status, 421, "no Host at all");
    running.shutdown().await;
}

#[tokio::test]
async fn a_cross_origin_text_plain_post_adds_nothing() {
    let (running, admin) = start(loopback_admin(None)).await;
    let host = format!("Host: {admin}");
    // What `fetch(url, {method: "POST", mode: "no-cors", body: JSON.stringify(...)})` on a page at
    // http://evil.example sends: a "simple" request, so the browser asks no one first.
    let evil = ["Origin: http://evil.example", "Content-Type: text/plain;charset=UTF-8"];
    let a = send(admin, "POST", "/upstreams/app/backends", &[&host, evil[0], evil[1]], ADD).await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(a.body.contains("cross-origin requests are refused"), "{}", a.body);
    // Even declaring JSON, a foreign origin gets nothing; nor does it read the table.
    let json = "Content-Type: application/json";
    assert_eq!(
        send(admin, "POST", "/upstreams/app/backends", &[&host, evil[0], json], ADD).await.status,
        403
    );
    assert_eq!(send(admin, "GET", "/backends", &[&host, evil[0]], "").await.status, 403);
    assert_eq!(backend_count(&running), 1, "a cross-origin POST added a backend");

    // The admin's own origin (its own page, or a tool that sets Origin) is served.
    let own = format!("Origin: http://{admin}");
    let a = send(admin, "POST", "/upstreams/app/backends", &[&host, &own, json], ADD).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(backend_count(&running), 2);
    running.shutdown().await;
}

#[tokio::test]
async fn a_write_with_a_body_that_is_not_json_is_refused_with_415() {
    let (running, admin) = start(loopback_admin(None)).await;
    let host = format!("Host: {admin}");
    let path = "/upstreams/app/backends";
    // `curl -d` sends the form type; a browser whose request carried no Origin would send text/plain.
    for bad in [
        "Content-Type: text/plain",
        "Content-Type: application/x-www-form-urlencoded",
        "Content-Type: multipart/form-data; boundary=x",
    ] {
        let a = send(admin, "POST", path, &[&host, bad], ADD).await;
        assert_eq!(a.status, 415, "{bad}: {}", a.body);
        assert!(a.body.contains("JSON bodies only"), "{}", a.body);
    }
    assert_eq!(send(admin, "POST", path, &[&host], ADD).await.status, 415, "a body with no Content-Type");
    assert_eq!(backend_count(&running), 1);

    // Body-less writes (drain, undrain, DELETE, reload) need no Content-Type: `curl -X POST` stays easy.
    let drain = "/upstreams/app/backends/127.0.0.1:9/drain";
    assert_eq!(send(admin, "POST", drain, &[&host], "").await.status, 200);
    let a = send(admin, "POST", path, &[&host, "Content-Type: application/json; charset=utf-8"], ADD).await;
    assert_eq!(a.status, 201, "{}", a.body);
    running.shutdown().await;
}

#[tokio::test]
async fn start_refuses_an_admin_api_beyond_loopback_without_a_token() {
    // Quick mode's `--admin 0.0.0.0:PORT` without `--admin-token` ends here.
    let open = AdminConfig::on(SocketAddr::from(([0, 0, 0, 0], 0)));
    let e = lb::start(config(open.clone())).await.err().unwrap_or_else(|| panic!("started anyway"));
    assert!(e.to_string().contains("is not a loopback address and there is no token"), "{e}");
    // With a token it starts; the Host rule is then off (any name reaches it), the token is the check.
    let token = AdminToken::new(TOKEN).unwrap_or_else(|e| panic!("{e}"));
    let running = lb::start(config(AdminConfig { token: Some(token), ..open }))
        .await
        .unwrap_or_else(|e| panic!("with a token: {e}"));
    let port = running.admin.unwrap_or_else(|| panic!("no admin")).port();
    let admin = SocketAddr::from(([127, 0, 0, 1], port));
    let fields = ["Host: lb-1.internal", &format!("Authorization: Bearer {TOKEN}")];
    assert_eq!(send(admin, "GET", "/backends", &fields, "").await.status, 200);
    running.shutdown().await;
}

/// `lb check --config lb.toml` in `dir`: (exit code, stdout, stderr).
fn check(dir: &Path, text: &str) -> (i32, String, String) {
    std::fs::write(dir.join("lb.toml"), text).unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(LB)
        .args(["check", "--config", "lb.toml"])
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

const UPSTREAM: &str =
    "\n[[upstream]]\nname = \"app\"\nalgorithm = \"round-robin\"\nbackends = [\"127.0.0.1:9001\"]\n";

#[test]
fn check_refuses_a_non_loopback_admin_without_a_token_naming_the_line() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // Line 2 is `listen = ...`; its value starts at column 10.
    let open = format!("[admin]\nlisten = \"0.0.0.0:9900\"\nexplain = true\n{UPSTREAM}");
    let (code, _, stderr) = check(dir.path(), &open);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.starts_with(
            "lb.toml:2:10: admin.listen = \"0.0.0.0:9900\" is not a loopback address and there is no token"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("set [admin] token_file"), "{stderr}");

    let with_token = open.replace("explain = true", &format!("token = \"{TOKEN}\""));
    let (code, stdout, stderr) = check(dir.path(), &with_token);
    assert_eq!((code, stderr.as_str()), (0, ""), "{stdout}");
    assert!(stdout.starts_with("lb.toml: ok: "), "{stdout}");

    // A token file, relative to the config file; the trailing newline is not part of the token.
    std::fs::write(dir.path().join("admin.token"), format!("{TOKEN}\n")).unwrap_or_else(|e| panic!("{e}"));
    let with_file = open.replace("explain = true", "token_file = \"admin.token\"");
    let (code, _, stderr) = check(dir.path(), &with_file);
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = check(dir.path(), &with_file.replace("admin.token", "missing.token"));
    assert_eq!(code, 1);
    assert!(stderr.starts_with("lb.toml:3:14: admin.token_file "), "{stderr}");
    assert!(stderr.contains("missing.token: No such file or directory"), "{stderr}");
    let (code, _, stderr) = check(dir.path(), &with_token.replace(TOKEN, "has space"));
    assert_eq!(code, 1);
    assert!(stderr.starts_with("lb.toml:3:9: the admin token must be visible ASCII"), "{stderr}");

    // Loopback without a token stays allowed.
    let (code, _, stderr) = check(dir.path(), &open.replace("0.0.0.0", "127.0.0.1"));
    assert_eq!(code, 0, "{stderr}");
}

#[tokio::test]
async fn a_reload_cannot_take_the_token_away() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("lb.toml");
    let file = |admin: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n[admin]\nlisten = \"127.0.0.1:0\"\n{admin}{UPSTREAM}"
        )
    };
    std::fs::write(&path, file(&format!("token = \"{TOKEN}\"\n"))).unwrap_or_else(|e| panic!("{e}"));
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let running = lb::start(config).await.unwrap_or_else(|e| panic!("{e}"));
    let admin = running.admin.unwrap_or_else(|| panic!("no admin"));
    let host = format!("Host: {admin}");

    std::fs::write(&path, file("")).unwrap_or_else(|e| panic!("{e}"));
    let report = running.reload().unwrap_or_else(|e| panic!("{e}"));
    assert!(report.warnings.iter().any(|w| w.starts_with("admin.token: ")), "{:?}", report.warnings);
    assert_eq!(send(admin, "GET", "/backends", &[&host], "").await.status, 401);
    let bearer = format!("Authorization: Bearer {TOKEN}");
    assert_eq!(send(admin, "GET", "/backends", &[&host, &bearer], "").await.status, 200);
    running.shutdown().await;
}

/// Kills the child when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_demo_with_a_token_prints_curl_lines_that_carry_it() {
    use std::io::BufRead as _;
    let child = Command::new(LB)
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--workers", "1", "--admin-token", TOKEN])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut child = Child(child);
    let stdout = child.0.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    // The banner ends with the Ctrl-C line; the blocking read runs off the test's runtime, bounded.
    let banner = tokio::task::spawn_blocking(move || {
        let mut banner = String::new();
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            banner += &line;
            banner.push('\n');
            if line.starts_with("Ctrl-C") {
                break;
            }
        }
        banner
    });
    let banner = tokio::time::timeout(Duration::from_secs(30), banner)
        .await
        .unwrap_or_else(|_| panic!("no banner in 30 s"))
        .unwrap_or_else(|e| panic!("{e}"));
    let line = banner
        .lines()
        .find(|l| l.contains("/backends"))
        .unwrap_or_else(|| panic!("no /backends line in the banner:\n{banner}"));
    let prefix = format!("curl -H 'Authorization: Bearer {TOKEN}' http://");
    let addr = line.trim().strip_prefix(&prefix).and_then(|rest| rest.strip_suffix("/backends"));
    let admin: SocketAddr = addr
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("expected `{prefix}ADDR/backends`, got {line:?}"));
    let host = format!("Host: {admin}");
    assert_eq!(send(admin, "GET", "/backends", &[&host], "").await.status, 401);
    let bearer = format!("Authorization: Bearer {TOKEN}");
    assert_eq!(send(admin, "GET", "/backends", &[&host, &bearer], "").await.status, 200);
}

/// Run `lb ARGS` that should exit at once: (exit code, stderr). Killed after 10 s (exit code `None`),
/// so a regression that starts serving instead fails the test rather than hanging it.
fn run_briefly(args: &[&str]) -> (Option<i32>, String) {
    let child = Command::new(LB)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut child = Child(child);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let code = loop {
        match child.0.try_wait() {
            Ok(Some(status)) => break status.code(),
            Ok(None) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => break None,
        }
    };
    let _ = child.0.kill();
    let mut stderr = String::new();
    if let Some(mut pipe) = child.0.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    (code, stderr)
}

#[test]
fn admin_token_with_a_config_file_is_refused_not_ignored() {
    let (code, stderr) = run_briefly(&["--config", "lb.toml", "--admin-token", TOKEN]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("--admin-token is for quick and demo mode; with --config, set [admin] token_file"),
        "{stderr}"
    );
}

#[test]
fn admin_token_in_quick_mode_needs_an_admin_address() {
    let (code, stderr) =
        run_briefly(&["--listen", "127.0.0.1:0", "--backend", "127.0.0.1:9", "--admin-token", TOKEN]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("quick mode has none without --admin ADDR"), "{stderr}");
}
