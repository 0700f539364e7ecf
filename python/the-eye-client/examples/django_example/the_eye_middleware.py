"""A Django middleware that sends one server-side event per request to The Eye, in the
browser SDK's session, so that a visit's front-end and back-end events share ``session_id``.

Settings: ``THE_EYE_URL`` (``http://127.0.0.1:8000``), ``THE_EYE_INGEST_KEY`` (a key with the
``ingest`` scope, kept on the server: unlike the browser's key it need not be public), and
optionally ``THE_EYE_SESSION_TIMEOUT_MS`` (default 30 minutes, the SDK's ``sessionTimeoutMs``).

Where the session id comes from, first found wins:

1. the ``X-The-Eye-Session`` header, which a page's own ``fetch`` calls can carry
   (``headers: {"X-The-Eye-Session": tracker.sessionId()}``);
2. the ``the-eye.session`` cookie: the SDK keeps its session (``{"id": …, "last": ms}``) in
   ``sessionStorage``, which a server never sees, so the page passes a ``storage`` that keeps
   it in this cookie too (``page.html`` beside this file); this middleware reads it, applies
   the same 30-minute inactivity rule, and writes it back with ``last`` refreshed — a request
   is activity, as an SDK event is;
3. neither (the first request of a visit, before any script ran): a new UUIDv7, written to
   the cookie, where the page's SDK picks it up, so the visit's first page view joins it.

With the cookie, the tabs of one browser share a session (the SDK alone keeps one per tab).
The event is ``server`` / ``request`` with ``method``, ``path``, ``status`` and ``view`` (no
query string: it can hold personal data). A full queue or an unusable argument is logged,
never raised: analytics must not fail a request.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable, Optional
from urllib.parse import quote, unquote

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from the_eye_client import EventError, TheEye, TrackError, new_session_id

logger = logging.getLogger(__name__)

COOKIE = "the-eye.session"
HEADER = "HTTP_X_THE_EYE_SESSION"

_client: Optional[TheEye] = None
_client_lock = threading.Lock()


def client() -> TheEye:
    """The process's one client, made on first use from the settings. One per process is
    enough (``track`` is thread-safe), and it survives gunicorn's or uWSGI's fork: a worker
    gets its own queue and thread. It is shut down at the interpreter's exit."""
    global _client
    with _client_lock:
        if _client is None:
            _client = TheEye(settings.THE_EYE_URL, settings.THE_EYE_INGEST_KEY)
        return _client


def session_of(request: HttpRequest, now_ms: int) -> str:
    """The visit's session id: the header's, the cookie's while it is live, or a new one."""
    header = request.META.get(HEADER, "").strip()
    if 0 < len(header) <= 128:
        return str(header)
    timeout = int(getattr(settings, "THE_EYE_SESSION_TIMEOUT_MS", 30 * 60 * 1000))
    raw = request.COOKIES.get(COOKIE)
    if raw:
        try:
            stored: Any = json.loads(unquote(raw))
            session_id, last = stored["id"], stored["last"]
            if isinstance(session_id, str) and 0 < len(session_id) <= 128 and now_ms - float(last) <= timeout:
                return session_id
        except (ValueError, KeyError, TypeError):
            pass  # not the SDK's format: a new session, as the SDK would start
    return new_session_id()


class TheEyeMiddleware:
    """Add ``"the_eye_middleware.TheEyeMiddleware"`` to ``MIDDLEWARE``."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        now_ms = int(time.time() * 1000)
        session_id = session_of(request, now_ms)
        # Views may track their own events in the same session (sign-ups, purchases).
        request.the_eye_session_id = session_id
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        try:
            client().track(
                "server",
                "request",
                {
                    "method": request.method or "",
                    "path": request.path,
                    "status": response.status_code,
                    "view": match.view_name if match and match.view_name else "",
                },
                session_id=session_id,
            )
        except (TrackError, EventError) as error:
            logger.warning("The Eye: event not tracked: %s", error)
        # The SDK's own format, so that its `storage` reads it as its session. Not HttpOnly:
        # the page's script reads it.
        value = quote(json.dumps({"id": session_id, "last": now_ms}, separators=(",", ":")))
        response.set_cookie(COOKIE, value, samesite="Lax", httponly=False, secure=request.is_secure())
        return response
