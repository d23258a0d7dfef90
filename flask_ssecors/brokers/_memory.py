"""The in-memory broker: the embedded default (``SSECORS_BROKER_URL = "memory://"``).

Fan-out within one process. Ids look like ``<generation>.<n>``: ``n`` counts up per channel, and
the generation is a random token drawn when the channel is created (when the broker starts, or
again after the channel was forgotten), so an id from another channel, from before a restart or
from before the channel was forgotten is unknown (the client gets the reset event) instead of
being confused with a position in this channel.

Retention: a channel with no subscriber and no publish for ``channel_ttl`` seconds is forgotten
and its backlog freed. Channels waiting to be forgotten are kept in the order they became idle,
so forgetting costs nothing per channel that is still in use. Events are refused above
``max_event_size`` bytes, so the backlogs hold at most channels x backlog x that size.

It serves one worker process. With several gunicorn workers each has its own broker, so
publish through Redis (``redis://``) instead.
"""

from __future__ import annotations

import collections
import itertools
import time
import typing as t

import gevent
import gevent.monkey

from .._config import default_of
from .._wire import encode_without_id
from .._wire import Frame
from .._wire import frame
from .._wire import frame_of
from ..events import Event
from ..events import RESET_EVENT
from ._base import check_channel
from ._base import check_event_size
from ._base import deliver_contained
from ._base import EMPTY_GENERATION
from ._base import EndReason
from ._base import is_number
from ._base import new_generation
from ._base import PAGE_BYTES
from ._base import PAGE_EVENTS
from ._base import split_id
from ._base import Subscription
from ._base import thread_ident as _thread_ident
from ._presence import build_presence
from ._presence import check_member
from ._presence import JOIN_EVENT
from ._presence import LEAVE_EVENT
from ._presence import LocalPresence
from ._presence import Presence
from ._presence import presence_event

#: How often idle channels are looked at, at most (seconds); sooner for short TTLs.
SWEEP_INTERVAL: t.Final = 1.0
#: A real OS lock, even under monkey-patching: publishers may run in other threads.
_RLock: t.Final[t.Callable[[], t.Any]] = gevent.monkey.get_original("threading", "RLock")


class _Channel:
    __slots__ = ("backlog", "generation", "head", "subscribers")

    def __init__(self, backlog: int) -> None:
        self.generation = new_generation()
        self.head = 0
        self.backlog: collections.deque[tuple[int, Frame]] = collections.deque(maxlen=backlog)
        self.subscribers: set[Subscription] = set()


class MemoryBroker:
    """Keeps a bounded backlog per channel and delivers in-process.

    :param backlog: how many events each channel keeps for replay (``SSECORS_BACKLOG``).
    :param channel_ttl: seconds after which a channel with no subscriber and no publish is
        forgotten (``SSECORS_CHANNEL_TTL``); None keeps channels for good.
    :param max_event_size: largest encoded event accepted, in bytes
        (``SSECORS_MAX_EVENT_SIZE``); None for no limit.
    :param presence_max_members: joins are announced while a channel has at most this many
        members (``SSECORS_PRESENCE_MAX_MEMBERS``), so a burst of leave events stays bounded.
    """

    def __init__(
        self,
        backlog: int = default_of("backlog"),
        *,
        channel_ttl: float | None = default_of("channel_ttl"),
        max_event_size: int | None = default_of("max_event_size"),
        presence_max_members: int = default_of("presence_max_members"),
    ) -> None:
        self.backlog = backlog
        self.presence_max_members = presence_max_members
        self.channel_ttl = channel_ttl
        self.max_event_size = max_event_size
        self._channels: dict[str, _Channel] = {}
        #: Channels without subscribers, oldest use first: name -> when it was last used.
        self._idle: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._sweeper: gevent.Greenlet | None = None
        #: Publishing is safe from any OS thread (a thread pool, the development server's
        #: request threads); greenlets of one thread never wait on it, as nothing inside yields.
        self._lock = _RLock()
        self._home = _thread_ident()
        self._presence = LocalPresence()
        self._closed = False

    def _channel(self, name: str) -> _Channel:
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = _Channel(self.backlog)
        return channel

    def publish(self, channel: str, event: Event) -> str:
        """Assign the next id, keep the event in the backlog and deliver it to every subscriber.

        :raises ChannelError: for a channel name no broker can store.
        :raises EventFieldError: for an event above ``max_event_size``.
        """
        check_channel(channel)
        encoded = encode_without_id(event)
        check_event_size(encoded, self.max_event_size)
        with self._lock:
            state = self._channel(channel)
            state.head += 1
            event_id = f"{state.generation}.{state.head}"
            data = frame(encoded, event.event, event_id)
            if self.backlog:
                state.backlog.append((state.head, data))
            if state.subscribers:
                for subscription in tuple(state.subscribers):
                    deliver_contained(subscription, data)
            else:
                self._became_idle(channel)
        return event_id

    def subscribe(
        self,
        channel: str,
        last_event_id: str | None = None,
        *,
        limit: int = default_of("queue_size"),
        member: str | None = None,
        announce: bool = False,
    ) -> Subscription:
        """Subscribe, replaying strictly after ``last_event_id``; with ``member``, counted in
        the channel's presence until the subscription ends (see :class:`.base.Broker`).

        :raises ChannelError: for a channel name no broker can store, or a bad member.
        """
        check_channel(channel)
        if member is not None:
            check_member(member)
        subscription = Subscription(channel, limit, self._release)
        with self._lock:
            state = self._channel(channel)
            if last_event_id is not None:
                replay = self._replay(state, last_event_id)
                if isinstance(replay, Frame):
                    subscription.preload([replay])
                elif replay is not None:
                    subscription.replay_from(replay)
            state.subscribers.add(subscription)
            self._idle.pop(channel, None)
            if member is not None:
                self._join(channel, member, announce=announce)
                subscription.chain_release(lambda _: self._leave(channel, member))
        return subscription

    # -- presence ----------------------------------------------------------------------------

    def _join(self, channel: str, member: str, *, announce: bool) -> None:
        with self._lock:
            if self._presence.add(channel, member, announce=announce) != 1:
                return
            self._presence.updates += 1
            if (channel, member) not in self._presence.announced:
                return
            if len(self._presence.counts[channel]) > self.presence_max_members:
                self._presence.announced.discard((channel, member))  # nor its leave
                return
            self.publish(channel, presence_event(JOIN_EVENT, member))

    def _leave(self, channel: str, member: str) -> None:
        with self._lock:
            if self._presence.count(channel, member) == 0:
                return
            if self._presence.remove(channel, member):
                return
            self._presence.updates += 1
            if (channel, member) in self._presence.announced:
                self._presence.announced.discard((channel, member))
                if not self._closed:
                    self.publish(channel, presence_event(LEAVE_EVENT, member))

    def presence(
        self, channel: str, *, max_members: int = default_of("presence_max_members")
    ) -> Presence:
        """Who holds streams on ``channel`` (this process is the whole broker)."""
        check_channel(channel)
        with self._lock:
            local = self._presence
            return build_presence(
                channel, local.counts.get(channel, {}), local.totals.get(channel, 0), max_members
            )

    def presence_stats(self) -> dict[str, int]:
        """See :meth:`.base.Broker.presence_stats`."""
        with self._lock:
            return self._presence.stats()

    def head(self, channel: str) -> str:
        """The id of ``channel``'s last event (``000000.0`` when it holds none)."""
        check_channel(channel)
        with self._lock:
            state = self._channels.get(channel)
            if state is None or state.head == 0:
                return f"{EMPTY_GENERATION}.0"
            return f"{state.generation}.{state.head}"

    def _replay(self, state: _Channel, last_event_id: str) -> Frame | _Replay | None:
        """What a subscriber resuming after ``last_event_id`` gets first: nothing, the reset
        event, or the events it missed, read a page at a time."""
        parts = split_id(last_event_id)
        if parts is None or not is_number(parts[1]):
            return self._reset(state, state.head, "unknown-id")
        generation, seq = parts[0], int(parts[1])
        if generation == EMPTY_GENERATION and seq == 0:
            # The client saw this channel empty: what it holds now came after.
            if state.head == 0:
                return None
            seq = 0
        elif generation != state.generation or seq > state.head:
            return self._reset(state, state.head, "unknown-id")
        if seq == state.head:
            return None
        oldest = state.backlog[0][0] if state.backlog else state.head + 1
        if seq < oldest - 1:
            return self._reset(state, state.head, "expired")
        return _Replay(self, state, seq, state.head)

    @staticmethod
    def _reset(state: _Channel, position: int, reason: str) -> Frame:
        at = f"{state.generation}.{position}" if position else f"{EMPTY_GENERATION}.0"
        return frame_of(Event({"reason": reason}, event=RESET_EVENT, id=at))

    def _release(self, subscription: Subscription) -> None:
        with self._lock:
            state = self._channels.get(subscription.channel)
            if state is None:
                return
            state.subscribers.discard(subscription)
            if state.subscribers:
                return
            if state.head == 0:  # never published: nothing to keep
                del self._channels[subscription.channel]
            else:
                self._became_idle(subscription.channel)

    # -- retention ---------------------------------------------------------------------------

    def _became_idle(self, channel: str) -> None:
        """``channel`` has no subscriber now: forget it ``channel_ttl`` seconds after its last
        use, unless it is used again."""
        if self.channel_ttl is None:
            return
        now = time.monotonic()
        self._idle[channel] = now
        self._idle.move_to_end(channel)
        self._forget_before(now - self.channel_ttl)
        if (self._sweeper is None or self._sweeper.dead) and _thread_ident() == self._home:
            # A greenlet of the broker's own thread; publishers in other threads (whose hubs
            # may never run again) rely on the sweeps every publish and release do.
            self._sweeper = gevent.spawn(self._sweep)

    def _sweep(self) -> None:
        ttl = t.cast(float, self.channel_ttl)
        interval = min(SWEEP_INTERVAL, max(ttl / 4, 0.05))
        while self._idle:
            gevent.sleep(interval)
            self.forget_idle_channels()

    def forget_idle_channels(self) -> int:
        """Forget, now, every channel whose TTL has passed; return how many (the sweeper does
        this by itself; tests and shutdown hooks may call it)."""
        if self.channel_ttl is None:
            return 0
        with self._lock:
            return self._forget_before(time.monotonic() - self.channel_ttl)

    def _forget_before(self, expired: float) -> int:
        forgotten = 0
        while self._idle:
            name, since = next(iter(self._idle.items()))
            if since > expired:
                break
            del self._idle[name]
            state = self._channels.get(name)
            if state is not None and not state.subscribers:
                del self._channels[name]
                forgotten += 1
        return forgotten

    # -- counts and shutdown -----------------------------------------------------------------

    def subscriber_count(self, channel: str | None = None) -> int:
        """Open subscriptions on ``channel``, or on every channel when None."""
        if channel is not None:
            state = self._channels.get(channel)
            return len(state.subscribers) if state else 0
        return sum(len(state.subscribers) for state in self._channels.values())

    def channel_count(self) -> int:
        """Channels this broker holds: those with subscribers, and those published to within
        the TTL."""
        self.forget_idle_channels()
        return len(self._channels)

    def close(self) -> None:
        """Drop every subscriber and stop forgetting channels."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.kill(block=False)
        for state in list(self._channels.values()):
            for subscription in tuple(state.subscribers):
                subscription.drop(EndReason.BROKER_CLOSED)
        self._channels.clear()
        self._idle.clear()


class _Replay:
    """The events of one channel after ``last`` up to ``tail`` (the channel's head when the
    subscriber joined; what comes later is delivered live), a page at a time.

    Pages hold the backlog's own bytes objects: replaying costs no copy of an event.
    """

    __slots__ = ("_broker", "_last", "_state", "_tail")

    def __init__(self, broker: MemoryBroker, state: _Channel, last: int, tail: int) -> None:
        self._broker = broker
        self._state = state
        self._last = last
        self._tail = tail

    def next_page(self) -> list[bytes | Frame]:
        state = self._state
        with self._broker._lock:
            if self._last >= self._tail:
                return []
            backlog = state.backlog
            oldest = backlog[0][0] if backlog else state.head + 1
            if self._last + 1 < oldest:
                # Published over while the client read slowly: the rest is gone.
                self._last = self._tail
                return [MemoryBroker._reset(state, self._tail, "expired")]
            page: list[bytes | Frame] = []
            size = 0
            for number, data in itertools.islice(backlog, self._last + 1 - oldest, None):
                if number > self._tail:
                    break
                page.append(data)
                self._last = number
                size += len(data.data)
                if len(page) >= PAGE_EVENTS or size >= PAGE_BYTES:
                    break
            if not page:
                self._last = self._tail
            return page
