"""The ticker's publisher, and bookkeeping of the example's open streams.

:class:`TickerFeed` publishes the ticker on a channel, so that a page reads it and a room's chat
on one stream (``GET /page-events``).

The library releases a stream's resources when its client leaves; this registry only exists so
that the test-only ``POST /_test/drop`` can end every open stream on purpose, the way a deploy or
a proxy timeout does, and the browser tests can watch the page reconnect and resume.
"""

from __future__ import annotations

import collections.abc as cabc
import os
import typing as t

import gevent.event

from flask_ssecors.exceptions import BrokerUnavailable

if t.TYPE_CHECKING:
    from flask_ssecors import Event
    from flask_ssecors.brokers import Subscription

    from .ticker import Ticker

#: The drop reason given to subscriptions ended through :meth:`OpenStreams.drop`.
DROP_REASON = "dropped-by-server"


#: The channel the ticker's ticks are published on.
TICKER_CHANNEL = "ticker"


class TickerFeed:
    """Publishes every tick on :data:`TICKER_CHANNEL`, from one greenlet per worker process,
    so that the ticker can share one multi-channel stream with the chat (``GET
    /page-events``). Ticks are numbered by time (see :mod:`example_app.ticker`), so every
    worker publishes the same ticks; the page shows each number once."""

    def __init__(self, ticker: Ticker) -> None:
        self.ticker = ticker
        self._greenlet: gevent.Greenlet | None = None
        self._pid = 0

    def start(self, app: t.Any) -> None:
        """Start publishing in this process, if not already (call it in a request)."""
        if self._greenlet is not None and not self._greenlet.dead and self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._greenlet = gevent.spawn(self._publish, app)

    def _publish(self, app: t.Any) -> None:
        from .extensions import sse

        ticker = self.ticker
        n = ticker.current()
        while True:
            with app.app_context():
                latest = ticker.current()
                try:
                    while n <= latest:
                        sse.publish(TICKER_CHANNEL, ticker.event(n))
                        n += 1
                except BrokerUnavailable:
                    # The broker is down: those ticks are skipped (a page's chart jumps over
                    # them); publishing goes on with the next tick.
                    app.logger.warning("ticker: broker unavailable, ticks up to %d skipped", latest)
                    n = latest + 1
            gevent.sleep(max(0.0, n * ticker.interval - ticker.clock()))


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
