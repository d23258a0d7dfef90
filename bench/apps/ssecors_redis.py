"""flask-ssecors with the Redis broker (``BENCH_REDIS_URL``), served by two gevent workers.

The same app as :mod:`bench.apps.ssecors` otherwise. The publisher runs in whichever worker got
``POST /start``; every worker's subscribers get the events through Redis. ``GET /stats`` counts
only the subscribers of the worker that answers it (``subscribers_scope: worker``).
"""

from __future__ import annotations

import os

from flask import Flask
from flask import request

from flask_ssecors import Event
from flask_ssecors import SSECors

from ._publisher import freeze
from ._publisher import Publisher

ORIGINS = ["https://app.example.com", "https://admin.example.com", "https://*.example.org"]
CHANNEL = "bench"

app = Flask(__name__)
app.config.update(
    SSECORS_ALLOWED_ORIGINS=ORIGINS,
    SSECORS_ALLOW_CREDENTIALS=True,
    SSECORS_HEARTBEAT=float(os.environ.get("BENCH_HEARTBEAT", "5.0")),
    SSECORS_BROKER_URL=os.environ["BENCH_REDIS_URL"],
)
sse = SSECors(app)


def _publish(seq: int, timestamp: float) -> None:
    with app.app_context():
        sse.publish(CHANNEL, Event({"seq": seq, "t": timestamp}, event="tick"))


publisher = Publisher(_publish)


@app.get("/events")
@sse.stream()
def events() -> object:
    return sse.subscribe(CHANNEL)


@app.post("/start")
def start() -> object:
    publisher.start(int(request.args["count"]), float(request.args["interval"]))
    return {"started": True}, 202


@app.post("/gc-freeze")
def gc_freeze() -> object:
    return freeze()


@app.get("/stats")
def stats() -> object:
    return {**publisher.stats(sse.subscriber_count(CHANNEL)), "subscribers_scope": "worker"}


@app.get("/health")
def health() -> str:
    return "ok"
