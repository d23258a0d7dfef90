"""The Redis broker: fan-out across workers and hosts (``SSECORS_BROKER_URL = "redis://..."``).

Each channel is a Redis Stream (``XADD`` with ``MAXLEN ~``, keeping at least
``SSECORS_BACKLOG + 1`` entries). Stream ids are global and ordered, so a client can reconnect
to any worker and resume after its ``Last-Event-ID``.

Per worker process there is **one** listening connection, shared by every subscriber and
channel: one greenlet runs ``XREAD BLOCK`` over the streams that have local subscribers and fans
each entry out in-process. A channel that gets its first local subscriber while the read is
blocked wakes the listener (an entry on a per-process wake stream), which then reads again with
the new channel included. Publishing and replay use a small, bounded pool of command
connections. The event is encoded once when published; each worker adds the ``id:`` line once
per entry, and every local subscriber receives the same bytes object. Connections are named
``ssecors-listen-<pid>`` and ``ssecors-cmd-<pid>`` in ``CLIENT LIST``.

Event ids look like ``<epoch>.<stream id>``. The epoch is a random token kept in Redis: if Redis
restarts without its data, a new epoch is drawn, and clients holding ids of the old one get the
reset event instead of silence. A client whose id is older than the backlog gets the reset
event too (Redis does not record which entries ``MAXLEN`` trimmed, so the broker counts the
entries after the id, and checks that the id is not older than the oldest entry kept).

Faults: when Redis goes away, open streams stay open (heartbeats go on); the listener reconnects
with backoff and then delivers what was published since, in order, without duplicates.
:meth:`RedisBroker.publish` raises :class:`~flask_ssecors.exceptions.BrokerUnavailable` within
the broker timeout rather than dropping or hanging.

For ``redis://`` and ``unix://`` the sockets are gevent's own, so the broker cooperates with
other greenlets with or without monkey-patching. ``rediss://`` uses redis-py's TLS connection,
which cooperates only once gevent has patched ``socket`` and ``ssl`` (``gunicorn -k gevent``
does).

The listener names every channel it follows in each ``XREAD``, so its cost per read grows with
the number of channels that have local subscribers: thousands of channels per process (one per
user, say) make each event cost milliseconds of CPU.
"""

from __future__ import annotations

import os
import random
import secrets
import time
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

from .._log import get_logger
from ..events import add_id
from ..events import Event
from ..events import RESET_EVENT
from ..events import without_id
from ..exceptions import BrokerUnavailable
from ._base import Subscription

logger = get_logger(__name__)

#: How long one ``XREAD`` blocks before the listener loops (milliseconds).
BLOCK_MS: t.Final = 5000
#: Most entries one ``XREAD`` returns per stream.
READ_COUNT: t.Final = 1000
#: Longest pause between two attempts of the listener to reconnect (seconds).
MAX_BACKOFF: t.Final = 1.0

#: A stream id as ``(milliseconds, sequence)``, which orders like Redis orders them.
StreamId: t.TypeAlias = tuple[int, int]
#: An encoded event as a subscriber receives it, with the stream id it came from (None for a
#: reset event, which no later position makes obsolete).
Frame: t.TypeAlias = tuple["StreamId | None", bytes]


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


def _client(url: str, *, timeout: float, max_connections: int, name: str) -> redis.Redis[bytes]:
    scheme = url.partition("://")[0].lower()
    kwargs: dict[str, t.Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "max_connections": max_connections,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
        "client_name": name,
    }
    if scheme == "redis":
        kwargs["connection_class"] = GeventConnection
    elif scheme == "unix":
        kwargs["connection_class"] = GeventUnixConnection
    pool = redis.ConnectionPool.from_url(url, **kwargs)
    return redis.Redis(connection_pool=pool)


def _stream_id(value: bytes | str) -> StreamId:
    text = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _id_bytes(value: StreamId) -> bytes:
    return b"%d-%d" % value


def parse_event_id(value: str) -> tuple[str, StreamId] | None:
    """Split ``<epoch>.<ms>-<seq>``; None unless it is exactly how this broker writes ids.

    Only ASCII digits without leading zeros are accepted (``int`` would also take other
    scripts' digits, signs and underscores, and resume from a position the client never held).
    """
    epoch, dot, stream = value.partition(".")
    ms, dash, seq = stream.partition("-")
    if not (dot and dash and _is_number(ms) and _is_number(seq)):
        return None
    if not (0 < len(epoch) <= 32 and epoch.isascii() and epoch.isalnum()):
        return None
    return epoch, (int(ms), int(seq))


def _is_number(text: str) -> bool:
    return (
        0 < len(text) < 20 and text.isascii() and text.isdigit() and (text == "0" or text[0] != "0")
    )


class _Snapshot(t.NamedTuple):
    """What one subscriber reads atomically when it joins a channel."""

    epoch: str
    #: The stream's last generated id (b"0-0" when the stream does not exist).
    tail: bytes
    #: The oldest entry still kept, if any.
    first: StreamId | None
    #: Whether entries were ever removed from the stream (by ``MAXLEN``).
    trimmed: bool
    #: The entries after the client's id, at most ``backlog + 1`` of them.
    entries: list[t.Any]


class _Channel:
    __slots__ = ("epoch", "floors", "joining", "key", "last_id", "name", "ready", "subscribers")

    def __init__(self, name: str, key: str) -> None:
        self.name = name
        self.key = key
        #: The stream id after which the listener reads; None until the first snapshot.
        self.last_id: bytes | None = None
        #: The epoch ``last_id`` belongs to.
        self.epoch = ""
        self.subscribers: set[Subscription] = set()
        #: Subscribers taking their snapshot: what the listener reads for them meanwhile is
        #: kept here, and merged with the snapshot once it is in.
        self.joining: dict[Subscription, list[Frame]] = {}
        #: Subscribers that already have the entries up to a stream id the listener has not
        #: reached yet (they resumed with an id seen on another worker).
        self.floors: dict[Subscription, StreamId] = {}
        #: Set once the first snapshot was taken (or failed).
        self.ready = gevent.event.Event()


class RedisBroker:
    """Redis Streams behind the broker protocol.

    :param url: a ``redis://``, ``rediss://`` or ``unix://`` URL.
    :param backlog: events kept per channel for replay (``MAXLEN ~``, so a little more may stay
        in Redis; replay never goes further back than this many events).
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
        self._pid = -1
        self._reset_process_state()

    def _reset_process_state(self) -> None:
        """(Re)create per-process state; called lazily, and again after a fork."""
        self._pid = os.getpid()
        self._commands = _client(
            self.url,
            timeout=self.timeout,
            max_connections=self.pool_size,
            name=f"ssecors-cmd-{self._pid}",
        )
        self._slots = gevent.lock.BoundedSemaphore(self.pool_size)
        self._listener_client: redis.Redis[bytes] | None = None
        self._listener: gevent.Greenlet | None = None
        self._channels: dict[str, _Channel] = {}
        self._by_key: dict[bytes, _Channel] = {}
        self._epoch: str | None = None
        self._wake_key = f"{self.prefix}wake:{secrets.token_hex(8)}"
        self._wake_key_bytes = self._wake_key.encode()
        self._wake_pending = False
        self._waker: gevent.Greenlet | None = None
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
        """Run commands on a pooled connection; raise BrokerUnavailable after ``timeout``.

        The bound covers waiting for a free connection, connecting, and the answer.
        """
        timer = gevent.Timeout(self.timeout)
        timer.start()
        try:
            with self._slots:
                return call(self._commands)
        except gevent.Timeout as expired:
            if expired is not timer:
                raise
            raise BrokerUnavailable(
                f"{what}: no answer from Redis within {self.timeout:g} s"
            ) from None
        except (redis.RedisError, OSError) as error:
            raise BrokerUnavailable(f"{what}: {error}") from error
        finally:
            timer.close()

    def _epoch_commands(self, pipe: t.Any) -> None:
        """Queue the commands that read the epoch, creating it when Redis has none."""
        pipe.set(self._epoch_key, secrets.token_hex(4), nx=True)
        pipe.get(self._epoch_key)

    def publish(self, channel: str, event: Event) -> str:
        """Append to the channel's stream; return ``<epoch>.<stream id>``.

        An ``id`` given to the event is replaced by the one the broker assigns.

        :raises BrokerUnavailable: when Redis does not confirm within the timeout.
        """
        self._check_pid()
        fields: dict[str, bytes] = {"e": without_id(event).encode()}
        key = self._key(channel)

        def call(client: redis.Redis[bytes]) -> t.Any:
            pipe = client.pipeline(transaction=True)
            self._epoch_commands(pipe)
            pipe.xadd(key, fields, maxlen=self.backlog + 1, approximate=True)
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
        cursor. Later subscribers register (which is all one without ``last_event_id`` does),
        then take their snapshot, and keep the replayed entries up to the cursor they joined
        at; the listener delivers everything after it. A client that saw more on another
        worker than this worker's listener has delivered yet skips what it already has. Either
        way nothing is missed and nothing is delivered twice.

        :raises BrokerUnavailable: when Redis cannot be reached to take the snapshot.
        """
        self._check_pid()
        self._ensure_listener()
        deadline = time.monotonic() + self.timeout
        while True:
            state = self._channels.get(channel)
            if state is None:
                return self._subscribe_first(channel, last_event_id, limit)
            if state.last_id is not None:
                break
            # Another subscriber is taking the channel's first snapshot. By the time it is
            # done, the channel may have been dropped again (that subscriber already left):
            # look it up afresh rather than join a channel nobody listens to any more.
            left = deadline - time.monotonic()
            if left <= 0 or not state.ready.wait(left):
                raise BrokerUnavailable("subscribe: the channel's first snapshot took too long")
        cursor = state.last_id
        subscription = Subscription(channel, limit, self._release)
        if last_event_id is None:
            # Live only: the listener delivers what comes after its cursor.
            state.subscribers.add(subscription)
            return subscription
        live: list[Frame] = []
        state.joining[subscription] = live
        try:
            snapshot = self._snapshot(state.key, last_event_id)
        except BrokerUnavailable:
            state.joining.pop(subscription, None)
            subscription.close()
            raise
        # Nothing yields from here on: merge the snapshot with what arrived live meanwhile.
        if state.joining.pop(subscription, None) is None or subscription.closed:
            subscription.close()
            return subscription
        replay, reset = self._replay(snapshot, last_event_id, cursor)
        parsed = parse_event_id(last_event_id)
        if (
            parsed is not None
            and parsed[0] == snapshot.epoch == state.epoch
            and parsed[1] > _stream_id(cursor)
            and not reset
        ):
            # The client is ahead of this worker's listener: drop what it already has.
            seen = parsed[1]
            live = [(at, data) for at, data in live if at is None or at > seen]
            if state.last_id is not None and _stream_id(state.last_id) < seen:
                state.floors[subscription] = seen
        state.subscribers.add(subscription)
        subscription.preload([*replay, *(data for _, data in live)])
        return subscription

    def _subscribe_first(self, channel: str, last_event_id: str | None, limit: int) -> Subscription:
        state = _Channel(channel, self._key(channel))
        self._channels[channel] = state
        self._by_key[state.key.encode()] = state
        try:
            snapshot = self._snapshot(state.key, last_event_id)
            state.epoch = snapshot.epoch
            state.last_id = snapshot.tail
        except BrokerUnavailable:
            self._forget(state)
            raise
        finally:
            state.ready.set()
        self._wake()
        subscription = Subscription(channel, limit, self._release)
        state.subscribers.add(subscription)
        replay, _ = self._replay(snapshot, last_event_id, snapshot.tail)
        subscription.preload(replay)
        return subscription

    def _snapshot(self, key: str, last_event_id: str | None) -> _Snapshot:
        """Read the epoch, the stream's state and the entries after the id, atomically."""
        parsed = parse_event_id(last_event_id) if last_event_id is not None else None

        def call(client: redis.Redis[bytes]) -> t.Any:
            pipe = client.pipeline(transaction=True)
            self._epoch_commands(pipe)
            pipe.xinfo_stream(key)
            if parsed is not None:
                ms, seq = parsed[1]
                pipe.xrange(key, min=f"({ms}-{seq}", max="+", count=self.backlog + 1)
            return pipe.execute(raise_on_error=False)

        results = self._run("subscribe", call)
        epoch = results[1].decode()
        info = results[2] if isinstance(results[2], dict) else None
        entries = results[3] if parsed is not None and isinstance(results[3], list) else []
        if info is None:  # no such stream yet
            return _Snapshot(epoch, b"0-0", None, False, entries)
        first = info.get("first-entry")
        added, length = info.get("entries-added"), info.get("length", 0)
        return _Snapshot(
            epoch=epoch,
            tail=_as_bytes(info.get("last-generated-id", b"0-0")),
            first=_stream_id(first[0]) if first and first[0] else None,
            trimmed=added is None or added > length,
            entries=entries,
        )

    def _replay(
        self, snapshot: _Snapshot, last_event_id: str | None, cursor: bytes
    ) -> tuple[list[bytes], bool]:
        """The frames after ``last_event_id`` up to ``cursor``; or the reset event, and True."""
        if last_event_id is None:
            return [], False
        epoch = snapshot.epoch
        parsed = parse_event_id(last_event_id)
        tail = _stream_id(snapshot.tail)
        if parsed is None or parsed[0] != epoch or parsed[1] > tail:
            return [self._reset(epoch, cursor, "unknown-id")], True
        after = parsed[1]
        gone = (
            snapshot.trimmed and after < tail and (snapshot.first is None or after < snapshot.first)
        )
        if gone or len(snapshot.entries) > self.backlog:
            return [self._reset(epoch, cursor, "expired")], True
        limit = _stream_id(cursor)
        frames = [
            self._frame(epoch, entry_id, fields)
            for entry_id, fields in snapshot.entries
            if _stream_id(entry_id) <= limit
        ]
        return frames, False

    def _reset(self, epoch: str, cursor: bytes, reason: str) -> bytes:
        return Event(
            {"reason": reason}, event=RESET_EVENT, id=f"{epoch}.{cursor.decode()}"
        ).encode()

    def _frame(self, epoch: str, entry_id: bytes | str, fields: dict[bytes, bytes]) -> bytes:
        entry = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        return add_id(fields[b"e"], f"{epoch}.{entry}")

    def _release(self, subscription: Subscription) -> None:
        state = self._channels.get(subscription.channel)
        if state is None:
            return
        if state.joining.pop(subscription, None) is None and subscription not in state.subscribers:
            return
        state.subscribers.discard(subscription)
        state.floors.pop(subscription, None)
        if not state.subscribers and not state.joining and state.last_id is not None:
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
            return len(state.subscribers) + len(state.joining) if state else 0
        return sum(len(state.subscribers) + len(state.joining) for state in self._channels.values())

    # -- the listener ------------------------------------------------------------------------

    def _ensure_listener(self) -> None:
        if self._listener is None or self._listener.dead:
            if self._listener_client is not None:
                self._listener_client.connection_pool.disconnect()
            self._listener_client = _client(
                self.url,
                timeout=BLOCK_MS / 1000 + self.timeout + 1,
                max_connections=1,
                name=f"ssecors-listen-{self._pid}",
            )
            self._epoch_checked = False
            self._listener = gevent.spawn(self._listen, self._listener_client)

    def _wake(self) -> None:
        """Make the listener start a new XREAD that includes a newly tracked channel."""
        if self._wake_pending or self._listener is None:
            return
        self._wake_pending = True
        self._waker = gevent.spawn(self._send_wake)

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

    def _listen(self, client: redis.Redis[bytes]) -> None:
        backoff = 0.05
        while not self._closed:
            try:
                self._sync_epoch(client)
                streams: dict[t.Any, t.Any] = {self._wake_key: self._wake_id}
                for state in self._channels.values():
                    if state.last_id is not None:
                        streams[state.key] = state.last_id
                self._wake_pending = False
                reply = client.xread(streams, count=READ_COUNT, block=BLOCK_MS)
                backoff = 0.05
                self._dispatch(reply)
            except (redis.RedisError, OSError) as error:
                if self.connected:
                    logger.warning("Redis listener lost its connection: %s", error)
                self.connected = False
                self._epoch_checked = False
                gevent.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, MAX_BACKOFF)
            except Exception:
                # A bug, not a fault of Redis: say so, and keep serving the other channels.
                logger.exception("Redis listener failed; reading again")
                self._epoch_checked = False
                gevent.sleep(MAX_BACKOFF)

    def _sync_epoch(self, client: redis.Redis[bytes]) -> None:
        """After (re)connecting, check that Redis still has the data our cursors point into."""
        if self._epoch_checked:
            return
        pipe = client.pipeline(transaction=True)
        self._epoch_commands(pipe)
        epoch = pipe.execute()[1].decode()
        if self._epoch is not None and epoch != self._epoch:
            logger.warning("Redis lost its data (new epoch); sending the reset event to streams")
        for state in self._channels.values():
            if state.last_id is None or state.epoch == epoch:
                continue
            reset = self._reset(epoch, b"0-0", "broker-restarted")
            for subscription in tuple(state.subscribers):
                subscription.deliver(reset)
            for frames in state.joining.values():
                frames.append((None, reset))
            state.epoch = epoch
            state.last_id = b"0-0"
            state.floors.clear()
        self._epoch = epoch
        self._epoch_checked = True
        if not self.connected:
            logger.info("Redis listener connected")
        self.connected = True

    def _dispatch(self, reply: t.Any) -> None:
        for key, entries in reply or ():
            key = _as_bytes(key)
            if key == self._wake_key_bytes:
                if entries:
                    self._wake_id = entries[-1][0]
                continue
            state = self._by_key.get(key)
            if state is None or state.last_id is None or not entries:
                continue
            last = _stream_id(state.last_id)
            epoch = state.epoch
            for entry_id, fields in entries:
                current = _stream_id(entry_id)
                # A read issued before this channel was tracked again may repeat entries.
                if current <= last or b"e" not in fields:
                    continue
                last = current
                data = self._frame(epoch, entry_id, fields)
                for frames in state.joining.values():
                    frames.append((current, data))
                if state.floors:
                    _deliver_past_floors(state, current, data)
                    continue
                for subscription in tuple(state.subscribers):
                    subscription.deliver(data)
            state.last_id = _id_bytes(last)

    def close(self) -> None:
        """Stop the listener, drop every subscriber and close the connections."""
        self._closed = True
        for greenlet in (self._listener, self._waker):
            if greenlet is not None:
                greenlet.kill(block=True, timeout=1)
        for state in list(self._channels.values()):
            for subscription in tuple(state.subscribers):
                subscription.drop("broker-closed")
        self._channels.clear()
        self._by_key.clear()
        self._commands.connection_pool.disconnect()
        if self._listener_client is not None:
            self._listener_client.connection_pool.disconnect()


def _deliver_past_floors(state: _Channel, current: StreamId, data: bytes) -> None:
    floors = state.floors
    for subscription in tuple(state.subscribers):
        floor = floors.get(subscription)
        if floor is not None:
            if current <= floor:
                continue
            del floors[subscription]
        subscription.deliver(data)


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
