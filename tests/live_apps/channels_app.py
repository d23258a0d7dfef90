"""The app the many-channels live tests serve under gunicorn -k gevent.

Serve it as ``tests.live_apps.channels_app:create_app()``. Environment: ``BROKER_URL`` (default
``memory://``), ``CHANNEL_TTL`` (seconds, or ``none``), ``MAX_STREAMS_PER_CLIENT``,
``HEARTBEAT``, ``BROKER_TIMEOUT``.

- ``GET /events/<channel>``: one stream on a channel named by the URL, anonymous, as a hostile
  client would use it;
- ``GET /rooms/<room>/events``: ``sse.subscribe("ticker", f"room:{room}")``, the pattern of
  docs/tabs.rst (a stream of several channels, one of them named by the URL);
- ``GET /multi?c=a&c=b``: one stream on the channels given;
- ``POST /publish`` with ``{"channels": [...], "data": {...}}``: publishes one event to each
  channel, its data stamped with ``"t"`` (``time.time()`` at publish) and ``"channel"``;
  answers the ids, ``400`` for a channel no broker stores, or ``503`` with the failure's name
  and how long it took;
- ``GET /stats``: this worker's pid, ``channel_count()`` and ``subscriber_count()``;
- ``GET /ping``: an ordinary route.
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
from flask_ssecors.exceptions import ChannelError

ALLOWED = "http://localhost:5001"


def _optional(name: str) -> float | None:
    value = os.environ.get(name, "none")
    return None if value == "none" else float(value)


def create_app() -> Flask:
    app = Flask(__name__)
    per_client = _optional("MAX_STREAMS_PER_CLIENT")
    app.config.update(
        SSECORS_ALLOWED_ORIGINS=[ALLOWED],
        SSECORS_BROKER_URL=os.environ.get("BROKER_URL", "memory://"),
        SSECORS_HEARTBEAT=float(os.environ.get("HEARTBEAT", "15")),
        SSECORS_BROKER_TIMEOUT=float(os.environ.get("BROKER_TIMEOUT", "2.0")),
        SSECORS_CHANNEL_TTL=_optional("CHANNEL_TTL"),
        SSECORS_MAX_STREAMS_PER_CLIENT=None if per_client is None else int(per_client),
    )
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
        ids: list[str] = []
        for channel in body["channels"]:
            began = time.monotonic()
            data = {**body.get("data", {}), "channel": channel, "t": time.time()}
            try:
                ids.append(sse.publish(channel, Event(data)))
            except BrokerUnavailable as error:
                elapsed = time.monotonic() - began
                return jsonify(ids=ids, error=type(error).__name__, elapsed=elapsed), 503
            except ChannelError as error:
                return jsonify(ids=ids, error=type(error).__name__, reason=error.reason), 400
        return jsonify(ids=ids)

    @app.get("/stats")
    def stats() -> t.Any:
        broker = sse.broker
        return jsonify(
            pid=os.getpid(),
            channels=broker.channel_count(),
            subscribers=broker.subscriber_count(),
            counters=sse.stats(),
        )

    @app.get("/ping")
    def ping() -> t.Any:
        return jsonify(pong=True)

    return app
