""":class:`flask_ssecors.Publisher` with a ``postgresql://`` URL, against a real server: what it
writes the app's broker delivers; ``transaction=``; threads; a fork; a restart; the timeout;
a role that may not create the schema."""

from __future__ import annotations

import collections.abc as cabc
import os
import secrets
import threading
import time

import psycopg
import pytest

from flask_ssecors import Event
from flask_ssecors import Publisher
from flask_ssecors._parser import parse_events
from flask_ssecors.exceptions import BrokerError
from flask_ssecors.exceptions import BrokerUnavailable
from tests.support.postgres import PASSWORD
from tests.support.postgres import PostgresServer

pytestmark = [pytest.mark.live, pytest.mark.postgres, pytest.mark.timeout(120)]


@pytest.fixture
def schema() -> str:
    return f"p{secrets.token_hex(4)}"


@pytest.fixture
def publisher(postgres: PostgresServer, schema: str) -> cabc.Iterator[Publisher]:
    with Publisher(postgres.url, schema=schema, timeout=2.0) as made:
        yield made


def rows(url: str, schema: str, channel: str) -> list[tuple[int, bytes]]:
    with psycopg.connect(url) as connection:
        return [
            (n, bytes(data))
            for n, data in connection.execute(
                f"SELECT e.n, e.data FROM {schema}.events e "
                f"JOIN {schema}.channels c ON c.id = e.channel_id WHERE c.name = %s ORDER BY e.n",
                (channel,),
            )
        ]


def test_the_first_publish_creates_the_schema_and_events_are_numbered(
    postgres: PostgresServer, schema: str, publisher: Publisher
) -> None:
    first = publisher.publish("job:1", Event({"step": 1}, event="progress"))
    second = publisher.publish("job:1", Event({"step": 2}, event="progress"))
    generation = first.rpartition(".")[0]
    assert (first, second) == (f"{generation}.1", f"{generation}.2")
    assert rows(postgres.url, schema, "job:1") == [
        (1, b'event: progress\ndata: {"step":1}\n\n'),
        (2, b'event: progress\ndata: {"step":2}\n\n'),
    ]


def test_the_app_broker_delivers_what_the_publisher_writes(
    postgres: PostgresServer, schema: str, publisher: Publisher
) -> None:
    from flask_ssecors.brokers._postgres import PostgresBroker

    broker = PostgresBroker(postgres.url, schema=schema, timeout=2.0)
    try:
        subscription = broker.subscribe("user:42")
        event_id = publisher.publish("user:42", Event({"done": True}, event="job"))
        item = subscription.get(5)
        assert item is not None
        (event,) = parse_events(item)
        assert (event.id, event.event, event.data) == (event_id, "job", '{"done":true}')
        subscription.close()
    finally:
        broker.close()


def test_an_event_published_in_a_transaction_exists_if_and_only_if_it_commits(
    postgres: PostgresServer, schema: str, publisher: Publisher
) -> None:
    publisher.publish("orders", Event("before"))
    with psycopg.connect(postgres.url) as connection:
        rolled_back = publisher.publish("orders", Event("rolled back"), transaction=connection)
        connection.rollback()
    with psycopg.connect(postgres.url) as connection:
        committed = publisher.publish("orders", Event("committed"), transaction=connection)
        connection.commit()
    assert rolled_back == committed  # the rolled-back number was given back
    assert [data for _, data in rows(postgres.url, schema, "orders")] == [
        b"data: before\n\n",
        b"data: committed\n\n",
    ]


def test_the_schema_is_made_before_a_first_publish_in_a_transaction(
    postgres: PostgresServer, schema: str, publisher: Publisher
) -> None:
    """On the publisher's own connection, not in the caller's transaction (which could not
    commit the schema without committing the caller's work)."""
    with psycopg.connect(postgres.url) as connection:
        publisher.publish("c", Event("x"), transaction=connection)
        connection.rollback()
    with psycopg.connect(postgres.url) as connection:
        found = connection.execute(
            "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)
        ).fetchone()
    assert found == (1,)


def test_threads_share_one_publisher(
    postgres: PostgresServer, schema: str, publisher: Publisher
) -> None:
    ids: list[str] = []
    lock = threading.Lock()

    def publish() -> None:
        for n in range(25):
            event_id = publisher.publish("busy", Event(n))
            with lock:
                ids.append(event_id)

    threads = [threading.Thread(target=publish) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(int(i.rpartition(".")[2]) for i in ids) == list(range(1, 201))


def test_a_forked_child_publishes_on_a_connection_of_its_own(
    postgres: PostgresServer, schema: str, publisher: Publisher
) -> None:
    """A prefork worker (Celery) inherits the parent's publisher: the child opens its own
    connection, and the parent's session survives the child's exit."""
    publisher.publish("c", Event("parent"))
    backend = publisher._sender._connection.info.backend_pid  # type: ignore[attr-defined]
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            publisher.publish("c", Event("child"))
            os.write(write, str(publisher._sender._connection.info.backend_pid).encode())  # type: ignore[attr-defined]
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(child, 0)
    child_backend = int(os.read(read, 100) or b"0")
    os.close(read)
    assert status == 0 and child_backend not in (0, backend)
    publisher.publish("c", Event("parent again"))
    assert publisher._sender._connection.info.backend_pid == backend  # type: ignore[attr-defined]
    assert [data for _, data in rows(postgres.url, schema, "c")] == [
        b"data: parent\n\n",
        b"data: child\n\n",
        b"data: parent again\n\n",
    ]


def test_a_restarted_server_costs_no_publish() -> None:
    """The kept connection is found lost at the next publish and replaced, once."""
    server = PostgresServer().start()
    try:
        with Publisher(server.url, timeout=2.0) as publisher:
            publisher.publish("c", Event("before"))
            server.kill()
            server.restart()
            assert publisher.publish("c", Event("after")).endswith(".2")
            server.stop_server()
            started = time.monotonic()
            with pytest.raises(BrokerUnavailable, match="publish: "):
                publisher.publish("c", Event("down"))
            assert time.monotonic() - started < 5
    finally:
        server.stop()


def test_a_publish_waiting_longer_than_the_timeout_raises(
    postgres: PostgresServer, schema: str
) -> None:
    """A transaction holding the channel (a publish in it, not yet committed) makes other
    publishes on that channel wait: the statement timeout bounds the wait."""
    with Publisher(postgres.url, schema=schema, timeout=0.5) as publisher:
        publisher.publish("held", Event("first"))
        with psycopg.connect(postgres.url) as holder:
            publisher.publish("held", Event("holding"), transaction=holder)
            started = time.monotonic()
            with pytest.raises(BrokerUnavailable, match=r"no answer from PostgreSQL within 0\.5 s"):
                publisher.publish("held", Event("waits"))
            assert time.monotonic() - started < 2
            holder.rollback()
        assert publisher.publish("held", Event("then")).endswith(".2")


def test_a_role_that_may_not_create_the_schema_is_told_what_to_run(
    postgres: PostgresServer, schema: str
) -> None:
    role = f"r{secrets.token_hex(3)}"
    with psycopg.connect(postgres.url, autocommit=True) as owner:
        owner.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'role-pw-2'")
    url = postgres.url.replace(f"ssecors:{PASSWORD}@", f"{role}:role-pw-2@")
    with Publisher(url, schema=schema) as publisher:
        with pytest.raises(BrokerError, match="flask ssecors broker-sql") as info:
            publisher.publish("c", Event("x"))
        assert "role-pw-2" not in str(info.value)


def test_the_extension_publishes_in_the_app_transaction(
    postgres: PostgresServer, schema: str
) -> None:
    """``SSECORS_BROKER_SCHEMA`` reaches the app's broker, and ``sse.publish(...,
    transaction=)`` reaches its publish: kept if and only if the transaction commits."""
    from flask import Flask

    from flask_ssecors import SSECors
    from flask_ssecors.brokers import PostgresBroker

    app = Flask(__name__)
    app.config.update(
        SSECORS_ALLOWED_ORIGINS=["https://app.example.com"],
        SSECORS_BROKER_URL=postgres.url,
        SSECORS_BROKER_SCHEMA=schema,
    )
    sse = SSECors(app)
    try:
        assert isinstance(sse.broker, PostgresBroker) and sse.broker.schema == schema
        with app.app_context():
            sse.publish("orders", Event("first"))
            with psycopg.connect(postgres.url) as connection:
                sse.publish("orders", Event("rolled back"), transaction=connection)
                connection.rollback()
            with psycopg.connect(postgres.url) as connection:
                event_id = sse.publish("orders", Event("committed"), transaction=connection)
                connection.commit()
        assert event_id.endswith(".2")
        assert [data for _, data in rows(postgres.url, schema, "orders")] == [
            b"data: first\n\n",
            b"data: committed\n\n",
        ]
    finally:
        sse.broker.close()
