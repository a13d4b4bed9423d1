//! Hot reload: read the configuration file again and switch to it without dropping a request.
//!
//! # What happens on `SIGHUP` or `POST /reload`
//!
//! 1. **Read and check** the file the proxy was started with ([`crate::Config::load`]). A file with
//!    errors changes nothing: the errors (`file:line:column: reason`, as `lb check` prints them) are
//!    logged and returned (`/reload` answers 400 with them as JSON), and the old configuration keeps
//!    serving.
//! 2. **Prepare everything that can fail**, before anything changes: read and check the certificate
//!    and key files ([`crate::net::tls::CertSet::load`]), bind every new listening address on every worker
//!    ([`crate::net::listeners::Listeners::plan`]), build every upstream group of the new file next to the
//!    old ones. A bad key, an address already in use or a group that cannot be built refuses the whole
//!    reload with the reason; the sockets bound so far are closed again, and the old configuration
//!    serves on untouched.
//! 3. **Swap**, with steps that cannot fail: the routing table in one atomic store
//!    ([`crate::upstream::Upstreams::reload`]; a request already routed finishes on the group it started
//!    on, the next one routes on the new table), then the settings, then the certificates.
//! 4. **Carry state over**: a backend that stays (same address and weight) is the same
//!    `Arc<Backend>` in the new group, so its health, EWMA, in-flight count and metrics continue, and
//!    its pooled keep-alive connections (kept per address by each worker) are reused.
//! 5. **Restart the control loops** (health checks, outlier unejection, DNS discovery) over the new groups, and
//!    **hand the new listening sockets** to the workers; removed addresses stop accepting.
//!
//! # Settings, certificates and listeners
//!
//! - **Settings** (`[server.limits]`, `shutdown_timeout`, `[admin] explain` and `access_log`) are stored
//!   in one `ArcSwap` ([`crate::control::Shared::settings`]) that each request and each accepted connection
//!   reads once. A new request sees the new `explain`, `access_log` and `max_body_bytes`; a new connection
//!   gets the new timeouts and header size, while a connection already open keeps those it was accepted
//!   with (hyper's parser was configured for it then). `max_connections` applies at once: no connection
//!   is closed, but none is accepted while the count is over the new cap.
//! - **Certificates** are swapped in the resolver every TLS listener asks ([`crate::net::tls::Certificates`]).
//!   The files are read again on *every* reload, changed in the file or not, since certificate renewal
//!   (certbot, cert-manager) replaces the files in place and then asks for a reload.
//! - **Listeners**: new addresses start accepting on every worker, removed ones stop (connections open on
//!   them go on), addresses that stay keep their sockets; see [`crate::net::listeners`].
//!
//! # What needs a restart
//!
//! The number of workers (a thread, a runtime and a connection pool each) and the admin API's address
//! and token (the admin API's access rules are fixed when it starts, so no reload can open it).
//! A reload that changes them applies everything else and says so in `warnings` and in the log, rather
//! than failing: the rest of the change is usually the urgent part. nginx starts new worker processes
//! on every reload, which re-creates both; that is the right design for a process-per-worker proxy and
//! more machinery than this one needs.
//!
//! # The same thing elsewhere
//!
//! nginx: `nginx -s reload` (SIGHUP) starts new workers with the new file and lets old ones finish.
//! HAProxy: `-sf` hands the listeners to a new process; the master-worker mode does it on SIGUSR2.
//! Envoy: xDS updates clusters and listeners in place, draining the old ones.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, ConfigError, ConfigErrors};
use crate::control::probes::Readiness;
use crate::control::{Settings, Shared};
use crate::net::listeners::Listeners;
use crate::net::tls::{CertSet, Certificates, TlsError};
use crate::upstream::ReloadSummary;

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
    /// Addresses accepting from now on (`http://...`, `https://...`).
    pub listen_added: Vec<String>,
    /// Addresses no longer accepting.
    pub listen_removed: Vec<String>,
    /// `[server]` and `[admin]` settings that changed and are now in force (`server.limits`,
    /// `server.shutdown_timeout`, `admin.explain`, `admin.access_log`).
    pub settings_changed: Vec<String>,
    /// Certificates in force, read again from their files.
    pub certificates: usize,
    /// Changes in the file that only a restart applies.
    pub warnings: Vec<String>,
}

/// What a reload changes besides the upstream groups, as [`crate::start`] set it up.
#[derive(Debug)]
pub struct Live {
    /// The routing table, the metrics and the settings in force.
    pub shared: Arc<Shared>,
    /// The certificates every TLS listener presents.
    pub certs: Arc<Certificates>,
    /// The listening addresses, and the way to hand new sockets to the workers.
    pub listeners: Listeners,
    /// Worker threads running (`workers = 0` in the file, resolved to the number of cores).
    pub workers: usize,
    /// What `/ready` answers from; the health checks mark their first round in it.
    pub readiness: Arc<Readiness>,
}

/// The configuration in force and the listeners that go with it; one lock, so reloads run one at a
/// time.
#[derive(Debug)]
struct InForce {
    /// As applied: its `workers` and `[admin] listen` are those of the start, which a reload cannot
    /// change.
    config: Config,
    listeners: Listeners,
}

/// What a reload cannot change in a running process (`server.workers`, `admin.listen`): a warning for
/// each that `config` changes, and `config` set back to what runs, so the next reload compares with
/// what runs.
fn keep_restart_only(config: &mut Config, old: &Config, workers_running: usize) -> Vec<String> {
    let mut warnings = Vec::new();
    let workers = match config.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    if workers != workers_running {
        let in_file = match config.server.workers {
            0 => format!("0 (one per core: {workers})"),
            n => n.to_string(),
        };
        warnings.push(format!(
            "server.workers: {in_file} in the file, {workers_running} running: restart lb to apply it"
        ));
        config.server.workers = old.server.workers;
    }
    let admin_listen = |c: &Config| c.admin.as_ref().and_then(|a| a.listen);
    if admin_listen(config) != admin_listen(old) {
        let show = |a: Option<SocketAddr>| a.map_or_else(|| "none".to_string(), |a| a.to_string());
        warnings.push(format!(
            "admin.listen: {} in the file, {} running: restart lb to apply it",
            show(admin_listen(config)),
            show(admin_listen(old))
        ));
        let running = admin_listen(old);
        match config.admin.as_mut() {
            Some(a) => a.listen = running,
            None if running.is_some() => {
                config.admin = Some(crate::config::AdminConfig { listen: running, ..Default::default() });
            }
            None => {}
        }
    }
    // The token belongs with the address: the admin API's rules are fixed when it starts, so a reload
    // can never open it (a file that drops the token while the API listens beyond loopback).
    let admin_token = |c: &Config| c.admin.as_ref().and_then(|a| a.token.clone());
    if admin_token(config) != admin_token(old) {
        warnings.push("admin.token: changed in the file: restart lb to apply it".to_string());
        let running = admin_token(old);
        if let Some(a) = config.admin.as_mut() {
            a.token = running;
        }
    }
    warnings
}

impl Config {
    /// Read and check a file, the way `lb check`, `lb --config` and a reload do: [`Config::read`], then
    /// load every certificate it names (client-side TLS and each `[upstream.tls]`), so a bad one is
    /// refused with the file and line before anything starts or changes.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigErrors> {
        let (config, text) = Config::read(path)?;
        let file = path.display().to_string();
        let mut errors = Vec::new();
        for (i, u) in config.upstreams.iter().enumerate() {
            if let Some(t) = &u.tls
                && let Err(e) = crate::net::backend_tls::BackendTls::new(t, u.protocol.alpn())
            {
                let (line, column) = crate::config::upstream_tls_position(&text, i);
                let message = format!("upstream {:?}: {e}", u.name);
                errors.push(ConfigError { file: file.clone(), line, column, message });
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        if !config.server.tls.is_empty()
            && let Err(e) = crate::net::tls::acceptor(&config.server.tls)
        {
            return Err(ConfigErrors(vec![ConfigError { file, line: 0, column: 0, message: e.to_string() }]));
        }
        Ok(config)
    }
}

/// Reloads the configuration of a running proxy. Shared by the admin API and the signal handler.
#[derive(Debug)]
pub struct Reloader {
    source: Option<PathBuf>,
    in_force: Mutex<InForce>,
    shared: Arc<Shared>,
    certs: Arc<Certificates>,
    workers: usize,
    /// Health checks, the outlier unejector and DNS discovery over the current groups.
    control: Mutex<Vec<JoinHandle<()>>>,
    stop: watch::Receiver<bool>,
    readiness: Arc<Readiness>,
}

impl Reloader {
    /// A reloader for a proxy started with `config`; starts its control loops. Call inside a tokio
    /// runtime.
    pub fn start(config: Config, live: Live, stop: watch::Receiver<bool>) -> Arc<Reloader> {
        let reloader = Reloader {
            source: config.source.clone(),
            in_force: Mutex::new(InForce { config, listeners: live.listeners }),
            shared: live.shared,
            certs: live.certs,
            workers: live.workers,
            control: Mutex::new(Vec::new()),
            stop,
            readiness: live.readiness,
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

    /// The addresses accepting clients now, as bound: plain, then TLS.
    pub fn listening(&self) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
        self.in_force.lock().unwrap_or_else(|p| p.into_inner()).listeners.addresses()
    }

    /// Close the socket copies kept for an upgrade (the proxy is stopping).
    pub fn release_sockets(&self) {
        self.in_force.lock().unwrap_or_else(|p| p.into_inner()).listeners.release_copies();
    }

    /// A copy of the client-facing listening sockets, for a binary upgrade. Taken under the reload
    /// lock, so it is never half of a reload's change.
    pub fn handoff(&self) -> std::io::Result<Vec<crate::net::handoff::Handed>> {
        self.in_force.lock().unwrap_or_else(|p| p.into_inner()).listeners.handoff()
    }

    /// Apply a new configuration (already checked by [`Config::parse`]). Blocks for up to
    /// [`crate::net::listeners::CLOSE_WAIT`] while removed addresses close.
    pub fn apply(&self, mut config: Config) -> Result<ReloadReport, ReloadError> {
        let mut guard = self.in_force.lock().unwrap_or_else(|p| p.into_inner());
        // Through a plain reference, so the config and the listeners can be borrowed apart.
        let in_force = &mut *guard;
        let old = &in_force.config;

        // Everything that can fail, before anything changes. Dropping `plan` on the way out of an
        // error closes the sockets it bound.
        let certs = CertSet::load(&config.server.tls).map_err(crate::Error::from)?;
        if certs.is_empty() && !config.server.listen_tls.is_empty() {
            return Err(crate::Error::from(TlsError::no_certificate()).into());
        }
        let plan = in_force
            .listeners
            .plan(&config.server.listen, &config.server.listen_tls)
            .map_err(crate::Error::from)?;
        // Builds the new groups next to the old ones and swaps them in one store: the last step that
        // can fail, and it fails before its swap.
        let summary = self.shared.upstreams.reload(&config.upstreams)?;

        // From here on nothing fails.
        self.shared.metrics.add_upstreams(&self.shared.upstreams);
        self.restart_control();
        let settings_changed = self.swap_settings(&config);
        let certificates = certs.len();
        self.shared.metrics.set_certificates(certs.expiry());
        self.certs.replace(certs);
        // Last, so that a new TLS listener starts with the new certificates.
        let listen = in_force.listeners.commit(plan);

        let warnings = keep_restart_only(&mut config, old, self.workers);
        for w in &warnings {
            tracing::warn!("reload: {w}");
        }
        let file = config.source.as_ref().map_or_else(String::new, |p| p.display().to_string());
        in_force.config = config;
        tracing::info!(
            file = %file,
            added = ?summary.added_backends,
            removed = ?summary.removed_backends,
            kept = summary.kept_backends,
            listen_added = ?listen.added,
            listen_removed = ?listen.removed,
            settings = ?settings_changed,
            certificates,
            "configuration reloaded"
        );
        Ok(ReloadReport {
            file,
            summary,
            listen_added: listen.added,
            listen_removed: listen.removed,
            settings_changed,
            certificates,
            warnings,
        })
    }

    /// Store the settings `config` asks for (one `ArcSwap` store that every request and connection reads
    /// from then on) and return the names of those that changed.
    fn swap_settings(&self, config: &Config) -> Vec<String> {
        let settings = Settings::of(config);
        let before = self.shared.settings();
        let mut changed = Vec::new();
        for (differs, name) in [
            (settings.limits != before.limits, "server.limits"),
            (settings.shutdown_grace != before.shutdown_grace, "server.shutdown_timeout"),
            (settings.explain != before.explain, "admin.explain"),
            (settings.access_log != before.access_log, "admin.access_log"),
        ] {
            if differs {
                changed.push(name.to_string());
            }
        }
        self.shared.settings.store(Arc::new(settings));
        if **self.shared.trusted_proxies.load() != config.server.trusted_proxies {
            changed.push("server.trusted_proxies".to_string());
            self.shared.trusted_proxies.store(Arc::new(config.server.trusted_proxies.clone()));
        }
        self.shared.metrics.connections.set_max(settings.limits.max_connections);
        changed
    }

    fn restart_control(&self) {
        let mut control = self.control.lock().unwrap_or_else(|p| p.into_inner());
        for task in control.drain(..) {
            task.abort();
        }
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|&s| s).await;
        };
        control.push(crate::control::health::spawn(
            Arc::clone(&self.shared.upstreams),
            Arc::clone(&self.readiness),
            stopped(self.stop.clone()),
        ));
        control.push(crate::control::outlier::spawn_unejector(
            Arc::clone(&self.shared.upstreams),
            stopped(self.stop.clone()),
        ));
        control.push(crate::control::discovery::spawn(
            Arc::clone(&self.shared.upstreams),
            Arc::clone(&self.shared.metrics),
            stopped(self.stop.clone()),
        ));
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
