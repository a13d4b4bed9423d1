//! HTTP/1.1 (RFC 9112): the codec both halves share, then the client half ([`client`]: one request
//! written to a backend and its response read, in the caller's task) and the server half ([`server`]:
//! request heads parsed, request bodies read, the pieces the connection loop in
//! [`crate::server`] is built from).

pub(crate) mod client;
pub(crate) mod server;

use bytes::{BufMut, BytesMut};

use crate::http::forwarding::HOP_BY_HOP;

/// What went wrong reading a message's framing (the client and server halves each wrap it in their own
/// error).
pub(crate) type FramingError = &'static str;

/// The longest chunk-size or trailer line, and all trailers together.
const MAX_LINE: usize = 8 * 1024;

/// The comma-separated tokens of a field value (`Connection`, `Transfer-Encoding`, `Upgrade`), trimmed,
/// empty ones left out (RFC 9110 section 5.6.1: a recipient ignores empty list elements).
#[inline]
pub(crate) fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|t| !t.is_empty())
}

/// A chunk-size line: `n` in lower-case hex, then CRLF (shared with `h1_server.rs`).
pub(crate) fn write_hex(buf: &mut BytesMut, n: usize) {
    let digits = (usize::BITS - n.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        buf.put_u8(b"0123456789abcdef"[(n >> (i * 4)) & 15]);
    }
    buf.put_slice(b"\r\n");
}

/// One `name: value` line (shared with the server, `h1_server.rs`).
pub(crate) fn put_field(buf: &mut BytesMut, name: &[u8], value: &[u8]) {
    buf.put_slice(name);
    buf.put_slice(b": ");
    buf.put_slice(value);
    buf.put_slice(b"\r\n");
}

/// The lengths of the [`HOP_BY_HOP`] names, as bits: most field names are ruled out by their length
/// alone, with no comparison.
const HOP_LENGTHS: u32 = {
    let mut mask = 0;
    let mut i = 0;
    while i < HOP_BY_HOP.len() {
        mask |= 1 << HOP_BY_HOP[i].len();
        i += 1;
    }
    mask
};

/// Is `name` (as the parser gave it, any case) one of the fields that describe one connection, not the
/// message ([`HOP_BY_HOP`], the one list both directions use)? Never forwarded.
pub(crate) fn is_hop_by_hop(name: &[u8]) -> bool {
    name.len() < 32
        && HOP_LENGTHS & (1 << name.len()) != 0
        && HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
}

pub(crate) fn parse_length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 20 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, with this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one; bytes of trailers seen so far.
    Trailers(usize),
}

/// What one step of the chunked decoder found at the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ChunkStep {
    /// The first `n` bytes are body data; then the decoder is in this state.
    Data(usize, Chunk),
    /// The first `n` bytes are framing (a size line, a CRLF, a trailer line); then this state
    /// (`None`: the body is complete).
    Skip(usize, Option<Chunk>),
    /// Not enough bytes yet.
    NeedMore,
}

/// One step of the chunked decoder over `buf`, the unread bytes. Shared by the upstream client (response
/// bodies) and the client-facing server (`h1_server.rs`, request bodies): one set of rules for sizes,
/// extensions and trailers in both directions.
pub(crate) fn chunk_step(buf: &[u8], state: Chunk) -> Result<ChunkStep, FramingError> {
    match state {
        Chunk::Size => {
            let Some(end) = buf.iter().position(|&b| b == b'\n') else {
                return if buf.len() > MAX_LINE {
                    Err("chunk size line too long")
                } else {
                    Ok(ChunkStep::NeedMore)
                };
            };
            let line = buf[..end].strip_suffix(b"\r").ok_or("chunk size line")?;
            // `chunk-size = 1*HEXDIG`, then optional whitespace before an extension's `;` (RFC 9112
            // section 7.1.1): nothing before the digits. A parser that skips leading spaces and one that
            // does not read `" 5"` differently, which is all request smuggling needs.
            let digits = line.split(|&b| b == b';').next().unwrap_or(&[]).trim_ascii_end();
            if digits.is_empty() || digits.len() > 15 {
                return Err("chunk size");
            }
            let mut size = 0u64;
            for &d in digits {
                let v = (d as char).to_digit(16).ok_or("chunk size")?;
                size = size * 16 + u64::from(v);
            }
            Ok(ChunkStep::Skip(end + 1, Some(if size == 0 { Chunk::Trailers(0) } else { Chunk::Data(size) })))
        }
        Chunk::Data(left) => {
            if buf.is_empty() {
                return Ok(ChunkStep::NeedMore);
            }
            let take = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let left = left - take as u64;
            Ok(ChunkStep::Data(take, if left == 0 { Chunk::DataEnd } else { Chunk::Data(left) }))
        }
        Chunk::DataEnd => {
            if buf.len() < 2 {
                return Ok(ChunkStep::NeedMore);
            }
            if &buf[..2] != b"\r\n" {
                return Err("missing CRLF after chunk data");
            }
            Ok(ChunkStep::Skip(2, Some(Chunk::Size)))
        }
        Chunk::Trailers(seen) => {
            let Some(end) = buf.iter().position(|&b| b == b'\n') else {
                return if seen + buf.len() > MAX_LINE {
                    Err("trailers too long")
                } else {
                    Ok(ChunkStep::NeedMore)
                };
            };
            let line = buf[..end].strip_suffix(b"\r").ok_or("trailer line")?;
            if line.is_empty() {
                Ok(ChunkStep::Skip(end + 1, None))
            } else if seen + end + 1 > MAX_LINE {
                Err("trailers too long")
            } else {
                Ok(ChunkStep::Skip(end + 1, Some(Chunk::Trailers(seen + end + 1))))
            }
        }
    }
}
