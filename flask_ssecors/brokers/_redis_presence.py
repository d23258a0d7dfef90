"""Presence on Redis: every worker's members of every channel, exact while workers live and
healed within ``SSECORS_PRESENCE_TTL`` when they die.

Per channel, in the channel's slot (:meth:`~._redis_layout.Keys.presence`): the members
(hash: member -> streams, all workers together), the connections (a count), the announced
members (set), reaped workers (tombstones), and each worker's own members (hash per worker).
Per deployment: the live workers (sorted set: worker -> deadline) and, per worker, the channels
it holds members on.

A worker writes, per changed ``(channel, member)``, its *absolute* stream count, in one script
per channel that adjusts the totals by the difference, atomically with the join or leave event
it implies (:data:`SET_SCRIPT`): repeating a write changes nothing, so writes are queued,
coalesced and sent in batches by one greenlet (a connect storm costs a few round trips).

Liveness: every worker renews its deadline (now + TTL/2) every TTL/8 and looks for workers past
theirs; a dead worker is claimed (its deadline pushed by a lease, so one reaper works at a time
and another takes over if that one dies too), then each of its channels is reaped
(:data:`REAP_SCRIPT`: its counts subtracted, leave events for members it was the last to hold,
a tombstone so that its late writes are refused), then it is removed. So members of a killed
worker leave within TTL/2 + TTL/8 of its last renewal. A worker that finds itself reaped (it
was paused past its deadline, or Redis lost its data) takes a new name and writes its whole
state again under it, then reaps its old name itself; a restarted worker is a new process with
a new name and nothing to write, so nothing is ever resurrected. Every presence key expires
``SSECORS_PRESENCE_TTL`` after the last live worker refreshed it (every TTL/4).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import time
import typing as t

import gevent
import gevent.event
import gevent.lock
import gevent.monkey

from .._log import get_logger
from .._wire import encode_without_id
from ..exceptions import BrokerUnavailable
from ._base import check_channel
from ._base import new_generation
from ._base import thread_ident
from ._presence import check_member
from ._presence import JOIN_EVENT
from ._presence import LEAVE_EVENT
from ._presence import LocalPresence
from ._presence import Presence
from ._presence import presence_event
from ._redis_conn import redis
from ._redis_layout import Keys
from ._redis_layout import PUBLISH_FUNCTION

logger = get_logger(__name__)

_RLock: t.Final[t.Callable[[], t.Any]] = gevent.monkey.get_original("threading", "RLock")

#: Channels per round trip when writing, refreshing or reaping.
BATCH: t.Final = 200
#: Dead workers looked at per check.
REAP_BATCH: t.Final = 8
#: Seconds the manager waits after a change before writing, so that the changes made
#: meanwhile share the round trip. A reader in the broker's thread writes at once.
WRITE_DELAY: t.Final = 0.02

#: Write this worker's absolute stream counts on one channel. KEYS: see
#: :meth:`Keys.presence`. ARGV: worker, key TTL (ms), backlog + 1, channel TTL (ms, 0: none),
#: a new generation, now (ms), n, the most members a channel announces joins for, then n
#: times: member, streams, announce ('1'/'0'), encoded join event ('' when not announced),
#: encoded leave event. Returns -1 when the worker was reaped on this channel (it must take a
#: new name), else the number of join and leave events published.
SET_SCRIPT: t.Final = (
    PUBLISH_FUNCTION
    + """
if redis.call('ZSCORE', KEYS[6], ARGV[1]) then return -1 end
local function event(encoded)
  publish(KEYS[1], KEYS[2], encoded, ARGV[3], ARGV[4], ARGV[5])
end
local published = 0
for i = 0, tonumber(ARGV[7]) - 1 do
  local at = 9 + i * 5
  local member, count = ARGV[at], tonumber(ARGV[at + 1])
  local old = tonumber(redis.call('HGET', KEYS[7], member) or '0')
  if count ~= old then
    if count > 0 then
      redis.call('HSET', KEYS[7], member, count)
    else
      redis.call('HDEL', KEYS[7], member)
    end
    local delta = count - old
    if redis.call('INCRBY', KEYS[4], delta) <= 0 then redis.call('DEL', KEYS[4]) end
    local total = redis.call('HINCRBY', KEYS[3], member, delta)
    if total <= 0 then
      redis.call('HDEL', KEYS[3], member)
      if redis.call('SREM', KEYS[5], member) == 1 then
        event(ARGV[at + 4])
        published = published + 1
      end
    elseif total == delta and ARGV[at + 2] == '1'
        and redis.call('HLEN', KEYS[3]) <= tonumber(ARGV[8]) then
      redis.call('SADD', KEYS[5], member)
      event(ARGV[at + 3])
      published = published + 1
    end
  end
end
local ttl = tonumber(ARGV[2])
for k = 3, 7 do redis.call('PEXPIRE', KEYS[k], ttl) end
return published
"""
)

#: Remove a (dead, or renamed) worker's members from one channel. KEYS: see
#: :meth:`Keys.presence`, the worker's own hash last. ARGV: worker, key TTL (ms), backlog + 1,
#: channel TTL (ms), a new generation, now (ms), n, (unused), then n times: member, encoded
#: leave event.
#: Members of the worker not among the n (it wrote meanwhile) stay; returns how many there are.
REAP_SCRIPT: t.Final = (
    PUBLISH_FUNCTION
    + """
local ttl, now = tonumber(ARGV[2]), tonumber(ARGV[6])
redis.call('ZADD', KEYS[6], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now - ttl)
redis.call('PEXPIRE', KEYS[6], ttl)
for i = 0, tonumber(ARGV[7]) - 1 do
  local at = 9 + i * 2
  local member = ARGV[at]
  local old = tonumber(redis.call('HGET', KEYS[7], member) or '0')
  if old > 0 then
    redis.call('HDEL', KEYS[7], member)
    if redis.call('INCRBY', KEYS[4], -old) <= 0 then redis.call('DEL', KEYS[4]) end
    if redis.call('HINCRBY', KEYS[3], member, -old) <= 0 then
      redis.call('HDEL', KEYS[3], member)
      if redis.call('SREM', KEYS[5], member) == 1 then
        publish(KEYS[1], KEYS[2], ARGV[at + 1], ARGV[3], ARGV[4], ARGV[5])
      end
    end
  end
end
return redis.call('HLEN', KEYS[7])
"""
)

#: Read a channel's presence. KEYS: members, connections. ARGV: most members to list.
#: Returns {members, connections, member names (only when at most ARGV[1])}.
READ_SCRIPT: t.Final = """
local n = redis.call('HLEN', KEYS[1])
local c = tonumber(redis.call('GET', KEYS[2]) or '0')
if n <= tonumber(ARGV[1]) then return {n, c, redis.call('HKEYS', KEYS[1])} end
return {n, c}
"""

#: Claim a dead worker for reaping. KEYS: the live workers. ARGV: worker, the deadline seen,
#: the lease's end. Returns 1 when this process won it.
CLAIM_SCRIPT: t.Final = """
local seen = redis.call('ZSCORE', KEYS[1], ARGV[1])
if seen and tonumber(seen) == tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  return 1
end
return 0
"""


def _delete(client: t.Any, *, key: str) -> None:
    client.delete(key)


def _members(client: t.Any, *, key: str) -> t.Any:
    return client.smembers(key)


def _worker_name() -> str:
    return f"{new_generation()}{new_generation()}-{os.getpid()}"


class RedisPresence:
    """One worker's presence on Redis (see the module documentation).

    :param run: the broker's command runner (``run(what, call)``: a bounded call on a pooled
        client, :class:`BrokerUnavailable` on failure).
    :param keys: the key layout.
    :param ttl: ``SSECORS_PRESENCE_TTL``, seconds.
    :param max_announced: joins are announced while a channel has at most this many members
        (``SSECORS_PRESENCE_MAX_MEMBERS``), so that a burst of leaves stays bounded.
    :param backlog: ``SSECORS_BACKLOG`` (join and leave events are events of the channel).
    :param channel_ttl: ``SSECORS_CHANNEL_TTL``.
    """

    def __init__(
        self,
        *,
        run: t.Callable[[str, t.Callable[[t.Any], t.Any]], t.Any],
        keys: Keys,
        ttl: float,
        max_announced: int,
        backlog: int,
        channel_ttl: float | None,
    ) -> None:
        self.run = run
        self.keys = keys
        self.ttl = ttl
        self.max_announced = max_announced
        self.backlog = backlog
        self.channel_ttl = channel_ttl
        self.worker = _worker_name()
        self.local = LocalPresence()
        #: Guards :attr:`local` and :attr:`_dirty` (joins and leaves come from any thread).
        self.lock = _RLock()
        #: (channel, member) pairs whose count changed since last written, in order.
        self._dirty: dict[tuple[str, str], None] = {}
        #: One writer at a time (the manager, or a reader in the broker's thread that writes
        #: what is queued before it reads): two writes on two connections could cross.
        self._writing = gevent.lock.Semaphore()
        self._work = gevent.event.Event()
        self._wake: t.Any = None
        self._registered = False
        self._renamed: list[str] = []
        self.closed = False
        self._hashes = {
            name: hashlib.sha1(text.encode()).hexdigest()
            for name, text in (
                ("set", SET_SCRIPT),
                ("reap", REAP_SCRIPT),
                ("read", READ_SCRIPT),
                ("claim", CLAIM_SCRIPT),
            )
        }
        self._scripts = {
            "set": SET_SCRIPT,
            "reap": REAP_SCRIPT,
            "read": READ_SCRIPT,
            "claim": CLAIM_SCRIPT,
        }
        self._home = thread_ident()

    # -- what streams do -------------------------------------------------------------------

    def join(self, channel: str, member: str, *, announce: bool) -> None:
        """One more stream of ``member`` on ``channel`` in this process."""
        check_member(member)
        with self.lock:
            self.local.add(channel, member, announce=announce)
            self._dirty[(channel, member)] = None
        self._poke()

    def leave(self, channel: str, member: str) -> None:
        """One stream fewer (from any thread)."""
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
        """The channel's presence; in the broker's thread, this process's own changes are
        written first, so a stream opened before the call is counted.

        :raises BrokerUnavailable: when Redis does not answer within the timeout.
        """
        check_channel(channel)
        if thread_ident() == self._home and self._dirty:
            self.flush()
        keys = self.keys.presence(channel, self.worker)
        reply = self._call("presence", "read", [keys[2], keys[3]], [max_members])
        counts_only = len(reply) < 3
        return Presence(
            channel=channel,
            members=frozenset() if counts_only else frozenset(m.decode() for m in reply[2]),
            member_count=int(reply[0]),
            connections=int(reply[1]),
            counts_only=counts_only,
        )

    # -- the manager greenlet ----------------------------------------------------------------

    def manage(self) -> None:
        """Write queued changes in batches; renew this worker's deadline, reap dead workers
        and refresh keys on their schedules."""
        hub = gevent.get_hub()
        wake = hub.loop.async_()
        wake.start(self._work.set)
        self._wake = wake
        beat = self.ttl / 8
        # Nothing to renew, reap or refresh yet: the first round waits a beat, so that a
        # broker starting up (its listener subscribing) shares Redis with nothing.
        renewed = refreshed = time.monotonic()
        try:
            while not self.closed:
                if self._work.wait(beat):
                    self._work.clear()
                    # The changes of the next few ms share the round trip (a connect storm
                    # arrives over seconds: without this, each open would be a write).
                    gevent.sleep(WRITE_DELAY)
                now = time.monotonic()
                try:
                    if self._dirty:
                        self.flush()
                    if now - renewed >= beat:
                        renewed = now
                        self._renew()
                        self._reap_dead()
                    if now - refreshed >= self.ttl / 4:
                        refreshed = now
                        self._refresh()
                except BrokerUnavailable as error:
                    logger.warning("presence could not be written to Redis: %s", error)
                    gevent.sleep(min(beat, 1.0))
                    self._work.set()
                except Exception:
                    logger.exception("presence could not be written to Redis")
                    gevent.sleep(min(beat, 1.0))
                    self._work.set()
        finally:
            self._wake = None
            wake.close()

    def flush(self) -> None:
        """Write every queued change (this worker's absolute counts), channel by channel."""
        with self._writing:
            for _ in range(3):  # again after a rename: everything, under the new name
                with self.lock:
                    dirty, self._dirty = list(self._dirty), {}
                try:
                    self._write(dirty)
                except BaseException:
                    with self.lock:  # written again next time (absolute counts: harmless)
                        for pair in dirty:
                            self._dirty.setdefault(pair, None)
                    raise
                if self._dirty:
                    continue
                if self._renamed:  # the new name holds every member now: drop the old one
                    self._reap_renamed()
                break

    def _write(self, pairs: list[tuple[str, str]]) -> None:
        by_channel: dict[str, list[tuple[str, int, bool]]] = {}
        with self.lock:
            for channel, member in pairs:
                by_channel.setdefault(channel, []).append(
                    (
                        member,
                        self.local.count(channel, member),
                        (channel, member) in self.local.announced,
                    )
                )
                if self.local.count(channel, member) == 0:
                    self.local.announced.discard((channel, member))
        if not by_channel:
            return
        if not self._registered:
            self._renew()
        names = list(by_channel)
        refused = False
        for start in range(0, len(names), BATCH):
            batch = names[start : start + BATCH]
            worker = self.worker
            calls = [self._set_call(name, worker, by_channel[name]) for name in batch]
            with self.lock:
                held = [name for name in batch if name in self.local.counts]
            replies = self.run(
                "presence",
                functools.partial(
                    self._pipeline,
                    calls=calls,
                    worker=worker,
                    held=held,
                    gone=[name for name in batch if name not in held],
                ),
            )
            with self.lock:
                self.local.updates += sum(len(by_channel[name]) for name in batch)
            refused = refused or any(reply == -1 for reply in replies)
        if refused:
            self._rename("a worker took this one for dead")

    def _leading_args(self, worker: str, count: int) -> list[object]:
        """The arguments :data:`SET_SCRIPT` and :data:`REAP_SCRIPT` start with."""
        return [
            worker,
            int(self.ttl * 1000),
            self.backlog + 1,
            int(self.channel_ttl * 1000) if self.channel_ttl is not None else 0,
            new_generation(),
            int(time.time() * 1000),
            count,
            self.max_announced,
        ]

    def _set_call(
        self, channel: str, worker: str, members: list[tuple[str, int, bool]]
    ) -> tuple[str, list[str], list[object]]:
        args = self._leading_args(worker, len(members))
        for member, count, announce in members:
            args += [
                member,
                count,
                "1" if announce else "0",
                encode_without_id(presence_event(JOIN_EVENT, member)) if announce else b"",
                # Always: this may be the member's last stream, its join announced elsewhere.
                encode_without_id(presence_event(LEAVE_EVENT, member)),
            ]
        return "set", self.keys.presence(channel, worker), args

    def _pipeline(
        self,
        client: t.Any,
        *,
        calls: list[tuple[str, list[str], list[object]]],
        worker: str | None = None,
        held: list[str] | None = None,
        gone: list[str] | None = None,
    ) -> list[t.Any]:
        """Run ``calls`` (script name, keys, args) in one pipeline (EVALSHA; EVAL where Redis
        does not know the script yet); with ``worker``, also record the channels it holds
        members on (``held``) and no longer holds any on (``gone``), for its reapers."""
        pipe = client.pipeline(transaction=False)
        for name, keys, args in calls:
            pipe.evalsha(self._hashes[name], len(keys), *keys, *args)
        if worker is not None:
            mine = self.keys.presence_channels(worker)
            if held:
                pipe.sadd(mine, *held)
                pipe.pexpire(mine, int(self.ttl * 1000))
            if gone:
                pipe.srem(mine, *gone)
        replies = pipe.execute(raise_on_error=False)
        results: list[t.Any] = []
        for (name, keys, args), reply in zip(calls, replies, strict=False):
            if isinstance(reply, Exception):
                if not isinstance(reply, redis.exceptions.NoScriptError):
                    raise reply
                reply = client.eval(self._scripts[name], len(keys), *keys, *args)
            results.append(reply)
        for reply in replies[len(calls) :]:
            if isinstance(reply, Exception):
                raise reply
        return results

    def _call(self, what: str, name: str, keys: list[str], args: list[object]) -> t.Any:
        """One script, without a pipeline (EVAL where Redis does not know it yet)."""

        def call(client: t.Any) -> t.Any:
            try:
                return client.evalsha(self._hashes[name], len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:
                return client.eval(self._scripts[name], len(keys), *keys, *args)

        return self.run(what, call)

    # -- liveness ----------------------------------------------------------------------------

    def _renew(self) -> None:
        """Push this worker's deadline to now + TTL/2; a worker that was removed meanwhile
        (reaped, or Redis lost its data) takes a new name and writes everything again."""
        deadline = int((time.time() + self.ttl / 2) * 1000)
        workers = self.keys.presence_workers
        ttl_ms = int(self.ttl * 1000)

        def renew(client: t.Any) -> t.Any:
            pipe = client.pipeline(transaction=False)
            if self._registered:  # never adds it back: a reaped worker must notice
                pipe.zadd(workers, {self.worker: deadline}, xx=True, gt=True)
            else:
                pipe.zadd(workers, {self.worker: deadline})
            pipe.zscore(workers, self.worker)
            pipe.pexpire(workers, ttl_ms)
            pipe.pexpire(self.keys.presence_channels(self.worker), ttl_ms)
            return pipe.execute()[1] is not None

        with self.lock:
            holds = bool(self.local.counts)
        if not holds and not self._registered:
            return
        known = self.run("presence", renew)
        if self._registered and not known:
            self._rename("Redis no longer knew this worker (reaped, or Redis lost its data)")
            return
        self._registered = True

    def _rename(self, why: str) -> None:
        """Take a new name and queue every member this process holds, to be written under
        it; the old name's members are reaped after that write."""
        old = self.worker
        self.worker = _worker_name()
        self._registered = False
        logger.warning("presence: %s; writing this worker's members again as %s", why, self.worker)
        with self.lock:
            for channel, members in self.local.counts.items():
                for member in members:
                    self._dirty[(channel, member)] = None
            self._renamed.append(old)
        self._work.set()

    def _reap_renamed(self) -> None:
        """Remove this process's old names from every channel it holds members on."""
        with self.lock:
            channels = list(self.local.counts)
            old, self._renamed = self._renamed, []
        for name in old:
            self._reap_worker(name, channels)
            self.run("presence", functools.partial(_delete, key=self.keys.presence_channels(name)))

    def _reap_dead(self) -> None:
        """Find workers past their deadline, claim each, reap its channels, remove it."""
        now = int(time.time() * 1000)
        workers = self.keys.presence_workers

        def dead(client: t.Any) -> t.Any:
            return client.zrangebyscore(
                workers, "-inf", now, start=0, num=REAP_BATCH, withscores=True
            )

        for raw, score in self.run("presence", dead):
            name = raw.decode()
            if name == self.worker:
                continue
            lease = now + int(self.ttl * 500)
            claimed = self._call("presence", "claim", [workers], [name, int(score), lease])
            if not claimed:
                continue
            members = functools.partial(_members, key=self.keys.presence_channels(name))
            channels = [c.decode() for c in self.run("presence", members)]
            logger.info("presence: worker %s is gone; reaping its %d channels", name, len(channels))
            self._reap_worker(name, channels)

            def remove(client: t.Any, name: str = name) -> None:
                pipe = client.pipeline(transaction=False)
                pipe.zrem(workers, name)
                pipe.delete(self.keys.presence_channels(name))
                pipe.execute()

            self.run("presence", remove)

    def _reap_worker(self, worker: str, channels: list[str]) -> None:
        for start in range(0, len(channels), BATCH):
            batch = channels[start : start + BATCH]
            for _ in range(3):  # members it wrote while being reaped: once more
                held = self.run(
                    "presence",
                    functools.partial(self._held, worker=worker, channels=batch),
                )
                calls = [
                    self._reap_call(channel, worker, members)
                    for channel, members in zip(batch, held, strict=True)
                ]
                left = self.run("presence", functools.partial(self._pipeline, calls=calls))
                batch = [c for c, n in zip(batch, left, strict=True) if n]
                if not batch:
                    break

    def _held(self, client: t.Any, *, worker: str, channels: list[str]) -> list[list[str]]:
        pipe = client.pipeline(transaction=False)
        for channel in channels:
            pipe.hkeys(self.keys.presence(channel, worker)[6])
        return [[m.decode() for m in reply] for reply in pipe.execute()]

    def _reap_call(
        self, channel: str, worker: str, members: list[str]
    ) -> tuple[str, list[str], list[object]]:
        args = self._leading_args(worker, len(members))
        for member in members:
            args += [member, encode_without_id(presence_event(LEAVE_EVENT, member))]
        return "reap", self.keys.presence(channel, worker), args

    def _refresh(self) -> None:
        """Keep the keys of the channels this worker holds members on alive."""
        with self.lock:
            channels = list(self.local.counts)
        ttl_ms = int(self.ttl * 1000)
        for start in range(0, len(channels), BATCH):
            batch = channels[start : start + BATCH]

            def refresh(client: t.Any, batch: list[str] = batch) -> None:
                pipe = client.pipeline(transaction=False)
                for channel in batch:
                    for key in self.keys.presence(channel, self.worker)[2:]:
                        pipe.pexpire(key, ttl_ms)
                pipe.execute()

            self.run("presence", refresh)

    def stop(self) -> None:
        """Stop the manager (the broker closes the connections)."""
        self.closed = True
        self._poke()

    def leave_all(self) -> None:
        """Write this process's departure now (at shutdown): every member leaves, with its
        leave events, instead of waiting for the TTL."""
        with self.lock:
            for channel, members in self.local.counts.items():
                for member in members:
                    self._dirty[(channel, member)] = None
            self.local.counts.clear()
        with contextlib.suppress(BrokerUnavailable):
            self.flush()
