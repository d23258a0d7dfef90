"""flask-ssecors with the memory broker: ``return sse.subscribe("bench")``, heartbeats on.

The heartbeat interval comes from ``BENCH_HEARTBEAT`` (seconds; the bench uses 5.0 unless told
otherwise); every other setting is the default. :mod:`bench.apps.ssecors_redis` builds the same
app on the Redis broker with :func:`create_app`.
"""

from __future__ import annotations

import os

from flask import Flask

from flask_ssecors import Event
from flask_ssecors import SSECors

from ._publisher import add_control_routes
from ._publisher import Publisher

ORIGINS = ["https://app.example.com", "https://admin.example.com", "https://*.example.org"]
CHANNEL = "bench"


def create_app(broker_url: str = "memory://", stats_scope: str | None = None) -> Flask:
    """The bench app on the broker ``broker_url``.

    :param stats_scope: added to ``GET /stats`` as ``subscribers_scope`` when given.
    """
    app = Flask(__name__)
    app.config.update(
        SSECORS_ALLOWED_ORIGINS=ORIGINS,
        SSECORS_ALLOW_CREDENTIALS=True,
        SSECORS_HEARTBEAT=float(os.environ.get("BENCH_HEARTBEAT", "5.0")),
        SSECORS_BROKER_URL=broker_url,
        # Every client of the load comes from loopback, one client to the per-client limit.
        SSECORS_MAX_STREAMS_PER_CLIENT=None,
    )
    sse = SSECors(app)

    def publish(seq: int, timestamp: float) -> None:
        with app.app_context():
            sse.publish(CHANNEL, Event({"seq": seq, "t": timestamp}, event="tick"))

    publisher = Publisher(publish)

    @app.get("/events")
    @sse.stream()
    def events() -> object:
        return sse.subscribe(CHANNEL)

    def stats() -> object:
        counts = publisher.stats(sse.subscriber_count(CHANNEL))
        return {**counts, "subscribers_scope": stats_scope} if stats_scope else counts

    add_control_routes(app, publisher, stats)
    return app


app = create_app()
