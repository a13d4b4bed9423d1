//! Watch an algorithm pick: the picks as letters on one line, a count per backend, and the most requests
//! each backend held at once (`peak`).
//!
//! Run with `cargo run -p lb-algorithms --example picks -- weighted-round-robin --weights 5,1,1 --picks 14`
//!
//! Options (all optional): `--weights 5,1,1` (one backend per weight, named a, b, c...; default 1,1,1),
//! `--picks N` (default 20), `--seed S` (for the randomised algorithms; default 1), `--key K` (every
//! request carries the hash key K; without it, request i carries the key `user-i`, so the hashing
//! algorithms spread distinct users), and `--latency 3,3,30` (milliseconds per backend; default 3 each).
//!
//! **The simulated load.** One request arrives every millisecond of a simulated clock. The picked
//! backend holds it (an in-flight guard) for its latency, then it completes and the latency is recorded
//! in the backend's EWMA. So with the defaults each backend holds a few requests at a time, and
//! `--latency 3,3,30` makes backend c ten times slower: least-connections, power-of-two and peak-ewma
//! see that (c holds its requests longer, and peak-ewma measures it); the others do not.

use std::collections::VecDeque;
use std::process::ExitCode;

use lb_algorithms::{
    Algorithm, AlgorithmOptions, BackendSet, BackendSpec, InFlightGuard, PickRequest, SetOptions, build,
    hash_bytes,
};

const MS: u64 = 1_000_000;

struct Args {
    algorithm: Algorithm,
    weights: Vec<u32>,
    picks: usize,
    seed: u64,
    key: Option<String>,
    latency_ms: Vec<u64>,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let algorithm = it
        .next()
        .ok_or(
            "usage: picks <algorithm> [--weights 5,1,1] [--picks N] [--seed S] [--key K] [--latency 3,3,30]",
        )?
        .parse::<Algorithm>()
        .map_err(|e| e.to_string())?;
    let mut args =
        Args { algorithm, weights: vec![1, 1, 1], picks: 20, seed: 1, key: None, latency_ms: Vec::new() };
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let list = |v: &str| -> Result<Vec<u64>, String> {
            v.split(',').map(|x| x.trim().parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"))).collect()
        };
        let number = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--weights" => {
                args.weights = list(&value)?.into_iter().map(|w| w.clamp(1, 1_000_000) as u32).collect()
            }
            "--picks" => args.picks = number(&value)? as usize,
            "--seed" => args.seed = number(&value)?,
            "--key" => args.key = Some(value),
            "--latency" => args.latency_ms = list(&value)?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if args.weights.is_empty() || args.weights.len() > 26 {
        return Err("between 1 and 26 backends (a to z)".into());
    }
    Ok(args)
}

fn letter(i: usize) -> char {
    (b'a' + i as u8) as char
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let n = args.weights.len();
    let latency = |i: usize| args.latency_ms.get(i).copied().unwrap_or(3) * MS;
    let set = BackendSet::new(
        args.weights.iter().enumerate().map(|(i, &w)| BackendSpec::weighted(letter(i).to_string(), w)),
        SetOptions::default(),
    );
    let options = AlgorithmOptions { seed: args.seed, ..AlgorithmOptions::default() };
    let balancer = match build(args.algorithm, set.clone(), &options) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let decay = set.options().ewma_decay;
    // Requests in flight, with the time each completes.
    let mut in_flight: VecDeque<(u64, InFlightGuard)> = VecDeque::new();
    let mut picks = String::new();
    let mut counts = vec![0usize; n];
    let mut peak = vec![0u64; n];
    for k in 0..args.picks {
        let now = (k as u64 + 1) * MS;
        // Complete what is due (each guard records its latency, then drops).
        in_flight.retain(|(done, guard)| {
            let due = *done <= now;
            if due {
                guard.record_latency(*done, decay);
            }
            !due
        });
        let key = match &args.key {
            Some(k) => hash_bytes(k.as_bytes()),
            None => hash_bytes(format!("user-{k}").as_bytes()),
        };
        let req = PickRequest::new(now).with_key(Some(key));
        match balancer.pick(&req, None) {
            Some(i) => {
                picks.push(letter(i));
                counts[i] += 1;
                in_flight.extend(set.start(i, now).map(|g| (now + latency(i), g)));
                peak[i] = peak[i].max(set.backends()[i].in_flight());
            }
            None => picks.push('-'),
        }
        picks.push(' ');
    }
    println!("{}", picks.trim_end());
    let summary: Vec<String> = counts.iter().enumerate().map(|(i, c)| format!("{}={c}", letter(i))).collect();
    println!("{}", summary.join(" "));
    let peaks: Vec<String> = peak.iter().enumerate().map(|(i, p)| format!("{}={p}", letter(i))).collect();
    println!("peak in flight: {}", peaks.join(" "));
    ExitCode::SUCCESS
}
