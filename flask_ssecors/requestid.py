"""Request ids: one id per policed request, on the response, readable by page script, in logs.

With ``SSECORS_REQUEST_ID_HEADER = "X-Request-ID"``, every response of a policed route (streams,
``@sse.cors`` views, preflights and refusals) carries the request's id in that header, the
header is listed in ``Access-Control-Expose-Headers`` so that page script can read it from a
``fetch()`` response, and records of the ``flask_ssecors`` logger get a ``request_id``
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

import dataclasses
import logging
import re
import secrets
import typing as t

from flask import current_app
from flask import has_request_context
from flask import request

if t.TYPE_CHECKING:
    from werkzeug.wrappers import Response

    from ._config import CorsOptions
    from ._config import Settings

#: Longest incoming request id that is kept.
MAX_REQUEST_ID_LENGTH: t.Final = 128
_SAFE_ID: t.Final = re.compile(rf"[A-Za-z0-9._:+/=@-]{{1,{MAX_REQUEST_ID_LENGTH}}}")
_ENVIRON_KEY: t.Final = "flask_ssecors.request_id"
#: Shown by :class:`RequestIdFilter` when a record has no request id.
NO_REQUEST_ID: t.Final = "-"


def clean_request_id(value: str | None) -> str | None:
    """Return ``value`` if it is a safe token to reuse as a request id, else None.

    :param value: the raw header value.
    """
    if value is None or len(value) > MAX_REQUEST_ID_LENGTH:
        return None
    return value if _SAFE_ID.fullmatch(value) else None


def new_request_id() -> str:
    """A new random request id: 32 hex digits, like nginx's ``$request_id``."""
    return secrets.token_hex(16)


def request_id_for(settings: Settings, environ: dict[str, t.Any]) -> str | None:
    """The request id of the request ``environ`` belongs to, chosen once and kept in it.

    :param settings: the app's settings; None is returned when request ids are off.
    :param environ: the WSGI environ of the request.
    """
    header = settings.request_id_header
    if header is None:
        return None
    known = environ.get(_ENVIRON_KEY)
    if known is not None:
        return t.cast(str, known)
    value = None
    if settings.trust_request_id:
        raw = environ.get("HTTP_" + header.upper().replace("-", "_"))
        value = clean_request_id(raw)
    if value is None:
        value = new_request_id()
    environ[_ENVIRON_KEY] = value
    return value


def current_request_id() -> str | None:
    """The current request's id, or None outside a request or when request ids are off.

    .. versionadded:: 0.1
    """
    if not has_request_context():
        return None
    state = current_app.extensions.get("ssecors")
    if state is None:
        return None
    return request_id_for(state.settings, request.environ)


def stamp(settings: Settings, response: Response) -> None:
    """Put the current request's id on ``response`` (a no-op when request ids are off)."""
    header = settings.request_id_header
    if header is not None:
        value = request_id_for(settings, request.environ)
        if value is not None:
            response.headers[header] = value


def exposing_request_id(options: CorsOptions, header: str | None) -> CorsOptions:
    """``options`` with the request id header added to the exposed headers, so that page
    script can read it (unchanged when request ids are off or every header is exposed)."""
    if header is None:
        return options
    name = header.lower()
    if name in options.expose_headers or "*" in options.expose_headers:
        return options
    return dataclasses.replace(options, expose_headers=(*options.expose_headers, name))


class RequestIdFilter(logging.Filter):
    """Sets ``record.request_id``: the current request's id, or ``"-"``.

    flask-ssecors adds one to its own ``flask_ssecors`` logger when request ids are on; add
    one to your handlers to get the id on every record (see the module documentation). A
    record that already has a ``request_id`` (passed through ``extra=``) keeps it.

    .. versionadded:: 0.1
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = current_request_id() or NO_REQUEST_ID
        return True


def install_log_filter(logger: logging.Logger) -> None:
    """Add a :class:`RequestIdFilter` to ``logger`` unless it has one."""
    if not any(isinstance(f, RequestIdFilter) for f in logger.filters):
        logger.addFilter(RequestIdFilter())
