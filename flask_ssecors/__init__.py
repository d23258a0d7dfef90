"""Secure cross-origin Server-Sent Events for Flask, served by gevent.

The public API is what this package exports (see ``__all__``) and the public modules
:mod:`flask_ssecors.events`, :mod:`flask_ssecors.exceptions`, :mod:`flask_ssecors.testing`,
:mod:`flask_ssecors.brokers`, :mod:`flask_ssecors.tokens`, :mod:`flask_ssecors.stats` and
:mod:`flask_ssecors.requestid`. Modules whose name starts with ``_`` are internal.
"""

from __future__ import annotations

import importlib.metadata

from ._assets import assets_blueprint as assets_blueprint
from ._extension import SSECors as SSECors
from ._lifecycle import end_all_streams as end_all_streams
from ._request import last_event_id as last_event_id
from .brokers._presence import Presence as Presence
from .brokers._publisher import Publisher as Publisher
from .events import Event as Event

__version__: str = importlib.metadata.version("flask-ssecors")

__all__ = [
    "Event",
    "Presence",
    "Publisher",
    "SSECors",
    "__version__",
    "assets_blueprint",
    "end_all_streams",
    "last_event_id",
]
