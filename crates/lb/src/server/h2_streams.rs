//! `send_timeout` for HTTP/2 clients, one stream at a time.
//!
//! # Why HTTP/2 needs its own
//!
//! On HTTP/1 a client that stops reading blocks our writes, and the connection loop sees it
//! ([`super::http1`]). On HTTP/2 the client says so with flow control instead: it stops granting
//! window, and hyper's server stops asking the stream's body for data until window comes back. Nothing
//! of ours is polled any more, so no timer inside the body can fire, and the backend connection the
//! body holds stays taken: five TCP connections with a zero window can pin hundreds of backend
//! connections.
//!
//! # How
//!
//! Each response body is wrapped in a [`Watched`] that notes when it last handed hyper data and was
//! not asked again (the client owes us window). A sweeper per HTTP/2 connection, which only runs
//! while the connection has responses in flight, looks every quarter of the timeout (between 50 ms
//! and 1 s) and, for a stream stalled longer than `send_timeout`, drops the body: the backend
//! connection closes and its in-flight slot is released at once. When hyper polls that stream again
//! it gets an error and resets it (`RST_STREAM`); a client that never grants window keeps only the
//! stream's own small state in hyper, bounded by the connection's stream limit.
//!
//! Waiting for the backend's next bytes is not a stall: hyper is polling then.

use std::cell::{Cell, RefCell};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::forward::ProxyBody;
use crate::http::h1::client as h1;

/// The streams of one HTTP/2 connection whose responses are being sent.
pub(crate) struct Streams {
    list: RefCell<Vec<Weak<Stream>>>,
    timeout: Duration,
    /// Wakes the sweeper when the first stream of a quiet spell arrives.
    started: Notify,
}

struct Stream {
    /// `None` once the stream timed out (the backend side is gone).
    body: RefCell<Option<ProxyBody>>,
    /// Since when hyper has data from us and has not asked for more.
    stalled_since: Cell<Option<Instant>>,
}

impl Streams {
    pub(crate) fn new(timeout: Duration) -> Rc<Self> {
        Rc::new(Streams { list: RefCell::new(Vec::new()), timeout, started: Notify::new() })
    }

    /// Watch `body` on its way to the client.
    pub(crate) fn watch(&self, body: ProxyBody) -> Watched {
        let stream = Rc::new(Stream { body: RefCell::new(Some(body)), stalled_since: Cell::new(None) });
        let mut list = self.list.borrow_mut();
        if list.is_empty() {
            self.started.notify_one();
        }
        list.push(Rc::downgrade(&stream));
        Watched(stream)
    }

    /// Drop the bodies of streams stalled past the timeout; forget streams that ended. Never returns.
    pub(crate) async fn sweep(&self) {
        let every = (self.timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            if self.list.borrow().is_empty() {
                self.started.notified().await;
            }
            tokio::time::sleep(every).await;
            let now = Instant::now();
            self.list.borrow_mut().retain(|weak| {
                let Some(stream) = weak.upgrade() else { return false };
                match stream.stalled_since.get() {
                    Some(since) if now.duration_since(since) >= self.timeout => {
                        tracing::debug!("resetting an HTTP/2 stream: send timeout");
                        stream.body.borrow_mut().take();
                        false
                    }
                    _ => true,
                }
            });
        }
    }
}

/// A response body whose stalls [`Streams::sweep`] watches.
pub(crate) struct Watched(Rc<Stream>);

impl Body for Watched {
    type Data = Bytes;
    type Error = h1::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h1::Error>>> {
        let stream = &self.0;
        let mut slot = stream.body.borrow_mut();
        let Some(body) = slot.as_mut() else {
            let timed_out = std::io::Error::new(std::io::ErrorKind::TimedOut, "send timeout");
            return Poll::Ready(Some(Err(h1::Error::Io(timed_out))));
        };
        let polled = Pin::new(body).poll_frame(cx);
        // Data handed over: until hyper asks again, the client owes us window.
        let stalled = matches!(polled, Poll::Ready(Some(Ok(_)))).then(Instant::now);
        stream.stalled_since.set(stalled);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.0.body.borrow().as_ref().is_some_and(ProxyBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.0.body.borrow().as_ref().map_or_else(SizeHint::default, ProxyBody::size_hint)
    }
}
