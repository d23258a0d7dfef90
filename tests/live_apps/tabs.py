"""The API of the tab-sharing browser tests (the page's app is :mod:`tests.live_apps.tabs_page`).

It runs under gunicorn -k gevent in a subprocess; ``PAGE_ORIGINS``
(comma-separated) are the origins it allows, ``HEARTBEAT`` its heartbeat in seconds, and
``RESUME_DELAY`` how long a stream that resumes from an id waits before it subscribes (so that
a test can publish into the gap, and know those events can only come by replay); streams send
``retry: 300``. It records
every stream request, so a test can count the connections the browser really opened and see the
``Last-Event-ID`` each one resumed from.
"""

from __future__ import annotations

import collections
import os
import time
import typing as t

from flask import Flask
from flask import jsonify
from flask import request
from gevent import sleep

from flask_ssecors import Event
from flask_ssecors import SSECors

#: An origin no test page is served from: the ``/refused`` stream allows only this one.
ELSEWHERE = "https://elsewhere.example"
COOKIE = "tabs_session"


def create_api() -> Flask:
    env = os.environ
    app = Flask(__name__)
    app.config.update(
        SSECORS_ALLOWED_ORIGINS=env.get("PAGE_ORIGINS", "http://localhost:5001").split(","),
        SSECORS_ALLOW_CREDENTIALS=True,
        SSECORS_HEARTBEAT=float(env.get("HEARTBEAT", "1")),
        SSECORS_RETRY=300,
        # Every client of the load comes from loopback, one client to the per-client limit.
        SSECORS_MAX_STREAMS_PER_CLIENT=None,
    )
    resume_delay = float(env.get("RESUME_DELAY", "0"))
    sse = SSECors(app)  # serves the helper too (SSECORS_HELPER_URL_PREFIX)
    #: Every stream request, in order: which channel, from which id, with a cookie or not.
    streams: list[dict[str, t.Any]] = []
    #: Events published so far, per channel.
    published: collections.Counter[str] = collections.Counter()
    #: The subscriptions served, per channel, so that a test can end them.
    subscriptions: collections.defaultdict[str, list[t.Any]] = collections.defaultdict(list)

    @app.get("/events/<channel>")
    @sse.stream()
    def events(channel: str) -> t.Any:
        header = request.headers.get("Last-Event-ID")
        query = request.args.get("last_event_id")
        if header or query:
            sleep(resume_delay)
        streams.append(
            {
                "channel": channel,
                "header": header,
                "query": query,
                "cookie": COOKIE in request.cookies,
                "origin": request.headers.get("Origin"),
                # Published before this subscription: these can only come by replay.
                "published_before": published[channel],
            }
        )
        subscription = sse.subscribe(channel)
        subscriptions[channel].append(subscription)
        return subscription

    @app.get("/refused")
    @sse.stream(origins=[ELSEWHERE])
    def refused() -> t.Any:
        raise AssertionError("a refused stream never reaches its view")

    @app.post("/login")
    @sse.cors()
    def login() -> t.Any:
        response = jsonify(ok=True)
        response.set_cookie(COOKIE, "1", samesite="Lax", httponly=True)
        return response

    @app.post("/publish/<channel>")
    @sse.cors()
    def publish(channel: str) -> t.Any:
        """Publish ``count`` events numbered from ``n``, named ``type`` (``message`` if absent)."""
        first = int(request.args.get("n", "0"))
        count = int(request.args.get("count", "1"))
        name = request.args.get("type") or None
        # "t" is the wall-clock time of publication, for delivery latency on the same host.
        ids = [
            sse.publish(channel, Event({"n": n, "t": time.time()}, event=name))
            for n in range(first, first + count)
        ]
        published[channel] += count
        return jsonify(ids=ids)

    @app.post("/drop/<channel>")
    def drop(channel: str) -> t.Any:
        """End the channel's open streams, as a deploy would; browsers reconnect and resume."""
        dropped = [s for s in subscriptions.pop(channel, []) if not s.closed]
        for subscription in dropped:
            subscription.drop("dropped by the test")
        return jsonify(dropped=len(dropped))

    @app.get("/stats/<channel>")
    def stats(channel: str) -> t.Any:
        return jsonify(
            subscribers=sse.subscriber_count(channel),
            streams=[s for s in streams if s["channel"] == channel],
        )

    return app


api = create_api()
