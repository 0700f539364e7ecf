"""Tracks events and ends without flushing: the client's atexit hook must deliver them.
Prints the ids and the stats before exit (nothing sent yet) as one JSON line.

    python exit_flush.py URL KEY
"""

from __future__ import annotations

import dataclasses
import json
import sys

from the_eye_client import TheEye, new_session_id

client = TheEye(sys.argv[1], sys.argv[2], flush_interval=60)
session = new_session_id()
ids = [client.track("python client", "before exit", {"i": i}, session_id=session) for i in range(25)]
print(json.dumps({"ids": ids, "stats": dataclasses.asdict(client.stats())}), flush=True)
sys.exit(0)
