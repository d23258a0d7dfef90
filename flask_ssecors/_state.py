"""What flask-ssecors keeps per app: one flat object in ``app.extensions["ssecors"]``."""

from __future__ import annotations

import dataclasses
import enum
import typing as t

from ._stats import Counters
from .exceptions import SetupError

if t.TYPE_CHECKING:
    import collections.abc as cabc

    from flask import Flask

    from ._config import Settings
    from ._lifecycle import StreamTracker
    from ._policy import CorsPolicy
    from .brokers import Broker
    from .stats import StatsSnapshot
    from .tokens import StreamTokens


class ViewKind(enum.StrEnum):
    """Which decorator polices a view."""

    STREAM = "stream"
    CORS = "cors"


@dataclasses.dataclass(eq=False, frozen=True)
class ViewSpec:
    """What a decorator asked for: its kind and its validated overrides.

    The decorated view carries it as ``__ssecors__``; each app compiles it into a
    :class:`ViewPolicy`.
    """

    kind: ViewKind
    overrides: cabc.Mapping[str, object]


@dataclasses.dataclass(frozen=True, slots=True)
class ViewPolicy:
    """A decorated view's settings and compiled policy, for one app."""

    spec: ViewSpec
    settings: Settings
    policy: CorsPolicy


def spec_of(view: object) -> ViewSpec | None:
    """The :class:`ViewSpec` of a decorated view (through any decorators around it)."""
    while view is not None:
        spec = getattr(view, "__ssecors__", None)
        if isinstance(spec, ViewSpec):
            return spec
        view = getattr(view, "__wrapped__", None)
    return None


@dataclasses.dataclass(eq=False)
class AppState:
    """Per-app state, in ``app.extensions["ssecors"]``.

    :param app: the app.
    :param settings: its validated settings.
    :param policy: the app's compiled policy.
    :param broker: its broker.
    :param streams: its open streams in this process (capacity, deadlines, shutdown).
    :param tokens: signs and checks stream tokens; None when the app has no ``SECRET_KEY``.
    """

    app: Flask
    settings: Settings
    policy: CorsPolicy
    broker: Broker
    streams: StreamTracker
    tokens: StreamTokens | None
    counters: Counters = dataclasses.field(default_factory=Counters)
    #: Each decorated view's compiled policy.
    views: dict[ViewSpec, ViewPolicy] = dataclasses.field(default_factory=dict)
    #: The view policy of each endpoint, found once per endpoint (None: not policed).
    endpoints: dict[str, ViewPolicy | None] = dataclasses.field(default_factory=dict)
    #: The named policies (``sse.policy``), compiled for this app.
    policies: dict[str, CorsPolicy] = dataclasses.field(default_factory=dict)
    #: Whether the first request's environ was checked for several worker processes.
    checked_processes: bool = False

    def stats(self) -> StatsSnapshot:
        """The app's statistics in this worker process (see :mod:`flask_ssecors.stats`)."""
        streams = self.streams
        presence = getattr(self.broker, "presence_stats", None)  # a broker of the app's own
        return self.counters.snapshot(
            len(streams.streams),
            streams.events_in_open_streams(),
            presence() if presence is not None else None,
        )

    def view_for(self, endpoint: str | None) -> ViewPolicy | None:
        """The policy of the view that serves ``endpoint``, or None when it is not policed.

        Found once per endpoint: Flask refuses new routes once the app served a request.
        """
        if endpoint is None:
            return None
        try:
            return self.endpoints[endpoint]
        except KeyError:
            pass
        spec = spec_of(self.app.view_functions.get(endpoint))
        found = self.views.get(spec) if spec is not None else None
        if spec is not None and found is None:
            # Fail closed: serving the view unpoliced would let cross-site requests run it.
            raise SetupError(
                f"the view {endpoint!r} was decorated by an SSECors instance that is not the "
                "one registered on this app; decorate views with the instance passed to "
                "init_app (one instance can serve several apps)."
            )
        self.endpoints[endpoint] = found
        return found
