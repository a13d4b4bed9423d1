//! `lab check`: every committed config, validated by the real program that would run it.
//!
//! | balancer | command | on |
//! |---|---|---|
//! | nginx   | `nginx -t -q -c FILE -p DIR/ -e stderr` | the rendered copy: nginx resolves upstream host names while loading, and `backend-1` resolves only inside Docker |
//! | haproxy | `haproxy -c -q -f FILE` | the committed file (`init-addr none` lets it load unresolved names) |
//! | envoy   | `envoy --mode validate -c FILE` | the committed file (validation resolves nothing) |
//! | lb      | `lb check --config FILE` | the committed file, when the lb binary is built |

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::balancer::Balancer;
use crate::programs;
use crate::render::Ports;
use crate::run::Prepared;

/// How long one validation may take.
pub const VALIDATE_TIMEOUT: Duration = Duration::from_secs(60);

/// The outcome for one config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// The program accepted it.
    Ok,
    /// The program rejected it (or could not be run); the text says why.
    Failed(String),
    /// The program is not installed (or lb not built); the text says how to get it.
    Missing(String),
}

/// One row of the report.
#[derive(Debug, Clone)]
pub struct CheckRow {
    /// Which balancer.
    pub balancer: Balancer,
    /// The committed config.
    pub config: PathBuf,
    /// What happened.
    pub status: Status,
}

/// Validates one committed config with `program`.
pub async fn validate(balancer: Balancer, program: &Path, config: &Path) -> Status {
    // Keeps the scratch folder alive while nginx reads the rendered copy.
    let mut _prepared = None;
    let mut cmd = match balancer {
        Balancer::Nginx => {
            let prepared = match Prepared::new(balancer, config, Ports::lab(balancer)) {
                Ok(p) => p,
                Err(e) => return Status::Failed(e.to_string()),
            };
            let mut cmd = tokio::process::Command::new(program);
            cmd.args(["-t", "-q", "-c"]).arg(&prepared.rendered);
            cmd.arg("-p").arg(format!("{}/", prepared.dir().display())).args(["-e", "stderr"]);
            _prepared = Some(prepared);
            cmd
        }
        Balancer::Haproxy => {
            let mut cmd = tokio::process::Command::new(program);
            cmd.args(["-c", "-q", "-f"]).arg(config);
            cmd
        }
        Balancer::Envoy => {
            let mut cmd = tokio::process::Command::new(program);
            cmd.args(["--mode", "validate", "--disable-hot-restart", "--log-level", "error", "-c"])
                .arg(config);
            cmd
        }
        Balancer::Lb => {
            let mut cmd = tokio::process::Command::new(program);
            cmd.args(["check", "--config"]).arg(config);
            cmd
        }
    };
    cmd.kill_on_drop(true).stdin(std::process::Stdio::null());
    match tokio::time::timeout(VALIDATE_TIMEOUT, cmd.output()).await {
        Err(_) => Status::Failed(format!("no answer within {VALIDATE_TIMEOUT:?}")),
        Ok(Err(e)) => Status::Failed(format!("could not run {}: {e}", program.display())),
        Ok(Ok(out)) if out.status.success() => Status::Ok,
        Ok(Ok(out)) => {
            let text =
                format!("{}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = lines[lines.len().saturating_sub(6)..].join("\n");
            Status::Failed(format!("{}: {tail}", out.status))
        }
    }
}

/// Validates every committed config of every balancer under `root`.
pub async fn check_all(root: &Path) -> std::io::Result<Vec<CheckRow>> {
    let mut rows = Vec::new();
    for balancer in [Balancer::Nginx, Balancer::Haproxy, Balancer::Envoy, Balancer::Lb] {
        let configs = balancer.configs(root)?;
        let program = programs::find(balancer);
        for config in configs {
            let status = match &program {
                None => Status::Missing(programs::missing_message(balancer)),
                Some(program) => validate(balancer, program, &config).await,
            };
            rows.push(CheckRow { balancer, config, status });
        }
    }
    Ok(rows)
}

/// The report as a table, paths shown relative to `root`.
pub fn table(rows: &[CheckRow], root: &Path) -> String {
    let name = |p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
    let width = rows.iter().map(|r| name(&r.config).len()).max().unwrap_or(6).max(6);
    let mut out = format!("{:<8} {:<width$} result\n", "program", "config");
    for row in rows {
        let (word, detail) = match &row.status {
            Status::Ok => ("ok", String::new()),
            Status::Failed(why) => ("FAILED", why.clone()),
            Status::Missing(why) => ("skipped", why.clone()),
        };
        let _ = writeln!(out, "{:<8} {:<width$} {word}", row.balancer.program(), name(&row.config));
        for line in detail.lines() {
            let _ = writeln!(out, "{:<8} {:<width$}   {line}", "", "");
        }
    }
    out
}
