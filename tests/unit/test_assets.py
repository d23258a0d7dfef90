"""The browser helper's blueprint: versioned URLs, long caching, the right content type."""

from __future__ import annotations

import base64
import hashlib
import importlib.resources

import pytest
from flask import Flask
from flask import url_for

from flask_ssecors import SSECors
from flask_ssecors._assets import asset_integrity
from flask_ssecors._assets import ASSET_NAMES
from flask_ssecors._assets import assets_blueprint
from flask_ssecors._assets import assets_version

HELPER = "ssecors-shared.js"


def shipped(name: str) -> bytes:
    return (importlib.resources.files("flask_ssecors") / "static" / name).read_bytes()


@pytest.fixture
def app() -> Flask:
    app = Flask(__name__)
    app.testing = True
    app.register_blueprint(assets_blueprint())
    return app


def test_the_helper_is_served_with_long_caching_and_the_javascript_type(app: Flask) -> None:
    response = app.test_client().get(f"/_ssecors/{assets_version()}/{HELPER}")
    assert response.status_code == 200
    assert response.data == shipped(HELPER)
    assert response.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert response.headers["ETag"].startswith('"'), "a strong entity tag (not W/)"


def test_a_matching_etag_gets_304(app: Flask) -> None:
    client = app.test_client()
    url = f"/_ssecors/{assets_version()}/{HELPER}"
    etag = client.get(url).headers["ETag"]
    response = client.get(url, headers={"If-None-Match": etag})
    assert response.status_code == 304
    assert response.data == b""
    assert client.get(url, headers={"If-None-Match": '"other"'}).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        f"/_ssecors/0000000000000000/{HELPER}",  # another version: not the bytes it named
        "/_ssecors/{version}/missing.js",
        "/_ssecors/{version}/_assets.py",
        "/_ssecors/{version}/../_assets.py",
        "/_ssecors/{version}/static%2Fssecors-shared.js",
    ],
)
def test_other_paths_are_not_found(app: Flask, path: str) -> None:
    response = app.test_client().get(path.format(version=assets_version()))
    assert response.status_code == 404


def test_url_for_fills_in_the_version(app: Flask) -> None:
    with app.test_request_context():
        assert url_for("ssecors_assets.asset", name=HELPER) == (
            f"/_ssecors/{assets_version()}/{HELPER}"
        )


def test_the_prefix_is_configurable() -> None:
    app = Flask(__name__)
    app.register_blueprint(assets_blueprint("/static/ssecors"))
    response = app.test_client().get(f"/static/ssecors/{assets_version()}/{HELPER}")
    assert response.status_code == 200


def test_the_version_is_a_digest_of_the_contents() -> None:
    version = assets_version()
    assert len(version) == 16 and all(c in "0123456789abcdef" for c in version)
    assert ASSET_NAMES == (HELPER,)


def test_the_integrity_value_matches_the_served_bytes() -> None:
    digest = base64.b64encode(hashlib.sha384(shipped(HELPER)).digest()).decode()
    assert asset_integrity(HELPER) == f"sha384-{digest}"


def test_served_beside_the_extension_in_testing_mode() -> None:
    """The ``*`` on these public files is not a second owner of a policed route's headers."""
    app = Flask(__name__)
    app.testing = True
    app.config.update(
        SSECORS_ALLOWED_ORIGINS=["http://localhost:5001"], SSECORS_ALLOW_CREDENTIALS=True
    )
    SSECors(app)  # registers the blueprint (SSECORS_HELPER_URL_PREFIX)
    assert "ssecors_assets" in app.blueprints
    client = app.test_client()
    headers = {"Origin": "http://localhost:5001"}
    response = client.get(f"/_ssecors/{assets_version()}/{HELPER}", headers=headers)
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    refused = client.get(
        f"/_ssecors/{assets_version()}/{HELPER}", headers={"Origin": "https://evil.example"}
    )
    assert refused.status_code == 200, "public files: any page may load them"


def test_the_extension_serves_the_helper_unless_told_not_to() -> None:
    def make(**config: object) -> Flask:
        app = Flask(__name__)
        app.config.update(SSECORS_ALLOWED_ORIGINS=["http://localhost:5001"], **config)
        SSECors(app)
        return app

    moved = make(SSECORS_HELPER_URL_PREFIX="/static/sse")
    assert moved.test_client().get(f"/static/sse/{assets_version()}/{HELPER}").status_code == 200
    off = make(SSECORS_HELPER_URL_PREFIX=None)
    assert "ssecors_assets" not in off.blueprints
    assert off.test_client().get(f"/_ssecors/{assets_version()}/{HELPER}").status_code == 404
