"""SSE over HTTP/2 for the auditor's tests: a raw ``h2`` server, one behaviour per path.

Plain sockets with prior knowledge (h2c), or TLS with ALPN. The CORS decisions are those of
``broken_servers`` (``/good/events`` allows :data:`~tests.live_apps.broken_servers.ALLOWED`
only); ``/connection-header/events`` also forwards ``Connection`` and ``Transfer-Encoding``, as a
proxy that copies its upstream's HTTP/1.1 headers would, which is a protocol error in HTTP/2.

``python -m tests.live_apps.h2_servers PORT [CERTFILE KEYFILE [ALPN]]``: with a certificate,
TLS offering ``ALPN`` (default ``h2``; ``http/1.1`` plays a server without HTTP/2).
"""

from __future__ import annotations

import socket
import socketserver
import ssl
import sys
import time
import typing as t
import urllib.parse

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from tests.live_apps.broken_servers import _allows
from tests.live_apps.broken_servers import _cors
from tests.live_apps.broken_servers import _vary
from tests.live_apps.broken_servers import ALLOWED
from tests.live_apps.broken_servers import INTERVAL
from tests.live_apps.broken_servers import LIFETIME
from tests.live_apps.broken_servers import Request

MODES = {"good", "connection-header"}


def _request(headers: list[tuple[bytes, bytes]]) -> tuple[str, Request]:
    fields = {name.decode().lower(): value.decode("utf-8", "replace") for name, value in headers}
    parts = urllib.parse.urlsplit(fields.get(":path", "/"))
    mode = parts.path.strip("/").split("/")[0]
    allowed = urllib.parse.parse_qs(parts.query).get("allow", [ALLOWED])[0]
    plain = {k: v for k, v in fields.items() if not k.startswith(":")}
    return fields.get(":method", ""), Request(fields.get(":method", ""), mode, allowed, plain)


def _answer(request: Request) -> tuple[list[tuple[str, str]], bool]:
    """The response headers, and whether a stream body follows."""
    origin = request.headers.get("origin", "")
    if request.mode not in MODES:
        return [(":status", "404")], False
    if origin and not _allows(request, origin):
        vary = [(k.lower(), v) for k, v in _vary(request)]
        return [(":status", "403"), *vary, ("content-type", "text/plain")], False
    cors = [(k.lower(), v) for k, v in _cors(request, origin)] if origin else []
    if request.method == "OPTIONS":
        return [
            (":status", "204"),
            *cors,
            ("access-control-allow-methods", "GET"),
            ("access-control-allow-headers", "last-event-id, cache-control, authorization"),
            *[(k.lower(), v) for k, v in _vary(request)],
        ], False
    headers = [
        (":status", "200"),
        ("content-type", "text/event-stream; charset=utf-8"),
        ("cache-control", "no-cache, no-store, no-transform"),
        ("x-accel-buffering", "no"),
        *[(k.lower(), v) for k, v in _vary(request)],
        *cors,
    ]
    if request.mode == "connection-header":
        headers += [("connection", "keep-alive"), ("transfer-encoding", "chunked")]
    return headers, True


class Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        config = h2.config.H2Configuration(
            client_side=False, validate_outbound_headers=False, normalize_outbound_headers=False
        )
        conn = h2.connection.H2Connection(config=config)
        conn.initiate_connection()
        streams: dict[int, int] = {}  # stream id -> next event number
        due = time.monotonic()
        deadline = time.monotonic() + LIFETIME
        try:
            sock.sendall(conn.data_to_send())
            sock.settimeout(0.05)
            while time.monotonic() < deadline:
                try:
                    data = sock.recv(65536)
                    if not data:
                        return
                    events = conn.receive_data(data)
                except TimeoutError:
                    events = []
                for event in events:
                    if isinstance(event, h2.events.RequestReceived):
                        self._respond(conn, event, streams)
                    elif isinstance(event, h2.events.StreamReset):
                        streams.pop(event.stream_id, None)
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        return
                if time.monotonic() >= due:
                    due = time.monotonic() + INTERVAL
                    for stream_id, number in list(streams.items()):
                        body = b'id: %d\nevent: tick\ndata: {"n":%d}\n\n' % (number, number)
                        conn.send_data(stream_id, body)
                        streams[stream_id] = number + 1
                sock.sendall(conn.data_to_send())
        except (OSError, ssl.SSLError, h2.exceptions.ProtocolError):
            pass  # the client left

    def _respond(
        self,
        conn: h2.connection.H2Connection,
        event: h2.events.RequestReceived,
        streams: dict[int, int],
    ) -> None:
        _, request = _request(list(event.headers or []))
        headers, body = _answer(request)
        stream_id = event.stream_id
        conn.send_headers(stream_id, headers, end_stream=not body)
        if body:
            conn.send_data(stream_id, b": ok\n\n")
            last = request.headers.get("last-event-id", "")
            streams[stream_id] = int(last) + 1 if last.isdigit() else 1


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

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
        context.set_alpn_protocols([sys.argv[4] if len(sys.argv) > 4 else "h2"])
    with Server(port, context) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
