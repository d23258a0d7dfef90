"""The compiled CORS policy and its per-request decision.

Pure module. :func:`compile_policy` turns validated :class:`~flask_ssecors._config.CorsOptions`
into an immutable :class:`CorsPolicy` once, at ``init_app``; the request path
(:meth:`CorsPolicy.decide`) only looks values up and returns precomputed header tuples. Header
values are immutable tuples of strings, so no response can ever change what another receives.

Comments cite the Fetch standard step each branch implements.
"""

from __future__ import annotations

import collections.abc as cabc
import dataclasses
import enum
import types
import typing as t

from ._fetch import ACAC
from ._fetch import ACAH
from ._fetch import ACAM
from ._fetch import ACAO
from ._fetch import ACAPN
from ._fetch import ACEH
from ._fetch import ACMA
from ._origins import is_serialized_origin
from ._origins import OriginMatcher

if t.TYPE_CHECKING:
    from ._config import CorsOptions

#: ``Vary`` entries for ordinary responses and for preflight responses.
VARY_ACTUAL: t.Final = ("Origin",)
VARY_PREFLIGHT: t.Final = (
    "Origin",
    "Access-Control-Request-Method",
    "Access-Control-Request-Headers",
    "Access-Control-Request-Private-Network",
)

_VARY_ACTUAL_TEXT: t.Final = ", ".join(VARY_ACTUAL)
_VARY_PREFLIGHT_TEXT: t.Final = ", ".join(VARY_PREFLIGHT)

#: Bounds on ``Access-Control-Request-Headers`` (a list of names; browsers send a few).
MAX_REQUEST_HEADERS_LENGTH: t.Final = 2048
MAX_REQUEST_HEADER_NAMES: t.Final = 64
#: Most decisions for origins matched by a pattern (or ``"*"``) a policy keeps, per policy.
MAX_LEARNED_ORIGINS: t.Final = 1024
_TOKEN: t.Final = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")

Headers = tuple[tuple[str, str], ...]


class Reason(enum.StrEnum):
    """The reasons a decision gives (also used as log and statistics labels)."""

    ALLOWED = "allowed"
    SAME_ORIGIN = "same-origin"
    NO_ORIGIN = "no-origin"
    NO_ORIGIN_REFUSED = "no-origin-refused"
    MALFORMED_ORIGIN = "malformed-origin"
    ORIGIN_NOT_ALLOWED = "origin-not-allowed"
    METHOD_NOT_ALLOWED = "method-not-allowed"
    HEADERS_NOT_ALLOWED = "headers-not-allowed"
    MALFORMED_HEADERS = "malformed-request-headers"
    #: The policy selector failed or returned something that is not a declared policy.
    SELECTION_FAILED = "policy-selection-failed"


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one request.

    :param allowed: whether the request (or the preflighted request) may proceed.
    :param preflight: whether this request is a CORS preflight, answered by the extension.
    :param reason: why.
    :param headers: the ``Access-Control-*`` headers to add (``Vary`` is handled separately).
    """

    allowed: bool
    preflight: bool
    reason: Reason
    headers: Headers = ()

    @property
    def status(self) -> int | None:
        """The status the extension answers with, or None when the view answers."""
        if not self.allowed:
            return 403
        return 204 if self.preflight else None

    @property
    def vary(self) -> tuple[str, ...]:
        """The ``Vary`` entries this response needs."""
        return VARY_PREFLIGHT if self.preflight else VARY_ACTUAL

    @property
    def vary_header(self) -> str:
        """:attr:`vary` as one header value."""
        return _VARY_PREFLIGHT_TEXT if self.preflight else _VARY_ACTUAL_TEXT


_NO_ORIGIN = Decision(True, False, Reason.NO_ORIGIN)
_NO_ORIGIN_REFUSED = Decision(False, False, Reason.NO_ORIGIN_REFUSED)
_SAME_ORIGIN = Decision(True, False, Reason.SAME_ORIGIN)


@dataclasses.dataclass(frozen=True, slots=True)
class CorsPolicy:
    """An immutable, compiled CORS policy. Build it with :func:`compile_policy`."""

    options: CorsOptions
    matcher: OriginMatcher
    allowed_methods: frozenset[str]
    allowed_headers: frozenset[str]
    #: Headers every allowed actual response gets besides ``Access-Control-Allow-Origin``.
    actual_extra: Headers
    #: Headers every allowed preflight response gets besides the origin and method.
    preflight_extra: Headers
    #: Precomputed decisions for exact allowed origins.
    actual_by_origin: t.Mapping[str, Decision]
    #: Decisions for allowed origins that matched a pattern, kept once made (bounded by
    #: :data:`MAX_LEARNED_ORIGINS`; immutable values, so sharing them is safe).
    learned: dict[str, Decision] = dataclasses.field(
        default_factory=dict, compare=False, repr=False
    )

    def known(self, origin: str | None) -> Decision | None:
        """The decision for an actual (not preflight) request from ``origin``, when it is
        known without matching: no ``Origin``, an exact allowed origin, or one matched before.
        None means :meth:`decide` must decide."""
        if origin is None:
            return _NO_ORIGIN if self.options.serve_without_origin else _NO_ORIGIN_REFUSED
        return self.actual_by_origin.get(origin) or self.learned.get(origin)

    def allows_origin(self, origin: str) -> bool:
        """Whether ``origin`` (a raw ``Origin`` value) is on the allowlist."""
        if self.options.allow_any_origin:
            return is_serialized_origin(origin)
        return self.matcher.allows(origin)

    def decide(
        self,
        *,
        method: str,
        origin: str | None,
        own_origin: str | cabc.Callable[[], str],
        request_method: str | None = None,
        request_headers: str | None = None,
        private_network: bool = False,
        route_methods: t.Collection[str] | None = None,
    ) -> Decision:
        """Decide one request.

        :param method: the request method.
        :param origin: the raw ``Origin`` header, or None when absent.
        :param own_origin: the request's own origin (``scheme://host[:port]`` as the WSGI
            server and any proxy fix see it), or a function that returns it (called only for
            an origin that is not allowed); an ``Origin`` equal to it is same-origin.
        :param request_method: ``Access-Control-Request-Method``, if present.
        :param request_headers: ``Access-Control-Request-Headers``, if present.
        :param private_network: whether ``Access-Control-Request-Private-Network: true`` was sent.
        :param route_methods: the methods the route accepts, to refuse preflights for others.
        """
        # Fetch, "CORS-preflight request": OPTIONS with Origin and Access-Control-Request-Method.
        preflight = method == "OPTIONS" and origin is not None and request_method is not None
        if origin is None:
            return _NO_ORIGIN if self.options.serve_without_origin else _NO_ORIGIN_REFUSED
        if not preflight:
            known = self.known(origin)
            if known is not None:
                return known
        if not self.allows_origin(origin):
            if origin == (own_origin() if callable(own_origin) else own_origin):
                return _SAME_ORIGIN
            reason = (
                Reason.ORIGIN_NOT_ALLOWED
                if is_serialized_origin(origin)
                else Reason.MALFORMED_ORIGIN
            )
            return Decision(False, preflight, reason)
        acao = "*" if self.options.allow_any_origin else origin
        if not preflight:
            decision = Decision(True, False, Reason.ALLOWED, ((ACAO, acao), *self.actual_extra))
            learned = self.learned
            if len(learned) >= MAX_LEARNED_ORIGINS:
                learned.clear()
            learned[origin] = decision
            return decision
        assert request_method is not None
        # Fetch, "CORS-preflight fetch" step: the method must be allowed (methods are
        # case-sensitive; browsers upper-case the standard ones).
        if request_method not in self.allowed_methods or (
            route_methods is not None and request_method not in route_methods
        ):
            return Decision(False, True, Reason.METHOD_NOT_ALLOWED)
        names = _parse_header_names(request_headers)
        if names is None:
            return Decision(False, True, Reason.MALFORMED_HEADERS)
        for name in names:
            if name not in self.allowed_headers and not (
                self.options.allow_any_header and name != "authorization"
            ):
                return Decision(False, True, Reason.HEADERS_NOT_ALLOWED)
        headers: list[tuple[str, str]] = [(ACAO, acao), (ACAM, request_method)]
        headers.extend(self.preflight_extra)
        if private_network and self.options.allow_private_network:
            headers.append((ACAPN, "true"))
        return Decision(True, True, Reason.ALLOWED, tuple(headers))


def _parse_header_names(value: str | None) -> list[str] | None:
    """Split ``Access-Control-Request-Headers``; None when it is malformed or overlong."""
    if not value:
        return []
    if len(value) > MAX_REQUEST_HEADERS_LENGTH:
        return None
    names = []
    for part in value.split(",", MAX_REQUEST_HEADER_NAMES + 1):
        name = part.strip(" \t").lower()
        if not name:
            continue
        if not set(name) <= _TOKEN:
            return None
        names.append(name)
    if len(names) > MAX_REQUEST_HEADER_NAMES:
        return None
    return names


def compile_policy(options: CorsOptions) -> CorsPolicy:
    """Compile validated options into an immutable :class:`CorsPolicy`.

    :param options: validated options from :mod:`flask_ssecors._config`.
    """
    actual: list[tuple[str, str]] = []
    preflight: list[tuple[str, str]] = []
    if options.allow_credentials:
        actual.append((ACAC, "true"))
        preflight.append((ACAC, "true"))
    if options.expose_headers:
        actual.append((ACEH, ", ".join(options.expose_headers)))
    allow_headers = list(options.allowed_headers)
    if options.allow_any_header:
        allow_headers.insert(0, "*")
    if allow_headers:
        preflight.append((ACAH, ", ".join(allow_headers)))
    preflight.append((ACMA, str(options.max_age)))
    actual_extra = tuple(actual)
    matcher = OriginMatcher(options.origins)
    by_origin = {
        str(pattern): Decision(True, False, Reason.ALLOWED, ((ACAO, str(pattern)), *actual_extra))
        for pattern in options.origins
        if not pattern.wildcard
    }
    return CorsPolicy(
        options=options,
        matcher=matcher,
        allowed_methods=frozenset(options.allowed_methods),
        allowed_headers=frozenset(options.allowed_headers),
        actual_extra=actual_extra,
        preflight_extra=tuple(preflight),
        actual_by_origin=types.MappingProxyType(by_origin),
    )
