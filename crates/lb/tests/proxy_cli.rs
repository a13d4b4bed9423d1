//! The `lb` binary itself: `lb check` on good and bad files, and demo mode answering requests.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LB: &str = env!("CARGO_BIN_EXE_lb");

fn config_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config")
}

/// Run `lb check` on `text` saved as `name` in a fresh temp dir; (exit code, stdout, stderr).
fn check_text(name: &str, text: &str) -> (i32, String, String) {
    // A directory per call: tests run in parallel and each removes its own.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("lb-check-{}-{n}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(LB)
        .args(["check", "--config"])
        .arg(name)
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_shipped_config_passes_check() {
    let mut checked = 0;
    for entry in std::fs::read_dir(config_dir()).unwrap_or_else(|e| panic!("{e}")) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = Command::new(LB)
                .arg("check")
                .arg("--config")
                .arg(&path)
                .output()
                .unwrap_or_else(|e| panic!("{e}"));
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
            assert!(stdout.contains(": ok: listen "), "{stdout}");
            checked += 1;
        }
    }
    assert!(checked >= 3, "expected the example configs in crates/lb/config");
}

const GOOD: &str = r#"[server]
listen = ["127.0.0.1:8080"]

[[upstream]]
name = "app"
algorithm = "round-robin"
backends = ["127.0.0.1:9001", "127.0.0.1:9002=3"]
"#;

#[test]
fn check_accepts_a_good_file_with_a_one_line_summary() {
    let (code, stdout, stderr) = check_text("lb.toml", GOOD);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "lb.toml: ok: listen 127.0.0.1:8080; upstreams: app (round-robin, 2 backends)\n");
}

#[test]
fn check_points_at_each_mistake_with_file_line_and_column() {
    // (what to break, the expected start of the error line). Line 6 is `algorithm = ...`, line 7
    // `backends = [...]`; columns count from 1.
    let cases = [
        (
            GOOD.replace("\"round-robin\"", "\"fastest\""),
            "lb.toml:6:13: unknown algorithm \"fastest\"; expected one of",
        ),
        (
            GOOD.replace("127.0.0.1:9002=3", "127.0.0.1:9002=0"),
            "lb.toml:7:31: backend 127.0.0.1:9002: weight 0",
        ),
        (GOOD.replace("127.0.0.1:9001", "localhost"), "lb.toml:7:13: bad backend address \"localhost\""),
        (
            GOOD.replace("name = \"app\"", "name = \"app\"\nhash_key = \"body\""),
            "lb.toml:6:12: invalid hash key \"body\"",
        ),
        (GOOD.replace("[server]", "[server]\nthreads = 4"), "lb.toml:2:1: unknown field `threads`"),
        (GOOD.replace("127.0.0.1:8080", "8080"), "lb.toml:2:11: bad listen address \"8080\""),
        (
            format!("{GOOD}\n[[upstream]]\nname = \"app\"\nalgorithm = \"random\"\nbackends = []\n"),
            "lb.toml:10:8: duplicate upstream name \"app\"",
        ),
    ];
    for (text, expected) in cases {
        let (code, stdout, stderr) = check_text("lb.toml", &text);
        assert_eq!(code, 1, "{expected}: exit code (stdout {stdout:?})");
        assert!(stderr.starts_with(expected), "expected {expected:?}\n     got {stderr:?}");
    }
}

#[test]
fn check_accepts_tls_to_http1_backends_and_points_at_a_missing_ca_file() {
    // `ca` is relative to the config file, like certificate paths. The shipped CA file, copied next
    // to the config, checks; a CA file that is not there is reported at its value, line 9 column 6.
    let ca =
        std::fs::read_to_string(config_dir().join("certs/ca.lb.test.pem")).unwrap_or_else(|e| panic!("{e}"));
    let tls = |ca_file: &str| {
        format!("{GOOD}[upstream.tls]\nca = \"{ca_file}\"\nserver_name = \"backend.lb.test\"\n")
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("ca.pem"), ca).unwrap_or_else(|e| panic!("{e}"));
    let run = |text: &str| {
        std::fs::write(dir.path().join("lb.toml"), text).unwrap_or_else(|e| panic!("{e}"));
        let out = Command::new(LB)
            .args(["check", "--config", "lb.toml"])
            .current_dir(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
    };
    let (code, stdout, stderr) = run(&tls("ca.pem"));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "lb.toml: ok: listen 127.0.0.1:8080; upstreams: app (round-robin, 2 backends, tls)\n");
    let (code, _, stderr) = run(&tls("missing.pem"));
    assert_eq!(code, 1);
    assert!(stderr.starts_with("lb.toml:9:6: upstream \"app\": "), "{stderr}");
    assert!(stderr.trim_end().ends_with("missing.pem: No such file or directory (os error 2)"), "{stderr}");
}

/// Kills the child when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn demo_mode_starts_three_backends_and_balances_them() {
    let child = Command::new(LB)
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--workers", "1"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut child = Child(child);
    let stdout = child.0.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    // The banner names the proxy's real address: `  proxy             http://127.0.0.1:PORT`.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut proxy = None;
    let mut banner = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap_or_default();
        banner.push_str(&line);
        banner.push('\n');
        if let Some(url) = line.trim().strip_prefix("proxy") {
            proxy = Some(url.trim().to_string());
        }
        if line.starts_with("Ctrl-C") || Instant::now() > deadline {
            break;
        }
    }
    let proxy = proxy.unwrap_or_else(|| panic!("no proxy address in the banner:\n{banner}"));
    assert!(banner.contains("curl -i -H 'X-Lb-Explain: 1'"), "{banner}");
    let host = proxy.trim_start_matches("http://");
    let mut names = Vec::new();
    for _ in 0..3 {
        names.push(http_get(host, "/"));
    }
    names.sort();
    assert_eq!(names, ["backend-1\n", "backend-2\n", "backend-3\n"], "round robin over three backends");
}

/// A minimal blocking HTTP/1.1 GET (this test has no async runtime): the body of the response.
fn http_get(host: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(host).unwrap_or_else(|e| panic!("{e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap_or_else(|e| panic!("{e}"));
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap_or_else(|e| panic!("{e}"));
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default()
}
