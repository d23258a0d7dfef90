"""The Flask extension: :class:`SSECors`.

``SSECors(app)`` (or ``SSECors()`` then ``init_app(app)``) reads and validates the configuration,
compiles the policies, creates the broker, and registers two hooks on the app:

- a ``before_request`` hook, placed first, that polices requests to decorated views: it answers
  preflights itself (``204`` with the headers, or ``403`` with none) and refuses requests from
  origins that are not allowed with ``403`` before any other hook or the view runs;
- an ``after_request`` hook, placed to run last, that adds the CORS headers and ``Vary: Origin``
  to responses of decorated views, and reports any other source of ``Access-Control-*``.

Routes that are not decorated are untouched. The request path reads from top to bottom:
:meth:`SSECors._before_request` decides (:meth:`SSECors._decide`), the decorated view runs
(:meth:`SSECors.cors`, :meth:`SSECors.stream`: admission, then the stream), and
:meth:`SSECors._after_request` adds the headers. Everything read from Flask's globals comes
from :mod:`flask_ssecors._request`.
"""

from __future__ import annotations

import collections.abc as cabc
import dataclasses
import functools
import inspect
import logging
import os
import time
import typing as t
import weakref

from flask import Flask
from flask import Response
from werkzeug.exceptions import HTTPException

from . import _request
from . import _responses
from . import requestid
from ._assets import assets_blueprint
from ._assets import BLUEPRINT_NAME
from ._clients import client_key
from ._config import check_overrides
from ._config import CORS_KWARGS
from ._config import merge_overrides
from ._config import read_settings
from ._config import STREAM_KWARGS
from ._fetch import CORS_HEADER_PREFIX
from ._lifecycle import StreamTracker
from ._lifecycle import warn_about_gunicorn_workers
from ._lifecycle import warn_about_the_server
from ._lifecycle import watch_server
from ._log import get_logger
from ._ownership import other_owners
from ._policy import compile_policy
from ._proxies import check_forwarded_address
from ._selection import check_policy_options
from ._selection import choose
from ._selection import merge_policy_options
from ._state import AppState
from ._state import spec_of
from ._state import ViewKind
from ._state import ViewPolicy
from ._state import ViewSpec
from ._stats import Counters
from ._stats import RefusalKind
from ._stream import StreamResponse
from .brokers import Broker
from .brokers import create_broker
from .brokers import MemoryBroker
from .brokers import Subscription
from .brokers._multi import subscribe_many
from .brokers._presence import announces
from .brokers._presence import check_member
from .brokers._presence import Presence
from .exceptions import BrokerUnavailable
from .exceptions import ChannelError
from .exceptions import ConfigError
from .exceptions import ConfigIssue
from .exceptions import HeaderConflictError
from .exceptions import SetupError
from .exceptions import TokenRefused
from .exceptions import UsageError
from .tokens import StreamTokens

if t.TYPE_CHECKING:
    from flask import Request

    from ._config import CorsOptions
    from ._config import Settings
    from ._config import StreamOptions
    from ._policy import CorsPolicy
    from ._policy import Decision
    from ._selection import Decider
    from ._selection import Selector
    from .events import Event
    from .stats import StatsSnapshot

logger = get_logger(__name__)

#: ``retry:`` sent on a stream that could not subscribe because the broker is unavailable.
BROKER_RETRY_MS: t.Final = 3000

F = t.TypeVar("F", bound=cabc.Callable[..., t.Any])
S = t.TypeVar("S", bound="Selector")


class SSECors:
    """Secure cross-origin Server-Sent Events for a Flask app.

    :param app: the app, or None to call :meth:`init_app` later (app factories).
    :param broker: a broker object to use instead of the one ``SSECORS_BROKER_URL`` names.

    One extension object can serve several apps; request-time code reaches each app's state
    through ``current_app.extensions["ssecors"]``.

    .. versionadded:: 0.1
    """

    def __init__(self, app: Flask | None = None, *, broker: Broker | None = None) -> None:
        self._broker = broker
        self._specs: list[ViewSpec] = []
        self._states: weakref.WeakSet[AppState] = weakref.WeakSet()
        self._policy_options: dict[str, dict[str, object]] = {}
        self._selector: Selector | None = None
        if app is not None:
            self.init_app(app)

    # -- setup -------------------------------------------------------------------------------

    def init_app(self, app: Flask) -> None:
        """Read and validate the ``SSECORS_*`` configuration of ``app`` and register the hooks.

        Every configuration problem, including those of views decorated and policies declared
        so far, is raised together as one :class:`~flask_ssecors.exceptions.ConfigError`.
        Changes to ``app.config`` after this call are not seen.

        :raises flask_ssecors.exceptions.SetupError: if flask-ssecors is already registered on
            ``app``.
        """
        if _request.EXTENSION_KEY in app.extensions:
            raise SetupError(
                "flask-ssecors is already registered on this Flask app; import and use that "
                "SSECors instance instead."
            )
        settings = read_settings(app.config)
        counters = Counters()
        state = AppState(
            app=app,
            settings=settings,
            policy=_compile(settings),
            broker=self._broker
            or create_broker(
                settings.broker_url,
                backlog=settings.backlog,
                schema=settings.broker_schema,
                timeout=settings.broker_timeout,
                channel_ttl=settings.channel_ttl,
                max_event_size=settings.max_event_size,
                min_replicas=settings.broker_min_replicas,
                presence_ttl=settings.presence_ttl,
                presence_max_members=settings.presence_max_members,
            ),
            streams=StreamTracker(app, settings, counters),
            tokens=_token_codec(app, settings),
            counters=counters,
        )
        issues: list[ConfigIssue] = []
        for spec in self._specs:
            issues.extend(self._compile_view(state, spec))
        for name, checked in self._policy_options.items():
            issues.extend(self._compile_policy(state, name, checked))
        found, guesses = other_owners(app)
        issues.extend(found)
        if issues:
            raise ConfigError(issues)
        if settings.warn_cors_hooks:
            for guess in guesses:
                logger.warning("%s", guess)
        warn_about_gunicorn_workers()
        if settings.drain_on_shutdown:
            watch_server()  # a process-wide effect, decided at setup, never in a request
        workers = os.environ.get("WEB_CONCURRENCY", "1")
        if isinstance(state.broker, MemoryBroker) and workers.isdigit() and int(workers) > 1:
            _warn_memory_broker(f"WEB_CONCURRENCY={workers}")
        app.extensions[_request.EXTENSION_KEY] = state
        requestid._configure(app.extensions, settings.request_id_header, settings.trust_request_id)
        self._states.add(state)
        if settings.helper_url_prefix is not None and BLUEPRINT_NAME not in app.blueprints:
            app.register_blueprint(assets_blueprint(settings.helper_url_prefix))

        def police() -> Response | None:
            return self._before_request(state)

        def add_headers(response: Response) -> Response:
            return self._after_request(state, response)

        app.before_request_funcs.setdefault(None, []).insert(0, police)
        app.after_request_funcs.setdefault(None, []).insert(0, add_headers)

    def _compile_view(self, state: AppState, spec: ViewSpec) -> list[ConfigIssue]:
        try:
            settings = merge_overrides(state.settings, spec.overrides)
        except ConfigError as error:
            return list(error.issues)
        if settings.stream.require_token and state.tokens is None:
            return [
                ConfigIssue(
                    "require_token",
                    True,
                    "stream tokens are signed with the app's SECRET_KEY, which is not set; "
                    "set SECRET_KEY before init_app.",
                )
            ]
        policy = _compile(settings) if spec.overrides else state.policy
        state.views[spec] = ViewPolicy(spec, settings, policy)
        return []

    def _compile_policy(
        self, state: AppState, name: str, checked: dict[str, object]
    ) -> list[ConfigIssue]:
        settings, issues = merge_policy_options(state.settings, name, checked)
        if settings is not None:
            state.policies[name] = _compile(state.settings, settings.cors)
        return issues

    def _register(self, kind: ViewKind, overrides: dict[str, object]) -> ViewSpec:
        allowed = STREAM_KWARGS if kind is ViewKind.STREAM else CORS_KWARGS
        spec = ViewSpec(kind, check_overrides(overrides, allowed=allowed))
        issues: list[ConfigIssue] = []
        for state in list(self._states):
            issues.extend(self._compile_view(state, spec))
        if issues:
            raise ConfigError(issues, where="flask-ssecors view options")
        self._specs.append(spec)
        return spec

    # -- named policies ----------------------------------------------------------------------

    def policy(self, name: str, **options: t.Any) -> None:
        """Declare a named CORS policy, for :meth:`policy_selector` to choose per request.

        The options are those of :meth:`cors` (``origins``, required; ``allow_credentials``,
        ``allowed_headers``, ``expose_headers``, ``allowed_methods``, ``max_age``...). Unset
        options come from the app's settings. The policy is validated like the app's own, now
        for apps already initialised and at ``init_app`` for later ones; every problem is
        raised together.

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
        compiled: list[tuple[AppState, CorsPolicy]] = []
        for state in list(self._states):
            settings, problems = merge_policy_options(state.settings, name, checked)
            issues.extend(problems)
            if settings is not None:
                compiled.append((state, _compile(state.settings, settings.cors)))
        if issues:
            raise ConfigError(issues, where="flask-ssecors policies")
        for state, policy in compiled:
            state.policies[name] = policy
        self._policy_options[name] = checked

    def policy_selector(self, selector: S) -> S:
        """Register the function that picks a named policy per request (a decorator).

        ``selector()`` runs once per policed request, in the request context, and returns the
        name of a policy declared with :meth:`policy`, or None for the view's own policy. It
        never returns origins: anything but a declared name is refused (see
        :ref:`configuration-policies`).

        .. versionadded:: 0.1
        """
        if not callable(selector):
            raise UsageError("policy_selector decorates a function that returns a policy name")
        self._selector = selector
        return selector

    # -- decorators --------------------------------------------------------------------------

    def cors(self, **overrides: t.Any) -> cabc.Callable[[F], F]:
        """Police an ordinary view with the CORS policy (the endpoints a page calls).

        Keyword arguments override the app's settings for this view (``origins``,
        ``allow_credentials``, ``allowed_methods``…; see the configuration docs).

        A request from an origin that is not allowed gets ``403`` and the view does not run:
        a credentialed cross-site POST must not have side effects.

        :raises ConfigError: when an override is invalid.
        """
        spec = self._register(ViewKind.CORS, overrides)

        def decorator(view: F) -> F:
            call = _caller(view)

            @functools.wraps(view)
            def wrapper(*args: t.Any, **kwargs: t.Any) -> t.Any:
                refusal = self._refusal(_request.decision())
                if refusal is not None:
                    return refusal
                return call(*args, **kwargs)

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
        spec = self._register(ViewKind.STREAM, overrides)

        def decorator(view: F) -> F:
            @functools.wraps(view)
            def wrapper(*args: t.Any, **kwargs: t.Any) -> t.Any:
                decision = _request.decision()
                refusal = self._refusal(decision)
                if refusal is not None:
                    return refusal
                state = _request.app_state()
                return self._serve_stream(state, state.views[spec], decision, view, args, kwargs)

            wrapper.__ssecors__ = spec  # type: ignore[attr-defined]
            return t.cast(F, wrapper)

        return decorator

    # -- publishing --------------------------------------------------------------------------

    @property
    def broker(self) -> Broker:
        """The current app's broker (see :meth:`publish` for which app that is)."""
        return self._state().broker

    def publish(self, channel: str, event: Event, *, transaction: object = None) -> str:
        """Publish ``event`` on ``channel``; return the id the broker assigned.

        Works from any greenlet and any OS thread (a thread pool, the development server's
        request threads): subscribers are woken safely in their own threads. In an app context
        it publishes through that app's broker; outside one, through the broker of the one app
        this object serves (with several, push the app's context first).

        With the PostgreSQL broker, ``transaction`` publishes inside the application's own
        database transaction: a psycopg connection, an SQLAlchemy ``Connection``, or an
        SQLAlchemy ``Session`` (Flask-SQLAlchemy's ``db.session``). The event is kept and
        delivered if and only if that transaction commits, and the id returned is the one it
        will have. Until the transaction ends, other publishes to the same channel wait for
        it: keep such transactions short.

        .. code-block:: python

            order = Order(user_id=user.id)
            db.session.add(order)
            db.session.flush()  # order.id
            sse.publish(f"user:{user.id}", Event({"order": order.id}), transaction=db.session)
            db.session.commit()  # the event is delivered now, or never

        For processes without the Flask app (a Celery or RQ worker, a cron script), use
        :class:`flask_ssecors.Publisher` with the app's broker URL.

        :param channel: the channel's name.
        :param event: the event.
        :param transaction: the database transaction to publish in (PostgreSQL broker only).
        :raises flask_ssecors.exceptions.BrokerUnavailable: when nothing could be published.
        :raises flask_ssecors.exceptions.ChannelError: for a channel name no broker can store.
        :raises flask_ssecors.exceptions.EventFieldError: for an event over
            ``SSECORS_MAX_EVENT_SIZE``.
        :raises flask_ssecors.exceptions.SetupError: outside an app context, when this
            object serves no app or several.
        :raises flask_ssecors.exceptions.UsageError: for ``transaction`` with a broker that
            cannot publish in one (the in-memory and Redis brokers, a broker of your own
            whose ``publish`` takes no ``transaction``).
        :raises TypeError: for a ``transaction`` the PostgreSQL broker cannot publish in (an
            SQLAlchemy ``Engine``, say: pass a connection or a session); it is also an
            :class:`~flask_ssecors.exceptions.SSECorsError`.

        .. versionadded:: 0.1
            The ``transaction`` parameter.
        """
        broker = self._state().broker
        if transaction is None:
            return broker.publish(channel, event)
        if not _takes_transaction(broker):
            raise UsageError(
                f"publish(transaction=...) needs the PostgreSQL broker, and this app's broker "
                f"is {type(broker).__name__}: set SSECORS_BROKER_URL to a postgresql:// URL, "
                "or publish without transaction= (after your transaction commits)."
            )
        return t.cast(str, t.cast(t.Any, broker).publish(channel, event, transaction=transaction))

    def _state(self) -> AppState:
        """The current app's state; outside an app context, the one app's this object serves."""
        if _request.has_app():
            return _request.app_state()
        states = list(self._states)
        if len(states) == 1:
            return states[0]
        if not states:
            raise SetupError(
                "this SSECors object is not registered on any app yet: call init_app(app)."
            )
        raise SetupError(
            f"this SSECors object serves {len(states)} apps, so outside an app context it "
            "cannot tell which app's broker to use: publish under `with app.app_context():`."
        )

    def subscribe(
        self,
        *channels: str,
        member: str | t.Literal[False] | None = None,
        last_event_id: str | None = None,
    ) -> Subscription:
        """Subscribe the current stream to one channel, or to several on one stream.

        Replays what was published after ``last_event_id`` (by default the request's validated
        ``Last-Event-ID``), then delivers live events.

        With ``member`` (a string the view chooses, typically the signed-in user's id), the
        stream counts in each channel's :meth:`presence` until it ends; by default a stream
        with a verified stream token declares the token's subject, and ``member=False``
        declares nobody. Where ``SSECORS_PRESENCE_EVENTS`` asks for them, a member's first
        stream on a channel publishes ``ssecors-join`` and its last one ``ssecors-leave``
        (see :ref:`presence`).

        With several channels (at most 8), one stream carries them all: an event's type becomes
        ``<channel>/<type>`` (``<channel>/message`` when it had none), its data is untouched,
        and its id holds the stream's position in every channel, so a reconnect resumes each
        channel exactly where it was (see :ref:`streams-several-channels`).

        :raises flask_ssecors.exceptions.TokenRefused: when the request's stream token does not
            grant a channel (the extension answers ``403``).
        :raises flask_ssecors.exceptions.ChannelError: for a name no broker can store, too
            many channels, or a member that is not a short string without control
            characters (the extension answers ``400``).
        """
        if not channels:
            raise UsageError("subscribe() needs at least one channel")
        state = _request.app_state()
        for channel in channels:
            _request.check_channel(channel)
        if last_event_id is None:
            last_event_id = _request.last_event_id()
        if member is None:
            granted = _request.grant()
            member = granted.subject if granted is not None else None
        elif member is not False:
            check_member(member)
        view = state.view_for(_request.endpoint())
        stream = (view.settings if view is not None else state.settings).stream
        limit = stream.queue_size
        if not member:
            if len(channels) == 1:
                return state.broker.subscribe(channels[0], last_event_id, limit=limit)
            return subscribe_many(state.broker, channels, last_event_id, limit=limit)
        announced = frozenset(c for c in channels if announces(stream.presence_events, c))
        if len(channels) == 1:
            return state.broker.subscribe(
                channels[0],
                last_event_id,
                limit=limit,
                member=member,
                announce=channels[0] in announced,
            )
        return subscribe_many(
            state.broker, channels, last_event_id, limit=limit, member=member, announce=announced
        )

    def presence(self, channel: str) -> Presence:
        """Who holds streams on ``channel``: the members (strings given to :meth:`subscribe`)
        and the number of their streams, across every worker and host that shares the broker.

        Above ``SSECORS_PRESENCE_MAX_MEMBERS`` members, the members are not read
        (:attr:`Presence.counts_only`); the counts stay exact. A worker that died (killed,
        its host lost) stops counting within ``SSECORS_PRESENCE_TTL`` seconds.

        :raises flask_ssecors.exceptions.ChannelError: for a name no broker can store.
        :raises flask_ssecors.exceptions.BrokerUnavailable: when the broker cannot be reached.

        .. versionadded:: 0.1
        """
        state = self._state()
        return state.broker.presence(channel, max_members=state.settings.presence_max_members)

    def subscriber_count(self, channel: str | None = None) -> int:
        """Open subscriptions on ``channel`` (or all channels) in the current app's broker."""
        return self._state().broker.subscriber_count(channel)

    # -- stream tokens -----------------------------------------------------------------------

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
        :raises flask_ssecors.exceptions.SetupError: when the app has no ``SECRET_KEY``.

        .. versionadded:: 0.1
        """
        tokens = _request.app_state().tokens
        if tokens is None:
            raise SetupError("stream tokens are signed with SECRET_KEY: set it before init_app")
        return tokens.issue(
            subject,
            origin=_request.token_origin(),
            user_agent=_request.user_agent(),
            channels=channels,
            max_age=max_age,
        )

    def token_subject(self) -> str | None:
        """The subject of the current request's verified stream token, or None.

        Call it in a ``require_token=True`` stream view, before returning (a generator view's
        body runs outside the request).

        .. versionadded:: 0.1
        """
        grant = _request.grant()
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
        :raises flask_ssecors.exceptions.UsageError: for ``samesite="None"`` without ``secure``.

        .. versionadded:: 0.1
        """
        if secure is None:
            secure = _request.is_secure()
        if samesite.lower() == "none" and not secure:
            raise UsageError("browsers refuse SameSite=None cookies without Secure")
        response.set_cookie(
            _request.app_state().settings.token_cookie,
            token,
            max_age=max_age,
            secure=secure,
            httponly=True,
            samesite=samesite,
            domain=domain,
            path=path,
        )

    # -- observability and lifetime ----------------------------------------------------------

    def stats(self) -> StatsSnapshot:
        """The current app's statistics in this worker process (see :mod:`flask_ssecors.stats`).

        .. versionadded:: 0.1
        """
        return _request.app_state().stats()

    def end_streams(self) -> int:
        """End every open stream of the current app with a ``retry:`` hint, and admit no new
        ones (a worker about to stop); return how many were told to end.

        .. versionadded:: 0.1
        """
        return _request.app_state().streams.end_all()

    # -- the request path --------------------------------------------------------------------

    def _before_request(self, state: AppState) -> Response | None:
        """Police the request first: answer preflights, refuse other origins (``403``)."""
        if not state.checked_processes:
            state.checked_processes = True
            if _request.multiprocess() and isinstance(state.broker, MemoryBroker):
                _warn_memory_broker("the WSGI server runs several worker processes")
        return self._refusal(self._decide(state, _request.current()))

    def _decide(self, state: AppState, request: Request) -> Decision | None:
        """Decide ``request`` once (None when its route is not policed).

        The common case is two dictionary lookups: the endpoint's view policy, then the
        decision prebuilt for the origin (exact allowed origins, origins a pattern matched
        before, no origin). Anything else goes through :meth:`CorsPolicy.decide`.
        """
        environ = request.environ
        method = environ["REQUEST_METHOD"]
        route_methods = None
        if method == "OPTIONS":
            view, route_methods = _preflight_target(state)
        else:
            rule = request.url_rule
            view = state.view_for(rule.endpoint if rule is not None else None)
        if view is None:
            return None
        origin = environ.get("HTTP_ORIGIN")
        decision = None
        if self._selector is None:
            policy: Decider = view.policy
            if method != "OPTIONS":
                decision = view.policy.known(origin)
        else:
            policy = choose(self._selector, state.policies, view.policy, strict=_request.strict())
        if decision is None:
            decision = policy.decide(
                method=method,
                origin=origin,
                own_origin=_request.own_origin,
                request_method=environ.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD"),
                request_headers=environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS"),
                private_network=environ.get("HTTP_ACCESS_CONTROL_REQUEST_PRIVATE_NETWORK")
                == "true",
                route_methods=route_methods,
            )
        _request.keep_decision(environ, decision)
        if not decision.allowed:
            if logger.isEnabledFor(logging.INFO):
                method_text, path, origin_text = _request.describe()
                logger.info(
                    "refused %s %s from origin %s: %s",
                    method_text,
                    path,
                    origin_text,
                    decision.reason,
                )
            state.counters.count_refusal(state.app, RefusalKind.ORIGIN, decision.reason)
        return decision

    def _refusal(self, decision: Decision | None) -> Response | None:
        """The extension's own answer to a decided request (a refusal or a preflight), if any.

        A decorated view checks again: it may be reached without the hook having decided (a
        request to another endpoint that calls it).
        """
        if decision is None:
            decision = self._decide(_request.app_state(), _request.current())
            if decision is None:
                return None
        if not decision.allowed or decision.preflight:
            return _responses.answer(decision)
        return None

    def _serve_stream(
        self,
        state: AppState,
        view: ViewPolicy,
        decision: Decision | None,
        function: cabc.Callable[..., t.Any],
        args: tuple[t.Any, ...],
        kwargs: dict[str, t.Any],
    ) -> Response:
        """Admit the request (its token, then capacity), run the view, open its stream."""
        options = view.settings.stream
        decision = decision or _request.decision()
        grant = None
        if options.require_token:
            assert state.tokens is not None  # checked when the view was compiled
            try:
                grant = _request.verify_token(state.tokens, state.settings.token_cookie)
            except TokenRefused as error:
                return self._refuse_token(state, error)
        streams = state.streams
        if grant is not None:
            client: str | None = grant.subject
        else:
            check_forwarded_address(_request.environ())
            client = client_key(_request.remote_addr(), state.settings.client_ipv6_prefix)
        refused = streams.reserve(client)
        if refused is not None:
            return self._turn_away(state, decision, options, refused)
        opened = False
        try:
            rv = function(*args, **kwargs)
            if isinstance(rv, Response):
                return rv
            source = rv if isinstance(rv, Subscription) else _as_iterable(rv)
            response = self._open_stream(state, decision, source, options, client)
            opened = True
            return response
        except BrokerUnavailable as error:
            # A non-200 answer would make browsers stop reconnecting for good: open the
            # stream, tell the client when to come back, and end it.
            logger.warning("stream on %s deferred: %s", _request.describe()[1], error)
            options = dataclasses.replace(options, retry=BROKER_RETRY_MS)
            response = self._open_stream(state, decision, (), options, client)
            opened = True
            return response
        except TokenRefused as error:  # sse.subscribe(): a channel the token lacks
            return self._refuse_token(state, error)
        except ChannelError as error:  # sse.subscribe(): a name no broker can store
            logger.warning("refused stream on %s: %s", _request.describe()[1], error.reason)
            return _responses.bad_channel(error)
        finally:
            streams.unreserve(client, opened=opened)

    def _open_stream(
        self,
        state: AppState,
        decision: Decision | None,
        source: Subscription | cabc.Iterable[object],
        options: StreamOptions,
        client: str | None,
    ) -> StreamResponse:
        """The response of an admitted stream: tracked, with its deadlines, headers pinned."""
        settings = state.settings
        warn_about_the_server(_request.server_software())
        stream = state.streams.open(
            source,
            options,
            grant=_request.grant(),
            clock=state.tokens.clock if state.tokens is not None else time.time,
            request_id=_request.request_id(settings),
            client=client,
        )
        return _responses.stream(
            stream, decision, _request_id_headers(settings), strict=_request.strict()
        )

    def _turn_away(
        self, state: AppState, decision: Decision | None, options: StreamOptions, reason: str
    ) -> Response:
        """The answer to a stream request over capacity, over its client's limit, or while
        the worker shuts down."""
        streams = state.streams
        state.counters.count_refusal(state.app, RefusalKind.CAPACITY, reason)
        logger.info(
            "turned a stream request away: %s (%d open, limit %s, per client %s)",
            reason,
            len(streams.streams),
            streams.limit,
            streams.per_client,
        )
        if not _request.accepts_event_stream():
            return _responses.unavailable(streams.busy_retry)
        return _responses.stream(
            streams.busy_stream(options),
            decision,
            _request_id_headers(state.settings),
            strict=_request.strict(),
        )

    def _refuse_token(self, state: AppState, error: TokenRefused) -> Response:
        """Log, count and answer a token refusal (the token itself is never logged)."""
        _, path, origin = _request.describe()
        logger.warning("refused stream token on %s from origin %s: %s", path, origin, error.reason)
        state.counters.count_refusal(state.app, RefusalKind.TOKEN, error.reason)
        return _responses.token_refusal(error)

    def _after_request(self, state: AppState, response: Response) -> Response:
        """Last: add the CORS headers and ``Vary`` to a policed response; report any other
        source of ``Access-Control-*``."""
        request = _request.current()
        decision = _request.decision(request.environ)
        if decision is None:
            rule = request.url_rule
            if state.view_for(rule.endpoint if rule is not None else None) is None:
                return response
            decision = self._decide(state, request)
            if decision is None:
                return response
        if isinstance(response, StreamResponse):
            return response  # complete and pinned when the view returned
        headers = response.headers
        # One pass over the header list: other sources of Access-Control-*, and Vary. The
        # values added below were validated when the policy was compiled (or are an origin the
        # policy matched), so they go in as they are.
        items: list[tuple[str, str]] = headers._list
        foreign: list[str] = []
        has_vary = False
        for name, _ in items:
            lowered = name.lower()
            if lowered.startswith(CORS_HEADER_PREFIX):
                foreign.append(name)
            elif lowered == "vary":
                has_vary = True
        if foreign:
            self._report_conflict(headers, foreign)
        if decision.allowed:
            items.extend(decision.headers)
        if has_vary:
            response.vary.update(decision.vary)
        else:
            items.append(("Vary", decision.vary_header))
        header = state.settings.request_id_header
        if header is not None:
            headers[header] = t.cast(str, _request.request_id(state.settings))
        return response

    def _report_conflict(self, headers: t.Any, foreign: list[str]) -> None:
        """Another source set ``Access-Control-*``: raise in debug and testing, else log the
        error and remove its headers (this extension's win)."""
        detail = (
            f"{', '.join(sorted(set(foreign)))} set by something other than flask-ssecors "
            "(a view, an after_request hook or another CORS extension such as flask-cors); "
            "flask-ssecors owns the CORS headers of policed routes: remove the other source"
        )
        if _request.strict():
            raise HeaderConflictError(foreign[0], detail)
        logger.error("header conflict on %s: %s", _request.describe()[1], detail)
        for name in set(foreign):
            del headers[name]


def _compile(settings: Settings, options: CorsOptions | None = None) -> CorsPolicy:
    """Compile ``options`` (default: the settings' own) with the request id header exposed, so
    that page script can read it (unless request ids are off or every header is exposed)."""
    options = options or settings.cors
    header = settings.request_id_header
    if header is not None:
        name = header.lower()
        if name not in options.expose_headers and "*" not in options.expose_headers:
            options = dataclasses.replace(options, expose_headers=(*options.expose_headers, name))
    return compile_policy(options)


def _token_codec(app: Flask, settings: Settings) -> StreamTokens | None:
    secret = app.secret_key
    if not secret:
        return None
    fallbacks = app.config.get("SECRET_KEY_FALLBACKS") or []
    keys: list[str | bytes] = [*fallbacks, secret]
    return StreamTokens(keys, default_max_age=settings.token_max_age)


def _request_id_headers(settings: Settings) -> tuple[tuple[str, str], ...]:
    header = settings.request_id_header
    if header is None:
        return ()
    return ((header, t.cast(str, _request.request_id(settings))),)


def _preflight_target(state: AppState) -> tuple[ViewPolicy | None, t.Collection[str] | None]:
    """The policed view that decides a preflight, and the methods of its route.

    A preflight asks about the method the page is about to send, which may reach another view
    than the one ``OPTIONS`` matched (``GET`` and ``POST`` on one path, as two views): it is
    decided by the policy of the view that method would reach.
    """
    rule = _request.url_rule()
    environ = _request.environ()
    method = environ.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD")
    if method and environ.get("HTTP_ORIGIN") is not None:
        adapter = _request.url_adapter()
        try:
            matched, _ = adapter.match(method=method, return_rule=True)
        except HTTPException:
            matched = None
        if matched is not None and matched is not rule:
            spec = spec_of(state.app.view_functions.get(matched.endpoint))
            view = state.views.get(spec) if spec is not None else None
            return view, matched.methods
    view = state.view_for(rule.endpoint if rule is not None else None)
    return view, rule.methods if rule is not None else None


def _caller(view: cabc.Callable[..., t.Any]) -> cabc.Callable[..., t.Any]:
    """Call ``view`` as Flask would: a coroutine view through the app's ``ensure_sync``."""
    if not inspect.iscoroutinefunction(view):
        return view

    def call(*args: t.Any, **kwargs: t.Any) -> t.Any:
        return _request.app().ensure_sync(view)(*args, **kwargs)

    return call


def _warn_memory_broker(why: str) -> None:
    logger.warning(
        "flask-ssecors uses the in-memory broker but %s: each worker process has its own "
        "broker, so events published in one process never reach streams served by another. "
        "Set the config key SSECORS_BROKER_URL to a Redis or PostgreSQL URL (from the environment: "
        "FLASK_SSECORS_BROKER_URL with app.config.from_prefixed_env()), or run one worker "
        "process.",
        why,
    )


def _as_iterable(rv: object) -> cabc.Iterable[object]:
    if isinstance(rv, str | bytes | dict) or not isinstance(rv, cabc.Iterable):
        raise UsageError(
            "a stream view must return or yield events, or return sse.subscribe(...); "
            f"it returned {type(rv).__name__}"
        )
    return rv


def _takes_transaction(broker: Broker) -> bool:
    """Whether ``broker.publish`` accepts ``transaction=`` (the PostgreSQL broker's does)."""
    try:
        parameters = inspect.signature(broker.publish).parameters
    except (TypeError, ValueError):
        return False
    found = parameters.get("transaction")
    if found is not None:
        return found.kind in (found.KEYWORD_ONLY, found.POSITIONAL_OR_KEYWORD)
    return any(p.kind is p.VAR_KEYWORD for p in parameters.values())
