"""The responses flask-ssecors answers with itself: preflights, refusals, busy and deferred
streams. Each is built from plain arguments; nothing here reads the request."""

from __future__ import annotations

import math
import typing as t

from flask import Response

from ._stream import EventStream
from ._stream import StreamResponse

if t.TYPE_CHECKING:
    import collections.abc as cabc

    from ._policy import Decision
    from .exceptions import ChannelError
    from .exceptions import TokenRefused

Headers = tuple[tuple[str, str], ...]


def answer(decision: Decision) -> Response:
    """The extension's own answer to a request it decided: a preflight's ``204``, or a
    ``403`` refusal (without CORS headers)."""
    if decision.allowed:
        response = Response(status=204)
        del response.headers["Content-Type"]
        return response
    return Response("Forbidden: cross-origin request refused.\n", 403, mimetype="text/plain")


def token_refusal(error: TokenRefused) -> Response:
    """The answer to a refused token: ``401`` or ``403``, which ``EventSource`` does not retry."""
    title = "Unauthorized" if error.status == 401 else "Forbidden"
    response = Response(
        f"{title}: stream token refused ({error.reason}).\n", error.status, mimetype="text/plain"
    )
    response.headers["Cache-Control"] = "no-store"
    if error.status == 401:
        challenge = 'Bearer realm="flask-ssecors"'
        if error.reason != "token-missing":
            challenge += ', error="invalid_token"'
        response.headers["WWW-Authenticate"] = challenge
    return response


def bad_channel(error: ChannelError) -> Response:
    """``400``: the stream names a channel no broker can store (``EventSource`` does not
    retry, which is right: the same request would fail again)."""
    return Response(
        f"Bad Request: invalid channel name ({error.reason}).\n", 400, mimetype="text/plain"
    )


def unavailable(retry_ms: int) -> Response:
    """``503`` with ``Retry-After``: a stream request from a client that is not
    ``EventSource``, turned away over capacity (``EventSource`` gets :func:`stream`)."""
    response = Response(
        "Service Unavailable: too many open streams; retry later.\n", 503, mimetype="text/plain"
    )
    response.headers["Retry-After"] = str(max(1, math.ceil(retry_ms / 1000)))
    return response


def stream(
    events: EventStream,
    decision: Decision | None,
    extra: cabc.Iterable[tuple[str, str]],
    *,
    strict: bool,
) -> StreamResponse:
    """A stream response with the CORS headers of ``decision`` (when allowed) and ``extra``.

    :param events: the stream.
    :param decision: the request's CORS decision.
    :param extra: more headers (the request id).
    :param strict: raise on header conflicts (debug and testing).
    """
    cors: Headers = decision.headers if decision is not None and decision.allowed else ()
    vary = decision.vary if decision is not None else ("Origin",)
    return StreamResponse(events, (*cors, *extra), vary, strict=strict)
