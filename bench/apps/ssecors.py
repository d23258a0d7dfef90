"""flask-ssecors with the memory broker: ``return sse.subscribe("bench")``, heartbeats on.

The heartbeat interval comes from ``BENCH_HEARTBEAT`` (seconds; the bench uses 5.0 unless told
otherwise); every other setting is the default.
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
    return publisher.stats(sse.subscriber_count(CHANNEL))


@app.get("/health")
def health() -> str:
    return "ok"
