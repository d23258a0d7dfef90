"""The app ``python -m bench.isolation`` serves: kept apart from the ``bench`` package, so that
the same file runs against an older checkout of flask-ssecors (``--code``) for a before/after.

Environment: ``BROKER_URL``, ``BACKLOG``, ``MAX_EVENT_SIZE``, ``PER_CLIENT`` (``none`` for no
limit, or unset for the default).

- ``GET /events/<channel>``, ``GET /rooms/<room>/events`` (``ticker`` and ``room:<room>``),
  ``GET /multi?c=a&c=b``: streams;
- ``POST /publish`` ``{"channels": [...], "data": ..., "pad": N}``: one event per channel, its
  data stamped with ``t``; answers the ids (``400`` when a channel is refused);
- ``GET /ping``; ``GET /stats``: the worker's pid.
"""

from __future__ import annotations

import os
import time
import typing as t

from flask import Flask
from flask import jsonify
from flask import request

from flask_ssecors import Event
from flask_ssecors import SSECors


def create_app() -> Flask:
    app = Flask(__name__)
    env = os.environ
    app.config.update(
        SSECORS_ALLOWED_ORIGINS=["http://localhost:5001"],
        SSECORS_BROKER_URL=env.get("BROKER_URL", "memory://"),
        SSECORS_BACKLOG=int(env.get("BACKLOG", "1000")),
        SSECORS_MAX_EVENT_SIZE=int(env.get("MAX_EVENT_SIZE", "65536")),
        SSECORS_HEARTBEAT=5.0,
    )
    if env.get("PER_CLIENT") == "none":
        app.config["SSECORS_MAX_STREAMS_PER_CLIENT"] = None
    sse = SSECors(app)

    @app.get("/events/<channel>")
    @sse.stream()
    def events(channel: str) -> t.Any:
        return sse.subscribe(channel)

    @app.get("/rooms/<room>/events")
    @sse.stream()
    def room_events(room: str) -> t.Any:
        return sse.subscribe("ticker", f"room:{room}")

    @app.get("/multi")
    @sse.stream()
    def multi() -> t.Any:
        return sse.subscribe(*request.args.getlist("c"))

    @app.post("/publish")
    def publish() -> t.Any:
        body = request.get_json()
        ids = []
        for channel in body["channels"]:
            data = {**body.get("data", {}), "t": time.time(), "pad": "x" * body.get("pad", 0)}
            try:
                ids.append(sse.publish(channel, Event(data)))
            except Exception as error:
                return jsonify(ids=ids, error=type(error).__name__), 400
        return jsonify(ids=ids)

    @app.get("/ping")
    def ping() -> t.Any:
        return jsonify(pong=True)

    @app.get("/stats")
    def stats() -> t.Any:
        return jsonify(pid=os.getpid())

    return app
