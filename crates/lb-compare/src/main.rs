//! The `lb-compare` command: experiments that compare load-balancing algorithms.
//!
//! Run with
//!
//! ```text
//! cargo run --release -p lb-compare -- sequence --algorithm weighted-round-robin --weights 5,1,1 --picks 14
//! cargo run --release -p lb-compare -- balls --bins 10000 --balls 10000 --choices 2 --trials 20
//! cargo run --release -p lb-compare -- supermarket --servers 500 --lambda 0.9 --choices 2 --arrivals 10000000
//! cargo run --release -p lb-compare -- stale --servers 100 --periods 0,1,2,5,10 --balancers 1,10
//! cargo run --release -p lb-compare -- hashing --algorithm maglev --backends 100 --keys 1000000 --remove 0.1
//! cargo run --release -p lb-compare -- scenario crates/lb-compare/scenarios/linkerd-beyond-round-robin.toml
//! cargo run --release -p lb-compare -- live crates/lb-compare/scenarios/one-slow.toml --compare
//! cargo build --release -p lb -p toy-backend -p loadgen && cargo run --release -p lb-compare -- balancers
//! cargo run --release -p lb-compare -- report --out docs/report --quick
//! ```
//!
//! Each prints a table, or JSON with `--json`; a progress bar goes to stderr on long runs. This file
//! only reads the arguments, runs the experiment and prints what it returns: the experiments and their
//! tables are in the library, one module each.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lb_algorithms::Algorithm;
use lb_compare::scenario::{Nanos, Scenario};
use lb_compare::{balancers, balls, hashing, live, report, scenario, sequence, sim, stale, supermarket};
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(
    name = "lb-compare",
    about = "Compare load-balancing algorithms: models, hashing, simulated scenarios"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The first N picks of an algorithm on an idle fleet, as backend letters.
    Sequence(SequenceArgs),
    /// Balls into bins with D random choices: the max load.
    Balls(BallsArgs),
    /// Mitzenmacher's supermarket model: Poisson arrivals join the shortest of D random queues.
    Supermarket(SupermarketArgs),
    /// Several balancers and old load information: random, power of two and least connections.
    Stale(StaleArgs),
    /// Balance and disruption of a consistent-hashing algorithm.
    Hashing(HashingArgs),
    /// Simulate a scenario file through every algorithm (the real balancers, in simulated time).
    Scenario(ScenarioArgs),
    /// Run a scenario file for real: toy backends, the real lb, open-loop load from loadgen.
    Live(LiveArgs),
    /// Per-core benchmark of direct, lb, nginx, HAProxy and Envoy (method: docs/lessons/benchmarking-balancers.md).
    Balancers(BalancersArgs),
    /// Run a standard set of experiments and write a Markdown report with SVG charts.
    Report(ReportArgs),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Sequence(args) => args.run(),
        Command::Balls(args) => args.run(),
        Command::Supermarket(args) => args.run(),
        Command::Stale(args) => args.run(),
        Command::Hashing(args) => args.run(),
        Command::Scenario(args) => args.run(),
        Command::Live(args) => args.run(),
        Command::Balancers(args) => args.run(),
        Command::Report(args) => args.run(),
    }
}

// The arguments of each subcommand, and how it runs. (Plain comments: a doc comment on these structs
// would become the subcommand's help, which the variants above give.)

#[derive(Debug, Args)]
struct SequenceArgs {
    /// Algorithm name (round-robin, weighted-round-robin, random, ...).
    #[arg(long)]
    algorithm: Algorithm,
    /// One weight per backend; backends are named a, b, c...
    #[arg(long, value_delimiter = ',', default_value = "1,1,1")]
    weights: Vec<u32>,
    /// Number of picks.
    #[arg(long, default_value_t = 12)]
    picks: usize,
    /// Hashing algorithms get keys key-0 .. key-(K-1), cycled.
    #[arg(long, default_value_t = 4)]
    key_count: usize,
    /// Seed of the randomised algorithms.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl SequenceArgs {
    fn run(self) -> Result<()> {
        let SequenceArgs { algorithm, weights, picks, key_count, seed, json } = self;
        let report = sequence::run(&sequence::SequenceSpec { algorithm, weights, picks, key_count, seed })?;
        print_report(json, &report, sequence::text)
    }
}

#[derive(Debug, Args)]
struct BallsArgs {
    /// Number of bins n.
    #[arg(long, default_value_t = 10_000)]
    bins: usize,
    /// Number of balls m.
    #[arg(long, default_value_t = 10_000)]
    balls: usize,
    /// Bins sampled per ball; the ball goes to the least loaded.
    #[arg(long, default_value_t = 2)]
    choices: usize,
    /// Independent trials.
    #[arg(long, default_value_t = 20)]
    trials: usize,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl BallsArgs {
    fn run(self) -> Result<()> {
        let BallsArgs { bins, balls, choices, trials, seed, json } = self;
        if bins == 0 || choices == 0 {
            bail!("--bins and --choices must be at least 1");
        }
        let bar = progress(trials as u64, "trials", json || trials < 10);
        let spec = balls::BallsSpec { bins, balls, choices, trials, seed };
        let report = balls::run(&spec, || bar.inc(1));
        bar.finish_and_clear();
        print_report(json, &report, |r| balls::text(&spec, r))
    }
}

#[derive(Debug, Args)]
struct SupermarketArgs {
    /// Number of servers n.
    #[arg(long, default_value_t = 500)]
    servers: usize,
    /// Arrival rate per server (0 < lambda < 1); service rate is 1.
    #[arg(long, default_value_t = 0.9)]
    lambda: f64,
    /// Queues sampled per arrival.
    #[arg(long, default_value_t = 2)]
    choices: usize,
    /// Arrivals to simulate, warm-up included.
    #[arg(long, default_value_t = 10_000_000)]
    arrivals: u64,
    /// Fraction of arrivals at the start not measured.
    #[arg(long, default_value_t = 0.1)]
    warmup: f64,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl SupermarketArgs {
    fn run(self) -> Result<()> {
        let SupermarketArgs { servers, lambda, choices, arrivals, warmup, seed, json } = self;
        if !(lambda > 0.0 && lambda < 1.0) || servers == 0 || choices == 0 {
            bail!("need 0 < --lambda < 1, --servers >= 1, --choices >= 1");
        }
        let bar = progress(arrivals, "arrivals", json || arrivals < 5_000_000);
        let spec = supermarket::SupermarketSpec { servers, lambda, choices, arrivals, warmup, seed };
        let started = Instant::now();
        let report = supermarket::run(&spec, |a| bar.set_position(a));
        let wall = started.elapsed().as_secs_f64();
        bar.finish_and_clear();
        // Speed goes to stderr: it changes from run to run, the results on stdout do not.
        eprintln!(
            "simulated {arrivals} requests in {wall:.2} s: {:.1} million requests/s",
            arrivals as f64 / wall / 1e6
        );
        print_report(json, &report, |r| supermarket::text(&spec, r))
    }
}

#[derive(Debug, Args)]
struct StaleArgs {
    /// Number of servers n.
    #[arg(long, default_value_t = 100)]
    servers: usize,
    /// Arrival rate per server (0 < lambda < 1); service rate is 1.
    #[arg(long, default_value_t = 0.9)]
    lambda: f64,
    /// Board refresh periods, in mean service times (0: current information); one row each.
    #[arg(long, value_delimiter = ',', default_values_t = [0.0, 0.5, 1.0, 2.0, 5.0, 10.0])]
    periods: Vec<f64>,
    /// Numbers of balancers that each see only their own requests; one row each.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 10, 50])]
    balancers: Vec<usize>,
    /// Arrivals to simulate per row and strategy, warm-up included.
    #[arg(long, default_value_t = 1_000_000)]
    arrivals: u64,
    /// Fraction of arrivals at the start not measured.
    #[arg(long, default_value_t = 0.1)]
    warmup: f64,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl StaleArgs {
    fn run(self) -> Result<()> {
        let StaleArgs { servers, lambda, periods, balancers, arrivals, warmup, seed, json } = self;
        if !(lambda > 0.0 && lambda < 1.0) || servers < 2 || balancers.contains(&0) {
            bail!("need 0 < --lambda < 1, --servers >= 2, --balancers >= 1");
        }
        if periods.iter().any(|p| !(p.is_finite() && *p >= 0.0)) {
            bail!("--periods must be 0 or more");
        }
        let views = periods
            .iter()
            .map(|&period| stale::View::Board { period })
            .chain(balancers.iter().map(|&balancers| stale::View::Own { balancers }));
        let spec = |view| stale::StaleSpec { servers, lambda, view, arrivals, warmup, seed };
        let rows: Vec<stale::SweepRow> =
            views.map(|view| stale::SweepRow { view, results: stale::run_all(&spec(view)) }).collect();
        let first = spec(stale::View::Board { period: 0.0 });
        print_report(json, &rows, |r| stale::text(&first, r))
    }
}

#[derive(Debug, Args)]
struct HashingArgs {
    /// ring-hash, maglev, bounded-load or rendezvous.
    #[arg(long)]
    algorithm: Algorithm,
    /// Number of backends.
    #[arg(long, default_value_t = 100)]
    backends: usize,
    /// Number of keys.
    #[arg(long, default_value_t = 100_000)]
    keys: usize,
    /// Ring hash: points per backend.
    #[arg(long)]
    vnodes: Option<u32>,
    /// Maglev: lookup table size (a prime).
    #[arg(long)]
    table_size: Option<usize>,
    /// Remove this fraction of the backends and count the keys that move.
    #[arg(long)]
    remove: Option<f64>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl HashingArgs {
    fn run(self) -> Result<()> {
        let HashingArgs { algorithm, backends, keys, vnodes, table_size, remove, json } = self;
        if !algorithm.is_hashing() {
            bail!("{algorithm} is not a hashing algorithm (ring-hash, maglev, bounded-load, rendezvous)");
        }
        if backends == 0 || keys == 0 {
            bail!("--backends and --keys must be at least 1");
        }
        let lookups = keys as u64 * if remove.is_some() { 2 } else { 1 };
        let bar = progress(lookups, "lookups", json || lookups < 2_000_000);
        let spec = hashing::HashingSpec { algorithm, backends, keys, vnodes, table_size, remove };
        let report = hashing::run(&spec, || bar.inc(1))?;
        bar.finish_and_clear();
        print_report(json, &report, |r| hashing::text(&spec, r))
    }
}

#[derive(Debug, Args)]
struct ScenarioArgs {
    /// The scenario TOML (see crates/lb-compare/scenarios/).
    file: PathBuf,
    /// Only these algorithms (comma-separated); default all.
    #[arg(long, value_delimiter = ',')]
    algorithm: Vec<Algorithm>,
    /// Seed (default: the file's, else 1).
    #[arg(long)]
    seed: Option<u64>,
    /// Count requests slower than this.
    #[arg(long, default_value = "1s")]
    threshold: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl ScenarioArgs {
    fn run(self) -> Result<()> {
        let sc = read_scenario(&self.file)?;
        let threshold = parse_threshold(&self.threshold)?;
        let algorithms = chosen_or(self.algorithm, &sc, || Algorithm::ALL.to_vec());
        let seed = self.seed.or(sc.seed).unwrap_or(1);
        let steps = sc.duration.0 / 1_000_000;
        let bar = progress(steps * algorithms.len() as u64, "simulating", self.json);
        let report = sim::run_all(&sc, &algorithms, sim::RunOptions { seed, threshold }, |i, t| {
            bar.set_message(algorithms[i].name());
            bar.set_position(i as u64 * steps + t / 1_000_000);
        });
        bar.finish_and_clear();
        print_report(self.json, &report, |r| sim::heading(r) + &sim::text(r))
    }
}

#[derive(Debug, Args)]
struct LiveArgs {
    /// The scenario TOML (see crates/lb-compare/scenarios/).
    file: PathBuf,
    /// Only these algorithms (comma-separated); default the file's, else all but the hashing ones.
    #[arg(long, alias = "algorithm", value_delimiter = ',')]
    algorithms: Vec<Algorithm>,
    /// Multiply the file's time line by this (default: ~6 s per algorithm). Service times stay.
    #[arg(long)]
    duration_scale: Option<f64>,
    /// Multiply the file's rate (or clients) by this, for a machine that cannot carry it.
    #[arg(long, default_value_t = 1.0)]
    rate_scale: f64,
    /// Open-loop connections of the load generator.
    #[arg(long, default_value_t = 256)]
    connections: usize,
    /// Seed (default: the file's, else 1).
    #[arg(long)]
    seed: Option<u64>,
    /// Count requests slower than this.
    #[arg(long, default_value = "1s")]
    threshold: String,
    /// Also simulate the same scaled scenario and print both.
    #[arg(long)]
    compare: bool,
    /// Print JSON (with --compare: {"simulated": ..., "live": ...}).
    #[arg(long)]
    json: bool,
}

impl LiveArgs {
    fn run(self) -> Result<()> {
        let json = self.json;
        let original = read_scenario(&self.file)?;
        let threshold = parse_threshold(&self.threshold)?;
        let rate_scale = self.rate_scale;
        if !(rate_scale > 0.0 && rate_scale.is_finite()) {
            bail!("--rate-scale must be a positive number");
        }
        let duration_scale = self.duration_scale.unwrap_or_else(|| live::default_duration_scale(&original));
        if !(duration_scale > 0.0 && duration_scale.is_finite()) {
            bail!("--duration-scale must be a positive number");
        }
        let sc = live::scale(&original, duration_scale, rate_scale);
        let algorithms = chosen_or(self.algorithms, &sc, || {
            Algorithm::ALL.iter().copied().filter(|a| !a.is_hashing()).collect()
        });
        let seed = self.seed.or(sc.seed).unwrap_or(1);
        let options = live::LiveOptions { seed, threshold, connections: self.connections };
        let note = live::scaling_note(&original, &sc, duration_scale, rate_scale, algorithms.len());
        // With --json the note goes to stderr, so stdout stays one JSON document.
        if json {
            eprintln!("{note}");
        }
        let simulated = self
            .compare
            .then(|| sim::run_all(&sc, &algorithms, sim::RunOptions { seed, threshold }, |_, _| {}));
        let secs = sc.duration.0 as f64 / 1e9;
        let report = runtime()?.block_on(live::run_all(&sc, &algorithms, options, |i| {
            if !json {
                eprintln!("running {} for {secs:.1} s...", algorithms.get(i).map_or("?", |a| a.name()));
            }
        }))?;
        let live_report = live::LiveReport { report, mode: "live", duration_scale, rate_scale };
        match (json, simulated) {
            (true, Some(sim)) => println!("{}", serde_json::json!({ "simulated": sim, "live": live_report })),
            (true, None) => println!("{}", serde_json::to_string(&live_report)?),
            (false, simulated) => print!("{}", live::text(&note, &live_report, simulated.as_ref())),
        }
        Ok(())
    }
}

#[derive(Debug, Args)]
struct BalancersArgs {
    /// Rounds, in alternating order; medians are reported with min-max.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Length of each run, e.g. 5s.
    #[arg(long, default_value = "5s")]
    duration: String,
    /// Keep-alive connections of the load generator.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Only these (comma-separated): direct, lb, nginx, haproxy, envoy.
    #[arg(long, value_delimiter = ',', value_parser = parse_target)]
    only: Vec<balancers::Target>,
    /// What answers behind the balancers: toy (toy-backend) or nginx (`return 200`).
    #[arg(long, default_value = "toy", value_parser = parse_backends)]
    backends: balancers::Backends,
    /// How clients speak to the balancers: http1 (loadgen), https (wrk), h2 or h2c (h2load); the
    /// backends always get plain HTTP/1.1.
    #[arg(long, default_value = "http1", value_parser = parse_protocol)]
    protocol: balancers::Protocol,
    /// Every request on a new connection (http1 and https, with wrk): handshakes/s and CPU per handshake.
    #[arg(long)]
    new_connections: bool,
    /// Requests in flight per HTTP/2 connection (h2load -m), for h2 and h2c.
    #[arg(long, default_value_t = 10)]
    streams: usize,
    /// Port of backend-1 (below 32768); the balancers' ports move with it.
    #[arg(long, default_value_t = 25001)]
    base_port: u16,
    /// Idle connections held for the memory figure (0: skip).
    #[arg(long, default_value_t = 1000)]
    idle_connections: usize,
    /// Requests of the strace run (0: skip).
    #[arg(long, default_value_t = 5000)]
    strace_requests: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn parse_target(s: &str) -> Result<balancers::Target, String> {
    s.parse()
}

fn parse_backends(s: &str) -> Result<balancers::Backends, String> {
    s.parse()
}

fn parse_protocol(s: &str) -> Result<balancers::Protocol, String> {
    s.parse()
}

impl BalancersArgs {
    fn run(self) -> Result<()> {
        let duration = scenario::parse_duration(&self.duration)
            .with_context(|| format!("--duration {:?}: expected e.g. 5s", self.duration))?;
        if self.rounds == 0 || self.connections == 0 || duration == 0 {
            bail!("--rounds, --connections and --duration must be above 0");
        }
        let mut spec = balancers::BalancersSpec::new(repo_root());
        spec.rounds = self.rounds;
        spec.duration = std::time::Duration::from_nanos(duration);
        spec.connections = self.connections;
        if !self.only.is_empty() {
            spec.only = self.only;
        }
        spec.backends = self.backends;
        spec.protocol = self.protocol;
        spec.new_connections = self.new_connections;
        spec.h2_streams = self.streams.max(1);
        spec.base_port = self.base_port;
        spec.idle_connections = self.idle_connections;
        spec.strace_requests = self.strace_requests;
        let report = runtime()?.block_on(balancers::run(spec, |line| eprintln!("{line}")))?;
        print_report(self.json, &report, balancers::text)
    }
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// Output folder (created).
    #[arg(long)]
    out: PathBuf,
    /// Smaller runs (seconds instead of minutes).
    #[arg(long)]
    quick: bool,
    /// Also run `balancers` (needs the release binaries of lb, toy-backend and loadgen).
    #[arg(long)]
    with_balancers: bool,
    /// Also run the scenarios live (tens of seconds each).
    #[arg(long)]
    with_live: bool,
}

impl ReportArgs {
    fn run(self) -> Result<()> {
        let ReportArgs { out, quick, with_balancers, with_live } = self;
        let options = report::ReportOptions { quick, with_balancers, with_live, root: repo_root() };
        let written = runtime()?.block_on(report::write(&out, &options, |line| eprintln!("{line}")))?;
        println!("wrote {} ({} charts)", out.join("README.md").display(), written.charts.len());
        Ok(())
    }
}

/// The report as one line of JSON, or as its text.
fn print_report<R: Serialize>(json: bool, report: &R, text: impl FnOnce(&R) -> String) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        print!("{}", text(report));
    }
    Ok(())
}

/// A progress bar on stderr of `len` steps, or a hidden one when `hidden` (with `--json`); indicatif also
/// hides it by itself when stderr is not a terminal, so piped output and tests stay clean.
fn progress(len: u64, message: &str, hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>20} [{bar:40}] {percent:>3}% {elapsed_precise} eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message.to_string());
    bar
}

/// A scenario file, named after the file.
fn read_scenario(file: &Path) -> Result<Scenario> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let name = file.file_stem().map_or_else(|| "scenario".into(), |s| s.to_string_lossy().into_owned());
    Ok(Scenario::parse(&name, &text)?)
}

fn parse_threshold(threshold: &str) -> Result<Nanos> {
    scenario::parse_duration(threshold)
        .with_context(|| format!("--threshold {threshold:?}: expected e.g. 1s or 500ms"))
}

/// The algorithms named on the command line, else the file's, else `default`.
fn chosen_or(
    chosen: Vec<Algorithm>,
    sc: &Scenario,
    default: impl FnOnce() -> Vec<Algorithm>,
) -> Vec<Algorithm> {
    match (chosen.is_empty(), sc.algorithms.is_empty()) {
        (false, _) => chosen,
        (true, false) => sc.algorithms.clone(),
        (true, true) => default(),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")
}

fn repo_root() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_default();
    lab::repo::find_root(&cwd).unwrap_or(cwd)
}
