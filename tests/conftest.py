"""Shared fixtures. Live servers run in subprocesses; gevent monkey-patching stays out of the
pytest process."""

from __future__ import annotations

import typing as t

import pytest
from flask import Flask

from flask_ssecors import SSECors
from flask_ssecors._faults import FAULTS
from flask_ssecors.testing import SSETestClient

ALLOWED = "https://app.example.com"
HOSTILE = "https://evil.example.net"


@pytest.fixture(autouse=True)
def no_faults_carried_over() -> t.Iterator[None]:
    """Contained faults are counted per process: each test starts from none."""
    FAULTS.reset()
    yield


@pytest.fixture
def make_app() -> t.Callable[..., Flask]:
    """Build a testing app with the given ``SSECORS_*`` settings (origins default to ALLOWED)."""

    def make(**config: object) -> Flask:
        app = Flask("test_app")
        app.config.update(TESTING=True, SECRET_KEY="test")
        config.setdefault("SSECORS_ALLOWED_ORIGINS", [ALLOWED])
        app.config.update(config)
        app.test_client_class = SSETestClient
        return app

    return make


@pytest.fixture
def app(make_app: t.Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def sse(app: Flask) -> SSECors:
    return SSECors(app)


def stream_client(app: Flask) -> SSETestClient:
    """``app.test_client()``, typed as the :class:`SSETestClient` that ``make_app`` sets."""
    return t.cast(SSETestClient, app.test_client())
