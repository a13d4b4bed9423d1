//! Consistent hashing: how evenly keys spread, and how many move when backends go away.
//!
//! Two numbers decide whether a hashing balancer is any good.
//!
//! - **Balance.** With `K` keys over `N` equal backends each should get `K/N`. The experiment reports the
//!   coefficient of variation of keys per backend (`cv`, standard deviation over mean) and the fullest
//!   backend over the mean (`max_over_mean`). Ring hash with `V` points per backend has a spread that
//!   shrinks like `1/sqrt(V)` (Karger et al. 1997; with ketama's 160 points, a cv of about 8%). Maglev's
//!   table gives every backend `M/N` entries to within one, so its balance is limited only by how keys
//!   fall on the table (Eisenbud et al., "Maglev", NSDI 2016, section 3.4). Rendezvous (highest random
//!   weight, Thaler and Ravishankar 1998) is as even as the hash itself.
//! - **Disruption.** Remove a fraction `f` of the backends (a rebuild, as the proxy does when a backend
//!   leaves the configuration) and re-ask for every key. Ideally only the removed backends' keys move, a
//!   fraction `f` of them (`moved_fraction`), and no key whose backend survived moves at all
//!   (`moved_among_survivors`, as a fraction of the keys whose backend survived). Ring hash and rendezvous
//!   are ideal by construction; Maglev trades a little disruption for its perfect balance and O(1)
//!   lookups (the paper measures a few percent).
//!
//! The picks come from the real balancers built by [`lb_algorithms::build`], with nothing in flight, so
//! bounded load behaves as the consistent hash underneath it (its cap only matters under load).

use std::sync::Arc;

use lb_algorithms::{
    Algorithm, AlgorithmOptions, BackendSet, BackendSpec, BuildError, PickRequest, SetOptions,
};
use serde::Serialize;

use crate::output::table;

/// What to measure.
#[derive(Debug, Clone)]
pub struct HashingSpec {
    /// A hashing algorithm.
    pub algorithm: Algorithm,
    /// Number of backends.
    pub backends: usize,
    /// Number of distinct keys, `key-0 .. key-(K-1)`.
    pub keys: usize,
    /// Ring hash: points per backend (default: the algorithm's default).
    pub vnodes: Option<u32>,
    /// Maglev: table size (a prime; default: the algorithm's default).
    pub table_size: Option<usize>,
    /// Fraction of backends to remove for the disruption measurement (evenly spaced: every
    /// `1/f`-th backend), or none.
    pub remove: Option<f64>,
}

/// The result, as printed by `lb-compare hashing --json`.
#[derive(Debug, Clone, Serialize)]
pub struct HashingReport {
    /// The algorithm's name.
    pub algorithm: String,
    /// Coefficient of variation of keys per backend.
    pub cv: f64,
    /// Most keys on one backend over the mean.
    pub max_over_mean: f64,
    /// Fewest keys on one backend.
    pub min: u64,
    /// Most keys on one backend.
    pub max: u64,
    /// Backends removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed: Option<usize>,
    /// Fraction of all keys whose backend changed after the removal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moved_fraction: Option<f64>,
    /// Fraction of the keys whose backend survived that moved anyway (ideal: 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moved_among_survivors: Option<f64>,
}

fn addr(i: usize) -> String {
    format!("10.{}.{}.{}:80", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff)
}

fn assign(
    algorithm: Algorithm,
    addrs: &[String],
    options: &AlgorithmOptions,
    keys: &[u64],
    mut on_key: impl FnMut(),
) -> Result<Vec<Option<usize>>, BuildError> {
    let set: Arc<BackendSet> =
        BackendSet::new(addrs.iter().map(|a| BackendSpec::new(a.clone())), SetOptions::default());
    let balancer = lb_algorithms::build(algorithm, set, options)?;
    Ok(keys
        .iter()
        .map(|&k| {
            on_key();
            balancer.pick(&PickRequest::new(1).with_key(Some(k)), None)
        })
        .collect())
}

/// Which backends a removal of fraction `f` of `n` takes out: evenly spaced, so the result does not
/// depend on a seed and the survivors are not all neighbours in index order.
fn removed_backends(n: usize, f: f64) -> Vec<usize> {
    let count = ((n as f64 * f).round() as usize).min(n.saturating_sub(1));
    (0..count).map(|j| j * n / count.max(1)).collect()
}

/// Run the measurement; `on_key` is called once per lookup (for a progress bar).
pub fn run(spec: &HashingSpec, mut on_key: impl FnMut()) -> Result<HashingReport, BuildError> {
    let mut options = AlgorithmOptions::default();
    if let Some(v) = spec.vnodes {
        options.ring_points_per_weight = v;
    }
    if let Some(m) = spec.table_size {
        options.maglev_table_size = m;
    }
    let addrs: Vec<String> = (0..spec.backends).map(addr).collect();
    let keys: Vec<u64> =
        (0..spec.keys).map(|k| lb_algorithms::hash_bytes(format!("key-{k}").as_bytes())).collect();
    let before = assign(spec.algorithm, &addrs, &options, &keys, &mut on_key)?;

    let mut per_backend = vec![0u64; spec.backends];
    for &b in before.iter().flatten() {
        per_backend[b] += 1;
    }
    let n = per_backend.len().max(1) as f64;
    let mean = per_backend.iter().sum::<u64>() as f64 / n;
    let var = per_backend.iter().map(|&c| (c as f64 - mean).powi(2)).sum::<f64>() / n;
    let min = per_backend.iter().copied().min().unwrap_or(0);
    let max = per_backend.iter().copied().max().unwrap_or(0);
    let mut report = HashingReport {
        algorithm: spec.algorithm.name().to_string(),
        cv: if mean > 0.0 { var.sqrt() / mean } else { 0.0 },
        max_over_mean: if mean > 0.0 { max as f64 / mean } else { 0.0 },
        min,
        max,
        removed: None,
        moved_fraction: None,
        moved_among_survivors: None,
    };

    if let Some(f) = spec.remove.filter(|&f| f > 0.0) {
        let gone = removed_backends(spec.backends, f);
        let survivors: Vec<String> =
            addrs.iter().enumerate().filter(|(i, _)| !gone.contains(i)).map(|(_, a)| a.clone()).collect();
        let after = assign(spec.algorithm, &survivors, &options, &keys, &mut on_key)?;
        let (mut moved, mut stayed_backend, mut moved_anyway) = (0u64, 0u64, 0u64);
        for (b, a) in before.iter().zip(&after) {
            let old = b.map(|i| addrs[i].as_str());
            let new = a.map(|i| survivors[i].as_str());
            let survived = b.is_some_and(|i| !gone.contains(&i));
            if old != new {
                moved += 1;
            }
            if survived {
                stayed_backend += 1;
                if old != new {
                    moved_anyway += 1;
                }
            }
        }
        report.removed = Some(gone.len());
        report.moved_fraction = Some(moved as f64 / keys.len().max(1) as f64);
        report.moved_among_survivors = Some(moved_anyway as f64 / stayed_backend.max(1) as f64);
    }
    Ok(report)
}

/// The result as `lb-compare hashing` prints it: keys per backend, and the keys that moved.
pub fn text(spec: &HashingSpec, r: &HashingReport) -> String {
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
    format!("{}: {} keys over {} backends\n", r.algorithm, spec.keys, spec.backends)
        + &table(&["measure", "value"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removal_is_evenly_spaced_and_leaves_one() {
        assert_eq!(removed_backends(10, 0.2), [0, 5]);
        assert_eq!(removed_backends(10, 0.0), Vec::<usize>::new());
        assert_eq!(removed_backends(3, 1.0).len(), 2, "never remove every backend");
    }
}
