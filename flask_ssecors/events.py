"""Server-Sent Events, validated and encoded once.

An :class:`Event` checks its fields when it is built and computes its wire bytes right away, so a
broker that fans one event out to many subscribers encodes it once, not once per subscriber.

This module is pure: it imports neither Flask nor gevent, and is tested without an app.

The wire format follows the WHATWG HTML "Server-sent events" section: UTF-8, LF line endings,
one ``name: value`` line per field and an empty line to end the event.
"""

from __future__ import annotations

import dataclasses
import json
import re

from .exceptions import EventFieldError

__all__ = ["JOIN_EVENT", "LEAVE_EVENT", "RESET_EVENT", "Event", "encode_comment"]

#: The ``event`` name a broker sends when a client's ``Last-Event-ID`` is unknown or older than
#: the backlog it keeps: events may have been missed, so the client should reload its state.
RESET_EVENT = "ssecors-reset"

#: The ``event`` name a channel's subscribers receive when a member's first stream on it opens
#: (data ``{"member": ...}``; where ``SSECORS_PRESENCE_EVENTS`` asks for it, see
#: :ref:`presence`).
JOIN_EVENT = "ssecors-join"

#: The ``event`` name a channel's subscribers receive when a member's last stream on it closes.
LEAVE_EVENT = "ssecors-leave"

#: A line ends with CRLF, a lone LF or a lone CR, exactly as event-stream parsers split lines.
#: ``str.splitlines`` is not used: it also splits on VT, FF, U+0085, U+2028 and U+2029, which
#: parsers keep inside a line.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")

#: Characters that may not appear in ``event`` or ``id``: CR and LF end the line (the rest of
#: the value would become a new, forged field or event) and NUL makes browsers ignore an ``id``.
_FORBIDDEN = re.compile(r"[\r\n\x00]")


def _utf8(field: str, value: str) -> bytes:
    """Encode one value as UTF-8, refusing lone surrogates with :class:`EventFieldError`."""
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise EventFieldError(field, value, f"cannot be encoded as UTF-8 ({e.reason})") from None


def _field_line(name: bytes, value: bytes) -> bytes:
    """One ``name: value`` line; ``name:`` alone when the value is empty.

    The single space after the colon is the one a parser removes, so a value that starts with a
    space keeps it (``data:  x`` carries ``" x"``).
    """
    if value:
        return name + b": " + value + b"\n"
    return name + b":\n"


def _comment_lines(text: str) -> list[bytes]:
    """The ``:`` lines of a comment, one per line of ``text`` (CR, LF and CRLF all split)."""
    return [_field_line(b"", _utf8("comment", line)) for line in _LINE_BREAK.split(text)]


def _data_text(data: object) -> str:
    """The text of the ``data`` field: a ``str`` as is, anything else as compact JSON.

    :param data: the value given to :class:`Event`, not ``None``.
    :raises EventFieldError: if JSON cannot encode the value (including NaN and infinities).
    """
    if isinstance(data, str):
        return data
    try:
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as e:
        raise EventFieldError("data", data, f"cannot be encoded as JSON ({e})") from None


def _encode(
    data: object,
    event: str | None,
    id: str | None,
    retry: int | None,
    comment: str | None,
) -> bytes:
    """The wire bytes of an event: ``id``, ``event``, ``retry``, comments, data, empty line.

    ``id`` and ``event`` come first, so that a broker adds an id to bytes encoded without one
    by writing it in front, and relabels a stream's event by replacing a known prefix: no
    scan, no parse. Field values are not validated here; :class:`Event` does that first.
    """
    parts: list[bytes] = []
    if id is not None:
        parts.append(_field_line(b"id", _utf8("id", id)))
    if event is not None:
        parts.append(_field_line(b"event", _utf8("event", event)))
    if retry is not None:
        parts.append(_field_line(b"retry", str(retry).encode("ascii")))
    if comment is not None:
        parts.extend(_comment_lines(comment))
    if data is not None:
        text = _data_text(data)
        parts.extend(_field_line(b"data", _utf8("data", line)) for line in _LINE_BREAK.split(text))
    parts.append(b"\n")
    return b"".join(parts)


def _check_line_value(field: str, value: object) -> None:
    """Refuse an ``event`` or ``id`` that is not a ``str`` or holds CR, LF or NUL."""
    if value is None:
        return
    if not isinstance(value, str):
        raise EventFieldError(field, value, f"must be a str or None, not {type(value).__name__}")
    if _FORBIDDEN.search(value) is not None:
        raise EventFieldError(
            field,
            value,
            "must not contain CR, LF or NUL: a line break would end the field and let the rest"
            " of the value forge other fields or events",
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One server-sent event, validated and encoded when it is built.

    .. code-block:: python

        Event({"price": 12}, event="tick", id="42").encode()
        # b'id: 42\\nevent: tick\\ndata: {"price":12}\\n\\n'

    Fields are written in this order: ``id``, ``event``, ``retry``, comment lines, data lines,
    then the empty line that dispatches the event.

    Security: ``event`` and ``id`` are refused, never silently cleaned, if they contain CR, LF
    or NUL. A line break in a value would end the field early, and whatever follows it would be
    read as more fields, or as whole extra events, chosen by whoever controls the value. A NUL
    in ``id`` makes browsers ignore the field. Data and comments may span several lines: each
    line is written as its own ``data:`` or ``:`` line, so a line break in them cannot escape.

    :param data: ``None`` for no data field (a comment- or id-only block, which browsers do not
        dispatch); a ``str`` sent as is (``""`` is a valid empty message); anything else is sent
        as compact JSON with non-ASCII characters kept. NaN, infinities and values JSON cannot
        encode are refused.
    :param event: the event type; ``None`` lets browsers use ``"message"``.
    :param id: the event id, which browsers send back as ``Last-Event-ID`` when they reconnect.
        ``""`` is written as ``id:`` and resets the browser's last event id.
    :param retry: the reconnection time in milliseconds, an ``int`` >= 0 (not a ``bool``).
    :param comment: a comment, ignored by browsers; it may span several lines. Useful to keep
        idle connections open.
    :raises EventFieldError: if a field cannot be sent, or if every field is ``None``.

    .. versionadded:: 0.1
    """

    data: object = None
    _: dataclasses.KW_ONLY
    event: str | None = None
    id: str | None = None
    retry: int | None = None
    comment: str | None = None
    _wire: bytes = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_line_value("event", self.event)
        _check_line_value("id", self.id)
        retry: object = self.retry
        if retry is not None and (type(retry) is bool or not isinstance(retry, int) or retry < 0):
            raise EventFieldError("retry", retry, "must be an int >= 0 (milliseconds) or None")
        comment: object = self.comment
        if comment is not None and not isinstance(comment, str):
            raise EventFieldError(
                "comment", comment, f"must be a str or None, not {type(comment).__name__}"
            )
        if self.data is None and self.id is None and self.retry is None and comment is None:
            if self.event is not None:
                reason = "an event type alone is never dispatched; give it data"
            else:
                reason = "an event needs data, an id, a retry or a comment"
            raise EventFieldError("data", None, reason)
        wire = _encode(self.data, self.event, self.id, self.retry, self.comment)
        object.__setattr__(self, "_wire", wire)

    @classmethod
    def _from_wire(
        cls,
        data: str | None,
        *,
        event: str | None = None,
        id: str | None = None,
        retry: int | None = None,
        comment: str | None = None,
    ) -> Event:
        """Build an event read from a stream, without validation.

        Used by :mod:`flask_ssecors._parser`. A stream may carry values this class would refuse
        (an ``event`` name with NUL, for instance); the parsed event must report them as
        received rather than raise. The wire bytes are still computed, and such a value is
        written back as is.
        """
        self = object.__new__(cls)
        for name, value in (
            ("data", data),
            ("event", event),
            ("id", id),
            ("retry", retry),
            ("comment", comment),
        ):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_wire", _encode(data, event, id, retry, comment))
        return self

    def encode(self) -> bytes:
        """The wire bytes of this event, computed once when it was built.

        Every call returns the same ``bytes`` object.
        """
        return self._wire

    def with_id(self, id: str) -> Event:
        """A copy of this event with another ``id``, validated and encoded again.

        Brokers use this to assign ids to published events.

        :param id: the new id; CR, LF and NUL are refused as in the constructor.
        :raises EventFieldError: if the id cannot be sent.
        """
        return dataclasses.replace(self, id=id)


def encode_comment(text: str = "") -> bytes:
    """A standalone comment block, such as ``b": ping\\n\\n"``.

    Browsers ignore comments; servers send them as heartbeats, to keep proxies from closing an
    idle stream and to notice disconnected clients. A line break in ``text`` starts a new ``:``
    line, so it cannot forge a field.

    :param text: the comment; ``""`` gives ``b":\\n\\n"``.
    :raises EventFieldError: if ``text`` is not a ``str``.
    """
    if not isinstance(text, str):
        raise EventFieldError("comment", text, f"must be a str, not {type(text).__name__}")
    return b"".join(_comment_lines(text)) + b"\n"
