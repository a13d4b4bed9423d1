//! Retries: which failures are worth a second try, and the budget that stops retries from becoming an
//! attack on a fleet that is already failing.
//!
//! # When a request is retried
//!
//! - **Any request** whose connection failed before a byte was sent (connect refused or timed out): the
//!   backend never saw it, so even a POST is safe to send elsewhere, and the proxy still holds its body.
//! - **Idempotent requests without a body** (GET, HEAD, OPTIONS, TRACE, and PUT or DELETE with an empty
//!   body) also when the connection broke after sending, or the backend answered 502, 503 or 504. Sending
//!   them twice cannot do harm, and without a body there is nothing we would have had to buffer.
//!
//! A retry always goes to a *different* backend (the balancer gets the tried ones in
//! `PickRequest::exclude`): the one that just failed is the least likely to succeed. A timeout waiting
//! for response headers is *not* retried: the backend is slow, possibly overloaded, and a retry doubles
//! its load while the client has already waited the whole timeout.
//!
//! # The budget
//!
//! `attempts = 3` alone means that when every backend fails, every request becomes three: the fleet that
//! is down for overload gets three times the load. A retry budget (Finagle, Linkerd, Envoy's
//! `retry_budget`) bounds retries to a fraction of the traffic: every request deposits `budget_ratio`
//! tokens (0.2: at most one retry per five requests over time), a retry withdraws one, and a trickle of
//! `budget_min_per_sec` tokens per second lets a quiet service still retry its rare failures. The bucket
//! holds at most ten seconds of the trickle (or ten tokens), so a long quiet spell cannot bank a storm.
//!
//! A **failed connect takes no token** (see `forward/attempts.rs`). The budget protects backends that
//! are overloaded from being sent more; a refused connect sent nothing and adds no load, and a dead
//! backend's share of the picks (a third, with three) would outrun a 20% budget within seconds,
//! turning every one of its picks past that into a 502. nginx (`proxy_next_upstream error`) and HAProxy
//! (`retry-on conn-failure`) likewise retry a failed connect without asking anyone.
//!
//! Tokens are counted in thousandths in one `AtomicI64`, so the budget is lock-free and shared by every
//! worker thread of an upstream.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use http::Method;
use lb_algorithms::Nanos;

const MILLI: i64 = 1000;

/// A token bucket of retries for one upstream.
#[derive(Debug)]
pub struct RetryBudget {
    /// Thousandths of a token deposited per request.
    deposit: i64,
    /// Thousandths of a token added per second.
    per_sec: i64,
    /// The most the bucket holds, in thousandths.
    cap: i64,
    balance: AtomicI64,
    last_refill: AtomicU64,
}

impl RetryBudget {
    /// A budget depositing `ratio` tokens per request and `min_per_sec` tokens per second; it starts
    /// with one second of the trickle.
    pub fn new(ratio: f64, min_per_sec: u32) -> Self {
        let per_sec = i64::from(min_per_sec) * MILLI;
        RetryBudget {
            deposit: (ratio.clamp(0.0, 1000.0) * MILLI as f64).round() as i64,
            per_sec,
            cap: (10 * per_sec).max(10 * MILLI),
            balance: AtomicI64::new(per_sec),
            last_refill: AtomicU64::new(0),
        }
    }

    /// A new request arrived: deposit its share.
    #[inline]
    pub fn deposit(&self) {
        if self.deposit > 0 {
            let after = self.balance.fetch_add(self.deposit, Ordering::Relaxed) + self.deposit;
            if after > self.cap {
                self.balance.fetch_min(self.cap, Ordering::Relaxed);
            }
        }
    }

    /// Try to take one retry token at `now`; false means the budget is exhausted.
    pub fn try_withdraw(&self, now: Nanos) -> bool {
        self.refill(now);
        let mut current = self.balance.load(Ordering::Relaxed);
        loop {
            if current < MILLI {
                return false;
            }
            match self.balance.compare_exchange_weak(
                current,
                current - MILLI,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
    }

    /// Give back a token taken for a retry that did not happen (no other backend to send it to).
    pub fn refund(&self) {
        let after = self.balance.fetch_add(MILLI, Ordering::Relaxed) + MILLI;
        if after > self.cap {
            self.balance.fetch_min(self.cap, Ordering::Relaxed);
        }
    }

    /// Add the per-second trickle for the time since the last refill.
    fn refill(&self, now: Nanos) {
        if self.per_sec == 0 {
            return;
        }
        let last = self.last_refill.load(Ordering::Relaxed);
        if last == 0 {
            // The first call starts the clock; the initial balance already holds one second.
            let _ = self.last_refill.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
            return;
        }
        let elapsed = now.saturating_sub(last);
        // Whole milli-tokens only, so frequent calls do not round the trickle away.
        let add = (elapsed as i128 * self.per_sec as i128 / 1_000_000_000) as i64;
        if add == 0 {
            return;
        }
        // Only the thread that moves the clock forward adds the tokens for that interval.
        let advanced = (add as i128 * 1_000_000_000 / self.per_sec as i128) as u64;
        if self
            .last_refill
            .compare_exchange(last, last + advanced, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            let after = self.balance.fetch_add(add, Ordering::Relaxed) + add;
            if after > self.cap {
                self.balance.fetch_min(self.cap, Ordering::Relaxed);
            }
        }
    }
}

/// May this request be retried after it reached a backend (broken connection, 502/503/504)?
/// Idempotent methods without a body only.
pub fn is_idempotent_without_body(method: &Method, has_body: bool) -> bool {
    !has_body
        && matches!(
            *method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
        )
}

/// Is this backend answer worth a retry elsewhere?
#[inline]
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 502..=504)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Nanos = 1_000_000_000;

    #[test]
    fn ratio_allows_one_retry_per_five_requests() {
        // ratio 0.2, no trickle: deposits of 0.2 reach 1.0 at every 5th request, so 100 requests that
        // all fail and all try to retry get exactly 20 retries.
        let b = RetryBudget::new(0.2, 0);
        let mut retries = 0;
        for _ in 0..100 {
            b.deposit();
            if b.try_withdraw(SEC) {
                retries += 1;
            }
        }
        assert_eq!(retries, 20);
    }

    #[test]
    fn trickle_refills_per_second_up_to_the_cap() {
        // 10/s, starting with one second's worth (10 tokens).
        let b = RetryBudget::new(0.0, 10);
        let drain = |b: &RetryBudget, now| (0..1000).take_while(|_| b.try_withdraw(now)).count();
        assert_eq!(drain(&b, 1), 10);
        assert_eq!(drain(&b, 1 + SEC / 2), 5, "half a second later: 5 tokens");
        assert_eq!(drain(&b, 1 + SEC / 2 + 1000 * SEC), 100, "capped at ten seconds' worth");
    }

    #[test]
    fn a_refund_gives_one_token_back() {
        let b = RetryBudget::new(0.0, 0);
        assert!(!b.try_withdraw(SEC), "starts empty without a trickle");
        b.refund();
        assert!(b.try_withdraw(SEC));
        assert!(!b.try_withdraw(SEC));
    }

    #[test]
    fn which_requests_may_be_retried() {
        assert!(is_idempotent_without_body(&Method::GET, false));
        assert!(is_idempotent_without_body(&Method::DELETE, false));
        assert!(!is_idempotent_without_body(&Method::PUT, true));
        assert!(!is_idempotent_without_body(&Method::POST, false));
        assert!(is_retryable_status(503) && !is_retryable_status(500) && !is_retryable_status(501));
    }
}
