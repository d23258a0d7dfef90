"""The browser helper's files, served by a blueprint at a versioned, cacheable URL.

``flask_ssecors/static/`` holds the JavaScript the extension ships (``ssecors-shared.js``: one
EventSource shared by every tab of an origin; see ``docs/tabs.rst``). :func:`assets_blueprint`
serves them at ``<url_prefix>/<version>/<name>``, where the version is a digest of the files'
contents: any change to a file changes every URL, so the responses can be cached for a year
and marked immutable. A request for another version is a ``404``: the server cannot produce
the bytes an older URL named.

The files are public and the same for everyone, so the responses allow any origin to read
them (``Access-Control-Allow-Origin: *``, no credentials), which lets a page on another origin
load them with ``<script integrity=... crossorigin>``; :func:`asset_integrity` gives the
``integrity`` value.

A SharedWorker script must come from the page's own origin. A page served by another Flask
app registers this blueprint there too (it needs no extension, only the blueprint); a page
served elsewhere copies the file, or loads it from the API's origin and shares the connection
through a leader tab instead (Web Locks and BroadcastChannel, no worker needed).

.. versionadded:: 0.1
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import importlib.resources
import typing as t

from flask import abort
from flask import Blueprint
from flask import request
from flask import Response

#: The files under ``flask_ssecors/static/`` that the blueprint serves.
ASSET_NAMES: t.Final = ("ssecors-shared.js",)
#: The default URL prefix of :func:`assets_blueprint`.
DEFAULT_URL_PREFIX: t.Final = "/_ssecors"
#: The name the blueprint is registered under (``url_for("ssecors_assets.asset", name=...)``).
BLUEPRINT_NAME: t.Final = "ssecors_assets"
_CACHE_CONTROL: t.Final = "public, max-age=31536000, immutable"
_MIMETYPES: t.Final = {".js": "text/javascript"}


@dataclasses.dataclass(frozen=True, slots=True)
class Asset:
    """One served file, read once."""

    name: str
    body: bytes
    mimetype: str
    #: Strong entity tag: a digest of :attr:`body`.
    etag: str
    #: The Subresource Integrity value, ``sha384-<base64>``.
    integrity: str


@functools.cache
def load_assets() -> tuple[str, dict[str, Asset]]:
    """Read the files once; return the version (a digest of them all) and the files by name."""
    folder = importlib.resources.files(__package__ or "flask_ssecors") / "static"
    assets: dict[str, Asset] = {}
    whole = hashlib.sha256()
    for name in ASSET_NAMES:
        body = (folder / name).read_bytes()
        whole.update(name.encode() + b"\0" + body + b"\0")
        suffix = name[name.rfind(".") :]
        assets[name] = Asset(
            name=name,
            body=body,
            mimetype=_MIMETYPES[suffix],
            etag=hashlib.sha256(body).hexdigest()[:32],
            integrity="sha384-" + base64.b64encode(hashlib.sha384(body).digest()).decode(),
        )
    return whole.hexdigest()[:16], assets


def assets_version() -> str:
    """The version segment of the assets' URLs: a digest of every file's contents."""
    return load_assets()[0]


def asset_integrity(name: str) -> str:
    """The ``integrity`` attribute value (Subresource Integrity) of the asset ``name``.

    :raises KeyError: when there is no such asset.
    """
    return load_assets()[1][name].integrity


def assets_blueprint(url_prefix: str = DEFAULT_URL_PREFIX) -> Blueprint:
    """A blueprint serving the browser helper at ``<url_prefix>/<version>/<name>``.

    ``url_for("ssecors_assets.asset", name="ssecors-shared.js")`` builds the current URL (the
    version is filled in). Responses are ``text/javascript; charset=utf-8`` with
    ``Cache-Control: public, max-age=31536000, immutable``, a strong ``ETag`` (conditional
    requests get ``304``), ``X-Content-Type-Options: nosniff``, and
    ``Access-Control-Allow-Origin: *`` (public files, never credentialed).

    :param url_prefix: where the files live on the app.
    """
    current, assets = load_assets()
    blueprint = Blueprint(BLUEPRINT_NAME, __name__, url_prefix=url_prefix)

    @blueprint.get("/<version>/<name>")
    def asset(version: str, name: str) -> Response:
        found = assets.get(name)
        if found is None or version != current:
            abort(404)
        response = Response(found.body, mimetype=found.mimetype)
        response.set_etag(found.etag)
        response.headers["Cache-Control"] = _CACHE_CONTROL
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
        response.make_conditional(request)  # a 304 for a matching If-None-Match
        return response

    @blueprint.url_defaults
    def _fill_version(endpoint: str, values: dict[str, t.Any]) -> None:
        if endpoint == f"{BLUEPRINT_NAME}.asset":
            values.setdefault("version", current)

    return blueprint
