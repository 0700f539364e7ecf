"""What became of events: rejected by the server's validation, or not delivered; and the
exceptions ``track``, ``flush`` and ``shutdown`` raise.

The names mirror the Rust client's (``client/src/outcome.rs``, ``client/src/client.rs``):
``DeliveryError``, ``Rejection``, ``Failure``, ``FlushError`` with ``Undelivered`` and
``FlushTimeout``, ``TrackError`` with ``QueueFull`` and ``ClientClosed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional

from ._event import Event

#: Kinds of :class:`DeliveryError`.
TRANSPORT = "transport"
STATUS = "status"
INVALID_RESPONSE = "invalid_response"
CANCELLED = "cancelled"
DROPPED = "dropped"


@dataclass(frozen=True)
class Problem:
    """One thing the server found wrong with an event (an entry of ``problems`` in its answer).

    ``code`` is stable and machine-readable (``timestamp_in_future``, ``unknown_field``,
    ``required`` …; the README's "Bad input" table lists them); ``message`` is for people and
    may change between versions. ``field`` is the path of the offending field (``timestamp``,
    ``data.form.first_name``); ``index`` the event's position in its request.
    """

    field: str
    code: str
    message: str
    index: Optional[int] = None

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Problem:
        """Reads one problem of the server's answer; missing parts become empty strings."""
        index = value.get("index")
        return cls(
            field=str(value.get("field", "")),
            code=str(value.get("code", "")),
            message=str(value.get("message", "")),
            index=index if isinstance(index, int) else None,
        )


class DeliveryError(Exception):
    """Why a request did not deliver its events.

    ``kind`` says which of these it is:

    - ``"transport"``: no answer — the connection failed or broke, or a socket operation took
      longer than ``request_timeout``. Retried; the server may have stored the events if only
      the answer was lost (retries carry the same ids, so nothing is stored twice).
    - ``"status"``: the server answered an error ``status`` (with its ``code`` and ``message``
      when it sent its usual JSON body): one retrying cannot fix (400, 401, 403, 413 …), or a
      transient one (408, 429, 5xx) that outlasted the :class:`RetryPolicy`.
    - ``"invalid_response"``: the server answered success with a body this client does not
      understand.
    - ``"cancelled"``: ``shutdown`` (or the interpreter's exit) gave up waiting for them.
    - ``"dropped"``: pushed out of a full queue by a newer event (``overflow="drop_oldest"``).
    """

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: Optional[int] = None,
        code: Optional[str] = None,
        body: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        #: The HTTP status, when the server answered.
        self.status = status
        #: The server's error code (``invalid_api_key``, ``insufficient_scope``,
        #: ``origin_not_allowed``, ``body_too_large``, ``rate_limited``, ``queue_full`` …), when
        #: it answered with its error body.
        self.code = code
        #: The server's whole error body, when it sent one.
        self.body = body

    @property
    def is_permanent(self) -> bool:
        """Whether retrying cannot help: a 4xx other than 408 and 429 (a wrong or revoked key:
        401; a scope or origin the key does not have: 403; too large: 413 …), or a success
        answer this client cannot read. Transient failures (no answer, 408, 429, 5xx) are not
        permanent, even once retries ran out."""
        if self.kind == STATUS and self.status is not None:
            return 400 <= self.status < 500 and self.status not in (408, 429)
        return self.kind == INVALID_RESPONSE

    def __repr__(self) -> str:
        return (
            f"DeliveryError(kind={self.kind!r}, status={self.status!r}, code={self.code!r}, "
            f"message={self.message!r})"
        )


@dataclass
class Rejection:
    """A tracked event that the server's validation refused, handed to ``on_rejection``.

    Retrying cannot help; the server keeps it in its ``errors`` table with the same problems.
    """

    event: Event
    problems: List[Problem] = field(default_factory=list)

    @property
    def codes(self) -> List[str]:
        """The problems' codes, e.g. ``["timestamp_in_future"]``."""
        return [problem.code for problem in self.problems]


@dataclass
class Failure:
    """Tracked events that were not delivered, handed to ``on_failure`` so that the
    application can log or keep them (``event.to_json()`` gives each back as sent)."""

    #: The events of the failed request, or those still queued when a shutdown gave up, or
    #: one pushed out of a full queue.
    events: List[Event]
    #: Why they were not delivered.
    error: DeliveryError
    #: HTTP attempts made for them (0 when none was).
    attempts: int


class TrackError(Exception):
    """Why ``track`` did not queue an event; ``event`` is the event it was given."""

    def __init__(self, message: str, event: Event) -> None:
        super().__init__(message)
        self.event = event


class QueueFull(TrackError):
    """The queue held ``queue_capacity`` events (``overflow="error"``, or ``"block"`` once
    ``block_timeout`` passed). Counted in ``stats().dropped``."""


class ClientClosed(TrackError):
    """``shutdown`` was called (or the interpreter is exiting): no more events are taken."""


class FlushError(Exception):
    """Why ``flush`` or ``shutdown`` did not end with everything delivered."""


class Undelivered(FlushError):
    """Everything was settled, but ``failed`` tracked events were not delivered since the
    previous ``flush`` or ``shutdown`` returned: the server refused their requests as a whole
    (a wrong key, a scope or origin it does not allow, too large), retries of a transient
    failure ran out, or they were dropped from a full queue. ``error`` is why the first of them
    failed, e.g. ``error.code == "invalid_api_key"``. Each was also handed to ``on_failure``
    (or logged). Events the server's validation rejected are not failures: see
    ``on_rejection``.
    """

    def __init__(self, failed: int, error: DeliveryError) -> None:
        were = "event was" if failed == 1 else "events were"
        super().__init__(f"{failed} {were} not delivered; the first because: {error}")
        self.failed = failed
        self.error = error


class FlushTimeout(FlushError):
    """The deadline passed with ``pending`` events still undelivered (typically: The Eye is
    unreachable and retries go on). After ``flush`` they stay queued; after ``shutdown`` they
    are reported as failed with ``kind == "cancelled"``."""

    def __init__(self, pending: int) -> None:
        were = "event was" if pending == 1 else "events were"
        super().__init__(f"{pending} {were} still undelivered when the deadline passed")
        self.pending = pending
