"""The smallest Django site using ``the_eye_middleware``: one page that loads the browser SDK
with a cookie-backed ``storage`` (``page.html``), and one form post that tracks a sign-up from
the server in the visit's session.

    pip install ./python/the-eye-client django
    . data/demo-keys.env   # THE_EYE_INGEST_KEY of `cargo run -- serve`'s demo application
    THE_EYE_URL=http://127.0.0.1:8000 THE_EYE_BROWSER_KEY=$THE_EYE_INGEST_KEY \\
        python python/the-eye-client/examples/django_example/example_site.py runserver 3000

(The browser's key must allow the page's origin: ``THE_EYE_AUTH_DEMO_ORIGINS=
'["http://localhost:3000"]'`` before the service's first start, or ``the-eye apps create …
--origin``. The server's key, ``THE_EYE_INGEST_KEY``, is not sent to the browser.)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

if not settings.configured:
    settings.configure(
        DEBUG=True,
        SECRET_KEY="example-only",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=["the_eye_middleware.TheEyeMiddleware"],
        THE_EYE_URL=os.environ.get("THE_EYE_URL", "http://127.0.0.1:8000"),
        THE_EYE_INGEST_KEY=os.environ.get("THE_EYE_INGEST_KEY", ""),
    )

from the_eye_middleware import client  # noqa: E402


def page(request: HttpRequest) -> HttpResponse:
    html = (HERE / "page.html").read_text()
    html = html.replace("{{ endpoint }}", settings.THE_EYE_URL)
    html = html.replace("{{ key }}", os.environ.get("THE_EYE_BROWSER_KEY", ""))
    return HttpResponse(html)


def signup(request: HttpRequest) -> JsonResponse:
    """A server-side event of the visit, besides the middleware's per-request one."""
    event_id = client().track(
        "form interaction",
        "signup",
        {"plan": request.POST.get("plan", "free")},
        session_id=request.the_eye_session_id,
    )
    return JsonResponse({"event_id": event_id})


urlpatterns = [path("", page, name="page"), path("signup", signup, name="signup")]

if __name__ == "__main__":
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
