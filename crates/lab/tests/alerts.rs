//! The alert rules in `monitoring/alerts.yml`: `promtool check rules` accepts them, their unit tests in
//! `monitoring/alerts.test.yml` pass under `promtool test rules`, `promtool check config` accepts the
//! Prometheus config that loads them, and every rule has a test that sees it pending and one that sees
//! it firing.
//!
//! Run with `cargo test -p lab --test alerts` (needs promtool: `apt-get install prometheus`, Debian's
//! package; the test says SKIPPED without it, and fails under `LB_REQUIRE_EXTERNAL=1`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use lab::repo::source_root;
use lab::testing::require_program;
use serde_norway::Value;

const INSTALL: &str = "apt-get install prometheus (Debian's package ships promtool)";

fn monitoring() -> PathBuf {
    source_root().join("monitoring")
}

/// Runs `promtool args...` in `monitoring/` and fails the test with its output unless it succeeds.
fn promtool(program: &Path, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(monitoring())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {} failed ({}):\n{text}", args.join(" "), out.status);
    text
}

fn yaml(name: &str) -> Value {
    let path = monitoring().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `alert:` names in alerts.yml.
fn alert_names() -> BTreeSet<String> {
    let doc = yaml("alerts.yml");
    let groups = doc.get("groups").and_then(Value::as_sequence).cloned().unwrap_or_default();
    groups
        .iter()
        .flat_map(|g| g.get("rules").and_then(Value::as_sequence).cloned().unwrap_or_default())
        .filter_map(|r| r.get("alert").and_then(Value::as_str).map(String::from))
        .collect()
}

#[test]
fn promtool_checks_the_rules_and_the_config() {
    let test = "alerts::promtool_checks_the_rules_and_the_config";
    let Some(promtool_path) = require_program("promtool", INSTALL, test) else { return };
    let rules = promtool(&promtool_path, &["check", "rules", "alerts.yml"]);
    let want = format!("SUCCESS: {} rules found", alert_names().len());
    assert!(rules.contains(&want), "expected {want:?}:\n{rules}");
    // The config names alerts.yml in `rule_files`, so this checks that Prometheus finds them.
    let config = promtool(&promtool_path, &["check", "config", "prometheus.yml"]);
    assert!(config.contains("SUCCESS: 1 rule files found"), "{config}");
}

#[test]
fn promtool_unit_tests_pass() {
    let test = "alerts::promtool_unit_tests_pass";
    let Some(promtool_path) = require_program("promtool", INSTALL, test) else { return };
    let out = promtool(&promtool_path, &["test", "rules", "alerts.test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn the_six_alerts_the_lab_needs_are_there() {
    let want: BTreeSet<String> = [
        "LbBackendDown",
        "LbHigh5xxRatio",
        "LbHighP99Latency",
        "LbRetryBudgetExhausted",
        "LbUpstreamPanic",
        "LbTlsCertificateExpiresSoon",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(alert_names(), want);
}

/// Every rule is seen pending (an `ALERTS{alertstate="pending"}` sample) and firing (an `exp_alerts`
/// entry), and has a test time at which it must not fire (an empty `exp_alerts`). promtool runs whatever
/// tests exist; this makes sure a new rule cannot arrive without its own.
#[test]
fn every_rule_has_a_pending_a_firing_and_a_quiet_case() {
    let doc = yaml("alerts.test.yml");
    let tests = doc.get("tests").and_then(Value::as_sequence).cloned().unwrap_or_default();
    let (mut pending, mut firing, mut quiet) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for t in &tests {
        for case in t.get("alert_rule_test").and_then(Value::as_sequence).into_iter().flatten() {
            let name = case.get("alertname").and_then(Value::as_str).unwrap_or_default().to_string();
            let expected = case.get("exp_alerts").and_then(Value::as_sequence).map_or(0, Vec::len);
            if expected == 0 { &mut quiet } else { &mut firing }.insert(name);
        }
        for case in t.get("promql_expr_test").and_then(Value::as_sequence).into_iter().flatten() {
            for sample in case.get("exp_samples").and_then(Value::as_sequence).into_iter().flatten() {
                let labels = sample.get("labels").and_then(Value::as_str).unwrap_or_default();
                if labels.starts_with("ALERTS{") && labels.contains(r#"alertstate="pending""#) {
                    let name = labels.split(r#"alertname=""#).nth(1).and_then(|r| r.split('"').next());
                    pending.extend(name.map(String::from));
                }
            }
        }
    }
    for name in alert_names() {
        assert!(pending.contains(&name), "{name}: no test sees it pending");
        assert!(firing.contains(&name), "{name}: no test sees it firing");
        assert!(quiet.contains(&name), "{name}: no test time at which it must not fire");
    }
}
