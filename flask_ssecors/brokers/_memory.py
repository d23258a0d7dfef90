"""The in-memory broker: the embedded default (``SSECORS_BROKER_URL = "memory://"``).

Fan-out within one process. Ids look like ``<epoch>-<n>``: ``n`` counts up per channel and
``epoch`` is drawn when the broker starts, so an id from before a restart is recognised as
unknown (the client gets the reset event) instead of being confused with a new one.

It serves one worker process. With several gunicorn workers each has its own broker, so
publish through Redis (``redis://``) instead.
"""

from __future__ import annotations

import collections
import secrets
import time

from ..events import add_id
from ..events import Event
from ..events import RESET_EVENT
from ..events import without_id
from ._base import Subscription


class _Channel:
    __slots__ = ("backlog", "head", "subscribers")

    def __init__(self, backlog: int) -> None:
        self.head = 0
        self.backlog: collections.deque[tuple[int, bytes]] = collections.deque(maxlen=backlog)
        self.subscribers: set[Subscription] = set()


class MemoryBroker:
    """Keeps a bounded backlog per channel and delivers in-process.

    :param backlog: how many events each channel keeps for replay (``SSECORS_BACKLOG``).
    """

    def __init__(self, backlog: int = 1000) -> None:
        self.backlog = backlog
        # Milliseconds since the epoch and 32 random bits: two brokers started in the same
        # millisecond (tests, several workers) still get different epochs.
        self.epoch = f"{time.time_ns() // 1_000_000:x}{secrets.randbits(32):08x}"
        self._channels: dict[str, _Channel] = {}

    def _channel(self, name: str) -> _Channel:
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = _Channel(self.backlog)
        return channel

    def publish(self, channel: str, event: Event) -> str:
        """Assign the next id, keep the event in the backlog and deliver it to every subscriber."""
        state = self._channel(channel)
        state.head += 1
        event_id = f"{self.epoch}-{state.head}"
        data = add_id(without_id(event).encode(), event_id)
        if self.backlog:
            state.backlog.append((state.head, data))
        for subscription in tuple(state.subscribers):
            subscription.deliver(data)
        return event_id

    def subscribe(
        self, channel: str, last_event_id: str | None = None, *, limit: int = 1000
    ) -> Subscription:
        """Subscribe, replaying strictly after ``last_event_id`` (see :class:`.base.Broker`)."""
        state = self._channel(channel)
        subscription = Subscription(channel, limit, self._release)
        if last_event_id is not None:
            subscription.preload(self._replay(state, last_event_id))
        state.subscribers.add(subscription)
        return subscription

    def _replay(self, state: _Channel, last_event_id: str) -> list[bytes]:
        epoch, _, number = last_event_id.rpartition("-")
        seq = int(number) if _is_canonical_number(number) else -1
        if epoch != self.epoch or seq < 0 or seq > state.head:
            return [self._reset(state, "unknown-id")]
        if seq == state.head:
            return []
        oldest = state.backlog[0][0] if state.backlog else state.head + 1
        if seq < oldest - 1:
            return [self._reset(state, "expired")]
        return [data for n, data in state.backlog if n > seq]

    def _reset(self, state: _Channel, reason: str) -> bytes:
        return Event(
            {"reason": reason}, event=RESET_EVENT, id=f"{self.epoch}-{state.head}"
        ).encode()

    def _release(self, subscription: Subscription) -> None:
        state = self._channels.get(subscription.channel)
        if state is None:
            return
        state.subscribers.discard(subscription)
        if not state.subscribers and state.head == 0:
            del self._channels[subscription.channel]

    def subscriber_count(self, channel: str | None = None) -> int:
        """Open subscriptions on ``channel``, or on every channel when None."""
        if channel is not None:
            state = self._channels.get(channel)
            return len(state.subscribers) if state else 0
        return sum(len(state.subscribers) for state in self._channels.values())

    def close(self) -> None:
        """Drop every subscriber."""
        for state in list(self._channels.values()):
            for subscription in tuple(state.subscribers):
                subscription.drop("broker-closed")
        self._channels.clear()


def _is_canonical_number(text: str) -> bool:
    """Whether ``text`` is a number as :class:`MemoryBroker` writes it in ids.

    ASCII digits only (``str.isdigit`` also accepts other scripts' digits, which ``int``
    parses), no sign, no leading zero, bounded length: anything else is an id this broker
    never assigned.
    """
    return (
        0 < len(text) < 20 and text.isascii() and text.isdigit() and (text == "0" or text[0] != "0")
    )
