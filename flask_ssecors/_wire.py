"""Frames: an event's wire bytes, with its id and type carried beside them.

Private, pure (neither Flask nor gevent). A broker encodes a published event once, without an
id (:func:`encode_without_id`); when it has assigned the id, :func:`frame` writes the ``id:``
line in front (:meth:`~flask_ssecors.Event.encode` writes ``id`` and ``event`` first, so nothing
is scanned) and keeps the id, the type and where the rest of the event starts. A stream of
several channels then relabels a frame by replacing that known prefix (:func:`relabel`): the
event is never parsed again. Bytes that come without this metadata (a broker of the user's own)
are read once by :func:`as_frame`.
"""

from __future__ import annotations

import dataclasses
import typing as t

from .events import _check_line_value
from .events import _field_line
from .events import _utf8
from .events import Event


class Frame(t.NamedTuple):
    """One event as subscribers receive it."""

    #: The wire bytes, ``id`` first; every subscriber gets this very object.
    data: bytes
    #: The event's id, or None.
    id: str | None
    #: The event's type, or None (browsers dispatch it as ``message``).
    type: str | None
    #: Where what follows the ``id`` and ``event`` lines starts in :attr:`data`.
    body: int


def encode_without_id(event: Event) -> bytes:
    """``event``'s wire bytes without its ``id``: what a broker encodes once and keeps."""
    if event.id is None:
        return event.encode()
    return dataclasses.replace(event, id=None).encode()


def _id_line(id: str) -> bytes:
    _check_line_value("id", id)
    return _field_line(b"id", _utf8("id", id))


def _event_length(event_type: str | None) -> int:
    if event_type is None:
        return 0
    return len(_field_line(b"event", _utf8("event", event_type)))


def frame(encoded: bytes, event_type: str | None, id: str) -> Frame:
    """The frame of an event encoded without an id, now given ``id``.

    :param encoded: :func:`encode_without_id`'s bytes.
    :param event_type: the event's type (``event.event``).
    :param id: the id; CR, LF and NUL are refused (:class:`~.exceptions.EventFieldError`).
    """
    line = _id_line(id)
    return Frame(line + encoded, id, event_type, len(line) + _event_length(event_type))


def frame_of(event: Event) -> Frame:
    """The frame of a whole event (a reset event, an opening block)."""
    data = event.encode()
    head = len(_field_line(b"id", _utf8("id", event.id))) if event.id is not None else 0
    return Frame(data, event.id, event.event, head + _event_length(event.event))


def stored_type(encoded: bytes) -> str | None:
    """The type of an event encoded without an id, read from its first line (``event`` comes
    first); None when it has none."""
    if encoded.startswith(b"event: "):
        return encoded[7 : encoded.index(b"\n")].decode("utf-8")
    if encoded.startswith(b"event:\n"):
        return ""
    return None


def as_frame(item: bytes | Frame) -> Frame:
    """``item`` as a frame: itself, or bytes read once (the id and type at their head, where
    :meth:`~flask_ssecors.Event.encode` writes them; anything else is kept as the body)."""
    if isinstance(item, Frame):
        return item
    offset = 0
    event_id = event_type = None
    for name in (b"id", b"event"):
        if item.startswith(name + b":", offset):
            end = item.index(b"\n", offset) + 1
            value = item[offset + len(name) + 1 : end - 1].removeprefix(b" ").decode("utf-8")
            if name == b"id":
                event_id = value
            else:
                event_type = value
            offset = end
    return Frame(item, event_id, event_type, offset)


def data_of(item: bytes | Frame) -> bytes:
    """The wire bytes of a queued item."""
    return item.data if isinstance(item, Frame) else item


def relabel(item: Frame, id: str, type_prefix: str) -> bytes:
    """``item``'s bytes with another ``id`` and its type prefixed (``message`` when it had
    none): a stream of several channels sends each channel's events this way.

    :raises EventFieldError: when the new id or type cannot be written.
    """
    event_type = type_prefix + (item.type if item.type is not None else "message")
    _check_line_value("event", event_type)
    head = _id_line(id) + _field_line(b"event", _utf8("event", event_type))
    return head + item.data[item.body :]
