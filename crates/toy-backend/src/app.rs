//! The HTTP side of a backend: its routes, and the middleware that applies the knobs.
//!
//! Routes fall in two groups. The *served* routes (`/`, `/info`, `/status/{code}`, `/delay/{ms}`,
//! `/bytes/{n}`, `/echo`, `/upload`, `/ws` and anything unknown) are what a balancer sends traffic to, so the
//! knobs apply to them and they count as requests. The *control* routes (`/health`, `/admin/*`) are
//! how a health checker or a lesson talks to the backend itself; they must keep answering when the
//! backend is slow, overloaded or failing, or nobody could turn the failure off again.
//!
//! [`app`] returns a plain [`Router`], so a test can drive it with `oneshot` and no socket. Fail
//! mode is the exception: it is about connections, not responses, so it lives in the accept loop
//! (see `server.rs`) and has no effect on a router called directly.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, watch};

use crate::BackendConfig;
use crate::body::{Guarded, Zeros};
use crate::knobs::{KnobState, Knobs, Latency};

/// Largest body `/bytes/{n}` will produce: 1 GiB.
pub const MAX_BYTES: u64 = 1 << 30;
/// Longest sleep `/delay/{ms}` will take: ten minutes.
pub const MAX_DELAY_MS: u64 = 600_000;

/// Where a backend is in its life. Long-lived tasks (connections, WebSockets) watch this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Running,
    /// Graceful shutdown: stop accepting, let open requests finish.
    Draining,
    /// Abrupt stop: drop every connection now.
    Killed,
}

/// Everything a backend's handlers share: its identity, counters and live knobs. Cloning is one
/// reference-count increment.
#[derive(Debug, Clone)]
pub struct BackendState(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    name: String,
    /// `name` plus a newline, prebuilt so `GET /` answers without allocating.
    greeting: Bytes,
    port: u16,
    seed: u64,
    /// The knobs given at start, restored by `POST /admin/reset`.
    initial: Knobs,
    knobs: KnobState,
    requests: AtomicU64,
    in_flight: AtomicUsize,
    phase: watch::Sender<Phase>,
}

impl BackendState {
    /// State for a backend called `config.name` that reports `port` in `/info`.
    pub fn new(config: BackendConfig, port: u16) -> Self {
        let greeting = Bytes::from(format!("{}\n", config.name));
        BackendState(Arc::new(Shared {
            knobs: KnobState::new(&config.knobs),
            initial: config.knobs,
            name: config.name,
            greeting,
            port,
            seed: config.seed,
            requests: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            phase: watch::Sender::new(Phase::Running),
        }))
    }

    /// The backend's name, as answered by `GET /`.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The port reported by `/info`.
    pub fn port(&self) -> u16 {
        self.0.port
    }

    /// Requests that reached a served route (everything but `/health` and `/admin/*`), including
    /// injected errors. Connections reset by fail mode never became requests and are not counted.
    pub fn requests(&self) -> u64 {
        self.0.requests.load(Ordering::Relaxed)
    }

    /// Requests inside the backend right now: queued for capacity, sleeping, or sending their body.
    pub fn in_flight(&self) -> usize {
        self.0.in_flight.load(Ordering::Relaxed)
    }

    /// A snapshot of the current knobs.
    pub fn knobs(&self) -> Knobs {
        self.0.knobs.snapshot()
    }

    /// Sets the latency distribution for requests that start from now on.
    pub fn set_latency(&self, latency: Latency) {
        self.0.knobs.set_latency(latency);
    }

    /// Sets the injected error fraction, clamped to 0.0..=1.0.
    pub fn set_error_rate(&self, rate: f64) {
        self.0.knobs.set_error_rate(rate);
    }

    /// Limits concurrent requests (`None`: unlimited; `Some(0)` is taken as 1).
    pub fn set_capacity(&self, capacity: Option<usize>) {
        self.0.knobs.set_capacity(capacity);
    }

    /// Sets what `/health` reports.
    pub fn set_healthy(&self, healthy: bool) {
        self.0.knobs.set_healthy(healthy);
    }

    /// Turns fail mode on or off.
    pub fn set_fail(&self, fail: bool) {
        self.0.knobs.set_fail(fail);
    }

    /// Restores the knobs the backend started with.
    pub fn reset(&self) {
        self.0.knobs.set_all(&self.0.initial);
    }

    pub(crate) fn fail(&self) -> bool {
        self.0.knobs.fail()
    }

    pub(crate) fn set_phase(&self, phase: Phase) {
        self.0.phase.send_replace(phase);
    }

    pub(crate) fn watch_phase(&self) -> watch::Receiver<Phase> {
        self.0.phase.subscribe()
    }
}

/// True for the control routes, which no knob touches.
pub(crate) fn is_control_path(path: &str) -> bool {
    path == "/health" || path.starts_with("/admin/")
}

/// The backend's router. Serve it with [`Backend::start`](crate::Backend::start), or call it
/// directly in a test.
pub fn app(state: BackendState) -> Router {
    let served = Router::new()
        .route("/", get(hello))
        .route("/info", any(info))
        .route("/status/{code}", any(status))
        .route("/delay/{ms}", any(delay))
        .route("/bytes/{n}", get(bytes))
        .route("/echo", any(echo))
        .route("/upload", any(upload))
        .route("/ws", get(ws))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), apply_knobs));
    let control = Router::new()
        .route("/health", get(health))
        .route("/admin/knobs", get(admin_knobs))
        .route("/admin/latency", post(admin_latency))
        .route("/admin/error-rate", post(admin_error_rate))
        .route("/admin/capacity", post(admin_capacity))
        .route("/admin/health", post(admin_health))
        .route("/admin/fail", post(admin_fail))
        .route("/admin/reset", post(admin_reset));
    served.merge(control).with_state(state)
}

/// Keeps a request counted as in flight, and holds its capacity slot, until dropped.
#[derive(Debug)]
struct InFlight {
    state: BackendState,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Applies capacity, latency and error rate, in that order, to every served route.
///
/// The order is the point: a request first queues for a slot, then spends its latency *holding*
/// the slot, so with capacity 1 and 50 ms latency the backend serves at most 20 requests a second
/// and the queue grows beyond that, like a real saturated server.
async fn apply_knobs(State(state): State<BackendState>, req: Request, next: Next) -> Response {
    let shared = &state.0;
    let n = shared.requests.fetch_add(1, Ordering::Relaxed);
    shared.in_flight.fetch_add(1, Ordering::Relaxed);
    let mut guard = InFlight { state: state.clone(), _permit: None };
    if let Some(limiter) = shared.knobs.limiter() {
        // The semaphore is never closed, so `acquire_owned` cannot fail; if it ever did, serving
        // without a slot is a better failure than refusing the request.
        guard._permit = limiter.permits.clone().acquire_owned().await.ok();
    }
    let latency = shared.knobs.latency();
    let error_rate = shared.knobs.error_rate();
    if latency != Latency::None || error_rate > 0.0 {
        // One RNG per request, seeded from the backend's seed and the request's number: no shared
        // mutable RNG (and so no lock), and a run of sequential requests is reproducible.
        let mut rng = SmallRng::seed_from_u64(shared.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let delay = latency.sample(&mut rng);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if error_rate > 0.0 && rng.random::<f64>() < error_rate {
            let resp = text(StatusCode::INTERNAL_SERVER_ERROR, "injected error\n");
            return resp.map(|body| Guarded::wrap(body, guard));
        }
    }
    next.run(req).await.map(|body| Guarded::wrap(body, guard))
}

fn text(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

/// `GET /`: the backend's name. The hot path of every benchmark, so it only clones a `Bytes`.
async fn hello(State(state): State<BackendState>) -> Response {
    text(StatusCode::OK, state.0.greeting.clone())
}

async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "not found\n")
}

/// `/info`: the request as this backend received it, so a learner sees what the proxy changed.
async fn info(State(state): State<BackendState>, req: Request) -> Response {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in req.headers() {
        let value = String::from_utf8_lossy(value.as_bytes());
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    let remote = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.to_string());
    let body = serde_json::json!({
        "name": state.name(),
        "port": state.port(),
        "requests": state.requests(),
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query(),
        "headers": headers,
        "remote_addr": remote,
    });
    axum::Json(body).into_response()
}

/// `/status/{code}`: answers with that status (200..=599).
async fn status(Path(code): Path<String>) -> Response {
    let status = code
        .parse::<u16>()
        .ok()
        .filter(|c| (200..=599).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok());
    let Some(status) = status else {
        return text(StatusCode::BAD_REQUEST, "status must be 200..=599\n");
    };
    // These three statuses must not carry a body.
    if matches!(status.as_u16(), 204 | 205 | 304) {
        return text(status, Body::empty());
    }
    let reason = status.canonical_reason().unwrap_or("");
    text(status, format!("{} {reason}\n", status.as_u16()))
}

/// `/delay/{ms}`: sleeps, then answers. On top of the latency knob, not instead of it.
async fn delay(State(state): State<BackendState>, Path(ms): Path<String>) -> Response {
    match ms.parse::<u64>() {
        Ok(ms) if ms <= MAX_DELAY_MS => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            text(StatusCode::OK, format!("{} waited {ms}ms\n", state.name()))
        }
        _ => text(StatusCode::BAD_REQUEST, format!("delay must be 0..={MAX_DELAY_MS} ms\n")),
    }
}

/// `/bytes/{n}`: `n` zero bytes, streamed.
async fn bytes(Path(n): Path<String>) -> Response {
    match n.parse::<u64>() {
        Ok(n) if n <= MAX_BYTES => {
            let mut resp = Response::new(Body::new(Zeros::new(n)));
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            resp
        }
        _ => text(StatusCode::BAD_REQUEST, format!("n must be 0..={MAX_BYTES} bytes\n")),
    }
}

/// `/echo`: the request body, sent back as it arrives (never collected), with its content type.
async fn echo(req: Request) -> Response {
    let content_type = req.headers().get(header::CONTENT_TYPE).cloned();
    let mut resp = Response::new(req.into_body());
    if let Some(ct) = content_type {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    resp
}

/// `/upload`: read the whole request body (counting it, never keeping it), then answer how many bytes
/// came, as a backend that parses an upload does: nothing is answered before the body's last byte.
async fn upload(req: Request) -> Response {
    use http_body_util::BodyExt;
    let mut body = req.into_body();
    let mut received: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => received += frame.data_ref().map_or(0, |d| d.len() as u64),
            Err(e) => return (StatusCode::BAD_REQUEST, format!("body broke off: {e}\n")).into_response(),
        }
    }
    format!("received {received} bytes\n").into_response()
}

/// `/ws`: a WebSocket that echoes every text and binary message.
async fn ws(State(state): State<BackendState>, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| ws_echo(socket, state))
}

async fn ws_echo(mut socket: WebSocket, state: BackendState) {
    // An upgraded connection has left hyper, so the server's shutdown cannot see it: watch the
    // backend's phase here, or `kill()` would leave WebSockets open.
    let mut phase = state.watch_phase();
    loop {
        tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => {
                    if socket.send(msg).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                // Pings are answered by the WebSocket layer itself.
                Some(Ok(_)) => {}
            },
            // The `Ref` that `wait_for` returns must not live across an await, so it becomes a
            // plain bool inside the branch's future.
            killed = async {
                phase.wait_for(|p| *p != Phase::Running).await.map_or(true, |p| *p == Phase::Killed)
            } => {
                if !killed {
                    let _ = socket.send(Message::Close(None)).await;
                }
                return;
            }
        }
    }
}

/// `/health`: 200 `ok` or 503 `unhealthy`.
async fn health(State(state): State<BackendState>) -> Response {
    if state.0.knobs.healthy() {
        text(StatusCode::OK, "ok\n")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "unhealthy\n")
    }
}

fn knobs_json(state: &BackendState) -> Response {
    axum::Json(state.knobs()).into_response()
}

fn bad_request(reason: impl std::fmt::Display) -> Response {
    text(StatusCode::BAD_REQUEST, format!("{reason}\n"))
}

/// Parses a JSON admin body. The content type is not checked: `curl -d` sends a form type by
/// default, and rejecting that would only annoy.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("bad request body: {e}"))
}

async fn admin_knobs(State(state): State<BackendState>) -> Response {
    knobs_json(&state)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetLatency {
    latency: Latency,
}

async fn admin_latency(State(state): State<BackendState>, body: Bytes) -> Response {
    match parse::<SetLatency>(&body) {
        Ok(SetLatency { latency }) => {
            state.set_latency(latency);
            knobs_json(&state)
        }
        Err(reason) => bad_request(reason),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetErrorRate {
    rate: f64,
}

async fn admin_error_rate(State(state): State<BackendState>, body: Bytes) -> Response {
    match parse::<SetErrorRate>(&body) {
        Ok(SetErrorRate { rate }) if (0.0..=1.0).contains(&rate) => {
            state.set_error_rate(rate);
            knobs_json(&state)
        }
        Ok(_) => bad_request("rate must be between 0.0 and 1.0"),
        Err(reason) => bad_request(reason),
    }
}

/// `{"max": 4}` or `{"max": null}`. `max` must be present, so that `{}` (probably a typo) is not
/// silently read as "unlimited".
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetCapacity {
    #[serde(deserialize_with = "present")]
    max: Option<usize>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    Option::<usize>::deserialize(d)
}

async fn admin_capacity(State(state): State<BackendState>, body: Bytes) -> Response {
    match parse::<SetCapacity>(&body) {
        Ok(SetCapacity { max: Some(0) }) => bad_request("max must be at least 1, or null"),
        Ok(SetCapacity { max }) => {
            state.set_capacity(max);
            knobs_json(&state)
        }
        Err(reason) => bad_request(reason),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetHealth {
    healthy: bool,
}

async fn admin_health(State(state): State<BackendState>, body: Bytes) -> Response {
    match parse::<SetHealth>(&body) {
        Ok(SetHealth { healthy }) => {
            state.set_healthy(healthy);
            knobs_json(&state)
        }
        Err(reason) => bad_request(reason),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetFail {
    fail: bool,
}

async fn admin_fail(State(state): State<BackendState>, body: Bytes) -> Response {
    match parse::<SetFail>(&body) {
        Ok(SetFail { fail }) => {
            state.set_fail(fail);
            knobs_json(&state)
        }
        Err(reason) => bad_request(reason),
    }
}

async fn admin_reset(State(state): State<BackendState>) -> Response {
    state.reset();
    knobs_json(&state)
}

#[cfg(test)]
mod tests {
    //! The router called directly, without a socket.
    use super::*;
    use http_body::Body as _;
    use hyper::service::Service as _;
    use hyper_util::service::TowerToHyperService;

    async fn call(router: &Router, method: &str, uri: &str, body: &'static str) -> (u16, String) {
        let svc = TowerToHyperService::new(router.clone());
        let req = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::from(body))
            .expect("valid request");
        let resp = svc.call(req).await.unwrap_or_else(|never| match never {});
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut text = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
        {
            if let Ok(data) = frame.expect("body frame").into_data() {
                text.extend_from_slice(&data);
            }
        }
        (status, String::from_utf8_lossy(&text).into_owned())
    }

    #[tokio::test]
    async fn router_works_without_a_socket() {
        let state = BackendState::new(BackendConfig::new("solo"), 0);
        let router = app(state.clone());
        assert_eq!(call(&router, "GET", "/", "").await, (200, "solo\n".into()));
        assert_eq!(call(&router, "GET", "/status/418", "").await.0, 418);
        assert_eq!(call(&router, "POST", "/echo", "hi").await, (200, "hi".into()));
        assert_eq!(call(&router, "PUT", "/upload", "12345").await, (200, "received 5 bytes\n".into()));
        let (status, reason) = call(&router, "POST", "/admin/error-rate", r#"{"rate":7}"#).await;
        assert_eq!((status, reason.as_str()), (400, "rate must be between 0.0 and 1.0\n"));
        assert_eq!(call(&router, "GET", "/health", "").await.0, 200);
        assert_eq!(state.requests(), 4, "/, /status, /echo and /upload; not /admin or /health");
        assert_eq!(state.in_flight(), 0, "released when each body ended");
    }

    #[test]
    fn control_paths() {
        assert!(is_control_path("/health"));
        assert!(is_control_path("/admin/knobs"));
        assert!(!is_control_path("/healthz"));
        assert!(!is_control_path("/administrator"));
        assert!(!is_control_path("/"));
    }
}
