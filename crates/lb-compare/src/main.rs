//! The `lb-compare` command: experiments that compare load-balancing algorithms.
//!
//! Run with
//!
//! ```text
//! cargo run --release -p lb-compare -- sequence --algorithm weighted-round-robin --weights 5,1,1 --picks 14
//! cargo run --release -p lb-compare -- balls --bins 10000 --balls 10000 --choices 2 --trials 20
//! cargo run --release -p lb-compare -- supermarket --servers 500 --lambda 0.9 --choices 2 --arrivals 10000000
//! cargo run --release -p lb-compare -- hashing --algorithm maglev --backends 100 --keys 1000000 --remove 0.1
//! cargo run --release -p lb-compare -- scenario crates/lb-compare/scenarios/linkerd-beyond-round-robin.toml
//! cargo run --release -p lb-compare -- live crates/lb-compare/scenarios/one-slow.toml --compare
//! cargo build --release -p lb -p toy-backend -p loadgen && cargo run --release -p lb-compare -- balancers
//! cargo run --release -p lb-compare -- report --out docs/report --quick
//! ```
//!
//! Each prints a table, or JSON with `--json`; a progress bar goes to stderr on long runs.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use lb_algorithms::Algorithm;
use lb_compare::output::{progress, scenario_text, table};
use lb_compare::{balancers, balls, hashing, live, report, scenario, sequence, sim, supermarket};

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
    Sequence {
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
    },
    /// Balls into bins with D random choices: the max load.
    Balls {
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
    },
    /// Mitzenmacher's supermarket model: Poisson arrivals join the shortest of D random queues.
    Supermarket {
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
    },
    /// Balance and disruption of a consistent-hashing algorithm.
    Hashing {
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
    },
    /// Simulate a scenario file through every algorithm (the real balancers, in simulated time).
    Scenario {
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
    },
    /// Run a scenario file for real: toy backends, the real lb, open-loop load from loadgen.
    Live {
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
    },
    /// Per-core benchmark of direct, lb, nginx, HAProxy and Envoy (see BENCHMARKING.md).
    Balancers {
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
    },
    /// Run a standard set of experiments and write a Markdown report with SVG charts.
    Report {
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
    },
}

fn parse_target(s: &str) -> Result<balancers::Target, String> {
    s.parse()
}

fn parse_backends(s: &str) -> Result<balancers::Backends, String> {
    s.parse()
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

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Sequence { algorithm, weights, picks, key_count, seed, json } => {
            let report =
                sequence::run(&sequence::SequenceSpec { algorithm, weights, picks, key_count, seed })?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{}: {}", report.algorithm, report.letters);
                let indices: Vec<String> =
                    report.picks.iter().map(|p| p.map_or_else(|| "-".into(), |i| i.to_string())).collect();
                println!("indices: {}", indices.join(" "));
                let counts: Vec<String> = report
                    .counts
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("{}={c}", sequence::backend_name(i)))
                    .collect();
                println!("counts: {}", counts.join(" "));
            }
        }
        Command::Balls { bins, balls: m, choices, trials, seed, json } => {
            if bins == 0 || choices == 0 {
                bail!("--bins and --choices must be at least 1");
            }
            let bar = progress(trials as u64, "trials", json || trials < 10);
            let spec = balls::BallsSpec { bins, balls: m, choices, trials, seed };
            let report = balls::run(&spec, || bar.inc(1));
            bar.finish_and_clear();
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "balls into bins: n={bins} bins, m={m} balls, d={choices}, {trials} trials, seed {seed}"
                );
                let loads: Vec<String> = report.max_load.iter().map(u32::to_string).collect();
                println!("max load per trial: {}", loads.join(" "));
                println!("mean max load: {:.2}", report.mean_max_load);
                let estimate = if choices == 1 {
                    format!("ln n / ln ln n = {:.2}", balls::one_choice_estimate(bins))
                } else {
                    format!("ln ln n / ln d = {:.2} (+ a constant)", balls::d_choice_estimate(bins, choices))
                };
                println!("first-order theory (m = n): {estimate}");
            }
        }
        Command::Supermarket { servers, lambda, choices, arrivals, warmup, seed, json } => {
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
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print_supermarket(&spec, &report);
            }
        }
        Command::Hashing { algorithm, backends, keys, vnodes, table_size, remove, json } => {
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
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print_hashing(&spec, &report);
            }
        }
        Command::Scenario { file, algorithm, seed, threshold, json } => {
            let text =
                std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let name =
                file.file_stem().map_or_else(|| "scenario".into(), |s| s.to_string_lossy().into_owned());
            let sc = scenario::Scenario::parse(&name, &text)?;
            let threshold = scenario::parse_duration(&threshold)
                .with_context(|| format!("--threshold {threshold:?}: expected e.g. 1s or 500ms"))?;
            let algorithms = match (algorithm.is_empty(), sc.algorithms.is_empty()) {
                (false, _) => algorithm,
                (true, false) => sc.algorithms.clone(),
                (true, true) => Algorithm::ALL.to_vec(),
            };
            let seed = seed.or(sc.seed).unwrap_or(1);
            let steps = sc.duration.0 / 1_000_000;
            let bar = progress(steps * algorithms.len() as u64, "simulating", json);
            let report = sim::run_all(&sc, &algorithms, sim::RunOptions { seed, threshold }, |i, t| {
                bar.set_message(algorithms[i].name());
                bar.set_position(i as u64 * steps + t / 1_000_000);
            });
            bar.finish_and_clear();
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print_scenario(&sc, &report);
            }
        }
        Command::Live {
            file,
            algorithms,
            duration_scale,
            rate_scale,
            connections,
            seed,
            threshold,
            compare,
            json,
        } => {
            let text =
                std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let name =
                file.file_stem().map_or_else(|| "scenario".into(), |s| s.to_string_lossy().into_owned());
            let original = scenario::Scenario::parse(&name, &text)?;
            let threshold = scenario::parse_duration(&threshold)
                .with_context(|| format!("--threshold {threshold:?}: expected e.g. 1s or 500ms"))?;
            if !(rate_scale > 0.0 && rate_scale.is_finite()) {
                bail!("--rate-scale must be a positive number");
            }
            let duration_scale = duration_scale.unwrap_or_else(|| live::default_duration_scale(&original));
            if !(duration_scale > 0.0 && duration_scale.is_finite()) {
                bail!("--duration-scale must be a positive number");
            }
            let sc = live::scale(&original, duration_scale, rate_scale);
            let algorithms = match (algorithms.is_empty(), sc.algorithms.is_empty()) {
                (false, _) => algorithms,
                (true, false) => sc.algorithms.clone(),
                (true, true) => Algorithm::ALL.iter().copied().filter(|a| !a.is_hashing()).collect(),
            };
            let seed = seed.or(sc.seed).unwrap_or(1);
            let options = live::LiveOptions { seed, threshold, connections };
            let secs = sc.duration.0 as f64 / 1e9;
            // The scaling note goes to stderr with --json, so stdout stays one JSON document.
            let note = format!(
                "live run: the file's {:.0} s ran in {secs:.1} s per algorithm (--duration-scale {duration_scale:.3}; service times unscaled), rate x{rate_scale} (--rate-scale); about {:.0} s for {} algorithms",
                original.duration.0 as f64 / 1e9,
                secs * algorithms.len() as f64 + algorithms.len() as f64,
                algorithms.len()
            );
            if json {
                eprintln!("{note}");
            }
            let simulated = compare
                .then(|| sim::run_all(&sc, &algorithms, sim::RunOptions { seed, threshold }, |_, _| {}));
            let names: Vec<&str> = algorithms.iter().map(|a| a.name()).collect();
            let report = runtime()?.block_on(live::run_all(&sc, &algorithms, options, |i| {
                if !json {
                    eprintln!("running {} for {secs:.1} s...", names.get(i).unwrap_or(&"?"));
                }
            }))?;
            let live_report = live::LiveReport { report, mode: "live", duration_scale, rate_scale };
            if json {
                match simulated {
                    Some(sim) => println!("{}", serde_json::json!({ "simulated": sim, "live": live_report })),
                    None => println!("{}", serde_json::to_string(&live_report)?),
                }
            } else {
                println!("scenario {}: {}", sc.name, sc.description.trim());
                println!("{note}");
                if let Some(sim) = simulated {
                    println!("\nsimulated (same scaled scenario):");
                    print!("{}", scenario_text(&sim));
                    println!("\nlive (toy backends, lb, loadgen):");
                }
                print!("{}", scenario_text(&live_report.report));
            }
        }
        Command::Balancers {
            rounds,
            duration,
            connections,
            only,
            backends,
            base_port,
            idle_connections,
            strace_requests,
            json,
        } => {
            let duration = scenario::parse_duration(&duration)
                .with_context(|| format!("--duration {duration:?}: expected e.g. 5s"))?;
            if rounds == 0 || connections == 0 || duration == 0 {
                bail!("--rounds, --connections and --duration must be above 0");
            }
            let mut spec = balancers::BalancersSpec::new(repo_root());
            spec.rounds = rounds;
            spec.duration = std::time::Duration::from_nanos(duration);
            spec.connections = connections;
            if !only.is_empty() {
                spec.only = only;
            }
            spec.backends = backends;
            spec.base_port = base_port;
            spec.idle_connections = idle_connections;
            spec.strace_requests = strace_requests;
            let report = runtime()?.block_on(balancers::run(spec, |line| eprintln!("{line}")))?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", balancers::text(&report));
            }
        }
        Command::Report { out, quick, with_balancers, with_live } => {
            let options = report::ReportOptions { quick, with_balancers, with_live, root: repo_root() };
            let written = runtime()?.block_on(report::write(&out, &options, |line| eprintln!("{line}")))?;
            println!("wrote {} ({} charts)", out.join("README.md").display(), written.charts.len());
        }
    }
    Ok(())
}

fn print_supermarket(spec: &supermarket::SupermarketSpec, r: &supermarket::SupermarketReport) {
    println!(
        "supermarket: n={} servers, lambda={}, d={}, {} arrivals ({}% warm-up), seed {}",
        spec.servers,
        spec.lambda,
        spec.choices,
        spec.arrivals,
        (spec.warmup * 100.0).round(),
        spec.seed
    );
    let off = (r.mean_sojourn / r.theory_mean_sojourn - 1.0) * 100.0;
    println!("mean time in system: {:.4} (theory {:.4}, {off:+.1}%)", r.mean_sojourn, r.theory_mean_sojourn);
    let rows: Vec<Vec<String>> = r
        .tail
        .iter()
        .zip(&r.theory_tail)
        .enumerate()
        .take_while(|(i, (s, t))| *i < 3 || **s >= 1e-6 || **t >= 1e-6)
        .take(16)
        .map(|(i, (s, t))| vec![i.to_string(), format!("{s:.6}"), format!("{t:.6}")])
        .collect();
    print!("{}", table(&["i", "simulated s_i", "theory s_i"], &rows));
}

fn print_hashing(spec: &hashing::HashingSpec, r: &hashing::HashingReport) {
    println!("{}: {} keys over {} backends", r.algorithm, spec.keys, spec.backends);
    let mut rows = vec![
        vec!["keys per backend min".to_string(), r.min.to_string()],
        vec!["keys per backend max".to_string(), r.max.to_string()],
        vec!["max / mean".to_string(), format!("{:.3}", r.max_over_mean)],
        vec!["coefficient of variation".to_string(), format!("{:.4}", r.cv)],
    ];
    if let (Some(removed), Some(moved), Some(survivors)) =
        (r.removed, r.moved_fraction, r.moved_among_survivors)
    {
        rows.push(vec!["backends removed".to_string(), removed.to_string()]);
        rows.push(vec!["keys moved (fraction of all)".to_string(), format!("{moved:.4}")]);
        rows.push(vec!["moved although backend stayed".to_string(), format!("{survivors:.4}")]);
    }
    print!("{}", table(&["measure", "value"], &rows));
}

fn print_scenario(sc: &scenario::Scenario, r: &sim::ScenarioReport) {
    println!("scenario {}: {}", r.scenario, sc.description.trim());
    print!("{}", scenario_text(r));
}
