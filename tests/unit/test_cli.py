"""The command line: ``ssecors-check``, ``flask ssecors check``, ``routes``, ``publish``,
``presence`` and ``broker-sql``.

The installed entry points are run as real subprocesses (console script, ``flask`` plugin
command); the rest goes through Click's runners.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest
from click.testing import CliRunner
from click.testing import Result
from flask import Flask
from flask import request

from flask_ssecors import Event
from flask_ssecors import SSECors
from flask_ssecors._cli import ssecors
from flask_ssecors.checker._cli import check_command
from flask_ssecors.testing import EventStreamReader
from tests.conftest import ALLOWED
from tests.conftest import stream_client
from tests.support.servers import ROOT

ORIGIN = "https://app.example.com"
BIN = Path(sys.executable).parent


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FLASK_")}
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**environ, **(env or {})},
        check=False,
    )


# -- check ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--origin", "https://app.example.com/"], "not an origin as browsers send it"),
        (["--origin", ORIGIN, "-H", "nocolon"], "is not a header; write Name:value"),
        (["--origin", ORIGIN, "--timeout", "0"], "--timeout"),
        ([], "Missing option '--origin'"),
    ],
)
def test_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(check_command, ["http://127.0.0.1:1/events", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_nothing_listening_exits_1() -> None:
    from tests.support.servers import free_port

    url = f"http://127.0.0.1:{free_port()}/events"
    result = CliRunner().invoke(check_command, [url, "--origin", ORIGIN, "--timeout", "1"])
    assert result.exit_code == 1
    assert "  FAIL  connect: cannot connect to" in result.stdout


def test_flask_lists_the_group(tmp_path: Path) -> None:
    result = run(str(BIN / "flask"), "ssecors", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for command in ("check", "presence", "publish", "routes"):
        assert f"  {command} " in result.stdout


# -- routes --------------------------------------------------------------------------------


@pytest.fixture
def policed(make_app: t.Callable[..., Flask]) -> Flask:
    app = make_app(SSECORS_ALLOW_CREDENTIALS=True, SSECORS_RETRY=2000)
    sse = SSECors(app)

    @app.get("/rooms/<room>/events")
    @sse.stream(heartbeat=5.0)
    def room_events(room: str) -> t.Any:
        return sse.subscribe(f"room:{room}")

    @app.get("/news")
    @sse.stream(origins=["https://*.example.org"], allow_credentials=False)
    def news() -> t.Any:
        return sse.subscribe("news")

    @app.get("/ticks")
    @sse.stream()
    def ticks() -> t.Any:
        yield Event("tick")

    @app.post("/rooms/<room>/messages")
    @sse.cors(allowed_methods=["POST"])
    def post_message(room: str) -> t.Any:
        return {}

    @app.get("/plain")
    def plain() -> str:
        return "not policed"

    return app


def test_routes_show_each_policed_route_and_its_effective_policy(policed: Flask) -> None:
    result = policed.test_cli_runner().invoke(ssecors, ["routes"])
    assert result.exit_code == 0, result.output
    blocks = {block.splitlines()[0]: block for block in result.stdout.strip().split("\n\n")}
    assert list(blocks) == [
        "GET /news  (news, stream)",
        "GET /rooms/<room>/events  (room_events, stream)",
        "POST /rooms/<room>/messages  (post_message, cors)",
        "GET /ticks  (ticks, stream)",
    ]
    room = blocks["GET /rooms/<room>/events  (room_events, stream)"]
    assert "    origins         https://app.example.com\n" in room
    assert "    credentials     yes\n" in room
    assert "    heartbeat       5 s\n" in room
    assert "    retry           2000 ms\n" in room
    assert room.endswith("    broker          memory://")
    assert "channel" not in result.output  # not guessed from the view's source any more
    news = blocks["GET /news  (news, stream)"]
    assert "    origins         https://*.example.org\n" in news
    assert "    credentials     no\n" in news
    assert "    heartbeat       15 s\n" in news
    ticks = blocks["GET /ticks  (ticks, stream)"]
    assert "    route methods   GET\n    policy allows   GET, HEAD, POST\n" in ticks
    post = blocks["POST /rooms/<room>/messages  (post_message, cors)"]
    assert post.endswith("    route methods   POST\n    policy allows   POST")
    assert "/plain" not in result.output


def test_routes_show_route_methods_apart_from_the_policy_methods(
    make_app: t.Callable[..., Flask],
) -> None:
    """Regression: a POST-only route printed ``methods GET, HEAD, POST`` (the policy's default
    allowed methods) as if the route accepted them. The route's own methods come from its
    url_map rule; what the policy allows is shown on its own line, with the route's methods
    that a cross-origin preflight refuses named."""
    app = make_app()
    sse = SSECors(app)

    @app.post("/messages")
    @sse.cors()
    def post_message() -> t.Any:
        return {}

    @app.route("/items", methods=["PUT", "DELETE", "POST"])
    @sse.cors(allowed_methods=["POST"])
    def items() -> t.Any:
        return {}

    result = app.test_cli_runner().invoke(ssecors, ["routes"])
    assert result.exit_code == 0, result.output
    blocks = {block.splitlines()[0]: block for block in result.stdout.strip().split("\n\n")}
    assert list(blocks) == [
        "DELETE POST PUT /items  (items, cors)",
        "POST /messages  (post_message, cors)",
    ]
    assert blocks["POST /messages  (post_message, cors)"].endswith(
        "    route methods   POST\n    policy allows   GET, HEAD, POST"
    )
    assert blocks["DELETE POST PUT /items  (items, cors)"].endswith(
        "    route methods   DELETE, POST, PUT\n"
        "    policy allows   POST (not DELETE, PUT: refused at the cross-origin preflight)"
    )
    routes = {
        r["endpoint"]: r
        for r in json.loads(app.test_cli_runner().invoke(ssecors, ["routes", "--json"]).stdout)
    }
    assert routes["post_message"]["methods"] == ["POST"]
    assert routes["post_message"]["allowed_methods"] == ["GET", "HEAD", "POST"]


def test_routes_json(policed: Flask) -> None:
    result = policed.test_cli_runner().invoke(ssecors, ["routes", "--json"])
    assert result.exit_code == 0, result.output
    routes = {route["endpoint"]: route for route in json.loads(result.stdout)}
    assert set(routes) == {"news", "post_message", "room_events", "ticks"}
    assert "channel" not in routes["room_events"]
    assert routes["room_events"]["allowed_headers"] == [
        "last-event-id",
        "cache-control",
        "content-type",
    ]
    assert routes["post_message"]["methods"] == ["POST"]
    assert routes["post_message"]["allowed_methods"] == ["POST"]
    assert "heartbeat" not in routes["post_message"]
    assert routes["ticks"]["methods"] == ["GET"]
    assert routes["ticks"]["allowed_methods"] == ["GET", "HEAD", "POST"]


def test_routes_redact_the_broker_password(make_app: t.Callable[..., Flask]) -> None:
    pytest.importorskip("redis")
    app = make_app(SSECORS_BROKER_URL="redis://user:s3cret@127.0.0.1:1/0")
    sse = SSECors(app)

    @app.get("/events")
    @sse.stream()
    def events() -> t.Any:
        return sse.subscribe("all")

    result = app.test_cli_runner().invoke(ssecors, ["routes"])
    assert "    broker          redis://user:***@127.0.0.1:1/0\n" in result.output
    assert "s3cret" not in result.output


def test_routes_without_the_extension(make_app: t.Callable[..., Flask]) -> None:
    result = make_app().test_cli_runner().invoke(ssecors, ["routes"])
    assert result.exit_code == 1
    assert "flask-ssecors is not initialised on this app" in result.output


def test_routes_with_nothing_policed(make_app: t.Callable[..., Flask]) -> None:
    app = make_app()
    SSECors(app)
    result = app.test_cli_runner().invoke(ssecors, ["routes"])
    assert result.exit_code == 0
    assert result.stdout.startswith("No route is policed")


# -- publish -------------------------------------------------------------------------------


def test_publish_refuses_the_in_memory_broker(make_app: t.Callable[..., Flask]) -> None:
    app = make_app()
    SSECors(app)
    result = app.test_cli_runner().invoke(ssecors, ["publish", "news", "hello"])
    assert result.exit_code == 1
    assert "reaches no stream served by another one" in result.output


@pytest.mark.redis
def test_publish_reports_an_unreachable_redis(make_app: t.Callable[..., Flask]) -> None:
    from tests.support.servers import free_port

    app = make_app(
        SSECORS_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0", SSECORS_BROKER_TIMEOUT=1.0
    )
    SSECors(app)
    result = app.test_cli_runner().invoke(ssecors, ["publish", "news", "x"])
    assert result.exit_code == 1
    assert "could not publish" in result.output


# -- presence ------------------------------------------------------------------------------


def present(make_app: t.Callable[..., Flask], **config: object) -> Flask:
    """An app whose ``/rooms/<room>?member=NAME`` stream declares ``NAME`` on ``room:<room>``."""
    app = make_app(**config)
    sse = SSECors(app)

    @app.get("/rooms/<room>")
    @sse.stream()
    def room(room: str) -> t.Any:
        return sse.subscribe(f"room:{room}", member=request.args["member"])

    return app


def presence(app: Flask, *args: str) -> Result:
    result = app.test_cli_runner().invoke(ssecors, ["presence", *args])
    assert result.exit_code == 0, result.output
    return result


@contextlib.contextmanager
def streams(app: Flask, *paths: str) -> t.Iterator[None]:
    """Open a stream on each of ``paths`` (in this process, on its memory broker) until the
    block ends."""
    client = stream_client(app)
    with contextlib.ExitStack() as stack:
        for path in paths:
            reader: EventStreamReader = stack.enter_context(
                client.open_stream(path, headers={"Origin": ALLOWED})
            )
            reader.read_chunk()  # the view ran: its member counts
        yield


def test_presence_lists_the_members_sorted_then_the_counts(
    make_app: t.Callable[..., Flask],
) -> None:
    app = present(make_app)
    opened = ["/rooms/1?member=carol", "/rooms/1?member=alice", "/rooms/1?member=alice"]
    with streams(app, *opened, "/rooms/1?member=bob", "/rooms/2?member=dave"):
        result = presence(app, "room:1")
        assert result.stdout == "alice\nbob\ncarol\nroom:1: 3 members, 4 connections\n"
        assert "only the streams of this process are counted" in result.stderr
        assert json.loads(presence(app, "room:1", "--json").stdout) == {
            "channel": "room:1",
            "members": ["alice", "bob", "carol"],
            "member_count": 3,
            "connections": 4,
            "counts_only": False,
        }
        assert presence(app, "room:2").stdout == "dave\nroom:2: 1 member, 1 connection\n"


def test_presence_of_a_channel_with_nobody(make_app: t.Callable[..., Flask]) -> None:
    app = present(make_app)
    with streams(app, "/rooms/1?member=alice"):
        assert presence(app, "room:empty").stdout == "room:empty: 0 members, 0 connections\n"
        assert json.loads(presence(app, "room:empty", "--json").stdout) == {
            "channel": "room:empty",
            "members": [],
            "member_count": 0,
            "connections": 0,
            "counts_only": False,
        }


def test_presence_counts_only_above_the_setting(make_app: t.Callable[..., Flask]) -> None:
    app = present(make_app, SSECORS_PRESENCE_MAX_MEMBERS=0)
    with streams(app, "/rooms/1?member=alice", "/rooms/1?member=bob", "/rooms/1?member=bob"):
        assert presence(app, "room:1").stdout == (
            "room:1: 2 members, 3 connections (counts only: more members than "
            "SSECORS_PRESENCE_MAX_MEMBERS = 0, so they are not listed)\n"
        )
        assert json.loads(presence(app, "room:1", "--json").stdout) == {
            "channel": "room:1",
            "members": [],
            "member_count": 2,
            "connections": 3,
            "counts_only": True,
        }


def test_presence_of_a_name_no_broker_stores_is_a_usage_error(
    make_app: t.Callable[..., Flask],
) -> None:
    result = present(make_app).test_cli_runner().invoke(ssecors, ["presence", "a\x01b"])
    assert result.exit_code == 2
    assert "Invalid value for 'CHANNEL'" in result.output


def test_presence_without_the_extension(make_app: t.Callable[..., Flask]) -> None:
    result = make_app().test_cli_runner().invoke(ssecors, ["presence", "room:1"])
    assert result.exit_code == 1
    assert "flask-ssecors is not initialised on this app" in result.output


@pytest.mark.redis
def test_presence_reports_an_unreachable_redis(make_app: t.Callable[..., Flask]) -> None:
    from tests.support.servers import free_port

    app = make_app(
        SSECORS_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0", SSECORS_BROKER_TIMEOUT=1.0
    )
    SSECors(app)
    result = app.test_cli_runner().invoke(ssecors, ["presence", "room:1"])
    assert result.exit_code == 1
    assert "could not read presence" in result.output
    assert "in-memory broker" not in result.output


# -- broker-sql ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "schema"),
    [
        ({}, "ssecors"),
        ({"SSECORS_BROKER_SCHEMA": "tenant_a"}, "tenant_a"),
        (
            {
                "SSECORS_BROKER_URL": "postgresql://app:s3cret@127.0.0.1:1/app",
                "SSECORS_BROKER_SCHEMA": "events",
            },
            "events",
        ),
        ({"SSECORS_BROKER_URL": "redis://127.0.0.1:1/0"}, "ssecors"),
    ],
)
def test_broker_sql_prints_the_schema_of_the_setting(
    make_app: t.Callable[..., Flask], config: dict[str, object], schema: str
) -> None:
    """Whatever the broker URL names, nothing is connected to (nothing listens there)."""
    from flask_ssecors.brokers import MemoryBroker
    from flask_ssecors.brokers._postgres_sql import ddl

    app = make_app(**config)
    SSECors(app, broker=MemoryBroker(backlog=1))
    result = app.test_cli_runner().invoke(ssecors, ["broker-sql"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ddl(schema)
    assert result.stdout.startswith(f'CREATE SCHEMA IF NOT EXISTS "{schema}";\n')
    assert "s3cret" not in result.output


def test_broker_sql_without_the_extension(make_app: t.Callable[..., Flask]) -> None:
    result = make_app().test_cli_runner().invoke(ssecors, ["broker-sql"])
    assert result.exit_code == 1
    assert "flask-ssecors is not initialised on this app" in result.output
