"""Reading a stream's body for :mod:`flask_ssecors.checker._check`, within fixed bounds.

One reader serves every phase that reads a body (watching the stream, waiting for the first
event after a reconnect): it undoes the ``Content-Encoding``, tracks line lengths, and parses
events as a browser does, and it keeps what a server can make it hold bounded whatever the
server sends:

- at most :data:`BODY_LIMIT` decoded bytes per response (a decompression bomb stops there, since
  the decoder never produces more than the room left);
- a line longer than :data:`LINE_LIMIT` without a line break stops the read as a parse failure
  (browsers would hold it in memory, waiting for the break);
- event counts, names and ids are summarised, never all kept: at most :data:`MAX_NAMES` names
  and :data:`MAX_IDS` ids.

Pure module: no Flask, no gevent.
"""

from __future__ import annotations

import collections
import typing as t
import zlib

from .._parser import EventStreamParser
from ._http import BodyDecoder
from ._http import LimitReached
from ._http import ProtocolError

if t.TYPE_CHECKING:
    from ..events import Event
    from ._http import Exchange

#: Decoded body bytes read from one response, at most.
BODY_LIMIT: t.Final = 1 << 20
#: Longest line (decoded bytes without a CR or LF) read before giving up on the body.
LINE_LIMIT: t.Final = 256 << 10
#: Distinct event names and ids remembered per response.
MAX_NAMES: t.Final = 64
MAX_IDS: t.Final = 4096
_PIECE: t.Final = 65536


class IdLog:
    """The distinct event ids of a stream in the order first seen: the first :data:`MAX_IDS`
    with their position, and always the last three."""

    def __init__(self) -> None:
        self.positions: dict[str, int] = {}
        self.recent: collections.deque[str] = collections.deque(maxlen=3)
        self.count = 0

    def add(self, event_id: str) -> None:
        if event_id in self.positions or event_id in self.recent:
            return
        if len(self.positions) < MAX_IDS:
            self.positions[event_id] = self.count
        self.count += 1
        self.recent.append(event_id)

    def position(self, event_id: str) -> int | None:
        """Where ``event_id`` came among the ids (None when not remembered)."""
        return self.positions.get(event_id)

    def __bool__(self) -> bool:
        return self.count > 0


class BodyReader:
    """Read, decode and parse a response body within the bounds of this module.

    :param exchange: the response, its head read.
    :param keep_body: keep the decoded bytes (at most :data:`BODY_LIMIT`) in :attr:`body`.
    """

    def __init__(self, exchange: Exchange, *, keep_body: bool = False) -> None:
        self.exchange = exchange
        self.coding = ", ".join(exchange.values("Content-Encoding"))
        self.decoder = BodyDecoder(self.coding)
        self.parser = EventStreamParser(include_comments=True)
        self.keep_body = keep_body
        self.body = bytearray()
        self.decoded = 0
        self.line = 0
        self.events = 0
        self.comments = 0
        self.names: set[str] = set()
        self.ids = IdLog()
        #: Whether the body ended (the server finished or closed it).
        self.ended = False
        #: Why reading stopped early, in words: broken framing or coding, or a line too long.
        self.error = ""
        #: Which bound stopped the read, in words; empty when none did.
        self.limit = ""

    @property
    def stopped(self) -> bool:
        """Whether there is nothing more to read: the end, an error, or a bound."""
        return self.ended or bool(self.error or self.limit)

    def read(self, deadline: float) -> list[Event]:
        """Read the next bytes and return the events (and comments) they complete.

        :raises ~flask_ssecors.checker._http.WaitTimeout: when nothing arrives by ``deadline``.
        """
        if self.stopped:
            return []
        try:
            data = self.exchange.read(deadline)
        except LimitReached as error:
            self.limit = str(error)
            return []
        except (ProtocolError, OSError) as error:
            self.error = f"the stream broke off: {error}"
            return []
        if not data:
            self.ended = True
        out: list[Event] = []
        while data or self.decoder.pending:
            room = min(_PIECE, BODY_LIMIT - self.decoded)
            if room <= 0:
                self.limit = f"the first {BODY_LIMIT >> 20} MiB of the decoded body were read"
                break
            try:
                piece = self.decoder.feed(data, room)
            except zlib.error as error:
                self.error = f"the body is not valid {self.coding}: {error}"
                break
            data = b""
            if not piece:
                break
            out += self._take(piece)
            if self.error:
                break
        return out

    def _take(self, piece: bytes) -> list[Event]:
        self.decoded += len(piece)
        cut = max(piece.rfind(b"\n"), piece.rfind(b"\r"))
        self.line = len(piece) - cut - 1 if cut >= 0 else self.line + len(piece)
        if self.line > LINE_LIMIT:
            self.error = (
                f"no line break within {LINE_LIMIT >> 10} KiB (after {self.decoded} body bytes): "
                "browsers keep buffering such a line and never dispatch an event"
            )
            return []
        if self.keep_body:
            self.body += piece
        events = self.parser.feed(piece)
        for event in events:
            if event.data is None:
                self.comments += 1
                continue
            self.events += 1
            if len(self.names) < MAX_NAMES:
                self.names.add(event.event or "message")
            if event.id is not None:
                self.ids.add(event.id)
        return events
