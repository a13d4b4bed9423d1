//! Maglev: consistent hashing through a lookup table (Eisenbud et al., NSDI 2016).
//!
//! **Idea.** Google's Maglev load balancers needed consistent hashing at line rate, so they trade the
//! ring's binary search for one array read. Build a table of `M` slots (`M` prime, much larger than the
//! number of backends; default 65,537). Each backend gets its own permutation of the slots from two
//! hashes of its address: `offset = h1(addr) % M`, `skip = h2(addr) % (M - 1) + 1`, and its `j`-th
//! preference is slot `(offset + j x skip) % M` (because `M` is prime, this visits every slot once).
//! Then the backends take turns: on its turn a backend claims its most preferred slot that is still
//! free, until the table is full. A key goes to `table[key % M]`.
//!
//! **Balance.** With equal weights every round gives each backend exactly one slot, and the table fills
//! part-way through the last round, so any two backends' slot counts differ by **at most one**: each has
//! `floor(M/n)` or `ceil(M/n)` (tested). This is better balance than a ring with 160 points can give.
//! **Weights:** a backend of weight `w` takes `w` turns per round (integer weights), so its slot count is
//! `w x r` or up to `w` more after `r` full rounds. Envoy's weighted Maglev instead gives a backend a
//! turn in a round only while its claimed share is below `weight / max_weight`, which also handles
//! fractional weights.
//!
//! **Disruption.** Maglev trades a little consistency for that balance. When a backend is removed, its
//! slots go to the others, but because the others' turns shift, some slots also change hands between
//! backends that both stayed; the paper accepts this and shows it shrinks as `M` grows relative to `n`
//! (it picks `M > 100 x n`, which also keeps the shares within about 1% of each other). Measured in
//! `tests/hashing.rs` with 100 backends and `M = 65,537`: removing one moves 1.6% of the keys, its own
//! 1% plus 0.6% between survivors (ring hash and rendezvous: exactly its own 1%).
//!
//! **Unavailable backends.** A health flip does not rebuild the table. If the key's slot belongs to a
//! backend that is down, or that this request already tried, the pick walks forward through the table
//! (`key % M + 1`, `+ 2`, ...) to the first slot of an available backend. The table is a well-mixed
//! interleaving, so the walk usually stops after one or two steps and spreads the down backend's keys
//! over the others in proportion to their weight; keys of healthy backends do not move. The walk is
//! bounded: after 64 slots (every one of them an unavailable backend, which needs most of the fleet down)
//! it falls back to the first available backend in list order from `key % n`. Both stages depend only
//! on the key, so a key's candidate sequence is fixed and a retry gets the next distinct one. Slow start:
//! a ramping backend admits a key with probability equal to its ramp, decided by a hash of (key,
//! backend), and a refused key walks on.
//!
//! **No key.** A request without a hash key goes round robin over the selectable backends.
//!
//! **Cost.** O(1) per pick: one division and one table read. Building the table costs about
//! `M ln M` probes (the last free slots are hard to find), a millisecond or two for `M = 65,537`; its
//! memory is `4 x M` bytes (256 KiB), whatever the number of backends.
//!
//! **When to use it.** Consistent hashing with many backends and a tight time budget per pick; a fleet
//! of equal backends where even balance matters. **When not:** when a key must never move between
//! surviving backends on a change (use [`crate::ring_hash`] or [`crate::rendezvous`]); very unequal key
//! costs (use [`crate::bounded_load`]).
//!
//! **Elsewhere.** Envoy: `lb_policy: MAGLEV` (`table_size`, default 65,537). HAProxy and nginx have no
//! Maglev; their consistent hashing is a ring. Paper: D. E. Eisenbud et al., "Maglev: A Fast and
//! Reliable Software Network Load Balancer", NSDI 2016, section 3.4.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use crate::hash_key::hash_pair;
use crate::ring_hash::{noted, salts};
use crate::{
    Algorithm, AlgorithmOptions, BackendSet, Balancer, BuildError, Explain, PickRequest, SkipReason,
    first_available, hash_bytes, keyless_round_robin, label,
};

/// How many table slots a pick walks past unavailable backends before it falls back to list order.
const WALK: usize = 64;

/// The largest table accepted: 2^26 slots is 256 MiB; Envoy stops at 5,000,011.
const MAX_TABLE: usize = 1 << 26;

/// A slot no backend has claimed yet (only while building).
const FREE: u32 = u32::MAX;

/// Consistent hashing through a Maglev lookup table.
#[derive(Debug)]
pub struct Maglev {
    set: Arc<BackendSet>,
    /// `table[slot]`: the backend index owning the slot.
    table: Vec<u32>,
    salts: Vec<u64>,
    /// Round-robin turn for requests with no key.
    next: AtomicUsize,
}

impl Maglev {
    /// Build the lookup table of `options.maglev_table_size` slots: a prime, at least the total weight
    /// of the backends (so that every turn finds a slot) and at most 2^26.
    pub fn new(set: Arc<BackendSet>, options: &AlgorithmOptions) -> Result<Self, BuildError> {
        let m = options.maglev_table_size;
        let total_weight: usize = set.backends().iter().map(|b| b.weight() as usize).sum();
        let bad = |reason: String| Err(BuildError::BadOption { algorithm: Algorithm::Maglev, reason });
        // The size limit first: primality by trial division of a huge number would take minutes.
        if m > MAX_TABLE {
            return bad(format!("table size {m} is above the limit of {MAX_TABLE}"));
        }
        if !is_prime(m) {
            return bad(format!("table size {m} is not a prime (try 65537 or 655373)"));
        }
        if m < total_weight {
            return bad(format!(
                "table size {m} is smaller than the total weight {total_weight}; use a prime above 100 x that"
            ));
        }
        let table = populate(&set, m);
        Ok(Maglev { salts: salts(&set), set, table, next: AtomicUsize::new(0) })
    }

    /// How many table slots each backend owns, by index: its share of the keys is this over the table
    /// size.
    pub fn slots_per_backend(&self) -> Vec<usize> {
        let mut counts = vec![0; self.set.len()];
        for &i in &self.table {
            counts[i as usize] += 1;
        }
        counts
    }

    /// Why `i` cannot take this key, or `None` if it can.
    #[inline]
    fn refuse(&self, i: usize, key: u64, req: &PickRequest<'_>, panic: bool) -> Option<SkipReason> {
        let b = &self.set.backends()[i];
        if !b.is_selectable(panic) {
            Some(SkipReason::Health(b.health()))
        } else if req.is_excluded(i) {
            Some(SkipReason::AlreadyTried)
        } else if !self.set.ramp_admits(i, req.now, || hash_pair(key, self.salts[i])) {
            Some(SkipReason::SlowStart)
        } else {
            None
        }
    }
}

/// The populate loop of the paper (its Pseudocode 1), with `w` turns per round for weight `w`.
fn populate(set: &BackendSet, m: usize) -> Vec<u32> {
    let backends = set.backends();
    if backends.is_empty() {
        return Vec::new();
    }
    // `cursor[i]`: backend i's next preferred slot, `offset + j x skip` kept reduced mod m.
    let mut cursor = Vec::with_capacity(backends.len());
    let mut skip = Vec::with_capacity(backends.len());
    for b in backends {
        let addr = b.addr().as_bytes();
        cursor.push((hash_bytes(addr) % m as u64) as usize);
        skip.push((xxhash_rust::xxh3::xxh3_64_with_seed(addr, 1) % (m as u64 - 1)) as usize + 1);
    }
    let mut table = vec![FREE; m];
    let mut filled = 0;
    loop {
        for (i, b) in backends.iter().enumerate() {
            for _ in 0..b.weight() {
                // Each backend's sequence visits every slot once (m is prime, skip in 1..m), and the
                // table is not full yet, so this finds a free slot.
                let mut c = cursor[i];
                while table[c] != FREE {
                    c += skip[i];
                    if c >= m {
                        c -= m;
                    }
                }
                table[c] = i as u32;
                c += skip[i];
                cursor[i] = if c >= m { c - m } else { c };
                filled += 1;
                if filled == m {
                    return table;
                }
            }
        }
    }
}

fn is_prime(m: usize) -> bool {
    if m < 2 {
        return false;
    }
    (2..).take_while(|d| d * d <= m).all(|d| !m.is_multiple_of(d))
}

impl Balancer for Maglev {
    fn algorithm(&self) -> Algorithm {
        Algorithm::Maglev
    }

    fn backends(&self) -> &Arc<BackendSet> {
        &self.set
    }

    fn pick(&self, req: &PickRequest<'_>, mut explain: Option<&mut Explain>) -> Option<usize> {
        let n = self.set.len();
        if n == 0 {
            return None;
        }
        let Some(key) = req.key else {
            return keyless_round_robin(Algorithm::Maglev, &self.set, &self.next, req, explain);
        };
        let m = self.table.len();
        let slot = (key % m as u64) as usize;
        let panic = self.set.in_panic();
        let mut refused = None;
        for step in 0..WALK.min(m) {
            let s = if slot + step < m { slot + step } else { slot + step - m };
            let i = self.table[s] as usize;
            match self.refuse(i, key, req, panic) {
                None => {
                    if let Some(e) = explain {
                        e.reason = format!(
                            "maglev: key {key:#018x} -> slot {slot} of {m} ({}), picked {} at slot {s}",
                            label(&self.set, self.table[slot] as usize),
                            label(&self.set, i)
                        );
                    }
                    return Some(i);
                }
                Some(why) => {
                    if why == SkipReason::SlowStart {
                        refused.get_or_insert(i);
                    }
                    if let Some(e) = explain.as_deref_mut()
                        && !noted(e, i)
                    {
                        e.skip(i, why);
                    }
                }
            }
        }
        // Most of the fleet is unavailable: list order from a key-dependent start finds whatever is
        // left, in O(n). It ignores slow start, which is fine when so little is available.
        let start = (key % n as u64) as usize;
        match explain {
            None => first_available(&self.set, start, req, None).or(refused),
            Some(e) => {
                let picked = first_available(&self.set, start, req, Some(&mut *e)).or(refused);
                // The list walk re-notes backends the table walk already met; keep the first mention.
                let mut seen = Vec::new();
                e.skipped.retain(|&(i, _)| {
                    let first = !seen.contains(&i);
                    seen.push(i);
                    first
                });
                if let Some(i) = picked {
                    e.reason = format!(
                        "maglev: key {key:#018x} -> slot {slot} of {m}; {WALK} slots unavailable, picked {} in list order",
                        label(&self.set, i)
                    );
                }
                picked
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BackendSpec, Health, SetOptions};

    fn maglev(specs: Vec<BackendSpec>, m: usize) -> Maglev {
        let set = BackendSet::new(specs, SetOptions::default());
        let options = AlgorithmOptions { maglev_table_size: m, ..AlgorithmOptions::default() };
        Maglev::new(set, &options).unwrap_or_else(|e| panic!("{e}"))
    }

    fn equal(n: usize, m: usize) -> Maglev {
        maglev((0..n).map(|i| BackendSpec::new(format!("10.0.0.{i}:80"))).collect(), m)
    }

    fn key(k: u32) -> Option<u64> {
        Some(hash_bytes(format!("user-{k}").as_bytes()))
    }

    /// The distinct backends met walking the table forward from the key's slot.
    fn walk(g: &Maglev, key: u64) -> Vec<usize> {
        let m = g.table.len();
        let mut seen = Vec::new();
        for step in 0..WALK {
            let i = g.table[(key as usize % m + step) % m] as usize;
            if !seen.contains(&i) {
                seen.push(i);
            }
        }
        seen
    }

    #[test]
    fn rejects_bad_table_sizes() {
        let set = BackendSet::new((0..10).map(|i| BackendSpec::new(format!("b{i}"))), SetOptions::default());
        for m in [0, 1, 4, 65_536, 7] {
            let options = AlgorithmOptions { maglev_table_size: m, ..AlgorithmOptions::default() };
            assert!(Maglev::new(set.clone(), &options).is_err(), "table size {m} must be rejected");
        }
        let options = AlgorithmOptions { maglev_table_size: 11, ..AlgorithmOptions::default() };
        assert!(Maglev::new(set, &options).is_ok());
    }

    #[test]
    fn the_paper_example_shape_fills_every_slot() {
        // The paper's Table 1 uses 3 backends and M = 7: every slot is taken, counts 3, 2, 2 (turns
        // B0 B1 B2 B0 B1 B2 B0 fill the 7 slots).
        let g = equal(3, 7);
        assert!(g.table.iter().all(|&i| i < 3));
        assert_eq!(g.slots_per_backend(), vec![3, 2, 2]);
    }

    #[test]
    fn equal_weights_give_slot_counts_within_one() {
        // 65,537 = 100 x 655 + 37: the first 37 backends get one extra turn in the unfinished round.
        let g = equal(100, 65_537);
        let counts = g.slots_per_backend();
        assert_eq!(counts.iter().filter(|&&c| c == 656).count(), 37);
        assert_eq!(counts.iter().filter(|&&c| c == 655).count(), 63);
    }

    #[test]
    fn weight_w_takes_w_turns_per_round() {
        let g = maglev(vec![BackendSpec::weighted("a", 1), BackendSpec::weighted("b", 2)], 65_537);
        // Rounds of 3 turns: 21,845 full rounds fill 65,535 slots (a 21,845, b 43,690), then a takes the
        // 65,536th and b the last.
        assert_eq!(g.slots_per_backend(), vec![21_846, 43_691]);
        let mut counts = [0u32; 2];
        for k in 0..30_000 {
            if let Some(i) = g.pick(&PickRequest::new(0).with_key(key(k)), None) {
                counts[i] += 1;
            }
        }
        // Expected 10,000 : 20,000 by the table; sampling sigma ~82 keys; allow +-5%.
        assert!((9_500..=10_500).contains(&counts[0]), "{counts:?}");
    }

    #[test]
    fn same_key_same_backend_which_is_the_table_entry() {
        let g = equal(5, 65_537);
        for k in 0..200 {
            let h = key(k).unwrap_or_default();
            let pick = g.pick(&PickRequest::new(0).with_key(Some(h)), None);
            assert_eq!(pick, g.pick(&PickRequest::new(0).with_key(Some(h)), None));
            assert_eq!(pick, Some(g.table[(h % 65_537) as usize] as usize));
        }
    }

    #[test]
    fn no_key_falls_back_to_round_robin() {
        let g = equal(3, 65_537);
        let picks: Vec<_> = (0..4).map(|_| g.pick(&PickRequest::new(0), None)).collect();
        assert_eq!(picks, [0, 1, 2, 0].map(Some));
    }

    #[test]
    fn retries_get_the_next_distinct_backend_of_the_walk() {
        let g = equal(5, 65_537);
        for k in 0..50 {
            let h = key(k).unwrap_or_default();
            let order = walk(&g, h);
            // 64 slots of 5 well-mixed backends: all five appear (probability of missing one ~ 5 x 0.8^64).
            assert_eq!(order.len(), 5);
            let mut tried = Vec::new();
            for want in order {
                assert_eq!(
                    g.pick(&PickRequest::new(0).with_key(Some(h)).excluding(&tried), None),
                    Some(want)
                );
                tried.push(want);
            }
            assert_eq!(g.pick(&PickRequest::new(0).with_key(Some(h)).excluding(&tried), None), None);
        }
    }

    #[test]
    fn unavailable_backends_are_walked_past_and_explained() {
        let g = equal(5, 65_537);
        let h = key(3).unwrap_or_default();
        let order = walk(&g, h);
        g.backends().set_health(order[0], Health::Unhealthy, 0);
        g.backends().set_health(order[1], Health::Ejected, 0);
        let mut e = Explain::default();
        assert_eq!(g.pick(&PickRequest::new(0).with_key(Some(h)), Some(&mut e)), Some(order[2]));
        assert_eq!(
            e.skipped,
            vec![
                (order[0], SkipReason::Health(Health::Unhealthy)),
                (order[1], SkipReason::Health(Health::Ejected))
            ]
        );
        assert!(e.reason.starts_with("maglev: key"), "{}", e.reason);
    }

    #[test]
    fn with_most_of_the_fleet_down_the_list_fallback_still_finds_the_survivor() {
        let set = BackendSet::new(
            (0..40).map(|i| BackendSpec::new(format!("b{i}"))),
            SetOptions { panic_threshold: 0.0, ..SetOptions::default() },
        );
        let g = Maglev::new(set, &AlgorithmOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        for i in 0..40 {
            if i != 17 {
                g.backends().set_health(i, Health::Unhealthy, 0);
            }
        }
        for k in 0..200 {
            let mut e = Explain::default();
            assert_eq!(g.pick(&PickRequest::new(0).with_key(key(k)), Some(&mut e)), Some(17));
            let mut ids: Vec<usize> = e.skipped.iter().map(|s| s.0).collect();
            let len = ids.len();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), len, "each backend is explained once");
        }
    }

    #[test]
    fn keys_of_healthy_backends_stay_when_one_goes_down() {
        let g = equal(10, 65_537);
        let before: Vec<_> =
            (0..5_000).map(|k| g.pick(&PickRequest::new(0).with_key(key(k)), None)).collect();
        g.backends().set_health(4, Health::Unhealthy, 0);
        let mut spread = [0u32; 10];
        for k in 0..5_000u32 {
            let after = g.pick(&PickRequest::new(0).with_key(key(k)), None);
            if before[k as usize] == Some(4) {
                spread[after.unwrap_or(4)] += 1;
            } else {
                assert_eq!(after, before[k as usize]);
            }
        }
        // Backend 4's ~500 keys spread over the nine others (~55 each), none left on 4.
        assert_eq!(spread[4], 0);
        assert!(spread.iter().enumerate().all(|(i, &c)| i == 4 || (20..=100).contains(&c)), "{spread:?}");
    }
}
