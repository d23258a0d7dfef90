"""The Redis broker: fan-out across workers and hosts (``SSECORS_BROKER_URL = "redis://..."``).

Each channel is a Redis Stream (``XADD`` with ``MAXLEN ~ SSECORS_BACKLOG``). Stream ids are
global and ordered, so a client can reconnect to any worker and resume after its
``Last-Event-ID``.

Per worker process there is **one** listening connection, shared by every subscriber and
channel: one greenlet runs ``XREAD BLOCK`` over the streams that have local subscribers and fans
each entry out in-process. Publishing and replay use a small, bounded pool of command
connections. The event is encoded once when published; each worker adds the ``id:`` line once
per entry, and every local subscriber receives the same bytes object.

Event ids look like ``<epoch>.<stream id>``. The epoch is a random token kept in Redis: if Redis
restarts without its data, a new epoch is drawn, and clients holding ids of the old one get the
reset event instead of silence.

Faults: when Redis goes away, open streams stay open (heartbeats go on); the listener reconnects
with backoff and then delivers what was published since, in order, without duplicates.
:meth:`RedisBroker.publish` raises :class:`~flask_ssecors.exceptions.BrokerUnavailable` within
the broker timeout rather than dropping or hanging.

Sockets are gevent's own, so the broker cooperates with other greenlets with or without
monkey-patching.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import typing as t

import gevent
import gevent.event
import gevent.lock
import gevent.socket

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as error:  # pragma: no cover - exercised by the missing-extra test
    raise ImportError(
        "SSECORS_BROKER_URL names Redis but the 'redis' package is not installed; "
        "install flask-ssecors[redis]."
    ) from error

from ..events import Event
from ..events import RESET_EVENT
from ..exceptions import BrokerUnavailable
from .base import Subscription

logger = logging.getLogger("flask_ssecors")

#: How long one ``XREAD`` blocks before the listener loops (milliseconds).
BLOCK_MS: t.Final = 5000
#: Most entries one ``XREAD`` returns per stream.
READ_COUNT: t.Final = 1000
MAX_BACKOFF: t.Final = 2.0


class GeventConnection(redis.Connection):
    """A redis-py TCP connection on a gevent socket (cooperative without monkey-patching)."""

    def _connect(self) -> t.Any:
        sock = gevent.socket.create_connection(
            (self.host, self.port), timeout=self.socket_connect_timeout
        )
        sock.setsockopt(gevent.socket.IPPROTO_TCP, gevent.socket.TCP_NODELAY, 1)
        sock.settimeout(self.socket_timeout)
        return sock


class GeventUnixConnection(redis.UnixDomainSocketConnection):
    """A redis-py Unix-socket connection on a gevent socket."""

    def _connect(self) -> t.Any:
        sock = gevent.socket.socket(gevent.socket.AF_UNIX, gevent.socket.SOCK_STREAM)
        sock.settimeout(self.socket_connect_timeout)
        sock.connect(self.path)
        sock.settimeout(self.socket_timeout)
        return sock


def _client(url: str, *, timeout: float, max_connections: int) -> redis.Redis[bytes]:
    scheme = url.partition("://")[0].lower()
    kwargs: dict[str, t.Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "max_connections": max_connections,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
    }
    if scheme == "redis":
        kwargs["connection_class"] = GeventConnection
    elif scheme == "unix":
        kwargs["connection_class"] = GeventUnixConnection
    pool = redis.ConnectionPool.from_url(url, **kwargs)
    return redis.Redis(connection_pool=pool)


def _stream_id(value: bytes | str) -> tuple[int, int]:
    text = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def parse_event_id(value: str) -> tuple[str, tuple[int, int]] | None:
    """Split ``<epoch>.<ms>-<seq>``; None when it is not of that form."""
    epoch, dot, stream = value.partition(".")
    ms, dash, seq = stream.partition("-")
    if not (dot and dash and epoch and ms.isdigit() and seq.isdigit()):
        return None
    if len(ms) > 19 or len(seq) > 19 or not epoch.isalnum() or len(epoch) > 32:
        return None
    return epoch, (int(ms), int(seq))


class _Channel:
    __slots__ = ("key", "last_id", "name", "ready", "subscribers")

    def __init__(self, name: str, key: str) -> None:
        self.name = name
        self.key = key
        #: The stream id after which the listener reads; None until the first snapshot.
        self.last_id: bytes | None = None
        self.subscribers: set[Subscription] = set()
        #: Set once the first snapshot was taken (or failed).
        self.ready = gevent.event.Event()


class RedisBroker:
    """Redis Streams behind the broker protocol.

    :param url: a ``redis://``, ``rediss://`` or ``unix://`` URL.
    :param backlog: events kept per channel for replay (``MAXLEN ~``, so at least this many).
    :param timeout: bound in seconds on each publish or replay (``SSECORS_BROKER_TIMEOUT``).
    :param prefix: key prefix in Redis.
    :param pool_size: command connections per process.
    """

    def __init__(
        self,
        url: str,
        *,
        backlog: int = 1000,
        timeout: float = 2.0,
        prefix: str = "ssecors:",
        pool_size: int = 8,
    ) -> None:
        self.url = url
        self.backlog = backlog
        self.timeout = timeout
        self.prefix = prefix
        self.pool_size = pool_size
        self._epoch_key = f"{prefix}epoch"
        #: Most entries one replay reads; more than that waiting means the client is too far
        #: behind, and it gets the reset event (``MAXLEN ~`` may keep a little over backlog).
        self._replay_cap = backlog + 200
        self._pid = -1
        self._reset_process_state()

    def _reset_process_state(self) -> None:
        """(Re)create per-process state; called lazily, and again after a fork."""
        self._pid = os.getpid()
        self._commands = _client(self.url, timeout=self.timeout, max_connections=self.pool_size)
        self._slots = gevent.lock.BoundedSemaphore(self.pool_size)
        self._listener_client: redis.Redis[bytes] | None = None
        self._listener: gevent.Greenlet | None = None
        self._channels: dict[str, _Channel] = {}
        self._by_key: dict[bytes, _Channel] = {}
        self._epoch: str | None = None
        self._wake_key = f"{self.prefix}wake:{secrets.token_hex(8)}"
        self._wake_pending = False
        self._wake_id: t.Any = b"0-0"
        self._closed = False
        self._epoch_checked = False
        #: Whether the listener is connected (for statistics and health checks).
        self.connected = False

    def _check_pid(self) -> None:
        if self._pid != os.getpid():
            self._reset_process_state()

    def _key(self, channel: str) -> str:
        return f"{self.prefix}ch:{channel}"

    # -- commands ----------------------------------------------------------------------------

    def _run(self, what: str, call: t.Callable[[redis.Redis[bytes]], t.Any]) -> t.Any:
        """Run commands on a pooled connection, bounded by ``timeout``."""
        if not self._slots.acquire(timeout=self.timeout):
            raise BrokerUnavailable(f"{what}: every Redis connection stayed busy")
        try:
            with gevent.Timeout(self.timeout * 2 + 0.5, BrokerUnavailable(f"{what}: timed out")):
                return call(self._commands)
        except redis.RedisError as error:
            raise BrokerUnavailable(f"{what}: {error}") from error
        finally:
            self._slots.release()

    def publish(self, channel: str, event: Event) -> str:
        """Append to the channel's stream; return ``<epoch>.<stream id>``.

        :raises BrokerUnavailable: when Redis cannot be reached within the timeout.
        """
        self._check_pid()
        data = (
            Event(event.data, event=event.event, retry=event.retry, comment=event.comment).encode()
            if event.id is not None
            else event.encode()
        )
        new_epoch = secrets.token_hex(4)
        key = self._key(channel)

        def call(client: redis.Redis[bytes]) -> t.Any:
            pipe = client.pipeline(transaction=True)
            pipe.set(self._epoch_key, new_epoch, nx=True)
            pipe.get(self._epoch_key)
            pipe.xadd(key, {"e": data}, maxlen=max(self.backlog, 1), approximate=True)
            return pipe.execute()

        _, epoch, stream_id = self._run("publish", call)
        return f"{epoch.decode()}.{stream_id.decode()}"

    # -- subscribing -------------------------------------------------------------------------

    def subscribe(
        self, channel: str, last_event_id: str | None = None, *, limit: int = 1000
    ) -> Subscription:
        """Subscribe; replay strictly after ``last_event_id`` (see :class:`.base.Broker`).

        The first subscriber of a channel in this process takes a snapshot (the stream's tail
        and the entries after ``last_event_id``, read atomically), which becomes the listener's
        cursor. Later subscribers register first, then take their snapshot, and keep the
        replayed entries up to the cursor they joined at; the listener delivers everything
        after it. Either way nothing is missed and nothing is delivered twice.

        :raises BrokerUnavailable: when Redis cannot be reached to take the snapshot.
        """
        self._check_pid()
        self._ensure_listener()
        state = self._channels.get(channel)
        if state is None:
            return self._subscribe_first(channel, last_event_id, limit)
        if state.last_id is None:
            state.ready.wait(self.timeout * 2 + 1)
            if state.last_id is None:
                raise BrokerUnavailable("subscribe: the channel's first snapshot failed")
        cursor = state.last_id
        subscription = Subscription(channel, limit, self._release)
        state.subscribers.add(subscription)
        try:
            epoch, tail, info, entries = self._snapshot(state.key, last_event_id)
        except BrokerUnavailable:
            subscription.close()
            raise
        # Nothing yields from here on: merge the snapshot with what arrived live meanwhile.
        if subscription.closed:
            return subscription
        replay = self._replay(epoch, tail, info, entries, last_event_id, cursor)
        live = list(subscription._items)
        subscription._items.clear()
        subscription.preload([*replay, *live])
        return subscription

    def _subscribe_first(self, channel: str, last_event_id: str | None, limit: int) -> Subscription:
        state = _Channel(channel, self._key(channel))
        self._channels[channel] = state
        self._by_key[state.key.encode()] = state
        try:
            epoch, tail, info, entries = self._snapshot(state.key, last_event_id)
            state.last_id = tail
        except BrokerUnavailable:
            self._forget(state)
            raise
        finally:
            state.ready.set()
        self._wake()
        subscription = Subscription(channel, limit, self._release)
        state.subscribers.add(subscription)
        subscription.preload(self._replay(epoch, tail, info, entries, last_event_id, tail))
        return subscription

    def _snapshot(
        self, key: str, last_event_id: str | None
    ) -> tuple[str, bytes, dict[str, t.Any] | None, list[t.Any]]:
        """Read the epoch, the stream's tail and info, and the entries after the id, atomically."""
        parsed = parse_event_id(last_event_id) if last_event_id is not None else None
        new_epoch = secrets.token_hex(4)

        def call(client: redis.Redis[bytes]) -> t.Any:
            pipe = client.pipeline(transaction=True)
            pipe.set(self._epoch_key, new_epoch, nx=True)
            pipe.get(self._epoch_key)
            pipe.xinfo_stream(key)
            if parsed is not None:
                ms, seq = parsed[1]
                pipe.xrange(key, min=f"({ms}-{seq}", max="+", count=self._replay_cap)
            return pipe.execute(raise_on_error=False)

        results = self._run("subscribe", call)
        epoch = results[1].decode()
        info = results[2] if isinstance(results[2], dict) else None
        tail = _as_bytes(info.get("last-generated-id", b"0-0")) if info is not None else b"0-0"
        entries = results[3] if parsed is not None and isinstance(results[3], list) else []
        if self._epoch is None:
            self._epoch = epoch
        return epoch, tail, info, entries

    def _replay(
        self,
        epoch: str,
        tail: bytes,
        info: dict[str, t.Any] | None,
        entries: list[t.Any],
        last_event_id: str | None,
        cursor: bytes,
    ) -> list[bytes]:
        if last_event_id is None:
            return []
        parsed = parse_event_id(last_event_id)
        if parsed is None or parsed[0] != epoch or parsed[1] > _stream_id(tail):
            return [self._reset(epoch, cursor, "unknown-id")]
        deleted = _as_bytes(info.get("max-deleted-entry-id", b"0-0")) if info else b"0-0"
        if parsed[1] < _stream_id(deleted) or len(entries) >= self._replay_cap:
            return [self._reset(epoch, cursor, "expired")]
        limit = _stream_id(cursor)
        return [
            self._frame(epoch, entry_id, fields)
            for entry_id, fields in entries
            if _stream_id(entry_id) <= limit
        ]

    def _reset(self, epoch: str, cursor: bytes, reason: str) -> bytes:
        return Event(
            {"reason": reason}, event=RESET_EVENT, id=f"{epoch}.{cursor.decode()}"
        ).encode()

    def _frame(self, epoch: str, entry_id: bytes | str, fields: dict[bytes, bytes]) -> bytes:
        return b"id: %s.%s\n%s" % (epoch.encode(), _as_bytes(entry_id), fields[b"e"])

    def _release(self, subscription: Subscription) -> None:
        state = self._channels.get(subscription.channel)
        if state is None:
            return
        state.subscribers.discard(subscription)
        if not state.subscribers and state.last_id is not None:
            self._forget(state)

    def _forget(self, state: _Channel) -> None:
        if self._channels.get(state.name) is state:
            del self._channels[state.name]
            self._by_key.pop(state.key.encode(), None)

    def subscriber_count(self, channel: str | None = None) -> int:
        """Open subscriptions in this process on ``channel``, or on every channel."""
        if self._pid != os.getpid():
            return 0
        if channel is not None:
            state = self._channels.get(channel)
            return len(state.subscribers) if state else 0
        return sum(len(state.subscribers) for state in self._channels.values())

    # -- the listener ------------------------------------------------------------------------

    def _ensure_listener(self) -> None:
        if self._listener is None or self._listener.dead:
            self._listener_client = _client(
                self.url, timeout=BLOCK_MS / 1000 + self.timeout + 1, max_connections=1
            )
            self._listener = gevent.spawn(self._listen)

    def _wake(self) -> None:
        """Make the listener start a new XREAD that includes a newly tracked channel."""
        if self._wake_pending or self._listener is None:
            return
        self._wake_pending = True
        gevent.spawn(self._send_wake)

    def _send_wake(self) -> None:
        try:
            self._run(
                "wake",
                lambda client: (
                    client.pipeline(transaction=False)
                    .xadd(self._wake_key, {"w": "1"}, maxlen=1)
                    .expire(self._wake_key, 60)
                    .execute()
                ),
            )
        except BrokerUnavailable:
            self._wake_pending = False

    def _listen(self) -> None:
        backoff = 0.05
        client = self._listener_client
        assert client is not None
        while not self._closed:
            try:
                self._sync_epoch(client)
                streams: dict[t.Any, t.Any] = {self._wake_key: self._wake_id}
                for state in self._channels.values():
                    if state.last_id is not None:
                        streams[state.key] = state.last_id
                self._wake_pending = False
                reply = client.xread(streams, count=READ_COUNT, block=BLOCK_MS)
                self.connected = True
                backoff = 0.05
            except (redis.RedisError, OSError) as error:
                if self.connected:
                    logger.warning("Redis listener lost its connection: %s", error)
                self.connected = False
                self._epoch_checked = False
                gevent.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            self._dispatch(reply)

    def _sync_epoch(self, client: redis.Redis[bytes]) -> None:
        """After (re)connecting, check that Redis still has the data our cursors point into."""
        if self._epoch_checked:
            return
        pipe = client.pipeline(transaction=True)
        pipe.set(self._epoch_key, secrets.token_hex(4), nx=True)
        pipe.get(self._epoch_key)
        epoch = pipe.execute()[1].decode()
        if self._epoch is not None and epoch != self._epoch:
            logger.warning("Redis lost its data (new epoch); sending the reset event to streams")
            for state in self._channels.values():
                reset = self._reset(epoch, b"0-0", "broker-restarted")
                for subscription in tuple(state.subscribers):
                    subscription.deliver(reset)
                if state.last_id is not None:
                    state.last_id = b"0-0"
        self._epoch = epoch
        self._epoch_checked = True
        self.connected = True

    def _dispatch(self, reply: t.Any) -> None:
        epoch = self._epoch
        assert epoch is not None
        for key, entries in reply or ():
            if _as_bytes(key) == self._wake_key.encode():
                if entries:
                    self._wake_id = entries[-1][0]
                continue
            state = self._by_key.get(_as_bytes(key))
            if state is None or not entries:
                continue
            for entry_id, fields in entries:
                if b"e" not in fields:
                    continue
                data = self._frame(epoch, entry_id, fields)
                for subscription in tuple(state.subscribers):
                    subscription.deliver(data)
            state.last_id = _as_bytes(entries[-1][0])

    def close(self) -> None:
        """Stop the listener and drop every subscriber."""
        self._closed = True
        if self._listener is not None:
            self._listener.kill(block=False)
        for state in list(self._channels.values()):
            for subscription in tuple(state.subscribers):
                subscription.drop("broker-closed")
        self._channels.clear()
        self._by_key.clear()


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
