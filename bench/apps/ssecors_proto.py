"""Experiment: :mod:`bench.apps.ssecors` with a prototype fan-out, to size a proposed change.

Not part of the default runs (``python -m bench --only streams --apps bare,ssecors,ssecors_proto``).
Nothing in ``flask_ssecors`` is edited: this process alone swaps the class the memory broker
instantiates for a subclass of :class:`flask_ssecors.brokers.base.Subscription` that

- wakes blocked subscribers with **one** hub callback per publish (which switches to each of
  them in turn), instead of a :class:`gevent.event.Event` per subscriber, whose ``set()``
  allocates a callback and a list per subscriber per event;
- waits for the heartbeat with **one libev timer per subscription**, created once and started
  and stopped around each wait, instead of ``Event.wait(timeout)``, which builds a
  :class:`gevent.Timeout` per wait. The timer is created with ``repeat`` and re-armed with
  ``again()`` (libev keeps only the remaining time in a stopped timer); its callback hands the
  subscriber to the waker rather than switching to it from inside the timer's callback.

The queueing, limit and drop semantics are those of the base class. It is a sketch to measure
with, not a reviewed implementation (no thread-safety, no tests).
"""

from __future__ import annotations

import typing as t

from gevent import getcurrent
from gevent.hub import get_hub

import flask_ssecors.brokers.memory
from flask_ssecors.brokers.base import Subscription
from flask_ssecors.brokers.base import SubscriptionClosed


class _Waker:
    """Collects the subscribers an event reached; one hub callback switches to each."""

    def __init__(self) -> None:
        self.ready: list[PrototypeSubscription] = []
        self.pending: object = None

    def add(self, subscription: PrototypeSubscription) -> None:
        self.ready.append(subscription)
        if self.pending is None:
            self.pending = get_hub().loop.run_callback(self._run)

    def _run(self) -> None:
        ready, self.ready, self.pending = self.ready, [], None
        for subscription in ready:
            subscription._scheduled = False
            greenlet = subscription._greenlet
            if greenlet is not None:
                greenlet.switch()


_waker = _Waker()


class PrototypeSubscription(Subscription):
    """See the module docstring."""

    __slots__ = ("_greenlet", "_on_timer", "_scheduled", "_timer", "_timer_after")

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._greenlet: t.Any = None
        self._scheduled = False
        self._timer: t.Any = None
        self._timer_after: float | None = None
        self._on_timer = self._timer_fired

    def _timer_fired(self) -> None:
        # Never switch from the timer's own callback: the woken greenlet restarts this timer
        # before the callback returned, and libev then fires it again at once. The waker's
        # callback switches instead.
        self._notify()

    def _notify(self) -> None:
        if self._greenlet is not None and not self._scheduled:
            self._scheduled = True
            _waker.add(self)

    def preload(self, items: t.Iterable[bytes]) -> None:
        super().preload(items)
        self._notify()

    def deliver(self, item: bytes) -> bool:
        if self.drop_reason is not None:
            return False
        if len(self._items) - self._replayed >= self.limit:
            self.drop("overflow")
            return False
        self._items.append(item)
        if self._greenlet is not None and not self._scheduled:
            self._scheduled = True
            _waker.add(self)
        return True

    def get(self, timeout: float | None = None) -> bytes | None:
        if self.drop_reason is not None:
            raise SubscriptionClosed(self.drop_reason)
        if not self._items:
            hub = get_hub()
            timer = None
            if timeout is not None:
                timer = self._timer
                if timer is None or self._timer_after != timeout:
                    if timer is not None:
                        timer.close()
                    # repeat=timeout, re-armed with again(): libev keeps only the *remaining*
                    # time in a stopped timer, so start() after it fired would fire at once.
                    timer = self._timer = hub.loop.timer(timeout, timeout)
                    self._timer_after = timeout
                timer.again(self._on_timer)
            self._greenlet = getcurrent()
            try:
                hub.switch()
            finally:
                self._greenlet = None
                if timer is not None:
                    timer.stop()
            if self.drop_reason is not None:
                raise SubscriptionClosed(self.drop_reason)
            if not self._items:
                return None
        if self._replayed:
            self._replayed -= 1
        return self._items.popleft()

    def wake(self) -> None:
        self._notify()

    def drop(self, reason: str) -> None:
        already = self.drop_reason is not None
        super().drop(reason)
        if not already:
            self._notify()


flask_ssecors.brokers.memory.Subscription = PrototypeSubscription  # type: ignore[misc]

from .ssecors import app as app  # noqa: E402
