"""HTTP/1.1 for the auditor (:mod:`~flask_ssecors.checker._check`), framed by ``h11``.

Requests go on their own connections.

:mod:`http.client` buffers the body and hides framing, which is exactly what the auditor must
see: when each byte arrived, which header lines the server put on the wire (in order, with their
own spelling, duplicates included), and how the body was framed. ``h11`` (the sans-I/O HTTP/1.1
sibling of ``h2``, see :mod:`~flask_ssecors.checker._h2`) does the framing; this module owns
the sockets, the deadlines, the byte budget and the arrival times, in a shape both protocols
share: :class:`Exchange` is one request on its own connection, and its response read incrementally.

Everything a server sends is bounded here: a response head larger than :data:`HEAD_LIMIT`, or
more than :data:`RAW_LIMIT` bytes on one connection, is a :class:`ProtocolError`, never memory.

Pure module: no Flask, no gevent (under gevent's monkey-patching it still works, cooperatively).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import re
import socket
import ssl
import time
import typing as t
import urllib.parse
import zlib

import h11

#: Largest response head read (status line and header lines).
HEAD_LIMIT: t.Final = 65536
#: Most bytes read from one connection, framing included; past it the exchange stops.
RAW_LIMIT: t.Final = 16 << 20
_RECV: t.Final = 65536
_TOKEN: t.Final = frozenset("!#$%&'*+-.^_`|~")
_BYTEARRAY: t.Final = re.compile(r"bytearray\((b'[^']*'|b\"[^\"]*\")\)")


class ProtocolError(Exception):
    """The server's answer is not valid HTTP (or not what this client can read)."""


class LimitReached(ProtocolError):
    """The server sent more than this client reads from one connection."""


class WaitTimeout(Exception):
    """Nothing arrived before the deadline."""


class Target(t.NamedTuple):
    """Where a request goes: parsed from an ``http://`` or ``https://`` URL."""

    scheme: str
    host: str
    port: int
    path: str

    @property
    def host_header(self) -> str:
        """The ``Host`` header value (default port left out, IPv6 in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse_url(url: str) -> Target:
    """Split an ``http(s)://host[:port]/path?query`` URL.

    :raises ValueError: for other schemes, a missing host, userinfo or an invalid port.
    """
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError("the URL must start with http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials in the URL are not supported; use --header")
    host = parts.hostname
    if not host:
        raise ValueError("the URL has no host")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise ValueError("the URL has an invalid port") from None
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    if not path.isascii() or any(ord(char) <= 0x20 or char == "\x7f" for char in path):
        raise ValueError(
            "the URL path contains whitespace, control or non-ASCII characters; percent-encode them"
        )
    return Target(scheme, host, port, path)


def parse_header(text: str) -> tuple[str, str]:
    """Read a ``Name: value`` (or ``Name:value``) request header given on the command line.

    :raises ValueError: for a missing colon, an invalid name, or a control character in the value.
    """
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise ValueError(f"{text!r} is not a header; write Name:value")
    return check_header(name.strip(), value.strip())


def check_header(name: str, value: str) -> tuple[str, str]:
    """Return ``(name, value)`` if it can be sent as a request header.

    :raises ValueError: for an invalid name, or a control character in the value (a line
        break would smuggle in other headers).
    """
    if not name or not name.isascii() or not all(c.isalnum() or c in _TOKEN for c in name):
        raise ValueError(f"{name!r} is not a valid header name")
    if not is_sendable(value):
        raise ValueError(f"the value of {name} contains a line break or control character")
    return name, value


def is_sendable(value: str) -> bool:
    """Whether ``value`` can go in a header field (no control character but tab)."""
    return not any((ord(char) < 0x20 and char != "\t") or char == "\x7f" for char in value)


def stream_headers(
    origin: str, extra: t.Sequence[tuple[str, str]], last_event_id: str | None = None
) -> list[tuple[str, str]]:
    """The headers of an ``EventSource`` request, as browsers send them, plus ``extra`` (which
    replace defaults of the same name) and ``Connection: close`` (which HTTP/2 leaves out)."""
    own = {name.lower() for name, _ in extra}
    defaults = [
        ("Accept", "text/event-stream"),
        ("Accept-Encoding", "gzip, deflate, br"),
        ("Cache-Control", "no-cache"),
        ("User-Agent", _user_agent()),
    ]
    out = [(k, v) for k, v in defaults if k.lower() not in own]
    out += [("Origin", origin), *extra, ("Connection", "close")]
    if last_event_id is not None:
        out.append(("Last-Event-ID", last_event_id))
    return out


def preflight_headers(origin: str, names: t.Sequence[str]) -> list[tuple[str, str]]:
    """The headers of a CORS preflight for a GET that sends the headers ``names`` (no
    credentials: browsers never send cookies or Authorization on a preflight)."""
    out = [
        ("Accept", "*/*"),
        ("User-Agent", _user_agent()),
        ("Origin", origin),
        ("Access-Control-Request-Method", "GET"),
    ]
    if names:
        out.append(("Access-Control-Request-Headers", ",".join(names)))
    return [*out, ("Connection", "close")]


@functools.cache
def _user_agent() -> str:
    try:
        version = importlib.metadata.version("flask-ssecors")
    except importlib.metadata.PackageNotFoundError:
        version = "0"
    return f"ssecors-check/{version}"


def connect(
    target: Target, deadline: float, *, verify: bool, alpn: t.Sequence[str]
) -> socket.socket:
    """Open a TCP connection (and a TLS session offering ``alpn`` for ``https``).

    :raises OSError: when the connection or TLS handshake fails.
    :raises WaitTimeout: when the deadline passes first.
    """
    try:
        sock = socket.create_connection((target.host, target.port), timeout=remaining(deadline))
    except TimeoutError:
        raise WaitTimeout from None
    if target.scheme != "https":
        return sock
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(list(alpn))
    try:
        sock.settimeout(remaining(deadline))
        return context.wrap_socket(sock, server_hostname=target.host)
    except TimeoutError:
        sock.close()
        raise WaitTimeout from None
    except BaseException:
        sock.close()
        raise


def remaining(deadline: float) -> float:
    """Seconds left until ``deadline``.

    :raises WaitTimeout: when none are left.
    """
    left = deadline - time.monotonic()
    if left <= 0:
        raise WaitTimeout
    return left


class Exchange:
    """One request on its own connection, and its response read incrementally.

    Subclasses frame the protocol; this class owns the socket, the deadlines, the byte budget
    and the timing. After :meth:`read_head`, the response is in :attr:`status`,
    :attr:`lines` (``"Name: value"`` as received) and :attr:`headers`.

    :param target: where to send it.
    :param method: the request method.
    :param headers: request headers, sent in order (after ``Host``, or the pseudo-headers).
    :param deadline: ``time.monotonic()`` value by which the connection must be up.
    :param verify: verify the server's TLS certificate (https only).
    :raises OSError: when the connection or TLS handshake fails.
    :raises WaitTimeout: when connecting takes past ``deadline``.
    :raises ValueError: when a header cannot be sent in this protocol.
    """

    #: The protocol, as reported (``HTTP/1.1``, ``HTTP/2``).
    protocol = ""
    alpn: t.ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        target: Target,
        method: str,
        headers: t.Sequence[tuple[str, str]],
        *,
        deadline: float,
        verify: bool = True,
    ) -> None:
        self.target = target
        self.method = method
        self.status = 0
        self.reason = ""
        self.version = ""
        #: Response header lines as received (bytes as latin-1), in order.
        self.lines: list[str] = []
        self.headers: list[tuple[str, str]] = []
        #: Seconds from sending the request to the head, and to the latest body bytes.
        self.head_after: float | None = None
        self.last_arrival: float | None = None
        self.ended = False
        self.received = 0
        self.sent_at = time.monotonic()
        self._sock = connect(target, deadline, verify=verify, alpn=self.alpn)
        try:
            self._sock.settimeout(remaining(deadline))
            self._start(headers)
        except BaseException:
            self.close()
            raise
        self.sent_at = time.monotonic()

    # -- for subclasses ------------------------------------------------------------------------

    def _start(self, headers: t.Sequence[tuple[str, str]]) -> None:
        raise NotImplementedError

    def _recv(self, deadline: float) -> bytes:
        """The next bytes from the socket (``b""`` when the server closed it)."""
        self._sock.settimeout(remaining(deadline))
        try:
            data = self._sock.recv(_RECV)
        except TimeoutError:
            raise WaitTimeout from None
        except ConnectionResetError:
            return b""
        self.received += len(data)
        if self.received > RAW_LIMIT:
            raise LimitReached(f"more than {RAW_LIMIT >> 20} MiB on one connection")
        return data

    def _send(self, data: bytes) -> None:
        if data:
            self._sock.sendall(data)

    def _got_head(self, status: int, version: str, reason: str, raw: list[tuple[str, str]]) -> None:
        self.status, self.version, self.reason = status, version, reason
        self.headers = raw
        self.lines = [f"{name}: {value}" for name, value in raw]
        self.head_after = time.monotonic() - self.sent_at

    def _arrived(self, data: bytes) -> bytes:
        if data:
            self.last_arrival = time.monotonic() - self.sent_at
        return data

    # -- the response ------------------------------------------------------------------------

    def read_head(self, deadline: float) -> None:
        """Read the status and headers (skipping ``1xx`` interim responses).

        :raises WaitTimeout: when the head is not complete by ``deadline``.
        :raises ProtocolError: when it is not valid HTTP or too large.
        """
        raise NotImplementedError

    def read(self, deadline: float) -> bytes:
        """The next body bytes (framing removed), as soon as any arrive.

        :return: ``b""`` at the end of the body.
        :raises WaitTimeout: when nothing arrives by ``deadline``.
        :raises ProtocolError: on broken framing, or past :data:`RAW_LIMIT`.
        """
        raise NotImplementedError

    def values(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive), one per header line."""
        lowered = name.lower()
        return [value for key, value in self.headers if key.lower() == lowered]

    @property
    def status_line(self) -> str:
        """``HTTP/1.1 200 OK``, as received (``HTTP/2 200`` for HTTP/2)."""
        return f"{self.version} {self.status} {self.reason}".rstrip()

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with contextlib.suppress(OSError):
            self._sock.close()


class H11Exchange(Exchange):
    """An HTTP/1.1 exchange, framed by ``h11``.

    The request goes out as given (``h11`` checks each header), the head is read within
    :data:`HEAD_LIMIT`, and the body is handed back chunk by chunk as ``h11`` unframes it.
    """

    protocol = "HTTP/1.1"
    alpn = ("http/1.1",)

    def _start(self, headers: t.Sequence[tuple[str, str]]) -> None:
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=HEAD_LIMIT)
        fields = [("Host", self.target.host_header), *headers]
        try:
            request = h11.Request(
                method=self.method,
                target=self.target.path,
                headers=[(name.encode("ascii"), value.encode()) for name, value in fields],
            )
            data = self._h11.send(request)
            data = (data or b"") + (self._h11.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError as error:
            raise ValueError(f"cannot send this request: {error}") from None
        self._send(data)

    def _next(self, deadline: float) -> h11.Event | type[h11.PAUSED]:
        """The next h11 event, reading from the socket as needed."""
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as error:
                raise ProtocolError(f"not valid HTTP/1.1 ({_h11_reason(error)})") from None
            if event is not h11.NEED_DATA:
                return t.cast("h11.Event | type[h11.PAUSED]", event)
            self._h11.receive_data(self._recv(deadline))

    def read_head(self, deadline: float) -> None:
        while True:
            event = self._next(deadline)
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                break
            if isinstance(event, h11.ConnectionClosed):
                raise ProtocolError("connection closed before a complete response head")
            raise ProtocolError(f"unexpected {type(event).__name__} before the response head")
        raw = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in event.headers.raw_items()
        ]
        version = f"HTTP/{event.http_version.decode('ascii')}"
        self._got_head(event.status_code, version, event.reason.decode("latin-1"), raw)
        if self.method == "HEAD" or self._h11.their_state is not h11.SEND_BODY:
            self.ended = True

    def read(self, deadline: float) -> bytes:
        while not self.ended:
            event = self._next(deadline)
            if isinstance(event, h11.Data):
                if event.data:
                    return self._arrived(bytes(event.data))
                continue
            if isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                self.ended = True
                break
            if event is h11.PAUSED:
                self.ended = True
                break
        return b""


def _h11_reason(error: h11.RemoteProtocolError) -> str:
    text = _BYTEARRAY.sub(r"\1", str(error))
    if "incomplete chunked read" in text:
        return "the connection closed in the middle of a chunk"
    if "peer closed connection without sending complete message body" in text:
        return "the connection closed before the end of the body (" + text.rpartition(": ")[2] + ")"
    return text


class BodyDecoder:
    """Undo a ``Content-Encoding`` incrementally, as a browser does before parsing, never
    producing more than asked for (so a decompression bomb costs no memory).

    :param coding: the response's ``Content-Encoding`` (``""`` for none).
    :ivar supported: False for codings the standard library cannot decode (``br``, ``zstd``);
        :meth:`feed` then returns ``b""``.
    """

    def __init__(self, coding: str) -> None:
        self.coding = coding.strip().lower()
        self.supported = self.coding in ("", "identity", "gzip", "x-gzip", "deflate")
        self._zlib: t.Any = None
        if self.coding in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif self.coding == "deflate":
            self._zlib = zlib.decompressobj()
        self._first = True
        self._tail = b""

    @property
    def pending(self) -> bool:
        """Whether compressed bytes given before are still to be decoded (call :meth:`feed`
        with ``b""`` to get more of them)."""
        return bool(self._tail)

    def feed(self, data: bytes, limit: int) -> bytes:
        """Decode the next body bytes: at most ``limit`` bytes come out; the rest waits.

        :raises zlib.error: when the body is not in the announced coding.
        """
        if not self.supported:
            return b""
        if self._zlib is None:
            data, self._tail = self._tail + data, b""
            out, self._tail = data[:limit], data[limit:]
            return out
        if self._first and self.coding == "deflate" and data and data[0] & 0x0F != 8:
            self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, as some servers send
        self._first = False
        if limit <= 0:
            self._tail += data
            return b""
        out = self._zlib.decompress(self._tail + data, limit)
        self._tail = self._zlib.unconsumed_tail
        return bytes(out)
