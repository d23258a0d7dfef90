"""Connections to PostgreSQL that cooperate with gevent, with or without monkey-patching.

psycopg 3 picks its wait function when it is imported: a blocking C one unless gevent has
patched ``select`` by then (``gunicorn -k gevent`` patches before the app is imported; a test
process or a script that imports psycopg first does not). The broker does not depend on that
order: its connections (:class:`GeventConnection`) wait for their socket through gevent's hub
whatever psycopg chose, and connecting (libpq resolves and connects in one call) runs in
gevent's thread pool. So a slow query never blocks other greenlets
(``tests/live/test_postgres_live.py``).

:class:`Pool` bounds the connections a process opens for publishing and reading; a connection
cut off mid-query (the broker timeout) is closed, never reused, and its statement is cancelled
by the server (``statement_timeout``), so that what raised BrokerUnavailable is not committed
later.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import time
import typing as t

import gevent
import gevent.lock
import gevent.monkey

from ..exceptions import BrokerUnavailable

try:
    import psycopg
    import psycopg.conninfo
    import psycopg.errors
except ImportError as error:  # pragma: no cover - exercised by the missing-extra test
    raise ImportError(
        "SSECORS_BROKER_URL names PostgreSQL but the 'psycopg' package is not installed; "
        "install flask-ssecors[postgres]."
    ) from error

#: What a dead or unreachable server raises.
UNAVAILABLE: t.Final = (psycopg.OperationalError, psycopg.InterfaceError, OSError)

_READ: t.Final = 1
_WRITE: t.Final = 2


def gevent_wait(gen: t.Generator[t.Any, t.Any, t.Any], fileno: int, timeout: float | None) -> t.Any:
    """Run one of psycopg's generators, waiting for the socket through gevent's hub.

    The socket is polled first (the OS's ``poll``, no wait): a write, or an answer already
    in, costs no watcher; otherwise this greenlet waits on one libev watcher until the socket
    is ready, then polls again for what it is ready for.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    hub = gevent.get_hub()
    try:
        state = next(gen)
        while True:
            ready = _ready(fileno, state)
            if not ready:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise _WaitTimeout("wait timeout expired")
                watcher = hub.loop.io(fileno, state)
                try:
                    if remaining is None:
                        hub.wait(watcher)
                    else:
                        with gevent.Timeout(remaining, False):
                            hub.wait(watcher)
                finally:
                    watcher.close()
                ready = _ready(fileno, state)
            state = gen.send(ready)
    except StopIteration as stop:
        return stop.value


def _ready(fileno: int, state: int) -> int:
    """What of ``state`` (read, write) the socket is ready for now; an error or a hang-up
    counts as ready, for psycopg to find out what it is."""
    poller = _poll()
    poller.register(
        fileno, (select.POLLIN if state & _READ else 0) | (select.POLLOUT if state & _WRITE else 0)
    )
    events = 0
    for _, flags in poller.poll(0):
        events |= flags
    if events & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
        return state
    return (_READ if events & select.POLLIN else 0) | (_WRITE if events & select.POLLOUT else 0)


_WaitTimeout: t.Final[type[Exception]] = getattr(
    psycopg.errors, "_WaitTimeout", psycopg.OperationalError
)


class GeventConnection(psycopg.Connection[t.Any]):
    """A psycopg connection whose waits yield to other greenlets."""

    def wait(self, gen: t.Any, interval: float = 0.1, timeout: float | None = None) -> t.Any:
        """See :meth:`psycopg.Connection.wait`: the same, through gevent's hub."""
        return gevent_wait(gen, self.pgconn.socket, timeout)


def connect(
    conninfo: str, *, timeout: float, name: str, autocommit: bool = True
) -> GeventConnection:
    """Open a connection in gevent's thread pool (libpq connects in one blocking call).

    :raises BrokerUnavailable: when the server cannot be reached or refuses; the message
        quotes libpq's reason, which never holds the password.
    """
    options: dict[str, t.Any] = {
        "autocommit": autocommit,
        "application_name": name,
        "prepare_threshold": 2,
    }
    if "connect_timeout" not in conninfo:
        options["connect_timeout"] = max(1, round(timeout + 0.49))
    pending = gevent.get_hub().threadpool.spawn(_connect, conninfo, options)
    try:
        connection = pending.get()
        if isinstance(connection, BaseException):
            raise connection
    except UNAVAILABLE as error:
        raise BrokerUnavailable(f"cannot connect to PostgreSQL: {_reason(error)}") from None
    except BaseException:
        # Cut off (a timeout, a kill): the thread may still connect; close what it makes.
        pending.rawlink(_dispose)
        raise
    return t.cast(GeventConnection, connection)


def _connect(conninfo: str, options: dict[str, t.Any]) -> GeventConnection | Exception:
    """Connect (in a thread of the pool); a failure is returned, not raised, so that the
    pool does not print it as a crash."""
    try:
        return GeventConnection.connect(conninfo, **options)
    except Exception as error:
        return error


def _dispose(result: t.Any) -> None:
    if result.successful() and isinstance(result.value, GeventConnection):
        _close(result.value)


def first(cursor: psycopg.Cursor[t.Any]) -> t.Any:
    """The first column of the one row a statement returns."""
    row = cursor.fetchone()
    if row is None:
        raise psycopg.ProgrammingError("the statement returned no row")
    return row[0]


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text[:300] or type(error).__name__


def unavailable(what: str, error: BaseException) -> BrokerUnavailable:
    """The :class:`BrokerUnavailable` for a failed operation."""
    return BrokerUnavailable(f"{what}: {_reason(error)}")


class Runner(t.Protocol):
    """Runs ``call(connection)`` on a connection, within the broker's bounds."""

    def run(
        self,
        what: str,
        call: t.Callable[[GeventConnection], t.Any],
        *,
        patience: float | None = None,
    ) -> t.Any: ...


class Pool:
    """At most ``size`` connections, each used by one greenlet at a time.

    :param conninfo: the libpq URL.
    :param size: bound on open connections.
    :param timeout: bound on each :meth:`run` (waiting for a connection included), and the
        connections' ``statement_timeout`` unless the URL's ``options`` set one: a statement
        cut off here is cancelled by the server too, so that a publish that raised
        BrokerUnavailable is not committed later (when the lock it waited for goes, say).
    :param name: ``application_name`` (``pg_stat_activity``).
    """

    def __init__(self, conninfo: str, *, size: int, timeout: float, name: str) -> None:
        self.conninfo = conninfo
        self.size = size
        self.timeout = timeout
        self.name = name
        try:
            given = psycopg.conninfo.conninfo_to_dict(conninfo).get("options")
        except psycopg.Error:  # refused by libpq at the first connection, with its reason
            given = None
        self._statement_timeout = (
            None
            if "statement_timeout" in str(given or "")
            else f"{max(1, math.ceil(timeout * 1000))}ms"
        )
        self._slots = gevent.lock.BoundedSemaphore(size)
        self._idle: list[GeventConnection] = []
        self._pid = os.getpid()

    def run(
        self,
        what: str,
        call: t.Callable[[GeventConnection], t.Any],
        *,
        patience: float | None = None,
    ) -> t.Any:
        """``call(connection)`` on a pooled connection, in autocommit, within the timeout.

        :param patience: how long to wait for a free connection, when that may take longer
            than the timeout (a subscriber's snapshot in a reconnect storm, where thousands
            queue); by default the timeout bounds the wait and the call together.
        :raises BrokerUnavailable: when the server does not answer within the timeout, or
            cannot be reached.
        """
        if self._pid != os.getpid():  # forked: the parent's sockets are not ours
            self._idle = []
            self._slots = gevent.lock.BoundedSemaphore(self.size)
            self._pid = os.getpid()
        slots = self._slots
        if patience is not None and not slots.acquire(timeout=patience):
            raise BrokerUnavailable(f"{what}: no PostgreSQL connection free within {patience:g} s")
        timer = gevent.Timeout(self.timeout)
        timer.start()
        try:
            if patience is None:
                slots.acquire()
            try:
                return self._call(what, call)
            finally:
                slots.release()
        except gevent.Timeout as expired:
            if expired is not timer:
                raise
            raise BrokerUnavailable(
                f"{what}: no answer from PostgreSQL within {self.timeout:g} s"
            ) from None
        except UNAVAILABLE as error:
            raise unavailable(what, error) from None
        finally:
            timer.close()

    def _call(self, what: str, call: t.Callable[[GeventConnection], t.Any]) -> t.Any:
        connection = self._take_idle()
        if connection is None:
            connection = self._open()
        try:
            result = call(connection)
        except UNAVAILABLE:
            # Among them QueryCanceled (statement_timeout): closed too, never leaked.
            _close(connection)
            raise
        except psycopg.Error:
            # The statement failed (a bug, a missing schema): the connection is fine, unless
            # a transaction was left open on it.
            if connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                _close(connection)
            else:
                self._idle.append(connection)
            raise
        except BaseException:
            _close(connection)  # cut off mid-query: it may still owe an answer
            raise
        self._idle.append(connection)
        return result

    def _open(self) -> GeventConnection:
        """A new connection, its statements bounded by the timeout on the server too."""
        connection = connect(self.conninfo, timeout=self.timeout, name=self.name)
        if self._statement_timeout is not None:
            try:
                connection.execute(
                    "SELECT set_config('statement_timeout', %s, false)",
                    (self._statement_timeout,),
                )
            except BaseException:
                _close(connection)
                raise
        return connection

    def _take_idle(self) -> GeventConnection | None:
        """An idle connection still open: one whose server went away (a restart, a
        failover, an idle timeout) has its socket readable (end of file, or the server's
        farewell), and is closed instead of failing the next statement."""
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and not _readable(connection.pgconn.socket):
                return connection
            _close(connection)
        return None

    def __del__(self) -> None:
        # A thread's own pool goes with its thread (the development server's requests).
        for connection in self._idle:
            _close(connection)

    def close(self) -> None:
        """Close the idle connections (those in use close when they come back cut off)."""
        idle, self._idle = self._idle, []
        for connection in idle:
            _close(connection)


def _readable(fileno: int) -> bool:
    """Whether a socket has something to read now (the OS's poll: any descriptor number)."""
    poller = _poll()
    poller.register(fileno, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


_poll: t.Final[t.Callable[[], t.Any]] = gevent.monkey.get_original("select", "poll")


def _close(connection: psycopg.Connection[t.Any]) -> None:
    with contextlib.suppress(Exception):
        connection.close()
