"""The client in real processes: after ``os.fork()`` and at interpreter exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Tuple

from conftest import DATABASE
from service import ClickHouse, Eye, free_port, wait_stored

PROGRAMS = Path(__file__).parent / "programs"


def package_env() -> Dict[str, str]:
    """The environment with ``PYTHONPATH`` at the package under test, wherever this run
    imports it from (the source tree, or where scripts/test installed it)."""
    import the_eye_client

    return {**os.environ, "PYTHONPATH": str(Path(the_eye_client.__path__[0]).parent)}


def run(program: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = package_env()
    return subprocess.run(
        [sys.executable, str(PROGRAMS / program), *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_a_forked_child_sends_its_own_events_and_not_the_parents(
    eye: Eye, clickhouse: ClickHouse, app: Tuple[str, str]
) -> None:
    application, key = app
    done = run("fork.py", eye.url, key)
    assert done.returncode == 0, done.stderr
    lines: Dict[str, Dict[str, object]] = {}
    for line in done.stdout.splitlines():
        value = json.loads(line)
        lines[value["who"]] = value
    child, parent = lines["child"], lines["parent"]
    assert parent["child_status"] == 0
    child_stats = child["stats"]
    assert isinstance(child_stats, dict)
    # The child started empty: it tracked, sent and had accepted its 3 events only.
    assert (child_stats["tracked"], child_stats["sent"], child_stats["accepted"]) == (3, 3, 3), child_stats
    parent_stats = parent["stats"]
    assert isinstance(parent_stats, dict)
    assert (parent_stats["tracked"], parent_stats["sent"], parent_stats["accepted"]) == (6, 6, 6), (
        parent_stats
    )
    ids = [*child["ids"], *parent["ids"]]  # type: ignore[misc]
    # Every event stored once: The Eye here stores every delivery (no dedup window, no
    # merges), so a parent's event sent by the child too would be a second row.
    assert wait_stored(clickhouse, DATABASE, application, 9) == {i: 1 for i in ids}


def test_interpreter_exit_delivers_what_is_queued(
    eye: Eye, clickhouse: ClickHouse, app: Tuple[str, str]
) -> None:
    application, key = app
    done = run("exit_flush.py", eye.url, key)
    assert done.returncode == 0, done.stderr
    before_exit = json.loads(done.stdout)
    assert before_exit["stats"]["sent"] == 0, "nothing had been sent before the exit"
    assert before_exit["stats"]["queued"] == 25
    assert wait_stored(clickhouse, DATABASE, application, 25) == {i: 1 for i in before_exit["ids"]}
    assert done.stderr == "", "no error was reported at exit"


def test_exit_with_the_service_down_reports_what_was_not_delivered_within_the_bound(eye: Eye) -> None:
    # A port nobody listens on: every attempt is refused; the exit gives up after
    # exit_timeout (1 s here) and says how many events were not delivered.
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from the_eye_client import TheEye, new_session_id\n"
            "c = TheEye(sys.argv[1], 'k', exit_timeout=1.0)\n"
            "c.track('python client', 'lost', {'i': 1}, session_id=new_session_id())\n",
            f"http://127.0.0.1:{free_port()}",
        ],
        env=package_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "1 event was still undelivered when the deadline passed" in done.stderr, done.stderr
    assert "cancelled" in done.stderr or "shut down before" in done.stderr, done.stderr
