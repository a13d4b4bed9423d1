//! `client-side`: one service calling three instances of another, balanced in the caller.
//!
//! Run with `cargo run -p client-side -- --algorithm peak-ewma --slow 2`
//!
//! Starts three toy backends in this process (`backend-1` to `backend-3`, on free loopback ports),
//! optionally makes one of them slow, makes `--requests` calls `--concurrency` at a time through
//! `client_side::BalancedClient`, and prints how many calls each instance answered.

use anyhow::Context;
use clap::Parser;
use lb_algorithms::Algorithm;
use toy_backend::Latency;

#[derive(Debug, Parser)]
#[command(about = "Client-side load balancing over three in-process toy backends")]
struct Args {
    /// round-robin, weighted-round-robin, random, least-connections, power-of-two, peak-ewma,
    /// ring-hash, maglev, bounded-load or rendezvous.
    #[arg(long, default_value = "round-robin")]
    algorithm: Algorithm,
    /// Calls in all.
    #[arg(long, default_value_t = 300)]
    requests: usize,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Make this backend (1, 2 or 3) slow.
    #[arg(long)]
    slow: Option<usize>,
    /// How slow: fixed:50ms, uniform:10ms..90ms, exp:20ms, lognormal:20ms,0.5.
    #[arg(long, default_value = "fixed:50ms")]
    slow_latency: Latency,
    /// Seed of the randomised algorithms.
    #[arg(long, default_value_t = 0x5eed)]
    seed: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = client_side::RunConfig {
        algorithm: args.algorithm,
        requests: args.requests,
        concurrency: args.concurrency,
        slow: args.slow,
        slow_latency: args.slow_latency,
        seed: args.seed,
    };
    let report = client_side::run(config).await.context("client-side demo")?;
    print!("{report}");
    Ok(())
}
