"""What the wire audit hands the browser audit: its observations, and how progress is told.

A leaf of the checker: :mod:`._check` fills a :class:`Wire`, :mod:`._browser_audit` and
:mod:`._browser_items` quote it as evidence; none of them imports another for these.
"""

from __future__ import annotations

import typing as t

from . import _audit
from . import _stream_audit as rules
from ._audit import Seen

#: ``progress(phase, detail)``: what the check waits for now, for a progress line.
Progress = t.Callable[[str, str], None]


class Wire(t.NamedTuple):
    """What the wire audit saw, for the browser's items to quote as evidence."""

    preflight: Seen
    preflight_last_event_id: Seen | None
    stream: Seen
    observation: rules.Observation
    retry: int | None
    http2: bool


def wire_reasons(wire: Wire | None, origin: str, credentials: bool) -> str:
    """Why the wire audit expects the browser to fail, in words: the failed stream items."""
    if wire is None:
        return ""
    stream = wire.stream
    checks = [rules.status(stream)]
    if stream.status == 200:
        checks += [
            _audit.allow_origin(stream, origin, credentials),
            _audit.allow_credentials(stream, credentials),
            rules.content_type(stream),
            rules.hop_by_hop(stream, http2=wire.http2),
        ]
    failed = [f"{item.id}: {item.detail}" for item in checks if item.status == "fail"]
    return " The wire shows why: " + " ".join(failed) if failed else ""
