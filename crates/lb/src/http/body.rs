//! The request body a client sends, whichever server side read its head.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::http::h1::client::BoxError;
use crate::http::h1::server::RequestBody;

/// A client's request body, whichever server side read the request head.
#[derive(Debug)]
pub enum ClientBody {
    /// No body (a GET, or `Content-Length: 0`).
    Empty,
    /// Read by this proxy's HTTP/1 server (`h1_server.rs`) as the forwarding side asks for it.
    H1(RequestBody),
    /// Read by hyper's HTTP/2 server.
    H2(Incoming),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::H1(b) => Pin::new(b).poll_frame(cx).map(|f| f.map(|r| r.map_err(Into::into))),
            ClientBody::H2(b) => Pin::new(b).poll_frame(cx).map(|f| f.map(|r| r.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::H1(b) => b.is_end_stream(),
            ClientBody::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::H1(b) => b.size_hint(),
            ClientBody::H2(b) => b.size_hint(),
        }
    }
}
