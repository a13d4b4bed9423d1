//! The live feed of routing decisions, for the admin dashboard: which backend each request went to and
//! why, the same content as the `X-Lb-*` explain headers.
//!
//! # Free when nobody watches
//!
//! Explaining a pick costs work: the algorithm formats its reason ("p2c: b (in-flight 1) beat c
//! (in-flight 4)") into a `String`. So the request path asks [`Decisions::sample`] once, when its
//! attempts start, and that is one relaxed load of the number of watchers: with no dashboard open it is
//! false, and the request runs exactly as it would without this module (nothing is formatted, sent or
//! locked). The count goes up when the admin server opens a stream for a dashboard ([`Decisions::watch`])
//! and down when the [`Watcher`] is dropped, which axum does when the browser goes away.
//!
//! # Bounded when someone does
//!
//! With a page open, at most one decision every [`SAMPLE_EVERY`] is recorded (100 a second): a page
//! shows the last few dozen, and under `wrk` load recording every one of 50,000 requests a second would
//! cost the proxy more than the page could ever show. Requests sent by hand are all recorded. The slot is
//! taken with one compare-and-swap, so two workers racing for it record one decision, not two.
//!
//! Decisions travel on a `tokio::sync::broadcast` channel: every watcher gets every decision, and one
//! that falls behind loses the oldest ones ([`broadcast::error::RecvError::Lagged`]) instead of holding
//! the proxy back or growing a queue without bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use lb_algorithms::{Nanos, now_nanos};
use serde::Serialize;
use tokio::sync::broadcast;

/// The shortest time between two recorded decisions.
pub const SAMPLE_EVERY: Nanos = 10_000_000;

/// Decisions kept for a watcher that has not read them yet; older ones are dropped.
const BACKLOG: usize = 256;

/// One request's routing, as the explain headers would have told its client.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Decision {
    /// When it was answered, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The upstream group it was routed to.
    pub upstream: String,
    /// The backend of the last attempt (`X-Lb-Backend`), if one was picked.
    pub backend: Option<String>,
    /// The algorithm (`X-Lb-Algorithm`).
    pub algorithm: &'static str,
    /// The algorithm's reason for the last pick (`X-Lb-Reason`).
    pub reason: String,
    /// Backends passed over and why, as `addr=why` (`X-Lb-Skipped`).
    pub skipped: Vec<String>,
    /// Attempts made (`X-Lb-Attempts`).
    pub attempts: u32,
    /// Why each retry happened (`X-Lb-Retry`).
    pub retries: Vec<String>,
    /// The status the client got.
    pub status: u16,
}

/// The feed: how many watch, and the channel to them.
#[derive(Debug)]
pub struct Decisions {
    watchers: Arc<AtomicUsize>,
    /// The earliest time the next decision may be recorded (see [`SAMPLE_EVERY`]).
    next_slot: AtomicU64,
    sender: broadcast::Sender<Arc<Decision>>,
}

impl Default for Decisions {
    fn default() -> Self {
        Decisions {
            watchers: Arc::new(AtomicUsize::new(0)),
            next_slot: AtomicU64::new(0),
            sender: broadcast::channel(BACKLOG).0,
        }
    }
}

impl Decisions {
    /// Should the request starting now record its decision? One relaxed load when nobody watches.
    #[inline]
    pub fn sample(&self) -> bool {
        self.watchers.load(Relaxed) != 0 && self.take_slot(now_nanos())
    }

    /// Is anyone watching?
    pub fn watching(&self) -> bool {
        self.watchers.load(Relaxed) != 0
    }

    /// Claim the recording slot at `now`, if it is free (see [`SAMPLE_EVERY`]).
    #[cold]
    fn take_slot(&self, now: Nanos) -> bool {
        let next = self.next_slot.load(Relaxed);
        now >= next
            && self
                .next_slot
                .compare_exchange(next, now.saturating_add(SAMPLE_EVERY), Relaxed, Relaxed)
                .is_ok()
    }

    /// Send a decision to every watcher (none: it is dropped).
    pub fn record(&self, decision: Decision) {
        // An error only means every watcher left between the sample and now.
        let _ = self.sender.send(Arc::new(decision));
    }

    /// Start watching: decisions recorded from now on reach the returned [`Watcher`] until it is dropped.
    pub fn watch(&self) -> Watcher {
        // Subscribe before counting, so no decision sampled because of this watcher is sent before it
        // can receive it.
        let receiver = self.sender.subscribe();
        self.watchers.fetch_add(1, Relaxed);
        Watcher { receiver, watchers: Arc::clone(&self.watchers) }
    }
}

/// One open dashboard's end of the feed. Dropping it stops the recording once the last one is gone.
#[derive(Debug)]
pub struct Watcher {
    receiver: broadcast::Receiver<Arc<Decision>>,
    watchers: Arc<AtomicUsize>,
}

impl Watcher {
    /// The decisions recorded since the last call, oldest first, and how many were lost because this
    /// watcher fell behind.
    pub fn drain(&mut self) -> (Vec<Decision>, u64) {
        let mut out = Vec::new();
        let mut lost = 0;
        loop {
            match self.receiver.try_recv() {
                Ok(d) => out.push(Decision::clone(&d)),
                Err(broadcast::error::TryRecvError::Lagged(n)) => lost += n,
                Err(_) => return (out, lost),
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.watchers.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(status: u16) -> Decision {
        Decision {
            at_ms: 0,
            upstream: "app".into(),
            backend: Some("127.0.0.1:9001".into()),
            algorithm: "round-robin",
            reason: "round-robin: next in turn".into(),
            skipped: vec![],
            attempts: 1,
            retries: vec![],
            status,
        }
    }

    #[test]
    fn nothing_is_sampled_until_someone_watches_and_after_the_last_one_leaves() {
        let feed = Decisions::default();
        assert!(!feed.sample());
        let watcher = feed.watch();
        assert!(feed.watching());
        assert!(feed.sample(), "the first slot is free");
        let second = feed.watch();
        drop(watcher);
        assert!(feed.watching(), "one watcher is left");
        drop(second);
        assert!(!feed.watching());
        assert!(!feed.sample());
    }

    #[test]
    fn one_decision_per_slot() {
        let feed = Decisions::default();
        let now = 1_000 * SAMPLE_EVERY;
        assert!(feed.take_slot(now));
        assert!(!feed.take_slot(now), "the same instant: the slot is taken");
        assert!(!feed.take_slot(now + SAMPLE_EVERY - 1));
        assert!(feed.take_slot(now + SAMPLE_EVERY));
    }

    #[test]
    fn every_watcher_gets_every_decision_in_order_and_a_slow_one_loses_the_oldest() {
        let feed = Decisions::default();
        let mut a = feed.watch();
        let mut b = feed.watch();
        feed.record(decision(200));
        feed.record(decision(502));
        let statuses = |w: &mut Watcher| {
            let (got, lost) = w.drain();
            (got.iter().map(|d| d.status).collect::<Vec<_>>(), lost)
        };
        assert_eq!(statuses(&mut a), (vec![200, 502], 0));
        assert_eq!(statuses(&mut b), (vec![200, 502], 0));
        assert_eq!(statuses(&mut a), (vec![], 0), "drained");
        for i in 0..BACKLOG + 3 {
            feed.record(decision(u16::try_from(i).unwrap_or(0)));
        }
        let (got, lost) = a.drain();
        assert_eq!((got.len(), lost), (BACKLOG, 3));
        assert_eq!(got[0].status, 3, "the three oldest were dropped");
    }
}
