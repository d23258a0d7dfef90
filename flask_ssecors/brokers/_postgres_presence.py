"""Presence on PostgreSQL: who holds streams on a channel, across every worker.

Each worker writes its *absolute* stream count of each ``(channel, member)`` it changed
(``<schema>.presence_set``, one call per pair, in one transaction per batch of changes made
within :data:`WRITE_DELAY`): a write repeated after a fault changes nothing. The function
sums the member's streams over every worker before and after, under a per-channel advisory
lock, and publishes the join or leave event in the same transaction, so an event is never
announced for a change that did not commit.

Each worker renews its deadline (``presence_workers``) every TTL/8, to TTL/2 ahead; any worker
reaps those past their deadline (``FOR UPDATE SKIP LOCKED``: one reaper per dead worker), with
their leave events, so a dead worker's members leave within about TTL/2 plus a beat. A worker
that finds its own deadline row gone (it was taken for dead) writes its whole state again.
"""

from __future__ import annotations

import typing as t

import gevent
import gevent.event
import gevent.lock
import gevent.monkey
import psycopg

from .._faults import FAULTS
from .._faults import Stage
from .._log import get_logger
from .._wire import encode_without_id
from ..exceptions import BrokerUnavailable
from ._base import check_channel
from ._base import new_generation
from ._base import thread_ident
from ._postgres_conn import first
from ._postgres_conn import GeventConnection
from ._postgres_conn import Runner
from ._postgres_conn import UNAVAILABLE
from ._postgres_sql import SLACK
from ._postgres_sql import Statements
from ._presence import check_member
from ._presence import JOIN_EVENT
from ._presence import LEAVE_EVENT
from ._presence import LocalPresence
from ._presence import Presence
from ._presence import presence_event

logger = get_logger(__name__)

#: Changes made within this many seconds share one transaction.
WRITE_DELAY: t.Final = 0.02

_RLock: t.Final[t.Callable[[], t.Any]] = gevent.monkey.get_original("threading", "RLock")


class PostgresPresence:
    """This worker's presence, written to PostgreSQL.

    :param pool: runs statements on the broker's connections.
    :param statements: the broker's statements.
    :param ttl: ``SSECORS_PRESENCE_TTL``.
    :param max_announced: ``SSECORS_PRESENCE_MAX_MEMBERS``.
    :param backlog: ``SSECORS_BACKLOG`` (join and leave events are events of the channel).
    :param worker: this worker's name (unique: host, pid and a random token).
    """

    def __init__(
        self,
        *,
        pool: Runner,
        statements: Statements,
        ttl: float,
        max_announced: int,
        backlog: int,
        worker: str,
    ) -> None:
        self.pool = pool
        self.statements = statements
        self.ttl = ttl
        self.max_announced = max_announced
        self.keep = backlog + SLACK
        self.worker = worker
        self.lock = _RLock()
        self.local = LocalPresence()
        self._dirty: dict[tuple[str, str], None] = {}
        self._work = gevent.event.Event()
        self._wake: t.Any = None
        self._writing = gevent.lock.RLock()
        self._home = thread_ident()
        self._registered = False
        self.closed = False

    def join(self, channel: str, member: str, *, announce: bool) -> None:
        check_member(member)
        with self.lock:
            self.local.add(channel, member, announce=announce)
            self._dirty[(channel, member)] = None
        self._poke()

    def leave(self, channel: str, member: str) -> None:
        with self.lock:
            if self.local.count(channel, member) == 0:
                return
            self.local.remove(channel, member)
            self._dirty[(channel, member)] = None
        self._poke()

    def _poke(self) -> None:
        wake = self._wake
        if wake is not None:
            wake.send()
        else:
            self._work.set()

    def read(self, channel: str, max_members: int) -> Presence:
        """The channel's presence (this worker's own changes written first, in its thread).

        :raises BrokerUnavailable: when PostgreSQL does not answer within the timeout.
        """
        check_channel(channel)
        if thread_ident() == self._home and self._dirty:
            self.flush()

        def query(connection: GeventConnection) -> Presence:
            members, streams = connection.execute(
                self.statements.presence_counts, {"channel": channel}
            ).fetchone() or (0, 0)
            if members > max_members:
                return Presence(channel, frozenset(), members, int(streams), counts_only=True)
            rows = connection.execute(
                self.statements.presence_members, {"channel": channel}
            ).fetchall()
            return Presence(channel, frozenset(row[0] for row in rows), len(rows), int(streams))

        return t.cast(Presence, self.pool.run("presence", query))

    # -- the manager greenlet -----------------------------------------------------------------

    def manage(self) -> None:
        """Write queued changes in batches; renew this worker's deadline and reap dead ones."""
        hub = gevent.get_hub()
        wake = hub.loop.async_()
        wake.start(self._work.set)
        self._wake = wake
        beat = self.ttl / 8
        renewed = 0.0
        try:
            while not self.closed:
                if self._work.wait(beat):
                    self._work.clear()
                    gevent.sleep(WRITE_DELAY)
                try:
                    now = hub.loop.now()
                    if now - renewed >= beat or not self._registered:
                        renewed = now
                        self._renew()
                        self._reap()
                    if self._dirty:
                        self.flush()
                except BrokerUnavailable as error:
                    logger.warning("presence could not be written to PostgreSQL: %s", error)
                    gevent.sleep(min(beat, 1.0))
                    self._work.set()
                except Exception:
                    logger.exception("presence could not be written to PostgreSQL")
                    gevent.sleep(min(beat, 1.0))
                    self._work.set()
        finally:
            self._wake = None
            wake.close()

    def _renew(self) -> None:
        created = self.pool.run(
            "presence renew",
            lambda c: first(
                c.execute(
                    self.statements.presence_renew,
                    {"worker": self.worker, "deadline": self.ttl / 2},
                )
            ),
        )
        if created and self._registered:
            logger.warning("presence: this worker was taken for dead; writing its members again")
            with self.lock:
                for channel, members in self.local.counts.items():
                    for member in members:
                        self._dirty[(channel, member)] = None
        self._registered = True

    def flush(self) -> None:
        """Write every queued change, in one transaction."""
        with self._writing:
            with self.lock:
                dirty, self._dirty = list(self._dirty), {}
                writes = [
                    (
                        channel,
                        member,
                        self.local.count(channel, member),
                        (channel, member) in self.local.announced,
                    )
                    for channel, member in sorted(dirty)  # one lock order: no deadlock
                ]
            if not writes:
                return
            try:
                dropped = t.cast(
                    "set[tuple[str, str]]",
                    self.pool.run("presence", lambda c: self._write(c, writes)),
                )
            except BaseException:
                with self.lock:  # absolute counts: written again next time, harmlessly
                    for pair in dirty:
                        self._dirty.setdefault(pair, None)
                raise
            with self.lock:
                for channel, member, _, _ in writes:
                    if self.local.count(channel, member) == 0:
                        self.local.announced.discard((channel, member))
                self.local.updates += len(writes) - len(dropped)

    def _write(
        self, connection: GeventConnection, writes: list[tuple[str, str, int, bool]]
    ) -> set[tuple[str, str]]:
        """Write ``writes`` in one transaction; when one of them fails (not the connection),
        each on its own, so that only that one is dropped (counted in the faults). Returns
        the pairs dropped."""
        try:
            with connection.transaction():
                for write in writes:
                    connection.execute(self.statements.presence_set, self._arguments(*write))
            return set()
        except UNAVAILABLE:
            raise
        except psycopg.Error:
            pass  # one of them failed, and the transaction with it: each on its own below
        dropped: set[tuple[str, str]] = set()
        for write in writes:
            try:
                connection.execute(self.statements.presence_set, self._arguments(*write))
            except UNAVAILABLE:
                raise
            except psycopg.Error:
                FAULTS.record(Stage.PRESENCE, "the presence change was dropped", write[0])
                dropped.add((write[0], write[1]))
        return dropped

    def _arguments(
        self,
        channel: str,
        member: str,
        streams: int,
        announce: bool,
        worker: str | None = None,
    ) -> dict[str, t.Any]:
        # A count above zero can only make the member join, zero only leave (the sum over
        # the workers cannot reach zero while this one counts streams): one event to encode.
        kind = JOIN_EVENT if streams > 0 else LEAVE_EVENT
        encoded = encode_without_id(presence_event(kind, member))
        return {
            "channel": channel,
            "member": member,
            "worker": worker or self.worker,
            "streams": streams,
            "announce": announce,
            "max": self.max_announced,
            "generation": new_generation(),
            "join": encoded if streams > 0 else b"",
            "leave": encoded if streams == 0 else b"",
            "keep": self.keep,
        }

    def _reap(self) -> None:
        """Remove the members of workers past their deadline, with their leave events."""

        def reap(connection: GeventConnection) -> int:
            reaped = 0
            with connection.transaction():
                dead = [r[0] for r in connection.execute(self.statements.presence_dead)]
                dead += [
                    r[0]
                    for r in connection.execute(self.statements.presence_orphans)
                    if r[0] != self.worker
                ]
                for worker in dict.fromkeys(dead):
                    rows = connection.execute(
                        self.statements.presence_of_worker, {"worker": worker}
                    ).fetchall()
                    for channel, member in sorted(rows):
                        connection.execute(
                            self.statements.presence_set,
                            self._arguments(channel, member, 0, False, worker),
                        )
                    connection.execute(self.statements.presence_forget_worker, {"worker": worker})
                    reaped += 1
            return reaped

        if self.pool.run("presence reap", reap):
            logger.info("presence: reaped the members of dead workers")

    def leave_all(self) -> None:
        """Write this worker's departure now (at shutdown), with its leave events."""
        with self.lock:
            for channel, members in self.local.counts.items():
                for member in members:
                    self._dirty[(channel, member)] = None
            self.local.counts.clear()
            self.local.totals.clear()
        if not self._registered:
            return  # never wrote anything
        try:
            self.flush()
            self.pool.run(
                "presence",
                lambda c: c.execute(
                    self.statements.presence_forget_worker, {"worker": self.worker}
                ),
            )
        except BrokerUnavailable as error:
            logger.warning("presence: this worker's departure was not written: %s", error)
        except Exception:
            logger.exception("presence: this worker's departure was not written")

    def stop(self) -> None:
        self.closed = True
        self._poke()
