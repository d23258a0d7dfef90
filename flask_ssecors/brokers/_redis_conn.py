"""Connections to Redis that cooperate with gevent, with or without monkey-patching.

For ``redis://`` and ``unix://`` the sockets are gevent's own. ``rediss://`` uses redis-py's TLS
connection, which cooperates once gevent has patched ``socket`` and ``ssl`` (``gunicorn -k
gevent`` does).
"""

from __future__ import annotations

import typing as t
import urllib.parse

import gevent.socket

try:
    import redis as redis
    from redis.backoff import NoBackoff
    from redis.cluster import ClusterNode
    from redis.cluster import RedisCluster as RedisCluster
    from redis.retry import Retry
    from redis.sentinel import Sentinel
    from redis.sentinel import SentinelManagedConnection
    from redis.sentinel import SentinelManagedSSLConnection

    from .._urls import Address
    from .._urls import parse_url
    from ..exceptions import BrokerUnavailable
    from ._redis_layout import PUBLISH_SCRIPT
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


class GeventSentinelConnection(GeventConnection, SentinelManagedConnection):
    """A connection to the primary a Sentinel names, on a gevent socket."""


def node_address(address: Address, host: str, port: int) -> Address:
    """One node of the cluster ``address`` names, as an address of its own (same credentials
    and TLS): for a connection that stays on that node."""
    scheme = "rediss" if address.tls else "redis"
    userinfo = ""
    if address.username or address.password:
        user = urllib.parse.quote(address.username or "", safe="")
        secret = urllib.parse.quote(address.password or "", safe="")
        userinfo = f"{user}:{secret}@"
    bracketed = f"[{host}]" if ":" in host else host
    return Address("single", f"{scheme}://{userinfo}{bracketed}:{port}/0", tls=address.tls)


def client_for(
    url: str | Address,
    *,
    timeout: float,
    max_connections: int,
    name: str,
    cooperative: bool = True,
) -> t.Any:
    """A client for the broker URL, with its own bounded pool of connections named ``name``.

    With Sentinel, the client follows the primary the Sentinels name (a failover included);
    with a Cluster, it routes each key to its node and refreshes the topology after a
    failover; ``max_connections`` then bounds the connections to each node.

    :param url: a broker URL, or its :class:`Address`.
    :param timeout: socket connect and read timeout, in seconds.
    :param max_connections: the pool's bound.
    :param name: the name the connections give themselves (``CLIENT SETNAME``).
    :param cooperative: use gevent's sockets (whether or not the process is monkey-patched);
        False for plain sockets (:class:`~flask_ssecors.Publisher`, outside gevent).
    """
    address = url if isinstance(url, Address) else parse_url(url)
    tcp = GeventConnection if cooperative else redis.Connection
    sentinel_tcp = GeventSentinelConnection if cooperative else SentinelManagedConnection
    common: dict[str, t.Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
        "client_name": name,
    }
    if address.kind == "single":
        scheme = address.url.partition("://")[0].lower()
        if scheme == "redis":
            common["connection_class"] = tcp
        elif scheme == "unix" and cooperative:
            common["connection_class"] = GeventUnixConnection
        pool = redis.ConnectionPool.from_url(address.url, max_connections=max_connections, **common)
        return redis.Redis(connection_pool=pool)
    credentials = {"username": address.username, "password": address.password}
    if address.kind == "sentinel":
        sentinel_kwargs: dict[str, t.Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "health_check_interval": 0,
        }
        if address.tls:
            sentinel_kwargs["ssl"] = True
        # The questions to the Sentinels (who is the primary?) go over redis-py's own
        # sockets, which cooperate under gevent's monkey-patching; they are short.
        sentinel = Sentinel(list(address.hosts), sentinel_kwargs=sentinel_kwargs)
        options = {**common, **credentials, "db": address.db, "max_connections": max_connections}
        if address.tls:
            options["connection_class"] = SentinelManagedSSLConnection
        else:
            options["connection_class"] = sentinel_tcp
        return sentinel.master_for(t.cast(str, address.service), **options)
    common.pop("retry")
    options = {**common, **credentials, "max_connections": max_connections}
    if address.tls:
        options["ssl"] = True
    else:
        options["connection_class"] = tcp
    (host, port), *others = address.hosts
    return RedisCluster(
        # Given a URL, redis-py builds each node's pool from these options, the connection
        # class included (it passes them to Redis() otherwise, which refuses a class).
        url=f"{'rediss' if address.tls else 'redis'}://{_host(host)}:{port}/0",
        startup_nodes=[ClusterNode(other, other_port) for other, other_port in others],
        require_full_coverage=False,
        **options,
    )


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def publish_acknowledged(
    client: t.Any, *, keys: list[str], args: list[object], replicas: int, timeout: float
) -> tuple[bytes, bytes]:
    """Run the publish script, then ``WAIT`` on the same connection until ``replicas`` replicas
    have the write (``SSECORS_BROKER_MIN_REPLICAS``), within ``timeout`` seconds.

    :param client: a client of one server, or of a cluster (the channel's node is used).
    :return: the script's answer, ``(generation, stream id)``.
    :raises BrokerUnavailable: when fewer replicas acknowledged in time; the event may still
        have been stored (and may be delivered).
    """
    if isinstance(client, RedisCluster):
        # The slot may have moved (a failover): read the topology again, once, and retry.
        for attempt in (1, 2):
            node = client.get_node_from_key(keys[0])
            if node is None:
                raise BrokerUnavailable("publish: no node of the cluster serves the channel")
            try:
                return publish_acknowledged(
                    client.get_redis_connection(node),
                    keys=keys,
                    args=args,
                    replicas=replicas,
                    timeout=timeout,
                )
            except _TOPOLOGY_ERRORS:
                if attempt == 2:
                    raise
                client.nodes_manager.initialize()
        raise AssertionError("unreachable")  # pragma: no cover
    # WAIT for half the timeout: the other half is the round trip's, so that Redis' answer
    # ("not enough replicas") arrives before the socket gives up, even on a loaded machine.
    wait_ms = max(1, int(timeout * 500))
    # EVAL, not EVALSHA: a script missing on a promoted replica would cost a WAIT more.
    pipe = client.pipeline(transaction=False)
    pipe.eval(PUBLISH_SCRIPT, len(keys), *keys, *args)
    pipe.execute_command("WAIT", replicas, wait_ms)
    try:
        published, acknowledged = pipe.execute(raise_on_error=False)
    except redis.exceptions.TimeoutError:
        raise BrokerUnavailable(
            f"publish: no answer within {timeout:g} s while waiting for {replicas} replicas "
            "(SSECORS_BROKER_MIN_REPLICAS); the event may still have been stored"
        ) from None
    if isinstance(published, Exception):
        raise published
    if not isinstance(published, list | tuple) or len(published) != 2:
        raise BrokerUnavailable(f"publish: unexpected answer {published!r:.80}")
    if not isinstance(acknowledged, int) or acknowledged < replicas:
        raise BrokerUnavailable(
            f"publish: {acknowledged} of the {replicas} replicas required acknowledged within "
            f"{wait_ms} ms (SSECORS_BROKER_MIN_REPLICAS); the event may still have been stored"
        )
    generation, stream_id = published
    return generation, stream_id


#: Errors after which a cluster's topology is read again (a failover moved a slot).
_TOPOLOGY_ERRORS: t.Final = (
    redis.exceptions.MovedError,
    redis.exceptions.AskError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ConnectionError,
)


def disconnect(client: t.Any) -> None:
    """Close every connection of a client (of one server, or of a cluster)."""
    if isinstance(client, RedisCluster):
        client.close()
    else:
        client.connection_pool.disconnect()
