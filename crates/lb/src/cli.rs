//! The command line: three ways to start, and `check`.
//!
//! - `lb` alone: **demo mode**. Three toy backends in-process, round robin over them on
//!   `127.0.0.1:8080`, admin on `127.0.0.1:9900`, explain and health checks on, and a list of things to
//!   try. Nothing to install or write first.
//! - `lb --listen 127.0.0.1:8080 --backend 127.0.0.1:9001 --backend 127.0.0.1:9002=3 --algorithm
//!   weighted-round-robin`: **quick mode**, one upstream from flags (like `caddy reverse-proxy`).
//! - `lb --config lb.toml`: everything from a file. `lb check --config lb.toml` only checks it.
//!
//! This module is the binary's front end, so it speaks `anyhow` (errors end up printed, not matched);
//! `main.rs` only sets up logging and a runtime and calls [`main`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use lb_algorithms::{Algorithm, BackendSpec, HashKey};
#[cfg(feature = "demo")]
use toy_backend::{Backend, BackendConfig};

use crate::config::{AdminConfig, AdminToken, Config, UpstreamConfig, parse_backend};
use crate::config::{DnsConfig, HealthCheckConfig, OutlierConfig};
use crate::server::{Running, start, start_with, upgrade};

/// An HTTP load balancer you can read. With no arguments, a self-contained demo.
#[derive(Debug, Parser)]
#[command(name = "lb", version, about, after_help = AFTER_HELP)]
pub struct Args {
    /// Check or explain instead of running.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Run from this TOML file (see crates/lb/config/).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Address to accept clients on (repeatable). Quick and demo mode; default 127.0.0.1:8080.
    #[arg(long)]
    pub listen: Vec<SocketAddr>,
    /// A backend, `host:port` or `host:port=weight` (repeatable). Gives quick mode.
    #[arg(long, value_parser = parse_backend)]
    pub backend: Vec<BackendSpec>,
    /// Find the backends by DNS: every A/AAAA address of NAME is a backend on PORT, re-resolved while
    /// lb runs (quick mode instead of --backend; see [upstream.dns]).
    #[arg(long, value_name = "NAME:PORT", value_parser = parse_dns, conflicts_with = "backend")]
    pub dns: Option<(String, u16)>,
    /// Find the backends by the SRV records of NAME (target, port and weight from each record).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["backend", "dns"])]
    pub dns_srv: Option<String>,
    /// The DNS server --dns and --dns-srv ask, `IP` or `IP:PORT` (default: the system's resolv.conf).
    #[arg(long, value_name = "IP:PORT", value_parser = crate::config::parse_resolver)]
    pub resolver: Option<SocketAddr>,
    /// The algorithm (quick mode).
    #[arg(long, default_value = "round-robin")]
    pub algorithm: Algorithm,
    /// What the hashing algorithms hash: ip, path, header:NAME, cookie:NAME, query:NAME.
    #[arg(long)]
    pub hash_key: Option<HashKey>,
    /// Worker threads (0: one per core).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Admin API address (quick mode; demo mode default 127.0.0.1:9900). Anything but loopback needs
    /// --admin-token.
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// Require `Authorization: Bearer TOKEN` on every admin request (quick and demo mode; a config
    /// file uses [admin] token_file). Other local users can read a command line: prefer a file.
    #[arg(long, value_name = "TOKEN")]
    pub admin_token: Option<AdminToken>,
    /// Honour `X-Lb-Explain: 1` (quick mode; always on in demo mode).
    #[arg(long)]
    pub explain: bool,
    /// Health-check every backend with `GET PATH` (quick mode; `/health` in demo mode).
    #[arg(long, value_name = "PATH")]
    pub health_check: Option<String>,
    /// Passive health: failed attempts in a row that take a backend out (default 5; one failed connect
    /// always does). Quick and demo mode.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_fails: Option<u32>,
    /// Passive health: how long a backend is taken out the first time, e.g. `10s` (the default) or
    /// `500ms`; each ejection in a row lasts one more. Quick and demo mode.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub fail_timeout: Option<Duration>,
    /// Turn passive health (outlier detection) off. Quick and demo mode.
    #[arg(long, conflicts_with_all = ["max_fails", "fail_timeout"])]
    pub no_passive_health: bool,
}

/// `--dns NAME:PORT`.
fn parse_dns(s: &str) -> Result<(String, u16), String> {
    let (name, port) = s.rsplit_once(':').ok_or_else(|| format!("{s:?}: expected NAME:PORT"))?;
    let port = port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("{s:?}: bad port"))?;
    Ok((crate::config::check_dns_name(name.to_string())?, port))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime_serde::re::humantime::parse_duration(s).map_err(|e| format!("{e} (try 10s or 500ms)"))
}

/// The passive health (`[upstream.outlier_detection]`) the flags ask for: the defaults, tuned or off.
pub fn passive_health(args: &Args) -> Option<OutlierConfig> {
    if args.no_passive_health {
        return None;
    }
    let mut config = OutlierConfig::default();
    if let Some(n) = args.max_fails {
        config.consecutive_failures = n;
    }
    if let Some(d) = args.fail_timeout {
        config.base_ejection_time = d;
    }
    Some(config)
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a config file: print each error as file:line:column and exit 1, or a summary and exit 0.
    Check {
        /// The file.
        #[arg(long, short = 'c')]
        config: PathBuf,
    },
}

const AFTER_HELP: &str = "\
Examples:
  lb                                   demo: three toy backends behind the proxy on 127.0.0.1:8080
  lb --backend 127.0.0.1:9001 --backend 127.0.0.1:9002=3 --algorithm weighted-round-robin
  lb --backend 127.0.0.1:9001 --backend 127.0.0.1:9002 --max-fails 3 --fail-timeout 30s
  lb --dns app.internal:9001 --resolver 127.0.0.1:5353   backends: every address app.internal has
  lb --config crates/lb/config/lab.toml
  lb check --config lb.toml";

/// Run the command line. Returns the process exit code.
pub async fn main(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(Command::Check { config }) = &args.command {
        return Ok(check(config));
    }
    let files = crate::net::fds::raise_open_files_limit();
    log_open_files(files);
    if let Some(path) = &args.config {
        // Not silently ignored: a token the operator believes is in force must be.
        anyhow::ensure!(
            args.admin_token.is_none(),
            "--admin-token is for quick and demo mode; with --config, set [admin] token_file in {}",
            path.display()
        );
        let mut config = Config::load(path)?;
        if let Some(w) = args.workers {
            config.server.workers = w;
        }
        warn_if_too_few_files(files, &config);
        return start_and_serve(config).await;
    }
    if !args.backend.is_empty() || args.dns.is_some() || args.dns_srv.is_some() {
        anyhow::ensure!(
            args.admin_token.is_none() || args.admin.is_some(),
            "--admin-token protects the admin API, and quick mode has none without --admin ADDR"
        );
        let config = quick_config(&args);
        warn_if_too_few_files(files, &config);
        return start_and_serve(config).await;
    }
    #[cfg(feature = "demo")]
    {
        let demo = start_demo(&args).await?;
        let signals = Signals::new()?;
        print!("{}", demo.banner());
        serve_demo(demo, signals).await
    }
    #[cfg(not(feature = "demo"))]
    anyhow::bail!("this lb was built without its demo (cargo feature `demo`): give --backend or --config")
}

/// Say what the open-files limit is, once at start: it caps how many connections lb can hold (each
/// client and each backend connection is one descriptor).
fn log_open_files(limit: crate::net::fds::OpenFiles) {
    let show = |n: Option<u64>| n.map_or_else(|| "unlimited".to_string(), |n| n.to_string());
    if limit.soft == limit.before {
        tracing::info!(soft = %show(limit.soft), hard = %show(limit.hard), "open files limit");
    } else {
        tracing::info!(
            soft = %show(limit.soft),
            hard = %show(limit.hard),
            raised_from = %show(limit.before),
            "open files limit raised to the hard limit"
        );
    }
}

/// nginx's "worker_connections exceed open file resource limit", for `max_connections`: said at start,
/// where an operator looks, rather than discovered as accept errors under the first real load.
fn warn_if_too_few_files(files: crate::net::fds::OpenFiles, config: &Config) {
    let max = config.server.limits.max_connections;
    if let Some(needed) = crate::net::fds::too_few_for(files, max) {
        tracing::warn!(
            soft = files.soft.unwrap_or(0),
            needed,
            max_connections = max,
            "too few file descriptors for max_connections (a client and a backend connection \
             each): lb will run out of them first; raise the hard open-files limit (ulimit -Hn, \
             systemd LimitNOFILE=) or lower [server.limits] max_connections"
        );
    }
}

/// `lb check`: every error on its own line, `file:line:column: reason`.
pub fn check(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            println!("{}: ok: {}", path.display(), config.summary());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The config quick mode builds from flags.
pub fn quick_config(args: &Args) -> Config {
    let mut upstream = UpstreamConfig::new("app", args.algorithm, args.backend.clone());
    upstream.dns = match (&args.dns, &args.dns_srv) {
        (Some((name, port)), _) => Some(DnsConfig::name(name, *port, args.resolver)),
        (None, Some(srv)) => Some(DnsConfig::srv(srv, args.resolver)),
        (None, None) => None,
    };
    upstream.hash_key = args.hash_key.clone();
    upstream.outlier_detection = passive_health(args);
    if let Some(path) = &args.health_check {
        upstream.health_check =
            Some(HealthCheckConfig { path: path.clone(), ..HealthCheckConfig::default() });
    }
    let mut config = Config { upstreams: vec![upstream], ..Config::default() };
    if !args.listen.is_empty() {
        config.server.listen = args.listen.clone();
    }
    config.server.workers = args.workers.unwrap_or(0);
    if args.admin.is_some() || args.explain {
        config.admin = Some(AdminConfig {
            listen: args.admin,
            explain: args.explain,
            token: args.admin_token.clone(),
            ..AdminConfig::default()
        });
    }
    config
}

fn print_started(running: &Running) {
    for a in &running.listen {
        println!("lb listening on http://{a}");
    }
    for a in &running.listen_tls {
        println!("lb listening on https://{a}");
    }
    if let Some(a) = running.admin {
        println!("admin on http://{a}/");
    }
}

/// The demo: the proxy and its three toy backends.
#[cfg(feature = "demo")]
#[derive(Debug)]
pub struct Demo {
    /// The proxy.
    pub running: Running,
    /// The toy backends behind it.
    pub backends: Vec<Backend>,
    /// The admin token, when `--admin-token` gave one (the banner's `curl` lines carry it).
    pub token: Option<AdminToken>,
}

#[cfg(feature = "demo")]
impl Demo {
    /// What to try, with the real addresses.
    pub fn banner(&self) -> String {
        let url = self.running.url();
        let mut s = String::from("lb demo: round robin over three toy backends, all in this process.\n\n");
        for b in &self.backends {
            s += &format!("  backend {:<10} {}\n", b.name(), b.url());
        }
        s += &format!("  proxy             {url}\n");
        if let Some(a) = self.running.admin {
            // The dashboard reads a token from the URL's fragment, which the browser keeps to itself.
            let browser = match &self.token {
                Some(t) => format!("in a browser: http://{a}/#token={}, the live dashboard", t.expose()),
                None => "open it in a browser: the live dashboard".to_string(),
            };
            s += &format!("  admin             http://{a}/  ({browser})\n");
        }
        s += &format!(
            "\nTry:\n  curl {url}/          (three times: a different backend each time)\n  curl -i -H 'X-Lb-Explain: 1' {url}/\n"
        );
        if let Some(a) = self.running.admin {
            // With a token, the exact header to send, so the lines still work when pasted.
            let auth = self
                .token
                .as_ref()
                .map_or_else(String::new, |t| format!("-H 'Authorization: Bearer {}' ", t.expose()));
            s += &format!("  curl {auth}http://{a}/backends\n  curl {auth}http://{a}/metrics\n");
            s += &format!(
                "  curl {auth}-X POST http://{a}/upstreams/demo/backends/{}/drain\n",
                self.backends.first().map_or_else(String::new, |b| b.addr().to_string())
            );
        }
        s += "\nCtrl-C stops everything.\n";
        s
    }
}

/// Start the demo. `--listen` and `--admin` override its addresses (tests pass port 0).
#[cfg(feature = "demo")]
pub async fn start_demo(args: &Args) -> anyhow::Result<Demo> {
    let mut backends = Vec::new();
    for (i, port) in [9001u16, 9002, 9003].into_iter().enumerate() {
        let config = BackendConfig::new(format!("backend-{}", i + 1));
        // The fixed ports make the lessons' output match; when taken, any free port will do.
        let backend = match Backend::start(SocketAddr::from(([127, 0, 0, 1], port)), config.clone()).await {
            Ok(b) => b,
            Err(_) => Backend::start(SocketAddr::from(([127, 0, 0, 1], 0)), config)
                .await
                .context("starting a toy backend")?,
        };
        backends.push(backend);
    }
    let specs = backends.iter().map(|b| BackendSpec::new(b.addr().to_string())).collect();
    let mut upstream = UpstreamConfig::new("demo", Algorithm::RoundRobin, specs);
    upstream.health_check = Some(HealthCheckConfig::default());
    upstream.outlier_detection = passive_health(args);
    let mut config = Config { upstreams: vec![upstream], ..Config::default() };
    if !args.listen.is_empty() {
        config.server.listen = args.listen.clone();
    }
    config.server.workers = args.workers.unwrap_or(0);
    let admin = args.admin.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9900)));
    // Loopback and, unless asked for, no token: the banner's `curl` lines work as printed, and the
    // Host, Origin and JSON rules keep a browser on this machine from being used against it.
    config.admin =
        Some(AdminConfig { explain: true, token: args.admin_token.clone(), ..AdminConfig::on(admin) });
    let running = start(config)
        .await
        .context("starting the demo proxy (is port 8080 or 9900 taken? try --listen / --admin)")?;
    Ok(Demo { running, backends, token: args.admin_token.clone() })
}

/// Start (with the sockets of the process this one replaces, when started by a binary upgrade) and
/// serve until a signal stops it or hands over to a new binary.
async fn start_and_serve(config: Config) -> anyhow::Result<ExitCode> {
    let mut takeover = upgrade::take_over()?;
    let handed = takeover.as_mut().map(upgrade::TakeOver::sockets).unwrap_or_default();
    let running = start_with(config, handed).await.context("starting lb")?;
    serve(running, takeover).await
}

async fn serve(running: Running, takeover: Option<upgrade::TakeOver>) -> anyhow::Result<ExitCode> {
    // Handlers first, then the "listening" lines: a script that signals as soon as it reads them must
    // not find the default actions (SIGHUP and SIGTERM would kill the process) still in place.
    let mut signals = Signals::new()?;
    print_started(&running);
    if let Some(takeover) = takeover {
        // Said before `ready`, so that it comes before the old process's "new process ... is accepting".
        println!("took over the listening sockets (pid {})", std::process::id());
        takeover.ready()?;
    }
    loop {
        match signals.next().await {
            Signal::Reload => reload(&running).await,
            Signal::Stop => break,
            Signal::Upgrade => match upgrade::hand_over(&running).await {
                Ok(pid) => {
                    println!("upgrade: new process {pid} is accepting");
                    break;
                }
                Err(e) => eprintln!("{e:#}; still serving"),
            },
        }
    }
    println!("shutting down: finishing requests in flight");
    running.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// SIGHUP: read the file again, and say what changed or why nothing did.
async fn reload(running: &Running) {
    {
        let reloader = std::sync::Arc::clone(&running.reloader);
        match tokio::task::spawn_blocking(move || reloader.reload_file()).await {
            Ok(Ok(report)) => {
                println!(
                    "reloaded {}: {} backends added, {} removed, {} kept",
                    report.file,
                    report.summary.added_backends.len(),
                    report.summary.removed_backends.len(),
                    report.summary.kept_backends
                );
                for addr in &report.listen_added {
                    println!("lb listening on {addr}");
                }
                for addr in &report.listen_removed {
                    println!("lb no longer listening on {addr}");
                }
                for w in &report.warnings {
                    eprintln!("reload: {w}");
                }
            }
            Ok(Err(e)) => {
                for line in crate::control::reload::describe(&e) {
                    eprintln!("reload refused, still serving the previous configuration: {line}");
                }
            }
            Err(e) => eprintln!("reload failed: {e}"),
        }
    }
}

#[cfg(feature = "demo")]
async fn serve_demo(demo: Demo, mut signals: Signals) -> anyhow::Result<ExitCode> {
    loop {
        match signals.next().await {
            Signal::Stop => break,
            // The toy backends live in this process: a new one could not take them over.
            Signal::Upgrade => {
                eprintln!("SIGUSR2: the demo cannot upgrade in place (its backends live in it)")
            }
            Signal::Reload => {}
        }
    }
    demo.running.shutdown().await;
    for b in demo.backends {
        b.shutdown().await;
    }
    Ok(ExitCode::SUCCESS)
}

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGHUP: read the configuration file again.
    Reload,
    /// Ctrl-C (SIGINT) or SIGTERM: shut down gracefully.
    Stop,
    /// SIGUSR2: start the binary again and hand it the listening sockets (see `server/upgrade.rs`).
    Upgrade,
}

/// The signals `lb` listens for, registered when this is made.
#[derive(Debug)]
pub struct Signals {
    #[cfg(unix)]
    streams: [tokio::signal::unix::Signal; 4],
}

impl Signals {
    /// Install the handlers now.
    pub fn new() -> anyhow::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                streams: [
                    signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
                    signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
                    signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
                    signal(SignalKind::user_defined2()).context("installing the SIGUSR2 handler")?,
                ],
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// The next signal.
    pub async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        {
            let [int, term, hup, usr2] = &mut self.streams;
            let signal = tokio::select! {
                _ = int.recv() => Signal::Stop,
                _ = term.recv() => Signal::Stop,
                _ = hup.recv() => Signal::Reload,
                _ = usr2.recv() => Signal::Upgrade,
            };
            tracing::info!(?signal, "signal received");
            signal
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Stop
        }
    }
}

/// Ctrl-C or SIGTERM (ignores SIGHUP and SIGUSR2).
pub async fn shutdown_signal() {
    match Signals::new() {
        Ok(mut s) => while s.next().await != Signal::Stop {},
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick(flags: &[&str]) -> Result<Option<OutlierConfig>, clap::Error> {
        let args = Args::try_parse_from(["lb", "--backend", "127.0.0.1:9001"].iter().chain(flags))?;
        Ok(quick_config(&args).upstreams[0].outlier_detection.clone())
    }

    #[test]
    fn quick_mode_has_passive_health_unless_told_otherwise() {
        assert_eq!(quick(&[]).ok(), Some(Some(OutlierConfig::default())));
        let tuned = quick(&["--max-fails", "3", "--fail-timeout", "500ms"]).ok().flatten();
        let tuned =
            tuned.map(|o| (o.consecutive_failures, o.base_ejection_time, o.consecutive_connect_failures));
        assert_eq!(tuned, Some((3, Duration::from_millis(500), 1)));
        assert_eq!(quick(&["--no-passive-health"]).ok(), Some(None));
        assert!(quick(&["--no-passive-health", "--max-fails", "3"]).is_err(), "contradicting flags");
        assert!(quick(&["--max-fails", "0"]).is_err(), "0 would eject on every failure's first count");
        assert!(quick(&["--fail-timeout", "soon"]).is_err());
    }
}
