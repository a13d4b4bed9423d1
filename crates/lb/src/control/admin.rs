//! The admin API: metrics, the live backend table, run-time changes (add, remove, drain, reweight), and
//! the live dashboard a browser gets on `GET /` (see `dashboard.rs`).
//!
//! It listens on its own address, loopback by default (`[admin] listen = "127.0.0.1:9900"`), never on
//! the proxy's listeners: anyone who can reach it can take every backend out. So it is closed by
//! default: every request passes the rules of `admin_access.rs` first (its own `Host` when there is no
//! token, no foreign `Origin`, `Authorization: Bearer <token>` when `[admin] token` is set, JSON bodies
//! only), and any address but loopback needs a token.
//!
//! | method and path | what it does |
//! |---|---|
//! | `GET /` | lists these endpoints and the access rules in force; to a browser (`Accept: text/html`), the live dashboard |
//! | `GET /metrics` | Prometheus text format (see `metrics.rs`) |
//! | `GET /backends` | JSON: each upstream, its algorithm, and each backend's live state |
//! | `GET /events` | the dashboard's feed: server-sent events, a `snapshot` of every backend each second, with the latest routing decisions |
//! | `POST /upstreams/{name}/backends` | add a backend: `{"addr": "127.0.0.1:9004", "weight": 2}` |
//! | `PATCH /upstreams/{name}/backends/{addr}` | change its weight in place: `{"weight": 3}` (its health and counters stay) |
//! | `DELETE /upstreams/{name}/backends/{addr}` | remove a backend (its requests in flight finish) |
//! | `POST /upstreams/{name}/backends/{addr}/drain` | no new requests; in-flight ones finish |
//! | `POST /upstreams/{name}/backends/{addr}/undrain` | back to healthy (the next health check may disagree) |
//! | `POST /reload` | read the config file again and switch to it (see `reload.rs`); 400 with the errors if it is bad |
//! | `GET /live`, `GET /ready` | for an orchestrator's probes; served next to this router, outside its access rules (see `probes.rs`) |
//!
//! Errors are JSON, `{"error": "..."}`, with 404 for an unknown upstream or backend and 400 for a bad
//! request. Successful changes answer with the upstream's new backend table, so a script sees the effect.
//!
//! **Drain vs remove.** Draining keeps the backend in the list, so its metrics, EWMA and slow-start state
//! stay and it can be undrained in one call: the step before a deploy. Removing forgets it.
//!
//! **Reweight vs remove and add.** `PATCH` keeps the backend's health (a drained backend stays drained),
//! its counters and its outlier state, and its place in the list; removing and adding it again would
//! have brought it back healthy. It is how a canary's share is raised step by step (HAProxy: `set server
//! app/b1 weight 3` on its runtime API).
//!
//! `router` takes the state and returns an `axum::Router`, so tests can call it without a socket and the
//! binary serves it with `axum::serve`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use lb_algorithms::{BackendSpec, Health, now_nanos};
use serde::{Deserialize, Serialize};

use crate::control::admin_access::Access;
use crate::control::dashboard;
use crate::control::reload::{ReloadError, Reloader};
use crate::observe::metrics::Metrics;
use crate::upstream::{Upstream, Upstreams};

/// What the admin handlers share.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// Every upstream group.
    pub upstreams: Arc<Upstreams>,
    /// The proxy's metrics.
    pub metrics: Arc<Metrics>,
    /// Hot reload (`POST /reload`); `None` answers 404 there.
    pub reloader: Option<Arc<Reloader>>,
    /// Who may call it (see `admin_access.rs`).
    pub access: Arc<Access>,
    /// Turns true when the proxy shuts down: the dashboard's feeds end then, or the admin server's
    /// graceful shutdown would wait for every open page (`None`: never).
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
}

/// The admin API's routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics))
        .route("/backends", get(backends))
        .route("/events", get(events))
        .route(dashboard::SCRIPT_PATH, get(dashboard::script))
        .route(dashboard::STYLE_PATH, get(dashboard::style))
        .route("/upstreams/{name}/backends", post(add_backend))
        .route("/upstreams/{name}/backends/{addr}", axum::routing::delete(remove_backend).patch(set_weight))
        .route("/upstreams/{name}/backends/{addr}/drain", post(drain))
        .route("/upstreams/{name}/backends/{addr}/undrain", post(undrain))
        .route("/reload", post(reload))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint; GET / lists them".to_string()) })
        // Around the fallback too: an unknown path from a foreign page learns nothing either.
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&state.access), admit))
        .with_state(state)
}

/// Every request passes the access rules before its handler runs (the dashboard's own files all but
/// the token rule: see `dashboard.rs`).
async fn admit(State(access): State<Arc<Access>>, request: Request, next: Next) -> Response {
    let (method, uri, headers) = (request.method(), request.uri(), request.headers());
    let verdict = if dashboard::is_page_request(method, uri.path(), headers) {
        access.check_page(uri, headers)
    } else {
        access.check(method, uri, headers)
    };
    match verdict {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            tracing::warn!(method = %request.method(), uri = %request.uri(), "admin request refused: {}", refusal.message);
            refusal.into_response()
        }
    }
}

const INDEX: &str = "\
lb admin API
GET    /                                             in a browser: the live dashboard (with a token: /#token=<token>)
GET    /metrics                                      Prometheus metrics
GET    /backends                                     every upstream and backend, as JSON
GET    /events                                       the dashboard's live feed (server-sent events)
POST   /upstreams/{name}/backends                    add a backend: {\"addr\":\"127.0.0.1:9004\",\"weight\":2}
PATCH  /upstreams/{name}/backends/{addr}             change its weight: {\"weight\":3}
DELETE /upstreams/{name}/backends/{addr}             remove a backend
POST   /upstreams/{name}/backends/{addr}/drain       stop sending it new requests
POST   /upstreams/{name}/backends/{addr}/undrain     send it requests again
POST   /reload                                       read the config file again and switch to it
GET    /live, /ready                                 for probes: 200, or 503 from /ready while starting or draining
";

/// To a browser, the dashboard; otherwise the endpoints, then the access rules in force with this API's
/// own addresses filled in.
async fn index(State(state): State<AdminState>, headers: axum::http::HeaderMap) -> Response {
    if dashboard::wants_html(&headers) {
        return dashboard::page();
    }
    index_text(&state.access).into_response()
}

fn index_text(access: &Access) -> String {
    let (host, token) = if access.has_token() {
        ("Host: any name (a token is set)".to_string(), "Authorization: Bearer <token> is required")
    } else {
        let own = access.own_hosts();
        let hosts = match own.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => own.join(""),
        };
        (
            format!("Host must be {hosts} (DNS rebinding)"),
            "never: no token is set, so the API listens on loopback only",
        )
    };
    let rules = [
        format!("421  {host}"),
        "403  Origin, when sent, must be http://<Host> (cross-site requests from a browser)".to_string(),
        format!("401  {token}"),
        "415  a POST, PUT, PATCH or DELETE body must be Content-Type: application/json".to_string(),
    ];
    let mut text =
        format!("{INDEX}\nEvery request passes these rules, or is refused with the reason as JSON:\n");
    for rule in rules {
        text += &format!("  {rule}\n");
    }
    text
}

/// `GET /events`: the dashboard's feed, recording decisions while it is open.
async fn events(State(state): State<AdminState>) -> Response {
    dashboard::events(Arc::clone(&state.upstreams), state.metrics.decisions.watch(), state.stop.clone())
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let body = state.metrics.render(&state.upstreams);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

/// `GET /backends`
#[derive(Debug, Serialize, Deserialize)]
pub struct BackendsView {
    /// Every upstream, in configuration order.
    pub upstreams: Vec<UpstreamView>,
}

/// One upstream in `GET /backends`.
#[derive(Debug, Serialize, Deserialize)]
pub struct UpstreamView {
    /// Its name.
    pub name: String,
    /// Its algorithm's name.
    pub algorithm: String,
    /// True while too few backends are healthy and health is being ignored (see the panic threshold).
    pub panic: bool,
    /// Its backends, in order.
    pub backends: Vec<BackendView>,
}

/// One backend in `GET /backends`.
#[derive(Debug, Serialize, Deserialize)]
pub struct BackendView {
    /// `host:port`.
    pub addr: String,
    /// Configured weight.
    pub weight: u32,
    /// Weight times the slow-start factor now.
    pub effective_weight: f64,
    /// `healthy`, `unhealthy`, `ejected` or `draining`.
    pub health: String,
    /// Requests whose response has not finished.
    pub in_flight: u64,
    /// Peak-EWMA latency in milliseconds (`null` before the first response).
    pub ewma_ms: Option<f64>,
    /// Responses received, any status.
    pub requests: u64,
    /// Times outlier detection ejected it.
    pub ejections: u64,
    /// Failed attempts in a row.
    pub consecutive_failures: u32,
    /// Where it came from: `config`, `admin` (added here) or `dns NAME` (`[upstream.dns]`).
    #[serde(default)]
    pub source: String,
}

fn view(upstream: &Upstream) -> UpstreamView {
    let state = upstream.load();
    let now = now_nanos();
    let options = state.set.options();
    let backends = state
        .set
        .backends()
        .iter()
        .zip(&state.stats)
        .map(|(b, s)| BackendView {
            addr: b.addr().to_string(),
            weight: b.weight(),
            effective_weight: b.effective_weight(now, options.slow_start),
            health: b.health().as_str().to_string(),
            in_flight: b.in_flight(),
            ewma_ms: b.ewma(now, options.ewma_decay).map(|ns| (ns / 1e4).round() / 100.0),
            requests: s.requests(),
            ejections: s.ejections(),
            consecutive_failures: s.consecutive_failures(),
            source: upstream.origin(b.addr()),
        })
        .collect();
    UpstreamView {
        name: upstream.name.clone(),
        algorithm: state.balancer.algorithm().name().to_string(),
        panic: state.set.in_panic(),
        backends,
    }
}

async fn backends(State(state): State<AdminState>) -> Response {
    axum::Json(BackendsView { upstreams: state.upstreams.all().iter().map(|u| view(u)).collect() })
        .into_response()
}

/// The body of `POST /upstreams/{name}/backends`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBackend {
    addr: String,
    #[serde(default = "one")]
    weight: u32,
}

fn one() -> u32 {
    1
}

fn error(status: StatusCode, message: String) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

fn no_upstream(name: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("no upstream named {name:?}"))
}

fn changed(upstream: &Upstream, status: StatusCode) -> Response {
    (status, axum::Json(view(upstream))).into_response()
}

fn change_error(e: crate::Error) -> Response {
    let status = match e {
        crate::Error::UnknownBackend { .. } => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    };
    error(status, e.to_string())
}

async fn add_backend(State(state): State<AdminState>, Path(name): Path<String>, body: Bytes) -> Response {
    let Some(upstream) = state.upstreams.get(&name) else { return no_upstream(&name) };
    // Parsed by hand rather than with axum's `Json` extractor so that a bad body gets the same JSON error
    // shape as every other failure here.
    let add: AddBackend = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(r#"expected {{"addr": "host:port", "weight": N}}: {e}"#),
            );
        }
    };
    if add.weight == 0 {
        return error(StatusCode::BAD_REQUEST, "weight 0: add it and drain it instead".to_string());
    }
    match upstream.add_backend(BackendSpec::weighted(&add.addr, add.weight)) {
        Ok(()) => {
            tracing::info!(upstream = %name, backend = %add.addr, weight = add.weight, "backend added");
            changed(&upstream, StatusCode::CREATED)
        }
        Err(e) => change_error(e),
    }
}

/// The body of `PATCH /upstreams/{name}/backends/{addr}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reweight {
    weight: u32,
}

async fn set_weight(
    State(state): State<AdminState>,
    Path((name, addr)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let Some(upstream) = state.upstreams.get(&name) else { return no_upstream(&name) };
    let change: Reweight = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!(r#"expected {{"weight": N}}: {e}"#)),
    };
    if change.weight == 0 {
        return error(StatusCode::BAD_REQUEST, "weight 0: drain it instead".to_string());
    }
    match upstream.set_weight(&addr, change.weight) {
        Ok(()) => {
            tracing::info!(upstream = %name, backend = %addr, weight = change.weight, "backend weight changed");
            changed(&upstream, StatusCode::OK)
        }
        Err(e) => change_error(e),
    }
}

async fn remove_backend(
    State(state): State<AdminState>,
    Path((name, addr)): Path<(String, String)>,
) -> Response {
    let Some(upstream) = state.upstreams.get(&name) else { return no_upstream(&name) };
    match upstream.remove_backend(&addr) {
        Ok(()) => {
            tracing::info!(upstream = %name, backend = %addr, "backend removed");
            changed(&upstream, StatusCode::OK)
        }
        Err(e) => change_error(e),
    }
}

async fn drain(State(state): State<AdminState>, Path((name, addr)): Path<(String, String)>) -> Response {
    set_draining(&state, &name, &addr, true)
}

async fn undrain(State(state): State<AdminState>, Path((name, addr)): Path<(String, String)>) -> Response {
    set_draining(&state, &name, &addr, false)
}

fn set_draining(state: &AdminState, name: &str, addr: &str, draining: bool) -> Response {
    let Some(upstream) = state.upstreams.get(name) else { return no_upstream(name) };
    let current = upstream.load();
    let Some(index) = current.set.position(addr) else {
        return error(StatusCode::NOT_FOUND, format!("upstream {name:?} has no backend {addr:?}"));
    };
    let from = current.set.backends()[index].health();
    let to = if draining {
        Health::Draining
    } else if from == Health::Draining {
        // Back to healthy; if health checks think otherwise, the next check takes it out again.
        Health::Healthy
    } else {
        // Undrain only undoes a drain: it must not return an ejected or unhealthy backend early.
        return changed(&upstream, StatusCode::OK);
    };
    if from != to {
        current.set.set_health(index, to, now_nanos());
        tracing::info!(
            upstream = name,
            backend = addr,
            from = %from,
            to = %to,
            "health changed"
        );
    }
    changed(&upstream, StatusCode::OK)
}

/// `POST /reload`: 200 with what changed, or 400 with `{"error": "...", "errors": ["file:line:col: ..."]}`
/// and nothing changed.
async fn reload(State(state): State<AdminState>) -> Response {
    let Some(reloader) = state.reloader else {
        return error(StatusCode::NOT_FOUND, "reload is not available here".to_string());
    };
    // Reading a small file and building the groups is quick, but it is blocking work: keep it off the
    // admin runtime's worker.
    let result = tokio::task::spawn_blocking(move || reloader.reload_file()).await;
    match result {
        Ok(Ok(report)) => (StatusCode::OK, axum::Json(report)).into_response(),
        Ok(Err(e)) => {
            let errors = crate::control::reload::describe(&e);
            for line in &errors {
                tracing::error!("reload refused: {line}");
            }
            let status = match e {
                ReloadError::NoFile => StatusCode::CONFLICT,
                _ => StatusCode::BAD_REQUEST,
            };
            let body = serde_json::json!({ "error": errors.join("\n"), "errors": errors });
            (status, axum::Json(body)).into_response()
        }
        Err(join) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("reload task failed: {join}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamConfig;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use lb_algorithms::Algorithm;
    use tower::ServiceExt as _;

    fn state() -> AdminState {
        let config = UpstreamConfig::new(
            "app",
            Algorithm::RoundRobin,
            vec![BackendSpec::new("127.0.0.1:9001"), BackendSpec::weighted("127.0.0.1:9002", 3)],
        );
        let upstreams = Arc::new(Upstreams::new(&[config]).expect("valid upstream"));
        let metrics = Arc::new(Metrics::for_upstreams(&upstreams));
        let access = Arc::new(Access::new(ADMIN.parse().expect("address"), None));
        AdminState { upstreams, metrics, reloader: None, access, stop: None }
    }

    const ADMIN: &str = "127.0.0.1:9900";

    /// A request as `curl` sends it to the admin API: its own `Host`, and JSON when there is a body.
    async fn call(app: &Router, method: &str, uri: &str, body: &str) -> (StatusCode, String) {
        let mut request = http::Request::builder().method(method).uri(uri).header("host", ADMIN);
        if !body.is_empty() {
            request = request.header("content-type", "application/json");
        }
        let request = request.body(Body::from(body.to_string())).expect("valid request");
        let response = app.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    fn healths(state: &AdminState) -> Vec<(String, &'static str)> {
        let s = state.upstreams.all()[0].load();
        s.set.backends().iter().map(|b| (b.addr().to_string(), b.health().as_str())).collect()
    }

    #[tokio::test]
    async fn backends_lists_every_backend_with_its_state() {
        let state = state();
        let app = router(state.clone());
        let (status, body) = call(&app, "GET", "/backends", "").await;
        assert_eq!(status, StatusCode::OK);
        let v: BackendsView = serde_json::from_str(&body).expect("JSON");
        assert_eq!(v.upstreams[0].name, "app");
        assert_eq!(v.upstreams[0].algorithm, "round-robin");
        let b = &v.upstreams[0].backends[1];
        assert_eq!((b.addr.as_str(), b.weight, b.health.as_str()), ("127.0.0.1:9002", 3, "healthy"));
        assert_eq!(b.ewma_ms, None);
    }

    #[tokio::test]
    async fn add_remove_drain_and_undrain_change_the_live_set() {
        let state = state();
        let app = router(state.clone());
        let (status, _) = call(&app, "POST", "/upstreams/app/backends", r#"{"addr":"127.0.0.1:9003"}"#).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(healths(&state).len(), 3);

        let (status, _) = call(&app, "POST", "/upstreams/app/backends/127.0.0.1:9001/drain", "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(healths(&state)[0], ("127.0.0.1:9001".to_string(), "draining"));
        let (status, _) = call(&app, "POST", "/upstreams/app/backends/127.0.0.1:9001/undrain", "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(healths(&state)[0].1, "healthy");

        let (status, body) = call(&app, "DELETE", "/upstreams/app/backends/127.0.0.1:9002", "").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let addrs: Vec<String> = healths(&state).into_iter().map(|(a, _)| a).collect();
        assert_eq!(addrs, ["127.0.0.1:9001", "127.0.0.1:9003"]);
    }

    #[tokio::test]
    async fn undrain_does_not_return_an_ejected_backend() {
        let state = state();
        let app = router(state.clone());
        assert!(state.upstreams.all()[0].set_health("127.0.0.1:9001", Health::Ejected));
        let (status, _) = call(&app, "POST", "/upstreams/app/backends/127.0.0.1:9001/undrain", "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(healths(&state)[0].1, "ejected");
    }

    #[tokio::test]
    async fn errors_are_json_with_404_or_400() {
        let state = state();
        let app = router(state);
        let cases = [
            ("POST", "/upstreams/nope/backends", r#"{"addr":"127.0.0.1:1"}"#, StatusCode::NOT_FOUND),
            ("DELETE", "/upstreams/app/backends/127.0.0.1:1", "", StatusCode::NOT_FOUND),
            ("POST", "/upstreams/app/backends/127.0.0.1:1/drain", "", StatusCode::NOT_FOUND),
            ("POST", "/upstreams/app/backends", "not json", StatusCode::BAD_REQUEST),
            ("POST", "/upstreams/app/backends", r#"{"addr":"nope"}"#, StatusCode::BAD_REQUEST),
            ("POST", "/upstreams/app/backends", r#"{"addr":"127.0.0.1:9001"}"#, StatusCode::BAD_REQUEST),
            (
                "POST",
                "/upstreams/app/backends",
                r#"{"addr":"127.0.0.1:7","weight":0}"#,
                StatusCode::BAD_REQUEST,
            ),
            ("GET", "/nope", "", StatusCode::NOT_FOUND),
        ];
        for (method, uri, body, expected) in cases {
            let (status, text) = call(&app, method, uri, body).await;
            assert_eq!(status, expected, "{method} {uri} {body}: {text}");
            let v: serde_json::Value = serde_json::from_str(&text).expect("JSON error body");
            assert!(v["error"].is_string(), "{text}");
        }
    }

    #[tokio::test]
    async fn metrics_and_index_answer() {
        let app = router(state());
        let (status, body) = call(&app, "GET", "/metrics", "").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("# TYPE lb_requests_total counter"), "{body}");
        let (_, body) = call(&app, "GET", "/", "").await;
        assert!(body.contains("/upstreams/{name}/backends/{addr}/drain"));
        assert!(
            body.contains("  421  Host must be 127.0.0.1:9900, localhost:9900 or [::1]:9900 (DNS"),
            "{body}"
        );
        assert!(
            body.contains("  401  never: no token is set, so the API listens on loopback only\n"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn patch_changes_a_weight_in_place_and_a_drain_survives_it() {
        let state = state();
        let app = router(state.clone());
        let (status, _) = call(&app, "POST", "/upstreams/app/backends/127.0.0.1:9001/drain", "").await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) =
            call(&app, "PATCH", "/upstreams/app/backends/127.0.0.1:9001", r#"{"weight":5}"#).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let v: UpstreamView = serde_json::from_str(&body).expect("JSON");
        let b = &v.backends[0];
        assert_eq!((b.addr.as_str(), b.weight, b.health.as_str()), ("127.0.0.1:9001", 5, "draining"));
        assert_eq!(v.backends[1].weight, 3, "the other one is untouched");
        let cases = [
            ("/upstreams/app/backends/127.0.0.1:9001", r#"{"weight":0}"#, StatusCode::BAD_REQUEST),
            ("/upstreams/app/backends/127.0.0.1:9001", r#"{"weight":-1}"#, StatusCode::BAD_REQUEST),
            ("/upstreams/app/backends/127.0.0.1:9001", r#"{"weight":2,"x":1}"#, StatusCode::BAD_REQUEST),
            ("/upstreams/app/backends/127.0.0.1:1", r#"{"weight":2}"#, StatusCode::NOT_FOUND),
            ("/upstreams/nope/backends/127.0.0.1:9001", r#"{"weight":2}"#, StatusCode::NOT_FOUND),
        ];
        for (uri, body, expected) in cases {
            let (status, text) = call(&app, "PATCH", uri, body).await;
            assert_eq!(status, expected, "PATCH {uri} {body}: {text}");
        }
        assert_eq!(healths(&state)[0].1, "draining");
    }

    /// A GET as a browser sends it: its own Host, and `Accept: text/html` when `html`.
    fn browser_get(uri: &str, html: bool, token: Option<&str>) -> http::Request<Body> {
        let mut request = http::Request::builder().uri(uri).header("host", ADMIN);
        if html {
            request = request.header("accept", "text/html,application/xhtml+xml,*/*;q=0.8");
        }
        if let Some(t) = token {
            request = request.header("authorization", format!("Bearer {t}"));
        }
        request.body(Body::empty()).expect("valid request")
    }

    #[tokio::test]
    async fn a_browser_gets_the_dashboard_which_cannot_be_framed_and_curl_the_index() {
        let app = router(state());
        let response = app.clone().oneshot(browser_get("/", true, None)).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers().clone();
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap_or("");
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"), "{csp}");
        let body = response.into_body().collect().await.expect("body").to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains(r#"<script src="/ui/dashboard.js" defer></script>"#), "{body}");
        for path in [dashboard::SCRIPT_PATH, dashboard::STYLE_PATH] {
            let response = app.clone().oneshot(browser_get(path, false, None)).await.expect("infallible");
            assert_eq!(response.status(), StatusCode::OK, "{path}");
        }
        let (_, index) = call(&app, "GET", "/", "").await;
        assert!(index.starts_with("lb admin API\n"), "{index}");
    }

    #[tokio::test]
    async fn with_a_token_the_page_loads_without_it_but_its_data_and_the_index_need_it() {
        let token = crate::config::AdminToken::new("s3cret").expect("token");
        let state = AdminState {
            access: Arc::new(Access::new(ADMIN.parse().expect("address"), Some(token))),
            ..state()
        };
        let app = router(state);
        let status = |request: http::Request<Body>| {
            let app = app.clone();
            async move { app.oneshot(request).await.expect("infallible").status() }
        };
        assert_eq!(status(browser_get("/", true, None)).await, StatusCode::OK);
        assert_eq!(status(browser_get(dashboard::SCRIPT_PATH, false, None)).await, StatusCode::OK);
        assert_eq!(status(browser_get("/", false, None)).await, StatusCode::UNAUTHORIZED, "the text index");
        assert_eq!(status(browser_get("/events", true, None)).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status(browser_get("/backends", true, None)).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status(browser_get("/backends", true, Some("s3cret"))).await, StatusCode::OK);
        // The page is still this origin's only: a foreign page asking for it is refused.
        let foreign = http::Request::builder()
            .uri("/")
            .header("host", ADMIN)
            .header("accept", "text/html")
            .header("origin", "http://evil.example")
            .body(Body::empty())
            .expect("valid request");
        assert_eq!(status(foreign).await, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn events_stream_snapshots_and_record_decisions_only_while_open() {
        let state = state();
        let app = router(state.clone());
        assert!(!state.metrics.decisions.watching());
        let response = app.oneshot(browser_get("/events", false, None)).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/event-stream");
        assert!(state.metrics.decisions.watching(), "an open feed is a watcher");
        let mut body = response.into_body();
        let frame = body.frame().await.expect("a first event").expect("no error");
        let text = String::from_utf8_lossy(frame.data_ref().expect("data")).into_owned();
        let json = text.strip_prefix("event: snapshot\ndata: ").expect("a snapshot event").trim_end();
        let v: serde_json::Value = serde_json::from_str(json).expect("JSON");
        assert_eq!(v["upstreams"][0]["name"], "app");
        assert_eq!(v["upstreams"][0]["backends"][1]["addr"], "127.0.0.1:9002");
        assert_eq!(v["upstreams"][0]["backends"][1]["weight_share"], 75.0);
        drop(body);
        assert!(!state.metrics.decisions.watching(), "the page went away: nothing is recorded");
    }

    #[tokio::test]
    async fn the_access_rules_run_before_every_handler_and_the_fallback() {
        let state = state();
        let app = router(state.clone());
        let request = |uri: &str, host: &str| {
            http::Request::builder()
                .method("POST")
                .uri(uri)
                .header("host", host)
                .header("content-type", "text/plain")
                .body(Body::from(r#"{"addr":"127.0.0.1:9003"}"#))
                .expect("valid request")
        };
        for (uri, host, expected) in [
            ("/upstreams/app/backends", ADMIN, StatusCode::UNSUPPORTED_MEDIA_TYPE),
            ("/upstreams/app/backends", "evil.example:9900", StatusCode::MISDIRECTED_REQUEST),
            ("/nope", "evil.example:9900", StatusCode::MISDIRECTED_REQUEST),
        ] {
            let response = app.clone().oneshot(request(uri, host)).await.expect("infallible");
            assert_eq!(response.status(), expected, "{uri} {host}");
        }
        assert_eq!(healths(&state).len(), 2, "nothing was added");
    }
}
