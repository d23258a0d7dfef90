"""A raw HTTP/1.1 client for streams: sees the headers exactly as sent and reads the body
incrementally (chunked framing decoded by hand), so tests observe the wire, not a library."""

from __future__ import annotations

import socket
import struct
import time

from flask_ssecors._parser import EventStreamParser
from flask_ssecors.events import Event


class StreamClient:
    """One streaming request over a plain socket."""

    def __init__(
        self,
        port: int,
        path: str,
        headers: dict[str, str] | None = None,
        *,
        method: str = "GET",
        host: str = "127.0.0.1",
        timeout: float = 10.0,
        rcvbuf: int | None = None,
        include_comments: bool = False,
        body: bytes = b"",
        keep_raw: bool = True,
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.sock.sendall(request + body)
        #: When the request was sent and when the response head arrived (``time.monotonic``).
        self.sent_at = time.monotonic()
        self._buffer = b""
        self.status, self.reason, self.header_lines = self._read_head()
        self.head_at = time.monotonic()
        self.chunked = any(
            k.lower() == "transfer-encoding" and "chunked" in v.lower()
            for k, v in self.header_lines
        )
        self.parser = EventStreamParser(include_comments=include_comments)
        #: Every body byte read, and each read's (time, bytes), unless ``keep_raw`` is False
        #: (many readers of large streams).
        self.keep_raw = keep_raw
        self.raw = bytearray()
        self.ended = False
        #: Whether the body ended with its terminating zero-size chunk, rather than with the
        #: connection closing (or being reset) under it.
        self.complete = False
        self._remaining_chunk = 0
        self.pending: list[Event] = []
        self.arrivals: list[tuple[float, bytes]] = []

    # -- head --------------------------------------------------------------------------------

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        return data

    def _read_head(self) -> tuple[int, str, list[tuple[str, str]]]:
        while b"\r\n\r\n" not in self._buffer:
            self._buffer += self._recv()
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        _, status, reason = [*lines[0].split(" ", 2), ""][:3]
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        return int(status), reason, headers

    def header(self, name: str) -> str | None:
        values = self.headers_named(name)
        return ", ".join(values) if values else None

    def headers_named(self, name: str) -> list[str]:
        return [v for k, v in self.header_lines if k.lower() == name.lower()]

    # -- body --------------------------------------------------------------------------------

    def read_bytes(self, timeout: float = 10.0) -> bytes:
        """Body bytes as they arrive (chunk framing removed); b"" at the end of the body."""
        self.sock.settimeout(timeout)
        while True:
            if self.ended:
                return b""
            if not self.chunked:
                if self._buffer:
                    data, self._buffer = self._buffer, b""
                else:
                    try:
                        data = self.sock.recv(65536)
                    except ConnectionResetError:
                        data = b""
                    if not data:
                        self.ended = True
                        return b""
                return self._got(data)
            if self._remaining_chunk:
                if not self._buffer:
                    data = self._recv_or_end()
                    if not data:
                        return b""
                    self._buffer += data
                data = self._buffer[: self._remaining_chunk]
                self._buffer = self._buffer[len(data) :]
                self._remaining_chunk -= len(data)
                return self._got(data)
            while b"\r\n" not in self._buffer.lstrip(b"\r\n") or not self._buffer.lstrip(b"\r\n"):
                data = self._recv_or_end()
                if not data:
                    return b""
                self._buffer += data
            self._buffer = self._buffer.lstrip(b"\r\n")
            size_line, self._buffer = self._buffer.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                self.ended = True
                self.complete = True
                return b""
            self._remaining_chunk = size

    def _recv_or_end(self) -> bytes:
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.ended = True
        return data

    def _got(self, data: bytes) -> bytes:
        if self.keep_raw:
            self.raw += data
            self.arrivals.append((time.monotonic(), data))
        self.pending.extend(self.parser.feed(data))
        return data

    def next_event(self, timeout: float = 10.0) -> Event:
        deadline = time.monotonic() + timeout
        while not self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no event in time")
            if not self.read_bytes(left) and self.ended:
                raise EOFError("stream ended")
        return self.pending.pop(0)

    def events(self, count: int, timeout: float = 10.0) -> list[Event]:
        return [self.next_event(timeout) for _ in range(count)]

    def read_all(self, timeout: float = 10.0) -> bytes:
        while not self.ended:
            self.read_bytes(timeout)
        return bytes(self.raw)

    def close(self) -> None:
        self.sock.close()

    def abort(self) -> None:
        """Vanish abruptly: close with RST (SO_LINGER 0), as a dropped client does."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def __enter__(self) -> StreamClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def request(
    port: int,
    path: str,
    headers: dict[str, str] | None = None,
    *,
    method: str = "GET",
    body: bytes = b"",
    timeout: float = 10.0,
) -> tuple[int, list[tuple[str, str]], bytes]:
    """A plain request; returns (status, header lines, body)."""
    all_headers = dict(headers or {})
    if body:
        all_headers.setdefault("Content-Length", str(len(body)))
    all_headers.setdefault("Connection", "close")
    client = StreamClient(port, path, all_headers, method=method, timeout=timeout, body=body)
    try:
        data = b"" if method == "HEAD" else client.read_all(timeout)
    finally:
        client.close()
    return client.status, client.header_lines, data
