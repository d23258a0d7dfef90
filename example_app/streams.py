"""Bookkeeping of the example's open streams, so that they can be ended from outside.

The library releases a stream's resources when its client leaves; this registry only exists so
that the test-only ``POST /_test/drop`` can end every open stream on purpose, the way a deploy or
a proxy timeout does, and the browser tests can watch the page reconnect and resume.
"""

from __future__ import annotations

import collections.abc as cabc
import typing as t

import gevent.event

if t.TYPE_CHECKING:
    from flask_ssecors import Event
    from flask_ssecors.brokers import Subscription

    from .ticker import Ticker

#: The drop reason given to subscriptions ended through :meth:`OpenStreams.drop`.
DROP_REASON = "dropped-by-server"


class OpenStreams:
    """The open chat subscriptions and ticker generators of one app."""

    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()
        self._stop = gevent.event.Event()
        self._generators = 0

    def track(self, subscription: Subscription) -> Subscription:
        """Remember an open subscription (a stream view returns the result)."""
        self._subscriptions = {s for s in self._subscriptions if not s.closed}
        self._subscriptions.add(subscription)
        return subscription

    def ticks(self, ticker: Ticker, last_event_id: str | None) -> cabc.Iterator[Event]:
        """The ticker's events after ``last_event_id``, until :meth:`drop` is called."""
        stop = self._stop
        self._generators += 1
        try:
            yield from ticker.events(last_event_id, lambda seconds: stop.wait(seconds))
        finally:
            self._generators -= 1

    def drop(self) -> dict[str, int]:
        """End every open stream now; browsers reconnect and resume from their last id."""
        subscriptions = [s for s in self._subscriptions if not s.closed]
        for subscription in subscriptions:
            subscription.drop(DROP_REASON)
        self._subscriptions.clear()
        generators = self._generators
        stop, self._stop = self._stop, gevent.event.Event()
        stop.set()
        return {"subscriptions": len(subscriptions), "generators": generators}
