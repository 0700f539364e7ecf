"""A pre-forking server in miniature: the parent tracks events that stay queued, forks, and
the child tracks its own. Prints one JSON line per process with its ids and stats.

    python fork.py URL KEY
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

from the_eye_client import TheEye, new_session_id

url, key = sys.argv[1], sys.argv[2]
session = new_session_id()
# A long flush interval: the parent's events are still queued when it forks.
client = TheEye(url, key, flush_interval=60)
parent_ids = [client.track("python client", "parent", {"i": i}, session_id=session) for i in range(5)]
assert client.stats().queued == 5

read_end, write_end = os.pipe()
pid = os.fork()
if pid == 0:
    status = 1
    try:
        os.close(read_end)
        child_ids = [client.track("python client", "child", {"i": i}, session_id=session) for i in range(3)]
        client.flush()
        line = {"who": "child", "ids": child_ids, "stats": dataclasses.asdict(client.stats())}
        os.write(write_end, (json.dumps(line) + "\n").encode())
        status = 0
    finally:
        os._exit(status)  # as pre-forking servers' workers end: no atexit
os.close(write_end)
with os.fdopen(read_end) as pipe:
    child_line = pipe.read()
_, child_status = os.waitpid(pid, 0)
parent_ids.append(client.track("python client", "parent", {"i": 5}, session_id=session))
client.shutdown()
print(child_line.strip())
print(
    json.dumps(
        {
            "who": "parent",
            "ids": parent_ids,
            "stats": dataclasses.asdict(client.stats()),
            "child_status": child_status,
        }
    )
)
