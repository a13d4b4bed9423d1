//! Two small response bodies written by hand, because the generic ones would do more work.
//!
//! - [`Zeros`] streams `n` zero bytes from one static buffer: no allocation per chunk and no
//!   buffering of the whole body, so `/bytes/1000000000` costs the backend almost nothing and the
//!   proxy in front of it is what gets measured. It reports its exact size, so hyper sends a
//!   `Content-Length` instead of chunked encoding.
//! - [`Guarded`] carries a value (the in-flight counter and the capacity permit) for as long as the
//!   response body lives. A request is "in flight" until its body has been sent or dropped, not
//!   merely until its headers are ready; otherwise a backend streaming a large body would look idle.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};

/// Size of each chunk `Zeros` hands to hyper.
const CHUNK: usize = 64 * 1024;
static ZEROS: [u8; CHUNK] = [0; CHUNK];

/// `remaining` zero bytes, produced one chunk at a time as hyper asks for them.
#[derive(Debug)]
pub(crate) struct Zeros {
    remaining: u64,
}

impl Zeros {
    pub(crate) fn new(len: u64) -> Self {
        Zeros { remaining: len }
    }
}

impl http_body::Body for Zeros {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let len = usize::try_from(this.remaining).map_or(CHUNK, |r| r.min(CHUNK));
        this.remaining -= len as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&ZEROS[..len])))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// A body that keeps `guard` alive until the body is finished or dropped.
#[derive(Debug)]
pub(crate) struct Guarded<G> {
    inner: Body,
    _guard: G,
}

impl<G: Send + Unpin + 'static> Guarded<G> {
    pub(crate) fn wrap(inner: Body, guard: G) -> Body {
        Body::new(Guarded { inner, _guard: guard })
    }
}

impl<G: Unpin> http_body::Body for Guarded<G> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
