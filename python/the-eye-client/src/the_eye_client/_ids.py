"""Identifiers: UUIDv7 (RFC 9562) event and session ids, made by hand.

Python's :mod:`uuid` has ``uuid7`` only from 3.14; this package supports 3.9. The layout is the
browser SDK's (``sdk/js/src/the-eye.js``) and the Rust client's (``Uuid::now_v7``): a 48-bit
Unix time in milliseconds, then a 12-bit counter in ``rand_a`` (RFC 9562 §6.2, method 1) that
starts at a random value below 0x800 each millisecond, then 62 random bits. So ids sort in the
order they were made within this process, even within one millisecond and if the clock steps
back, which keeps The Eye's sort key (``session_id, application, event_id``) local.
"""

from __future__ import annotations

import os
import threading
import time

_lock = threading.Lock()
_last_ms = -1
_counter = 0


def uuid7() -> str:
    """A new UUIDv7 as its canonical lower-case hyphenated string (36 characters).

    Thread-safe, and safe after ``os.fork()``: the random bits come from ``os.urandom``, so a
    parent and its child never make the same id even within the same millisecond.
    """
    global _last_ms, _counter
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits: 12 for the counter's start, 62 + spare
    ms = time.time_ns() // 1_000_000
    with _lock:
        if ms > _last_ms:
            _last_ms = ms
            _counter = (rand >> 68) & 0x7FF  # a random start below 0x800 leaves room to count
        else:
            _counter += 1
            if _counter > 0xFFF:
                _last_ms += 1  # also keeps ids rising if the clock stepped back
                _counter = 0
        ms, counter = _last_ms, _counter
    value = (
        (ms & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76
        | counter << 64
        | 0b10 << 62  # the RFC 9562 variant
        | (rand & 0x3FFF_FFFF_FFFF_FFFF)
    )
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_session_id() -> str:
    """A new session id: a UUIDv7 of now, as the browser SDK and the Rust client make them.

    The Eye keeps events sorted by session id; time-ordered ids put an hour's or a day's
    sessions in one range of the table, so time-range reads stay cheap (README.md, "Session ids:
    send time-ordered ones (UUIDv7)").
    """
    return uuid7()


def _after_fork_in_child() -> None:
    # The lock may have been held by another thread of the parent at the fork.
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
