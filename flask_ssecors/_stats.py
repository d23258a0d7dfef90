"""The counters behind :meth:`~flask_ssecors.SSECors.stats` (see :mod:`flask_ssecors.stats`)."""

from __future__ import annotations

import collections
import enum
import typing as t

from ._faults import FAULTS
from ._log import get_logger
from .brokers._base import EndReason
from .stats import request_refused
from .stats import StatsSnapshot

if t.TYPE_CHECKING:
    from flask import Flask

logger = get_logger(__name__)


class RefusalKind(enum.StrEnum):
    """What refused a request (the ``kind`` of :data:`~flask_ssecors.stats.request_refused`)."""

    ORIGIN = "origin"
    TOKEN = "token"
    CAPACITY = "capacity"


#: End reasons that mean a slow client was cut off.
SLOW_CLIENT_REASONS: t.Final = frozenset({EndReason.OVERFLOW, EndReason.SEND_TIMEOUT})
#: End reasons that the server chose, counted in ``streams_ended``.
SERVER_END_REASONS: t.Final = frozenset(
    {EndReason.MAX_AGE, EndReason.TOKEN_EXPIRED, EndReason.SHUTDOWN}
)


class Counters:
    """The counters of one app in one process."""

    def __init__(self) -> None:
        self.streams_opened = 0
        self.streams_closed = 0
        self.events_sent_closed = 0
        self.slow_clients_dropped = 0
        self.streams_refused_busy = 0
        self.refused_origins: collections.Counter[str] = collections.Counter()
        self.token_refusals: collections.Counter[str] = collections.Counter()
        self.streams_ended: collections.Counter[str] = collections.Counter()

    def count_refusal(self, app: Flask, kind: RefusalKind, reason: str) -> None:
        """Count a refused request and send :data:`~flask_ssecors.stats.request_refused`."""
        if kind is RefusalKind.ORIGIN:
            self.refused_origins[reason] += 1
        elif kind is RefusalKind.TOKEN:
            self.token_refusals[reason] += 1
        else:
            self.streams_refused_busy += 1
        if request_refused.receivers:
            request_refused.send(app, kind=kind, reason=reason)

    def count_closed(self, reason: str, events: int) -> None:
        """Count a closed stream."""
        self.streams_closed += 1
        self.events_sent_closed += events
        if reason in SLOW_CLIENT_REASONS:
            self.slow_clients_dropped += 1
        elif reason in SERVER_END_REASONS:
            self.streams_ended[reason] += 1

    def snapshot(
        self, open_streams: int, events_in_open: int, presence: dict[str, int] | None = None
    ) -> StatsSnapshot:
        """The counters as a plain ``dict``."""
        return StatsSnapshot(
            open_streams=open_streams,
            streams_opened=self.streams_opened,
            streams_closed=self.streams_closed,
            events_sent=self.events_sent_closed + events_in_open,
            refused_origins={str(k): v for k, v in self.refused_origins.items()},
            token_refusals={str(k): v for k, v in self.token_refusals.items()},
            slow_clients_dropped=self.slow_clients_dropped,
            streams_refused_busy=self.streams_refused_busy,
            streams_ended={str(k): v for k, v in self.streams_ended.items()},
            faults=FAULTS.snapshot(),
            presence=presence or {"members": 0, "streams": 0, "updates": 0},
        )


def send_safely(signal: t.Any, app: Flask, **kwargs: object) -> None:
    """Send ``signal`` if anyone listens; a receiver that raises is logged, not propagated
    (it runs where a stream is being closed, which must go on)."""
    if not signal.receivers:
        return
    try:
        signal.send(app, **kwargs)
    except Exception:
        logger.exception("a receiver of %s raised", signal.name)
