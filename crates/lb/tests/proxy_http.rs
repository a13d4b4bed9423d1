//! HTTP correctness through the proxy: bodies streamed byte for byte, forwarding headers, hop-by-hop
//! headers, request ids, and the explain headers.

mod proxy_support;

use lb_algorithms::{Algorithm, Health};
use proxy_support::{backends, client, config, proxy};
use reqwest::header::HeaderMap;

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_mebibyte_post_and_a_five_megabyte_download_arrive_byte_for_byte() {
    let b = backends(1).await;
    let lb = proxy(config(Algorithm::RoundRobin, &b, &[])).await;
    let c = client();
    // A pattern with period 251 (prime), so a dropped or repeated chunk cannot line up by chance.
    let body: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let resp = c
        .post(format!("{}/echo", lb.url()))
        .body(body.clone())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
    let echoed = resp.bytes().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(echoed.len(), body.len());
    assert!(echoed[..] == body[..], "the echoed body differs");

    let resp = c.get(format!("{}/bytes/5000000", lb.url())).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
    let got = resp.bytes().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.len(), 5_000_000);
    assert!(got.iter().all(|&b| b == 0), "/bytes sends zeros");
    // Both responses ended, so the backend is free again and the connection went back to the pool.
    assert_eq!(lb.upstreams.all()[0].load().set.total_in_flight(), 0);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_added_and_hop_by_hop_headers_removed() {
    let b = backends(1).await;
    let lb = proxy(config(Algorithm::RoundRobin, &b, &[])).await;
    let resp = client()
        .get(format!("{}/info", lb.url()))
        .header("connection", "keep-alive, x-secret")
        .header("x-secret", "only for the next hop")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .header("te", "trailers")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-kept", "yes")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
    let returned_id = header(resp.headers(), "x-request-id").unwrap_or_default();
    let info: serde_json::Value = resp.json().await.unwrap_or_else(|e| panic!("{e}"));
    let seen = &info["headers"];
    for gone in ["x-secret", "keep-alive", "proxy-authorization", "te", "x-lb-explain"] {
        assert!(seen.get(gone).is_none(), "{gone} reached the backend: {seen}");
    }
    assert_eq!(seen["x-kept"], "yes");
    assert_eq!(seen["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    let host = lb.listen[0].to_string();
    assert_eq!(seen["host"], host.as_str(), "Host is kept");
    assert_eq!(seen["x-forwarded-host"], host.as_str());
    assert!(!returned_id.is_empty(), "a request id is generated and returned");
    assert_eq!(seen["x-request-id"], returned_id.as_str(), "the backend saw the same id");

    // A client's own request id is replaced by lb's (issue 14: a backend that keys logs or
    // idempotency on it could be fed any id; this test used to pin that it was passed on untouched).
    // Only a proxy in `trusted_proxies` has its id passed on: see the next test.
    let resp = client()
        .get(format!("{}/info", lb.url()))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let returned_id = header(resp.headers(), "x-request-id").unwrap_or_default();
    assert!(!returned_id.is_empty() && returned_id != "abc-123", "{returned_id}");
    let info: serde_json::Value = resp.json().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(info["headers"]["x-request-id"], returned_id.as_str());
    lb.shutdown().await;
}

/// `Forwarded`, `X-Real-IP`, `X-Forwarded-Port` and a request id are believed only from a proxy in
/// `[server] trusted_proxies`: from anyone else the first three are removed and the id replaced, so a
/// client cannot pose as the proxy in front of a backend that trusts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_fields_are_passed_on_only_from_trusted_proxies() {
    let spoofed = [
        ("forwarded", "for=198.51.100.1;proto=https"),
        ("x-real-ip", "198.51.100.1"),
        ("x-forwarded-port", "443"),
        ("x-request-id", "abc-123"),
    ];
    let b = backends(1).await;
    for trusted in [None, Some("10.0.0.0/8"), Some("127.0.0.0/8")] {
        let mut cfg = config(Algorithm::RoundRobin, &b, &[]);
        cfg.server.trusted_proxies =
            trusted.iter().map(|n| n.parse().unwrap_or_else(|e| panic!("{e}"))).collect();
        let lb = proxy(cfg).await;
        let mut req = client().get(format!("{}/info", lb.url()));
        for (name, value) in spoofed {
            req = req.header(name, value);
        }
        let info: serde_json::Value =
            req.send().await.unwrap_or_else(|e| panic!("{e}")).json().await.unwrap_or_else(|e| panic!("{e}"));
        let seen = &info["headers"];
        // The test client connects from 127.0.0.1: trusted only by the last list.
        if trusted == Some("127.0.0.0/8") {
            for (name, value) in spoofed {
                assert_eq!(seen[name], value, "{trusted:?}: {seen}");
            }
        } else {
            for (name, _) in &spoofed[..3] {
                assert!(seen.get(name).is_none(), "{trusted:?}: {name} reached the backend: {seen}");
            }
            assert_ne!(seen["x-request-id"], "abc-123", "{trusted:?}: {seen}");
            assert!(seen["x-request-id"].as_str().is_some_and(|id| !id.is_empty()), "{seen}");
        }
        lb.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_headers_say_where_and_why_only_when_asked() {
    let b = backends(3).await;
    let lb = proxy(config(Algorithm::RoundRobin, &b, &[])).await;
    let c = client();
    let addr = |i: usize| b[i].addr().to_string();

    // Turn 0 of round robin is backend-1.
    let resp = c.get(lb.url()).header("x-lb-explain", "1").send().await.unwrap_or_else(|e| panic!("{e}"));
    let h = resp.headers().clone();
    assert_eq!(resp.text().await.unwrap_or_default(), "backend-1\n");
    assert_eq!(header(&h, "x-lb-backend"), Some(addr(0)));
    assert_eq!(header(&h, "x-lb-algorithm").as_deref(), Some("round-robin"));
    assert_eq!(header(&h, "x-lb-reason"), Some(format!("round-robin: turn 0 of 3, picked {}", addr(0))));
    assert_eq!(header(&h, "x-lb-attempts").as_deref(), Some("1"));
    assert_eq!(header(&h, "x-lb-skipped"), None);

    // Without the request header: turn 1, and no explain headers at all.
    let resp = c.get(lb.url()).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(resp.headers().keys().all(|k| !k.as_str().starts_with("x-lb-")), "{:?}", resp.headers());
    assert_eq!(resp.text().await.unwrap_or_default(), "backend-2\n");

    // Turn 2 would be backend-3; drain it and the pick walks on to backend-1, saying why.
    assert!(lb.upstreams.all()[0].set_health(&addr(2), Health::Draining));
    let resp = c.get(lb.url()).header("x-lb-explain", "1").send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(header(resp.headers(), "x-lb-skipped"), Some(format!("{}=draining", addr(2))));
    assert_eq!(header(resp.headers(), "x-lb-backend"), Some(addr(0)));

    // A retry is explained too: kill backend-2 (turn 3 % 3 = 0 is backend-1, so ask twice).
    b[1].kill();
    let _ = c.get(lb.url()).send().await;
    let resp = c.get(lb.url()).header("x-lb-explain", "1").send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
    assert_eq!(header(resp.headers(), "x-lb-attempts").as_deref(), Some("2"));
    let retry = header(resp.headers(), "x-lb-retry").unwrap_or_default();
    assert!(retry.starts_with(&format!("{}: ", addr(1))), "{retry}");
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_is_ignored_when_not_enabled_and_unknown_routes_get_404() {
    let b = backends(1).await;
    let mut cfg = config(Algorithm::RoundRobin, &b, &[]);
    cfg.admin = None;
    cfg.upstreams[0].path_prefix = "/api/".to_string();
    let lb = proxy(cfg).await;
    let c = client();
    let resp = c
        .get(format!("{}/api/x", lb.url()))
        .header("x-lb-explain", "1")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 404, "the toy backend has no /api/x");
    assert_eq!(header(resp.headers(), "x-lb-backend"), None);
    let resp = c.get(format!("{}/other", lb.url())).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.text().await.unwrap_or_default(),
        format!("no route for host {} path /other\n", lb.listen[0])
    );
    lb.shutdown().await;
}
