//! The response body the client receives.

use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use lb_algorithms::{InFlightGuard, Nanos};

use crate::forward::Worker;
use crate::http::forwarding::X_REQUEST_ID;
use crate::http::h1::client::{self as h1, ResponseBody};

/// Where a finished response's connection goes back to.
pub(crate) struct ReturnTo {
    pub(crate) worker: Rc<Worker>,
    pub(crate) expires: Nanos,
}

/// The response body the client receives: the backend's body streamed frame by frame, holding the
/// in-flight guard and the pooled connection until it ends; or a short error text.
pub struct ProxyBody {
    inner: Inner,
}

// The upstream variant is the common one and moves rarely (it is built once and then polled in place);
// boxing it to shrink the error variant would cost an allocation on every proxied response.
#[allow(clippy::large_enum_variant)]
enum Inner {
    Upstream {
        body: ResponseBody,
        hold: Option<(InFlightGuard, ReturnTo)>,
        /// The request id, when the backend's fields do not carry one: written after them.
        request_id: Option<HeaderValue>,
    },
    Full(Option<Bytes>),
    /// From an HTTP/2 backend (`h2_upstream.rs`): hyper's body and the in-flight guard.
    Streamed {
        body: Incoming,
        guard: Option<InFlightGuard>,
        /// `[upstream.timeouts] read`, run while the backend sends nothing (created on the first wait).
        silence: Silence,
    },
}

impl std::fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Inner::Upstream { hold, .. } => {
                f.debug_struct("ProxyBody::Upstream").field("open", &hold.is_some()).finish()
            }
            Inner::Full(b) => f.debug_tuple("ProxyBody::Full").field(b).finish(),
            Inner::Streamed { guard, .. } => {
                f.debug_struct("ProxyBody::Streamed").field("open", &guard.is_some()).finish()
            }
        }
    }
}

impl ProxyBody {
    pub(crate) fn upstream(
        body: ResponseBody,
        guard: InFlightGuard,
        ret: ReturnTo,
        request_id: Option<HeaderValue>,
    ) -> Self {
        let mut this = ProxyBody { inner: Inner::Upstream { body, hold: Some((guard, ret)), request_id } };
        // A response with no body (HEAD, 204, 304) may never be polled: finish now.
        if let Inner::Upstream { body, hold, .. } = &mut this.inner
            && body.is_end_stream()
        {
            finish(body, hold);
        }
        this
    }

    /// The backend's header fields when this body is an HTTP/1 backend's (the response's own map
    /// holds only what the proxy added): an HTTP/1 client gets them as they are.
    ///
    /// With them, the request id to write after them when the backend did not send one (kept out of
    /// the map: inserting it there was the one allocation of an otherwise empty map per response).
    pub fn fields(&self) -> Option<(&h1::Fields, Option<&HeaderValue>)> {
        match &self.inner {
            Inner::Upstream { body, request_id, .. } => Some((body.fields(), request_id.as_ref())),
            _ => None,
        }
    }

    /// Move the backend's header fields (and the request id) into `headers`, for a server that writes
    /// a map (HTTP/2).
    pub fn fields_into(&mut self, headers: &mut HeaderMap) {
        if let Inner::Upstream { body, request_id, .. } = &mut self.inner {
            body.take_fields().append_to(headers);
            if let Some(mut id) = request_id.take() {
                // Never indexed by HPACK: an id never repeats, so adding it to the connection's header
                // table would only push out the fields that do (content-type, server...).
                id.set_sensitive(true);
                headers.insert(X_REQUEST_ID.clone(), id);
            }
        }
    }

    /// No body at all.
    pub fn empty() -> Self {
        ProxyBody { inner: Inner::Full(None) }
    }

    /// A complete body.
    pub fn full(bytes: Bytes) -> Self {
        ProxyBody { inner: Inner::Full(Some(bytes)) }
    }

    /// A body streamed from hyper's client (HTTP/2 backends), holding `guard` until it ends, and cut
    /// after `read` without a frame.
    pub(crate) fn streamed(body: Incoming, guard: InFlightGuard, read: Duration) -> Self {
        let guard = (!body.is_end_stream()).then_some(guard);
        ProxyBody {
            inner: Inner::Streamed { body, guard, silence: Silence { read, timer: None, armed: false } },
        }
    }
}

/// The read timer of an HTTP/2 backend's body (the HTTP/1 client keeps its own: see
/// `h1::client::Timers`): armed when the backend has nothing to give, disarmed by every frame.
struct Silence {
    read: Duration,
    /// Made on the first wait and reused: a frame disarms it, the next wait sets it again.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    armed: bool,
}

impl Silence {
    /// The body had nothing: time out if the silence has lasted `read`.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, h1::Error>>> {
        let deadline = tokio::time::Instant::now() + self.read;
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            self.armed = true;
            timer.as_mut().reset(deadline);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(h1::Error::Timeout(h1::Timer::Read)))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// A frame (or the end) came: the next silence starts from scratch.
    fn broken(&mut self) {
        self.armed = false;
    }
}

/// The response ended: the backend is free, and the connection carries another request if the
/// exchange was clean (see `h1.rs` for what that takes).
fn finish(body: &mut ResponseBody, hold: &mut Option<(InFlightGuard, ReturnTo)>) {
    if let Some((guard, ret)) = hold.take() {
        if let Some(conn) = body.take_reusable() {
            ret.worker.pool.put(guard.backend().addr(), conn, ret.expires);
        }
        drop(guard);
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = h1::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match &mut self.get_mut().inner {
            Inner::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Inner::Upstream { body, hold, .. } => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => finish(body, hold),
                    Poll::Ready(Some(Ok(_))) if body.is_end_stream() => finish(body, hold),
                    // A broken body: the connection is not reusable; dropping it closes it, and the
                    // guard with it.
                    Poll::Ready(Some(Err(_))) => *hold = None,
                    _ => {}
                }
                polled
            }
            Inner::Streamed { body, guard, silence } => {
                let polled = match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Pending => silence.poll(cx),
                    polled => {
                        silence.broken();
                        polled.map_err(|e| h1::Error::Io(std::io::Error::other(e)))
                    }
                };
                if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) || body.is_end_stream() {
                    *guard = None;
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(bytes) => bytes.is_none(),
            Inner::Upstream { body, .. } => body.is_end_stream(),
            Inner::Streamed { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
            Inner::Upstream { body, .. } => body.size_hint(),
            Inner::Streamed { body, .. } => body.size_hint(),
        }
    }
}
