//! `round-robin`: lesson one's proxy, with the seed's defaults.
//!
//! Run with
//!
//! ```sh
//! cargo run -p toy-backend -- --count 3 --base-port 8081   # terminal 1: the seed's three backends
//! cargo run -p round-robin                                 # terminal 2: the proxy on :8080
//! for i in 1 2 3 4 5 6; do curl -s localhost:8080/; done   # terminal 3: backend-1, 2, 3, 1, 2, 3
//! ```

use anyhow::Context;
use clap::Parser;
use http::Uri;
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
#[command(version, about = "Round-robin HTTP reverse proxy (lesson one)")]
struct Args {
    /// Address to listen on (the seed's `:8080`).
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: String,
    /// A backend URL; repeat the flag for each backend.
    #[arg(long = "backend", default_values = ["http://localhost:8081", "http://localhost:8082", "http://localhost:8083"])]
    backends: Vec<Uri>,
    /// Idle connections kept per backend; 2 behaves like Go's default transport (churn under load).
    #[arg(long, default_value_t = 1024)]
    max_idle_per_host: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        // Colours only on a terminal: piped into a file or a test, escape codes are noise.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let args = Args::parse();
    let listener =
        TcpListener::bind(&args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(listen = %listener.local_addr()?, backends = ?args.backends, "round-robin proxy started");
    let lb = round_robin::RoundRobin::with_idle_pool(args.backends, args.max_idle_per_host)?;
    round_robin::serve(listener, lb, shutdown_signal()).await;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sig) => drop(sig.recv().await),
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
