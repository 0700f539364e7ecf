"""The real parts the tests run against: the development ClickHouse
(``clickhouse/devserver/run.sh``) and The Eye built from this repository, each a process of
its own on a free port of 127.0.0.1, started the way ``scripts/schemathesis`` starts them
(``the-eye migrate``, ``apps create``, then ``serve``), so that a test can pause ClickHouse
(SIGSTOP) or kill The Eye (SIGKILL) and start it again on the same port, spool and database.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

#: The repository's root (python/the-eye-client/tests/ → ../../..).
REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    """A TCP port of 127.0.0.1 free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path, what: str, seconds: float) -> None:
    """Polls ``url`` until it answers 200; fails with the process's log if it exits or
    ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up at {url} in {seconds} s:\n{log.read_text()[-4000:]}")


def the_eye_binary() -> Path:
    """``the-eye`` built from this tree (``cargo build``, a no-op when it is current), or
    ``THE_EYE_BIN`` when set."""
    given = os.environ.get("THE_EYE_BIN")
    if given:
        return Path(given)
    subprocess.run(["cargo", "build", "--locked", "--quiet", "--bin", "the-eye"], cwd=REPO, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    if not target.is_absolute():
        target = REPO / target
    return target / "debug" / "the-eye"


class ClickHouse:
    """A development ClickHouse of its own with its data in ``data``, or the server at ``url``
    (``CLICKHOUSE_URL``: a real one, whose user ``default`` has ``CLICKHOUSE_PASSWORD``),
    which tests share and so never pause or stop."""

    def __init__(self, data: Optional[Path], url: Optional[str] = None) -> None:
        self.process: Optional[subprocess.Popen[bytes]] = None
        if url is not None:
            self.url = url.rstrip("/")
            self.password = os.environ.get("CLICKHOUSE_PASSWORD", "")
            return
        assert data is not None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log = data.parent / f"{data.name}.log"
        data.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    str(REPO / "clickhouse/devserver/run.sh"),
                    *("--host", "127.0.0.1", "--port", str(self.port), "--data", str(data)),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        # The first run creates the devserver's virtualenv: minutes, once per machine.
        wait_until_up(self.url + "/ping", self.process, log, "the development ClickHouse", 900)
        # The devserver generates its password into its data directory before it listens.
        self.password = (data / "password").read_text().strip()

    def query(self, sql: str, **params: Any) -> str:
        """Runs ``sql`` with ``{name:Type}`` parameters bound from ``params``; returns the text."""
        query = {"query": sql, **{f"param_{name}": str(value) for name, value in params.items()}}
        url = self.url + "/?" + urllib.parse.urlencode(query)
        headers = {"X-ClickHouse-User": "default", "X-ClickHouse-Key": self.password}
        request = urllib.request.Request(url, data=b"", headers=headers)
        with urllib.request.urlopen(request, timeout=60) as answer:
            text: str = answer.read().decode()
            return text

    def rows(self, sql: str, **params: Any) -> List[Dict[str, Any]]:
        """Rows of ``sql`` (``FORMAT JSONEachRow`` is appended) as dicts."""
        text = self.query(sql + " FORMAT JSONEachRow", **params)
        return [json.loads(line) for line in text.splitlines() if line]

    def pause(self) -> None:
        """SIGSTOP: the server holds every connection and answers nothing until ``resume``."""
        assert self.process is not None, "only a development ClickHouse of the test's own is paused"
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stops a development ClickHouse of our own; leaves a shared server alone."""
        if self.process is None:
            return
        self.resume()
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Eye:
    """The Eye (``serve``) on ``clickhouse``'s database ``database``, with a spool of its own;
    ``settings`` are extra ``THE_EYE_*`` variables."""

    def __init__(
        self, binary: Path, clickhouse: ClickHouse, database: str, work: Path, settings: Mapping[str, str]
    ) -> None:
        self.binary = binary
        self.clickhouse = clickhouse
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.log = work / "the-eye.log"
        self.env = {
            **os.environ,
            "THE_EYE_CLICKHOUSE_URL": clickhouse.url,
            "THE_EYE_CLICKHOUSE_PASSWORD": clickhouse.password,
            "THE_EYE_CLICKHOUSE_DATABASE": database,
            "THE_EYE_SERVER_LISTEN_ADDR": f"127.0.0.1:{self.port}",
            # Its own metrics port too: the default (9464) is one per machine.
            "THE_EYE_SERVER_METRICS_LISTEN_ADDR": f"127.0.0.1:{free_port()}",
            "THE_EYE_SERVER_LOG_FILTER": "warn",
            "THE_EYE_PIPELINE_SPOOL_DIR": str(work / "spool"),
            "THE_EYE_PIPELINE_FLUSH_INTERVAL_MS": "100",
            # Every delivery is stored: a duplicate sent by the client is then a second row
            # (merges are stopped too), so "delivered once" is checked, not assumed.
            "THE_EYE_PIPELINE_DEDUP_WINDOW_EVENTS": "0",
            "THE_EYE_AUTH_DEFAULT_RATE_PER_SECOND": "1000000",
            "THE_EYE_AUTH_DEFAULT_BURST": "1000000",
            **settings,
        }
        self.process: Optional[subprocess.Popen[bytes]] = None

    def cli(self, *args: str) -> str:
        """Runs ``the-eye ARGS`` on this database; returns its standard output."""
        done = subprocess.run(
            [str(self.binary), *args], env=self.env, capture_output=True, check=False, timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(f"the-eye {' '.join(args)}: {done.stderr.decode()}")
        return done.stdout.decode()

    def create_app(self, name: str, *options: str) -> Tuple[str, str]:
        """A new application (``options`` of ``apps create``, e.g. ``--rate 100``) and its
        ingest key: ``(application id, key)``."""
        out = self.cli("apps", "create", "--name", name, *options)
        app = re.search(r"application `([^`]+)`", out)
        key = re.search(r"shown once[^:]*: (\S+)", out)
        if not app or not key:
            raise RuntimeError(f"unexpected output of apps create: {out}")
        return app.group(1), key.group(1)

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(self.binary), "serve"], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        wait_until_up(self.url + "/readyz", self.process, self.log, "The Eye", 120)

    def kill(self) -> None:
        """SIGKILL, as a crash: no graceful shutdown, the spool left as it is."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def stored(clickhouse: ClickHouse, database: str, application: str) -> Dict[str, int]:
    """Rows of ``application`` in ``events`` per ``event_id``, every stored copy counted
    (no ``FINAL``)."""
    rows = clickhouse.rows(
        "SELECT toString(event_id) AS id, count() AS n FROM {db:Identifier}.events"
        " WHERE application = {app:String} GROUP BY id",
        db=database,
        app=application,
    )
    return {row["id"]: int(row["n"]) for row in rows}


def wait_stored(
    clickhouse: ClickHouse, database: str, application: str, expected: int, seconds: float = 60
) -> Dict[str, int]:
    """``stored`` once at least ``expected`` distinct ids are there (The Eye writes to
    ClickHouse in the background), or when ``seconds`` passed."""
    deadline = time.monotonic() + seconds
    while True:
        found = stored(clickhouse, database, application)
        if len(found) >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.1)
