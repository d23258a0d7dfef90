"""The sse-starlette peer: the same endpoints as the gevent apps, served by uvicorn (one worker).

``uvicorn bench.apps.starlette_app:app --workers 1`` (uvloop and httptools, as
``uvicorn[standard]`` installs them). Written the way sse-starlette's documentation suggests:
one :class:`asyncio.Queue` per stream, an async generator yielding
:class:`~sse_starlette.ServerSentEvent` objects to :class:`~sse_starlette.EventSourceResponse`,
which encodes each one for each stream. CORS comes from Starlette's ``CORSMiddleware`` with the
policy the other apps use (three exact origins, ``https://*.example.org`` as
``allow_origin_regex``, credentials).

Made comparable with the gevent apps:

- the stream opens with the comment ``: ok`` (the load generator counts a stream as open on its
  first bytes), and uses ``\\n`` line endings (sse-starlette's default is ``\\r\\n``; the load
  generator splits blocks on a blank ``\\n\\n`` line);
- the keep-alive ping runs every ``BENCH_HEARTBEAT`` seconds, like flask-ssecors' heartbeat;
- the publisher runs in the event loop on the same absolute schedule as
  :class:`bench.apps._publisher.Publisher`, with the same ``{"seq", "t"}`` payload.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import typing as t

from sse_starlette import EventSourceResponse
from sse_starlette import ServerSentEvent
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from ._publisher import freeze
from ._publisher import gc_clock

EXACT_ORIGINS = ["https://app.example.com", "https://admin.example.com"]
#: ``https://*.example.org``: one or more labels, anchored (Starlette uses ``re.fullmatch``).
WILDCARD_REGEX = r"https://(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+example\.org"
HEARTBEAT = float(os.environ.get("BENCH_HEARTBEAT", "5.0"))

subscribers: set[asyncio.Queue[ServerSentEvent]] = set()


class AsyncPublisher:
    """:class:`bench.apps._publisher.Publisher` for an event loop."""

    def __init__(self) -> None:
        self.published = 0
        self.durations_ms: list[float] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, count: int, interval: float) -> None:
        if self.running:
            raise RuntimeError("a publishing run is already in progress")
        self.durations_ms = []
        self._task = asyncio.get_running_loop().create_task(self._run(count, interval))

    async def _run(self, count: int, interval: float) -> None:
        begin = time.monotonic()
        for seq in range(count):
            before = time.perf_counter()
            data = json.dumps({"seq": seq, "t": time.time()}, separators=(",", ":"))
            event = ServerSentEvent(data=data, event="tick", id=str(seq), sep="\n")
            for queue in tuple(subscribers):
                queue.put_nowait(event)
            self.durations_ms.append((time.perf_counter() - before) * 1000)
            self.published += 1
            delay = begin + (seq + 1) * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)


publisher = AsyncPublisher()


async def events(request: Request) -> EventSourceResponse:
    queue: asyncio.Queue[ServerSentEvent] = asyncio.Queue()
    subscribers.add(queue)

    async def generate() -> t.AsyncIterator[ServerSentEvent]:
        try:
            yield ServerSentEvent(comment="ok", sep="\n")
            while True:
                yield await queue.get()
        finally:
            subscribers.discard(queue)

    return EventSourceResponse(generate(), ping=HEARTBEAT, sep="\n")


async def start(request: Request) -> JSONResponse:
    publisher.start(int(request.query_params["count"]), float(request.query_params["interval"]))
    return JSONResponse({"started": True}, status_code=202)


async def gc_freeze(request: Request) -> JSONResponse:
    return JSONResponse(freeze())


async def stats(request: Request) -> JSONResponse:
    import gc

    return JSONResponse(
        {
            "subscribers": len(subscribers),
            "subscribers_scope": "all",
            "published": publisher.published,
            "running": publisher.running,
            "publish_ms": publisher.durations_ms,
            "gc": gc_clock.stats(),
            "gc_frozen": gc.get_freeze_count(),
        }
    )


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


app = Starlette(
    routes=[
        Route("/events", events),
        Route("/start", start, methods=["POST"]),
        Route("/gc-freeze", gc_freeze, methods=["POST"]),
        Route("/stats", stats),
        Route("/health", health),
    ],
    middleware=[
        Middleware(
            CORSMiddleware,
            allow_origins=EXACT_ORIGINS,
            allow_origin_regex=WILDCARD_REGEX,
            allow_credentials=True,
            allow_methods=["GET", "HEAD", "POST"],
            allow_headers=["Last-Event-ID", "Cache-Control", "Content-Type"],
            max_age=600,
        )
    ],
)
