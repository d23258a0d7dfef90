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
import contextlib
import enum
import os
import secrets
import sys
import typing as t
import weakref

import gevent
import gevent.monkey

from .._config import default_of
from .._faults import FAULTS
from .._faults import Stage
from .._log import get_logger
from .._logsafe import escape
from .._wire import data_of
from .._wire import Frame
from ..exceptions import BrokerUnavailable
from ..exceptions import EventFieldError
from ..exceptions import SSECorsError
from ._names import check_name

if t.TYPE_CHECKING:
    from ..events import Event
    from ._presence import Presence

logger = get_logger(__name__)

#: The OS thread's id, even under monkey-patching (which makes ``_thread.get_ident`` a greenlet's).
thread_ident: t.Final[t.Callable[[], int]] = gevent.monkey.get_original("_thread", "get_ident")

#: Most events in one page of a replay (see :class:`Replay`).
PAGE_EVENTS: t.Final = 100
#: A page of a replay ends once its events hold this many bytes (or at :data:`PAGE_EVENTS`).
PAGE_BYTES: t.Final = 256 * 1024

#: A subscriber waits for its turn (its channel's subscription, its snapshot) at most this many
#: broker timeouts, and at least :data:`QUEUE_TIMEOUT_MIN` seconds, before its subscribe raises
#: ``BrokerUnavailable``: in a reconnect storm thousands queue, and whatever serves them shares
#: the worker's CPU with their requests. Each operation itself is bounded by the timeout.
QUEUE_TIMEOUT_FACTOR: t.Final = 10
QUEUE_TIMEOUT_MIN: t.Final = 30.0

#: Longest channel name, in bytes of UTF-8.
MAX_CHANNEL_BYTES: t.Final = 512
#: Characters of a channel generation token (see :func:`new_generation`).
GENERATION_LENGTH: t.Final = 6
_BASE36: t.Final = "0123456789abcdefghijklmnopqrstuvwxyz"
#: The generation of a channel that holds nothing (never published to, or forgotten): a
#: client given this id saw the channel empty, so whatever it holds later came after.
EMPTY_GENERATION: t.Final = "0" * GENERATION_LENGTH


def check_channel(channel: object) -> str:
    """Return ``channel`` if a broker can store it, else raise :class:`ChannelError`.

    A channel name is a non-empty ``str`` of at most :data:`MAX_CHANNEL_BYTES` bytes of UTF-8,
    without control characters (C0 ``U+0000``-``U+001F``, DEL ``U+007F``, C1
    ``U+0080``-``U+009F``) and without lone surrogates (which no UTF-8 encoder accepts). This is
    the one definition, for every broker and every kind of stream: every broker checks names
    here, before anything is stored or sent, so a bad name leaves nothing behind, and a name
    that passes can always be written on the wire (see :func:`~._multi.event_name`).

    .. versionadded:: 0.1
    """
    return check_name(channel, MAX_CHANNEL_BYTES)


def check_event_size(encoded: bytes, limit: int | None) -> None:
    """Refuse an encoded event larger than ``limit`` bytes (``SSECORS_MAX_EVENT_SIZE``).

    :raises EventFieldError: naming the size and the limit.
    """
    if limit is not None and len(encoded) > limit:
        raise EventFieldError(
            "data",
            f"<{len(encoded)} bytes>",
            f"the encoded event is {len(encoded)} bytes; SSECORS_MAX_EVENT_SIZE is {limit}",
        )


def new_generation() -> str:
    """A random token naming one life of a channel: ids carry it, so an id from another
    channel, from before a restart, or from before the channel was forgotten is told apart.

    Drawn from the system's randomness a batch at a time (every Redis publish passes one, used
    only when the channel has none yet), per process: a forked worker never reuses its
    parent's tokens.
    """
    pid = os.getpid()
    if _GENERATIONS.pid != pid or not _GENERATIONS.tokens:
        _GENERATIONS.pid = pid
        _GENERATIONS.tokens = [_token(secrets.randbits(64)) for _ in range(256)]
    try:
        return _GENERATIONS.tokens.pop()
    except IndexError:  # emptied by another thread meanwhile
        return _token(secrets.randbits(64))


def _token(bits: int) -> str:
    number = 1 + bits % (36**GENERATION_LENGTH - 1)  # never all zeros: "empty"
    chars = []
    for _ in range(GENERATION_LENGTH):
        number, digit = divmod(number, 36)
        chars.append(_BASE36[digit])
    return "".join(chars)


class _Generations:
    __slots__ = ("pid", "tokens")

    def __init__(self) -> None:
        self.pid = -1
        self.tokens: list[str] = []


_GENERATIONS: t.Final = _Generations()


def split_id(event_id: str) -> tuple[str, str] | None:
    """Split an id ``<generation>.<position>``; None unless it has that shape."""
    generation, dot, position = event_id.partition(".")
    if not dot or len(generation) != GENERATION_LENGTH or not position:
        return None
    if not all(char in _BASE36 for char in generation):
        return None
    return generation, position


def is_number(text: str) -> bool:
    """Whether ``text`` is a number as brokers write them in ids: ASCII digits only
    (``str.isdigit`` also accepts other scripts' digits, which ``int`` parses), no sign, no
    leading zero, at most 19 digits. Anything else is a position no broker assigned.
    """
    return (
        0 < len(text) < 20 and text.isascii() and text.isdigit() and (text == "0" or text[0] != "0")
    )


class EndReason(enum.StrEnum):
    """Why a stream ended (the ``reason`` of :data:`~flask_ssecors.stats.stream_closed`)."""

    #: The generator view returned.
    COMPLETE = "complete"
    #: The client left (a write failed).
    DISCONNECTED = "disconnected"
    #: The client did not accept a write within ``SSECORS_SEND_TIMEOUT``.
    SEND_TIMEOUT = "send-timeout"
    #: The client fell more than ``SSECORS_QUEUE_SIZE`` events behind.
    OVERFLOW = "overflow"
    #: The subscription was closed.
    CLOSED = "closed"
    #: The broker was closed.
    BROKER_CLOSED = "broker-closed"
    #: ``SSECORS_MAX_STREAM_AGE`` elapsed.
    MAX_AGE = "max-age"
    #: The stream token expired.
    TOKEN_EXPIRED = "token-expired"
    #: The worker is shutting down.
    SHUTDOWN = "shutdown"
    #: Turned away over capacity (the stream only carried a ``retry:`` hint).
    BUSY = "busy"
    #: Serving this subscriber raised; the fault was contained (see ``faults`` in the stats).
    ERROR = "error"
    #: The broker could not be read for this subscriber (a page of its replay); it resumes
    #: from its ``Last-Event-ID`` when it reconnects.
    BROKER_UNAVAILABLE = "broker-unavailable"


class SubscriptionClosed(SSECorsError):
    """Raised by :meth:`Subscription.get` once the subscription is closed or dropped; its
    message is the reason (:class:`EndReason`).

    .. versionchanged:: 0.1
        Derives from :class:`~flask_ssecors.exceptions.SSECorsError`.
    """


class _Waker:
    """Wakes waiting subscriptions in batches, from one hub callback per burst of deliveries.

    A publish that reaches ten thousand subscribers queues them here and schedules a single
    loop callback, which switches to each waiting greenlet in turn: no allocation per delivery
    (a ``gevent.event.Event`` per subscriber costs a callback object and a list per ``set()``,
    and garbage collection then walks every open stream).
    """

    __slots__ = ("loop", "ready", "scheduled", "thread")

    def __init__(self, loop: t.Any, thread: int) -> None:
        self.loop = loop
        #: The OS thread whose hub runs ``loop``.
        self.thread = thread
        self.ready: list[Subscription] = []
        self.scheduled = False

    def add(self, subscription: Subscription) -> None:
        self.ready.append(subscription)
        if not self.scheduled:
            self.scheduled = True
            if thread_ident() == self.thread:
                self.loop.run_callback(self.run)
            else:
                # Another OS thread (a thread pool, the development server's request
                # threads): wake the hub's loop, which may be asleep in its poll.
                self.loop.run_callback_threadsafe(self.run)

    def run(self) -> None:
        # The flag goes down before the list is taken, so an add from another thread in
        # between schedules another run rather than waiting for the next delivery.
        self.scheduled = False
        ready, self.ready = self.ready, []
        for subscription in ready:
            subscription._queued = False
        for subscription in ready:
            waiter = subscription._waiter
            if waiter is not None:
                subscription._waiter = None
                try:
                    waiter.switch()
                except BaseException:
                    # A greenlet that ends with an error must not stall the others.
                    gevent.get_hub().handle_error(waiter, *sys.exc_info())


_wakers: weakref.WeakKeyDictionary[t.Any, _Waker] = weakref.WeakKeyDictionary()


def _waker_for(hub: t.Any) -> _Waker:
    waker = _wakers.get(hub)
    if waker is None:
        waker = _wakers[hub] = _Waker(hub.loop, hub.thread_ident)
    return waker


class Replay(t.Protocol):
    """The rest of a subscriber's replay, read a page at a time as the client reads.

    A broker that has more to replay than one page hands the subscription one of these
    (:meth:`Subscription.replay_from`): memory per resuming client then stays near one page,
    whatever the backlog, and replayed events never count against the live queue's bound.

    .. versionadded:: 0.1
    """

    def next_page(self) -> list[bytes | Frame]:
        """The next encoded events (bytes, or frames), oldest first; ``[]`` once the replay
        is complete.

        Called in the greenlet that reads the subscription; it may wait for the broker.
        A replay that cannot go on (the events were trimmed meanwhile) ends with the reset
        event.

        :raises flask_ssecors.exceptions.BrokerUnavailable: when the broker cannot be read now
            (the subscriber is dropped, and resumes from its ``Last-Event-ID`` when it
            reconnects).
        """
        ...


class Subscription:
    """One subscriber's view of one channel: replayed events first, then live ones.

    Brokers create these; a stream view returns one (``return sse.subscribe(...)``) and the
    stream response reads it, in the thread that created it. :meth:`deliver`, :meth:`drop` and
    :meth:`wake` may be called from any thread: the waiting reader is woken through its hub's
    thread-safe callback. A waiting :meth:`get` costs no greenlet and no allocation per
    delivered event: the waiting greenlet is switched to directly (see :class:`_Waker`), and
    its heartbeat timeout is one reusable loop timer.

    Replayed events (:meth:`preload`, :meth:`replay_from`) and live ones (:meth:`deliver`) are
    kept apart: replayed events come first and never count against :attr:`limit`, and a long
    replay is read a page at a time, as the client reads.

    :param channel: the channel name.
    :param limit: how many undelivered live events may wait before the subscriber is dropped.
    :param on_close: called once when the subscription closes, to unregister it.
    """

    __slots__ = (
        "_hub",
        "_items",
        "_page",
        "_queued",
        "_release",
        "_replay",
        "_sink",
        "_timed_out",
        "_timer",
        "_timer_interval",
        "_waiter",
        "_waker",
        "channel",
        "drop_reason",
        "limit",
    )

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
        #: Live events, at most ``limit`` of them.
        self._items: collections.deque[t.Any] = collections.deque()
        #: Replayed events of the current page, sent before any live event.
        self._page: collections.deque[bytes | Frame] = collections.deque()
        #: Where further pages of the replay come from, until it is complete.
        self._replay: Replay | None = None
        self._release = on_close
        #: Where delivered events go instead of the queue (see :meth:`forward`).
        self._sink: t.Callable[[Subscription, bytes | Frame | None], None] | None = None
        self._hub = gevent.get_hub()
        self._waker = _waker_for(self._hub)
        self._waiter: t.Any = None
        self._queued = False
        self._timed_out = False
        self._timer: t.Any = None
        self._timer_interval = 0.0

    @property
    def closed(self) -> bool:
        """Whether the subscription delivers nothing more."""
        return self.drop_reason is not None

    @property
    def replaying(self) -> bool:
        """Whether replayed events are still to be read before live ones.

        .. versionadded:: 0.1
        """
        return bool(self._page) or self._replay is not None

    def __len__(self) -> int:
        return len(self._items) + len(self._page)

    def _notify(self) -> None:
        if self._waiter is not None and not self._queued:
            self._queued = True
            self._waker.add(self)

    def preload(self, items: t.Iterable[bytes | Frame]) -> None:
        """Queue replayed events; call it before the subscription receives live events.

        Replayed events come before every live event and are not counted in :attr:`limit`.
        """
        self._page.extend(items)
        if self._page:
            self._notify()

    def replay_from(self, replay: Replay) -> None:
        """Read the rest of the replay from ``replay``, a page at a time, after the events
        already preloaded and before any live event.

        .. versionadded:: 0.1
        """
        self._replay = replay
        self._notify()

    def deliver(self, item: bytes | Frame) -> bool:
        """Queue one encoded live event (its bytes, or a frame that carries its id and type
        beside them); drop the subscriber if it is too far behind.

        :return: False when the subscriber was dropped (now or earlier).
        """
        if self.drop_reason is not None:
            return False
        if self._sink is not None:
            self._sink(self, item)
            return True
        if len(self._items) >= self.limit:
            self.drop(EndReason.OVERFLOW)
            return False
        self._items.append(item)
        if self._waiter is not None and not self._queued:
            self._queued = True
            self._waker.add(self)
        return True

    def get(self, timeout: float | None = None) -> bytes | None:
        """The next encoded event, or None when ``timeout`` seconds passed without one.

        A replay read in pages reads its next page here, when the previous one was sent.

        :raises SubscriptionClosed: when the subscription was closed or dropped; events that
            were queued before a drop for overflow are not delivered (the client resumes from
            the backlog instead).
        """
        if self.drop_reason is not None:
            raise SubscriptionClosed(self.drop_reason)
        if self._page or self._replay is not None:
            replayed = self.next_replayed()
            if replayed is not None:
                return data_of(replayed)
            if self.drop_reason is not None:
                raise SubscriptionClosed(self.drop_reason)
        if not self._items:
            self._wait(timeout)
            if self.drop_reason is not None:
                raise SubscriptionClosed(self.drop_reason)
            if not self._items:
                return None
        return data_of(self._items.popleft())

    def next_replayed(self) -> bytes | Frame | None:
        """The next replayed event, reading the replay's next page when needed; None once
        the replay is complete (or the subscriber was dropped because it could not be read).

        A stream of several channels reads its channels' replays this way.

        .. versionadded:: 0.1
        """
        while True:
            if self._page:
                return self._page.popleft()
            replay = self._replay
            if replay is None or self.drop_reason is not None:
                return None
            try:
                page = replay.next_page()
            except BrokerUnavailable as error:
                logger.info("replay on channel %s stopped: %s", escape(self.channel), error)
                self.drop(EndReason.BROKER_UNAVAILABLE)
                return None
            except Exception:
                FAULTS.record(Stage.REPLAY, "the subscriber was dropped", self.channel)
                self.drop(EndReason.ERROR)
                return None
            if self._replay is not replay:  # dropped meanwhile
                return None
            if not page:
                self._replay = None
                return None
            self._page.extend(page)

    def _wait(self, timeout: float | None) -> None:
        """Block this greenlet until an event, a drop, a wake-up, or the timeout."""
        timer = None
        self._timed_out = False
        if timeout is not None:
            if timeout <= 0:
                return
            timer = self._timer
            if timer is None or self._timer_interval != timeout:
                if timer is not None:
                    timer.close()
                # A repeating timer restarted with again() always runs a full interval.
                timer = self._timer = self._hub.loop.timer(timeout, timeout)
                self._timer_interval = timeout
            timer.again(self._on_timeout)
        self._waiter = gevent.getcurrent()
        try:
            while True:
                # Checked again once the waiter is set: an event delivered from another OS
                # thread just before would otherwise wait for the timeout.
                if self._items or self._timed_out or self.drop_reason is not None:
                    return
                self._hub.switch()
                if self._items or self._timed_out or self.drop_reason is not None:
                    return
                self._waiter = gevent.getcurrent()  # woken for nothing: wait on
        finally:
            self._waiter = None
            if timer is not None:
                timer.stop()

    def _on_timeout(self) -> None:
        self._timed_out = True
        self._notify()

    def wake(self) -> None:
        """Wake a waiting :meth:`get` without an event: it returns None, as on a timeout.

        .. versionadded:: 0.1
        """
        self._timed_out = True
        self._notify()

    def drop(self, reason: str) -> None:
        """Cut the subscriber loose (idempotent); a waiting :meth:`get` wakes up and raises."""
        if self.drop_reason is not None:
            return
        self.drop_reason = reason
        self._items.clear()
        self._page.clear()
        self._replay = None
        self._notify()
        if self._timer is not None and self._waiter is None:
            self._timer.close()
            self._timer = None
        release, self._release = self._release, None
        if release is not None:
            release(self)
        if self._sink is not None:
            self._sink(self, None)

    def chain_release(self, callback: t.Callable[[Subscription], None]) -> None:
        """Call ``callback(self)`` once when the subscription closes or is dropped, after the
        broker's own release; at once if it already is. Brokers use it for presence: a
        member's stream leaves when its subscription ends, whatever ended it.

        .. versionadded:: 0.1
        """
        if self.drop_reason is not None:
            callback(self)
            return
        first = self._release
        if first is None:
            self._release = callback
            return

        def both(subscription: Subscription) -> None:
            try:
                first(subscription)
            finally:
                callback(subscription)

        self._release = both

    def forward(self, sink: t.Callable[[Subscription, bytes | Frame | None], None]) -> None:
        """Hand every live event to ``sink(self, event)`` from now on, those queued first,
        instead of queueing them; ``sink(self, None)`` says the subscription was dropped.
        Replayed events stay here, for :meth:`next_replayed`. A stream of several channels
        reads its channels' subscriptions this way.

        .. versionadded:: 0.1
        """
        self._sink = sink
        queued = list(self._items)
        self._items.clear()
        for item in queued:
            sink(self, item)

    def close(self) -> None:
        """Release the subscription (idempotent)."""
        self.drop(EndReason.CLOSED)


def deliver_contained(subscription: Subscription, item: bytes | Frame) -> None:
    """:meth:`Subscription.deliver`, for a loop that serves many: what this one subscriber's
    delivery raises is counted and logged (:data:`~flask_ssecors._faults.FAULTS`), and the
    subscriber is dropped (it resumes from the backlog when it reconnects); the loop goes on.
    """
    try:
        subscription.deliver(item)
    except Exception:
        FAULTS.record(Stage.DELIVER, "the subscriber was dropped", subscription.channel)
        with contextlib.suppress(Exception):
            subscription.drop(EndReason.ERROR)


class Broker(t.Protocol):
    """What every broker provides. Brokers are created once per app, at ``init_app``.

    A broker shared by several processes delivers to each process the events of the channels
    its subscribers follow and no others: a worker's cost per event does not grow with the
    deployment's event rate nor with the number of channels it follows (the Redis broker does
    it with sharded pub/sub, ``tests/live/test_scale_out_live.py``). Whatever carries events
    live may lose them on a fault; the broker then repairs from each channel's backlog before
    delivering anything later, so subscribers get every event once, in order, or the reset
    event.
    """

    def publish(self, channel: str, event: Event) -> str:
        """Assign ``event`` an id, keep it in the channel's backlog, and deliver it.

        :return: the id the broker assigned (monotonic per channel).
        :raises flask_ssecors.exceptions.BrokerUnavailable: when nothing could be published.
        """
        ...

    def subscribe(
        self,
        channel: str,
        last_event_id: str | None = None,
        *,
        limit: int = default_of("queue_size"),
        member: str | None = None,
        announce: bool = False,
    ) -> Subscription:
        """Subscribe to ``channel``.

        With ``last_event_id``, the events published strictly after it are queued first; when the
        id is unknown or older than the backlog, a reset event (see
        :data:`flask_ssecors.events.RESET_EVENT`) comes first instead.

        With ``member``, the subscription counts in the channel's :meth:`presence` until it
        closes; with ``announce`` too, the member's first stream on the channel publishes
        the join event and its last one the leave event (see
        :mod:`flask_ssecors.brokers._presence`). The extension passes both only for a stream
        that declared a member, so a broker without presence serves every other stream.
        """
        ...

    def presence(
        self, channel: str, *, max_members: int = default_of("presence_max_members")
    ) -> Presence:
        """Who holds streams on ``channel``, across every process sharing the broker.

        :raises BrokerUnavailable: when a shared broker cannot be reached within its timeout.

        .. versionadded:: 0.1
        """
        ...

    def presence_stats(self) -> dict[str, int]:
        """This process's presence: ``members`` ((channel, member) pairs with a stream here),
        ``streams`` (streams that declared a member) and ``updates`` (changes written).

        .. versionadded:: 0.1
        """
        ...

    def subscriber_count(self, channel: str | None = None) -> int:
        """Open subscriptions on ``channel``, or on all channels."""
        ...

    def head(self, channel: str) -> str:
        """An id of ``channel``'s current position: resuming from it replays what is published
        afterwards (a stream of several channels starts each channel there).

        .. versionadded:: 0.1
        """
        ...

    def channel_count(self) -> int:
        """Channels the broker holds in this process (memory) or follows (Redis).

        .. versionadded:: 0.1
        """
        ...

    def close(self) -> None:
        """Drop every subscriber and release resources."""
        ...
