//! Round robin: each backend in turn.
//!
//! **Idea.** Keep a counter; request *k* goes to backend `k mod n`. Every backend gets the same number
//! of requests, in a fixed, predictable order. This is the seed's Go proxy (`atomic.AddUint64` on a
//! counter) and the default of nginx, HAProxy and Envoy.
//!
//! **Cost.** O(1) per pick: one atomic `fetch_add`. If the chosen backend cannot be picked (unhealthy,
//! draining, already tried by this request) we walk forward to the next one, so a pick is O(n) only in
//! the worst case of almost every backend being down. State: one `AtomicUsize`.
//!
//! **When to use it.** Identical backends and requests of similar cost. **When not:** backends of
//! different capacity (use weights), requests of very different cost or backends that slow down (use
//! least-connections, power-of-two or peak EWMA): round robin keeps sending a slow backend its full
//! share, and its queue grows.
//!
//! **Skipping is not quite fair.** When backend *i* is down, the requests that would have gone to it go
//! to *i+1*, which then gets two shares. nginx and HAProxy behave the same way for a down server; with
//! many backends down, prefer an algorithm that spreads by load.
//!
//! **Elsewhere.** nginx: the default of an `upstream` block. HAProxy: `balance roundrobin`. Envoy:
//! `lb_policy: ROUND_ROBIN`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{Algorithm, BackendSet, Balancer, Explain, PickRequest, first_available, label};

/// Strict rotation over the selectable backends.
#[derive(Debug)]
pub struct RoundRobin {
    set: Arc<BackendSet>,
    next: AtomicUsize,
}

impl RoundRobin {
    /// A rotation starting at the first backend.
    pub fn new(set: Arc<BackendSet>) -> Self {
        RoundRobin { set, next: AtomicUsize::new(0) }
    }
}

impl Balancer for RoundRobin {
    fn algorithm(&self) -> Algorithm {
        Algorithm::RoundRobin
    }

    fn backends(&self) -> &Arc<BackendSet> {
        &self.set
    }

    fn pick(&self, req: &PickRequest<'_>, mut explain: Option<&mut Explain>) -> Option<usize> {
        let n = self.set.len();
        if n == 0 {
            return None;
        }
        // Relaxed is enough: we need each caller to get a distinct ticket, not any ordering with other
        // memory. The counter wraps after 2^64 picks, when `% n` jumps once; harmless.
        let ticket = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let picked = first_available(&self.set, ticket, req, explain.as_deref_mut())?;
        if let Some(e) = explain {
            e.reason = format!("round-robin: turn {ticket} of {n}, picked {}", label(&self.set, picked));
        }
        Some(picked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BackendSpec, Health, SetOptions};

    fn rr(n: usize) -> RoundRobin {
        RoundRobin::new(BackendSet::new(
            (0..n).map(|i| BackendSpec::new(format!("b{i}"))),
            SetOptions::default(),
        ))
    }

    fn picks(b: &RoundRobin, count: usize) -> Vec<Option<usize>> {
        (0..count).map(|_| b.pick(&PickRequest::new(0), None)).collect()
    }

    #[test]
    fn rotates_in_order() {
        let b = rr(3);
        assert_eq!(picks(&b, 7), [0, 1, 2, 0, 1, 2, 0].map(Some));
    }

    #[test]
    fn skips_an_unhealthy_backend_and_its_turn_goes_to_the_next() {
        let b = rr(3);
        b.backends().set_health(1, Health::Unhealthy, 0);
        // Tickets 0,1,2,3,4,5 -> 0, (1 down ->) 2, 2, 0, (1 down ->) 2, 2.
        assert_eq!(picks(&b, 6), [0, 2, 2, 0, 2, 2].map(Some));
    }

    #[test]
    fn a_retry_avoids_the_backend_already_tried() {
        let b = rr(3);
        let req = PickRequest::new(0).excluding(&[0]);
        // Ticket 0 would be backend 0, which this request already tried.
        assert_eq!(b.pick(&req, None), Some(1));
    }

    #[test]
    fn none_when_nothing_is_selectable() {
        let b = rr(2);
        b.backends().set_health(0, Health::Draining, 0);
        b.backends().set_health(1, Health::Draining, 0);
        assert_eq!(b.pick(&PickRequest::new(0), None), None);
    }

    #[test]
    fn explains_the_turn_and_the_skips() {
        let b = rr(3);
        b.backends().set_health(0, Health::Ejected, 0);
        let mut e = Explain::default();
        assert_eq!(b.pick(&PickRequest::new(0), Some(&mut e)), Some(1));
        assert_eq!(e.skipped, vec![(0, crate::SkipReason::Health(Health::Ejected))]);
        assert_eq!(e.reason, "round-robin: turn 0 of 3, picked b1");
    }

    #[test]
    fn many_threads_share_the_rotation_exactly() {
        let b = Arc::new(rr(4));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let b = Arc::clone(&b);
                std::thread::spawn(move || {
                    let mut counts = [0usize; 4];
                    for _ in 0..10_000 {
                        if let Some(i) = b.pick(&PickRequest::new(0), None) {
                            counts[i] += 1;
                        }
                    }
                    counts
                })
            })
            .collect();
        let mut total = [0usize; 4];
        for h in handles {
            let c = h.join().unwrap_or_default();
            for i in 0..4 {
                total[i] += c[i];
            }
        }
        // 40,000 tickets over 4 backends: each ticket is handed out once, so exactly 10,000 each.
        assert_eq!(total, [10_000; 4]);
    }
}
