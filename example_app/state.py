"""The example's per-app state, kept in ``app.extensions["ssecors_example"]``."""

from __future__ import annotations

import collections
import dataclasses
import typing as t

from flask import current_app

from .observer import Observer
from .streams import OpenStreams
from .streams import TickerFeed
from .ticker import Ticker

#: Chat messages a newly opened page is shown.
RECENT_MESSAGES = 50


@dataclasses.dataclass(eq=False)
class Room:
    """A chat room: its recent messages and the id of its latest event.

    The page loads these first, then opens the room's stream with ``?last_event_id=<cursor>``,
    so nothing published in between is lost or shown twice. They live in this process, like
    the in-memory broker; with several workers they would live next to the broker (in Redis).
    """

    name: str
    topic: str
    cursor: str | None = None
    recent: collections.deque[dict[str, t.Any]] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=RECENT_MESSAGES)
    )


@dataclasses.dataclass(eq=False)
class DemoState:
    """Everything the example keeps per app."""

    ticker: Ticker
    observer: Observer
    rooms: dict[str, Room]
    streams: OpenStreams = dataclasses.field(default_factory=OpenStreams)
    feed: TickerFeed = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.feed = TickerFeed(self.ticker)


def demo_state() -> DemoState:
    """The current app's :class:`DemoState`."""
    return t.cast(DemoState, current_app.extensions["ssecors_example"])
