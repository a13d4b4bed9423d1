//! A short smoke run of the per-core benchmark: direct, lb and (when installed) nginx, one round of one
//! second. It checks that every figure was measured and every answer was a 2xx, not what the figures
//! are: benchmarks print numbers, they do not pass or fail on them (see CONTRIBUTING.md).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lb_compare::balancers::{self, BalancersSpec, Target};

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
            assert!(r.user_us_per_req.median + r.sys_us_per_req.median > 0.0, "{}: no CPU measured", r.name);
            assert!(r.vmhwm_kib.is_some_and(|k| k > 0), "{}: no memory figure", r.name);
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
