//! What became of events: accepted, rejected by the server's validation, or not delivered.

use std::fmt;
use std::sync::Arc;

use the_eye_types::{ErrorBody, Problem};
use uuid::Uuid;

use crate::Event;

/// The fate of one event, as [`Client::send`](crate::Client::send) reports it.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The server accepted the event (it is queued for storage, or was already stored by an
    /// earlier attempt).
    Accepted {
        /// The event's id.
        event_id: Uuid,
    },
    /// The server's validation refused the event; retrying cannot help. The event is recorded
    /// in the server's `errors` table.
    Rejected {
        /// The event's id.
        event_id: Uuid,
        /// Every problem the server found, each with a stable `code` such as
        /// `timestamp_in_future`.
        problems: Vec<Problem>,
    },
    /// The event was not delivered: the request was refused as a whole, or retries ran out.
    /// The server may still have stored it if the last attempt's answer was lost.
    Failed {
        /// The event's id.
        event_id: Uuid,
        /// Why; shared by every event of the failed request.
        error: Arc<DeliveryError>,
    },
}

impl Outcome {
    /// The id of the event this outcome is about.
    pub fn event_id(&self) -> Uuid {
        match self {
            Self::Accepted { event_id }
            | Self::Rejected { event_id, .. }
            | Self::Failed { event_id, .. } => *event_id,
        }
    }

    /// Whether the server accepted the event.
    pub fn is_accepted(&self) -> bool {
        matches!(self, Self::Accepted { .. })
    }
}

/// One result per event of a [`Client::send`](crate::Client::send), in the order given.
#[derive(Debug, Clone, Default)]
pub struct SendReport {
    /// One entry per event, in the order the events were given.
    pub outcomes: Vec<Outcome>,
}

impl SendReport {
    /// How many events the server accepted.
    pub fn accepted(&self) -> usize {
        self.outcomes.iter().filter(|o| o.is_accepted()).count()
    }

    /// The rejected events' ids with their problems.
    pub fn rejected(&self) -> impl Iterator<Item = (Uuid, &[Problem])> {
        self.outcomes.iter().filter_map(|outcome| match outcome {
            Outcome::Rejected { event_id, problems } => Some((*event_id, problems.as_slice())),
            _ => None,
        })
    }

    /// The undelivered events' ids with the reason.
    pub fn failed(&self) -> impl Iterator<Item = (Uuid, &DeliveryError)> {
        self.outcomes.iter().filter_map(|outcome| match outcome {
            Outcome::Failed { event_id, error } => Some((*event_id, error.as_ref())),
            _ => None,
        })
    }

    /// Whether every event was accepted.
    pub fn all_accepted(&self) -> bool {
        self.outcomes.iter().all(Outcome::is_accepted)
    }
}

/// A tracked event that the server's validation refused, handed to the
/// [`on_rejection`](crate::ClientBuilder::on_rejection) callback.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// The event as it was tracked.
    pub event: Event,
    /// Every problem the server found.
    pub problems: Vec<Problem>,
}

impl Rejection {
    /// The problems' codes, e.g. `["timestamp_in_future"]`.
    pub fn codes(&self) -> Vec<&str> {
        self.problems.iter().map(|p| p.code.as_str()).collect()
    }
}

/// Tracked events that could not be delivered, handed to the
/// [`on_failure`](crate::ClientBuilder::on_failure) callback so that the application can log
/// or keep them.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The events of the failed request (or those still queued when a shutdown gave up).
    pub events: Vec<Event>,
    /// Why they were not delivered.
    pub error: Arc<DeliveryError>,
    /// HTTP attempts made for them (0 when none was).
    pub attempts: u32,
}

/// Why a request did not deliver its events.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// No answer: the connection failed, broke, or the request timed out.
    #[error("no answer from The Eye: {0}")]
    Transport(#[from] TransportError),
    /// The server answered with an error status: one that retrying cannot fix (400, 401, 403,
    /// 413, 415, …), or a transient one (429, 5xx) that lasted longer than the retry policy.
    #[error("The Eye answered {status}{}", describe(error.as_ref()))]
    Status {
        /// The HTTP status code.
        status: u16,
        /// The server's error body, when it sent one in its usual shape.
        error: Option<ErrorBody>,
    },
    /// The server answered success, but not with a body this client understands.
    #[error("The Eye's answer (status {status}) could not be understood: {message}")]
    InvalidResponse {
        /// The HTTP status code.
        status: u16,
        /// What was wrong with it.
        message: String,
    },
    /// [`Client::shutdown`](crate::Client::shutdown) gave up waiting before these events were
    /// delivered.
    #[error("the client shut down before the events were delivered")]
    Cancelled,
}

impl DeliveryError {
    /// The server's error code, when it answered with its error body: `invalid_api_key`,
    /// `missing_api_key`, `insufficient_scope`, `origin_not_allowed`, `body_too_large`,
    /// `rate_limited`, `queue_full`, … (the README's table of error codes lists them all).
    ///
    /// ```
    /// use the_eye_client::DeliveryError;
    ///
    /// fn advice(error: &DeliveryError) -> &'static str {
    ///     match error.code() {
    ///         Some("invalid_api_key" | "missing_api_key") => "check the API key",
    ///         Some("insufficient_scope") => "use a key with the `ingest` scope",
    ///         Some(_) => "see the server's message",
    ///         None if error.status().is_none() => "The Eye did not answer",
    ///         None => "the answer was not The Eye's error body",
    ///     }
    /// }
    /// assert_eq!(advice(&DeliveryError::Cancelled), "The Eye did not answer");
    /// ```
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Status {
                error: Some(body), ..
            } => Some(&body.code),
            _ => None,
        }
    }

    /// Whether retrying cannot help: the server refused the request as a whole with a 4xx
    /// other than 408 and 429 (a wrong or revoked key: 401; a scope or origin it does not
    /// allow: 403; too large: 413, …), or answered success with a body this client does not
    /// understand. Transient failures (no answer, 408, 429, 5xx) are retried by the
    /// [`RetryPolicy`](crate::RetryPolicy) and are not permanent, even once retries ran out.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Status { status, .. } => {
                (400..500).contains(status) && *status != 408 && *status != 429
            }
            Self::InvalidResponse { .. } => true,
            Self::Transport(_) | Self::Cancelled => false,
        }
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } | Self::InvalidResponse { status, .. } => Some(*status),
            _ => None,
        }
    }
}

fn describe(body: Option<&ErrorBody>) -> String {
    body.map_or_else(String::new, |body| {
        format!(" ({}: {})", body.code, body.message)
    })
}

/// A connection-level failure: refused, reset, timed out, or a broken answer.
pub struct TransportError(pub(crate) reqwest::Error);

impl TransportError {
    /// Whether the request ran out of its time ([`request_timeout`](crate::ClientBuilder::request_timeout)).
    pub fn is_timeout(&self) -> bool {
        self.0.is_timeout()
    }

    /// Whether no connection could be made.
    pub fn is_connect(&self) -> bool {
        self.0.is_connect()
    }
}

impl fmt::Debug for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for TransportError {
    /// The error with its causes, since reqwest's own message ("error sending request") says
    /// little without them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = std::error::Error::source(&self.0);
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl std::error::Error for TransportError {}
