"""Faults contained where they happen: counted per stage, logged once, never propagated.

A loop that serves many (the Redis listener, a publish that fans out, a replay, a stream of
several channels) catches what one item raises: that event, channel or subscriber is dealt with
where it failed (the subscriber is dropped, and resumes from the backlog when it reconnects),
and the loop goes on serving the others. :data:`FAULTS` counts what was contained, per stage,
for :meth:`flask_ssecors.SSECors.stats` (``faults``) and the Prometheus collector.

Logging stays bounded whatever the rate: the first fault of each stage is logged with its
traceback; later ones of the same stage at most once per :data:`LOG_INTERVAL` seconds, as one
line that says how many were not logged.
"""

from __future__ import annotations

import collections
import enum
import sys
import time
import typing as t

import gevent.monkey

from ._log import get_logger
from ._logsafe import escape

logger = get_logger("flask_ssecors.faults")

#: Seconds between two log lines for faults of one stage, after the first.
LOG_INTERVAL: t.Final = 60.0


class Stage(enum.StrEnum):
    """Where a fault was contained."""

    #: An entry the Redis listener read could not be dispatched (malformed, or a bug).
    DISPATCH = "dispatch"
    #: Handing an event to one subscriber raised.
    DELIVER = "deliver"
    #: Writing an event's wire bytes (its id, its type on a stream of several channels) raised.
    ENCODE = "encode"
    #: Relabelling an event for a stream of several channels raised.
    RELABEL = "relabel"
    #: Reading a page of replayed events raised (other than the broker being unavailable).
    REPLAY = "replay"
    #: Writing one member's presence on one channel raised (other than the broker being
    #: unavailable): that change is dropped, the others of its batch are written.
    PRESENCE = "presence"


class Faults:
    """Counters of contained faults, per stage, for one process."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._logged: dict[str, tuple[float, int]] = {}
        #: A real OS lock even under monkey-patching: faults happen in any thread.
        self._lock = gevent.monkey.get_original("threading", "Lock")()

    def record(self, stage: Stage, what: str, subject: object = None) -> None:
        """Count a fault and log it if its stage's turn has come; call it in an ``except``.

        :param stage: where it happened.
        :param what: what was dropped or skipped because of it, in a few words.
        :param subject: the channel (or other untrusted value) concerned; logged escaped.
        """
        now = time.monotonic()
        with self._lock:
            self.counts[stage] += 1
            since, skipped = self._logged.get(stage, (-LOG_INTERVAL * 2, 0))
            if now - since < LOG_INTERVAL and since >= 0:
                self._logged[stage] = (since, skipped + 1)
                return
            first = stage not in self._logged
            self._logged[stage] = (now, 0)
        where = f" on channel {escape(subject)}" if subject is not None else ""
        if first:
            logger.exception("contained a fault (%s)%s: %s", stage, where, what)
        else:
            logger.error(
                "contained a fault (%s)%s: %s (%d more of this kind in the last %d s were not "
                "logged); error: %s",
                stage,
                where,
                what,
                skipped,
                round(now - since),
                _current_error(),
            )

    def reset(self) -> None:
        """Forget every count (and when each stage was last logged)."""
        with self._lock:
            self.counts.clear()
            self._logged.clear()

    def snapshot(self) -> dict[str, int]:
        """The counts, by stage."""
        with self._lock:
            return {str(stage): count for stage, count in self.counts.items()}


def _current_error() -> str:
    error = sys.exc_info()[1]
    return escape(f"{type(error).__name__}: {error}") if error is not None else "-"


#: The faults of this process.
FAULTS: t.Final = Faults()
