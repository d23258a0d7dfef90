"""Brokers: where events are published, kept for replay, and fanned out.

:func:`create_broker` picks one from ``SSECORS_BROKER_URL``. Every broker implements
:class:`~flask_ssecors.brokers.base.Broker` and passes the same contract test suite.
"""

from __future__ import annotations

from .base import Broker as Broker
from .base import Subscription as Subscription
from .base import SubscriptionClosed as SubscriptionClosed
from .memory import MemoryBroker as MemoryBroker


def create_broker(url: str, *, backlog: int) -> Broker:
    """Create the broker a validated ``SSECORS_BROKER_URL`` names.

    :param url: ``memory://`` or a Redis URL.
    :param backlog: events kept per channel for replay.
    """
    scheme = url.partition("://")[0].lower()
    if scheme == "memory":
        return MemoryBroker(backlog=backlog)
    from ..exceptions import ConfigError
    from ..exceptions import ConfigIssue

    raise ConfigError(
        [
            ConfigIssue(
                "SSECORS_BROKER_URL",
                url,
                "the Redis broker is not available in this version; use 'memory://'.",
            )
        ]
    )
