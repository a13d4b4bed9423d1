//! Running one balancer as a child process on a rendered copy of a committed config.
//!
//! [`Prepared`] writes the rendered copy into a scratch folder; [`Running::start`] starts the real
//! program on it, waits until its traffic port accepts connections, and owns the child from then on:
//! [`Running::stop`] (or dropping it) sends SIGTERM, waits, and only then SIGKILLs. SIGTERM first
//! matters for nginx: a SIGKILLed master leaves its worker running and holding the port.
//!
//! The command lines, one per balancer:
//!
//! ```text
//! nginx   -c DIR/nginx.conf -p DIR/ -e stderr -g 'daemon off;'
//! haproxy -db -f DIR/haproxy.cfg
//! envoy   -c DIR/envoy.yaml --concurrency 1 --disable-hot-restart --log-level warn
//! lb      --config DIR/lb.toml
//! ```

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::balancer::Balancer;
use crate::render::{Ports, RenderError, render};
use crate::tempdir::TempDir;

/// How long a balancer may take to open its traffic port. Envoy starts through a Python wrapper
/// and takes a second or two alone; on a busy 2-core machine, longer.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long [`Running::stop`] waits after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Why a balancer could not be prepared or started.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Reading the committed config or writing the rendered copy failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// The committed config does not look as the lab expects.
    #[error("{path}: {source}")]
    Render {
        /// The committed config.
        path: PathBuf,
        /// What is missing.
        source: RenderError,
    },
    /// The program could not be started at all.
    #[error("starting {program}: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// The program exited before opening its port.
    #[error("{balancer} exited with {status} before listening on port {port}; its output:\n{log}")]
    Exited {
        /// Which balancer.
        balancer: Balancer,
        /// How it exited.
        status: ExitStatus,
        /// The port it should have opened.
        port: u16,
        /// The tail of its output (empty when it went to the terminal).
        log: String,
    },
    /// The program did not open its port in time.
    #[error("{balancer} did not listen on port {port} within {timeout:?}; its output:\n{log}")]
    Timeout {
        /// Which balancer.
        balancer: Balancer,
        /// The port it should have opened.
        port: u16,
        /// How long we waited.
        timeout: Duration,
        /// The tail of its output.
        log: String,
    },
}

/// A rendered config in its scratch folder, ready to run or validate.
#[derive(Debug)]
pub struct Prepared {
    /// Which balancer.
    pub balancer: Balancer,
    /// The committed file it was rendered from.
    pub committed: PathBuf,
    /// The rendered copy.
    pub rendered: PathBuf,
    /// The ports it was rendered for.
    pub ports: Ports,
    dir: TempDir,
}

impl Prepared {
    /// Renders `committed` for `ports` into a new scratch folder.
    pub fn new(balancer: Balancer, committed: &Path, ports: Ports) -> Result<Prepared, RunError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RunError::Io { path, source }
        };
        let text = std::fs::read_to_string(committed).map_err(io_err(committed))?;
        let rendered_text = render(balancer, &text, &ports)
            .map_err(|source| RunError::Render { path: committed.to_path_buf(), source })?;
        let dir = TempDir::new(balancer.name()).map_err(io_err(&std::env::temp_dir()))?;
        let rendered = dir.path().join(format!("{}.{}", balancer.name(), balancer.extension()));
        std::fs::write(&rendered, rendered_text).map_err(io_err(&rendered))?;
        Ok(Prepared { balancer, committed: committed.to_path_buf(), rendered, ports, dir })
    }

    /// The scratch folder (nginx's prefix).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The command that runs the rendered config with `program`, in the foreground.
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        let config = &self.rendered;
        match self.balancer {
            Balancer::Nginx => {
                // -p: relative paths in the config (pid, temp folders) land in the scratch folder.
                // -e: log to stderr before the config is read (the compiled-in log may be unwritable).
                cmd.arg("-c").arg(config).arg("-p").arg(prefix(self.dir()));
                cmd.args(["-e", "stderr", "-g", "daemon off;"]);
            }
            Balancer::Haproxy => {
                // -db: foreground, no daemon. The stats page stays on loopback (the config's default).
                cmd.arg("-db").arg("-f").arg(config).env_remove("HAPROXY_STATS_ADDR");
            }
            Balancer::Envoy => {
                // One worker, as in the per-core benchmark. Hot restart off: each Envoy would otherwise
                // claim a shared-memory region by base id (two on the same id collide;
                // `--use-dynamic-base-id` avoids that but leaves a file in /dev/shm per run). The lab
                // never hot-restarts.
                cmd.arg("-c").arg(config);
                cmd.args(["--concurrency", "1", "--disable-hot-restart", "--log-level", "warn"]);
            }
            Balancer::Lb => {
                cmd.arg("--config").arg(config);
            }
        }
        cmd
    }
}

/// nginx's `-p` wants the prefix as a folder path ending in `/`.
fn prefix(dir: &Path) -> String {
    let mut s = dir.display().to_string();
    if !s.ends_with('/') {
        s.push('/');
    }
    s
}

/// Where a running balancer's output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// To this terminal (`lab up`).
    Inherit,
    /// To `balancer.log` in the scratch folder, shown when start-up fails (tests).
    Capture,
}

/// A balancer running as a child process. Dropping it stops it.
#[derive(Debug)]
pub struct Running {
    child: Option<Child>,
    log: Option<PathBuf>,
    /// The rendered config and its scratch folder (removed after the child has stopped).
    pub prepared: Prepared,
}

impl Running {
    /// Starts `program` on the prepared config and waits until its traffic port accepts
    /// connections, at most [`START_TIMEOUT`].
    pub async fn start(prepared: Prepared, program: &Path, output: Output) -> Result<Running, RunError> {
        let mut cmd = prepared.command(program);
        cmd.stdin(Stdio::null());
        let log = match output {
            Output::Inherit => None,
            Output::Capture => {
                let path = prepared.dir().join("balancer.log");
                let file = std::fs::File::create(&path)
                    .map_err(|source| RunError::Io { path: path.clone(), source })?;
                let file2 = file.try_clone().map_err(|source| RunError::Io { path: path.clone(), source })?;
                cmd.stdout(file).stderr(file2);
                Some(path)
            }
        };
        let child =
            cmd.spawn().map_err(|source| RunError::Spawn { program: program.to_path_buf(), source })?;
        let mut running = Running { child: Some(child), log, prepared };
        running.wait_listening(START_TIMEOUT).await?;
        Ok(running)
    }

    async fn wait_listening(&mut self, timeout: Duration) -> Result<(), RunError> {
        let balancer = self.prepared.balancer;
        let port = self.prepared.ports.listen;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(RunError::Exited { balancer, status, port, log: self.log_tail() });
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(RunError::Timeout { balancer, port, timeout, log: self.log_tail() });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines of the balancer's captured output.
    pub fn log_tail(&self) -> String {
        let Some(path) = &self.log else { return String::new() };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Which balancer.
    pub fn balancer(&self) -> Balancer {
        self.prepared.balancer
    }

    /// `http://127.0.0.1:PORT` of its traffic port.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.prepared.ports.listen)
    }

    /// URL of its stats page or admin interface, if it has one.
    pub fn stats_url(&self) -> Option<String> {
        let b = self.balancer();
        b.admin_port().map(|_| format!("http://127.0.0.1:{}{}", self.prepared.ports.admin, b.stats_path()))
    }

    /// The child's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `Some(status)` once the child has exited on its own.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => child.try_wait(),
            None => Ok(None),
        }
    }

    /// Stops the child: SIGTERM, up to [`STOP_GRACE`] to exit, then SIGKILL; and waits for it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        terminate(child.id());
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends SIGTERM to `pid` with the `kill` command: the standard library only sends SIGKILL, and a
/// direct `kill(2)` call would need `unsafe` (forbidden in this workspace) or one more dependency.
fn terminate(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
