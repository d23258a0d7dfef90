"""Snapshots of channels in Redis, batched: what a resuming subscriber reads, a page at a time.

A subscriber that resumes needs its channel's tail and the first page of entries after its id,
read atomically (:data:`~._redis_layout.SNAPSHOT_SCRIPT`); later pages of its replay are read
the same way. :class:`SnapshotBatcher` sends queued snapshots :data:`SNAPSHOT_BATCH` per round
trip, one batch at a time, on a connection of its own (``ssecors-snap-<pid>``), so that
thousands of clients reconnecting at once never take a connection from publishing.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import typing as t

import gevent
import gevent.event

from ..exceptions import BrokerUnavailable
from ._base import PAGE_BYTES
from ._base import QUEUE_TIMEOUT_FACTOR as QUEUE_TIMEOUT_FACTOR
from ._base import QUEUE_TIMEOUT_MIN as QUEUE_TIMEOUT_MIN
from ._redis_conn import redis as redis
from ._redis_layout import Keys
from ._redis_layout import parse_stream_id
from ._redis_layout import SNAPSHOT_SCRIPT
from ._redis_layout import StreamId

#: Most snapshots sent in one round trip.
SNAPSHOT_BATCH: t.Final = 256


class Snapshot(t.NamedTuple):
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


class SnapshotRequest:
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
        self.result: Snapshot | None = None
        self.error: BrokerUnavailable | None = None
        self.wanted = True


class NoAnswer(Exception):
    """Redis sent no reply within the timeout."""


#: redis-py 5's ``ConnectionPool.get_connection`` requires a command name; later ones do not.
_POOL_WANTS_COMMAND = (
    inspect.signature(redis.ConnectionPool.get_connection).parameters["command_name"].default
    is inspect.Parameter.empty
)


def _pooled_connection(pool: t.Any) -> t.Any:
    """A connection from a redis-py pool."""
    return pool.get_connection("EVALSHA") if _POOL_WANTS_COMMAND else pool.get_connection()


class SnapshotBatcher:
    """Queued snapshots, sent in batches by :meth:`run` (a greenlet of the broker's thread).

    :param client: the connection's client (one connection; per node in a cluster).
    :param keys: the key names.
    :param cluster: whether ``client`` is a cluster client (one pipeline per node).
    :param timeout: bound on each round trip (``SSECORS_BROKER_TIMEOUT``).
    """

    def __init__(self, client: t.Any, *, keys: Keys, cluster: bool, timeout: float) -> None:
        self.client = client
        self.keys = keys
        self.cluster = cluster
        self.timeout = timeout
        self.sha = hashlib.sha1(SNAPSHOT_SCRIPT.encode()).hexdigest()
        self.pending: list[SnapshotRequest] = []
        self.wanted = gevent.event.Event()
        self.closed = False

    def stop(self) -> None:
        """Stop :meth:`run` after its current batch."""
        self.closed = True
        self.wanted.set()

    def read(self, request: SnapshotRequest) -> Snapshot:
        """Queue ``request`` for the next batch and wait for its answer."""
        self.pending.append(request)
        self.wanted.set()
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

    def run(self) -> None:
        """Send queued snapshots, :data:`SNAPSHOT_BATCH` per round trip, one batch at a time."""
        while not self.closed:
            self.wanted.wait()
            self.wanted.clear()
            while self.pending:
                batch = [r for r in self.pending[:SNAPSHOT_BATCH] if r.wanted]
                del self.pending[:SNAPSHOT_BATCH]
                if batch:
                    self._batch(batch)

    def _batch(self, batch: list[SnapshotRequest]) -> None:
        if self.cluster:
            # A cluster pipeline sends no scripts: one pipeline per node, side by side.
            by_node: dict[str, tuple[t.Any, list[SnapshotRequest]]] = {}
            for request in batch:
                try:
                    node = self.client.get_node_from_key(self.keys.channel(request.channel))
                    if node is None:
                        raise redis.exceptions.ClusterDownError("no node serves the slot")
                except (redis.RedisError, OSError) as error:
                    request.error = BrokerUnavailable(f"subscribe: {error}")
                    request.done.set()
                    continue
                by_node.setdefault(node.name, (node, []))[1].append(request)
            jobs = [
                gevent.spawn(self._pipeline, self.client.get_redis_connection(node), requests)
                for node, requests in by_node.values()
            ]
            gevent.joinall(jobs)
            if any(request.error is not None for request in batch):
                with contextlib.suppress(redis.RedisError, OSError):
                    self.client.nodes_manager.initialize()  # a failover: the new topology
            return
        self._pipeline(self.client, batch)

    def _pipeline(self, client: t.Any, batch: list[SnapshotRequest]) -> None:
        try:
            for attempt in (1, 2):
                commands = [
                    (
                        "EVALSHA",
                        self.sha,
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
                    request.result = read_snapshot(reply)
                request.done.set()
        except (NoAnswer, redis.RedisError, OSError) as error:
            detail = "no answer within the timeout" if isinstance(error, NoAnswer) else str(error)
            # The snapshots still queued would meet the same Redis: they fail now, not one
            # batch (one timeout) after another.
            queued, self.pending[:] = list(self.pending), []
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

        :raises NoAnswer: when Redis sent nothing within the timeout; the connection is
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
                    raise NoAnswer
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


def read_snapshot(reply: list[t.Any]) -> Snapshot:
    generation, tail, added, length, first, entries = reply
    return Snapshot(
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
