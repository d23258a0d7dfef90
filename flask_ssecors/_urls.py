"""Broker URLs: which Redis (one server, Sentinel, or a Cluster) a ``SSECORS_BROKER_URL``
names, and how to show one without its secrets. Pure: it needs neither redis-py nor a
connection.

Secrets never leave: :func:`parse_url` raises errors that quote no part of the user
information or of a secret query parameter, whatever the URL looks like (a mistyped scheme, no
``://``, a password holding ``/``, ``?`` or ``#``), and :func:`redact` masks them for anything
that shows a URL (logs, the command line, ``check-broker``'s report).
"""

from __future__ import annotations

import dataclasses
import re
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
    username: str | None = dataclasses.field(default=None, repr=False)
    password: str | None = dataclasses.field(default=None, repr=False)
    tls: bool = False
    #: The socket path of a ``unix://`` URL.
    path: str | None = None

    def __repr__(self) -> str:
        return f"Address(kind={self.kind!r}, url={redact(self.url)!r}, hosts={self.hosts!r})"


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

#: What a scheme may look like (RFC 3986): anything else is not quoted back, since it may be
#: the start of a URL whose ``://`` is missing, password included.
_SCHEME: t.Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,30}")
#: Query parameters whose values are secrets (``password=``, ``sentinel_password=``,
#: ``auth_token=``...).
_SECRET_QUERY: t.Final = re.compile(
    r"(?i)([?&;][^=&;#]*(?:pass|secret|token|auth|credential)[^=&;#]*=)[^&;#]*"
)
_PERCENT_ENCODE: t.Final = (
    "percent-encode '/', '?', '#' and '@' in a user name or password (%2F, %3F, %23, %40)"
)


def parse_url(url: str) -> Address:
    """Read a Redis broker URL.

    ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS) and
    ``unix://[[user]:password@]/path/to/socket[?db=N]`` name one server (redis-py connects
    with them; its query parameters are accepted);
    ``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]`` names the
    Sentinels watching ``service``; ``redis+cluster://[user:password@]host:port[,host:port...]``
    names nodes of a Redis Cluster. ``rediss+...`` uses TLS. A password may also be given as
    ``?password=...``.

    :raises ValueError: saying what is wrong; the message quotes no secret.
    """
    scheme, separator, rest = url.partition("://")
    if not separator:
        raise ValueError(
            "is not a URL (no '://'): write it as redis://host:6379/0, "
            "redis+sentinel://host:26379/service, redis+cluster://host:7000 or memory://"
        )
    if not _SCHEME.fullmatch(scheme):
        raise ValueError(f"has no valid scheme before '://'; use one of {', '.join(SCHEMES)}")
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; use one of {', '.join(SCHEMES)}")
    userinfo, at, location = rest.rpartition("@")
    if at and any(char in userinfo for char in "/?#"):
        raise ValueError(
            f"the part before the last '@' is not a user name and password: {_PERCENT_ENCODE}"
        )
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = urllib.parse.unquote(user) or None
        password = urllib.parse.unquote(secret) if colon and secret else None
    netloc, path, query = _split_location(location)
    options = _query(query)
    password = password or options.get("password")
    username = username or options.get("username")
    tls = scheme.startswith("rediss")
    if scheme == "unix":
        if netloc or not path:
            raise ValueError("a unix:// URL names a socket path: unix:///path/to/redis.sock")
        return Address(
            "single",
            url,
            (),
            None,
            _db(options.get("db", "0")),
            username,
            password,
            path=urllib.parse.unquote(path),
        )
    hosts = _hosts(netloc, many=scheme not in ("redis", "rediss"))
    segments = [segment for segment in path.split("/") if segment]
    if scheme in ("redis", "rediss"):
        if len(segments) > 1:
            raise ValueError("the path of a redis:// URL is the database number: /0 to /15")
        db = _db(segments[0]) if segments else 0
        if "db" in options:
            db = _db(options["db"])
        return Address("single", url, hosts, None, db, username, password, tls)
    if "sentinel" in scheme:
        if not segments or len(segments) > 2:
            raise ValueError("name the Sentinel service: redis+sentinel://host:port/service[/db]")
        service = urllib.parse.unquote(segments[0])
        db = _db(segments[1]) if len(segments) == 2 else 0
        return Address("sentinel", url, hosts, service, db, username, password, tls)
    if segments:
        raise ValueError("a Redis Cluster URL has no path (a cluster has only database 0)")
    return Address("cluster", url, hosts, None, 0, username, password, tls)


def _split_location(location: str) -> tuple[str, str, str]:
    """``host:port/path?query#fragment`` as (netloc, path, query)."""
    location = location.partition("#")[0]
    location, _, query = location.partition("?")
    netloc, slash, path = location.partition("/")
    return netloc, slash + path, query


def _query(query: str) -> dict[str, str]:
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ValueError("the query string is not name=value pairs joined by '&'") from None
    return dict(pairs)


def _db(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 5:
        raise ValueError(f"the database {text[:20]!r} is not a number (0, 1, 2...)")
    return int(text)


def _hosts(netloc: str, *, many: bool) -> tuple[tuple[str, int], ...]:
    """``host:port[,host:port...]``; a single server's port defaults to 6379."""
    items = netloc.split(",") if many else [netloc]
    hosts = []
    for item in items:
        host, port = _host_port(item, default=None if many else 6379)
        hosts.append((host, port))
    return tuple(hosts)


def _host_port(item: str, *, default: int | None) -> tuple[str, int]:
    if item.startswith("["):  # an IPv6 address
        host, bracket, port_part = item[1:].partition("]")
        if not bracket or (port_part and not port_part.startswith(":")):
            raise ValueError(f"{item[:60]!r} is not [IPv6 address]:port")
        port = port_part[1:]
    else:
        host, colon, port = item.rpartition(":")
        if not colon:
            host, port = item, ""
    if not host:
        raise ValueError(f"{item[:60]!r} has no host name")
    if not port and default is not None:
        return host, default
    if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError(f"{item[:60]!r} is not host:port (a port from 1 to 65535)")
    return host, int(port)


def redact(url: object) -> str:
    """``url`` with its secrets masked, for logs, messages and the command line.

    The user information (everything before the last ``@``) keeps only a user name, and only
    when a ``:`` follows it (``user:***@``; ``***@`` otherwise); values of query parameters
    named like a secret (``password``, ``sentinel_password``, ``token``...) become ``***``.
    Works on malformed URLs too (no ``://``, a password with ``/``, ``?`` or ``#``).
    """
    text = url if isinstance(url, str) else repr(url)
    scheme, separator, rest = text.partition("://")
    if not separator:
        scheme, rest = "", text
    userinfo, at, location = rest.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        safe_user = colon and not any(char in user for char in "/?#")
        rest = f"{user}:***@{location}" if safe_user else f"***@{location}"
    return scheme + separator + _SECRET_QUERY.sub(r"\1***", rest)
