"""The PostgreSQL broker in-process, against a real PostgreSQL server on a free port.

The broker's connections wait through gevent's hub, so it runs in the pytest process without
monkey-patching. Two brokers on one schema stand for two worker processes sharing one
database; each test gets a schema of its own.
"""

from __future__ import annotations

import collections.abc as cabc
import json
import secrets
import threading
import time
import typing as t

import gevent
import pytest

from flask_ssecors._parser import parse_events
from flask_ssecors.brokers import Subscription
from flask_ssecors.brokers._postgres import PostgresBroker
from flask_ssecors.events import Event
from flask_ssecors.events import JOIN_EVENT
from flask_ssecors.events import LEAVE_EVENT
from flask_ssecors.events import RESET_EVENT
from tests.support.postgres import PostgresServer
from tests.unit.test_brokers import BACKLOG
from tests.unit.test_brokers import BrokerContract

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60)]

MakeBroker = cabc.Callable[..., PostgresBroker]


class TestPostgresBrokerContract(BrokerContract):
    """The contract every broker passes; two brokers on one schema share their channels, as
    the worker processes of one app do."""

    shares_state_across_instances = True

    @pytest.fixture
    def make_broker(self, postgres: PostgresServer) -> cabc.Iterator[MakeBroker]:
        made: list[PostgresBroker] = []
        schema = f"c{secrets.token_hex(4)}"

        def make(backlog: int = BACKLOG, **options: t.Any) -> PostgresBroker:
            options.setdefault("timeout", 2.0)
            broker = PostgresBroker(postgres.url, backlog=backlog, schema=schema, **options)
            made.append(broker)
            return broker

        yield make
        for broker in made:
            broker.close()

    def replay_class(self) -> type:
        from flask_ssecors.brokers._postgres import _Replay

        return _Replay


# -- what only this broker does ----------------------------------------------------------------


@pytest.fixture
def broker(postgres: PostgresServer) -> cabc.Iterator[PostgresBroker]:
    made = PostgresBroker(postgres.url, schema=f"p{secrets.token_hex(4)}", timeout=2.0)
    try:
        yield made
    finally:
        made.close()


def test_a_worker_hears_nothing_of_channels_it_does_not_follow(
    broker: PostgresBroker, postgres: PostgresServer
) -> None:
    """The listener LISTENs on its channels' NOTIFY names only: a thousand events on other
    channels (published by another process's broker) cost it no notification and no read."""
    subscription = broker.subscribe("mine")
    other = PostgresBroker(postgres.url, schema=broker.schema, timeout=2.0)
    try:
        listener = broker._listener
        gevent.sleep(0.2)
        notifications, reads = listener.notifications, listener.reads
        for n in range(1000):
            other.publish(f"foreign-{n % 100}", Event(n))
        mine = other.publish("mine", Event("mine"))
        (frame,) = take(subscription, 1)
        assert parse_events(frame)[0].id == mine
        assert listener.notifications - notifications == 1
        assert listener.reads - reads <= 2
    finally:
        other.close()
        subscription.close()


def test_publish_and_subscribe_from_other_os_threads(broker: PostgresBroker) -> None:
    """The development server serves each request in a thread of its own: the broker works
    there (each thread its own connection; the background work in a thread with its hub)."""
    results: dict[str, object] = {}

    def subscriber() -> None:
        subscription = broker.subscribe("threads")
        results["ready"] = True
        item = subscription.get(10)
        results["got"] = item
        subscription.close()

    def publisher() -> None:
        results["id"] = broker.publish("threads", Event("from a thread"))

    reader = threading.Thread(target=subscriber)
    reader.start()
    deadline = time.monotonic() + 10
    while "ready" not in results and time.monotonic() < deadline:
        time.sleep(0.01)
    writer = threading.Thread(target=publisher)
    writer.start()
    writer.join(10)
    reader.join(10)
    got = results.get("got")
    assert isinstance(got, bytes), results
    assert parse_events(got)[0].id == results["id"]


def test_the_first_publish_after_a_server_restart_succeeds() -> None:
    """Pooled connections whose server went away are dropped before use, not failed on."""
    server = PostgresServer().start()
    made = PostgresBroker(server.url, schema="restart", timeout=3.0)
    try:
        made.publish("c", Event("before"))
        server.stop_server()
        server.restart()
        assert made.publish("c", Event("after")).endswith(".2")
    finally:
        made.close()
        server.stop()


def take(subscription: Subscription, count: int, timeout: float = 5.0) -> list[bytes]:
    deadline = time.monotonic() + timeout
    frames: list[bytes] = []
    while len(frames) < count:
        left = deadline - time.monotonic()
        item = subscription.get(left) if left > 0 else None
        if item is None:
            raise AssertionError(f"got {len(frames)} of {count} frames: {frames!r}")
        frames.append(item)
    return frames


def test_the_members_of_a_worker_that_died_leave_within_the_ttl(postgres: PostgresServer) -> None:
    """A worker that stops renewing its deadline (killed) is reaped by another: its members
    leave, with their leave events, about TTL/2 later."""
    schema = f"r{secrets.token_hex(4)}"
    survivor = PostgresBroker(postgres.url, schema=schema, timeout=2.0, presence_ttl=2.0)
    dying = PostgresBroker(postgres.url, schema=schema, timeout=2.0, presence_ttl=2.0)
    try:
        watcher = survivor.subscribe("room")
        dying.subscribe("room", member="alice", announce=True)
        (join,) = take(watcher, 1)
        assert parse_events(join)[0].event == JOIN_EVENT
        assert survivor.presence("room").members == {"alice"}
        # Dies without a word: its greenlets stop, nothing is written.
        for greenlet in dying._greenlets:
            greenlet.kill()
        died = time.monotonic()
        (leave,) = take(watcher, 1, timeout=5.0)
        gone_after = time.monotonic() - died
        event = parse_events(leave)[0]
        assert event.event == LEAVE_EVENT
        assert json.loads(str(event.data)) == {"member": "alice"}
        assert survivor.presence("room").member_count == 0
        assert gone_after < 2.0, gone_after
    finally:
        dying._listener.channels.clear()
        dying._pool.close()
        survivor.close()


@pytest.mark.parametrize("schema", ["order", "user"])
def test_a_schema_named_like_a_reserved_word_works(postgres: PostgresServer, schema: str) -> None:
    """The schema is written quoted in every statement."""
    made = PostgresBroker(postgres.url, schema=schema, timeout=2.0)
    try:
        subscription = made.subscribe("c")
        published = made.publish("c", Event("x"))
        (frame,) = take(subscription, 1)
        assert parse_events(frame)[0].id == published
        assert made.presence("c").member_count == 0
    finally:
        made.close()


def test_a_channel_whose_head_went_back_gets_a_new_generation(
    broker: PostgresBroker, postgres: PostgresServer
) -> None:
    """A failover to a replica that lacked the last commits: the channel's head goes back and
    its numbers would name other events. The worker that delivered further gives the channel
    a new generation: its streams get the reset event, and no id is reused."""
    import psycopg

    subscription = broker.subscribe("c")
    old = [broker.publish("c", Event(n)) for n in range(5)]
    assert [parse_events(f)[0].id for f in take(subscription, 5)] == old
    with psycopg.connect(postgres.url, autocommit=True) as admin:  # the lost commits
        admin.execute(
            f'DELETE FROM "{broker.schema}".events WHERE n > 2 AND channel_id = '
            f'(SELECT id FROM "{broker.schema}".channels WHERE name = %s)',
            ("c",),
        )
        admin.execute(f'UPDATE "{broker.schema}".channels SET head = 2 WHERE name = %s', ("c",))
    broker.publish("c", Event("after the failover"))  # number 3, once more
    (reset,) = take(subscription, 1)
    event = parse_events(reset)[0]
    assert event.event == RESET_EVENT
    assert json.loads(str(event.data)) == {"reason": "channel-restarted"}
    later = broker.publish("c", Event("later"))
    generation = later.split(".")[0]
    assert generation != old[0].split(".")[0]
    # As after any restart of a channel, the stream then gets what the channel holds, under
    # the new generation: the two events that survived, the one after, and the later one.
    received = [parse_events(f)[0] for f in take(subscription, 4)]
    assert [e.id for e in received] == [f"{generation}.{n}" for n in range(1, 5)]
    assert [e.data for e in received] == ["0", "1", "after the failover", "later"]
    resumed = broker.subscribe("c", old[-1])
    (again,) = take(resumed, 1)
    assert parse_events(again)[0].event == RESET_EVENT


def test_subscribers_starting_together_start_one_listener(
    postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: the first subscribers of a process, in greenlets of one thread, each
    started the background work while the schema was being checked (the start's lock is an
    OS thread's): two readers then dispatched the same channel, and a stale read reset it."""
    from flask_ssecors.brokers._postgres_listener import Listener

    readers: list[object] = []
    read = Listener.read

    def counted(self: Listener) -> None:
        readers.append(self)
        read(self)

    monkeypatch.setattr(Listener, "read", counted)
    made = PostgresBroker(postgres.url, schema=f"s{secrets.token_hex(4)}", timeout=2.0)
    try:
        jobs = [gevent.spawn(made.subscribe, "c") for _ in range(5)]
        gevent.joinall(jobs, timeout=10, raise_error=True)
        assert len(readers) == 1
    finally:
        made.close()


def test_the_broker_works_past_1024_open_descriptors(postgres: PostgresServer) -> None:
    """Regression: a worker holding a thousand streams gives its new connections descriptors
    past 1,023, which ``select`` cannot watch; waiting with it made every statement raise, and
    the reader greenlet died, so the worker delivered nothing more while looking healthy."""
    import os
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.fail(f"this test needs 1,200 open files; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held: list[int] = []
    made = PostgresBroker(postgres.url, schema=f"f{secrets.token_hex(4)}", timeout=2.0)
    try:
        while not held or held[-1] < 1100:
            held.append(os.dup(0))
        subscription = made.subscribe("x")
        published = [made.publish("x", Event(n)) for n in range(50)]
        assert [parse_events(f)[0].id for f in take(subscription, 50)] == published
    finally:
        made.close()
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_presence_change_that_fails_is_dropped_alone(
    broker: PostgresBroker, postgres: PostgresServer
) -> None:
    """A presence write that fails for one channel (here a trigger refuses it) is counted in
    the faults and dropped; the other changes of its batch are written, and the batch is not
    retried forever."""
    import psycopg

    from flask_ssecors._faults import FAULTS

    schema = broker.schema
    broker.presence("warm")  # the schema exists
    with psycopg.connect(postgres.url, autocommit=True) as admin:
        admin.execute(
            f'CREATE FUNCTION "{schema}".refuse() RETURNS trigger LANGUAGE plpgsql AS $$ '
            "BEGIN IF NEW.channel = 'poison' THEN RAISE EXCEPTION 'refused'; END IF; "
            "RETURN NEW; END $$"
        )
        admin.execute(
            f'CREATE TRIGGER refuse BEFORE INSERT ON "{schema}".presence '
            f'FOR EACH ROW EXECUTE FUNCTION "{schema}".refuse()'
        )
    FAULTS.reset()
    poisoned = broker.subscribe("poison", member="alice")
    fine = broker.subscribe("fine", member="bob")
    try:
        assert broker.presence("fine").members == {"bob"}
        assert broker.presence("poison").member_count == 0
        assert FAULTS.snapshot() == {"presence": 1}
        gevent.sleep(0.3)  # the manager's next rounds: nothing retried
        assert FAULTS.snapshot() == {"presence": 1}
    finally:
        poisoned.close()
        fine.close()
