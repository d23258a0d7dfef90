"""A deterministic price ticker: tick ``n`` happens at ``n * interval`` seconds of Unix time.

Every tick's value is a pure function of ``n``, so every tab, worker and host shows the same
ticks without sharing any state, and a client that reconnects with ``Last-Event-ID: n`` is
served the ticks it missed, ``n + 1`` onwards, from nothing but that id.

Pure module: no Flask, no gevent. The stream view hands :func:`Ticker.events` a ``wait``
function (a gevent event's ``wait``) so that the stream can be ended from outside.
"""

from __future__ import annotations

import collections.abc as cabc
import dataclasses
import hashlib
import math
import time
import typing as t

from flask_ssecors import Event

#: The event type of a tick.
TICK_EVENT = "tick"


@dataclasses.dataclass(frozen=True, slots=True)
class Ticker:
    """Ticks every ``interval`` seconds.

    :param interval: seconds between ticks.
    :param history: ticks sent at once to a new client, so its chart is never empty.
    :param catch_up: most ticks replayed to a client that reconnects; a client that was away
        longer starts over with ``history``.
    :param clock: the time source (tests pass their own).
    """

    interval: float = 1.0
    history: int = 90
    catch_up: int = 600
    clock: cabc.Callable[[], float] = time.time

    def current(self) -> int:
        """The number of the latest tick."""
        return math.floor(self.clock() / self.interval)

    def event(self, n: int) -> Event:
        """Tick ``n`` as an event whose id is ``n``."""
        return Event(
            {"n": n, "price": price(n), "t": round(n * self.interval * 1000)},
            event=TICK_EVENT,
            id=str(n),
        )

    def recent(self) -> list[dict[str, object]]:
        """The last ``history`` ticks, oldest first, as their events' data."""
        now = self.current()
        return [
            t.cast("dict[str, object]", self.event(n).data)
            for n in range(now - self.history + 1, now + 1)
        ]

    def first(self, last_event_id: str | None) -> int:
        """The first tick to send to a client that last saw ``last_event_id`` (or nothing)."""
        now = self.current()
        seen = _tick_number(last_event_id)
        if seen is not None and now - self.catch_up <= seen <= now:
            return seen + 1
        return now - self.history + 1

    def events(
        self, last_event_id: str | None, wait: cabc.Callable[[float], object]
    ) -> cabc.Iterator[Event]:
        """Yield the ticks after ``last_event_id``, then each new tick when it happens.

        :param last_event_id: the client's validated ``Last-Event-ID``, or None.
        :param wait: sleeps up to the given seconds; a true result ends the stream (the
            server closes it; the browser reconnects and resumes from its last id).
        """
        n = self.first(last_event_id)
        while True:
            latest = self.current()
            while n <= latest:
                yield self.event(n)
                n += 1
            if wait(max(0.0, n * self.interval - self.clock())):
                return


def _tick_number(value: str | None) -> int | None:
    if value is None or not value.isdigit() or len(value) > 15:
        return None
    return int(value)


def price(n: int) -> float:
    """The price at tick ``n``: slow waves plus a little hashed noise, always the same."""
    x = n / 40
    wave = 7.0 * math.sin(x) + 3.0 * math.sin(2.7 * x + 1.3) + 1.5 * math.sin(7.1 * x + 0.4)
    digest = hashlib.blake2b(n.to_bytes(8, "big", signed=True), digest_size=4).digest()
    noise = (int.from_bytes(digest, "big") / 2**32 - 0.5) * 0.8
    return round(100.0 + wave + noise, 2)
