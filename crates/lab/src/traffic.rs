//! Sending requests through a balancer and counting where they landed. Every toy backend answers
//! `GET /` with its name, so the response body says which backend served a request.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Requests per answer: `backend-1` -> 100, or `status 502` -> 3 for anything but a 200.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally(pub BTreeMap<String, u64>);

impl Tally {
    /// Requests answered by `backend` (or with that label).
    pub fn get(&self, backend: &str) -> u64 {
        self.0.get(backend).copied().unwrap_or(0)
    }

    /// All requests counted.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// Requests answered by something other than a 200 from a backend.
    pub fn failures(&self) -> u64 {
        self.0.iter().filter(|(k, _)| !k.starts_with("backend-")).map(|(_, v)| v).sum()
    }

    /// The backends that answered at least once.
    pub fn backends(&self) -> Vec<&str> {
        self.0.keys().filter(|k| k.starts_with("backend-")).map(String::as_str).collect()
    }

    fn add(&mut self, label: String) {
        *self.0.entry(label).or_default() += 1;
    }

    fn merge(&mut self, other: Tally) {
        for (k, v) in other.0 {
            *self.0.entry(k).or_default() += v;
        }
    }
}

/// A client that keeps its connections alive, as a browser or wrk would, with a per-request
/// timeout so no test can hang on a stuck balancer.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(64)
        .build()
        .unwrap_or_default()
}

/// One `GET url`, labelled by the backend that answered it.
pub async fn get(client: &reqwest::Client, url: &str, user: Option<&str>) -> String {
    let mut req = client.get(url);
    if let Some(user) = user {
        req = req.header("X-User", user);
    }
    match req.send().await {
        Ok(resp) if resp.status() == reqwest::StatusCode::OK => match resp.text().await {
            Ok(body) => body.trim().to_string(),
            Err(e) => format!("body error: {e}"),
        },
        Ok(resp) => format!("status {}", resp.status().as_u16()),
        Err(e) if e.is_timeout() => "timeout".to_string(),
        Err(e) if e.is_connect() => "connect error".to_string(),
        Err(_) => "request error".to_string(),
    }
}

/// `n` requests one after another, each with `X-User: user` if given.
pub async fn send(client: &reqwest::Client, url: &str, n: usize, user: Option<&str>) -> Tally {
    let mut tally = Tally::default();
    for _ in 0..n {
        tally.add(get(client, url, user).await);
    }
    tally
}

/// A closed-loop load: `concurrency` tasks each sending requests back to back for `duration`.
pub async fn load(url: &str, concurrency: usize, duration: Duration) -> Tally {
    let client = client();
    let url: Arc<str> = url.into();
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while Instant::now() < deadline {
                tally.add(get(&client, &url, None).await);
            }
            tally
        }));
    }
    let mut total = Tally::default();
    for task in tasks {
        if let Ok(t) = task.await {
            total.merge(t);
        }
    }
    total
}

/// Polls `probe` every `every` until it returns true or `timeout` passes; returns how long it took,
/// or `None` on timeout.
pub async fn wait_until<F, Fut>(timeout: Duration, every: Duration, mut probe: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if probe().await {
            return Some(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}
