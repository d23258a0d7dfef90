"""Stream capacity and lifetime: how many streams a worker holds, how long, and how they end.

Capacity
    ``SSECORS_MAX_STREAMS`` bounds the open streams of one app in one worker process. When it
    is not set and the app runs in a gunicorn gevent worker, it is 90 % of the worker's
    ``worker_connections``, so that ordinary requests still find a connection; the figure is
    logged. ``SSECORS_MAX_STREAMS_PER_CLIENT`` (64 by default) bounds the open streams of one
    client: the subject of its stream token when it has one, else its address as Werkzeug sees
    it (so ``ProxyFix`` applies), grouped by :func:`~flask_ssecors._clients.client_key` (an
    IPv6 client by its ``SSECORS_CLIENT_IPV6_PREFIX`` network). Over either limit, a request
    that comes from ``EventSource`` (it sends ``Accept: text/event-stream``) gets a ``200``
    stream that carries only a ``retry:`` hint (``SSECORS_BUSY_RETRY`` milliseconds, with
    jitter) and ends: the browser comes back later, maybe to a less busy worker. A ``503``
    would make ``EventSource`` give up for good. Other clients get ``503`` with
    ``Retry-After``. The view does not run.

Age
    ``SSECORS_MAX_STREAM_AGE`` ends each stream after that many seconds, less up to 10 %
    jitter so that streams opened together do not all end together, with a ``retry:`` hint.
    The client reconnects with its ``Last-Event-ID`` and resumes where it was; rotation spreads
    long-lived clients across workers and bounds how long one stream holds state.

Shutdown
    When the worker stops, every open stream ends with a ``retry:`` hint (500 to 3000 ms, with
    jitter, so that clients do not all come back in the same instant), the client reconnects to
    another worker and resumes from its ``Last-Event-ID``. Stream requests that still reach the
    stopping worker are turned away as over capacity.

    Under gunicorn's gevent workers this is automatic, and switchable with
    ``SSECORS_DRAIN_ON_SHUTDOWN`` (default ``True``): when the app is set up (``init_app``),
    flask-ssecors finds the gunicorn gevent worker that installed the process's ``SIGTERM``
    handler and chains its own handler before gunicorn's (``SIGTERM``: graceful stop, reload,
    scale down; ``SIGINT``/``SIGQUIT``: quick stop), so that streams end at once when the
    worker is told to stop, well within ``--graceful-timeout``. It says so in the log (level
    INFO), once per process. An app loaded before the worker exists (``--preload``) gets it
    from the gunicorn hook ``post_worker_init = end_streams_on_stop``
    (:mod:`flask_ssecors.gunicorn`). Set the key to ``False`` to leave the signal handlers
    alone; then, or under another server, call :func:`~flask_ssecors.end_all_streams` from the
    server's shutdown hook.

.. versionadded:: 0.1
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time
import typing as t
import weakref

import gevent
import gevent.monkey

from ._log import get_logger
from ._stats import send_safely
from ._stream import encode_retry
from ._stream import EventStream
from .brokers._base import EndReason
from .events import Event
from .stats import stream_closed
from .stats import stream_opened
from .tokens import Refusal
from .tokens import TOKEN_EXPIRED_EVENT

if t.TYPE_CHECKING:
    import collections.abc as cabc
    import types

    from flask import Flask

    from ._config import Settings
    from ._config import StreamOptions
    from ._stats import Counters
    from .brokers import Subscription
    from .tokens import Grant

logger = get_logger(__name__)

#: Largest share of ``SSECORS_MAX_STREAM_AGE`` taken off at random, per stream.
AGE_JITTER: t.Final = 0.1
#: ``retry:`` range (milliseconds) sent when a stream is rotated and no ``SSECORS_RETRY`` is set.
ROTATE_RETRY_MS: t.Final = (500, 1500)
#: ``retry:`` range (milliseconds) sent when the worker shuts down.
SHUTDOWN_RETRY_MS: t.Final = (500, 3000)
#: Relative jitter of the ``retry:`` hint sent over capacity.
BUSY_JITTER: t.Final = 0.5
#: The share of gunicorn's ``worker_connections`` streams may take when ``SSECORS_MAX_STREAMS``
#: is not set; the rest is left for ordinary requests.
STREAM_SHARE: t.Final = 0.9

#: Every tracker of this process, for :func:`end_all_streams`.
_trackers: weakref.WeakSet[StreamTracker] = weakref.WeakSet()


def _jittered_retry(low: int, high: int) -> bytes:
    return encode_retry(random.randint(low, high))


class StreamTracker:
    """The open streams of one app in one process: capacity, deadlines, shutdown.

    :param app: the app, the sender of the signals.
    :param settings: the app's settings (``max_streams``, ``busy_retry``, ``drain_on_shutdown``).
    :param counters: the app's counters.
    """

    def __init__(self, app: Flask, settings: Settings, counters: Counters) -> None:
        self.app = app
        #: Open streams allowed in this process; None for no limit.
        self.limit = settings.max_streams
        #: Whether :attr:`limit` comes from the server (``SSECORS_MAX_STREAMS`` not set), and
        #: the process it was found in.
        self._derived = settings.max_streams is None
        self._derived_in = -1
        #: Open streams allowed per client; None for no limit.
        self.per_client = settings.max_streams_per_client
        #: Open (or admitted) streams per client, while any is open.
        self.clients: dict[str, int] = {}
        self.busy_retry = settings.busy_retry
        self.drain_on_shutdown = settings.drain_on_shutdown
        self.counters = counters
        #: Weak: a stream nobody serves any more (dropped unclosed) is collected and closed.
        self.streams: weakref.WeakSet[EventStream] = weakref.WeakSet()
        #: Stream requests admitted whose view is still running.
        self.pending = 0
        #: Set once the process is shutting down: no stream is admitted any more.
        self.draining = False
        _trackers.add(self)

    # -- admission -------------------------------------------------------------------------

    def reserve(self, client: str | None = None) -> str | None:
        """Admit one more stream request from ``client``, or say why not:
        ``"shutting-down"``, ``"over-capacity"`` or ``"client-limit"``.

        Every admitted request must be followed by :meth:`unreserve` once its view returned.
        """
        if self._derived and self._derived_in != os.getpid():
            self._derive_limit()
        if self.draining:
            return "shutting-down"
        if self.limit is not None and len(self.streams) + self.pending >= self.limit:
            return "over-capacity"
        if self.per_client is not None and client is not None:
            held = self.clients.get(client, 0)
            if held >= self.per_client:
                return "client-limit"
            self.clients[client] = held + 1
        self.pending += 1
        return None

    def unreserve(self, client: str | None = None, *, opened: bool) -> None:
        """The view of an admitted request returned: with a stream (``opened``), whose close
        gives the client's place back, or without one."""
        self.pending -= 1
        if not opened:
            self._leave(client)

    def _leave(self, client: str | None) -> None:
        if self.per_client is None or client is None:
            return
        held = self.clients.get(client, 0) - 1
        if held > 0:
            self.clients[client] = held
        else:
            self.clients.pop(client, None)

    def _derive_limit(self) -> None:
        """``SSECORS_MAX_STREAMS`` is not set: take 90 % of gunicorn's ``worker_connections``
        when this process is a gunicorn gevent worker (once per process)."""
        self._derived_in = os.getpid()
        worker = _gunicorn_gevent_worker()
        connections = getattr(worker, "worker_connections", None)
        if not isinstance(connections, int) or connections < 2:
            self.limit = None
            return
        self.limit = max(1, int(connections * STREAM_SHARE))
        logger.info(
            "SSECORS_MAX_STREAMS is not set: at most %d streams in this worker (%d %% of "
            "gunicorn's worker_connections = %d), the rest is left for other requests",
            self.limit,
            round(STREAM_SHARE * 100),
            connections,
        )

    def busy_stream(self, options: StreamOptions) -> EventStream:
        """The stream that turns an ``EventSource`` away (see the module documentation): a
        ``retry:`` hint of about ``SSECORS_BUSY_RETRY`` milliseconds, with jitter, then the end.
        """
        delay = self.busy_retry
        stream = EventStream((), options)
        low, high = int(delay * (1 - BUSY_JITTER)), int(delay * (1 + BUSY_JITTER))
        stream.end(_jittered_retry(low, high), EndReason.BUSY)
        return stream

    # -- open streams ----------------------------------------------------------------------

    def open(
        self,
        source: Subscription | cabc.Iterable[object],
        options: StreamOptions,
        *,
        grant: Grant | None = None,
        clock: cabc.Callable[[], float] = time.time,
        request_id: str | None = None,
        client: str | None = None,
    ) -> EventStream:
        """Create and track the stream of an admitted request.

        :param source: the subscription or iterable the view returned.
        :param options: the view's stream options.
        :param grant: the request's token grant: the stream ends when the token expires.
        :param clock: the wall clock the token's expiry is measured with.
        :param request_id: the request's id, for the signals.
        :param client: who holds the stream (:meth:`reserve`); its place is given back when
            the stream closes.
        """
        started = time.monotonic()
        stream_ref: weakref.ref[EventStream] | None = None

        def release() -> None:
            self._leave(client)
            closed = stream_ref() if stream_ref is not None else None
            if closed is not None:
                self._release(closed, started, request_id)

        stream = EventStream(source, options, on_close=release)
        stream_ref = weakref.ref(stream)
        self.streams.add(stream)
        self.counters.streams_opened += 1
        self._set_deadline(stream, options, grant, clock, started)
        if self.draining:
            stream.end(_jittered_retry(*SHUTDOWN_RETRY_MS), EndReason.SHUTDOWN)
        send_safely(stream_opened, self.app, request_id=request_id)
        return stream

    @staticmethod
    def _set_deadline(
        stream: EventStream,
        options: StreamOptions,
        grant: Grant | None,
        clock: cabc.Callable[[], float],
        now: float,
    ) -> None:
        until: float | None = None
        if options.max_stream_age is not None:
            until = now + options.max_stream_age * (1 - AGE_JITTER * random.random())
            retry = options.retry
            farewell = (
                encode_retry(retry) if retry is not None else _jittered_retry(*ROTATE_RETRY_MS)
            )
            stream.end_at(until, farewell, EndReason.MAX_AGE)
        if grant is not None:
            expires = now + (grant.expires - clock())
            if until is None or expires <= until:
                stream.end_at(expires, _TOKEN_EXPIRED, EndReason.TOKEN_EXPIRED)

    def _release(self, stream: EventStream, started: float, request_id: str | None) -> None:
        self.streams.discard(stream)
        reason = stream.end_reason or EndReason.DISCONNECTED
        self.counters.count_closed(reason, stream.sent)
        send_safely(
            stream_closed,
            self.app,
            reason=reason,
            events_sent=stream.sent,
            duration=time.monotonic() - started,
            request_id=request_id,
        )

    def end_all(self, reason: str = EndReason.SHUTDOWN) -> int:
        """End every open stream with a ``retry:`` hint and admit no more; return how many."""
        self.draining = True
        streams = list(self.streams)
        for stream in streams:
            stream.end(_jittered_retry(*SHUTDOWN_RETRY_MS), reason)
        return len(streams)

    def events_in_open_streams(self) -> int:
        """Events sent so far by the streams still open."""
        return sum(stream.sent for stream in list(self.streams))


#: The last event of a stream whose token expired: the page should fetch a new token.
_TOKEN_EXPIRED: t.Final = Event({"reason": Refusal.EXPIRED}, event=TOKEN_EXPIRED_EVENT).encode()


def end_all_streams(reason: str = EndReason.SHUTDOWN) -> int:
    """End every open stream of every app in this process, and admit no new ones.

    Each stream writes a ``retry:`` hint and ends, so that its client reconnects (to another
    worker) and resumes from its ``Last-Event-ID``. Safe to call from a signal handler's
    greenlet or a server's shutdown hook; it does not block.

    :return: how many streams were told to end.

    .. versionadded:: 0.1
    """
    total = 0
    for tracker in list(_trackers):
        total += tracker.end_all(reason)
    if total:
        logger.info("ending %d open streams: %s", total, reason)
    return total


# -- the server ---------------------------------------------------------------------------------

_watching = False
_STOP_SIGNALS: t.Final = ("SIGTERM", "SIGINT", "SIGQUIT")


def _forget_watch() -> None:
    global _watching, _warned_server
    _watching = False
    _warned_server = False


os.register_at_fork(after_in_child=_forget_watch)


def watch_server(worker: t.Any = None) -> bool:
    """Once per process: when it runs in a gunicorn gevent worker, chain a handler to the
    worker's stop signals that ends every open stream (see the module documentation).

    Called when an app is set up (``init_app``, with ``SSECORS_DRAIN_ON_SHUTDOWN``), never from
    a request; or from a gunicorn hook with the worker
    (:func:`flask_ssecors.gunicorn.end_streams_on_stop`), for apps loaded before the worker
    exists (``--preload``).

    :param worker: the gunicorn worker; found through the process's ``SIGTERM`` handler when
        None.
    :return: whether the handlers are chained now (here or earlier in this process).
    """
    global _watching
    if _watching:
        return True
    if worker is None:
        worker = _gunicorn_gevent_worker()
    if worker is None:
        return False
    for name in _STOP_SIGNALS:
        signum = getattr(signal, name)
        previous = signal.getsignal(signum)
        if not callable(previous):
            continue
        try:
            signal.signal(signum, _chain(previous))
        except ValueError:  # not the main thread: a threaded worker, not gevent's
            return False
    _watching = True
    logger.info(
        "flask-ssecors ends open streams when gunicorn worker %s stops (SSECORS_DRAIN_ON_SHUTDOWN)",
        worker.pid,
    )
    return True


def gunicorn_worker() -> t.Any:
    """The gunicorn worker this process is (any kind), found through its ``SIGTERM`` handler,
    which gunicorn installs before it loads the app; None under another server."""
    base = sys.modules.get("gunicorn.workers.base")
    if base is None:
        return None
    try:
        handler = signal.getsignal(signal.SIGTERM)
    except ValueError:  # pragma: no cover - not the main thread
        return None
    # Once flask-ssecors chained its handler (watch_server), the worker's is behind it.
    handler = getattr(handler, "chained", handler)
    worker = getattr(handler, "__self__", None)
    return worker if isinstance(worker, base.Worker) else None


def _gunicorn_gevent_worker() -> t.Any:
    """The gunicorn gevent worker this process is, if it is one."""
    ggevent = sys.modules.get("gunicorn.workers.ggevent")
    worker = gunicorn_worker()
    if ggevent is not None and isinstance(worker, ggevent.GeventWorker):
        return worker
    return None


# -- servers that are not gevent ------------------------------------------------------------------

_warned_server = False


def warn_about_the_server(server_software: str | None) -> None:
    """Once per process, at the first stream: when the server is not gevent, say that each
    stream holds a thread, and what to serve with in production."""
    global _warned_server
    if _warned_server:
        return
    _warned_server = True
    if gevent.monkey.is_module_patched("socket"):
        return
    logger.warning(
        "flask-ssecors streams are served by %s, which is not a gevent server: each open stream "
        "holds one of its threads. Events still arrive at once, which is fine for development; "
        "in production serve the app with gevent workers, e.g. `gunicorn -k gevent -w 1 "
        "--worker-connections 2000 app:app` (see the quickstart).",
        server_software or "a WSGI server",
    )


def warn_about_gunicorn_workers() -> None:
    """At ``init_app``: under a gunicorn worker that is not gevent's (sync, gthread...), each
    stream holds a worker process or thread for as long as it is open."""
    worker = gunicorn_worker()
    if worker is None or _gunicorn_gevent_worker() is not None:
        return
    logger.warning(
        "flask-ssecors runs in a gunicorn %s worker: each open stream holds a worker process or "
        "thread until the client leaves, so a few streams make the app unreachable. Serve "
        "streams with gevent workers: gunicorn -k gevent --worker-connections 2000 ...",
        type(worker).__name__,
    )


def _chain(
    previous: cabc.Callable[[int, types.FrameType | None], t.Any],
) -> cabc.Callable[[int, types.FrameType | None], None]:
    def stop_streams_then(signum: int, frame: types.FrameType | None) -> None:
        # Like gunicorn's own gevent handlers: leave the signal handler, do the work in a
        # greenlet (it only flags the streams and wakes them; it never blocks).
        gevent.spawn(end_all_streams, EndReason.SHUTDOWN)
        previous(signum, frame)

    stop_streams_then.chained = previous  # type: ignore[attr-defined]
    return stop_streams_then
