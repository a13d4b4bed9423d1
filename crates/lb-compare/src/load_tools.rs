//! The external load generators of `lb-compare balancers --protocol https|h2|h2c` and
//! `--new-connections`: `wrk` (HTTP/1.1, with or without TLS) and `h2load` (HTTP/2 over TLS or in clear
//! text, and HTTP/1.1 for fixed rates), run on core 0, their text output read into the same
//! [`LoadSummary`] that `loadgen --json` gives for plain HTTP/1.1.
//!
//! Which tool makes which figure:
//!
//! | protocol | saturation (CPU, requests/s) | fixed rates (p50/p99/p99.9) |
//! |---|---|---|
//! | `http1` | `loadgen` (`wrk -H 'Connection: close'` with `--new-connections`) | `loadgen --rate` |
//! | `https` | `wrk` (`-H 'Connection: close'` with `--new-connections`) | `h2load --h1 --rps` |
//! | `h2`, `h2c` | `h2load -m STREAMS` | `h2load --rps` |
//!
//! `wrk` has no fixed-rate mode, so fixed rates come from `h2load --rps` and its `--log-file` (a line per
//! request with its time until the end of the response). Unlike `loadgen --rate`, `h2load` waits for a
//! client's previous request before sending the next one when the server falls behind, so its
//! percentiles are from the actual send time (coordinated omission; at the low fractions of saturation
//! used here the difference is small). Neither tool counts requests that were due but not sent: `missed`
//! is 0 for them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::balancers::{BenchError, LoadSummary};

/// How to install the tools, for the error when one is missing.
pub const INSTALL: &str =
    "install with bash scripts/install-balancers.sh (Debian: apt-get install wrk nghttp2-client)";

/// A tool's path, or the error that says how to install it.
pub fn require(tool: &str) -> Result<PathBuf, BenchError> {
    lab::programs::find_on_path(tool)
        .ok_or_else(|| BenchError::Missing(format!("{tool} is not installed: {INSTALL}")))
}

/// Runs `cmd` pinned to core 0 and returns its standard output.
fn run_on_core0(tool: &Path, args: &[String], what: &str) -> Result<String, BenchError> {
    let out = Command::new("taskset")
        .args(["-c", "0"])
        .arg(tool)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| BenchError::Io { what: format!("running {}", tool.display()), source })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(BenchError::Unexpected(format!(
            "{} against {what} failed ({}): {}{}",
            tool.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            stdout.trim()
        )));
    }
    Ok(stdout)
}

/// A closed-loop `wrk` run: one thread, `connections` connections, for `duration`; with `close`, every
/// request asks `Connection: close`, so each one opens (and, over TLS, handshakes) a new connection.
pub fn wrk(
    url: &str,
    connections: usize,
    duration: Duration,
    close: bool,
    what: &str,
) -> Result<LoadSummary, BenchError> {
    let tool = require("wrk")?;
    let mut args: Vec<String> = vec![
        "-t1".into(),
        format!("-c{connections}"),
        format!("-d{}s", duration.as_secs().max(1)),
        "--timeout".into(),
        "10s".into(),
    ];
    if close {
        args.extend(["-H".into(), "Connection: close".into()]);
    }
    args.push(url.into());
    let out = run_on_core0(&tool, &args, what)?;
    parse_wrk(&out).ok_or_else(|| BenchError::Unexpected(format!("wrk's output against {what}:\n{out}")))
}

/// `wrk`'s summary: `N requests in Ts`, `Requests/sec: R`, and the optional `Socket errors:` and
/// `Non-2xx or 3xx responses:` lines. wrk counts answers only as "2xx or 3xx" and the rest: the first
/// are reported as status 200, the rest as errors, so a failing balancer never looks clean.
pub fn parse_wrk(out: &str) -> Option<LoadSummary> {
    let requests: u64 =
        out.lines().find(|l| l.contains(" requests in "))?.split_whitespace().next()?.parse().ok()?;
    let rps: f64 = out.lines().find_map(|l| l.trim().strip_prefix("Requests/sec:"))?.trim().parse().ok()?;
    let socket_errors: u64 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Socket errors:"))
        .map(|rest| {
            rest.split(',').filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok()).sum()
        })
        .unwrap_or(0);
    let non_2xx: u64 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let ok = requests.saturating_sub(non_2xx);
    let status_counts = if ok > 0 { BTreeMap::from([(200, ok)]) } else { BTreeMap::new() };
    Some(LoadSummary {
        requests,
        errors: socket_errors + non_2xx,
        missed: 0,
        rps,
        status_counts,
        p50_us: 0,
        p99_us: 0,
        p999_us: 0,
    })
}

/// What an `h2load` run is.
#[derive(Debug, Clone)]
pub struct H2loadRun {
    /// `https://...` or `http://...` (h2c with prior knowledge, unless `h1`).
    pub url: String,
    /// Clients (one connection each).
    pub clients: usize,
    /// Requests in flight per client (`-m`); 1 for HTTP/1.1.
    pub streams: usize,
    /// HTTP/1.1 instead of HTTP/2 (`--h1`).
    pub h1: bool,
    /// How long (`-D`), or else how many requests (`-n`).
    pub length: H2loadLength,
    /// Requests per second offered, in all (spread over the clients with `--rps`); none: closed loop.
    pub rate: Option<f64>,
}

/// How an `h2load` run ends.
#[derive(Debug, Clone, Copy)]
pub enum H2loadLength {
    /// After this long.
    Duration(Duration),
    /// After this many requests.
    Requests(u64),
}

impl H2loadRun {
    /// Runs it on core 0; with a rate, the percentiles come from its per-request log.
    pub fn run(&self, what: &str) -> Result<LoadSummary, BenchError> {
        let tool = require("h2load")?;
        // One file per run: two benchmarks in one process (the tests) may run h2load at the same time.
        static RUNS: AtomicU64 = AtomicU64::new(0);
        let log = self.rate.map(|_| {
            let run = RUNS.fetch_add(1, Ordering::Relaxed);
            std::env::temp_dir().join(format!("lb-compare-h2load-{}-{run}-{what}.log", std::process::id()))
        });
        let args = self.args(log.as_deref());
        let out = run_on_core0(&tool, &args, what);
        let log_text = log.as_ref().map(|p| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let _ = std::fs::remove_file(p);
            text
        });
        let out = out?;
        check_negotiated(&out, &self.url, self.h1, what)?;
        let mut summary = parse_h2load(&out)
            .ok_or_else(|| BenchError::Unexpected(format!("h2load's output against {what}:\n{out}")))?;
        if let Some(text) = log_text {
            let (p50, p99, p999) = log_percentiles(&text);
            (summary.p50_us, summary.p99_us, summary.p999_us) = (p50, p99, p999);
        }
        Ok(summary)
    }

    fn args(&self, log: Option<&Path>) -> Vec<String> {
        let mut args: Vec<String> =
            vec!["-t1".into(), format!("-c{}", self.clients), format!("-m{}", self.streams.max(1))];
        match self.length {
            H2loadLength::Duration(d) => args.push(format!("-D{}", d.as_secs().max(1))),
            H2loadLength::Requests(n) => args.push(format!("-n{n}")),
        }
        if self.h1 {
            args.push("--h1".into());
        }
        if let Some(rate) = self.rate {
            // --rps is per client; at least 1 (h2load refuses 0).
            let per_client = (rate / self.clients.max(1) as f64).max(1.0);
            args.push(format!("--rps={per_client:.2}"));
        }
        if let Some(log) = log {
            args.push(format!("--log-file={}", log.display()));
        }
        args.push(self.url.clone());
        args
    }
}

/// Over TLS, h2load prints what was negotiated (`TLS Protocol: TLSv1.3`, `Application protocol: h2`):
/// a balancer that fell back to TLS 1.2 or to HTTP/1.1 would be measured doing something else.
fn check_negotiated(out: &str, url: &str, h1: bool, what: &str) -> Result<(), BenchError> {
    if !url.starts_with("https:") {
        return Ok(());
    }
    let alpn = if h1 { "http/1.1" } else { "h2" };
    for expected in ["TLS Protocol: TLSv1.3".to_string(), format!("Application protocol: {alpn}")] {
        if !out.lines().any(|l| l.trim() == expected) {
            return Err(BenchError::Unexpected(format!("h2load against {what}: no `{expected}` in:\n{out}")));
        }
    }
    Ok(())
}

/// `h2load`'s summary: `finished in Ts, R req/s`, `requests: N total, ... S succeeded, F failed, E
/// errored, T timeout` and `status codes: A 2xx, B 3xx, C 4xx, D 5xx` (counted by class: reported
/// as 200, 300, 400 and 500).
pub fn parse_h2load(out: &str) -> Option<LoadSummary> {
    let finished = out.lines().find_map(|l| l.trim().strip_prefix("finished in "))?;
    let rps: f64 = finished.split(", ").nth(1)?.strip_suffix(" req/s")?.parse().ok()?;
    let requests_line = out.lines().find_map(|l| l.trim().strip_prefix("requests: "))?;
    let field = |name: &str| -> Option<u64> {
        requests_line.split(", ").find_map(|part| part.strip_suffix(name).and_then(|n| n.trim().parse().ok()))
    };
    let done = field(" done")?;
    let errors = field(" failed")? + field(" timeout").unwrap_or(0);
    let status_line = out.lines().find_map(|l| l.trim().strip_prefix("status codes: "))?;
    let mut status_counts = BTreeMap::new();
    for part in status_line.split(", ") {
        let mut words = part.split_whitespace();
        let (Some(n), Some(class)) = (words.next(), words.next()) else { continue };
        let (Ok(n), Some(Ok(c))) = (n.parse::<u64>(), class.strip_suffix("xx").map(str::parse::<u16>)) else {
            continue;
        };
        if n > 0 {
            status_counts.insert(c * 100, n);
        }
    }
    Some(LoadSummary {
        requests: done,
        errors,
        missed: 0,
        rps,
        status_counts,
        p50_us: 0,
        p99_us: 0,
        p999_us: 0,
    })
}

/// p50, p99 and p99.9 (µs) of the third column of an `h2load --log-file` (start time, status,
/// microseconds until the end of the response); zeros when it is empty.
pub fn log_percentiles(text: &str) -> (u64, u64, u64) {
    let mut times: Vec<u64> =
        text.lines().filter_map(|l| l.split('\t').nth(2).and_then(|v| v.trim().parse().ok())).collect();
    if times.is_empty() {
        return (0, 0, 0);
    }
    times.sort_unstable();
    let at = |q: f64| times[((q * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1];
    (at(0.50), at(0.99), at(0.999))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_summary_with_errors_and_non_2xx() {
        let out = "Running 5s test @ https://127.0.0.1:25080/\n  1 threads and 64 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency     1.50ms  300.00us  10.00ms   90.00%\n  200000 requests in 5.00s, 20.00MB read\n  Socket errors: connect 0, read 3, write 0, timeout 2\n  Non-2xx or 3xx responses: 10\nRequests/sec:  40000.12\nTransfer/sec:      4.00MB\n";
        let s = parse_wrk(out).unwrap_or_else(|| panic!("no summary"));
        assert_eq!((s.requests, s.errors, s.missed), (200_000, 15, 0));
        assert_eq!(s.status_counts, BTreeMap::from([(200, 199_990)]));
        assert!((s.rps - 40000.12).abs() < 1e-9);
        assert!(parse_wrk("Running 5s test\n").is_none());
    }

    #[test]
    fn h2load_summary_by_status_class() {
        let out = "finished in 5.00s, 45123.40 req/s, 1.23MB/s\nrequests: 225617 total, 225937 started, 225617 done, 225610 succeeded, 7 failed, 0 errored, 0 timeout\nstatus codes: 225610 2xx, 0 3xx, 0 4xx, 7 5xx\n";
        let s = parse_h2load(out).unwrap_or_else(|| panic!("no summary"));
        assert_eq!((s.requests, s.errors), (225_617, 7));
        assert_eq!(s.status_counts, BTreeMap::from([(200, 225_610), (500, 7)]));
        assert!((s.rps - 45123.40).abs() < 1e-9);
    }

    #[test]
    fn percentiles_of_a_log() {
        // 1000 requests taking 1..=1000 µs: the 500th, 990th and 999th smallest.
        let text: String = (1..=1000).rev().map(|t| format!("1700000000000000\t200\t{t}\n")).collect();
        assert_eq!(log_percentiles(&text), (500, 990, 999));
        assert_eq!(log_percentiles(""), (0, 0, 0));
    }

    #[test]
    fn rate_is_spread_over_the_clients() {
        let run = H2loadRun {
            url: "http://127.0.0.1:1/".into(),
            clients: 8,
            streams: 1,
            h1: true,
            length: H2loadLength::Duration(Duration::from_secs(5)),
            rate: Some(4000.0),
        };
        let args = run.args(None);
        assert_eq!(args, ["-t1", "-c8", "-m1", "-D5", "--h1", "--rps=500.00", "http://127.0.0.1:1/"]);
    }
}
