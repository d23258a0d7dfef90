"""The Redis listener: per worker process, one connection in sharded pub/sub mode (one per
shard in a cluster, to the node that serves the shard's slot), subscribed to exactly the
channels this process follows, that hands each event to the local subscribers of its channel.

Redis filters by channel, so a worker reads the events of the channels it follows and nothing
else, and the cost of one event does not grow with the number of channels it follows.

It owns the channels this process follows (:class:`Channel`): the broker's facade registers
subscribers there (under :attr:`Listener.lock`) and waits until the channel is live; the
listener subscribes and unsubscribes in batches (one ``SSUBSCRIBE`` per shard for every channel
that joined meanwhile), so a connect storm costs a few commands, not one per client.

Pub/sub delivers at most once, so each followed channel keeps the position of the last event
the listener dispatched; before its first subscription, a channel's tail is read (batched), so
that position is known from the start. When the connection is lost (a restart, a failover, a
killed client, a slot that moved), the listener reconnects, subscribes again, and on each
confirmation catches the channel up from its own stream, after that position, before it reads
anything else: nothing is missed, nothing is delivered twice, and a channel whose generation
changed gets the reset event. What one entry, channel or subscriber raises is contained
(:mod:`flask_ssecors._faults`).
"""

from __future__ import annotations

import collections.abc as cabc
import contextlib
import functools
import random
import time
import typing as t

import gevent
import gevent.event
import gevent.monkey

from .._faults import FAULTS
from .._faults import Stage
from .._log import get_logger
from .._urls import Address
from .._wire import Frame
from ..exceptions import BrokerUnavailable
from ._base import deliver_contained
from ._base import EndReason
from ._base import Subscription
from ._readiness import Readiness as Readiness
from ._redis_conn import client_for
from ._redis_conn import node_address
from ._redis_conn import redis as redis
from ._redis_conn import RedisCluster
from ._redis_layout import EMPTY_GENERATION
from ._redis_layout import format_stream_id
from ._redis_layout import frame_at
from ._redis_layout import Keys
from ._redis_layout import parse_stream_id
from ._redis_layout import reset_at
from ._redis_layout import shard_of
from ._redis_layout import SHARDS
from ._redis_layout import StreamId
from ._redis_layout import ZERO
from ._redis_resp import ProtocolError
from ._redis_resp import Reply
from ._redis_resp import ReplyError
from ._redis_resp import RespConnection

logger = get_logger(__name__)

#: Seconds between two ``PING`` on a listening connection: a connection silent for longer
#: than this plus the broker timeout is taken for dead.
PING_INTERVAL: t.Final = 5.0
#: Channels per ``SSUBSCRIBE``, per tail read, per catch-up and per TTL refresh round trip.
CHANNEL_BATCH: t.Final = 500
#: Longest pause between two attempts of the listener to reconnect (seconds).
MAX_BACKOFF: t.Final = 1.0
#: Seconds a channel stays subscribed after its last subscriber left (between this and twice
#: this): clients that come back (a deploy, a proxy restart, a page reload) find it live.
LINGER: t.Final = 5.0

_RLock: t.Final[t.Callable[[], t.Any]] = gevent.monkey.get_original("threading", "RLock")

#: An encoded event as a subscriber receives it, with its position in its channel (None for a
#: reset event, which no later position makes obsolete).
Joined: t.TypeAlias = tuple["StreamId | None", Frame]

#: A channel's tail is to be read, then it is subscribed to.
NEW: t.Final = 0
#: ``SSUBSCRIBE`` sent; live once confirmed (and caught up, if :attr:`Channel.catch_up`).
SUBSCRIBING: t.Final = 1
#: Subscribed: its events arrive on the listening connection.
LIVE: t.Final = 2
#: Its last subscriber left a while ago: ``SUNSUBSCRIBE`` sent.
LEAVING: t.Final = 3
#: Not subscribed on the current connection, though it was on another (since lost), or was
#: unsubscribed while a subscriber came back: to be subscribed again, and caught up from its
#: stream once confirmed.
LOST: t.Final = 4


class Channel:
    __slots__ = (
        "catch_up",
        "floors",
        "generation",
        "joining",
        "key",
        "last",
        "left",
        "name",
        "shard",
        "status",
        "subscribers",
        "waiter",
    )

    def __init__(self, name: str, key: bytes) -> None:
        self.name = name
        #: The channel's stream key, also the name of its pub/sub channel.
        self.key = key
        self.shard = shard_of(name)
        self.status = NEW
        #: Whether the channel is caught up from its stream once its subscription is confirmed.
        self.catch_up = False
        #: The generation the listener last saw; None until it saw one.
        self.generation: str | None = None
        #: The position of the last entry the listener dispatched, or the channel's tail when
        #: it was first followed; None when every entry of the channel's stream is owed.
        self.last: StreamId | None = None
        self.subscribers: set[Subscription] = set()
        #: Subscribers taking their snapshot: what the listener reads for them meanwhile is
        #: kept here, and merged with the snapshot once it is in.
        self.joining: dict[Subscription, list[Joined]] = {}
        #: Subscribers whose snapshot went further than the listener had dispatched: they
        #: get nothing up to that position from the listener.
        self.floors: dict[Subscription, StreamId] = {}
        #: Set when the channel is live, for subscribers waiting for it.
        self.waiter: Readiness | None = None
        #: When its last subscriber left (``time.monotonic()``).
        self.left = 0.0

    @property
    def idle(self) -> bool:
        return not self.subscribers and not self.joining


class _Moved(Exception):
    """Redis unsubscribed a channel this process follows (its slot moved to another node)."""


class Listener:
    """Follows the channels of one worker process and delivers to their subscribers.

    :param url: the broker URL.
    :param address: the URL, read.
    :param keys: the key names.
    :param backlog: ``SSECORS_BACKLOG`` (how far a catch-up reads).
    :param channel_ttl: ``SSECORS_CHANNEL_TTL`` (how often followed channels are refreshed).
    :param timeout: ``SSECORS_BROKER_TIMEOUT``.
    :param pid: this process's id, for connection names.
    :param commands: the broker's command client (for the cluster topology).
    :param run: runs a command with the broker's bounds (``RedisBroker._run``).
    """

    def __init__(
        self,
        *,
        url: str,
        address: Address,
        keys: Keys,
        backlog: int,
        channel_ttl: float | None,
        timeout: float,
        pid: int,
        commands: t.Any,
        run: cabc.Callable[[str, cabc.Callable[[t.Any], t.Any]], t.Any],
    ) -> None:
        self.url = url
        self.address = address
        self.keys = keys
        self.backlog = backlog
        self.channel_ttl = channel_ttl
        self.timeout = timeout
        self.pid = pid
        self.commands = commands
        self.run = run
        #: Shards served by one listening connection: all of them, except in a cluster, where
        #: each shard's slot may live on another node, so each shard has its own.
        self.groups: tuple[tuple[int, ...], ...] = (
            tuple((shard,) for shard in range(SHARDS))
            if address.kind == "cluster"
            else (tuple(range(SHARDS)),)
        )
        self._group_of = {shard: group for group in self.groups for shard in group}
        #: Guards the channels between the listener and subscribers in other OS threads.
        self.lock = _RLock()
        #: The channels this process follows (those with subscribers).
        self.channels: dict[str, Channel] = {}
        #: Channels whose last subscriber left, until Redis confirms the unsubscription.
        self.leaving: dict[str, Channel] = {}
        #: Every channel subscribed, being subscribed, or leaving, by pub/sub name.
        self._by_key: dict[bytes, Channel] = {}
        #: Channels whose subscription is to be changed at the next flush.
        self._pending: set[Channel] = set()
        #: Channels confirmed while their catch-up is owed (read before anything else).
        self._owed: list[Channel] = []
        #: Set when the manager has work (a thread-safe wake-up once it runs).
        self._work = gevent.event.Event()
        self._wake: t.Any = None
        self.ready = Readiness()
        self._connections: dict[tuple[int, ...], RespConnection] = {}
        self.closed = False
        #: Whether every listening connection is up (for statistics and health checks).
        self.connected = False

    # -- what the facade calls (under the lock) ------------------------------------------------

    def follow(self, name: str) -> Channel:
        """The state of ``name``, created (or taken back from leaving) if needed; its
        subscription is queued when it is new."""
        state = self.channels.get(name)
        if state is not None:
            return state
        state = self.leaving.pop(name, None)
        if state is None:
            key = self.keys.channel(name).encode("utf-8")
            state = Channel(name, key)
            self._by_key[key] = state
            self._queue(state)
        self.channels[name] = state
        return state

    def unfollow(self, state: Channel) -> None:
        """``state`` has no subscriber left: it is unsubscribed after :data:`LINGER` seconds
        (or at once, if it never was)."""
        if self.channels.get(state.name) is state:
            del self.channels[state.name]
            self.leaving[state.name] = state
            state.left = time.monotonic()
            if state.status != LIVE:
                self._queue(state)

    def waiter(self, state: Channel) -> Readiness | None:
        """What to wait for until ``state`` is live; None when it is."""
        if state.status == LIVE:
            return None
        if state.waiter is None:
            state.waiter = Readiness()
        return state.waiter

    def _queue(self, state: Channel) -> None:
        self._pending.add(state)
        self.wake()

    def wake(self) -> None:
        """Wake the manager (from any OS thread)."""
        wake = self._wake
        if wake is not None:
            wake.send()
        else:
            self._work.set()

    def stop(self) -> None:
        """Stop listening and close the listening connections."""
        self.closed = True
        self.connected = False  # so that the readers' failing reads are not warned about
        for connection in list(self._connections.values()):
            with contextlib.suppress(Exception):
                connection.close()

    # -- the manager greenlet: subscribes and unsubscribes in batches, pings ---------------------

    def manage(self) -> None:
        """Apply queued subscription changes in batches, and ping every connection."""
        hub = gevent.get_hub()
        wake = hub.loop.async_()
        wake.start(self._work.set)
        self._wake = wake
        pinged = swept = time.monotonic()
        try:
            while not self.closed:
                if self._work.wait(min(PING_INTERVAL, LINGER)):
                    self._work.clear()
                    try:
                        self._flush()
                    except Exception:
                        logger.exception("Redis listener could not change its subscriptions")
                        gevent.sleep(MAX_BACKOFF)
                        self._work.set()
                now = time.monotonic()
                if now - swept >= LINGER:
                    swept = now
                    self._sweep(now)
                if now - pinged >= PING_INTERVAL:
                    pinged = now
                    self._ping()
        finally:
            self._wake = None
            wake.close()

    def _sweep(self, now: float) -> None:
        """Queue the channels left for :data:`LINGER` seconds, to be unsubscribed."""
        with self.lock:
            gone = [s for s in self.leaving.values() if now - s.left >= LINGER]
            if gone:
                self._pending.update(gone)
                self._work.set()

    def _ping(self) -> None:
        for connection in list(self._connections.values()):
            with contextlib.suppress(OSError):
                connection.send([("PING",)])

    def _flush(self) -> None:
        with self.lock:
            pending, self._pending = self._pending, set()
            for state in pending:
                if self.leaving.get(state.name) is state and state.status in (NEW, LOST):
                    self._forget(state)  # left before it was subscribed (again)
            fresh = [s for s in pending if s.status == NEW and self.channels.get(s.name) is s]
            again = [s for s in pending if s.status == LOST and self.channels.get(s.name) is s]
            leaving = [s for s in pending if s.status == LIVE and self.leaving.get(s.name) is s]
            for state in leaving:
                state.status = LEAVING
        # Channels subscribed again (and those leaving) first; then new ones, a batch of tails
        # and its SSUBSCRIBE at a time, so that in a connect storm the first channels do not
        # wait for the last ones' tails.
        self._subscribe(again, leaving)
        for start in range(0, len(fresh), CHANNEL_BATCH):
            batch = fresh[start : start + CHANNEL_BATCH]
            try:
                tails = self.run("subscribe", functools.partial(self._read_tails, states=batch))
            except BrokerUnavailable as error:
                logger.warning("could not read the tail of %d channels: %s", len(batch), error)
                with self.lock:
                    self._pending.update(fresh[start:])
                gevent.sleep(MAX_BACKOFF)
                self._work.set()
                return
            ready = []
            with self.lock:
                for state, (generation, tail) in zip(batch, tails, strict=True):
                    if state.status == NEW:
                        state.generation = generation
                        state.last = tail
                        ready.append(state)
            self._subscribe(ready, [])

    def _subscribe(self, states: list[Channel], leaving: list[Channel]) -> None:
        """Send ``SSUBSCRIBE`` for ``states`` (new, or to be caught up) and ``SUNSUBSCRIBE``
        for ``leaving``."""
        by_group: dict[tuple[int, ...], list[tuple[str, Channel]]] = {}
        with self.lock:
            for state in states:
                if state.status not in (NEW, LOST):
                    continue  # a reconnection took it meanwhile
                state.catch_up = state.status == LOST
                state.status = SUBSCRIBING
                group = self._group_of[state.shard]
                by_group.setdefault(group, []).append(("SSUBSCRIBE", state))
        for state in leaving:
            by_group.setdefault(self._group_of[state.shard], []).append(("SUNSUBSCRIBE", state))
        for group, changes in by_group.items():
            self._send_changes(group, changes)

    def _send_changes(self, group: tuple[int, ...], changes: list[tuple[str, Channel]]) -> None:
        """One ``SSUBSCRIBE`` / ``SUNSUBSCRIBE`` per shard and batch (a cluster refuses a
        command whose channels are in several slots)."""
        connection = self._connections.get(group)
        if connection is None:
            return  # the reconnection subscribes every followed channel again
        commands: dict[tuple[str, int], list[bytes]] = {}
        for verb, state in changes:
            commands.setdefault((verb, state.shard), []).append(state.key)
        packed: list[tuple[bytes | str, ...]] = []
        for (verb, _), keys in commands.items():
            for start in range(0, len(keys), CHANNEL_BATCH):
                packed.append((verb, *keys[start : start + CHANNEL_BATCH]))
        with contextlib.suppress(OSError):  # the reader notices, and reconnects
            connection.send(packed)

    def _read_tails(
        self, client: t.Any, states: list[Channel]
    ) -> list[tuple[str | None, StreamId | None]]:
        """Each channel's generation and last position (None, None for an empty channel)."""
        pipe = client.pipeline(transaction=False)
        for state in states:
            pipe.get(self.keys.generation(state.name))
            pipe.xrevrange(self.keys.channel(state.name), count=1)
        replies = pipe.execute()
        tails: list[tuple[str | None, StreamId | None]] = []
        for index in range(len(states)):
            generation, last = replies[2 * index], replies[2 * index + 1]
            tails.append(
                (
                    generation.decode() if generation else None,
                    parse_stream_id(last[0][0]) if generation and last else None,
                )
            )
        return tails

    # -- the reader greenlets: one per listening connection --------------------------------------

    def listen(self, group: tuple[int, ...]) -> None:
        """Read ``group``'s connection and dispatch its events, for as long as the broker is
        open: reconnect with backoff, subscribe again, and catch up after every fault."""
        backoff = 0.05
        while not self.closed:
            connection: RespConnection | None = None
            try:
                connection = self._connect(group)
                self._resubscribe(group, connection)
                backoff = 0.05
                while not self.closed:
                    replies = connection.read()
                    self._handle(replies)
            except (redis.RedisError, OSError, ProtocolError, _Moved, BrokerUnavailable) as error:
                if self.connected or isinstance(error, _Moved):
                    logger.warning("Redis listener lost its connection: %s", error)
                self._lost(group, connection)
                gevent.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, MAX_BACKOFF)
            except Exception:
                # A bug, not a fault of Redis: say so, and keep serving the other channels.
                logger.exception("Redis listener failed; reading again")
                self._lost(group, connection)
                gevent.sleep(MAX_BACKOFF)

    def _connect(self, group: tuple[int, ...]) -> RespConnection:
        url: str | Address = self.url
        if self.address.kind == "cluster":
            node = self.commands.get_node_from_key(self.keys.tag(group[0]))
            if node is None:
                raise redis.exceptions.ClusterDownError("no node serves the shard's slot")
            url = node_address(self.address, node.host, node.port)
        client = client_for(
            url,
            timeout=PING_INTERVAL + self.timeout + 1,
            max_connections=1,
            name=f"ssecors-listen-{self.pid}",
        )
        return RespConnection(client)

    def _resubscribe(self, group: tuple[int, ...], connection: RespConnection) -> None:
        """A new connection: every channel of ``group`` that was subscribed is to be again,
        and caught up once confirmed; channels that were leaving are forgotten."""
        with self.lock:
            self._connections[group] = connection
            for state in (*self.channels.values(), *self.leaving.values()):
                if self._group_of[state.shard] != group:
                    continue
                if self.leaving.get(state.name) is state:
                    self._forget(state)
                    continue
                if state.status != NEW:
                    state.status = LOST
                self._pending.add(state)
            if len(self._connections) == len(self.groups):
                self.ready.set()
                if not self.connected:
                    logger.info("Redis listener connected")
                self.connected = True
        self.wake()

    def _lost(self, group: tuple[int, ...], connection: RespConnection | None) -> None:
        """A group's connection failed: its channels wait until they are caught up again."""
        self.connected = False
        with self.lock:
            if self._connections.get(group) is connection:
                self._connections.pop(group, None)
            self.ready.clear()
            self._owed = [s for s in self._owed if self._group_of[s.shard] != group]
            for state in (*self.channels.values(), *self.leaving.values()):
                if self._group_of[state.shard] == group and state.status != NEW:
                    state.status = LOST
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()
        if isinstance(self.commands, RedisCluster):
            with contextlib.suppress(redis.RedisError, OSError):
                self.commands.nodes_manager.initialize()  # after a failover: the new topology

    def _forget(self, state: Channel) -> None:
        self.leaving.pop(state.name, None)
        self._by_key.pop(state.key, None)
        self._pending.discard(state)

    def _handle(self, replies: list[Reply]) -> None:
        """Dispatch events, note confirmations; a confirmed channel that is owed a catch-up is
        caught up before any later event is dispatched."""
        index = 0
        while index < len(replies):
            with self.lock:
                index = self._handle_locked(replies, index)
            if self._owed:
                self._catch_up_owed()

    def _handle_locked(self, replies: list[Reply], index: int) -> int:
        by_key = self._by_key
        while index < len(replies):
            reply = replies[index]
            if not isinstance(reply, list) or not reply:
                if isinstance(reply, ReplyError):
                    hint = (
                        " (sharded pub/sub needs Redis 7.0 or later)"
                        if "unknown" in str(reply)
                        else ""
                    )
                    raise redis.exceptions.ResponseError(f"{reply}{hint}")
                index += 1
                continue
            kind = reply[0]
            if kind == b"smessage":
                if self._owed:
                    return index  # catch up first
                state = by_key.get(t.cast(bytes, reply[1]))
                if state is not None:
                    self._dispatch_message(state, t.cast(bytes, reply[2]))
            elif kind == b"ssubscribe":
                self._confirmed(by_key.get(t.cast(bytes, reply[1])))
            elif kind == b"sunsubscribe":
                self._unsubscribed(by_key.get(t.cast(bytes, reply[1])))
            index += 1
        return index

    def _confirmed(self, state: Channel | None) -> None:
        if state is None or state.status != SUBSCRIBING:
            return
        if state.catch_up:
            self._owed.append(state)
        else:
            self._live(state)

    def _unsubscribed(self, state: Channel | None) -> None:
        if state is None:
            return
        if state.status == LEAVING:
            if self.leaving.get(state.name) is state:
                self._forget(state)
            else:
                # A subscriber came back while Redis unsubscribed: subscribe again, and catch
                # up from the last event dispatched (dispatch went on until this moment).
                state.status = LOST
                self._queue(state)
        elif state.status in (LIVE, SUBSCRIBING):
            raise _Moved(f"Redis unsubscribed channel {state.name!r} (its slot moved)")

    def _live(self, state: Channel) -> None:
        state.status = LIVE
        state.catch_up = False
        waiter, state.waiter = state.waiter, None
        if waiter is not None:
            waiter.set()

    def _dispatch_message(self, state: Channel, message: bytes) -> None:
        """Deliver one event to its channel's subscribers. What it raises (a malformed message,
        a bug) is contained here: the channel's subscribers are dropped, to resume from the
        channel's own stream, and every other channel goes on."""
        try:
            newline = message.index(b"\n")
            generation, _, position = message[:newline].partition(b" ")
            self._deliver(
                state, generation.decode("ascii"), parse_stream_id(position), message[newline + 1 :]
            )
        except Exception:
            if state.idle:
                return  # a channel left: nobody to drop (it resumes from its stream if followed)
            FAULTS.record(Stage.DISPATCH, "the channel's subscribers were dropped", state.name)
            self._drop_channel(state)

    def _drop_channel(self, state: Channel) -> None:
        """Drop every subscriber of ``state`` (they resume from the backlog)."""
        for subscription in (*state.subscribers, *state.joining):
            with contextlib.suppress(Exception):
                subscription.drop(EndReason.ERROR)

    def _deliver(self, state: Channel, generation: str, position: StreamId, data: bytes) -> None:
        if generation != state.generation:
            if state.generation is not None:
                self._reset_channel(state, generation, "channel-restarted")
            state.generation = generation
        elif state.last is not None and position <= state.last:
            return  # read again (a catch-up and pub/sub both had it)
        state.last = position
        if state.idle:
            return  # leaving: only its position is kept
        try:
            frame = frame_at(generation, position, data)
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

    def _reset_channel(self, state: Channel, generation: str, reason: str) -> None:
        """The channel's data is gone (Redis lost it, or it was forgotten): tell its streams.

        After a reset, every entry of the channel's stream is owed (the clients stand at the
        start of ``generation``); after a reset to the empty generation, the first events of
        the channel's next life arrive without a second reset.
        """
        reset = reset_at(generation, ZERO, reason)
        for subscription in tuple(state.subscribers):
            deliver_contained(subscription, reset)
        for frames in state.joining.values():
            frames.append((None, reset))
        state.floors.clear()
        state.generation = None if generation == EMPTY_GENERATION else generation
        state.last = None

    # -- catching up -----------------------------------------------------------------------------

    def _catch_up_owed(self) -> None:
        """Catch up the channels confirmed on a new subscription, then mark them live."""
        owed, self._owed = self._owed, []
        for start in range(0, len(owed), CHANNEL_BATCH):
            batch = owed[start : start + CHANNEL_BATCH]
            logger.info("catching up %d channels from Redis", len(batch))
            read = self.run("catch-up", functools.partial(self._read_missed, states=batch))
            with self.lock:
                for state, (raw_generation, entries) in zip(batch, read, strict=True):
                    if state.status != SUBSCRIBING:
                        continue
                    try:
                        self._deliver_caught_up(state, raw_generation, entries)
                    except Exception:
                        FAULTS.record(
                            Stage.DISPATCH, "the channel's subscribers were dropped", state.name
                        )
                        self._drop_channel(state)
                    self._live(state)

    def _read_missed(
        self, client: t.Any, states: list[Channel]
    ) -> list[tuple[bytes | None, list[t.Any]]]:
        pipe = client.pipeline(transaction=False)
        for state in states:
            pipe.get(self.keys.generation(state.name))
            after = f"({format_stream_id(state.last)}" if state.last is not None else "-"
            pipe.xrange(self.keys.channel(state.name), after, "+", count=self.backlog + 1)
        replies = pipe.execute()
        return [(replies[2 * i], replies[2 * i + 1]) for i in range(len(states))]

    def _deliver_caught_up(
        self, state: Channel, raw_generation: bytes | None, entries: list[t.Any]
    ) -> None:
        generation = raw_generation.decode() if raw_generation else EMPTY_GENERATION
        if state.generation is not None and generation != state.generation:
            self._reset_channel(state, generation, "broker-restarted")
            return
        if len(entries) > self.backlog:
            self._reset_channel(state, generation, "expired")
            return
        for entry_id, fields in entries:
            self._deliver(state, generation, parse_stream_id(entry_id), fields[b"e"])

    # -- keeping followed channels alive ---------------------------------------------------------

    def refresh_ttls(self) -> None:
        """Keep the channels this process follows alive: refresh their keys' TTL, in batches,
        a few times per TTL (a channel with subscribers is never forgotten)."""
        interval = max(t.cast(float, self.channel_ttl) / 3, 0.05)
        while not self.closed:
            gevent.sleep(interval)
            names = list(self.channels)
            try:
                for start in range(0, len(names), CHANNEL_BATCH):
                    batch = names[start : start + CHANNEL_BATCH]
                    self.run("refresh", functools.partial(self._expire, names=batch))
            except BrokerUnavailable as error:
                logger.warning("could not refresh the TTL of followed channels: %s", error)

    def _expire(self, client: redis.Redis[bytes], names: list[str]) -> None:
        milliseconds = int(t.cast(float, self.channel_ttl) * 1000)
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.pexpire(self.keys.channel(name), milliseconds)
            pipe.pexpire(self.keys.generation(name), milliseconds)
        pipe.execute()
