"""The Redis broker: fan-out across workers and hosts (``SSECORS_BROKER_URL = "redis://..."``).

Each channel keeps its backlog in a Redis Stream, for ``Last-Event-ID`` replay; each publish
also appends the event to one of a fixed number of shard streams (see
:mod:`flask_ssecors.brokers._redis_layout`), in one atomic script. Stream ids are global and
ordered, so a client can reconnect to any worker and resume after its ``Last-Event-ID``.

Per worker process, **one** listening connection reads the shard streams (``XREAD BLOCK``) and
dispatches each entry to the local subscribers of its channel, if any: the cost of a read does
not grow with the number of channels the worker follows. A subscriber without
``Last-Event-ID`` costs no Redis command at all. One with an id needs a snapshot of its channel
(its tail and the first page of entries after the id, read atomically by a script; later pages
are read the same way as the client reads, see :class:`~._base.Replay`); snapshots are batched,
up to :data:`SNAPSHOT_BATCH` per round trip, on their own connection, so that thousands of
clients reconnecting at once never take a connection from publishing. Publishing uses a small,
bounded pool. Connections are named ``ssecors-listen-<pid>``, ``ssecors-snap-<pid>`` and
``ssecors-cmd-<pid>`` in ``CLIENT LIST``.

Each shard entry carries the shard's counter, so the listener notices entries it missed (the
shard stream was trimmed while it was away, or Redis restarted): it then catches up from the
streams of the channels it follows, which keep the backlog. The same catch-up runs after every
reconnection, and sends the reset event to the streams of channels whose generation changed
(Redis lost its data, or the channel was forgotten).

Faults: when Redis goes away, open streams stay open (heartbeats go on); the listener reconnects
with backoff and then delivers what was published since, in order, without duplicates.
:meth:`RedisBroker.publish` raises :class:`~flask_ssecors.exceptions.BrokerUnavailable` within
the broker timeout rather than dropping or hanging.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import os
import random
import typing as t

import gevent
import gevent.event
import gevent.lock
import gevent.monkey

from .._config import default_of
from .._faults import FAULTS
from .._faults import Stage
from .._log import get_logger
from .._urls import Address
from .._urls import parse_url
from .._wire import Frame
from .._wire import frame
from .._wire import frame_of
from .._wire import stored_type
from ..events import Event
from ..events import RESET_EVENT
from ..exceptions import BrokerUnavailable
from ._base import check_channel
from ._base import deliver_contained
from ._base import EndReason
from ._base import PAGE_BYTES
from ._base import PAGE_EVENTS
from ._base import split_id
from ._base import Subscription
from ._base import thread_ident
from ._redis_conn import client_for
from ._redis_conn import node_address
from ._redis_conn import redis as redis
from ._redis_conn import RedisCluster
from ._redis_layout import EMPTY_GENERATION
from ._redis_layout import format_stream_id
from ._redis_layout import Keys
from ._redis_layout import LIVE_WINDOW
from ._redis_layout import parse_position
from ._redis_layout import parse_stream_id
from ._redis_layout import PUBLISH_SCRIPT
from ._redis_layout import shard_of
from ._redis_layout import SHARDS
from ._redis_layout import SNAPSHOT_SCRIPT
from ._redis_layout import StreamId
from ._redis_layout import ZERO
from ._redis_publish import RedisPublishing

logger = get_logger(__name__)

#: How long one ``XREAD`` blocks before the listener loops (milliseconds).
BLOCK_MS: t.Final = 5000
#: Most entries one ``XREAD`` returns per shard.
READ_COUNT: t.Final = 1000
#: Most snapshots sent in one round trip.
SNAPSHOT_BATCH: t.Final = 256
#: A snapshot waits for its turn at most this many broker timeouts (and at least
#: :data:`QUEUE_TIMEOUT_MIN` seconds) before its subscribe raises ``BrokerUnavailable``.
QUEUE_TIMEOUT_FACTOR: t.Final = 10
QUEUE_TIMEOUT_MIN: t.Final = 30.0
#: Channels caught up (or whose TTL is refreshed) per round trip.
CHANNEL_BATCH: t.Final = 500
#: Longest pause between two attempts of the listener to reconnect (seconds).
MAX_BACKOFF: t.Final = 1.0

#: Per OS thread, even under monkey-patching (where ``threading.local`` is per greenlet).
_ThreadLocal: t.Final[t.Callable[[], t.Any]] = gevent.monkey.get_original("threading", "local")
_RLock: t.Final[t.Callable[[], t.Any]] = gevent.monkey.get_original("threading", "RLock")
_Thread: t.Final[t.Any] = gevent.monkey.get_original("threading", "Thread")
_Event: t.Final[t.Any] = gevent.monkey.get_original("threading", "Event")

#: An encoded event as a subscriber receives it, with its position in its channel (None for a
#: reset event, which no later position makes obsolete).
Joined: t.TypeAlias = tuple["StreamId | None", Frame]


class _Readiness:
    """Whether the listener reads Redis: waited for by subscribers, in greenlets of the
    broker's thread (a gevent event), or in other OS threads (a real event, since a gevent
    event is waited for from one thread's hub at a time)."""

    def __init__(self) -> None:
        self._greenlets = gevent.event.Event()
        self._threads = _Event()

    def is_set(self) -> bool:
        return bool(self._greenlets.is_set())

    def set(self) -> None:
        self._greenlets.set()
        self._threads.set()

    def clear(self) -> None:
        self._greenlets.clear()
        self._threads.clear()

    def wait(self, timeout: float, *, home: bool) -> bool:
        if home:
            return bool(self._greenlets.wait(timeout))
        return bool(self._threads.wait(timeout))


class _Snapshot(t.NamedTuple):
    """What a subscriber reads atomically when it joins a channel."""

    #: The channel's generation; None when the channel holds nothing.
    generation: str | None
    #: The stream's last generated id.
    tail: StreamId
    #: Whether entries were ever removed from the stream (by ``MAXLEN``).
    trimmed: bool
    #: The oldest entry still kept, if any.
    first: StreamId | None
    #: The entries from the position asked for, one page of them at most.
    entries: list[tuple[StreamId, bytes]]


class _SnapshotRequest:
    __slots__ = ("channel", "count", "done", "end", "error", "result", "start", "wanted")

    def __init__(self, channel: str, start: str, end: str = "+", count: int = 0) -> None:
        self.channel = channel
        #: Where to read entries from ('' for none; ``(<id>`` for after ``<id>``).
        self.start = start
        #: Where to read them up to.
        self.end = end
        #: How many entries at most.
        self.count = count
        self.done = gevent.event.Event()
        self.result: _Snapshot | None = None
        self.error: BrokerUnavailable | None = None
        self.wanted = True


class _Channel:
    __slots__ = ("floors", "generation", "joining", "last", "name", "shard", "subscribers")

    def __init__(self, name: str) -> None:
        self.name = name
        self.shard = shard_of(name)
        #: The generation the listener last saw; None until it saw one.
        self.generation: str | None = None
        #: The position of the last entry the listener dispatched; None until it did.
        self.last: StreamId | None = None
        self.subscribers: set[Subscription] = set()
        #: Subscribers taking their snapshot: what the listener reads for them meanwhile is
        #: kept here, and merged with the snapshot once it is in.
        self.joining: dict[Subscription, list[Joined]] = {}
        #: Subscribers whose snapshot went further than the listener had dispatched: they
        #: get nothing up to that position from the listener.
        self.floors: dict[Subscription, StreamId] = {}


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
    :param live_window: seconds a shard stream keeps an event (see
        :data:`~flask_ssecors.brokers._redis_layout.LIVE_WINDOW`).
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
        live_window: float = LIVE_WINDOW,
    ) -> None:
        self.url = url
        self.live_window = live_window
        self.address = parse_url(url)
        self.min_replicas = min_replicas
        #: Shards read together by one listening connection: all of them, except in a cluster,
        #: where a read names keys of one slot only, so each shard has its own.
        self._groups: tuple[tuple[int, ...], ...] = (
            tuple((shard,) for shard in range(SHARDS))
            if self.address.kind == "cluster"
            else (tuple(range(SHARDS)),)
        )
        self.backlog = backlog
        self.timeout = timeout
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
            live_window=live_window,
        )
        self._snapshot_sha = hashlib.sha1(SNAPSHOT_SCRIPT.encode()).hexdigest()
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
        self._slots = gevent.lock.BoundedSemaphore(self.pool_size)
        self._home = thread_ident()
        self._threads = _ThreadLocal()
        #: Guards the channels between the listener and subscribers in other OS threads.
        self._lock = _RLock()
        self._background: t.Any = None
        self._snapshots = client_for(
            self.url, timeout=self.timeout, max_connections=1, name=f"ssecors-snap-{self._pid}"
        )
        self._channels: dict[str, _Channel] = {}
        self._cursors: dict[int, bytes] = {}
        self._counts: dict[int, int] = {}
        self._ready = _Readiness()
        self._pending: list[_SnapshotRequest] = []
        self._wanted = gevent.event.Event()
        self._greenlets: list[gevent.Greenlet] = []
        self._listener: gevent.Greenlet | None = None
        self._listener_clients: dict[tuple[int, ...], t.Any] = {}
        #: The listening groups that have read where their shards are (or caught up).
        self._prepared: set[tuple[int, ...]] = set()
        self._closed = False
        #: Whether the listener is connected (for statistics and health checks).
        self.connected = False

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
            _disconnect(client)
            raise BrokerUnavailable(
                f"{what}: no answer from Redis within {self.timeout:g} s"
            ) from None
        except (redis.RedisError, OSError) as error:
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
        """Append to the channel's stream and its shard; return ``<generation>.<stream id>``.

        An ``id`` given to the event is replaced by the one the broker assigns.

        :raises ChannelError: for a channel name no broker can store.
        :raises EventFieldError: for an event above ``max_event_size``.
        :raises BrokerUnavailable: when Redis does not confirm within the timeout.
        """
        self._check_pid()
        keys, args = self._publishing.prepare(channel, event)
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
    ) -> Subscription:
        """Subscribe; replay strictly after ``last_event_id`` (see :class:`.base.Broker`).

        Without ``last_event_id`` the subscription receives what the listener reads from now
        on, with no round trip to Redis. With one, the subscriber's snapshot of the channel
        (taken in a batch) gives what came after the id; what the listener reads meanwhile is
        merged after it. Either way nothing is missed and nothing is delivered twice.

        :raises ChannelError: for a channel name no broker can store.
        :raises BrokerUnavailable: when Redis cannot be reached within the timeout.
        """
        self._check_pid()
        check_channel(channel)
        self._start()
        if not self._ready.wait(self.timeout, home=thread_ident() == self._home):
            raise BrokerUnavailable(
                f"subscribe: the listener could not read from Redis within {self.timeout:g} s"
            )
        subscription = Subscription(channel, limit, self._release)
        with self._lock:
            state = self._channels.get(channel)
            if state is None:
                state = self._channels[channel] = _Channel(channel)
            if last_event_id is None:
                state.subscribers.add(subscription)
                return subscription
            live: list[Joined] = []
            state.joining[subscription] = live
        parsed = _parse_event_id(last_event_id)
        try:
            snapshot = self._snapshot(channel, parsed)
        except BrokerUnavailable:
            with self._lock:
                state.joining.pop(subscription, None)
            subscription.close()
            raise
        # Under the lock (nothing yields there): merge the snapshot with what arrived live.
        with self._lock:
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

    def _snapshot(self, channel: str, parsed: tuple[str, StreamId] | None) -> _Snapshot:
        """Queue a snapshot of ``channel`` for the next batch and wait for it: with the
        client's position, the first page of entries from it on (inclusive, so that the
        position is known to be an entry of this stream)."""
        if parsed is None:
            return self._read(_SnapshotRequest(channel, ""))
        if parsed[0] == EMPTY_GENERATION:
            return self._read(_SnapshotRequest(channel, "-", count=PAGE_EVENTS))
        return self._read(
            _SnapshotRequest(channel, format_stream_id(parsed[1]), count=PAGE_EVENTS + 1)
        )

    def _read(self, request: _SnapshotRequest) -> _Snapshot:
        """Queue ``request`` for the next batch and wait for its answer."""
        self._pending.append(request)
        self._wanted.set()
        # The round trip of the batch a snapshot goes out in is bounded by the timeout, and a
        # batch that fails fails every queued snapshot with it (Redis is down for them too).
        # Waiting for a turn is bounded more loosely: in a reconnect storm thousands queue,
        # and the snapshot sender shares the worker's CPU with their requests.
        if not request.done.wait(max(QUEUE_TIMEOUT_FACTOR * self.timeout, QUEUE_TIMEOUT_MIN)):
            request.wanted = False
            raise BrokerUnavailable(f"subscribe: no snapshot from Redis within {self.timeout:g} s")
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _take_snapshots(self) -> None:
        """Send queued snapshots, :data:`SNAPSHOT_BATCH` per round trip, one batch at a time."""
        while not self._closed:
            self._wanted.wait()
            self._wanted.clear()
            while self._pending:
                batch = [r for r in self._pending[:SNAPSHOT_BATCH] if r.wanted]
                del self._pending[:SNAPSHOT_BATCH]
                if batch:
                    self._snapshot_batch(batch)

    def _snapshot_batch(self, batch: list[_SnapshotRequest]) -> None:
        if self.address.kind == "cluster":
            # A cluster pipeline sends no scripts: one pipeline per node, side by side.
            by_node: dict[str, tuple[t.Any, list[_SnapshotRequest]]] = {}
            for request in batch:
                try:
                    node = self._snapshots.get_node_from_key(self.keys.channel(request.channel))
                    if node is None:
                        raise redis.exceptions.ClusterDownError("no node serves the slot")
                except (redis.RedisError, OSError) as error:
                    request.error = BrokerUnavailable(f"subscribe: {error}")
                    request.done.set()
                    continue
                by_node.setdefault(node.name, (node, []))[1].append(request)
            jobs = [
                gevent.spawn(
                    self._snapshot_pipeline, self._snapshots.get_redis_connection(node), requests
                )
                for node, requests in by_node.values()
            ]
            gevent.joinall(jobs)
            if any(request.error is not None for request in batch):
                with contextlib.suppress(redis.RedisError, OSError):
                    self._snapshots.nodes_manager.initialize()  # a failover: the new topology
            return
        self._snapshot_pipeline(self._snapshots, batch)

    def _snapshot_pipeline(self, client: t.Any, batch: list[_SnapshotRequest]) -> None:
        try:
            for attempt in (1, 2):
                commands = [
                    (
                        "EVALSHA",
                        self._snapshot_sha,
                        2,
                        self.keys.channel(request.channel),
                        self.keys.generation(request.channel),
                        request.start,
                        request.count,
                        request.end,
                        PAGE_BYTES,
                    )
                    for request in batch
                ]
                replies = self._round_trip(client, commands)
                missing = any(isinstance(r, redis.exceptions.NoScriptError) for r in replies)
                if attempt == 1 and missing:
                    self._round_trip(client, [("SCRIPT", "LOAD", SNAPSHOT_SCRIPT)])
                    continue
                break
            for request, reply in zip(batch, replies, strict=True):
                if isinstance(reply, Exception):
                    request.error = BrokerUnavailable(f"subscribe: {reply}")
                else:
                    request.result = _read_snapshot(reply)
                request.done.set()
        except (_NoAnswer, redis.RedisError, OSError) as error:
            detail = "no answer within the timeout" if isinstance(error, _NoAnswer) else str(error)
            # The snapshots still queued would meet the same Redis: they fail now, not one
            # batch (one timeout) after another.
            queued, self._pending[:] = list(self._pending), []
            for request in [*batch, *queued]:
                if not request.done.is_set():
                    request.error = BrokerUnavailable(f"subscribe: {detail}")
                    request.done.set()

    def _round_trip(self, client: t.Any, commands: list[tuple[t.Any, ...]]) -> list[t.Any]:
        """Send ``commands`` pipelined on one connection of ``client``; return the replies,
        error replies as exceptions.

        The timeout bounds how long Redis takes to answer, not how long this greenlet waits
        for its turn: when the wait for a reply runs out, the socket is looked at once more,
        and an answer already there is read. In a reconnect storm a worker's greenlets queue
        for the CPU for longer than the timeout while Redis answers in microseconds.

        :raises _NoAnswer: when Redis sent nothing within the timeout; the connection is
            closed then, since it may still owe an answer.
        """
        pool = client.connection_pool
        connection = _pooled_connection(pool)
        keep = False
        try:
            connection.send_packed_command(connection.pack_commands(commands))
            replies: list[t.Any] = []
            for _ in commands:
                if not connection.can_read(self.timeout) and not connection.can_read(0):
                    raise _NoAnswer
                try:
                    replies.append(connection.read_response())
                except redis.exceptions.ResponseError as error:
                    replies.append(error)
            keep = True
            return replies
        finally:
            if not keep:
                connection.disconnect()
            pool.release(connection)

    def _replay(
        self, channel: str, snapshot: _Snapshot, parsed: tuple[str, StreamId] | None
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
            return [self._reset(EMPTY_GENERATION, ZERO, "unknown-id")], None
        if parsed is None:
            return [self._reset(generation, tail, "unknown-id")], None
        claimed, position = parsed
        if claimed == EMPTY_GENERATION:
            if position != ZERO:
                return [self._reset(generation, tail, "unknown-id")], None
            if trimmed:
                return [self._reset(generation, tail, "expired")], None
        elif claimed != generation or position > tail:
            return [self._reset(generation, tail, "unknown-id")], None
        elif position == tail:
            return [], None
        elif entries and entries[0][0] == position:
            entries = entries[1:]
        elif trimmed and (first is None or position < first):
            return [self._reset(generation, tail, "expired")], None
        else:
            # Never an entry of this stream.
            return [self._reset(generation, tail, "unknown-id")], None
        page = [(at, data) for at, data in entries if at <= tail]
        last = page[-1][0] if page else position
        rest = _Replay(self, channel, generation, last, tail) if last < tail else None
        return [self._frame(generation, at, data) for at, data in page], rest

    def _reset(self, generation: str, position: StreamId, reason: str) -> Frame:
        return frame_of(
            Event(
                {"reason": reason},
                event=RESET_EVENT,
                id=f"{generation}.{format_stream_id(position)}",
            )
        )

    @staticmethod
    def _frame(generation: str, position: StreamId, encoded: bytes) -> Frame:
        return frame(encoded, stored_type(encoded), f"{generation}.{format_stream_id(position)}")

    def _release(self, subscription: Subscription) -> None:
        with self._lock:
            state = self._channels.get(subscription.channel)
            if state is None:
                return
            joining = state.joining.pop(subscription, None)
            if joining is None and subscription not in state.subscribers:
                return
            state.subscribers.discard(subscription)
            state.floors.pop(subscription, None)
            if not state.subscribers and not state.joining:
                del self._channels[state.name]

    def subscriber_count(self, channel: str | None = None) -> int:
        """Open subscriptions in this process on ``channel``, or on every channel."""
        if self._pid != os.getpid():
            return 0
        if channel is not None:
            state = self._channels.get(channel)
            return len(state.subscribers) + len(state.joining) if state else 0
        return sum(len(s.subscribers) + len(s.joining) for s in self._channels.values())

    def channel_count(self) -> int:
        """Channels this process follows (those with local subscribers)."""
        return len(self._channels) if self._pid == os.getpid() else 0

    # -- the listener ------------------------------------------------------------------------

    def _start(self) -> None:
        """Start the listener, the snapshot sender and the TTL refresher, once per process.

        They are greenlets of the broker's own thread when it subscribes there (a gevent
        server's hub, or a test's). A first subscriber in another OS thread (the development
        server serves each request in a thread of its own, whose hub stops with it) starts
        them in a daemon thread of their own, with its own hub.
        """
        with self._lock:
            if self._listener is not None and not self._listener.dead:
                return
            if self._background is not None and self._background.is_alive():
                return
            self._ready.clear()
            if thread_ident() == self._home:
                self._spawn_background()
            else:
                self._background = _Thread(
                    target=self._run_background, name="flask-ssecors-redis", daemon=True
                )
                self._background.start()

    def _spawn_background(self) -> list[gevent.Greenlet]:
        listeners = [gevent.spawn(self._listen, group) for group in self._groups]
        self._listener = listeners[0]
        self._greenlets = [*listeners, gevent.spawn(self._take_snapshots)]
        if self.channel_ttl is not None:
            self._greenlets.append(gevent.spawn(self._refresh_ttls))
        return self._greenlets

    def _run_background(self) -> None:
        gevent.joinall(self._spawn_background())

    def _listening_client(self, group: tuple[int, ...]) -> t.Any:
        """The connection ``group`` reads with: one for every shard on one server; in a
        cluster, one per shard, to the node that serves the shard's slot (its catch-up reads
        keys of that slot only), so a worker holds exactly one listening connection per shard."""
        client = self._listener_clients.get(group)
        if client is None:
            url: str | Address = self.url
            if self.address.kind == "cluster":
                node = self._commands.get_node_from_key(self.keys.live(group[0]))
                if node is None:
                    raise redis.exceptions.ClusterDownError("no node serves the shard's slot")
                url = node_address(self.address, node.host, node.port)
            client = self._listener_clients[group] = client_for(
                url,
                timeout=BLOCK_MS / 1000 + self.timeout + 1,
                max_connections=1,
                name=f"ssecors-listen-{self._pid}",
            )
        return client

    def _listen(self, group: tuple[int, ...]) -> None:
        """Read the shards of ``group`` and dispatch their entries, for as long as the broker
        is open: reconnect with backoff, and catch up after every fault."""
        backoff = 0.05
        while not self._closed:
            try:
                client = self._listening_client(group)
                if group not in self._prepared:
                    self._prepare(client, group)
                    self._prepared.add(group)
                    if len(self._prepared) == len(self._groups):
                        self._ready.set()
                        if not self.connected:
                            logger.info("Redis listener connected")
                        self.connected = True
                streams = {self.keys.live(shard): self._cursors[shard] for shard in group}
                reply = client.xread(streams, count=READ_COUNT, block=BLOCK_MS)
                backoff = 0.05
                gaps = self._dispatch(reply)
                if gaps:
                    self._catch_up(client, gaps)
            except (redis.RedisError, OSError) as error:
                if self.connected:
                    logger.warning("Redis listener lost its connection: %s", error)
                self._lost(group)
                gevent.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, MAX_BACKOFF)
            except Exception:
                # A bug, not a fault of Redis: say so, and keep serving the other channels.
                logger.exception("Redis listener failed; reading again")
                self._lost(group)
                gevent.sleep(MAX_BACKOFF)

    def _lost(self, group: tuple[int, ...]) -> None:
        """A group's connection failed: subscribers wait until it has caught up again."""
        self.connected = False
        self._prepared.discard(group)
        self._ready.clear()
        client = self._listener_clients.pop(group, None)
        if client is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                _disconnect(client)
        if isinstance(self._commands, RedisCluster):
            with contextlib.suppress(redis.RedisError, OSError):
                self._commands.nodes_manager.initialize()  # after a failover: the new topology

    def _prepare(self, client: t.Any, group: tuple[int, ...]) -> None:
        """After (re)connecting: on the first start, read where each shard is; after a fault,
        catch up every followed channel of the group's shards from its own stream."""
        fresh = [shard for shard in group if shard not in self._cursors]
        if fresh:
            pipe = client.pipeline(transaction=False)
            for shard in fresh:
                pipe.xrevrange(self.keys.live(shard), count=1)
                pipe.get(self.keys.counter(shard))
            replies = pipe.execute()
            for index, shard in enumerate(fresh):
                last, count = replies[2 * index], replies[2 * index + 1]
                self._cursors[shard] = last[0][0] if last else b"0-0"
                self._counts[shard] = int(count) if count is not None else 0
        known = set(group) - set(fresh)
        if known:
            self._catch_up(client, known)

    def _dispatch(self, reply: t.Any) -> set[int]:
        """Hand each entry to its channel's local subscribers; return the shards where
        entries were missed (the counter jumped)."""
        with self._lock:
            return self._dispatch_locked(reply)

    def _dispatch_locked(self, reply: t.Any) -> set[int]:
        gaps: set[int] = set()
        channels = self._channels
        for key, entries in reply or ():
            shard = _shard_of_key(key)
            if not entries:
                continue
            self._cursors[shard] = entries[-1][0]
            count = self._counts.get(shard)
            for _, fields in entries:
                try:
                    number = int(fields.get(b"n", 0))
                except ValueError:
                    number = 0
                if count is not None and number != count + 1:
                    gaps.add(shard)
                count = number
                state = channels.get(fields.get(b"c", b"").decode("utf-8", "replace"))
                if state is not None:
                    self._dispatch_entry(state, fields)
            self._counts[shard] = t.cast(int, count)
        return gaps

    def _dispatch_entry(self, state: _Channel, fields: dict[bytes, bytes]) -> None:
        """Deliver one shard entry to its channel's subscribers. What it raises (a malformed
        entry, a bug) is contained here: the channel's subscribers are dropped, to resume from
        the channel's own stream, and every other channel goes on."""
        try:
            generation = fields[b"g"].decode("ascii")
            position = parse_stream_id(fields[b"i"])
            data = fields[b"e"]
            self._deliver(state, generation, position, data)
        except Exception:
            FAULTS.record(Stage.DISPATCH, "the channel's subscribers were dropped", state.name)
            self._drop_channel(state)

    def _drop_channel(self, state: _Channel) -> None:
        """Drop every subscriber of ``state`` (they resume from the backlog)."""
        for subscription in (*state.subscribers, *state.joining):
            with contextlib.suppress(Exception):
                subscription.drop(EndReason.ERROR)

    def _deliver(self, state: _Channel, generation: str, position: StreamId, data: bytes) -> None:
        if generation != state.generation:
            if state.generation is not None:
                self._reset_channel(state, generation, "channel-restarted")
            state.generation = generation
        elif state.last is not None and position <= state.last:
            return  # read again (a catch-up and the shard both had it)
        state.last = position
        try:
            frame = self._frame(generation, position, data)
        except Exception:
            FAULTS.record(Stage.ENCODE, "the channel's subscribers were dropped", state.name)
            self._drop_channel(state)
            return
        for frames in state.joining.values():
            frames.append((position, frame))
        floors = state.floors
        for subscription in tuple(state.subscribers):
            if floors:
                floor = floors.get(subscription)
                if floor is not None:
                    if position <= floor:
                        continue
                    del floors[subscription]
            deliver_contained(subscription, frame)

    def _reset_channel(self, state: _Channel, generation: str, reason: str) -> None:
        """The channel's data is gone (Redis lost it, or it was forgotten): tell its streams.

        After a reset to the empty generation, the first events of the channel's next life
        arrive without a second reset.
        """
        reset = self._reset(generation, ZERO, reason)
        for subscription in tuple(state.subscribers):
            deliver_contained(subscription, reset)
        for frames in state.joining.values():
            frames.append((None, reset))
        state.floors.clear()
        state.generation = None if generation == EMPTY_GENERATION else generation
        state.last = None

    def _catch_up(self, client: t.Any, shards: set[int]) -> None:
        """Deliver, from the channels' own streams, what the listener may have missed on
        ``shards``; reset channels whose generation changed."""
        followed = [s for s in self._channels.values() if s.shard in shards]
        if followed:
            logger.info("catching up %d channels from Redis", len(followed))
        for start in range(0, len(followed), CHANNEL_BATCH):
            batch = followed[start : start + CHANNEL_BATCH]
            pipe = client.pipeline(transaction=False)
            read = []
            for state in batch:
                pipe.get(self.keys.generation(state.name))
                if state.last is not None:
                    after = f"({format_stream_id(state.last)}"
                    pipe.xrange(self.keys.channel(state.name), after, "+", count=self.backlog + 1)
                read.append(state.last is not None)
            replies = iter(pipe.execute())
            answers = [(next(replies), next(replies) if r else None) for r in read]
            with self._lock:
                for state, (raw_generation, entries) in zip(batch, answers, strict=True):
                    try:
                        self._deliver_caught_up(state, raw_generation, entries)
                    except Exception:
                        FAULTS.record(
                            Stage.DISPATCH, "the channel's subscribers were dropped", state.name
                        )
                        self._drop_channel(state)

    def _deliver_caught_up(
        self, state: _Channel, raw_generation: bytes | None, entries: list[t.Any] | None
    ) -> None:
        if self._channels.get(state.name) is not state:
            return  # its subscribers left meanwhile
        generation = raw_generation.decode() if raw_generation else EMPTY_GENERATION
        if state.generation is not None and generation != state.generation:
            self._reset_channel(state, generation, "broker-restarted")
            return
        if entries is None:
            return
        if len(entries) > self.backlog:
            self._reset_channel(state, generation, "expired")
            return
        for entry_id, fields in entries:
            self._deliver(state, generation, parse_stream_id(entry_id), fields[b"e"])

    def _refresh_ttls(self) -> None:
        """Keep the channels this process follows alive: refresh their keys' TTL, in batches,
        a few times per TTL (a channel with subscribers is never forgotten)."""
        interval = max(t.cast(float, self.channel_ttl) / 3, 0.05)
        while not self._closed:
            gevent.sleep(interval)
            names = list(self._channels)
            try:
                for start in range(0, len(names), CHANNEL_BATCH):
                    batch = names[start : start + CHANNEL_BATCH]
                    self._run("refresh", functools.partial(self._expire, names=batch))
            except BrokerUnavailable as error:
                logger.warning("could not refresh the TTL of followed channels: %s", error)

    def _expire(self, client: redis.Redis[bytes], names: list[str]) -> None:
        milliseconds = int(t.cast(float, self.channel_ttl) * 1000)
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.pexpire(self.keys.channel(name), milliseconds)
            pipe.pexpire(self.keys.generation(name), milliseconds)
        pipe.execute()

    def close(self) -> None:
        """Stop the listener, drop every subscriber and close the connections."""
        self._closed = True
        self._wanted.set()
        for greenlet in self._greenlets:
            greenlet.kill(block=True, timeout=1)
        for state in list(self._channels.values()):
            for subscription in (*state.subscribers, *state.joining):
                subscription.drop(EndReason.BROKER_CLOSED)
        self._channels.clear()
        for client in (self._commands, self._snapshots, *self._listener_clients.values()):
            _disconnect(client)


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
        request = _SnapshotRequest(
            self._channel,
            f"({format_stream_id(self._last)}",
            format_stream_id(self._tail),
            PAGE_EVENTS,
        )
        snapshot = broker._read(request)
        last, self._last = self._last, self._tail  # unless a page follows, the replay ends
        if snapshot.generation != self._generation:
            # Forgotten, or Redis lost its data, while the client read: the listener resets
            # the live part; the rest of this replay is gone.
            generation = snapshot.generation or EMPTY_GENERATION
            return [broker._reset(generation, ZERO, "channel-restarted")]
        if snapshot.first is None or snapshot.first > last:
            # Trimmed while the client read slowly: the entries it still needed are gone.
            return [broker._reset(self._generation, self._tail, "expired")]
        page = [(at, data) for at, data in snapshot.entries if at <= self._tail]
        if page:
            self._last = page[-1][0]
        return [broker._frame(self._generation, at, data) for at, data in page]


class _NoAnswer(Exception):
    """Redis sent no reply within the timeout."""


#: redis-py 5's ``ConnectionPool.get_connection`` requires a command name; later ones do not.
_POOL_WANTS_COMMAND = (
    inspect.signature(redis.ConnectionPool.get_connection).parameters["command_name"].default
    is inspect.Parameter.empty
)


def _pooled_connection(pool: t.Any) -> t.Any:
    """A connection from a redis-py pool."""
    return pool.get_connection("EVALSHA") if _POOL_WANTS_COMMAND else pool.get_connection()


def _disconnect(client: t.Any) -> None:
    """Close every connection of a client (of one server, or of a cluster)."""
    if isinstance(client, RedisCluster):
        client.close()
    else:
        client.connection_pool.disconnect()


def _parse_event_id(value: str) -> tuple[str, StreamId] | None:
    """Split ``<generation>.<ms>-<seq>``; None unless it is exactly how this broker writes
    ids."""
    parts = split_id(value)
    if parts is None:
        return None
    position = parse_position(parts[1])
    return (parts[0], position) if position is not None else None


def _read_snapshot(reply: list[t.Any]) -> _Snapshot:
    generation, tail, added, length, first, entries = reply
    return _Snapshot(
        generation=generation.decode() if generation else None,
        tail=parse_stream_id(tail),
        trimmed=int(added) > int(length),
        first=parse_stream_id(first) if first else None,
        entries=[(parse_stream_id(entry[0]), _field(entry[1], b"e")) for entry in entries],
    )


def _field(flat: list[bytes], name: bytes) -> bytes:
    """A field of a stream entry as a script returns it: ``[name, value, name, value...]``."""
    for index in range(0, len(flat) - 1, 2):
        if flat[index] == name:
            return flat[index + 1]
    raise ValueError(f"stream entry without field {name!r}")


def _shard_of_key(key: bytes | str) -> int:
    text = key.decode() if isinstance(key, bytes) else key
    start = text.rindex("{s") + 2
    return int(text[start : text.index("}", start)])
