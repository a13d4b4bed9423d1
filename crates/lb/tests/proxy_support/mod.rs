//! Shared helpers for the `proxy_*` end-to-end tests: toy backends and the proxy, all in-process on
//! 127.0.0.1 with port 0, so tests never collide and never touch the network.

#![allow(dead_code)] // each test file uses a different subset

pub mod dns;
pub mod load;

use std::time::Duration;

use lb::config::{AdminConfig, Config, UpstreamConfig};
use lb::{Running, start};
use lb_algorithms::{Algorithm, BackendSpec};
use toy_backend::{Backend, Knobs, start_many};

/// Every test request gives up after this, so a bug shows up as a failure, not a hung test.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// `n` well-behaved toy backends named backend-1..backend-n.
pub async fn backends(n: usize) -> Vec<Backend> {
    match start_many(n, Knobs::default()).await {
        Ok(b) => b,
        Err(e) => panic!("cannot start toy backends: {e}"),
    }
}

/// One upstream called "app" over these backends with these weights, one worker, port 0, explain on.
pub fn config(algorithm: Algorithm, backends: &[Backend], weights: &[u32]) -> Config {
    let specs = backends
        .iter()
        .enumerate()
        .map(|(i, b)| BackendSpec::weighted(b.addr().to_string(), weights.get(i).copied().unwrap_or(1)))
        .collect();
    let mut config = Config::default();
    config.server.listen = vec!["127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"))];
    config.server.workers = 1;
    config.server.shutdown_grace = Duration::from_secs(2);
    config.admin = Some(AdminConfig { explain: true, ..AdminConfig::default() });
    config.upstreams.push(UpstreamConfig::new("app", algorithm, specs));
    config
}

/// Start the proxy or fail the test.
pub async fn proxy(config: Config) -> Running {
    match start(config).await {
        Ok(r) => r,
        Err(e) => panic!("cannot start lb: {e}"),
    }
}

/// A keep-alive client with a timeout and no proxy from the environment.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(CLIENT_TIMEOUT).no_proxy().build().unwrap_or_else(|e| panic!("{e}"))
}

/// GET a URL, returning the status and the body as text.
pub async fn get(client: &reqwest::Client, url: &str) -> (u16, String) {
    get_with(client, url, &[]).await
}

/// GET with extra headers.
pub async fn get_with(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = client.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_else(|e| format!("<body error: {e}>"));
            (status, body)
        }
        Err(e) => (0, format!("<request error: {e}>")),
    }
}

/// Which backend answered `GET /` (`backend-N`), by index 0..n.
pub fn index_of(name: &str) -> Option<usize> {
    name.trim().strip_prefix("backend-")?.parse::<usize>().ok()?.checked_sub(1)
}

/// An address that refuses connections, and the socket that keeps it so: bound but not listening, so
/// a connect gets a reset at once, and the port cannot be handed to another test's server meanwhile
/// (binding port 0 and closing it again would free the port for anyone, e.g. a parallel test's proxy,
/// which would then receive this test's "refused" connections). Keep the socket alive for the test.
pub fn refusing_port() -> (std::net::SocketAddr, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap_or_else(|e| panic!("{e}"));
    socket.bind(([127, 0, 0, 1], 0).into()).unwrap_or_else(|e| panic!("{e}"));
    let addr = socket.local_addr().unwrap_or_else(|e| panic!("{e}"));
    (addr, socket)
}

/// The real `lb` binary, started with `args`, its stdout read line by line; killed when dropped, so a
/// failing test leaves no process behind.
pub struct LbProcess {
    pub child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Drop for LbProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LbProcess {
    pub fn start<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> LbProcess {
        use std::io::BufRead as _;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lb"))
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run lb: {e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LbProcess { child, lines }
    }

    /// The next stdout line that starts with `prefix`, whole (waits at most `within`).
    pub fn wait_line(&self, prefix: &str, within: Duration) -> String {
        let deadline = std::time::Instant::now() + within;
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(e) => panic!("no line starting with {prefix:?}: {e}"),
            }
        }
    }
}

/// `lb` in front of one backend at `backend` (a raw-socket one, made by the test): upstream "app",
/// round robin, one worker, a one-second shutdown grace, and `tune` applied to the config.
pub async fn proxy_to(backend: std::net::SocketAddr, tune: impl FnOnce(&mut Config)) -> Running {
    let mut config = Config::default();
    config.server.listen = vec![std::net::SocketAddr::from(([127, 0, 0, 1], 0))];
    config.server.workers = 1;
    config.server.shutdown_grace = Duration::from_secs(1);
    let specs = vec![BackendSpec::new(backend.to_string())];
    config.upstreams.push(UpstreamConfig::new("app", Algorithm::RoundRobin, specs));
    tune(&mut config);
    match start(config).await {
        Ok(r) => r,
        Err(e) => panic!("cannot start lb: {e}"),
    }
}
