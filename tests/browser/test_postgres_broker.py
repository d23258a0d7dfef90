"""``SSECORS_BROKER_URL=postgresql://...`` switches the example to PostgreSQL: two workers, one
chat, who is in the room, and the ticker, through the database."""

from __future__ import annotations

import collections.abc as cabc
import typing as t

import pytest

from tests.support.postgres import PostgresServer

from .conftest import start_server
from .demo import consecutive
from .demo import open_page
from .demo import received
from .demo import send
from .demo import wait_for_chat
from .demo import wait_for_count

if t.TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

    from tests.support.example_server import ExampleServer

pytestmark = [pytest.mark.browser, pytest.mark.postgres]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> cabc.Iterator[ExampleServer]:
    """The example app with two gevent workers sharing a PostgreSQL broker."""
    with PostgresServer() as postgres:
        running = start_server(
            tmp_path_factory, "postgres", env={"SSECORS_BROKER_URL": postgres.url, "WORKERS": "2"}
        )
        try:
            yield running
        finally:
            running.stop()


def test_chat_reaches_tabs_on_every_worker(
    server: ExampleServer, new_context: t.Callable[[], BrowserContext]
) -> None:
    assert server.log_text().count("Booting worker") == 2
    assert "s3cret-pg" not in server.log_text(), "the database password reached the log"
    tabs = [open_page(new_context(), f"{server.page_origin}/") for _ in range(4)]
    for tab in tabs:
        wait_for_chat(tab)
    sent = [send(tab, f"from tab {n}")["id"] for n, tab in enumerate(tabs)]
    for tab in tabs:
        wait_for_count(tab, "chat", len(sent))
        assert received(tab, "chat") == sent, "every message once, in the same order"
        wait_for_count(tab, "ticks", 92)
        assert consecutive(received(tab, "ticks"))
