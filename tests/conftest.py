"""Shared fixtures. Live servers run in subprocesses; gevent monkey-patching stays out of the
pytest process.

The suite is in three folders: ``tests/unit`` (no external service; ``make test-fast``),
``tests/live`` (real servers in subprocesses: gunicorn, redis-server, nginx) and
``tests/browser`` (headless Chromium). No test writes into the checkout: a run that leaves
``git status`` different from how it found it fails (see :func:`pytest_sessionfinish`).
"""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest
from flask import Flask

from flask_ssecors import SSECors
from flask_ssecors._faults import FAULTS
from flask_ssecors.testing import SSETestClient
from tests.support.servers import BrokenServer
from tests.support.servers import self_signed_certificate

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


@pytest.fixture(scope="module")
def broken_server() -> t.Iterator[BrokenServer]:
    """tests/live_apps/broken_servers.py on a free port, for the module."""
    with BrokenServer() as server:
        yield server


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and its key (made once per run)."""
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


def _git_status(root: Path) -> list[str] | None:
    """``git status --porcelain`` of the checkout, or None when it is not a git checkout."""
    import subprocess

    try:
        result = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=all"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.splitlines() if result.returncode == 0 else None


_ROOT: t.Final = Path(__file__).resolve().parents[1]
_status_before: list[str] | None = None


def pytest_sessionstart(session: pytest.Session) -> None:
    global _status_before
    _status_before = _git_status(_ROOT)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when the tests wrote into the checkout (files git sees that were not
    there before: a dump.rdb, a log, an artifact outside the ignored folders)."""
    if _status_before is None:
        return
    after = _git_status(_ROOT)
    if after is None:
        return
    new = sorted(set(after) - set(_status_before))
    if new:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print(
            "\nThe tests wrote into the checkout (git status shows it); write to tmp_path "
            "instead:\n  " + "\n  ".join(new)
        )
