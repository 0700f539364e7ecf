"""How fast the Python client takes and delivers events from one thread, and what it costs.

    python benchmarks/throughput.py [--events N] [--batch-size B] [--data-bytes D] [--runs R]
                                    [--url URL --key KEY]

Without ``--url``, it starts a development ClickHouse and The Eye of its own on free ports
(``tests/service.py``; The Eye is ``THE_EYE_BIN`` or the debug build, made with ``cargo build``
when needed), with the rate limit lifted, and stops them at the end. With ``--url`` and
``--key`` it sends to that service (mind its application's rate limit: 1,000 events/s by
default, which this would measure instead).

Per run, one client (gzip on, ``queue_capacity`` = N, so ``track`` never waits for room) and
one thread that calls ``track`` N times with a small payload (``{"path": …, "i": …}`` padded
to D bytes), then ``flush``:

- ``track`` calls/s: N / the wall time of the loop, while the background thread is already
  sending (so both compete for the GIL, as in an application);
- µs per ``track`` call: the calling thread's CPU time (``time.thread_time``) / N;
- delivered/s: N / the wall time from the first ``track`` to ``flush`` returning (every
  event answered by The Eye);
- client CPU µs/event: the whole process's CPU time (``time.process_time``: both threads,
  JSON, gzip, HTTP) / N;
- client CPU share: that CPU time / the wall time until ``flush`` returned. Near 100% the
  client (one interpreter, one GIL) is what limits delivery; well below it, the service or
  the machine's other load is.

The 1-minute load average before and after the runs is printed too: on a shared machine the
wall-clock figures depend on it, the CPU-time ones much less.

Prints a Markdown table (one row per run, then the median) and checks that every event was
accepted; exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from the_eye_client import TheEye, new_session_id  # noqa: E402


def one_run(
    url: str, key: str, events: int, batch_size: int, data_bytes: int
) -> Tuple[float, float, float, float, float]:
    client = TheEye(url, key, batch_size=batch_size, queue_capacity=events, flush_timeout=600)
    session = new_session_id()
    pad = "x" * max(0, data_bytes - 40)
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    thread0 = time.thread_time()
    track = client.track
    for i in range(events):
        track("benchmark", "pageview", {"path": "/products/42", "i": i, "pad": pad}, session_id=session)
    thread_cpu = time.thread_time() - thread0
    tracked_wall = time.perf_counter() - wall0
    client.flush()
    delivered_wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    stats = client.stats()
    client.shutdown()
    if stats.accepted != events:
        raise SystemExit(f"only {stats.accepted} of {events} events accepted: {stats}")
    return (
        events / tracked_wall,
        thread_cpu / events * 1e6,
        events / delivered_wall,
        cpu / events * 1e6,
        cpu / delivered_wall * 100,
    )


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--data-bytes", type=int, default=100, help="approximate bytes of each event's data")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--url")
    parser.add_argument("--key")
    args = parser.parse_args(argv)

    stop = []
    with tempfile.TemporaryDirectory(prefix="the-eye-client-bench-") as work:
        if args.url:
            if not args.key:
                parser.error("--url needs --key")
            url, key = args.url, args.key
        else:
            from service import ClickHouse, Eye, the_eye_binary

            clickhouse = ClickHouse(Path(work) / "clickhouse")
            stop.append(clickhouse.stop)
            eye = Eye(the_eye_binary(), clickhouse, "client_bench", Path(work) / "eye", {})
            eye.cli("migrate")
            _, key = eye.create_app("python-client-bench")
            eye.start()
            stop.insert(0, eye.stop)
            url = eye.url
        load_before = os.getloadavg()[0]
        try:
            rows = [
                one_run(url, key, args.events, args.batch_size, args.data_bytes) for _ in range(args.runs)
            ]
        finally:
            for action in stop:
                action()

        load_after = os.getloadavg()[0]

    print(
        f"Python {sys.version.split()[0]}, {args.events:,} events of ~{args.data_bytes} B data per run, "
        f"batch_size {args.batch_size}, gzip on; 1-minute load average {load_before:.2f} before, "
        f"{load_after:.2f} after"
    )
    print()
    print(
        "| run | track() calls/s | µs CPU per track() | delivered events/s | client CPU µs/event"
        " | client CPU share |"
    )
    print("|---|---|---|---|---|---|")
    for number, (rate, per_call, delivered, cpu, share) in enumerate(rows, 1):
        print(f"| {number} | {rate:,.0f} | {per_call:.1f} | {delivered:,.0f} | {cpu:.1f} | {share:.0f}% |")
    m = [statistics.median(column) for column in zip(*rows)]
    print(f"| **median** | {m[0]:,.0f} | {m[1]:.1f} | {m[2]:,.0f} | {m[3]:.1f} | {m[4]:.0f}% |")


if __name__ == "__main__":
    main()
