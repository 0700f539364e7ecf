"""Faults of the service, for real: ClickHouse paused until The Eye's spool budget is spent
(503 ``queue_full``), and The Eye killed with SIGKILL and started again mid-stream. Each
tracked event must end up stored exactly once."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator, List

import pytest
from conftest import DATABASE
from service import ClickHouse, Eye, stored, wait_stored

from the_eye_client import RetryPolicy, TheEye, new_session_id


class _Records(logging.Handler):
    """Keeps the client's log records, to see which answers it retried."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def records() -> Iterator[_Records]:
    logger = logging.getLogger("the_eye_client")
    handler = _Records()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 60) -> None:
    """Polls ``condition`` until it holds; fails after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen in {seconds} s"
        time.sleep(0.02)


def test_503_from_a_spent_disk_budget_then_recovery_delivers_everything_once(
    binary: Path, tmp_path: Path, records: _Records
) -> None:
    # A ClickHouse of this test's own, so that pausing it disturbs no other test; The Eye with
    # a spool budget of 192 KiB, so that it answers 503 soon after ClickHouse stops answering.
    clickhouse = ClickHouse(tmp_path / "clickhouse")
    eye = Eye(
        binary,
        clickhouse,
        "python_client_503",
        tmp_path / "eye",
        {
            "THE_EYE_INGEST_MAX_BODY_BYTES": "65536",
            "THE_EYE_INGEST_MAX_BATCH_EVENTS": "50",
            "THE_EYE_PIPELINE_QUEUE_CAPACITY": "100",
            "THE_EYE_PIPELINE_QUEUE_MAX_BYTES": "131072",
            "THE_EYE_PIPELINE_SPOOL_SEGMENT_BYTES": "65536",
            "THE_EYE_PIPELINE_SPOOL_MAX_BYTES": "196608",
        },
    )
    try:
        eye.cli("migrate")
        clickhouse.query("SYSTEM STOP MERGES python_client_503.events")
        application, key = eye.create_app("python-client-503")
        eye.start()
        client = TheEye(
            eye.url, key, batch_size=50, max_request_bytes=60_000, flush_interval=0.05, queue_capacity=5000
        )
        session = new_session_id()
        # Delivered while ClickHouse is up: the key is now in The Eye's memory, so a paused
        # ClickHouse cannot make its look-up fail (that would be a 503 of another kind).
        ids = [client.track("python client", "warm-up", {"i": 0}, session_id=session)]
        client.flush()
        clickhouse.pause()
        ids += [
            client.track("python client", "outage", {"i": i, "pad": "p" * 200}, session_id=session)
            for i in range(1500)
        ]
        wait_for(lambda: any("503" in m and "queue_full" in m for m in records.messages), "a 503 queue_full")
        assert client.stats().retries > 0
        clickhouse.resume()
        client.flush(timeout=120)
        stats = client.stats()
        assert (stats.accepted, stats.failed, stats.rejected) == (1501, 0, 0)
        assert wait_stored(clickhouse, "python_client_503", application, 1501, seconds=120) == {
            i: 1 for i in ids
        }
        client.shutdown()
    finally:
        eye.stop()
        clickhouse.stop()


def test_the_eye_killed_and_restarted_mid_stream_loses_and_duplicates_nothing(
    binary: Path, clickhouse: ClickHouse, tmp_path: Path
) -> None:
    database = f"{DATABASE}_crash"
    eye = Eye(binary, clickhouse, database, tmp_path / "eye", {})
    try:
        eye.cli("migrate")
        application, key = eye.create_app("python-client-crash")
        eye.start()
        # Patient retries: the restart takes a moment, and every attempt meanwhile is refused.
        client = TheEye(eye.url, key, batch_size=50, flush_interval=0.02, retry=RetryPolicy(max_backoff=1.0))
        session = new_session_id()
        ids: List[str] = []
        done = threading.Event()

        def produce() -> None:
            for i in range(3000):
                ids.append(client.track("python client", "stream", {"i": i}, session_id=session))
                if i % 50 == 0:
                    time.sleep(0.005)
            done.set()

        producer = threading.Thread(target=produce)
        producer.start()
        wait_for(lambda: client.stats().accepted >= 300, "300 accepted events")
        eye.kill()
        killed_at = len(ids)
        time.sleep(0.3)
        eye.start()
        producer.join()
        client.flush(timeout=120)
        stats = client.stats()
        assert killed_at < 3000, "the service was killed while events were still being tracked"
        assert (stats.accepted, stats.failed, stats.rejected) == (3000, 0, 0)
        assert stats.retries > 0, "the client saw the outage"
        found = wait_stored(clickhouse, database, application, 3000, seconds=120)
        assert found.keys() == set(ids)
        # A request whose answer the kill cut off was sent again with the same ids; The Eye
        # may then have stored a second copy (its dedup window is in memory), which folds
        # into one on merge: exact reads use FINAL, as the README says.
        final = clickhouse.rows(
            "SELECT count() AS n, uniqExact(event_id) AS ids FROM {db:Identifier}.events FINAL"
            " WHERE application = {app:String}",
            db=database,
            app=application,
        )
        assert final == [{"n": 3000, "ids": 3000}] or final == [{"n": "3000", "ids": "3000"}]
        client.shutdown()
        assert stored(clickhouse, database, application).keys() == set(ids)
    finally:
        eye.stop()


def test_429_from_the_rate_limit_is_retried_after_retry_after(
    eye: Eye, clickhouse: ClickHouse, records: _Records
) -> None:
    application, key = eye.create_app("python-client-rate", "--rate", "100", "--burst", "100")
    client = TheEye(eye.url, key, batch_size=50, flush_interval=0.01)
    session = new_session_id()
    ids = [client.track("python client", "limited", {"i": i}, session_id=session) for i in range(300)]
    client.flush(timeout=60)
    stats = client.stats()
    assert (stats.accepted, stats.failed) == (300, 0)
    assert stats.retries > 0
    assert any("429" in m and "rate_limited" in m for m in records.messages), records.messages
    assert wait_stored(clickhouse, DATABASE, application, 300) == {i: 1 for i in ids}
    client.shutdown()


def test_backoff_doubles_with_jitter_and_never_undercuts_retry_after() -> None:
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=1.0)
    for attempts, nominal in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (40, 1.0)]:
        delays = [policy.backoff(attempts, None) for _ in range(200)]
        assert all(nominal / 2 <= d <= nominal for d in delays), (attempts, min(delays), max(delays))
        assert len(set(delays)) > 100, "delays are jittered"
    assert policy.backoff(1, 5.0) == 5.0, "a Retry-After beyond the cap is honoured"


def test_retry_after_is_read_as_seconds_or_as_a_date() -> None:
    from email.utils import format_datetime

    from the_eye_client._transport import retry_after_seconds

    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(" 0 ") == 0.0
    soon = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    wait = retry_after_seconds(soon)
    assert wait is not None and 28 <= wait <= 30
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0, "a past date means now"
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None
