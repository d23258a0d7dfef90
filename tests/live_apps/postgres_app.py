"""The app the PostgreSQL live tests serve under gunicorn -k gevent (settings from the
environment).

Serve it as ``tests.live_apps.postgres_app:create_app()``. Environment: ``BROKER_URL`` (a
``postgresql://`` URL, required), ``BROKER_SCHEMA``, ``HEARTBEAT``, ``BROKER_TIMEOUT``.

- ``GET /events/<channel>``: a stream; every response says which worker process serves it in
  ``X-Worker-Pid``, so a test knows where each of its streams landed;
- ``POST /publish/<channel>?n=N&count=C``: publishes ``C`` events whose data is
  ``{"n": N + i, "via": "http"}``; answers the ids and the worker's pid, or ``503`` with the
  exception's name and how long the failed publish took;
- ``POST /hold?seconds=S``: sends this worker's pid and a line break, then blocks the worker
  process, its gevent hub included, for ``S`` seconds: connections made meanwhile go to
  another worker;
- ``GET /stats``: the worker's pid, its subscribers and whether its listener is connected.
"""

from __future__ import annotations

import collections.abc as cabc
import os
import time
import typing as t

import gevent.monkey
from flask import Flask
from flask import jsonify
from flask import request
from flask import Response

from flask_ssecors import Event
from flask_ssecors import SSECors
from flask_ssecors.exceptions import BrokerUnavailable

ALLOWED = "http://localhost:5001"


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(
        SSECORS_ALLOWED_ORIGINS=[ALLOWED],
        SSECORS_BROKER_URL=os.environ["BROKER_URL"],
        SSECORS_BROKER_SCHEMA=os.environ.get("BROKER_SCHEMA", "ssecors"),
        SSECORS_HEARTBEAT=float(os.environ.get("HEARTBEAT", "15")),
        SSECORS_BROKER_TIMEOUT=float(os.environ.get("BROKER_TIMEOUT", "2.0")),
        SSECORS_MAX_STREAMS_PER_CLIENT=None,
    )
    sse = SSECors(app)

    @app.after_request
    def worker_pid(response: Response) -> Response:
        response.headers["X-Worker-Pid"] = str(os.getpid())
        return response

    @app.get("/events/<channel>")
    @sse.stream()
    def events(channel: str) -> t.Any:
        return sse.subscribe(channel)

    @app.post("/publish/<channel>")
    def publish(channel: str) -> t.Any:
        start = int(request.args.get("n", "0"))
        count = int(request.args.get("count", "1"))
        ids: list[str] = []
        for n in range(start, start + count):
            began = time.monotonic()
            try:
                ids.append(sse.publish(channel, Event({"n": n, "via": "http"})))
            except BrokerUnavailable as error:
                elapsed = time.monotonic() - began
                body = {"error": type(error).__name__, "detail": str(error), "elapsed": elapsed}
                return jsonify(ids=ids, pid=os.getpid(), **body), 503
        return jsonify(ids=ids, pid=os.getpid())

    @app.post("/hold")
    def hold() -> t.Any:
        seconds = float(request.args["seconds"])

        def body() -> cabc.Iterator[bytes]:
            yield f"{os.getpid()}\n".encode()
            gevent.monkey.get_original("time", "sleep")(seconds)
            yield b"released\n"

        return Response(body(), mimetype="text/plain")

    @app.get("/stats")
    def stats() -> t.Any:
        broker = sse.broker
        return jsonify(
            pid=os.getpid(),
            subscribers=broker.subscriber_count(),
            connected=getattr(broker, "connected", None),
        )

    return app
