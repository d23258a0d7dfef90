"""The PostgreSQL broker's listener: one listening connection per worker process.

The worker LISTENs on the NOTIFY channel of each channel it follows (and on no other, so a
worker never hears of the deployment's other events: PostgreSQL pays a few microseconds per
listening backend for those, measured by ``python -m bench.pg_listen``). A notification only
says "this channel has something new": the reader then reads the rows after the last one it
delivered, for every channel woken meanwhile in one query, and dispatches them in order. So
NOTIFY's payload limit and its loss on a broken connection change nothing: after a reconnect
the listener LISTENs again and reads every followed channel from where it stood.

A channel whose generation changed (it was forgotten, or the database lost it) gets the reset
event; one whose rows were trimmed before the reader got to them (a burst beyond the backlog
and its slack) gets the ``expired`` reset event at the oldest row still there; one whose head
went back (a failover to a replica that had not received the last commits) is given a new
generation, so that no id is ever reused for another event.
"""

from __future__ import annotations

import contextlib
import functools
import time
import typing as t

import gevent
import gevent.event
import gevent.monkey

from .._faults import FAULTS
from .._faults import Stage
from .._log import get_logger
from .._wire import Frame
from .._wire import frame
from .._wire import frame_of
from ..events import Event
from ..events import RESET_EVENT
from ..exceptions import BrokerUnavailable
from ._base import deliver_contained
from ._base import EMPTY_GENERATION
from ._base import EndReason
from ._base import new_generation
from ._base import Subscription
from ._postgres_conn import connect
from ._postgres_conn import GeventConnection
from ._postgres_conn import Runner
from ._postgres_conn import UNAVAILABLE
from ._postgres_sql import notify_channel
from ._postgres_sql import Statements
from ._readiness import Readiness

logger = get_logger(__name__)

#: Seconds between two round trips on an idle listening connection (a dead one is noticed
#: within this plus the broker timeout).
PING_INTERVAL: t.Final = 5.0
#: Channels per LISTEN batch, per head read and per read of new rows.
CHANNEL_BATCH: t.Final = 500
#: Rows read per channel per round (a channel with more is read again at once).
READ_LIMIT: t.Final = 200
#: Longest pause between two attempts to reconnect (seconds).
MAX_BACKOFF: t.Final = 1.0
#: Seconds a channel stays listened to after its last subscriber left.
LINGER: t.Final = 5.0

_RLock: t.Final[t.Callable[[], t.Any]] = gevent.monkey.get_original("threading", "RLock")

#: An event a joining subscriber may need: its number (None for a reset event) and frame.
Joined: t.TypeAlias = tuple["int | None", Frame]


def reset_frame(generation: str, position: int, reason: str) -> Frame:
    """The reset event, whose id is where the client resumes."""
    at = f"{generation}.{position}" if position or generation != EMPTY_GENERATION else "000000.0"
    return frame_of(Event({"reason": reason}, event=RESET_EVENT, id=at))


class Channel:
    """What the listener knows of one followed channel."""

    __slots__ = (
        "floors",
        "generation",
        "joining",
        "last",
        "left",
        "live",
        "name",
        "notify",
        "subscribers",
        "waiter",
    )

    def __init__(self, name: str, notify: str) -> None:
        self.name = name
        self.notify = notify
        #: Whether it is listened to and its head was read (subscribers wait for this).
        self.live = False
        #: The generation last seen; None while the channel has no row.
        self.generation: str | None = None
        #: The number of the last event dispatched (or the head when it was followed).
        self.last = 0
        self.subscribers: set[Subscription] = set()
        #: Subscribers taking their snapshot, with what was dispatched meanwhile.
        self.joining: dict[Subscription, list[Joined]] = {}
        #: Subscribers whose snapshot went further than the listener: nothing up to it.
        self.floors: dict[Subscription, int] = {}
        self.waiter: Readiness | None = None
        self.left = 0.0

    @property
    def idle(self) -> bool:
        return not self.subscribers and not self.joining


class Listener:
    """Follows the channels of one worker and delivers their events to local subscribers.

    :param conninfo: the libpq URL.
    :param statements: the broker's statements.
    :param pool: runs statements on the broker's connections (``PostgresBroker``'s pool, or
        the calling thread's own connection).
    :param backlog: ``SSECORS_BACKLOG``.
    :param channel_ttl: ``SSECORS_CHANNEL_TTL`` (how often followed channels are touched).
    :param timeout: ``SSECORS_BROKER_TIMEOUT``.
    :param name: the listening connection's ``application_name``.
    """

    def __init__(
        self,
        *,
        conninfo: str,
        statements: Statements,
        pool: Runner,
        backlog: int,
        channel_ttl: float | None,
        timeout: float,
        name: str,
    ) -> None:
        self.conninfo = conninfo
        self.statements = statements
        self.pool = pool
        self.backlog = backlog
        self.channel_ttl = channel_ttl
        self.timeout = timeout
        self.name = name
        self.lock = _RLock()
        self.channels: dict[str, Channel] = {}
        self.leaving: dict[str, Channel] = {}
        #: Every channel listened to (or to be), by NOTIFY channel.
        self._by_notify: dict[str, set[Channel]] = {}
        #: LISTEN / UNLISTEN to send.
        self._to_listen: set[Channel] = set()
        self._to_unlisten: set[str] = set()
        #: Channels to read new rows of.
        self._dirty: set[Channel] = set()
        self._work = gevent.event.Event()
        self._readable = gevent.event.Event()
        self._wake: t.Any = None
        self.ready = Readiness()
        self.connected = False
        self.closed = False
        self._connection: GeventConnection | None = None
        #: Notifications received, and reads of new rows sent (for tests and benchmarks).
        self.notifications = 0
        self.reads = 0
        self._backoff = 0.05
        #: When the current outage began (None while connected).
        self._down_since: float | None = None
        self._read_failing = False

    # -- what the facade calls (under the lock) -----------------------------------------------

    def follow(self, name: str) -> Channel:
        state = self.channels.get(name)
        if state is not None:
            return state
        state = self.leaving.pop(name, None)
        if state is None:
            state = Channel(name, notify_channel(self.statements.schema, name))
            self._by_notify.setdefault(state.notify, set()).add(state)
            self._to_listen.add(state)
            self._to_unlisten.discard(state.notify)
            self.wake()
        self.channels[name] = state
        return state

    def unfollow(self, state: Channel) -> None:
        if self.channels.get(state.name) is state:
            del self.channels[state.name]
            self.leaving[state.name] = state
            state.left = time.monotonic()

    def waiter(self, state: Channel) -> Readiness | None:
        if state.live:
            return None
        if state.waiter is None:
            state.waiter = Readiness()
        return state.waiter

    def wake(self) -> None:
        """Wake the listener (from any OS thread)."""
        wake = self._wake
        if wake is not None:
            wake.send()
        else:
            self._work.set()

    def stop(self) -> None:
        self.closed = True
        self.connected = False
        connection = self._connection
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()

    # -- the listening greenlet ---------------------------------------------------------------

    def listen(self) -> None:
        """Connect, LISTEN, wake the reader on notifications; reconnect with backoff."""
        hub = gevent.get_hub()
        wake = hub.loop.async_()
        wake.start(self._work.set)
        self._wake = wake
        try:
            while not self.closed:
                try:
                    self._session()
                except (*UNAVAILABLE, BrokerUnavailable, gevent.Timeout) as error:
                    self._failed(error)
                except Exception:
                    logger.exception("PostgreSQL listener failed; reconnecting")
                    self._failed(None)
                self.connected = False
                self.ready.clear()
                gevent.sleep(0 if self.closed else self._backoff)
                self._backoff = min(self._backoff * 2, MAX_BACKOFF)
        finally:
            self._wake = None
            wake.close()

    def _failed(self, error: BaseException | None) -> None:
        """Log the first failure of an outage (not every attempt to reconnect)."""
        if self.closed:
            return
        if self._down_since is None:
            self._down_since = time.monotonic()
            if error is not None:
                logger.warning("PostgreSQL listener lost its connection: %s", error)
        elif error is not None:
            logger.debug("PostgreSQL listener still cannot connect: %s", error)

    def _recovered(self) -> None:
        self._backoff = 0.05
        if self._down_since is not None:
            logger.warning(
                "PostgreSQL listener reconnected after %.1f s; catching up its channels",
                time.monotonic() - self._down_since,
            )
            self._down_since = None

    def _session(self) -> None:
        connection = connect(self.conninfo, timeout=self.timeout, name=self.name)
        self._connection = connection
        connection.add_notify_handler(lambda notify: self._notified(notify.channel))
        io = gevent.get_hub().loop.io(connection.pgconn.socket, 1)
        try:
            with self.lock:
                everyone = {*self.channels.values(), *self.leaving.values()}
                self._to_listen.update(everyone)
                self._to_unlisten.clear()
                # What was published while no connection listened: read it all.
                self._dirty.update(s for s in everyone if s.live)
            self._apply(connection)
            self.connected = True
            self._recovered()
            self.ready.set()
            self._readable.set()  # the reader catches up the channels marked above
            io.start(self._work.set)
            pinged = swept = time.monotonic()
            while not self.closed:
                self._work.wait(PING_INTERVAL / 2)
                self._work.clear()
                pgconn = connection.pgconn
                pgconn.consume_input()
                while (notify := pgconn.notifies()) is not None:
                    self._notified(notify.relname.decode("utf-8", "replace"))
                if pgconn.status != 0:  # CONNECTION_BAD
                    raise BrokerUnavailable("the listening connection was closed")
                self._apply(connection)
                now = time.monotonic()
                if now - swept >= LINGER:
                    swept = now
                    self._sweep(now)
                if now - pinged >= PING_INTERVAL:
                    pinged = now
                    with gevent.Timeout(self.timeout):
                        connection.execute("SELECT 1")
        finally:
            io.close()
            self._connection = None
            with contextlib.suppress(Exception):
                connection.close()

    def _notified(self, notify: str) -> None:
        self.notifications += 1
        with self.lock:
            states = self._by_notify.get(notify)
            if states:
                self._dirty.update(s for s in states if s.live)
                self._readable.set()

    def _sweep(self, now: float) -> None:
        with self.lock:
            for state in [s for s in self.leaving.values() if now - s.left >= LINGER]:
                del self.leaving[state.name]
                self._dirty.discard(state)
                self._to_listen.discard(state)
                states = self._by_notify.get(state.notify)
                if states is not None:
                    states.discard(state)
                    if not states:
                        del self._by_notify[state.notify]
                        self._to_unlisten.add(state.notify)

    def _apply(self, connection: GeventConnection) -> None:
        """Send the queued LISTEN and UNLISTEN commands, then read the new channels' heads
        and mark them live."""
        with self.lock:
            listen = list(self._to_listen)
            self._to_listen.clear()
            unlisten = list(self._to_unlisten)
            self._to_unlisten.clear()
        if not listen and not unlisten:
            return
        try:
            for start in range(0, max(len(listen), len(unlisten)), CHANNEL_BATCH):
                commands = [
                    *(f'LISTEN "{s.notify}"' for s in listen[start : start + CHANNEL_BATCH]),
                    *(f'UNLISTEN "{n}"' for n in unlisten[start : start + CHANNEL_BATCH]),
                ]
                with gevent.Timeout(self.timeout):
                    connection.execute("; ".join(commands).encode())
            fresh = [s for s in listen if not s.live]
            for start in range(0, len(fresh), CHANNEL_BATCH):
                batch = fresh[start : start + CHANNEL_BATCH]
                names = [s.name for s in batch]
                with gevent.Timeout(self.timeout):
                    rows = connection.execute(self.statements.heads, {"names": names}).fetchall()
                heads = {name: (generation, head) for name, generation, head in rows}
                with self.lock:
                    for state in batch:
                        generation, head = heads.get(state.name, (None, 0))
                        state.generation = generation
                        state.last = head
                        state.live = True
                        # Committed after the heads were read, notified while they were
                        # (when the channel was not live yet): read once to be sure.
                        self._dirty.add(state)
                        waiter, state.waiter = state.waiter, None
                        if waiter is not None:
                            waiter.set()
                if batch:
                    self._readable.set()
        except BaseException:
            with self.lock:  # not listened to on this connection: again on the next one
                self._to_listen.update(listen)
                self._to_unlisten.update(unlisten)
            raise

    # -- the reading greenlet -----------------------------------------------------------------

    def read(self) -> None:
        """Read the new rows of woken channels, in batches, and dispatch them."""
        while not self.closed:
            self._readable.wait()
            self._readable.clear()
            while True:
                batch, after = self._take(())
                if not batch:
                    break
                try:
                    rows = self._read(batch, after)
                    # Channels woken while that read ran may hold events inserted before
                    # some it returned: read them too, and dispatch all in insertion order.
                    for _ in range(2):
                        more, more_after = self._take(batch)
                        if not more:
                            break
                        offset = len(batch)
                        try:
                            rows += [
                                (i + offset, *rest) for i, *rest in self._read(more, more_after)
                            ]
                        finally:
                            batch += more
                            after += more_after
                except Exception as error:
                    # Whatever a read raises (PostgreSQL away, a bug), the reader lives on:
                    # a dead reader would leave the worker looking healthy, delivering nothing.
                    if not self.closed and not self._read_failing:
                        if isinstance(error, BrokerUnavailable):
                            logger.warning("PostgreSQL reader: %s; retrying", error)
                        else:
                            logger.exception("PostgreSQL reader failed; retrying")
                    self._read_failing = True
                    with self.lock:
                        self._dirty.update(batch)
                    gevent.sleep(MAX_BACKOFF / 4)
                    continue
                self._read_failing = False
                self._dispatch(batch, after, rows)

    def _take(self, taken: t.Collection[Channel]) -> tuple[list[Channel], list[int]]:
        """Up to a batch of woken channels (not among ``taken``), and where each stands."""
        with self.lock:
            batch = [s for s in self._dirty if s not in taken][:CHANNEL_BATCH]
            self._dirty.difference_update(batch)
            return batch, [s.last if s.generation is not None else 0 for s in batch]

    def _read(self, batch: list[Channel], after: list[int]) -> list[t.Any]:
        """The new rows of ``batch``; one channel (the usual case below a few hundred events
        a second) has a statement of its own, planned once, instead of the array one, which
        PostgreSQL plans again at every call."""
        self.reads += 1
        if len(batch) == 1:
            one = {"name": batch[0].name, "after": after[0], "limit": READ_LIMIT}
            statement = self.statements.read_one
            return t.cast(
                "list[t.Any]",
                self.pool.run("read", lambda c: c.execute(statement, one).fetchall()),
            )
        many = {"names": [s.name for s in batch], "after": after, "limit": READ_LIMIT}
        return t.cast(
            "list[t.Any]",
            self.pool.run("read", lambda c: c.execute(self.statements.read, many).fetchall()),
        )

    def _dispatch(self, batch: list[Channel], after: list[int], rows: list[t.Any]) -> None:
        """Check each channel of the batch (generation, gaps), then deliver every event of
        the batch in the order it was inserted (``seq``), so that events published one after
        the other on different channels reach a stream of several channels in that order."""
        found: dict[int, tuple[str, int, list[tuple[int, str | None, bytes, int]]]] = {}
        for index, generation, head, n, kind, data, seq in rows:
            entry = found.setdefault(index - 1, (generation, head, []))
            if n is not None:
                entry[2].append((n, kind, bytes(data), seq))
        with self.lock:
            ready: list[tuple[int, Channel, str, int, str | None, bytes]] = []
            for index, state in enumerate(batch):
                if not state.live:
                    continue
                try:
                    accepted = self._check(state, after[index], found.get(index))
                except Exception:
                    FAULTS.record(
                        Stage.DISPATCH, "the channel's subscribers were dropped", state.name
                    )
                    self._drop_channel(state)
                    continue
                if accepted is not None:
                    generation, events = accepted
                    ready.extend(
                        (seq, state, generation, n, kind, data) for n, kind, data, seq in events
                    )
            ready.sort(key=lambda item: item[0])
            for _, state, generation, n, kind, data in ready:
                if n <= state.last or state.generation != generation:
                    continue
                try:
                    item = frame(data, kind, f"{generation}.{n}")
                except Exception:
                    FAULTS.record(
                        Stage.ENCODE, "the channel's subscribers were dropped", state.name
                    )
                    self._drop_channel(state)
                    state.last = n
                    continue
                self._deliver(state, n, item)

    def _check(
        self,
        state: Channel,
        after: int,
        found: tuple[str, int, list[tuple[int, str | None, bytes, int]]] | None,
    ) -> tuple[str, list[tuple[int, str | None, bytes, int]]] | None:
        """What of a channel's new rows may be delivered (after any reset they call for)."""
        if found is None:  # no row: never published, or forgotten meanwhile
            if state.generation is not None:
                self._reset(state, EMPTY_GENERATION, 0, "channel-restarted")
                state.generation = None
                state.last = 0
            return None
        generation, head, events = found
        if state.generation is None:
            state.generation = generation
            state.last = 0
            after = 0
        elif generation != state.generation:
            self._reset(state, generation, 0, "channel-restarted")
            state.generation = generation
            state.last = 0
            self._again(state)
            return None
        if state.last != after:
            self._again(state)  # moved on meanwhile (another read): read from there
            return None
        if head < state.last:
            self._lost(state, generation, head)
            return None
        if events and events[0][0] > state.last + 1:
            # Trimmed before this worker read them: its clients resume where rows remain.
            first = events[0][0]
            self._reset(state, generation, first - 1, "expired")
            state.last = first - 1
        elif not events and head > state.last:
            self._reset(state, generation, head, "expired")
            state.last = head
        if len(events) >= READ_LIMIT:
            self._again(state)
        return generation, events

    def _again(self, state: Channel) -> None:
        self._dirty.add(state)
        self._readable.set()

    def _deliver(self, state: Channel, n: int, item: Frame) -> None:
        state.last = n
        for frames in state.joining.values():
            frames.append((n, item))
        floors = state.floors
        for subscription in tuple(state.subscribers):
            if floors:
                floor = floors.get(subscription)
                if floor is not None:
                    if n <= floor:
                        continue
                    del floors[subscription]
            deliver_contained(subscription, item)

    def _reset(self, state: Channel, generation: str, position: int, reason: str) -> None:
        reset = reset_frame(generation, position, reason)
        for subscription in tuple(state.subscribers):
            deliver_contained(subscription, reset)
        for frames in state.joining.values():
            frames.append((None, reset))
        state.floors.clear()

    def _lost(self, state: Channel, generation: str, head: int) -> None:
        """The channel's head went back (the database lost commits): give it a new
        generation, so that the numbers it hands out again are never taken for the lost
        events' ids; the reader then resets its streams."""
        logger.warning(
            "PostgreSQL channel went back from %d to %d: the database lost events; "
            "giving it a new generation",
            state.last,
            head,
        )
        fresh = new_generation()
        name = state.name
        schema = self.statements.schema

        def renew() -> None:
            with contextlib.suppress(BrokerUnavailable):
                self.pool.run(
                    "new generation",
                    lambda c: c.execute(
                        f'UPDATE "{schema}".channels SET generation = %(fresh)s '
                        "WHERE name = %(name)s AND generation = %(old)s AND head = %(head)s",
                        {"fresh": fresh, "name": name, "old": generation, "head": head},
                    ),
                )
            with self.lock:
                self._again(state)

        gevent.spawn(renew)

    def _drop_channel(self, state: Channel) -> None:
        for subscription in (*state.subscribers, *state.joining):
            with contextlib.suppress(Exception):
                subscription.drop(EndReason.ERROR)

    # -- keeping followed channels ------------------------------------------------------------

    def refresh_ttls(self) -> None:
        """Mark the followed channels used every quarter TTL, so that none is forgotten."""
        ttl = t.cast(float, self.channel_ttl)
        while not self.closed:
            gevent.sleep(max(ttl / 4, 0.05))
            with self.lock:
                names = [*self.channels, *self.leaving]
            for start in range(0, len(names), CHANNEL_BATCH * 4):
                batch = names[start : start + CHANNEL_BATCH * 4]
                try:
                    self.pool.run("touch", functools.partial(self._touch, names=batch))
                except BrokerUnavailable as error:
                    logger.info("PostgreSQL: followed channels not marked used: %s", error)
                except Exception:
                    logger.exception("PostgreSQL: followed channels not marked used")

    def _touch(self, connection: GeventConnection, names: list[str]) -> None:
        connection.execute(self.statements.touch, {"names": names})
