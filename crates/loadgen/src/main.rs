//! The `loadgen` command.
//!
//! Run with
//!
//! ```text
//! cargo run --release -p loadgen -- http://127.0.0.1:8080/ --connections 64 --duration 5s
//! cargo run --release -p loadgen -- http://127.0.0.1:8080/ --connections 64 --duration 5s --rate 20000
//! ```
//!
//! Without `--rate` it is a closed loop (throughput); with it, an open loop whose latencies are measured
//! from each request's intended send time (see the library docs on coordinated omission).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use loadgen::{LoadSpec, Mode, run};

#[derive(Debug, Parser)]
#[command(name = "loadgen", about = "HTTP/1.1 load generator: closed loop, or open loop at a fixed rate")]
struct Cli {
    /// Target URL, http://host:port/path
    url: String,
    /// Concurrent connections.
    #[arg(long, short = 'c', default_value_t = 64)]
    connections: usize,
    /// How long to send, e.g. 5s or 500ms.
    #[arg(long, short = 'd', default_value = "5s")]
    duration: String,
    /// Open loop at this many requests per second (default: closed loop).
    #[arg(long)]
    rate: Option<f64>,
    /// One connection per request.
    #[arg(long)]
    no_keepalive: bool,
    /// Extra header, `Name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Give up on a request after this long.
    #[arg(long)]
    timeout: Option<String>,
    /// OS threads, each with its own single-threaded runtime.
    #[arg(long, short = 't', default_value_t = 1)]
    threads: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn parse_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        bail!("duration {text:?}: expected a unit, e.g. 5s, 500ms, 1m");
    };
    let secs: f64 = number.parse().with_context(|| format!("duration {text:?}"))?;
    Duration::try_from_secs_f64(secs * scale).with_context(|| format!("duration {text:?}"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let uri: http::Uri = cli.url.parse().with_context(|| format!("url {:?}", cli.url))?;
    if uri.scheme_str() != Some("http") {
        bail!("only http:// URLs are supported");
    }
    let authority = uri.authority().context("url needs a host")?.clone();
    let port = authority.port_u16().unwrap_or(80);
    let target = tokio::net::lookup_host((authority.host(), port))
        .await
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .with_context(|| format!("{authority} has no address"))?;

    let mut spec = LoadSpec::new(target);
    spec.path = uri.path_and_query().map_or_else(|| "/".to_string(), |p| p.to_string());
    spec.host = authority.to_string();
    spec.duration = parse_duration(&cli.duration)?;
    spec.keep_alive = !cli.no_keepalive;
    spec.threads = cli.threads;
    spec.timeout = cli.timeout.as_deref().map(parse_duration).transpose()?;
    spec.mode = match cli.rate {
        Some(rate_per_sec) => Mode::Open { rate_per_sec, connections: cli.connections },
        None => Mode::Closed { connections: cli.connections },
    };
    for h in &cli.headers {
        let (name, value) =
            h.split_once(':').with_context(|| format!("header {h:?}: expected `Name: value`"))?;
        spec.headers.push((name.trim().to_string(), value.trim().to_string()));
    }

    let report = run(spec).await?;
    let s = report.summary();
    if cli.json {
        println!("{}", serde_json::to_string(&s)?);
        return Ok(());
    }
    println!("{} requests in {:.2} s: {:.0} requests/s", s.requests, s.elapsed_s, s.rps);
    let statuses: Vec<String> = s.status_counts.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    println!("status: {}   errors: {}   missed: {}", statuses.join(", "), s.errors, s.missed);
    let ms = |us: u64| us as f64 / 1e3;
    println!(
        "latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        ms(s.p50_us),
        ms(s.p90_us),
        ms(s.p99_us),
        ms(s.p999_us),
        ms(s.max_us)
    );
    if cli.rate.is_some() {
        println!("(open loop: latency from each request's intended send time)");
    }
    Ok(())
}
