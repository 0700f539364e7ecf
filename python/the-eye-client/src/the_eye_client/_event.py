"""The event a caller tracks, checked and encoded once, when it is tracked.

The wire form is the service's ``EventIn`` (``types/src/lib.rs``): ``event_id``, ``session_id``,
``category``, ``name``, ``data``, ``timestamp``, optionally ``user_id``, and ``sent_at``, which
is stamped on every attempt so that the server can correct the client's clock skew. The JSON
is made when the event is tracked, so changing ``data`` afterwards changes nothing, and a
request body is the concatenation of the events' bytes. Rules that depend on the server's
configuration (lengths, sizes, payload schemas) are the server's to check: it reports every
problem with a stable code (see ``Rejection``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Callable, Optional, Tuple, Union

from ._ids import uuid7

_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
#: A string as a JSON string (quotes included), as ``_encode`` writes it; the C function,
#: without the encoder's dispatch, for the envelope's short strings.
_string: Callable[[str], str] = json.encoder.encode_basestring

#: Bytes that ``sent_at`` adds to an event: ``,"sent_at":"2021-01-01T09:15:27.243860Z"``.
SENT_AT_LEN = len(b',"sent_at":"2021-01-01T09:15:27.243860Z"')


class EventError(ValueError):
    """An argument of ``track`` that cannot make an event (raised at once, nothing queued)."""


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds and ``Z``, as the Rust client writes times:
    ``2021-01-01T09:15:27.243860Z``. ``moment`` must be timezone-aware."""
    # isoformat is implemented in C: a fifth of strftime's cost, on every tracked event.
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")[:-6] + "Z"


#: The second last formatted by `now_text` and its text up to the fraction, so that formatting
#: the current time costs a division and a short format (a tuple: replaced atomically).
_second: Tuple[int, str] = (-1, "")


def now_text() -> str:
    """The current time as ``format_time`` writes it, cheaply (once per event tracked)."""
    global _second
    micros = time.time_ns() // 1000
    second, fraction = divmod(micros, 1_000_000)
    cached = _second
    if cached[0] != second:
        cached = _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second)))
    return f"{cached[1]}{fraction:06d}Z"


class Event:
    """One tracked event, as the server will receive it (without ``sent_at``).

    Made by ``TheEye.track``; handed back in ``Rejection`` and ``Failure``.
    """

    __slots__ = ("category", "data", "event_id", "name", "session_id", "timestamp", "user_id", "wire")

    def __init__(
        self,
        category: str,
        name: str,
        data: Mapping[str, Any],
        *,
        session_id: str,
        timestamp: Optional[datetime] = None,
        event_id: Union[str, uuid.UUID, None] = None,
        user_id: Optional[str] = None,
    ) -> None:
        """Checks the arguments and encodes the event; raises :class:`EventError` (a
        ``ValueError``) when they cannot make one. See ``TheEye.track`` for their meaning."""
        for what, value in (("category", category), ("name", name), ("session_id", session_id)):
            if not isinstance(value, str) or not value:
                raise EventError(f"{what} must be a non-empty string, not {value!r}")
        if user_id is not None and (not isinstance(user_id, str) or not user_id):
            raise EventError(f"user_id must be a non-empty string or None, not {user_id!r}")
        # `type(data) is dict` first: the ABC check costs microseconds, on every event.
        if not (type(data) is dict or isinstance(data, Mapping)) or not data:
            raise EventError("data must be a non-empty mapping (a JSON object)")
        if timestamp is not None and (not isinstance(timestamp, datetime) or timestamp.utcoffset() is None):
            # A naive datetime is ambiguous (local time? UTC?): a wrong guess would move the
            # event by hours without anyone noticing.
            raise EventError(f"timestamp must be a timezone-aware datetime, not {timestamp!r}")
        if event_id is None:
            event_id = uuid7()
        else:
            try:
                parsed = event_id if isinstance(event_id, uuid.UUID) else uuid.UUID(str(event_id))
            except ValueError:
                raise EventError(f"event_id must be a UUID, not {event_id!r}") from None
            if parsed.int == 0:
                raise EventError("event_id must not be the nil UUID")
            event_id = str(parsed)
        try:
            data_json = _encode(data)
        except (TypeError, ValueError) as error:
            raise EventError(f"data cannot be encoded as JSON: {error}") from None
        #: The id the server stores the event under: a UUIDv7 unless one was given.
        self.event_id: str = event_id
        self.session_id = session_id
        self.category = category
        self.name = name
        #: The mapping given to ``track`` (what is sent was encoded from it then: see
        #: ``to_json``).
        self.data = data
        #: When the event happened, by this machine's clock (``Z``-suffixed RFC 3339).
        self.timestamp = now_text() if timestamp is None else format_time(timestamp)
        self.user_id = user_id
        user = "" if user_id is None else ',"user_id":' + _string(user_id)
        # The wire form without its closing brace, so that `sent_at` can be appended per
        # attempt without encoding the event again.
        text = (
            '{"event_id":"'
            + event_id
            + '","session_id":'
            + _string(session_id)
            + ',"category":'
            + _string(category)
            + ',"name":'
            + _string(name)
            + ',"data":'
            + data_json
            + ',"timestamp":"'
            + self.timestamp
            + '"'
            + user
        )
        try:
            self.wire: bytes = text.encode()
        except UnicodeEncodeError as error:
            # A lone surrogate (half of a character cut in two): not UTF-8, so the server would
            # refuse the whole request as malformed; refused here, for this event alone.
            raise EventError(f"a string of the event is not valid Unicode: {error}") from None

    @property
    def request_cost(self) -> int:
        """Bytes this event adds to a request body: its JSON with ``sent_at``, and a separator."""
        return len(self.wire) + SENT_AT_LEN + 2

    def to_json(self) -> dict[str, Any]:
        """The event as the server receives it, without ``sent_at``: for logging or keeping an
        undelivered event."""
        value: dict[str, Any] = json.loads(self.wire + b"}")
        return value

    def __repr__(self) -> str:
        return (
            f"Event(event_id={self.event_id!r}, session_id={self.session_id!r}, "
            f"category={self.category!r}, name={self.name!r})"
        )
