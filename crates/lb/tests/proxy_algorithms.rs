//! Each algorithm's distribution through the real proxy: toy backends, `lb` and a client, all on
//! 127.0.0.1, one worker so the order of picks is the order of requests.

mod proxy_support;

use std::sync::Arc;

use lb_algorithms::{Algorithm, HashKey};
use proxy_support::{backends, client, config, get, get_with, index_of, proxy};
use toy_backend::Latency;

/// Count which backend answered each of `n` sequential `GET /`.
async fn tally(url: &str, n: usize, backends: usize) -> Vec<usize> {
    let c = client();
    let mut counts = vec![0; backends];
    for _ in 0..n {
        let (status, body) = get(&c, url).await;
        assert_eq!(status, 200, "{body}");
        let i = index_of(&body).unwrap_or_else(|| panic!("unexpected body {body:?}"));
        counts[i] += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_gives_three_backends_exactly_one_hundred_each() {
    let b = backends(3).await;
    let lb = proxy(config(Algorithm::RoundRobin, &b, &[])).await;
    // Strict rotation over 3 healthy backends: 300 requests are exactly 100 turns of each.
    assert_eq!(tally(&lb.url(), 300, 3).await, [100, 100, 100]);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_splits_one_to_three_exactly() {
    let b = backends(2).await;
    let lb = proxy(config(Algorithm::WeightedRoundRobin, &b, &[1, 3])).await;
    // Smooth WRR with weights 1 and 3 repeats a cycle of 4 picks (b, b, a, b); 400 requests are 100
    // whole cycles: 100 to the first backend and 300 to the second.
    assert_eq!(tally(&lb.url(), 400, 2).await, [100, 300]);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashing_algorithms_keep_each_user_on_one_backend() {
    let b = backends(4).await;
    for algorithm in Algorithm::ALL.into_iter().filter(|a| a.is_hashing()) {
        let mut cfg = config(algorithm, &b, &[]);
        cfg.upstreams[0].hash_key = Some("header:x-user".parse::<HashKey>().unwrap_or(HashKey::Path));
        let lb = proxy(cfg).await;
        let c = client();
        let mut seen_backends = std::collections::HashSet::new();
        for user in 0..20 {
            let user = format!("user-{user}");
            let mut answers = std::collections::HashSet::new();
            for _ in 0..5 {
                let (status, body) = get_with(&c, &lb.url(), &[("x-user", &user)]).await;
                assert_eq!(status, 200, "{algorithm}: {body}");
                answers.insert(body);
            }
            assert_eq!(answers.len(), 1, "{algorithm}: {user} landed on {answers:?}");
            seen_backends.extend(answers);
        }
        // 20 users over 4 backends: a hash that sent everyone to one place would also "pass" above.
        assert!(seen_backends.len() >= 3, "{algorithm}: 20 users reached only {seen_backends:?}");
        lb.shutdown().await;
    }
}

/// Run 4 concurrent clients x `per_task` requests; return each backend's share of them.
async fn concurrent_tally(url: &str, per_task: usize, n: usize) -> Vec<usize> {
    let url: Arc<str> = url.into();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let url = Arc::clone(&url);
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut counts = vec![0usize; n];
            for _ in 0..per_task {
                let (status, body) = get(&c, &url).await;
                assert_eq!(status, 200, "{body}");
                if let Some(i) = index_of(&body) {
                    counts[i] += 1;
                }
            }
            counts
        }));
    }
    let mut total = vec![0; n];
    for t in tasks {
        let counts = t.await.unwrap_or_else(|e| panic!("{e}"));
        for (i, c) in counts.into_iter().enumerate() {
            total[i] += c;
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_aware_algorithms_send_less_to_a_slow_backend() {
    let b = backends(3).await;
    // backend-1 takes 40 ms per request; the others answer at once.
    b[0].set_latency("fixed:40ms".parse::<Latency>().unwrap_or(Latency::None));
    for algorithm in [Algorithm::LeastConnections, Algorithm::PeakEwma] {
        let lb = proxy(config(algorithm, &b, &[])).await;
        let counts = concurrent_tally(&lb.url(), 100, 3).await;
        let total: usize = counts.iter().sum();
        // Fair share would be a third (133 of 400). The slow backend holds a request for 40 ms while
        // the fast ones turn many around, so both algorithms should give it well under a fifth.
        let slow_share = counts[0] as f64 / total as f64;
        assert!(slow_share < 0.2, "{algorithm}: slow backend got {counts:?}");
        lb.shutdown().await;
    }
}
