"""The PostgreSQL broker across real processes (issue 22): gunicorn -k gevent workers sharing one
database, publishes inside the application's own transactions, the postmaster SIGKILLed
mid-run, a slow query beside other greenlets, and a database that is down.

The server is Debian's PostgreSQL on a free loopback port (``tests/support/postgres.py``); each
test has a schema of its own. Brokers in the pytest process run without monkey-patching (their
connections wait through gevent's hub anyway); the application's own connections in the
transaction tests are plain psycopg and SQLAlchemy ones, as an application's are. Figures
measured here (the outage, failed publishes, recovery) are printed: ``pytest -s`` shows them.
"""

from __future__ import annotations

import collections.abc as cabc
import contextlib
import json
import secrets
import socket
import threading
import time
import typing as t
from pathlib import Path

import gevent
import psycopg
import pytest
import sqlalchemy
import sqlalchemy.orm
from flask import Flask

from flask_ssecors import Event
from flask_ssecors import Publisher
from flask_ssecors import SSECors
from flask_ssecors._parser import parse_events
from flask_ssecors.brokers import Subscription
from flask_ssecors.brokers._postgres import PostgresBroker
from flask_ssecors.brokers._postgres_publish import TransactionError
from flask_ssecors.events import RESET_EVENT
from flask_ssecors.exceptions import BrokerUnavailable
from tests.support.postgres import PostgresServer
from tests.support.servers import free_port
from tests.support.servers import LiveServer
from tests.support.swarm import Received
from tests.support.swarm import Swarm
from tests.support.swarm import SwarmStream
from tests.support.wire import request
from tests.support.wire import StreamClient

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60)]

APP = "tests.live_apps.postgres_app:create_app()"
BROKER_TIMEOUT = 1.0
#: Seconds ``/hold`` blocks a worker, so that a connection goes to the other one.
HOLD = 0.4
#: Times the client of the two-worker test moves to the other worker.
HOPS = 6


@pytest.fixture
def schema() -> str:
    return f"l{secrets.token_hex(4)}"


@pytest.fixture
def broker(postgres: PostgresServer, schema: str) -> cabc.Iterator[PostgresBroker]:
    made = PostgresBroker(postgres.url, schema=schema, timeout=2.0)
    try:
        yield made
    finally:
        made.close()


@contextlib.contextmanager
def serving(url: str, schema: str, log: Path, *, workers: int = 1) -> cabc.Iterator[LiveServer]:
    env = {
        "BROKER_URL": url,
        "BROKER_SCHEMA": schema,
        "HEARTBEAT": "0.5",
        "BROKER_TIMEOUT": str(BROKER_TIMEOUT),
    }
    server = LiveServer(APP, env=env, workers=workers, log_path=log).start()
    try:
        yield server
    finally:
        server.stop()


def publish_http(server: LiveServer, channel: str, n: int) -> tuple[int, dict[str, t.Any]]:
    status, _, body = request(server.port, f"/publish/{channel}?n={n}", method="POST")
    return status, t.cast("dict[str, t.Any]", json.loads(body))


def number(event_id: str) -> int:
    return int(event_id.rpartition(".")[2])


def payload(event: Received) -> tuple[str, int]:
    data = event.json()
    return str(data["via"]), int(data["n"])


def open_on(
    swarm: Swarm, server: LiveServer, pid: str, last_event_id: str | None = None
) -> SwarmStream:
    """A stream of ``/events/fan`` served by worker ``pid``: opened at once, or, when it lands
    on the other worker, again while ``/hold`` blocks the other worker."""
    for attempt in range(20):
        with contextlib.ExitStack() as held:
            if attempt and held.enter_context(holding(server, HOLD)) == pid:
                continue  # the hold took the worker wanted: wait it out, try again
            [stream] = swarm.open(["/events/fan"], last_event_ids=[last_event_id])
        assert stream.status == 200, (stream.status, stream.error, stream.body)
        if stream.headers["x-worker-pid"] == pid:
            return stream
        swarm.drop([stream])
    raise AssertionError(f"20 attempts missed worker {pid}")


@contextlib.contextmanager
def holding(server: LiveServer, seconds: float) -> cabc.Iterator[str]:
    """Block one worker of ``server`` (whichever takes the request) for ``seconds``; yields
    its pid once it is blocked: until then, only the other workers accept connections."""
    client = StreamClient(server.port, f"/hold?seconds={seconds}", method="POST")
    try:
        assert client.status == 200
        while b"\n" not in client.raw:
            client.read_bytes(10)
        yield client.raw.decode().partition("\n")[0]
        client.read_all(10)
    finally:
        client.close()


def open_on_every_worker(
    swarm: Swarm, server: LiveServer, path: str, *, each: int
) -> dict[str, list[SwarmStream]]:
    """``each`` streams on each of the two workers of ``server``, by worker pid: opened while
    ``/hold`` blocks one worker, they all go to the other; until both have theirs."""
    found: dict[str, list[SwarmStream]] = {}
    for _ in range(20):
        with holding(server, HOLD) as held:
            opened = swarm.open([path] * each)
        for stream in opened:
            assert stream.status == 200, (stream.status, stream.error, stream.body)
            pid = stream.headers["x-worker-pid"]
            assert pid != held
            kept = found.setdefault(pid, [])
            if len(kept) < each:
                kept.append(stream)
            else:
                swarm.drop([stream])
        if len(found) == 2 and all(len(s) == each for s in found.values()):
            return found
    raise AssertionError(f"20 rounds did not reach both workers: {found.keys()}")


def received(stream: SwarmStream, count: int) -> cabc.Callable[[], bool]:
    return lambda: len(stream.events) >= count


# -- two workers on one database ------------------------------------------------------------------


@pytest.mark.live
def test_two_workers_deliver_every_event_once_in_order_and_clients_resume_on_the_other(
    postgres: PostgresServer, schema: str, tmp_path: Path
) -> None:
    """One gunicorn with two gevent workers on one database; streams on both (each response
    names its worker). Events published through the app's HTTP endpoint (whichever worker
    takes the request) and from a :class:`~flask_ssecors.Publisher` in the test process,
    concurrently: ids are gapless and follow each publisher's order, and every stream gets
    every event exactly once, in that order. Meanwhile one client hops from worker to worker
    with Last-Event-ID every 15 events: it too has every event once, in order, and no reset."""
    with (
        serving(postgres.url, schema, tmp_path / "log", workers=2) as server,
        Swarm(server.port) as swarm,
        Publisher(postgres.url, schema=schema) as publisher,
    ):
        by_worker = open_on_every_worker(swarm, server, "/events/fan", each=3)
        streams = [stream for group in by_worker.values() for stream in group]
        pids = sorted(by_worker)
        hopper = open_on(swarm, server, pids[0])
        published: dict[str, tuple[str, int]] = {}
        http_pids: set[int] = set()
        errors: list[object] = []
        hopped = threading.Event()

        def more(n: int) -> bool:  # at least 100 each, and on until the client has hopped
            return not errors and (n < 100 or not hopped.is_set()) and n < 1000

        def through_http() -> None:
            n = 0
            while more(n):
                status, body = publish_http(server, "fan", n)
                if status != 200:
                    errors.append(body)
                    return
                published[body["ids"][0]] = ("http", n)
                http_pids.add(body["pid"])
                n += 1
                time.sleep(0.01)

        def through_publisher() -> None:
            n = 0
            try:
                while more(n):
                    event_id = publisher.publish("fan", Event({"n": n, "via": "publisher"}))
                    published[event_id] = ("publisher", n)
                    n += 1
                    time.sleep(0.01)
            except Exception as error:
                errors.append(repr(error))

        threads = [threading.Thread(target=f) for f in (through_http, through_publisher)]
        for thread in threads:
            thread.start()
        seen: list[Received] = []
        hops = [pids[0]]
        try:
            while len(hops) <= HOPS and not errors:
                swarm.wait_until(received(hopper, 15), 20, "events to hop after")
                swarm.drop([hopper])
                seen += hopper.events
                hops.append(pids[len(hops) % 2])
                hopper = open_on(swarm, server, hops[-1], seen[-1].id)
        finally:
            hopped.set()
            for thread in threads:
                thread.join(30)
        assert not errors, errors
        total = len(published)
        swarm.wait_until(
            lambda: (
                all(len(s.events) >= total for s in streams)
                and len(seen) + len(hopper.events) >= total
            ),
            20,
            "every event on every stream",
            streams,
        )
        time.sleep(0.5)  # a duplicate would have arrived by now
        seen += hopper.events
        assert not [s for s in streams if s.ended]  # each on the connection it opened

    expected = sorted(published, key=number)
    assert {i.rpartition(".")[0] for i in expected} == {expected[0].rpartition(".")[0]}
    assert [number(i) for i in expected] == list(range(1, total + 1))  # gapless
    for source in ("http", "publisher"):  # numbered in the order each publisher published
        numbers = [n for via, n in map(published.__getitem__, expected) if via == source]
        assert numbers == list(range(len(numbers))) and len(numbers) >= 100, source
    for pid, group in by_worker.items():
        for stream in group:
            assert [e.id for e in stream.events] == expected, pid
            assert [payload(e) for e in stream.events] == [published[i] for i in expected]
    assert [e.id for e in seen] == expected  # the hopping client: nothing lost, nothing twice
    assert [payload(e) for e in seen] == [published[i] for i in expected]
    assert not [e for e in seen if e.type == RESET_EVENT]
    assert hops == [pids[n % 2] for n in range(HOPS + 1)], hops
    print(
        f"\ntwo workers {pids}: {total} events, streams per worker "
        f"{ {pid: len(group) for pid, group in by_worker.items()} }, HTTP publishes served by "
        f"{sorted(http_pids)}, the hopping client moved {len(hops) - 1} times"
    )


# -- publishing in the application's transaction --------------------------------------------------


class Rollback(Exception):
    """Raised in a transaction block to roll it back."""


Insert: t.TypeAlias = cabc.Callable[[str], object]
Begin: t.TypeAlias = cabc.Callable[[], t.ContextManager[tuple[object, Insert]]]


def sqlalchemy_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture
def orders(postgres: PostgresServer) -> cabc.Iterator[str]:
    """The application's table (its own, outside the broker's schema)."""
    table = f"orders_{secrets.token_hex(4)}"
    with psycopg.connect(postgres.url, autocommit=True) as connection:
        connection.execute(f"CREATE TABLE {table} (id serial PRIMARY KEY, item text NOT NULL)")
    try:
        yield table
    finally:
        with psycopg.connect(postgres.url, autocommit=True) as connection:
            connection.execute(f"DROP TABLE {table}")


@pytest.fixture
def engine(postgres: PostgresServer) -> cabc.Iterator[sqlalchemy.Engine]:
    made = sqlalchemy.create_engine(sqlalchemy_url(postgres.url))
    try:
        yield made
    finally:
        made.dispose()


@pytest.fixture(params=["psycopg", "sqlalchemy-connection", "sqlalchemy-session"])
def begin(
    request: pytest.FixtureRequest, postgres: PostgresServer, engine: sqlalchemy.Engine, orders: str
) -> Begin:
    """Opens a transaction of the kind the parameter names; yields the object to pass as
    ``transaction=`` and a function that inserts an order in that transaction."""
    insert = f"INSERT INTO {orders} (item) VALUES "

    @contextlib.contextmanager
    def with_psycopg() -> cabc.Iterator[tuple[object, Insert]]:
        with psycopg.connect(postgres.url) as connection, connection.transaction():
            yield connection, lambda item: connection.execute(insert + "(%s)", (item,))

    @contextlib.contextmanager
    def with_connection() -> cabc.Iterator[tuple[object, Insert]]:
        statement = sqlalchemy.text(insert + "(:item)")
        with engine.begin() as connection:
            yield connection, lambda item: connection.execute(statement, {"item": item})

    @contextlib.contextmanager
    def with_session() -> cabc.Iterator[tuple[object, Insert]]:
        statement = sqlalchemy.text(insert + "(:item)")
        with sqlalchemy.orm.Session(engine) as session, session.begin():
            yield session, lambda item: session.execute(statement, {"item": item})

    kinds = {
        "psycopg": with_psycopg,
        "sqlalchemy-connection": with_connection,
        "sqlalchemy-session": with_session,
    }
    return kinds[request.param]


def items(url: str, table: str) -> list[str]:
    with psycopg.connect(url) as connection:
        return [row[0] for row in connection.execute(f"SELECT item FROM {table} ORDER BY id")]


def next_event(subscription: Subscription, timeout: float = 5.0) -> Event:
    item = subscription.get(timeout)
    assert item is not None, f"no event within {timeout} s"
    (event,) = parse_events(item)
    return event


def test_an_event_in_a_transaction_is_delivered_at_commit_with_its_id_never_before(
    broker: PostgresBroker, begin: Begin, postgres: PostgresServer, orders: str
) -> None:
    subscription = broker.subscribe("orders")
    with begin() as (transaction, insert):
        insert("book")
        event_id = broker.publish("orders", Event({"item": "book"}), transaction=transaction)
        assert subscription.get(0.5) is None  # the transaction is still open
        assert items(postgres.url, orders) == []
    event = next_event(subscription)
    assert (event.id, json.loads(str(event.data))) == (event_id, {"item": "book"})
    assert items(postgres.url, orders) == ["book"]


def test_a_rolled_back_event_is_never_delivered_and_its_number_is_given_back(
    broker: PostgresBroker, begin: Begin, postgres: PostgresServer, orders: str
) -> None:
    subscription = broker.subscribe("orders")
    first = broker.publish("orders", Event("before"))
    assert next_event(subscription).id == first
    with pytest.raises(Rollback), begin() as (transaction, insert):
        insert("cancelled")
        rolled = broker.publish("orders", Event("cancelled"), transaction=transaction)
        raise Rollback
    assert number(rolled) == number(first) + 1
    assert subscription.get(0.5) is None
    after = broker.publish("orders", Event("after"))
    assert after == rolled  # the same generation, the number the rollback gave back
    event = next_event(subscription)
    assert (event.id, event.data) == (after, "after")
    assert subscription.get(0.2) is None
    assert items(postgres.url, orders) == []


def waiting_on(url: str, application_name: str) -> str | None:
    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute(
            "SELECT wait_event_type FROM pg_stat_activity WHERE application_name = %s",
            (application_name,),
        ).fetchone()
    return None if row is None else t.cast("str | None", row[0])


def test_transactions_on_one_channel_take_numbers_in_commit_order(
    broker: PostgresBroker, postgres: PostgresServer, orders: str
) -> None:
    """``late`` begins first; ``early`` publishes first and holds the channel's row lock: the
    publish in ``late`` waits on that lock (PostgreSQL says so) until ``early`` commits, then
    takes the next number. Another channel is not held up meanwhile."""
    subscription = broker.subscribe("orders")
    insert = f"INSERT INTO {orders} (item) VALUES (%s)"
    late = psycopg.connect(postgres.url, application_name="late-tx")
    early = psycopg.connect(postgres.url, application_name="early-tx")
    result: dict[str, object] = {}

    def publish_late() -> None:
        try:
            result["id"] = broker.publish("orders", Event("late"), transaction=late)
        except Exception as error:
            result["error"] = error

    thread = threading.Thread(target=publish_late)
    try:
        late.execute(insert, ("late",))
        early.execute(insert, ("early",))
        early_id = broker.publish("orders", Event("early"), transaction=early)
        thread.start()
        deadline = time.monotonic() + 5
        while waiting_on(postgres.url, "late-tx") != "Lock":
            assert time.monotonic() < deadline, "the second publish never waited on a lock"
            time.sleep(0.02)
        began = time.monotonic()
        other = broker.publish("elsewhere", Event("not held up"))
        assert time.monotonic() - began < 1.0 and other
        assert subscription.get(0.3) is None
        assert "id" not in result and thread.is_alive()
        early.commit()
        thread.join(5)
        late_id = t.cast(str, result["id"])
        assert number(late_id) == number(early_id) + 1
        late.commit()
        events = [next_event(subscription), next_event(subscription)]
        assert [(e.id, e.data) for e in events] == [(early_id, "early"), (late_id, "late")]
        assert items(postgres.url, orders) == ["late", "early"]  # inserted in that order
    finally:
        thread.join(5)
        late.close()
        early.close()


def test_an_engine_or_another_object_as_transaction_is_refused(
    broker: PostgresBroker, engine: sqlalchemy.Engine
) -> None:
    with pytest.raises(TransactionError, match="not an Engine"):
        broker.publish("orders", Event("x"), transaction=engine)
    with pytest.raises(TransactionError, match="got str"):
        broker.publish("orders", Event("x"), transaction="BEGIN")
    assert broker.head("orders") == "000000.0"  # nothing was published


def test_flask_sqlalchemy_db_session_through_sse_publish(
    postgres: PostgresServer, schema: str
) -> None:
    """``sse.publish(..., transaction=db.session)`` in a view: delivered when the view commits
    the order with it; never when it rolls back (and the number is given back).

    Regression: ``db.session`` is a ``scoped_session``, not a ``Session``, and the broker
    refused it with TransactionError."""
    from flask_sqlalchemy import SQLAlchemy

    table = f"orders_{secrets.token_hex(4)}"
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=sqlalchemy_url(postgres.url),
        SSECORS_ALLOWED_ORIGINS=["http://localhost:5001"],
        SSECORS_BROKER_URL=postgres.url,
        SSECORS_BROKER_SCHEMA=schema,
    )
    db = SQLAlchemy(app)
    sse = SSECors(app)

    class Order(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = table
        id: sqlalchemy.orm.Mapped[int] = sqlalchemy.orm.mapped_column(primary_key=True)
        item: sqlalchemy.orm.Mapped[str]

    @app.post("/orders/<item>")
    def order(item: str) -> t.Any:
        db.session.add(Order(item=item))
        event_id = sse.publish("orders", Event({"item": item}), transaction=db.session)
        if item == "refused":
            db.session.rollback()
            return {"id": event_id}, 409
        db.session.commit()
        return {"id": event_id}

    with app.app_context():
        db.create_all()
        subscription = sse.broker.subscribe("orders")
        try:
            client = app.test_client()
            book = client.post("/orders/book").get_json()["id"]
            event = next_event(subscription)
            assert (event.id, json.loads(str(event.data))) == (book, {"item": "book"})
            refused = client.post("/orders/refused")
            assert refused.status_code == 409
            assert subscription.get(0.5) is None
            pen = client.post("/orders/pen").get_json()["id"]
            assert pen == refused.get_json()["id"] and number(pen) == number(book) + 1
            assert next_event(subscription).id == pen
            kept = db.session.scalars(sqlalchemy.select(Order).order_by(Order.id))
            assert [o.item for o in kept] == ["book", "pen"]
        finally:
            subscription.close()
            db.session.remove()
            db.drop_all()
            db.engine.dispose()
            sse.broker.close()


# -- the postmaster SIGKILLed mid-run -------------------------------------------------------------


class Attempt(t.NamedTuple):
    via: str
    n: int
    began: float
    elapsed: float
    event_id: str | None  #: None: the publish raised BrokerUnavailable (or answered 503)


def committed(url: str, schema: str, channel: str) -> list[tuple[str, tuple[str, int]]]:
    """The channel's events as PostgreSQL kept them: (id, (via, n)) in number order."""
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            f"SELECT c.generation, e.n, e.data FROM {schema}.events e "
            f"JOIN {schema}.channels c ON c.id = e.channel_id WHERE c.name = %s ORDER BY e.n",
            (channel,),
        ).fetchall()
    found = []
    for generation, n, data in rows:
        (event,) = parse_events(bytes(data))
        body = json.loads(str(event.data))
        found.append((f"{generation}.{n}", (str(body["via"]), int(body["n"]))))
    return found


@pytest.mark.live
def test_postgres_sigkilled_mid_run_every_committed_event_reaches_every_subscriber_once(
    tmp_path: Path,
) -> None:
    """A broker greenlet in the test process and a thread through a gunicorn worker's HTTP
    endpoint publish numbered events every 10 ms; the postmaster gets SIGKILL, stays down
    1.5 s, and restarts on the same data. Publishes meanwhile raise BrokerUnavailable (503),
    each within the broker timeout + 1 s. Afterwards the events table is the truth: it is
    gapless, holds every publish that returned an id (and possibly a publish whose answer was
    lost), and ten HTTP streams on the worker and a subscription of a third broker each have
    exactly those events, once, in order, with no reset, on the connection they opened with."""
    server = PostgresServer().start()
    schema = "drill"
    publisher = PostgresBroker(server.url, schema=schema, timeout=BROKER_TIMEOUT)
    subscriber = PostgresBroker(server.url, schema=schema, timeout=BROKER_TIMEOUT)
    try:
        with (
            serving(server.url, schema, tmp_path / "log") as live,
            Swarm(live.port) as swarm,
        ):
            streams = swarm.open(["/events/drill"] * 10)
            assert [s.status for s in streams] == [200] * 10
            subscription = subscriber.subscribe("drill")
            _drill(server, live, swarm, streams, publisher, subscription, schema)
    finally:
        publisher.close()
        subscriber.close()
        server.stop()


def _drill(
    server: PostgresServer,
    live: LiveServer,
    swarm: Swarm,
    streams: list[SwarmStream],
    publisher: PostgresBroker,
    subscription: Subscription,
    schema: str,
) -> None:
    attempts: list[Attempt] = []
    arrivals: list[tuple[float, Event]] = []
    stop = threading.Event()
    reading_done = threading.Event()

    def publish_in_process() -> None:
        n = 0
        while not stop.is_set():
            began = time.monotonic()
            try:
                event_id: str | None = publisher.publish("drill", Event({"n": n, "via": "broker"}))
            except BrokerUnavailable:
                event_id = None
            attempts.append(Attempt("broker", n, began, time.monotonic() - began, event_id))
            n += 1
            gevent.sleep(0.01)

    def publish_over_http() -> None:
        n = 0
        while not stop.is_set():
            began = time.monotonic()
            status, body = publish_http(live, "drill", n)
            elapsed = time.monotonic() - began
            if status == 200:
                attempts.append(Attempt("http", n, began, elapsed, body["ids"][0]))
            else:
                assert (status, body["error"]) == (503, "BrokerUnavailable"), body
                attempts.append(Attempt("http", n, began, body["elapsed"], None))
            n += 1
            time.sleep(0.01)

    def read() -> None:
        while not reading_done.is_set():
            item = subscription.get(0.2)
            if item is not None:
                (event,) = parse_events(item)
                arrivals.append((time.monotonic(), event))

    pool = gevent.get_hub().threadpool
    greenlets = [gevent.spawn(publish_in_process), gevent.spawn(read)]
    over_http = pool.spawn(publish_over_http)
    try:
        gevent.sleep(1.0)
        killed = time.monotonic()
        pool.apply(server.kill)
        gevent.sleep(1.5)
        pool.apply(server.restart)
        restarted = time.monotonic()
        gevent.sleep(1.5)
        stop.set()
        over_http.get(timeout=10)
        greenlets[0].get(timeout=10)

        kept = committed(server.url, schema, "drill")
        ids = [event_id for event_id, _ in kept]
        ok = [a for a in attempts if a.event_id is not None]
        failed = [a for a in attempts if a.event_id is None]
        by_payload = {payload: event_id for event_id, payload in kept}
        assert {i.rpartition(".")[0] for i in ids} == {ids[0].rpartition(".")[0]}
        assert [number(i) for i in ids] == list(range(1, len(ids) + 1))  # gapless
        for attempt in ok:  # what returned an id was kept, under that id
            assert by_payload.get((attempt.via, attempt.n)) == attempt.event_id, attempt
        made = {(a.via, a.n) for a in attempts}
        assert set(by_payload) <= made  # nothing kept that nobody published
        lost_answers = [a for a in failed if (a.via, a.n) in by_payload]
        for via in ("broker", "http"):
            numbers = [n for _, (source, n) in kept if source == via]
            assert numbers == sorted(numbers), via  # numbered in the order each one published
            assert [a for a in failed if a.via == via], f"no {via} publish failed in the outage"
            assert [a for a in ok if a.via == via and a.began > restarted], via
        slowest = max(a.elapsed for a in failed)
        assert slowest < BROKER_TIMEOUT + 1.0, slowest

        def everyone_has_everything() -> bool:
            return all(len(s.events) >= len(kept) for s in streams) and len(arrivals) >= len(kept)

        recovered = swarm.wait_until(everyone_has_everything, 20, "every committed event", streams)
        gevent.sleep(0.5)  # a duplicate would have arrived by now
        reading_done.set()
        greenlets[1].get(timeout=5)
        for stream in streams:
            assert not stream.ended
            assert not stream.of_type(RESET_EVENT)
            assert [e.id for e in stream.events] == ids
            assert [payload(e) for e in stream.events] == [p for _, p in kept]
        assert [e.id for _, e in arrivals] == ids
        assert not [e for _, e in arrivals if e.event == RESET_EVENT]

        after = [a for a in ok if a.began > restarted]
        first_after = min(after, key=lambda a: a.began)
        delivered = next(at for at, e in arrivals if e.id == first_after.event_id)
        outage = [a for a in attempts if killed <= a.began < restarted]
        print(
            "\nSIGKILL drill:",
            {
                "events_committed": len(kept),
                "publishes_ok": len(ok),
                "publishes_failed": len(failed),
                "failed_but_committed": len(lost_answers),
                "down_s": round(restarted - killed, 2),
                "failure_s_max": round(slowest, 3),
                "failure_s_median": round(sorted(a.elapsed for a in failed)[len(failed) // 2], 3),
                "outage_attempts": len(outage),
                "first_ok_publish_after_restart_s": round(first_after.began - restarted, 3),
                "first_delivery_after_restart_s": round(delivered - restarted, 3),
                "all_streams_complete_after_stop_s": round(recovered, 3),
            },
        )
    finally:
        stop.set()
        reading_done.set()
        over_http.wait(10)
        gevent.killall(greenlets, timeout=5)


# -- gevent: a slow query, an idle listener --------------------------------------------------------


def ticks_while(work: cabc.Callable[[], object]) -> tuple[int, float, object]:
    """Run ``work`` in a greenlet while another counts 10 ms sleeps: (ticks, seconds, result)."""
    ticks = 0

    def tick() -> None:
        nonlocal ticks
        while True:
            gevent.sleep(0.01)
            ticks += 1

    ticker = gevent.spawn(tick)
    began = time.monotonic()
    try:
        result = gevent.spawn(work).get(timeout=10)
    finally:
        elapsed = time.monotonic() - began
        ticker.kill()
    return ticks, elapsed, result


def test_a_slow_query_lets_other_greenlets_run(postgres: PostgresServer, schema: str) -> None:
    """The broker's connection waits through the hub even though psycopg, imported without
    patching, chose its blocking C wait: a 10 ms ticker keeps ticking through ``pg_sleep(1)``
    (a blocked hub gives it one tick at most)."""
    broker = PostgresBroker(postgres.url, schema=schema, timeout=3.0)
    try:
        broker._ensure_schema()  # connected: what is measured is the query
        ticks, elapsed, _ = ticks_while(
            lambda: broker._run("slow", lambda c: c.execute("SELECT pg_sleep(1)"))
        )
    finally:
        broker.close()
    print(f"\npg_sleep(1): {ticks} ticks of 10 ms in {elapsed:.2f} s")
    assert elapsed >= 1.0
    assert ticks >= 0.5 * elapsed / 0.01, f"{ticks} ticks in {elapsed:.2f} s"


def test_an_idle_listener_lets_other_greenlets_run_and_still_hears(
    broker: PostgresBroker, postgres: PostgresServer
) -> None:
    """The listener waits for notifications through the hub: while it idles, a 10 ms ticker
    keeps ticking, and an event published from another process's connection half a second
    later still wakes it."""
    subscription = broker.subscribe("idle")
    assert broker.connected
    published: list[str] = []

    def publish_later() -> None:
        time.sleep(0.5)
        with Publisher(postgres.url, schema=broker.schema) as publisher:
            published.append(publisher.publish("idle", Event("wake up")))

    thread = threading.Thread(target=publish_later)
    thread.start()
    try:
        ticks, elapsed, item = ticks_while(lambda: subscription.get(5))
    finally:
        thread.join(10)
    assert isinstance(item, bytes)
    assert parse_events(item)[0].id == published[0]
    print(f"\nidle listener: {ticks} ticks of 10 ms in {elapsed:.2f} s")
    assert elapsed >= 0.5
    assert ticks >= 0.5 * elapsed / 0.01, f"{ticks} ticks in {elapsed:.2f} s"


# -- a database that is down ----------------------------------------------------------------------


@contextlib.contextmanager
def database_down(kind: str) -> cabc.Iterator[str]:
    """A URL whose server refuses connections (nothing listens), or accepts them and never
    answers (a hung host: the kernel completes the handshake, nobody reads)."""
    if kind == "refused":
        yield f"postgresql://ssecors:pw@127.0.0.1:{free_port()}/ssecors"
        return
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        yield f"postgresql://ssecors:pw@127.0.0.1:{silent.getsockname()[1]}/ssecors"


def timed(call: cabc.Callable[[], object]) -> float:
    began = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        call()
    return time.monotonic() - began


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_publishing_to_a_database_that_is_down_fails_within_the_timeout(kind: str) -> None:
    """The broker (timeout 0.5 s) and :class:`~flask_ssecors.Publisher` (timeout 2 s: libpq
    waits at least 2 s to connect) raise BrokerUnavailable within their timeout + 1 s, the
    broker for publish and subscribe alike."""
    with database_down(kind) as url:
        broker = PostgresBroker(url, schema="down", timeout=0.5)
        try:
            took = [timed(lambda: broker.publish("c", Event("x"))) for _ in range(2)]
            took.append(timed(lambda: broker.subscribe("c")))
        finally:
            broker.close()
        with Publisher(url, schema="down", timeout=2.0) as publisher:
            by_publisher = timed(lambda: publisher.publish("c", Event("x")))
    print(f"\n{kind}: broker {[round(s, 3) for s in took]} s, Publisher {by_publisher:.3f} s")
    assert max(took) < 0.5 + 1.0, took
    assert by_publisher < 2.0 + 1.0, by_publisher


def test_a_publish_cut_off_by_the_timeout_is_not_committed_later(
    postgres: PostgresServer, schema: str
) -> None:
    """Regression: the broker's connections had no ``statement_timeout``, so a publish that
    waited on a lock past the broker timeout raised BrokerUnavailable, and was committed and
    delivered anyway once the lock went, however much later (a caller that retried it had
    it twice)."""
    broker = PostgresBroker(postgres.url, schema=schema, timeout=0.5)
    try:
        subscription = broker.subscribe("c")
        first = broker.publish("c", Event("before"))
        assert next_event(subscription).id == first
        with psycopg.connect(postgres.url) as locker:
            locker.execute(f"LOCK TABLE {schema}.channels IN ACCESS EXCLUSIVE MODE")
            took = timed(lambda: broker.publish("c", Event("cut off")))
            gevent.sleep(0.5)
        assert subscription.get(1.0) is None
        assert broker.head("c") == first
        after = broker.publish("c", Event("after"))
        assert number(after) == number(first) + 1
        assert next_event(subscription).id == after
    finally:
        broker.close()
    assert took < 0.5 + 1.0, took
