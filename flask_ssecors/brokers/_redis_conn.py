"""Connections to Redis that cooperate with gevent, with or without monkey-patching.

For ``redis://`` and ``unix://`` the sockets are gevent's own. ``rediss://`` uses redis-py's TLS
connection, which cooperates once gevent has patched ``socket`` and ``ssl`` (``gunicorn -k
gevent`` does).
"""

from __future__ import annotations

import typing as t

import gevent.socket

try:
    import redis as redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as error:  # pragma: no cover - exercised by the missing-extra test
    raise ImportError(
        "SSECORS_BROKER_URL names Redis but the 'redis' package is not installed; "
        "install flask-ssecors[redis]."
    ) from error


class GeventConnection(redis.Connection):
    """A redis-py TCP connection on a gevent socket (cooperative without monkey-patching)."""

    def _connect(self) -> t.Any:
        sock = gevent.socket.create_connection(
            (self.host, self.port), timeout=self.socket_connect_timeout
        )
        sock.setsockopt(gevent.socket.IPPROTO_TCP, gevent.socket.TCP_NODELAY, 1)
        sock.settimeout(self.socket_timeout)
        return sock


class GeventUnixConnection(redis.UnixDomainSocketConnection):
    """A redis-py Unix-socket connection on a gevent socket."""

    def _connect(self) -> t.Any:
        sock = gevent.socket.socket(gevent.socket.AF_UNIX, gevent.socket.SOCK_STREAM)
        sock.settimeout(self.socket_connect_timeout)
        sock.connect(self.path)
        sock.settimeout(self.socket_timeout)
        return sock


def client_for(url: str, *, timeout: float, max_connections: int, name: str) -> redis.Redis[bytes]:
    """A client for ``url`` with its own bounded pool of connections named ``name``.

    :param url: ``redis://``, ``rediss://`` or ``unix://``.
    :param timeout: socket connect and read timeout, in seconds.
    :param max_connections: the pool's bound.
    :param name: the name the connections give themselves (``CLIENT SETNAME``).
    """
    scheme = url.partition("://")[0].lower()
    kwargs: dict[str, t.Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "max_connections": max_connections,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
        "client_name": name,
    }
    if scheme == "redis":
        kwargs["connection_class"] = GeventConnection
    elif scheme == "unix":
        kwargs["connection_class"] = GeventUnixConnection
    pool = redis.ConnectionPool.from_url(url, **kwargs)
    return redis.Redis(connection_pool=pool)
