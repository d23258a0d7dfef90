"""The page's app of the tab-sharing browser tests, on another origin than the API.

It serves the test page, its script, and the browser helper from the page's own origin, as a
page's app would (a SharedWorker script must be same-origin with the page). It runs in a thread
of the test process: it only serves files.
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask
from flask import render_template_string
from flask import request
from flask import Response
from flask import url_for

from flask_ssecors._assets import assets_blueprint

HARNESS = Path(__file__).with_name("tabs_harness.js")

PAGE = """<!doctype html>
<html data-api="{{ api }}">
<meta charset="utf-8"><title>tabs</title>
<script src="{{ helper }}"></script>
<script src="{{ url_for('harness') }}"></script>
<body>tabs</body>
</html>
"""


def create_page_app(api: str, api_helper: str) -> Flask:
    """The page's app: the test page, the harness, and the helper (from the page's origin).

    ``/?helper=api`` loads the helper from the API's origin (``api_helper``) instead.

    :param api: the API's origin.
    :param api_helper: the helper's URL on the API's origin.
    """
    app = Flask(__name__)
    app.register_blueprint(assets_blueprint())

    @app.get("/")
    def page() -> Response:
        on_api = request.args.get("helper") == "api"
        helper = api_helper if on_api else url_for("ssecors_assets.asset", name="ssecors-shared.js")
        response = Response(render_template_string(PAGE, api=api, helper=helper))
        # The helper works under a strict policy: no inline script, no eval, no blob: worker.
        response.headers["Content-Security-Policy"] = (
            f"default-src 'none'; script-src 'self' {api}; connect-src {api}; worker-src 'self'"
        )
        return response

    @app.get("/harness.js")
    def harness() -> Response:
        return Response(HARNESS.read_bytes(), mimetype="text/javascript")

    return app
