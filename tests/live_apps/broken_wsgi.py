"""Real-world broken stream setups, as WSGI apps for gunicorn or gevent's pywsgi.

- :func:`flask_cors_app`: a Flask stream policed by flask-cors with
  ``supports_credentials=True`` and its default origins, which reflects any Origin (``null``
  included) with credentials.
- :func:`keep_alive_app`: a bare WSGI stream that sets ``Connection: keep-alive`` and
  ``Keep-Alive`` itself. gevent's pywsgi passes them to the client; gunicorn drops them,
  so the same app passes the hop-by-hop check there (the server's job, not the app's).
"""

from __future__ import annotations

import time
import typing as t

from flask import Flask
from flask import Response
from flask_cors import CORS

ALLOWED = "https://app.example.com"


def _events() -> t.Iterator[bytes]:
    yield b": ok\n\n"
    for number in range(1, 200):
        yield b"id: %d\nevent: tick\ndata: %d\n\n" % (number, number)
        time.sleep(0.2)


def flask_cors_app() -> Flask:
    app = Flask(__name__)
    CORS(app, supports_credentials=True)

    @app.get("/events")
    def events() -> Response:
        return Response(
            _events(),
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"},
        )

    return app


def keep_alive_app(environ: dict[str, t.Any], start_response: t.Any) -> t.Iterable[bytes]:
    origin = environ.get("HTTP_ORIGIN")
    if origin is not None and origin != ALLOWED:
        start_response("403 Forbidden", [("Content-Type", "text/plain"), ("Vary", "Origin")])
        return [b"refused\n"]
    headers = [
        ("Content-Type", "text/event-stream; charset=utf-8"),
        ("Cache-Control", "no-cache, no-store, no-transform"),
        ("X-Accel-Buffering", "no"),
        ("Vary", "Origin"),
        ("Connection", "keep-alive"),
        ("Keep-Alive", "timeout=5"),
    ]
    if origin is not None:
        headers += [
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Allow-Credentials", "true"),
        ]
    if environ["REQUEST_METHOD"] == "OPTIONS":
        start_response("204 No Content", [(k, v) for k, v in headers[3:] if k != "Keep-Alive"])
        return []
    start_response("200 OK", headers)
    return _events()
