#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets into fuzz/seeds/<target>/ from the project's
test fixtures: the three documented example events (README, benches/validate.rs, the
integration tests), the hostile inputs of tests/it/ingest.rs (lone surrogates, a byte-order
mark, duplicate keys, numbers beyond f64), and the read API's query strings of
tests/it/read.rs. Each file of ingest_body starts with its mode byte (see the target)."""

import gzip
import json
import pathlib
import urllib.parse

HERE = pathlib.Path(__file__).resolve().parent
SEEDS = HERE / "seeds"

EXAMPLES = [
    '{"session_id": "e2085be5-9137-4e4e-80b5-f1ffddc25423", "category": "page interaction", "name": "pageview", "data": {"host": "www.consumeraffairs.com", "path": "/"}, "timestamp": "2021-01-01 09:15:27.243860"}',
    '{"session_id": "e2085be5-9137-4e4e-80b5-f1ffddc25423", "category": "page interaction", "name": "cta click", "data": {"host": "www.consumeraffairs.com", "path": "/", "element": "chat bubble"}, "timestamp": "2021-01-01 09:15:27.243860"}',
    '{"session_id": "e2085be5-9137-4e4e-80b5-f1ffddc25423", "category": "form interaction", "name": "submit", "data": {"host": "www.consumeraffairs.com", "path": "/", "form": {"first_name": "John", "last_name": "Doe"}}, "timestamp": "2021-01-01 09:15:27.243860"}',
]
HOSTILE = [
    '[{"session_id": "s", "category": "page interaction", "name": "cut", "data": {"s": "\\ud800"}, "timestamp": "2021-01-01T00:00:00Z"}, '
    '{"session_id": "s", "category": "page interaction", "name": "whole", "data": {"s": "\\ud83d\\ude00"}, "timestamp": "2021-01-01T00:00:00Z"}]',
    '{"session_id": "s", "category": "page interaction", "name": "view", "name": "purchase", "data": {"qty": 1, "qty": -1}, "timestamp": "2021-01-01T00:00:00Z"}',
    '[{"data": {"n": 1e999}}, {"event_id": "0192d4e8-5f3c-7b4e-9a61-2f0c3e4b5a6d", "sent_at": "2021-01-01T00:00:01Z"}]',
    '{"session_id": " ", "category": "", "name": 1, "data": [], "timestamp": "9999-99-99", "extra": null}',
    "[]",
    "null",
]
QUERIES = [
    "",
    "category=page%20interaction&from=2021-01-01T00:00:00Z&to=2021-01-02T00:00:00Z&limit=2",
    "session_id=e2085be5-9137-4e4e-80b5-f1ffddc25423&order=desc",
    "name=pageview&received_from=2021-01-01T00:00:00Z&received_to=2021-01-01%2010:00:00",
    "session_id=s-1&client_from=2021-01-01T09:00:00Z&client_to=2021-01-01T08:00:00Z",
    "code=invalid_timestamp&field=timestamp&application=demo",
    "limit=0&limit=5&order=sideways&bogus=1&cursor=AQEA",
    "category=",
]


def write(target, name, data):
    folder = SEEDS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def main():
    bodies = [e.encode() for e in EXAMPLES]
    bodies.append(("[" + ", ".join(EXAMPLES) + "]").encode())
    bodies += [h.encode() for h in HOSTILE]
    bodies.append(b"\xef\xbb\xbf" + EXAMPLES[0].encode())
    for i, body in enumerate(bodies):
        write("ingest_body", f"json-{i}", bytes([0]) + body)
        # Compressed by the target (mode bits 3-4 = 2) and sent already compressed (= 1).
        write("ingest_body", f"gzip-here-{i}", bytes([2 << 3]) + body)
        write("ingest_body", f"gzip-sent-{i}", bytes([1 << 3]) + gzip.compress(body))
        # The beacon path, as text and as a form.
        write("ingest_body", f"beacon-text-{i}", bytes([1 | 1 << 1]) + body)
        form = urllib.parse.urlencode({"events": body.decode("utf-8", "surrogatepass")})
        write("ingest_body", f"beacon-form-{i}", bytes([1 | 2 << 1]) + form.encode())
    for i, query in enumerate(QUERIES):
        for route in range(3):
            write("read_params", f"query-{route}-{i}", bytes([route]) + query.encode())
    # A sealed cursor payload: version 1, events, asc, a time, an id, a fingerprint.
    payload = bytes([1, 0, 0]) + (1_609_459_200_000_000).to_bytes(8, "big") + bytes(range(16)) + bytes(8)
    write("read_params", "sealed-cursor", bytes([4]) + payload)
    for i, example in enumerate(EXAMPLES):
        write("payload_schema", f"data-{i}", json.dumps(json.loads(example)["data"]).encode())
    write("payload_schema", "data-wrong-types", b'{"host": 1, "path": null, "form": {"first_name": []}}')


if __name__ == "__main__":
    main()
