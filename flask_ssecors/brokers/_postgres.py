"""The PostgreSQL broker: fan-out across workers and hosts through the database the app
already has (``SSECORS_BROKER_URL = "postgresql://..."``), and events that commit with the data.

Each channel keeps its backlog as rows (see :mod:`._postgres_sql`); a publish inserts the event
and sends ``NOTIFY`` in one call, on the broker's connection or inside the application's own
transaction (``publish(..., transaction=...)``, :mod:`._postgres_publish`): then the event is
delivered if and only if the transaction commits, in commit order per channel.

Per worker process, **one** listening connection LISTENs on the channels the worker follows
(:mod:`._postgres_listener`): notifications only wake it; it reads the rows after the last one
it delivered, so nothing depends on NOTIFY's delivery, and a reconnect resumes exactly where
it stood. Reads, snapshots and publishes share a small bounded pool of connections
(:mod:`._postgres_conn`), named ``ssecors-<role>-<pid>`` in ``pg_stat_activity``.

Faults: when PostgreSQL goes away, open streams stay open (heartbeats go on); the listener
reconnects with backoff and delivers what was committed meanwhile, in order, without
duplicates; :meth:`PostgresBroker.publish` raises
:class:`~flask_ssecors.exceptions.BrokerUnavailable` within the broker timeout.
"""

from __future__ import annotations

import os
import socket
import typing as t

import gevent
import gevent.monkey

from .._config import default_of
from .._log import get_logger
from .._wire import Frame
from .._wire import frame
from ..exceptions import BrokerUnavailable
from ._base import check_channel
from ._base import EMPTY_GENERATION
from ._base import EndReason
from ._base import is_number
from ._base import new_generation
from ._base import PAGE_BYTES
from ._base import PAGE_EVENTS
from ._base import QUEUE_TIMEOUT_FACTOR
from ._base import QUEUE_TIMEOUT_MIN
from ._base import split_id
from ._base import Subscription
from ._base import thread_ident
from ._postgres_conn import first
from ._postgres_conn import GeventConnection
from ._postgres_conn import Pool
from ._postgres_listener import Joined
from ._postgres_listener import Listener
from ._postgres_listener import reset_frame
from ._postgres_presence import PostgresPresence
from ._postgres_publish import PostgresPublishing
from ._presence import check_member
from ._presence import Presence
from ._readiness import Readiness

if t.TYPE_CHECKING:
    from ..events import Event

logger = get_logger(__name__)

_ThreadLocal: t.Final[t.Callable[[], t.Any]] = gevent.monkey.get_original("threading", "local")
_RLock: t.Final[t.Callable[[], t.Any]] = gevent.monkey.get_original("threading", "RLock")
_Thread: t.Final[t.Any] = gevent.monkey.get_original("threading", "Thread")

#: Above any number a channel reaches (PostgreSQL's ``bigint`` holds up to 2**63 - 1).
MAX_NUMBER: t.Final = 2**62
#: Channels forgotten per round of the sweeper (each with its events: bounded work).
FORGET_BATCH: t.Final = 100

#: A snapshot of one channel: generation (None: no row), head, first row kept, and events
#: ``(n, kind, data)``.
Snapshot: t.TypeAlias = tuple[
    "str | None", int, "int | None", list[tuple[int, "str | None", bytes]]
]


class PostgresBroker:
    """PostgreSQL tables and LISTEN/NOTIFY behind the broker protocol.

    :param url: a ``postgresql://`` (or ``postgres://``) URL, with libpq's query parameters.
    :param backlog: events kept per channel for replay (``SSECORS_BACKLOG``).
    :param timeout: bound in seconds on each publish, read or snapshot
        (``SSECORS_BROKER_TIMEOUT``).
    :param channel_ttl: seconds after which a channel with no subscriber and no publish is
        forgotten (``SSECORS_CHANNEL_TTL``); None keeps channels for good.
    :param max_event_size: largest encoded event accepted, in bytes; None for no limit.
    :param schema: the schema of the broker's tables (``SSECORS_BROKER_SCHEMA``), created on
        first use unless it exists (``flask ssecors broker-sql`` prints it).
    :param pool_size: connections per process for publishing and reading (the listening
        connection is one more).
    :param presence_ttl: seconds within which the members of a process that died leave.
    :param presence_max_members: joins are announced while a channel has at most this many
        members (``SSECORS_PRESENCE_MAX_MEMBERS``).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        url: str,
        *,
        backlog: int = default_of("backlog"),
        timeout: float = default_of("broker_timeout"),
        channel_ttl: float | None = default_of("channel_ttl"),
        max_event_size: int | None = default_of("max_event_size"),
        schema: str = "ssecors",
        pool_size: int = 8,
        presence_ttl: float = default_of("presence_ttl"),
        presence_max_members: int = default_of("presence_max_members"),
    ) -> None:
        self.url = url
        self.backlog = backlog
        self.timeout = timeout
        self.channel_ttl = channel_ttl
        self.max_event_size = max_event_size
        self.schema = schema
        self.pool_size = pool_size
        self.presence_ttl = presence_ttl
        self.presence_max_members = presence_max_members
        #: How long a subscriber waits for its turn (LISTEN, a connection for its snapshot).
        self._patience = max(QUEUE_TIMEOUT_FACTOR * timeout, QUEUE_TIMEOUT_MIN)
        self._publishing = PostgresPublishing(
            schema=schema, backlog=backlog, max_event_size=max_event_size
        )
        self.statements = self._publishing.statements
        self._pid = -1
        self._reset_process_state()

    def _reset_process_state(self) -> None:
        """(Re)create per-process state; at creation, and again after a fork."""
        self._pid = pid = os.getpid()
        self._home = thread_ident()
        self._threads = _ThreadLocal()
        self._schema_ready = False
        self._pool = Pool(
            self.url, size=self.pool_size, timeout=self.timeout, name=f"ssecors-cmd-{pid}"
        )
        runner = _ThreadAware(self)
        self._listener = Listener(
            conninfo=self.url,
            statements=self.statements,
            pool=runner,
            backlog=self.backlog,
            channel_ttl=self.channel_ttl,
            timeout=self.timeout,
            name=f"ssecors-listen-{pid}",
        )
        self._presence = PostgresPresence(
            pool=runner,
            statements=self.statements,
            ttl=self.presence_ttl,
            max_announced=self.presence_max_members,
            backlog=self.backlog,
            worker=f"{socket.gethostname()[:64]}:{pid}:{new_generation()}",
        )
        self._starting = _RLock()
        self._greenlets: list[gevent.Greenlet] = []
        self._background: t.Any = None
        self._sweeper: gevent.Greenlet | None = None

    @property
    def connected(self) -> bool:
        """Whether the listener is connected (for statistics and health checks)."""
        return self._listener.connected

    def _check_pid(self) -> None:
        if self._pid != os.getpid():
            self._reset_process_state()

    # -- commands -------------------------------------------------------------------------------

    def _run(
        self,
        what: str,
        call: t.Callable[[GeventConnection], t.Any],
        *,
        patience: float | None = None,
    ) -> t.Any:
        """``call(connection)`` on a pooled connection (this thread's own, in another OS
        thread), once the schema is there; BrokerUnavailable after the timeout."""
        pool = self._pool if thread_ident() == self._home else self._thread_pool()
        if not self._schema_ready:
            self._ensure_schema(pool)
        return pool.run(what, call, patience=patience)

    def _ensure_schema(self, pool: Pool | None = None) -> None:
        """Create the schema unless it is there (once per process)."""
        from ._postgres_schema import ensure_schema

        if pool is None:
            pool = self._pool if thread_ident() == self._home else self._thread_pool()
        pool.run("schema", lambda c: ensure_schema(c, self.schema))
        self._schema_ready = True

    def publish(self, channel: str, event: Event, *, transaction: object = None) -> str:
        """Insert the event and wake its channel's followers; return ``<generation>.<n>``.

        With ``transaction`` (a psycopg connection, an SQLAlchemy ``Connection`` or
        ``Session``), inside that transaction: kept and delivered if and only if it commits
        (see :mod:`._postgres_publish`); the id returned is the one it will have.

        :raises ChannelError: for a channel name no broker can store.
        :raises EventFieldError: for an event above ``max_event_size``.
        :raises BrokerUnavailable: when PostgreSQL does not confirm within the timeout.
        :raises BrokerError: when the statement fails in the application's transaction.
        """
        self._check_pid()
        params = self._publishing.params(channel, event)
        if transaction is not None:
            if not self._schema_ready:
                self._ensure_schema()
            return self._publishing.in_transaction(transaction, params)
        statement = self.statements.publish
        if self.channel_ttl is not None and self._sweeper is None and thread_ident() == self._home:
            # A process that only publishes forgets idle channels too.
            self._sweeper = gevent.spawn(self._forget_idle)
        return t.cast(
            str,
            self._run("publish", lambda c: first(c.execute(statement, params))),
        )

    # -- subscribing ----------------------------------------------------------------------------

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

        :raises ChannelError: for a channel name no broker can store.
        :raises BrokerUnavailable: when PostgreSQL cannot be reached within the timeout.
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

    def _wait(self, readiness: Readiness | None, what: str, patience: float) -> None:
        if readiness is not None and not readiness.wait(
            patience, home=thread_ident() == self._home
        ):
            raise BrokerUnavailable(f"subscribe: {what} within {patience:g} s")

    def _subscribe(self, channel: str, last_event_id: str | None, limit: int) -> Subscription:
        listener = self._listener
        self._wait(
            None if listener.connected else listener.ready,
            "the listener could not connect to PostgreSQL",
            self.timeout,
        )
        subscription = Subscription(channel, limit, self._release)
        with listener.lock:
            state = listener.follow(channel)
            live: list[Joined] = []
            if last_event_id is None:
                state.subscribers.add(subscription)
            else:
                state.joining[subscription] = live
            waiter = listener.waiter(state)
        try:
            # In a connect storm thousands of channels queue for their LISTEN, and the
            # listener shares the worker's CPU with their requests: bounded loosely.
            self._wait(waiter, "PostgreSQL did not confirm LISTEN on the channel", self._patience)
            if last_event_id is None:
                return subscription
            parsed = _parse_event_id(last_event_id)
            start = 1 if parsed is None else parsed[1] + 1
            snapshot = self._snapshot(channel, start, None)
        except BaseException:
            subscription.close()
            raise
        with listener.lock:
            if state.joining.pop(subscription, None) is None or subscription.closed:
                subscription.close()
                return subscription
            replay, rest, tail = self._replay(channel, snapshot, parsed)
            if state.generation in (None, snapshot[0]) and state.last < tail:
                state.floors[subscription] = tail
            state.subscribers.add(subscription)
            subscription.preload(replay)
            if rest is not None:
                subscription.replay_from(rest)
            for at, data in live:
                if at is None or at > tail:
                    subscription.deliver(data)
        return subscription

    def _snapshot(self, channel: str, start: int, stop: int | None) -> Snapshot:
        """The channel's generation, head, first row kept, and a page of events numbered from
        ``start`` (to ``stop``, or to the head)."""

        def query(connection: GeventConnection) -> Snapshot:
            rows = connection.execute(
                self.statements.snapshot,
                {
                    "name": channel,
                    "start": start,
                    "stop": stop if stop is not None else MAX_NUMBER,
                    "limit": PAGE_EVENTS,
                },
            ).fetchall()
            if not rows:
                return None, 0, None, []
            generation, head, first = rows[0][0], rows[0][1], rows[0][2]
            events: list[tuple[int, str | None, bytes]] = []
            size = 0
            for row in rows:
                if row[3] is None:
                    continue
                data = bytes(row[5])
                events.append((row[3], row[4], data))
                size += len(data)
                if size >= PAGE_BYTES:
                    break
            return generation, head, first, events

        return t.cast(Snapshot, self._run("snapshot", query, patience=self._patience))

    def _oldest(self, head: int, first: int | None) -> int:
        """The oldest number replay may give: the backlog, and what is still kept."""
        return max(first if first is not None else head + 1, head - self.backlog + 1)

    def _replay(
        self, channel: str, snapshot: Snapshot, parsed: tuple[str, int] | None
    ) -> tuple[list[Frame], _Replay | None, int]:
        """The first page after the client's position, or the reset event; where the rest
        comes from; and the tail (the head the replay goes to)."""
        generation, head, first, events = snapshot
        if generation is None:
            if parsed == (EMPTY_GENERATION, 0):
                return [], None, 0
            return [reset_frame(EMPTY_GENERATION, 0, "unknown-id")], None, 0
        if parsed is None:
            return [reset_frame(generation, head, "unknown-id")], None, head
        claimed, position = parsed
        if claimed == EMPTY_GENERATION:
            if position != 0:
                return [reset_frame(generation, head, "unknown-id")], None, head
        elif claimed != generation or position > head:
            return [reset_frame(generation, head, "unknown-id")], None, head
        if position == head:
            return [], None, head
        if position < self._oldest(head, first) - 1:
            return [reset_frame(generation, head, "expired")], None, head
        page = [(n, kind, data) for n, kind, data in events if position < n <= head]
        last = page[-1][0] if page else position
        rest = _Replay(self, channel, generation, last, head) if last < head else None
        frames = [frame(data, kind, f"{generation}.{n}") for n, kind, data in page]
        return frames, rest, head

    def _release(self, subscription: Subscription) -> None:
        listener = self._listener
        with listener.lock:
            state = listener.channels.get(subscription.channel)
            if state is None:
                return
            joining = state.joining.pop(subscription, None)
            if joining is None and subscription not in state.subscribers:
                return
            state.subscribers.discard(subscription)
            state.floors.pop(subscription, None)
            if state.idle:
                listener.unfollow(state)

    def head(self, channel: str) -> str:
        """The id of ``channel``'s last event (``000000.0`` when it holds none).

        :raises BrokerUnavailable: when PostgreSQL cannot be reached within the timeout.
        """
        self._check_pid()
        check_channel(channel)
        generation, head, _, _ = self._snapshot(channel, 1, 0)
        if generation is None:
            return f"{EMPTY_GENERATION}.0"
        return f"{generation}.{head}"

    # -- presence and counts --------------------------------------------------------------------

    def presence(
        self, channel: str, *, max_members: int = default_of("presence_max_members")
    ) -> Presence:
        """Who holds streams on ``channel`` across every worker sharing this database.

        :raises BrokerUnavailable: when PostgreSQL cannot be reached within the timeout.
        """
        self._check_pid()
        self._start()
        if not self._schema_ready:
            self._ensure_schema()
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
        channels = self._listener.channels
        if channel is not None:
            state = channels.get(channel)
            return len(state.subscribers) + len(state.joining) if state else 0
        return sum(len(s.subscribers) + len(s.joining) for s in channels.values())

    def channel_count(self) -> int:
        """Channels this process follows (those with local subscribers)."""
        return len(self._listener.channels) if self._pid == os.getpid() else 0

    # -- background greenlets -------------------------------------------------------------------

    def _start(self) -> None:
        """Start the listener, the reader, presence and the sweeper, once per process (in a
        daemon thread with its own hub when first needed from another OS thread)."""
        if not self._schema_ready:
            # Before the lock: it waits for the database, and the lock (an OS thread's)
            # does not keep this thread's other greenlets out; nothing below yields.
            self._ensure_schema()
        with self._starting:
            if self._greenlets and not self._greenlets[0].dead:
                return
            if self._background is not None and self._background.is_alive():
                return
            self._listener.ready.clear()
            if thread_ident() == self._home:
                self._spawn_background()
            else:
                self._background = _Thread(
                    target=self._run_background, name="flask-ssecors-postgres", daemon=True
                )
                self._background.start()

    def _thread_pool(self) -> Pool:
        pool = getattr(self._threads, "pool", None)
        if pool is None:
            pool = self._threads.pool = Pool(
                self.url, size=1, timeout=self.timeout, name=f"ssecors-thread-{self._pid}"
            )
        return t.cast(Pool, pool)

    def _spawn_background(self) -> list[gevent.Greenlet]:
        listener = self._listener
        self._greenlets = [
            gevent.spawn(listener.listen),
            gevent.spawn(listener.read),
            gevent.spawn(self._presence.manage),
        ]
        if self.channel_ttl is not None:
            self._greenlets.append(gevent.spawn(listener.refresh_ttls))
            if self._sweeper is None:
                self._sweeper = gevent.spawn(self._forget_idle)
        return self._greenlets

    def _run_background(self) -> None:
        gevent.joinall(self._spawn_background())

    def _forget_idle(self) -> None:
        """Forget channels unused for the TTL, a bounded batch at a time (every worker
        sweeps; ``SKIP LOCKED`` keeps them out of each other's way)."""
        ttl = t.cast(float, self.channel_ttl)
        while not self._listener.closed:
            gevent.sleep(min(max(ttl / 4, 0.05), 5.0))
            try:
                self.forget_idle_channels()
            except BrokerUnavailable as error:
                logger.info("PostgreSQL channel sweep: %s", error)
            except Exception:
                logger.exception("PostgreSQL channel sweep failed")

    def forget_idle_channels(self) -> int:
        """Forget, now, channels unused for the TTL (a batch); return how many events went."""
        if self.channel_ttl is None:
            return 0
        ttl = self.channel_ttl
        return t.cast(
            int,
            self._run(
                "forget",
                lambda c: (
                    c.execute(self.statements.forget, {"ttl": ttl, "limit": FORGET_BATCH}).rowcount
                ),
            ),
        )

    def close(self) -> None:
        """Stop the background work, drop every subscriber (their members leave at once)
        and close the connections."""
        self._listener.stop()
        self._presence.stop()
        # Greenlets of a background thread's hub cannot be killed from here: they see the
        # flags above and end (the thread is a daemon).
        here = gevent.get_hub()
        for greenlet in [*self._greenlets, self._sweeper]:
            if greenlet is not None and greenlet.parent is here:
                greenlet.kill(block=True, timeout=1)
        for state in list(self._listener.channels.values()):
            for subscription in (*state.subscribers, *state.joining):
                subscription.drop(EndReason.BROKER_CLOSED)
        try:
            if self._pid == os.getpid() and thread_ident() == self._home:
                self._presence.leave_all()
        finally:
            self._listener.channels.clear()
            self._listener.leaving.clear()
            self._pool.close()


class _ThreadAware:
    """Runs statements through the broker: on its pool in its own thread, on the thread's
    own connection in another (the background thread of a development server)."""

    __slots__ = ("_broker",)

    def __init__(self, broker: PostgresBroker) -> None:
        self._broker = broker

    def run(
        self,
        what: str,
        call: t.Callable[[GeventConnection], t.Any],
        *,
        patience: float | None = None,
    ) -> t.Any:
        return self._broker._run(what, call, patience=patience)


class _Replay:
    """The events of one channel after ``last`` up to ``tail``, a page at a time."""

    __slots__ = ("_broker", "_channel", "_generation", "_last", "_tail")

    def __init__(
        self, broker: PostgresBroker, channel: str, generation: str, last: int, tail: int
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
        generation, head, first, events = broker._snapshot(
            self._channel, self._last + 1, self._tail
        )
        last, self._last = self._last, self._tail  # unless a page follows, the replay ends
        if generation != self._generation:
            return [reset_frame(generation or EMPTY_GENERATION, 0, "channel-restarted")]
        if last + 1 < broker._oldest(head, first):
            return [reset_frame(self._generation, self._tail, "expired")]
        page = [(n, kind, data) for n, kind, data in events if n <= self._tail]
        if page:
            self._last = page[-1][0]
        return [frame(data, kind, f"{self._generation}.{n}") for n, kind, data in page]


def _parse_event_id(value: str) -> tuple[str, int] | None:
    """Split ``<generation>.<n>``; None unless it is exactly how this broker writes ids."""
    parts = split_id(value)
    if parts is None:
        return None
    if not is_number(parts[1]) or int(parts[1]) >= MAX_NUMBER:
        return None  # beyond bigint: never assigned, and not to be sent to PostgreSQL
    return parts[0], int(parts[1])
