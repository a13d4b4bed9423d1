//! `lb-compare balancers`: the per-core benchmark (its method is in `docs/lessons/benchmarking-balancers.md`), over a direct connection, `lb`,
//! nginx, HAProxy and Envoy, with the same backends, the same load and the same placement.
//!
//! **Placement.** The backends and the load generator run on core 0 (`taskset -c 0`); each balancer runs
//! on core 1 with one worker (`lb` with `workers = 1`, nginx `worker_processes 1`, HAProxy `nbthread 1`,
//! Envoy `--concurrency 1`). Absolute numbers on a shared 2-core machine move from run to run; ratios
//! measured side by side in one run hold, so every balancer is measured in the same rounds, in
//! alternating order (forwards, backwards, forwards...), and the report gives medians with min-max.
//!
//! **Configs.** Each balancer runs its committed round-robin config (`nginx/round-robin.conf`,
//! `haproxy/round-robin.cfg`, `envoy/round-robin.yaml`, `crates/lb/config/lab.toml`), rendered by the lab
//! for loopback ports ([`lab::Prepared`]), then post-processed here in two places, each checked: lb's
//! `workers = 0` becomes `workers = 1`, and nginx's `worker_connections 1024` becomes 4096 (the memory
//! figure holds 1,000 client connections open, and each proxied request holds two). The committed
//! nginx and HAProxy files already say one worker, one thread; the lab gives Envoy `--concurrency 1`.
//! Pinning to core 1 happens right after start-up, with `taskset -a -p` on every process and thread of
//! the balancer (nginx's worker is a child of its master; Envoy starts through a wrapper script).
//!
//! **The load generator** is the `loadgen` binary with `--json`, a separate process pinned to core 0.
//! A thread of this process pinned to core 0 would work too, but a separate process keeps the
//! measurement clean: nothing of `lb-compare` (its runtime, the 1,000 idle connections, the tables) shares
//! a process with the load, and it is the same program a learner runs by hand.
//!
//! **Figures**, per balancer:
//! 1. CPU microseconds per request, user and system apart: `utime` and `stime` of every thread of every
//!    process of the balancer (`/proc/PID/task/*/stat`, in ticks of `CLK_TCK`) across a saturation run,
//!    divided by the requests answered. User time leads: on loopback most system time is the kernel's TCP
//!    work, the same for every proxy, and it swings with machine noise.
//! 2. System calls per request: `strace -c -f` attached to the balancer over an open-loop run of a
//!    fixed number of requests (when `strace` is installed). Health checks add a few calls a second.
//! 3. Throughput at saturation (closed loop, keep-alive connections), with the status code counts, and
//!    how busy the balancer's core was meanwhile (`core %`, CPU time over wall time): a balancer well
//!    below 100% was not the limit, the load generator's core was.
//! 4. Latency at fixed rates (open loop, from the intended send time): p50/p99/p99.9 at fractions of the
//!    slowest balancer's saturation rate (and at half of HAProxy's, for its target), and the latency
//!    *added* over `direct` at the same rate.
//! 5. Memory of idle connections: peak memory (`VmHWM`, summed over the balancer's processes) of a
//!    freshly started balancer after holding 1,000 idle keep-alive client connections open through it,
//!    each spoken to once (`idle.rs`). Measured first, before any load: a high-water mark taken after
//!    the saturation runs would be the load's (one backend connection per request in flight, 640 with
//!    h2load's 64 connections x 10 streams), not the idle connections'. That one is reported too, as
//!    the peak at the end of the run.
//!
//! Programs that are not installed are listed and skipped.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use lab::Balancer;
use lab::run::{Output, Prepared, Running};
use serde::{Deserialize, Serialize};

use crate::idle;
use crate::load_tools;
use crate::output::table;

/// What can stop the benchmark (a balancer that is merely missing is skipped, not an error).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A program we need (loadgen, the backends) is not there.
    #[error("{0}")]
    Missing(String),
    /// Starting or talking to a child process failed.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// Why it failed.
        source: io::Error,
    },
    /// A balancer could not be prepared or started.
    #[error("{balancer}: {source}")]
    Balancer {
        /// Which one.
        balancer: Balancer,
        /// Why.
        source: lab::run::RunError,
    },
    /// Something did not look as expected (a config to post-process, loadgen's output...).
    #[error("{0}")]
    Unexpected(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}

/// One column of the comparison: a direct connection or a balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// The load generator straight to backend-1: the physical limit.
    Direct,
    /// A balancer of the lab.
    Balancer(Balancer),
}

impl Target {
    /// `direct`, `lb`, `nginx`, `haproxy`, `envoy`.
    pub const ALL: [Target; 5] = [
        Target::Direct,
        Target::Balancer(Balancer::Lb),
        Target::Balancer(Balancer::Nginx),
        Target::Balancer(Balancer::Haproxy),
        Target::Balancer(Balancer::Envoy),
    ];

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Balancer(b) => b.name(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Target::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| format!("unknown target {s:?}: expected direct, lb, nginx, haproxy or envoy"))
    }
}

/// What serves the requests behind the balancers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backends {
    /// Three `toy-backend` processes' worth (one process, `--count 3`), release build.
    Toy,
    /// One nginx with three `return 200` servers, as `scripts/instructions-per-request.sh` uses: cheaper per request than
    /// the toy backend, for when the toy backend is what limits `direct`.
    Nginx,
}

impl FromStr for Backends {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "toy" => Ok(Backends::Toy),
            "nginx" => Ok(Backends::Nginx),
            _ => Err(format!("unknown backends {s:?}: expected toy or nginx")),
        }
    }
}

/// How the load generator speaks to the balancers (the backends behind them always get plain HTTP/1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Plain HTTP/1.1, keep-alive: the committed round-robin configs, load from `loadgen`.
    Http1,
    /// HTTP/1.1 over TLS 1.3: the `tls/` configs, load from `wrk` (and `h2load --h1` for fixed rates).
    Https,
    /// HTTP/2 over TLS 1.3 (ALPN h2): the `tls/` configs, load from `h2load`.
    H2,
    /// HTTP/2 in clear text with prior knowledge: load from `h2load`.
    H2c,
}

impl Protocol {
    /// `http1`, `https`, `h2`, `h2c`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Https => "https",
            Protocol::H2 => "h2",
            Protocol::H2c => "h2c",
        }
    }

    /// Whether clients speak TLS to the balancers.
    pub fn tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::H2)
    }

    /// The committed config `b` runs for this protocol, relative to its config folder. HAProxy, Envoy
    /// and lb take h2c on their plain-HTTP configs (they tell the h2 preface from HTTP/1.1); nginx 1.22
    /// needs a port that speaks HTTP/2 only.
    pub fn config(self, b: Balancer) -> &'static str {
        match (self, b) {
            (Protocol::Https | Protocol::H2, Balancer::Lb) => "lab-tls.toml",
            (Protocol::Https | Protocol::H2, Balancer::Nginx) => "tls/round-robin.conf",
            (Protocol::Https | Protocol::H2, Balancer::Haproxy) => "tls/round-robin.cfg",
            (Protocol::Https | Protocol::H2, Balancer::Envoy) => "tls/round-robin.yaml",
            (Protocol::H2c, Balancer::Nginx) => "h2c/round-robin.conf",
            (_, Balancer::Lb) => "lab.toml",
            (_, b) => b.default_config(),
        }
    }

    /// The URL scheme of the balancers' traffic port.
    fn scheme(self) -> &'static str {
        if self.tls() { "https" } else { "http" }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Protocol::Http1, Protocol::Https, Protocol::H2, Protocol::H2c]
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown protocol {s:?}: expected http1, https, h2 or h2c"))
    }
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct BalancersSpec {
    /// Rounds of every measurement, in alternating order.
    pub rounds: usize,
    /// Length of each saturation and fixed-rate run.
    pub duration: Duration,
    /// Keep-alive connections of the load generator.
    pub connections: usize,
    /// Which targets (default: all).
    pub only: Vec<Target>,
    /// What answers behind the balancers.
    pub backends: Backends,
    /// How clients speak to the balancers.
    pub protocol: Protocol,
    /// Every request on a new connection (`Connection: close`), so that with TLS each request is a
    /// full handshake: requests/s are handshakes/s and CPU per request is CPU per handshake. HTTP/1.1
    /// only (`http1`, `https`): saturation runs with `wrk`, no fixed-rate runs.
    pub new_connections: bool,
    /// Requests in flight per HTTP/2 connection (`h2load -m`).
    pub h2_streams: usize,
    /// Port of backend-1 (the others follow); the balancers' ports are the lab's, moved by the same
    /// offset ([`lab::Ports::shifted`]). Keep it below 32768, where the kernel does not pick client ports.
    pub base_port: u16,
    /// Fixed rates, as fractions of the slowest balancer's saturation rate.
    pub rate_fractions: Vec<f64>,
    /// Idle client connections held open for the memory figure (0: skip it).
    pub idle_connections: usize,
    /// Requests of the `strace -c` run (0: skip it).
    pub strace_requests: u64,
    /// The repository root (the committed configs).
    pub root: PathBuf,
    /// Where `loadgen`, `toy-backend` and `lb` are looked for first (default: next to this program).
    pub bin_dir: Option<PathBuf>,
}

impl BalancersSpec {
    /// The defaults of `lb-compare balancers`.
    pub fn new(root: PathBuf) -> Self {
        BalancersSpec {
            rounds: 3,
            duration: Duration::from_secs(5),
            connections: 64,
            only: Target::ALL.to_vec(),
            backends: Backends::Toy,
            protocol: Protocol::Http1,
            new_connections: false,
            h2_streams: 10,
            base_port: 25001,
            rate_fractions: vec![0.25, 0.5],
            idle_connections: 1000,
            strace_requests: 5000,
            root,
            bin_dir: None,
        }
    }
}

/// Median, min and max over the rounds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Spread {
    /// Median.
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    /// Of these values (all zero when empty).
    pub(crate) fn of(values: &[f64]) -> Spread {
        if values.is_empty() {
            return Spread::default();
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Spread { median, min: v[0], max: v[n - 1] }
    }
}

/// Latency at one fixed rate.
#[derive(Debug, Clone, Serialize)]
pub struct RateLatency {
    /// Requests per second offered.
    pub rate: f64,
    /// Median latency, µs, over the rounds.
    pub p50_us: Spread,
    /// 99th percentile, µs.
    pub p99_us: Spread,
    /// 99.9th percentile, µs.
    pub p999_us: Spread,
    /// Medians minus direct's at the same rate, µs (absent for direct itself).
    pub added_p50_us: Option<f64>,
    /// p99 added over direct, µs.
    pub added_p99_us: Option<f64>,
    /// p99.9 added over direct, µs.
    pub added_p999_us: Option<f64>,
    /// Requests due but never sent, summed over rounds (non-zero: the rate was too high).
    pub missed: u64,
    /// Transport errors, summed.
    pub errors: u64,
    /// The load generator of these runs (`loadgen`, `h2load --h1`...).
    pub tool: String,
}

/// Everything measured for one target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    /// `direct`, `lb`, ...
    pub name: String,
    /// User CPU µs per request (saturation runs).
    pub user_us_per_req: Spread,
    /// System CPU µs per request.
    pub sys_us_per_req: Spread,
    /// Both.
    pub total_us_per_req: Spread,
    /// Requests per second at saturation.
    pub rps: Spread,
    /// Percent of its one core the balancer was busy during the saturation runs (CPU time over wall
    /// time). Well below 100, the load generator's core was the limit: requests/s then compare how
    /// much work each balancer leaves the client, not how much the balancer can do.
    pub core_busy_pct: Spread,
    /// Status codes of the saturation runs, summed.
    pub status_counts: BTreeMap<u16, u64>,
    /// Transport errors of the saturation runs, summed.
    pub errors: u64,
    /// System calls per request under `strace -c -f`, if measured.
    pub syscalls_per_req: Option<f64>,
    /// Per fixed rate.
    pub latency: Vec<RateLatency>,
    /// Peak resident memory, KiB, summed over the balancer's processes, of the freshly started
    /// balancer after the idle connections (before any load).
    pub vmhwm_kib: Option<u64>,
    /// Peak resident memory, KiB, summed over the balancer's processes, at the end of the run: the
    /// most it held under the load.
    pub peak_vmhwm_kib: Option<u64>,
    /// The load generator of the saturation runs (`loadgen`, `wrk`, `h2load -m 10`...).
    pub tool: String,
    /// With `--new-connections` over TLS: full handshakes per second (one per request).
    pub handshakes_per_s: Option<Spread>,
    /// With `--new-connections` over TLS: user and system CPU µs per handshake (and its request).
    pub cpu_us_per_handshake: Option<Spread>,
}

/// One of the proxy issue's targets for lb.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is compared.
    pub what: String,
    /// lb's figure.
    pub lb: f64,
    /// The other's figure.
    pub other: f64,
    /// lb / other.
    pub ratio: f64,
    /// The ratio asked for (`<=` or `>=` as `higher_is_better` says).
    pub limit: f64,
    /// True when lb must be at least `limit` times the other (throughput).
    pub higher_is_better: bool,
    /// Whether it holds.
    pub met: bool,
    /// Why the figure may not measure lb (a throughput check while lb's core had time to spare).
    pub caveat: Option<String>,
}

/// Below this `core %`, a balancer was not what limited its requests/s.
const BUSY: f64 = 90.0;

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct BalancersReport {
    /// Rounds run.
    pub rounds: usize,
    /// Seconds per run.
    pub duration_s: f64,
    /// Load generator connections.
    pub connections: usize,
    /// What answered behind the balancers.
    pub backends: Backends,
    /// How clients spoke to the balancers.
    pub protocol: Protocol,
    /// Whether every request opened a new connection.
    pub new_connections: bool,
    /// Kernel ticks per second used for the CPU figures.
    pub clk_tck: u64,
    /// The fixed rates, requests/s.
    pub rates: Vec<f64>,
    /// Per target, in the order asked.
    pub results: Vec<TargetResult>,
    /// Targets skipped, with the reason.
    pub missing: Vec<MissingTarget>,
    /// lb against the others.
    pub checks: Vec<Check>,
    /// Things the reader should know (e.g. direct is not well above the proxies).
    pub notes: Vec<String>,
}

/// A target that was not measured: its program is not installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingTarget {
    /// `nginx`, `haproxy`, ...
    pub target: String,
    /// How to install it.
    pub reason: String,
}

/// In JSON, a `[target, reason]` pair.
impl Serialize for MissingTarget {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (&self.target, &self.reason).serialize(serializer)
    }
}

impl BalancersReport {
    /// The result of one target.
    pub(crate) fn get(&self, name: &str) -> Option<&TargetResult> {
        self.results.iter().find(|r| r.name == name)
    }
}

/// A child process stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            signal(self.0.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Sends a signal with the `kill` command (the workspace forbids `unsafe`, and std only sends SIGKILL).
fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A program in `dir` (or its parent, as a test binary in `deps/` looks for the binaries beside it),
/// else on `PATH`.
fn find_program(dir: Option<&Path>, name: &str) -> Option<PathBuf> {
    let exe_dir = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf));
    let dirs = [
        dir.map(Path::to_path_buf),
        exe_dir.clone(),
        exe_dir.and_then(|d| d.parent().map(Path::to_path_buf)),
    ];
    dirs.into_iter()
        .flatten()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .or_else(|| lab::programs::find_on_path(name))
}

fn wait_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Kernel ticks per second (`getconf CLK_TCK`, almost always 100).
fn clk_tck() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

/// `pid` and every process below it.
fn process_tree(pid: u32) -> Vec<u32> {
    let mut parent: HashMap<u32, u32> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            if let Some(stat) = read_stat(&format!("/proc/{p}/stat")) {
                // After the command name: state, ppid, ...
                if let Some(ppid) = stat.get(1).and_then(|s| s.parse().ok()) {
                    parent.insert(p, ppid);
                }
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parent.iter().filter(|&(_, &pp)| pp == p).map(|(&c, _)| c));
        i += 1;
    }
    tree
}

/// The fields of a `stat` file after the command name (which may contain spaces): index 0 is the state,
/// 11 utime, 12 stime (fields 3, 14 and 15 of `proc(5)`).
fn read_stat(path: &str) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(path).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// CPU time, in ticks of `CLK_TCK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CpuTicks {
    /// In user space.
    user: u64,
    /// In the kernel.
    system: u64,
}

/// User and system ticks of every thread of these processes.
fn cpu_ticks(pids: &[u32]) -> CpuTicks {
    let (mut user, mut system) = (0, 0);
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
        for t in tasks.flatten() {
            if let Some(f) = read_stat(&format!("{}/stat", t.path().display())) {
                user += f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                system += f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            }
        }
    }
    CpuTicks { user, system }
}

/// `VmHWM` in KiB, summed over these processes.
fn vmhwm_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        })
        .sum()
}

/// The `calls` of the `total` line of `strace -c` output.
fn parse_strace_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.split_whitespace().last() == Some("total"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// What `loadgen --json` prints (the fields used here); `wrk` and `h2load` runs are read into the same
/// shape (`load_tools`).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct LoadSummary {
    /// Answered.
    pub(crate) requests: u64,
    /// Transport errors.
    pub(crate) errors: u64,
    /// Due but not sent (open loop).
    pub(crate) missed: u64,
    /// Answered per second.
    pub(crate) rps: f64,
    /// By status.
    pub(crate) status_counts: BTreeMap<u16, u64>,
    /// Percentiles, µs.
    pub(crate) p50_us: u64,
    /// 99th.
    pub(crate) p99_us: u64,
    /// 99.9th.
    pub(crate) p999_us: u64,
}

/// A target to measure, and the program that runs it (none for `direct`).
#[derive(Debug)]
struct Wanted {
    target: Target,
    program: Option<PathBuf>,
}

/// A load generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    /// This workspace's `loadgen` (plain HTTP/1.1, closed or open loop).
    Loadgen,
    /// `wrk`: HTTP/1.1 with or without TLS, closed loop.
    Wrk,
    /// `h2load`: HTTP/2 (or HTTP/1.1 with `h1`), closed loop or `--rps`.
    H2load {
        /// `--h1`.
        h1: bool,
    },
}

/// The backends' process, stopped when dropped, and the scratch folder of their config (nginx).
#[derive(Debug)]
struct BackendProcess {
    _process: Guard,
    _scratch: Option<lab::tempdir::TempDir>,
}

/// A balancer running on core 1.
#[derive(Debug)]
struct StartedBalancer {
    target: Target,
    /// Stopped when dropped.
    _running: Running,
    /// Every process of the balancer (nginx's master and worker...).
    pids: Vec<u32>,
}

/// Everything running for one benchmark.
struct Bench {
    spec: BalancersSpec,
    loadgen: PathBuf,
    clk_tck: u64,
    _backends: BackendProcess,
    balancers: Vec<StartedBalancer>,
}

impl Bench {
    fn port(&self, t: Target) -> u16 {
        match t {
            Target::Direct => self.spec.base_port,
            Target::Balancer(b) => lab::Ports::shifted(b, self.spec.base_port).map_or(0, |p| p.listen),
        }
    }

    fn pids(&self, t: Target) -> &[u32] {
        self.balancers.iter().find(|b| b.target == t).map_or(&[], |b| b.pids.as_slice())
    }

    /// The URL of `t`'s traffic port: direct is always plain HTTP/1.1 (the backends speak nothing else).
    fn url(&self, t: Target) -> String {
        let scheme = if t == Target::Direct { "http" } else { self.spec.protocol.scheme() };
        format!("{scheme}://127.0.0.1:{}/", self.port(t))
    }

    /// Runs the protocol's load generator on core 0 against `t`: closed loop (saturation), or at `rate`.
    fn load(&self, t: Target, duration: Duration, rate: Option<f64>) -> Result<LoadSummary, BenchError> {
        let spec = &self.spec;
        let what = t.name();
        match self.tool(t, rate.is_some()) {
            Tool::Loadgen => self.loadgen(t, duration, rate),
            Tool::Wrk => {
                load_tools::wrk(&self.url(t), spec.connections, duration, spec.new_connections, what)
            }
            Tool::H2load { h1 } => load_tools::H2loadRun {
                url: self.url(t),
                clients: spec.connections,
                streams: if h1 { 1 } else { spec.h2_streams },
                h1,
                length: load_tools::H2loadLength::Duration(duration),
                rate,
            }
            .run(what),
        }
    }

    /// Which load generator measures `t` (`fixed_rate`: a fixed-rate run, else saturation).
    fn tool(&self, t: Target, fixed_rate: bool) -> Tool {
        let spec = &self.spec;
        match spec.protocol {
            Protocol::Http1 if spec.new_connections && !fixed_rate => Tool::Wrk,
            Protocol::Http1 => Tool::Loadgen,
            Protocol::Https if !fixed_rate => Tool::Wrk,
            // Direct is plain HTTP/1.1 to a backend, with the same tool at the same rates.
            Protocol::Https => Tool::H2load { h1: true },
            Protocol::H2 | Protocol::H2c => Tool::H2load { h1: t == Target::Direct },
        }
    }

    /// How the tool of `t`'s runs is named in the report.
    fn tool_text(&self, t: Target, fixed_rate: bool) -> String {
        let spec = &self.spec;
        match self.tool(t, fixed_rate) {
            Tool::Loadgen => "loadgen".into(),
            Tool::Wrk if spec.new_connections => "wrk Connection: close".into(),
            Tool::Wrk => "wrk".into(),
            Tool::H2load { h1: true } => "h2load --h1".into(),
            Tool::H2load { h1: false } => format!("h2load -m {}", spec.h2_streams),
        }
    }

    /// Runs loadgen on core 0 against `t`: closed loop, or open loop at `rate`.
    fn loadgen(&self, t: Target, duration: Duration, rate: Option<f64>) -> Result<LoadSummary, BenchError> {
        let url = format!("http://127.0.0.1:{}/", self.port(t));
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", "0"]).arg(&self.loadgen).arg(&url);
        cmd.args(["--connections", &self.spec.connections.to_string()]);
        cmd.args(["--duration", &format!("{}ms", duration.as_millis())]);
        cmd.args(["--timeout", "10s", "--json"]);
        if let Some(r) = rate {
            cmd.args(["--rate", &format!("{r:.1}")]);
        }
        let out = cmd.stdin(Stdio::null()).output().map_err(io_err("running loadgen"))?;
        if !out.status.success() {
            return Err(BenchError::Unexpected(format!(
                "loadgen against {t} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        serde_json::from_slice(&out.stdout)
            .map_err(|e| BenchError::Unexpected(format!("loadgen's JSON against {t}: {e}")))
    }
}

fn start_backends(spec: &BalancersSpec, bench_dir: Option<&Path>) -> Result<BackendProcess, BenchError> {
    let p = spec.base_port;
    let (mut cmd, scratch) = match spec.backends {
        Backends::Toy => {
            let toy = find_program(bench_dir, "toy-backend").ok_or_else(|| {
                BenchError::Missing("no toy-backend binary: cargo build --release -p toy-backend".into())
            })?;
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", "0"]).arg(toy).args(["--count", "3", "--base-port", &p.to_string()]);
            (cmd, None)
        }
        Backends::Nginx => {
            let nginx = lab::programs::find(Balancer::Nginx)
                .ok_or_else(|| BenchError::Missing("--backends nginx needs nginx installed".into()))?;
            let dir = lab::tempdir::TempDir::new("bench-backends").map_err(io_err("scratch folder"))?;
            let d = dir.path().display().to_string();
            let servers: String = (0..3)
                .map(|i| {
                    format!(
                        "  server {{ listen 127.0.0.1:{}; location / {{ return 200 \"backend-{}\\n\"; }} }}\n",
                        p + i,
                        i + 1
                    )
                })
                .collect();
            let conf = format!(
                "worker_processes 1; master_process off; pid {d}/b.pid; error_log stderr error;\n\
                 events {{ worker_connections 4096; }}\n\
                 http {{ access_log off; keepalive_requests 1000000;\n\
                 client_body_temp_path {d}/cb; proxy_temp_path {d}/pt; fastcgi_temp_path {d}/ft; uwsgi_temp_path {d}/ut; scgi_temp_path {d}/st;\n{servers}}}\n"
            );
            let path = dir.path().join("backends.conf");
            std::fs::write(&path, conf).map_err(io_err("writing the backends' nginx config"))?;
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", "0"]).arg(nginx).arg("-c").arg(&path).arg("-p").arg(format!("{d}/"));
            cmd.args(["-e", "stderr", "-g", "daemon off;"]);
            (cmd, Some(dir))
        }
    };
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(io_err("starting the backends"))?;
    let backends = BackendProcess { _process: Guard(child), _scratch: scratch };
    for port in [p, p + 1, p + 2] {
        if !wait_port(port, Duration::from_secs(10)) {
            return Err(BenchError::Unexpected(format!(
                "the backends did not listen on port {port} (taken?)"
            )));
        }
    }
    Ok(backends)
}

/// Replace `from` by `to` in a rendered config, which must contain it.
fn patch(path: &Path, balancer: Balancer, from: &str, to: &str) -> Result<(), BenchError> {
    let text = std::fs::read_to_string(path).map_err(io_err(format!("reading {}", path.display())))?;
    if !text.contains(from) {
        return Err(BenchError::Unexpected(format!(
            "{balancer}'s committed config has no `{from}` to change to `{to}`"
        )));
    }
    std::fs::write(path, text.replace(from, to)).map_err(io_err(format!("writing {}", path.display())))
}

/// A committed config must already say this (one worker, one thread): checked, not assumed.
fn require(path: &Path, balancer: Balancer, needle: &str) -> Result<(), BenchError> {
    let text = std::fs::read_to_string(path).map_err(io_err(format!("reading {}", path.display())))?;
    if text.contains(needle) {
        Ok(())
    } else {
        Err(BenchError::Unexpected(format!("{balancer}'s committed config does not say `{needle}`")))
    }
}

/// The `tls/` configs name the test certificate relative to the repository root (nginx, HAProxy, Envoy)
/// or to their own folder (lb); the rendered copy lives in a scratch folder and the balancer runs from
/// anywhere, so the paths become absolute.
fn absolute_cert_paths(spec: &BalancersSpec, b: Balancer, rendered: &Path) -> Result<(), BenchError> {
    let root = spec.root.canonicalize().map_err(io_err(format!("finding {}", spec.root.display())))?;
    let certs = root.join("crates/lb/config/certs");
    let certs = certs.display();
    match b {
        Balancer::Lb => patch(rendered, b, "\"certs/", &format!("\"{certs}/")),
        _ => patch(rendered, b, "crates/lb/config/certs/", &format!("{certs}/")),
    }
}

async fn start_balancer(
    spec: &BalancersSpec,
    b: Balancer,
    program: &Path,
) -> Result<StartedBalancer, BenchError> {
    let committed = b.config_path(&spec.root, spec.protocol.config(b));
    let ports = lab::Ports::shifted(b, spec.base_port).map_err(|e| BenchError::Unexpected(e.to_string()))?;
    let prepared =
        Prepared::new(b, &committed, ports).map_err(|source| BenchError::Balancer { balancer: b, source })?;
    let rendered = prepared.rendered.clone();
    match b {
        Balancer::Lb => patch(&rendered, b, "workers = 0", "workers = 1")?,
        Balancer::Nginx => {
            require(&rendered, b, "worker_processes 1;")?;
            patch(&rendered, b, "worker_connections 1024;", "worker_connections 4096;")?;
        }
        Balancer::Haproxy => require(&rendered, b, "nbthread 1")?,
        Balancer::Envoy => {}
    }
    if spec.protocol.tls() {
        absolute_cert_paths(spec, b, &rendered)?;
    }
    let mut running = Running::start(prepared, program, Output::Capture)
        .await
        .map_err(|source| BenchError::Balancer { balancer: b, source })?;
    let pid = running.pid().ok_or_else(|| BenchError::Unexpected(format!("{b} has no pid")))?;
    // Give forked workers (nginx) a moment to exist before collecting the tree.
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Ok(Some(status)) = running.try_wait() {
        return Err(BenchError::Unexpected(format!(
            "{b} exited ({status}) after start-up:\n{}",
            running.log_tail()
        )));
    }
    let pids = process_tree(pid);
    for p in &pids {
        let ok = Command::new("taskset")
            .args(["-a", "-p", "-c", "1", &p.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            running.stop();
            return Err(BenchError::Unexpected(format!(
                "could not pin {b} (pid {p}) to core 1 with taskset"
            )));
        }
    }
    Ok(StartedBalancer { target: Target::Balancer(b), _running: running, pids })
}

fn strace_run(bench: &Bench, t: Target) -> Result<Option<f64>, BenchError> {
    let Some(strace) = lab::programs::find_on_path("strace") else { return Ok(None) };
    let pids = bench.pids(t);
    // With a new connection per request the count would be the connection's (accept, handshake,
    // close), measured with a keep-alive tool it would not be; not measured.
    if pids.is_empty() || bench.spec.strace_requests == 0 || bench.spec.new_connections {
        return Ok(None);
    }
    let out = std::env::temp_dir().join(format!("lb-compare-strace-{}-{}.txt", std::process::id(), t.name()));
    let mut cmd = Command::new(strace);
    cmd.args(["-c", "-f", "-o"]).arg(&out);
    for p in pids {
        cmd.args(["-p", &p.to_string()]);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(io_err("starting strace"))?;
    let mut guard = Guard(child);
    // Attaching takes a moment; requests sent before it would go uncounted.
    std::thread::sleep(Duration::from_millis(700));
    // A fixed number of requests: an open loop of rate x duration. 2,000/s keeps a traced proxy (every
    // system call stops it for the tracer) well below its limit.
    let summary = if bench.spec.protocol == Protocol::Http1 {
        let rate = 2000.0;
        let duration = Duration::from_secs_f64(bench.spec.strace_requests as f64 / rate);
        bench.load(t, duration, Some(rate))?
    } else {
        // h2load: exactly this many requests, closed loop on 8 connections (a traced proxy is slow, and
        // a fixed count does not care).
        let h1 = bench.spec.protocol == Protocol::Https;
        load_tools::H2loadRun {
            url: bench.url(t),
            clients: 8,
            streams: if h1 { 1 } else { bench.spec.h2_streams },
            h1,
            length: load_tools::H2loadLength::Requests(bench.spec.strace_requests),
            rate: None,
        }
        .run(t.name())?
    };
    signal(guard.0.id(), "INT");
    let _ = guard.0.wait();
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    Ok(parse_strace_total(&text).map(|calls| calls as f64 / summary.requests.max(1) as f64))
}

/// Run the benchmark. `progress` gets a line per step (for stderr).
pub async fn run(spec: BalancersSpec, mut progress: impl FnMut(&str)) -> Result<BalancersReport, BenchError> {
    let loadgen = find_program(spec.bin_dir.as_deref(), "loadgen")
        .ok_or_else(|| BenchError::Missing("no loadgen binary: cargo build --release -p loadgen".into()))?;
    if lab::programs::find_on_path("taskset").is_none() {
        return Err(BenchError::Missing("taskset (util-linux) is needed to pin processes to cores".into()));
    }
    check_protocol(&spec)?;
    let (wanted, missing) = wanted_targets(&spec);
    check_ports_free(&spec, &wanted)?;
    let bench = Bench::start(spec, loadgen, &wanted, &mut progress).await?;
    let targets: Vec<Target> = wanted.iter().map(|w| w.target).collect();

    // Idle connections first, while each balancer holds nothing else (see the module doc).
    let memory = bench.memory(&targets, &mut progress).await?;
    // Warm-up: connections pooled, caches and allocators settled.
    for &t in &targets {
        bench.load(t, Duration::from_secs(1), None)?;
    }
    let saturation = bench.saturation(&targets, &mut progress)?;
    let syscalls = bench.syscalls(&targets, &mut progress)?;
    let fixed_rates = if bench.spec.new_connections {
        // Latency at fixed rates is a keep-alive figure; with a new connection per request it would
        // mostly time the handshake, which CPU per handshake already says.
        FixedRates { rates: Vec::new(), half_haproxy: None }
    } else {
        FixedRates::below_saturation(&bench.spec, &targets, &saturation)
    };
    let fixed_rate_runs = bench.fixed_rate_runs(&targets, &fixed_rates.rates, &mut progress)?;
    // The kernel's resident counts lag by a few pages per thread, so a later reading can come out a
    // little under an earlier one; the peak of the run is at least the idle figure by definition.
    let peaks = targets
        .iter()
        .map(|&t| (t, vmhwm_kib(bench.pids(t)).max(memory.get(&t).copied().unwrap_or(0))))
        .collect();
    let tools = targets.iter().map(|&t| (t, (bench.tool_text(t, false), bench.tool_text(t, true)))).collect();
    let measured =
        Measurements { targets, saturation, syscalls, fixed_rates, fixed_rate_runs, memory, peaks, tools };
    Ok(measured.report(&bench, missing))
}

/// The protocol's load generators are installed, and `--new-connections` is asked of HTTP/1.1 only.
fn check_protocol(spec: &BalancersSpec) -> Result<(), BenchError> {
    match spec.protocol {
        Protocol::Http1 if spec.new_connections => load_tools::require("wrk").map(drop),
        Protocol::Http1 => Ok(()),
        Protocol::Https if spec.new_connections => load_tools::require("wrk").map(drop),
        Protocol::Https => load_tools::require("wrk").and(load_tools::require("h2load")).map(drop),
        Protocol::H2 | Protocol::H2c if spec.new_connections => Err(BenchError::Unexpected(format!(
            "--new-connections needs HTTP/1.1 (--protocol http1 or https): {} keeps its connections open by design",
            spec.protocol
        ))),
        Protocol::H2 | Protocol::H2c => load_tools::require("h2load").map(drop),
    }
}

/// The targets asked for whose programs are installed, and the others with the reason.
fn wanted_targets(spec: &BalancersSpec) -> (Vec<Wanted>, Vec<MissingTarget>) {
    let mut missing = Vec::new();
    let mut wanted = Vec::new();
    for target in Target::ALL.into_iter().filter(|t| spec.only.contains(t)) {
        match target {
            Target::Direct => wanted.push(Wanted { target, program: None }),
            Target::Balancer(b) => {
                let program = if b == Balancer::Lb {
                    find_program(spec.bin_dir.as_deref(), "lb")
                } else {
                    lab::programs::find(b)
                };
                match program {
                    Some(p) => wanted.push(Wanted { target, program: Some(p) }),
                    None => missing.push(MissingTarget {
                        target: target.name().to_string(),
                        reason: lab::programs::missing_message(b),
                    }),
                }
            }
        }
    }
    (wanted, missing)
}

/// Another benchmark or lab on the same ports would be measured instead of ours (a proxy that cannot
/// bind exits, and the port still answers): refuse to start rather than report someone else's numbers.
fn check_ports_free(spec: &BalancersSpec, wanted: &[Wanted]) -> Result<(), BenchError> {
    let mut ports = vec![spec.base_port, spec.base_port + 1, spec.base_port + 2];
    for w in wanted {
        if let Target::Balancer(b) = w.target {
            let p =
                lab::Ports::shifted(b, spec.base_port).map_err(|e| BenchError::Unexpected(e.to_string()))?;
            ports.extend([p.listen, p.admin].into_iter().filter(|&x| x != 0));
        }
    }
    if let Some(busy) =
        ports.iter().find(|&&p| std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, p)).is_err())
    {
        return Err(BenchError::Unexpected(format!(
            "port {busy} is already in use (another benchmark or lab?): choose other ports with --base-port"
        )));
    }
    Ok(())
}

/// `targets` in round `round`'s order: forwards in even rounds, backwards in odd ones.
fn alternating(targets: &[Target], round: usize) -> Vec<Target> {
    if round.is_multiple_of(2) { targets.to_vec() } else { targets.iter().rev().copied().collect() }
}

/// One saturation run through one target.
#[derive(Debug)]
struct SaturationRun {
    /// User CPU µs per request.
    user_us_per_req: f64,
    /// System CPU µs per request.
    sys_us_per_req: f64,
    /// What loadgen measured: requests/s, status codes, errors.
    load: LoadSummary,
}

/// The rates of the fixed-rate runs.
#[derive(Debug)]
struct FixedRates {
    /// Requests per second, in the order run.
    rates: Vec<f64>,
    /// Half of HAProxy's saturation rate, when HAProxy ran (one of `rates`, for lb's target).
    half_haproxy: Option<f64>,
}

impl FixedRates {
    /// The spec's fractions of the slowest balancer's median saturation rate, and half of HAProxy's.
    fn below_saturation(
        spec: &BalancersSpec,
        targets: &[Target],
        saturation: &HashMap<Target, Vec<SaturationRun>>,
    ) -> FixedRates {
        let median_rps = |t: Target| {
            let rps: Vec<f64> =
                saturation.get(&t).map(|v| v.iter().map(|r| r.load.rps).collect()).unwrap_or_default();
            Spread::of(&rps).median
        };
        let proxies = targets.iter().copied().filter(|t| *t != Target::Direct);
        let slowest = proxies.map(median_rps).fold(f64::INFINITY, f64::min);
        let slowest = if slowest.is_finite() { slowest } else { median_rps(Target::Direct) };
        let mut rates: Vec<f64> = spec.rate_fractions.iter().map(|f| (f * slowest).round()).collect();
        let haproxy = Target::Balancer(Balancer::Haproxy);
        let half_haproxy = targets.contains(&haproxy).then(|| (median_rps(haproxy) / 2.0).round());
        if let Some(h) = half_haproxy
            && !rates.iter().any(|r| (r - h).abs() <= 0.01 * h)
        {
            rates.push(h);
        }
        rates.retain(|r| *r >= 1.0);
        FixedRates { rates, half_haproxy }
    }
}

impl Bench {
    /// Starts the backends on core 0 and each wanted balancer on core 1.
    async fn start(
        spec: BalancersSpec,
        loadgen: PathBuf,
        wanted: &[Wanted],
        progress: &mut impl FnMut(&str),
    ) -> Result<Bench, BenchError> {
        progress(&format!("starting the backends ({:?}) on core 0", spec.backends));
        let backends = start_backends(&spec, spec.bin_dir.as_deref())?;
        let mut balancers = Vec::new();
        for w in wanted {
            if let (Target::Balancer(b), Some(program)) = (w.target, &w.program) {
                progress(&format!("starting {b} on core 1"));
                balancers.push(start_balancer(&spec, b, program).await?);
            }
        }
        Ok(Bench { spec, loadgen, clk_tck: clk_tck(), _backends: backends, balancers })
    }

    /// 1. Saturation, with CPU, in alternating order.
    fn saturation(
        &self,
        targets: &[Target],
        progress: &mut impl FnMut(&str),
    ) -> Result<HashMap<Target, Vec<SaturationRun>>, BenchError> {
        let spec = &self.spec;
        let mut runs: HashMap<Target, Vec<SaturationRun>> = HashMap::new();
        for round in 0..spec.rounds {
            for t in alternating(targets, round) {
                progress(&format!("round {}/{}: saturation through {t}", round + 1, spec.rounds));
                let pids = self.pids(t);
                let before = cpu_ticks(pids);
                let load = self.load(t, spec.duration, None)?;
                let after = cpu_ticks(pids);
                let per_req =
                    |ticks: u64| ticks as f64 / self.clk_tck as f64 * 1e6 / load.requests.max(1) as f64;
                let run = SaturationRun {
                    user_us_per_req: per_req(after.user.saturating_sub(before.user)),
                    sys_us_per_req: per_req(after.system.saturating_sub(before.system)),
                    load,
                };
                runs.entry(t).or_default().push(run);
            }
        }
        Ok(runs)
    }

    /// 2. System calls per request, through each balancer.
    fn syscalls(
        &self,
        targets: &[Target],
        progress: &mut impl FnMut(&str),
    ) -> Result<HashMap<Target, Option<f64>>, BenchError> {
        let mut syscalls = HashMap::new();
        for &t in targets.iter().filter(|t| **t != Target::Direct) {
            progress(&format!("strace -c through {t}"));
            syscalls.insert(t, strace_run(self, t)?);
        }
        Ok(syscalls)
    }

    /// 3. Latency at fixed rates, by target and index into `rates`, in alternating order.
    fn fixed_rate_runs(
        &self,
        targets: &[Target],
        rates: &[f64],
        progress: &mut impl FnMut(&str),
    ) -> Result<HashMap<(Target, usize), Vec<LoadSummary>>, BenchError> {
        let spec = &self.spec;
        let mut runs: HashMap<(Target, usize), Vec<LoadSummary>> = HashMap::new();
        for (ri, &rate) in rates.iter().enumerate() {
            for round in 0..spec.rounds {
                for t in alternating(targets, round) {
                    progress(&format!(
                        "round {}/{}: {rate:.0} requests/s through {t}",
                        round + 1,
                        spec.rounds
                    ));
                    let s = self.load(t, spec.duration, Some(rate))?;
                    runs.entry((t, ri)).or_default().push(s);
                }
            }
        }
        Ok(runs)
    }

    /// 4. Peak memory (KiB) of each balancer with idle connections held open through it.
    async fn memory(
        &self,
        targets: &[Target],
        progress: &mut impl FnMut(&str),
    ) -> Result<HashMap<Target, u64>, BenchError> {
        let idle = self.spec.idle_connections;
        let mut memory = HashMap::new();
        if idle == 0 {
            return Ok(memory);
        }
        for &t in targets.iter().filter(|t| **t != Target::Direct) {
            progress(&format!("{idle} idle connections through {t}"));
            let pids = self.pids(t).to_vec();
            let client = idle::Client::new(self.spec.protocol, &self.spec.root)?;
            let (kib, open) = client.hold(self.port(t), idle, || vmhwm_kib(&pids)).await?;
            if open < idle {
                progress(&format!("{t}: only {open} of {idle} connections stayed open"));
            }
            memory.insert(t, kib);
        }
        Ok(memory)
    }
}

/// p50, p99 and p99.9 of the fixed-rate runs of one target at one rate, µs.
#[derive(Debug, Clone, Copy)]
struct LatencySpreads {
    p50: Spread,
    p99: Spread,
    p999: Spread,
}

/// Everything measured, before it is summed up per target.
#[derive(Debug)]
struct Measurements {
    targets: Vec<Target>,
    saturation: HashMap<Target, Vec<SaturationRun>>,
    syscalls: HashMap<Target, Option<f64>>,
    fixed_rates: FixedRates,
    /// By target and index into the rates.
    fixed_rate_runs: HashMap<(Target, usize), Vec<LoadSummary>>,
    memory: HashMap<Target, u64>,
    /// `VmHWM` at the end of the run, KiB.
    peaks: HashMap<Target, u64>,
    /// The load generator of each target's saturation and fixed-rate runs.
    tools: HashMap<Target, (String, String)>,
}

impl Measurements {
    /// Assemble: a result per target, lb's checks, and the notes.
    fn report(self, bench: &Bench, missing: Vec<MissingTarget>) -> BalancersReport {
        let spec = &bench.spec;
        let mut report = BalancersReport {
            rounds: spec.rounds,
            duration_s: spec.duration.as_secs_f64(),
            connections: spec.connections,
            backends: spec.backends,
            protocol: spec.protocol,
            new_connections: spec.new_connections,
            clk_tck: bench.clk_tck,
            rates: self.fixed_rates.rates.clone(),
            results: self
                .targets
                .iter()
                .map(|&t| self.result(t, spec.new_connections && spec.protocol.tls()))
                .collect(),
            missing,
            checks: Vec::new(),
            notes: Vec::new(),
        };
        report.checks = checks(&report, self.fixed_rates.half_haproxy);
        report.notes.extend(direct_note(&report));
        report
    }

    /// Everything measured for `t`; `handshakes`: every request was a new TLS connection.
    fn result(&self, t: Target, handshakes: bool) -> TargetResult {
        let runs = self.saturation.get(&t).map(Vec::as_slice).unwrap_or_default();
        let spread = |f: fn(&SaturationRun) -> f64| Spread::of(&runs.iter().map(f).collect::<Vec<_>>());
        let mut status_counts = BTreeMap::new();
        let mut errors = 0;
        for r in runs {
            errors += r.load.errors;
            for (k, v) in &r.load.status_counts {
                *status_counts.entry(*k).or_default() += v;
            }
        }
        TargetResult {
            name: t.name().to_string(),
            user_us_per_req: spread(|r| r.user_us_per_req),
            sys_us_per_req: spread(|r| r.sys_us_per_req),
            total_us_per_req: spread(|r| r.user_us_per_req + r.sys_us_per_req),
            rps: spread(|r| r.load.rps),
            core_busy_pct: spread(|r| (r.user_us_per_req + r.sys_us_per_req) * r.load.rps / 1e4),
            status_counts,
            errors,
            syscalls_per_req: self.syscalls.get(&t).copied().flatten(),
            latency: self
                .fixed_rates
                .rates
                .iter()
                .enumerate()
                .map(|(ri, &rate)| self.rate_latency(t, ri, rate))
                .collect(),
            vmhwm_kib: self.memory.get(&t).copied(),
            peak_vmhwm_kib: self.peaks.get(&t).copied().filter(|_| t != Target::Direct),
            tool: self.tools.get(&t).map(|(s, _)| s.clone()).unwrap_or_default(),
            handshakes_per_s: (handshakes && t != Target::Direct).then(|| spread(|r| r.load.rps)),
            cpu_us_per_handshake: (handshakes && t != Target::Direct)
                .then(|| spread(|r| r.user_us_per_req + r.sys_us_per_req)),
        }
    }

    /// `t`'s latency at the `ri`-th rate, and what it adds over direct's.
    fn rate_latency(&self, t: Target, ri: usize, rate: f64) -> RateLatency {
        let own = self.latency_spreads(t, ri);
        let direct = (t != Target::Direct && self.targets.contains(&Target::Direct))
            .then(|| self.latency_spreads(Target::Direct, ri));
        let runs = self.fixed_rate_runs.get(&(t, ri)).map(Vec::as_slice).unwrap_or_default();
        RateLatency {
            rate,
            p50_us: own.p50,
            p99_us: own.p99,
            p999_us: own.p999,
            added_p50_us: direct.map(|d| own.p50.median - d.p50.median),
            added_p99_us: direct.map(|d| own.p99.median - d.p99.median),
            added_p999_us: direct.map(|d| own.p999.median - d.p999.median),
            missed: runs.iter().map(|s| s.missed).sum(),
            errors: runs.iter().map(|s| s.errors).sum(),
            tool: self.tools.get(&t).map(|(_, f)| f.clone()).unwrap_or_default(),
        }
    }

    fn latency_spreads(&self, t: Target, ri: usize) -> LatencySpreads {
        let runs = self.fixed_rate_runs.get(&(t, ri)).map(Vec::as_slice).unwrap_or_default();
        let spread =
            |f: fn(&LoadSummary) -> u64| Spread::of(&runs.iter().map(|s| f(s) as f64).collect::<Vec<_>>());
        LatencySpreads { p50: spread(|s| s.p50_us), p99: spread(|s| s.p99_us), p999: spread(|s| s.p999_us) }
    }
}

/// A note when direct is not well above the best balancer: then the backends, not the balancers, set
/// the pace.
fn direct_note(report: &BalancersReport) -> Option<String> {
    let direct = report.get("direct")?;
    let best = report.results.iter().filter(|r| r.name != "direct").map(|r| r.rps.median).fold(0.0, f64::max);
    (best > 0.0 && direct.rps.median < 1.5 * best).then(|| {
        format!(
            "direct ({:.0} requests/s) is not well above the best balancer ({best:.0}): the backends and the load generator share core 0, so the backend limits direct; try --backends nginx",
            direct.rps.median
        )
    })
}

/// The limits lb is held to (lb / other): user CPU per request against nginx and HAProxy. Plain
/// HTTP/1.1 has the proxy issue's; HTTPS/1.1 asks 0.8x both, HTTP/2 HAProxy's CPU (the HTTP/2 issue's).
fn cpu_limits(r: &BalancersReport) -> (f64, f64) {
    match r.protocol {
        Protocol::Http1 => (1.0, 0.8),
        Protocol::Https => (0.8, 0.8),
        Protocol::H2 | Protocol::H2c => (f64::INFINITY, 1.0),
    }
}

/// The proxy issue's targets for lb, from a report's medians.
fn checks(r: &BalancersReport, half_haproxy_rate: Option<f64>) -> Vec<Check> {
    let (Some(lb), nginx, haproxy) = (r.get("lb"), r.get("nginx"), r.get("haproxy")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut push = |what: &str, lb: Option<f64>, other: Option<f64>, limit: f64, higher: bool| {
        if let (Some(lb), Some(other)) = (lb, other)
            && other > 0.0
        {
            let ratio = lb / other;
            let met = if higher { ratio >= limit } else { ratio <= limit };
            out.push(Check {
                what: what.to_string(),
                lb,
                other,
                ratio,
                limit,
                higher_is_better: higher,
                met,
                caveat: None,
            });
        }
    };
    if r.new_connections {
        // A full handshake per request: what it costs is the figure; nginx is the one to beat.
        let per_hs = |t: &TargetResult| t.total_us_per_req.median;
        push("CPU per new connection vs nginx", Some(per_hs(lb)), nginx.map(per_hs), 1.0, false);
        push("new connections/s vs HAProxy", Some(lb.rps.median), haproxy.map(|h| h.rps.median), 1.0, true);
        note_idle_core(&mut out, lb);
        return out;
    }
    let (vs_nginx, vs_haproxy) = cpu_limits(r);
    if vs_nginx.is_finite() {
        push(
            "user CPU/request vs nginx",
            Some(lb.user_us_per_req.median),
            nginx.map(|n| n.user_us_per_req.median),
            vs_nginx,
            false,
        );
    }
    // A median of lb's against HAProxy's.
    let of = |f: fn(&TargetResult) -> f64| (Some(f(lb)), haproxy.map(f));
    let (lb_user, haproxy_user) = of(|t| t.user_us_per_req.median);
    push("user CPU/request vs HAProxy", lb_user, haproxy_user, vs_haproxy, false);
    push(
        "syscalls/request vs HAProxy",
        lb.syscalls_per_req,
        haproxy.and_then(|h| h.syscalls_per_req),
        1.0,
        false,
    );
    push("saturation requests/s vs HAProxy", Some(lb.rps.median), haproxy.map(|h| h.rps.median), 1.0, true);
    let (lb_total, haproxy_total) = of(|t| t.total_us_per_req.median);
    push("total CPU/request vs HAProxy", lb_total, haproxy_total, 1.0, false);
    if let Some(rate) = half_haproxy_rate
        && let Some(ri) = r.rates.iter().position(|x| (x - rate).abs() < 0.5)
    {
        let added = |t: &TargetResult| t.latency.get(ri).and_then(|l| l.added_p99_us);
        // Added latency can be negative (noise); compare on max(0) plus 1 µs so a ratio exists.
        let clamp = |v: Option<f64>| v.map(|x| x.max(0.0) + 1.0);
        push(
            &format!("p99 added latency at {rate:.0}/s (half HAProxy's saturation) vs HAProxy"),
            clamp(added(lb)),
            clamp(haproxy.and_then(added)),
            1.0,
            false,
        );
    }
    push(
        "memory with 1,000 idle connections vs nginx",
        lb.vmhwm_kib.map(|v| v as f64),
        nginx.and_then(|n| n.vmhwm_kib.map(|v| v as f64)),
        1.0,
        false,
    );
    note_idle_core(&mut out, lb);
    out
}

/// The report as plain-text tables: CPU, throughput and memory; latency at the fixed rates; lb's targets.
pub fn text(r: &BalancersReport) -> String {
    let mut out = format!(
        "per-core benchmark: {} round(s) of {} s, {} connections, {} backends on core 0, each balancer on core 1; medians (min-max)\n",
        r.rounds,
        r.duration_s,
        r.connections,
        match r.backends {
            Backends::Toy => "toy-backend",
            Backends::Nginx => "nginx return-200",
        }
    );
    out += &protocol_line(r);
    out += &figures_table(r);
    if !r.rates.is_empty() {
        out += if r.protocol == Protocol::Http1 {
            "\nlatency at fixed rates (open loop, from the intended send time), us; + = added over direct\n"
        } else {
            "\nlatency at fixed rates (h2load --rps: from the actual send time), us; + = added over direct\n"
        };
        out += &latency_table(r);
    }
    out += &checks_text(&r.checks);
    for m in &r.missing {
        out += &format!("skipped {}: {}\n", m.target, m.reason);
    }
    for n in &r.notes {
        out += &format!("note: {n}\n");
    }
    out
}

/// What clients spoke, when it is not plain keep-alive HTTP/1.1; the `load` columns name the tools.
fn protocol_line(r: &BalancersReport) -> String {
    let what = match r.protocol {
        Protocol::Http1 => "HTTP/1.1",
        Protocol::Https => "HTTP/1.1 over TLS 1.3",
        Protocol::H2 => "HTTP/2 over TLS 1.3 (ALPN h2)",
        Protocol::H2c => "HTTP/2 in clear text (prior knowledge)",
    };
    let mut line = format!("protocol {}: {what} from clients, HTTP/1.1 to the backends", r.protocol);
    if r.protocol != Protocol::Http1 {
        line += "; direct is plain HTTP/1.1 to backend-1";
    }
    if r.new_connections {
        line += "; a new connection per request (Connection: close)";
        if r.protocol.tls() {
            line += ", each a full TLS handshake (no resumption): requests/s are handshakes/s, us/req CPU per handshake";
        }
    }
    if r.protocol == Protocol::Http1 && !r.new_connections {
        return String::new();
    }
    line + "\n"
}

/// A spread as `median`, or `median (min-max)` when the rounds differ.
fn spread_text(s: &Spread, digits: usize) -> String {
    if s.min == s.max {
        format!("{:.*}", digits, s.median)
    } else {
        format!("{:.*} ({:.*}-{:.*})", digits, s.median, digits, s.min, digits, s.max)
    }
}

/// KiB as MiB with one decimal, or `-`.
fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "-".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

/// One row per target: CPU, system calls, throughput, status codes, memory.
fn figures_table(r: &BalancersReport) -> String {
    let rows: Vec<Vec<String>> = r
        .results
        .iter()
        .map(|t| {
            let status: Vec<String> = t.status_counts.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            let status = if t.errors > 0 {
                format!("{} err:{}", status.join(" "), t.errors)
            } else {
                status.join(" ")
            };
            let cpu = |s: &Spread| if t.name == "direct" { "-".to_string() } else { spread_text(s, 1) };
            vec![
                t.name.clone(),
                cpu(&t.user_us_per_req),
                cpu(&t.sys_us_per_req),
                cpu(&t.total_us_per_req),
                t.syscalls_per_req.map_or_else(|| "-".into(), |v| format!("{v:.2}")),
                spread_text(&t.rps, 0),
                // The median only: a busy share is read against 100, not compared closely.
                if t.name == "direct" { "-".into() } else { format!("{:.0}", t.core_busy_pct.median) },
                status,
                mib(t.vmhwm_kib),
                mib(t.peak_vmhwm_kib),
                t.tool.clone(),
            ]
        })
        .collect();
    table(
        &[
            "target",
            "user us/req",
            "sys us/req",
            "total us/req",
            "syscalls/req",
            "requests/s",
            "core %",
            "status",
            "idle MiB",
            "peak MiB",
            "load",
        ],
        &rows,
    )
}

/// One row per rate and target: percentiles and what each adds over direct.
fn latency_table(r: &BalancersReport) -> String {
    let mut rows = Vec::new();
    for (ri, rate) in r.rates.iter().enumerate() {
        for t in &r.results {
            let Some(l) = t.latency.get(ri) else { continue };
            let added = |v: Option<f64>| v.map_or_else(|| "-".into(), |x| format!("{x:+.0}"));
            rows.push(vec![
                format!("{rate:.0}"),
                t.name.clone(),
                spread_text(&l.p50_us, 0),
                spread_text(&l.p99_us, 0),
                spread_text(&l.p999_us, 0),
                added(l.added_p50_us),
                added(l.added_p99_us),
                added(l.added_p999_us),
                l.tool.clone(),
                if l.missed + l.errors > 0 {
                    format!("{} missed, {} errors", l.missed, l.errors)
                } else {
                    String::new()
                },
            ]);
        }
    }
    table(&["rate/s", "target", "p50", "p99", "p99.9", "+p50", "+p99", "+p99.9", "load", ""], &rows)
}

/// lb against the proxy issue's targets, a line each (nothing when there are none).
/// When lb's core had time to spare, say so on the throughput checks: its requests/s then measure the
/// load generator's core, not lb.
fn note_idle_core(checks: &mut [Check], lb: &TargetResult) {
    if lb.core_busy_pct.median >= BUSY {
        return;
    }
    for c in checks.iter_mut().filter(|c| c.higher_is_better) {
        c.caveat = Some(format!(
            "lb's core was {:.0}% busy: the load generator was the limit, compare CPU per request",
            lb.core_busy_pct.median
        ));
    }
}

fn checks_text(checks: &[Check]) -> String {
    if checks.is_empty() {
        return String::new();
    }
    let mut out = "\nlb against the proxy issue's targets (medians):\n".to_string();
    for c in checks {
        out += &format!(
            "  {:<58} lb {:>9.2}  other {:>9.2}  ratio {:.2} ({} {:.2}): {}\n",
            c.what,
            c.lb,
            c.other,
            c.ratio,
            if c.higher_is_better { ">=" } else { "<=" },
            c.limit,
            if c.met { "met" } else { "NOT met" }
        );
        if let Some(caveat) = &c.caveat {
            out += &format!("    ({caveat})\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throughput_check_says_when_lb_was_not_the_limit() {
        let spread = |v: f64| Spread { median: v, min: v, max: v };
        let lb = |busy: f64| TargetResult {
            name: "lb".into(),
            user_us_per_req: spread(3.0),
            sys_us_per_req: spread(8.0),
            total_us_per_req: spread(11.0),
            rps: spread(60_000.0),
            core_busy_pct: spread(busy),
            status_counts: BTreeMap::new(),
            errors: 0,
            syscalls_per_req: None,
            latency: Vec::new(),
            vmhwm_kib: None,
            peak_vmhwm_kib: None,
            tool: String::new(),
            handshakes_per_s: None,
            cpu_us_per_handshake: None,
        };
        let check = |higher_is_better| Check {
            what: String::new(),
            lb: 1.0,
            other: 1.0,
            ratio: 1.0,
            limit: 1.0,
            higher_is_better,
            met: true,
            caveat: None,
        };
        let mut out = vec![check(true)];
        note_idle_core(&mut out, &lb(80.0));
        assert!(out[0].caveat.as_deref().is_some_and(|c| c.starts_with("lb's core was 80% busy")), "{out:?}");
        // lb at its limit: requests/s measure lb, nothing to say.
        let mut out = vec![check(true)];
        note_idle_core(&mut out, &lb(98.0));
        assert_eq!(out[0].caveat, None);
        // A CPU check is about lb whatever the load generator did.
        let mut out = vec![check(false)];
        note_idle_core(&mut out, &lb(80.0));
        assert_eq!(out[0].caveat, None);
    }

    #[test]
    fn strace_totals_parse_with_and_without_errors() {
        let with = "% time     seconds  usecs/call     calls    errors syscall\n------ ----------- ----------- --------- --------- ----------------\n 60.00    0.000600           0     10000           writev\n100.00    0.001000           0     21034       512 total\n";
        assert_eq!(parse_strace_total(with), Some(21034));
        let without = "100.00    0.001000           0     21034           total\n";
        assert_eq!(parse_strace_total(without), Some(21034));
        assert_eq!(parse_strace_total("nothing"), None);
    }

    #[test]
    fn spreads_take_the_median() {
        assert_eq!(Spread::of(&[3.0, 1.0, 2.0]), Spread { median: 2.0, min: 1.0, max: 3.0 });
        assert_eq!(Spread::of(&[4.0, 1.0]).median, 2.5);
        assert_eq!(Spread::of(&[]), Spread::default());
    }

    #[test]
    fn this_process_is_its_own_tree_and_uses_cpu_and_memory() {
        let me = std::process::id();
        assert_eq!(process_tree(me).first(), Some(&me));
        // Some CPU has been spent by now (this test binary started, compiled regexes...), and the
        // resident peak of a running test binary is at least a megabyte.
        let spin: u64 =
            (0..20_000_000u64).fold(0, |a, x| std::hint::black_box(a ^ x.wrapping_mul(2654435761)));
        assert!(std::hint::black_box(spin) != 1);
        let CpuTicks { user: u, system: s } = cpu_ticks(&[me]);
        assert!(u + s > 0);
        assert!(vmhwm_kib(&[me]) > 1024);
    }
}
