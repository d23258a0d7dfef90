"""Request ids: one id per policed request, on the response, readable by page script, in logs.

With ``SSECORS_REQUEST_ID_HEADER = "X-Request-ID"``, every response of a policed route (streams,
``@sse.cors`` views, preflights and refusals) carries the request's id in that header, the
header is listed in ``Access-Control-Expose-Headers`` so that page script can read it from a
``fetch()`` response, and records of the ``flask_ssecors`` loggers get a ``request_id``
attribute (``%(request_id)s`` in a format string).

The incoming header is untrusted. It is kept only when it is a *safe token*: 1 to
:data:`MAX_REQUEST_ID_LENGTH` characters among ASCII letters, digits and ``-_.:+/=@``;
otherwise (or with ``SSECORS_TRUST_REQUEST_ID = False``) a new random id is generated. A kept
id cannot forge a log line, but a client chooses it, so it is not necessarily unique.

Trusting one proxy hop: when a proxy in front sets the header itself, every id the app sees was
chosen by that proxy. With nginx, ``proxy_set_header X-Request-ID $request_id;`` overwrites
whatever the client sent (nginx's ``$request_id`` is 32 hex digits). A proxy that only passes
the client's header along gives no such guarantee; if nothing in front sets the header, set
``SSECORS_TRUST_REQUEST_ID = False`` so that the app always generates the id.

To put the id on records of other loggers too, add :class:`RequestIdFilter` to the handler::

    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(request_id)s %(message)s"))

.. versionadded:: 0.1
"""

from __future__ import annotations

import logging
import typing as t

from ._request import clean_request_id as clean_request_id
from ._request import current_request_id as _current_request_id
from ._request import MAX_REQUEST_ID_LENGTH as MAX_REQUEST_ID_LENGTH

__all__ = ["MAX_REQUEST_ID_LENGTH", "RequestIdFilter", "clean_request_id", "current_request_id"]

#: Shown by :class:`RequestIdFilter` when a record has no request id.
_NO_REQUEST_ID: t.Final = "-"


def current_request_id() -> str | None:
    """The current request's id, or None outside a request or when request ids are off.

    .. versionadded:: 0.1
    """
    return _current_request_id()


class RequestIdFilter(logging.Filter):
    """Sets ``record.request_id``: the current request's id, or ``"-"``.

    Every ``flask_ssecors`` logger has one; add one to your handlers to get the id on every
    record (see the module documentation). A record that already has a ``request_id`` (passed
    through ``extra=``) keeps it.

    .. versionadded:: 0.1
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = _current_request_id() or _NO_REQUEST_ID
        return True
