//! File descriptors: the open-files limit, raised at start, and the warning when they run out.
//!
//! Every client connection and every backend connection is a file descriptor, so a proxy with
//! `max_connections = 10000` needs more than 20,000 of them. Linux starts most processes with a soft
//! limit of 1024 and a much higher hard limit (the soft one is kept low for programs that still use
//! `select`, which cannot see descriptors past 1023). A process may raise its own soft limit up to the
//! hard one without privileges, so [`raise_open_files_limit`] does that at start, as Go's runtime does
//! for every Go program and nginx's `worker_rlimit_nofile` does when configured. The hard limit itself
//! is the administrator's (`ulimit -Hn`, systemd's `LimitNOFILE=`).
//!
//! When descriptors run out anyway, `accept` fails with `EMFILE` on every try. The accept loop backs
//! off 50 ms and tries again, which is right, but one warning per try is 20 lines a second per
//! listener and worker, enough to fill a disk during the very overload an operator is trying to read.
//! [`Throttle`] lets one line through per interval and counts the ones it held back, so the next line
//! says how many there were.
//!
//! The rest of `net` is per connection; this is per process, and runs before any socket is opened.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use lb_algorithms::Nanos;
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// The open-files limit after [`raise_open_files_limit`]; `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit before.
    pub before: Option<u64>,
    /// The soft limit now: what the process may open.
    pub soft: Option<u64>,
    /// The hard limit, the most the soft one can be raised to.
    pub hard: Option<u64>,
}

/// Raise the soft open-files limit to the hard one, and say what it is now. If the kernel refuses
/// (macOS caps it below an unlimited hard limit, for one), the limit stays as it was: the proxy still
/// runs, with fewer connections possible, and the caller logs the numbers.
pub fn raise_open_files_limit() -> OpenFiles {
    let limit = getrlimit(Resource::Nofile);
    let before = limit.current;
    let mut soft = before;
    // An unlimited hard limit is not a value the soft one can take on Linux (it is capped by
    // `fs.nr_open`), so only a finite one is copied over.
    if let Some(hard) = limit.maximum
        && limit.current.is_some_and(|current| current < hard)
        && setrlimit(Resource::Nofile, Rlimit { current: Some(hard), maximum: Some(hard) }).is_ok()
    {
        soft = Some(hard);
    }
    OpenFiles { before, soft, hard: limit.maximum }
}

/// Descriptors `max_connections` clients can need: each holds its own and, while a request is
/// forwarded, one to a backend; plus a margin for listeners, idle pooled connections, the admin API
/// and the runtime's own.
pub fn needed_for(max_connections: usize) -> u64 {
    (max_connections as u64).saturating_mul(2).saturating_add(64)
}

/// `Some(needed)` when `limit` cannot hold what `max_connections` needs (see [`needed_for`]).
pub fn too_few_for(limit: OpenFiles, max_connections: usize) -> Option<u64> {
    let needed = needed_for(max_connections);
    limit.soft.is_some_and(|soft| soft < needed).then_some(needed)
}

/// At most one event let through per interval; the others are counted, and the count is handed to
/// the next one let through. Shared by every worker thread (two atomics, touched only on the rare path
/// that logs).
#[derive(Debug)]
pub struct Throttle {
    every: Nanos,
    /// The earliest time the next event may pass.
    next: AtomicU64,
    /// Events held back since the last one that passed.
    suppressed: AtomicU64,
}

impl Throttle {
    /// One event per `every`.
    pub const fn new(every: Duration) -> Self {
        Throttle { every: every.as_nanos() as Nanos, next: AtomicU64::new(0), suppressed: AtomicU64::new(0) }
    }

    /// An event at `now`: `Some(held back since the last one)` if it may be logged, `None` if not.
    pub fn allow(&self, now: Nanos) -> Option<u64> {
        let next = self.next.load(Relaxed);
        // Of two threads at the same moment only one wins the exchange; the other is held back.
        if now >= next
            && self.next.compare_exchange(next, now.saturating_add(self.every), Relaxed, Relaxed).is_ok()
        {
            return Some(self.suppressed.swap(0, Relaxed));
        }
        self.suppressed.fetch_add(1, Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Nanos = 1_000_000;

    #[test]
    fn a_limit_below_two_descriptors_per_connection_is_too_few() {
        let limit = |soft| OpenFiles { before: Some(1024), soft, hard: soft };
        // The default max_connections (10,000) needs 20,064: the usual 1024 is far short, a
        // container's 1,048,576 is plenty, and unlimited is never short.
        assert_eq!(too_few_for(limit(Some(1024)), 10_000), Some(20_064));
        assert_eq!(too_few_for(limit(Some(20_063)), 10_000), Some(20_064));
        assert_eq!(too_few_for(limit(Some(20_064)), 10_000), None);
        assert_eq!(too_few_for(limit(Some(1_048_576)), 10_000), None);
        assert_eq!(too_few_for(limit(None), 10_000), None);
    }

    #[test]
    fn one_event_per_interval_passes_with_the_count_of_those_held_back() {
        let t = Throttle::new(Duration::from_secs(5));
        // The accept loop's pace when out of descriptors: one failure every 50 ms, for 12 s.
        let passed: Vec<(Nanos, u64)> =
            (0..240).filter_map(|i| t.allow(1 + i * 50 * MS).map(|held| (i * 50 / 1000, held))).collect();
        // At 0 s, 5 s and 10 s; each after the 99 held back in between (100 tries per 5 s).
        assert_eq!(passed, vec![(0, 0), (5, 99), (10, 99)]);
    }

    #[test]
    fn the_first_event_after_a_quiet_spell_passes_at_once() {
        let t = Throttle::new(Duration::from_secs(5));
        assert_eq!(t.allow(MS), Some(0));
        assert_eq!(t.allow(2 * MS), None);
        assert_eq!(t.allow(60_000 * MS), Some(1));
        assert_eq!(t.allow(60_001 * MS), None);
    }
}
