"""The package as installed, and its benchmark as documented (a tiny run: the figures mean
nothing here, the command must keep working)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Tuple

from conftest import DATABASE
from service import REPO, ClickHouse, Eye, wait_stored

import the_eye_client

HERE = Path(__file__).resolve().parent


def test_the_package_ships_its_type_information() -> None:
    package = Path(the_eye_client.__path__[0])
    assert (package / "py.typed").is_file()
    assert the_eye_client.__version__ == "0.1.0"


def test_uuid7_ids_are_version_7_and_increase() -> None:
    ids = [the_eye_client.uuid7() for _ in range(10_000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(i[14] == "7" and i[19] in "89ab" for i in ids)


def test_the_benchmark_runs_and_checks_what_it_sent(eye: Eye, app: Tuple[str, str]) -> None:
    _, key = app
    env = {**os.environ, "PYTHONPATH": str(Path(the_eye_client.__path__[0]).parent)}
    done = subprocess.run(
        [
            sys.executable,
            str(HERE.parent / "benchmarks" / "throughput.py"),
            *("--events", "2000", "--runs", "1", "--url", eye.url, "--key", key),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "| **median** |" in done.stdout, done.stdout


def test_the_readme_program_is_the_example_file_and_runs(
    eye: Eye, clickhouse: ClickHouse, app: Tuple[str, str]
) -> None:
    readme = (REPO / "docs" / "applications.md").read_text()
    section = readme[readme.index("## Python client\n") :]
    shown = section.split("```python\n", 1)[1].split("```", 1)[0]
    program = (HERE.parent / "examples" / "readme.py").read_text()
    assert shown == "".join(line + "\n" for line in program.splitlines() if not line.startswith("#"))

    application, key = app
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(the_eye_client.__path__[0]).parent),
        "THE_EYE_URL": eye.url,
        "THE_EYE_INGEST_KEY": key,
    }
    done = subprocess.run(
        [sys.executable, str(HERE.parent / "examples" / "readme.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "accepted=1" in done.stdout and done.stderr == "", (done.stdout, done.stderr)
    assert len(wait_stored(clickhouse, DATABASE, application, 1)) == 1
