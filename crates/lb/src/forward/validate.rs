//! Requests the proxy refuses before choosing a backend: a bad `Host`, a target we do not serve, a body
//! over the limit.
//!
//! # Why the proxy, not the backend, must refuse these
//!
//! The proxy routes by `Host` and the backend application reads `Host` again (to build links, to pick a
//! tenant, as a cache key). If the two can read a request differently, the difference is an attack:
//! two `Host` lines routed by the first and read by the last reach a site the routing rule was meant to
//! keep out, and a `Host` the backend cannot parse may fall back to something else. RFC 9112 section
//! 3.2 therefore makes three cases a hard 400 for any server: an HTTP/1.1 request without `Host`, more
//! than one `Host`, and a `Host` that is not a valid `host[:port]`. nginx and HAProxy both answer 400.
//!
//! # Not an open proxy
//!
//! A client that thinks `lb` is a forward proxy sends an absolute-form target, `GET http://evil.example/
//! HTTP/1.1`. Routing that by the `Host` header (as `lb` once did) would send it to one of our backends
//! anyway, but accepting *any* authority invites port scanners and cache poisoning that relies on the
//! URI and the `Host` disagreeing. RFC 9112 section 3.2.2 says the URI's authority wins over `Host`;
//! so `lb` uses the authority, and answers **421 Misdirected Request** unless some upstream names that
//! host in its `hosts` list. An upstream with `hosts = []` takes any `Host` header, but it does not
//! make `lb` a forward proxy for any absolute URI: a real reverse-proxy client never sends one.
//!
//! HTTP/2 is different: every request carries its authority in the `:authority` pseudo-header (hyper
//! shows it as an absolute URI), and usually no `Host` line. RFC 9113 section 8.3.1 has a proxy that
//! forwards such a request over HTTP/1.1 make a `Host` from `:authority`, so the backend sees the host the
//! client asked for (before, it got the backend's own address). It is put into the map here, before
//! routing, so every forwarding path and `X-Forwarded-Host` see it as they see an HTTP/1 client's. A
//! `Host` beside an `:authority` that names another host is refused (400): the section says a server
//! should treat it as malformed, and routing by one while the backend reads the other is the
//! disagreement the checks above exist to prevent.
//!
//! # Bodies
//!
//! A `Content-Length` over `max_body_bytes` is answered 413 before any byte of the body is read or
//! forwarded (nginx's `client_max_body_size`); chunked bodies are counted as they stream (see
//! [`crate::net::limits`]).

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::Authority;
use http::{StatusCode, Version};

use crate::upstream::Upstreams;

/// Why a request was refused: its status and a one-line body.
pub type Refusal = (StatusCode, String);

/// Check a request before routing; on an absolute-form target whose host we serve, replace `Host` with
/// the target's authority (the RFC's rule), so routing and the backend see the same host.
pub fn check(parts: &mut Parts, upstreams: &Upstreams, max_body: Option<u64>) -> Result<(), Refusal> {
    if let Some(max) = max_body
        && let Some(len) = parts.headers.get(header::CONTENT_LENGTH)
        && len.to_str().ok().and_then(|l| l.parse::<u64>().ok()).is_some_and(|l| l > max)
    {
        return Err((StatusCode::PAYLOAD_TOO_LARGE, format!("request body over {max} bytes\n")));
    }
    if !matches!(parts.version, Version::HTTP_10 | Version::HTTP_11 | Version::HTTP_09) {
        return authority_as_host(parts);
    }
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(bad("more than one Host header"));
    }
    match host {
        None if parts.version == Version::HTTP_11 => return Err(bad("missing Host header")),
        Some(h) if !valid_host(h) => return Err(bad("invalid Host header")),
        _ => {}
    }
    if parts.uri.scheme().is_some() {
        let Some(authority) = parts.uri.authority() else {
            return Err(bad("absolute URI without a host"));
        };
        let name = authority.host();
        let served =
            upstreams.all().iter().any(|u| u.config.hosts.iter().any(|h| h.eq_ignore_ascii_case(name)));
        if !served {
            return Err((StatusCode::MISDIRECTED_REQUEST, format!("this proxy does not serve {name}\n")));
        }
        if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
            parts.headers.insert(header::HOST, v);
        }
    }
    Ok(())
}

/// An HTTP/2 request (not on the HTTP/1 hot path): `Host` made from `:authority` when it has none
/// (RFC 9113 section 8.3.1), refused when it has one naming another host.
fn authority_as_host(parts: &mut Parts) -> Result<(), Refusal> {
    let Some(authority) = parts.uri.authority() else { return Ok(()) };
    match parts.headers.get(header::HOST) {
        Some(host) if !host.as_bytes().eq_ignore_ascii_case(authority.as_str().as_bytes()) => {
            Err(bad("Host differs from :authority"))
        }
        Some(_) => Ok(()),
        None => {
            if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
                parts.headers.insert(header::HOST, v);
            }
            Ok(())
        }
    }
}

fn bad(why: &str) -> Refusal {
    (StatusCode::BAD_REQUEST, format!("{why}\n"))
}

/// `host[:port]` with nothing else: no user info, no path, no spaces. An empty value is allowed (RFC
/// 9112 3.2: a request whose target has no authority sends an empty `Host`).
fn valid_host(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    if bytes.is_empty() {
        return true;
    }
    // The common shapes (`name`, `name:port`, an IPv4 address) checked byte by byte: parsing an
    // `Authority` for every request cost more than the rest of this module. Anything else (an IPv6
    // literal, percent-encoding, odd characters) takes the full parse below.
    let (host, port) = match bytes.iter().rposition(|&b| b == b':') {
        Some(colon) => (&bytes[..colon], Some(&bytes[colon + 1..])),
        None => (bytes, None),
    };
    let plain = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~');
    if !host.is_empty() && host.iter().all(plain) {
        return port.is_none_or(|p| {
            !p.is_empty() && p.len() <= 5 && p.iter().all(u8::is_ascii_digit) && valid_port(p)
        });
    }
    valid_authority(bytes)
}

/// The full rule, through `http`'s `Authority` parser.
fn valid_authority(bytes: &[u8]) -> bool {
    if bytes.contains(&b'@') {
        return false;
    }
    let Ok(a) = Authority::try_from(bytes) else { return false };
    // `Authority` takes any characters after the colon; a port is digits that fit in 16 bits.
    let port_ok = match &a.as_str()[a.host().len()..] {
        "" => true,
        rest => rest.strip_prefix(':').is_some_and(|p| !p.is_empty() && p.parse::<u16>().is_ok()),
    };
    !a.host().is_empty() && port_ok
}

/// Digits that fit in 16 bits.
fn valid_port(digits: &[u8]) -> bool {
    digits.iter().try_fold(0u32, |n, &d| Some(n * 10 + u32::from(d - b'0'))).is_some_and(|n| n <= 65535)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamConfig;
    use http::Request;
    use lb_algorithms::{Algorithm, BackendSpec};

    fn upstreams() -> Upstreams {
        let mut shop =
            UpstreamConfig::new("shop", Algorithm::RoundRobin, vec![BackendSpec::new("127.0.0.1:1")]);
        shop.hosts = vec!["shop.example".into()];
        let any = UpstreamConfig::new("any", Algorithm::RoundRobin, vec![BackendSpec::new("127.0.0.1:2")]);
        Upstreams::new(&[shop, any]).unwrap_or_else(|e| panic!("{e}"))
    }

    fn checked(raw: Request<()>, max_body: Option<u64>) -> Result<Parts, u16> {
        let (mut parts, ()) = raw.into_parts();
        check(&mut parts, &upstreams(), max_body).map(|()| parts).map_err(|(s, _)| s.as_u16())
    }

    fn req(uri: &str, version: Version, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri(uri).version(version);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn host_rules_of_rfc_9112() {
        let h11 = Version::HTTP_11;
        assert!(checked(req("/", h11, &[("host", "lb.test:8080")]), None).is_ok());
        assert!(checked(req("/", h11, &[("host", "[::1]:8080")]), None).is_ok());
        assert_eq!(checked(req("/", h11, &[]), None).err(), Some(400), "1.1 without Host");
        assert!(checked(req("/", Version::HTTP_10, &[]), None).is_ok(), "1.0 may omit it");
        assert_eq!(checked(req("/", h11, &[("host", "a"), ("host", "b")]), None).err(), Some(400));
        for bad in ["lb test", "user@lb.test", "lb.test/x", "lb.test:x", ":80"] {
            assert_eq!(checked(req("/", h11, &[("host", bad)]), None).err(), Some(400), "{bad}");
        }
        assert!(checked(req("/", Version::HTTP_2, &[]), None).is_ok(), "h2 uses :authority");
    }

    #[test]
    fn an_h2_requests_authority_becomes_its_host() {
        let h2 = Version::HTTP_2;
        let parts = checked(req("http://shop.example/x", h2, &[]), None).unwrap_or_else(|s| panic!("{s}"));
        assert_eq!(parts.headers[header::HOST], "shop.example");
        let same = checked(req("http://shop.example/x", h2, &[("host", "SHOP.example")]), None);
        assert_eq!(same.map(|p| p.headers.len()).ok(), Some(1), "a Host that agrees is kept as it is");
        let other = checked(req("http://shop.example/x", h2, &[("host", "evil.example")]), None);
        assert_eq!(other.err(), Some(400));
    }

    proptest::proptest! {
        /// The byte-by-byte shortcut says what the full `Authority` parse says, whatever the input.
        #[test]
        fn the_host_shortcut_agrees_with_the_full_parse(host in "[a-zA-Z0-9._~@:/ \\[\\]%-]{1,12}") {
            let v = HeaderValue::from_str(&host).unwrap_or_else(|e| panic!("{e}"));
            proptest::prop_assert_eq!(valid_host(&v), valid_authority(host.as_bytes()), "{}", host);
        }
    }

    #[test]
    fn the_host_shortcut_checks_ports() {
        for (host, ok) in [
            ("a:65535", true),
            ("a:65536", false),
            ("a:0", true),
            ("a:", false),
            ("a:123456", false),
            ("1.2.3.4:80", true),
            ("x_y~z", true),
            ("a::1", false),
        ] {
            let v = HeaderValue::from_static(host);
            assert_eq!((host, valid_host(&v)), (host, ok));
            assert_eq!((host, valid_authority(host.as_bytes())), (host, ok));
        }
    }

    #[test]
    fn absolute_form_must_name_a_host_we_serve_and_then_wins_over_host() {
        let h11 = Version::HTTP_11;
        let refused = checked(req("http://evil.example/x", h11, &[("host", "shop.example")]), None);
        assert_eq!(refused.err(), Some(421));
        let parts = checked(req("http://SHOP.example:8080/x", h11, &[("host", "other")]), None)
            .unwrap_or_else(|s| panic!("{s}"));
        assert_eq!(parts.headers[header::HOST], "SHOP.example:8080");
    }

    #[test]
    fn declared_body_over_the_limit_is_413() {
        let h11 = Version::HTTP_11;
        let r = |len: &str| req("/", h11, &[("host", "a"), ("content-length", len)]);
        assert_eq!(checked(r("101"), Some(100)).err(), Some(413));
        assert!(checked(r("100"), Some(100)).is_ok());
        assert!(checked(r("101"), None).is_ok());
    }
}
