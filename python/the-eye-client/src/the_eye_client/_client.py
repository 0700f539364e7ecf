"""``TheEye``: a bounded queue that ``track`` fills without waiting, and one background thread
that empties it in batches through the ``Transport``; what happens at ``flush``, ``shutdown``,
``os.fork()`` and interpreter exit.

Events leave the queue only from its front and one batch is in flight at a time, so events
settle in the order they were tracked. That keeps ``flush`` simple (as in the Rust client's
``client/src/client.rs``): it waits until the lowest unsettled sequence number passes the last
one tracked before it was called.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
import uuid
import weakref
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Callable, Deque, List, Literal, Mapping, Optional, Tuple, Type, Union

from ._event import Event
from ._outcome import (
    CANCELLED,
    DROPPED,
    ClientClosed,
    DeliveryError,
    Failure,
    FlushTimeout,
    QueueFull,
    Rejection,
    Undelivered,
)
from ._transport import MAX_BATCH_SIZE, Fate, RetryPolicy, Transport

logger = logging.getLogger("the_eye_client")

__version__ = "0.1.0"

#: What ``track`` does when the queue is full; see ``TheEye``.
Overflow = Literal["error", "drop_oldest", "block"]


@dataclass(frozen=True)
class Stats:
    """A snapshot of a client's counters, since it was made (or since the ``os.fork()`` that
    made this process: a child starts from zero).

    ``tracked = queued + accepted + rejected + failed + dropped``, once ``flush`` returned.
    """

    #: Calls of ``track`` that made an event on an open client, those the full queue refused
    #: included.
    tracked: int
    #: Events not settled yet: waiting in the queue or in the request being delivered.
    queued: int
    #: Events put on the wire, counting every attempt: above ``accepted + rejected + failed``
    #: is retransmission.
    sent: int
    #: Events the server accepted.
    accepted: int
    #: Events the server's validation rejected (see ``on_rejection``).
    rejected: int
    #: Events lost to a full queue: refused (``QueueFull``) or pushed out by a newer one.
    dropped: int
    #: HTTP requests that were retried (after no answer, 408, 429 or 5xx).
    retries: int
    #: Events not delivered: refused as a whole (401, 403, 413 …), retries exhausted, or still
    #: queued when a shutdown gave up (see ``on_failure``).
    failed: int
    #: HTTP requests made, counting every attempt.
    requests: int


class _Queued:
    __slots__ = ("at", "event", "seq")

    def __init__(self, seq: int, at: float, event: Event) -> None:
        self.seq = seq
        self.at = at
        self.event = event


class TheEye:
    """Sends events to The Eye (``POST {url}/api/events``) from a bounded in-memory queue, in
    batches, on one background thread.

    ``url`` is The Eye's base URL (``http://127.0.0.1:8000``), ``ingest_key`` an API key with
    the ``ingest`` scope, sent as ``Authorization: Bearer``. Every option has a default:

    - ``batch_size`` (500): most events per request, 1 to 1,000 (the server's limit); a batch is
      sent as soon as this many are queued.
    - ``flush_interval`` (1.0 s): longest time a tracked event waits for its batch to fill.
    - ``queue_capacity`` (10,000): most events waiting in memory, not counting the batch being
      delivered; bounds memory while The Eye is unreachable.
    - ``overflow`` (``"error"``): when the queue is full, ``"error"`` makes ``track`` raise
      :class:`QueueFull` (the caller sees every event it loses); ``"drop_oldest"`` drops the
      oldest queued event (handed to ``on_failure`` with ``kind == "dropped"``); ``"block"``
      waits up to ``block_timeout`` seconds for room, then raises :class:`QueueFull` (for batch
      jobs that want back-pressure; never in a web request or an event loop). All count in
      ``stats().dropped``.
    - ``block_timeout`` (10.0 s): see ``overflow="block"``.
    - ``request_timeout`` (10.0 s): longest wait of one socket operation of a request
      (connecting, sending, each read).
    - ``gzip`` (True): compress request bodies (``Content-Encoding: gzip``).
    - ``retry`` (:class:`RetryPolicy`): how requests that may succeed later are retried.
    - ``max_request_bytes`` (1 MiB, the server's ``ingest.max_body_bytes``): largest request
      body before compression; batches are cut to fit, and a request the server still finds too
      large (413) is split in two.
    - ``flush_timeout`` (30.0 s): how long ``flush`` and ``shutdown`` wait by default.
    - ``exit_timeout`` (10.0 s): how long the interpreter's exit waits for delivery
      (``atexit``); what is left then is reported as failed.
    - ``on_rejection``: called with each :class:`Rejection` (an event the server's validation
      refused). Without it, rejections are logged at WARNING on the ``the_eye_client`` logger.
    - ``on_failure``: called with each :class:`Failure` (events not delivered). Without it,
      failures are logged at ERROR. Either way the next ``flush`` or ``shutdown`` raises
      :class:`Undelivered`.

    Callbacks run on the background thread: keep them quick; ``flush`` or ``shutdown`` called
    from one raises ``RuntimeError`` (it would wait for that very thread); an exception in one
    is logged, not raised. ``url`` or an option out of range raises ``ValueError`` here.

    Safe in servers: ``track`` is thread-safe and never waits for the network (only for a
    short lock, or for room under ``overflow="block"``). After ``os.fork()`` (gunicorn,
    uWSGI pre-fork workers, ``multiprocessing``) the child starts with an empty queue and
    zero counters, and its own background thread on its first ``track``; the parent's queued
    events stay the parent's to send, so none is sent twice. At interpreter exit every open
    client is shut down within ``exit_timeout`` (an ``os._exit`` skips this: flush first).
    From asyncio code, call ``track`` directly and ``await asyncio.to_thread(client.flush)``.
    """

    def __init__(
        self,
        url: str,
        ingest_key: str,
        *,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        queue_capacity: int = 10_000,
        overflow: Overflow = "error",
        block_timeout: float = 10.0,
        request_timeout: float = 10.0,
        gzip: bool = True,
        retry: Optional[RetryPolicy] = None,
        max_request_bytes: int = 1024 * 1024,
        flush_timeout: float = 30.0,
        exit_timeout: float = 10.0,
        on_rejection: Optional[Callable[[Rejection], None]] = None,
        on_failure: Optional[Callable[[Failure], None]] = None,
    ) -> None:
        if not isinstance(ingest_key, str) or not ingest_key:
            raise ValueError("ingest_key must be a non-empty string")
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be 1 to {MAX_BATCH_SIZE}, not {batch_size}")
        if queue_capacity < 1:
            raise ValueError(f"queue_capacity must be at least 1, not {queue_capacity}")
        if overflow not in ("error", "drop_oldest", "block"):
            raise ValueError(f'overflow must be "error", "drop_oldest" or "block", not {overflow!r}')
        if max_request_bytes < 1024:
            raise ValueError(f"max_request_bytes must be at least 1024, not {max_request_bytes}")
        for name, seconds in (
            ("flush_interval", flush_interval),
            ("block_timeout", block_timeout),
            ("request_timeout", request_timeout),
            ("flush_timeout", flush_timeout),
            ("exit_timeout", exit_timeout),
        ):
            if not seconds >= 0:
                raise ValueError(f"{name} must be a number of seconds >= 0, not {seconds!r}")
        retry = retry or RetryPolicy()
        if retry.max_attempts < 1:
            raise ValueError("retry.max_attempts must be at least 1")
        user_agent = f"the-eye-client-python/{__version__} Python/{sys.version_info[0]}.{sys.version_info[1]}"

        def make_transport() -> Transport:
            return Transport(
                url,
                ingest_key,
                gzip_enabled=gzip,
                request_timeout=request_timeout,
                retry=retry,
                batch_size=batch_size,
                max_request_bytes=max_request_bytes,
                user_agent=user_agent,
            )

        #: Makes this process's transport (again in a forked child).
        self._make_transport: Callable[[], Transport] = make_transport
        self._transport = self._make_transport()  # checks the URL now
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._queue_capacity = queue_capacity
        self._overflow = overflow
        self._block_timeout = block_timeout
        self._max_request_bytes = max_request_bytes
        self._flush_timeout = flush_timeout
        self._exit_timeout = exit_timeout
        self._on_rejection = on_rejection
        self._on_failure = on_failure
        self._closed = False
        self._fresh_state()
        _clients.add(self)

    def _fresh_state(self) -> None:
        """Everything a process owns alone: set at creation and again in a forked child."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # the worker waits here
        self._progress = threading.Condition(self._lock)  # flush and shutdown wait here
        self._room = threading.Condition(self._lock)  # track waits here under "block"
        self._abort = threading.Event()
        self._queue: Deque[_Queued] = deque()
        self._queued_bytes = 0
        self._next_seq = 0
        self._in_flight_from: Optional[int] = None
        self._flush_before = 0
        self._worker: Optional[threading.Thread] = None
        self._finished = False
        self._tracked = self._queued = self._accepted = self._rejected = 0
        self._dropped = self._failed = 0
        self._undelivered = 0
        self._first_error: Optional[DeliveryError] = None
        # Transport counters of an earlier process are not this one's.
        self._transport.sent = self._transport.requests = self._transport.retries = 0

    # ------------------------------------------------------------------ the public API

    def track(
        self,
        category: str,
        name: str,
        data: Mapping[str, Any],
        *,
        session_id: str,
        timestamp: Optional[datetime] = None,
        event_id: Union[str, uuid.UUID, None] = None,
        user_id: Optional[str] = None,
    ) -> str:
        """Queues one event and returns its ``event_id`` at once; never waits for the network.

        ``category`` and ``name`` (``"form interaction"``, ``"submit"``) and ``session_id``
        (the visit's id: the browser SDK's, or :func:`new_session_id`) are non-empty strings;
        ``data`` a non-empty mapping that ``json`` can encode, encoded now (changing it later
        changes nothing). ``timestamp`` (a timezone-aware ``datetime``) defaults to now;
        ``event_id`` to a new UUIDv7, fixed here so that every retry carries it and the server
        stores the event once (pass your own, e.g. an outbox row's id, to make re-sending after
        a crash of your program idempotent too). ``user_id`` is the application's own account
        id (sent only when given; the server must know the field, issue 29 — an older one
        rejects the event with ``unknown_field``).

        Raises :class:`EventError` (a ``ValueError``) for arguments that cannot make an
        event, :class:`QueueFull` when the queue is full (see ``overflow``) and
        :class:`ClientClosed` after ``shutdown``. The server's verdict arrives later, through
        ``on_rejection``, ``on_failure``, ``flush`` and ``stats``.
        """
        event = Event(
            category,
            name,
            data,
            session_id=session_id,
            timestamp=timestamp,
            event_id=event_id,
            user_id=user_id,
        )
        self._enqueue(event)
        return event.event_id

    def flush(self, timeout: Optional[float] = None) -> None:
        """Sends everything tracked so far without waiting for batches to fill, and waits until
        each of those events is settled (accepted, rejected, failed or dropped), for at most
        ``timeout`` seconds (default ``flush_timeout``).

        Raises :class:`Undelivered` when tracked events were not delivered since the previous
        ``flush`` or ``shutdown`` returned (with how many and the first reason), and
        :class:`FlushTimeout` when the deadline passed first (the events stay queued).
        """
        deadline = time.monotonic() + (self._flush_timeout if timeout is None else timeout)
        self._adopt_if_forked()
        self._refuse_from_callback()
        with self._lock:
            target = self._next_seq
            self._flush_before = target
            if self._queue:
                self._ensure_worker()
            self._wake.notify()
            while self._lowest_unsettled() < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise FlushTimeout(self._queued)
                self._progress.wait(left)
            self._raise_undelivered()

    def shutdown(self, timeout: Optional[float] = None) -> None:
        """Stops taking events, delivers everything queued and stops the background thread,
        within ``timeout`` seconds (default ``flush_timeout``). Idempotent.

        Events still undelivered at the deadline are reported to ``on_failure`` with
        ``kind == "cancelled"`` and :class:`FlushTimeout` is raised; otherwise, when tracked
        events failed since the previous ``flush`` or ``shutdown`` returned,
        :class:`Undelivered`. Later calls of ``track`` raise :class:`ClientClosed`.
        """
        deadline = time.monotonic() + (self._flush_timeout if timeout is None else timeout)
        self._adopt_if_forked()
        self._refuse_from_callback()
        with self._lock:
            self._closed = True
            if self._queue:
                self._ensure_worker()
            self._wake.notify()
            self._room.notify_all()
            while not self._settled_and_stopped():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._progress.wait(left)
            else:
                self._raise_undelivered()
                return
            pending = self._queued
            # Stop retrying; the worker fails what is left. A request under way ends within
            # request_timeout, which the wait below allows for (bounded: at most 5 s).
            self._abort.set()
            self._wake.notify()
            limit = time.monotonic() + 5.0
            while not self._settled_and_stopped() and time.monotonic() < limit:
                self._progress.wait(limit - time.monotonic())
            if not self._settled_and_stopped():
                self._fail_queued_locked()
        raise FlushTimeout(pending)

    def stats(self) -> Stats:
        """A snapshot of the counters (see :class:`Stats`)."""
        self._adopt_if_forked()
        with self._lock:
            transport = self._transport
            return Stats(
                tracked=self._tracked,
                queued=self._queued,
                sent=transport.sent,
                accepted=self._accepted,
                rejected=self._rejected,
                dropped=self._dropped,
                retries=transport.retries,
                failed=self._failed,
                requests=transport.requests,
            )

    def __enter__(self) -> TheEye:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        """Shuts the client down. Its :class:`FlushError` is raised unless the block is already
        raising an exception, which is not masked (the failures were reported anyway)."""
        if exc is None:
            self.shutdown()
            return
        try:
            self.shutdown()
        except Exception as error:  # the block's own exception goes on
            logger.error("the_eye_client: while leaving the block: %s", error)

    def __repr__(self) -> str:
        return f"<TheEye {self._transport._host}{self._transport._path} {self.stats()}>"

    # ------------------------------------------------------------------ the queue

    def _enqueue(self, event: Event) -> None:
        dropped: Optional[Event] = None
        error: Optional[DeliveryError] = None
        self._adopt_if_forked()
        with self._lock:
            if self._closed:
                raise ClientClosed("the client is shut down", event)
            self._tracked += 1
            if len(self._queue) >= self._queue_capacity:
                if self._overflow == "block":
                    deadline = time.monotonic() + self._block_timeout
                    while len(self._queue) >= self._queue_capacity and not self._closed:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._room.wait(left)
                    if self._closed:
                        raise ClientClosed("the client is shut down", event)
                if len(self._queue) >= self._queue_capacity:
                    self._dropped += 1
                    if self._overflow != "drop_oldest":
                        raise QueueFull(f"the client's queue is full ({self._queue_capacity} events)", event)
                    oldest = self._queue.popleft()
                    self._queued_bytes -= oldest.event.request_cost
                    self._queued -= 1
                    self._undelivered += 1
                    dropped = oldest.event
                    error = DeliveryError(DROPPED, "dropped from the client's full queue for a newer event")
                    if self._first_error is None:
                        self._first_error = error
                    self._progress.notify_all()
            seq = self._next_seq
            self._next_seq += 1
            self._queued_bytes += event.request_cost
            self._queue.append(_Queued(seq, time.monotonic(), event))
            self._queued += 1
            # The worker needs waking when its timer must start (first event) or a batch is full.
            length = len(self._queue)
            if length == 1 or length == self._batch_size or self._queued_bytes >= self._max_request_bytes:
                self._ensure_worker()
                self._wake.notify()
        if dropped is not None and error is not None:
            self._report_failure([dropped], error, 0)

    def _refuse_from_callback(self) -> None:
        if self._worker is not None and threading.current_thread() is self._worker:
            # It would wait for the thread it runs on: for ever.
            raise RuntimeError(
                "flush() and shutdown() cannot be called from an on_rejection or on_failure callback"
            )

    def _lowest_unsettled(self) -> int:
        if self._in_flight_from is not None:
            return self._in_flight_from
        if self._queue:
            return self._queue[0].seq
        return self._next_seq

    def _settled_and_stopped(self) -> bool:
        return not self._queue and self._in_flight_from is None and (self._worker is None or self._finished)

    def _raise_undelivered(self) -> None:
        failed, error = self._undelivered, self._first_error
        self._undelivered, self._first_error = 0, None
        if error is not None:
            raise Undelivered(failed, error)

    def _ensure_worker(self) -> None:
        """Starts the background thread if this process has none (first use, or after a fork)."""
        if self._worker is None:
            self._finished = False
            self._worker = threading.Thread(target=self._run, name="the-eye-client", daemon=True)
            self._worker.start()

    def _adopt_if_forked(self) -> None:
        """A fork that bypassed ``os.register_at_fork`` (a C extension calling ``fork()``):
        the state is reset here, on the first call in the child."""
        if self._pid != os.getpid():
            _after_fork_child_of(self)

    def _fail_queued_locked(self) -> None:
        events = [queued.event for queued in self._queue]
        self._queue.clear()
        self._queued_bytes = 0
        if events:
            error = DeliveryError(CANCELLED, "the client shut down before the events were delivered")
            self._failed += len(events)
            self._queued -= len(events)
            self._undelivered += len(events)
            if self._first_error is None:
                self._first_error = error
            # Outside the lock would be kinder to callbacks, but this path runs only when the
            # worker is stuck; the callback must not call back into the client.
            self._lock.release()
            try:
                self._report_failure(events, error, 0)
            finally:
                self._lock.acquire()
        self._progress.notify_all()

    # ------------------------------------------------------------------ the background thread

    def _next_batch(self) -> Optional[List[Event]]:
        """Waits until a batch is due and takes it; ``None`` once closed and empty or aborted."""
        with self._lock:
            while True:
                if self._abort.is_set():
                    return None
                if not self._queue:
                    if self._closed:
                        return None
                    self._wake.wait()
                    continue
                front = self._queue[0]
                due = front.at + self._flush_interval
                now = time.monotonic()
                ready = (
                    self._closed
                    or len(self._queue) >= self._batch_size
                    or self._queued_bytes >= self._max_request_bytes
                    or front.seq < self._flush_before
                    or due <= now
                )
                if not ready:
                    self._wake.wait(due - now)
                    continue
                count = _request_len_queued(self._queue, self._batch_size, self._max_request_bytes)
                batch = [self._queue.popleft().event for _ in range(count)]
                self._queued_bytes -= sum(event.request_cost for event in batch)
                self._in_flight_from = front.seq
                self._room.notify_all()
                return batch

    def _run(self) -> None:
        transport = self._transport
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    break
                self._settle(transport.deliver(batch, self._abort))
        except BaseException:  # a bug here must not leave flush() waiting for ever
            logger.exception("the_eye_client: the background thread failed")
            raise
        finally:
            with self._lock:
                if self._abort.is_set() or self._in_flight_from is not None:
                    self._in_flight_from = None
                    self._fail_queued_locked()
                self._finished = True
                self._progress.notify_all()
            transport.close()

    def _settle(self, settled: List[Tuple[Event, Fate]]) -> None:
        """Counts a delivered batch and reports its rejections and failures."""
        rejections: List[Rejection] = []
        failures: List[Failure] = []
        accepted = 0
        for event, fate in settled:
            if fate is None:
                accepted += 1
            elif isinstance(fate, list):
                rejections.append(Rejection(event, fate))
            else:
                error, attempts = fate
                # Consecutive events failed by the same request are reported together.
                if failures and failures[-1].error is error:
                    failures[-1].events.append(event)
                else:
                    failures.append(Failure([event], error, attempts))
        failed = sum(len(failure.events) for failure in failures)
        with self._lock:
            self._accepted += accepted
            self._rejected += len(rejections)
            self._failed += failed
            self._undelivered += failed
            if failures and self._first_error is None:
                self._first_error = failures[0].error
        for rejection in rejections:
            self._report_rejection(rejection)
        for failure in failures:
            self._report_failure(failure.events, failure.error, failure.attempts)
        # Settled only now, so that a flush returns after the callbacks have run.
        with self._lock:
            self._queued -= len(settled)
            self._in_flight_from = None
            self._progress.notify_all()

    def _report_rejection(self, rejection: Rejection) -> None:
        if self._on_rejection is None:
            logger.warning(
                "The Eye rejected event %s (%s/%s): %s",
                rejection.event.event_id,
                rejection.event.category,
                rejection.event.name,
                ", ".join(f"{p.field}: {p.code}" for p in rejection.problems),
            )
            return
        try:
            self._on_rejection(rejection)
        except Exception:
            logger.exception("the_eye_client: the on_rejection callback raised")

    def _report_failure(self, events: List[Event], error: DeliveryError, attempts: int) -> None:
        if self._on_failure is None:
            # Python's last-resort handler prints ERROR to stderr when logging is not set up,
            # so a program without callbacks still hears of a wrong key at once.
            logger.error(
                "%d event%s could not be delivered to The Eye after %d attempt%s: %s",
                len(events),
                "" if len(events) == 1 else "s",
                attempts,
                "" if attempts == 1 else "s",
                error,
            )
            return
        try:
            self._on_failure(Failure(events, error, attempts))
        except Exception:
            logger.exception("the_eye_client: the on_failure callback raised")


def _request_len_queued(queue: Deque[_Queued], batch_size: int, max_bytes: int) -> int:
    size, count = 1, 0
    for queued in queue:
        cost = queued.event.request_cost
        if count == batch_size or (count > 0 and size + cost > max_bytes):
            break
        size += cost
        count += 1
    return count


# ---------------------------------------------------------------------- fork and exit

#: Every live client of this process, for the fork and exit hooks (weak: a client nobody
#: holds may go).
_clients: weakref.WeakSet[TheEye] = weakref.WeakSet()


#: The clients whose locks `_before_fork` took, for `_after_fork_in_parent` to release.
_held: List[TheEye] = []


def _before_fork() -> None:
    # Holding every client's lock across the fork: the child then gets each queue in a
    # consistent state, never one half-changed by another thread.
    _held[:] = [client for client in list(_clients) if client._pid == os.getpid()]
    for client in _held:
        client._lock.acquire()


def _after_fork_in_parent() -> None:
    for client in _held:
        client._lock.release()
    _held.clear()


def _after_fork_in_child() -> None:
    _held.clear()
    for client in list(_clients):
        _after_fork_child_of(client)


def _after_fork_child_of(client: TheEye) -> None:
    """The child's copy of a client: the parent's queue, in-flight batch, counters and
    background thread are the parent's (it sends them); the child starts empty, with its own
    connection, and its own thread on its first ``track``."""
    old = client._transport
    # Only this process's copy of the parent's socket is closed; the parent's stays open.
    old.close()
    client._transport = client._make_transport()
    client._fresh_state()


def _exit() -> None:
    """At interpreter exit: shut every open client down within its ``exit_timeout``."""
    for client in list(_clients):
        if client._closed and client._pid == os.getpid() and client._settled_and_stopped():
            continue
        try:
            client.shutdown(timeout=client._exit_timeout)
        except Exception as error:
            logger.error("the_eye_client: at exit: %s", error)


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
    )
atexit.register(_exit)
