//! The Grafana dashboard (`monitoring/grafana/dashboards/balance-lab.json`) asks only for metrics that
//! exist: every metric name in every query is one the balancer of the panel's row exposes, read from
//! the real thing after a few requests through it. lb runs in-process, HAProxy and Envoy through the
//! lab on their committed round-robin configs (skipped when not installed). A histogram counts as the
//! `_bucket`, `_sum` and `_count` series it is scraped as. The alert rules (`monitoring/alerts.yml`) are
//! held to the same check against lb: their unit tests feed them made-up series, so a misspelt name
//! would pass those and never fire.
//!
//! Run with `cargo test -p lab --test monitoring` (HAProxy and Envoy: `bash scripts/install-balancers.sh`;
//! the query syntax check needs promtool: `apt-get install prometheus`).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use lab::Balancer;
use lab::repo::source_root;
use lab::testing::{Lab, require_program};
use serde_json::Value;

/// One PromQL query of the dashboard and where it is.
#[derive(Debug, Clone)]
struct Query {
    /// The balancer whose metrics it reads: the row it sits in, or for a variable, its name prefix.
    balancer: Balancer,
    /// Panel or variable title, for messages.
    place: String,
    expr: String,
}

fn dashboard() -> Value {
    let path = source_root().join("monitoring/grafana/dashboards/balance-lab.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The balancer a row title is about: it starts with `lb`, `HAProxy` or `Envoy`.
fn row_balancer(title: &str) -> Option<Balancer> {
    let first = title.split([':', ' ']).next()?.to_ascii_lowercase();
    first.parse().ok().filter(|b| *b != Balancer::Nginx)
}

/// Every query of `dash`: panel targets (by the row above them) and template variables (by their
/// metric's prefix). Panics on a panel outside a known row: no query goes unchecked.
fn queries(dash: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    let mut row = None;
    for panel in dash["panels"].as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or_default().to_string();
        if panel["type"] == "row" {
            row = Some(row_balancer(&title).unwrap_or_else(|| panic!("row {title:?} names no balancer")));
            continue;
        }
        let balancer = row.unwrap_or_else(|| panic!("panel {title:?} is above every row"));
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default().to_string();
            out.push(Query { balancer, place: format!("panel {title:?}"), expr });
        }
    }
    for var in dash["templating"]["list"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap_or_default();
        let expr = var["query"]["query"].as_str().or_else(|| var["query"].as_str()).unwrap_or_default();
        let metric = expr.strip_prefix("label_values(").and_then(|r| r.split([',', '{', ')']).next());
        let metric =
            metric.unwrap_or_else(|| panic!("variable {name}: {expr:?} is not label_values(METRIC, LABEL)"));
        let prefix = metric.split('_').next().unwrap_or_default();
        let balancer =
            prefix.parse().unwrap_or_else(|_| panic!("variable {name}: {metric} is no balancer's"));
        out.push(Query { balancer, place: format!("variable {name}"), expr: metric.trim().to_string() });
    }
    out
}

/// The `expr` of every rule in alerts.yml, each by the balancer its metric prefix names.
fn alert_queries() -> Vec<Query> {
    let path = source_root().join("monitoring/alerts.yml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: serde_norway::Value =
        serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    for group in doc["groups"].as_sequence().into_iter().flatten() {
        for rule in group["rules"].as_sequence().into_iter().flatten() {
            let name = rule["alert"].as_str().unwrap_or_default();
            let expr = rule["expr"].as_str().unwrap_or_default().to_string();
            let prefix = metric_names(&expr).into_iter().next().unwrap_or_default();
            let balancer = prefix.split('_').next().unwrap_or_default().parse();
            let balancer =
                balancer.unwrap_or_else(|_| panic!("alert {name}: {expr:?} reads no balancer's metric"));
            out.push(Query { balancer, place: format!("alert {name}"), expr });
        }
    }
    out
}

/// PromQL words that are not metric names when they stand where one could.
const KEYWORDS: [&str; 19] = [
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];
/// Words followed by a parenthesised list of label names.
const LABEL_LISTS: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];

/// The index just past the group that opens at `chars[start]` and closes with `close`, skipping
/// strings inside (a label value may hold `}`).
fn skip_group(chars: &[char], start: usize, close: char) -> usize {
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => i = skip_string(chars, i),
            c if c == close => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// The index just past the string literal that opens at `chars[start]`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        i += if chars[i] == '\\' && quote != '`' { 2 } else { 1 };
    }
    i + 1
}

/// The metric names a PromQL expression reads: the identifiers that are not functions (followed by
/// `(`), keywords or aggregations, label names (inside `{}` or after `by`/`on`/...), strings, ranges
/// (`[5m]`), numbers, or Grafana variables (`$__rate_interval`, `$upstream`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut label_list_next = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if label_list_next && !c.is_whitespace() && c != '(' {
            label_list_next = false;
        }
        match c {
            '"' | '\'' | '`' => i = skip_string(&chars, i),
            '{' => i = skip_group(&chars, i, '}'),
            '[' => i = skip_group(&chars, i, ']'),
            '(' if label_list_next => {
                i = skip_group(&chars, i, ')');
                label_list_next = false;
            }
            '$' => {
                i += 1;
                while i < chars.len() && (is_word(chars[i]) || chars[i] == '{' || chars[i] == '}') {
                    i += 1;
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len() && (is_word(chars[i]) || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len() && is_word(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let lower = word.to_ascii_lowercase();
                let next = chars[i..].iter().find(|c| !c.is_whitespace());
                if LABEL_LISTS.contains(&lower.as_str()) {
                    label_list_next = true;
                } else if !KEYWORDS.contains(&lower.as_str()) && next != Some(&'(') {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// The metric names with at least one sample in a Prometheus text scrape.
fn exposed(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(String::from)
        .collect()
}

/// For each query of `balancer`, the names it uses that `have` lacks: `place: name`.
fn missing(queries: &[Query], balancer: Balancer, have: &BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    for q in queries.iter().filter(|q| q.balancer == balancer) {
        let names = metric_names(&q.expr);
        assert!(!names.is_empty(), "{}: found no metric name in {:?}", q.place, q.expr);
        out.extend(names.difference(have).map(|n| format!("{}: {n}", q.place)));
    }
    out
}

/// Fails with every query of `balancer` that names a metric `scrape` does not have.
fn assert_all_exposed(balancer: Balancer, scrape: &str) {
    let queries = queries(&dashboard());
    let count = queries.iter().filter(|q| q.balancer == balancer).count();
    assert!(count >= 5, "only {count} queries for {balancer}: is its row there?");
    let have = exposed(scrape);
    let gone = missing(&queries, balancer, &have);
    assert!(
        gone.is_empty(),
        "the dashboard asks {balancer} for metrics it does not expose:\n{}",
        gone.join("\n")
    );
    // The check bites: the same queries with one name misspelt are caught.
    let Some(first) = queries.iter().find(|q| q.balancer == balancer) else { return };
    let name = metric_names(&first.expr).into_iter().next().unwrap_or_default();
    let typo = Query { expr: first.expr.replace(&name, &format!("{name}_typo")), ..first.clone() };
    assert_eq!(missing(&[typo], balancer, &have), [format!("{}: {name}_typo", first.place)]);
}

async fn scrape(url: &str) -> String {
    let resp = reqwest::Client::new().get(url).send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.text().await.unwrap_or_else(|e| panic!("{url}: {e}"))
}

#[test]
fn metric_names_are_read_from_promql() {
    let expr = r#"histogram_quantile(0.99, sum by (upstream, le) (rate(lb_request_duration_seconds_bucket{upstream=~"$upstream",x="a}b"}[$__rate_interval])))
        / on (upstream) group_left (backend) lb_backend_weight offset 5m > bool 0.5 and lb_upstream_panic == 1
        + 2 * max by (proxy) (haproxy_server_status{state="UP"}) - time() < 14 * 86400 or count(x:recorded:rate5m)"#;
    let want = [
        "haproxy_server_status",
        "lb_backend_weight",
        "lb_request_duration_seconds_bucket",
        "lb_upstream_panic",
        "x:recorded:rate5m",
    ];
    assert_eq!(metric_names(expr), want.into_iter().map(String::from).collect());
    assert_eq!(
        exposed("# TYPE a counter\na_total{x=\"1\"} 3\nb 1\n\n# HELP c nothing\n"),
        ["a_total", "b"].into_iter().map(String::from).collect()
    );
}

#[test]
fn every_row_is_a_balancer_and_every_variable_has_its_metric() {
    let queries = queries(&dashboard());
    let per: HashMap<Balancer, usize> = queries.iter().fold(HashMap::new(), |mut m, q| {
        *m.entry(q.balancer).or_default() += 1;
        m
    });
    for b in [Balancer::Lb, Balancer::Haproxy, Balancer::Envoy] {
        assert!(per.get(&b).copied().unwrap_or(0) >= 5, "{b}: {per:?}");
    }
    // RED for lb: rate, errors and duration all come from its per-backend series.
    let lb: String = queries.iter().filter(|q| q.balancer == Balancer::Lb).map(|q| q.expr.as_str()).collect();
    for needed in [
        "lb_requests_total",
        "lb_request_duration_seconds_bucket",
        "lb_retries_total",
        "lb_retry_budget_exhausted_total",
        "lb_backend_ejections_total",
        "lb_backend_in_flight",
        "lb_backend_state",
        "lb_upstream_panic",
    ] {
        assert!(lb.contains(needed), "no lb panel reads {needed}");
    }
}

/// promtool parses every query (Grafana's variables replaced by what they become), written as
/// recording rules, since promtool has no "check this expression" command.
#[test]
fn every_query_is_valid_promql() {
    let test = "monitoring::every_query_is_valid_promql";
    let Some(promtool) = require_program("promtool", "apt-get install prometheus", test) else { return };
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in queries(&dashboard()).iter().enumerate() {
        let expr = q
            .expr
            .replace("$__rate_interval", "1m")
            .replace("$upstream", ".*")
            .replace("$haproxy_backend", ".*")
            .replace("$envoy_cluster", ".*");
        let quoted = serde_json::to_string(&expr).unwrap_or_else(|e| panic!("{e}"));
        rules.push_str(&format!("      - record: dashboard:query{i}\n        expr: {quoted}\n"));
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("dashboard-rules.yml");
    std::fs::write(&file, rules).unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new(promtool)
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("promtool: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "a dashboard query does not parse:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lb_panels_and_alerts_read_metrics_lb_exposes() {
    let backends =
        toy_backend::start_many(3, toy_backend::Knobs::default()).await.unwrap_or_else(|e| panic!("{e}"));
    let list: Vec<String> = backends.iter().map(|b| format!("\"{}\"", b.addr())).collect();
    // A certificate, so the expiry gauge has a series; a retry setting is not needed: the retry
    // families have a sample per upstream from the start.
    let certs = source_root().join("crates/lb/config/certs");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\n\
         [[server.tls]]\ncert = \"{}\"\nkey = \"{}\"\nnames = [\"a.lb.test\"]\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[upstream]]\nname = \"app\"\nalgorithm = \"round-robin\"\nbackends = [{}]\n",
        certs.join("a.lb.test.pem").display(),
        certs.join("a.lb.test.key").display(),
        list.join(", ")
    );
    let config = lb::Config::parse(&text, "monitoring-test.toml").unwrap_or_else(|e| panic!("{e}"));
    let lb = lb::start(config).await.unwrap_or_else(|e| panic!("{e}"));
    let client =
        reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..12 {
        let resp = client.get(lb.url()).send().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 200);
    }
    let admin = lb.admin.unwrap_or_else(|| panic!("no admin listener"));
    let text = scrape(&format!("http://{admin}/metrics")).await;
    assert_all_exposed(Balancer::Lb, &text);
    let alerts = alert_queries();
    assert_eq!(alerts.iter().filter(|q| q.balancer == Balancer::Lb).count(), 6, "{alerts:?}");
    let gone = missing(&alerts, Balancer::Lb, &exposed(&text));
    assert!(gone.is_empty(), "alert rules read metrics lb does not expose:\n{}", gone.join("\n"));
    lb.shutdown().await;
}

/// Starts `balancer` through the lab, sends requests, and checks its panels against `path` on its
/// admin port.
async fn check_external(balancer: Balancer, config: &str, path: &str, test: &str) {
    let Some(lab) = Lab::start(balancer, config, test).await else { return };
    let tally = lab.send(30, None).await;
    lab.check(tally.failures() == 0, format!("requests failed: {tally:?}"));
    let url = format!("http://127.0.0.1:{}{path}", lab.balancer.prepared.ports.admin);
    assert_all_exposed(balancer, &scrape(&url).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_panels_read_metrics_its_exporter_exposes() {
    let test = "monitoring::haproxy_panels_read_metrics_its_exporter_exposes";
    // The stats frontend of every committed config serves the exporter on /metrics.
    check_external(Balancer::Haproxy, "round-robin.cfg", "/metrics", test).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_panels_read_metrics_its_admin_exposes() {
    let test = "monitoring::envoy_panels_read_metrics_its_admin_exposes";
    check_external(Balancer::Envoy, "round-robin.yaml", "/stats/prometheus", test).await;
}
