"""Helpers for testing apps that use flask-ssecors.

- :func:`parse_events`: a WHATWG-conformant event-stream parser, for asserting on bytes.
- :class:`SSETestClient`: a Flask test client that can open a stream and read its events one at
  a time, as they are produced::

      app.test_client_class = SSETestClient
      client = app.test_client()
      with client.open_stream("/rooms/1/events", headers={"Origin": ORIGIN}) as stream:
          sse.publish("room:1", Event("hi"))
          assert stream.next_event(timeout=2).data == "hi"

Reading blocks the calling greenlet (gevent's hub runs while it waits), so publish from the test
itself or from a greenlet; no monkey-patching is needed.
"""

from __future__ import annotations

import collections
import collections.abc as cabc
import typing as t
import weakref

import gevent
import gevent.queue
from flask.testing import FlaskClient

from ._parser import EventStreamParser as EventStreamParser
from ._parser import parse_events as parse_events
from .events import Event

if t.TYPE_CHECKING:
    from werkzeug.test import TestResponse

__all__ = ["EventStreamParser", "EventStreamReader", "SSETestClient", "parse_events"]

_END: t.Final = object()


class EventStreamReader:
    """Reads an open stream response incrementally.

    A greenlet plays the WSGI server: it iterates the response and hands each chunk over at
    once, as a client with an unbounded socket buffer would accept it, and closes the response
    when the stream ends or the reader is closed. The stream's send timeout therefore never
    fires while the test pauses between reads, and the app sees the same sequence of calls as
    under a real server.

    :param response: a test response opened with ``buffered=False``.
    :param include_comments: also return comment lines (heartbeats) as events.
    """

    def __init__(self, response: TestResponse, *, include_comments: bool = False) -> None:
        self.response = response
        self._chunks: gevent.queue.Queue[object] = gevent.queue.Queue()
        self._server = gevent.spawn(_serve, response, self._chunks)
        self._parser = EventStreamParser(include_comments=include_comments)
        self._pending: collections.deque[Event] = collections.deque()
        #: Every byte read so far.
        self.raw = bytearray()
        self.ended = False
        # A reader dropped without close() must not keep its stream open for good.
        weakref.finalize(self, self._server.kill, block=False).atexit = False

    def read_chunk(self, timeout: float = 5.0) -> bytes:
        """The next chunk the app produced, as bytes; ``b""`` once the stream ended.

        :raises TimeoutError: when nothing came within ``timeout`` seconds.
        :raises Exception: what iterating the response raised, if it did.
        """
        if self.ended:
            return b""
        try:
            item = self._chunks.get(timeout=timeout)
        except gevent.queue.Empty:
            raise TimeoutError(f"no bytes within {timeout} s") from None
        if item is _END:
            self.ended = True
            return b""
        if isinstance(item, BaseException):
            self.ended = True
            raise item
        data = t.cast(bytes, item)
        self.raw += data
        self._pending.extend(self._parser.feed(data))
        return data

    def next_event(self, timeout: float = 5.0) -> Event:
        """The next dispatched event.

        :raises TimeoutError: when none came within ``timeout`` seconds.
        :raises EOFError: when the stream ended first.
        """
        with gevent.Timeout(timeout, TimeoutError(f"no event within {timeout} s")):
            while not self._pending:
                if not self.read_chunk(timeout=timeout) and self.ended:
                    raise EOFError("the stream ended")
        return self._pending.popleft()

    def events(self, count: int, timeout: float = 5.0) -> list[Event]:
        """The next ``count`` events."""
        return [self.next_event(timeout) for _ in range(count)]

    def close(self) -> None:
        """Go away, as a client does: the stand-in server stops and closes the response."""
        self._server.kill(block=True, timeout=5)
        self.response.close()

    def __enter__(self) -> EventStreamReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve(response: TestResponse, chunks: gevent.queue.Queue[object]) -> None:
    """Iterate ``response`` as a WSGI server does, handing each chunk to ``chunks``."""
    try:
        for chunk in t.cast("cabc.Iterable[bytes]", response.response):
            chunks.put(bytes(chunk))
        chunks.put(_END)
    except Exception as error:
        chunks.put(error)
    finally:
        response.close()


class SSETestClient(FlaskClient):
    """A Flask test client with :meth:`open_stream`.

    Use it with ``app.test_client_class = SSETestClient``.
    """

    def open_stream(
        self, path: str, *, include_comments: bool = False, **kwargs: t.Any
    ) -> EventStreamReader:
        """GET ``path`` without buffering, and return a reader over its events.

        :param include_comments: also return comment lines (heartbeats).
        :param kwargs: passed to :meth:`~werkzeug.test.Client.open` (``headers``…).
        """
        kwargs.setdefault("method", "GET")
        response = self.open(path, buffered=False, **kwargs)
        return EventStreamReader(response, include_comments=include_comments)
