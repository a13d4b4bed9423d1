//! docker-compose.yml agrees with the configs and the lab's ports (no Docker engine needed), and the
//! validator catches the mistakes it is there for.

use lab::compose::{validate, validate_file};
use lab::repo::source_root;

#[test]
fn committed_compose_file_is_consistent() {
    let report = validate_file(&source_root());
    assert!(report.ok(), "docker-compose.yml: {:#?}", report.errors);
}

#[test]
fn catches_unpinned_images_missing_files_and_dependencies() {
    let root = source_root();
    let text = std::fs::read_to_string(root.join("docker-compose.yml")).expect("docker-compose.yml");
    let broken = text
        .replace("image: nginx:1.22.1", "image: nginx:latest")
        .replace("${HAPROXY_CONFIG:-round-robin.cfg}", "${HAPROXY_CONFIG:-no-such.cfg}")
        .replace("\"8083:8083\"", "\"8083:18083\"");
    let broken =
        broken.replacen("depends_on: [backend-1, backend-2, backend-3]", "depends_on: [backend-1]", 2);
    let report = validate(&root, &broken);
    let all = report.errors.join("\n");
    for expected in [
        "nginx: image nginx:latest",
        "no-such.cfg",
        "envoy: port 8083:18083",
        "lb: must depend_on backend-2",
        "nginx: must depend_on backend-3",
    ] {
        assert!(all.contains(expected), "expected an error about {expected:?}, got:\n{all}");
    }
}

#[test]
fn grafana_is_in_the_monitoring_profile_on_loopback() {
    let root = source_root();
    let text = std::fs::read_to_string(root.join("docker-compose.yml")).expect("docker-compose.yml");
    let grafana = text.find("\n  grafana:").expect("a grafana service");
    let (before, after) = text.split_at(grafana);
    let broken = format!(
        "{before}{}",
        after
            .replacen("    profiles: [monitoring]\n", "", 1)
            .replacen("\"127.0.0.1:3000:3000\"", "\"3000:3000\"", 1)
            .replacen("./monitoring/grafana/dashboards", "./monitoring/grafana/no-such-folder", 1)
    );
    let report = validate(&root, &broken);
    let all = report.errors.join("\n");
    for expected in [
        "grafana: must be in the `monitoring` profile",
        "grafana: port 3000:3000: stats/admin ports must be published on 127.0.0.1 only",
        "no-such-folder",
    ] {
        assert!(all.contains(expected), "expected an error about {expected:?}, got:\n{all}");
    }
}

#[test]
fn the_scalable_backend_and_the_lb_that_discovers_it_are_checked() {
    let root = source_root();
    let text = std::fs::read_to_string(root.join("docker-compose.yml")).expect("docker-compose.yml");
    assert!(text.contains("\n  backend:\n"), "a scalable backend service");
    let backend = text.find("\n  backend:\n").expect("backend");
    let (before, after) = text.split_at(backend);
    let broken = format!(
        "{before}{}",
        after
            .replacen(
                "    profiles: [scale]\n    command:",
                "    ports: [\"9001:9001\"]\n    profiles: [scale]\n    command:",
                1
            )
            .replacen("/etc/lb/compose-dns.toml", "/etc/lb/lab.toml", 1)
            .replacen("depends_on: [backend]", "depends_on: [backend-1]", 1)
    );
    let report = validate(&root, &broken);
    let all = report.errors.join("\n");
    for expected in [
        "backend: publishes ports {9001}, the lab expects {}",
        "lb-dns: must depend_on backend",
        "lab.toml has no [upstream.dns] with name = \"backend\", port = 9001",
    ] {
        assert!(all.contains(expected), "expected an error about {expected:?}, got:\n{all}");
    }
}

#[test]
fn the_lb_dns_config_passes_lb_check() {
    let path = source_root().join("crates/lb/config/compose-dns.toml");
    let config = lb::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.summary(),
        "listen 0.0.0.0:8084; upstreams: app (least-connections, backends from dns backend:9001)"
    );
}
