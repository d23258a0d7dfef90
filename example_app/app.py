"""The example's app factory: one Flask app answering on two origins.

``make demo`` serves it with gunicorn on two ports of loopback:

- the page origin, ``http://localhost:5001`` (``PAGE_PORT``), serves the page;
- the API origin, ``http://localhost:5000`` (``API_PORT``), serves the streams and the chat.

A request is told apart by the port it arrived on, and each origin serves only its own routes,
so the page really is a cross-origin client of the API, as it would be on two hosts.

Configuration, from lowest to highest precedence: the defaults below; ``API_PORT``,
``PAGE_PORT``, ``SECRET_KEY``, ``EXAMPLE_TICK_SECONDS`` and ``EXAMPLE_TEST_HOOKS`` from the
environment; any ``SSECORS_*`` environment variable, read as JSON when it parses
(``SSECORS_ALLOWED_HEADERS='["last-event-id", "content-type"]'``) and as a string otherwise
(``SSECORS_BROKER_URL=redis://localhost:6379/0``); the ``config`` argument.
"""

from __future__ import annotations

import collections.abc as cabc
import json
import os
import secrets
import typing as t

from flask import abort
from flask import current_app
from flask import Flask
from flask import request

from .api import api
from .api import describe
from .api import open_room
from .extensions import sse
from .observer import Observer
from .page import page
from .state import DemoState
from .testhooks import hooks
from .ticker import Ticker

#: The chat rooms and their topics.
ROOMS = {"lobby": "Say hi. Every open tab, on every allowed page, sees it at once."}


def create_app(config: cabc.Mapping[str, t.Any] | None = None) -> Flask:
    """Build the example app.

    :param config: settings that override the defaults and the environment (tests use it).
    """
    environ = os.environ
    app = Flask(__name__, static_folder=None)
    app.config.update(
        EXAMPLE_API_PORT=int(environ.get("API_PORT", "5000")),
        EXAMPLE_PAGE_PORT=int(environ.get("PAGE_PORT", "5001")),
        EXAMPLE_TICK_SECONDS=float(environ.get("EXAMPLE_TICK_SECONDS", "1.0")),
        EXAMPLE_TEST_HOOKS=environ.get("EXAMPLE_TEST_HOOKS") == "1",
        EXAMPLE_FEED_TOKEN="demo-token",
        # Random per start unless given: gunicorn.conf.py draws one for all its workers.
        SECRET_KEY=environ.get("SECRET_KEY") or secrets.token_hex(32),
        SESSION_COOKIE_NAME="ssecors_demo_session",
        SESSION_COOKIE_SAMESITE="Lax",
        SSECORS_ALLOW_CREDENTIALS=True,
        # The defaults, plus authorization for the fetch() reader of /feed.
        SSECORS_ALLOWED_HEADERS=["last-event-id", "cache-control", "content-type", "authorization"],
        # Reconnect one second after a stream ends, instead of the browsers' three.
        SSECORS_RETRY=1000,
        # A user's first stream on a chat room publishes ssecors-join there, its last one
        # ssecors-leave: the page's "In the room" list follows them. The ticker stays quiet.
        SSECORS_PRESENCE_EVENTS=["room:*"],
        # No request body larger than an event may be.
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    app.config.update(ssecors_environment(environ))
    app.config.update(config or {})
    api_port, page_port = app.config["EXAMPLE_API_PORT"], app.config["EXAMPLE_PAGE_PORT"]
    if api_port == page_port:
        raise ValueError(f"API_PORT and PAGE_PORT must differ (both are {api_port})")
    app.config.setdefault("EXAMPLE_API_ORIGIN", f"http://localhost:{api_port}")
    app.config.setdefault("EXAMPLE_PAGE_ORIGIN", f"http://localhost:{page_port}")
    app.config.setdefault("EXAMPLE_REFUSED_ORIGIN", f"http://127.0.0.1:{page_port}")
    app.config.setdefault("SSECORS_ALLOWED_ORIGINS", [app.config["EXAMPLE_PAGE_ORIGIN"]])

    sse.init_app(app)
    observer = Observer(
        enabled=app.config["EXAMPLE_TEST_HOOKS"], cookie_name=app.config["SESSION_COOKIE_NAME"]
    )
    with app.app_context():
        rooms = {name: open_room(name, topic) for name, topic in ROOMS.items()}
    app.extensions["ssecors_example"] = DemoState(
        ticker=Ticker(interval=app.config["EXAMPLE_TICK_SECONDS"]),
        observer=observer,
        rooms=rooms,
    )
    app.register_blueprint(page)
    app.register_blueprint(api)
    if app.config["EXAMPLE_TEST_HOOKS"]:
        app.register_blueprint(hooks)
        app.wsgi_app = observer.wrap(app.wsgi_app)  # type: ignore[method-assign,assignment]
    app.before_request(_keep_origins_apart)
    return app


def ssecors_environment(environ: cabc.Mapping[str, str]) -> dict[str, t.Any]:
    """The ``SSECORS_*`` settings given in the environment; JSON values are decoded.

    An unknown ``SSECORS_*`` name is passed on too, so that flask-ssecors reports the typo.
    """
    settings: dict[str, t.Any] = {}
    for key, raw in environ.items():
        if key.startswith("SSECORS_"):
            try:
                settings[key] = json.loads(raw)
            except ValueError:
                settings[key] = raw
    return settings


def _keep_origins_apart() -> t.Any:
    """Serve the page only on the page port, and the API only on the API port.

    ``/`` on the API port describes the API instead of serving the page.
    """
    if request.endpoint is None or request.blueprint == "ssecors_assets":
        return None  # the tab-shared helper: the page loads it from its own origin
    on_page_port = request.environ.get("SERVER_PORT") == str(
        current_app.config["EXAMPLE_PAGE_PORT"]
    )
    if on_page_port == (request.blueprint == "page"):
        return None
    if request.endpoint == "page.index":
        return describe()
    abort(404)
