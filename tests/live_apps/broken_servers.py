"""Deliberately broken SSE servers for the auditor's tests, on raw sockets.

One threaded server; the first path segment picks the behaviour (``/good/events`` does
everything right, ``/reflect-any/events`` echoes any Origin, ...), and ``?allow=ORIGIN`` the
allowed origin (default :data:`ALLOWED`). Raw sockets, so that every header, byte and delay
is exactly what the mode says, whatever a WSGI server would add or remove.

``python -m tests.live_apps.broken_servers PORT [CERTFILE KEYFILE]`` (TLS with a cert).
"""

from __future__ import annotations

import socket
import socketserver
import ssl
import sys
import time
import typing as t
import urllib.parse
import zlib

ALLOWED = "https://app.example.com"
#: Seconds between events, and how long a stream lasts at most.
INTERVAL = 0.2
LIFETIME = 30.0

#: Each mode and the one thing it gets wrong.
MODES: dict[str, str] = {
    "good": "nothing: the reference behaviour",
    "reflect-any": "echoes any Origin, with credentials",
    "star-credentials": "Access-Control-Allow-Origin: * with credentials",
    "no-acac": "no Access-Control-Allow-Credentials on the stream (the preflight has it)",
    "acao-list": "a list of origins in Access-Control-Allow-Origin",
    "no-vary": "no Vary: Origin",
    "gzip": "gzip-compressed stream (flushed per event)",
    "content-length": "a Content-Length on the stream",
    "keep-alive": "Connection: keep-alive and Keep-Alive in answer to Connection: close",
    "buffered": "holds bytes back until 2 KiB pile up, like a proxy buffer",
    "no-heartbeat": "one comment, then silence",
    "bad-preflight": "OPTIONS answered 200 without CORS headers (an automatic OPTIONS)",
    "lastid-refused": "400 for a request with Last-Event-ID",
    "wrong-content-type": "Content-Type: text/plain",
    "no-cache-control": "no Cache-Control",
    "no-accel": "no X-Accel-Buffering (a warning only)",
    "null-allowed": "accepts the origin null",
    "suffix-match": "accepts origins that end with the registrable domain",
    "prefix-match": "accepts origins that start with the allowed origin",
    "scheme-blind": "compares hosts, not schemes",
    "replay-inclusive": "replays from the Last-Event-ID itself",
    "restart": "ignores Last-Event-ID and numbers from 1 again",
    "bad-utf8": "an invalid UTF-8 byte in an event",
    "bad-chunk": "broken chunked framing",
    "hostile-streamed": "streams to refused origins (without CORS headers)",
    "ends": "ends the stream after one event",
    "redirect": "redirects the stream",
    "refuse-all": "403 for every origin",
    "hang": "accepts connections, reads the request, never answers",
    "trickle": "nothing wrong, but sends the body one byte at a time",
    # Hostile servers: the auditor must end with a report, in bounded memory.
    "endless-line": "a body that never breaks its line",
    "gzip-bomb": "Content-Encoding: gzip, an endless gzip stream of zeros",
    "endless-line-resume": "good, but answers the reconnect with a line that never ends",
    "gzip-bomb-resume": "good, but answers the reconnect with an endless gzip stream of zeros",
    "odd-status": "a status line whose code has a non-ASCII digit: HTTP/1.1 \u00b200 OK",
    "unicode-ids": "event ids outside latin-1 (\u00fc\u20ac1, \u00fc\u20ac2...), resumed",
    "escape-headers": "terminal escape sequences in header values",
    "escape-events": "terminal escape sequences in event names and ids",
}
#: Modes whose reconnect (a request with Last-Event-ID) gets an endless body.
ENDLESS_RESUME = {"endless-line-resume": "endless-line", "gzip-bomb-resume": "gzip-bomb"}
UNICODE_ID = "\u00fc\u20ac"


class Request(t.NamedTuple):
    method: str
    mode: str
    allowed: str
    headers: dict[str, str]


def _read_request(sock: socket.socket) -> Request | None:
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        if not more:
            return None
        data += more
    lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    parts = urllib.parse.urlsplit(target)
    query = urllib.parse.parse_qs(parts.query)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    mode = parts.path.strip("/").split("/")[0]
    return Request(method, mode, query.get("allow", [ALLOWED])[0], headers)


def _allows(request: Request, origin: str) -> bool:
    allowed, mode = request.allowed, request.mode
    if mode in ("reflect-any", "star-credentials", "hostile-streamed"):
        return True
    if mode == "refuse-all":
        return False
    if mode == "null-allowed" and origin == "null":
        return True
    if mode == "suffix-match":
        scheme = allowed.partition("://")[0]
        base = ".".join(allowed.partition("://")[2].split(".")[-2:])
        return origin.startswith(f"{scheme}://") and origin.endswith(base)
    if mode == "prefix-match":
        return origin.startswith(allowed)
    if mode == "scheme-blind":
        return origin.partition("://")[2] == allowed.partition("://")[2]
    return origin == allowed


def _cors(request: Request, origin: str) -> list[tuple[str, str]]:
    mode = request.mode
    if mode == "star-credentials":
        return [("Access-Control-Allow-Origin", "*"), ("Access-Control-Allow-Credentials", "true")]
    if mode == "hostile-streamed" and origin != request.allowed:
        return []
    acao = f"{origin}, https://other.example" if mode == "acao-list" else origin
    if mode == "no-acac" and request.method == "GET":
        return [("Access-Control-Allow-Origin", acao)]
    return [("Access-Control-Allow-Origin", acao), ("Access-Control-Allow-Credentials", "true")]


def _head(status: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _vary(request: Request, *names: str) -> list[tuple[str, str]]:
    return [] if request.mode == "no-vary" else [("Vary", ", ".join(("Origin", *names)))]


def _refuse(sock: socket.socket, request: Request, status: str = "403 Forbidden") -> None:
    body = b"refused\n"
    headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    sock.sendall(_head(status, [*headers, *_vary(request), ("Connection", "close")]) + body)


def _preflight(sock: socket.socket, request: Request) -> None:
    origin = request.headers.get("origin", "")
    if request.mode == "bad-preflight":
        headers = [("Allow", "GET, HEAD, OPTIONS"), ("Content-Length", "0")]
        sock.sendall(_head("200 OK", [*headers, ("Connection", "close")]))
        return
    if not _allows(request, origin):
        _refuse(sock, request)
        return
    headers = [
        *_cors(request, origin),
        ("Access-Control-Allow-Methods", "GET"),
        ("Access-Control-Allow-Headers", "last-event-id, cache-control, authorization, x-token"),
        ("Access-Control-Max-Age", "600"),
        *_vary(request, "Access-Control-Request-Method", "Access-Control-Request-Headers"),
        ("Connection", "close"),
    ]
    sock.sendall(_head("204 No Content", headers))


class _Body:
    """Writes the stream body with the mode's framing, encoding and buffering."""

    def __init__(self, sock: socket.socket, mode: str) -> None:
        self.sock, self.mode = sock, mode
        self.chunked = mode not in ("content-length",)
        self.zip = zlib.compressobj(6, zlib.DEFLATED, 31) if mode == "gzip" else None
        self.held = b""

    def write(self, data: bytes) -> None:
        if self.zip is not None:
            data = self.zip.compress(data) + self.zip.flush(zlib.Z_SYNC_FLUSH)
        if self.mode == "buffered":
            self.held += data
            if len(self.held) < 2048:
                return
            data, self.held = self.held, b""
        if self.chunked:
            size = f"{len(data):X}" if self.mode != "bad-chunk" else "zz"
            data = f"{size}\r\n".encode() + data + b"\r\n"
        if self.mode == "trickle":
            for index in range(len(data)):
                self.sock.sendall(data[index : index + 1])
                time.sleep(0.0005)
            return
        self.sock.sendall(data)

    def end(self) -> None:
        if self.chunked:
            self.sock.sendall(b"0\r\n\r\n")


def _endless(sock: socket.socket, request: Request, mode: str) -> None:
    """Headers of a good stream, then a body that never ends a line: plain, or gzip of zeros."""
    origin = request.headers.get("origin", "")
    headers = [
        ("Content-Type", "text/event-stream; charset=utf-8"),
        ("Cache-Control", "no-cache, no-store, no-transform"),
        ("X-Accel-Buffering", "no"),
        *_vary(request),
        *_cors(request, origin),
        ("Transfer-Encoding", "chunked"),
        ("Connection", "close"),
    ]
    if mode == "gzip-bomb":
        headers.append(("Content-Encoding", "gzip"))
        packer = zlib.compressobj(9, zlib.DEFLATED, 31)
        piece = packer.compress(b"\0" * (1 << 20)) + packer.flush(zlib.Z_SYNC_FLUSH)
        start = b""
    else:
        start, piece = b"data: ", b"x" * 65536
    sock.sendall(_head("200 OK", headers))
    deadline = time.monotonic() + LIFETIME
    data = start + piece
    while time.monotonic() < deadline:
        sock.sendall(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        data = piece


def _stream(sock: socket.socket, request: Request) -> None:
    mode, origin = request.mode, request.headers.get("origin")
    if mode == "odd-status":
        sock.sendall("HTTP/1.1 \u00b200 OK\r\nContent-Length: 0\r\n\r\n".encode())
        return

    if mode == "redirect":
        location = [("Location", "/good/events"), ("Content-Length", "0")]
        sock.sendall(_head("302 Found", [*location, ("Connection", "close")]))
        return
    if origin is not None and not _allows(request, origin):
        _refuse(sock, request)
        return
    last_id = request.headers.get("last-event-id")
    if mode in ("endless-line", "gzip-bomb"):
        _endless(sock, request, mode)
        return
    if mode in ENDLESS_RESUME and last_id is not None:
        _endless(sock, request, ENDLESS_RESUME[mode])
        return
    if last_id is not None and mode == "lastid-refused":
        _refuse(sock, request, "400 Bad Request")
        return
    content_type = "text/plain" if mode == "wrong-content-type" else "text/event-stream"
    headers = [("Content-Type", f"{content_type}; charset=utf-8")]
    if mode != "no-cache-control":
        headers.append(("Cache-Control", "no-cache, no-store, no-transform"))
    if mode == "escape-headers":
        headers += [("X-Accel-Buffering", "no\x1b[2J"), ("X-Title", "\x1b]0;pwned\x07")]
    elif mode != "no-accel":
        headers.append(("X-Accel-Buffering", "no"))
    headers += _vary(request)
    if origin is not None:
        headers += _cors(request, origin)
    if mode == "gzip":
        headers.append(("Content-Encoding", "gzip"))
    if mode == "content-length":
        headers.append(("Content-Length", "1000000"))
    else:
        headers.append(("Transfer-Encoding", "chunked"))
    if mode == "keep-alive":
        headers += [("Connection", "keep-alive"), ("Keep-Alive", "timeout=5, max=100")]
    else:
        headers.append(("Connection", "close"))
    sock.sendall(_head("200 OK", headers))
    body = _Body(sock, mode)
    body.write(b": ok\n\n")
    if mode == "no-heartbeat":
        time.sleep(LIFETIME)
        return
    start = 1
    if last_id is not None and mode == "unicode-ids":
        last_id = last_id.encode("latin-1").decode("utf-8").removeprefix(UNICODE_ID)
    if last_id is not None and last_id.isdigit() and mode != "restart":
        start = int(last_id) + (0 if mode == "replay-inclusive" else 1)
    deadline = time.monotonic() + LIFETIME
    number = start
    while time.monotonic() < deadline:
        data = f'{{"n":{number}}}'.encode()
        if mode == "bad-utf8":
            data = b'{"n":"\xff"}'
        name, prefix = b"tick", b""
        if mode == "unicode-ids":
            prefix = UNICODE_ID.encode()
        elif mode == "escape-events":
            name, prefix = b"\x1b[2Jtick", b"\x1b]0;pwned\x07"
        body.write(b"id: %s%d\nevent: %s\ndata: %s\n\n" % (prefix, number, name, data))
        if mode == "ends":
            break
        number += 1
        time.sleep(INTERVAL)
    body.end()


class Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        try:
            request = _read_request(sock)
            if request is None:
                return
            if request.mode == "hang":
                time.sleep(LIFETIME)
            elif request.mode not in MODES:
                sock.sendall(_head("404 Not Found", [("Content-Length", "0")]))
            elif request.method == "OPTIONS" and "access-control-request-method" in request.headers:
                _preflight(sock, request)
            else:
                _stream(sock, request)
        except (OSError, ssl.SSLError):
            pass  # the client left


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, port: int, context: ssl.SSLContext | None) -> None:
        self.context = context
        super().__init__(("127.0.0.1", port), Handler)

    def get_request(self) -> tuple[socket.socket, t.Any]:
        sock, address = super().get_request()
        if self.context is not None:
            sock = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def finish_request(self, request: t.Any, client_address: t.Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            try:
                request.settimeout(10)
                request.do_handshake()
            except (OSError, ssl.SSLError):
                return
        super().finish_request(request, client_address)


def main() -> None:
    port = int(sys.argv[1])
    context = None
    if len(sys.argv) > 3:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(sys.argv[2], sys.argv[3])
    with Server(port, context) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
