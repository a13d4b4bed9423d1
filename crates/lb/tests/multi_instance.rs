//! Two `lb` processes (the real binary) started from the same config file agree on where a hash key
//! goes, for ring hash, Maglev and rendezvous: a client sent to either instance by the layer in front
//! (a Kubernetes Service, DNS round robin) reaches the same backend, and so finds its cache there.
//! They still agree after the same DNS change reaches both (grow from 3 to 5 addresses, then lose
//! one), and keys move only where consistent hashing promises: onto the new backends when the set
//! grows, off the lost one when it shrinks.
//!
//! The backends come from `[upstream.dns]` against dnsmasq on a loopback port (as in
//! `dns_discovery.rs`, whose helpers are in `proxy_support/dns.rs`); the toy backends answer with
//! their name, `b11` for 127.0.0.11.
//!
//! Needs dnsmasq (`apt-get install dnsmasq`): without it each test prints that it skipped, and fails
//! under `LB_REQUIRE_EXTERNAL=1` (CI installs it).

mod proxy_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use lb::BackendsView;
use proxy_support::dns::{Dnsmasq, PATIENCE, backends, dnsmasq_program, free_port, hosts_dir, set_records};
use proxy_support::{LbProcess, client};
use toy_backend::Latency;

/// Hash keys sent to both instances: enough that every backend owns some.
const KEYS: usize = 300;

/// The config both processes read: ports 0 (each prints what it bound), the backends found by DNS.
fn config_text(algorithm: &str, resolver: SocketAddr, port: u16) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1

[admin]
listen = "127.0.0.1:0"

[[upstream]]
name = "app"
algorithm = "{algorithm}"
hash_key = "header:x-user"

[upstream.dns]
name = "app.lb.test"
port = {port}
resolver = "{resolver}"
min_refresh = "100ms"
max_refresh = "100ms"
"#
    )
}

/// One running instance: its process and the two addresses it printed.
struct Instance {
    _process: LbProcess,
    url: String,
    admin: String,
}

fn start(config: &std::path::Path) -> Instance {
    let process = LbProcess::start(&["--config".as_ref(), config.as_os_str()]);
    let url = process.wait_line("lb listening on http://", PATIENCE).replace("lb listening on ", "");
    let admin = process.wait_line("admin on http://", PATIENCE).replace("admin on ", "");
    Instance { _process: process, url, admin: admin.trim_end_matches('/').to_string() }
}

/// The backend addresses of the instance, in its order.
async fn set_of(instance: &Instance) -> Vec<String> {
    let http = client();
    let Ok(response) = http.get(format!("{}/backends", instance.admin)).send().await else {
        return Vec::new();
    };
    let Ok(view) = response.json::<BackendsView>().await else { return Vec::new() };
    view.upstreams[0].backends.iter().map(|b| b.addr.clone()).collect()
}

/// Wait until both instances have exactly these backends (by last byte, on `port`).
async fn both_see(instances: &[Instance], lasts: &[u8], port: u16) {
    let mut want: Vec<String> = lasts.iter().map(|l| format!("127.0.0.{l}:{port}")).collect();
    want.sort();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    for instance in instances {
        loop {
            let mut now = set_of(instance).await;
            now.sort();
            if now == want {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} has {now:?}, waited for {want:?}",
                instance.admin
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Which backend each key reaches through `instance`.
async fn placement(instance: &Instance) -> BTreeMap<String, String> {
    let http = client();
    let mut out = BTreeMap::new();
    for k in 0..KEYS {
        let key = format!("user-{k}");
        let response = http.get(format!("{}/", instance.url)).header("x-user", &key).send().await;
        let response = response.unwrap_or_else(|e| panic!("{key} through {}: {e}", instance.url));
        assert_eq!(response.status(), 200, "{key} through {}", instance.url);
        let body = response.text().await.unwrap_or_else(|e| panic!("{e}"));
        out.insert(key, body.trim().to_string());
    }
    out
}

/// Both instances place every key alike; returns that placement.
async fn agree(instances: &[Instance], algorithm: &str, stage: &str) -> BTreeMap<String, String> {
    let first = placement(&instances[0]).await;
    let second = placement(&instances[1]).await;
    let differ: Vec<_> = first.iter().filter(|(k, v)| second.get(*k) != Some(v)).take(5).collect();
    assert!(differ.is_empty(), "{algorithm}, {stage}: the instances disagree on {differ:?} (and maybe more)");
    first
}

fn owners(placement: &BTreeMap<String, String>) -> std::collections::BTreeSet<&str> {
    placement.values().map(String::as_str).collect()
}

async fn two_instances_agree(algorithm: &str) {
    let test = format!("multi_instance::{}_two_instances_agree", algorithm.replace('-', "_"));
    let Some(program) = dnsmasq_program(&test) else { return };
    let port = free_port();
    let dir = hosts_dir();
    set_records(dir.path(), &[11, 12, 13]);
    let resolver = SocketAddr::from(([127, 0, 0, 1], port));
    let _dns = Dnsmasq::start(&program, resolver, dir.path(), &[]);
    let _backends = backends(&[11, 12, 13, 14, 15], port, Latency::None).await;
    let config = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(config.path(), config_text(algorithm, resolver, port)).unwrap_or_else(|e| panic!("{e}"));
    let instances = [start(config.path()), start(config.path())];

    both_see(&instances, &[11, 12, 13], port).await;
    let before = agree(&instances, algorithm, "three backends").await;
    assert_eq!(owners(&before).len(), 3, "{algorithm}: every backend owns keys: {:?}", owners(&before));

    // The same DNS change reaches both: two more replicas.
    set_records(dir.path(), &[11, 12, 13, 14, 15]);
    both_see(&instances, &[11, 12, 13, 14, 15], port).await;
    let grown = agree(&instances, algorithm, "grown to five").await;
    let moved: Vec<String> = before
        .iter()
        .filter(|(key, was)| ![was.as_str(), "b14", "b15"].contains(&grown[*key].as_str()))
        .map(|(key, was)| format!("{key}: {was} -> {}", grown[key]))
        .collect();
    few_moved(algorithm, "growing", &moved);
    assert!(owners(&grown).contains("b14") && owners(&grown).contains("b15"), "{algorithm}: {grown:?}");

    // And one goes away: only its keys move.
    set_records(dir.path(), &[12, 13, 14, 15]);
    both_see(&instances, &[12, 13, 14, 15], port).await;
    let shrunk = agree(&instances, algorithm, "shrunk to four").await;
    let moved: Vec<String> = grown
        .iter()
        .filter(|(key, was)| was.as_str() != "b11" && &shrunk[*key] != *was)
        .map(|(key, was)| format!("{key}: {was} -> {}", shrunk[key]))
        .collect();
    few_moved(algorithm, "shrinking", &moved);
}

/// Keys that moved between backends that stayed: none for ring hash and rendezvous, which promise it;
/// Maglev promises only *minimal* disruption (its table is refilled, and a few slots change hands
/// between survivors), so at most 5% of the keys.
fn few_moved(algorithm: &str, stage: &str, moved: &[String]) {
    let allowed = if algorithm == "maglev" { KEYS / 20 } else { 0 };
    assert!(
        moved.len() <= allowed,
        "{algorithm}, {stage}: {} keys moved between survivors: {moved:?}",
        moved.len()
    );
}

#[tokio::test]
async fn ring_hash_two_instances_agree() {
    two_instances_agree("ring-hash").await;
}

#[tokio::test]
async fn maglev_two_instances_agree() {
    two_instances_agree("maglev").await;
}

#[tokio::test]
async fn rendezvous_two_instances_agree() {
    two_instances_agree("rendezvous").await;
}
