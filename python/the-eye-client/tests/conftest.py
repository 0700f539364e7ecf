"""Fixtures: one ClickHouse and one The Eye for the whole run, and an application of its own
for each test (its events are told apart by ``application``).

ClickHouse is the server at ``CLICKHOUSE_URL`` when it is set (as for the Rust tests), else a
development ClickHouse started here; the run's databases get names of their own and are
dropped at the end. The 503 test always starts a development ClickHouse of its own, since it
pauses it."""

from __future__ import annotations

import itertools
import os
import sys
import uuid
from pathlib import Path
from typing import Iterator, Tuple

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from service import ClickHouse, Eye, the_eye_binary

#: This run's database: unique, so that runs on a shared server never meet.
DATABASE = f"python_client_{os.getpid()}_{uuid.uuid4().hex[:8]}"
_apps = itertools.count()


@pytest.fixture(scope="session")
def binary() -> Path:
    return the_eye_binary()


@pytest.fixture(scope="session")
def clickhouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouse]:
    url = os.environ.get("CLICKHOUSE_URL")
    server = ClickHouse(None, url) if url else ClickHouse(tmp_path_factory.mktemp("clickhouse") / "data")
    yield server
    for database in (DATABASE, f"{DATABASE}_crash"):
        server.query("DROP DATABASE IF EXISTS {db:Identifier}", db=database)
    server.stop()


@pytest.fixture(scope="session")
def eye(binary: Path, clickhouse: ClickHouse, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Eye]:
    """The Eye shared by the tests that do not stop it, with merges of ``events`` stopped so
    that every stored copy of an event stays countable."""
    service = Eye(binary, clickhouse, DATABASE, tmp_path_factory.mktemp("eye"), {})
    service.cli("migrate")
    clickhouse.query(f"SYSTEM STOP MERGES {DATABASE}.events")
    service.start()
    yield service
    service.stop()


@pytest.fixture
def app(eye: Eye) -> Tuple[str, str]:
    """An application of this test's own on the shared The Eye: ``(id, ingest key)``."""
    return eye.create_app(f"python-client-{next(_apps)}")
