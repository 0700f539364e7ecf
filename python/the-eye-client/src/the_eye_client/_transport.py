"""Delivering events over HTTP: cutting them into requests, encoding (JSON, gzip), reading the
answer, and retrying what may succeed later. It mirrors the Rust client's
``client/src/transport.rs``; the background thread of ``TheEye`` is its only caller.

One persistent connection (``http.client``, keep-alive) serves every request of a client. It
does not know about the queue: it takes events and says what became of each.
"""

from __future__ import annotations

import email.utils
import gzip
import http.client
import json
import logging
import random
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Deque, List, Optional, Sequence, Tuple, Union
from urllib.parse import urlsplit

from ._event import Event, now_text
from ._outcome import CANCELLED, INVALID_RESPONSE, STATUS, TRANSPORT, DeliveryError, Problem

logger = logging.getLogger("the_eye_client")

#: The most events the server takes in one request (``ingest.max_batch_events``).
MAX_BATCH_SIZE = 1000


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to retry a request that failed for a reason that may pass: no answer
    (connection refused or broken, timeout), 408, 429 or 5xx. Validation rejections and other
    4xx answers are never retried.

    Delays grow from ``initial_backoff``, doubling per retry up to ``max_backoff``, each drawn
    between half and all of its nominal value (jitter, so that many clients recovering together
    do not retry in step), and never shorter than the server's ``Retry-After``. The defaults
    are the Rust client's.
    """

    #: Most attempts per request, the first included; 1 disables retrying.
    max_attempts: int = 10
    #: Longest time from a request's first attempt to the start of its last, in seconds.
    max_elapsed: float = 120.0
    #: Delay before the first retry (before jitter), in seconds.
    initial_backoff: float = 0.1
    #: Longest delay between attempts unless ``Retry-After`` asks for more, in seconds.
    max_backoff: float = 30.0

    def backoff(self, attempts: int, retry_after: Optional[float]) -> float:
        """The delay in seconds before retry number ``attempts`` (1 after the first attempt
        failed)."""
        nominal = min(self.initial_backoff * 2.0 ** min(attempts - 1, 40), self.max_backoff)
        jittered = nominal / 2 + random.random() * nominal / 2
        return float(max(jittered, retry_after or 0.0))


#: What became of one event: ``None`` for accepted, a list of problems for rejected, or the
#: error and attempts for failed.
Fate = Union[None, List[Problem], Tuple[DeliveryError, int]]


class _Answered:
    """Each event of the request has its result (202, or 400 ``all_rejected``). With
    ``unlisted_accepted`` (the server applied ``Prefer: return=minimal`` and its counts cover
    the request), an event that ``results`` does not list was accepted under its own id."""

    def __init__(self, results: Sequence[Any], unlisted_accepted: bool = False) -> None:
        self.results = results
        self.unlisted_accepted = unlisted_accepted


class _Retry:
    def __init__(self, error: DeliveryError, retry_after: Optional[float]) -> None:
        self.error = error
        self.retry_after = retry_after


class _Fail:
    def __init__(self, error: DeliveryError, too_large: bool = False) -> None:
        self.error = error
        self.too_large = too_large


Verdict = Union[_Answered, _Retry, _Fail]


def request_len(events: Sequence[Event] | Deque[Event], batch_size: int, max_bytes: int) -> int:
    """How many of ``events``, from the first, fit one request: at most ``batch_size`` events
    and ``max_bytes`` of JSON with ``sent_at`` stamped, and always at least one (a single event
    too large is the server's to refuse)."""
    size = 1
    count = 0
    for event in events:
        cost = event.request_cost
        if count == batch_size or (count > 0 and size + cost > max_bytes):
            break
        size += cost
        count += 1
    return count


def retry_after_seconds(value: Optional[str]) -> Optional[float]:
    """``Retry-After`` as seconds, from delay-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        at = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return max(0.0, (at - datetime.now(timezone.utc)).total_seconds())


def minimal_applied(value: Optional[str]) -> bool:
    """Whether a ``Preference-Applied`` header (RFC 7240 §3) holds ``return=minimal``: the
    answer's ``results`` then list only the rejected events and the ids the server assigned."""
    for preference in (value or "").split(","):
        token, _, wanted = preference.partition("=")
        if token.strip().lower() == "return" and wanted.strip().strip('"').lower() == "minimal":
            return True
    return False


def classify(
    status: int, retry_after: Optional[float], body: bytes, events: int = 0, minimal: bool = False
) -> Verdict:
    """What an answer means for the ``events`` events of its request; ``minimal`` says the
    answer carried ``Preference-Applied: return=minimal``."""
    try:
        parsed: Any = json.loads(body) if body else None
    except ValueError:
        parsed = None
    if 200 <= status < 300:
        if isinstance(parsed, dict) and isinstance(parsed.get("results"), list):
            accepted, rejected = parsed.get("accepted"), parsed.get("rejected")
            covered = (
                isinstance(accepted, int) and isinstance(rejected, int) and accepted + rejected == events
            )
            return _Answered(parsed["results"], unlisted_accepted=minimal and covered)
        return _Fail(
            DeliveryError(
                INVALID_RESPONSE,
                f"The Eye's answer (status {status}) is not an ingest summary",
                status=status,
            )
        )
    body_map = parsed if isinstance(parsed, dict) else None
    code = body_map.get("code") if body_map else None
    if status == 400 and code == "all_rejected" and isinstance(body_map and body_map.get("results"), list):
        assert body_map is not None
        return _Answered(body_map["results"])
    detail = f" ({code}: {body_map.get('message')})" if body_map and code else ""
    error = DeliveryError(
        STATUS,
        f"The Eye answered {status}{detail}",
        status=status,
        code=code if isinstance(code, str) else None,
        body=body_map,
    )
    if status == 413:
        return _Fail(error, too_large=True)
    if status in (408, 429) or status >= 500:
        return _Retry(error, retry_after)
    return _Fail(error)


class Transport:
    """The HTTP side of a client: one keep-alive connection, used by one thread at a time."""

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        gzip_enabled: bool,
        request_timeout: float,
        retry: RetryPolicy,
        batch_size: int,
        max_request_bytes: int,
        user_agent: str,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"url must be an http or https URL such as http://127.0.0.1:8000, not {base_url!r}"
            )
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = parts.path.rstrip("/") + "/api/events"
        self._headers = {
            "Content-Type": "application/json",
            "Authorization": "Bearer " + key,
            "User-Agent": user_agent,
            # Every event carries its own event_id: a fully accepted batch needs no list.
            "Prefer": "return=minimal",
        }
        if gzip_enabled:
            self._headers["Content-Encoding"] = "gzip"
        self._gzip = gzip_enabled
        self._timeout = request_timeout
        self.retry = retry
        self.batch_size = batch_size
        self.max_request_bytes = max_request_bytes
        self._connection: Optional[http.client.HTTPConnection] = None
        # Counters this transport keeps; read by `TheEye.stats`.
        self.sent = 0
        self.requests = 0
        self.retries = 0

    def close(self) -> None:
        """Closes the connection (only this process's copy of its socket, after a fork)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def deliver(self, events: List[Event], abort: threading.Event) -> List[Tuple[Event, Fate]]:
        """Delivers ``events`` in as many requests as the batch and size limits need, each
        retried by the policy, and returns every event with its fate, in the order given."""
        settled: List[Tuple[Event, Fate]] = []
        chunks: List[List[Event]] = []
        rest = events
        while rest:
            count = request_len(rest, self.batch_size, self.max_request_bytes)
            chunks.append(rest[:count])
            rest = rest[count:]
        chunks.reverse()  # a stack: the next chunk at the end
        while chunks:
            if abort.is_set():
                # One error for everything left, so that it is reported as one failure.
                cancelled = DeliveryError(CANCELLED, "the client shut down before the events were delivered")
                settled.extend((event, (cancelled, 0)) for chunk in reversed(chunks) for event in chunk)
                break
            chunk = chunks.pop()
            halves = self._deliver_request(chunk, abort, settled)
            if halves is not None:
                # Too large for the server: the halves go next, in order.
                chunks.append(halves[1])
                chunks.append(halves[0])
        return settled

    def _deliver_request(
        self, chunk: List[Event], abort: threading.Event, settled: List[Tuple[Event, Fate]]
    ) -> Optional[Tuple[List[Event], List[Event]]]:
        started = time.monotonic()
        attempts = 0
        while True:
            if abort.is_set():
                cancelled = DeliveryError(CANCELLED, "the client shut down before the events were delivered")
                settled.extend((event, (cancelled, attempts)) for event in chunk)
                return None
            attempts += 1
            verdict = self._attempt(chunk)
            if isinstance(verdict, _Answered):
                settled.extend(_settle_answered(chunk, verdict.results, verdict.unlisted_accepted))
                return None
            if isinstance(verdict, _Fail):
                if verdict.too_large and len(chunk) > 1:
                    logger.debug("request of %d events too large; splitting it", len(chunk))
                    middle = len(chunk) // 2
                    return chunk[:middle], chunk[middle:]
                settled.extend((event, (verdict.error, attempts)) for event in chunk)
                return None
            delay = self.retry.backoff(attempts, verdict.retry_after)
            if (
                attempts >= self.retry.max_attempts
                or time.monotonic() - started + delay > self.retry.max_elapsed
            ):
                settled.extend((event, (verdict.error, attempts)) for event in chunk)
                return None
            logger.debug("delivery failed (%s); retry %d in %.3f s", verdict.error, attempts, delay)
            self.retries += 1
            abort.wait(delay)

    def _attempt(self, chunk: List[Event]) -> Verdict:
        """One HTTP attempt, with ``sent_at`` stamped now."""
        sent_at = (',"sent_at":"' + now_text() + '"}').encode()
        body = b"[" + b",".join([event.wire + sent_at for event in chunk]) + b"]"
        if self._gzip:
            # Fast compression: event JSON compresses well at any level, and this runs on the
            # application's machine. mtime=0 keeps the header free of the clock.
            body = gzip.compress(body, compresslevel=1, mtime=0)
        self.requests += 1
        self.sent += len(chunk)
        for fresh in (False, True):
            reused = self._connection is not None
            try:
                connection = self._connect()
                connection.request("POST", self._path, body=body, headers=self._headers)
                response = connection.getresponse()
                answer = response.read()
                status = response.status
                retry_after = retry_after_seconds(response.getheader("Retry-After"))
                minimal = minimal_applied(response.getheader("Preference-Applied"))
                if response.will_close:
                    self.close()
                return classify(status, retry_after, answer, len(chunk), minimal)
            except (OSError, http.client.HTTPException) as error:
                self.close()
                # A kept-alive connection the server closed while idle fails on first use:
                # that is not an outage, so it is tried once more at once on a new one.
                stale = (
                    reused
                    and not fresh
                    and isinstance(
                        error, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
                    )
                )
                if stale:
                    continue
                return _Retry(DeliveryError(TRANSPORT, f"no answer from The Eye: {error!r}"), None)
        raise AssertionError("unreachable")  # pragma: no cover

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            if self._https:
                self._connection = http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout)
            else:
                self._connection = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
            self._connection.connect()
            sock = self._connection.sock
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self._connection


def _settle_answered(
    chunk: List[Event], results: Sequence[Any], unlisted_accepted: bool = False
) -> List[Tuple[Event, Fate]]:
    """Matches the server's per-event results to the events by index. An event without a
    result was accepted when ``unlisted_accepted`` (a ``return=minimal`` answer whose counts
    cover the request); otherwise, which a correct server never causes, it fails rather than
    being assumed delivered."""
    fates: List[Optional[Fate]] = [None] * len(chunk)
    known = [False] * len(chunk)
    for result in results:
        if not isinstance(result, dict):
            continue
        index = result.get("index")
        if not isinstance(index, int) or not 0 <= index < len(chunk):
            continue
        if result.get("status") == "accepted":
            fates[index] = None
            known[index] = True
        elif result.get("status") == "rejected":
            problems = result.get("problems")
            fates[index] = (
                [Problem.from_json(p) for p in problems if isinstance(p, dict)]
                if isinstance(problems, list)
                else []
            )
            known[index] = True
    settled: List[Tuple[Event, Fate]] = []
    for index, event in enumerate(chunk):
        if known[index]:
            settled.append((event, fates[index]))
        elif unlisted_accepted:
            settled.append((event, None))
        else:
            error = DeliveryError(INVALID_RESPONSE, f"no result for the event at index {index}", status=202)
            settled.append((event, (error, 1)))
    return settled
