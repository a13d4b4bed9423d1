//! Steady load for the tests that change a running proxy (reloads, upgrades): a few tasks looping
//! `GET` over keep-alive connections, counting every answer that is not a 200.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Answers seen by the load: 200s, and everything else with the first few reasons.
#[derive(Debug, Default)]
pub struct Tally {
    pub ok: AtomicU64,
    pub bad: AtomicU64,
    pub first_bad: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    /// The failures so far, for an assertion message.
    pub fn reasons(&self) -> Vec<String> {
        self.first_bad.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn record(&self, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(why) => {
                self.bad.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_bad.lock().unwrap_or_else(|p| p.into_inner());
                if first.len() < 5 {
                    first.push(why);
                }
            }
        }
    }
}

/// `tasks` loops of `GET url` on keep-alive connections until `stop` (and at most 60 s, should a
/// test forget to stop them).
pub fn load(
    url: &str,
    tasks: usize,
    stop: &Arc<AtomicBool>,
    tally: &Arc<Tally>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..tasks)
        .map(|_| {
            let (url, stop, tally) = (url.to_string(), Arc::clone(stop), Arc::clone(tally));
            tokio::spawn(async move {
                let client = super::client();
                let started = Instant::now();
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
                    let outcome = match client.get(&url).send().await {
                        Ok(r) if r.status() == 200 => {
                            r.text().await.map(|_| ()).map_err(|e| format!("{e:?}"))
                        }
                        Ok(r) => Err(format!("status {}", r.status())),
                        Err(e) => Err(format!("{e:?}")),
                    };
                    tally.record(outcome);
                }
            })
        })
        .collect()
}

/// A free loopback port, for a config file that must name its port (a reload or an upgrade keeps it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}
