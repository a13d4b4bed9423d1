//! Upgrading the binary without dropping a connection: `kill -USR2 <pid>` (nginx's signal).
//!
//! # What happens
//!
//! 1. The running `lb` (the *old* process) listens on a Unix socket in the temporary directory and
//!    starts the program it was started as (`argv[0]`, so a binary replaced on disk is the new one),
//!    with the same arguments and that socket's path in [`SOCKET_ENV`].
//! 2. The new process reads its configuration as usual, connects, and receives every listening socket
//!    ([`crate::net::handoff`]): the client-facing ones and the admin API's. It uses them for the
//!    addresses its configuration names and binds any others. So a changed `server.workers`, or a new
//!    admin address, takes effect, which a reload cannot do.
//! 3. When its workers accept, it says `ready`. The old process then shuts down as on `SIGTERM`: it
//!    stops accepting, finishes the requests in flight (up to `shutdown_grace`) and exits. The sockets
//!    stay open in the new process throughout, so a client connecting at any moment is accepted by one
//!    of the two, and nothing waiting in a socket's accept queue is lost.
//!
//! If the new process fails (a bad configuration, a crash, no `ready` within [`READY_WAIT`]), the old
//! one says why and keeps serving, as nginx's old master does when the new binary cannot start.
//!
//! Only a proxy started with `--config` or `--backend` upgrades; the demo's toy backends live in its
//! own process, so a demo answers `SIGUSR2` with a log line.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::net::UnixListener;

use crate::net::handoff::{self, Handed, SOCKET_ENV};
use crate::server::Running;

/// How long the new process has to start and say `ready`.
pub const READY_WAIT: Duration = Duration::from_secs(30);

/// The old process's side: start the new one, hand it the sockets, wait for `ready`. Returns the new
/// process's id; the caller then shuts this one down.
pub async fn hand_over(running: &Running) -> anyhow::Result<u32> {
    let path = socket_path();
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).with_context(|| format!("listening on {}", path.display()))?;
    let result = spawn_and_hand(running, &listener, &path).await;
    let _ = std::fs::remove_file(&path);
    result
}

async fn spawn_and_hand(running: &Running, listener: &UnixListener, path: &PathBuf) -> anyhow::Result<u32> {
    let mut args = std::env::args_os();
    let program = args.next().context("no argv[0] to start again")?;
    let mut child = tokio::process::Command::new(&program)
        .args(args)
        .env(SOCKET_ENV, path)
        .stdin(Stdio::null())
        .kill_on_drop(false)
        .spawn()
        .with_context(|| format!("starting {}", PathBuf::from(&program).display()))?;
    let pid = child.id().unwrap_or(0);
    let handed = running.handoff().context("copying the listening sockets")?;
    let exchange = async {
        let (stream, _) = listener.accept().await.context("waiting for the new process to connect")?;
        let stream = stream.into_std().context("the handoff socket")?;
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            stream.set_nonblocking(false)?;
            stream.set_read_timeout(Some(READY_WAIT))?;
            handoff::send(&stream, &handed).context("handing over the sockets")?;
            handoff::wait_ready(&stream).context("waiting for the new process to accept")
        })
        .await
        .context("the handoff thread")?
    };
    let outcome = tokio::select! {
        done = tokio::time::timeout(READY_WAIT, exchange) => {
            done.unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {READY_WAIT:?}")))
        }
        status = child.wait() => Err(anyhow::anyhow!("the new process exited first ({})", describe(status))),
    };
    if let Err(e) = outcome {
        // A new process that failed to start exits on its own, having said why on stderr; give it a
        // moment to, and to be reaped, before making sure it is gone.
        let why = match tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
            Ok(status) => format!("it exited ({})", describe(status)),
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                "it was stopped".to_string()
            }
        };
        return Err(e.context(format!("upgrade to new process {pid} failed, {why}")));
    }
    // The new process answers on the admin socket now; this one must not keep taking its requests
    // (a backend added here while draining would be lost).
    running.close_admin();
    Ok(pid)
}

fn describe(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => e.to_string(),
    }
}

/// Where the old process waits for the new one: private to this process id.
fn socket_path() -> PathBuf {
    std::env::temp_dir().join(format!("lb-upgrade-{}.sock", std::process::id()))
}

/// The new process's side, before it starts: when started by an upgrade, connect and collect the
/// sockets. `None` for an ordinary start.
pub fn take_over() -> anyhow::Result<Option<TakeOver>> {
    let Some(path) = std::env::var_os(SOCKET_ENV) else { return Ok(None) };
    // The variable stays in this process's environment (removing it is `unsafe`); harmless, as each
    // upgrade gives its new process a path of its own.
    let stream = std::os::unix::net::UnixStream::connect(&path)
        .with_context(|| format!("connecting to the old process at {}", PathBuf::from(&path).display()))?;
    stream.set_read_timeout(Some(READY_WAIT))?;
    let handed = handoff::receive(&stream).context("receiving the listening sockets")?;
    Ok(Some(TakeOver { stream, handed }))
}

/// Sockets received from the old process, and the line to tell it when this one accepts.
#[derive(Debug)]
pub struct TakeOver {
    stream: std::os::unix::net::UnixStream,
    handed: Vec<Handed>,
}

impl TakeOver {
    /// The sockets, for [`crate::server::start_with`].
    pub fn sockets(&mut self) -> Vec<Handed> {
        std::mem::take(&mut self.handed)
    }

    /// This process accepts now: the old one may go.
    pub fn ready(self) -> anyhow::Result<()> {
        handoff::ready(&self.stream).context("telling the old process")
    }
}
