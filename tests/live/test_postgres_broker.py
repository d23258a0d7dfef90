"""The PostgreSQL broker in-process, against a real PostgreSQL server on a free port.

The broker's connections wait through gevent's hub, so it runs in the pytest process without
monkey-patching. Two brokers on one schema stand for two worker processes sharing one
database; each test gets a schema of its own.
"""

from __future__ import annotations

import collections.abc as cabc
import secrets
import typing as t

import pytest

from flask_ssecors.brokers._postgres import PostgresBroker
from tests.support.postgres import PostgresServer
from tests.unit.test_brokers import BACKLOG
from tests.unit.test_brokers import BrokerContract

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60)]

MakeBroker = cabc.Callable[..., PostgresBroker]


@pytest.fixture(scope="module")
def postgres() -> cabc.Iterator[PostgresServer]:
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


class TestPostgresBrokerContract(BrokerContract):
    """The contract every broker passes; two brokers on one schema share their channels, as
    the worker processes of one app do."""

    shares_state_across_instances = True

    @pytest.fixture
    def make_broker(self, postgres: PostgresServer) -> cabc.Iterator[MakeBroker]:
        made: list[PostgresBroker] = []
        schema = f"c{secrets.token_hex(4)}"

        def make(backlog: int = BACKLOG, **options: t.Any) -> PostgresBroker:
            options.setdefault("timeout", 2.0)
            broker = PostgresBroker(postgres.url, backlog=backlog, schema=schema, **options)
            made.append(broker)
            return broker

        yield make
        for broker in made:
            broker.close()

    def replay_class(self) -> type:
        from flask_ssecors.brokers._postgres import _Replay

        return _Replay
