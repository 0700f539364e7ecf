"""Events reach The Eye with their ids and contents; what the server refuses is reported,
never dropped in silence. Against the real service (``conftest.py``)."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from typing import List, Tuple

import pytest
from conftest import DATABASE
from service import ClickHouse, Eye, stored, wait_stored

from the_eye_client import (
    EventError,
    Failure,
    FlushError,
    Rejection,
    TheEye,
    Undelivered,
    new_session_id,
)


def test_events_land_with_their_ids_and_contents(
    eye: Eye, clickhouse: ClickHouse, app: Tuple[str, str]
) -> None:
    application, key = app
    session = new_session_id()
    at = datetime(2026, 12, 1, 9, 15, 27, 243860, tzinfo=timezone(timedelta(hours=2)))
    mine = "0190a6f2-3b4c-7d5e-8f60-7182a3b4c5d6"
    with TheEye(eye.url, key, flush_interval=0.05) as client:
        ids = [
            client.track(
                "python client", "signup", {"form": {"first_name": "Zoë"}, "n": i}, session_id=session
            )
            for i in range(20)
        ]
        ids.append(
            client.track(
                "page interaction",
                "pageview",
                {"host": "shop.example", "path": "/"},
                session_id=session,
                timestamp=at,
                event_id=mine,
            )
        )
        client.flush()
        stats = client.stats()
    assert ids[-1] == mine
    assert len(set(ids)) == 21 and all(len(i) == 36 and i[14] == "7" for i in ids[:-1])
    assert (stats.tracked, stats.accepted, stats.failed, stats.rejected, stats.queued) == (21, 21, 0, 0, 0)

    assert wait_stored(clickhouse, DATABASE, application, 21) == {i: 1 for i in ids}
    rows = clickhouse.rows(
        "SELECT toString(event_id) AS id, session_id, category, name, data,"
        " formatDateTime(client_timestamp, '%Y-%m-%dT%H:%i:%S.%fZ') AS at"
        " FROM {db:Identifier}.events WHERE application = {app:String}",
        db=DATABASE,
        app=application,
    )
    by_id = {row["id"]: row for row in rows}
    assert by_id[mine]["at"] == "2026-12-01T07:15:27.243860Z"
    assert (by_id[mine]["category"], by_id[mine]["name"]) == ("page interaction", "pageview")
    assert json.loads(by_id[ids[3]]["data"]) == {"form": {"first_name": "Zoë"}, "n": 3}
    assert {row["session_id"] for row in rows} == {session}


def test_a_rejected_event_is_reported_with_the_servers_codes(eye: Eye, app: Tuple[str, str]) -> None:
    _, key = app
    rejections: List[Rejection] = []
    client = TheEye(eye.url, key, on_rejection=rejections.append)
    future = datetime.now(timezone.utc) + timedelta(hours=1)
    good = client.track("test", "ok", {"a": 1}, session_id=new_session_id())
    bad = client.track("test", "late", {"a": 1}, session_id=new_session_id(), timestamp=future)
    client.shutdown()  # a rejection is not a delivery failure: no exception
    assert [(r.event.event_id, r.codes) for r in rejections] == [(bad, ["timestamp_in_future"])]
    assert rejections[0].problems[0].field == "timestamp"
    stats = client.stats()
    assert (stats.accepted, stats.rejected, stats.failed) == (1, 1, 0)
    assert good != bad


def test_a_wrong_key_is_reported_to_the_callback_and_raised_by_flush(eye: Eye) -> None:
    failures: List[Failure] = []
    client = TheEye(eye.url, "eye_this_key_does_not_exist", on_failure=failures.append)
    ids = [client.track("test", "lost", {"i": i}, session_id=new_session_id()) for i in range(3)]
    with pytest.raises(Undelivered) as raised:
        client.flush()
    error = raised.value.error
    assert raised.value.failed == 3
    assert (error.status, error.code, error.is_permanent) == (401, "invalid_api_key", True)
    assert [event.event_id for failure in failures for event in failure.events] == ids
    assert failures[0].attempts == 1, "a permanent refusal is not retried"
    assert client.stats().retries == 0
    client.flush()  # reported once: the next flush has nothing new to say
    client.shutdown()


def test_without_a_callback_a_failure_is_logged_at_error(eye: Eye, caplog: pytest.LogCaptureFixture) -> None:
    client = TheEye(eye.url, "eye_this_key_does_not_exist")
    client.track("test", "lost", {"i": 1}, session_id=new_session_id())
    with caplog.at_level(logging.ERROR, logger="the_eye_client"), pytest.raises(Undelivered):
        client.shutdown()
    assert any("invalid_api_key" in record.getMessage() for record in caplog.records), caplog.text


def test_a_request_the_server_finds_too_large_is_split(
    eye: Eye, clickhouse: ClickHouse, app: Tuple[str, str]
) -> None:
    application, key = app
    # The client allows 4 MiB per request; the server takes 1 MiB, so it answers 413 and the
    # client halves the request until it fits.
    client = TheEye(eye.url, key, batch_size=1000, max_request_bytes=4 * 1024 * 1024, flush_interval=60)
    session = new_session_id()
    ids = [client.track("test", "big", {"pad": "x" * 3000, "i": i}, session_id=session) for i in range(1000)]
    client.shutdown()
    stats = client.stats()
    assert (stats.accepted, stats.failed) == (1000, 0)
    assert stats.requests >= 4, stats  # 1 refused whole, then halves until ≤ 1 MiB
    assert wait_stored(clickhouse, DATABASE, application, 1000) == {i: 1 for i in ids}


def test_user_id_is_sent_when_given(eye: Eye, clickhouse: ClickHouse, app: Tuple[str, str]) -> None:
    # `user_id` is the envelope field of issue 29: the service stores it in `events.user_id`.
    application, key = app
    rejections: List[Rejection] = []
    client = TheEye(eye.url, key, on_rejection=rejections.append)
    event_id = client.track(
        "test", "signup", {"plan": "pro"}, session_id=new_session_id(), user_id="account-42"
    )
    client.shutdown()
    assert rejections == []
    assert wait_stored(clickhouse, DATABASE, application, 1) == {event_id: 1}
    rows = clickhouse.rows(
        "SELECT user_id FROM {db:Identifier}.events WHERE application = {app:String}",
        db=DATABASE,
        app=application,
    )
    assert rows == [{"user_id": "account-42"}]


def test_bad_arguments_fail_at_once(eye: Eye) -> None:
    client = TheEye(eye.url, "eye_unused")
    session = new_session_id()
    for args, kwargs in [
        (("", "n", {"a": 1}), {"session_id": session}),
        (("c", "n", {}), {"session_id": session}),
        (("c", "n", {"a": object()}), {"session_id": session}),
        (("c", "n", {"a": float("nan")}), {"session_id": session}),
        (("c", "n", {"a": "\ud800"}), {"session_id": session}),
        (("c\udc00", "n", {"a": 1}), {"session_id": session}),
        (("c", "n", {"a": 1}), {"session_id": ""}),
        (("c", "n", {"a": 1}), {"session_id": session, "timestamp": datetime(2026, 1, 1)}),
        (("c", "n", {"a": 1}), {"session_id": session, "event_id": "not-a-uuid"}),
        (("c", "n", {"a": 1}), {"session_id": session, "event_id": "00000000-0000-0000-0000-000000000000"}),
    ]:
        with pytest.raises(EventError):
            client.track(*args, **kwargs)  # type: ignore[arg-type]
    assert client.stats().tracked == 0
    with pytest.raises(ValueError):
        TheEye("ftp://example", "key")
    with pytest.raises(ValueError):
        TheEye(eye.url, "key", batch_size=1001)
    client.shutdown()


def test_a_full_queue_refuses_or_drops_and_says_so(
    eye: Eye, clickhouse: ClickHouse, app: Tuple[str, str]
) -> None:
    from the_eye_client import QueueFull

    application, key = app
    session = new_session_id()
    refusing = TheEye(eye.url, key, queue_capacity=3, batch_size=1000, flush_interval=60)
    kept = [refusing.track("test", "q", {"i": i}, session_id=session) for i in range(3)]
    with pytest.raises(QueueFull) as full:
        refusing.track("test", "q", {"i": 3}, session_id=session)
    refusing.shutdown()
    assert refusing.stats().dropped == 1 and full.value.event.data == {"i": 3}

    failures: List[Failure] = []
    dropping = TheEye(
        eye.url,
        key,
        queue_capacity=3,
        batch_size=1000,
        flush_interval=60,
        overflow="drop_oldest",
        on_failure=failures.append,
    )
    ids = [dropping.track("test", "q", {"i": i}, session_id=session) for i in range(5)]
    with pytest.raises(Undelivered) as undelivered:
        dropping.shutdown()
    assert undelivered.value.failed == 2 and undelivered.value.error.kind == "dropped"
    assert [event.event_id for failure in failures for event in failure.events] == ids[:2]
    assert wait_stored(clickhouse, DATABASE, application, 6) == {i: 1 for i in kept + ids[2:]}
    assert stored(clickhouse, DATABASE, application).keys().isdisjoint(ids[:2])


def test_track_from_many_threads_delivers_each_event_once(
    eye: Eye, clickhouse: ClickHouse, app: Tuple[str, str]
) -> None:
    import threading

    application, key = app
    client = TheEye(eye.url, key, batch_size=100, flush_interval=0.01)
    ids: List[str] = []
    lock = threading.Lock()

    def produce(thread: int) -> None:
        session = new_session_id()
        mine = [
            client.track("python client", "threads", {"t": thread, "i": i}, session_id=session)
            for i in range(250)
        ]
        with lock:
            ids.extend(mine)

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.shutdown()
    assert client.stats().accepted == 2000 and len(set(ids)) == 2000
    assert wait_stored(clickhouse, DATABASE, application, 2000) == {i: 1 for i in ids}


def test_from_asyncio_track_directly_and_flush_in_a_thread(
    eye: Eye, clickhouse: ClickHouse, app: Tuple[str, str]
) -> None:
    import asyncio

    application, key = app
    client = TheEye(eye.url, key)

    async def handler() -> List[str]:
        session = new_session_id()
        ids = [client.track("python client", "async", {"i": i}, session_id=session) for i in range(10)]
        await asyncio.to_thread(client.flush)  # waits without blocking the event loop
        return ids

    ids = asyncio.run(handler())
    client.shutdown()
    assert wait_stored(clickhouse, DATABASE, application, 10) == {i: 1 for i in ids}


def test_a_shutdown_that_gives_up_reports_what_is_left_in_one_piece_per_request() -> None:
    from service import free_port

    from the_eye_client import FlushTimeout

    failures: List[Failure] = []
    # Nobody listens there: every attempt is refused and retried until the deadline.
    client = TheEye(f"http://127.0.0.1:{free_port()}", "k", batch_size=500, on_failure=failures.append)
    ids = [client.track("test", "lost", {"i": i}, session_id="s") for i in range(1200)]
    with pytest.raises(FlushTimeout) as timeout:
        client.shutdown(timeout=0.5)
    assert timeout.value.pending == 1200
    assert [event.event_id for failure in failures for event in failure.events] == ids
    assert len(failures) <= 2, "the batch in flight, then everything else as one failure"
    assert {failure.error.kind for failure in failures} == {"cancelled"}
    stats = client.stats()
    assert (stats.failed, stats.queued, stats.accepted) == (1200, 0, 0)


def test_a_request_whose_events_are_all_rejected_is_not_a_failure(eye: Eye, app: Tuple[str, str]) -> None:
    # The Eye answers 400 `all_rejected` with each event's result: rejections, not a refusal
    # of the request, so nothing is retried and flush has nothing to raise.
    _, key = app
    rejections: List[Rejection] = []
    client = TheEye(eye.url, key, on_rejection=rejections.append)
    future = datetime.now(timezone.utc) + timedelta(hours=1)
    ids = [
        client.track("test", "late", {"i": i}, session_id=new_session_id(), timestamp=future)
        for i in range(2)
    ]
    client.flush()
    assert [(r.event.event_id, r.codes) for r in rejections] == [(i, ["timestamp_in_future"]) for i in ids]
    stats = client.stats()
    assert (stats.rejected, stats.failed, stats.retries, stats.requests) == (2, 0, 0, 1)
    client.shutdown()


def test_overflow_block_waits_for_room_and_gives_up_after_block_timeout(
    eye: Eye, clickhouse: ClickHouse, app: Tuple[str, str]
) -> None:
    from service import free_port

    from the_eye_client import QueueFull

    application, key = app
    # Back-pressure: 300 events through a queue of 10, none refused or dropped.
    client = TheEye(eye.url, key, queue_capacity=10, batch_size=5, flush_interval=0.01, overflow="block")
    session = new_session_id()
    ids = [client.track("python client", "blocked", {"i": i}, session_id=session) for i in range(300)]
    client.shutdown()
    assert (client.stats().accepted, client.stats().dropped) == (300, 0)
    assert wait_stored(clickhouse, DATABASE, application, 300) == {i: 1 for i in ids}

    # Nobody listening: the queue never drains, so the 4th event waits block_timeout and is
    # refused.
    stuck = TheEye(
        f"http://127.0.0.1:{free_port()}",
        "k",
        queue_capacity=3,
        batch_size=1000,
        flush_interval=60,
        overflow="block",
        block_timeout=0.2,
    )
    for i in range(3):
        stuck.track("test", "q", {"i": i}, session_id="s")
    with pytest.raises(QueueFull):
        stuck.track("test", "q", {"i": 3}, session_id="s")
    assert stuck.stats().dropped == 1
    with pytest.raises(FlushError):
        stuck.shutdown(timeout=0.2)


def test_flush_from_a_callback_is_refused_not_a_deadlock(eye: Eye) -> None:
    errors: List[BaseException] = []

    def on_failure(failure: Failure) -> None:
        try:
            client.flush()
        except RuntimeError as error:
            errors.append(error)

    client = TheEye(eye.url, "eye_this_key_does_not_exist", on_failure=on_failure)
    client.track("test", "lost", {"i": 1}, session_id=new_session_id())
    with pytest.raises(Undelivered):
        client.shutdown()
    assert len(errors) == 1 and "callback" in str(errors[0])


def test_a_minimal_answer_is_read_by_index_and_unlisted_events_were_accepted() -> None:
    # `Prefer: return=minimal`: the server lists only the rejected events (and ids it chose).
    from the_eye_client._event import Event
    from the_eye_client._transport import _Answered, _settle_answered, classify, minimal_applied

    assert minimal_applied("return=minimal")
    assert minimal_applied('respond-async, Return = "minimal"')
    assert not minimal_applied("return=representation")
    assert not minimal_applied(None)
    chunk = [Event("test", "e", {"i": i}, session_id="s") for i in range(3)]
    rejected = {
        "status": "rejected",
        "index": 1,
        "problems": [{"field": "timestamp", "code": "c", "message": "m"}],
    }
    body = json.dumps({"accepted": 2, "rejected": 1, "results": [rejected]}).encode()
    verdict = classify(202, None, body, len(chunk), minimal=True)
    assert isinstance(verdict, _Answered) and verdict.unlisted_accepted
    fates = [fate for _, fate in _settle_answered(chunk, verdict.results, verdict.unlisted_accepted)]
    assert fates[0] is None and fates[2] is None
    assert isinstance(fates[1], list) and fates[1][0].code == "c"
    # Without the header, or with counts that do not cover the request, an unlisted event is
    # not assumed delivered.
    for verdict in (classify(202, None, body, len(chunk)), classify(202, None, body, 4, minimal=True)):
        assert isinstance(verdict, _Answered) and not verdict.unlisted_accepted
        fates = [fate for _, fate in _settle_answered(chunk, verdict.results, verdict.unlisted_accepted)]
        assert isinstance(fates[0], tuple) and fates[0][0].kind == "invalid_response"
