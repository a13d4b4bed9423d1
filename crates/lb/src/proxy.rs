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
//!   map to be written out once and dropped; on the pooled HTTP/1 path [`crate::h1::Forwarding`] writes
//!   them straight into the upstream head, and `prepare` only learns, in one pass of comparisons,
//!   whether the client sent any it must leave out. The request is not changed by sending, so a retry
//!   writes the same head (with its own `Host` for an HTTP/1.0 request that had none). The HTTP/2 and
//!   upgrade paths hand a map to hyper, so they still add them there (`add_forwarding_headers`).
//! - **The upstream leg runs in this task** ([`crate::h1`]): the request is written and the response
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

use std::cell::Cell;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use lb_algorithms::{HashKey, InFlightGuard, KeySource, Nanos};
use tokio::time::Instant;

use crate::access_log::{AccessLogEntry, access_log};
use crate::attempts::{Answered, Attempts, Tally};
use crate::h1::{self, ResponseBody, UpstreamBody};
use crate::metrics::{FailureKind, Metrics};
use crate::pool::{self, Pool};
use crate::retry::is_idempotent_without_body;
use crate::upstream::{Upstream, UpstreamState, Upstreams};

/// A client's request body, whichever server side read the request head.
#[derive(Debug)]
pub enum ClientBody {
    /// No body (a GET, or `Content-Length: 0`).
    Empty,
    /// Read by this proxy's HTTP/1 server (`h1_server.rs`) as the forwarding side asks for it.
    H1(crate::h1_server::RequestBody),
    /// Read by hyper's HTTP/2 server.
    H2(Incoming),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = h1::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::H1(b) => Pin::new(b).poll_frame(cx).map(|f| f.map(|r| r.map_err(Into::into))),
            ClientBody::H2(b) => Pin::new(b).poll_frame(cx).map(|f| f.map(|r| r.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::H1(b) => b.is_end_stream(),
            ClientBody::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::H1(b) => b.size_hint(),
            ClientBody::H2(b) => b.size_hint(),
        }
    }
}

/// What every worker shares: the routing table, the metrics, the switches.
#[derive(Debug)]
pub struct Shared {
    /// Every upstream group and the routes to them.
    pub upstreams: Arc<Upstreams>,
    /// The metrics every request updates.
    pub metrics: Arc<Metrics>,
    /// The switches and limits in force; a reload stores new ones. Read with [`Shared::settings`].
    pub settings: ArcSwap<Settings>,
}

impl Shared {
    /// The settings in force now, copied out: one `ArcSwap` load (no lock, no reference count
    /// touched), and the request keeps its copy even if a reload stores new ones meanwhile.
    pub fn settings(&self) -> Settings {
        **self.settings.load()
    }
}

/// What a reload may change in how requests and connections are handled (`[server]` and `[admin]`
/// switches). Read once per request and once per accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Honour `X-Lb-Explain: 1`.
    pub explain: bool,
    /// Log one JSON line per request.
    pub access_log: bool,
    /// `[server.limits]`: a connection keeps the ones in force when it was accepted (its timeouts and
    /// header size); the request checks in `validate.rs` read `max_body_bytes` per request.
    pub limits: crate::limits::ServerLimits,
    /// How long open connections get to finish on shutdown.
    pub shutdown_grace: Duration,
}

impl Settings {
    /// The settings a configuration asks for.
    pub fn of(config: &crate::Config) -> Settings {
        let admin = config.admin.as_ref();
        Settings {
            explain: admin.is_some_and(|a| a.explain),
            access_log: admin.is_some_and(|a| a.access_log),
            limits: config.server.limits,
            shutdown_grace: config.server.shutdown_grace,
        }
    }
}

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

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(crate) static X_LB_EXPLAIN: HeaderName = HeaderName::from_static("x-lb-explain");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The headers that describe one connection, not the message (RFC 9110 section 7.6.1, and the
/// obsolete `Keep-Alive` and `Proxy-Connection`): a proxy must not forward them, in either direction.
/// Response heads are checked against this list as bytes (`h1::is_hop_by_hop`); [`hop_by_hop`] is the
/// same list as `HeaderName`s, for maps.
pub(crate) const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

/// [`HOP_BY_HOP`] as `HeaderName`s: comparing one with a standard name is an enum compare.
fn hop_by_hop() -> [&'static HeaderName; 9] {
    [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
    ]
}

/// Is `name` one of [`hop_by_hop`]? Comparisons, no hashing: comparing a `HeaderName` with a standard
/// one is an enum compare. Inlined: it runs for every field of every request and response, and as a
/// call (which `[T]::contains` became once two functions used it) it cost more than the comparisons.
#[inline]
fn is_hop_by_hop(name: &HeaderName) -> bool {
    hop_by_hop().into_iter().any(|h| h == name)
}

/// Remove hop-by-hop headers, including any that `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names first (`contains_key` would hash each one): most messages carry none of
    // these (or only `Connection`).
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("").split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for n in named {
            headers.remove(n);
        }
    }
    for name in hop_by_hop() {
        headers.remove(name);
    }
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
                    let routed = (&*client, &**upstream, &**state, *key, &**metrics, request_id);
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
        // A client's id goes on as it is. Ours, when it sent none, is not put into the map here: the
        // pooled path writes it with the other forwarding fields (see `h1::Forwarding`), and the other
        // paths have it inserted below. A scan rather than a lookup: see the one for `X-Lb-Explain`.
        let client_id = parts.headers.iter().find(|(name, _)| **name == X_REQUEST_ID).map(|(_, v)| v.clone());
        let mut add_id = client_id.is_none();
        let request_id = client_id.unwrap_or_else(|| self.new_request_id());
        if let Err((status, msg)) =
            crate::validate::check(&mut parts, &self.shared.upstreams, settings.limits.max_body_bytes)
        {
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
        let via = match crate::upgrade::wanted(&parts.headers, parts.version) {
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
        let replaces = prepare_forwarding(&mut parts.headers, &mut add_id);
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
            match h1::send(conn, request, Some(forwarding), limit).await {
                Ok(response) => return AttemptResult::Response(response),
                Err(h1::SendError { error: h1::Error::Timeout, .. }) => {
                    return AttemptResult::Failed {
                        kind: FailureKind::Timeout,
                        message: format!("{} timeout ({})", which.0, humantime_duration(which.1)),
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
        ctx.explain_headers(&mut parts.headers);
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
    H2(crate::h2_upstream::H2Client),
}

/// A request's routing, as the [`Via`] paths are given it: the client, the upstream and its
/// state, the hash key, the metrics and the request id.
pub(crate) type Routed<'a> =
    (&'a ClientInfo, &'a Upstream, &'a UpstreamState, Option<u64>, &'a Metrics, &'a HeaderValue);

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
            Box::pin(crate::upgrade::forward(req, protocol.clone(), routed, explain, tally))
        }
        Via::H2(h2) => Box::pin(crate::h2_upstream::forward(h2, req, routed, explain, tally)),
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

/// What the proxy knows about a client connection, computed once per connection rather than once per
/// request (a keep-alive connection carries thousands of requests from the same address).
#[derive(Debug)]
pub struct ClientInfo {
    /// The client's address.
    pub addr: SocketAddr,
    /// Its IP as an `X-Forwarded-For` value (IPv4-mapped IPv6 written as IPv4).
    xff: HeaderValue,
    /// `X-Forwarded-Proto`: `http`, or `https` on a TLS listener.
    proto: HeaderValue,
}

impl ClientInfo {
    /// Info for a connection from `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        let ip = match addr.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        let xff = HeaderValue::from_str(&ip.to_string()).unwrap_or(HeaderValue::from_static("unknown"));
        ClientInfo { addr, xff, proto: HeaderValue::from_static("http") }
    }

    /// Info for a TLS connection from `addr` (the backend is told `X-Forwarded-Proto: https`).
    pub fn https(addr: SocketAddr) -> Self {
        ClientInfo { proto: HeaderValue::from_static("https"), ..ClientInfo::new(addr) }
    }
}

/// `X-Forwarded-For` appended, `X-Forwarded-Proto` and `X-Forwarded-Host` set, hop-by-hop removed,
/// in the map: for the HTTP/2 and upgrade paths, which hand a map to hyper. The pooled HTTP/1 path
/// writes the same fields as bytes instead ([`h1::Forwarding`]; a test below holds the two to the same
/// result).
pub(crate) fn add_forwarding_headers(headers: &mut HeaderMap, client: &ClientInfo) {
    strip_hop_by_hop(headers);
    // One pass over the fields (comparisons, no hashing) to learn which of ours the client sent: most
    // requests carry none, and then each of ours costs one insertion.
    let (mut xff, mut xfp, mut xfh, mut explain) = (false, false, false, false);
    let mut host = None;
    for (name, value) in headers.iter() {
        if *name == header::HOST {
            host = Some(value.clone());
        } else if *name == X_FORWARDED_FOR {
            xff = true;
        } else if *name == X_FORWARDED_PROTO {
            xfp = true;
        } else if *name == X_FORWARDED_HOST {
            xfh = true;
        } else if *name == X_LB_EXPLAIN {
            explain = true;
        }
    }
    if explain {
        // The explain switch is addressed to lb, not to the backend.
        headers.remove(&X_LB_EXPLAIN);
    }
    let appended = xff.then(|| headers.get(&X_FORWARDED_FOR)).flatten().map(|prior| {
        let mut v = Vec::with_capacity(prior.len() + 2 + client.xff.len());
        v.extend_from_slice(prior.as_bytes());
        v.extend_from_slice(b", ");
        v.extend_from_slice(client.xff.as_bytes());
        HeaderValue::from_bytes(&v)
    });
    match appended {
        Some(Ok(v)) => {
            headers.insert(X_FORWARDED_FOR.clone(), v);
        }
        // A prior value we could not extend is replaced rather than forwarded half-right.
        Some(Err(_)) => {
            headers.insert(X_FORWARDED_FOR.clone(), client.xff.clone());
        }
        None => {
            headers.append(X_FORWARDED_FOR.clone(), client.xff.clone());
        }
    }
    // A client's own X-Forwarded-Proto/-Host are replaced: only we know how it reached us.
    if xfp {
        headers.insert(X_FORWARDED_PROTO.clone(), client.proto.clone());
    } else {
        headers.append(X_FORWARDED_PROTO.clone(), client.proto.clone());
    }
    match host {
        Some(host) if xfh => {
            headers.insert(X_FORWARDED_HOST.clone(), host);
        }
        Some(host) => {
            headers.append(X_FORWARDED_HOST.clone(), host);
        }
        None if xfh => {
            headers.remove(&X_FORWARDED_HOST);
        }
        None => {}
    }
}

/// The pooled HTTP/1 path's share of [`add_forwarding_headers`], done on the request's map: hop-by-hop
/// fields out, and one pass (comparisons, no hashing) to learn whether the client sent fields of ours,
/// which [`h1::Forwarding`] then leaves out and writes itself. Returns that.
///
/// `add_id` (our request id is to be written) turns false when the client's `Connection` names
/// `X-Request-Id`: the field is then hop-by-hop, and is not forwarded whoever made it.
fn prepare_forwarding(headers: &mut HeaderMap, add_id: &mut bool) -> bool {
    let (mut hop_found, mut replaces) = (false, false);
    for name in headers.keys() {
        hop_found |= is_hop_by_hop(name);
        replaces |= h1::Forwarding::replaced(name);
    }
    if hop_found {
        *add_id &= !connection_names(headers, &X_REQUEST_ID);
        strip_hop_by_hop(headers);
    }
    replaces
}

/// Does a `Connection` field name `name` (read as [`strip_hop_by_hop`] reads it)?
fn connection_names(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .any(|n| n.trim().eq_ignore_ascii_case(name.as_str()))
}

/// Would `s` make a valid field value (what `HeaderValue::from_str` accepts), without building one?
fn is_field_value(s: &str) -> bool {
    s.bytes().all(|b| (b >= 0x20 && b != 0x7f) || b == b'\t')
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

fn humantime_duration(d: Duration) -> String {
    humantime_serde::re::humantime::format_duration(d).to_string()
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

/// Where a finished response's connection goes back to.
struct ReturnTo {
    worker: Rc<Worker>,
    expires: Nanos,
}

/// The response body the client receives: the backend's body streamed frame by frame, holding the
/// in-flight guard and the pooled connection until it ends; or a short error text.
pub struct ProxyBody {
    inner: Inner,
}

// The upstream variant is the common one and moves rarely (it is built once and then polled in place);
// boxing it to shrink the error variant would cost an allocation on every proxied response.
#[allow(clippy::large_enum_variant)]
enum Inner {
    Upstream {
        body: ResponseBody,
        hold: Option<(InFlightGuard, ReturnTo)>,
        /// The request id, when the backend's fields do not carry one: written after them.
        request_id: Option<HeaderValue>,
    },
    Full(Option<Bytes>),
    /// From an HTTP/2 backend (`h2_upstream.rs`): hyper's body and the in-flight guard.
    Streamed {
        body: Incoming,
        guard: Option<InFlightGuard>,
    },
}

impl std::fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Inner::Upstream { hold, .. } => {
                f.debug_struct("ProxyBody::Upstream").field("open", &hold.is_some()).finish()
            }
            Inner::Full(b) => f.debug_tuple("ProxyBody::Full").field(b).finish(),
            Inner::Streamed { guard, .. } => {
                f.debug_struct("ProxyBody::Streamed").field("open", &guard.is_some()).finish()
            }
        }
    }
}

impl ProxyBody {
    fn upstream(
        body: ResponseBody,
        guard: InFlightGuard,
        ret: ReturnTo,
        request_id: Option<HeaderValue>,
    ) -> Self {
        let mut this = ProxyBody { inner: Inner::Upstream { body, hold: Some((guard, ret)), request_id } };
        // A response with no body (HEAD, 204, 304) may never be polled: finish now.
        if let Inner::Upstream { body, hold, .. } = &mut this.inner
            && body.is_end_stream()
        {
            finish(body, hold);
        }
        this
    }

    /// The backend's header fields when this body is an HTTP/1 backend's (the response's own map
    /// holds only what the proxy added): an HTTP/1 client gets them as they are.
    ///
    /// With them, the request id to write after them when the backend did not send one (kept out of
    /// the map: inserting it there was the one allocation of an otherwise empty map per response).
    pub fn fields(&self) -> Option<(&h1::Fields, Option<&HeaderValue>)> {
        match &self.inner {
            Inner::Upstream { body, request_id, .. } => Some((body.fields(), request_id.as_ref())),
            _ => None,
        }
    }

    /// Move the backend's header fields (and the request id) into `headers`, for a server that writes
    /// a map (HTTP/2).
    pub fn fields_into(&mut self, headers: &mut HeaderMap) {
        if let Inner::Upstream { body, request_id, .. } = &mut self.inner {
            body.take_fields().append_to(headers);
            if let Some(id) = request_id.take() {
                headers.insert(X_REQUEST_ID.clone(), id);
            }
        }
    }

    /// No body at all.
    pub fn empty() -> Self {
        ProxyBody { inner: Inner::Full(None) }
    }

    /// A complete body.
    pub fn full(bytes: Bytes) -> Self {
        ProxyBody { inner: Inner::Full(Some(bytes)) }
    }

    /// A body streamed from hyper's client (HTTP/2 backends), holding `guard` until it ends.
    pub(crate) fn streamed(body: Incoming, guard: InFlightGuard) -> Self {
        let guard = (!body.is_end_stream()).then_some(guard);
        ProxyBody { inner: Inner::Streamed { body, guard } }
    }
}

/// The response ended: the backend is free, and the connection carries another request if the
/// exchange was clean (see `h1.rs` for what that takes).
fn finish(body: &mut ResponseBody, hold: &mut Option<(InFlightGuard, ReturnTo)>) {
    if let Some((guard, ret)) = hold.take() {
        if let Some(conn) = body.take_reusable() {
            ret.worker.pool.put(guard.backend().addr(), conn, ret.expires);
        }
        drop(guard);
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = h1::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match &mut self.get_mut().inner {
            Inner::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Inner::Upstream { body, hold, .. } => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => finish(body, hold),
                    Poll::Ready(Some(Ok(_))) if body.is_end_stream() => finish(body, hold),
                    // A broken body: the connection is not reusable; dropping it closes it, and the
                    // guard with it.
                    Poll::Ready(Some(Err(_))) => *hold = None,
                    _ => {}
                }
                polled
            }
            Inner::Streamed { body, guard } => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) || body.is_end_stream() {
                    *guard = None;
                }
                polled.map_err(|e| h1::Error::Io(std::io::Error::other(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(bytes) => bytes.is_none(),
            Inner::Upstream { body, .. } => body.is_end_stream(),
            Inner::Streamed { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
            Inner::Upstream { body, .. } => body.size_hint(),
            Inner::Streamed { body, .. } => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("x-kept", "yes"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h.get("x-kept").map(|v| v.as_bytes()), Some(&b"yes"[..]));
    }

    /// The pooled path writes the forwarding fields as bytes ([`h1::Forwarding`]); the other paths, and
    /// this one before, put them into the map ([`add_forwarding_headers`]). For any mix of the fields
    /// involved (ours, a client's versions of them, hop-by-hop ones, `Connection` naming them), the
    /// backend gets the same lines either way; only their order may differ. Both sides below do what
    /// `prepare` and `forward` do (did) with the map.
    #[test]
    fn forwarding_as_bytes_says_what_the_map_said() {
        use proptest::prelude::*;
        const NAMES: [&str; 11] = [
            "host",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "x-lb-explain",
            "x-request-id",
            "connection",
            "keep-alive",
            "te",
            "x-a",
            "accept",
        ];
        const VALUES: [&str; 8] = [
            "a",
            "203.0.113.9",
            "keep-alive",
            "X-Forwarded-For",
            "x-request-id",
            "close, x-a",
            "x-forwarded-host, host",
            "https",
        ];
        let client = ClientInfo::new(SocketAddr::from(([192, 0, 2, 7], 5000)));
        let ours = HeaderValue::from_static("0000002a-0000000000000001");
        let backend = "10.0.0.5:8080";
        let lines = |head: &[u8]| {
            let mut lines: Vec<String> =
                String::from_utf8_lossy(head).split("\r\n").map(str::to_string).collect();
            lines.sort();
            lines
        };
        let fields = proptest::collection::vec((0..NAMES.len(), 0..VALUES.len()), 0..8);
        proptest!(|(fields in fields)| {
            let mut map = HeaderMap::new();
            for (n, v) in fields {
                map.append(HeaderName::from_static(NAMES[n]), HeaderValue::from_static(VALUES[v]));
            }
            let has_host = map.contains_key(header::HOST);

            let mut old = map.clone();
            let old_id = match old.entry(&X_REQUEST_ID) {
                header::Entry::Occupied(id) => id.get().clone(),
                header::Entry::Vacant(slot) => slot.insert(ours.clone()).clone(),
            };
            add_forwarding_headers(&mut old, &client);
            if !has_host {
                old.insert(header::HOST, HeaderValue::from_static(backend));
            }
            let head = |headers: HeaderMap, forwarding: Option<&h1::Forwarding<'_>>| {
                let mut request: Request<UpstreamBody> = Request::new(None);
                *request.headers_mut() = headers;
                let mut buf = bytes::BytesMut::new();
                h1::encode_head(&mut buf, &request, forwarding);
                buf
            };
            let old_head = head(old, None);

            let mut new = map;
            let client_id = new.iter().find(|(name, _)| **name == X_REQUEST_ID).map(|(_, v)| v.clone());
            let mut add_id = client_id.is_none();
            let new_id = client_id.unwrap_or_else(|| ours.clone());
            let replaces = prepare_forwarding(&mut new, &mut add_id);
            let forwarding = h1::Forwarding {
                client_ip: &client.xff,
                proto: &client.proto,
                request_id: add_id.then_some(&new_id),
                host: (!has_host && is_field_value(backend)).then_some(backend),
                replaces,
            };
            let new_head = head(new, Some(&forwarding));

            prop_assert_eq!(&old_id, &new_id, "the id the response carries");
            prop_assert_eq!(lines(&old_head), lines(&new_head));
        });
    }

    #[test]
    fn the_hop_by_hop_list_is_one_list() {
        assert_eq!(hop_by_hop().map(HeaderName::as_str), HOP_BY_HOP);
        for name in HOP_BY_HOP {
            assert!(h1::is_hop_by_hop(name.to_ascii_uppercase().as_bytes()), "{name}");
        }
        for name in ["date", "server", "content-length", "content-type", "x-te", "upgrades"] {
            assert!(!h1::is_hop_by_hop(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR.clone(), HeaderValue::from_static("203.0.113.9"));
        h.insert(header::HOST, HeaderValue::from_static("app.example"));
        let client = ClientInfo::new(
            "[::ffff:127.0.0.1]:5000".parse().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 1))),
        );
        add_forwarding_headers(&mut h, &client);
        assert_eq!(h[&X_FORWARDED_FOR], "203.0.113.9, 127.0.0.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_FORWARDED_HOST], "app.example");
    }
}
