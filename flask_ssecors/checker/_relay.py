"""A TCP relay the browser audit puts between Chromium and the server, to cut streams.

Chromium is launched with ``--host-resolver-rules`` mapping the stream's ``host:port`` to this
relay, so its connections (TLS included: the relay only copies bytes) pass through here, and
:meth:`Relay.cut` can close them all at once, as a proxy restart or a deploy does. What the
browser then does (reconnect, with which ``Last-Event-ID``, after how long) is what a user sees
after every server-side close.

Pure module: no Flask, no gevent. One thread per direction per connection; each copy is at
most 64 KiB in flight, whatever the server sends.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import typing as t

_CHUNK: t.Final = 65536


class Relay:
    """Listen on a free loopback port and copy each connection to ``(host, port)``.

    :param host: the server's host name or address.
    :param port: the server's port.
    """

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: list[tuple[socket.socket, socket.socket]] = []
        #: How many connections the browser made through the relay.
        self.connections = 0
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="ssecors-relay", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._closed:
                    client.close()
                    server.close()
                    return
                self.connections += 1
                self._open.append((client, server))
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=_copy, args=(source, sink), daemon=True).start()

    def cut(self) -> int:
        """Close every open connection (both sides); return how many were open."""
        with self._lock:
            pairs, self._open = self._open, []
        for pair in pairs:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        return len(pairs)

    def close(self) -> None:
        """Stop listening and cut every connection."""
        with self._lock:
            self._closed = True
        self._listener.close()
        self.cut()


def _copy(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(_CHUNK):
            sink.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)
