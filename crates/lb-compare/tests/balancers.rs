//! A short smoke run of the per-core benchmark: direct, lb and (when installed) nginx, one round of one
//! second. It checks that every figure was measured and every answer was a 2xx, not what the figures
//! are: benchmarks print numbers, they do not pass or fail on them (see CONTRIBUTING.md).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lab::Balancer;
use lb_compare::balancers::{self, BalancersSpec, Protocol, Target};

/// The folder of this package's binaries (`target/debug`), with lb, toy-backend and loadgen built in it.
/// `cargo nextest run --workspace` (CI) has built them already; a lone `cargo test -p lb-compare` may
/// not have, so build them then.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    let dir =
        exe.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_else(|| panic!("no target dir"));
    if ["lb", "toy-backend", "loadgen"].iter().any(|b| !dir.join(b).is_file()) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-p", "lb", "-p", "toy-backend", "-p", "loadgen"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cargo build -p lb -p toy-backend -p loadgen failed");
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_run_measures_every_figure_with_only_2xx_answers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut spec = BalancersSpec::new(root);
    spec.bin_dir = Some(bin_dir());
    spec.rounds = 1;
    spec.duration = Duration::from_secs(1);
    spec.base_port = 26001;
    spec.idle_connections = 1000;
    spec.strace_requests = 1000;
    let nginx = lab::programs::find(lab::Balancer::Nginx).is_some();
    spec.only = vec![Target::Direct, Target::Balancer(lab::Balancer::Lb)];
    if nginx {
        spec.only.push(Target::Balancer(lab::Balancer::Nginx));
    } else {
        assert!(!lab::programs::external_required(), "nginx is required ({})", lab::programs::REQUIRE_ENV);
    }
    let report = balancers::run(spec, |line| eprintln!("{line}")).await.unwrap_or_else(|e| panic!("{e}"));
    let text = balancers::text(&report);
    println!("{text}");

    let names: Vec<&str> = report.results.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, if nginx { vec!["direct", "lb", "nginx"] } else { vec!["direct", "lb"] });
    for r in &report.results {
        assert!(r.rps.median > 0.0, "{}: no throughput", r.name);
        assert!(!r.status_counts.is_empty(), "{}: no answers", r.name);
        assert!(r.status_counts.keys().all(|s| (200..300).contains(s)), "{}: {:?}", r.name, r.status_counts);
        assert_eq!(r.errors, 0, "{}", r.name);
        assert_eq!(r.latency.len(), report.rates.len(), "{}", r.name);
        assert!(
            r.latency.iter().all(|l| l.p50_us.median > 0.0 && l.p99_us.median >= l.p50_us.median),
            "{}",
            r.name
        );
        if r.name != "direct" {
            assert_proxy_figures(r);
            assert!(r.latency.iter().all(|l| l.added_p99_us.is_some()), "{}: no added latency", r.name);
            if lab::programs::find_on_path("strace").is_some() {
                // At least a read and a write per request on each side, whatever the proxy.
                assert!(
                    r.syscalls_per_req.is_some_and(|s| s >= 2.0),
                    "{}: {:?} syscalls/req",
                    r.name,
                    r.syscalls_per_req
                );
            }
        }
    }
    // The table has a row per target with numbers in it.
    for name in names {
        let row = text
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{text}"));
        assert!(row.chars().any(|c| c.is_ascii_digit()), "{row}");
    }
}

/// The balancers of a `--protocol` run: all four when installed. A missing one (or a missing load
/// generator) skips the test with how to install it, or fails it under LB_REQUIRE_EXTERNAL=1.
fn protocol_spec(test: &str, protocol: Protocol, tools: &[&str], base_port: u16) -> Option<BalancersSpec> {
    let required = lab::programs::external_required();
    let mut missing: Vec<String> =
        tools.iter().filter(|t| lab::programs::find_on_path(t).is_none()).map(|t| t.to_string()).collect();
    let mut only = vec![Target::Direct, Target::Balancer(Balancer::Lb)];
    for b in [Balancer::Nginx, Balancer::Haproxy, Balancer::Envoy] {
        if lab::programs::find(b).is_some() {
            only.push(Target::Balancer(b));
        } else {
            missing.push(b.program().to_string());
        }
    }
    if !missing.is_empty() {
        assert!(!required, "{test} needs {} ({})", missing.join(", "), lab::programs::REQUIRE_ENV);
        println!(
            "SKIPPED: {test} needs {}: install with bash scripts/install-balancers.sh",
            missing.join(", ")
        );
        return None;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut spec = BalancersSpec::new(root);
    spec.bin_dir = Some(bin_dir());
    spec.protocol = protocol;
    spec.only = only;
    spec.rounds = 1;
    spec.duration = Duration::from_secs(1);
    spec.connections = 16;
    spec.base_port = base_port;
    spec.idle_connections = 200;
    spec.strace_requests = 1000;
    Some(spec)
}

/// What every `--protocol` run must have: a row per target with throughput, only 2xx answers, CPU and
/// memory for each balancer, the tool that made the row, and a table row with numbers.
fn assert_every_figure(report: &balancers::BalancersReport, text: &str, saturation_tools: &[(&str, &str)]) {
    let names: Vec<&str> = report.results.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["direct", "lb", "nginx", "haproxy", "envoy"], "{text}");
    for r in &report.results {
        assert!(r.rps.median > 0.0, "{}: no throughput\n{text}", r.name);
        assert!(!r.status_counts.is_empty(), "{}: no answers", r.name);
        assert!(r.status_counts.keys().all(|s| (200..300).contains(s)), "{}: {:?}", r.name, r.status_counts);
        assert_eq!(r.errors, 0, "{}\n{text}", r.name);
        let tool = saturation_tools.iter().find(|(n, _)| *n == r.name).map_or("", |(_, t)| *t);
        assert_eq!(r.tool, tool, "{}", r.name);
        assert_eq!(r.latency.len(), report.rates.len(), "{}", r.name);
        for l in &r.latency {
            assert!(l.p50_us.median > 0.0 && l.p99_us.median >= l.p50_us.median, "{}: {l:?}", r.name);
            assert!(l.tool.starts_with("h2load"), "{}: {}", r.name, l.tool);
        }
        if r.name != "direct" {
            assert_proxy_figures(r);
        }
        let row =
            text.lines().find(|l| l.starts_with(&r.name)).unwrap_or_else(|| panic!("no row for {}", r.name));
        assert!(row.chars().any(|c| c.is_ascii_digit()) && row.contains(&r.tool), "{row}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_rows_come_from_wrk_through_every_balancer() {
    let Some(spec) = protocol_spec("https_rows_come_from_wrk", Protocol::Https, &["wrk", "h2load"], 27101)
    else {
        return;
    };
    let report = balancers::run(spec, |line| eprintln!("{line}")).await.unwrap_or_else(|e| panic!("{e}"));
    let text = balancers::text(&report);
    println!("{text}");
    assert!(text.contains("protocol https: HTTP/1.1 over TLS 1.3"), "{text}");
    let wrk: Vec<(&str, &str)> = ["direct", "lb", "nginx", "haproxy", "envoy"].map(|n| (n, "wrk")).to_vec();
    assert_every_figure(&report, &text, &wrk);
    assert!(!report.rates.is_empty());
}

/// An h2 or h2c run: `direct` from `h2load --h1`, every balancer from `h2load -m 10`, every figure present.
async fn h2load_rows_through_every_balancer(name: &str, protocol: Protocol, base_port: u16) {
    let Some(spec) = protocol_spec(name, protocol, &["h2load"], base_port) else {
        return;
    };
    let report = balancers::run(spec, |line| eprintln!("{line}")).await.unwrap_or_else(|e| panic!("{e}"));
    let text = balancers::text(&report);
    println!("{text}");
    let mut tools = vec![("direct", "h2load --h1")];
    tools.extend(["lb", "nginx", "haproxy", "envoy"].map(|n| (n, "h2load -m 10")));
    assert_every_figure(&report, &text, &tools);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rows_come_from_h2load_through_every_balancer() {
    h2load_rows_through_every_balancer("h2_rows_come_from_h2load", Protocol::H2, 27201).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_rows_come_from_h2load_through_every_balancer() {
    h2load_rows_through_every_balancer("h2c_rows_come_from_h2load", Protocol::H2c, 27301).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_tls_connections_give_handshake_figures() {
    let Some(mut spec) = protocol_spec("new_tls_connections", Protocol::Https, &["wrk"], 27401) else {
        return;
    };
    spec.new_connections = true;
    let report = balancers::run(spec, |line| eprintln!("{line}")).await.unwrap_or_else(|e| panic!("{e}"));
    let text = balancers::text(&report);
    println!("{text}");
    let tools: Vec<(&str, &str)> =
        ["direct", "lb", "nginx", "haproxy", "envoy"].map(|n| (n, "wrk Connection: close")).to_vec();
    // No fixed-rate runs with a new connection per request.
    assert!(report.rates.is_empty(), "{:?}", report.rates);
    assert_every_figure(&report, &text, &tools);
    for r in report.results.iter().filter(|r| r.name != "direct") {
        let hs = r.handshakes_per_s.unwrap_or_else(|| panic!("{}: no handshakes/s", r.name));
        assert_eq!(hs, r.rps, "{}: one handshake per request", r.name);
        let cpu = r.cpu_us_per_handshake.unwrap_or_else(|| panic!("{}: no CPU per handshake", r.name));
        assert!(cpu.median > 0.0, "{}", r.name);
    }
    assert!(report.checks.iter().any(|c| c.what == "CPU per new connection vs nginx"), "{:?}", report.checks);
}

/// What every proxy's row has, whatever the protocol: CPU, idle and peak memory, and a busy share of
/// one core (CPU time over wall time, never many cores' worth).
fn assert_proxy_figures(r: &lb_compare::balancers::TargetResult) {
    assert!(r.user_us_per_req.median + r.sys_us_per_req.median > 0.0, "{}: no CPU measured", r.name);
    assert!(r.vmhwm_kib.is_some_and(|k| k > 0), "{}: no memory figure", r.name);
    assert!(r.peak_vmhwm_kib.is_some_and(|k| k > 0), "{}: no peak memory figure", r.name);
    assert!(
        r.core_busy_pct.median > 0.0 && r.core_busy_pct.median < 150.0,
        "{}: core {}%",
        r.name,
        r.core_busy_pct.median
    );
}
