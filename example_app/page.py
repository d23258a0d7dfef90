"""The page origin (``http://localhost:5001``): one HTML page, its script and its styles.

The page is plain HTML, CSS and JavaScript. Its settings (where the API is, which origins the
API allows) are written into the page as JSON. A strict Content-Security-Policy lets it load its
own files and connect to the API origin, nothing else.
"""

from __future__ import annotations

import typing as t

from flask import Blueprint
from flask import current_app
from flask import render_template

from flask_ssecors.events import RESET_EVENT

from .state import demo_state

page = Blueprint(
    "page",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)


@page.get("/")
def index() -> t.Any:
    """The demo page."""
    config = current_app.config
    settings = {
        "api": config["EXAMPLE_API_ORIGIN"],
        "allowedOrigins": list(config["SSECORS_ALLOWED_ORIGINS"]),
        "refusedOrigin": config["EXAMPLE_REFUSED_ORIGIN"],
        "pageOrigin": config["EXAMPLE_PAGE_ORIGIN"],
        "room": next(iter(demo_state().rooms)),
        "feedToken": config["EXAMPLE_FEED_TOKEN"],
        "tickSeconds": config["EXAMPLE_TICK_SECONDS"],
        "resetEvent": RESET_EVENT,
    }
    response = current_app.make_response(render_template("index.html", settings=settings))
    response.headers["Content-Security-Policy"] = "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            f"connect-src {config['EXAMPLE_API_ORIGIN']}",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
