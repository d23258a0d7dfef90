"""``flask ssecors check-broker`` and ``broker-sql`` against a real PostgreSQL server (the pure
parts, and an unreachable server, are in tests/unit/test_broker_check.py and test_cli.py).

Each test gets a database of its own on one server. The apps here are given an in-memory broker:
both commands read the app's settings (``SSECORS_BROKER_URL``, ``SSECORS_BROKER_SCHEMA``), not
its broker, and the PostgreSQL broker would create the schema these tests want missing.
"""

from __future__ import annotations

import json
import secrets
import typing as t

import psycopg
import pytest
from flask import Flask

from flask_ssecors import SSECors
from flask_ssecors._cli import ssecors
from flask_ssecors.brokers import MemoryBroker
from flask_ssecors.brokers._postgres_schema import ensure_schema
from flask_ssecors.brokers._postgres_sql import ddl
from tests.support.postgres import PASSWORD
from tests.support.postgres import PostgresServer

pytestmark = [pytest.mark.live, pytest.mark.postgres, pytest.mark.timeout(120)]

ORIGINS = ["https://app.example.com"]


def new_database(server: PostgresServer, *options: str) -> str:
    """A fresh database on ``server``; its URL (the owner's, with the password)."""
    name = f"db_{secrets.token_hex(4)}"
    with psycopg.connect(server.admin_url("postgres"), autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name} {' '.join(options)}")
    return server.admin_url(name)


@pytest.fixture
def database(postgres: PostgresServer) -> str:
    return new_database(postgres)


def app_for(url: str, **config: object) -> Flask:
    app = Flask(__name__)
    app.config.update(SSECORS_ALLOWED_ORIGINS=ORIGINS, SSECORS_BROKER_URL=url, **config)
    SSECors(app, broker=MemoryBroker(backlog=10))
    return app


def check(app: Flask, *args: str) -> tuple[int, dict[str, t.Any], str]:
    """check-broker's exit status, JSON report and text report."""
    runner = app.test_cli_runner()
    as_json = runner.invoke(ssecors, ["check-broker", "--json", *args])
    text = runner.invoke(ssecors, ["check-broker", *args])
    assert as_json.exit_code == text.exit_code, text.output
    assert PASSWORD not in as_json.output + text.output
    return as_json.exit_code, json.loads(as_json.stdout), text.stdout


def apply(url: str, sql: str) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(sql)


def test_check_broker_on_a_fresh_database_says_the_schema_is_missing(database: str) -> None:
    status, report, text = check(app_for(database))
    assert status == 0, text  # the broker creates it at start: this role may
    assert report["schema"] == {"name": "ssecors", "present": False, "version": None, "expected": 1}
    assert report["server"]["version_num"] >= 120000
    assert report["server"]["encoding"] == "UTF8"
    assert report["privileges"]["create_in_database"] is True
    assert report["listen"]["ok"] is True
    assert "round_trip" not in report
    assert "schema   ssecors: missing" in text
    assert "note     the schema ssecors is missing: the app's broker creates it" in text
    assert "listen   LISTEN/NOTIFY: a notification came back in" in text


def test_broker_sql_applied_twice_then_check_broker_passes(database: str) -> None:
    """The printed statements are idempotent; check-broker then finds the schema at this
    version, LISTEN working, and a publish read back, rolled back so nothing is kept."""
    app = app_for(database)
    printed = app.test_cli_runner().invoke(ssecors, ["broker-sql"])
    assert printed.exit_code == 0
    apply(database, printed.stdout)
    apply(database, printed.stdout)
    status, report, text = check(app, "--channel", "room:1")
    assert status == 0, text
    assert report["ok"] is True and report["problems"] == []
    assert report["schema"]["present"] is True and report["schema"]["version"] == 1
    assert report["privileges"]["missing"] == [] and report["privileges"]["absent"] == []
    assert report["listen"]["ok"] is True
    trip = report["round_trip"]
    assert trip["ok"] is True and trip["channel"] == "room:1"
    assert trip["id"].endswith(".1")
    assert report["channel"]["notify_channel"].startswith("ssecors_")
    assert "publish  'room:1': id " in text
    assert ".1 written and read back in " in text  # rolled back: every run is the first
    assert "then rolled back (nothing kept, nothing delivered)" in text
    assert "ok       nothing here loses events on its own" in text
    with psycopg.connect(database) as connection:
        assert connection.execute("SELECT count(*) FROM ssecors.channels").fetchone() == (0,)
        assert connection.execute("SELECT count(*) FROM ssecors.events").fetchone() == (0,)


def test_a_schema_made_by_ensure_schema_passes_check_broker(database: str) -> None:
    with psycopg.connect(database, autocommit=True) as connection:
        ensure_schema(connection, "tenant_a")
    status, report, text = check(app_for(database, SSECORS_BROKER_SCHEMA="tenant_a"))
    assert status == 0, text
    assert report["schema"]["name"] == "tenant_a" and report["schema"]["version"] == 1
    assert report["round_trip"]["ok"] is True
    assert "schema   tenant_a: version 1 (this flask-ssecors: 1)" in text


def test_check_broker_names_what_a_role_without_rights_lacks(
    postgres: PostgresServer, database: str
) -> None:
    """The schema made by its owner (a migration), the app running as another role: each
    missing right is named with the GRANT that gives it; once granted, all is well."""
    apply(database, ddl("ssecors"))
    role = f"app_{secrets.token_hex(3)}"
    apply(database, f"CREATE ROLE {role} LOGIN PASSWORD 'app-pw-1'")
    as_app = database.replace(f"ssecors:{PASSWORD}@", f"{role}:app-pw-1@")
    status, report, text = check(app_for(as_app))
    assert status == 1
    assert report["schema"]["present"] is True
    assert any("GRANT USAGE ON SCHEMA ssecors" in p for p in report["problems"]), text
    assert any(
        "lacks SELECT on ssecors.meta; SELECT, INSERT, UPDATE, DELETE on ssecors.channels" in p
        for p in report["problems"]
    ), text
    assert "app-pw-1" not in text
    apply(
        database,
        f"GRANT USAGE ON SCHEMA ssecors TO {role}; "
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ssecors TO {role}",
    )
    status, report, text = check(app_for(as_app))
    assert status == 0, text
    assert report["round_trip"]["ok"] is True


def test_check_broker_reports_a_schema_of_another_version(database: str) -> None:
    apply(database, ddl("ssecors") + "UPDATE ssecors.meta SET version = 0;")
    status, report, text = check(app_for(database))
    assert status == 1
    assert "at version 0, this flask-ssecors needs 1" in text
    assert "round_trip" not in report


def test_check_broker_refuses_a_database_that_is_not_utf8(postgres: PostgresServer) -> None:
    url = new_database(postgres, "ENCODING 'LATIN1' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'")
    status, report, text = check(app_for(url))
    assert status == 1
    assert report["server"]["encoding"] == "LATIN1"
    assert "the database's encoding is LATIN1" in text


def test_check_broker_with_a_wrong_password_shows_neither(postgres: PostgresServer) -> None:
    url = postgres.url.replace(f":{PASSWORD}@", ":Pw9x-wrong@")
    status, report, text = check(app_for(url))
    assert status == 1
    assert "password authentication failed" in report["problems"][0]
    assert "Pw9x" not in json.dumps(report) + text
