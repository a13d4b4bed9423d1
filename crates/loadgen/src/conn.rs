//! One connection's loop: take the next request (a ticket in open loop), make sure a connection is up,
//! send, read the whole answer, record.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::{MAX_LATENCY_US, Mode, Shared, Tally};

/// After a failed connect, wait this long before the next try: a refused port answers in microseconds,
/// and retrying at once would spin a core and count millions of errors.
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);

pub(crate) async fn drive(shared: Arc<Shared>) -> Tally {
    let mut tally = Tally::new();
    let mut sender: Option<SendRequest<Empty<Bytes>>> = None;
    let interval = match shared.spec.mode {
        Mode::Open { rate_per_sec, .. } => Some(1.0 / rate_per_sec),
        Mode::Closed { .. } => None,
    };
    loop {
        // When this request should go out: now (closed loop), or on the schedule (open loop).
        let intended = match interval {
            None => {
                let now = Instant::now();
                if now >= shared.deadline {
                    break;
                }
                now
            }
            Some(interval) => {
                let ticket = shared.next_ticket.fetch_add(1, Ordering::Relaxed);
                let due = shared.start + Duration::from_secs_f64(ticket as f64 * interval);
                // Stop at the end of the schedule, and also when the run is over with due requests still
                // waiting for a connection: those are reported as `missed`.
                if due >= shared.deadline || Instant::now() >= shared.deadline {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                due
            }
        };

        if sender.is_none() {
            match connect(&shared).await {
                Ok(s) => sender = Some(s),
                Err(_) => {
                    tally.errors += 1;
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let outcome = match shared.spec.timeout {
            Some(t) => tokio::time::timeout(t, send(&shared, s)).await.unwrap_or(Err(())),
            None => send(&shared, s).await,
        };
        match outcome {
            Ok(status) => {
                tally.requests += 1;
                *tally.status_counts.entry(status).or_default() += 1;
                let us = intended.elapsed().as_micros().min(u128::from(MAX_LATENCY_US)) as u64;
                tally.histogram.saturating_record(us.max(1));
                if !shared.spec.keep_alive {
                    sender = None;
                }
            }
            Err(()) => {
                tally.errors += 1;
                // The connection's state is unknown after an error or a timeout: start afresh.
                sender = None;
            }
        }
    }
    tally
}

async fn connect(shared: &Shared) -> Result<SendRequest<Empty<Bytes>>, ()> {
    let stream = TcpStream::connect(shared.spec.target).await.map_err(|_| ())?;
    // Without NODELAY, Nagle's algorithm can hold a small request back for up to 40 ms.
    stream.set_nodelay(true).map_err(|_| ())?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.map_err(|_| ())?;
    // The connection future does the actual I/O; it ends when the sender is dropped or the peer closes.
    tokio::spawn(connection);
    Ok(sender)
}

/// Send one request and read the answer to its end; the status, or `Err` for any transport failure.
async fn send(shared: &Shared, sender: &mut SendRequest<Empty<Bytes>>) -> Result<u16, ()> {
    sender.ready().await.map_err(|_| ())?;
    let spec = &shared.spec;
    let mut builder = Request::get(spec.path.as_str()).header(header::HOST, spec.host.as_str());
    if !spec.keep_alive {
        builder = builder.header(header::CONNECTION, "close");
    }
    for (name, value) in &spec.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    // Headers and path were checked in `validate`, so building cannot fail here; map it anyway.
    let request = builder.body(Empty::<Bytes>::new()).map_err(|_| ())?;
    let response = sender.send_request(request).await.map_err(|_| ())?;
    let status = response.status().as_u16();
    // Read frame by frame and drop each one: the latency includes the whole body, and nothing is kept.
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        frame.map_err(|_| ())?;
    }
    Ok(status)
}
