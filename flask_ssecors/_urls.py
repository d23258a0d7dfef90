"""Broker URLs: which Redis (one server, Sentinel, or a Cluster) or which PostgreSQL a
``SSECORS_BROKER_URL`` names, and how to show one without its secrets. Pure: it needs neither
redis-py, psycopg nor a connection.

Secrets never leave: :func:`parse_url` raises errors that quote no part of the user
information or of a secret query parameter, whatever the URL looks like (a mistyped scheme, no
``://``, a password holding ``/``, ``?`` or ``#``), and :func:`redact` masks them for anything
that shows a URL (logs, the command line, ``check-broker``'s report).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing as t
import urllib.parse


@dataclasses.dataclass(frozen=True, slots=True)
class Address:
    """Where the broker's Redis or PostgreSQL is, read from a broker URL (see
    :func:`parse_url`)."""

    kind: t.Literal["single", "sentinel", "cluster", "postgres"]
    url: str
    hosts: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    db: int = 0
    username: str | None = dataclasses.field(default=None, repr=False)
    password: str | None = dataclasses.field(default=None, repr=False)
    tls: bool = False
    #: The socket path of a ``unix://`` URL; the socket directory of a PostgreSQL URL whose
    #: (first) host is one.
    path: str | None = None
    #: The database of a PostgreSQL URL (None: libpq's default, the user name).
    database: str | None = None

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

#: The schemes of broker URLs that name PostgreSQL (libpq's URI form).
POSTGRES_SCHEMES: t.Final = ("postgresql", "postgres")
#: Every scheme :func:`parse_url` reads.
_KNOWN: t.Final = (*SCHEMES, *POSTGRES_SCHEMES)

#: What a scheme may look like (RFC 3986): anything else is not quoted back, since it may be
#: the start of a URL whose ``://`` is missing, password included.
_SCHEME: t.Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,30}")
#: Query parameters whose values are secrets (``password=``, ``sentinel_password=``,
#: ``auth_token=``, libpq's ``sslpassword=``, ``oauth_client_secret=``, ``scram_client_key=``...).
_SECRET_QUERY: t.Final = re.compile(
    r"(?i)([?&;][^=&;#]*(?:pass|secret|token|auth|credential|key)[^=&;#]*=)[^&;#]*"
)
_PERCENT_ENCODE: t.Final = (
    "percent-encode '/', '?', '#' and '@' in a user name or password (%2F, %3F, %23, %40)"
)


def parse_url(url: str) -> Address:
    """Read a Redis or PostgreSQL broker URL.

    ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS) and
    ``unix://[[user]:password@]/path/to/socket[?db=N]`` name one server (redis-py connects
    with them; its query parameters are accepted);
    ``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]`` names the
    Sentinels watching ``service``; ``redis+cluster://[user:password@]host:port[,host:port...]``
    names nodes of a Redis Cluster. ``rediss+...`` uses TLS. A password may also be given as
    ``?password=...``.

    ``postgresql://`` and ``postgres://`` URLs are libpq's connection URIs:
    ``postgresql://[user[:password]@][host][:port][,host[:port]...][/dbname][?name=value...]``,
    where the query holds libpq's connection parameters (``sslmode=require``,
    ``connect_timeout=5``, ``application_name=...``, ``target_session_attrs=read-write``,
    ``host=/var/run/postgresql`` for a Unix socket directory...); libpq connects with the URL
    as written, and this only checks what libpq would refuse at the first connection.

    :raises ValueError: saying what is wrong; the message quotes no secret.
    """
    scheme, separator, rest = url.partition("://")
    if not separator:
        raise ValueError(
            "is not a URL (no '://'): write it as redis://host:6379/0, "
            "redis+sentinel://host:26379/service, redis+cluster://host:7000, "
            "postgresql://user:password@host:5432/dbname or memory://"
        )
    if not _SCHEME.fullmatch(scheme):
        raise ValueError(f"has no valid scheme before '://'; use one of {', '.join(_KNOWN)}")
    scheme = scheme.lower()
    if scheme not in _KNOWN:
        raise ValueError(f"unknown scheme {scheme!r}; use one of {', '.join(_KNOWN)}")
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
    if scheme in POSTGRES_SCHEMES:
        return _postgres(url, username, password, location)
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


def _postgres(url: str, username: str | None, password: str | None, location: str) -> Address:
    """A libpq connection URI (see :func:`parse_url`), from what follows its user information."""
    netloc, path, query = _split_location(location)
    options = _libpq_query(query)
    if "replication" in options:
        raise ValueError(
            "a replication connection cannot run the broker's queries; remove replication="
        )
    names: list[str] = []
    ports: list[str] = []
    for item in netloc.split(",") if netloc else ():
        host, port = _pg_host_port(item)
        names.append(host)
        ports.append(port)
    if "host" in options:
        names = options["host"].split(",")
    if "port" in options:
        ports = options["port"].split(",")
    for port in ports:
        if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"the port {port[:20]!r} is not a number from 1 to 65535")
    if len(ports) <= 1:
        ports = (ports or [""]) * len(names)
    elif len(ports) != len(names):
        raise ValueError(
            f"{len(ports)} ports for {len(names)} hosts: give one port for all, or one per host"
        )
    hosts = tuple(
        (host, int(port) if port else POSTGRES_PORT)
        for host, port in zip(names, ports, strict=True)
    )
    database = urllib.parse.unquote(path[1:]) if path else ""
    sockets = [host for host in names if host.startswith(("/", "@"))]
    return Address(
        "postgres",
        url,
        hosts,
        username=options.get("user") or username,
        password=options.get("password") or password,
        tls=options.get("sslmode") in _TLS_MODES or options.get("ssl") == "true",
        path=sockets[0] if sockets else None,
        database=options.get("dbname", database) or None,
    )


#: The port libpq connects to when a URL names none.
POSTGRES_PORT: t.Final = 5432
#: libpq's connection parameters (``PQconndefaults()`` of libpq 18), and ``ssl``, which libpq's
#: URIs accept for JDBC's ``ssl=true``.
_LIBPQ_PARAMETERS: t.Final = frozenset(
    {
        "application_name",
        "channel_binding",
        "client_encoding",
        "connect_timeout",
        "dbname",
        "fallback_application_name",
        "gssdelegation",
        "gssencmode",
        "gsslib",
        "host",
        "hostaddr",
        "keepalives",
        "keepalives_count",
        "keepalives_idle",
        "keepalives_interval",
        "krbsrvname",
        "load_balance_hosts",
        "max_protocol_version",
        "min_protocol_version",
        "oauth_client_id",
        "oauth_client_secret",
        "oauth_issuer",
        "oauth_scope",
        "options",
        "passfile",
        "password",
        "port",
        "replication",
        "require_auth",
        "requirepeer",
        "scram_client_key",
        "scram_server_key",
        "service",
        "ssl",
        "ssl_max_protocol_version",
        "ssl_min_protocol_version",
        "sslcert",
        "sslcertmode",
        "sslcompression",
        "sslcrl",
        "sslcrldir",
        "sslkey",
        "sslkeylogfile",
        "sslmode",
        "sslnegotiation",
        "sslpassword",
        "sslrootcert",
        "sslsni",
        "target_session_attrs",
        "tcp_user_timeout",
        "user",
    }
)
#: The values libpq accepts for the parameters that take one of a list.
_LIBPQ_CHOICES: t.Final = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "target_session_attrs": (
        "any",
        "read-write",
        "read-only",
        "primary",
        "standby",
        "prefer-standby",
    ),
    "load_balance_hosts": ("disable", "random"),
    "gssencmode": ("disable", "prefer", "require"),
    "ssl": ("true",),
}
#: The parameters libpq reads as whole numbers.
_LIBPQ_INTEGERS: t.Final = frozenset(
    {
        "connect_timeout",
        "keepalives",
        "keepalives_count",
        "keepalives_idle",
        "keepalives_interval",
        "tcp_user_timeout",
    }
)
_TLS_MODES: t.Final = frozenset({"require", "verify-ca", "verify-full"})
#: A query parameter's name that may be quoted back: what libpq's names look like.
_PARAMETER_NAME: t.Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")


def _libpq_query(query: str) -> dict[str, str]:
    """The parameters of a libpq URI's query, percent-decoded (``+`` stays ``+``, as libpq
    reads it), checked as libpq checks them; values are never quoted back."""
    options: dict[str, str] = {}
    for pair in query.split("&") if query else ():
        raw_name, equals, raw_value = pair.partition("=")
        if not equals or not raw_name:
            raise ValueError("the query string is not name=value pairs joined by '&'")
        if "=" in raw_value:
            raise ValueError("a query value holds a second '=': percent-encode it (%3D)")
        name = urllib.parse.unquote(raw_name)
        value = urllib.parse.unquote(raw_value)
        if name not in _LIBPQ_PARAMETERS:
            close = difflib.get_close_matches(name, sorted(_LIBPQ_PARAMETERS), n=1)
            shown = f" {name!r}" if _PARAMETER_NAME.fullmatch(name) else ""
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ValueError(f"libpq has no connection parameter{shown}{hint}")
        choices = _LIBPQ_CHOICES.get(name)
        if choices is not None and value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(choices)}")
        if name in _LIBPQ_INTEGERS and not (
            value.removeprefix("-").isascii() and value.removeprefix("-").isdigit()
        ):
            raise ValueError(f"{name} must be a whole number")
        options[name] = value
    return options


def _pg_host_port(item: str) -> tuple[str, str]:
    """``host[:port]`` of a libpq URI, as (host, port text): the host percent-decoded (a
    socket directory is written ``%2Fvar%2Frun%2Fpostgresql``), either part may be empty."""
    if item.startswith("["):  # an IPv6 address
        host, bracket, port_part = item[1:].partition("]")
        if not bracket or (port_part and not port_part.startswith(":")) or not host:
            raise ValueError(f"{item[:60]!r} is not [IPv6 address]:port")
        return host, port_part[1:]
    host, _, port = item.partition(":")
    return urllib.parse.unquote(host), port


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
    named like a secret (``password``, ``sentinel_password``, ``token``, libpq's
    ``sslpassword`` and ``oauth_client_secret``...) become ``***``.
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
