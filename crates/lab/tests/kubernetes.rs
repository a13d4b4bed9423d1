//! The Kubernetes manifests in `deploy/kubernetes/`: every one validates against a named Kubernetes
//! version's schemas with `kubernetes-validate` (strict: an unknown or misspelled field fails), the
//! lb configuration embedded in the ConfigMap passes `lb check`, and the pieces agree with each other
//! (the DNS name lb follows is the headless Service's, the probes hit the admin port, the grace period
//! covers the preStop pause and lb's drain).
//!
//! No cluster runs here; `deploy/kubernetes/README.md` has the `kind` commands to try them.
//!
//! Run with `cargo test -p lab --test kubernetes` (needs `pip install kubernetes-validate` for the
//! first test: it says SKIPPED without it, and fails under `LB_REQUIRE_EXTERNAL=1`; and the lb binary,
//! `cargo build -p lb`, for the second).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lab::Balancer;
use lab::repo::source_root;
use lab::testing::{require, require_program};
use serde::Deserialize as _;
use serde_norway::Value;

/// The Kubernetes version the manifests are checked against: kind's node image in the README.
const KUBERNETES: &str = "1.34.0";
const INSTALL: &str = "pip install kubernetes-validate";

fn folder() -> PathBuf {
    source_root().join("deploy/kubernetes")
}

/// Every `*.yaml` in the folder, sorted.
fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder())
        .unwrap_or_else(|e| panic!("deploy/kubernetes: {e}"))
        .map(|e| e.unwrap_or_else(|e| panic!("{e}")).path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// Every document of every manifest.
fn documents() -> Vec<Value> {
    let mut docs = Vec::new();
    for file in manifests() {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for doc in serde_norway::Deserializer::from_str(&text) {
            docs.push(Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", file.display())));
        }
    }
    docs
}

/// The one document of this kind and name.
fn resource(kind: &str, name: &str) -> Value {
    let found: Vec<Value> = documents()
        .into_iter()
        .filter(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .collect();
    assert_eq!(found.len(), 1, "{kind} {name}: {} documents", found.len());
    found.into_iter().next().unwrap_or(Value::Null)
}

fn str_at<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str().unwrap_or_else(|| panic!("{what}: not a string: {v:?}"))
}

fn u64_at(v: &Value, what: &str) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("{what}: not a number: {v:?}"))
}

/// `kubernetes-validate --strict -k VERSION files...`: its exit status and what it printed.
fn kubernetes_validate(program: &Path, files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(program)
        .args(["--strict", "--kubernetes-version", KUBERNETES])
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn every_manifest_validates_against_the_named_kubernetes_version() {
    let test = "kubernetes::every_manifest_validates_against_the_named_kubernetes_version";
    let Some(program) = require_program("kubernetes-validate", INSTALL, test) else { return };
    let files = manifests();
    let (ok, text) = kubernetes_validate(&program, &files);
    assert!(ok, "kubernetes-validate {KUBERNETES} rejects deploy/kubernetes:\n{text}");
    // One line per resource, all passed: nothing was skipped as an unknown kind.
    let passed = text.lines().filter(|l| l.contains(" passed for resource ")).count();
    assert_eq!(passed, documents().len(), "{text}");

    // The check has teeth: a misspelled field (`replica`) in a copy of lb.yaml fails it.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(folder().join("lb.yaml")).unwrap_or_else(|e| panic!("{e}"));
    assert!(text.contains("\n  replicas: 2\n"), "lb.yaml's Deployment has `replicas: 2`");
    let broken = dir.path().join("lb.yaml");
    std::fs::write(&broken, text.replace("\n  replicas: 2\n", "\n  replica: 2\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    let (ok, text) = kubernetes_validate(&program, &[broken]);
    assert!(!ok, "a misspelled field passed:\n{text}");
}

#[test]
fn the_manifests_have_every_piece_the_lesson_walks_through() {
    let kinds: Vec<(String, String)> = documents()
        .iter()
        .map(|d| (str_at(&d["kind"], "kind").to_string(), str_at(&d["metadata"]["name"], "name").to_string()))
        .collect();
    for want in [
        ("Namespace", "balance-lab"),
        ("Deployment", "toy-backend"),
        ("Service", "toy-backend"),
        ("HorizontalPodAutoscaler", "toy-backend"),
        ("ConfigMap", "lb-config"),
        ("Deployment", "lb"),
        ("Service", "lb"),
        ("PodDisruptionBudget", "lb"),
    ] {
        assert!(kinds.iter().any(|(k, n)| (k.as_str(), n.as_str()) == want), "no {want:?} in {kinds:?}");
    }
    assert_eq!(resource("Service", "toy-backend")["spec"]["clusterIP"].as_str(), Some("None"), "headless");
    let lb = resource("Deployment", "lb");
    assert!(u64_at(&lb["spec"]["replicas"], "lb replicas") >= 2, "two lb replicas or more");
    for name in ["lb", "toy-backend"] {
        let containers = &resource("Deployment", name)["spec"]["template"]["spec"]["containers"];
        for c in containers.as_sequence().unwrap_or_else(|| panic!("{name}: no containers")) {
            assert!(c["resources"]["requests"]["cpu"].is_string(), "{name}: no CPU request");
        }
    }
}

/// The lb config as the ConfigMap holds it.
fn embedded_config() -> String {
    let map = resource("ConfigMap", "lb-config");
    str_at(&map["data"]["lb.toml"], "lb-config data.lb.toml").to_string()
}

#[test]
fn the_configmap_config_passes_lb_check() {
    let test = "kubernetes::the_configmap_config_passes_lb_check";
    let Some(lb) = require(Balancer::Lb, test) else { return };
    // The pod's /etc/lb: the ConfigMap's lb.toml and the Secret's token, side by side (lb.yaml's
    // projected volume). The token is made up here, as `kubectl create secret` makes one there.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("lb.toml");
    std::fs::write(&config, embedded_config()).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("admin-token"), "made-up-token-for-lb-check\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let check = || {
        let out = Command::new(&lb).arg("check").arg("--config").arg(&config).output();
        let out = out.unwrap_or_else(|e| panic!("running {}: {e}", lb.display()));
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    };
    let (ok, text) = check();
    assert!(ok, "lb check rejects the ConfigMap's lb.toml:\n{text}");

    // Without the Secret's file it fails, naming it: the check really read the token_file line.
    std::fs::remove_file(dir.path().join("admin-token")).unwrap_or_else(|e| panic!("{e}"));
    let (ok, text) = check();
    assert!(!ok && text.contains("admin.token_file"), "lb check without the token file:\n{text}");
}

#[test]
fn the_pieces_agree_with_each_other() {
    let config: toml::Value = toml::from_str(&embedded_config()).unwrap_or_else(|e| panic!("lb.toml: {e}"));
    let backends = resource("Service", "toy-backend");
    let namespace = str_at(&backends["metadata"]["namespace"], "namespace");
    // lb follows the headless Service's name, on its port.
    let dns = &config["upstream"][0]["dns"];
    let want = format!("toy-backend.{namespace}.svc.cluster.local.");
    assert_eq!(dns["name"].as_str(), Some(want.as_str()));
    let service_port = u64_at(&backends["spec"]["ports"][0]["port"], "toy-backend port");
    assert_eq!(dns["port"].as_integer().map(|p| p as u64), Some(service_port));

    let pod = &resource("Deployment", "lb")["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let port = |name: &str| {
        let ports = container["ports"].as_sequence().unwrap_or_else(|| panic!("no ports"));
        let found = ports.iter().find(|p| p["name"].as_str() == Some(name));
        u64_at(&found.unwrap_or_else(|| panic!("no port {name}"))["containerPort"], name)
    };
    let listen = config["server"]["listen"][0].as_str().unwrap_or_default();
    assert!(listen.ends_with(&format!(":{}", port("http"))), "listen {listen}");
    let admin = config["admin"]["listen"].as_str().unwrap_or_default();
    assert!(admin.ends_with(&format!(":{}", port("admin"))), "admin {admin}");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"].as_str(), Some("/ready"));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"].as_str(), Some("/live"));
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"].as_str(), Some("admin"), "{probe}");
    }

    // The config file is where the args say, and the token beside it where token_file says.
    let args: Vec<&str> =
        container["args"].as_sequence().into_iter().flatten().filter_map(Value::as_str).collect();
    let mount = str_at(&container["volumeMounts"][0]["mountPath"], "mountPath");
    assert_eq!(args, ["lb", "--config", &format!("{mount}/lb.toml")]);
    let sources = &pod["volumes"][0]["projected"]["sources"];
    assert_eq!(sources[1]["secret"]["items"][0]["path"].as_str(), config["admin"]["token_file"].as_str());

    // The kubelet kills at terminationGracePeriodSeconds, counted from the start of preStop: it must
    // cover the pause and lb's own drain, or requests in flight are cut.
    let grace = Duration::from_secs(u64_at(&pod["terminationGracePeriodSeconds"], "grace"));
    let pause = Duration::from_secs(u64_at(&container["lifecycle"]["preStop"]["sleep"]["seconds"], "sleep"));
    let drain = config["server"]["shutdown_timeout"].as_str().unwrap_or_default();
    let drain =
        Duration::from_secs(drain.trim_end_matches('s').parse().unwrap_or_else(|e| panic!("{drain}: {e}")));
    assert!(pause + drain < grace, "preStop {pause:?} + shutdown_timeout {drain:?} >= grace {grace:?}");
}
