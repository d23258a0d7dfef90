"""The app the Redis live tests serve under gunicorn -k gevent (settings from the environment).

Serve it as ``tests.live_apps.redis_app:create_app()``. Environment: ``BROKER_URL`` (required),
``HEARTBEAT``, ``BACKLOG``, ``BROKER_TIMEOUT``, ``QUEUE_SIZE``, ``MIN_REPLICAS``.

``POST /publish/<channel>`` publishes ``count`` events whose data is ``{"n": ..., **body}``; when
the broker is unavailable it answers ``503`` with the exception's name and how long the failed
publish took, so a test can tell "raised BrokerUnavailable in time" from any other failure.
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
from flask_ssecors.exceptions import BrokerUnavailable

ALLOWED = "http://localhost:5001"


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(
        SSECORS_ALLOWED_ORIGINS=[ALLOWED],
        SSECORS_BROKER_URL=os.environ["BROKER_URL"],
        SSECORS_HEARTBEAT=float(os.environ.get("HEARTBEAT", "15")),
        SSECORS_BACKLOG=int(os.environ.get("BACKLOG", "1000")),
        SSECORS_BROKER_TIMEOUT=float(os.environ.get("BROKER_TIMEOUT", "2.0")),
        SSECORS_QUEUE_SIZE=int(os.environ.get("QUEUE_SIZE", "1000")),
        SSECORS_BROKER_MIN_REPLICAS=int(os.environ.get("MIN_REPLICAS", "0")),
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
        extra = request.get_json(silent=True) or {}
        start = int(request.args.get("n", "0"))
        count = int(request.args.get("count", "1"))
        ids: list[str] = []
        began = time.monotonic()
        for n in range(start, start + count):
            began = time.monotonic()
            try:
                ids.append(sse.publish(channel, Event({"n": n, **extra}, event="message")))
            except BrokerUnavailable as error:
                elapsed = time.monotonic() - began
                body = {"error": type(error).__name__, "detail": str(error), "elapsed": elapsed}
                return jsonify(ids=ids, **body), 503
        return jsonify(ids=ids, pid=os.getpid())

    @app.get("/stats")
    def stats() -> t.Any:
        broker = sse.broker
        return jsonify(
            pid=os.getpid(),
            subscribers=broker.subscriber_count(),
            connected=getattr(broker, "connected", None),
        )

    return app
