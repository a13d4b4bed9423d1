//! The `toy-backend` binary: `--count 3 --base-port P` starts three named backends, and SIGTERM
//! stops them cleanly.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A port P such that P, P+1 and P+2 were all free a moment ago.
fn three_free_ports() -> u16 {
    for _ in 0..50 {
        let Ok(first) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(addr) = first.local_addr() else {
            continue;
        };
        let base = addr.port();
        if base > 65_000 {
            continue;
        }
        let rest: Vec<_> = (1..3).filter_map(|i| TcpListener::bind(("127.0.0.1", base + i)).ok()).collect();
        if rest.len() == 2 {
            return base;
        }
    }
    panic!("no three consecutive free ports");
}

/// Kills the child if the test fails before it is stopped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn count_mode_starts_named_backends_and_stops_on_sigterm() {
    let base = three_free_ports();
    let mut child = Guard(
        Command::new(env!("CARGO_BIN_EXE_toy-backend"))
            .args(["--count", "3", "--base-port", &base.to_string()])
            .args(["--latency", "fixed:1ms", "--capacity", "8"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("binary starts"),
    );
    let stdout = child.0.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    for i in 0..3u16 {
        let line = rx.recv_timeout(Duration::from_secs(30)).expect("a start line per backend");
        assert_eq!(line, format!("backend-{} listening on http://127.0.0.1:{}", i + 1, base + i));
    }

    let client =
        reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().expect("client");
    for i in 0..3u16 {
        let body = client
            .get(format!("http://127.0.0.1:{}/", base + i))
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("body");
        assert_eq!(body, format!("backend-{}\n", i + 1));
    }
    let knobs: serde_json::Value = client
        .get(format!("http://127.0.0.1:{base}/admin/knobs"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON");
    assert_eq!(knobs["latency"], "fixed:1ms");
    assert_eq!(knobs["capacity"], 8);

    let pid = child.0.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "still running 10 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
}

#[test]
fn bad_flags_are_rejected() {
    let bin = env!("CARGO_BIN_EXE_toy-backend");
    for args in [
        &["--latency", "fixed:soon"][..],
        &["--error-rate", "2"],
        &["--capacity", "0"],
        &["--listen", "127.0.0.1:0", "--count", "2"],
    ] {
        let out = Command::new(bin).args(args).output().expect("binary runs");
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(!out.stderr.is_empty(), "{args:?} should say why");
    }
}
