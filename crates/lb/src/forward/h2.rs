//! Forwarding to a backend of an HTTP/2 upstream (through [`crate::client::h2::H2Client`]), with the same
//! retry rules as the HTTP/1.1 path.

use std::sync::{Arc, Mutex};

use http::{HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{Either, Empty};
use lb_algorithms::InFlightGuard;
use tokio::time::Instant;

use crate::client::h2::{H2Body, H2Client, Reclaimable};
use crate::forward::attempts::{Answered, Attempts, Tally};
use crate::forward::{ProxyBody, Routed};
use crate::http::ClientBody;
use crate::http::forwarding::X_REQUEST_ID;
use crate::upstream::retry::is_idempotent_without_body;
use crate::upstream::stats::FailureKind;

/// Send a request to a backend of an HTTP/2 upstream, retrying on another backend under the same rules
/// as the HTTP/1.1 path (see `attempts.rs`).
pub(crate) async fn forward(
    h2: &H2Client,
    req: Request<ClientBody>,
    Routed { client, upstream, state, key, metrics, request_id }: Routed<'_>,
    explain: bool,
    tally: &mut Tally,
) -> Response<ProxyBody> {
    let (mut parts, body) = req.into_parts();
    crate::http::forwarding::add_forwarding_headers(&mut parts.headers, client);
    let pq = parts.uri.path_and_query().map_or("/", |pq| pq.as_str()).to_string();
    let has_body = !http_body::Body::is_end_stream(&body);
    let replayable = is_idempotent_without_body(&parts.method, has_body);
    // The body waits here until an attempt takes it; one that failed before sending gives it back.
    let mut body = has_body.then_some(body);
    let timeouts = upstream.config.timeouts;
    upstream.budget.deposit();
    let deadline = Instant::now() + timeouts.request;
    let mut ctx = Attempts::new(upstream, state, metrics, explain, replayable).tallied(tally);
    loop {
        let picked = match ctx.next(key, request_id) {
            Ok(picked) => picked,
            Err(answer) => return *answer,
        };
        let addr = ctx.addr(picked.index);
        let Ok(uri) = Uri::try_from(format!("{}://{addr}{pq}", h2.scheme)) else {
            drop(picked);
            return ctx.error(StatusCode::BAD_GATEWAY, format!("backend {addr}: invalid URI\n"), request_id);
        };
        // hyper's client consumes the request, so an attempt that may be followed by another gets its
        // own copy of the head; the last possible one takes the original.
        let home = Arc::new(Mutex::new(None));
        let sent_body: H2Body = match body.take() {
            Some(b) => Either::Left(Reclaimable::new(b, Arc::clone(&home))),
            None => Either::Right(Empty::new()),
        };
        let mut request = Request::new(sent_body);
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = uri;
        *request.headers_mut() =
            if ctx.can_retry() { parts.headers.clone() } else { std::mem::take(&mut parts.headers) };
        let per_attempt = Instant::now() + timeouts.response_headers;
        let (limit, which) = if deadline < per_attempt {
            (deadline, ("request", timeouts.request))
        } else {
            (per_attempt, ("response_headers", timeouts.response_headers))
        };
        let sent = tokio::time::timeout_at(limit, h2.client.request(request)).await;
        // An attempt that never touched the body left it in `home` (see `Reclaimable`).
        body = home.lock().unwrap_or_else(|p| p.into_inner()).take();
        let (kind, message, unsent) = match sent {
            Ok(Ok(response)) => match ctx.answered(&picked, response.status()) {
                Answered::Retry => continue,
                Answered::Deliver(_) => {
                    let read = timeouts.read;
                    return deliver(response, picked.guard, &mut ctx, request_id, read);
                }
            },
            Ok(Err(e)) => {
                let why = std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
                // A connect error (refused, timed out, TLS handshake) means the request never left;
                // with a body, only if the body came back untouched.
                let unsent = e.is_connect() && (body.is_some() || !has_body);
                let kind = if e.is_connect() { FailureKind::Connect } else { FailureKind::Broken };
                (kind, why, unsent)
            }
            Err(_) => {
                let took = crate::config::format_duration(which.1);
                (FailureKind::Timeout, format!("{} timeout ({took})", which.0), false)
            }
        };
        if let Some(answer) = ctx.failed(picked, kind, &message, unsent, request_id) {
            return answer;
        }
    }
}

/// The backend's answer as the client gets it: hop-by-hop fields out, the request id and the explain
/// headers in, the body streamed with the backend's in-flight guard.
fn deliver(
    response: Response<hyper::body::Incoming>,
    guard: InFlightGuard,
    ctx: &mut Attempts<'_>,
    request_id: &HeaderValue,
    read: std::time::Duration,
) -> Response<ProxyBody> {
    let (mut head, body) = response.into_parts();
    crate::http::forwarding::strip_hop_by_hop(&mut head.headers);
    head.version = http::Version::HTTP_11;
    if !head.headers.contains_key(&X_REQUEST_ID) {
        head.headers.insert(X_REQUEST_ID.clone(), request_id.clone());
    }
    ctx.explain_headers(head.status, &mut head.headers);
    Response::from_parts(head, ProxyBody::streamed(body, guard, read))
}
