""":class:`~flask_ssecors.Publisher`'s way to PostgreSQL: one plain, blocking psycopg
connection, shared by threads under a lock. It needs neither Flask nor gevent.

Every publish is the broker's own (:class:`._postgres_publish.PostgresPublishing`: the same
checks, encoding and ``<schema>.publish`` call), so the app's streams deliver what it writes.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import typing as t

import psycopg
import psycopg.conninfo
import psycopg.errors

from ..exceptions import BrokerError
from ..exceptions import BrokerUnavailable
from ._postgres_schema import ensure_schema

if t.TYPE_CHECKING:
    from ..events import Event
    from ._postgres_publish import PostgresPublishing

#: What a dead or unreachable server raises.
_UNAVAILABLE: t.Final = (psycopg.OperationalError, psycopg.InterfaceError, OSError)
#: What a statement raises when the schema it needs is not there (dropped since it was made).
_NO_SCHEMA: t.Final = (psycopg.errors.UndefinedFunction, psycopg.errors.InvalidSchemaName)

T = t.TypeVar("T")


class PostgresSender:
    """Publishes on one connection of its own, opened at the first publish.

    :param url: the libpq URL.
    :param publishing: the checks and statements shared with the broker.
    :param timeout: bound in seconds on connecting (``connect_timeout``, at least 2, libpq's
        minimum) and on each statement (``statement_timeout``), unless the URL sets them.
    """

    def __init__(self, url: str, *, publishing: PostgresPublishing, timeout: float) -> None:
        self.url = url
        self.publishing = publishing
        self.timeout = timeout
        given = psycopg.conninfo.conninfo_to_dict(url)
        self._secret = str(given.get("password") or "")
        self._set_timeout = "statement_timeout" not in str(given.get("options", ""))
        defaults: dict[str, t.Any] = {
            "application_name": f"ssecors-publisher-{os.getpid()}",
            "connect_timeout": max(2, math.ceil(timeout)),
            # A peer that stops acknowledging what is sent (a host gone) fails the publish
            # instead of blocking it for the kernel's retransmission time (minutes).
            "tcp_user_timeout": max(1, math.ceil(timeout * 1000)),
        }
        self._options = {k: v for k, v in defaults.items() if k not in given}
        self._options.update(autocommit=True, prepare_threshold=None)
        self._lock = threading.Lock()
        self._connection: psycopg.Connection[t.Any] | None = None
        self._schema_ready = False
        self._pid = os.getpid()

    def publish(self, channel: str, event: Event, transaction: object = None) -> str:
        """Publish ``event`` on ``channel`` on this sender's connection, or in ``transaction``
        (see :meth:`._postgres_publish.PostgresPublishing.in_transaction`); return the id."""
        params = self.publishing.params(channel, event)
        if transaction is not None:
            # The schema is made on a connection of ours: never inside the caller's transaction.
            self._run("create the schema", lambda connection: None)
            return self.publishing.in_transaction(transaction, params)
        statement = self.publishing.statements.publish

        def call(connection: psycopg.Connection[t.Any]) -> str:
            row = connection.execute(statement, dict(params)).fetchone()
            assert row is not None
            return str(row[0])

        return self._run("publish", call)

    def _run(self, what: str, call: t.Callable[[psycopg.Connection[t.Any]], T]) -> T:
        """``call(connection)`` under the lock, once the schema is there.

        A connection kept from an earlier publish that turns out to be lost (the server
        restarted, a proxy dropped it while idle) is replaced, and ``call`` runs once more on a
        new one. That new attempt publishes twice only if the server committed the first and
        the connection broke before its answer came back.
        """
        self._after_fork()
        with self._lock:
            for attempt in (1, 2):
                kept = self._connection is not None
                try:
                    connection = self._connect()
                    if not self._schema_ready:
                        self._ensure_schema(connection)
                    return call(connection)
                except psycopg.errors.QueryCanceled as error:  # statement_timeout
                    raise BrokerUnavailable(
                        f"{what}: no answer from PostgreSQL within {self.timeout:g} s "
                        f"({self._reason(error)})"
                    ) from None
                except _NO_SCHEMA:
                    self._schema_ready = False  # made again at the next publish
                    raise
                except _UNAVAILABLE as error:
                    self._drop()
                    if kept and attempt == 1:
                        continue
                    raise BrokerUnavailable(f"{what}: {self._reason(error)}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _connect(self) -> psycopg.Connection[t.Any]:
        connection = self._connection
        if connection is None or connection.closed:
            connection = psycopg.connect(self.url, **self._options)
            try:
                if self._set_timeout:
                    connection.execute(
                        "SELECT set_config('statement_timeout', %s, false)",
                        (f"{max(1, math.ceil(self.timeout * 1000))}ms",),
                    )
            except BaseException:
                _close(connection)
                raise
            self._connection = connection
        return connection

    def _ensure_schema(self, connection: psycopg.Connection[t.Any]) -> None:
        schema = self.publishing.statements.schema
        try:
            ensure_schema(connection, schema)
        except psycopg.errors.InsufficientPrivilege as error:
            raise BrokerError(
                f"the schema {schema!r} is missing and this role cannot create it "
                f"({self._reason(error)}): create it with the statements that "
                "`flask ssecors broker-sql` prints, as a role that may, or grant this one "
                "CREATE on the database."
            ) from None
        self._schema_ready = True

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            _close(connection)

    def _after_fork(self) -> None:
        """In a child process, let go of the parent's connection without ending its session
        (libpq says goodbye on the socket when a connection is closed or collected; the
        child's copy of the socket is pointed at ``/dev/null`` first), and take a new lock
        (another thread may have held the parent's when it forked)."""
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._lock = threading.Lock()
        connection, self._connection = self._connection, None
        if connection is not None and not connection.closed:
            with contextlib.suppress(Exception):
                devnull = os.open(os.devnull, os.O_RDWR)
                try:
                    os.dup2(devnull, connection.pgconn.socket)
                finally:
                    os.close(devnull)
            _close(connection)

    def close(self) -> None:
        """Close the connection (a later publish opens another)."""
        with self._lock:
            self._drop()

    def _reason(self, error: BaseException) -> str:
        """The driver's message on one line, masked: libpq's never quote the password, and
        this makes sure."""
        text = " ".join(str(error).split())[:300] or type(error).__name__
        return text.replace(self._secret, "***") if self._secret else text


def _close(connection: psycopg.Connection[t.Any]) -> None:
    with contextlib.suppress(Exception):
        connection.close()
