"""An incremental parser for ``text/event-stream``, as browsers read it.

It follows the WHATWG HTML rules "Interpreting an event stream" and turns the bytes of a stream
into :class:`~flask_ssecors.events.Event` objects. The test client and the command line tool
use it to read streams; it is also handy to check what a browser would see.

This module is pure: it imports neither Flask nor gevent.
"""

from __future__ import annotations

import codecs
import re

from .events import Event

__all__ = ["EventStreamParser", "parse_events"]

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_BOM = "\ufeff"


class EventStreamParser:
    """Incremental parser: feed bytes as they arrive, get the events dispatched so far.

    .. code-block:: python

        parser = EventStreamParser()
        parser.feed(b"data: hel")  # []
        parser.feed(b"lo\\n\\n")  # [Event('hello')]

    The bytes are decoded as UTF-8, invalid sequences replaced with U+FFFD; a character split
    across two chunks is decoded once both have arrived. One byte order mark is removed at the
    very start of the stream. Lines end with CRLF, LF or CR, and a CRLF split across two chunks
    counts as one line break.

    Dispatched events are built as a browser builds them: ``data`` is a ``str``; ``event`` is
    ``None`` when the block had no ``event`` field or an empty one (browsers use
    ``"message"``); ``id`` is the last event id at dispatch, which persists from block to block
    until a later ``id`` field changes it (``None`` when it is empty); ``retry`` is set only on
    the event whose block carried a valid ``retry`` field.

    Values come from the stream and are reported as received: an ``event`` name may contain
    NUL, for instance, which the :class:`~flask_ssecors.events.Event` constructor refuses. The
    parser therefore builds its events through a private path that skips validation.

    :param include_comments: also return each comment line, in stream order, as
        ``Event(None, comment=text)`` (one space after the colon removed).

    .. versionadded:: 0.1
    """

    #: The last event id buffer, as a browser keeps it; ``""`` when none was set or it was
    #: reset by an empty ``id`` field.
    last_event_id: str
    #: The last valid reconnection time seen, in milliseconds, or ``None``.
    retry: int | None

    def __init__(self, *, include_comments: bool = False) -> None:
        self.include_comments = include_comments
        self.last_event_id = ""
        self.retry = None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._at_start = True
        self._skip_lf = False
        self._partial: list[str] = []
        self._data: list[str] = []
        self._type = ""
        self._block_retry: int | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        """Parse the next bytes of the stream.

        An incomplete line or event is kept until more bytes complete it.

        :param chunk: the bytes, of any length; ``b""`` is allowed.
        :return: the events dispatched by these bytes (and comments, if requested).
        """
        text = self._decoder.decode(chunk)
        if not text:
            return []
        if self._at_start:
            self._at_start = False
            if text.startswith(_BOM):
                text = text[1:]
        if self._skip_lf:
            self._skip_lf = False
            if text.startswith("\n"):
                text = text[1:]
        out: list[Event] = []
        start = 0
        for match in _LINE_BREAK.finditer(text):
            line = text[start : match.start()]
            if self._partial:
                self._partial.append(line)
                line = "".join(self._partial)
                self._partial.clear()
            self._line(line, out)
            start = match.end()
        if start < len(text):
            self._partial.append(text[start:])
        elif text.endswith("\r"):
            # The LF of a CRLF may come in the next chunk: it must not add an empty line.
            self._skip_lf = True
        return out

    def _line(self, line: str, out: list[Event]) -> None:
        """Process one complete line, appending what it dispatches to ``out``."""
        if not line:
            self._dispatch(out)
            return
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if not name:
            if self.include_comments:
                out.append(Event._from_wire(None, comment=value))
            return
        if name == "event":
            self._type = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\x00" not in value:
            self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            try:
                retry = int(value)
            except ValueError:
                # More digits than Python converts by default: no usable delay anyway.
                return
            self.retry = retry
            self._block_retry = retry
        # Any other field, an id with NUL and a retry that is not all digits are ignored.

    def _dispatch(self, out: list[Event]) -> None:
        """End the current block; dispatch an event if it had data."""
        data, event_type, retry = self._data, self._type, self._block_retry
        self._data = []
        self._type = ""
        self._block_retry = None
        if not data:
            return
        out.append(
            Event._from_wire(
                "\n".join(data),
                event=event_type or None,
                id=self.last_event_id or None,
                retry=retry,
            )
        )


def parse_events(data: bytes, *, include_comments: bool = False) -> list[Event]:
    """Parse a complete stream; an unfinished event at the end is dropped, as browsers do.

    :param data: the bytes of the stream.
    :param include_comments: also return comment lines; see :class:`EventStreamParser`.
    """
    return EventStreamParser(include_comments=include_comments).feed(data)
