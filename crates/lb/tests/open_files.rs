//! `lb` raises its soft open-files limit to the hard one at start, and says so in its log.
//!
//! A test binary of its own: it lowers its own soft limit first (the child inherits it), which no
//! other test in the same process should have to share.

#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// The soft and hard `Max open files` of process `pid`, from `/proc/PID/limits`.
fn limits_of(pid: u32) -> (String, String) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_else(|e| panic!("{e}"));
    let line = text.lines().find(|l| l.starts_with("Max open files")).unwrap_or_else(|| panic!("{text}"));
    let mut numbers = line.trim_start_matches("Max open files").split_whitespace();
    let mut next = || numbers.next().unwrap_or_else(|| panic!("{line}")).to_string();
    (next(), next())
}

#[test]
fn the_soft_open_files_limit_is_raised_to_the_hard_one() {
    let limit = getrlimit(Resource::Nofile);
    let Some(hard) = limit.maximum else {
        println!("SKIPPED: the hard open-files limit is unlimited, so there is nothing to raise to");
        return;
    };
    // Start lb with a soft limit well under the hard one, as a login shell's 1024 usually is.
    let low = (hard / 2).min(1024);
    setrlimit(Resource::Nofile, Rlimit { current: Some(low), maximum: Some(hard) })
        .unwrap_or_else(|e| panic!("lowering our own soft limit: {e}"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_lb"))
        .args(["--listen", "127.0.0.1:0", "--backend", "127.0.0.1:9"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run lb: {e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
    let (tx, lines) = std::sync::mpsc::channel();
    for out in [Box::new(stdout) as Box<dyn std::io::Read + Send>, Box::new(stderr)] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    // The limit is raised before anything listens, so by the "listening" line it has happened. The log
    // line about it comes on stderr and the "listening" line on stdout, read by two threads: wait for
    // both, in whichever order they arrive.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut log = Vec::new();
    let seen = |log: &[String], what: &str| log.iter().any(|l| l.contains(what));
    while !(seen(&log, "lb listening on ") && seen(&log, "open files limit")) {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => log.push(line),
            Err(e) => {
                let _ = child.kill();
                panic!("lb did not start: {e}: {log:?}");
            }
        }
    }
    let limits = limits_of(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(limits, (hard.to_string(), hard.to_string()), "soft raised from {low}");
    let said = log.iter().find(|l| l.contains("open files limit raised to the hard limit"));
    let said = said.unwrap_or_else(|| panic!("no log line about the limit: {log:?}"));
    assert!(said.contains(&format!("soft={hard}")) && said.contains(&format!("raised_from={low}")), "{said}");
}
