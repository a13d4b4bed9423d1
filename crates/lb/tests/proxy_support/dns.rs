//! dnsmasq on a loopback port as a real DNS server for `[upstream.dns]` tests, its records changed at
//! run time, and toy backends on 127.0.0.11, 127.0.0.12, ... sharing one port, as replicas behind one
//! name do. Used by `dns_discovery.rs` and `multi_instance.rs`.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use toy_backend::{Backend, BackendConfig, Knobs, Latency};

/// Ports for dnsmasq and the backends: below the ephemeral range, apart from the other tests' blocks.
pub const PORTS: std::ops::Range<u16> = 14000..15000;

/// How long a test waits for a change to show (DNS refresh every 100 ms; a dead resolver takes a
/// query timeout of 2 s to notice). A bound on a hang, not a speed assertion.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// dnsmasq, or `None` after printing the skip line (a panic under `LB_REQUIRE_EXTERNAL=1`).
pub fn dnsmasq_program(test: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join("dnsmasq"))
        .find(|p| p.is_file());
    if found.is_none() {
        let line = format!("SKIPPED: {test} needs dnsmasq: apt-get install dnsmasq");
        assert!(std::env::var_os("LB_REQUIRE_EXTERNAL").is_none(), "{line} (LB_REQUIRE_EXTERNAL=1)");
        eprintln!("{line}");
    }
    found
}

/// A port free for UDP and TCP on 127.0.0.1 and on the backends' addresses, from a start that
/// differs per process and per call.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let span = PORTS.end - PORTS.start;
    let seed = (std::process::id() as u16).wrapping_mul(31);
    for _ in 0..span {
        let port = PORTS.start + seed.wrapping_add(NEXT.fetch_add(7, Ordering::Relaxed)) % span;
        let free = (1..=14u8).all(|last| {
            let ip = Ipv4Addr::new(127, 0, 0, if last <= 10 { 1 } else { last });
            TcpListener::bind((ip, port)).is_ok() && UdpSocket::bind((ip, port)).is_ok()
        });
        if free {
            return port;
        }
    }
    panic!("no free port in {PORTS:?}");
}

/// A running dnsmasq; dropping it kills it.
pub struct Dnsmasq {
    child: Child,
}

impl Dnsmasq {
    /// dnsmasq on `addr`, authoritative for `lb.test` (a name it has no record for is NXDOMAIN), with
    /// the hosts files of `dir` and these extra flags (`--srv-host=...`).
    pub fn start(program: &Path, addr: SocketAddr, dir: &Path, extra: &[String]) -> Dnsmasq {
        let child = Command::new(program)
            .args([
                "--no-daemon".to_string(),
                "--conf-file=/dev/null".to_string(),
                "--pid-file=".to_string(),
                format!("--port={}", addr.port()),
                format!("--listen-address={}", addr.ip()),
                "--bind-interfaces".to_string(),
                "--no-resolv".to_string(),
                "--no-hosts".to_string(),
                "--local=/lb.test/".to_string(),
                format!("--hostsdir={}", dir.display()),
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start dnsmasq: {e}"));
        let dns = Dnsmasq { child };
        // Ready when it accepts TCP on its port.
        let deadline = std::time::Instant::now() + PATIENCE;
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(std::time::Instant::now() < deadline, "dnsmasq did not start on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        dns
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A hosts directory dnsmasq can read (it drops root's privileges), holding one file, `app`.
pub fn hosts_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    set_mode(dir.path(), 0o755);
    dir
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap_or_else(|e| panic!("{e}"));
}

/// Replace the records: `app.lb.test` has exactly these addresses (the file `app`, written next to the
/// directory, then renamed in, so dnsmasq never reads half a file).
pub fn set_records(dir: &Path, ips: &[u8]) {
    let text: String = ips.iter().map(|last| format!("127.0.0.{last} app.lb.test\n")).collect();
    let file = dir.with_extension("app.tmp");
    std::fs::write(&file, text).unwrap_or_else(|e| panic!("{e}"));
    set_mode(&file, 0o644);
    std::fs::rename(&file, dir.join("app")).unwrap_or_else(|e| panic!("{e}"));
}

/// Toy backends named by the last byte of their address (`b11` on 127.0.0.11), all on `port`.
pub async fn backends(lasts: &[u8], port: u16, latency: Latency) -> Vec<Backend> {
    let mut all = Vec::new();
    for &last in lasts {
        let mut config = BackendConfig::new(format!("b{last}"));
        config.knobs = Knobs { latency, ..Knobs::default() };
        let addr = SocketAddr::from(([127, 0, 0, last], port));
        all.push(Backend::start(addr, config).await.unwrap_or_else(|e| panic!("backend on {addr}: {e}")));
    }
    all
}
