"""The race harness: a stream whose timing, framing and CORS answers are set per request, to see
what a browser does with each (``flask ssecors race-server``).

Point ``ssecors-check URL --origin ORIGIN --browser`` at ``/race?...`` with these query
parameters:

``count`` (default 5)
    events per connection; then the stream ends, and the browser reconnects with
    ``Last-Event-ID``, which the stream resumes after (ids are ``1``, ``2``...).
``delay`` (seconds, default 0.2)
    between events.
``split`` (default 1)
    writes per event: the event's bytes cut in that many pieces, flushed one by one, to show
    that a parser must join lines cut across chunks.
``merge`` (``1``)
    every event of the connection in a single write: the browser must dispatch them all.
``cors`` (``exact``, ``star`` or ``missing``; default ``exact``)
    ``Access-Control-Allow-Origin`` echoing the page's origin, ``*``, or none.
``credentials`` (``1``)
    adds ``Access-Control-Allow-Credentials: true`` (with ``cors=star``, the combination
    browsers refuse).
``preflight`` (``refuse``)
    answers ``OPTIONS`` with ``403``: a page that reads the stream with ``fetch()`` and a
    ``Last-Event-ID`` header loses every connect to the refused preflight.
``reset`` (an event number)
    sends the ``ssecors-reset`` event after that event, then goes on.
``retry`` (milliseconds)
    the ``retry:`` sent first; none by default (browsers wait about three seconds).

It is a plain WSGI app (no extension: it must be able to be wrong), served by gevent.
"""

from __future__ import annotations

import json
import typing as t
import urllib.parse

import gevent

if t.TYPE_CHECKING:
    import collections.abc as cabc

    from _typeshed.wsgi import StartResponse
    from _typeshed.wsgi import WSGIEnvironment

#: Upper bounds on what a request may ask for, so the harness cannot be turned against itself.
MAX_COUNT: t.Final = 1000
MAX_DELAY: t.Final = 10.0
MAX_SPLIT: t.Final = 64


def _number(query: dict[str, str], name: str, default: float, high: float) -> float:
    try:
        value = float(query.get(name, default))
    except ValueError:
        return default
    return min(max(value, 0.0), high)


def _events(first: int, count: int, reset_at: int | None) -> cabc.Iterator[bytes]:
    for number in range(first, first + count):
        yield f"id: {number}\nevent: race\ndata: {json.dumps({'n': number})}\n\n".encode()
        if reset_at == number:
            reason = json.dumps({"reason": "race-harness"})
            yield f"id: {number}\nevent: ssecors-reset\ndata: {reason}\n\n".encode()


def race_app(environ: WSGIEnvironment, start_response: StartResponse) -> cabc.Iterable[bytes]:
    """The WSGI app: ``/race`` (see the module documentation); anything else is ``404``."""
    if environ.get("PATH_INFO") != "/race":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"the race harness answers at /race\n"]
    query = dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", "")))
    origin = environ.get("HTTP_ORIGIN")
    cors: list[tuple[str, str]] = [("Vary", "Origin")]
    mode = query.get("cors", "exact")
    if mode == "exact" and origin:
        cors.append(("Access-Control-Allow-Origin", origin))
    elif mode == "star":
        cors.append(("Access-Control-Allow-Origin", "*"))
    if query.get("credentials") == "1" and mode != "missing":
        cors.append(("Access-Control-Allow-Credentials", "true"))
    if environ.get("REQUEST_METHOD") == "OPTIONS":
        if query.get("preflight") == "refuse":
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [b"preflight refused by the race harness\n"]
        asked = environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS", "")
        start_response(
            "204 No Content",
            [
                *cors,
                ("Access-Control-Allow-Methods", "GET"),
                *([("Access-Control-Allow-Headers", asked)] if asked else []),
            ],
        )
        return []
    count = int(_number(query, "count", 5, MAX_COUNT))
    delay = _number(query, "delay", 0.2, MAX_DELAY)
    split = max(1, int(_number(query, "split", 1, MAX_SPLIT)))
    last = environ.get("HTTP_LAST_EVENT_ID", "")
    first = int(last) + 1 if last.isdecimal() and len(last) < 10 else 1
    reset_at = int(query["reset"]) if query.get("reset", "").isdecimal() else None
    retry = query.get("retry", "")
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/event-stream; charset=utf-8"),
            ("Cache-Control", "no-cache, no-store, no-transform"),
            ("X-Accel-Buffering", "no"),
            *cors,
        ],
    )

    def body() -> cabc.Iterator[bytes]:
        yield f"retry: {int(retry)}\n\n".encode() if retry.isdecimal() else b": race\n\n"
        events = list(_events(first, count, reset_at))
        if query.get("merge") == "1":
            gevent.sleep(delay)
            yield b"".join(events)
            return
        for event in events:
            gevent.sleep(delay)
            size = -(-len(event) // split)
            for start in range(0, len(event), size):
                yield event[start : start + size]

    return body()


def serve(host: str, port: int) -> None:
    """Serve :func:`race_app` with gevent's WSGI server until interrupted."""
    from gevent.pywsgi import WSGIServer

    WSGIServer((host, port), race_app, log=None).serve_forever()
