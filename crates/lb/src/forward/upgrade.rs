//! WebSocket and other `Upgrade` requests: hand the client's connection to the chosen backend as a raw
//! two-way tunnel.
//!
//! # How an upgrade passes through a proxy
//!
//! A WebSocket starts as an HTTP/1.1 request with `Connection: upgrade` and `Upgrade: websocket`. Both
//! headers are hop-by-hop, so an ordinary forward strips them (and `lb` does, for every other request).
//! Here the proxy instead:
//!
//! 1. picks a backend with the upstream's algorithm, as for any request, and counts it in flight;
//! 2. opens a **dedicated** connection to it (an upgraded connection is never returned to the pool:
//!    after the switch it no longer speaks HTTP; TLS when the upstream has `[upstream.tls]`), and sends the request with its `Upgrade` and
//!    `Connection: upgrade` headers put back;
//! 3. if the backend answers `101 Switching Protocols`, answers the client with that 101, then takes
//!    both upgraded connections from hyper (`hyper::upgrade::on`, on each side) and copies bytes both
//!    ways (`tokio::io::copy_bidirectional`) until either side closes;
//! 4. if the backend answers anything else (a 400 because a header is missing, a 404), passes that
//!    answer on and the client's connection stays plain HTTP.
//!
//! The in-flight guard lives in the tunnel task, so a backend with a thousand open WebSockets counts as
//! busy with a thousand requests for least-connections, for exactly as long as they are open.
//!
//! # What is not tunnelled
//!
//! `Upgrade: h2c` is dropped, not tunnelled: switching a *backend* connection to HTTP/2 on a client's
//! say-so lets the client talk to the backend directly behind every check the proxy makes ("h2c
//! smuggling", Bishop Fox 2020). HTTP/2 clients cannot upgrade at all (RFC 9113 removed it; WebSocket
//! over HTTP/2 uses extended CONNECT, RFC 8441, which `lb` does not offer).
//!
//! On shutdown, open tunnels are waited for like requests in flight, up to `shutdown_timeout`, and
//! cut when it passes (a WebSocket may stay open for hours; nginx's `worker_shutdown_timeout` does the
//! same). The client connection's task in `h1_server.rs` lives until its tunnel ends, which is what
//! makes the shutdown count it.
//!
//! nginx needs `proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection "upgrade";` for the
//! same thing; HAProxy and Envoy (`upgrade_configs: [{upgrade_type: websocket}]`) tunnel on their own.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use lb_algorithms::InFlightGuard;
use tokio::sync::oneshot;

use crate::forward::attempts::{Attempts, Tally};
use crate::forward::{ProxyBody, Routed};
use crate::http::forwarding::X_REQUEST_ID;
use crate::http::h1::server::Upgraded;
use crate::http::h1::tokens;
use crate::http::{ClientBody, ClientInfo};
use crate::net::backend_tls::{self, BackendStream};
use crate::upstream::stats::FailureKind;

/// How much of a refusal (a non-101 answer to an upgrade) is passed on; such answers are short.
const MAX_REFUSAL_BODY: usize = 64 * 1024;

/// The protocol an HTTP/1.1 request asks to switch to, if it is one we tunnel.
pub fn wanted(headers: &http::HeaderMap, version: Version) -> Option<HeaderValue> {
    if version != Version::HTTP_11 {
        return None;
    }
    // `Upgrade` first: nearly every request has none, and then this is one lookup.
    let upgrade = headers.get(header::UPGRADE)?;
    let connection_says_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| tokens(v.as_bytes()))
        .any(|t| t.eq_ignore_ascii_case(b"upgrade"));
    // A value that is not text is refused like h2c, rather than guessed at.
    let h2c = upgrade.to_str().map_or(true, |u| tokens(u.as_bytes()).any(|p| p.eq_ignore_ascii_case(b"h2c")));
    (connection_says_upgrade && !h2c).then(|| upgrade.clone())
}

/// Forward an upgrade request to a backend of `upstream` and, on 101, tunnel the two connections.
/// A backend that cannot be connected to is passed over for another, as on the other paths (the
/// request has not left yet); once sent, an upgrade is never repeated.
pub(crate) async fn forward(
    mut req: Request<ClientBody>,
    protocol: HeaderValue,
    Routed { client, upstream, state, key, metrics, request_id }: Routed<'_>,
    explain: bool,
    tally: &mut Tally,
) -> Response<ProxyBody> {
    let timeouts = upstream.config.timeouts;
    // Not replayable: after the switch the request cannot be taken back.
    let mut ctx = Attempts::new(upstream, state, metrics, explain, false).tallied(tally);
    let client_upgrade = crate::http::h1::server::on_upgrade(&mut req);
    let (mut upstream_req, mut headers) = upstream_request(&mut req, protocol, client);

    // TCP, and TLS to an upstream with `[upstream.tls]`: the tunnel then carries the WebSocket inside
    // the backend's TLS session. A connect failure (timeout included, as on the HTTP/1.1 path) tries
    // another backend.
    let (picked, stream) = loop {
        let picked = match ctx.next(key, request_id) {
            Ok(picked) => picked,
            Err(answer) => return *answer,
        };
        let addr = ctx.addr(picked.index);
        match backend_tls::connect(addr, timeouts.connect, upstream.tls.as_deref()).await {
            Ok(stream) => break (picked, stream),
            Err(e) => {
                if let Some(answer) =
                    ctx.failed(picked, FailureKind::Connect, &e.to_string(), true, request_id)
                {
                    return answer;
                }
            }
        }
    };
    let addr = ctx.addr(picked.index).to_string();
    if !headers.contains_key(header::HOST)
        && let Ok(v) = HeaderValue::from_str(&addr)
    {
        headers.insert(header::HOST, v);
    }
    *upstream_req.headers_mut() = headers;

    let (kind, why) = match send(stream, upstream_req, timeouts.response_headers).await {
        Ok(response) => {
            // Metrics, latency and outlier detection as for any answer; an upgrade is never retried.
            ctx.answered(&picked, response.status());
            if response.status() != StatusCode::SWITCHING_PROTOCOLS {
                return refused(response, &mut ctx).await;
            }
            let names = (upstream.name.clone(), addr);
            return switch(response, picked.guard, client_upgrade, names, &mut ctx, request_id);
        }
        Err(failure) => failure,
    };
    ctx.failed(picked, kind, &why, false, request_id).unwrap_or_else(|| ctx.internal(request_id))
}

/// The request as the backend sees it: forwarding headers, origin-form target, and the two hop-by-hop
/// headers that ask for the switch put back after the strip. The headers come apart from the request:
/// `Host` is added once the backend is known.
fn upstream_request(
    req: &mut Request<ClientBody>,
    protocol: HeaderValue,
    client: &ClientInfo,
) -> (Request<Empty<Bytes>>, HeaderMap) {
    let mut upstream_req = Request::new(Empty::<Bytes>::new());
    *upstream_req.method_mut() = req.method().clone();
    *upstream_req.uri_mut() = req
        .uri()
        .path_and_query()
        .and_then(|pq| Uri::try_from(pq.as_str()).ok())
        .unwrap_or_else(|| Uri::from_static("/"));
    let mut headers = std::mem::take(req.headers_mut());
    crate::http::forwarding::add_forwarding_headers(&mut headers, client);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
    (upstream_req, headers)
}

/// Send the request on a fresh HTTP/1.1 connection and wait for the response head; on failure, what
/// kind it was and why.
async fn send(
    stream: BackendStream,
    upstream_req: Request<Empty<Bytes>>,
    response_headers: std::time::Duration,
) -> Result<Response<Incoming>, (FailureKind, String)> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| (FailureKind::Connect, e.to_string()))?;
    // `with_upgrades`: the connection task hands the socket over after a 101 instead of closing it.
    tokio::task::spawn_local(async move {
        let _ = conn.with_upgrades().await;
    });
    match tokio::time::timeout(response_headers, sender.send_request(upstream_req)).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(e)) => Err((FailureKind::Broken, e.to_string())),
        Err(_) => {
            let took = crate::config::format_duration(response_headers);
            Err((FailureKind::Timeout, format!("response_headers timeout ({took})")))
        }
    }
}

/// The backend refused the switch: pass its answer on (its body is short) and stay HTTP.
async fn refused(response: Response<Incoming>, ctx: &mut Attempts<'_>) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    crate::http::forwarding::strip_hop_by_hop(&mut parts.headers);
    let bytes = match Limited::new(body, MAX_REFUSAL_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    ctx.explain_headers(parts.status, &mut parts.headers);
    Response::from_parts(parts, ProxyBody::full(bytes))
}

/// The backend switched: tunnel the two connections once both upgrades complete, holding the backend's
/// in-flight guard for the life of the tunnel, and answer the client's request with the 101.
fn switch(
    mut response: Response<Incoming>,
    guard: InFlightGuard,
    client_upgrade: oneshot::Receiver<Upgraded>,
    (upstream_name, addr): (String, String),
    ctx: &mut Attempts<'_>,
    request_id: &HeaderValue,
) -> Response<ProxyBody> {
    let backend_upgrade = hyper::upgrade::on(&mut response);
    tokio::task::spawn_local(async move {
        // Held for the life of the tunnel: the backend is busy until the WebSocket closes.
        let _guard = guard;
        let (client_io, backend_io) = match tokio::join!(client_upgrade, backend_upgrade) {
            (Ok(c), Ok(b)) => (c, b),
            (c, b) => {
                tracing::debug!(upstream = %upstream_name, backend = %addr, client = ?c.err(), backend_err = ?b.err(), "upgrade did not complete");
                return;
            }
        };
        let (mut c, mut b) = (client_io, TokioIo::new(backend_io));
        if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut b).await {
            tracing::debug!(upstream = %upstream_name, backend = %addr, "tunnel closed: {e}");
        }
    });
    // The 101 goes to the client with the backend's headers (Upgrade, Connection, Sec-WebSocket-Accept
    // and the like): here they describe the switch, not the connection, so they stay.
    let (mut parts, _) = response.into_parts();
    parts.headers.insert(X_REQUEST_ID.clone(), request_id.clone());
    ctx.explain_headers(parts.status, &mut parts.headers);
    Response::from_parts(parts, ProxyBody::full(Bytes::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &'static str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap_or(header::ACCEPT),
                HeaderValue::from_static(v),
            );
        }
        h
    }

    #[test]
    fn only_real_upgrades_other_than_h2c_are_tunnelled() {
        let ws = headers(&[("connection", "keep-alive, Upgrade"), ("upgrade", "websocket")]);
        assert_eq!(wanted(&ws, Version::HTTP_11), Some(HeaderValue::from_static("websocket")));
        assert_eq!(wanted(&ws, Version::HTTP_10), None, "HTTP/1.0 cannot upgrade");
        assert_eq!(
            wanted(&headers(&[("upgrade", "websocket")]), Version::HTTP_11),
            None,
            "Connection must say so"
        );
        let h2c = headers(&[("connection", "upgrade, http2-settings"), ("upgrade", "h2c")]);
        assert_eq!(wanted(&h2c, Version::HTTP_11), None, "h2c smuggling");
    }
}
