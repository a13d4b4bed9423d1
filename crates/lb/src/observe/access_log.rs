//! The access log: one JSON line per request, through `tracing`, off by default.
//!
//! Turned on with `[admin] access_log = true`. Each finished request becomes one `tracing` event at
//! `INFO` with target `lb::access`, whose message is a complete JSON object:
//!
//! ```text
//! {"time":"2025-01-01T12:00:00.123Z","client":"127.0.0.1:51234","method":"GET","path":"/","upstream":"app",
//!  "backend":"127.0.0.1:9001","status":200,"duration_ms":0.41,"attempts":1,"request_id":"c0ffee-1"}
//! ```
//!
//! (one line in the real log). The JSON is built here rather than left to a JSON `tracing` formatter so
//! that the line has the same shape whatever the process's log format is; `RUST_LOG=lb::access=info`
//! selects it, and `grep -o '{.*}'` extracts it for `jq`.
//!
//! **Why off by default:** formatting and writing a line costs more than everything else the proxy does
//! for a small request (an allocation, a JSON encoder, a write to stderr under a lock). Metrics answer
//! "how many and how fast" for free; the access log answers "which request", at a price.
//!
//! The same thing elsewhere: nginx `access_log` with `log_format ... escape=json`, HAProxy `option
//! httplog` with `log-format "%{+json}o ..."`, Envoy `access_log` with `json_format`.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// Everything the access log says about one request. The proxy fills it when the response is done.
#[derive(Debug, Clone)]
pub struct AccessLogEntry<'a> {
    /// When the request arrived.
    pub time: SystemTime,
    /// The client's address.
    pub client: Option<SocketAddr>,
    /// The HTTP method.
    pub method: &'a str,
    /// The path (without the query string, which may carry secrets).
    pub path: &'a str,
    /// The upstream it was routed to (`None`: no route).
    pub upstream: Option<&'a str>,
    /// The backend that answered last (`None`: none was picked).
    pub backend: Option<&'a str>,
    /// The status sent to the client.
    pub status: u16,
    /// From arrival to the end of the response.
    pub duration: Duration,
    /// Attempts made (1 without retries; 0 if no backend was tried).
    pub attempts: u32,
    /// The request id (`X-Request-Id`, received or generated).
    pub request_id: &'a str,
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    client: Option<String>,
    method: &'a str,
    path: &'a str,
    upstream: Option<&'a str>,
    backend: Option<&'a str>,
    status: u16,
    duration_ms: f64,
    attempts: u32,
    request_id: &'a str,
}

impl AccessLogEntry<'_> {
    /// The JSON object, on one line.
    pub fn to_json(&self) -> String {
        let line = Line {
            time: humantime_serde::re::humantime::format_rfc3339_millis(self.time).to_string(),
            client: self.client.map(|c| c.to_string()),
            method: self.method,
            path: self.path,
            upstream: self.upstream,
            backend: self.backend,
            status: self.status,
            // Microsecond resolution is plenty for a log and keeps lines short.
            duration_ms: (self.duration.as_secs_f64() * 1e6).round() / 1e3,
            attempts: self.attempts,
            request_id: self.request_id,
        };
        // Serializing plain strings and numbers cannot fail; an empty object is the honest fallback.
        serde_json::to_string(&line).unwrap_or_else(|_| "{}".to_string())
    }
}

/// Log one request (call only when the access log is on: the check is the caller's, so a disabled log
/// costs nothing, not even building the entry).
pub fn access_log(entry: &AccessLogEntry<'_>) {
    tracing::info!(target: "lb::access", "{}", entry.to_json());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_one_line_of_json_with_every_field() {
        let entry = AccessLogEntry {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            client: Some("127.0.0.1:51234".parse().expect("valid")),
            method: "GET",
            path: "/a\"b",
            upstream: Some("app"),
            backend: Some("127.0.0.1:9001"),
            status: 200,
            duration: Duration::from_micros(1_234),
            attempts: 2,
            request_id: "r-1",
        };
        assert_eq!(
            entry.to_json(),
            r#"{"time":"2023-11-14T22:13:20.123Z","client":"127.0.0.1:51234","method":"GET","path":"/a\"b","upstream":"app","backend":"127.0.0.1:9001","status":200,"duration_ms":1.234,"attempts":2,"request_id":"r-1"}"#
        );
        let none = AccessLogEntry { upstream: None, backend: None, client: None, ..entry };
        assert!(none.to_json().contains(r#""upstream":null,"backend":null"#));
    }
}
