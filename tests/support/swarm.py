"""Thousands of SSE streams from the test process: one asyncio loop in a thread of its own.

Each stream is a raw HTTP/1.1 connection framed by ``h11`` and parsed by the library's own
event-stream parser; what it received is kept with the time it arrived (``time.time()``, once per
read), so a test can check every event once and in order per stream, and publish-to-receive
latency when the event's data carries the publish time as ``"t"``.

The loop runs in a daemon thread; every public method blocks the calling (test) thread until
the work is done or its timeout passes. :meth:`Swarm.close` ends every connection and the loop.
"""

from __future__ import annotations

import asyncio
import collections.abc as cabc
import dataclasses
import json
import os
import resource
import threading
import time
import typing as t

import h11

from flask_ssecors._parser import EventStreamParser

ORIGIN = "http://localhost:5001"


@dataclasses.dataclass
class Received:
    """One event as a stream received it."""

    id: str | None
    type: str
    data: str
    at: float

    def json(self) -> dict[str, t.Any]:
        return t.cast("dict[str, t.Any]", json.loads(self.data))


class SwarmStream(asyncio.Protocol):
    """One stream: its response status and headers, and the events it received."""

    def __init__(
        self, path: str, request: bytes, opened: asyncio.Future[None], *, settle_on_send: bool
    ) -> None:
        self.path = path
        self._settle_on_send = settle_on_send
        self.request = request
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.events: list[Received] = []
        self.body = b""  #: the body of a response that is not a stream (a 4xx's message)
        self.ended = False
        self.error: str | None = None
        self._opened = opened
        self._h11 = h11.Connection(h11.CLIENT)
        self._parser = EventStreamParser()
        self._transport: asyncio.Transport | None = None

    @property
    def retry(self) -> int | None:
        """The last ``retry:`` the stream sent, in milliseconds."""
        return self._parser.retry

    @property
    def last_event_id(self) -> str | None:
        """The id a browser would send on its next reconnect."""
        return self._parser.last_event_id or None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = t.cast(asyncio.Transport, transport)
        self._transport.write(self.request)
        if self._settle_on_send:
            self._settle()

    def data_received(self, data: bytes) -> None:
        now = time.time()
        try:
            self._h11.receive_data(data)
            while True:
                event = self._h11.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    break
                if isinstance(event, h11.Response):
                    self.status = event.status_code
                    self.headers = {k.decode().lower(): v.decode() for k, v in event.headers}
                    self._settle()
                elif isinstance(event, h11.Data):
                    if self.status == 200:
                        for found in self._parser.feed(bytes(event.data)):
                            self.events.append(
                                Received(found.id, found.event or "message", str(found.data), now)
                            )
                    elif len(self.body) < 65536:
                        self.body += bytes(event.data)
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    self.ended = True
                    break
        except h11.RemoteProtocolError as exc:
            self.error = f"protocol error: {exc}"
            self.close()

    def eof_received(self) -> bool | None:
        self.ended = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        if exc is not None and self.error is None:
            self.error = str(exc)
        self._settle()

    def _settle(self) -> None:
        if not self._opened.done():
            self._opened.set_result(None)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def of_type(self, type_: str = "message") -> list[Received]:
        return [e for e in self.events if e.type == type_]


class Swarm:
    """Open, watch and close many streams to one server (see the module documentation).

    :param port: the server's port on ``host``.
    :param source: the local address to connect from (``127.0.0.2`` is another client on
        loopback, as the server sees it).
    """

    def __init__(self, port: int, *, host: str = "127.0.0.1", source: str | None = None) -> None:
        self.port = port
        self.host = host
        self.source = source
        self.streams: list[SwarmStream] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="swarm")
        self._thread.start()

    def _run(self, coroutine: cabc.Coroutine[t.Any, t.Any, t.Any], timeout: float) -> t.Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def open(
        self,
        paths: cabc.Sequence[str],
        *,
        last_event_ids: cabc.Sequence[str | None] | None = None,
        origin: str = ORIGIN,
        parallel: int = 1000,
        timeout: float = 120.0,
        headers_first: bool = True,
        stream_class: type[SwarmStream] = SwarmStream,
    ) -> list[SwarmStream]:
        """Open one stream per path, at most ``parallel`` connecting at once; return them once
        each has its response headers (or failed), or with ``headers_first=False`` once each
        request is sent (for servers that answer nothing before the first event).
        ``stream_class`` is a subclass of :class:`SwarmStream` to use instead (a benchmark's
        that only counts what it receives)."""
        ids: list[str | None] = [None] * len(paths)
        if last_event_ids is not None:
            ids = list(last_event_ids)
        opened: list[SwarmStream] = self._run(
            self._open(paths, ids, origin, parallel, not headers_first, stream_class), timeout
        )
        self.streams += opened
        return opened

    async def _open(
        self,
        paths: cabc.Sequence[str],
        ids: list[str | None],
        origin: str,
        parallel: int,
        settle_on_send: bool,
        stream_class: type[SwarmStream],
    ) -> list[SwarmStream]:
        gate = asyncio.Semaphore(parallel)

        async def one(path: str, last_id: str | None) -> SwarmStream:
            headers = [
                ("Host", f"{self.host}:{self.port}"),
                ("Origin", origin),
                ("Accept", "text/event-stream"),
            ]
            if last_id is not None:
                headers.append(("Last-Event-ID", last_id))
            lines = [f"GET {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers), "", ""]
            opened: asyncio.Future[None] = self._loop.create_future()
            request = "\r\n".join(lines).encode()
            stream = stream_class(path, request, opened, settle_on_send=settle_on_send)
            async with gate:
                try:
                    await self._loop.create_connection(
                        lambda: stream,
                        self.host,
                        self.port,
                        local_addr=(self.source, 0) if self.source else None,
                    )
                    await opened
                except OSError as exc:
                    stream.error = f"connect: {exc}"
                    stream.ended = True
            return stream

        return list(await asyncio.gather(*(one(p, i) for p, i in zip(paths, ids, strict=True))))

    def wait_until(
        self,
        done: cabc.Callable[[], bool],
        timeout: float,
        what: str = "the condition",
        streams: cabc.Sequence[SwarmStream] = (),
    ) -> float:
        """Poll ``done`` (in the loop's thread, so streams do not change under it) until true;
        return the seconds it took. Raises ``AssertionError`` naming ``what`` on timeout, with
        a :func:`summary` of ``streams``."""
        began = time.monotonic()

        async def check() -> bool:
            return done()

        while not self._run(check(), 30):
            if time.monotonic() - began > timeout:
                raise AssertionError(
                    f"{what} did not happen within {timeout} s; streams: {summary(streams)}"
                )
            time.sleep(0.05)
        return time.monotonic() - began

    def drop(self, streams: cabc.Iterable[SwarmStream]) -> None:
        """Cut these connections, as a client going away or a network change would."""
        streams = list(streams)

        async def cut() -> None:
            for stream in streams:
                stream.close()

        self._run(cut(), 30)
        self.wait_until(lambda: all(s.ended for s in streams), 30, "the connections closing")

    def close(self) -> None:
        """Close every stream and stop the loop."""
        try:
            self._run(self._close_all(), 30)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            if not self._thread.is_alive():
                self._loop.close()

    async def _close_all(self) -> None:
        for stream in self.streams:
            stream.close()
        await asyncio.sleep(0)

    def __enter__(self) -> Swarm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def summary(streams: cabc.Sequence[SwarmStream]) -> list[tuple[str, int]]:
    """How many streams are in each state (status, ended, error, retry, events), most first."""
    import collections

    counts = collections.Counter(
        f"status={s.status} ended={s.ended} error={s.error} retry={s.retry} events={len(s.events)}"
        for s in streams
    )
    return counts.most_common(8)


def sockets_left() -> int:
    """How many more sockets this process may open (its open-file limit less those open)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return int(soft) - len(os.listdir("/proc/self/fd"))
