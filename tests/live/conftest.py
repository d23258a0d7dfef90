"""Fixtures shared by the live tests."""

from __future__ import annotations

import collections.abc as cabc

import pytest

from tests.support.postgres import PostgresServer


@pytest.fixture(scope="module")
def postgres() -> cabc.Iterator[PostgresServer]:
    """A PostgreSQL server of the test module's own (``initdb`` on a free port, stopped by
    PID afterwards; see :mod:`tests.support.postgres`)."""
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()
