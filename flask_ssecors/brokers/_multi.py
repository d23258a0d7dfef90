"""Several channels on one stream: a subscription that reads one subscription per channel.

``sse.subscribe("ticker", "chat:lobby")`` gives one stream that carries both channels, so a page
needs one connection instead of one per channel. On that stream:

- an event's type is ``<channel>/<type>`` (``<channel>/message`` when it had none, and
  ``<channel>/ssecors-reset`` for a channel that cannot be replayed), so the page tells the
  channels apart by event name, and its data is untouched;
- an event's id is the stream's position in every channel, ``<id 1>~<id 2>~...`` in the order
  the channels were given (each part is the channel's own id). A first block with this id and
  no data, which browsers do not dispatch but remember, opens the stream: a reconnect with
  ``Last-Event-ID`` then gives each channel exactly what it missed, in order, and the reset
  event to a channel that cannot be replayed while the others resume.

:data:`MAX_CHANNELS` bounds the channels of one stream, which bounds the id's length.
"""

from __future__ import annotations

import typing as t

from ..events import Event
from ..events import relabel
from ..exceptions import ChannelError
from ._base import check_channel
from ._base import Subscription

if t.TYPE_CHECKING:
    from ._base import Broker

#: Most channels one stream carries: their ids together stay under the 256 characters a
#: ``Last-Event-ID`` may have (Redis positions are up to about 23 characters each).
MAX_CHANNELS: t.Final = 8
#: Between the channels' ids in a stream's id.
ID_SEPARATOR: t.Final = "~"
#: Between a channel's name and an event's type.
TYPE_SEPARATOR: t.Final = "/"


class MultiSubscription(Subscription):
    """One subscription fed by one subscription per channel (see the module documentation).

    :param channels: the channels, in order.
    :param positions: each channel's id to start from.
    :param limit: how many undelivered events may wait before the subscriber is dropped.
    """

    __slots__ = ("_children", "_positions", "_prefixes", "channels")

    def __init__(self, channels: tuple[str, ...], positions: list[str], limit: int) -> None:
        super().__init__("+".join(channels), limit)
        self.channels = channels
        self._positions = positions
        self._prefixes = [channel + TYPE_SEPARATOR for channel in channels]
        self._children: list[Subscription] = []

    @property
    def last_event_id(self) -> str:
        """The stream's current position: every channel's id."""
        return ID_SEPARATOR.join(self._positions)

    def attach(self, index: int, child: Subscription) -> None:
        """Read ``child`` (the subscription of channel ``index``) from now on."""
        self._children.append(child)

        def sink(source: Subscription, item: bytes | None) -> None:
            if item is None:
                if source.drop_reason != "closed":
                    self.drop(source.drop_reason or "closed")
                return

            def stream_id(channel_id: str | None) -> str:
                if channel_id:
                    self._positions[index] = channel_id
                return self.last_event_id

            _, frame = relabel(item, id=stream_id, event_prefix=self._prefixes[index])
            self.deliver(frame)

        child.forward(sink)

    def drop(self, reason: str) -> None:
        """Cut the subscriber loose, and every channel's subscription with it."""
        if self.drop_reason is not None:
            return
        super().drop(reason)
        for child in self._children:
            child.close()


def subscribe_many(
    broker: Broker, channels: t.Sequence[str], last_event_id: str | None, *, limit: int
) -> MultiSubscription:
    """Subscribe to several channels on one stream.

    :param broker: the broker.
    :param channels: two or more channel names (repeats count once).
    :param last_event_id: the stream's id the client holds, or None.
    :param limit: the subscription's queue bound.
    :raises ChannelError: for a bad name, or more than :data:`MAX_CHANNELS` channels.
    :raises BrokerUnavailable: when the broker cannot be reached.
    """
    names = tuple(dict.fromkeys(check_channel(channel) for channel in channels))
    if len(names) > MAX_CHANNELS:
        raise ChannelError(
            names, f"a stream carries at most {MAX_CHANNELS} channels, not {len(names)}"
        )
    given = last_event_id.split(ID_SEPARATOR) if last_event_id is not None else None
    if given is not None and len(given) != len(names):
        # Another list of channels than the one this id was given for: every channel resets.
        given = ["unknown"] * len(names)
    positions = list(given) if given is not None else [broker.head(name) for name in names]
    subscription = MultiSubscription(names, positions, limit)
    # The opening block: browsers remember its id without dispatching anything, so a client
    # that reconnects before any event resumes every channel from where it started.
    subscription.preload([_opening(subscription.last_event_id)])
    try:
        for index, name in enumerate(names):
            subscription.attach(index, broker.subscribe(name, positions[index], limit=limit))
    except BaseException:
        subscription.close()
        raise
    return subscription


def _opening(stream_id: str) -> bytes:
    """A block with an ``id`` and no data: not dispatched, but it sets the browser's last id."""
    return Event(comment="channels", id=stream_id).encode()
