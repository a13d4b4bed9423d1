//! Rendering a committed config for a native run: the committed file stays the single source of
//! truth, and the copy that runs differs from it only where a run on this machine must.
//!
//! What changes, and only this:
//! - the backend addresses: `backend-N:900N` (a Docker DNS name) becomes `127.0.0.1:PORT`;
//! - the traffic port, bound to `127.0.0.1` (8081 nginx, 8082 HAProxy, 8083 Envoy, 8080 lb), with its
//!   parameters (`listen 8081 ssl http2;`, `bind :8082 ssl crt ...`) left as they are;
//! - the stats/admin port (HAProxy 8404, Envoy 9901, lb 9900).
//!
//! With the lab's own ports nothing but the host names changes; `lab up --base-port` and the tests
//! move every port by one offset, so two labs (or a lab and the test suite) can run side by side.
//! Paths are not rewritten here: nginx's are relative to the prefix given with `-p` (see
//! `nginx/round-robin.conf`).
//!
//! Every rule must match at least once. A committed config that drifts (a backend renamed, a port
//! changed) fails to render with a message naming the text that is missing, instead of silently
//! running against the wrong addresses.
//!
//! ```
//! use lab::{Balancer, Ports, render};
//! let conf = "listen 8081;\nserver backend-1:9001;\nserver backend-2:9002;\nserver backend-3:9003;\n";
//! let ports = Ports::shifted(Balancer::Nginx, 19001).unwrap();
//! let out = render(Balancer::Nginx, conf, &ports).unwrap();
//! assert!(out.contains("listen 127.0.0.1:18081;"));
//! assert!(out.contains("server 127.0.0.1:19003;"));
//! ```

use crate::balancer::{BACKEND_PORTS, Balancer};

/// The ports one run uses: the three backends, the balancer's traffic port and its admin port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// backend-1, backend-2, backend-3.
    pub backends: [u16; 3],
    /// Where the balancer takes traffic.
    pub listen: u16,
    /// Stats page or admin interface (unused for nginx).
    pub admin: u16,
}

/// Why a config could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A rule found nothing to rewrite: the committed config does not look as the lab expects.
    #[error("{balancer} config has no `{expected}` to rewrite ({why})")]
    Missing {
        /// Which balancer's config.
        balancer: Balancer,
        /// The text that should be there.
        expected: String,
        /// What the rule is for.
        why: &'static str,
    },
    /// `--base-port` would move a port outside 1024..=65535.
    #[error("base port {base}: moves port {port} out of range 1024-65535")]
    PortOutOfRange {
        /// The base port asked for.
        base: u16,
        /// The lab port that would not fit.
        port: u16,
    },
}

impl Ports {
    /// The lab arrangement: backends on 9001-9003, the balancer on its own port.
    pub fn lab(balancer: Balancer) -> Ports {
        Ports {
            backends: BACKEND_PORTS,
            listen: balancer.listen_port(),
            admin: balancer.admin_port().unwrap_or(0),
        }
    }

    /// The lab arrangement moved so that backend-1 is on `base` (backend-N on `base + N - 1`), every
    /// other port moved by the same offset: `--base-port 19001` puts nginx on 18081.
    pub fn shifted(balancer: Balancer, base: u16) -> Result<Ports, RenderError> {
        let lab = Ports::lab(balancer);
        let offset = i32::from(base) - i32::from(BACKEND_PORTS[0]);
        let shift = |port: u16| -> Result<u16, RenderError> {
            if port == 0 {
                return Ok(0);
            }
            let moved = i32::from(port) + offset;
            u16::try_from(moved).ok().filter(|p| *p >= 1024).ok_or(RenderError::PortOutOfRange { base, port })
        };
        Ok(Ports {
            backends: [shift(lab.backends[0])?, shift(lab.backends[1])?, shift(lab.backends[2])?],
            listen: shift(lab.listen)?,
            admin: shift(lab.admin)?,
        })
    }
}

/// One rewrite: every `from` becomes `to`; `required` rules must match at least once.
struct Rule {
    from: String,
    to: String,
    required: bool,
    why: &'static str,
}

fn rule(from: String, to: String, why: &'static str) -> Rule {
    Rule { from, to, required: true, why }
}

/// The rules for one balancer's config format.
fn rules(balancer: Balancer, ports: &Ports) -> Vec<Rule> {
    let lab = Ports::lab(balancer);
    let mut rules = Vec::new();
    for (i, (&lab_port, &port)) in lab.backends.iter().zip(&ports.backends).enumerate() {
        let n = i + 1;
        let (from, to) = match balancer {
            // Envoy writes host and port as two fields of one socket_address.
            Balancer::Envoy => (
                format!("address: backend-{n}, port_value: {lab_port}"),
                format!("address: 127.0.0.1, port_value: {port}"),
            ),
            _ => (format!("backend-{n}:{lab_port}"), format!("127.0.0.1:{port}")),
        };
        rules.push(rule(from, to, "a backend address"));
    }
    let (listen, admin) = (ports.listen, ports.admin);
    match balancer {
        Balancer::Nginx => {
            // `listen 8081;` and `listen 8081 ssl http2;` (the benchmark's nginx/tls/ configs) alike:
            // only the address changes, the parameters after it stay.
            rules.push(rule(
                format!("listen {}", lab.listen),
                format!("listen 127.0.0.1:{listen}"),
                "the traffic port",
            ));
        }
        Balancer::Haproxy => {
            rules.push(rule(
                format!("bind :{}", lab.listen),
                format!("bind 127.0.0.1:{listen}"),
                "the traffic port",
            ));
            // The stats bind is `"${HAPROXY_STATS_ADDR-127.0.0.1}:8404"`: only the port changes.
            rules.push(rule(format!(":{}\"", lab.admin), format!(":{admin}\""), "the stats port"));
        }
        Balancer::Envoy => {
            rules.push(rule(
                format!("address: 0.0.0.0, port_value: {}", lab.listen),
                format!("address: 127.0.0.1, port_value: {listen}"),
                "the traffic port",
            ));
            rules.push(rule(
                format!("address: 127.0.0.1, port_value: {}", lab.admin),
                format!("address: 127.0.0.1, port_value: {admin}"),
                "the admin port",
            ));
        }
        Balancer::Lb => {
            // lb's TOML names addresses as "IP:PORT" strings; either host form may be used.
            for host in ["0.0.0.0", "127.0.0.1"] {
                let why = "lb's listen or admin address";
                rules.push(Rule {
                    from: format!("{host}:{}", lab.listen),
                    to: format!("127.0.0.1:{listen}"),
                    required: false,
                    why,
                });
                rules.push(Rule {
                    from: format!("{host}:{}", lab.admin),
                    to: format!("127.0.0.1:{admin}"),
                    required: false,
                    why,
                });
            }
        }
    }
    rules
}

/// Renders `text`, a committed config of `balancer`, for a native run on `ports`.
///
/// All rules are applied in one left-to-right pass, so a port written by one rule is never rewritten
/// again by another (`--base-port` can move a backend onto a number another rule looks for).
pub fn render(balancer: Balancer, text: &str, ports: &Ports) -> Result<String, RenderError> {
    let rules = rules(balancer, ports);
    let mut hits = vec![0usize; rules.len()];
    let mut out = String::with_capacity(text.len() + 64);
    let mut rest = text;
    'scan: while !rest.is_empty() {
        for (i, r) in rules.iter().enumerate() {
            if let Some(after) = rest.strip_prefix(r.from.as_str()) {
                out.push_str(&r.to);
                hits[i] += 1;
                rest = after;
                continue 'scan;
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    for (r, n) in rules.iter().zip(hits) {
        if r.required && n == 0 {
            return Err(RenderError::Missing { balancer, expected: r.from.clone(), why: r.why });
        }
    }
    if balancer == Balancer::Lb && !out.contains(&format!("127.0.0.1:{}", ports.listen)) {
        let expected = format!("0.0.0.0:{}", Ports::lab(balancer).listen);
        return Err(RenderError::Missing { balancer, expected, why: "lb's listen address" });
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ports(base: u16) -> Ports {
        Ports { backends: [base, base + 1, base + 2], listen: base + 10, admin: base + 11 }
    }

    #[test]
    fn lab_ports_only_rename_hosts_in_nginx() {
        let conf = "listen 8081;\n  server backend-1:9001 weight=3;\n  server backend-2:9002;\n  server backend-3:9003;\n";
        let out = render(Balancer::Nginx, conf, &Ports::lab(Balancer::Nginx)).unwrap();
        assert_eq!(
            out,
            "listen 127.0.0.1:8081;\n  server 127.0.0.1:9001 weight=3;\n  server 127.0.0.1:9002;\n  server 127.0.0.1:9003;\n"
        );
    }

    #[test]
    fn haproxy_keeps_server_names_and_moves_ports() {
        let conf = "bind \"${HAPROXY_STATS_ADDR-127.0.0.1}:8404\"\nbind :8082\nserver backend-1 backend-1:9001\nserver backend-2 backend-2:9002\nserver backend-3 backend-3:9003 weight 1\n";
        let out = render(Balancer::Haproxy, conf, &ports(30000)).unwrap();
        assert_eq!(
            out,
            "bind \"${HAPROXY_STATS_ADDR-127.0.0.1}:30011\"\nbind 127.0.0.1:30010\nserver backend-1 127.0.0.1:30000\nserver backend-2 127.0.0.1:30001\nserver backend-3 127.0.0.1:30002 weight 1\n"
        );
    }

    #[test]
    fn envoy_rewrites_both_fields() {
        let conf = "socket_address: { address: 127.0.0.1, port_value: 9901 }\nsocket_address: { address: 0.0.0.0, port_value: 8083 }\n{ address: backend-1, port_value: 9001 }\n{ address: backend-2, port_value: 9002 }\n{ address: backend-3, port_value: 9003 }\n";
        let out = render(Balancer::Envoy, conf, &ports(30000)).unwrap();
        assert!(out.contains("{ address: 127.0.0.1, port_value: 30011 }"));
        assert!(out.contains("{ address: 127.0.0.1, port_value: 30010 }"));
        assert!(out.contains("{ address: 127.0.0.1, port_value: 30002 }"));
        assert!(!out.contains("backend-"));
    }

    #[test]
    fn one_pass_never_rewrites_a_rewritten_port() {
        // Base 9082 puts backend-1 on 9082 and nginx on 8162: a second pass looking for 8081 or
        // backend-N would be harmless here, but HAProxy's listen 8082 -> 8163 must not be touched by
        // the backend rule producing "127.0.0.1:9082".
        let conf = "bind \"${X-127.0.0.1}:8404\"\nbind :8082\nbackend-1:9001 backend-2:9002 backend-3:9003\n";
        let p = Ports::shifted(Balancer::Haproxy, 9082).unwrap();
        let out = render(Balancer::Haproxy, conf, &p).unwrap();
        assert_eq!(
            out,
            "bind \"${X-127.0.0.1}:8485\"\nbind 127.0.0.1:8163\n127.0.0.1:9082 127.0.0.1:9083 127.0.0.1:9084\n"
        );
    }

    #[test]
    fn nginx_listen_parameters_stay() {
        let conf = "listen 8081 ssl http2;\nbackend-1:9001 backend-2:9002 backend-3:9003\n";
        let out = render(Balancer::Nginx, conf, &ports(30000)).unwrap();
        assert_eq!(
            out,
            "listen 127.0.0.1:30010 ssl http2;\n127.0.0.1:30000 127.0.0.1:30001 127.0.0.1:30002\n"
        );
    }

    #[test]
    fn drift_is_an_error_naming_the_missing_text() {
        let conf = "listen 8081;\nserver backend-1:9001;\nserver backend-2:9002;\n";
        let err = render(Balancer::Nginx, conf, &Ports::lab(Balancer::Nginx)).unwrap_err();
        assert!(err.to_string().contains("backend-3:9003"), "{err}");
    }

    #[test]
    fn shifted_moves_every_port_by_one_offset() {
        let p = Ports::shifted(Balancer::Envoy, 19001).unwrap();
        assert_eq!(p, Ports { backends: [19001, 19002, 19003], listen: 18083, admin: 19901 });
        assert!(Ports::shifted(Balancer::Envoy, 65000).is_err());
    }

    #[test]
    fn lb_addresses() {
        let conf = "listen = \"0.0.0.0:8080\"\nadmin = \"127.0.0.1:9900\"\nbackends = [\"backend-1:9001\", \"backend-2:9002\", \"backend-3:9003\"]\n";
        let out = render(Balancer::Lb, conf, &ports(30000)).unwrap();
        assert_eq!(
            out,
            "listen = \"127.0.0.1:30010\"\nadmin = \"127.0.0.1:30011\"\nbackends = [\"127.0.0.1:30000\", \"127.0.0.1:30001\", \"127.0.0.1:30002\"]\n"
        );
    }
}
