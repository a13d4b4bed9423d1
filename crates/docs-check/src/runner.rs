//! Running a lesson's commands the way a learner's shell would, but bounded and cleaned up after.
//!
//! Every command runs as `bash -c COMMAND` in the repository root, with stdin closed, `NO_COLOR=1`,
//! and `target/debug` first on `PATH` (so a lesson may say `toy-backend` or `lb` once the learner has
//! built them). Each command gets its own process group, for two reasons: a timeout can then kill the
//! whole pipeline (`bash`, `curl`, whatever they started), and a background service started with ` &`
//! can be stopped with everything it forked at the end of the lesson.
//!
//! Output goes to temporary files, not pipes. With a pipe, a grandchild that outlives the command (or a
//! background service) would hold the write end open and a reader would wait for it forever; a file
//! has no such coupling, and it is read once the command has exited.
//!
//! Waiting uses short polls (`try_wait` every 10 ms): that is the whole cost of not depending on an
//! async runtime for a test that runs a few dozen commands.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use crate::cargo_run::{self, CargoRun};

/// Output beyond this is cut: a lesson's command prints a screenful, not megabytes.
const MAX_OUTPUT: u64 = 1 << 20;
/// How long a background service gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long `wait=HOST:PORT` waits for a port at most.
pub const PORT_WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(10);

/// Set by [`interrupt`]: every wait in this module gives up, so the caller can stop the background
/// services it started. They live in their own process groups, out of reach of the terminal's Ctrl-C.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Stops what is running as soon as possible (the `docs-check` binary calls this on Ctrl-C).
pub fn interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Where commands run and which binaries they find.
#[derive(Debug, Clone)]
pub struct Environment {
    pub root: PathBuf,
    pub target_dir: PathBuf,
    path: OsString,
}

impl Environment {
    /// The environment for a repository at `root`: `CARGO_TARGET_DIR` if set (relative to `root`),
    /// else `root/target`.
    pub fn new(root: &Path) -> Environment {
        let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) if !dir.is_empty() => root.join(dir),
            _ => root.join("target"),
        };
        let mut paths = vec![target_dir.join("debug")];
        if let Some(existing) = std::env::var_os("PATH") {
            paths.extend(std::env::split_paths(&existing));
        }
        let path = std::env::join_paths(paths).unwrap_or_else(|_| target_dir.join("debug").into_os_string());
        Environment { root: root.to_path_buf(), target_dir, path }
    }

    /// Where `name` is on the commands' `PATH` (the one with `target/debug` first), as bash would find
    /// it: the first folder holding an executable file of that name.
    pub fn find_program(&self, name: &str) -> Option<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        std::env::split_paths(&self.path).map(|dir| dir.join(name)).find(|candidate| {
            candidate.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    }

    fn command(&self, text: &str) -> Command {
        let mut command = Command::new("bash");
        command.arg("-c").arg(text).current_dir(&self.root).stdin(Stdio::null()).process_group(0);
        command.env("PATH", &self.path).env("NO_COLOR", "1").env("CARGO_TERM_COLOR", "never");
        // Under `cargo test`/nextest we inherit the test's package variables; a learner's shell has
        // none, and a `cargo build` in a lesson must not think it is building docs-check.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_CRATE_", "CARGO_BIN_", "CARGO_PRIMARY_", "NEXTEST"]
                .iter()
                .any(|prefix| key.starts_with(prefix))
            {
                command.env_remove(key.as_ref());
            }
        }
        command
    }
}

/// What a finished (or timed-out) foreground command did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The exit status; a signal `n` is reported as `128 + n`, as bash does.
    pub status: i32,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `text` in the foreground, waiting at most `timeout`. `cargo run` is translated first (see
/// [`crate::cargo_run`]); an untranslatable one is an error.
pub fn run(env: &Environment, text: &str, timeout: Duration) -> Result<Outcome, String> {
    let text = translate(env, text)?;
    let stdout = tempfile::tempfile().map_err(|e| format!("temporary file: {e}"))?;
    let stderr = tempfile::tempfile().map_err(|e| format!("temporary file: {e}"))?;
    let mut child = spawn(env, &text, &stdout, &stderr)?;
    let deadline = Instant::now() + timeout;
    let (status, timed_out) = loop {
        match child.try_wait() {
            Ok(Some(status)) => break (status, false),
            Ok(None) if interrupted() => {
                signal_group(&child, Signal::KILL);
                let _ = child.wait();
                return Err("interrupted".to_string());
            }
            Ok(None) if Instant::now() >= deadline => {
                signal_group(&child, Signal::KILL);
                match child.wait() {
                    Ok(status) => break (status, true),
                    Err(e) => return Err(format!("waiting for the command: {e}")),
                }
            }
            Ok(None) => thread::sleep(POLL),
            Err(e) => return Err(format!("waiting for the command: {e}")),
        }
    };
    // Whatever the command left running in its group (it was not started with ` &`, so the lesson
    // does not expect it to stay) goes with it.
    signal_group(&child, Signal::KILL);
    Ok(Outcome {
        status: status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(-1),
        timed_out,
        stdout: read_all(stdout),
        stderr: read_all(stderr),
    })
}

/// A service started with ` &`, running until [`Background::stop`].
#[derive(Debug)]
pub struct Background {
    pub line: usize,
    pub text: String,
    child: Child,
    stderr: File,
}

impl Background {
    pub fn start(env: &Environment, text: &str, line: usize) -> Result<Background, String> {
        let translated = translate(env, text)?;
        let stdout = tempfile::tempfile().map_err(|e| format!("temporary file: {e}"))?;
        let stderr = tempfile::tempfile().map_err(|e| format!("temporary file: {e}"))?;
        let child = spawn(env, &translated, &stdout, &stderr)?;
        Ok(Background { line, text: text.to_string(), child, stderr })
    }

    /// The service's process group: everything it started, unless something left the group.
    pub fn process_group(&self) -> u32 {
        // With `process_group(0)` the child leads a group whose id is its pid.
        self.child.id()
    }

    /// `Some(description)` if the service has already exited: a port will never open then.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!("exited with {status}; stderr:\n{}", self.stderr_text())),
            _ => None,
        }
    }

    pub fn stderr_text(&mut self) -> String {
        match self.stderr.try_clone() {
            Ok(file) => read_all(file),
            Err(e) => format!("(stderr unreadable: {e})"),
        }
    }

    /// SIGTERM to the service's process group, SIGKILL after 5 s if any of it is still up.
    pub fn stop(mut self) {
        signal_group(&self.child, Signal::TERM);
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            let leader_done = matches!(self.child.try_wait(), Ok(Some(_)));
            if leader_done && !group_alive(&self.child) {
                return;
            }
            if Instant::now() >= deadline {
                signal_group(&self.child, Signal::KILL);
                let _ = self.child.wait();
                return;
            }
            thread::sleep(POLL);
        }
    }
}

/// Waits until every address accepts a TCP connection, up to [`PORT_WAIT`] (or `deadline` if sooner).
/// Gives up early, with the service's stderr, if a background service of this lesson has exited.
pub fn wait_for_ports(
    addresses: &[String],
    services: &mut [Background],
    deadline: Instant,
) -> Result<Duration, String> {
    let started = Instant::now();
    let deadline = deadline.min(started + PORT_WAIT);
    for address in addresses {
        let resolved: Vec<_> =
            address.to_socket_addrs().map_err(|e| format!("wait={address}: not an address: {e}"))?.collect();
        loop {
            if resolved.iter().any(|a| TcpStream::connect_timeout(a, Duration::from_millis(200)).is_ok()) {
                break;
            }
            for service in services.iter_mut() {
                if let Some(how) = service.exited() {
                    return Err(format!(
                        "waiting for {address}: the background command at line {} (`{}`) {how}",
                        service.line, service.text
                    ));
                }
            }
            if interrupted() {
                return Err("interrupted".to_string());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{address} did not accept a connection within {} s",
                    deadline.saturating_duration_since(started).as_secs()
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(started.elapsed())
}

/// Rewrites `cargo run` into the built binary, building it once if it is missing.
fn translate(env: &Environment, text: &str) -> Result<String, String> {
    match cargo_run::parse(text) {
        None => Ok(text.to_string()),
        Some(Err(reason)) => Err(reason),
        Some(Ok(run)) => {
            let run = run.prefer_built(&env.target_dir);
            ensure_built(env, &run)?;
            Ok(run.shell_command(&env.target_dir))
        }
    }
}

/// Builds are serialised (two at once would only wait on cargo's lock and print confusing output) and
/// attempted once per binary per process.
fn ensure_built(env: &Environment, run: &CargoRun) -> Result<(), String> {
    static BUILT: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
    let binary = run.binary(&env.target_dir);
    if binary.is_file() {
        return Ok(());
    }
    let mut attempted = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    if !attempted.get_or_insert_with(HashSet::new).insert(binary.clone()) {
        return Err(format!("{} is missing and building it failed before", binary.display()));
    }
    let output = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(run.build_args())
        .current_dir(&env.root)
        .env("CARGO_TARGET_DIR", &env.target_dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running cargo build: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "`cargo {}` failed:\n{}",
            run.build_args().join(" "),
            tail(&String::from_utf8_lossy(&output.stderr), 30)
        ));
    }
    if !binary.is_file() {
        return Err(format!(
            "`cargo {}` succeeded but {} is not there: is the binary called something else? \
             (name it with --bin)",
            run.build_args().join(" "),
            binary.display()
        ));
    }
    Ok(())
}

fn spawn(env: &Environment, text: &str, stdout: &File, stderr: &File) -> Result<Child, String> {
    let (out, err) = match (stdout.try_clone(), stderr.try_clone()) {
        (Ok(out), Ok(err)) => (out, err),
        (Err(e), _) | (_, Err(e)) => return Err(format!("temporary file: {e}")),
    };
    env.command(text).stdout(out).stderr(err).spawn().map_err(|e| format!("starting bash: {e}"))
}

fn group_of(child: &Child) -> Option<Pid> {
    // With `process_group(0)` the child leads a group whose id is its pid.
    i32::try_from(child.id()).ok().and_then(Pid::from_raw)
}

fn signal_group(child: &Child, signal: Signal) {
    if let Some(group) = group_of(child) {
        // ESRCH (nothing left in the group) is the usual and wanted case.
        let _ = rustix::process::kill_process_group(group, signal);
    }
}

fn group_alive(child: &Child) -> bool {
    group_of(child).is_some_and(|group| rustix::process::test_kill_process_group(group).is_ok())
}

fn read_all(mut file: File) -> String {
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(0)).is_ok() {
        let _ = io::Read::by_ref(&mut file).take(MAX_OUTPUT).read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The last `n` lines of `text`, for error messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    let mut out = String::new();
    if start > 0 {
        out.push_str(&format!("({start} earlier lines not shown)\n"));
    }
    out.push_str(&lines[start..].join("\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Environment {
        Environment::new(&std::env::temp_dir())
    }

    #[test]
    fn programs_are_found_on_the_commands_path() {
        // `bash` runs every command, so it is on any PATH the checker can work with.
        let bash = env().find_program("bash");
        assert!(bash.as_ref().is_some_and(|p| p.ends_with("bash")), "{bash:?}");
        assert_eq!(env().find_program("definitely-not-installed-xyz"), None);
    }

    #[test]
    fn captures_stdout_stderr_and_status() {
        let outcome =
            run(&env(), "echo out; echo err >&2; exit 3", Duration::from_secs(10)).expect("bash runs");
        assert_eq!((outcome.status, outcome.timed_out), (3, false));
        assert_eq!(outcome.stdout, "out\n");
        assert_eq!(outcome.stderr, "err\n");
        let outcome =
            run(&env(), "echo \"$NO_COLOR\"; read -r x || echo stdin closed", Duration::from_secs(10));
        assert_eq!(outcome.expect("bash runs").stdout, "1\nstdin closed\n");
    }

    #[test]
    fn timeout_kills_the_whole_group() {
        // `sleep` in a subshell is a grandchild: killing bash alone would leave it holding the output.
        let started = Instant::now();
        let outcome =
            run(&env(), "(sleep 30; echo late) ; echo never", Duration::from_millis(300)).expect("bash runs");
        assert!(outcome.timed_out);
        assert_eq!(outcome.status, 128 + 9);
        assert_eq!(outcome.stdout, "");
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    }

    #[test]
    fn background_service_is_waited_for_and_stopped() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback bind");
        let address = listener.local_addr().expect("bound").to_string();
        // The "service" is a sleep; the port is held by this test, which is what `wait` observes.
        let mut services = vec![Background::start(&env(), "sleep 30", 1).expect("bash starts")];
        let waited = wait_for_ports(&[address], &mut services, Instant::now() + Duration::from_secs(10));
        assert!(waited.is_ok(), "{waited:?}");
        let started = Instant::now();
        for service in services {
            service.stop();
        }
        assert!(started.elapsed() < STOP_GRACE, "SIGTERM should have been enough");
    }

    #[test]
    fn a_dead_service_ends_the_wait_early() {
        // A port that was free a moment ago and that nobody will open.
        let free = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("loopback bind")
            .to_string();
        let mut services =
            vec![Background::start(&env(), "echo cannot bind >&2; exit 1", 4).expect("bash starts")];
        let started = Instant::now();
        let waited = wait_for_ports(&[free], &mut services, Instant::now() + Duration::from_secs(30));
        let Err(message) = waited else { panic!("the wait should fail") };
        assert!(message.contains("line 4") && message.contains("cannot bind"), "{message}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
