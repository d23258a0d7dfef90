"""Test-only routes, registered only when ``EXAMPLE_TEST_HOOKS=1``.

- ``GET /_test/stats``: what :class:`~example_app.observer.Observer` recorded, and the number of
  open subscriptions;
- ``POST /_test/reset``: forget the records;
- ``POST /_test/drop``: end every open stream now, as a deploy or a proxy timeout would.

None of these routes is policed by flask-ssecors: they are for the tests, not for browsers.
"""

from __future__ import annotations

import typing as t

from flask import Blueprint

from .extensions import sse
from .state import demo_state

hooks = Blueprint("testhooks", __name__, url_prefix="/_test")


@hooks.get("/stats")
def stats() -> t.Any:
    state = demo_state()
    return {**state.observer.snapshot(), "subscribers": sse.subscriber_count()}


@hooks.post("/reset")
def reset() -> t.Any:
    demo_state().observer.reset()
    return {"ok": True}


@hooks.post("/drop")
def drop() -> t.Any:
    return demo_state().streams.drop()
