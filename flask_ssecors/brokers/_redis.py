"""The Redis broker: fan-out across workers and hosts (``SSECORS_BROKER_URL = "redis://..."``).

Each channel keeps its backlog in a Redis Stream, for ``Last-Event-ID`` replay; each publish
appends the event there and sends it, in the same atomic script, on the channel's sharded
pub/sub channel (see :mod:`flask_ssecors.brokers._redis_layout`). Stream ids are global and
ordered, so a client can reconnect to any worker and resume after its ``Last-Event-ID``.

This module is the broker's facade; its parts live beside it. Per worker process, **one**
listening connection (:mod:`._redis_listener`; one per shard on a cluster) is subscribed to the
channels the worker follows, and dispatches each event to their local subscribers: a worker
receives the events of its own channels and no others, and the cost of one does not grow with
the number of channels it follows. The first subscriber of a channel in a process waits for
its subscription (batched with every other channel joining meanwhile: a connect storm costs a
few commands); later ones cost no Redis command at all. One with ``Last-Event-ID`` needs a
snapshot of its channel (its tail and the first page of entries after the id, read atomically
by a script; later pages are read the same way as the client reads, see
:class:`~._base.Replay`); snapshots are batched on their own connection
(:mod:`._redis_snapshots`), so that thousands of clients reconnecting at once never take a
connection from publishing. Publishing (:mod:`._redis_publish`, shared with
:class:`~flask_ssecors.Publisher`) uses a small, bounded pool. Connections are named
``ssecors-listen-<pid>``, ``ssecors-snap-<pid>`` and ``ssecors-cmd-<pid>`` in ``CLIENT LIST``.

Pub/sub delivers at most once: when the listening connection is lost, the listener reconnects,
subscribes again, and catches each channel up from its stream, after the last event it
dispatched, before anything newer; a channel whose generation changed (Redis lost its data,
or the channel was forgotten) gets the reset event.

Faults: when Redis goes away, open streams stay open (heartbeats go on); the listener reconnects
with backoff and then delivers what was published since, in order, without duplicates.
:meth:`RedisBroker.publish` raises :class:`~flask_ssecors.exceptions.BrokerUnavailable` within
the broker timeout rather than dropping or hanging.
"""

from __future__ import annotations

import os
import typing as t

import gevent
import gevent.lock
import gevent.monkey

from .._config import default_of
from .._log import get_logger
from .._urls import parse_url
from .._wire import Frame
from ..exceptions import BrokerUnavailable
from ._base import check_channel
from ._base import EndReason
from ._base import PAGE_EVENTS
from ._base import split_id
from ._base import Subscription
from ._base import thread_ident
from ._presence import check_member
from ._presence import Presence
from ._redis_conn import client_for
from ._redis_conn import disconnect
from ._redis_conn import redis as redis
from ._redis_layout import EMPTY_GENERATION
from ._redis_layout import format_stream_id
from ._redis_layout import frame_at
from ._redis_layout import Keys
from ._redis_layout import parse_position
from ._redis_layout import PUBLISH_SCRIPT
from ._redis_layout import reset_at
from ._redis_layout import StreamId
from ._redis_layout import ZERO
from ._redis_listener import Joined
from ._redis_listener import Listener
from ._redis_presence import RedisPresence
from ._redis_publish import LeanSender
from ._redis_publish import RedisPublishing
from ._redis_resp import ProtocolError
from ._redis_snapshots import QUEUE_TIMEOUT_FACTOR
from ._redis_snapshots import QUEUE_TIMEOUT_MIN
from ._redis_snapshots import Snapshot
from ._redis_snapshots import SnapshotBatcher
from ._redis_snapshots import SnapshotRequest

if t.TYPE_CHECKING:
    from ..events import Event

logger = get_logger(__name__)

#: Per OS thread, even under monkey-patching (where ``threading.local`` is per greenlet).
_ThreadLocal: t.Final[t.Callable[[], t.Any]] = gevent.monkey.get_original("threading", "local")
_RLock: t.Final[t.Callable[[], t.Any]] = gevent.monkey.get_original("threading", "RLock")
_Thread: t.Final[t.Any] = gevent.monkey.get_original("threading", "Thread")


class RedisBroker:
    """Redis Streams behind the broker protocol.

    :param url: a ``redis://``, ``rediss://`` or ``unix://`` URL; ``redis+sentinel://`` for a
        primary that Sentinels watch; ``redis+cluster://`` for a Redis Cluster (see
        :mod:`flask_ssecors.brokers._urls`).
    :param backlog: events kept per channel for replay (``MAXLEN ~``, so a little more may stay
        in Redis; replay never goes further back than this many events).
    :param timeout: bound in seconds on each publish or snapshot (``SSECORS_BROKER_TIMEOUT``).
    :param channel_ttl: seconds after which a channel with no subscriber and no publish is
        forgotten (its keys expire); None keeps channels for good (``SSECORS_CHANNEL_TTL``).
    :param max_event_size: largest encoded event accepted, in bytes; None for no limit.
    :param prefix: key prefix in Redis.
    :param pool_size: command connections per process, for publishing.
    :param min_replicas: replicas that must acknowledge each publish (Redis ``WAIT``) before
        :meth:`publish` returns (``SSECORS_BROKER_MIN_REPLICAS``).
    :param presence_ttl: seconds within which the members of a process that died leave
        (``SSECORS_PRESENCE_TTL``; see :mod:`flask_ssecors.brokers._redis_presence`).
    :param presence_max_members: joins are announced while a channel has at most this many
        members (``SSECORS_PRESENCE_MAX_MEMBERS``).
    """

    def __init__(
        self,
        url: str,
        *,
        backlog: int = default_of("backlog"),
        timeout: float = default_of("broker_timeout"),
        channel_ttl: float | None = default_of("channel_ttl"),
        max_event_size: int | None = default_of("max_event_size"),
        prefix: str = "ssecors:",
        pool_size: int = 8,
        min_replicas: int = default_of("broker_min_replicas"),
        presence_ttl: float = default_of("presence_ttl"),
        presence_max_members: int = default_of("presence_max_members"),
    ) -> None:
        self.url = url
        self.presence_ttl = presence_ttl
        self.presence_max_members = presence_max_members
        self.address = parse_url(url)
        self.min_replicas = min_replicas
        self.backlog = backlog
        self.timeout = timeout
        #: How long a first subscriber waits for its channel's subscription (see subscribe).
        self._patience = max(QUEUE_TIMEOUT_FACTOR * timeout, QUEUE_TIMEOUT_MIN)
        self.channel_ttl = channel_ttl
        self.max_event_size = max_event_size
        self.prefix = prefix
        self.pool_size = pool_size
        self.keys = Keys(prefix)
        self._publishing = RedisPublishing(
            prefix=prefix,
            backlog=backlog,
            channel_ttl=channel_ttl,
            max_event_size=max_event_size,
            min_replicas=min_replicas,
            timeout=timeout,
        )
        self._pid = -1
        self._reset_process_state()

    def _reset_process_state(self) -> None:
        """(Re)create per-process state; called at creation, and again after a fork."""
        self._pid = os.getpid()
        self._commands = client_for(
            self.url,
            timeout=self.timeout,
            max_connections=self.pool_size,
            name=f"ssecors-cmd-{self._pid}",
        )
        self._publish_script = self._commands.register_script(PUBLISH_SCRIPT)
        #: The publish path without redis-py's per-command work, where it applies (one server
        #: or Sentinel, no WAIT); its connections are named like the command pool's.
        self._lean = (
            LeanSender(
                client_for(
                    self.url,
                    timeout=self.timeout,
                    max_connections=self.pool_size,
                    name=f"ssecors-cmd-{self._pid}",
                )
            )
            if self.address.kind != "cluster" and not self.min_replicas
            else None
        )
        self._slots = gevent.lock.BoundedSemaphore(self.pool_size)
        self._home = thread_ident()
        self._threads = _ThreadLocal()
        #: Starts the background work once, from any OS thread.
        self._starting = _RLock()
        self._background: t.Any = None
        self._batcher = SnapshotBatcher(
            client_for(
                self.url,
                timeout=self.timeout,
                max_connections=1,
                name=f"ssecors-snap-{self._pid}",
            ),
            keys=self.keys,
            cluster=self.address.kind == "cluster",
            timeout=self.timeout,
        )
        self._listener = Listener(
            url=self.url,
            address=self.address,
            keys=self.keys,
            backlog=self.backlog,
            channel_ttl=self.channel_ttl,
            timeout=self.timeout,
            pid=self._pid,
            commands=self._commands,
            run=self._run,
        )
        self._presence = RedisPresence(
            run=self._run,
            keys=self.keys,
            ttl=self.presence_ttl,
            max_announced=self.presence_max_members,
            backlog=self.backlog,
            channel_ttl=self.channel_ttl,
        )
        self._greenlets: list[gevent.Greenlet] = []

    @property
    def connected(self) -> bool:
        """Whether the listener is connected (for statistics and health checks)."""
        return self._listener.connected

    def _check_pid(self) -> None:
        if self._pid != os.getpid():
            self._reset_process_state()

    # -- commands ----------------------------------------------------------------------------

    def _run(self, what: str, call: t.Callable[[redis.Redis[bytes]], t.Any]) -> t.Any:
        """Run commands on a pooled connection; raise BrokerUnavailable after ``timeout``.

        The bound covers waiting for a free connection, connecting, and the answer. From
        another OS thread than the one the broker serves (a thread pool, the development
        server's request threads), each thread uses a connection of its own.
        """
        timer = gevent.Timeout(self.timeout)
        timer.start()
        client = self._commands
        try:
            if thread_ident() != self._home:
                client = self._thread_client()
                return call(client)
            with self._slots:
                return call(client)
        except gevent.Timeout as expired:
            if expired is not timer:
                raise
            # Cut off mid-command, a connection may still owe an answer that the next command
            # would read as its own: drop the connections rather than reuse them.
            disconnect(client)
            raise BrokerUnavailable(
                f"{what}: no answer from Redis within {self.timeout:g} s"
            ) from None
        except (redis.RedisError, OSError, ProtocolError) as error:
            raise BrokerUnavailable(f"{what}: {error}") from error
        finally:
            timer.close()

    def _thread_client(self) -> redis.Redis[bytes]:
        client: redis.Redis[bytes] | None = getattr(self._threads, "client", None)
        if client is None:
            client = self._threads.client = client_for(
                self.url,
                timeout=self.timeout,
                max_connections=1,
                name=f"ssecors-thread-{self._pid}",
            )
        return client

    def publish(self, channel: str, event: Event) -> str:
        """Append to the channel's stream and send to its subscribers; return
        ``<generation>.<stream id>``.

        An ``id`` given to the event is replaced by the one the broker assigns.

        :raises ChannelError: for a channel name no broker can store.
        :raises EventFieldError: for an event above ``max_event_size``.
        :raises BrokerUnavailable: when Redis does not confirm within the timeout.
        """
        self._check_pid()
        keys, args = self._publishing.prepare(channel, event)
        lean = self._lean
        if lean is not None and thread_ident() == self._home:
            return t.cast(str, self._run("publish", lambda _: lean.send(keys, args)))
        script = self._publish_script
        return t.cast(
            str,
            self._run("publish", lambda client: self._publishing.send(client, script, keys, args)),
        )

    # -- subscribing -------------------------------------------------------------------------

    def subscribe(
        self,
        channel: str,
        last_event_id: str | None = None,
        *,
        limit: int = default_of("queue_size"),
        member: str | None = None,
        announce: bool = False,
    ) -> Subscription:
        """Subscribe; replay strictly after ``last_event_id`` (see :class:`.base.Broker`);
        with ``member``, counted in the channel's presence until the subscription ends.

        Without ``last_event_id`` the subscription receives what is published from now on
        (the first subscriber of a channel in this process waits for the channel's
        subscription; later ones cost no round trip to Redis). With one, the subscriber's
        snapshot of the channel (taken in a batch) gives what came after the id; what the
        listener reads meanwhile is merged after it. Either way nothing is missed and nothing
        is delivered twice.

        :raises ChannelError: for a channel name no broker can store.
        :raises BrokerUnavailable: when Redis cannot be reached within the timeout.
        """
        self._check_pid()
        check_channel(channel)
        if member is not None:
            check_member(member)
        self._start()
        subscription = self._subscribe(channel, last_event_id, limit)
        if member is not None and not subscription.closed:
            presence = self._presence
            presence.join(channel, member, announce=announce)
            subscription.chain_release(lambda _: presence.leave(channel, member))
        return subscription

    def _subscribe(self, channel: str, last_event_id: str | None, limit: int) -> Subscription:
        if not self._listener.ready.wait(self.timeout, home=thread_ident() == self._home):
            raise BrokerUnavailable(
                f"subscribe: the listener could not read from Redis within {self.timeout:g} s"
            )
        subscription = Subscription(channel, limit, self._release)
        listener = self._listener
        with listener.lock:
            state = listener.follow(channel)
            live: list[Joined] = []
            if last_event_id is None:
                state.subscribers.add(subscription)
            else:
                state.joining[subscription] = live
            waiter = listener.waiter(state)
        # In a connect storm thousands of channels queue for their subscription, and the
        # listener shares the worker's CPU with their requests: like a snapshot's turn, the
        # wait is bounded loosely (a listener that is not connected was waited for above).
        patience = self._patience
        if waiter is not None and not waiter.wait(patience, home=thread_ident() == self._home):
            subscription.close()
            raise BrokerUnavailable(
                f"subscribe: Redis did not confirm the subscription to the channel within "
                f"{patience:g} s"
            )
        if last_event_id is None:
            return subscription
        parsed = _parse_event_id(last_event_id)
        try:
            snapshot = self._snapshot(channel, parsed)
        except BrokerUnavailable:
            subscription.close()  # released: the channel is unfollowed if it was its last
            raise
        # Under the lock (nothing yields there): merge the snapshot with what arrived live.
        with self._listener.lock:
            if state.joining.pop(subscription, None) is None or subscription.closed:
                subscription.close()
                return subscription
            replay, rest = self._replay(channel, snapshot, parsed)
            tail = snapshot.tail
            if state.last is None or state.last < tail:
                state.floors[subscription] = tail
            state.subscribers.add(subscription)
            subscription.preload(replay)
            if rest is not None:
                subscription.replay_from(rest)
            for at, data in live:
                if at is None or at > tail:
                    subscription.deliver(data)
        return subscription

    def head(self, channel: str) -> str:
        """The id of ``channel``'s last entry (``000000.0-0`` when it holds none), read in the
        next snapshot batch.

        :raises BrokerUnavailable: when Redis cannot be reached within the timeout.
        """
        self._check_pid()
        check_channel(channel)
        self._start()
        snapshot = self._snapshot(channel, None)
        if snapshot.generation is None:
            return f"{EMPTY_GENERATION}.0-0"
        return f"{snapshot.generation}.{format_stream_id(snapshot.tail)}"

    def _snapshot(self, channel: str, parsed: tuple[str, StreamId] | None) -> Snapshot:
        """Queue a snapshot of ``channel`` for the next batch and wait for it: with the
        client's position, the first page of entries from it on (inclusive, so that the
        position is known to be an entry of this stream)."""
        if parsed is None:
            return self._batcher.read(SnapshotRequest(channel, ""))
        if parsed[0] == EMPTY_GENERATION:
            return self._batcher.read(SnapshotRequest(channel, "-", count=PAGE_EVENTS))
        return self._batcher.read(
            SnapshotRequest(channel, format_stream_id(parsed[1]), count=PAGE_EVENTS + 1)
        )

    def _replay(
        self, channel: str, snapshot: Snapshot, parsed: tuple[str, StreamId] | None
    ) -> tuple[list[Frame], _Replay | None]:
        """The first page of frames after the client's position, or the reset event; and,
        when the snapshot's page did not reach the tail, where the rest is read from.

        The position must be one the channel gave out in its current generation (an entry
        still kept, or the last one), or the empty channel's ``0-0`` (then everything kept
        follows, unless some was trimmed). Anything else gets the reset event: ``expired``
        when entries the client would need were trimmed, ``unknown-id`` otherwise.
        """
        generation, tail, trimmed, first, entries = snapshot
        if generation is None:
            if parsed == (EMPTY_GENERATION, ZERO):
                return [], None
            return [reset_at(EMPTY_GENERATION, ZERO, "unknown-id")], None
        if parsed is None:
            return [reset_at(generation, tail, "unknown-id")], None
        claimed, position = parsed
        if claimed == EMPTY_GENERATION:
            if position != ZERO:
                return [reset_at(generation, tail, "unknown-id")], None
            if trimmed:
                return [reset_at(generation, tail, "expired")], None
        elif claimed != generation or position > tail:
            return [reset_at(generation, tail, "unknown-id")], None
        elif position == tail:
            return [], None
        elif entries and entries[0][0] == position:
            entries = entries[1:]
        elif trimmed and (first is None or position < first):
            return [reset_at(generation, tail, "expired")], None
        else:
            # Never an entry of this stream.
            return [reset_at(generation, tail, "unknown-id")], None
        page = [(at, data) for at, data in entries if at <= tail]
        last = page[-1][0] if page else position
        rest = _Replay(self, channel, generation, last, tail) if last < tail else None
        return [frame_at(generation, at, data) for at, data in page], rest

    def _release(self, subscription: Subscription) -> None:
        with self._listener.lock:
            state = self._listener.channels.get(subscription.channel)
            if state is None:
                return
            joining = state.joining.pop(subscription, None)
            if joining is None and subscription not in state.subscribers:
                return
            state.subscribers.discard(subscription)
            state.floors.pop(subscription, None)
            if state.idle:
                self._listener.unfollow(state)

    def presence(
        self, channel: str, *, max_members: int = default_of("presence_max_members")
    ) -> Presence:
        """Who holds streams on ``channel`` across every worker sharing this Redis (this
        process's own changes are written first).

        :raises BrokerUnavailable: when Redis cannot be reached within the timeout.
        """
        self._check_pid()
        self._start()
        return self._presence.read(channel, max_members)

    def presence_stats(self) -> dict[str, int]:
        """See :meth:`.base.Broker.presence_stats`."""
        if self._pid != os.getpid():
            return {"members": 0, "streams": 0, "updates": 0}
        with self._presence.lock:
            return self._presence.local.stats()

    def subscriber_count(self, channel: str | None = None) -> int:
        """Open subscriptions in this process on ``channel``, or on every channel."""
        if self._pid != os.getpid():
            return 0
        if channel is not None:
            state = self._listener.channels.get(channel)
            return len(state.subscribers) + len(state.joining) if state else 0
        return sum(len(s.subscribers) + len(s.joining) for s in self._listener.channels.values())

    def channel_count(self) -> int:
        """Channels this process follows (those with local subscribers)."""
        return len(self._listener.channels) if self._pid == os.getpid() else 0

    # -- the background greenlets ---------------------------------------------------------------

    def _start(self) -> None:
        """Start the listener, the snapshot sender and the TTL refresher, once per process.

        They are greenlets of the broker's own thread when it subscribes there (a gevent
        server's hub, or a test's). A first subscriber in another OS thread (the development
        server serves each request in a thread of its own, whose hub stops with it) starts
        them in a daemon thread of their own, with its own hub.
        """
        with self._listener.lock:
            if self._greenlets and not self._greenlets[0].dead:
                return
            if self._background is not None and self._background.is_alive():
                return
            self._listener.ready.clear()
            if thread_ident() == self._home:
                self._spawn_background()
            else:
                self._background = _Thread(
                    target=self._run_background, name="flask-ssecors-redis", daemon=True
                )
                self._background.start()

    def _spawn_background(self) -> list[gevent.Greenlet]:
        listener = self._listener
        listeners = [gevent.spawn(listener.listen, group) for group in listener.groups]
        self._greenlets = [
            *listeners,
            gevent.spawn(listener.manage),
            gevent.spawn(self._batcher.run),
            gevent.spawn(self._presence.manage),
        ]
        if self.channel_ttl is not None:
            self._greenlets.append(gevent.spawn(listener.refresh_ttls))
        return self._greenlets

    def _run_background(self) -> None:
        gevent.joinall(self._spawn_background())

    def close(self) -> None:
        """Stop the listener, drop every subscriber (their members leave: written at once,
        from the broker's thread) and close the connections."""
        self._listener.stop()
        self._batcher.stop()
        self._presence.stop()
        for greenlet in self._greenlets:
            greenlet.kill(block=True, timeout=1)
        for state in list(self._listener.channels.values()):
            for subscription in (*state.subscribers, *state.joining):
                subscription.drop(EndReason.BROKER_CLOSED)
        if self._pid == os.getpid() and thread_ident() == self._home:
            self._presence.leave_all()
        self._listener.channels.clear()
        self._listener.leaving.clear()
        for client in (self._commands, self._batcher.client):
            disconnect(client)
        if self._lean is not None:
            self._lean.close()


class _Replay:
    """The entries of one channel after ``last`` up to ``tail`` (the channel's tail when the
    subscriber took its snapshot; later entries are delivered live), read a page at a time
    in the snapshot batches, as the client reads."""

    __slots__ = ("_broker", "_channel", "_generation", "_last", "_tail")

    def __init__(
        self,
        broker: RedisBroker,
        channel: str,
        generation: str,
        last: StreamId,
        tail: StreamId,
    ) -> None:
        self._broker = broker
        self._channel = channel
        self._generation = generation
        self._last = last
        self._tail = tail

    def next_page(self) -> list[bytes | Frame]:
        if self._last >= self._tail:
            return []
        broker = self._broker
        request = SnapshotRequest(
            self._channel,
            f"({format_stream_id(self._last)}",
            format_stream_id(self._tail),
            PAGE_EVENTS,
        )
        snapshot = broker._batcher.read(request)
        last, self._last = self._last, self._tail  # unless a page follows, the replay ends
        if snapshot.generation != self._generation:
            # Forgotten, or Redis lost its data, while the client read: the listener resets
            # the live part; the rest of this replay is gone.
            generation = snapshot.generation or EMPTY_GENERATION
            return [reset_at(generation, ZERO, "channel-restarted")]
        if snapshot.first is None or snapshot.first > last:
            # Trimmed while the client read slowly: the entries it still needed are gone.
            return [reset_at(self._generation, self._tail, "expired")]
        page = [(at, data) for at, data in snapshot.entries if at <= self._tail]
        if page:
            self._last = page[-1][0]
        return [frame_at(self._generation, at, data) for at, data in page]


def _parse_event_id(value: str) -> tuple[str, StreamId] | None:
    """Split ``<generation>.<ms>-<seq>``; None unless it is exactly how this broker writes
    ids."""
    parts = split_id(value)
    if parts is None:
        return None
    position = parse_position(parts[1])
    return (parts[0], position) if position is not None else None
