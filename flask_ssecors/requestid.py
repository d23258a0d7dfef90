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
import re
import secrets
import typing as t

from flask import current_app
from flask import has_request_context
from flask import request

__all__ = ["MAX_REQUEST_ID_LENGTH", "RequestIdFilter", "clean_request_id", "current_request_id"]

#: Longest incoming request id that is kept.
MAX_REQUEST_ID_LENGTH: t.Final = 128
_SAFE_ID: t.Final = re.compile(rf"[A-Za-z0-9._:+/=@-]{{1,{MAX_REQUEST_ID_LENGTH}}}")
#: Shown by :class:`RequestIdFilter` when a record has no request id.
_NO_REQUEST_ID: t.Final = "-"
#: Where the request's id is kept in its WSGI environ, once chosen.
_ENVIRON_KEY: t.Final = "flask_ssecors.request_id"
#: Where an app's request-id settings are kept in ``app.extensions`` (see :func:`_configure`).
_SETTINGS_KEY: t.Final = "flask_ssecors.requestid"


class _Settings(t.NamedTuple):
    header: str
    trust: bool


def clean_request_id(value: str | None) -> str | None:
    """Return ``value`` if it is a safe token to reuse as a request id, else None.

    :param value: the raw header value.

    .. versionadded:: 0.1
    """
    if value is None or len(value) > MAX_REQUEST_ID_LENGTH:
        return None
    return value if _SAFE_ID.fullmatch(value) else None


def _configure(extensions: dict[str, t.Any], header: str | None, trust: bool) -> None:
    """Keep an app's request-id settings (``SSECORS_REQUEST_ID_HEADER``,
    ``SSECORS_TRUST_REQUEST_ID``) in its ``extensions``; called by ``init_app``."""
    if header is None:
        extensions.pop(_SETTINGS_KEY, None)
    else:
        extensions[_SETTINGS_KEY] = _Settings(header, trust)


def _request_id_for(environ: dict[str, t.Any], header: str | None, trust: bool) -> str | None:
    """The id of the request ``environ`` belongs to, chosen once and kept in it.

    :param environ: the WSGI environ of the request.
    :param header: the request id header (``SSECORS_REQUEST_ID_HEADER``); None when request
        ids are off (then None is returned).
    :param trust: whether an incoming id is reused when it is a safe token
        (``SSECORS_TRUST_REQUEST_ID``).
    """
    if header is None:
        return None
    known = environ.get(_ENVIRON_KEY)
    if known is not None:
        return t.cast(str, known)
    value = None
    if trust:
        value = clean_request_id(environ.get("HTTP_" + header.upper().replace("-", "_")))
    if value is None:
        value = secrets.token_hex(16)  # 32 hex digits, like nginx's $request_id
    environ[_ENVIRON_KEY] = value
    return value


def current_request_id() -> str | None:
    """The current request's id, or None outside a request or when request ids are off.

    .. versionadded:: 0.1
    """
    if not has_request_context():
        return None
    settings = current_app.extensions.get(_SETTINGS_KEY)
    if settings is None:
        return None
    return _request_id_for(request.environ, settings.header, settings.trust)


class RequestIdFilter(logging.Filter):
    """Sets ``record.request_id``: the current request's id, or ``"-"``.

    Every ``flask_ssecors`` logger has one; add one to your handlers to get the id on every
    record (see the module documentation). A record that already has a ``request_id`` (passed
    through ``extra=``) keeps it.

    .. versionadded:: 0.1
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = current_request_id() or _NO_REQUEST_ID
        return True
