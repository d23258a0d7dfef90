"""Creating the PostgreSQL broker's schema (``ensure_schema``) against a real server: once when
workers start together, never for a schema that exists, on a plain psycopg connection and on
the broker's gevent one."""

from __future__ import annotations

import secrets
import threading

import psycopg
import pytest

from flask_ssecors.brokers._postgres_schema import ensure_schema
from flask_ssecors.brokers._postgres_sql import ddl
from flask_ssecors.brokers._postgres_sql import SCHEMA_VERSION
from flask_ssecors.brokers._postgres_sql import Statements
from tests.support.postgres import PASSWORD
from tests.support.postgres import PostgresServer

pytestmark = [pytest.mark.live, pytest.mark.postgres, pytest.mark.timeout(120)]


@pytest.fixture
def schema() -> str:
    return f"s{secrets.token_hex(4)}"


def version_of(url: str, schema: str) -> object:
    with psycopg.connect(url) as connection:
        return connection.execute(Statements(schema).version).fetchall()


def test_workers_starting_together_create_the_schema_once(
    postgres: PostgresServer, schema: str
) -> None:
    """Twelve connections call ensure_schema at the same moment: none fails (concurrent
    CREATE ... IF NOT EXISTS alone would: unique violations in the catalogs), and the schema
    holds one meta row."""
    count = 12
    connections = [psycopg.connect(postgres.url, autocommit=True) for _ in range(count)]
    start = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(connection: psycopg.Connection[object]) -> None:
        try:
            start.wait(10)
            ensure_schema(connection, schema)
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(c,)) for c in connections]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for connection in connections:
        connection.close()
    assert errors == []
    assert version_of(postgres.url, schema) == [(SCHEMA_VERSION,)]
    with psycopg.connect(postgres.url) as connection:
        assert connection.execute(f"SELECT count(*) FROM {schema}.meta").fetchone() == (1,)


def test_a_schema_that_exists_is_left_alone(postgres: PostgresServer, schema: str) -> None:
    """A role that may not create anything starts fine once a migration made the schema
    (``flask ssecors broker-sql`` run by the owner)."""
    role = f"r{secrets.token_hex(3)}"
    with psycopg.connect(postgres.url, autocommit=True) as owner:
        owner.execute(ddl(schema))
        owner.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'role-pw'")
        owner.execute(f"REVOKE CREATE ON DATABASE ssecors FROM PUBLIC, {role}")
    as_role = postgres.url.replace(f"ssecors:{PASSWORD}@", f"{role}:role-pw@")
    with psycopg.connect(as_role, autocommit=True) as connection:
        ensure_schema(connection, schema)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            ensure_schema(connection, f"{schema}_other")


def test_a_connection_in_a_transaction_is_refused(postgres: PostgresServer, schema: str) -> None:
    """The schema is made in a transaction of its own, never inside the caller's."""
    with psycopg.connect(postgres.url) as connection:
        connection.execute("SELECT 1")
        with pytest.raises(ValueError, match="not inside a transaction"):
            ensure_schema(connection, schema)
        connection.rollback()
        ensure_schema(connection, schema)  # idle, not in autocommit: fine too
    assert version_of(postgres.url, schema) == [(SCHEMA_VERSION,)]


def test_the_broker_gevent_connection_creates_it_too(postgres: PostgresServer, schema: str) -> None:
    from flask_ssecors.brokers._postgres_conn import connect

    connection = connect(postgres.url, timeout=5.0, name="ssecors-test")
    try:
        ensure_schema(connection, schema)
        ensure_schema(connection, schema)
    finally:
        connection.close()
    assert version_of(postgres.url, schema) == [(SCHEMA_VERSION,)]
