#!/usr/bin/env python3
"""What erasing one user costs ClickHouse (BENCHMARKS.md, "Erasure: mutation or lightweight DELETE").

Builds an `events` table shaped as today's (migrations 8-13: ReplacingMergeTree sorted by
session then client time, the `time_index` projection, bloom filters on `event_id` and
`user_id`, ZSTD(1) as the default codec) in a scratch chDB session, fills it with N events
(sessions of 100, one event a second, so months are partitions), merges it, and erases one
user with the mutation The Eye runs (`ALTER TABLE ... DELETE`, `mutations_sync = 2`),
reporting wall and CPU seconds, the parts rewritten and the bytes before and after.

  --layout block:  users own 1,000 consecutive events (a user's sessions lie together: the
                   best case, one part rewritten)
  --layout spread: user = event number mod (N / 1,000): every user has events in every month,
                   so every part is rewritten (the worst case)

Run with the development ClickHouse's virtualenv, which has chdb:
  "$(ls -d ~/.cache/the-eye/devserver-venv-* | head -1)/bin/python" scripts/erasure-cost.py \\
      --events 10000000 --layout spread
"""
import argparse
import resource
import tempfile
import time

from chdb import session


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--layout", choices=["block", "spread"], default="block")
    args = parser.parse_args()
    n = args.events
    user = "concat('user-', toString(intDiv(number, 1000)))"
    if args.layout == "spread":
        user = f"concat('user-', toString(number % {max(n // 1000, 1)}))"

    db = session.Session(tempfile.mkdtemp())

    def q(sql):
        return db.query(sql, "TSV").bytes().decode().strip()

    q("CREATE DATABASE b ENGINE = Atomic")
    q("""CREATE TABLE b.events (event_id UUID, application LowCardinality(String),
        session_id String, user_id String, category LowCardinality(String),
        name LowCardinality(String), data String CODEC(ZSTD(3)),
        timestamp DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
        client_timestamp DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
        received_at DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
        INDEX event_id_bloom event_id TYPE bloom_filter(0.001) GRANULARITY 1,
        INDEX user_id_bloom user_id TYPE bloom_filter(0.001) GRANULARITY 1,
        PROJECTION time_index (SELECT _part_offset ORDER BY timestamp))
        ENGINE = ReplacingMergeTree PARTITION BY toYYYYMM(client_timestamp)
        ORDER BY (session_id, client_timestamp, event_id, application)
        SETTINGS index_granularity = 8192, deduplicate_merge_projection_mode = 'rebuild',
            default_compression_codec = 'ZSTD(1)'""")
    q(f"""INSERT INTO b.events SELECT generateUUIDv4(number), 'app',
        concat('s-', leftPad(toString(intDiv(number, 100)), 10, '0')), {user}, 'c', 'n',
        '{{"host":"h","path":"/p"}}',
        toDateTime64('2025-01-01 00:00:00', 6, 'UTC') + toIntervalSecond(number) AS ts, ts, ts
        FROM numbers({n})
        SETTINGS max_insert_block_size = {n + 1}, min_insert_block_size_rows = {n + 1}""")
    q("OPTIMIZE TABLE b.events FINAL")
    parts = "SELECT count(), sum(bytes_on_disk) FROM system.parts WHERE database = 'b' AND table = 'events' AND active"
    # The user of the middle event.
    middle = n // 2
    victim = f"user-{middle // 1000 if args.layout == 'block' else middle % max(n // 1000, 1)}"
    owned = q(f"SELECT count() FROM b.events WHERE user_id = '{victim}'")
    before = q(parts).split()
    touched = q(f"SELECT uniqExact(_part) FROM b.events WHERE user_id = '{victim}'")
    cpu, wall = cpu_seconds(), time.perf_counter()
    q(f"ALTER TABLE b.events DELETE WHERE application = 'app' AND user_id = '{victim}' SETTINGS mutations_sync = 2")
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    after = q(parts).split()
    left = q(f"SELECT count() FROM b.events WHERE user_id = '{victim}' SETTINGS apply_deleted_mask = 0")
    print(
        f"{n:,} events, layout {args.layout}: erased {owned} events of one user from {touched} of "
        f"{before[0]} parts in {wall:.2f} s wall, {cpu:.2f} s CPU; rows left on disk {left}; "
        f"table {int(before[1]):,} -> {int(after[1]):,} bytes"
    )


if __name__ == "__main__":
    main()
