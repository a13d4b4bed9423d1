//! `toy-backend`: one or more toy HTTP backends in one process.
//!
//! Run with
//!
//! ```sh
//! cargo run --release -p toy-backend -- --listen 127.0.0.1:9001 --name backend-1
//! cargo run --release -p toy-backend -- --count 3 --base-port 9001
//! cargo run --release -p toy-backend -- --count 3 --base-port 8081 --latency exp:20ms --error-rate 0.05
//! ```
//!
//! then `curl http://127.0.0.1:9001/` answers `backend-1`. Ctrl-C (or SIGTERM) stops gracefully.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{Context, bail};
use clap::Parser;
use toy_backend::{Backend, BackendConfig, Knobs, Latency};

#[derive(Debug, Parser)]
#[command(version, about = "Toy HTTP backends with latency, error, capacity and failure knobs")]
struct Args {
    /// Address of a single backend (instead of --host/--base-port/--count).
    #[arg(long, conflicts_with_all = ["host", "base_port", "count"])]
    listen: Option<SocketAddr>,
    /// Name of a single backend [default: backend-1].
    #[arg(long, conflicts_with = "count")]
    name: Option<String>,
    /// Start this many backends, named backend-1..N, on consecutive ports.
    #[arg(long, default_value_t = 1)]
    count: u16,
    /// Port of backend-1; backend-i listens on base-port + i - 1.
    #[arg(long, default_value_t = 9001)]
    base_port: u16,
    /// Interface to listen on (0.0.0.0 inside Docker).
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    host: IpAddr,
    /// Latency per request: none, fixed:20ms, uniform:10ms..50ms, exp:20ms (mean),
    /// lognormal:20ms,0.5 (median, sigma).
    #[arg(long, default_value = "none")]
    latency: Latency,
    /// Fraction of requests answering 500 "injected error" (0.0 to 1.0).
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Serve at most this many requests at once; the rest wait in line.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    capacity: Option<u64>,
    /// Start with /health answering 503.
    #[arg(long)]
    unhealthy: bool,
    /// Start in fail mode: reset connections instead of answering.
    #[arg(long)]
    fail: bool,
    /// Seed for latency and error draws; backend-i uses seed + i - 1.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        // Colours only on a terminal: piped into a file or a test, escape codes are noise.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let args = Args::parse();
    if !(0.0..=1.0).contains(&args.error_rate) {
        bail!("--error-rate must be between 0.0 and 1.0");
    }
    let knobs = Knobs {
        latency: args.latency,
        error_rate: args.error_rate,
        capacity: args.capacity.map(|c| usize::try_from(c).unwrap_or(usize::MAX)),
        healthy: !args.unhealthy,
        fail: args.fail,
    };

    let mut plan: Vec<(SocketAddr, String)> = Vec::new();
    if let Some(listen) = args.listen {
        plan.push((listen, args.name.unwrap_or_else(|| "backend-1".into())));
    } else {
        for i in 0..args.count {
            let port = args.base_port.checked_add(i).context("--base-port + --count goes past port 65535")?;
            let name = match (&args.name, args.count) {
                (Some(name), 1) => name.clone(),
                _ => format!("backend-{}", i + 1),
            };
            plan.push((SocketAddr::new(args.host, port), name));
        }
    }

    let mut backends = Vec::with_capacity(plan.len());
    for (i, (addr, name)) in plan.into_iter().enumerate() {
        let config = BackendConfig { name, knobs: knobs.clone(), seed: args.seed.wrapping_add(i as u64) };
        let backend = Backend::start(addr, config.clone())
            .await
            .with_context(|| format!("{}: cannot listen on {addr}", config.name))?;
        println!("{} listening on http://{}", backend.name(), backend.addr());
        backends.push(backend);
    }

    shutdown_signal().await;
    eprintln!("shutting down");
    shutdown_all(backends).await;
    Ok(())
}

/// Shuts all backends down gracefully, concurrently.
async fn shutdown_all(backends: Vec<Backend>) {
    let tasks: Vec<_> = backends.into_iter().map(|b| tokio::spawn(b.shutdown())).collect();
    for task in tasks {
        let _ = task.await;
    }
}

/// Resolves on Ctrl-C or SIGTERM (what `docker stop` sends).
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
