"""A small HTTP/1.1 client over raw sockets, for :mod:`flask_ssecors._check`.

:mod:`http.client` buffers the body and hides framing, which is exactly what the auditor must
see: when each byte arrived, which headers the server put on the wire (in order, duplicates
included), and whether the body was chunked. This client sends one request per connection, reads
the head as sent, and hands back body bytes (chunked framing removed) with their arrival time.

Pure module: no Flask, no gevent (under gevent's monkey-patching it still works, cooperatively).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.metadata
import socket
import ssl
import time
import typing as t
import urllib.parse
import zlib

_MAX_HEAD: t.Final = 65536
_MAX_CHUNK_LINE: t.Final = 4096
_RECV: t.Final = 65536
_TOKEN: t.Final = frozenset("!#$%&'*+-.^_`|~")


class ProtocolError(Exception):
    """The server's answer is not valid HTTP/1.x (or not what this client can read)."""


class WaitTimeout(Exception):
    """Nothing arrived before the deadline."""


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
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
    if any(char in path for char in "\r\n \t"):
        raise ValueError("the URL path contains whitespace or line breaks; percent-encode them")
    return Target(scheme, host, port, path)


def parse_header(text: str) -> tuple[str, str]:
    """Read a ``Name: value`` (or ``Name:value``) request header given on the command line.

    :raises ValueError: for a missing colon, an invalid name, or a line break in the value.
    """
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise ValueError(f"{text!r} is not a header; write Name:value")
    return check_header(name.strip(), value.strip())


def check_header(name: str, value: str) -> tuple[str, str]:
    """Return ``(name, value)`` if it can be sent as a request header.

    :raises ValueError: for an invalid name, or a line break or NUL in the value (which would
        smuggle in other headers).
    """
    if not name or not name.isascii() or not all(c.isalnum() or c in _TOKEN for c in name):
        raise ValueError(f"{name!r} is not a valid header name")
    if any(char in value for char in "\r\n\x00"):
        raise ValueError(f"the value of {name} contains a line break or NUL")
    return name, value


def stream_headers(
    origin: str, extra: t.Sequence[tuple[str, str]], last_event_id: str | None = None
) -> list[tuple[str, str]]:
    """The headers of an ``EventSource`` request, as browsers send them, plus ``extra`` (which
    replace defaults of the same name) and ``Connection: close``."""
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


class Exchange:
    """One request on its own connection, and its response read incrementally.

    :param target: where to send it.
    :param method: the request method.
    :param headers: request headers, sent in order after ``Host``.
    :param deadline: ``time.monotonic()`` value by which the connection must be up.
    :param verify: verify the server's TLS certificate (https only).
    :raises OSError: when the connection or TLS handshake fails.
    :raises WaitTimeout: when connecting takes past ``deadline``.
    """

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
        #: Response header lines exactly as received (latin-1), in order.
        self.lines: list[str] = []
        self.headers: list[tuple[str, str]] = []
        #: Seconds from sending the request to the head, and to each body arrival.
        self.head_after: float | None = None
        self.arrivals: list[tuple[float, int]] = []
        self.ended = False
        self._buffer = b""
        self._chunk_left = 0
        self._chunked = False
        self._length: int | None = None
        self._sock = self._connect(deadline, verify)
        lines = [f"{method} {target.path} HTTP/1.1", f"Host: {target.host_header}"]
        lines += [f"{name}: {value}" for name, value in headers]
        self._sock.settimeout(_remaining(deadline))
        self._sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        self.sent_at = time.monotonic()

    def _connect(self, deadline: float, verify: bool) -> socket.socket:
        target = self.target
        sock = socket.create_connection((target.host, target.port), timeout=_remaining(deadline))
        if target.scheme != "https":
            return sock
        context = ssl.create_default_context()
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols(["http/1.1"])
        try:
            return context.wrap_socket(sock, server_hostname=target.host)
        except BaseException:
            sock.close()
            raise

    # -- head --------------------------------------------------------------------------------

    def read_head(self, deadline: float) -> None:
        """Read the status line and headers (skipping ``1xx`` interim responses).

        :raises WaitTimeout: when the head is not complete by ``deadline``.
        :raises ProtocolError: when it is not HTTP/1.x or too large.
        """
        while True:
            while b"\r\n\r\n" not in self._buffer:
                if len(self._buffer) > _MAX_HEAD:
                    raise ProtocolError("response head larger than 64 KiB")
                data = self._recv(deadline)
                if not data:
                    raise ProtocolError("connection closed before a complete response head")
                self._buffer += data
            head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
            text = head.decode("latin-1").split("\r\n")
            version, _, rest = text[0].partition(" ")
            code, _, reason = rest.partition(" ")
            if not version.startswith("HTTP/1.") or not (code.isdigit() and len(code) == 3):
                raise ProtocolError(f"not an HTTP/1.x status line: {text[0][:80]!r}")
            if code.startswith("1") and code != "101":
                continue
            break
        self.version, self.status, self.reason = version, int(code), reason
        self.lines = [line for line in text[1:] if line]
        self.headers = [
            (name.strip(), value.strip(" \t"))
            for name, _, value in (line.partition(":") for line in self.lines)
        ]
        self.head_after = time.monotonic() - self.sent_at
        codings = [v.lower() for v in self.values("Transfer-Encoding")]
        self._chunked = bool(codings) and codings[-1].rsplit(",", 1)[-1].strip() == "chunked"
        lengths = self.values("Content-Length")
        if not self._chunked and lengths and lengths[0].isdigit():
            self._length = int(lengths[0])
        no_body = self.method == "HEAD" or self.status in (204, 304)
        if no_body or self._length == 0:
            self.ended = True

    def values(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive), one per header line."""
        lowered = name.lower()
        return [value for key, value in self.headers if key.lower() == lowered]

    def lines_named(self, name: str) -> list[str]:
        """The raw header lines of ``name``, as evidence for a report."""
        lowered = name.lower()
        return [line for line in self.lines if line.partition(":")[0].strip().lower() == lowered]

    @property
    def status_line(self) -> str:
        """``HTTP/1.1 200 OK``, as received."""
        return f"{self.version} {self.status} {self.reason}".rstrip()

    # -- body --------------------------------------------------------------------------------

    def read(self, deadline: float) -> bytes:
        """The next body bytes (framing removed), as soon as any arrive.

        :return: ``b""`` at the end of the body.
        :raises WaitTimeout: when nothing arrives by ``deadline``.
        :raises ProtocolError: on broken chunked framing.
        """
        while True:
            data = self._decoded()
            if data:
                self.arrivals.append((time.monotonic() - self.sent_at, len(data)))
                return data
            if self.ended:
                return b""
            more = self._recv(deadline)
            if not more:
                self.ended = True
                if self._chunked or self._length:
                    raise ProtocolError("connection closed in the middle of the body")
                return b""
            self._buffer += more

    def _decoded(self) -> bytes:
        """Take what the buffer holds of the body; b"" when more bytes are needed."""
        if self.ended:
            return b""
        if not self._chunked:
            data, self._buffer = self._buffer, b""
            if self._length is not None:
                data = data[: self._length]
                self._length -= len(data)
                if self._length == 0:
                    self.ended = True
            return data
        out = bytearray()
        while self._buffer:
            if self._chunk_left < 0:  # the CRLF after a chunk's data
                if len(self._buffer) < 2:
                    break
                if self._buffer[:2] != b"\r\n":
                    raise ProtocolError("chunk data not followed by CRLF")
                self._buffer = self._buffer[2:]
                self._chunk_left = 0
                continue
            if self._chunk_left > 0:
                piece = self._buffer[: self._chunk_left]
                self._buffer = self._buffer[len(piece) :]
                self._chunk_left -= len(piece)
                out += piece
                if self._chunk_left:
                    break
                self._chunk_left = -1
                continue
            line, crlf, rest = self._buffer.partition(b"\r\n")
            if not crlf:
                if len(self._buffer) > _MAX_CHUNK_LINE:
                    raise ProtocolError("chunk size line too long")
                break
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ProtocolError(f"invalid chunk size {line[:40]!r}") from None
            self._buffer = rest
            if size == 0:
                self.ended = True
                break
            self._chunk_left = size
        return bytes(out)

    def _recv(self, deadline: float) -> bytes:
        self._sock.settimeout(_remaining(deadline))
        try:
            return self._sock.recv(_RECV)
        except TimeoutError:
            raise WaitTimeout from None
        except ConnectionResetError:
            return b""

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with contextlib.suppress(OSError):
            self._sock.close()


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise WaitTimeout
    return left


class BodyDecoder:
    """Undo a ``Content-Encoding`` incrementally, as a browser does before parsing.

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

    def feed(self, data: bytes) -> bytes:
        """Decode the next body bytes.

        :raises zlib.error: when the body is not in the announced coding.
        """
        if not self.supported:
            return b""
        if self._zlib is None:
            return data
        if self._first and self.coding == "deflate" and data and data[0] & 0x0F != 8:
            self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, as some servers send
        self._first = False
        return bytes(self._zlib.decompress(data))
