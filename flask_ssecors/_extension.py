"""The Flask extension: configuration at ``init_app``, request hooks, view decorators.

``SSECors(app)`` (or ``SSECors()`` then ``init_app(app)``) reads and validates the configuration,
compiles the policies, creates the broker, and registers two hooks:

- a ``before_request`` hook, placed first, that polices requests to decorated views: it answers
  preflights itself (``204`` with the headers, or ``403`` with none) and refuses requests from
  origins that are not allowed with ``403`` before any other hook or the view runs;
- an ``after_request`` hook, placed to run last, that adds the CORS headers and ``Vary: Origin``
  to responses of decorated views, and reports any other source of ``Access-Control-*``.

Routes that are not decorated are untouched.
"""

from __future__ import annotations

import collections.abc as cabc
import dataclasses
import functools
import logging
import os
import typing as t
import weakref

from flask import current_app
from flask import Flask
from flask import request
from flask import Response
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Rule

from ._config import check_overrides
from ._config import CORS_KWARGS
from ._config import merge_overrides
from ._config import read_settings
from ._config import Settings
from ._config import STREAM_KWARGS
from ._hardening import AppHardening
from ._hardening import compile_cors
from ._hardening import HardeningMixin
from ._lastid import last_event_id
from ._logsafe import escape
from ._policy import CorsPolicy
from ._policy import Decision
from ._stream import StreamResponse
from .brokers import Broker
from .brokers import create_broker
from .brokers import MemoryBroker
from .brokers import Subscription
from .exceptions import BrokerUnavailable
from .exceptions import ConfigError
from .exceptions import ConfigIssue
from .exceptions import HeaderConflictError
from .exceptions import TokenRefused
from .requestid import stamp

if t.TYPE_CHECKING:
    from .events import Event

logger = logging.getLogger("flask_ssecors")

EXTENSION_KEY: t.Final = "ssecors"
#: Where a request's decision is kept: its WSGI environ, which belongs to that request alone
#: (``g`` lives as long as the app context, which requests share when one is pushed around them).
_DECISION_ENVIRON: t.Final = "flask_ssecors.decision"
_CORS_PREFIX: t.Final = "access-control-"
#: ``retry:`` sent on a stream that could not subscribe because the broker is unavailable.
BROKER_RETRY_MS: t.Final = 3000

F = t.TypeVar("F", bound=cabc.Callable[..., t.Any])


@dataclasses.dataclass(eq=False, frozen=True)
class ViewSpec:
    """What a decorator asked for: its kind and its validated overrides."""

    kind: str
    overrides: cabc.Mapping[str, object]


@dataclasses.dataclass(frozen=True, slots=True)
class ViewPolicy:
    """A decorated view's settings and compiled policy, for one app."""

    settings: Settings
    policy: CorsPolicy


@dataclasses.dataclass(eq=False)
class _State:
    """Per-app state, in ``app.extensions["ssecors"]``."""

    extension: SSECors
    settings: Settings
    policy: CorsPolicy
    broker: Broker
    #: Named policies, tokens, open streams and statistics (:mod:`flask_ssecors._hardening`).
    hardening: AppHardening
    views: dict[ViewSpec, ViewPolicy] = dataclasses.field(default_factory=dict)
    #: Whether the first request's environ was checked for several worker processes.
    checked_processes: bool = False


def _spec_of(view: object) -> ViewSpec | None:
    while view is not None:
        spec = getattr(view, "__ssecors__", None)
        if isinstance(spec, ViewSpec):
            return spec
        view = getattr(view, "__wrapped__", None)
    return None


def _state() -> _State:
    try:
        return t.cast(_State, current_app.extensions[EXTENSION_KEY])
    except KeyError:
        raise RuntimeError(
            "flask-ssecors is not initialised on this app; call SSECors(app) or init_app(app)."
        ) from None


class SSECors(HardeningMixin):
    """Secure cross-origin Server-Sent Events for a Flask app.

    :param app: the app, or None to call :meth:`init_app` later (app factories).
    :param broker: a broker object to use instead of the one ``SSECORS_BROKER_URL`` names.

    One extension object can serve several apps; request-time code reaches each app's state
    through ``current_app.extensions["ssecors"]``.

    .. versionadded:: 0.1
    """

    def __init__(self, app: Flask | None = None, *, broker: Broker | None = None) -> None:
        super().__init__()
        self._broker = broker
        self._specs: list[ViewSpec] = []
        self._states: weakref.WeakSet[_State] = weakref.WeakSet()
        if app is not None:
            self.init_app(app)

    # -- setup -------------------------------------------------------------------------------

    def init_app(self, app: Flask) -> None:
        """Read and validate the ``SSECORS_*`` configuration of ``app`` and register the hooks.

        Every configuration problem, including those of views decorated so far, is raised
        together as one :class:`~flask_ssecors.exceptions.ConfigError`. Changes to
        ``app.config`` after this call are not seen.

        :raises RuntimeError: if flask-ssecors is already registered on ``app``.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "flask-ssecors is already registered on this Flask app; import and use that "
                "SSECors instance instead."
            )
        settings = read_settings(app.config)
        state = _State(
            extension=self,
            settings=settings,
            policy=compile_cors(settings),
            broker=self._broker
            or create_broker(
                settings.broker_url, backlog=settings.backlog, timeout=settings.broker_timeout
            ),
            hardening=AppHardening(app, settings),
        )
        issues: list[ConfigIssue] = []
        for spec in list(self._specs):
            issues.extend(self._compile_view(state, spec))
        issues.extend(self._setup_hardening(app, state))
        if issues:
            raise ConfigError(issues)
        workers = os.environ.get("WEB_CONCURRENCY", "1")
        if isinstance(state.broker, MemoryBroker) and workers.isdigit() and int(workers) > 1:
            _warn_memory_broker(f"WEB_CONCURRENCY={workers}")
        app.extensions[EXTENSION_KEY] = state
        self._states.add(state)
        app.before_request_funcs.setdefault(None, []).insert(0, self._before_request)
        app.after_request_funcs.setdefault(None, []).insert(0, self._after_request)

    def _compile_view(self, state: _State, spec: ViewSpec) -> list[ConfigIssue]:
        try:
            settings = merge_overrides(state.settings, spec.overrides)
        except ConfigError as error:
            return list(error.issues)
        issues = state.hardening.token_issues(settings.stream)
        if issues:
            return issues
        if spec.overrides:
            state.views[spec] = ViewPolicy(settings, compile_cors(settings))
        else:
            state.views[spec] = ViewPolicy(state.settings, state.policy)
        return []

    def _register(self, kind: str, overrides: dict[str, object]) -> ViewSpec:
        allowed = STREAM_KWARGS if kind == "stream" else CORS_KWARGS
        checked = check_overrides(overrides, allowed=allowed)
        spec = ViewSpec(kind, checked)
        issues: list[ConfigIssue] = []
        for state in list(self._states):
            issues.extend(self._compile_view(state, spec))
        if issues:
            raise ConfigError(issues, where="flask-ssecors view options")
        self._specs.append(spec)
        return spec

    # -- decorators --------------------------------------------------------------------------

    def cors(self, **overrides: t.Any) -> cabc.Callable[[F], F]:
        """Police an ordinary view with the CORS policy (the endpoints a page calls).

        Keyword arguments override the app's settings for this view (``origins``,
        ``allow_credentials``, ``allowed_methods``…; see the configuration docs).

        A request from an origin that is not allowed gets ``403`` and the view does not run:
        a credentialed cross-site POST must not have side effects.

        :raises ConfigError: when an override is invalid.
        """
        spec = self._register("cors", overrides)

        def decorator(view: F) -> F:
            @functools.wraps(view)
            def wrapper(*args: t.Any, **kwargs: t.Any) -> t.Any:
                refusal = self._police()
                if refusal is not None:
                    return refusal
                return current_app.ensure_sync(view)(*args, **kwargs)

            wrapper.__ssecors__ = spec  # type: ignore[attr-defined]
            return t.cast(F, wrapper)

        return decorator

    def stream(self, **overrides: t.Any) -> cabc.Callable[[F], F]:
        """Turn a view into a Server-Sent Events stream.

        The view returns or yields events (:class:`~flask_ssecors.Event`, ``str``, or JSON-able
        data), or returns a subscription from :meth:`subscribe`. It may also return a
        :class:`~flask.Response` (a ``401``, say), which is sent as it is.

        The response's headers are complete and pinned when the view returns; the first bytes
        go out at once; a comment is written after ``heartbeat`` seconds of silence.

        A generator view's body runs outside the request context, as with any Flask streaming
        response: read what it needs from ``request`` in the view before returning a generator.

        :raises ConfigError: when an override is invalid.
        """
        spec = self._register("stream", overrides)

        def decorator(view: F) -> F:
            @functools.wraps(view)
            def wrapper(*args: t.Any, **kwargs: t.Any) -> t.Any:
                refusal = self._police()
                if refusal is not None:
                    return refusal
                state = _state()
                decision = request.environ.get(_DECISION_ENVIRON)
                refusal = self._admit_stream(state, state.views[spec].settings.stream, decision)
                if refusal is not None:  # a refused token, or over capacity
                    return refusal
                try:
                    rv = view(*args, **kwargs)
                except BrokerUnavailable as error:
                    # A non-200 answer would make browsers stop reconnecting for good: open the
                    # stream, tell the client when to come back, and end it.
                    logger.warning("stream on %s deferred: %s", escape(request.path), error)
                    return self._stream_response(spec, (), retry=BROKER_RETRY_MS)
                except TokenRefused as error:  # sse.subscribe(): a channel the token lacks
                    return self._refuse_token(state, error)
                finally:
                    state.hardening.streams.unreserve()
                if isinstance(rv, Response):
                    return rv
                return self._stream_response(spec, rv)

            wrapper.__ssecors__ = spec  # type: ignore[attr-defined]
            return t.cast(F, wrapper)

        return decorator

    # -- publishing ------------------------------------------------------------------------

    @property
    def broker(self) -> Broker:
        """The current app's broker."""
        return _state().broker

    def publish(self, channel: str, event: Event) -> str:
        """Publish ``event`` on ``channel``; return the id the broker assigned.

        Safe from any greenlet and from request handlers.

        :raises flask_ssecors.exceptions.BrokerUnavailable: when nothing could be published.
        """
        return _state().broker.publish(channel, event)

    def subscribe(self, channel: str, last_event_id: str | None = None) -> Subscription:
        """Subscribe the current stream to ``channel``.

        Replays what was published after ``last_event_id`` (by default the request's validated
        ``Last-Event-ID``), then delivers live events.
        """
        state = _state()
        self._check_channel(channel)
        if last_event_id is None:
            last_event_id = _last_event_id()
        view = _view_policy(state)
        limit = view.settings.stream.queue_size if view else state.settings.stream.queue_size
        return state.broker.subscribe(channel, last_event_id, limit=limit)

    # -- request hooks -----------------------------------------------------------------------

    def _police(self) -> Response | None:
        """Decide the current request once; return the refusal response, if any."""
        decision: Decision | None = request.environ.get(_DECISION_ENVIRON)
        if decision is None:
            decision = self._decide()
            if decision is None:
                return None
        if not decision.allowed or decision.preflight:
            return _answer(decision)
        return None

    def _decide(self) -> Decision | None:
        state = _state()
        view, rule = _target(state)
        if view is None:
            if _spec_of(current_app.view_functions.get(request.endpoint or "")) is not None:
                # Fail closed: serving the view unpoliced would let cross-site requests run it.
                raise RuntimeError(
                    f"the view {request.endpoint!r} was decorated by an SSECors instance that "
                    "is not the one registered on this app; decorate views with the instance "
                    "passed to init_app (one instance can serve several apps)."
                )
            return None
        environ = request.environ
        origin = environ.get("HTTP_ORIGIN")
        policy = self._choose_policy(state, view.policy)
        decision = policy.decide(
            method=request.method,
            origin=origin,
            # Only compared when the origin is not on the allowlist; cheap enough to build here.
            own_origin=f"{request.scheme}://{request.host}".lower() if origin is not None else "",
            request_method=environ.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD"),
            request_headers=environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS"),
            private_network=environ.get("HTTP_ACCESS_CONTROL_REQUEST_PRIVATE_NETWORK") == "true",
            route_methods=rule.methods if rule is not None else None,
        )
        environ[_DECISION_ENVIRON] = decision
        if not decision.allowed:
            if logger.isEnabledFor(logging.INFO):
                logger.info(
                    "refused %s %s from origin %s: %s",
                    escape(request.method, 16),
                    escape(request.path),
                    escape(origin),
                    decision.reason,
                )
            self._note_refusal(state, decision)
        return decision

    def _before_request(self) -> Response | None:
        state = _state()
        if not state.checked_processes:
            state.checked_processes = True
            if request.environ.get("wsgi.multiprocess") and isinstance(state.broker, MemoryBroker):
                _warn_memory_broker("the WSGI server runs several worker processes")
        return self._police()

    def _after_request(self, response: Response) -> Response:
        decision: Decision | None = request.environ.get(_DECISION_ENVIRON)
        if decision is None:
            if _view_policy(_state()) is None:
                return response
            decision = self._decide()
            if decision is None:
                return response
        if isinstance(response, StreamResponse):
            return response
        foreign = [k for k, _ in response.headers if k.lower().startswith(_CORS_PREFIX)]
        if foreign:
            detail = (
                f"{', '.join(sorted(set(foreign)))} set by something other than flask-ssecors "
                "(a view, an after_request hook or another CORS extension such as flask-cors); "
                "flask-ssecors owns the CORS headers of policed routes: remove the other source"
            )
            if current_app.debug or current_app.testing:
                raise HeaderConflictError(foreign[0], detail)
            logger.error("header conflict on %s: %s", escape(request.path), detail)
            for name in set(foreign):
                del response.headers[name]
        if decision.allowed:
            for name, value in decision.headers:
                response.headers[name] = value
        response.vary.update(decision.vary)
        stamp(_state().settings, response)
        return response

    def _stream_response(
        self, spec: ViewSpec, rv: object, *, retry: int | None = None
    ) -> StreamResponse:
        state = _state()
        view = state.views[spec]
        decision: Decision | None = request.environ.get(_DECISION_ENVIRON)
        if decision is None:
            decision = self._decide()
        assert decision is not None
        source = rv if isinstance(rv, Subscription) else _as_iterable(rv)
        options = view.settings.stream
        if retry is not None:
            options = dataclasses.replace(options, retry=retry)
        stream = self._open_stream(state, source, options)
        return StreamResponse(
            stream,
            self._stream_headers(state, decision),
            decision.vary,
            strict=current_app.debug or current_app.testing,
        )

    def subscriber_count(self, channel: str | None = None) -> int:
        """Open subscriptions on ``channel`` (or all channels) in the current app's broker."""
        return _state().broker.subscriber_count(channel)


def _warn_memory_broker(why: str) -> None:
    logger.warning(
        "flask-ssecors uses the in-memory broker but %s: each worker process has its own "
        "broker, so events published in one process never reach streams served by another. "
        "Set SSECORS_BROKER_URL to a Redis URL, or run one worker process.",
        why,
    )


def _as_iterable(rv: object) -> cabc.Iterable[object]:
    if isinstance(rv, str | bytes | dict) or not isinstance(rv, cabc.Iterable):
        raise TypeError(
            "a stream view must return or yield events, or return sse.subscribe(...); "
            f"it returned {type(rv).__name__}"
        )
    return rv


def _target(state: _State) -> tuple[ViewPolicy | None, Rule | None]:
    """The policed view (and its rule) that decides the current request.

    A preflight asks about the method the page is about to send, which may reach another view
    than the one ``OPTIONS`` matched (``GET`` and ``POST`` on one path, as two views): it is
    decided by the policy of the view that method would reach.
    """
    rule = request.url_rule
    if request.method != "OPTIONS":
        return _view_policy(state), rule
    environ = request.environ
    method = environ.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD")
    if method and environ.get("HTTP_ORIGIN") is not None:
        adapter = current_app.create_url_adapter(request)
        try:
            matched, _ = adapter.match(method=method, return_rule=True)  # type: ignore[union-attr]
        except HTTPException:
            matched = None
        if matched is not None and matched is not rule:
            spec = _spec_of(current_app.view_functions.get(matched.endpoint))
            return (state.views.get(spec) if spec is not None else None), matched
    return _view_policy(state), rule


def _view_policy(state: _State) -> ViewPolicy | None:
    endpoint = request.endpoint
    if endpoint is None:
        return None
    spec = _spec_of(current_app.view_functions.get(endpoint))
    if spec is None:
        return None
    return state.views.get(spec)


def _answer(decision: Decision) -> Response:
    """The extension's own answer: a preflight's 204, or a 403 refusal."""
    if decision.allowed:
        response = Response(status=204)
        del response.headers["Content-Type"]
        return response
    return Response("Forbidden: cross-origin request refused.\n", 403, mimetype="text/plain")


def _last_event_id() -> str | None:
    return last_event_id()
