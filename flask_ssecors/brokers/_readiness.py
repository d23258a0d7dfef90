"""A flag that subscribers wait for, from the broker's own thread or from others."""

from __future__ import annotations

import typing as t

import gevent.event
import gevent.monkey

_Event: t.Final[t.Any] = gevent.monkey.get_original("threading", "Event")


class Readiness:
    """A flag waited for by subscribers, in greenlets of the broker's thread (a gevent event),
    or in other OS threads (a real event, since a gevent event is waited for from one thread's
    hub at a time)."""

    def __init__(self) -> None:
        self._greenlets = gevent.event.Event()
        self._threads = _Event()

    def set(self) -> None:
        self._greenlets.set()
        self._threads.set()

    def clear(self) -> None:
        self._greenlets.clear()
        self._threads.clear()

    def wait(self, timeout: float, *, home: bool) -> bool:
        if home:
            return bool(self._greenlets.wait(timeout))
        return bool(self._threads.wait(timeout))
