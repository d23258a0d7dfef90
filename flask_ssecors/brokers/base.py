"""The broker protocol, and the subscription every broker hands out.

A broker keeps, per channel, a bounded backlog of encoded events for ``Last-Event-ID`` replay,
assigns each published event an id, and fans events out to its subscribers. Events are encoded
once, when published; every subscriber receives the same bytes object.

A :class:`Subscription` is a bounded per-subscriber buffer. A subscriber that falls more than its
limit behind is cut loose (:attr:`Subscription.drop_reason` says why): it never slows the
publisher or other subscribers, and memory never grows without bound. It resumes from the
backlog when the client reconnects with its ``Last-Event-ID``.
"""

from __future__ import annotations

import collections
import typing as t

import gevent.event

if t.TYPE_CHECKING:
    from ..events import Event


class SubscriptionClosed(Exception):
    """Raised by :meth:`Subscription.get` once the subscription is closed or dropped."""


class Subscription:
    """One subscriber's view of one channel: replayed events first, then live ones.

    Brokers create these; a stream view returns one (``return sse.subscribe(...)``) and the
    stream response reads it. Safe to use from greenlets; not from other OS threads.

    :param channel: the channel name.
    :param limit: how many undelivered events may wait before the subscriber is dropped.
    :param on_close: called once when the subscription closes, to unregister it.
    """

    __slots__ = ("_items", "_ready", "_release", "_replayed", "channel", "drop_reason", "limit")

    def __init__(
        self,
        channel: str,
        limit: int,
        on_close: t.Callable[[Subscription], None] | None = None,
    ) -> None:
        self.channel = channel
        self.limit = limit
        #: None while open; ``"closed"`` after :meth:`close`; another label when dropped.
        self.drop_reason: str | None = None
        self._items: collections.deque[bytes] = collections.deque()
        #: How many replayed events are still at the front of ``_items`` (not counted in limit).
        self._replayed = 0
        self._ready = gevent.event.Event()
        self._release = on_close

    @property
    def closed(self) -> bool:
        """Whether the subscription delivers nothing more."""
        return self.drop_reason is not None

    def __len__(self) -> int:
        return len(self._items)

    def preload(self, items: t.Iterable[bytes]) -> None:
        """Queue replayed events; call it before the subscription receives live events.

        Replayed events are not counted in :attr:`limit`: once they are taken, the subscriber
        may again fall at most ``limit`` live events behind.
        """
        before = len(self._items)
        self._items.extend(items)
        self._replayed += len(self._items) - before
        if self._items:
            self._ready.set()

    def deliver(self, item: bytes) -> bool:
        """Queue one encoded event; drop the subscriber if it is too far behind.

        :return: False when the subscriber was dropped (now or earlier).
        """
        if self.drop_reason is not None:
            return False
        if len(self._items) - self._replayed >= self.limit:
            self.drop("overflow")
            return False
        self._items.append(item)
        self._ready.set()
        return True

    def get(self, timeout: float | None = None) -> bytes | None:
        """The next encoded event, or None when ``timeout`` seconds passed without one.

        :raises SubscriptionClosed: when the subscription was closed or dropped; events that
            were queued before a drop for overflow are not delivered (the client resumes from
            the backlog instead).
        """
        if self.drop_reason is not None:
            raise SubscriptionClosed(self.drop_reason)
        if not self._items:
            self._ready.clear()
            self._ready.wait(timeout)
            if self.drop_reason is not None:
                raise SubscriptionClosed(self.drop_reason)
            if not self._items:
                return None
        if self._replayed:
            self._replayed -= 1
        return self._items.popleft()

    def wake(self) -> None:
        """Wake a waiting :meth:`get` without an event: it returns None, as on a timeout.

        .. versionadded:: 0.1
        """
        self._ready.set()

    def drop(self, reason: str) -> None:
        """Cut the subscriber loose (idempotent); a waiting :meth:`get` wakes up and raises."""
        if self.drop_reason is not None:
            return
        self.drop_reason = reason
        self._items.clear()
        self._replayed = 0
        self._ready.set()
        release, self._release = self._release, None
        if release is not None:
            release(self)

    def close(self) -> None:
        """Release the subscription (idempotent)."""
        self.drop("closed")


class Broker(t.Protocol):
    """What every broker provides. Brokers are created once per app, at ``init_app``."""

    def publish(self, channel: str, event: Event) -> str:
        """Assign ``event`` an id, keep it in the channel's backlog, and deliver it.

        :return: the id the broker assigned (monotonic per channel).
        :raises flask_ssecors.exceptions.BrokerUnavailable: when nothing could be published.
        """
        ...

    def subscribe(
        self, channel: str, last_event_id: str | None = None, *, limit: int = 1000
    ) -> Subscription:
        """Subscribe to ``channel``.

        With ``last_event_id``, the events published strictly after it are queued first; when the
        id is unknown or older than the backlog, a reset event (see
        :data:`flask_ssecors.events.RESET_EVENT`) comes first instead.
        """
        ...

    def subscriber_count(self, channel: str | None = None) -> int:
        """Open subscriptions on ``channel``, or on all channels."""
        ...

    def close(self) -> None:
        """Drop every subscriber and release resources."""
        ...
