"""Signed stream tokens: authorization for ``EventSource``, which cannot send headers.

A page asks an ordinary endpoint of the app for a token (``sse.issue_token(subject)``), then
opens the stream with it in a cookie or in the ``token`` query parameter. A token is signed
with the app's ``SECRET_KEY`` (through itsdangerous, with its own salt, so no other signed value
of the app can pass for one) and bound to:

- the ``Origin`` of the request that asked for it (the request's own origin when it sent none,
  as same-origin ``GET`` requests do);
- a hash of that request's ``User-Agent``;
- the channels it may read (all channels when None);
- an expiry (``max_age`` seconds after it was issued).

A stream view decorated with ``@sse.stream(require_token=True)`` refuses, before the view runs,
a request whose token is missing (``401``), not signed by the app (``401``), expired (``401``),
bound to another origin or user agent (``403``); and, at the latest when the view calls
``sse.subscribe(channel)``, a channel the token does not grant (``403``). Any non-``200``
status tells ``EventSource`` to stop reconnecting; the page fetches a new token first. The
reason is logged and counted (``sse.stats()["token_refusals"]``); the token never is.

An open stream ends when its token expires, after a final :data:`TOKEN_EXPIRED_EVENT` event
telling the page to fetch a new token.

Keeping tokens out of logs
--------------------------

Prefer the cookie (:meth:`~flask_ssecors.SSECors.set_token_cookie`): it never appears in a URL.
A token in the query string is part of the request line, which access logs record. flask-ssecors
never logs it, but gunicorn's default access log format does (``%(r)s`` is the request line);
log the path without the query string instead, e.g. in ``gunicorn.conf.py``::

    from flask_ssecors.tokens import ACCESS_LOG_FORMAT
    access_log_format = ACCESS_LOG_FORMAT

which is gunicorn's default format with ``"%(m)s %(U)s %(H)s"`` (method, path, protocol) in
place of ``"%(r)s"``. Proxies in front log request lines too (nginx: use ``$uri`` rather than
``$request`` in ``log_format``).

.. versionadded:: 0.1
"""

from __future__ import annotations

import base64
import collections.abc as cabc
import dataclasses
import enum
import hashlib
import math
import time
import typing as t

import itsdangerous

from .exceptions import TokenRefused
from .exceptions import UsageError

__all__ = [
    "ACCESS_LOG_FORMAT",
    "MAX_TOKEN_AGE",
    "MAX_TOKEN_LENGTH",
    "QUERY_PARAMETER",
    "TOKEN_EXPIRED_EVENT",
    "Grant",
    "Refusal",
    "StreamTokens",
]

#: The salt that sets stream tokens apart from every other value the app signs.
_SALT: t.Final = "flask-ssecors.stream-token"
#: The query parameter that may carry a token.
QUERY_PARAMETER: t.Final = "token"
#: The ``event`` name of the last event of a stream whose token expired.
TOKEN_EXPIRED_EVENT: t.Final = "ssecors-token-expired"
#: Longest token accepted; anything longer is refused unread.
MAX_TOKEN_LENGTH: t.Final = 4096
#: Longest lifetime a token may be given, in seconds.
MAX_TOKEN_AGE: t.Final = 7 * 86400.0
#: gunicorn's default access log format with the path in place of the request line, so that a
#: token in the query string is not written to the access log.
ACCESS_LOG_FORMAT: t.Final = (
    '%(h)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s "%(f)s" "%(a)s"'
)


class Refusal(enum.StrEnum):
    """Why a token was refused (log, signal and statistics labels)."""

    MISSING = "token-missing"
    INVALID = "token-invalid"
    EXPIRED = "token-expired"
    OTHER_ORIGIN = "token-other-origin"
    OTHER_USER_AGENT = "token-other-user-agent"
    CHANNEL_NOT_GRANTED = "token-channel-not-granted"

    @property
    def status(self) -> int:
        """The status of the answer: ``401`` (authenticate again) or ``403``."""
        return 401 if self in _UNAUTHENTICATED else 403

    def error(self) -> TokenRefused:
        """The :class:`~flask_ssecors.exceptions.TokenRefused` for this reason."""
        return TokenRefused(self, self.status)


#: Refusals answered ``401`` (authenticate again); the others are answered ``403``.
_UNAUTHENTICATED: t.Final = frozenset({Refusal.MISSING, Refusal.INVALID, Refusal.EXPIRED})


@dataclasses.dataclass(frozen=True, slots=True)
class Grant:
    """What a valid token grants.

    :param subject: the subject given to :meth:`StreamTokens.issue` (a user id, say).
    :param origin: the origin the token is bound to.
    :param channels: the channels it may read, or None for every channel.
    :param expires: when it expires, in seconds since the epoch.
    """

    subject: str
    origin: str
    channels: frozenset[str] | None
    expires: float

    def allows_channel(self, channel: str) -> bool:
        """Whether the token grants ``channel``."""
        return self.channels is None or channel in self.channels


def _hash_user_agent(user_agent: str) -> str:
    """A short digest of a ``User-Agent`` value, as tokens carry it."""
    digest = hashlib.sha256(user_agent.encode("utf-8", "surrogateescape")).digest()[:12]
    return base64.urlsafe_b64encode(digest).decode("ascii")


class StreamTokens:
    """Signs and checks stream tokens. Pure: it reads no request.

    :param secret_keys: the signing keys, oldest first (Flask's ``SECRET_KEY_FALLBACKS``, then
        ``SECRET_KEY``); the last signs, every one verifies.
    :param default_max_age: the lifetime of a token issued without ``max_age``, in seconds.
    :param clock: the wall clock, seconds since the epoch (tests replace it).
    """

    def __init__(
        self,
        secret_keys: cabc.Sequence[str | bytes],
        *,
        default_max_age: float,
        clock: cabc.Callable[[], float] = time.time,
    ) -> None:
        keys = [key.encode("utf-8") if isinstance(key, str) else key for key in secret_keys]
        self._serializer = itsdangerous.URLSafeSerializer(
            keys, salt=_SALT, signer_kwargs={"digest_method": hashlib.sha256}
        )
        self.default_max_age = default_max_age
        self.clock = clock

    def issue(
        self,
        subject: str,
        *,
        origin: str,
        user_agent: str,
        channels: cabc.Iterable[str] | None = None,
        max_age: float | None = None,
    ) -> str:
        """Sign a token for ``subject``, bound to ``origin`` and ``user_agent``.

        :raises flask_ssecors.exceptions.UsageError: (a ``TypeError``) when ``subject`` or a
            channel is not a string, or ``channels`` is a single string rather than a
            collection of them; (a ``ValueError``) when ``max_age`` is not a number of seconds
            above zero and at most :data:`MAX_TOKEN_AGE`.
        """
        if not isinstance(subject, str):
            raise UsageError(f"a token subject must be a str, not {type(subject).__name__}")
        granted: list[str] | None = None
        if channels is not None:
            if isinstance(channels, str | bytes):
                raise UsageError("channels must be a collection of channel names, not one string")
            granted = sorted(set(channels))
            if not all(isinstance(channel, str) for channel in granted):
                raise UsageError("channel names must be strings")
        lifetime = self.default_max_age if max_age is None else max_age
        if (
            isinstance(lifetime, bool)
            or not isinstance(lifetime, int | float)
            or not math.isfinite(lifetime)
            or not 0 < lifetime <= MAX_TOKEN_AGE
        ):
            raise UsageError(
                f"max_age must be a number of seconds above 0 and at most {MAX_TOKEN_AGE:g}"
            )
        expires_ms = math.floor((self.clock() + lifetime) * 1000)
        payload = {
            "s": subject,
            "o": origin,
            "u": _hash_user_agent(user_agent),
            "c": granted,
            "e": expires_ms,
        }
        return self._serializer.dumps(payload)

    def verify(self, token: str, *, origin: str, user_agent: str) -> Grant:
        """Check ``token`` for a request from ``origin`` with ``user_agent``.

        :raises TokenRefused: with one of the :class:`Refusal` reasons.
        """
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise Refusal.INVALID.error()
        try:
            payload = self._serializer.loads(token)
        except itsdangerous.BadData:
            raise Refusal.INVALID.error() from None
        grant = _grant_of(payload)
        if grant is None:
            raise Refusal.INVALID.error()
        if self.clock() >= grant.expires:
            raise Refusal.EXPIRED.error()
        if origin != grant.origin:
            raise Refusal.OTHER_ORIGIN.error()
        if _hash_user_agent(user_agent) != payload["u"]:
            raise Refusal.OTHER_USER_AGENT.error()
        return grant


def _grant_of(payload: object) -> Grant | None:
    """The grant a signed payload describes, or None when it is not one of ours."""
    if not isinstance(payload, dict):
        return None
    subject, origin, ua, channels, expires = (payload.get(k) for k in ("s", "o", "u", "c", "e"))
    if not (isinstance(subject, str) and isinstance(origin, str) and isinstance(ua, str)):
        return None
    if isinstance(expires, bool) or not isinstance(expires, int):
        return None
    if channels is not None and not (
        isinstance(channels, list) and all(isinstance(c, str) for c in channels)
    ):
        return None
    granted = frozenset(channels) if channels is not None else None
    return Grant(subject, origin, granted, expires / 1000)
