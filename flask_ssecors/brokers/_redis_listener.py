"""The Redis listener: one connection per worker process (per shard in a cluster) that reads
the shard streams and hands each entry to the local subscribers of its channel.

It owns the channels this process follows (:class:`Channel`): the broker's facade registers
subscribers there (under :attr:`Listener.lock`), the listener delivers to them. Each shard entry
carries the shard's counter, so the listener notices entries it missed (the shard stream was
trimmed while it was away, or Redis restarted) and catches up from the channels' own streams;
the same catch-up runs after every reconnection, and sends the reset event to the streams of
channels whose generation changed. What one entry, channel or subscriber raises is contained
there (:mod:`flask_ssecors._faults`).
"""

from __future__ import annotations

import collections.abc as cabc
import contextlib
import functools
import random
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
from ._redis_conn import client_for
from ._redis_conn import disconnect as _disconnect
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

logger = get_logger(__name__)

#: How long one ``XREAD`` blocks before the listener loops (milliseconds).
BLOCK_MS: t.Final = 5000
#: Most entries one ``XREAD`` returns per shard.
READ_COUNT: t.Final = 1000
#: Channels caught up (or whose TTL is refreshed) per round trip.
CHANNEL_BATCH: t.Final = 500
#: Longest pause between two attempts of the listener to reconnect (seconds).
MAX_BACKOFF: t.Final = 1.0

_RLock: t.Final[t.Callable[[], t.Any]] = gevent.monkey.get_original("threading", "RLock")
_Event: t.Final[t.Any] = gevent.monkey.get_original("threading", "Event")

#: An encoded event as a subscriber receives it, with its position in its channel (None for a
#: reset event, which no later position makes obsolete).
Joined: t.TypeAlias = tuple["StreamId | None", Frame]


class Readiness:
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


class Channel:
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


class Listener:
    """Reads the shard streams of one worker process and delivers to its subscribers.

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
        #: Shards read together by one listening connection: all of them, except in a cluster,
        #: where a read names keys of one slot only, so each shard has its own.
        self.groups: tuple[tuple[int, ...], ...] = (
            tuple((shard,) for shard in range(SHARDS))
            if address.kind == "cluster"
            else (tuple(range(SHARDS)),)
        )
        #: Guards the channels between the listener and subscribers in other OS threads.
        self.lock = _RLock()
        #: The channels this process follows.
        self.channels: dict[str, Channel] = {}
        self.ready = Readiness()
        self._cursors: dict[int, bytes] = {}
        self._counts: dict[int, int] = {}
        self._listener_clients: dict[tuple[int, ...], t.Any] = {}
        #: The listening groups that have read where their shards are (or caught up).
        self._prepared: set[tuple[int, ...]] = set()
        self.closed = False
        #: Whether the listener is connected (for statistics and health checks).
        self.connected = False

    def stop(self) -> None:
        """Stop listening and close the listening connections."""
        self.closed = True
        for client in self._listener_clients.values():
            _disconnect(client)

    def _listening_client(self, group: tuple[int, ...]) -> t.Any:
        """The connection ``group`` reads with: one for every shard on one server; in a
        cluster, one per shard, to the node that serves the shard's slot (its catch-up reads
        keys of that slot only), so a worker holds exactly one listening connection per shard."""
        client = self._listener_clients.get(group)
        if client is None:
            url: str | Address = self.url
            if self.address.kind == "cluster":
                node = self.commands.get_node_from_key(self.keys.live(group[0]))
                if node is None:
                    raise redis.exceptions.ClusterDownError("no node serves the shard's slot")
                url = node_address(self.address, node.host, node.port)
            client = self._listener_clients[group] = client_for(
                url,
                timeout=BLOCK_MS / 1000 + self.timeout + 1,
                max_connections=1,
                name=f"ssecors-listen-{self.pid}",
            )
        return client

    def listen(self, group: tuple[int, ...]) -> None:
        """Read the shards of ``group`` and dispatch their entries, for as long as the broker
        is open: reconnect with backoff, and catch up after every fault."""
        backoff = 0.05
        while not self.closed:
            try:
                client = self._listening_client(group)
                if group not in self._prepared:
                    self._prepare(client, group)
                    self._prepared.add(group)
                    if len(self._prepared) == len(self.groups):
                        self.ready.set()
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
        self.ready.clear()
        client = self._listener_clients.pop(group, None)
        if client is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                _disconnect(client)
        if isinstance(self.commands, RedisCluster):
            with contextlib.suppress(redis.RedisError, OSError):
                self.commands.nodes_manager.initialize()  # after a failover: the new topology

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
        with self.lock:
            return self._dispatch_locked(reply)

    def _dispatch_locked(self, reply: t.Any) -> set[int]:
        gaps: set[int] = set()
        channels = self.channels
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

    def _dispatch_entry(self, state: Channel, fields: dict[bytes, bytes]) -> None:
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
            return  # read again (a catch-up and the shard both had it)
        state.last = position
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

        After a reset to the empty generation, the first events of the channel's next life
        arrive without a second reset.
        """
        reset = reset_at(generation, ZERO, reason)
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
        followed = [s for s in self.channels.values() if s.shard in shards]
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
            with self.lock:
                for state, (raw_generation, entries) in zip(batch, answers, strict=True):
                    try:
                        self._deliver_caught_up(state, raw_generation, entries)
                    except Exception:
                        FAULTS.record(
                            Stage.DISPATCH, "the channel's subscribers were dropped", state.name
                        )
                        self._drop_channel(state)

    def _deliver_caught_up(
        self, state: Channel, raw_generation: bytes | None, entries: list[t.Any] | None
    ) -> None:
        if self.channels.get(state.name) is not state:
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


def _shard_of_key(key: bytes | str) -> int:
    text = key.decode() if isinstance(key, bytes) else key
    start = text.rindex("{s") + 2
    return int(text[start : text.index("}", start)])
