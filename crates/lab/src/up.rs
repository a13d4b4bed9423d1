//! `lab up BALANCER`: the three toy backends in this process and the balancer as a child process
//! on a committed config, until Ctrl-C.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::signal::unix::{SignalKind, signal};
use toy_backend::{Backend, BackendConfig, Knobs};

use crate::balancer::Balancer;
use crate::programs;
use crate::render::Ports;
use crate::repo;
use crate::run::{Output, Prepared, Running};

/// What to run.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Which balancer.
    pub balancer: Balancer,
    /// A config file name in the balancer's folder (default: round robin, or lb's lab.toml).
    pub config: Option<String>,
    /// backend-1's port; every port moves by the same offset (default 9001: the lab's ports).
    pub base_port: u16,
}

/// Runs until Ctrl-C (or until the balancer exits on its own, which is an error).
pub async fn up(root: &Path, opts: &UpOptions) -> anyhow::Result<()> {
    // The signal streams are made once, first thing (a Ctrl-C during start-up still stops cleanly): a
    // `ctrl_c()` future made anew on each turn of the loop would miss a Ctrl-C that arrives between two
    // turns.
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for Ctrl-C")?;
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let balancer = opts.balancer;
    let name = opts.config.clone().unwrap_or_else(|| balancer.default_config().to_string());
    let committed = committed_config(root, balancer, &name)?;
    let Some(program) = programs::find(balancer) else {
        bail!("{}", programs::missing_message(balancer));
    };
    let ports = Ports::shifted(balancer, opts.base_port)?;
    let backends = start_backends(&ports).await?;
    let prepared = Prepared::new(balancer, &committed, ports)?;
    let rendered = prepared.rendered.clone();
    let mut running = Running::start(prepared, &program, Output::Inherit).await?;
    let config =
        ConfigFiles { name: &name, rendered: &rendered, committed: repo::relative(root, &committed) };
    print!("{}", banner(&running, &backends, &config));

    let exited = loop {
        tokio::select! {
            _ = interrupt.recv() => break None,
            _ = terminate.recv() => break None,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if let Ok(Some(status)) = running.try_wait() {
                    break Some(status);
                }
            }
        }
    };
    running.stop();
    for backend in backends {
        backend.shutdown().await;
    }
    match exited {
        None => {
            println!("stopped {balancer} and the backends");
            Ok(())
        }
        Some(status) => bail!("{balancer} exited on its own with {status}"),
    }
}

/// The committed config `name` of `balancer`, or an error listing the ones there are.
fn committed_config(root: &Path, balancer: Balancer, name: &str) -> anyhow::Result<PathBuf> {
    let committed = balancer.config_path(root, name);
    if !committed.is_file() {
        let available: Vec<String> = balancer
            .configs(root)
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        bail!(
            "{} does not exist; {balancer} configs: {}",
            repo::relative(root, &committed).display(),
            available.join(", ")
        );
    }
    Ok(committed)
}

/// backend-1..3 on `ports.backends`, in this process.
async fn start_backends(ports: &Ports) -> anyhow::Result<Vec<Backend>> {
    let mut backends = Vec::new();
    for (i, port) in ports.backends.iter().enumerate() {
        let config =
            BackendConfig { name: format!("backend-{}", i + 1), knobs: Knobs::default(), seed: i as u64 + 1 };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, *port));
        backends.push(
            Backend::start(addr, config)
                .await
                .with_context(|| format!("starting backend-{} on {addr}", i + 1))?,
        );
    }
    Ok(backends)
}

/// The config a run uses, as the banner names it.
#[derive(Debug, Clone, Copy)]
struct ConfigFiles<'a> {
    /// The committed file's name in its folder (`round-robin.conf`).
    name: &'a str,
    /// The rendered copy in the scratch folder.
    rendered: &'a Path,
    /// The committed file, relative to the repository root: the same on every checkout, so a lesson
    /// can show it.
    committed: &'a Path,
}

/// What `lab up` prints once everything listens: where things are and what to try.
fn banner(running: &Running, backends: &[Backend], config: &ConfigFiles<'_>) -> String {
    let balancer = running.balancer();
    let url = running.url();
    let backends: Vec<String> = backends.iter().map(|b| format!("{} {}", b.name(), b.url())).collect();
    let mut out = format!("backends: {}\n", backends.join(", "));
    let pid = running.pid().unwrap_or(0);
    let _ = writeln!(out, "{balancer} ({}) pid {pid} on {url}", config.name);
    let (rendered, committed) = (config.rendered.display(), config.committed.display());
    let _ = writeln!(out, "  config:   {rendered} (rendered from {committed})");
    let _ = writeln!(out, "  try:      curl {url}/");
    let _ = writeln!(out, "            for i in $(seq 6); do curl -s {url}/; done");
    if config.name.contains("hash") || config.name.contains("maglev") {
        let _ = writeln!(
            out,
            "            curl -H 'X-User: alice' {url}/   (the same user lands on the same backend)"
        );
    }
    if let Some(stats) = running.stats_url() {
        let _ = writeln!(out, "  stats:    {stats}");
    }
    out.push_str("Ctrl-C stops everything.\n");
    out
}
