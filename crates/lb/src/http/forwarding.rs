//! What a proxy adds to and removes from a forwarded request: hop-by-hop fields out (RFC 9110 section
//! 7.6.1), `X-Forwarded-For`, `-Proto` and `-Host` in. Nothing here knows about upstreams or backends.
//!
//! # Whose word a backend gets
//!
//! A backend behind `lb` believes what `lb` tells it about the client, so `lb` must not pass on what a
//! client says about itself in the proxy's voice. The policy, field by field:
//!
//! | field | from any client | from a trusted proxy (`[server] trusted_proxies`) |
//! |---|---|---|
//! | `X-Forwarded-For` | kept, the client's address appended (nginx's `$proxy_add_x_forwarded_for`) | the same |
//! | `X-Forwarded-Proto`, `-Host` | replaced by ours | replaced by ours |
//! | `X-Request-Id` | replaced by ours | passed on as it is (and returned to the client) |
//! | `Forwarded`, `X-Real-IP`, `X-Forwarded-Port` | removed | passed on as they are |
//!
//! A trusted proxy is one whose address is in `trusted_proxies` (nginx's `set_real_ip_from`, HAProxy's
//! `trusted-proxies`); the list is empty by default, so out of the box nobody's are believed.

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::http::h1::client::{self as h1};
use crate::http::h1::tokens;

pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(crate) static X_LB_EXPLAIN: HeaderName = HeaderName::from_static("x-lb-explain");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

/// A field only a trusted proxy may send (see the module docs): removed from anyone else's request.
/// Comparisons, no hashing: `Forwarded` is a standard name (an enum compare), the others are short.
#[inline]
fn from_proxies_only(name: &HeaderName) -> bool {
    *name == header::FORWARDED || *name == X_REAL_IP || *name == X_FORWARDED_PORT
}

/// Remove the [`from_proxies_only`] fields.
fn remove_proxy_fields(headers: &mut HeaderMap) {
    headers.remove(header::FORWARDED);
    headers.remove(&X_REAL_IP);
    headers.remove(&X_FORWARDED_PORT);
}
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

/// Fields a `Connection` list cannot remove: `Host` (an HTTP/1.1 request without one is invalid, and
/// the backend would route or build links without it) and the fields the proxy itself sends, which a
/// client must not be able to suppress (`Connection: close, X-Forwarded-For` once took the proxy's
/// word for the client's address away from the backend). RFC 9110 section 7.6.1 lets a proxy keep
/// fields it has to send; nginx and HAProxy ignore such tokens too.
const NEVER_CONNECTION_OPTIONS: [&str; 5] =
    ["host", "x-request-id", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"];

/// May a `Connection` token remove the field it names? Not for [`NEVER_CONNECTION_OPTIONS`].
fn removable_by_connection(token: &[u8]) -> bool {
    !NEVER_CONNECTION_OPTIONS.iter().any(|n| token.eq_ignore_ascii_case(n.as_bytes()))
}

/// Remove hop-by-hop headers, including any that `Connection` names (except those it may not:
/// [`NEVER_CONNECTION_OPTIONS`]).
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
            .flat_map(|v| tokens(v.as_bytes()))
            .filter(|n| removable_by_connection(n))
            .filter_map(|n| HeaderName::from_bytes(n).ok())
            .collect();
        for n in named {
            headers.remove(n);
        }
    }
    for name in hop_by_hop() {
        headers.remove(name);
    }
}

/// What the proxy knows about a client connection, computed once per connection rather than once per
/// request (a keep-alive connection carries thousands of requests from the same address).
#[derive(Debug)]
pub struct ClientInfo {
    /// The client's address.
    pub addr: SocketAddr,
    /// Its IP as an `X-Forwarded-For` value (IPv4-mapped IPv6 written as IPv4).
    pub(crate) xff: HeaderValue,
    /// `X-Forwarded-Proto`: `http`, or `https` on a TLS listener.
    pub(crate) proto: HeaderValue,
    /// A proxy in `[server] trusted_proxies`: its forwarding fields and request id are passed on.
    pub(crate) trusted: bool,
}

impl ClientInfo {
    /// Info for a connection from `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        let ip = match addr.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        let xff = HeaderValue::from_str(&ip.to_string()).unwrap_or(HeaderValue::from_static("unknown"));
        ClientInfo { addr, xff, proto: HeaderValue::from_static("http"), trusted: false }
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
    let (mut xff, mut xfp, mut xfh, mut explain, mut proxy_fields) = (false, false, false, false, false);
    let mut host = None;
    for (name, value) in headers.iter() {
        if !client.trusted && from_proxies_only(name) {
            proxy_fields = true;
        } else if *name == header::HOST {
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
    if proxy_fields {
        remove_proxy_fields(headers);
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
/// which [`h1::Forwarding`] then leaves out and writes itself. Returns that. From a client that is
/// not a `trusted` proxy, the fields only a proxy may send go too (see the module docs).
pub(crate) fn prepare_forwarding(headers: &mut HeaderMap, trusted: bool) -> bool {
    let (mut hop_found, mut replaces, mut proxy_fields) = (false, false, false);
    for name in headers.keys() {
        hop_found |= is_hop_by_hop(name);
        replaces |= h1::Forwarding::replaced(name);
        proxy_fields |= !trusted && from_proxies_only(name);
    }
    if hop_found {
        strip_hop_by_hop(headers);
    }
    if proxy_fields {
        remove_proxy_fields(headers);
    }
    replaces
}

/// The request id a client sent, if it is to be passed on: only a trusted proxy's (see the module
/// docs). Anyone else's is removed from `headers`, and the caller makes its own. A scan, not a lookup:
/// a request has a handful of fields, and comparing names costs less than hashing one.
pub(crate) fn client_request_id(headers: &mut HeaderMap, trusted: bool) -> Option<HeaderValue> {
    let id = headers.iter().find(|(name, _)| **name == X_REQUEST_ID).map(|(_, v)| v.clone());
    if id.is_some() && !trusted {
        headers.remove(&X_REQUEST_ID);
        return None;
    }
    id
}

/// Would `s` make a valid field value (what `HeaderValue::from_str` accepts), without building one?
pub(crate) fn is_field_value(s: &str) -> bool {
    s.bytes().all(|b| (b >= 0x20 && b != 0x7f) || b == b'\t')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::h1::client::UpstreamBody;
    use http::Request;

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
        const NAMES: [&str; 14] = [
            "forwarded",
            "x-real-ip",
            "x-forwarded-port",
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
        let untrusted = ClientInfo::new(SocketAddr::from(([192, 0, 2, 7], 5000)));
        let trusted =
            ClientInfo { trusted: true, ..ClientInfo::new(SocketAddr::from(([192, 0, 2, 7], 5000))) };
        let ours = HeaderValue::from_static("0000002a-0000000000000001");
        let backend = "10.0.0.5:8080";
        let lines = |head: &[u8]| {
            let mut lines: Vec<String> =
                String::from_utf8_lossy(head).split("\r\n").map(str::to_string).collect();
            lines.sort();
            lines
        };
        let fields = proptest::collection::vec((0..NAMES.len(), 0..VALUES.len()), 0..8);
        proptest!(|(fields in fields, trust: bool)| {
            let client = if trust { &trusted } else { &untrusted };
            let mut map = HeaderMap::new();
            for (n, v) in fields {
                map.append(HeaderName::from_static(NAMES[n]), HeaderValue::from_static(VALUES[v]));
            }
            let has_host = map.contains_key(header::HOST);

            let mut old = map.clone();
            if !trust {
                old.remove(&X_REQUEST_ID);
            }
            let old_id = match old.entry(&X_REQUEST_ID) {
                header::Entry::Occupied(id) => id.get().clone(),
                header::Entry::Vacant(slot) => slot.insert(ours.clone()).clone(),
            };
            add_forwarding_headers(&mut old, client);
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
            let client_id = client_request_id(&mut new, trust);
            let add_id = client_id.is_none();
            let new_id = client_id.unwrap_or_else(|| ours.clone());
            let replaces = prepare_forwarding(&mut new, trust);
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
            assert!(crate::http::h1::is_hop_by_hop(name.to_ascii_uppercase().as_bytes()), "{name}");
        }
        for name in ["date", "server", "content-length", "content-type", "x-te", "upgrades"] {
            assert!(!crate::http::h1::is_hop_by_hop(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn connection_cannot_remove_host_or_the_fields_the_proxy_sends() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "close, Host, X-Request-Id, x-forwarded-for, X-Forwarded-Proto, x-a"),
            ("host", "app.example"),
            ("x-request-id", "abc"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
            ("x-a", "1"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["host", "x-forwarded-for", "x-forwarded-proto", "x-request-id"]);
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
