"""What reached the server, recorded for the tests (``EXAMPLE_TEST_HOOKS=1`` only).

:class:`Observer` records every request as WSGI middleware sees it (its status, ``Origin``,
whether the session cookie came with it, its ``Last-Event-ID``), and every run of a view with
the user its session named. The browser tests read the records through ``GET /_test/stats`` to
check, on the server side, that the cookie arrived and that a refused request never ran its
view. When disabled it records nothing and adds no middleware.
"""

from __future__ import annotations

import collections
import itertools
import typing as t
from urllib.parse import parse_qs

from werkzeug.http import parse_cookie

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse
    from _typeshed.wsgi import WSGIApplication
    from _typeshed.wsgi import WSGIEnvironment


#: Records kept per kind; older ones are forgotten.
MAX_RECORDS = 2000


class Observer:
    """Counts view runs and records requests; does nothing unless ``enabled``."""

    def __init__(self, *, enabled: bool, cookie_name: str) -> None:
        self.enabled = enabled
        self.cookie_name = cookie_name
        self.reset()

    def reset(self) -> None:
        """Forget everything recorded so far."""
        self._seq = itertools.count(1)
        self.views: collections.Counter[str] = collections.Counter()
        self.requests: collections.deque[dict[str, t.Any]] = collections.deque(maxlen=MAX_RECORDS)
        self.calls: collections.deque[dict[str, t.Any]] = collections.deque(maxlen=MAX_RECORDS)

    def view(self, name: str, **info: t.Any) -> None:
        """Record that the view ``name`` ran, with what it saw."""
        if self.enabled:
            self.views[name] += 1
            self.calls.append({"seq": next(self._seq), "view": name, **info})

    def wrap(self, app: WSGIApplication) -> WSGIApplication:
        """WSGI middleware recording each request and the status it was answered with."""
        if not self.enabled:
            return app

        def middleware(environ: WSGIEnvironment, start_response: StartResponse) -> t.Any:
            record = self._request_record(environ)
            self.requests.append(record)

            def recording(status: str, headers: t.Any, exc_info: t.Any = None) -> t.Any:
                record["status"] = int(status.split(" ", 1)[0])
                return start_response(status, headers, exc_info)

            return app(environ, recording)

        return middleware

    def _request_record(self, environ: WSGIEnvironment) -> dict[str, t.Any]:
        cookies = parse_cookie(environ.get("HTTP_COOKIE", ""))
        return {
            "seq": next(self._seq),
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),
            "port": environ.get("SERVER_PORT"),
            "status": None,
            "origin": environ.get("HTTP_ORIGIN"),
            "cookie": self.cookie_name in cookies,
            "last_event_id": environ.get("HTTP_LAST_EVENT_ID"),
            # The tab-shared helper resumes a stream it reopens with this query parameter.
            "last_event_id_param": parse_qs(environ.get("QUERY_STRING", "")).get(
                "last_event_id", [None]
            )[0],
            "authorization": "HTTP_AUTHORIZATION" in environ,
            "request_headers": environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS"),
        }

    def snapshot(self) -> dict[str, t.Any]:
        """Everything recorded, as JSON-able data."""
        return {
            "views": dict(self.views),
            "requests": list(self.requests),
            "calls": list(self.calls),
        }
