"""The unit suite uses no external service: no redis-server, Chromium, nginx or app server.

``make test-fast`` runs it (``pytest tests/unit``), on any machine with the package installed.
A unit test that reaches for a service fails here, saying so, instead of skipping or waiting.
"""

from __future__ import annotations

import typing as t

import pytest

from tests.support import servers


@pytest.fixture(autouse=True)
def no_external_service(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: t.Any, **kwargs: t.Any) -> t.NoReturn:
        raise AssertionError(
            "a unit test reached for an external service (a binary or a server): move it to "
            "tests/live/ or tests/browser/"
        )

    monkeypatch.setattr(servers, "require_binary", refuse)
    monkeypatch.setattr(servers.LiveServer, "start", refuse)
