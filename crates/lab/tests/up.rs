//! `lab up` as a learner runs it: the real binary, started from the repository root, prints where
//! everything is, with the committed config named relative to the root (a lesson records that line,
//! so it must not depend on where the repository is checked out), and stops cleanly on SIGTERM.
//!
//! Run with `cargo test -p lab --test up` (needs nginx: `bash scripts/install-balancers.sh`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use lab::Balancer;
use lab::repo::source_root;
use lab::testing::{free_ports, require};

#[test]
fn up_names_the_committed_config_relative_to_the_root() {
    if require(Balancer::Nginx, "up::up_names_the_committed_config_relative_to_the_root").is_none() {
        return;
    }
    let root = source_root();
    let base = free_ports().backends[0];
    let mut child = Command::new(env!("CARGO_BIN_EXE_lab"))
        .args(["up", "nginx", "--base-port", &base.to_string()])
        .current_dir(&root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("lab runs");
    let stdout = child.stdout.take().expect("piped stdout");
    // Read on a thread, so a lab that hangs fails the test after a timeout instead of blocking it.
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut banner = Vec::new();
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(30)) {
        let last = line == "Ctrl-C stops everything.";
        banner.push(line);
        if last {
            break;
        }
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().expect("lab exits");
    let banner = banner.join("\n");
    let config = banner.lines().find(|l| l.trim_start().starts_with("config:")).unwrap_or_default();
    assert!(config.ends_with("/nginx.conf (rendered from nginx/round-robin.conf)"), "{banner}");
    assert!(!banner.contains(&*root.to_string_lossy()), "the checkout's path leaks into:\n{banner}");
    assert!(status.success(), "lab up exited with {status} after SIGTERM; it printed:\n{banner}");
    // The rest of its output, up to the end of the pipe (nginx, which shares it, has stopped too).
    let mut rest = Vec::new();
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(10)) {
        rest.push(line);
    }
    assert_eq!(rest, vec!["stopped nginx and the backends"]);
}
