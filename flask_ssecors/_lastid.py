"""The request's ``Last-Event-ID``, validated as the untrusted value it is.

Browsers send the header when they reconnect; a first connection can pass the cursor as the
``last_event_id`` query parameter. Either way the value comes from the client: it is refused
(treated as absent, and logged escaped) when it is too long, contains a control character, or
is not valid UTF-8.
"""

from __future__ import annotations

import logging
import typing as t

from flask import has_request_context
from flask import request

from ._logsafe import escape

#: Longest accepted ``Last-Event-ID``, in characters.
MAX_LAST_EVENT_ID_LENGTH: t.Final = 256
HEADER: t.Final = "Last-Event-ID"
QUERY_PARAMETER: t.Final = "last_event_id"

logger = logging.getLogger("flask_ssecors")
_UNSET: t.Final = object()
#: Where the validated value is kept: per request (``g`` may outlive a request).
_CACHE_KEY: t.Final = "flask_ssecors.last_event_id"


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


def last_event_id() -> str | None:
    """The current request's validated ``Last-Event-ID``, or None.

    Reads the ``Last-Event-ID`` header (sent by browsers on reconnect), else the
    ``last_event_id`` query parameter (for a first connection). An invalid value is treated as
    absent and logged, escaped.

    .. versionadded:: 0.1
    """
    if not has_request_context():
        return None
    cached = request.environ.get(_CACHE_KEY, _UNSET)
    if cached is not _UNSET:
        return t.cast("str | None", cached)
    raw = request.headers.get(HEADER)
    wsgi = True
    if raw is None:
        raw = request.args.get(QUERY_PARAMETER)
        wsgi = False
    value = clean_last_event_id(raw, wsgi=wsgi)
    if raw and value is None:
        logger.warning("ignored invalid Last-Event-ID %s on %s", escape(raw), escape(request.path))
    request.environ[_CACHE_KEY] = value
    return value
