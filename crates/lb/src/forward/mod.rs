//! The forwarding function: one client request in, one response out, through the best backend we can
//! find.
//!
//! # What happens to a request
//!
//! ```text
//! route (host, path) -> upstream
//!   load the upstream's state (one atomic load)
//!   request id, hash key, hop-by-hop headers out, which forwarding headers to write
//!   attempt 1..=attempts:
//!     pick (excluding backends already tried or over their in-flight cap)
//!     in-flight guard on, connection from this worker's pool (or connect)
//!     send (the head, with the forwarding headers written after the client's);
//!       wait for the response headers (per-attempt and whole-request timeouts)
//!     failure or 502/503/504 -> metrics, outlier detection, maybe retry elsewhere (budget permitting)
//!   response: its fields kept as lines (hop-by-hop ones left out by the parser, `h1::Fields`),
//!             request id and explain headers added, body streamed
//! ```
//!
//! # Decisions worth knowing
//!
//! - **The in-flight guard lives in the response body** ([`ProxyBody`]), so a backend streaming a long
//!   response counts as busy until the last byte (or until the client goes away and hyper drops the
//!   body). Least-connections would be blind to long downloads otherwise.
//! - **Latency feeds the EWMA when the response headers arrive**, not at body end: time to first byte
//!   is the backend's responsiveness; the body's duration depends on its size and on how fast *the
//!   client* reads, which says nothing about the backend. Finagle and Linkerd measure the same way.
//! - **The connection goes back to the pool when the body ends**, from inside the body wrapper: HTTP/1.1
//!   cannot send the next request on it before then.
//! - **A stale pooled connection is not a failure.** If the backend closed an idle connection just as we
//!   picked it and not a byte of the request was written, the request is intact and we resend it on
//!   another connection to the same backend, without counting an attempt.
//! - **The forwarding headers are bytes, not map entries.** `X-Request-Id`, `X-Forwarded-For`,
//!   `-Proto` and `-Host` would each be a hashed insert into the request's `HeaderMap`, only for the
//!   map to be written out once and dropped; on the pooled HTTP/1 path [`crate::http::h1::client::Forwarding`] writes
//!   them straight into the upstream head, and `prepare` only learns, in one pass of comparisons,
//!   whether the client sent any it must leave out. The request is not changed by sending, so a retry
//!   writes the same head (with its own `Host` for an HTTP/1.0 request that had none). The HTTP/2 and
//!   upgrade paths hand a map to hyper, so they still add them there (`add_forwarding_headers`).
//! - **The upstream leg runs in this task** ([`crate::http::h1::client`]): the request is written and the response
//!   read by the same task that serves the client, with no channel or task hop in between.
//! - **A backend's response head is not rebuilt.** The HTTP/1 client parses it for framing and leaves
//!   the message's fields as `name: value` lines in the response body; the HTTP/1 server writes them
//!   out as they are, after the status line, and only what the proxy adds (the request id, the
//!   explain headers) goes through a `HeaderMap`. nginx and HAProxy work the same way: they never
//!   build a map of a response's fields. For an HTTP/2 client the lines become a map
//!   ([`ProxyBody::fields_into`]).
//! - **Errors are answers**: no route 404, no selectable backend 503, connect failure or broken
//!   connection 502, timeout 504, each with a one-line plain-text body naming the upstream or backend.
//!   Nothing on this path unwraps; a bug becomes a 502, not a dead worker.
//!
//! # Layer
//!
//! The request path. [`Worker::handle`] ([`mod@self`]) prepares and routes a request; [`attempts`] is the
//! retry loop's bookkeeping; [`validate`] refuses what must not be forwarded; [`response`] is the body the
//! client receives; [`h2`] and [`upgrade`] are the paths that do not use the pooled HTTP/1.1 client. May
//! import every layer below: [`crate::config`], [`crate::net`], [`crate::http`], [`crate::client`],
//! [`crate::upstream`], [`crate::observe`], [`crate::control`] (the live state, outlier detection).

pub(crate) mod attempts;
pub(crate) mod h2;
pub(crate) mod response;
pub(crate) mod upgrade;
pub(crate) mod validate;

pub use response::ProxyBody;

use std::cell::Cell;
use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use lb_algorithms::{HashKey, InFlightGuard, KeySource, Nanos};
use tokio::time::Instant;

use crate::client::pool::{self, Pool};
use crate::control::{Settings, Shared};
use crate::forward::attempts::{Answered, Attempts, Tally};
use crate::forward::response::ReturnTo;
use crate::http::forwarding::{
    X_LB_EXPLAIN, X_REQUEST_ID, client_request_id, is_field_value, prepare_forwarding,
};
use crate::http::h1::client::{self as h1, ResponseBody, UpstreamBody};
use crate::http::{ClientBody, ClientInfo};
use crate::observe::access_log::{AccessLogEntry, access_log};
use crate::observe::metrics::Metrics;
use crate::upstream::retry::is_idempotent_without_body;
use crate::upstream::stats::FailureKind;
use crate::upstream::{Upstream, UpstreamState};

/// One worker thread's forwarding state: the shared parts plus its own connection pool. Lives in an
/// `Rc` because it never leaves its thread (see `server.rs`).
#[derive(Debug)]
pub struct Worker {
    shared: Arc<Shared>,
    pool: Pool,
    /// Request ids are `{worker seed}-{counter}`: unique without a random draw or a shared counter.
    id_prefix: u32,
    next_id: Cell<u64>,
}

impl Worker {
    /// A worker with an empty pool. `id_prefix` makes its request ids distinct from other workers'.
    pub fn new(shared: Arc<Shared>, id_prefix: u32) -> Self {
        Worker { shared, pool: Pool::new(), id_prefix, next_id: Cell::new(0) }
    }

    /// The worker's connection pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// What the proxy knows about a client connection from `peer`, once per connection: its address,
    /// how it reached us, and whether it is a trusted proxy (`[server] trusted_proxies`).
    pub fn client_info(&self, peer: std::net::SocketAddr, https: bool) -> ClientInfo {
        let info = if https { ClientInfo::https(peer) } else { ClientInfo::new(peer) };
        ClientInfo { trusted: self.shared.trusts(peer.ip()), ..info }
    }

    fn new_request_id(&self) -> HeaderValue {
        let n = self.next_id.get().wrapping_add(1);
        self.next_id.set(n);
        // Hex digits into a stack buffer: one allocation (the header's own bytes), not three.
        let mut buf = [0u8; 8 + 1 + 16];
        let hex = |out: &mut [u8], mut v: u64| {
            for b in out.iter_mut().rev() {
                *b = b"0123456789abcdef"[(v & 15) as usize];
                v >>= 4;
            }
        };
        hex(&mut buf[..8], u64::from(self.id_prefix));
        buf[8] = b'-';
        hex(&mut buf[9..], n);
        HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("lb"))
    }

    /// Forward one request. Never fails: every problem becomes a status code and a short body.
    ///
    /// The request is read (validated, routed, its forwarding headers decided) *now*, when this is
    /// called; the future returned only sends it. That split keeps the future small: it holds the one
    /// prepared request and what the attempts need, not the client's request beside what was made
    /// from it, and each request's future is moved at least once (`h1_server.rs` boxes it), so its
    /// size is paid in copies on every request.
    pub fn handle(
        self: Rc<Self>,
        req: Request<ClientBody>,
        client: Rc<ClientInfo>,
    ) -> impl Future<Output = Result<Response<ProxyBody>, Infallible>> {
        let settings = self.shared.settings();
        let log = settings.access_log.then(|| {
            Box::new(LogStart {
                time: std::time::SystemTime::now(),
                started: Instant::now(),
                method: req.method().clone(),
                path: req.uri().path().to_string(),
            })
        });
        let mut step = self.prepare(req, &client, &settings);
        async move {
            let mut outcome = Forwarded::default();
            let logging = log.is_some();
            // Matched by reference: moving the request out of `step` would give it a second slot in
            // this future.
            let response = match &mut step {
                Step::Answer(response) => {
                    std::mem::replace(&mut **response, Response::new(ProxyBody::empty()))
                }
                Step::Forward(prepared) => self.forward(prepared, &client, &mut outcome, logging).await,
                Step::Elsewhere(diverted) => {
                    let Diverted { routing, request, via } = &mut **diverted;
                    let request = std::mem::replace(request, Request::new(ClientBody::Empty));
                    let mut tally = Tally::default();
                    let metrics = &self.shared.metrics;
                    let Routing { request_id, upstream, state, key, explain } = &*routing;
                    let routed = Routed { client: &client, upstream, state, key: *key, metrics, request_id };
                    let response = forward_elsewhere(via, request, routed, *explain, &mut tally).await;
                    if logging {
                        outcome.upstream = Some(upstream.name.clone());
                        outcome.attempts = tally.attempts;
                        outcome.backend =
                            tally.last_backend.and_then(|i| state.set.get(i)).map(|b| b.addr().to_string());
                    }
                    response
                }
            };
            if let Some(log) = log {
                // The id the backend was sent (a backend's own answer may carry its id only in the
                // fields the body holds), else the one on an answer made here.
                let request_id = match &step {
                    Step::Forward(p) => Some(&p.routing.request_id),
                    Step::Elsewhere(d) => Some(&d.routing.request_id),
                    Step::Answer(_) => None,
                };
                let request_id = request_id
                    .or_else(|| response.headers().get(&X_REQUEST_ID))
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                access_log(&AccessLogEntry {
                    time: log.time,
                    client: Some(client.addr),
                    method: log.method.as_str(),
                    path: &log.path,
                    upstream: outcome.upstream.as_deref(),
                    backend: outcome.backend.as_deref(),
                    status: response.status().as_u16(),
                    duration: log.started.elapsed(),
                    attempts: outcome.attempts,
                    request_id,
                });
            }
            Ok(response)
        }
    }

    /// Everything about a request that needs no waiting: the request id, the checks, the route, the
    /// hash key, the forwarding headers. What comes out is an answer already (a refused or unroutable
    /// request), or a request ready for the attempts.
    fn prepare(&self, req: Request<ClientBody>, client: &ClientInfo, settings: &Settings) -> Step {
        let (mut parts, body) = req.into_parts();
        // A trusted proxy's id goes on as it is; anyone else's is replaced (`client_request_id`). Ours is
        // not put into the map here: the pooled path writes it with the other forwarding fields (see
        // `h1::Forwarding`), and the other paths have it inserted below.
        let client_id = client_request_id(&mut parts.headers, client.trusted);
        let mut add_id = client_id.is_none();
        let request_id = client_id.unwrap_or_else(|| self.new_request_id());
        if let Err((status, msg)) = crate::forward::validate::check(
            &mut parts,
            &self.shared.upstreams,
            settings.limits.max_body_bytes,
        ) {
            return Step::Answer(Box::new(error_response(status, msg, &request_id)));
        }
        let host_header = parts.headers.get(header::HOST);
        // Known here, so an attempt need not look again before adding one (HTTP/1.0 may lack it).
        let has_host = host_header.is_some();
        let host =
            host_header.and_then(|h| h.to_str().ok()).or_else(|| parts.uri.authority().map(|a| a.as_str()));
        let Some(upstream) = self.shared.upstreams.route(host, parts.uri.path()) else {
            let msg = format!("no route for host {} path {}\n", host.unwrap_or("(none)"), parts.uri.path());
            return Step::Answer(Box::new(error_response(StatusCode::NOT_FOUND, msg, &request_id)));
        };
        let state = upstream.load();
        let config = &upstream.config;

        // A scan, not a lookup: a request has a handful of fields, and comparing names costs less than
        // hashing one.
        let explain = settings.explain
            && parts.headers.iter().any(|(name, value)| *name == X_LB_EXPLAIN && value == "1");
        let key = match &config.hash_key {
            Some(k) if config.algorithm.is_hashing() => {
                // A key may be the request id, which the request carries whoever made it.
                if add_id && matches!(k, HashKey::Header(name) if name == X_REQUEST_ID.as_str()) {
                    parts.headers.insert(X_REQUEST_ID.clone(), request_id.clone());
                    add_id = false;
                }
                k.hash(&RequestKeys { headers: &parts.headers, uri: &parts.uri, client: client.addr.ip() })
            }
            _ => None,
        };
        // The HTTP/2 and upgrade paths run their own attempt loops and add their own headers, to the
        // map (`add_forwarding_headers`), the request id with them.
        let via = match crate::forward::upgrade::wanted(&parts.headers, parts.version) {
            Some(protocol) => Some(Via::Upgrade(protocol)),
            None => upstream.h2.clone().map(Via::H2),
        };
        let routing = Routing { request_id, upstream, state, key, explain };
        if let Some(via) = via {
            if add_id {
                parts.headers.insert(X_REQUEST_ID.clone(), routing.request_id.clone());
            }
            let request = Request::from_parts(parts, body);
            return Step::Elsewhere(Box::new(Diverted { routing, request, via }));
        }
        let replaces = prepare_forwarding(&mut parts.headers, client.trusted);
        if parts.uri.scheme().is_some() || parts.uri.path_and_query().is_none() {
            // Absolute-form (`GET http://host/path`) from a client that thinks we are a forward proxy:
            // backends expect origin-form.
            let pq = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
            parts.uri = Uri::try_from(pq).unwrap_or_else(|_| Uri::from_static("/"));
        }
        // HTTP/1.1 upstream even for HTTP/1.0 clients: keep-alive to backends is the point of a pool.
        parts.version = Version::HTTP_11;

        let has_body = !body.is_end_stream();
        let replayable = is_idempotent_without_body(&parts.method, has_body);
        // The request stays in one place across attempts: sending only takes its body, so a retry
        // resends the same head (no copy of the headers per request just in case a retry happens).
        let body: UpstreamBody = has_body.then_some(body);
        let request = Request::from_parts(parts, body);
        Step::Forward(Prepared { routing, request, has_host, add_id, replaces, replayable })
    }

    /// The attempts for a prepared request, over this worker's pooled HTTP/1 connections.
    async fn forward(
        self: &Rc<Self>,
        prepared: &mut Prepared,
        client: &ClientInfo,
        outcome: &mut Forwarded,
        logging: bool,
    ) -> Response<ProxyBody> {
        let Prepared { routing, request, has_host, add_id, replaces, replayable } = prepared;
        let Routing { request_id, upstream, state, key, explain } = &*routing;
        let config = &upstream.config;
        upstream.budget.deposit();
        let deadline = Instant::now() + config.timeouts.request;
        let mut ctx = Attempts::new(upstream, state, &self.shared.metrics, *explain, *replayable);
        let response = loop {
            let picked = match ctx.next(*key, request_id) {
                Ok(picked) => picked,
                Err(answer) => break *answer,
            };
            let addr = ctx.addr(picked.index);
            let forwarding = h1::Forwarding {
                client_ip: &client.xff,
                proto: &client.proto,
                request_id: add_id.then_some(request_id),
                // HTTP/1.1 requires a Host; an HTTP/1.0 client may not have sent one. Ours names this
                // backend, so each attempt writes its own (the request itself is not changed).
                host: (!*has_host && is_field_value(addr)).then_some(addr),
                replaces: *replaces,
            };
            let result =
                self.attempt(request, &forwarding, addr, upstream, deadline, (picked.at, picked.now)).await;
            match result {
                AttemptResult::Response(response) => match ctx.answered(&picked, response.status()) {
                    Answered::Retry => continue,
                    Answered::Deliver(done) => {
                        let expires = done.saturating_add(config.timeouts.idle.as_nanos() as u64);
                        break self.respond(response, picked.guard, expires, request_id, &mut ctx);
                    }
                },
                AttemptResult::ClientFault(message) => {
                    drop(picked);
                    break ctx.client_fault(&message, request_id);
                }
                AttemptResult::Failed { kind, message, unsent } => {
                    match ctx.failed(picked, kind, &message, unsent, request_id) {
                        None => continue,
                        Some(answer) => break answer,
                    }
                }
            }
        };
        if logging {
            outcome.upstream = Some(upstream.name.clone());
            outcome.attempts = ctx.attempts;
            outcome.backend = ctx.last_backend.and_then(|i| state.set.get(i)).map(|b| b.addr().to_string());
        }
        response
    }

    /// One attempt on one backend: a connection (pooled or new), the request, the response headers.
    /// The request's head is left in place for a retry; its body is taken once a byte was sent.
    async fn attempt(
        &self,
        request: &mut Request<UpstreamBody>,
        forwarding: &h1::Forwarding<'_>,
        addr: &str,
        upstream: &Upstream,
        deadline: Instant,
        (at, now): (Instant, Nanos),
    ) -> AttemptResult {
        let timeouts = &upstream.config.timeouts;
        // The pick's clock reading, microseconds old, for the first connection; a fresh one after a
        // connect (which can take a while).
        let mut sent_at = Some(at);
        // Idle pooled connections first; each one that turns out dead costs nothing but a loop turn.
        loop {
            // `now` is the pick's time, microseconds old: good enough for an idle deadline of seconds.
            let tls = upstream.tls.as_deref();
            let pooled = self.pool.take(addr, tls.map_or(0, |t| t.pool_id()), now);
            let reused = pooled.is_some();
            let conn = match pooled {
                Some(c) => c,
                None => {
                    sent_at = None;
                    let now = Instant::now();
                    let budget = deadline.min(now + timeouts.connect).saturating_duration_since(now);
                    match pool::connect(addr, budget, tls).await {
                        Ok(c) => c,
                        Err(e) => {
                            return AttemptResult::Failed {
                                kind: FailureKind::Connect,
                                message: e.to_string(),
                                unsent: true,
                            };
                        }
                    }
                }
            };
            let per_attempt = sent_at.take().unwrap_or_else(Instant::now) + timeouts.response_headers;
            let (limit, which) = if deadline < per_attempt {
                (deadline, ("request", timeouts.request))
            } else {
                (per_attempt, ("response_headers", timeouts.response_headers))
            };
            let timers = h1::Timers { head: limit, send: timeouts.send, read: timeouts.read };
            match h1::send(conn, request, Some(forwarding), timers).await {
                Ok(response) => return AttemptResult::Response(response),
                Err(h1::SendError { error: h1::Error::Timeout(timer), .. }) => {
                    let which = if timer == h1::Timer::Send { ("send", timeouts.send) } else { which };
                    return AttemptResult::Failed {
                        kind: FailureKind::Timeout,
                        message: format!("{} timeout ({})", which.0, crate::config::format_duration(which.1)),
                        unsent: false,
                    };
                }
                // Not a byte written: a pooled connection that died while idle. Resend on another.
                Err(e) if !e.sent && reused => continue,
                // The client's own body failed while we streamed it (malformed chunking, the client
                // hung up): the client's fault, not the backend's.
                Err(h1::SendError { error: h1::Error::ClientBody(e), .. }) => {
                    return AttemptResult::ClientFault(e.to_string());
                }
                Err(e) => {
                    let kind = if e.sent { FailureKind::Broken } else { FailureKind::Connect };
                    return AttemptResult::Failed { kind, message: e.error.to_string(), unsent: !e.sent };
                }
            }
        }
    }

    /// Turn a backend response into the client's response. Its header fields stay in the body as
    /// the lines the client will get (see `h1::Fields`); the map gets only what the proxy adds.
    fn respond(
        self: &Rc<Self>,
        response: Response<ResponseBody>,
        guard: InFlightGuard,
        expires: Nanos,
        request_id: &HeaderValue,
        ctx: &mut Attempts<'_>,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = response.into_parts();
        let request_id = (!body.fields().has_request_id).then(|| request_id.clone());
        ctx.explain_headers(parts.status, &mut parts.headers);
        let ret = ReturnTo { worker: Rc::clone(self), expires };
        Response::from_parts(parts, ProxyBody::upstream(body, guard, ret, request_id))
    }
}

/// What [`Worker::prepare`] made of a request.
// The common variant is the large one, and it is never moved after it is made.
#[allow(clippy::large_enum_variant)]
enum Step {
    /// Answered without a backend: refused, or no route (boxed: rare, and a response is larger than a
    /// prepared request).
    Answer(Box<Response<ProxyBody>>),
    /// To this worker's pooled HTTP/1 connections (the common case).
    Forward(Prepared),
    /// To one of the [`Via`] paths (boxed: rare, and it would make every `Step` larger).
    Elsewhere(Box<Diverted>),
}

/// Where a request goes and what its attempts need to know, whichever path sends it.
struct Routing {
    request_id: HeaderValue,
    upstream: Arc<Upstream>,
    state: Arc<UpstreamState>,
    /// The hash key, for hashing algorithms configured with one.
    key: Option<u64>,
    /// The client asked for the `X-Lb-*` headers, and the proxy allows it.
    explain: bool,
}

/// A request for the pooled HTTP/1 path: hop-by-hop fields removed, and what each attempt needs to
/// write the forwarding fields ([`h1::Forwarding`]), which are not in its map.
struct Prepared {
    routing: Routing,
    request: Request<UpstreamBody>,
    /// The client sent a `Host` (an HTTP/1.0 client may not have).
    has_host: bool,
    /// The request id is ours, to be written (the client sent none).
    add_id: bool,
    /// The client may have sent fields ours replace ([`h1::Forwarding::replaces`]).
    replaces: bool,
    /// May go to another backend after one received it (idempotent, no body).
    replayable: bool,
}

/// A request for one of the [`Via`] paths, as the client sent it.
struct Diverted {
    routing: Routing,
    request: Request<ClientBody>,
    via: Via,
}

/// The paths that do not go through this worker's pooled HTTP/1 client.
// Lives in a `Diverted`, which is boxed already.
#[allow(clippy::large_enum_variant)]
enum Via {
    /// A WebSocket (or other `Upgrade`) tunnel for this protocol.
    Upgrade(HeaderValue),
    /// An upstream whose backends speak HTTP/2.
    H2(crate::client::h2::H2Client),
}

/// A request's routing, as the [`Via`] paths are given it.
#[derive(Clone, Copy)]
pub(crate) struct Routed<'a> {
    /// The client connection the request came on.
    pub(crate) client: &'a ClientInfo,
    /// The upstream the request was routed to, and its state when the request started.
    pub(crate) upstream: &'a Upstream,
    pub(crate) state: &'a UpstreamState,
    /// The hash key, for the hashing algorithms.
    pub(crate) key: Option<u64>,
    pub(crate) metrics: &'a Metrics,
    pub(crate) request_id: &'a HeaderValue,
}

/// Forward on one of the [`Via`] paths. Boxed, in a plain function: they are rare, and their
/// futures inlined into `handle` would make every request's future larger, and every move of it
/// slower (a future built in an `async fn` takes room in that function's state even when boxed at once).
fn forward_elsewhere<'a>(
    via: &'a Via,
    req: Request<ClientBody>,
    routed: Routed<'a>,
    explain: bool,
    tally: &'a mut Tally,
) -> Pin<Box<dyn Future<Output = Response<ProxyBody>> + 'a>> {
    match via {
        Via::Upgrade(protocol) => {
            Box::pin(crate::forward::upgrade::forward(req, protocol.clone(), routed, explain, tally))
        }
        Via::H2(h2) => Box::pin(crate::forward::h2::forward(h2, req, routed, explain, tally)),
    }
}

/// When and what, for the access log (boxed when logging is on, absent otherwise).
struct LogStart {
    time: std::time::SystemTime,
    started: Instant,
    method: http::Method,
    path: String,
}

/// What the access log wants to know about a forwarded request.
#[derive(Debug, Default)]
struct Forwarded {
    upstream: Option<String>,
    backend: Option<String>,
    attempts: u32,
}

// Returned once per attempt and matched at once; boxing the response would cost an allocation each time.
#[allow(clippy::large_enum_variant)]
enum AttemptResult {
    Response(Response<ResponseBody>),
    /// The request itself was bad (its body broke off): answer 400, blame no backend, never retry.
    ClientFault(String),
    Failed {
        kind: FailureKind,
        message: String,
        /// Not a byte was sent: the request, body and all, is intact.
        unsent: bool,
    },
}

/// The body of the 503 for an upstream with nothing to pick; every forwarding path words it the same.
pub(crate) fn no_backend_message(upstream: &str) -> String {
    format!("no healthy backend for upstream {upstream}\n")
}

/// A plain-text error answer.
pub fn error_response(status: StatusCode, body: String, request_id: &HeaderValue) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(X_REQUEST_ID.clone(), request_id.clone());
    response
}

/// The request as the hash-key extractors see it (public so the fuzz target extracts keys through
/// exactly this view).
#[derive(Debug, Clone, Copy)]
pub struct RequestKeys<'a> {
    /// The request's header fields.
    pub headers: &'a HeaderMap,
    /// Its target: the path and query keys read it.
    pub uri: &'a Uri,
    /// The client's address, for the `ip` key.
    pub client: IpAddr,
}

impl KeySource for RequestKeys<'_> {
    fn client_ip(&self) -> Option<IpAddr> {
        Some(self.client)
    }
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name).map(|v| v.as_bytes())
    }
    fn path(&self) -> &str {
        self.uri.path()
    }
    fn query(&self) -> Option<&str> {
        self.uri.query()
    }
}
