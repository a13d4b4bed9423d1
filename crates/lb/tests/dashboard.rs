//! The dashboard's feed and weight changes over real sockets: `GET /events` explains the decisions the
//! proxy makes while it is open (without adding explain headers the client did not ask for), and `PATCH`
//! changes a weight that the very next picks follow. The page itself is tested in a real browser in
//! `dashboard_browser.rs`.

#![allow(clippy::unwrap_used)]

mod proxy_support;

use std::net::SocketAddr;
use std::time::Duration;

use lb::config::AdminConfig;
use lb_algorithms::Algorithm;
use proxy_support::{backends, client, config, get, index_of, proxy};

fn with_admin(mut config: lb::Config) -> lb::Config {
    // Explain stays off: the decision list must not need it, nor turn it on for clients.
    config.admin = Some(AdminConfig::on(SocketAddr::from(([127, 0, 0, 1], 0))));
    config
}

/// Reads `snapshot` events from an open `/events` response.
struct Feed {
    response: reqwest::Response,
    buffer: String,
}

impl Feed {
    async fn open(admin: SocketAddr) -> Feed {
        let response = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("http://{admin}/events"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Feed { response, buffer: String::new() }
    }

    /// The next snapshot, as JSON (fails the test after 10 s).
    async fn next(&mut self) -> serde_json::Value {
        let read = async {
            loop {
                if let Some(end) = self.buffer.find("\n\n") {
                    let event: String = self.buffer.drain(..end + 2).collect();
                    if let Some(data) = event.strip_prefix("event: snapshot\ndata: ") {
                        return serde_json::from_str(data.trim_end()).unwrap();
                    }
                    continue;
                }
                let chunk = self.response.chunk().await.unwrap().expect("the feed ended");
                self.buffer.push_str(&String::from_utf8_lossy(&chunk));
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read).await.expect("a snapshot within 10 s")
    }
}

#[tokio::test]
async fn the_feed_explains_each_request_while_a_page_is_open() {
    let backends = backends(3).await;
    let running = proxy(with_admin(config(Algorithm::RoundRobin, &backends, &[]))).await;
    let mut feed = Feed::open(running.admin.unwrap()).await;
    let first = feed.next().await;
    let addrs: Vec<&str> = first["upstreams"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["addr"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = backends.iter().map(|b| b.addr().to_string()).collect();
    assert_eq!(addrs, expected);
    assert_eq!(first["upstreams"][0]["algorithm"], "round-robin");

    let response = client().get(running.url() + "/").send().await.unwrap();
    assert!(response.headers().get("x-lb-backend").is_none(), "the client did not ask for explain headers");
    let name = response.text().await.unwrap();
    let answered = &expected[index_of(&name).unwrap()];

    // The decision arrives with one of the next snapshots; the counters move with it.
    let mut decisions = Vec::new();
    for _ in 0..5 {
        let snapshot = feed.next().await;
        decisions.extend(snapshot["decisions"].as_array().unwrap().iter().cloned());
        if !decisions.is_empty() {
            let b = snapshot["upstreams"][0]["backends"].as_array().unwrap();
            let requests: Vec<u64> = b.iter().map(|b| b["requests"].as_u64().unwrap()).collect();
            assert_eq!(requests.iter().sum::<u64>(), 1, "{requests:?}");
            break;
        }
    }
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    let d = &decisions[0];
    assert_eq!(d["upstream"], "app");
    assert_eq!(d["backend"].as_str(), Some(answered.as_str()));
    assert_eq!(
        (d["algorithm"].as_str(), d["status"].as_u64(), d["attempts"].as_u64()),
        (Some("round-robin"), Some(200), Some(1))
    );
    assert!(d["reason"].as_str().unwrap().starts_with("round-robin"), "{d}");
    // With the page still open: its feed ends, or shutting down would wait for it forever.
    tokio::time::timeout(Duration::from_secs(10), running.shutdown())
        .await
        .expect("shut down with a page open");
}

#[tokio::test]
async fn a_weight_changed_in_place_is_what_the_next_picks_follow() {
    let backends = backends(2).await;
    let running = proxy(with_admin(config(Algorithm::WeightedRoundRobin, &backends, &[1, 1]))).await;
    let admin = running.admin.unwrap();
    let first = backends[0].addr().to_string();
    let patched = client()
        .patch(format!("http://{admin}/upstreams/app/backends/{first}"))
        .header("content-type", "application/json")
        .body(r#"{"weight": 3}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let view: serde_json::Value = patched.json().await.unwrap();
    assert_eq!(
        (view["backends"][0]["weight"].as_u64(), view["backends"][1]["weight"].as_u64()),
        (Some(3), Some(1))
    );
    // Smooth weighted round robin deals exactly 3 to 1 in every cycle of 4 picks: 6 and 2 over 8.
    let http = client();
    let mut counts = [0; 2];
    for _ in 0..8 {
        let (status, body) = get(&http, &(running.url() + "/")).await;
        assert_eq!(status, 200);
        counts[index_of(&body).unwrap()] += 1;
    }
    assert_eq!(counts, [6, 2]);
    running.shutdown().await;
}
