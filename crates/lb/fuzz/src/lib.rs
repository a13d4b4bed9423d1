//! The checks behind `lb`'s fuzz targets, one function per target, each taking the fuzzer's bytes.
//!
//! Fuzzing throws millions of generated inputs at a function and keeps those that reach new code, so it
//! finds the inputs nobody thought to write down: a byte offset that lands inside a multi-byte
//! character, a number that overflows, a table size that asks for 16 GiB. Here it guards the two parsers
//! that read text from outside the proxy's control: the config file (an operator's typo must become an
//! error with a position, never a panic) and hash-key extraction (runs on every request of a hashing
//! upstream, over headers a client chose).
//!
//! The same functions run in two places: under libFuzzer (`fuzz_targets/*.rs`, needs nightly and
//! `cargo fuzz`) and over the checked-in seed corpus as an ordinary test (`crates/lb/tests/
//! fuzz_corpus.rs`, includes this file), so every corpus file, including each crash the fuzzer ever
//! found and we then fixed, is replayed by `cargo test` on stable.
//!
//! # Layout
//!
//! - [`config_parse`]: `lb::Config::parse` over any text.
//! - [`hash_key`]: `lb_algorithms::HashKey` parsing, printing, extraction and hashing.
//! - [`FuzzRequest`]: an arbitrary request built from bytes, as the proxy presents one to a hash key.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use lb::RequestKeys;
use lb::config::Config;
use lb_algorithms::HashKey;

/// Parse `data` (lossily decoded as UTF-8, as a file with a stray byte would be after an editor saved
/// it) as a config file. It may succeed or fail; it must not panic, and every error must point at a
/// real place in the text: line and column from 1, inside the text or just past its end.
pub fn config_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match Config::parse(&text, "fuzz.toml") {
        Ok(config) => {
            // A config that parses can be summarised (what `lb check` prints) and has an upstream.
            assert!(!config.upstreams.is_empty(), "accepted a config with no upstream");
            let _ = config.summary();
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an error without any error in it");
            let lines: Vec<&str> = text.split('\n').collect();
            for e in &errors.0 {
                assert!(e.line >= 1 && e.column >= 1, "no position: {e}");
                assert!(e.line <= lines.len(), "line {} past the last line {}: {e}", e.line, lines.len());
                let width = lines[e.line - 1].chars().count();
                assert!(
                    e.column <= width + 1,
                    "column {} past the end of line {} ({width} chars): {e}",
                    e.column,
                    e.line
                );
                let prefix = format!("fuzz.toml:{}:{}: ", e.line, e.column);
                assert!(e.to_string().starts_with(&prefix), "{e:?} does not print as {prefix}...");
            }
        }
    }
}

/// The first line of `data` is a hash-key spec (`header:x-user`, `cookie:s`, ...); the rest is a
/// request ([`FuzzRequest::from_bytes`]). A spec either fails to parse or prints back to an equal key;
/// extraction never panics, never yields an empty key, and agrees with hashing about there being one.
pub fn hash_key(data: &[u8]) {
    let (spec, request) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let spec = String::from_utf8_lossy(spec);
    let key = match spec.parse::<HashKey>() {
        Ok(key) => key,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let printed = key.to_string();
    assert_eq!(printed.parse::<HashKey>().ok().as_ref(), Some(&key), "{spec:?} printed as {printed:?}");

    let request = FuzzRequest::from_bytes(request);
    let request = request.keys();
    let extracted = key.extract(&request);
    if let Some(k) = &extracted {
        assert!(!k.is_empty(), "{key}: an empty key must be no key");
    }
    assert_eq!(extracted.is_some(), key.hash(&request).is_some(), "{key}: extract and hash disagree");
}

/// A request as the proxy presents it to a hash key (the same shape as `proxy.rs`'s `RequestKeys`):
/// headers in an `http::HeaderMap`, the target as an `http::Uri`, and the client's address.
#[derive(Debug)]
pub struct FuzzRequest {
    ip: IpAddr,
    uri: Uri,
    headers: HeaderMap,
}

impl FuzzRequest {
    /// Line 1 is the request target (`/path?query`; one that `Uri` refuses becomes `/`, as hyper would
    /// have refused the request), every further line a `name: value` header (lines that are not a
    /// valid header are skipped, as hyper would refuse them). The client's address is IPv4 or IPv6
    /// by the parity of the input's length, its bytes taken from the input, so both branches of the
    /// `ip` key run.
    pub fn from_bytes(data: &[u8]) -> FuzzRequest {
        let mut lines = data.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let target = lines.next().unwrap_or_default();
        let uri = Uri::try_from(target).unwrap_or_else(|_| Uri::from_static("/"));
        let mut headers = HeaderMap::new();
        for line in lines {
            let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(&line[..colon]),
                HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
            ) else {
                continue;
            };
            headers.append(name, value);
        }
        let byte = |i: usize| data.get(i).copied().unwrap_or(0);
        let ip = if data.len().is_multiple_of(2) {
            IpAddr::V4(Ipv4Addr::new(byte(0), byte(1), byte(2), byte(3)))
        } else {
            let mut octets = [0u8; 16];
            for (i, o) in octets.iter_mut().enumerate() {
                *o = byte(i);
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        };
        FuzzRequest { ip, uri, headers }
    }
}

impl FuzzRequest {
    /// The request as the proxy's hash keys see it: the same view `lb` builds for a real request.
    pub fn keys(&self) -> RequestKeys<'_> {
        RequestKeys { headers: &self.headers, uri: &self.uri, client: self.ip }
    }
}
