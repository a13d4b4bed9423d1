//! The live dashboard: the admin port's `GET /` in a browser. It shows each upstream's algorithm and each
//! backend's state, load and latency, a chart of each backend's share of the traffic over the last
//! minute, the last routing decisions with their explanation, and buttons to drain, undrain, reweight,
//! add and remove backends.
//!
//! # What the browser gets
//!
//! | path | what it is |
//! |---|---|
//! | `GET /` with `Accept: text/html` | the page (`dashboard/page.html`); `curl` (`Accept: */*`) still gets the text index |
//! | `GET /ui/dashboard.js`, `GET /ui/dashboard.css` | its script and style sheet |
//! | `GET /events` | the live feed: a `text/event-stream` ([server-sent events]) with one `snapshot` event a second |
//!
//! The page, script and style are built into the binary (`include_str!`): no CDN, no build step, no
//! request leaves the admin port, so it works offline. The chart is an inline SVG drawn by the script.
//!
//! A `snapshot` carries, per backend: its health (`healthy`, `unhealthy` after failed health checks,
//! `ejected` with the seconds left, `draining`), its slow-start ramp while it ramps, its configured and
//! effective weight and its share of the upstream's effective weight, requests in flight, requests per
//! second, error ratio (5xx answers and failed attempts over all attempts) and p50/p99 latency over the
//! last [`WINDOW`] (from the same histogram as `lb_request_duration_seconds`), the responses since the
//! previous snapshot (the chart's data), and the peak-EWMA latency; per upstream, its algorithm and
//! whether it is in panic mode; and the decisions recorded since the previous snapshot (see
//! `observe/decisions.rs`). Rates are computed here, per open page, from the counters every request
//! bumps anyway: the request path does nothing for the page but what `decisions.rs` describes.
//!
//! # How it stays inside the admin API's access rules
//!
//! The admin API refuses a foreign `Host` or `Origin` and, when `[admin] token` is set, anything without
//! `Authorization: Bearer <token>` (see `admin_access.rs`). A browser cannot put a bearer token on a page
//! it navigates to, so:
//!
//! - **The page's own three files pass the Host and Origin rules but not the token rule**
//!   ([`super::admin_access::Access::check_page`]). They are the same bytes for every caller, public in
//!   this source, and hold no data. Everything else, the feed included, needs the token as before.
//! - **The page sends the token itself**, in an `Authorization` header on every call. It takes it from
//!   the URL's fragment (`http://lb-1:9900/#token=...`), which a browser never sends to a server, so it
//!   appears in no request line, access log or `Referer`; it then removes it from the address bar and
//!   keeps it in the tab's `sessionStorage`. Without a fragment and after a 401 it asks for it in a form.
//!   Without a token configured (loopback), there is nothing to give.
//! - **The feed is read with `fetch`, not `EventSource`**: `EventSource` cannot send headers, so it could
//!   only work with a cookie or a token in the URL. The format on the wire is server-sent events all the
//!   same; the script parses it (a few lines).
//! - **No cookie.** A cookie would be sent by the browser on its own, to requests another site makes it
//!   send: the very thing the Origin and JSON rules exist to stop (CSRF). A header the page adds itself
//!   cannot be added by anyone else.
//! - **The page cannot be framed or fed foreign code**: `Content-Security-Policy` allows scripts, styles
//!   and connections to this origin only, `frame-ancestors 'none'` (and `X-Frame-Options: DENY`) stops a
//!   foreign page from laying it under its own buttons (clickjacking the drain button), and the script
//!   writes every value it shows as text, never as HTML (a backend address is data, not markup).
//!
//! # Cost
//!
//! Nothing while no page is open: no feed task, no sampling, and on the request path one relaxed load
//! (`Decisions::sample`). Each open page costs one task waking once a second to read every backend's
//! counters, and up to 100 recorded decisions a second, shared by all open pages.
//!
//! [server-sent events]: https://html.spec.whatwg.org/multipage/server-sent-events.html

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Method, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use lb_algorithms::{Health, now_nanos};
use serde::Serialize;
use tokio::sync::watch;

use crate::observe::decisions::{Decision, Watcher};
use crate::upstream::stats::{BUCKETS_SECONDS, BackendStats, FailureKind};
use crate::upstream::{Upstream, Upstreams};

/// How often an open page gets a snapshot.
pub const TICK: Duration = Duration::from_secs(1);

/// The window of the rates and percentiles.
pub const WINDOW: Duration = Duration::from_secs(10);

const PAGE: &str = include_str!("dashboard/page.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLE: &str = include_str!("dashboard/dashboard.css");

/// The script's and style sheet's paths.
pub const SCRIPT_PATH: &str = "/ui/dashboard.js";
/// The style sheet's path.
pub const STYLE_PATH: &str = "/ui/dashboard.css";

/// Everything the page may load: its own script, style and feed, nothing from elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Does a browser ask for this? A `GET` (or `HEAD`) of the page, its script or its style sheet.
pub fn is_page_request(method: &Method, path: &str, headers: &HeaderMap) -> bool {
    (*method == Method::GET || *method == Method::HEAD)
        && ((path == "/" && wants_html(headers)) || path == SCRIPT_PATH || path == STYLE_PATH)
}

/// A browser navigating to a page asks for `text/html`; `curl` sends `Accept: */*`.
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',').any(|t| t.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("text/html"))
    })
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            // A new lb binary may bring a new page: never run yesterday's script against today's feed.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The page.
pub fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

/// The script.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// The style sheet.
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// `GET /events`: a snapshot now and one every [`TICK`] until the page goes away or `stop` turns true
/// (the proxy shuts down). Opening it starts the decision feed; axum drops the stream, and with it the
/// [`Watcher`], when the connection closes.
pub fn events(upstreams: Arc<Upstreams>, watcher: Watcher, stop: Option<watch::Receiver<bool>>) -> Response {
    struct Feed {
        upstreams: Arc<Upstreams>,
        watcher: Watcher,
        window: Window,
        ticks: tokio::time::Interval,
        stop: Option<watch::Receiver<bool>>,
    }
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let feed = Feed { upstreams, watcher, window: Window::default(), ticks, stop };
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        let stopped = async {
            match &mut feed.stop {
                // An error means the proxy is gone altogether: stop too.
                Some(stop) => drop(stop.wait_for(|&s| s).await),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = feed.ticks.tick() => {}
            () = stopped => return None,
        }
        let (decisions, decisions_lost) = feed.watcher.drain();
        let upstreams = feed.window.snapshot(&feed.upstreams.all(), Instant::now());
        let snapshot = Snapshot { at_ms: unix_ms(), upstreams, decisions, decisions_lost };
        let event = Event::default().event("snapshot").json_data(&snapshot);
        let event = event.unwrap_or_else(|e| Event::default().comment(format!("snapshot not encoded: {e}")));
        Some((Ok::<_, Infallible>(event), feed))
    });
    sse(stream)
}

fn sse(stream: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> Response {
    // `no-transform`: a proxy in between must not buffer or compress the stream.
    ([(header::CACHE_CONTROL, "no-cache, no-transform")], Sse::new(stream)).into_response()
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One `snapshot` event.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    /// When it was taken, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Every upstream, in configuration order.
    pub upstreams: Vec<UpstreamLive>,
    /// The decisions recorded since the previous snapshot, oldest first.
    pub decisions: Vec<Decision>,
    /// Decisions this page missed because it fell behind.
    pub decisions_lost: u64,
}

/// One upstream in a snapshot.
#[derive(Debug, Serialize, PartialEq)]
pub struct UpstreamLive {
    /// Its name.
    pub name: String,
    /// Its algorithm.
    pub algorithm: &'static str,
    /// Too few backends are healthy, so health is ignored (see the panic threshold).
    pub panic: bool,
    /// Its backends, in order.
    pub backends: Vec<BackendLive>,
}

/// One backend in a snapshot.
#[derive(Debug, Serialize, PartialEq)]
pub struct BackendLive {
    /// `host:port`.
    pub addr: String,
    /// `healthy`, `unhealthy`, `ejected` or `draining`.
    pub health: &'static str,
    /// While ejected: seconds until it comes back.
    pub ejected_for_s: Option<f64>,
    /// While slow start ramps it up: the fraction of its weight it has now (0.1 to 1).
    pub slow_start: Option<f64>,
    /// Configured weight.
    pub weight: u32,
    /// Weight times the slow-start ramp.
    pub effective_weight: f64,
    /// Its part of the effective weight of the backends that can be picked now, in percent (0 when it
    /// cannot be picked).
    pub weight_share: f64,
    /// Requests whose response has not finished.
    pub in_flight: u64,
    /// Responses received, ever.
    pub requests: u64,
    /// Responses received since the previous snapshot: the chart's data.
    pub last_tick: u64,
    /// Responses per second over the window.
    pub rps: f64,
    /// Failed attempts and 5xx answers over all attempts in the window (`null`: none).
    pub error_rate: Option<f64>,
    /// Median latency to the response headers over the window, in milliseconds.
    pub p50_ms: Option<f64>,
    /// 99th percentile, the same way.
    pub p99_ms: Option<f64>,
    /// Peak-EWMA latency in milliseconds (`null` before the first response).
    pub ewma_ms: Option<f64>,
    /// Failed attempts in a row (outlier detection's count).
    pub consecutive_failures: u32,
}

/// A backend's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Counts {
    responses: u64,
    server_errors: u64,
    failures: u64,
    /// Non-cumulative, as `BackendStats` keeps them; the last is `+Inf`.
    buckets: [u64; BUCKETS_SECONDS.len() + 1],
}

impl Counts {
    fn of(stats: &BackendStats) -> Counts {
        let mut buckets = [0; BUCKETS_SECONDS.len() + 1];
        for (out, b) in buckets.iter_mut().zip(&stats.buckets) {
            *out = b.load(Relaxed);
        }
        Counts {
            responses: stats.requests(),
            server_errors: stats.requests_in_class(5),
            failures: FailureKind::ALL.iter().map(|&k| stats.failures(k)).sum(),
            buckets,
        }
    }

    fn minus(&self, then: &Counts) -> Counts {
        let mut buckets = self.buckets;
        for (b, t) in buckets.iter_mut().zip(&then.buckets) {
            *b = b.saturating_sub(*t);
        }
        Counts {
            responses: self.responses.saturating_sub(then.responses),
            server_errors: self.server_errors.saturating_sub(then.server_errors),
            failures: self.failures.saturating_sub(then.failures),
            buckets,
        }
    }
}

/// Backends are told apart by upstream and address: a backend removed and added again is the same one,
/// as its counters are (`Upstream` keeps them by address).
type Key = (String, String);

/// The counters of the last [`WINDOW`], one sample per snapshot, oldest first.
#[derive(Debug, Default)]
struct Window {
    samples: VecDeque<(Instant, HashMap<Key, Counts>)>,
}

impl Window {
    /// Every upstream as it is now, with rates over the window; then `now`'s counters join the window.
    fn snapshot(&mut self, upstreams: &[Arc<Upstream>], now: Instant) -> Vec<UpstreamLive> {
        while self.samples.len() > 1
            && self.samples.get(1).is_some_and(|(t, _)| now.duration_since(*t) >= WINDOW)
        {
            self.samples.pop_front();
        }
        let mut current = HashMap::new();
        let live = upstreams.iter().map(|u| self.upstream(u, now, &mut current)).collect();
        self.samples.push_back((now, current));
        live
    }

    fn upstream(
        &self,
        upstream: &Upstream,
        now: Instant,
        current: &mut HashMap<Key, Counts>,
    ) -> UpstreamLive {
        let state = upstream.load();
        let set = &state.set;
        let nanos = now_nanos();
        let options = set.options();
        let selectable: f64 =
            (0..set.len()).filter(|&i| set.is_selectable(i)).map(|i| set.effective_weight(i, nanos)).sum();
        let backends = set
            .backends()
            .iter()
            .zip(&state.stats)
            .enumerate()
            .map(|(i, (b, stats))| {
                let key = (upstream.name.clone(), b.addr().to_string());
                let counts = Counts::of(stats);
                let rates = self.rates(&key, &counts, now);
                current.insert(key, counts);
                let health = b.health();
                let effective = set.effective_weight(i, nanos);
                let ramp = b.ramp(nanos, options.slow_start);
                BackendLive {
                    addr: b.addr().to_string(),
                    health: health.as_str(),
                    ejected_for_s: (health == Health::Ejected)
                        .then(|| stats.ejected_until())
                        .flatten()
                        .map(|until| round(until.saturating_sub(nanos) as f64 / 1e9, 1)),
                    slow_start: (ramp < 1.0).then(|| round(ramp, 3)),
                    weight: b.weight(),
                    effective_weight: round(effective, 3),
                    weight_share: if set.is_selectable(i) && selectable > 0.0 {
                        round(100.0 * effective / selectable, 1)
                    } else {
                        0.0
                    },
                    in_flight: b.in_flight(),
                    requests: counts.responses,
                    ewma_ms: b.ewma(nanos, options.ewma_decay).map(|ns| round(ns / 1e6, 2)),
                    consecutive_failures: stats.consecutive_failures(),
                    ..rates
                }
            })
            .collect();
        UpstreamLive {
            name: upstream.name.clone(),
            algorithm: state.balancer.algorithm().name(),
            panic: set.in_panic(),
            backends,
        }
    }

    /// The windowed figures of one backend, in a `BackendLive` whose other fields are left empty.
    fn rates(&self, key: &Key, counts: &Counts, now: Instant) -> BackendLive {
        let previous = self.samples.back().and_then(|(_, s)| s.get(key));
        // The oldest sample that knows this backend (a backend added a moment ago is in the newer ones only).
        let oldest = self.samples.iter().find_map(|(t, s)| s.get(key).map(|c| (*t, c)));
        let mut live = BackendLive {
            addr: String::new(),
            health: "",
            ejected_for_s: None,
            slow_start: None,
            weight: 0,
            effective_weight: 0.0,
            weight_share: 0.0,
            in_flight: 0,
            requests: 0,
            last_tick: previous.map_or(0, |p| counts.responses.saturating_sub(p.responses)),
            rps: 0.0,
            error_rate: None,
            p50_ms: None,
            p99_ms: None,
            ewma_ms: None,
            consecutive_failures: 0,
        };
        let Some((then, old)) = oldest else { return live };
        let seconds = now.duration_since(then).as_secs_f64();
        let delta = counts.minus(old);
        if seconds > 0.0 {
            live.rps = round(delta.responses as f64 / seconds, 1);
        }
        let attempts = delta.responses + delta.failures;
        if attempts > 0 {
            live.error_rate = Some(round((delta.server_errors + delta.failures) as f64 / attempts as f64, 4));
        }
        live.p50_ms = quantile(&delta.buckets, 0.5).map(|s| round(s * 1e3, 2));
        live.p99_ms = quantile(&delta.buckets, 0.99).map(|s| round(s * 1e3, 2));
        live
    }
}

/// The `q` quantile of a histogram, in seconds, as Prometheus's `histogram_quantile` estimates it: the
/// bucket it falls in, then linear interpolation inside it (the first bucket starts at 0; in `+Inf`
/// the answer is the highest finite bound). `None` without observations.
fn quantile(buckets: &[u64; BUCKETS_SECONDS.len() + 1], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &count) in buckets.iter().enumerate() {
        if count > 0 && (below + count) as f64 >= rank {
            let Some(&upper) = BUCKETS_SECONDS.get(i) else { return BUCKETS_SECONDS.last().copied() };
            let lower = if i == 0 { 0.0 } else { BUCKETS_SECONDS[i - 1] };
            return Some(lower + (upper - lower) * (rank - below as f64) / count as f64);
        }
        below += count;
    }
    BUCKETS_SECONDS.last().copied()
}

fn round(v: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (v * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamConfig;
    use lb_algorithms::{Algorithm, BackendSpec};

    fn buckets(pairs: &[(usize, u64)]) -> [u64; BUCKETS_SECONDS.len() + 1] {
        let mut b = [0; BUCKETS_SECONDS.len() + 1];
        for &(i, n) in pairs {
            b[i] = n;
        }
        b
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket_as_prometheus_does() {
        assert_eq!(quantile(&buckets(&[]), 0.5), None);
        // 100 observations in (5 ms, 10 ms]: the median is halfway, 7.5 ms.
        let half = quantile(&buckets(&[(4, 100)]), 0.5).unwrap_or(0.0);
        assert!((half - 0.0075).abs() < 1e-12, "{half}");
        // 90 in the first bucket (<= 0.5 ms), 10 in (50 ms, 100 ms]: p99 is rank 99, the 9th of those 10.
        let p99 = quantile(&buckets(&[(0, 90), (7, 10)]), 0.99).unwrap_or(0.0);
        assert!((p99 - (0.05 + 0.05 * 9.0 / 10.0)).abs() < 1e-12, "{p99}");
        // In `+Inf`: the highest finite bound.
        assert_eq!(quantile(&buckets(&[(14, 3)]), 0.5), Some(10.0));
    }

    fn group() -> Arc<Upstream> {
        let config = UpstreamConfig::new(
            "app",
            Algorithm::RoundRobin,
            vec![BackendSpec::new("127.0.0.1:9001"), BackendSpec::weighted("127.0.0.1:9002", 3)],
        );
        match Upstream::new(config) {
            Ok(u) => Arc::new(u),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn rates_errors_and_percentiles_come_from_the_counters_of_the_window() {
        let upstream = group();
        let stats = Arc::clone(&upstream.load().stats[0]);
        let mut window = Window::default();
        let start = Instant::now();
        let first = window.snapshot(std::slice::from_ref(&upstream), start);
        let b = &first[0].backends[0];
        assert_eq!((b.rps, b.last_tick, b.error_rate, b.p50_ms), (0.0, 0, None, None));
        // Two seconds: 18 answers of 7 ms, 2 of them 503s, and 2 refused connects.
        for i in 0..18 {
            stats.record_response(if i < 2 { 503 } else { 200 }, Duration::from_millis(7));
        }
        stats.record_failure(FailureKind::Connect);
        stats.record_failure(FailureKind::Connect);
        let later = window.snapshot(std::slice::from_ref(&upstream), start + Duration::from_secs(2));
        let b = &later[0].backends[0];
        assert_eq!((b.requests, b.last_tick, b.rps), (18, 18, 9.0));
        assert_eq!(b.error_rate, Some(0.2), "(2 + 2) of 20 attempts");
        // All in (5 ms, 10 ms]: p50 interpolates to 7.5 ms, p99 to 9.95 ms.
        assert_eq!((b.p50_ms, b.p99_ms), (Some(7.5), Some(9.95)));
        let other = &later[0].backends[1];
        assert_eq!((other.requests, other.weight, other.weight_share), (0, 3, 75.0));
        assert_eq!(b.weight_share, 25.0);
        // Past the window, the first sample drops out: nothing new, nothing per second.
        let quiet = window.snapshot(std::slice::from_ref(&upstream), start + WINDOW + Duration::from_secs(3));
        let b = &quiet[0].backends[0];
        assert_eq!((b.last_tick, b.rps, b.error_rate), (0, 0.0, None));
    }

    #[test]
    fn a_drained_or_ejected_backend_has_no_share_and_an_ejection_shows_its_time_left() {
        let upstream = group();
        let state = upstream.load();
        let now = now_nanos();
        state.stats[1].ejected_until.store(now + 30_000_000_000, Relaxed);
        assert!(upstream.set_health("127.0.0.1:9002", Health::Ejected));
        let live = Window::default().snapshot(std::slice::from_ref(&upstream), Instant::now());
        let b = &live[0].backends[1];
        assert_eq!((b.health, b.weight_share), ("ejected", 0.0));
        let left = b.ejected_for_s.unwrap_or(0.0);
        assert!(left > 29.0 && left <= 30.0, "{left}");
        assert_eq!(live[0].backends[0].weight_share, 100.0);
        assert!(!live[0].panic, "one of two healthy is not below the 50% panic threshold");
        assert!(upstream.set_health("127.0.0.1:9001", Health::Unhealthy));
        let live = Window::default().snapshot(std::slice::from_ref(&upstream), Instant::now());
        assert!(live[0].panic, "none healthy: panic mode");
        assert_eq!(live[0].backends[0].health, "unhealthy");
    }

    #[test]
    fn browsers_get_the_page_and_curl_the_index() {
        let with = |accept: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, accept.parse().unwrap_or_else(|e| panic!("{e}")));
            h
        };
        let chrome = with("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8");
        assert!(is_page_request(&Method::GET, "/", &chrome));
        assert!(!is_page_request(&Method::GET, "/", &with("*/*")), "curl");
        assert!(!is_page_request(&Method::GET, "/", &HeaderMap::new()));
        assert!(!is_page_request(&Method::POST, "/", &chrome));
        assert!(!is_page_request(&Method::GET, "/backends", &chrome), "the data needs the token");
        assert!(!is_page_request(&Method::GET, "/events", &chrome));
        assert!(is_page_request(&Method::GET, SCRIPT_PATH, &with("*/*")));
        assert!(is_page_request(&Method::GET, STYLE_PATH, &HeaderMap::new()));
    }
}
