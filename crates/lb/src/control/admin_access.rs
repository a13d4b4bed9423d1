//! Who may use the admin API: the rules every admin request passes before its handler runs.
//!
//! The admin API changes what the proxy does (it adds, removes and drains backends and reloads the
//! file), so it is closed by default against the three ways it could otherwise be reached:
//!
//! | rule | refused with | the attack it stops |
//! |---|---|---|
//! | without a token, `Host` is the admin's own address: `127.0.0.1:PORT`, `localhost:PORT`, `[::1]:PORT` (or the address it is bound to) | 421 | **DNS rebinding**: a page from `evil.example` whose DNS name is re-pointed at 127.0.0.1 reaches the loopback port, but its requests still say `Host: evil.example:PORT` |
//! | a request that carries `Origin` comes from the admin's own origin, `http://` + its `Host` | 403 | **CSRF**: a page on another site posting to the admin API from the operator's browser (browsers add `Origin` to every cross-origin request and to every `POST`) |
//! | with a token, `Authorization: Bearer <token>`, compared in constant time | 401 | anyone else who can reach the port |
//! | a write (`POST`, `PUT`, `PATCH`, `DELETE`) that sends a body says `Content-Type: application/json` | 415 | **CSRF** again: a form or a `no-cors` fetch sends `text/plain`, form-encoded or multipart bodies without asking, but not JSON, which needs a CORS preflight that lb never answers |
//!
//! **Loopback without a token** stays allowed, so `curl 127.0.0.1:9900/backends` in the lessons needs
//! nothing more: only processes on this machine reach the port, and the Host, Origin and JSON rules
//! keep a browser on this machine from being used against it. **Any other address needs a token**:
//! `lb check`, start and reload refuse `admin.listen = "0.0.0.0:9900"` without one
//! ([`crate::config::AdminConfig::open_to_the_network`]). With a token the Host rule is off: the API is
//! then reached under whatever name the operator gives it, and a browser cannot add a bearer token it
//! was never given.
//!
//! **The dashboard's own files** (its page, script and style sheet, see `dashboard.rs`) pass the Host
//! and Origin rules but not the token rule ([`Access::check_page`]): a browser cannot put a bearer token
//! on a page it navigates to, and these files are the same public bytes for everyone. The page then
//! sends the token itself on every call that reads or changes anything.
//!
//! The token is compared with `subtle`'s constant-time equality, so the time an answer takes does not
//! say how many leading characters of a guess were right (only its length, as with every such check).
//!
//! The same elsewhere: Envoy's admin has no authentication and its docs say to bind it to loopback;
//! HAProxy's stats page takes `stats auth user:password`; Kubernetes' API server takes bearer tokens.
//! The Host and Origin checks are what local development servers adopted after DNS-rebinding attacks
//! (webpack-dev-server's `allowedHosts`, Vite's `server.allowedHosts`).

use std::net::SocketAddr;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq as _;

use crate::config::AdminToken;

/// The admin API's rules, fixed when it starts (its address and token are restart-only settings).
#[derive(Debug, Clone)]
pub struct Access {
    token: Option<AdminToken>,
    /// The `Host` values a request may carry when there is no token, lowercase.
    own_hosts: Vec<String>,
}

/// Why a request was refused, and with which status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 401, 403, 415 or 421.
    pub status: StatusCode,
    /// The reason, for the JSON body.
    pub message: String,
}

impl Access {
    /// The rules for an admin API bound to `bound`, with or without a token.
    pub fn new(bound: SocketAddr, token: Option<AdminToken>) -> Access {
        let port = bound.port();
        let mut names = vec![bound.ip().to_string()];
        if bound.ip().is_loopback() {
            names.extend(["127.0.0.1", "localhost", "::1"].map(String::from));
        }
        let mut own_hosts = Vec::new();
        for name in names {
            // An IPv6 literal is written in brackets in `Host`.
            let name = if name.contains(':') { format!("[{name}]") } else { name };
            // Port 80 may be left out of `Host`; no other may.
            if port == 80 {
                own_hosts.push(name.clone());
            }
            own_hosts.push(format!("{name}:{port}"));
        }
        own_hosts.dedup();
        Access { token, own_hosts }
    }

    /// Whether a token is required.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// The `Host` values accepted without a token, for messages and the index.
    pub fn own_hosts(&self) -> &[String] {
        &self.own_hosts
    }

    /// Apply the rules, in the order of the table above.
    pub fn check(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<(), Refusal> {
        self.check_host_and_origin(uri, headers)?;
        if let Some(token) = &self.token
            && !bearer_matches(headers.get(header::AUTHORIZATION), token)
        {
            return Err(Refusal {
                status: StatusCode::UNAUTHORIZED,
                message: "this admin API needs the header \"Authorization: Bearer <token>\" with its token"
                    .to_string(),
            });
        }
        if matches!(*method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE) {
            check_json_body(method, headers)?;
        }
        Ok(())
    }

    /// The rules for the dashboard's own files (its page, script and style sheet): Host and Origin,
    /// but no token, because a browser cannot send a bearer token when it navigates to a page. They
    /// are the same bytes for everyone, built into the binary, and carry no data; everything the page
    /// then shows or does goes through [`Access::check`] with the token the page was given.
    pub fn check_page(&self, uri: &Uri, headers: &HeaderMap) -> Result<(), Refusal> {
        self.check_host_and_origin(uri, headers)
    }

    /// The Host rule (without a token) and the Origin rule.
    fn check_host_and_origin(&self, uri: &Uri, headers: &HeaderMap) -> Result<(), Refusal> {
        // HTTP/2 carries the host in `:authority`, which ends up in the URI rather than in `Host`.
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| uri.authority().map(|a| a.as_str()))
            .map(str::to_ascii_lowercase);
        if self.token.is_none() && !host.as_ref().is_some_and(|h| self.own_hosts.contains(h)) {
            return Err(Refusal {
                status: StatusCode::MISDIRECTED_REQUEST,
                message: format!(
                    "Host {} is not this admin API's address ({}): refused, as a DNS-rebinding page would send it",
                    quoted(host.as_deref()),
                    self.own_hosts.join(", ")
                ),
            });
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let own = host.as_ref().map(|h| format!("http://{h}"));
            let origin = origin.to_str().ok().map(str::to_ascii_lowercase);
            if origin.is_none() || origin != own {
                return Err(Refusal {
                    status: StatusCode::FORBIDDEN,
                    message: format!(
                        "Origin {} is not this admin API's own ({}): cross-origin requests are refused",
                        quoted(origin.as_deref()),
                        own.as_deref().unwrap_or("none without a Host")
                    ),
                });
            }
        }
        Ok(())
    }
}

/// A write's body, if it has one, must be declared JSON.
fn check_json_body(method: &Method, headers: &HeaderMap) -> Result<(), Refusal> {
    let refuse = |what: String| Refusal {
        status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
        message: format!(
            "{method} with {what}: the admin API takes JSON bodies only (Content-Type: application/json)"
        ),
    };
    match headers.get(header::CONTENT_TYPE) {
        Some(value) if is_json(value) => Ok(()),
        Some(value) => Err(refuse(format!("Content-Type {}", quoted(value.to_str().ok())))),
        None if has_body(headers) => Err(refuse("a body and no Content-Type".to_string())),
        None => Ok(()),
    }
}

/// `application/json`, with or without parameters (`; charset=utf-8`).
fn is_json(value: &HeaderValue) -> bool {
    let Ok(value) = value.to_str() else { return false };
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

fn has_body(headers: &HeaderMap) -> bool {
    let length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok());
    headers.contains_key(header::TRANSFER_ENCODING) || length.is_some_and(|l| l.trim() != "0")
}

/// `Bearer <token>` (the scheme's case does not matter, RFC 9110 §11.1), with the token compared in
/// constant time.
fn bearer_matches(value: Option<&HeaderValue>, token: &AdminToken) -> bool {
    let Some(value) = value else { return false };
    let value = value.as_bytes();
    let Some((scheme, given)) = value.split_at_checked(7) else { return false };
    scheme.eq_ignore_ascii_case(b"bearer ") && bool::from(given.ct_eq(token.expose().as_bytes()))
}

fn quoted(value: Option<&str>) -> String {
    value.map_or_else(|| "(none)".to_string(), |v| format!("{v:?}"))
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = axum::Json(serde_json::json!({ "error": self.message }));
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6750 §3: a 401 names the scheme it wants.
            (self.status, [(header::WWW_AUTHENTICATE, "Bearer realm=\"lb admin\"")], body).into_response()
        } else {
            (self.status, body).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(fields: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in fields {
            let name: header::HeaderName = name.parse().unwrap_or_else(|e| panic!("{e}"));
            h.append(name, HeaderValue::from_str(value).unwrap_or_else(|e| panic!("{e}")));
        }
        h
    }

    fn status(access: &Access, method: Method, fields: &[(&str, &str)]) -> u16 {
        let uri = Uri::from_static("/backends");
        match access.check(&method, &uri, &headers(fields)) {
            Ok(()) => 200,
            Err(r) => r.status.as_u16(),
        }
    }

    fn loopback() -> Access {
        Access::new(SocketAddr::from(([127, 0, 0, 1], 9900)), None)
    }

    #[test]
    fn loopback_names_are_the_own_hosts() {
        assert_eq!(loopback().own_hosts(), ["127.0.0.1:9900", "localhost:9900", "[::1]:9900"]);
        let v6 = Access::new("[::1]:80".parse().unwrap_or_else(|e| panic!("{e}")), None);
        assert!(v6.own_hosts().contains(&"localhost".to_string()), "{:?}", v6.own_hosts());
    }

    #[test]
    fn host_origin_and_content_type_without_a_token() {
        let a = loopback();
        let get = Method::GET;
        assert_eq!(status(&a, get.clone(), &[("host", "127.0.0.1:9900")]), 200);
        assert_eq!(status(&a, get.clone(), &[("host", "LOCALHOST:9900")]), 200);
        assert_eq!(status(&a, get.clone(), &[("host", "evil.example:9900")]), 421);
        assert_eq!(status(&a, get.clone(), &[("host", "127.0.0.1:9901")]), 421);
        assert_eq!(status(&a, get.clone(), &[]), 421);
        let own = ("origin", "http://127.0.0.1:9900");
        assert_eq!(status(&a, get.clone(), &[("host", "127.0.0.1:9900"), own]), 200);
        assert_eq!(status(&a, get.clone(), &[("host", "127.0.0.1:9900"), ("origin", "null")]), 403);
        // Same host, other name: another origin as far as a browser is concerned.
        assert_eq!(status(&a, get, &[("host", "localhost:9900"), own]), 403);
        let post = |fields: &[(&str, &str)]| {
            let mut all = vec![("host", "127.0.0.1:9900")];
            all.extend_from_slice(fields);
            status(&a, Method::POST, &all)
        };
        assert_eq!(post(&[]), 200, "a body-less POST (drain) needs no Content-Type");
        assert_eq!(post(&[("content-type", "application/json"), ("content-length", "2")]), 200);
        assert_eq!(post(&[("content-type", "Application/JSON; charset=utf-8")]), 200);
        assert_eq!(post(&[("content-type", "text/plain"), ("content-length", "2")]), 415);
        assert_eq!(post(&[("content-type", "application/x-www-form-urlencoded")]), 415);
        assert_eq!(post(&[("content-length", "5")]), 415);
        assert_eq!(post(&[("transfer-encoding", "chunked")]), 415);
    }

    #[test]
    fn an_http2_request_is_checked_on_its_authority() {
        // HTTP/2 has no `Host` line: `:authority` arrives as the URI's authority.
        let a = loopback();
        let check = |uri: &'static str| a.check(&Method::GET, &Uri::from_static(uri), &HeaderMap::new());
        assert_eq!(check("http://127.0.0.1:9900/backends"), Ok(()));
        let refused = check("http://evil.example:9900/backends").err().map(|r| r.status);
        assert_eq!(refused, Some(StatusCode::MISDIRECTED_REQUEST));
    }

    #[test]
    fn a_token_is_required_when_set_and_replaces_the_host_rule() {
        let token = AdminToken::new("s3cret").unwrap_or_else(|e| panic!("{e}"));
        let a = Access::new(SocketAddr::from(([0, 0, 0, 0], 9900)), Some(token));
        let host = ("host", "lb-1.internal:9900");
        assert_eq!(status(&a, Method::GET, &[host]), 401);
        assert_eq!(status(&a, Method::GET, &[host, ("authorization", "Bearer s3cre")]), 401);
        assert_eq!(status(&a, Method::GET, &[host, ("authorization", "Bearer s3cret2")]), 401);
        assert_eq!(status(&a, Method::GET, &[host, ("authorization", "Basic s3cret")]), 401);
        assert_eq!(status(&a, Method::GET, &[host, ("authorization", "Bearer s3cret")]), 200);
        assert_eq!(status(&a, Method::GET, &[host, ("authorization", "bearer s3cret")]), 200);
        // The Origin rule still holds with a token.
        let evil = ("origin", "http://evil.example");
        assert_eq!(status(&a, Method::GET, &[host, ("authorization", "Bearer s3cret"), evil]), 403);
    }

    #[test]
    fn the_dashboards_files_need_no_token_but_still_their_own_host_and_origin() {
        let uri = Uri::from_static("/");
        let token = AdminToken::new("s3cret").unwrap_or_else(|e| panic!("{e}"));
        let with_token = Access::new(SocketAddr::from(([127, 0, 0, 1], 9900)), Some(token));
        let host = ("host", "127.0.0.1:9900");
        assert_eq!(with_token.check_page(&uri, &headers(&[host])), Ok(()));
        assert_eq!(status(&with_token, Method::GET, &[host]), 401, "everything else needs it");
        let evil = ("origin", "http://evil.example");
        let refused = with_token.check_page(&uri, &headers(&[host, evil])).err().map(|r| r.status);
        assert_eq!(refused, Some(StatusCode::FORBIDDEN));
        let rebound = loopback().check_page(&uri, &headers(&[("host", "evil.example:9900")]));
        assert_eq!(rebound.err().map(|r| r.status), Some(StatusCode::MISDIRECTED_REQUEST));
    }

    #[test]
    fn a_refusal_is_json_and_a_401_names_its_scheme() {
        let r = Refusal { status: StatusCode::UNAUTHORIZED, message: "no".to_string() }.into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer realm=\"lb admin\"");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    }
}
