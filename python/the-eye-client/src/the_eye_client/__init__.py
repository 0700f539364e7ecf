"""Client for The Eye: batches events in a background thread and delivers them reliably to
``POST /api/events``.

>>> from the_eye_client import TheEye, new_session_id
>>> client = TheEye("http://127.0.0.1:8000", "eye_…")           # doctest: +SKIP
>>> client.track("form interaction", "submit", {"form": "signup"},
...              session_id=new_session_id())                    # doctest: +SKIP
>>> client.shutdown()  # delivers what is queued; raises Undelivered if some was not  # doctest: +SKIP

Layout: ``_ids`` (UUIDv7), ``_event`` (checking and encoding an event), ``_transport`` (requests,
answers, retries), ``_outcome`` (what became of events, the exceptions), ``_client`` (the queue,
the background thread, fork and exit). The README beside ``pyproject.toml`` says what it
guarantees.
"""

from ._client import Overflow, Stats, TheEye, __version__
from ._event import Event, EventError
from ._ids import new_session_id, uuid7
from ._outcome import (
    ClientClosed,
    DeliveryError,
    Failure,
    FlushError,
    FlushTimeout,
    Problem,
    QueueFull,
    Rejection,
    TrackError,
    Undelivered,
)
from ._transport import MAX_BATCH_SIZE, RetryPolicy

__all__ = [
    "MAX_BATCH_SIZE",
    "ClientClosed",
    "DeliveryError",
    "Event",
    "EventError",
    "Failure",
    "FlushError",
    "FlushTimeout",
    "Overflow",
    "Problem",
    "QueueFull",
    "Rejection",
    "RetryPolicy",
    "Stats",
    "TheEye",
    "TrackError",
    "Undelivered",
    "__version__",
    "new_session_id",
    "uuid7",
]
