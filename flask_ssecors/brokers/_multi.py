"""Several channels on one stream: a subscription that reads one subscription per channel.

``sse.subscribe("ticker", "chat:lobby")`` gives one stream that carries both channels, so a page
needs one connection instead of one per channel. On that stream:

- an event's type is ``<channel>/<type>`` (``<channel>/message`` when it had none, and
  ``<channel>/ssecors-reset`` for a channel that cannot be replayed), so the page tells the
  channels apart by event name, and its data is untouched. ``%`` and ``/`` in the channel part
  are written ``%25`` and ``%2F`` (:func:`event_name`), so no two (channel, type) pairs share
  a name;
- an event's id is the stream's position in every channel, ``<id 1>~<id 2>~...`` in the order
  the channels were given (each part is the channel's own id). A first block with this id and
  no data, which browsers do not dispatch but remember, opens the stream: a reconnect with
  ``Last-Event-ID`` then gives each channel exactly what it missed, in order, and the reset
  event to a channel that cannot be replayed while the others resume.

:data:`MAX_CHANNELS` bounds the channels of one stream, which bounds the id's length.
"""

from __future__ import annotations

import typing as t

from .._faults import FAULTS
from .._faults import Stage
from .._wire import as_frame
from .._wire import data_of
from .._wire import Frame
from .._wire import frame_of
from .._wire import relabel
from ..events import Event
from ..exceptions import ChannelError
from ._base import check_channel
from ._base import EndReason
from ._base import Subscription
from ._base import SubscriptionClosed

if t.TYPE_CHECKING:
    from ._base import Broker

#: Most channels one stream carries: their ids together stay under the 256 characters a
#: ``Last-Event-ID`` may have (Redis positions are up to about 23 characters each).
MAX_CHANNELS: t.Final = 8
#: Between the channels' ids in a stream's id.
ID_SEPARATOR: t.Final = "~"
#: Between a channel's name and an event's type.
TYPE_SEPARATOR: t.Final = "/"


def event_prefix(channel: str) -> str:
    """What goes before an event's type on a stream of several channels: the channel, with
    ``%`` written ``%25`` and ``/`` written ``%2F``, then ``/``.

    The channel part then holds no ``/``, so the first ``/`` of an event name ends it, and
    :func:`event_name` is one-to-one: channel ``a/b`` with type ``message`` and channel ``a``
    with type ``b/message`` never share a name. ``encodeURIComponent`` escapes both characters
    the same way, so a page can build the name from the channel.
    """
    return channel.replace("%", "%25").replace("/", "%2F") + TYPE_SEPARATOR


def event_name(channel: str, event_type: str | None) -> str:
    """The event name that ``(channel, event_type)`` has on a stream of several channels
    (``None``, no type, is ``message``, as browsers dispatch it)."""
    return event_prefix(channel) + (event_type if event_type is not None else "message")


def split_event_name(name: str) -> tuple[str, str]:
    """The ``(channel, type)`` of an event name that :func:`event_name` wrote.

    :raises ValueError: if ``name`` has no ``/``.
    """
    escaped, separator, event_type = name.partition(TYPE_SEPARATOR)
    if not separator:
        raise ValueError(f"{name!r:.80} is not <channel>/<type>")
    return escaped.replace("%2F", "/").replace("%25", "%"), event_type


class MultiSubscription(Subscription):
    """One subscription fed by one subscription per channel (see the module documentation).

    Each channel's replay stays with its own subscription and is read a page at a time, as
    the client reads, channel after channel; live events wait here, at most ``limit`` of them,
    and are relabelled when they are sent, so that every id the client receives is exactly the
    position of what it has received.

    :param channels: the channels, in order.
    :param positions: each channel's id to start from.
    :param limit: how many undelivered live events may wait before the subscriber is dropped.
    """

    __slots__ = ("_children", "_positions", "_prefixes", "_replaying", "channels")

    def __init__(self, channels: tuple[str, ...], positions: list[str], limit: int) -> None:
        super().__init__("+".join(channels), limit)
        self.channels = channels
        self._positions = positions
        self._prefixes = [event_prefix(channel) for channel in channels]
        self._children: list[Subscription] = []
        #: The first channel whose replay may not be complete.
        self._replaying = 0

    @property
    def last_event_id(self) -> str:
        """The stream's current position: every channel's id."""
        return ID_SEPARATOR.join(self._positions)

    @property
    def replaying(self) -> bool:
        """Whether replayed events are still to be read before live ones."""
        return bool(self._page) or any(c.replaying for c in self._children[self._replaying :])

    def attach(self, index: int, child: Subscription) -> None:
        """Read ``child`` (the subscription of channel ``index``) from now on."""
        self._children.append(child)

        def sink(source: Subscription, item: bytes | Frame | None) -> None:
            if item is None:
                if source.drop_reason != EndReason.CLOSED:
                    self.drop(source.drop_reason or EndReason.CLOSED)
                return
            if self.drop_reason is not None:
                return
            if len(self._items) >= self.limit:
                self.drop(EndReason.OVERFLOW)
                return
            self._items.append((index, item))
            self._notify()

        child.forward(sink)

    def get(self, timeout: float | None = None) -> bytes | None:
        """The next event: the opening block, then every channel's replay (read in pages),
        then live events, each relabelled as it is sent."""
        if self.drop_reason is not None:
            raise SubscriptionClosed(self.drop_reason)
        if self._page:
            return data_of(self._page.popleft())
        children = self._children
        while self._replaying < len(children):
            index = self._replaying
            item = children[index].next_replayed()
            if self.drop_reason is not None:
                raise SubscriptionClosed(self.drop_reason)
            if item is None:
                self._replaying += 1
                continue
            frame = self._relabel(index, item)
            if frame is not None:
                return frame
            raise SubscriptionClosed(t.cast(str, self.drop_reason))
        while True:
            if not self._items:
                self._wait(timeout)
                if self.drop_reason is not None:
                    raise SubscriptionClosed(self.drop_reason)
                if not self._items:
                    return None
            index, item = self._items.popleft()
            frame = self._relabel(index, item)
            if frame is not None:
                return frame
            raise SubscriptionClosed(t.cast(str, self.drop_reason))

    def _relabel(self, index: int, item: bytes | Frame) -> bytes | None:
        """``item`` of channel ``index`` as this stream sends it, the stream's position moved
        on; None (and the subscriber dropped) if it cannot be written. A frame carries its id
        and type: nothing is parsed."""
        try:
            framed = as_frame(item)
            if framed.id:
                self._positions[index] = framed.id
            return relabel(framed, self.last_event_id, self._prefixes[index])
        except Exception:
            FAULTS.record(Stage.RELABEL, "the subscriber was dropped", self.channels[index])
            self.drop(EndReason.ERROR)
            return None

    def drop(self, reason: str) -> None:
        """Cut the subscriber loose, and every channel's subscription with it."""
        if self.drop_reason is not None:
            return
        super().drop(reason)
        for child in self._children:
            child.close()


def subscribe_many(
    broker: Broker,
    channels: t.Sequence[str],
    last_event_id: str | None,
    *,
    limit: int,
    member: str | None = None,
    announce: frozenset[str] = frozenset(),
) -> MultiSubscription:
    """Subscribe to several channels on one stream.

    :param broker: the broker.
    :param channels: two or more channel names (repeats count once).
    :param last_event_id: the stream's id the client holds, or None.
    :param limit: the subscription's queue bound.
    :param member: who the stream is, for each channel's presence; None for nobody.
    :param announce: the channels on which the member's joining and leaving are published.
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
            if member is None:
                child = broker.subscribe(name, positions[index], limit=limit)
            else:
                child = broker.subscribe(
                    name, positions[index], limit=limit, member=member, announce=name in announce
                )
            subscription.attach(index, child)
    except BaseException:
        subscription.close()
        raise
    return subscription


def _opening(stream_id: str) -> bytes:
    """A block with an ``id`` and no data: not dispatched, but it sets the browser's last id."""
    return frame_of(Event(comment="channels", id=stream_id)).data
