//! Pick sequences: what an algorithm does, one pick at a time.
//!
//! The quickest way to see an algorithm is to ask it for twenty picks and read them. Smooth weighted
//! round robin with weights 5,1,1 gives `a a b a c a a`, not `a a a a a b c`; round robin gives
//! `a b c a b c`; a hashing algorithm sends the same key to the same letter every time it comes round.
//!
//! Picks are made on the real balancer from [`lb_algorithms::build`], with nothing in flight (no request
//! is ever finished or held), at a fixed time, so the sequence is exactly what the proxy would pick for the
//! first `N` requests to an idle fleet.

use std::sync::Arc;

use lb_algorithms::{
    Algorithm, AlgorithmOptions, BackendSet, BackendSpec, BuildError, PickRequest, SetOptions,
};
use serde::Serialize;

/// What to ask for.
#[derive(Debug, Clone)]
pub struct SequenceSpec {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// One weight per backend; backends are named `a`, `b`, `c`...
    pub weights: Vec<u32>,
    /// Number of picks.
    pub picks: usize,
    /// Hashing algorithms get keys `key-0 .. key-(K-1)`, cycled.
    pub key_count: usize,
    /// Seed of the randomised algorithms.
    pub seed: u64,
}

/// The picks, as printed by `lb-compare sequence --json`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SequenceReport {
    /// The algorithm's name.
    pub algorithm: String,
    /// Backend index of each pick (`None` when nothing could be picked).
    pub picks: Vec<Option<usize>>,
    /// The same picks as letters (`-` for none).
    pub letters: String,
    /// How many picks each backend got.
    pub counts: Vec<u64>,
}

/// `a`, `b`, ..., `z`, then `b26`, `b27`... (a fleet of more than 26 is not read letter by letter anyway).
fn backend_name(i: usize) -> String {
    if i < 26 { char::from(b'a' + i as u8).to_string() } else { format!("b{i}") }
}

/// Build the balancer and pick.
pub fn run(spec: &SequenceSpec) -> Result<SequenceReport, BuildError> {
    let set: Arc<BackendSet> = BackendSet::new(
        spec.weights.iter().enumerate().map(|(i, &w)| BackendSpec::weighted(backend_name(i), w)),
        SetOptions::default(),
    );
    let options = AlgorithmOptions { seed: spec.seed, ..AlgorithmOptions::default() };
    let balancer = lb_algorithms::build(spec.algorithm, set, &options)?;
    let keys: Vec<u64> = (0..spec.key_count.max(1))
        .map(|k| lb_algorithms::hash_bytes(format!("key-{k}").as_bytes()))
        .collect();
    let mut counts = vec![0u64; spec.weights.len()];
    let picks: Vec<Option<usize>> = (0..spec.picks)
        .map(|p| {
            let key = spec.algorithm.is_hashing().then(|| keys[p % keys.len()]);
            let pick = balancer.pick(&PickRequest::new(1).with_key(key), None);
            if let Some(i) = pick {
                counts[i] += 1;
            }
            pick
        })
        .collect();
    let letters =
        picks.iter().map(|p| p.map_or_else(|| "-".to_string(), backend_name)).collect::<Vec<_>>().join(" ");
    Ok(SequenceReport { algorithm: spec.algorithm.name().to_string(), picks, letters, counts })
}

/// How many picks each backend got, as `a=5 b=1 c=1`.
pub(crate) fn counts_text(counts: &[u64]) -> String {
    let counts: Vec<String> =
        counts.iter().enumerate().map(|(i, c)| format!("{}={c}", backend_name(i))).collect();
    counts.join(" ")
}

/// The picks as `lb-compare sequence` prints them: as letters, as indices, and the counts.
pub fn text(r: &SequenceReport) -> String {
    let indices: Vec<String> =
        r.picks.iter().map(|p| p.map_or_else(|| "-".into(), |i| i.to_string())).collect();
    format!(
        "{}: {}\nindices: {}\ncounts: {}\n",
        r.algorithm,
        r.letters,
        indices.join(" "),
        counts_text(&r.counts)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_rotates_through_the_letters() {
        let r = run(&SequenceSpec {
            algorithm: Algorithm::RoundRobin,
            weights: vec![1, 1, 1],
            picks: 7,
            key_count: 1,
            seed: 1,
        })
        .unwrap_or_else(|e| panic!("{e}"));
        // Round robin hands out tickets 0, 1, 2, 0, ...: a b c a b c a.
        assert_eq!(r.letters, "a b c a b c a");
        assert_eq!(r.counts, [3, 2, 2]);
    }

    #[test]
    fn names_go_past_z() {
        assert_eq!(backend_name(0), "a");
        assert_eq!(backend_name(25), "z");
        assert_eq!(backend_name(26), "b26");
    }
}
