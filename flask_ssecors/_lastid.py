"""Validating a ``Last-Event-ID``, the untrusted value it is.

Browsers send the header when they reconnect; a first connection can pass the cursor as the
``last_event_id`` query parameter. Either way the value comes from the client: it is refused
(treated as absent, and logged escaped) when it is too long, contains a control character, or
is not valid UTF-8. The request is read by :func:`flask_ssecors.last_event_id`.
"""

from __future__ import annotations

import typing as t

#: Longest accepted ``Last-Event-ID``, in characters.
MAX_LAST_EVENT_ID_LENGTH: t.Final = 256


def clean_last_event_id(value: str | None, *, wsgi: bool = True) -> str | None:
    """Validate one raw ``Last-Event-ID`` value; return it, or None if it is unusable.

    :param value: the raw value.
    :param wsgi: whether ``value`` is a WSGI header string (bytes decoded as latin-1), which is
        re-decoded as the UTF-8 browsers send.
    """
    if value is None or value == "":
        return None
    if len(value) > MAX_LAST_EVENT_ID_LENGTH * (4 if wsgi else 1):
        return None
    if wsgi and not value.isascii():
        try:
            value = value.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return None
    if len(value) > MAX_LAST_EVENT_ID_LENGTH:
        return None
    if not value.isprintable():
        return None
    return value
