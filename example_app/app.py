"""App factory for the example: the API (streams and chat) and the page, told apart by port."""

from __future__ import annotations

import os
import typing as t

import gevent
from flask import Flask
from flask import request

from flask_ssecors import Event
from flask_ssecors import SSECors

sse = SSECors()


def create_app(config: dict[str, t.Any] | None = None) -> Flask:
    """Build the example app.

    :param config: settings that override the defaults (tests use it).
    """
    api_port = int(os.environ.get("API_PORT", "5000"))
    page_port = int(os.environ.get("PAGE_PORT", "5001"))
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=os.environ.get("SECRET_KEY", "example-only-not-secret"),
        SSECORS_ALLOWED_ORIGINS=[f"http://localhost:{page_port}"],
        SSECORS_ALLOW_CREDENTIALS=True,
        SSECORS_BROKER_URL=os.environ.get("SSECORS_BROKER_URL", "memory://"),
        API_PORT=api_port,
        PAGE_PORT=page_port,
    )
    app.config.update(config or {})
    sse.init_app(app)

    @app.get("/ticks")
    @sse.stream()
    def ticks() -> t.Any:
        def generate() -> t.Iterator[Event]:
            n = 0
            while True:
                yield Event({"n": n}, event="tick")
                n += 1
                gevent.sleep(1)

        return generate()

    @app.get("/rooms/<room>/events")
    @sse.stream()
    def room_events(room: str) -> t.Any:
        return sse.subscribe(f"room:{room}")

    @app.post("/rooms/<room>/messages")
    @sse.cors()
    def post_message(room: str) -> t.Any:
        body = request.get_json(silent=True) or {}
        text = str(body.get("text", ""))[:500]
        event_id = sse.publish(f"room:{room}", Event({"text": text}, event="message"))
        return {"id": event_id}, 201

    return app
