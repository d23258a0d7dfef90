"""``check-broker``'s judgement of a Redis node and of a PostgreSQL database: pure code, fed the
facts a server reports; and what ``check-broker`` says when PostgreSQL cannot be reached (the
checks against a real server are in tests/live/test_postgres_cli_live.py)."""

from __future__ import annotations

import json
import typing as t

import pytest
from flask import Flask

from flask_ssecors import SSECors
from flask_ssecors._cli import ssecors
from flask_ssecors.brokers import MemoryBroker
from flask_ssecors.checker._broker_check import _judge
from flask_ssecors.checker._postgres_check import judge
from flask_ssecors.checker._postgres_check import to_text
from tests.support.servers import free_port


def report_of(version: str) -> dict[str, t.Any]:
    return {
        "problems": [],
        "nodes": [
            {
                "address": "127.0.0.1:6379",
                "version": version,
                "role": "primary",
                "connected_replicas": 1,
                "aof": True,
                "save": "",
                "maxmemory": 0,
                "maxmemory_policy": "noeviction",
            }
        ],
    }


@pytest.mark.parametrize("version", ["6.2.14", "5.0.7", None])
def test_a_redis_without_sharded_pub_sub_is_a_problem(version: str | None) -> None:
    report = report_of(t.cast(str, version))
    _judge(report, 0)
    assert len(report["problems"]) == 1
    assert "needs Redis 7.0 or later" in report["problems"][0]


@pytest.mark.parametrize("version", ["7.0.15", "7.2.4", "8.0.0"])
def test_redis_7_and_later_pass(version: str) -> None:
    report = report_of(version)
    _judge(report, 0)
    assert report["problems"] == []


# -- PostgreSQL ----------------------------------------------------------------------------------


def postgres_report(**changes: t.Any) -> dict[str, t.Any]:
    """What check_postgres gathers from a healthy server, with ``changes`` applied (a dotted
    key reaches into a section: ``schema__present=False``)."""
    report: dict[str, t.Any] = {
        "url": "postgresql://app:***@db.internal:5432/app",
        "kind": "postgres",
        "schema": {"name": "ssecors", "present": True, "version": 1, "expected": 1},
        "problems": [],
        "notes": [],
        "server": {
            "address": "db.internal:5432",
            "version": "16.4",
            "version_num": 160004,
            "rtt_ms": 0.25,
            "user": "app",
            "database": "app",
            "encoding": "UTF8",
        },
        "privileges": {
            "create_in_database": False,
            "use_schema": True,
            "create_in_schema": False,
            "missing": [],
            "absent": [],
        },
        "listen": {"ok": True, "channel": "ssecors_check_0a1b2c3d", "ms": 0.3},
        "round_trip": {"channel": "ssecors:check-broker", "ok": True, "id": "k3x9.7", "ms": 1.5},
    }
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            report[section][field] = value
        else:
            report[section] = value
    return report


def test_a_healthy_postgres_has_no_problem() -> None:
    report = postgres_report()
    judge(report)
    assert (report["problems"], report["notes"]) == ([], [])
    assert to_text(report).splitlines() == [
        "broker   postgresql://app:***@db.internal:5432/app (postgres)",
        "server   db.internal:5432: PostgreSQL 16.4, 0.25 ms, user app, database app, "
        "encoding UTF8",
        "schema   ssecors: version 1 (this flask-ssecors: 1)",
        "rights   create in the database: no; use the schema: yes; create in the schema: no; "
        "tables and functions: all granted",
        "listen   LISTEN/NOTIFY: a notification came back in 0.3 ms",
        "publish  'ssecors:check-broker': id k3x9.7 written and read back in 1.5 ms, then "
        "rolled back (nothing kept, nothing delivered)",
        "ok       nothing here loses events on its own",
    ]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"server__version": "11.22", "server__version_num": 110022}, "needs PostgreSQL 12"),
        ({"server__encoding": "SQL_ASCII"}, "encoding is SQL_ASCII"),
        (
            {"schema__present": False, "privileges": {"create_in_database": False}},
            "missing and this role may not create it",
        ),
        ({"schema__version": None}, "has no readable meta table"),
        ({"schema__version": 0}, "at version 0, this flask-ssecors needs 1"),
        ({"schema__version": 2}, "newer than this flask-ssecors's (1)"),
        ({"privileges__use_schema": False}, "GRANT USAGE ON SCHEMA ssecors"),
        ({"privileges__absent": ["function ssecors.publish"]}, "missing from the schema"),
        (
            {"privileges__missing": ["INSERT on ssecors.events", "DELETE on ssecors.events"]},
            "lacks INSERT, DELETE on ssecors.events",
        ),
        ({"listen": {"ok": False, "channel": "x"}}, "PgBouncer"),
        ({"round_trip": {"channel": "c", "ok": False}}, "was not read back"),
    ],
)
def test_what_can_lose_events_on_postgres(changes: dict[str, t.Any], expected: str) -> None:
    report = postgres_report(**changes)
    judge(report)
    assert len(report["problems"]) == 1, report["problems"]
    assert expected in report["problems"][0]
    assert f"warning  {report['problems'][0]}" in to_text(report)


def test_a_missing_schema_the_role_may_create_is_a_note() -> None:
    """The broker creates it when it starts: nothing to fix, but worth saying."""
    report = postgres_report(
        schema__present=False, schema__version=None, privileges={"create_in_database": True}
    )
    del report["round_trip"]
    judge(report)
    assert report["problems"] == []
    assert "creates it when it starts" in report["notes"][0]
    text = to_text(report)
    assert "schema   ssecors: missing" in text
    assert "note     the schema ssecors is missing" in text


def test_missing_rights_are_grouped_by_object() -> None:
    report = postgres_report(
        privileges__missing=[
            "SELECT on s.meta",
            "SELECT on s.events",
            "INSERT on s.events",
            "SELECT on s.presence",
            "INSERT on s.presence",
        ]
    )
    judge(report)
    assert (
        "lacks SELECT on s.meta; SELECT, INSERT on s.events, s.presence:" in (report["problems"][0])
    )


def postgres_app(make_app: t.Callable[..., Flask], url: str) -> Flask:
    """An app whose settings name PostgreSQL; its broker is an in-memory one, since
    check-broker reads the settings, not the broker."""
    app = make_app(SSECORS_BROKER_URL=url, SSECORS_BROKER_TIMEOUT=1.0)
    SSECors(app, broker=MemoryBroker(backlog=10))
    return app


def test_check_broker_says_when_postgres_cannot_be_reached(
    make_app: t.Callable[..., Flask],
) -> None:
    url = f"postgresql://app:Pw9xsecret@127.0.0.1:{free_port()}/app"
    app = postgres_app(make_app, url)
    runner = app.test_cli_runner()
    result = runner.invoke(ssecors, ["check-broker"])
    assert result.exit_code == 1
    assert "broker   postgresql://app:***@127.0.0.1:" in result.output
    assert "warning  cannot reach PostgreSQL: " in result.output
    assert "Pw9x" not in result.output
    result = runner.invoke(ssecors, ["check-broker", "--json", "--channel", "room:1"])
    report = json.loads(result.output)
    assert (result.exit_code, report["ok"], report["kind"]) == (1, False, "postgres")
    assert report["channel"]["notify_channel"].startswith("ssecors_")
    assert "Pw9x" not in result.output
