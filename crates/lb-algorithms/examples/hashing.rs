//! Consistent hashing, watched: where each key goes before and after one backend is removed.
//!
//! Run with `cargo run -p lb-algorithms --example hashing -- ring-hash --backends 5 --keys 12 --remove 2`
//!
//! Options (all optional): `--backends N` (default 5, named `10.0.0.1:80`, `10.0.0.2:80`, ...),
//! `--keys K` (default 12; key i is the string `user-i`), `--remove I` (which backend leaves, 1-based;
//! default 2), `--show S` (print at most S keys; default all). The last line is the fraction of keys that
//! moved, and how many of those moved between two backends that both stayed (0 for a consistent hash,
//! 100% for `hash mod n`). Everything is deterministic: no clock, no randomness beyond the hash.
//!
//! `mod-n` is also accepted as an algorithm: the naive `hash(key) % n`, for comparison.

use std::process::ExitCode;
use std::sync::Arc;

use lb_algorithms::{
    Algorithm, AlgorithmOptions, BackendSet, BackendSpec, Balancer, PickRequest, SetOptions, build,
    hash_bytes,
};

struct Args {
    /// `None`: the naive `hash % n`.
    algorithm: Option<Algorithm>,
    backends: usize,
    keys: usize,
    remove: usize,
    show: usize,
}

fn parse() -> Result<Args, String> {
    let usage = "usage: hashing <ring-hash|maglev|bounded-load|rendezvous|mod-n> [--backends N] [--keys K] [--remove I] [--show S]";
    let mut it = std::env::args().skip(1);
    let name = it.next().ok_or(usage)?;
    let algorithm =
        if name == "mod-n" { None } else { Some(name.parse::<Algorithm>().map_err(|e| e.to_string())?) };
    let mut args = Args { algorithm, backends: 5, keys: 12, remove: 2, show: usize::MAX };
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let number = value.parse::<usize>().map_err(|e| format!("{flag} {value}: {e}"))?;
        match flag.as_str() {
            "--backends" => args.backends = number,
            "--keys" => args.keys = number,
            "--remove" => args.remove = number,
            "--show" => args.show = number,
            _ => return Err(format!("unknown option {flag}\n{usage}")),
        }
    }
    if args.backends < 2 || args.remove == 0 || args.remove > args.backends {
        return Err(format!("need at least 2 backends and --remove between 1 and {}", args.backends));
    }
    Ok(args)
}

/// Picks by address for every key, with the given algorithm (or `hash % n`).
fn assign(algorithm: Option<Algorithm>, set: Arc<BackendSet>, keys: &[u64]) -> Result<Vec<String>, String> {
    let name =
        |i: Option<usize>| i.and_then(|i| set.get(i)).map_or("none".to_string(), |b| b.addr().to_string());
    match algorithm {
        None => Ok(keys.iter().map(|&k| name(Some((k % set.len() as u64) as usize))).collect()),
        Some(a) => {
            let balancer: Arc<dyn Balancer> =
                build(a, set.clone(), &AlgorithmOptions::default()).map_err(|e| e.to_string())?;
            Ok(keys
                .iter()
                .map(|&k| name(balancer.pick(&PickRequest::new(0).with_key(Some(k)), None)))
                .collect())
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let specs: Vec<BackendSpec> =
        (1..=args.backends).map(|i| BackendSpec::new(format!("10.0.0.{i}:80"))).collect();
    let removed = specs[args.remove - 1].addr.clone();
    let before_set = BackendSet::new(specs.clone(), SetOptions::default());
    let after_set = before_set.rebuild(specs.into_iter().filter(|s| s.addr != removed), 0);
    let names: Vec<String> = (0..args.keys).map(|k| format!("user-{k}")).collect();
    let keys: Vec<u64> = names.iter().map(|n| hash_bytes(n.as_bytes())).collect();
    let before = assign(args.algorithm, before_set, &keys)?;
    let after = assign(args.algorithm, after_set, &keys)?;

    let label = args.algorithm.map_or("mod-n", Algorithm::name);
    println!("{label}: {} backends, remove {removed}", args.backends);
    for ((name, b), a) in names.iter().zip(&before).zip(&after).take(args.show) {
        let mark = if a == b {
            ""
        } else if *b == removed {
            "  moved (its backend left)"
        } else {
            "  MOVED"
        };
        let line = format!("{name:<10} {b:<12} -> {a:<12}{mark}");
        println!("{}", line.trim_end());
    }
    let moved = before.iter().zip(&after).filter(|(b, a)| a != b).count();
    let among = before.iter().zip(&after).filter(|(b, a)| a != b && **b != removed).count();
    let pct = |x: usize| 100.0 * x as f64 / args.keys.max(1) as f64;
    println!(
        "moved {moved} of {} keys ({:.1}%; ideal 1/{} = {:.1}%), {among} of them between backends that stayed",
        args.keys,
        pct(moved),
        args.backends,
        100.0 / args.backends as f64
    );
    Ok(())
}

fn main() -> ExitCode {
    match parse().and_then(|args| run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
