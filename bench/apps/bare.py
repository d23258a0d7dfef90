"""The floor: a bare Flask generator under gevent, fanned out through a set of gevent queues.

No CORS, no heartbeats, no bounds, no replay. The generator yields the same ``: ok`` opening
comment flask-ssecors sends (without a first chunk the client would not even see the headers
until the first event). Each event is encoded once and the same bytes object is put on every
subscriber's :class:`gevent.queue.Queue`.

A client that leaves is noticed only at the next write, so without heartbeats an idle dead
stream is held forever: that is one of the things flask-ssecors pays for.
"""

from __future__ import annotations

import json
import typing as t

import gevent.queue
from flask import Flask
from flask import Response

from ._publisher import add_control_routes
from ._publisher import Publisher

app = Flask(__name__)
subscribers: set[gevent.queue.Queue[bytes]] = set()


def _publish(seq: int, timestamp: float) -> None:
    data = json.dumps({"seq": seq, "t": timestamp}, separators=(",", ":"))
    chunk = f"id: {seq}\nevent: tick\ndata: {data}\n\n".encode()
    for queue in tuple(subscribers):
        queue.put(chunk)


publisher = Publisher(_publish)


@app.get("/events")
def events() -> Response:
    queue: gevent.queue.Queue[bytes] = gevent.queue.Queue()
    subscribers.add(queue)

    def generate() -> t.Iterator[bytes]:
        try:
            yield b": ok\n\n"
            while True:
                yield queue.get()
        finally:
            subscribers.discard(queue)

    return Response(
        generate(),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


add_control_routes(app, publisher, lambda: publisher.stats(len(subscribers)))
