"""What the bench apps share: the publisher greenlet (fixed rate, absolute schedule, timestamps),
the control routes of the Flask apps, and a garbage-collector clock (time spent in each
generation's collections, via :data:`gc.callbacks`), so the bench can tell fan-out work from
collection pauses."""

from __future__ import annotations

import gc
import time
import typing as t

import gevent


class GcClock:
    """Counts collections and the CPU seconds spent in them, per generation.

    CPU time (:func:`time.thread_time`), not wall time: on a busy machine the process may be
    descheduled in the middle of a collection.
    """

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._began = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.thread_time()
        else:
            generation = info["generation"]
            self.collections[generation] += 1
            self.seconds[generation] += time.thread_time() - self._began

    def stats(self) -> dict[str, object]:
        """Totals since the process started."""
        return {"collections": list(self.collections), "seconds": list(self.seconds)}


gc_clock = GcClock()


def freeze() -> dict[str, int]:
    """Collect, then :func:`gc.freeze`: every object alive now (the open streams) leaves the
    collector's sight. An experiment, applied to both apps alike (``POST /gc-freeze``)."""
    gc.collect()
    gc.freeze()
    return {"frozen": gc.get_freeze_count()}


class Publisher:
    """Runs ``publish(seq, timestamp)`` ``count`` times, every ``interval`` seconds.

    :param publish: the app's fan-out; called with the sequence number and ``time.time()``.
    """

    def __init__(self, publish: t.Callable[[int, float], None]) -> None:
        self._publish = publish
        self.published = 0
        self.durations_ms: list[float] = []
        self._greenlet: gevent.Greenlet | None = None

    @property
    def running(self) -> bool:
        """Whether a publishing run is in progress."""
        return self._greenlet is not None and not self._greenlet.dead

    def start(self, count: int, interval: float) -> None:
        """Start a run in its own greenlet (refused while one runs)."""
        if self.running:
            raise RuntimeError("a publishing run is already in progress")
        self.durations_ms = []
        self._greenlet = gevent.spawn(self._run, count, interval)

    def _run(self, count: int, interval: float) -> None:
        begin = time.monotonic()
        for seq in range(count):
            before = time.perf_counter()
            self._publish(seq, time.time())
            self.durations_ms.append((time.perf_counter() - before) * 1000)
            self.published += 1
            delay = begin + (seq + 1) * interval - time.monotonic()
            if delay > 0:
                gevent.sleep(delay)

    def stats(self, subscribers: int) -> dict[str, object]:
        """What ``GET /stats`` returns."""
        return {
            "subscribers": subscribers,
            "published": self.published,
            "running": self.running,
            "publish_ms": self.durations_ms,
            "gc": gc_clock.stats(),
            "gc_frozen": gc.get_freeze_count(),
        }


def add_control_routes(app: t.Any, publisher: Publisher, stats: t.Callable[[], object]) -> None:
    """Register the routes the bench drives a Flask app with.

    ``POST /start?count=&interval=`` starts the publisher, ``POST /gc-freeze`` runs
    :func:`freeze`, ``GET /stats`` answers ``stats()``, ``GET /health`` answers ``ok``.
    """
    from flask import request

    def start() -> object:
        publisher.start(int(request.args["count"]), float(request.args["interval"]))
        return {"started": True}, 202

    app.add_url_rule("/start", "start", start, methods=["POST"])
    app.add_url_rule("/gc-freeze", "gc_freeze", freeze, methods=["POST"])
    app.add_url_rule("/stats", "stats", stats)
    app.add_url_rule("/health", "health", lambda: "ok")
