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
