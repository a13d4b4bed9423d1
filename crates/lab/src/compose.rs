//! `lab validate-compose`: checks `docker-compose.yml` against the configs it runs, without a Docker
//! engine. What it checks:
//!
//! - the services exist: backend-1..3, lb, nginx, haproxy, envoy, and prometheus and grafana in the
//!   `monitoring` profile;
//! - every image is pinned by a tag that is not `latest`; every build context and its Dockerfile exist;
//! - every service publishes exactly the lab's ports (backends 9001-9003, lb 8080/9900, nginx 8081,
//!   HAProxy 8082/8404, Envoy 8083/9901, Prometheus 9090, Grafana 3000) on the same port number, and
//!   stats/admin ports only on the host's 127.0.0.1;
//! - every mounted host path exists (a `${VAR:-default}` taken at its default), and every config in
//!   the mounted folders (nginx/, haproxy/, envoy/) listens on the service's port and names
//!   `backend-1:9001`, `backend-2:9002`, `backend-3:9003` (the same rules `lab up` renders with);
//! - each backend runs `toy-backend --listen 0.0.0.0:900N --name backend-N`;
//! - each balancer depends on the three backends;
//! - Prometheus scrapes services and ports that exist;
//! - the scalable `backend` publishes no port (a fixed host port allows one replica only), and `lb-dns`
//!   runs a config whose `[upstream.dns]` names that service, on its port, through Docker's embedded
//!   DNS server (127.0.0.11) (tests/compose.rs also runs `lb check`'s checks on it).

use std::collections::BTreeSet;
use std::path::Path;

use serde_norway::Value;

use crate::balancer::{BACKEND_PORTS, Balancer};
use crate::render::{Ports, render};

/// What the validation found: errors fail it, notes do not (something another part of the
/// workspace has yet to add).
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Inconsistencies.
    pub errors: Vec<String>,
    /// Things worth knowing that are not wrong.
    pub notes: Vec<String>,
}

impl Report {
    /// True when no error was found.
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// A service the lab knows: the container ports it publishes, and which of them only on the host's
/// loopback (stats and admin pages).
#[derive(Debug, Clone, Copy)]
struct Service {
    name: &'static str,
    ports: &'static [u16],
    loopback: &'static [u16],
}

const fn service(name: &'static str, ports: &'static [u16], loopback: &'static [u16]) -> Service {
    Service { name, ports, loopback }
}

/// The lab's services.
const SERVICES: [Service; 11] = [
    service("backend-1", &[9001], &[9001]),
    service("backend-2", &[9002], &[9002]),
    service("backend-3", &[9003], &[9003]),
    service("lb", &[8080, 9900], &[9900]),
    service("nginx", &[8081], &[]),
    service("haproxy", &[8082, 8404], &[8404]),
    service("envoy", &[8083, 9901], &[9901]),
    service("prometheus", &[9090], &[9090]),
    service("grafana", &[3000], &[3000]),
    service("backend", &[], &[]),
    service("lb-dns", &[8084, 9904], &[9904]),
];

/// Reads and validates `root/docker-compose.yml`.
pub fn validate_file(root: &Path) -> Report {
    let path = root.join("docker-compose.yml");
    match std::fs::read_to_string(&path) {
        Ok(text) => validate(root, &text),
        Err(e) => Report { errors: vec![format!("{}: {e}", path.display())], notes: vec![] },
    }
}

/// Validates compose `text` whose relative paths are relative to `root`.
pub fn validate(root: &Path, text: &str) -> Report {
    let mut r = Report::default();
    let doc: Value = match serde_norway::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            r.errors.push(format!("docker-compose.yml does not parse: {e}"));
            return r;
        }
    };
    // YAML merge keys (`<<: *backend`) are not applied by serde_norway's Value; do it here.
    let mut doc = doc;
    if let Err(e) = doc.apply_merge() {
        r.errors.push(format!("docker-compose.yml merge keys: {e}"));
    }
    let Some(services) = doc.get("services").and_then(Value::as_mapping) else {
        r.errors.push("no `services:` mapping".into());
        return r;
    };
    for known in SERVICES {
        match services.get(known.name) {
            None => r.errors.push(format!("service {} is missing", known.name)),
            Some(svc) => check_service(root, &known, svc, &mut r),
        }
    }
    for name in services.keys().filter_map(Value::as_str) {
        if !SERVICES.iter().any(|known| known.name == name) {
            r.notes.push(format!("service {name} is not one the lab knows; not checked"));
        }
    }
    for name in ["prometheus", "grafana"] {
        let Some(svc) = services.get(name) else { continue };
        if !strings(svc.get("profiles")).iter().any(|p| p == "monitoring") {
            r.errors.push(format!("{name}: must be in the `monitoring` profile"));
        }
    }
    if services.contains_key("prometheus") {
        check_prometheus(root, services, &mut r);
    }
    if let Some(svc) = services.get("lb-dns") {
        check_lb_dns(root, svc, &mut r);
    }
    r
}

/// The port the scalable `backend` listens on, from its command.
const SCALED_PORT: u16 = 9001;

/// `lb-dns` runs `lb --config /etc/lb/FILE` (FILE in crates/lb/config), depends on `backend`, and
/// FILE discovers `backend:9001` through 127.0.0.11.
fn check_lb_dns(root: &Path, svc: &Value, r: &mut Report) {
    let command = strings(svc.get("command")).join(" ");
    let Some(file) = command.strip_prefix("lb --config /etc/lb/") else {
        r.errors.push(format!("lb-dns: command {command:?} should run `lb --config /etc/lb/FILE`"));
        return;
    };
    if !depends_on(svc).iter().any(|d| d == "backend") {
        r.errors.push("lb-dns: must depend_on backend".to_string());
    }
    let path = root.join("crates/lb/config").join(file);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => return r.errors.push(format!("lb-dns: {}: {e}", path.display())),
    };
    let doc: toml::Table = match toml::from_str(&text) {
        Ok(d) => d,
        Err(e) => return r.errors.push(format!("lb-dns: {}: {e}", path.display())),
    };
    let upstreams = doc.get("upstream").and_then(toml::Value::as_array).cloned().unwrap_or_default();
    let found = upstreams.iter().filter_map(|u| u.get("dns")).any(|dns| {
        let field = |k: &str| dns.get(k).cloned();
        field("name") == Some("backend".into())
            && field("port") == Some(i64::from(SCALED_PORT).into())
            && field("resolver") == Some("127.0.0.11:53".into())
    });
    if !found {
        r.errors.push(format!(
            "lb-dns: {} has no [upstream.dns] with name = \"backend\", port = {SCALED_PORT}, resolver = \"127.0.0.11:53\"",
            path.display()
        ));
    }
}

fn check_service(root: &Path, known: &Service, svc: &Value, r: &mut Report) {
    let name = known.name;
    check_image(root, name, svc, r);
    check_ports(known, svc, r);
    // Host paths exist; configs in them agree with the lab's ports.
    for spec in strings(svc.get("volumes")) {
        check_volume(root, name, &spec, r);
    }
    check_command(root, name, svc, r);
}

/// The image is pinned by a tag that is not `latest`; a build's context and Dockerfile exist.
fn check_image(root: &Path, name: &str, svc: &Value, r: &mut Report) {
    if let Some(image) = svc.get("image").and_then(Value::as_str) {
        let last = image.rsplit('/').next().unwrap_or(image);
        match last.split_once(':') {
            None => r.errors.push(format!("{name}: image {image} has no tag (pin a version)")),
            Some((_, "latest")) => {
                r.errors.push(format!("{name}: image {image} uses `latest` (pin a version)"))
            }
            Some(_) => {}
        }
    } else if svc.get("build").is_none() {
        r.errors.push(format!("{name}: neither image nor build"));
    }
    if let Some(build) = svc.get("build") {
        let context = build.as_str().or_else(|| build.get("context").and_then(Value::as_str)).unwrap_or(".");
        let dockerfile = build.get("dockerfile").and_then(Value::as_str).unwrap_or("Dockerfile");
        let dir = root.join(context);
        if !dir.join(dockerfile).is_file() {
            r.errors
                .push(format!("{name}: build needs {}/{dockerfile}, which does not exist", dir.display()));
        }
    }
}

/// Exactly the lab's ports, the same number on both sides, admin ports on the host's loopback.
fn check_ports(known: &Service, svc: &Value, r: &mut Report) {
    let name = known.name;
    let mut seen = BTreeSet::new();
    for spec in strings(svc.get("ports")) {
        let Some(port) = parse_port(&spec) else {
            r.errors.push(format!("{name}: cannot read port {spec:?}"));
            continue;
        };
        if port.host != port.container {
            r.errors.push(format!("{name}: port {spec}: host and container ports differ"));
        }
        if known.loopback.contains(&port.container) && port.ip.as_deref() != Some("127.0.0.1") {
            r.errors
                .push(format!("{name}: port {spec}: stats/admin ports must be published on 127.0.0.1 only"));
        }
        seen.insert(port.container);
    }
    let want: BTreeSet<u16> = known.ports.iter().copied().collect();
    if seen != want {
        r.errors.push(format!("{name}: publishes ports {seen:?}, the lab expects {want:?}"));
    }
}

/// Each backend runs `toy-backend` on its port; each balancer depends on the three backends, and lb
/// runs the lab's config.
fn check_command(root: &Path, name: &str, svc: &Value, r: &mut Report) {
    let command = strings(svc.get("command")).join(" ");
    if name == "backend" {
        let want = format!("toy-backend --listen 0.0.0.0:{SCALED_PORT} --name backend");
        if command != want {
            r.errors.push(format!("backend: command is {command:?}, expected {want:?}"));
        }
    } else if let Some(n) = name.strip_prefix("backend-") {
        let port = n.parse::<usize>().ok().and_then(|i| BACKEND_PORTS.get(i - 1)).copied().unwrap_or(0);
        let want = format!("toy-backend --listen 0.0.0.0:{port} --name {name}");
        if command != want {
            r.errors.push(format!("{name}: command is {command:?}, expected {want:?}"));
        }
    } else if ["lb", "nginx", "haproxy", "envoy"].contains(&name) {
        let deps = depends_on(svc);
        for b in ["backend-1", "backend-2", "backend-3"] {
            if !deps.iter().any(|d| d == b) {
                r.errors.push(format!("{name}: must depend_on {b}"));
            }
        }
    }
    if name == "lb" {
        if !command.contains("--config /etc/lb/lab.toml") {
            r.errors.push(format!("lb: command {command:?} should run `lb --config /etc/lb/lab.toml`"));
        }
        if !root.join("crates/lb/config/lab.toml").is_file() {
            r.notes.push("lb: crates/lb/config/lab.toml is not there yet (written with the lb crate)".into());
        }
    }
}

/// Checks one short-syntax volume `SRC:DST[:MODE]` of service `name`.
fn check_volume(root: &Path, name: &str, spec: &str, r: &mut Report) {
    // Interpolate first: a default such as `${X:-a.conf}` contains a colon itself.
    let Interpolated { text: resolved, defaulted } = match interpolate(spec) {
        Ok(p) => p,
        Err(e) => {
            r.errors.push(format!("{name}: volume {spec}: {e}"));
            return;
        }
    };
    let path = resolved.split(':').next().unwrap_or("").to_string();
    if !(path.starts_with("./") || path.starts_with("../") || path.starts_with('/')) {
        return; // a named volume
    }
    let host = root.join(&path);
    if !host.exists() {
        r.errors.push(format!("{name}: volume {spec}: {} does not exist", host.display()));
        return;
    }
    let balancer = match name {
        "nginx" => Balancer::Nginx,
        "haproxy" => Balancer::Haproxy,
        "envoy" => Balancer::Envoy,
        _ => return,
    };
    // A config chosen by variable may be any file of the folder: check them all.
    let files = if defaulted { balancer.configs(root).unwrap_or_default() } else { vec![host.clone()] };
    if files.is_empty() {
        r.errors.push(format!("{name}: no configs in {}", balancer.config_dir()));
    }
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if let Err(e) = render(balancer, &text, &Ports::lab(balancer)) {
            r.errors.push(format!("{name}: {}: {e}", file.display()));
        }
    }
}

/// A compose value with its variables replaced by their defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpolated {
    /// The value as Docker Compose reads it when no variable is set.
    pub text: String,
    /// True when a variable was involved, so another value could be chosen.
    pub defaulted: bool,
}

/// Replaces `${VAR:-default}` / `${VAR-default}` by the default. `${VAR}` without a default is an
/// error: the file would not work unset.
pub fn interpolate(s: &str) -> Result<Interpolated, String> {
    let mut out = String::new();
    let mut rest = s;
    let mut any = false;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| format!("unclosed ${{ in {s}"))?;
        let inner = &after[..end];
        let default = inner
            .split_once(":-")
            .or_else(|| inner.split_once('-'))
            .map(|(_, d)| d)
            .ok_or_else(|| format!("${{{inner}}} has no default"))?;
        out.push_str(default);
        any = true;
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(Interpolated { text: out, defaulted: any })
}

/// A published port, `[IP:]HOST:CONTAINER[/proto]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PortSpec {
    /// The host address it is published on, if the spec names one.
    ip: Option<String>,
    host: u16,
    container: u16,
}

fn parse_port(spec: &str) -> Option<PortSpec> {
    let spec = spec.split('/').next()?;
    let parts: Vec<&str> = spec.split(':').collect();
    let (ip, host, container) = match parts.as_slice() {
        [host, container] => (None, host, container),
        [ip, host, container] => (Some((*ip).to_string()), host, container),
        _ => return None,
    };
    Some(PortSpec { ip, host: host.parse().ok()?, container: container.parse().ok()? })
}

/// `depends_on` in list or map form.
fn depends_on(svc: &Value) -> Vec<String> {
    match svc.get("depends_on") {
        Some(Value::Mapping(m)) => m.keys().filter_map(Value::as_str).map(String::from).collect(),
        other => strings(other),
    }
}

/// A string or a list of scalars as strings.
fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Sequence(items)) => items
            .iter()
            .filter_map(|i| match i {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn check_prometheus(root: &Path, services: &serde_norway::Mapping, r: &mut Report) {
    let path = root.join("monitoring/prometheus.yml");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return; // reported by the volume check
    };
    let doc: Value = match serde_norway::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            r.errors.push(format!("{}: {e}", path.display()));
            return;
        }
    };
    let want = [("lb", 9900u16), ("haproxy", 8404), ("envoy", 9901)];
    let mut found = Vec::new();
    for job in doc.get("scrape_configs").and_then(Value::as_sequence).into_iter().flatten() {
        for sc in job.get("static_configs").and_then(Value::as_sequence).into_iter().flatten() {
            for target in strings(sc.get("targets")) {
                let Some((host, port)) = target.rsplit_once(':') else {
                    r.errors.push(format!("prometheus.yml: target {target} has no port"));
                    continue;
                };
                if !services.contains_key(host) {
                    r.errors.push(format!("prometheus.yml: target {target}: no service {host}"));
                }
                found.push((host.to_string(), port.parse::<u16>().unwrap_or(0)));
            }
        }
    }
    for (host, port) in want {
        if !found.iter().any(|(h, p)| h == host && *p == port) {
            r.errors.push(format!("prometheus.yml: does not scrape {host}:{port}"));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn interpolated(text: &str, defaulted: bool) -> Interpolated {
        Interpolated { text: text.to_string(), defaulted }
    }

    #[test]
    fn interpolation_takes_defaults() {
        assert_eq!(
            interpolate("./nginx/${NGINX_CONFIG:-round-robin.conf}").unwrap(),
            interpolated("./nginx/round-robin.conf", true)
        );
        assert_eq!(interpolate("./a/${X-b}").unwrap(), interpolated("./a/b", true));
        assert_eq!(interpolate("./plain").unwrap(), interpolated("./plain", false));
        assert!(interpolate("./${NOPE}").is_err());
    }

    #[test]
    fn ports_parse() {
        assert_eq!(parse_port("8081:8081"), Some(PortSpec { ip: None, host: 8081, container: 8081 }));
        assert_eq!(
            parse_port("127.0.0.1:8404:8404"),
            Some(PortSpec { ip: Some("127.0.0.1".into()), host: 8404, container: 8404 })
        );
        assert_eq!(parse_port("8082:8082/tcp"), Some(PortSpec { ip: None, host: 8082, container: 8082 }));
        assert_eq!(parse_port("nope"), None);
    }
}
