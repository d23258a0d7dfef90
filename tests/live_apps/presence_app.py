"""The app the presence live tests serve under gunicorn -k gevent (settings from the environment).

Serve it as ``tests.live_apps.presence_app:create_app()``. Environment: ``BROKER_URL``
(``memory://`` or a Redis URL), ``PRESENCE_TTL``, ``HEARTBEAT``.

- ``GET /events/<channel>?member=m``: a stream that declares ``m`` (join and leave events on);
- ``GET /watch/<channel>``: a stream that declares nobody;
- ``GET /presence/<channel>``: :meth:`~flask_ssecors.SSECors.presence` as JSON, with the pid of
  the worker that answered;
- ``GET /local``: this worker's pid and presence statistics.
"""

from __future__ import annotations

import os
import typing as t

from flask import Flask
from flask import request

from flask_ssecors import SSECors

ALLOWED = "http://localhost:5001"


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(
        SSECORS_ALLOWED_ORIGINS=[ALLOWED],
        SSECORS_BROKER_URL=os.environ["BROKER_URL"],
        SSECORS_HEARTBEAT=float(os.environ.get("HEARTBEAT", "0.5")),
        SSECORS_PRESENCE_TTL=float(os.environ.get("PRESENCE_TTL", "30")),
        SSECORS_PRESENCE_EVENTS=True,
        SSECORS_MAX_STREAMS_PER_CLIENT=None,
    )
    sse = SSECors(app)

    @app.get("/events/<channel>")
    @sse.stream()
    def events(channel: str) -> t.Any:
        return sse.subscribe(channel, member=request.args["member"])

    @app.get("/watch/<channel>")
    @sse.stream()
    def watch(channel: str) -> t.Any:
        return sse.subscribe(channel)

    @app.get("/presence/<channel>")
    def presence(channel: str) -> t.Any:
        return {**sse.presence(channel).as_dict(), "pid": os.getpid()}

    @app.get("/local")
    def local() -> t.Any:
        return {"pid": os.getpid(), "presence": sse.stats()["presence"]}

    return app
