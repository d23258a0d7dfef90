"""Broker URLs: which Redis (one server, Sentinel, or a Cluster) a ``SSECORS_BROKER_URL``
names. Pure: it needs neither redis-py nor a connection."""

from __future__ import annotations

import dataclasses
import typing as t
import urllib.parse


@dataclasses.dataclass(frozen=True, slots=True)
class Address:
    """Where the broker's Redis is, read from a broker URL (see :func:`parse_url`)."""

    kind: t.Literal["single", "sentinel", "cluster"]
    url: str
    hosts: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False


#: The schemes of broker URLs that name Redis.
SCHEMES: t.Final = (
    "redis",
    "rediss",
    "unix",
    "redis+sentinel",
    "rediss+sentinel",
    "redis+cluster",
    "rediss+cluster",
)


def parse_url(url: str) -> Address:
    """Read a Redis broker URL.

    ``redis://``, ``rediss://`` and ``unix://`` name one server (redis-py reads them);
    ``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]`` names the
    Sentinels watching ``service``; ``redis+cluster://[user:password@]host:port[,host:port...]``
    names nodes of a Redis Cluster. ``rediss+...`` uses TLS.

    :raises ValueError: saying what is wrong.
    """
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme in ("redis", "rediss", "unix"):
        return Address("single", url, tls=scheme == "rediss")
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; use one of {', '.join(SCHEMES)}")
    kind: t.Literal["sentinel", "cluster"] = "sentinel" if "sentinel" in scheme else "cluster"
    parts = urllib.parse.urlsplit(f"redis://{rest}")
    userinfo, _, netloc = parts.netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, colon, secret = userinfo.partition(":")
        username = urllib.parse.unquote(user) or None
        password = urllib.parse.unquote(secret) if colon else None
    hosts = []
    for item in netloc.split(","):
        host, colon, port = item.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{item!r} is not host:port")
        hosts.append((host.strip("[]"), int(port)))
    path = [segment for segment in parts.path.split("/") if segment]
    service, db = None, 0
    if kind == "sentinel":
        if not path or len(path) > 2:
            raise ValueError("name the Sentinel service: redis+sentinel://host:port/service[/db]")
        service = urllib.parse.unquote(path[0])
        if len(path) == 2:
            if not path[1].isdigit():
                raise ValueError(f"the database {path[1]!r} is not a number")
            db = int(path[1])
    elif path:
        raise ValueError("a Redis Cluster URL has no path (a cluster has only database 0)")
    return Address(
        kind,
        url,
        tuple(hosts),
        service,
        db,
        username,
        password,
        tls=scheme.startswith("rediss"),
    )


def redact(url: str) -> str:
    """``url`` with its password masked, for logs and the command line."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, hosts = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return f"{scheme}{sep}{user}:***@{hosts}"
