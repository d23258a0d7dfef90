"""The app the live stream tests serve under gunicorn -k gevent (settings from the environment)."""

from __future__ import annotations

import collections
import json
import os
import time
import typing as t

import gevent
from flask import Flask
from flask import jsonify
from flask import request

from flask_ssecors import Event
from flask_ssecors import SSECors

ALLOWED = "http://localhost:5001"


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


class StartResponseRecorder:
    """WSGI middleware that remembers the headers the app handed to ``start_response``.

    It keeps the last :attr:`KEEP` calls per path (the tests poll some paths many times).
    """

    KEEP = 50

    def __init__(self, app: t.Any) -> None:
        self.app = app
        self.seen: dict[str, collections.deque[list[str]]] = {}

    def __call__(self, environ: dict[str, t.Any], start_response: t.Any) -> t.Any:
        path = environ.get("PATH_INFO", "")

        def recording(status: str, headers: list[tuple[str, str]], exc_info: t.Any = None) -> t.Any:
            calls = self.seen.get(path)
            if calls is None:
                calls = self.seen[path] = collections.deque(maxlen=self.KEEP)
            calls.append([name for name, _ in headers])
            return start_response(status, headers, exc_info)

        if path == "/_start_response":
            body = json.dumps({k: list(v) for k, v in self.seen.items()}).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        return self.app(environ, recording)


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(
        SSECORS_ALLOWED_ORIGINS=[ALLOWED],
        SSECORS_ALLOW_CREDENTIALS=True,
        SSECORS_HEARTBEAT=_env_float("HEARTBEAT", 15.0),
        SSECORS_QUEUE_SIZE=int(os.environ.get("QUEUE_SIZE", "1000")),
        SSECORS_SEND_TIMEOUT=_env_float("SEND_TIMEOUT", 30.0),
        SSECORS_BACKLOG=int(os.environ.get("BACKLOG", "1000")),
        # Every client of the load comes from loopback, one client to the per-client limit.
        SSECORS_MAX_STREAMS_PER_CLIENT=None,
    )
    if os.environ.get("RETRY"):
        app.config["SSECORS_RETRY"] = int(os.environ["RETRY"])
    sse = SSECors(app)
    view_calls = {"count": 0}
    #: Generator views whose body started and whose ``finally`` has not run yet.
    generators = {"active": 0}

    @app.get("/events/<channel>")
    @sse.stream()
    def events(channel: str) -> t.Any:
        view_calls["count"] += 1
        return sse.subscribe(channel)

    @app.get("/ticks")
    @sse.stream()
    def ticks() -> t.Any:
        count = int(request.args.get("count", "3"))
        interval = float(request.args.get("interval", "0.05"))

        def generate() -> t.Iterator[Event]:
            generators["active"] += 1
            try:
                for n in range(count):
                    yield Event({"n": n}, event="tick", id=str(n))
                    gevent.sleep(interval)
            finally:
                generators["active"] -= 1

        return generate()

    @app.get("/silent")
    @sse.stream()
    def silent() -> t.Any:
        def generate() -> t.Iterator[Event]:
            generators["active"] += 1
            try:
                gevent.sleep(3600)
                yield Event("never")
            finally:
                generators["active"] -= 1

        return generate()

    @app.post("/publish/<channel>")
    def publish(channel: str) -> t.Any:
        count = int(request.args.get("count", "1"))
        size = int(request.args.get("size", "0"))
        pad = "x" * size
        # "t" is the wall-clock time of publication, for delivery latency on the same host.
        ids = [
            sse.publish(channel, Event({"n": n, "t": time.time(), "pad": pad}, event="message"))
            for n in range(count)
        ]
        return jsonify(ids=ids)

    @app.get("/count")
    def count() -> t.Any:
        channel = request.args.get("channel")
        return jsonify(
            count=sse.subscriber_count(channel),
            view_calls=view_calls["count"],
            generators=generators["active"],
        )

    app.wsgi_app = StartResponseRecorder(app.wsgi_app)  # type: ignore[method-assign]
    return app


app = create_app()
