//! Upgrading the binary under load: `SIGUSR2` starts the binary again, hands it the listening sockets,
//! and the old process drains and exits, with no failed request (see `src/server/upgrade.rs`).
//!
//! Run with `cargo test -p lb --test upgrade`.
//!
//! The real binary runs a config file; load comes from a few tasks looping over keep-alive
//! connections, as in `tests/reload_shutdown.rs`. The new process is not the test's child (the old
//! process started it), so a guard kills it by pid when the test ends, however it ends.

mod proxy_support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use proxy_support::load::{Tally, free_port, load};
use proxy_support::{LbProcess, backends, client};
use rustix::process::{Pid, Signal, kill_process, test_kill_process};
use tokio::time::Instant;
use toy_backend::Backend;

/// Longest any step may take.
const DEADLINE: Duration = Duration::from_secs(15);

fn write_config(path: &Path, listen: &str, workers: usize, backends: &[Backend]) {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{}\"", b.addr())).collect();
    let text = format!(
        "[server]\nlisten = \"{listen}\"\nworkers = {workers}\nshutdown_timeout = \"5s\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[upstream]]\nname = \"app\"\nalgorithm = \"round-robin\"\nbackends = [{}]\n",
        list.join(", ")
    );
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Kills a process by pid when dropped (the new `lb`, which is not this test's child).
struct KillOnDrop(Option<Pid>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = kill_process(pid, Signal::KILL);
        }
    }
}

fn signal(proc: &LbProcess, signal: Signal) {
    let pid = Pid::from_raw(proc.child.id() as i32).unwrap_or_else(|| panic!("pid 0"));
    kill_process(pid, signal).unwrap_or_else(|e| panic!("kill: {e}"));
}

/// Wait (bounded) for `proc` to exit; its status.
async fn exited(proc: &mut LbProcess) -> std::process::ExitStatus {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = proc.child.try_wait().unwrap_or_else(|e| panic!("{e}")) {
            return status;
        }
        assert!(Instant::now() < deadline, "lb did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Under load, `SIGUSR2`: the new process takes the sockets (with one worker instead of two, a change
/// a reload cannot make), the old one finishes and exits 0, and not one request fails. The admin API,
/// on port 0, keeps its port across the upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigusr2_upgrades_under_load_without_losing_a_request() {
    let all = backends(2).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("lb.toml");
    let listen = format!("127.0.0.1:{}", free_port());
    write_config(&path, &listen, 2, &all);
    let mut old = LbProcess::start(&[std::ffi::OsStr::new("--config"), path.as_os_str()]);
    let url = old.wait_line("lb listening on ", DEADLINE).trim_start_matches("lb listening on ").to_string();
    let admin = old.wait_line("admin on ", DEADLINE);

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let loops = load(&url, 4, &stop, &tally);
    tokio::time::sleep(Duration::from_millis(300)).await;

    write_config(&path, &listen, 1, &all);
    signal(&old, Signal::USR2);
    let took = old.wait_line("took over the listening sockets (pid ", DEADLINE);
    let pid: i32 = took
        .trim_start_matches("took over the listening sockets (pid ")
        .trim_end_matches(')')
        .parse()
        .unwrap_or_else(|e| panic!("{took}: {e}"));
    let _new = KillOnDrop(Pid::from_raw(pid));
    let handed = old.wait_line("upgrade: new process ", DEADLINE);
    assert_eq!(handed, format!("upgrade: new process {pid} is accepting"));
    assert!(exited(&mut old).await.success(), "the old process exited with an error");

    // The new process alone serves now, on the same sockets.
    let before = tally.ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        let _ = l.await;
    }
    let bad = tally.bad.load(Ordering::Relaxed);
    assert_eq!(bad, 0, "failures across the upgrade: {:?}", tally.reasons());
    assert!(tally.ok.load(Ordering::Relaxed) > before, "no request was served after the old process left");
    let pid = Pid::from_raw(pid).unwrap_or_else(|| panic!("pid 0"));
    assert!(test_kill_process(pid).is_ok(), "the new process is gone");
    let admin_url =
        admin.split_whitespace().find(|w| w.starts_with("http://")).unwrap_or_else(|| panic!("{admin}"));
    let metrics = client().get(format!("{admin_url}metrics")).send().await;
    assert!(matches!(metrics, Ok(ref r) if r.status() == 200), "admin API after the upgrade: {metrics:?}");
}

/// A new binary that cannot start (here: its config file is broken) changes nothing: the old process
/// says why and keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_upgrade_keeps_the_old_process_serving() {
    let all = backends(1).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("lb.toml");
    let listen = format!("127.0.0.1:{}", free_port());
    write_config(&path, &listen, 1, &all);
    let mut old = LbProcess::start(&[std::ffi::OsStr::new("--config"), path.as_os_str()]);
    let url = old.wait_line("lb listening on ", DEADLINE).trim_start_matches("lb listening on ").to_string();
    std::fs::write(&path, "[server\nlisten = ").unwrap_or_else(|e| panic!("{e}"));
    signal(&old, Signal::USR2);
    // The new process exits at once on its config error; the old one notices and carries on.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(old.child.try_wait().unwrap_or_else(|e| panic!("{e}")).is_none(), "the old process exited");
    let answer = client().get(&url).send().await.map(|r| r.status().as_u16());
    assert_eq!(answer.ok(), Some(200));
    signal(&old, Signal::TERM);
    assert!(exited(&mut old).await.success());
}
