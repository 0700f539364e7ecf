//! The HTTP/1.1 listener: accepting connections within a cap, closing the ones that stall,
//! and draining on shutdown. What a request means is `api`'s business; this module only
//! decides how long a connection may hold a slot while the client is not sending or reading.
//!
//! Three limits, each a [`ServerConfig`] setting:
//! - **header read** (`header_read_timeout_ms`): once the first byte of a request has come,
//!   its whole head (request line and headers) must follow within this time. A client that
//!   trickles one header line every 30 s is cut off.
//! - **idle keep-alive** (`keep_alive_timeout_ms`): a connection waiting for the first byte
//!   of its next request, or for its client to read an answer, is closed after this time.
//! - **connections** (`max_connections`): over the cap, a new connection gets a `503` with
//!   the JSON error shape and is closed at once, without waiting for its request; the
//!   connections already open are served as before.
//!
//! The body of a request is bounded by `request_timeout_ms`, which the API's timeout layer
//! enforces while the handler reads it.
//!
//! hyper's own header timeout counts from when the connection is ready for a request, not
//! from its first byte, so it cannot tell an idle keep-alive connection from a slow one;
//! both deadlines are kept here instead, by [`Watched`], from what the connection reads and
//! writes and from where its request is (see [`Phase`]).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use crate::config::ServerConfig;
use crate::metrics::Metrics;

/// The connection limits of [`serve`], from [`ServerConfig`].
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub keep_alive_timeout: Duration,
}

impl From<&ServerConfig> for ConnectionLimits {
    fn from(config: &ServerConfig) -> Self {
        Self {
            max_connections: config.max_connections,
            header_read_timeout: Duration::from_millis(config.header_read_timeout_ms),
            keep_alive_timeout: Duration::from_millis(config.keep_alive_timeout_ms),
        }
    }
}

/// What a connection over the cap is told before it is closed: written in one non-blocking
/// call to a fresh socket, whose send buffer has room for it.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 128\r\n\
\r\n\
{\"code\":\"too_many_connections\",\"message\":\"this instance has as many connections open as it allows; retry shortly\",\"problems\":[]}";

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting, lets every
/// open connection finish its request, and returns once all are closed (the caller bounds
/// how long that may take).
pub async fn serve<App>(
    listener: TcpListener,
    app: App,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) where
    App: tower::Service<
            Request<Body>,
            Response = axum::response::Response,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    // Our own deadlines replace hyper's (see the module docs); its timer is still given, so
    // that no setting of hyper that needs one can panic for want of it.
    http.timer(TokioTimer::new()).header_read_timeout(None);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, say: accepting again at once would spin.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refuse(&stream, &metrics);
            continue;
        };
        // Answers are small and come at once: do not hold them back to fill packets.
        let _ = stream.set_nodelay(true);
        let shared = Arc::new(Mutex::new(Shared {
            phase: Phase::waiting(),
            reader: None,
        }));
        let io = TokioIo::new(Watched::new(stream, shared.clone(), limits));
        let app = app.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let guard = Busy::enter(&shared);
            let app = app.clone();
            async move {
                let response = app
                    .oneshot(request.map(Body::new))
                    .await
                    .unwrap_or_else(|never: Infallible| match never {});
                Ok::<_, Infallible>(response.map(|body| Body::new(Tracked { body, guard })))
            }
        });
        let connection = graceful.watch(http.serve_connection(io, service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Tells a connection over the cap so, without waiting for anything from it.
fn refuse(stream: &TcpStream, metrics: &Metrics) {
    metrics
        .requests_rejected
        .with_label_values(&["too_many_connections"])
        .inc();
    let _ = stream.try_write(OVER_CAPACITY);
}

/// Where a connection's current request is, which decides which deadline applies.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request: since when, and when its first byte came, if it has.
    Waiting {
        since: Instant,
        first_byte: Option<Instant>,
    },
    /// A request's head is complete; the handler (bounded by the request timeout) and the
    /// answer's body are under way.
    Busy,
}

impl Phase {
    fn waiting() -> Self {
        Self::Waiting {
            since: Instant::now(),
            first_byte: None,
        }
    }
}

/// A connection's [`Phase`], shared by its stream and its requests.
#[derive(Debug)]
struct Shared {
    phase: Phase,
    /// The connection's task while its read waits with no deadline (busy): it must look again
    /// once the answer is done and the keep-alive deadline applies.
    reader: Option<std::task::Waker>,
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Marks its connection busy while it lives; dropped with the answer's body (once sent, or
/// once the connection is gone), which sets the connection waiting for its next request.
struct Busy(Arc<Mutex<Shared>>);

impl Busy {
    fn enter(shared: &Arc<Mutex<Shared>>) -> Self {
        lock(shared).phase = Phase::Busy;
        Self(shared.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let reader = {
            let mut shared = lock(&self.0);
            shared.phase = Phase::waiting();
            shared.reader.take()
        };
        if let Some(reader) = reader {
            reader.wake();
        }
    }
}

/// An answer's body that carries its connection's [`Busy`] mark.
struct Tracked {
    body: Body,
    #[allow(dead_code)] // held for its `Drop`
    guard: Busy,
}

impl http_body::Body for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A TCP stream that fails with `TimedOut` when its client stalls past the deadline of the
/// connection's [`Phase`]: the header-read timeout once a request has begun, the keep-alive
/// timeout while waiting for one or for the client to read what was written.
struct Watched {
    stream: TcpStream,
    shared: Arc<Mutex<Shared>>,
    limits: ConnectionLimits,
    /// When a write last made progress (or the last write began to wait).
    last_write: Instant,
    /// Set to the deadline in force whenever an operation waits; its waker is the task's.
    timer: Pin<Box<Sleep>>,
}

impl Watched {
    fn new(stream: TcpStream, shared: Arc<Mutex<Shared>>, limits: ConnectionLimits) -> Self {
        Self {
            stream,
            shared,
            limits,
            last_write: Instant::now(),
            timer: Box::pin(tokio::time::sleep(limits.keep_alive_timeout)),
        }
    }

    /// Waits on `deadline` (if any); `Ready` with the error to fail with once it has passed.
    fn expired(&mut self, cx: &mut Context<'_>, deadline: Option<Instant>) -> Poll<io::Error> {
        let Some(deadline) = deadline else {
            return Poll::Pending;
        };
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stalled past the connection's deadline",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    if let Phase::Waiting {
                        first_byte: first_byte @ None,
                        ..
                    } = &mut lock(&self.shared).phase
                    {
                        *first_byte = Some(Instant::now());
                    }
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                let deadline = {
                    let mut shared = lock(&self.shared);
                    match shared.phase {
                        Phase::Waiting {
                            first_byte: Some(first_byte),
                            ..
                        } => Some(first_byte + self.limits.header_read_timeout),
                        Phase::Waiting { since, .. } => {
                            Some(since + self.limits.keep_alive_timeout)
                        }
                        Phase::Busy => {
                            shared.reader = Some(cx.waker().clone());
                            None
                        }
                    }
                };
                self.expired(cx, deadline).map(Err)
            }
        }
    }
}

impl Watched {
    /// Notes a write's progress, or waits on the keep-alive deadline while the client does
    /// not read.
    fn written<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(result) => {
                self.last_write = Instant::now();
                Poll::Ready(result)
            }
            Poll::Pending => {
                let deadline = self.last_write + self.limits.keep_alive_timeout;
                self.expired(cx, Some(deadline)).map(Err)
            }
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write(cx, data);
        self.written(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write_vectored(cx, data);
        self.written(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::OVER_CAPACITY;

    #[test]
    fn the_refusal_is_a_complete_answer_in_the_error_shape() {
        let text = std::str::from_utf8(OVER_CAPACITY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len());
        let body: the_eye_types::ErrorBody = serde_json::from_str(body).unwrap();
        assert_eq!(body.code, "too_many_connections");
    }
}
