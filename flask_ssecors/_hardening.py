"""The parts of :class:`~flask_ssecors.SSECors` that harden a deployment.

:class:`HardeningMixin` gives the extension its named policies and policy selector
(:mod:`flask_ssecors._selection`), stream tokens (:mod:`flask_ssecors.tokens`), capacity,
lifetime and shutdown (:mod:`flask_ssecors._lifecycle`), request ids
(:mod:`flask_ssecors.requestid`) and statistics (:mod:`flask_ssecors.stats`).
:class:`AppHardening` is what it keeps per app, in the extension's per-app state.

.. versionadded:: 0.1
"""

from __future__ import annotations

import logging
import time
import typing as t

from flask import current_app
from flask import request

from ._lifecycle import StreamTracker
from ._ownership import foreign_header_issues
from ._policy import compile_policy
from ._selection import check_policy_options
from ._selection import choose
from ._selection import merge_policy_options
from .exceptions import ConfigError
from .exceptions import ConfigIssue
from .exceptions import TokenRefused
from .requestid import exposing_request_id
from .requestid import install_log_filter
from .requestid import request_id_for
from .tokens import check_channel
from .tokens import current_grant
from .tokens import log_refusal
from .tokens import refusal_response
from .tokens import request_origin
from .tokens import request_user_agent
from .tokens import StreamTokens
from .tokens import verify_request

if t.TYPE_CHECKING:
    import collections.abc as cabc
    import weakref

    from flask import Flask
    from flask import Response

    from ._config import CorsOptions
    from ._config import Settings
    from ._config import StreamOptions
    from ._extension import _State
    from ._policy import CorsPolicy
    from ._policy import Decision
    from ._selection import Decider
    from ._selection import Selector
    from ._stream import EventStream
    from .brokers import Subscription
    from .stats import StatsSnapshot

logger = logging.getLogger("flask_ssecors")

S = t.TypeVar("S", bound="Selector")


def compile_cors(settings: Settings, options: CorsOptions | None = None) -> CorsPolicy:
    """Compile ``options`` (default: the settings' own) with the request id header exposed."""
    return compile_policy(exposing_request_id(options or settings.cors, settings.request_id_header))


def _token_codec(app: Flask, settings: Settings) -> StreamTokens | None:
    secret = app.secret_key
    if not secret:
        return None
    fallbacks = app.config.get("SECRET_KEY_FALLBACKS") or []
    keys: list[str | bytes] = [*fallbacks, secret]
    return StreamTokens(keys, default_max_age=settings.token_max_age)


class AppHardening:
    """What the hardening features keep for one app.

    :param app: the app.
    :param settings: its validated settings.
    """

    def __init__(self, app: Flask, settings: Settings) -> None:
        self.streams = StreamTracker(app, settings)
        #: Signs and checks stream tokens; None when the app has no ``SECRET_KEY``.
        self.tokens = _token_codec(app, settings)
        #: The named policies (``sse.policy``), compiled for this app.
        self.policies: dict[str, CorsPolicy] = {}

    def token_issues(self, stream: StreamOptions) -> list[ConfigIssue]:
        """The problem with a view that requires tokens on an app that cannot sign them."""
        if stream.require_token and self.tokens is None:
            return [
                ConfigIssue(
                    "require_token",
                    True,
                    "stream tokens are signed with the app's SECRET_KEY, which is not set; "
                    "set SECRET_KEY before init_app.",
                )
            ]
        return []


def _state() -> _State:
    return t.cast("_State", current_app.extensions["ssecors"])


def _strict() -> bool:
    return bool(current_app.debug or current_app.testing)


class HardeningMixin:
    """Named policies, stream tokens, capacity and statistics for
    :class:`~flask_ssecors.SSECors` (see the module documentation).

    .. versionadded:: 0.1
    """

    _states: weakref.WeakSet[_State]

    def __init__(self) -> None:
        self._policy_options: dict[str, dict[str, object]] = {}
        self._selector: Selector | None = None

    # -- named policies --------------------------------------------------------------------

    def policy(self, name: str, **options: t.Any) -> None:
        """Declare a named CORS policy, for :meth:`policy_selector` to choose per request.

        The options are those of :meth:`~flask_ssecors.SSECors.cors` (``origins``, required;
        ``allow_credentials``, ``allowed_headers``, ``expose_headers``, ``allowed_methods``,
        ``max_age``...). Unset options come from the app's settings. The policy is validated
        like the app's own, now for apps already initialised and at ``init_app`` for later
        ones; every problem is raised together.

        :param name: the name the selector returns.
        :raises ConfigError: when the name or an option is refused, or the name is taken.

        .. versionadded:: 0.1
        """
        checked = check_policy_options(name, options)
        if name in self._policy_options:
            raise ConfigError(
                [ConfigIssue("name", name, "a policy with this name is already declared.")],
                where="flask-ssecors policies",
            )
        issues: list[ConfigIssue] = []
        compiled = []
        for state in list(self._states):
            settings, problems = merge_policy_options(state.settings, name, checked)
            issues.extend(problems)
            if settings is not None:
                compiled.append((state, compile_cors(state.settings, settings.cors)))
        if issues:
            raise ConfigError(issues, where="flask-ssecors policies")
        for state, policy in compiled:
            state.hardening.policies[name] = policy
        self._policy_options[name] = checked

    def policy_selector(self, selector: S) -> S:
        """Register the function that picks a named policy per request (a decorator).

        ``selector()`` runs once per policed request, in the request context, and returns the
        name of a policy declared with :meth:`policy`, or None for the view's own policy. It
        never returns origins: anything but a declared name is refused (see
        :mod:`flask_ssecors._selection`).

        .. versionadded:: 0.1
        """
        if not callable(selector):
            raise TypeError("policy_selector decorates a function that returns a policy name")
        self._selector = selector
        return selector

    # -- tokens ----------------------------------------------------------------------------

    def issue_token(
        self,
        subject: str,
        *,
        channels: cabc.Iterable[str] | None = None,
        max_age: float | None = None,
    ) -> str:
        """Sign a stream token for ``subject``, bound to the current request.

        Call it in the view the page asks for a token (an ``@sse.cors`` view, after the page's
        user was authenticated). The token is bound to the request's ``Origin`` (its own
        origin when it sent none), a hash of its ``User-Agent``, ``channels``, and an expiry;
        see :mod:`flask_ssecors.tokens`.

        :param subject: who the token is for (a user id); :meth:`token_subject` returns it.
        :param channels: the channels the token may read; None for every channel.
        :param max_age: lifetime in seconds; default ``SSECORS_TOKEN_MAX_AGE``.
        :raises RuntimeError: when the app has no ``SECRET_KEY``.

        .. versionadded:: 0.1
        """
        tokens = _state().hardening.tokens
        if tokens is None:
            raise RuntimeError("stream tokens are signed with SECRET_KEY: set it before init_app")
        return tokens.issue(
            subject,
            origin=request_origin(),
            user_agent=request_user_agent(),
            channels=channels,
            max_age=max_age,
        )

    def token_subject(self) -> str | None:
        """The subject of the current request's verified stream token, or None.

        Call it in a ``require_token=True`` stream view, before returning (a generator view's
        body runs outside the request).

        .. versionadded:: 0.1
        """
        grant = current_grant()
        return grant.subject if grant is not None else None

    def set_token_cookie(
        self,
        response: Response,
        token: str,
        *,
        max_age: int | None = None,
        secure: bool | None = None,
        samesite: str = "Lax",
        domain: str | None = None,
        path: str = "/",
    ) -> None:
        """Put ``token`` in the token cookie (``SSECORS_TOKEN_COOKIE``) of ``response``.

        The cookie is ``HttpOnly``. ``EventSource`` sends it with ``withCredentials: true``
        (and ``SSECORS_ALLOW_CREDENTIALS = True``). ``SameSite=Lax`` suits pages on the same
        site as the app (another port or subdomain); pages on another site need
        ``samesite="None"``, which browsers accept only with ``secure=True``.

        Cookies are shared by every page of a site: one page origin per site and cookie name,
        or pass the token in the query string instead.

        :param secure: default: whether the current request came over https.
        :raises ValueError: for ``samesite="None"`` without ``secure``.

        .. versionadded:: 0.1
        """
        if secure is None:
            secure = request.is_secure
        if samesite.lower() == "none" and not secure:
            raise ValueError("browsers refuse SameSite=None cookies without Secure")
        response.set_cookie(
            _state().settings.token_cookie,
            token,
            max_age=max_age,
            secure=secure,
            httponly=True,
            samesite=samesite,
            domain=domain,
            path=path,
        )

    # -- observability and lifetime --------------------------------------------------------

    def stats(self) -> StatsSnapshot:
        """The current app's statistics in this worker process (see :mod:`flask_ssecors.stats`).

        .. versionadded:: 0.1
        """
        streams = _state().hardening.streams
        return streams.stats.snapshot(len(streams.streams), streams.events_in_open_streams())

    def end_streams(self) -> int:
        """End every open stream of the current app with a ``retry:`` hint, and admit no new
        ones (a worker about to stop); return how many were told to end.

        .. versionadded:: 0.1
        """
        return _state().hardening.streams.end_all()

    # -- what the extension calls ----------------------------------------------------------

    def _setup_hardening(self, app: Flask, state: _State) -> list[ConfigIssue]:
        """At ``init_app``: compile the named policies; find other owners of the headers."""
        issues: list[ConfigIssue] = []
        for name, checked in self._policy_options.items():
            settings, problems = merge_policy_options(state.settings, name, checked)
            issues.extend(problems)
            if settings is not None:
                state.hardening.policies[name] = compile_cors(state.settings, settings.cors)
        issues.extend(foreign_header_issues(app))
        if state.settings.request_id_header is not None:
            install_log_filter(logger)
        return issues

    def _choose_policy(self, state: _State, default: CorsPolicy) -> Decider:
        """The policy for the current request: the selector's choice, or ``default``."""
        if self._selector is None:
            return default
        return choose(self._selector, state.hardening.policies, default)

    def _note_refusal(self, state: _State, decision: Decision) -> None:
        """Count a request the CORS policy refused."""
        streams = state.hardening.streams
        streams.stats.count_refusal(streams.app, "origin", decision.reason)

    def _stream_headers(self, state: _State, decision: Decision) -> tuple[tuple[str, str], ...]:
        """The headers a stream response adds: the CORS headers, then the request id."""
        headers = decision.headers if decision.allowed else ()
        return (*headers, *_request_id_headers(state.settings))

    def _admit_stream(
        self, state: _State, options: StreamOptions, decision: Decision | None
    ) -> Response | None:
        """Check the request's token, then reserve a place for its stream; the refusal
        (a token refusal or the over-capacity answer), or None once admitted."""
        hardening = state.hardening
        if options.require_token:
            assert hardening.tokens is not None  # checked when the view was compiled
            try:
                verify_request(hardening.tokens, state.settings.token_cookie)
            except TokenRefused as error:
                return self._refuse_token(state, error)
        if not hardening.streams.reserve():
            return hardening.streams.busy_response(
                decision, options, _request_id_headers(state.settings), strict=_strict()
            )
        return None

    def _refuse_token(self, state: _State, error: TokenRefused) -> Response:
        """Log, count and answer a token refusal."""
        log_refusal(error)
        streams = state.hardening.streams
        streams.stats.count_refusal(streams.app, "token", error.reason)
        return refusal_response(error)

    def _open_stream(
        self,
        state: _State,
        source: Subscription | cabc.Iterable[object],
        options: StreamOptions,
    ) -> EventStream:
        """Create the stream of an admitted request, tracked, with its deadlines."""
        hardening = state.hardening
        return hardening.streams.open(
            source,
            options,
            grant=current_grant(),
            clock=hardening.tokens.clock if hardening.tokens is not None else time.time,
            request_id=request_id_for(state.settings, request.environ),
        )

    def _check_channel(self, channel: str) -> None:
        """Refuse a channel the request's token does not grant (raises TokenRefused)."""
        check_channel(channel)


def _request_id_headers(settings: Settings) -> tuple[tuple[str, str], ...]:
    header = settings.request_id_header
    if header is None:
        return ()
    return ((header, t.cast(str, request_id_for(settings, request.environ))),)
