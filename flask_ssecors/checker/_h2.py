"""HTTP/2 for :mod:`~flask_ssecors.checker._check`: one request per connection, framed by ``h2``.

The same :class:`~flask_ssecors.checker._http.Exchange` as HTTP/1.1, so the auditor's rules
read both alike: over TLS the connection is negotiated with ALPN (``h2``, as browsers offer it,
beside ``http/1.1``); over cleartext it starts with the HTTP/2 preface at once ("prior
knowledge", ``h2c``), which is how proxies talk to backends but never how browsers talk.

Inbound header validation is off on purpose: a response carrying a connection-specific header
(``Connection``, ``Keep-Alive``, ``Transfer-Encoding``...) is a protocol error in HTTP/2 that
browsers refuse, and the auditor must see it to report it, not stop at it.

Pure module: no Flask, no gevent.
"""

from __future__ import annotations

import ssl
import typing as t

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from ._http import Exchange
from ._http import HEAD_LIMIT
from ._http import ProtocolError

#: Request headers that HTTP/2 forbids (RFC 9113, section 8.2.2); left out of requests.
CONNECTION_SPECIFIC: t.Final = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
)


class NotHttp2(ProtocolError):
    """The server did not agree to HTTP/2 in the TLS handshake."""

    def __init__(self, chosen: str | None) -> None:
        self.chosen = chosen
        super().__init__(
            f"the TLS handshake chose {chosen}, not h2"
            if chosen
            else "the TLS handshake chose no protocol with ALPN, so HTTP/1.1"
        )


class H2Exchange(Exchange):
    """An HTTP/2 exchange on its own connection (stream 1), framed by ``h2``.

    Body data is acknowledged as it is read, so flow control never stalls a stream; the
    header list is bounded by :data:`~flask_ssecors.checker._http.HEAD_LIMIT` (``h2`` refuses
    larger).
    """

    protocol = "HTTP/2"
    alpn = ("h2", "http/1.1")

    def _start(self, headers: t.Sequence[tuple[str, str]]) -> None:
        if self.target.scheme == "https":
            assert isinstance(self._sock, ssl.SSLSocket)
            chosen = self._sock.selected_alpn_protocol()
            if chosen != "h2":
                raise NotHttp2(chosen)
        config = h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_inbound_headers=False
        )
        self._h2 = h2.connection.H2Connection(config=config)
        self._h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: HEAD_LIMIT,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        self._h2.initiate_connection()
        request = [
            (":method", self.method),
            (":scheme", self.target.scheme),
            (":authority", self.target.host_header),
            (":path", self.target.path),
        ]
        request += [
            (name.lower(), value)
            for name, value in headers
            if name.lower() not in CONNECTION_SPECIFIC
        ]
        try:
            self._h2.send_headers(
                1, [(k.encode(), v.encode()) for k, v in request], end_stream=True
            )
        except h2.exceptions.ProtocolError as error:
            raise ValueError(f"cannot send this request: {error}") from None
        self._stream_id = 1
        self._pending: list[h2.events.Event] = []
        self._send(self._h2.data_to_send())

    def _next(self, deadline: float) -> h2.events.Event:
        while not self._pending:
            data = self._recv(deadline)
            if not data:
                raise ProtocolError("the connection closed before the stream ended")
            try:
                self._pending = list(self._h2.receive_data(data))
            except h2.exceptions.ProtocolError as error:
                raise ProtocolError(f"not valid HTTP/2 ({_reason(error)})") from None
            self._send(self._h2.data_to_send())
        return self._pending.pop(0)

    def read_head(self, deadline: float) -> None:
        while True:
            event = self._next(deadline)
            if isinstance(event, h2.events.ResponseReceived):
                break
            self._check_end(event)
        raw = [(bytes(n).decode("latin-1"), bytes(v).decode("latin-1")) for n, v in event.headers]
        status = next((value for name, value in raw if name == ":status"), "")
        if not (status.isascii() and status.isdigit() and len(status) == 3):
            raise ProtocolError(f"not valid HTTP/2 (the :status is {status[:20]!r})")
        fields = [(name, value) for name, value in raw if not name.startswith(":")]
        self._got_head(int(status), "HTTP/2", "", fields)
        if event.stream_ended is not None:
            self.ended = True

    def read(self, deadline: float) -> bytes:
        while not self.ended:
            event = self._next(deadline)
            if isinstance(event, h2.events.DataReceived) and event.stream_id == self._stream_id:
                length = event.flow_controlled_length or 0
                if length:
                    self._h2.acknowledge_received_data(length, self._stream_id)
                    self._send(self._h2.data_to_send())
                if event.stream_ended is not None:
                    self.ended = True
                if event.data:
                    return self._arrived(bytes(event.data))
                continue
            if isinstance(event, h2.events.TrailersReceived | h2.events.StreamEnded):
                if event.stream_id == self._stream_id:
                    self.ended = True
                continue
            self._check_end(event)
        return b""

    def _check_end(self, event: h2.events.Event) -> None:
        """Raise for events that end the stream abnormally; ignore housekeeping ones."""
        if isinstance(event, h2.events.StreamReset) and event.stream_id == self._stream_id:
            code = getattr(event.error_code, "name", event.error_code)
            raise ProtocolError(f"the server reset the stream (RST_STREAM {code})")
        if isinstance(event, h2.events.ConnectionTerminated):
            code = getattr(event.error_code, "name", event.error_code)
            raise ProtocolError(f"the server ended the connection (GOAWAY {code})")

    def close(self) -> None:
        try:
            self._h2.close_connection()
            self._send(self._h2.data_to_send())
        except (AttributeError, OSError, h2.exceptions.ProtocolError):
            pass
        super().close()


def _reason(error: Exception) -> str:
    return str(error) or type(error).__name__
