"""Brokers: where events are published, kept for replay, and fanned out.

:func:`create_broker` picks one from ``SSECORS_BROKER_URL``. Every broker implements
:class:`Broker` and passes the same contract test suite; a broker of your own, passed as
``SSECors(broker=...)``, hands out :class:`Subscription` objects and feeds them with
:meth:`Subscription.preload` and :meth:`Subscription.deliver`.
"""

from __future__ import annotations

import typing as t

from .._config import default_of
from .._urls import POSTGRES_SCHEMES as _POSTGRES_SCHEMES
from ._base import Broker as Broker
from ._base import MAX_CHANNEL_BYTES as MAX_CHANNEL_BYTES
from ._base import Replay as Replay
from ._base import Subscription as Subscription
from ._base import SubscriptionClosed as SubscriptionClosed
from ._memory import MemoryBroker as MemoryBroker

if t.TYPE_CHECKING:
    from ..exceptions import ConfigError
    from ._postgres import PostgresBroker as PostgresBroker
    from ._redis import RedisBroker as RedisBroker

__all__ = [
    "MAX_CHANNEL_BYTES",
    "Broker",
    "MemoryBroker",
    "PostgresBroker",
    "RedisBroker",
    "Replay",
    "Subscription",
    "SubscriptionClosed",
    "create_broker",
]


def __getattr__(name: str) -> object:
    if name == "RedisBroker":  # needs the redis package: imported when asked for
        from ._redis import RedisBroker

        return RedisBroker
    if name == "PostgresBroker":  # needs the psycopg package: imported when asked for
        from ._postgres import PostgresBroker

        return PostgresBroker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def create_broker(
    url: str,
    *,
    backlog: int,
    schema: str = default_of("broker_schema"),
    timeout: float = default_of("broker_timeout"),
    channel_ttl: float | None = default_of("channel_ttl"),
    max_event_size: int | None = default_of("max_event_size"),
    min_replicas: int = default_of("broker_min_replicas"),
    presence_ttl: float = default_of("presence_ttl"),
    presence_max_members: int = default_of("presence_max_members"),
) -> Broker:
    """Create the broker a validated ``SSECORS_BROKER_URL`` names.

    :param url: ``memory://``, a Redis URL (``redis://``, ``rediss://``, ``unix://``,
        ``redis+sentinel://``, ``redis+cluster://``) or a PostgreSQL URL (``postgresql://``,
        ``postgres://``).
    :param backlog: events kept per channel for replay (``SSECORS_BACKLOG``).
    :param schema: the PostgreSQL broker's schema (``SSECORS_BROKER_SCHEMA``); other brokers
        do not read it.
    :param timeout: bound on each broker operation, in seconds (``SSECORS_BROKER_TIMEOUT``).
    :param channel_ttl: seconds an unused channel is kept (``SSECORS_CHANNEL_TTL``).
    :param max_event_size: largest encoded event, in bytes (``SSECORS_MAX_EVENT_SIZE``).
    :param min_replicas: replicas that acknowledge each publish (``SSECORS_BROKER_MIN_REPLICAS``;
        the Redis broker only).
    :param presence_ttl: seconds within which a dead process's members leave
        (``SSECORS_PRESENCE_TTL``; shared brokers only).
    :param presence_max_members: joins are announced while a channel has at most this many
        members (``SSECORS_PRESENCE_MAX_MEMBERS``).
    :raises ConfigError: when the URL names Redis and the ``redis`` package is missing, or
        PostgreSQL and the ``psycopg`` package is.
    """
    scheme = url.partition("://")[0].lower()
    if scheme == "memory":
        return MemoryBroker(
            backlog=backlog,
            channel_ttl=channel_ttl,
            max_event_size=max_event_size,
            presence_max_members=presence_max_members,
        )
    if scheme in _POSTGRES_SCHEMES:
        try:
            from ._postgres import PostgresBroker
        except ImportError as error:
            raise _missing_extra(url, error) from None
        return PostgresBroker(
            url,
            backlog=backlog,
            timeout=timeout,
            channel_ttl=channel_ttl,
            max_event_size=max_event_size,
            schema=schema,
            presence_ttl=presence_ttl,
            presence_max_members=presence_max_members,
        )
    try:
        from ._redis import RedisBroker
    except ImportError as error:
        raise _missing_extra(url, error) from None
    return RedisBroker(
        url,
        backlog=backlog,
        timeout=timeout,
        channel_ttl=channel_ttl,
        max_event_size=max_event_size,
        min_replicas=min_replicas,
        presence_ttl=presence_ttl,
        presence_max_members=presence_max_members,
    )


def _missing_extra(url: str, error: ImportError) -> ConfigError:
    """The :class:`~flask_ssecors.exceptions.ConfigError` for a broker whose package is not
    installed (the import error's message says which extra to install)."""
    from .._urls import redact
    from ..exceptions import ConfigError
    from ..exceptions import ConfigIssue

    return ConfigError([ConfigIssue("SSECORS_BROKER_URL", redact(url), str(error))])
