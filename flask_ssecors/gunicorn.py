"""gunicorn integration: no client address can take a gevent worker's connections.

gunicorn's gevent worker serves at most ``worker_connections`` connections at once; once they
are taken, new connections wait in the listen queue. Streams are capped per client by
:data:`SSECORS_MAX_STREAMS_PER_CLIENT`, but a connection that never sends a request (or is
idle between requests) holds its place for up to ``keepalive`` seconds before the app sees
anything, so one address opening idle sockets can still make everyone else wait.
:func:`limit_connections_per_client` closes that gap where it opens, in the worker's accept
path: a client address (IPv6 grouped by prefix, like the stream limit) holds at most ``limit``
connections; further ones are closed at once, before they take a greenlet::

    # gunicorn.conf.py
    from flask_ssecors.gunicorn import limit_connections_per_client

    worker_class = "gevent"
    worker_connections = 10000
    keepalive = 30
    post_worker_init = limit_connections_per_client(128)

Connections from gunicorn's ``forwarded_allow_ips`` (the proxies in front, ``127.0.0.1`` and
``::1`` by default) are not limited: behind a proxy every connection comes from it, so limit
clients at the proxy instead (nginx's ``limit_conn``; see docs/deployment.rst).

:func:`end_streams_on_stop` is the other hook: for apps loaded before the workers exist
(``preload_app = True``), it chains the handler that ends open streams when a worker stops,
which flask-ssecors otherwise installs itself when the app is set up in the worker.

.. versionadded:: 0.1
"""

from __future__ import annotations

import collections.abc as cabc
import contextlib
import ipaddress
import time
import typing as t

from ._clients import client_key
from ._lifecycle import watch_server
from .exceptions import UsageError

__all__ = ["end_streams_on_stop", "limit_connections_per_client"]

#: Seconds between two log lines about refused connections.
_LOG_INTERVAL: t.Final = 10.0

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def limit_connections_per_client(
    limit: int = 128,
    *,
    ipv6_prefix: int = 64,
    exempt: cabc.Iterable[str] | None = None,
) -> cabc.Callable[[t.Any], None]:
    """A gunicorn ``post_worker_init`` hook that bounds the connections of one client address.

    Use it as ``post_worker_init = limit_connections_per_client(128)`` in the gunicorn
    configuration file, or call the returned function from your own ``post_worker_init``.
    It applies to the gevent worker (``worker_class = "gevent"``); under another worker it
    logs a warning and does nothing.

    Keep ``limit`` above :data:`SSECORS_MAX_STREAMS_PER_CLIENT` (64 by default) plus the
    ordinary requests a client's pages make at once, and ``worker_connections`` well above
    ``limit``: then one address holding its streams and as many idle sockets as it may still
    leaves the worker free for everyone else.

    :param limit: the most connections one client address holds in one worker.
    :param ipv6_prefix: the prefix length that groups IPv6 addresses (as
        :data:`SSECORS_CLIENT_IPV6_PREFIX`).
    :param exempt: addresses or networks never limited; by default gunicorn's
        ``forwarded_allow_ips`` (a ``*`` there exempts nothing).
    :raises UsageError: for a limit below 1 or an exempt entry that is not an address.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise UsageError(f"limit must be a whole number of at least 1, not {limit!r}")
    given = None if exempt is None else _networks(exempt)

    def post_worker_init(worker: t.Any) -> None:
        if getattr(worker, "server_class", True) is not None or not hasattr(worker, "handle"):
            worker.log.warning(
                "flask-ssecors: limit_connections_per_client works with gunicorn's gevent "
                "worker (worker_class = 'gevent'), not %s: connections are not limited",
                type(worker).__name__,
            )
            return
        trusted = given if given is not None else _networks(worker.cfg.forwarded_allow_ips)
        limiter = _Limiter(worker.handle, limit, ipv6_prefix, trusted, worker.log)
        worker.handle = limiter.handle
        worker.log.info(
            "flask-ssecors: at most %d connections per client address in this worker (%s "
            "not limited)",
            limit,
            ", ".join(str(n) for n in trusted) or "no address",
        )

    return post_worker_init


def end_streams_on_stop(worker: t.Any) -> None:
    """A gunicorn ``post_worker_init`` hook: end every open stream at once (with a ``retry:``
    hint) when the worker is told to stop, so that clients reconnect to another worker.

    flask-ssecors does this by itself when the app is set up inside a gunicorn gevent worker,
    which is gunicorn's default; an app loaded in the arbiter before the workers exist
    (``preload_app = True``) needs this hook (``post_worker_init = end_streams_on_stop``). It
    chains flask-ssecors' handler before the worker's ``SIGTERM``, ``SIGINT`` and ``SIGQUIT``
    handlers, once per process, and logs that it did. See docs/deployment.rst.

    :param worker: the gunicorn worker, as gunicorn passes it to the hook.
    """
    if not watch_server(worker):
        worker.log.warning(
            "flask-ssecors: could not chain the stop signals of %s; streams end when gunicorn "
            "closes their connections",
            type(worker).__name__,
        )


def _networks(entries: cabc.Iterable[str]) -> tuple[_Network, ...]:
    networks = []
    for entry in entries:
        entry = str(entry).strip()
        if not entry or entry == "*":
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise UsageError(f"{entry!r} is not an IP address or network") from None
    return tuple(networks)


class _Limiter:
    """Counts the open connections per client key; wraps the worker's ``handle``."""

    def __init__(
        self,
        handle: cabc.Callable[[t.Any, t.Any, t.Any], None],
        limit: int,
        ipv6_prefix: int,
        trusted: tuple[_Network, ...],
        log: t.Any,
    ) -> None:
        self._handle = handle
        self.limit = limit
        self.ipv6_prefix = ipv6_prefix
        self.trusted = trusted
        self.log = log
        #: Open connections per client key, while any is open.
        self.open: dict[str, int] = {}
        self.refused = 0
        self._logged_at = -_LOG_INTERVAL
        self._refused_since_log = 0

    def key(self, addr: t.Any) -> str | None:
        """The client key of a peer address, or None when it is not limited."""
        if not isinstance(addr, tuple) or not addr or not isinstance(addr[0], str):
            return None  # a Unix socket
        host = addr[0]
        try:
            ip = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            return None
        if any(ip in network for network in self.trusted):
            return None
        return client_key(host, self.ipv6_prefix)

    def handle(self, listener: t.Any, client: t.Any, addr: t.Any) -> None:
        key = self.key(addr)
        if key is None:
            self._handle(listener, client, addr)
            return
        held = self.open.get(key, 0)
        if held >= self.limit:
            self._refuse(client, key)
            return
        self.open[key] = held + 1
        try:
            self._handle(listener, client, addr)
        finally:
            left = self.open.get(key, 1) - 1
            if left > 0:
                self.open[key] = left
            else:
                self.open.pop(key, None)

    def _refuse(self, client: t.Any, key: str) -> None:
        self.refused += 1
        self._refused_since_log += 1
        with contextlib.suppress(OSError):
            client.close()
        now = time.monotonic()
        if now - self._logged_at >= _LOG_INTERVAL:
            self.log.warning(
                "flask-ssecors: closed %d connections over the limit of %d per client address "
                "since the last report (the last one from %s)",
                self._refused_since_log,
                self.limit,
                key,
            )
            self._logged_at = now
            self._refused_since_log = 0
