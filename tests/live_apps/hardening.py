"""The app the hardening live tests serve under gunicorn -k gevent (settings from the environment).

Environment: ``ORIGINS`` (comma-separated allowed origins), ``BROKER_URL``, ``MAX_STREAMS``,
``MAX_STREAM_AGE``, ``BUSY_RETRY``, ``HEARTBEAT``, ``REQUEST_ID_HEADER``.
"""

from __future__ import annotations

import logging
import os
import sys
import typing as t

from flask import Flask
from flask import jsonify
from flask import request
from werkzeug.middleware.proxy_fix import ProxyFix

from flask_ssecors import Event
from flask_ssecors import SSECors
from flask_ssecors.requestid import RequestIdFilter


def _configure_logging() -> None:
    """flask-ssecors' log lines on stderr (the server's log file), with the request id."""
    logger = logging.getLogger("flask_ssecors")
    if any(getattr(h, "hardening", False) for h in logger.handlers):
        return  # gunicorn loaded the app in the master too: its handler came with the fork
    handler = logging.StreamHandler(sys.stderr)
    handler.hardening = True  # type: ignore[attr-defined]
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s [%(request_id)s] %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False


def create_app() -> Flask:
    app = Flask(__name__)
    env = os.environ
    app.config.update(
        SECRET_KEY=env.get("SECRET_KEY", "live-hardening-secret"),
        SSECORS_ALLOWED_ORIGINS=env.get("ORIGINS", "http://localhost:5001").split(","),
        SSECORS_ALLOW_CREDENTIALS=True,
        SSECORS_BROKER_URL=env.get("BROKER_URL", "memory://"),
        SSECORS_HEARTBEAT=float(env.get("HEARTBEAT", "15")),
        SSECORS_BUSY_RETRY=int(env.get("BUSY_RETRY", "5000")),
        # Every client of the load comes from loopback, one client to the per-client limit.
        SSECORS_MAX_STREAMS_PER_CLIENT=None,
    )
    if env.get("MAX_STREAMS"):
        app.config["SSECORS_MAX_STREAMS"] = int(env["MAX_STREAMS"])
    if env.get("MAX_STREAM_AGE"):
        app.config["SSECORS_MAX_STREAM_AGE"] = float(env["MAX_STREAM_AGE"])
    if env.get("REQUEST_ID_HEADER"):
        app.config["SSECORS_REQUEST_ID_HEADER"] = env["REQUEST_ID_HEADER"]
    _configure_logging()
    sse = SSECors(app)
    if env.get("PROXY_FIX"):
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # type: ignore[method-assign]

    @app.route("/token", methods=["POST"])
    @sse.cors()
    def token() -> t.Any:
        channels = request.args.get("channels")
        issued = sse.issue_token(
            request.args.get("subject", "alice"),
            channels=channels.split(",") if channels else None,
            max_age=float(request.args.get("max_age", "60")),
        )
        response = jsonify(token=issued)
        if request.args.get("cookie"):
            sse.set_token_cookie(response, issued)
        return response

    @app.get("/secure/<room>")
    @sse.stream(require_token=True)
    def secure(room: str) -> t.Any:
        return sse.subscribe(f"room:{room}")

    @app.get("/events/<channel>")
    @sse.stream()
    def events(channel: str) -> t.Any:
        return sse.subscribe(channel)

    @app.post("/publish/<channel>")
    def publish(channel: str) -> t.Any:
        count = int(request.args.get("count", "1"))
        ids = [sse.publish(channel, Event({"n": n}, event="message")) for n in range(count)]
        return jsonify(ids=ids)

    @app.get("/stats")
    def stats() -> t.Any:
        return jsonify(stats=sse.stats(), subscribers=sse.subscriber_count(), pid=os.getpid())

    return app


app = create_app()
