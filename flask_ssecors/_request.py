"""The one place where flask-ssecors reads Flask's request and app globals.

Everything the extension needs to know about the current request is read here, once, and kept
in the request's WSGI environ (which belongs to that request alone; ``g`` lives as long as the
app context, which requests may share): the app's flask-ssecors state, strict mode, the
request's own origin, its CORS decision, its validated ``Last-Event-ID``, its request id, and
the grant of its stream token.

Other modules get these values as arguments, so that they can be tested without an app.
"""

from __future__ import annotations

import typing as t

from flask import current_app
from flask import has_app_context
from flask import has_request_context
from flask import request

from ._lastid import clean_last_event_id
from ._log import get_logger
from ._logsafe import escape
from .exceptions import SetupError
from .exceptions import TokenRefused
from .requestid import _request_id_for
from .tokens import QUERY_PARAMETER as TOKEN_PARAMETER
from .tokens import Refusal

if t.TYPE_CHECKING:
    from flask import Flask
    from flask import Request
    from werkzeug.routing import MapAdapter
    from werkzeug.routing import Rule

    from ._config import Settings
    from ._policy import Decision
    from ._state import AppState
    from .tokens import Grant
    from .tokens import StreamTokens

logger = get_logger(__name__)

#: The key of the per-app state in ``app.extensions``.
EXTENSION_KEY: t.Final = "ssecors"
LAST_EVENT_ID_HEADER: t.Final = "Last-Event-ID"
LAST_EVENT_ID_PARAMETER: t.Final = "last_event_id"

_DECISION: t.Final = "flask_ssecors.decision"
_LAST_EVENT_ID: t.Final = "flask_ssecors.last_event_id"
_GRANT: t.Final = "flask_ssecors.token_grant"
_UNSET: t.Final = object()


# -- the app -------------------------------------------------------------------------------------


def app_state() -> AppState:
    """The current app's flask-ssecors state.

    :raises SetupError: outside an app context, or when the app has no flask-ssecors.
    """
    if not has_app_context():
        raise SetupError(
            "flask-ssecors needs an application context here: call it in a request, or under "
            "`with app.app_context():`."
        )
    try:
        return t.cast("AppState", current_app.extensions[EXTENSION_KEY])
    except KeyError:
        raise SetupError(
            "flask-ssecors is not initialised on this app; call SSECors(app) or init_app(app)."
        ) from None


def has_app() -> bool:
    """Whether an app context is pushed."""
    return has_app_context()


def server_software() -> str | None:
    """The WSGI server's ``SERVER_SOFTWARE``, for messages."""
    value = request.environ.get("SERVER_SOFTWARE")
    return value if isinstance(value, str) else None


def app() -> Flask:
    """The current app."""
    return t.cast("Flask", current_app._get_current_object())  # type: ignore[attr-defined]


def strict() -> bool:
    """Whether the current app runs in debug or testing mode: conflicts raise there."""
    return bool(current_app.debug or current_app.testing)


# -- the request ---------------------------------------------------------------------------------


def current() -> Request:
    """The current request object itself (one lookup through Flask's context, instead of one
    per attribute read through the ``request`` proxy)."""
    return t.cast("Request", request._get_current_object())  # type: ignore[attr-defined]


def environ() -> dict[str, t.Any]:
    """The current request's WSGI environ."""
    environ: dict[str, t.Any] = request.environ
    return environ


def endpoint() -> str | None:
    """The endpoint the current request matched (None outside a request, or with no route)."""
    return request.endpoint if has_request_context() else None


def url_rule() -> Rule | None:
    """The URL rule the current request matched."""
    return request.url_rule


def url_adapter() -> MapAdapter:
    """A URL adapter bound to the current request (to match it with another method)."""
    return t.cast("MapAdapter", current_app.create_url_adapter(request))


def remote_addr() -> str | None:
    """The client's address as Werkzeug sees it (so ``ProxyFix`` applies)."""
    return request.remote_addr


def is_secure() -> bool:
    """Whether the current request came over https (as Werkzeug sees it)."""
    return request.is_secure


def multiprocess() -> bool:
    """Whether the WSGI server says it runs several worker processes."""
    return bool(request.environ.get("wsgi.multiprocess"))


def own_origin() -> str:
    """The request's own origin, ``scheme://host[:port]`` as Werkzeug sees it (so ProxyFix
    applies): an ``Origin`` equal to it is same-origin."""
    return f"{request.scheme}://{request.host}".lower()


def decision(environ: dict[str, t.Any] | None = None) -> Decision | None:
    """The CORS decision made for the current request (or the one ``environ`` belongs to),
    if one was made."""
    if environ is None:
        environ = request.environ
    return t.cast("Decision | None", environ.get(_DECISION))


def keep_decision(environ: dict[str, t.Any], made: Decision) -> None:
    """Remember the CORS decision of the request ``environ`` belongs to."""
    environ[_DECISION] = made


def accepts_event_stream() -> bool:
    """Whether the request comes from an ``EventSource`` (``Accept: text/event-stream``)."""
    return "text/event-stream" in request.environ.get("HTTP_ACCEPT", "")


def describe() -> tuple[str, str, str]:
    """The method, path and ``Origin`` of the request, escaped for a log line."""
    return (
        escape(request.method, 16),
        escape(request.path),
        escape(request.environ.get("HTTP_ORIGIN")),
    )


def last_event_id() -> str | None:
    """The current request's validated ``Last-Event-ID``, or None.

    Reads the ``Last-Event-ID`` header (sent by browsers on reconnect), else the
    ``last_event_id`` query parameter (for a first connection). An invalid value is treated as
    absent and logged, escaped. Outside a request, None.

    .. versionadded:: 0.1
    """
    if not has_request_context():
        return None
    environ = request.environ
    cached = environ.get(_LAST_EVENT_ID, _UNSET)
    if cached is not _UNSET:
        return t.cast("str | None", cached)
    raw = environ.get("HTTP_LAST_EVENT_ID")
    wsgi = True
    if raw is None:
        raw = request.args.get(LAST_EVENT_ID_PARAMETER)
        wsgi = False
    value = clean_last_event_id(raw, wsgi=wsgi)
    if raw and value is None:
        logger.warning("ignored invalid Last-Event-ID %s on %s", escape(raw), escape(request.path))
    environ[_LAST_EVENT_ID] = value
    return value


# -- request ids ---------------------------------------------------------------------------------


def request_id(settings: Settings) -> str | None:
    """The current request's id, chosen once and kept; None when request ids are off."""
    return _request_id_for(request.environ, settings.request_id_header, settings.trust_request_id)


# -- stream tokens -------------------------------------------------------------------------------


def token_origin() -> str:
    """The origin a token of the current request is bound to: its ``Origin`` header, or the
    request's own origin when it sent none (same-origin ``GET`` requests do not)."""
    return request.environ.get("HTTP_ORIGIN") or own_origin()


def user_agent() -> str:
    """The current request's ``User-Agent`` (empty when absent)."""
    return t.cast(str, request.environ.get("HTTP_USER_AGENT", ""))


def verify_token(tokens: StreamTokens, cookie: str) -> Grant:
    """Check the current request's token and remember its grant for the request.

    The cookie is tried first, then the ``token`` query parameter; the first valid one wins.

    :param tokens: the app's token codec.
    :param cookie: the name of the token cookie.
    :raises TokenRefused: when neither is valid (with the reason of the last one tried).
    """
    presented = [request.cookies.get(cookie), request.args.get(TOKEN_PARAMETER)]
    candidates = [token for token in presented if token]
    if not candidates:
        raise Refusal.MISSING.error()
    origin, agent = token_origin(), user_agent()
    failure: TokenRefused | None = None
    for token in candidates:
        try:
            grant = tokens.verify(token, origin=origin, user_agent=agent)
        except TokenRefused as error:
            failure = error
            continue
        request.environ[_GRANT] = grant
        return grant
    assert failure is not None
    raise failure


def grant() -> Grant | None:
    """The grant of the current request's verified token, or None."""
    if not has_request_context():
        return None
    return t.cast("Grant | None", request.environ.get(_GRANT))


def check_channel(channel: str) -> None:
    """Refuse ``channel`` when the current request's token does not grant it.

    :raises TokenRefused: with :attr:`Refusal.CHANNEL_NOT_GRANTED`.
    """
    granted = grant()
    if granted is not None and not granted.allows_channel(channel):
        raise Refusal.CHANNEL_NOT_GRANTED.error()
