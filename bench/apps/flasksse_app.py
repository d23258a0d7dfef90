"""The flask-sse peer: flask-sse's Redis pub/sub with flask-cors, under gunicorn -k gevent.

What users glue together today (see ``DESIGN.md``): flask-cors for the CORS policy (the one the
other apps use: three exact origins, ``https://*.example.org`` as an anchored regex,
credentials) and flask-sse for the stream. The Redis URL comes from ``BENCH_REDIS_URL``.

flask-sse is used as documented (``sse.publish(...)``, ``sse.messages(channel)``, one Redis
connection per stream, a new client per publish), with one change shared with the bare floor:
the stream opens with the comment ``: ok``. flask-sse's own view writes nothing before the first
event, so gunicorn would not even send the headers and the load generator could not tell an
open stream from a stuck one. flask-sse subscribes to Redis lazily, after that first write, so
``GET /stats`` reports ``PUBSUB NUMSUB`` (every worker's subscriptions) and the bench waits for
it before publishing.
"""

from __future__ import annotations

import os
import re
import typing as t

from flask import Flask
from flask import stream_with_context
from flask_cors import CORS
from flask_sse import sse  # type: ignore[import-untyped]

from ._publisher import add_control_routes
from ._publisher import Publisher

CHANNEL = "bench"
EXACT_ORIGINS = ["https://app.example.com", "https://admin.example.com"]
WILDCARD = re.compile(r"https://(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+example\.org\Z")

app = Flask(__name__)
app.config["REDIS_URL"] = os.environ["BENCH_REDIS_URL"]
CORS(
    app,
    origins=[*EXACT_ORIGINS, WILDCARD],
    supports_credentials=True,
    allow_headers=["Last-Event-ID", "Cache-Control", "Content-Type"],
    methods=["GET", "HEAD", "POST"],
    max_age=600,
)


def _publish(seq: int, timestamp: float) -> None:
    with app.app_context():
        sse.publish({"seq": seq, "t": timestamp}, type="tick", id=seq, channel=CHANNEL)


publisher = Publisher(_publish)


@app.get("/events")
def events() -> t.Any:
    @stream_with_context
    def generate() -> t.Iterator[str]:
        yield ": ok\n\n"
        for message in sse.messages(channel=CHANNEL):
            yield str(message)

    return app.response_class(generate(), mimetype="text/event-stream")


def _stats() -> object:
    numsub = sse.redis.pubsub_numsub(CHANNEL)
    return {
        **publisher.stats(int(numsub[0][1]) if numsub else 0),
        "subscribers_scope": "all",
    }


add_control_routes(app, publisher, _stats)
