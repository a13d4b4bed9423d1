//! Hot reload: read the configuration file again and switch to it without dropping a request.
//!
//! # What happens on `SIGHUP` or `POST /reload`
//!
//! 1. **Read and check** the file the proxy was started with ([`crate::Config::load`]). A file with
//!    errors changes nothing: the errors (`file:line:column: reason`, as `lb check` prints them) are
//!    logged and returned (`/reload` answers 400 with them as JSON), and the old configuration keeps
//!    serving.
//! 2. **Build** every upstream group of the new file next to the old ones, then **swap** the routing
//!    table in one atomic store ([`crate::upstream::Upstreams::reload`]). A request already routed
//!    finishes on the group it started on; the next one routes on the new table.
//! 3. **Carry state over**: a backend that stays (same address and weight) is the same
//!    `Arc<Backend>` in the new group, so its health, EWMA, in-flight count and metrics continue, and
//!    its pooled keep-alive connections (kept per address by each worker) are reused.
//! 4. **Restart the control loops** (health checks, outlier unejection) over the new groups.
//!
//! # What a reload does not change
//!
//! The `[server]` section (listen addresses, workers, limits, TLS certificates) and `[admin]`: the
//! sockets and worker threads are made once at start. A reload whose file changes them applies the
//! upstreams and reports a warning saying a restart is needed, rather than failing: the routing change
//! is usually the urgent part. nginx re-binds listeners on reload by starting new worker processes;
//! that is the right design for a process-per-worker proxy and more machinery than this one needs.
//!
//! # The same thing elsewhere
//!
//! nginx: `nginx -s reload` (SIGHUP) starts new workers with the new file and lets old ones finish.
//! HAProxy: `-sf` hands the listeners to a new process; the master-worker mode does it on SIGUSR2.
//! Envoy: xDS updates clusters and listeners in place, draining the old ones.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, ConfigError, ConfigErrors};
use crate::metrics::Metrics;
use crate::upstream::{ReloadSummary, Upstreams};

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The proxy was not started from a file (quick or demo mode).
    #[error("lb was not started with --config: there is no file to read again")]
    NoFile,
    /// The file has errors.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// A group could not be built (an algorithm refused its options).
    #[error("{0}")]
    Build(#[from] crate::Error),
}

/// What a successful reload did.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    /// The file read.
    pub file: String,
    /// Groups and backends added, removed and kept.
    #[serde(flatten)]
    pub summary: ReloadSummary,
    /// Settings in the file that only a restart applies.
    pub warnings: Vec<String>,
}

/// Reloads the configuration of a running proxy. Shared by the admin API and the signal handler.
#[derive(Debug)]
pub struct Reloader {
    source: Option<PathBuf>,
    /// The configuration in force (its `[server]` and `[admin]` are those of the start).
    current: Mutex<Config>,
    upstreams: Arc<Upstreams>,
    metrics: Arc<Metrics>,
    /// Health checks and the outlier unejector over the current groups.
    control: Mutex<Vec<JoinHandle<()>>>,
    stop: watch::Receiver<bool>,
}

impl Reloader {
    /// A reloader for a proxy started with `config`; starts its control loops. Call inside a tokio
    /// runtime.
    pub fn start(
        config: Config,
        upstreams: Arc<Upstreams>,
        metrics: Arc<Metrics>,
        stop: watch::Receiver<bool>,
    ) -> Arc<Reloader> {
        let reloader = Reloader {
            source: config.source.clone(),
            current: Mutex::new(config),
            upstreams,
            metrics,
            control: Mutex::new(Vec::new()),
            stop,
        };
        reloader.restart_control();
        Arc::new(reloader)
    }

    /// Read the file the proxy was started from again and apply it.
    pub fn reload_file(&self) -> Result<ReloadReport, ReloadError> {
        let path = self.source.as_ref().ok_or(ReloadError::NoFile)?;
        let config = Config::load(path)?;
        self.apply(config)
    }

    /// Apply a new configuration (already checked by [`Config::parse`]).
    pub fn apply(&self, mut config: Config) -> Result<ReloadReport, ReloadError> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let summary = self.upstreams.reload(&config.upstreams)?;
        self.metrics.add_upstreams(&self.upstreams);
        self.restart_control();
        let mut warnings = Vec::new();
        if config.server != current.server {
            warnings.push(
                "[server] changed (listen, workers, limits or tls): restart lb to apply it".to_string(),
            );
        }
        if config.admin != current.admin {
            warnings.push("[admin] changed: restart lb to apply it".to_string());
        }
        for w in &warnings {
            tracing::warn!("reload: {w}");
        }
        let file = config.source.as_ref().map_or_else(String::new, |p| p.display().to_string());
        // The server and admin sections in force are still the old ones.
        config.server = current.server.clone();
        config.admin = current.admin.clone();
        *current = config;
        tracing::info!(
            file = %file,
            added = ?summary.added_backends,
            removed = ?summary.removed_backends,
            kept = summary.kept_backends,
            "configuration reloaded"
        );
        Ok(ReloadReport { file, summary, warnings })
    }

    fn restart_control(&self) {
        let mut control = self.control.lock().unwrap_or_else(|p| p.into_inner());
        for task in control.drain(..) {
            task.abort();
        }
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|&s| s).await;
        };
        control.push(crate::health::spawn(Arc::clone(&self.upstreams), stopped(self.stop.clone())));
        control
            .push(crate::outlier::spawn_unejector(Arc::clone(&self.upstreams), stopped(self.stop.clone())));
    }

    /// Wait for the control loops to end (after the stop signal).
    pub async fn join(&self) {
        let tasks: Vec<JoinHandle<()>> =
            self.control.lock().unwrap_or_else(|p| p.into_inner()).drain(..).collect();
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// A reload failure as `lb check` prints it, one `file:line:column: reason` per line.
pub fn describe(e: &ReloadError) -> Vec<String> {
    match e {
        ReloadError::Config(errors) => errors.0.iter().map(ConfigError::to_string).collect(),
        other => vec![other.to_string()],
    }
}
