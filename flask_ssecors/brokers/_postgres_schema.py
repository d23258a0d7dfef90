"""Creating the PostgreSQL broker's schema when it is missing: :func:`ensure_schema`.

The broker (at start) and :class:`~flask_ssecors.Publisher` (before its first publish) call it
on a connection of their own. Teams that create database objects through their own migrations
run ``flask ssecors broker-sql`` instead, and give the app's role no right to create: the
schema is then found and nothing is created.
"""

from __future__ import annotations

import typing as t

from ._postgres_sql import ddl
from ._postgres_sql import LOCK_KEY
from ._postgres_sql import Statements

if t.TYPE_CHECKING:
    import psycopg


def ensure_schema(connection: psycopg.Connection[t.Any], schema: str) -> None:
    """Create ``schema`` with the broker's tables and functions unless it exists.

    Safe when several processes call it at once (workers starting together): the creation
    runs in one transaction under a transaction-level advisory lock
    (:data:`~._postgres_sql.LOCK_KEY`), and the schema is looked for again once the lock is
    held, so one process creates it and the others find it. The statements are
    :func:`~._postgres_sql.ddl`'s, which are idempotent anyway. A schema that exists is left as
    it is, whatever its version (``flask ssecors check-broker`` reports the version).

    :param connection: a psycopg connection, blocking or gevent-cooperative, in autocommit
        mode or idle (not inside a transaction): the creation commits on its own.
    :param schema: the schema's name (``SSECORS_BROKER_SCHEMA``).
    :raises ValueError: when ``connection`` is inside a transaction (creating there would
        commit or roll back with the caller's work), or for a name that cannot be a schema.
    :raises psycopg.Error: what the server answered (no right to create, say).
    """
    import psycopg

    statements = Statements(schema)
    if connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise ValueError(
            "ensure_schema() needs a connection that is not inside a transaction: the schema "
            "is created in a transaction of its own"
        )
    if _exists(connection, statements):
        return
    with connection.transaction():
        connection.execute(f"SELECT pg_advisory_xact_lock({LOCK_KEY})")
        if not _exists(connection, statements):
            connection.execute(ddl(schema))


def _exists(connection: psycopg.Connection[t.Any], statements: Statements) -> bool:
    row = connection.execute(statements.exists, {"schema": statements.schema}).fetchone()
    return row is not None
