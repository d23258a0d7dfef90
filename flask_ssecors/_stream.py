"""Stream responses: pinned headers, first bytes at once, heartbeats, slow clients, cleanup.

The WSGI server's request greenlet iterates :class:`EventStream`. For a subscription
(``return sse.subscribe(...)``) it waits on the subscription itself with the heartbeat interval
as timeout, so a stream costs no greenlet besides the server's own. A generator view, which may
block anywhere (``gevent.sleep``), runs in one small helper greenlet that hands items over.

Under WSGI, a failed write is the only way to learn that a client left, so a ``:`` comment is
written after ``heartbeat`` seconds of silence; the next write after the client vanished fails,
the server closes the iterable, and :meth:`EventStream.close` releases the subscription.

A client that does not accept a write within ``send_timeout`` seconds is cut off: before each
chunk is handed to the server, a timer is armed in the server's greenlet; if the write is still
blocked when it fires, the write fails with :class:`SlowClientError` (a
:class:`ConnectionResetError`, which servers treat as a client disconnect).
"""

from __future__ import annotations

import collections.abc as cabc
import contextlib
import errno
import time
import typing as t
import weakref

import gevent
import gevent.queue
from flask import Response

from ._headers import PinnedHeaders
from ._log import get_logger
from .brokers._base import EndReason
from .brokers._base import Subscription
from .brokers._base import SubscriptionClosed
from .events import encode_comment
from .events import Event
from .exceptions import HeaderConflictError
from .exceptions import UsageError

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse
    from _typeshed.wsgi import WSGIEnvironment

    from ._config import StreamOptions

logger = get_logger(__name__)

CONTENT_TYPE: t.Final = "text/event-stream; charset=utf-8"
CACHE_CONTROL: t.Final = "private, no-cache, no-store, no-transform, max-age=0"
HEARTBEAT: t.Final = encode_comment("")
OPENING: t.Final = encode_comment("ok")

_END: t.Final = object()
#: Put in a generator view's queue by :meth:`EventStream.end` to wake the stream up.
_WAKE: t.Final = object()


class SlowClientError(ConnectionResetError):
    """A client did not accept a write within ``SSECORS_SEND_TIMEOUT``."""

    def __init__(self) -> None:
        super().__init__(errno.ECONNRESET, "client did not accept a write in time")


def to_bytes(item: object) -> bytes:
    """Encode one item a stream view produced: an :class:`Event`, a ``str`` or JSON data."""
    if isinstance(item, Event):
        return item.encode()
    if isinstance(item, bytes | bytearray | memoryview):
        raise UsageError(
            "a stream view yielded bytes; yield Event objects, str or JSON-able data, so that "
            "every event is encoded safely"
        )
    return Event(item).encode()


class EventStream:
    """The WSGI iterable of a stream response.

    :param source: a :class:`Subscription`, or an iterable of events.
    :param options: heartbeat, retry, send timeout.
    :param on_close: called once when the stream ends, for bookkeeping.

    A stream can be told to end on its own (:meth:`end_at`, :meth:`end`): it then writes a
    last chunk (a ``retry:`` hint, say) and ends cleanly, so the client reconnects. When no end
    is set, the cost per event is one attribute check.
    """

    __slots__ = (
        "__weakref__",
        "_closed",
        "_end_reason",
        "_ending",
        "_first",
        "_heartbeat",
        "_on_close",
        "_pump",
        "_queue",
        "_send_timeout",
        "_source",
        "_subscription",
        "_timer",
        "_until",
        "sent",
    )

    def __init__(
        self,
        source: Subscription | cabc.Iterable[object],
        options: StreamOptions,
        on_close: cabc.Callable[[], None] | None = None,
    ) -> None:
        self._heartbeat = options.heartbeat
        self._send_timeout = options.send_timeout
        self._first: bytes | None = (
            encode_retry(options.retry) if options.retry is not None else OPENING
        )
        self._on_close = on_close
        self._closed = False
        self._timer: gevent.Timeout | None = None
        self._pump: gevent.Greenlet | None = None
        self._queue: gevent.queue.Queue[object] | None = None
        self._subscription: Subscription | None = None
        self._source: cabc.Iterable[object] | None = None
        #: ``time.monotonic()`` at which the stream ends (``0.0``: now), or None.
        self._until: float | None = None
        #: What happens at ``_until``: the last chunk to write, and the end reason.
        self._ending: tuple[bytes | None, str] | None = None
        self._end_reason: str | None = None
        #: Events handed to the server so far (heartbeats and the opening bytes not counted).
        self.sent = 0
        if isinstance(source, Subscription):
            self._subscription = source
        else:
            self._source = source

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> bytes:
        timer = self._timer
        if timer is not None:
            timer.cancel()
        if self._closed:
            raise StopIteration
        if self._first is not None:
            chunk, self._first = self._first, None
        else:
            chunk = self._next_chunk()
        if timer is None:
            timer = self._timer = gevent.Timeout(self._send_timeout, SlowClientError())
        timer.start()
        return chunk

    def _next_chunk(self) -> bytes:
        timeout = self._heartbeat
        until = self._until
        if until is not None:
            left = until - time.monotonic()
            if left <= 0:
                return self._finish()
            if left < timeout:
                timeout = left
        subscription = self._subscription
        if subscription is not None:
            try:
                item = subscription.get(timeout)
            except SubscriptionClosed as closed:
                reason = str(closed)
                if reason != EndReason.CLOSED:
                    logger.info("stream on channel %r ended: %s", subscription.channel, reason)
                self._end_reason = reason
                self.close()
                raise StopIteration from None
            if item is None:
                return self._idle()
            self.sent += 1
            return item
        queue = self._queue
        if queue is None:
            queue = self._start_pump()
        try:
            item = queue.get(timeout=timeout)
        except gevent.queue.Empty:
            return self._idle()
        if item is _END:
            self._end_reason = EndReason.COMPLETE
            self.close()
            raise StopIteration
        if item is _WAKE:
            return self._finish()
        self.sent += 1
        return t.cast(bytes, item)

    def _idle(self) -> bytes:
        """Nothing came in time: the end is due, or it is time for a heartbeat."""
        if self._until is not None and time.monotonic() >= self._until:
            return self._finish()
        return HEARTBEAT

    def _finish(self) -> bytes:
        """The last chunk of a stream told to end; the next call ends the iteration."""
        ending, self._ending = self._ending, None
        self._until = 0.0
        if ending is not None:
            farewell, self._end_reason = ending
            if farewell is not None:
                return farewell
        self.close()
        raise StopIteration

    def end_at(self, when: float, farewell: bytes | None, reason: str) -> None:
        """End the stream at ``when`` (``time.monotonic()``), after writing ``farewell``.

        :param when: the monotonic time at which the stream ends.
        :param farewell: the last chunk (a ``retry:`` hint, a final event), or None.
        :param reason: the :attr:`end_reason` reported once it ended this way.

        .. versionadded:: 0.1
        """
        self._until = when
        self._ending = (farewell, reason)

    def end(self, farewell: bytes | None, reason: str) -> None:
        """End the stream now, from any greenlet: it writes ``farewell`` and ends.

        A stream waiting for its next event wakes up at once. The first call wins; later calls,
        and calls on a closed stream, do nothing.

        .. versionadded:: 0.1
        """
        if self._closed or self._until == 0.0:
            return
        self.end_at(0.0, farewell, reason)
        if self._subscription is not None:
            self._subscription.wake()
        elif self._queue is not None:
            with contextlib.suppress(gevent.queue.Full):
                self._queue.put_nowait(_WAKE)

    @property
    def end_reason(self) -> str | None:
        """Why the stream ended, once it did: ``"complete"`` (the generator returned),
        ``"disconnected"``, ``"send-timeout"``, a subscription's drop reason (``"overflow"``,
        ``"closed"``), or the reason given to :meth:`end_at` / :meth:`end`. None while open.
        """
        return self._end_reason if self._closed else None

    def _start_pump(self) -> gevent.queue.Queue[object]:
        queue: gevent.queue.Queue[object] = gevent.queue.Queue(maxsize=1)
        self._queue = queue
        source = self._source
        assert source is not None
        self._pump = gevent.spawn(_pump, source, queue)
        return queue

    def __del__(self) -> None:
        # A stream dropped without being closed (a test that read a few chunks and let go, a
        # server that never iterated it) must not leave its send timer armed: it would throw
        # SlowClientError into whatever that greenlet runs later. Close it like a departed client.
        if not self._closed:
            with contextlib.suppress(Exception):
                self.close()

    def close(self) -> None:
        """End the stream: cancel timers, release the subscription, stop the generator.

        The stream also lets go of the subscription, the generator and its greenlet: the
        server may hold on to a closed stream a while longer, and a killed greenlet keeps the
        traceback, and so the generator's frame and everything it referenced.
        """
        if self._closed:
            return
        self._closed = True
        if self._end_reason is None:
            # Closed by the server: the client left, or the send timer fired (its exception,
            # created once per stream, has a traceback only once it was raised).
            timer = self._timer
            fired = timer is not None and getattr(timer.exception, "__traceback__", None)
            self._end_reason = EndReason.SEND_TIMEOUT if fired else EndReason.DISCONNECTED
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        subscription, self._subscription = self._subscription, None
        pump, self._pump = self._pump, None
        source, self._source = self._source, None
        self._queue = None
        if subscription is not None:
            subscription.close()
        if pump is not None:
            pump.kill(block=False)
        elif source is not None:
            close = getattr(source, "close", None)
            if close is not None:
                close()
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close()


def _pump(source: cabc.Iterable[object], queue: gevent.queue.Queue[object]) -> None:
    """Run a generator view in its own greenlet, handing encoded items over one at a time."""
    try:
        for item in source:
            try:
                chunk = to_bytes(item)
            except (TypeError, ValueError):
                logger.exception("a stream view produced an item that cannot be sent")
                break
            queue.put(chunk)
    except gevent.GreenletExit:
        raise
    except Exception:
        logger.exception("a stream view raised; ending the stream")
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()
    queue.put(_END)


def encode_retry(milliseconds: int) -> bytes:
    """The opening ``retry:`` block (applied by browsers at once; it dispatches nothing)."""
    return f"retry: {milliseconds}\n\n".encode("ascii")


class StreamResponse(Response):
    """A ``text/event-stream`` response whose headers are pinned when the view returns.

    Never sends ``Connection``, ``Keep-Alive``, ``Transfer-Encoding``, ``Content-Length`` or
    ``Content-Encoding``; the WSGI server frames the body itself.

    A response that is never served (an ``after_request`` hook raised, so Flask answers ``500``
    instead) closes its stream when it is garbage collected, releasing the subscription the
    view took; otherwise nothing would ever close it.
    """

    def __init__(
        self,
        stream: EventStream,
        cors_headers: t.Iterable[tuple[str, str]],
        vary: t.Iterable[str],
        *,
        strict: bool,
    ) -> None:
        super().__init__(stream, status=200, direct_passthrough=True)
        headers = PinnedHeaders(strict=strict)
        headers["Content-Type"] = CONTENT_TYPE
        headers["Cache-Control"] = CACHE_CONTROL
        headers["X-Accel-Buffering"] = "no"
        headers["Vary"] = ", ".join(vary)
        headers.extend(cors_headers)
        headers.pin()
        self.headers = headers
        weakref.finalize(self, _close_unserved, stream, headers).atexit = False

    @property  # type: ignore[override]
    def headers(self) -> PinnedHeaders:
        """The pinned headers (see :mod:`flask_ssecors._headers`)."""
        return self._pinned_headers

    @headers.setter
    def headers(self, value: t.Any) -> None:
        current = getattr(self, "_pinned_headers", None)
        if current is not None and current._pinned:
            raise HeaderConflictError("headers", "a stream response's headers are pinned")
        self._pinned_headers = value if isinstance(value, PinnedHeaders) else PinnedHeaders(value)

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> t.Iterable[bytes]:
        self._pinned_headers.lock()
        return super().__call__(environ, start_response)


def _close_unserved(stream: EventStream, headers: PinnedHeaders) -> None:
    """Close the stream of a response that was never handed to the server."""
    if not headers.locked:
        stream.close()
