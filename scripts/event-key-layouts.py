#!/usr/bin/env python3
"""Compares sort keys for `events` on the read-speed fixture (BENCHMARKS.md, "Event sort key").

For each layout and each kind of event id (UUIDv4, random; UUIDv7, time-ordered as the SDK
and the Rust client make them) it builds the 1,000,000-event fixture of `src/store/fixture.rs`
(three applications, a session in one of them) in a table with the layout's key and the two
projections of migration 4, merges it to one part per partition, and prints a Markdown row:
compressed bytes of the table and of its projections, and the granules `EXPLAIN indexes = 1`
selects for a session read without and with its application (of 124).

Runs on the engine of the development ClickHouse (chDB), in a scratch directory:

    "$(ls -d ~/.cache/the-eye/devserver-venv-* | head -1)/bin/python" scripts/event-key-layouts.py

`--events N` builds a smaller fixture (the CI smoke uses 10,000; the figures in BENCHMARKS.md
are for the default 1,000,000). `--layout NAME` (repeatable) builds only the layouts named,
e.g. `--layout "migration 9"`.
"""

import argparse

import re
import shutil
import tempfile

import chdb.session

COLUMNS = """
    event_id UUID, application LowCardinality(String), session_id String,
    category LowCardinality(String), name LowCardinality(String), data String CODEC(ZSTD(3)),
    timestamp DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    client_timestamp DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    sent_at Nullable(DateTime64(6, 'UTC')), received_at DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    PROJECTION by_time (SELECT * ORDER BY timestamp),
    PROJECTION by_category (SELECT * ORDER BY (category, timestamp))
"""

LAYOUTS = [
    ("before migration 4", "toYYYYMM(timestamp)", "(session_id, timestamp, event_id)"),
    ("application first", "toYYYYMM(client_timestamp)", "(application, session_id, event_id)"),
    ("migration 4", "toYYYYMM(client_timestamp)", "(session_id, application, event_id)"),
    ("with client time", "toYYYYMM(client_timestamp)",
     "(session_id, application, client_timestamp, event_id)"),
    # The key `events` has today (migration 9): the session, then the client's time, then the
    # identity. The projections stay migration 4's, as for every row, so that the rows differ
    # by their key alone.
    ("migration 9", "toYYYYMM(client_timestamp)",
     "(session_id, client_timestamp, event_id, application)"),
]

# The fixture of src/store/fixture.rs at its default size (100 events per session).
FIXTURE = """
    INSERT INTO {table} (event_id, application, session_id, category, name, data, timestamp,
                         client_timestamp, sent_at, received_at)
    SELECT {id_function}(number),
        concat('fixture-app-', toString((intDiv(number, 1000) * 10 + number % 10) % 3)),
        concat('session-', toString(intDiv(number, 1000) * 10 + number % 10)),
        concat('category-', toString(cityHash64(number, 'category') % 20)),
        ['pageview', 'cta click', 'submit', 'scroll', 'hover'][1 + cityHash64(number, 'name') % 5],
        concat('{{"host":"www.example.com","path":"/page/', toString(number % 997), '"}}'),
        toDateTime64('2025-01-01 00:00:00', 6, 'UTC') + toIntervalMicrosecond(number * 7776000) AS ts,
        ts, NULL, ts + toIntervalMillisecond(150)
    FROM numbers({events})
    SETTINGS max_insert_block_size = 1000001, min_insert_block_size_rows = 1000001
"""

# Session 4242 is in application (4242 % 3) = fixture-app-0.
SESSION = "SELECT * FROM {table} WHERE session_id = 'session-4242'{extra} ORDER BY timestamp LIMIT 101"


def scalar(session, sql):
    return session.query(sql, "CSV").bytes().decode().strip()


def granules(session, sql):
    plan = session.query("EXPLAIN indexes = 1 " + sql, "TSV").bytes().decode()
    found = re.findall(r"Granules: (\d+)/(\d+)", plan)
    return found[-1][0] if found else "?"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the fixture")
    parser.add_argument("--layout", action="append", choices=[name for name, _, _ in LAYOUTS],
                        help="only this layout (repeatable); all by default")
    arguments = parser.parse_args()
    events = arguments.events
    wanted = set(arguments.layout or [name for name, _, _ in LAYOUTS])
    scratch = tempfile.mkdtemp(prefix="event-key-layouts-")
    try:
        session = chdb.session.Session(scratch)
        session.query("CREATE DATABASE layouts")
        print("| layout | ORDER BY | ids | table MB | projections MB | session | session + app |")
        print("|---|---|---|---|---|---|---|")
        for number, (name, partition, order) in enumerate(LAYOUTS):
            if name not in wanted:
                continue
            for id_function in ("generateUUIDv4", "generateUUIDv7"):
                table = f"layouts.t{number}_{id_function[-2:]}"
                session.query(
                    f"CREATE TABLE {table} ({COLUMNS}) ENGINE = ReplacingMergeTree "
                    f"PARTITION BY {partition} ORDER BY {order} "
                    "SETTINGS deduplicate_merge_projection_mode = 'rebuild'"
                )
                session.query(FIXTURE.format(table=table, id_function=id_function, events=events))
                session.query(f"OPTIMIZE TABLE {table} FINAL")
                database, bare = table.split(".")
                where = f"database = '{database}' AND table = '{bare}' AND active"
                main_bytes = int(scalar(session, f"SELECT sum(data_compressed_bytes) FROM system.parts WHERE {where}"))
                projection_bytes = int(scalar(
                    session, f"SELECT sum(data_compressed_bytes) FROM system.projection_parts WHERE {where}"))
                alone = granules(session, SESSION.format(table=table, extra=""))
                with_app = granules(
                    session, SESSION.format(table=table, extra=" AND application = 'fixture-app-0'"))
                print(f"| {name} | `{order}` | {id_function[-2:]} | {main_bytes / 1e6:.1f} | "
                      f"{projection_bytes / 1e6:.1f} | {alone} | {with_app} |", flush=True)
                session.query(f"DROP TABLE {table}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
