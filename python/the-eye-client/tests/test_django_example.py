"""The Django example (``examples/django_example/``) against the real service: one server-side event
per request, in the session the browser SDK keeps (its cookie, or the header), and a new one
written back in the SDK's format when the request brings none."""

from __future__ import annotations

import importlib
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple
from urllib.parse import quote, unquote

import pytest
from conftest import DATABASE
from service import ClickHouse, Eye, wait_stored

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "django_example"


def test_each_request_is_an_event_in_the_visits_session(
    eye: Eye, clickhouse: ClickHouse, app: Tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    application, key = app
    monkeypatch.setenv("THE_EYE_URL", eye.url)
    monkeypatch.setenv("THE_EYE_INGEST_KEY", key)
    monkeypatch.syspath_prepend(str(EXAMPLE))
    importlib.import_module("example_site")  # configures Django for this process
    import django
    from django.test import Client

    django.setup()
    middleware = importlib.import_module("the_eye_middleware")

    browser = Client()
    first = browser.get("/")
    assert first.status_code == 200 and b"the-eye.min.mjs" in first.content
    cookie: Dict[str, Any] = json.loads(unquote(first.cookies["the-eye.session"].value))
    session = cookie["id"]
    assert len(session) == 36 and session[14] == "7", "a new session is a UUIDv7"
    browser.get("/")  # the cookie comes back: the same session
    assert json.loads(unquote(browser.cookies["the-eye.session"].value))["id"] == session

    # A page's fetch says its session outright.
    other = "0190a6f2-3b4c-7d5e-8f60-7182a3b4c5d6"
    signed_up = browser.post("/signup", {"plan": "pro"}, HTTP_X_THE_EYE_SESSION=other)
    signup_id = signed_up.json()["event_id"]

    # A session idle for longer than the SDK's 30 minutes is over, as the SDK would decide.
    stale = Client()
    stale.cookies["the-eye.session"] = quote(
        json.dumps({"id": session, "last": time.time() * 1000 - 31 * 60_000})
    )
    stale.get("/")
    renewed = json.loads(unquote(stale.cookies["the-eye.session"].value))["id"]
    assert renewed != session

    middleware.client().flush()
    found = wait_stored(clickhouse, DATABASE, application, 5)
    assert sorted(found.values()) == [1] * 5
    rows: List[Dict[str, Any]] = clickhouse.rows(
        "SELECT toString(event_id) AS id, session_id, category, name, data FROM {db:Identifier}.events"
        " WHERE application = {app:String} ORDER BY event_id",
        db=DATABASE,
        app=application,
    )
    seen = sorted((row["session_id"], row["category"], row["name"]) for row in rows)
    assert seen == sorted(
        [
            (session, "server", "request"),
            (session, "server", "request"),
            (other, "form interaction", "signup"),
            (other, "server", "request"),
            (renewed, "server", "request"),
        ]
    )
    requests = [json.loads(row["data"]) for row in rows if row["name"] == "request"]
    assert {"method": "POST", "path": "/signup", "status": 200, "view": "signup"} in requests
    assert signup_id in {row["id"] for row in rows}
