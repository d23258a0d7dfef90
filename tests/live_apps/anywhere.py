"""The app the publish-from-anywhere tests serve (settings from the environment).

Serve it as ``tests.live_apps.anywhere:app`` under gunicorn, or with ``flask run``. Environment:
``BROKER_URL`` (default ``memory://``), ``HEARTBEAT``.

- ``GET /events/<channel>``: a stream of the channel;
- ``POST /publish/<channel>``: publish in the request;
- ``POST /later/<channel>``: publish 0.2 s later from a greenlet, outside any app context;
- ``POST /thread/<channel>``: publish 0.2 s later from a new OS thread, outside any app
  context;
- ``GET /ping``: an ordinary route.
"""

from __future__ import annotations

import os
import time
import typing as t

import gevent
import gevent.monkey
from flask import Flask
from flask import jsonify

from flask_ssecors import Event
from flask_ssecors import SSECors

ALLOWED = "http://localhost:5001"
_Thread = gevent.monkey.get_original("threading", "Thread")


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(
        SSECORS_ALLOWED_ORIGINS=[ALLOWED],
        SSECORS_BROKER_URL=os.environ.get("BROKER_URL", "memory://"),
        SSECORS_HEARTBEAT=float(os.environ.get("HEARTBEAT", "15")),
        # Every client of the load comes from loopback, one client to the per-client limit.
        SSECORS_MAX_STREAMS_PER_CLIENT=None,
    )
    sse = SSECors(app)

    @app.get("/events/<channel>")
    @sse.stream()
    def events(channel: str) -> t.Any:
        return sse.subscribe(channel)

    @app.post("/publish/<channel>")
    def publish(channel: str) -> t.Any:
        return jsonify(id=sse.publish(channel, Event({"how": "request"})))

    @app.post("/later/<channel>")
    def later(channel: str) -> t.Any:
        def publish_later() -> None:
            sse.publish(channel, Event({"how": "greenlet", "t": time.time()}))

        gevent.spawn_later(0.2, publish_later)
        return jsonify(queued=True), 202

    @app.post("/thread/<channel>")
    def thread(channel: str) -> t.Any:
        def publish_later() -> None:
            time.sleep(0.2)
            sse.publish(channel, Event({"how": "thread", "t": time.time()}))

        _Thread(target=publish_later, daemon=True).start()
        return jsonify(queued=True), 202

    @app.get("/ping")
    def ping() -> str:
        return "pong"

    return app


app = create_app()
