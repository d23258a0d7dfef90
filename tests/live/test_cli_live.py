"""``ssecors-check`` and the ``flask ssecors`` commands against live servers: the console scripts
against tests/live_apps/broken_servers.py, ``publish`` through a real Redis, and ``presence`` of
the example app's streams under gunicorn (the commands that need no server are in
tests/unit/test_cli.py)."""

from __future__ import annotations

import json
import typing as t
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask

from flask_ssecors import SSECors
from flask_ssecors._cli import ssecors
from flask_ssecors.brokers import create_broker
from flask_ssecors.checker._cli import check_command
from tests.support.example_server import ExampleServer
from tests.support.servers import LiveServer
from tests.support.servers import RedisServer
from tests.support.wire import StreamClient
from tests.unit.test_cli import BIN
from tests.unit.test_cli import ORIGIN
from tests.unit.test_cli import run


@pytest.fixture
def broken(broken_server: LiveServer) -> LiveServer:
    return broken_server


@pytest.mark.live
def test_console_script_passes_a_good_stream(broken: LiveServer) -> None:
    url = f"{broken.url}/good/events"
    result = run(str(BIN / "ssecors-check"), url, "--origin", ORIGIN, "--credentials")
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    assert lines[:2] == [f"ssecors-check {url}", f"  origin {ORIGIN}"]
    assert lines[-1] == "24 passed, 0 warnings, 0 failed: OK"
    assert '  pass  allow-origin: "Access-Control-Allow-Origin: https://app.example.com".' in lines
    # Not a terminal: one progress line per phase, on stderr only.
    assert "ssecors-check: waiting for the first bytes…" in result.stderr.splitlines()
    assert "\x1b" not in result.stdout + result.stderr


@pytest.mark.live
def test_json_report_for_ci_and_exit_status_1(broken: LiveServer) -> None:
    url = f"{broken.url}/reflect-any/events"
    result = run(
        str(BIN / "ssecors-check"), url, "--origin", ORIGIN, "--credentials", "--json", "-q"
    )
    assert result.returncode == 1
    assert result.stderr == ""
    report = json.loads(result.stdout)
    assert set(report) == {"url", "origin", "ok", "items"}
    assert (report["url"], report["origin"], report["ok"]) == (url, ORIGIN, False)
    assert all(set(i) == {"id", "status", "detail", "fix"} for i in report["items"])
    assert {i["status"] for i in report["items"]} <= {"pass", "fail", "warn"}
    failed = [i for i in report["items"] if i["status"] == "fail"]
    assert [i["id"] for i in failed] == [
        "hostile-unrelated",
        "hostile-suffix",
        "hostile-prefix",
        "hostile-port",
        "hostile-scheme",
        "hostile-null",
    ]
    assert '"Access-Control-Allow-Origin: null"' in failed[-1]["detail"]
    assert "SSECORS_ALLOWED_ORIGINS" in failed[-1]["fix"]


@pytest.mark.live
def test_flask_plugin_command_needs_no_app(broken: LiveServer, tmp_path: Path) -> None:
    """``flask ssecors check`` comes from the entry point; it runs where no app is found."""
    url = f"{broken.url}/no-vary/events"
    result = run(str(BIN / "flask"), "ssecors", "check", url, "--origin", ORIGIN, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "  FAIL  vary-origin: no Vary header" in result.stdout
    assert result.stdout.rstrip().endswith("1 failed: FAILED")


@pytest.mark.live
def test_headers_and_timeout_are_passed_on(broken: LiveServer) -> None:
    url = f"{broken.url}/good/events"
    args = [url, "--origin", ORIGIN, "-H", "Authorization: Bearer t", "-H", "X-Token:1"]
    result = CliRunner().invoke(check_command, [*args, "--timeout", "3", "--json"])
    assert result.exit_code == 0, result.output
    items = {i["id"]: i for i in json.loads(result.stdout)["items"]}
    assert "for GET with authorization, x-token" in items["preflight"]["detail"]


@pytest.fixture(scope="module")
def redis_url() -> t.Iterator[str]:
    pytest.importorskip("redis")
    with RedisServer() as server:
        yield server.url


@pytest.fixture
def redis_app(make_app: t.Callable[..., Flask], redis_url: str) -> Flask:
    app = make_app(SSECORS_BROKER_URL=redis_url)
    SSECors(app)
    return app


def replay_after(url: str, channel: str, last_id: str) -> bytes | None:
    """What a client that saw ``last_id`` gets first, through a broker of its own.

    Ids are read from the commands' stdout only: a wake-up greenlet that closing the Redis
    broker leaves behind can fail later, and gevent reports that on stderr, during whatever
    command runs next.
    """
    broker = create_broker(url, backlog=100)
    subscription = broker.subscribe(channel, last_id)
    try:
        return subscription.get(5)
    finally:
        subscription.close()
        broker.close()


@pytest.mark.redis
def test_publish_through_redis_reaches_other_processes(redis_app: Flask, redis_url: str) -> None:
    runner = redis_app.test_cli_runner()
    first = runner.invoke(ssecors, ["publish", "room:a", "one"])
    second = runner.invoke(
        ssecors, ["publish", "room:a", '{"text": "hi"}', "--json", "--event", "message"]
    )
    assert (first.exit_code, second.exit_code) == (0, 0), first.output + second.output
    second_id = second.stdout.strip()
    assert replay_after(redis_url, "room:a", first.stdout.strip()) == (
        f'id: {second_id}\nevent: message\ndata: {{"text":"hi"}}\n\n'.encode()
    )


@pytest.mark.redis
def test_publish_reads_standard_input(redis_app: Flask, redis_url: str) -> None:
    runner = redis_app.test_cli_runner()
    first = runner.invoke(ssecors, ["publish", "room:b", "x"])
    second = runner.invoke(ssecors, ["publish", "room:b", "-"], input="line 1\nline 2\n")
    assert second.exit_code == 0, second.output
    data = replay_after(redis_url, "room:b", first.stdout.strip())
    assert data is not None and data.endswith(b"data: line 1\ndata: line 2\n\n")


@pytest.mark.redis
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["news", "{not json", "--json"], "not JSON"),
        (["news", "x", "--event", "a\nb"], "event"),
    ],
)
def test_publish_refuses_bad_input(redis_app: Flask, args: list[str], message: str) -> None:
    result = redis_app.test_cli_runner().invoke(ssecors, ["publish", *args])
    assert result.exit_code == 2
    assert message in result.output


@pytest.mark.redis
def test_flask_publish_command_from_the_shell(redis_url: str, tmp_path: Path) -> None:
    (tmp_path / "shellapp.py").write_text(
        "from flask import Flask\n"
        "from flask_ssecors import SSECors\n"
        "app = Flask(__name__)\n"
        "app.config.update(SSECORS_ALLOWED_ORIGINS=['https://app.example.com'],\n"
        f"                  SSECORS_BROKER_URL={redis_url!r})\n"
        "SSECors(app)\n"
    )
    flask = str(BIN / "flask")
    env = {"PYTHONPATH": str(tmp_path)}
    first = run(flask, "--app", "shellapp", "ssecors", "publish", "c", "a", env=env, cwd=tmp_path)
    second = run(flask, "--app", "shellapp", "ssecors", "publish", "c", "b", env=env, cwd=tmp_path)
    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    data = replay_after(redis_url, "c", first.stdout.strip())
    assert data == f"id: {second.stdout.strip()}\ndata: b\n\n".encode()


def joined(stream: StreamClient, channel: str) -> str:
    """The member of the next join event on ``channel`` that ``stream`` (several channels)
    receives."""
    while True:
        event = stream.next_event()
        if event.event == f"{channel}/ssecors-join":
            return t.cast(str, json.loads(t.cast(str, event.data))["member"])


@pytest.mark.live
@pytest.mark.redis
def test_flask_presence_command_counts_a_servers_streams(redis_url: str, tmp_path: Path) -> None:
    """``flask ssecors presence`` in a shell, another process than the server: through Redis it
    sees the streams that the example app's two workers serve."""
    env = {"SSECORS_BROKER_URL": redis_url, "WORKERS": "2", "EXAMPLE_TICK_SECONDS": "0.2"}
    with ExampleServer(tmp_path / "gunicorn.log", env=env) as server:
        headers = {"Origin": server.page_origin}
        path = "/page-events?room=lobby"
        with (
            StreamClient(server.api_port, path, headers) as first,
            StreamClient(server.api_port, path, headers) as second,
        ):
            assert (first.status, second.status) == (200, 200)
            names = sorted([joined(first, "room:lobby"), joined(first, "room:lobby")])
            assert joined(second, "room:lobby") in names
            command = [str(BIN / "flask"), "--app", "example_app:create_app()", "ssecors"]
            shell = {"SSECORS_BROKER_URL": redis_url}
            result = run(*command, "presence", "room:lobby", env=shell)
            assert result.returncode == 0, result.stderr
            assert (
                result.stdout == f"{names[0]}\n{names[1]}\nroom:lobby: 2 members, 2 connections\n"
            )
            as_json = run(*command, "presence", "ticker", "--json", env=shell)
            assert json.loads(as_json.stdout) == {
                "channel": "ticker",
                "members": names,
                "member_count": 2,
                "connections": 2,
                "counts_only": False,
            }
