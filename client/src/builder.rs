//! The client's options, their defaults and their checks.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderValue;
use reqwest::Url;

use crate::outcome::{Failure, Rejection};

/// A callback run on the client's background task; it must be quick and must not block.
pub(crate) type Callback<T> = Arc<dyn Fn(T) + Send + Sync + 'static>;

/// What [`track`](crate::Client::track) does when the queue is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Overflow {
    /// Refuse the new event: `track` returns [`TrackError::QueueFull`](crate::TrackError)
    /// with the event, so the caller decides. The default: nothing leaves the client without
    /// the caller seeing it.
    #[default]
    Error,
    /// Drop the oldest queued event to make room; `track` succeeds. For telemetry where the
    /// newest events matter most.
    DropOldest,
}

/// When and how long to retry a request that failed for a reason that may pass: no answer
/// (connection refused or broken, timeout), 408, 429 or 5xx. Validation rejections and other
/// 4xx answers are never retried.
///
/// Delays grow from `initial_backoff`, doubling per retry up to `max_backoff`, with jitter
/// (each delay is drawn between half and all of its nominal value, so that many clients
/// recovering together do not retry in step). A `Retry-After` from the server is honoured: the
/// delay is never shorter than it.
///
/// ```
/// use std::time::Duration;
/// use the_eye_client::RetryPolicy;
///
/// let patient = RetryPolicy {
///     max_attempts: 20,
///     max_elapsed: Duration::from_secs(600),
///     ..RetryPolicy::default()
/// };
/// assert_eq!(patient.initial_backoff, Duration::from_millis(100));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Most attempts per request, the first included; 1 disables retrying. Default 10.
    pub max_attempts: u32,
    /// Longest time from a request's first attempt to the start of its last; a retry that
    /// would start later is not made. Default 2 minutes.
    pub max_elapsed: Duration,
    /// Delay before the first retry (before jitter). Default 100 ms.
    pub initial_backoff: Duration,
    /// Longest delay between attempts, unless the server's `Retry-After` asks for more.
    /// Default 30 s.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            max_elapsed: Duration::from_secs(120),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// One attempt only: failures are reported at once.
    pub fn never() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }
}

/// Configures and builds a [`Client`](crate::Client); see [`Client::builder`](crate::Client::builder).
///
/// Every option has a default; [`build`](Self::build) checks them all.
#[must_use = "a ClientBuilder does nothing until `build` is called"]
pub struct ClientBuilder {
    pub(crate) base_url: String,
    pub(crate) key: String,
    pub(crate) batch_size: usize,
    pub(crate) flush_interval: Duration,
    pub(crate) queue_capacity: usize,
    pub(crate) overflow: Overflow,
    pub(crate) request_timeout: Duration,
    pub(crate) gzip: bool,
    pub(crate) retry: RetryPolicy,
    pub(crate) max_request_bytes: usize,
    pub(crate) flush_timeout: Duration,
    pub(crate) on_rejection: Option<Callback<Rejection>>,
    pub(crate) on_failure: Option<Callback<Failure>>,
}

/// The most events the server takes in one request.
pub const MAX_BATCH_SIZE: usize = 1_000;

impl ClientBuilder {
    pub(crate) fn new(base_url: String, key: String) -> Self {
        Self {
            base_url,
            key,
            batch_size: 500,
            flush_interval: Duration::from_secs(1),
            queue_capacity: 10_000,
            overflow: Overflow::Error,
            request_timeout: Duration::from_secs(10),
            gzip: true,
            retry: RetryPolicy::default(),
            max_request_bytes: 1024 * 1024,
            flush_timeout: Duration::from_secs(30),
            on_rejection: None,
            on_failure: None,
        }
    }

    /// Most events per request, 1 to [`MAX_BATCH_SIZE`]. A batch is sent as soon as this many
    /// are queued. Default 500.
    pub fn batch_size(mut self, events: usize) -> Self {
        self.batch_size = events;
        self
    }

    /// Longest time a tracked event waits for its batch to fill before it is sent anyway.
    /// Default 1 s.
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = interval;
        self
    }

    /// Most events waiting in memory (not counting the batch being delivered). Bounds the
    /// client's memory while the server is unreachable. Default 10,000.
    pub fn queue_capacity(mut self, events: usize) -> Self {
        self.queue_capacity = events;
        self
    }

    /// What `track` does when the queue is full. Default [`Overflow::Error`].
    pub fn overflow(mut self, policy: Overflow) -> Self {
        self.overflow = policy;
        self
    }

    /// Longest time one HTTP attempt may take, connecting included. Default 10 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Whether request bodies are gzip-compressed (`Content-Encoding: gzip`). Event batches
    /// compress about tenfold. Default on.
    pub fn gzip(mut self, enabled: bool) -> Self {
        self.gzip = enabled;
        self
    }

    /// How failed requests are retried. Default [`RetryPolicy::default`].
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Largest request body before compression, in bytes; batches are cut to fit. Must not
    /// exceed the server's `ingest.max_body_bytes`, which defaults to the same 1 MiB (a
    /// request the server still finds too large is split in two and retried). Default 1 MiB.
    pub fn max_request_bytes(mut self, bytes: usize) -> Self {
        self.max_request_bytes = bytes;
        self
    }

    /// How long [`flush`](crate::Client::flush) and [`shutdown`](crate::Client::shutdown)
    /// wait for the queue to be delivered. Default 30 s.
    pub fn flush_timeout(mut self, timeout: Duration) -> Self {
        self.flush_timeout = timeout;
        self
    }

    /// Called with every tracked event that the server's validation rejects, with the
    /// server's problems. Runs on the client's background task: keep it quick. Without it,
    /// rejections are logged at `warn` through `tracing`.
    ///
    /// To handle rejections elsewhere, send them into a channel:
    ///
    /// ```no_run
    /// use the_eye_client::{Client, Rejection};
    ///
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), the_eye_client::BuildError> {
    /// let (rejections, mut rejected) = tokio::sync::mpsc::unbounded_channel::<Rejection>();
    /// let client = Client::builder("http://127.0.0.1:8000", "my-api-key")
    ///     .on_rejection(move |rejection| {
    ///         let _ = rejections.send(rejection);
    ///     })
    ///     .build()?;
    /// tokio::spawn(async move {
    ///     while let Some(rejection) = rejected.recv().await {
    ///         eprintln!("{} rejected: {:?}", rejection.event.event_id(), rejection.codes());
    ///     }
    /// });
    /// # Ok(())
    /// # }
    /// ```
    pub fn on_rejection(mut self, callback: impl Fn(Rejection) + Send + Sync + 'static) -> Self {
        self.on_rejection = Some(Arc::new(callback));
        self
    }

    /// Called with tracked events that could not be delivered (see [`Failure`]). Runs on the
    /// client's background task: keep it quick. Without it, failures are logged at `error`
    /// through `tracing`, and the first is also printed to stderr when the program installed
    /// no `tracing` subscriber. Either way, the next [`Client::flush`](crate::Client::flush)
    /// or [`Client::shutdown`](crate::Client::shutdown) returns
    /// [`FlushError::Undelivered`](crate::FlushError::Undelivered) with how many failed and
    /// why.
    ///
    /// ```
    /// use the_eye_client::Client;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), the_eye_client::BuildError> {
    /// let client = Client::builder("http://127.0.0.1:8000", "my-api-key")
    ///     .on_failure(|failure| {
    ///         eprintln!(
    ///             "{} event(s) lost after {} attempt(s): {} (permanent: {})",
    ///             failure.events.len(),
    ///             failure.attempts,
    ///             failure.error,
    ///             failure.error.is_permanent()
    ///         );
    ///     })
    ///     .build()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn on_failure(mut self, callback: impl Fn(Failure) + Send + Sync + 'static) -> Self {
        self.on_failure = Some(Arc::new(callback));
        self
    }

    /// Checks every option and returns the endpoint URL and the `Authorization` value.
    pub(crate) fn validate(&self) -> Result<(Url, HeaderValue), BuildError> {
        let invalid =
            |option: &'static str, reason: String| BuildError::InvalidOption { option, reason };
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            return Err(invalid(
                "batch_size",
                format!("must be 1 to {MAX_BATCH_SIZE}, not {}", self.batch_size),
            ));
        }
        if self.queue_capacity == 0 {
            return Err(invalid("queue_capacity", "must be at least 1".to_owned()));
        }
        for (option, value) in [
            ("flush_interval", self.flush_interval),
            ("request_timeout", self.request_timeout),
            ("flush_timeout", self.flush_timeout),
            ("retry.initial_backoff", self.retry.initial_backoff),
        ] {
            if value.is_zero() {
                return Err(invalid(option, "must be longer than zero".to_owned()));
            }
        }
        if self.retry.max_attempts == 0 {
            return Err(invalid(
                "retry.max_attempts",
                "must be at least 1 (the first attempt counts)".to_owned(),
            ));
        }
        if self.retry.max_backoff < self.retry.initial_backoff {
            return Err(invalid(
                "retry.max_backoff",
                "must not be shorter than retry.initial_backoff".to_owned(),
            ));
        }
        if self.max_request_bytes < 1024 {
            return Err(invalid(
                "max_request_bytes",
                format!("must be at least 1024, not {}", self.max_request_bytes),
            ));
        }
        Ok((endpoint(&self.base_url)?, authorization(&self.key)?))
    }
}

impl fmt::Debug for ClientBuilder {
    /// Everything but the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base_url", &self.base_url)
            .field("key", &"<redacted>")
            .field("batch_size", &self.batch_size)
            .field("flush_interval", &self.flush_interval)
            .field("queue_capacity", &self.queue_capacity)
            .field("overflow", &self.overflow)
            .field("request_timeout", &self.request_timeout)
            .field("gzip", &self.gzip)
            .field("retry", &self.retry)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("flush_timeout", &self.flush_timeout)
            .field("on_rejection", &self.on_rejection.is_some())
            .field("on_failure", &self.on_failure.is_some())
            .finish()
    }
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The base URL does not parse, or is not http(s).
    #[error("invalid base URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An `https` URL, but the crate was built without its `rustls` feature.
    #[error("`{url}` needs TLS; enable the `rustls` feature of the-eye-client")]
    TlsNotEnabled {
        /// The URL as given.
        url: String,
    },
    /// The API key is empty or cannot be sent in an HTTP header.
    #[error("invalid API key: {reason}")]
    InvalidKey {
        /// What is wrong with it (never the key itself).
        reason: &'static str,
    },
    /// An option is out of range.
    #[error("invalid option `{option}`: {reason}")]
    InvalidOption {
        /// The builder method's name.
        option: &'static str,
        /// The allowed range.
        reason: String,
    },
    /// [`build`](ClientBuilder::build) was called outside a Tokio runtime; use
    /// [`build_blocking`](ClientBuilder::build_blocking) in programs without one.
    #[error("the client needs a Tokio runtime to run its background task; call `build` inside one, or use `build_blocking`")]
    NoRuntime,
    /// The HTTP client or the blocking facade's runtime could not be set up.
    #[error("could not set up the client: {0}")]
    Setup(String),
}

/// `{base}/api/events`, keeping any path prefix of `base` (a proxy may mount The Eye under one).
fn endpoint(base: &str) -> Result<Url, BuildError> {
    let invalid = |reason: String| BuildError::InvalidUrl {
        url: base.to_owned(),
        reason,
    };
    let mut url = Url::parse(base).map_err(|error| invalid(error.to_string()))?;
    match url.scheme() {
        "http" => {}
        "https" if cfg!(feature = "rustls") => {}
        "https" => {
            return Err(BuildError::TlsNotEnabled {
                url: base.to_owned(),
            })
        }
        other => {
            return Err(invalid(format!(
                "the scheme must be http or https, not {other}"
            )))
        }
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("must not have a query or fragment".to_owned()));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url.join("api/events")
        .map_err(|error| invalid(error.to_string()))
}

fn authorization(key: &str) -> Result<HeaderValue, BuildError> {
    if key.is_empty() {
        return Err(BuildError::InvalidKey {
            reason: "it is empty",
        });
    }
    let mut value =
        HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| BuildError::InvalidKey {
            reason: "it holds characters that cannot be sent in an HTTP header",
        })?;
    // Keeps the key out of reqwest's and hyper's debug output.
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_keeps_a_path_prefix() {
        let cases = [
            ("http://127.0.0.1:8000", "http://127.0.0.1:8000/api/events"),
            ("http://127.0.0.1:8000/", "http://127.0.0.1:8000/api/events"),
            ("http://host/eye", "http://host/eye/api/events"),
            ("http://host/eye/", "http://host/eye/api/events"),
        ];
        for (base, expected) in cases {
            assert_eq!(endpoint(base).unwrap().as_str(), expected, "{base}");
        }
        for bad in ["not a url", "ftp://host", "http://host/?x=1"] {
            assert!(
                matches!(endpoint(bad), Err(BuildError::InvalidUrl { .. })),
                "{bad}"
            );
        }
        let https = endpoint("https://host");
        if cfg!(feature = "rustls") {
            assert!(https.is_ok());
        } else {
            assert!(matches!(https, Err(BuildError::TlsNotEnabled { .. })));
        }
    }

    #[test]
    fn options_are_checked_with_their_names() {
        let builder = || ClientBuilder::new("http://host".into(), "key".into());
        let option_of = |builder: ClientBuilder| match builder.validate() {
            Err(BuildError::InvalidOption { option, .. }) => option,
            other => panic!("{other:?}"),
        };
        assert_eq!(option_of(builder().batch_size(0)), "batch_size");
        assert_eq!(option_of(builder().batch_size(1001)), "batch_size");
        assert_eq!(option_of(builder().queue_capacity(0)), "queue_capacity");
        assert_eq!(
            option_of(builder().flush_interval(Duration::ZERO)),
            "flush_interval"
        );
        assert_eq!(
            option_of(builder().retry(RetryPolicy {
                max_attempts: 0,
                ..RetryPolicy::default()
            })),
            "retry.max_attempts"
        );
        assert_eq!(
            option_of(builder().retry(RetryPolicy {
                max_backoff: Duration::from_millis(1),
                ..RetryPolicy::default()
            })),
            "retry.max_backoff"
        );
        assert_eq!(
            option_of(builder().max_request_bytes(10)),
            "max_request_bytes"
        );
        assert!(builder().validate().is_ok());
    }

    #[test]
    fn the_key_is_checked_and_never_shown() {
        let with_key = |key: &str| ClientBuilder::new("http://host".into(), key.into());
        assert!(matches!(
            with_key("").validate(),
            Err(BuildError::InvalidKey { .. })
        ));
        assert!(matches!(
            with_key("line\nbreak").validate(),
            Err(BuildError::InvalidKey { .. })
        ));
        let (_, header) = with_key("s3cret").validate().unwrap();
        assert_eq!(header.to_str().unwrap(), "Bearer s3cret");
        assert!(header.is_sensitive());
        assert!(!format!("{:?}", with_key("s3cret")).contains("s3cret"));
    }
}
