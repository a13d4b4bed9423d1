//! lb on its lab config (`crates/lb/config/lab.toml`), run exactly as nginx, HAProxy and Envoy are:
//! the config validates with `lb check`, and traffic through it reaches the toy backends.
//!
//! Run with `cargo build -p lb && cargo nextest run -p lab --test lb` (skipped when lb is not built).

use std::time::Duration;

use lab::Balancer::Lb;
use lab::testing::{Lab, validates};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_config_reaches_every_backend() {
    let test = "lb::lab_config_reaches_every_backend";
    if !lab::Balancer::Lb.config_path(&lab::repo::source_root(), "lab.toml").is_file() {
        eprintln!("SKIPPED: {test} needs crates/lb/config/lab.toml");
        return;
    }
    if !validates(Lb, "lab.toml", test).await {
        return;
    }
    let Some(lab) = Lab::start(Lb, "lab.toml", test).await else { return };
    lab.check(lab.wait_all_backends(Duration::from_secs(10)).await, "not all backends reached through lb");
    let tally = lab.send(90, None).await;
    lab.check(tally.failures() == 0 && tally.backends().len() == 3, format!("through lb: {tally:?}"));
}
