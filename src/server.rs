//! The HTTP/1.1 listener: accepting connections within caps, closing the ones that stall,
//! and draining on shutdown. What a request means is `api`'s business; this module only
//! decides how long a connection may hold a slot while the client is not sending or reading,
//! and how a connection ends when the service stops. The API and the metrics address are
//! both served by [`serve`], each with its own [`ConnectionLimits`].
//!
//! The limits, each a [`ServerConfig`] setting:
//! - **first byte** (`first_byte_timeout_ms`): a new connection must send the first byte of
//!   its first request within this time. A client that connects and says nothing (or a flood
//!   of them) holds a slot for this long, not for the keep-alive timeout.
//! - **header read** (`header_read_timeout_ms`): once the first byte of a request has come,
//!   its whole head (request line and headers) must follow within this time. A client that
//!   trickles one header line every 30 s is cut off.
//! - **idle keep-alive** (`keep_alive_timeout_ms`): a connection that has been served, waiting
//!   for the first byte of its next request, or one waiting for its client to read an answer,
//!   is closed after this time.
//! - **connections** (`max_connections`, `metrics_max_connections` for the metrics address):
//!   over the cap, a new connection gets a `503 too_many_connections` with the JSON error
//!   shape and is closed at once, without waiting for its request; the connections already
//!   open are served as before.
//! - **connections per peer** (`max_connections_per_peer`): the same for one IP address, with
//!   `503 too_many_peer_connections`, so that one address cannot take every slot.
//!
//! The body of a request is bounded by `request_timeout_ms`, which the API's timeout layer
//! enforces while the handler reads it.
//!
//! A request hyper cannot read (a malformed request line or header, a URI or a head over its
//! limits) is answered by hyper itself, before any service, with an empty body; [`Watched`]
//! writes the API's JSON error shape in its place ([`hyper_refusal`]).
//!
//! hyper's own header timeout counts from when the connection is ready for a request, not
//! from its first byte, so it cannot tell an idle keep-alive connection from a slow one;
//! every deadline is kept here instead, by [`Watched`], from what the connection reads and
//! writes and from where its request is (see [`Phase`]).
//!
//! **Shutdown** answers every request it has read. Once `shutdown` completes, no connection
//! is accepted; a request whose head had been read goes on to its answer (a 202 if its rows
//! were appended), a request whose head is read later is answered `503 shutting_down` with
//! `Retry-After` (its body read first, so that closing cannot reset the connection before
//! the client reads the answer), and every answer from then on carries `Connection: close`,
//! after which the connection ends. A connection between requests is closed once it has been
//! idle for [`SHUTDOWN_IDLE_GRACE`] (or its keep-alive deadline, if sooner): a client sending
//! at the moment of the signal gets a `Connection: close` answer rather than a connection
//! closed under its request. hyper's own graceful shutdown is not used: it closes a
//! connection that is between requests at once, even when the bytes of the next request have
//! already arrived (hyper has read them but not the whole head, or not read them at all) —
//! which resets it with a request in it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request};
use axum::response::IntoResponse;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::api::{codes, ApiError};
use crate::config::{Config, ServerConfig};
use crate::metrics::Metrics;

/// The connection limits of [`serve`]: the API's ([`ConnectionLimits::api`]) or the metrics
/// address's ([`ConnectionLimits::metrics`]), from [`ServerConfig`].
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most connections open at once from one IP address; 0 for no limit.
    pub max_connections_per_peer: usize,
    /// From accept to the first byte of the first request.
    pub first_byte_timeout: Duration,
    /// From a request's first byte to the end of its head.
    pub header_read_timeout: Duration,
    /// Idle between requests, or waiting for the client to read.
    pub keep_alive_timeout: Duration,
    /// How much of the body of a request refused during shutdown is read (and dropped)
    /// before its 503: the largest body the service takes.
    pub max_body_bytes: usize,
    /// How long reading that body may take.
    pub request_timeout: Duration,
}

impl ConnectionLimits {
    /// The API's limits: `server.max_connections`, `server.max_connections_per_peer` and the
    /// timeouts of `server`.
    pub fn api(config: &Config) -> Self {
        Self::with_cap(
            &config.server,
            config.server.max_connections,
            config.server.max_connections_per_peer,
            config.ingest.max_body_bytes,
        )
    }

    /// The metrics address's limits: its own smaller cap (`server.metrics_max_connections`),
    /// no cap per peer (its few scrapers may share an address; the cap is the bound), and the
    /// API's timeouts. Scrapes have no body.
    pub fn metrics(config: &Config) -> Self {
        Self::with_cap(
            &config.server,
            config.server.metrics_max_connections,
            0,
            64 * 1024,
        )
    }

    fn with_cap(
        server: &ServerConfig,
        max_connections: usize,
        max_connections_per_peer: usize,
        max_body_bytes: usize,
    ) -> Self {
        Self {
            max_connections,
            max_connections_per_peer,
            first_byte_timeout: Duration::from_millis(server.first_byte_timeout_ms),
            header_read_timeout: Duration::from_millis(server.header_read_timeout_ms),
            keep_alive_timeout: Duration::from_millis(server.keep_alive_timeout_ms),
            max_body_bytes,
            request_timeout: Duration::from_millis(server.request_timeout_ms),
        }
    }
}

/// How long a connection between requests stays open once shutdown has begun, for a request
/// its client may already have sent. Long enough for any client that is sending (its request
/// gets `503 shutting_down` with `Connection: close`); short enough not to hold the final
/// flush back (the drain waits for every connection, at most `request_timeout_ms` + 1 s).
pub const SHUTDOWN_IDLE_GRACE: Duration = Duration::from_secs(2);

/// What a connection over the cap is told before it is closed: written in one non-blocking
/// call to a fresh socket, whose send buffer has room for it.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 128\r\n\
\r\n\
{\"code\":\"too_many_connections\",\"message\":\"this instance has as many connections open as it allows; retry shortly\",\"problems\":[]}";

/// What a connection over the cap of its peer address is told, as [`OVER_CAPACITY`].
const OVER_PEER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 153\r\n\
\r\n\
{\"code\":\"too_many_peer_connections\",\"message\":\"this address has as many connections open as one address may; close some, or retry shortly\",\"problems\":[]}";

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting, answers what
/// each open connection has sent (see the module docs), and returns once all are closed (the
/// caller bounds how long that may take).
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
    let peers = Arc::new(Peers::new(limits.max_connections_per_peer));
    let closing = Arc::new(Closing::default());
    let stop = CancellationToken::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    // Our own deadlines replace hyper's (see the module docs); its timer is still given, so
    // that no setting of hyper that needs one can panic for want of it.
    http.timer(TokioTimer::new()).header_read_timeout(None);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: accepting again at once would spin.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(peer_slot) = peers.enter(peer.ip()) else {
            refuse(
                &stream,
                &metrics,
                OVER_PEER_CAPACITY,
                "too_many_peer_connections",
            );
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refuse(&stream, &metrics, OVER_CAPACITY, "too_many_connections");
            continue;
        };
        // Answers are small and come at once: do not hold them back to fill packets.
        let _ = stream.set_nodelay(true);
        let shared = Arc::new(Mutex::new(Shared {
            phase: Phase::waiting(),
            served: false,
            reader: None,
        }));
        let io = TokioIo::new(Watched::new(
            stream,
            shared.clone(),
            closing.clone(),
            limits,
        ));
        let app = app.clone();
        let metrics = metrics.clone();
        let service_closing = closing.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let guard = Busy::enter(&shared);
            let app = app.clone();
            let metrics = metrics.clone();
            let closing = service_closing.clone();
            async move {
                // A head read after shutdown began is answered without going in.
                let mut response = if closing.started() {
                    refuse_while_closing(request, limits, &metrics).await
                } else {
                    app.oneshot(request.map(Body::new))
                        .await
                        .unwrap_or_else(|never: Infallible| match never {})
                };
                if closing.started() {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(response.map(|body| Body::new(Tracked { body, guard })))
            }
        });
        let connection = http.serve_connection(io, service);
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                // Polled again at once: its stream now sees shutdown (see `Watched`).
                () = stop.cancelled() => connection.await,
            };
            if let Err(error) = ended {
                tracing::debug!(%error, "connection ended with an error");
            }
            drop(slot);
            drop(peer_slot);
        });
    }
    drop(listener);
    // In this order: a connection woken by `stop` must find shutdown begun.
    let _ = closing.since.set(Instant::now());
    stop.cancel();
    // Every open connection holds a slot until it ends.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
}

/// Tells a connection over a cap so, without waiting for anything from it.
fn refuse(stream: &TcpStream, metrics: &Metrics, answer: &[u8], code: &str) {
    metrics.requests_rejected.with_label_values(&[code]).inc();
    let _ = stream.try_write(answer);
}

/// The answer to a request whose head was read after shutdown began: `503 shutting_down`,
/// once its body is read (at most [`ConnectionLimits::max_body_bytes`], for at most the
/// request timeout; not asked for when the client waits for `100 Continue`). An unread body
/// would make the close after the answer a reset, and a reset can destroy the answer before
/// the client reads it.
async fn refuse_while_closing(
    request: Request<Incoming>,
    limits: ConnectionLimits,
    metrics: &Metrics,
) -> axum::response::Response {
    // A client that waits for `100 Continue` has sent no body, and is not asked for it.
    let waits_to_send = request
        .headers()
        .get(header::EXPECT)
        .is_some_and(|expect| expect.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !waits_to_send {
        let body = http_body_util::Limited::new(request.into_body(), limits.max_body_bytes);
        let _ = tokio::time::timeout(limits.request_timeout, body.collect()).await;
    }
    metrics
        .requests_rejected
        .with_label_values(&[codes::SHUTTING_DOWN])
        .inc();
    ApiError::Unavailable {
        code: codes::SHUTTING_DOWN,
        message: "this instance is shutting down; nothing of this request was stored, retry (another instance will take it)".to_owned(),
        retry_after_secs: 1,
    }
    .into_response()
}

/// When shutdown began, once it has; shared by every connection of one [`serve`].
#[derive(Debug, Default)]
struct Closing {
    since: OnceLock<Instant>,
}

impl Closing {
    fn started(&self) -> bool {
        self.since.get().is_some()
    }
}

/// Connections open per peer address, when they are capped.
struct Peers {
    /// 0: no cap, nothing counted.
    cap: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in its peer's count; given back when dropped.
struct PeerSlot {
    peers: Arc<Peers>,
    address: IpAddr,
}

impl Peers {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// A place for one more connection from `address`; `Err` when it has as many as allowed.
    fn enter(self: &Arc<Self>, address: IpAddr) -> Result<Option<PeerSlot>, ()> {
        if self.cap == 0 {
            return Ok(None);
        }
        // An IPv4 client of a dual-stack socket is one peer whichever way it is written.
        let address = address.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(address).or_insert(0);
        if *count >= self.cap {
            return Err(());
        }
        *count += 1;
        Ok(Some(PeerSlot {
            peers: self.clone(),
            address,
        }))
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.peers.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                // The map holds only peers with connections open: its size is bounded by the
                // connection cap, however many addresses have come and gone.
                open.remove(&self.address);
            }
        }
    }
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
    /// Whether a request has been read: until then, waiting is bounded by the first-byte
    /// deadline, afterwards by the keep-alive one.
    served: bool,
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
        let mut locked = lock(shared);
        locked.phase = Phase::Busy;
        locked.served = true;
        drop(locked);
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
/// connection's [`Phase`]: the header-read timeout once a request has begun, the first-byte
/// or keep-alive timeout while waiting for one, the keep-alive timeout while waiting for the
/// client to read what was written. Once shutdown has begun, a connection waiting for a
/// request that has not begun ends (reads end of file) after [`SHUTDOWN_IDLE_GRACE`].
struct Watched {
    stream: TcpStream,
    shared: Arc<Mutex<Shared>>,
    closing: Arc<Closing>,
    limits: ConnectionLimits,
    /// When a write last made progress (or the last write began to wait).
    last_write: Instant,
    /// Set to the deadline in force whenever an operation waits; its waker is the task's.
    timer: Pin<Box<Sleep>>,
    /// What is still to be written of an answer put in place of one of hyper's own (see
    /// [`hyper_refusal`]), written before anything else.
    replacement: Vec<u8>,
}

impl Watched {
    fn new(
        stream: TcpStream,
        shared: Arc<Mutex<Shared>>,
        closing: Arc<Closing>,
        limits: ConnectionLimits,
    ) -> Self {
        Self {
            stream,
            shared,
            closing,
            limits,
            last_write: Instant::now(),
            timer: Box::pin(tokio::time::sleep(limits.first_byte_timeout)),
            replacement: Vec::new(),
        }
    }

    /// Writes what is left of [`Watched::replacement`]; `Ready` once it is all written.
    fn drain_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.replacement.is_empty() {
            let poll = Pin::new(&mut self.stream).poll_write(cx, &self.replacement);
            match self.written(cx, poll) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.replacement.drain(..n);
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Puts the API's answer in place of `data` if `data` is hyper's own answer to a request
    /// it could not read; `Some(data.len())` then, as if `data` had been written.
    fn replace_hyper_answer(&mut self, data: &[u8]) -> Option<usize> {
        // hyper answers a request it cannot read before any service is called, so the
        // connection is between requests; an answer of the API is never empty.
        if !matches!(lock(&self.shared).phase, Phase::Waiting { .. }) {
            return None;
        }
        self.replacement = hyper_refusal(data)?;
        Some(data.len())
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
                let mut ends_quietly = false;
                let deadline = {
                    let mut shared = lock(&self.shared);
                    match shared.phase {
                        Phase::Waiting {
                            first_byte: Some(first_byte),
                            ..
                        } => Some(first_byte + self.limits.header_read_timeout),
                        Phase::Waiting { since, .. } => {
                            let idle = if shared.served {
                                self.limits.keep_alive_timeout
                            } else {
                                self.limits.first_byte_timeout
                            };
                            let mut deadline = since + idle;
                            if let Some(&closing) = self.closing.since.get() {
                                let grace = since.max(closing) + SHUTDOWN_IDLE_GRACE;
                                if grace < deadline {
                                    deadline = grace;
                                    ends_quietly = true;
                                }
                            }
                            Some(deadline)
                        }
                        Phase::Busy => {
                            shared.reader = Some(cx.waker().clone());
                            None
                        }
                    }
                };
                match self.expired(cx, deadline) {
                    // No byte of a request is pending (the read just found none): an end of
                    // file closes the connection as a client's close would, cleanly.
                    Poll::Ready(_) if ends_quietly => Poll::Ready(Ok(())),
                    Poll::Ready(error) => Poll::Ready(Err(error)),
                    Poll::Pending => Poll::Pending,
                }
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
        std::task::ready!(self.drain_replacement(cx))?;
        if let Some(written) = self.replace_hyper_answer(data) {
            // Written now as far as the socket takes it; the rest before the next write,
            // the flush or the shutdown.
            let _ = self.drain_replacement(cx)?;
            return Poll::Ready(Ok(written));
        }
        let poll = Pin::new(&mut self.stream).poll_write(cx, data);
        self.written(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.drain_replacement(cx))?;
        // hyper's own answer has no body: one buffer holding the whole head.
        if let [head] = data {
            if let Some(written) = self.replace_hyper_answer(head) {
                let _ = self.drain_replacement(cx)?;
                return Poll::Ready(Ok(written));
            }
        }
        let poll = Pin::new(&mut self.stream).poll_write_vectored(cx, data);
        self.written(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.drain_replacement(cx))?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.drain_replacement(cx))?;
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The API's answer in place of `head` when `head` is the one hyper writes by itself for a
/// request it cannot read — `400` (a malformed request line or header), `414` (a URI over
/// 65,534 bytes) or `431` (a head over its buffer, or over 100 headers), always with
/// `content-length: 0` — so that those answers too carry the JSON error shape, with a stable
/// code, and close the connection (issue 28). `None` for anything else.
fn hyper_refusal(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let (head, rest) = text.split_once("\r\n\r\n")?;
    if !rest.is_empty()
        || !head
            .split("\r\n")
            .any(|line| line.eq_ignore_ascii_case("content-length: 0"))
    {
        return None;
    }
    let status = head.strip_prefix("HTTP/1.1 ")?.get(..3)?;
    let (reason, code, message) = match status {
        "400" => (
            "Bad Request",
            "malformed_request",
            "the request line or a header is not valid HTTP/1.1",
        ),
        "414" => (
            "URI Too Long",
            "uri_too_long",
            "the request's URI is longer than 65,534 bytes",
        ),
        "431" => (
            "Request Header Fields Too Large",
            "headers_too_large",
            "the request's head is larger than this server reads, or has more than 100 headers",
        ),
        _ => return None,
    };
    let body = serde_json::json!({"code": code, "message": message, "problems": []}).to_string();
    Some(
        format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n\
             connection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::{hyper_refusal, OVER_CAPACITY, OVER_PEER_CAPACITY};

    /// hyper's own answers become answers in the error shape; nothing else is touched.
    #[test]
    fn hyper_answers_get_the_error_shape() {
        for (status, code) in [
            ("400 Bad Request", "malformed_request"),
            ("414 URI Too Long", "uri_too_long"),
            ("431 Request Header Fields Too Large", "headers_too_large"),
        ] {
            let hyper = format!(
                "HTTP/1.1 {status}\r\ncontent-length: 0\r\ndate: Mon, 07 Dec 2026 03:00:00 GMT\r\n\r\n"
            );
            let answer = hyper_refusal(hyper.as_bytes()).unwrap();
            assert!(answer.starts_with(format!("HTTP/1.1 {status}\r\n").as_bytes()));
            refusal_is_complete(&answer, code);
        }
        for other in [
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 52\r\n\r\n",
            "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{}",
            "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
        ] {
            assert!(hyper_refusal(other.as_bytes()).is_none(), "{other}");
        }
    }

    #[test]
    fn the_refusals_are_complete_answers_in_the_error_shape() {
        for (answer, code) in [
            (OVER_CAPACITY, "too_many_connections"),
            (OVER_PEER_CAPACITY, "too_many_peer_connections"),
        ] {
            refusal_is_complete(answer, code);
        }
    }

    fn refusal_is_complete(answer: &[u8], code: &str) {
        let text = std::str::from_utf8(answer).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len());
        let body: the_eye_types::ErrorBody = serde_json::from_str(body).unwrap();
        assert_eq!(body.code, code);
    }
}
