//! WebSocket through `lb`: the upgrade is tunnelled to a backend's `/ws` echo, messages come back, and
//! the backend counts as busy (one request in flight) exactly while the socket is open; a backend that
//! refuses the connection is passed over, and the explain headers say so.
//!
//! Run with `cargo nextest run -p lb --test websocket`.

mod proxy_support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use lb_algorithms::Algorithm;
use proxy_support::{backends, config, proxy};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const DEADLINE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_messages_echo_through_lb_and_count_in_flight_while_open() {
    let all = backends(2).await;
    let lb = proxy(config(Algorithm::RoundRobin, &all, &[])).await;
    let in_flight = || lb.upstreams.all()[0].load().set.total_in_flight();
    let url = format!("ws://{}/ws", lb.listen[0]);

    let (mut ws, response) = timeout(DEADLINE, tokio_tungstenite::connect_async(url.as_str()))
        .await
        .unwrap_or_else(|_| panic!("handshake timed out"))
        .unwrap_or_else(|e| panic!("handshake: {e}"));
    assert_eq!(response.status().as_u16(), 101);
    assert!(response.headers().contains_key("x-request-id"), "lb's request id is on the 101");
    for text in ["hello", "through", "lb"] {
        ws.send(Message::text(text)).await.unwrap_or_else(|e| panic!("send: {e}"));
        let echoed = timeout(DEADLINE, ws.next()).await.ok().flatten().and_then(|m| m.ok());
        assert_eq!(echoed, Some(Message::text(text)));
    }
    assert_eq!(in_flight(), 1, "an open WebSocket is one request in flight");
    assert_eq!(all.iter().map(|b| b.requests()).sum::<u64>(), 1, "one upgrade reached one backend");

    ws.close(None).await.unwrap_or_else(|e| panic!("close: {e}"));
    // Drain until the close handshake completes.
    while let Ok(Some(Ok(_))) = timeout(DEADLINE, ws.next()).await {}
    // The tunnel ends when both sides have closed their half: the backend did after the close
    // handshake, the client does now.
    drop(ws);
    let deadline = Instant::now() + DEADLINE;
    while in_flight() != 0 {
        assert!(Instant::now() < deadline, "still in flight after close: {}", in_flight());
        // The tunnel task notices the close on its next poll; the deadline bounds the wait.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The connection is still usable for plain HTTP afterwards (a new one, through the same worker).
    let (status, _) = proxy_support::get(&proxy_support::client(), &lb.url()).await;
    assert_eq!(status, 200);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_the_backend_refuses_is_answered_as_plain_http() {
    let all = backends(1).await;
    let lb = proxy(config(Algorithm::RoundRobin, &all, &[])).await;
    // `/` does not speak WebSocket: the toy answers 200, and lb passes that on instead of switching.
    let url = format!("ws://{}/", lb.listen[0]);
    let refused = timeout(DEADLINE, tokio_tungstenite::connect_async(url.as_str()))
        .await
        .unwrap_or_else(|_| panic!("timed out"));
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 200),
        other => panic!("expected an HTTP answer, got {other:?}"),
    }
    assert_eq!(lb.upstreams.all()[0].load().set.total_in_flight(), 0);
    lb.shutdown().await;
}

/// A graceful shutdown waits for open WebSocket tunnels as it waits for requests: the socket keeps
/// echoing during `shutdown_timeout` (2 s here), new connections are refused at once, and when the
/// timeout passes the tunnel is cut and the proxy exits. (Before, the tunnel was not counted, and
/// shutdown returned at once with the socket cut.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_websocket_tunnels_until_its_timeout() {
    let all = backends(1).await;
    let lb = proxy(config(Algorithm::RoundRobin, &all, &[])).await;
    let addr = lb.listen[0];
    let (mut ws, _) = timeout(DEADLINE, tokio_tungstenite::connect_async(format!("ws://{addr}/ws")))
        .await
        .unwrap_or_else(|_| panic!("handshake timed out"))
        .unwrap_or_else(|e| panic!("handshake: {e}"));

    let started = Instant::now();
    let stopping = tokio::spawn(lb.shutdown());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!stopping.is_finished(), "shutdown did not wait for the open tunnel");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "new connections are refused while stopping"
    );
    ws.send(Message::text("still here")).await.unwrap_or_else(|e| panic!("send: {e}"));
    let echoed = timeout(DEADLINE, ws.next()).await.ok().flatten().and_then(|m| m.ok());
    assert_eq!(echoed, Some(Message::text("still here")), "the tunnel works during the grace period");

    timeout(DEADLINE, stopping).await.unwrap_or_else(|_| panic!("shutdown never ended")).unwrap_or(());
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(6), "shutdown took {took:?}");
    // Cut: the next read ends (a close or an error), it does not hang.
    let after = timeout(DEADLINE, ws.next()).await.unwrap_or_else(|_| panic!("the tunnel was left open"));
    assert!(!matches!(after, Some(Ok(Message::Text(_)))), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_goes_around_a_backend_that_is_down_and_explains_it() {
    let all = backends(1).await;
    let (down, _held) = proxy_support::refusing_port();
    let mut cfg = config(Algorithm::RoundRobin, &all, &[]);
    cfg.upstreams[0].backends.insert(0, lb_algorithms::BackendSpec::new(down.to_string()));
    let lb = proxy(cfg).await;
    let header = |resp: &http::Response<Option<Vec<u8>>>, name: &str| {
        resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    };

    // Round robin starts at the closed port: the upgrade had not been sent, so it goes on to the
    // live backend, and the 101 says how it got there.
    let mut request =
        format!("ws://{}/ws", lb.listen[0]).into_client_request().unwrap_or_else(|e| panic!("{e}"));
    request.headers_mut().insert("x-lb-explain", http::HeaderValue::from_static("1"));
    let (mut ws, response) = timeout(DEADLINE, tokio_tungstenite::connect_async(request))
        .await
        .unwrap_or_else(|_| panic!("handshake timed out"))
        .unwrap_or_else(|e| panic!("handshake: {e}"));
    assert_eq!(response.status().as_u16(), 101);
    assert_eq!(header(&response, "x-lb-backend"), Some(all[0].addr().to_string()));
    assert_eq!(header(&response, "x-lb-algorithm").as_deref(), Some("round-robin"));
    assert_eq!(header(&response, "x-lb-attempts").as_deref(), Some("2"));
    let retry = header(&response, "x-lb-retry").unwrap_or_default();
    assert!(retry.starts_with(&format!("{down}: ")), "{retry}");
    ws.send(Message::text("still echoes")).await.unwrap_or_else(|e| panic!("send: {e}"));
    let echoed = timeout(DEADLINE, ws.next()).await.ok().flatten().and_then(|m| m.ok());
    assert_eq!(echoed, Some(Message::text("still echoes")));
    drop(ws);
    assert_eq!(lb.metrics.retries("app"), 1);

    // A refusal (the toy's `/` does not speak WebSocket) carries them too. Round robin is at the
    // closed port again, but passive health (on by default) took it out at its first refused
    // connect, so this one goes straight to the live backend.
    let mut request =
        format!("ws://{}/", lb.listen[0]).into_client_request().unwrap_or_else(|e| panic!("{e}"));
    request.headers_mut().insert("x-lb-explain", http::HeaderValue::from_static("1"));
    match timeout(DEADLINE, tokio_tungstenite::connect_async(request)).await {
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
            assert_eq!(resp.status().as_u16(), 200);
            assert_eq!(header(&resp, "x-lb-backend"), Some(all[0].addr().to_string()));
            assert_eq!(header(&resp, "x-lb-attempts").as_deref(), Some("1"));
        }
        other => panic!("expected an HTTP answer, got {other:?}"),
    }
    lb.shutdown().await;
}
