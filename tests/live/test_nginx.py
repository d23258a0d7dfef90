"""Behind nginx, with its default ``proxy_buffering on``: events still arrive one by one.

Runs Debian's nginx on loopback in front of the example app under gunicorn, with three server
blocks:

- ``documented``: ``docs/nginx.conf.example`` as the docs show it (HTTP/1.1 and keepalive to
  the upstream), given free ports;
- ``defaults``: a bare ``proxy_pass``, every other setting nginx's default (HTTP/1.0 to the
  upstream, buffering on);
- ``control``: the same as ``defaults`` plus ``proxy_ignore_headers X-Accel-Buffering``.

Stream responses carry ``X-Accel-Buffering: no``, so the first two pass each event on as it
comes. The control shows what the header prevents: there, events are held back and arrive in a
batch, which is how the measurement is known to tell the two apart. (With HTTP/1.1 to the
upstream, nginx 1.22 was seen to pass events on promptly even with the header ignored, so the
control keeps nginx's default HTTP/1.0.)
"""

from __future__ import annotations

import collections.abc as cabc
import dataclasses
import itertools
import re
import subprocess
import time
import typing as t
from pathlib import Path

import pytest

from tests.support.example_server import ExampleServer
from tests.support.servers import free_port
from tests.support.servers import require_binary
from tests.support.servers import ROOT
from tests.support.servers import stop
from tests.support.servers import wait_for_port
from tests.support.wire import request
from tests.support.wire import StreamClient

pytestmark = pytest.mark.nginx

SNIPPET = ROOT / "docs" / "nginx.conf.example"
TICK = 0.3  # seconds between ticks
HEARTBEAT = 0.4  # SSECORS_HEARTBEAT
HISTORY = 90  # ticks a new client gets at once (example_app.ticker.Ticker.history)

CONFIG = """\
worker_processes 1;
events {{
    worker_connections 256;
}}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;

{servers}
}}
"""


def documented_server(api_port: int, port: int) -> str:
    """docs/nginx.conf.example with test ports."""
    snippet = SNIPPET.read_text()
    for old, new in {
        "server 127.0.0.1:5000;": f"server 127.0.0.1:{api_port};",
        "listen 8080;": f"listen 127.0.0.1:{port};",
    }.items():
        assert snippet.count(old) == 1, f"docs/nginx.conf.example no longer has {old!r}"
        snippet = snippet.replace(old, new)
    return snippet


def bare_server(api_port: int, port: int, extra: str = "") -> str:
    """A server block with nothing but ``proxy_pass`` (and ``extra``): nginx's defaults."""
    return f"""
server {{
    listen 127.0.0.1:{port};
    location / {{
        proxy_pass http://127.0.0.1:{api_port};
        {extra}
    }}
}}
"""


@dataclasses.dataclass
class Nginx:
    ports: dict[str, int]
    directory: Path


@pytest.fixture(scope="module")
def app_server(tmp_path_factory: pytest.TempPathFactory) -> cabc.Iterator[ExampleServer]:
    log = tmp_path_factory.mktemp("nginx-app") / "gunicorn.log"
    env = {"EXAMPLE_TICK_SECONDS": str(TICK), "SSECORS_HEARTBEAT": str(HEARTBEAT)}
    server = ExampleServer(log, env=env).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def nginx(
    app_server: ExampleServer, tmp_path_factory: pytest.TempPathFactory
) -> cabc.Iterator[Nginx]:
    binary = require_binary("nginx")
    tmp = tmp_path_factory.mktemp("nginx")
    ports = {name: free_port() for name in ("documented", "defaults", "control")}
    api = app_server.api_port
    servers = [
        documented_server(api, ports["documented"]),
        bare_server(api, ports["defaults"]),
        bare_server(api, ports["control"], "proxy_ignore_headers X-Accel-Buffering;"),
    ]
    conf = tmp / "nginx.conf"
    conf.write_text(CONFIG.format(tmp=tmp, servers="\n".join(servers)))
    args = [binary, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "error.log")]
    check = subprocess.run([*args, "-t"], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    process = subprocess.Popen(
        [*args, "-g", f"daemon off; pid {tmp}/nginx.pid;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for port in ports.values():
            wait_for_port(port, process)
        yield Nginx(ports, tmp)
    finally:
        stop(process)  # SIGTERM: nginx's fast shutdown
        error_log = (tmp / "error.log").read_text(errors="replace")
        assert not re.search(r"\[(emerg|alert|crit)\]", error_log), error_log


@dataclasses.dataclass(frozen=True)
class Arrival:
    at: float  # time.time() when the event was read
    n: int  # tick number: the tick happened at n * TICK seconds of Unix time

    @property
    def lag(self) -> float:
        """How long after the tick happened it reached the client."""
        return self.at - self.n * TICK


def read_live_ticks(port: int, seconds: float) -> tuple[StreamClient, list[Arrival]]:
    """Read /ticks for ``seconds``; the arrival of every tick that happened after connecting."""
    client = StreamClient(port, "/ticks", timeout=seconds + 5)
    connected = time.time()
    arrivals: list[Arrival] = []
    deadline = time.monotonic() + seconds
    try:
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = client.next_event(timeout=left)
            except TimeoutError:
                break
            n = int(t.cast(str, event.id))
            if n * TICK > connected:
                arrivals.append(Arrival(time.time(), n))
    finally:
        client.close()
    return client, arrivals


@pytest.mark.parametrize("server", ["documented", "defaults"])
def test_events_pass_nginx_one_by_one(nginx: Nginx, server: str) -> None:
    client, arrivals = read_live_ticks(nginx.ports[server], seconds=3.0)
    assert client.status == 200
    assert client.header("Content-Type") == "text/event-stream; charset=utf-8"
    assert client.header("X-Accel-Buffering") is None, "nginx keeps the header to itself"
    numbers = [a.n for a in arrivals]
    assert len(numbers) >= 7, arrivals
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    lags = [a.lag for a in arrivals]
    assert max(lags) < TICK / 2, f"each tick arrives right after it happens: {lags}"
    gaps = [b.at - a.at for a, b in itertools.pairwise(arrivals)]
    assert min(gaps) > TICK / 2, f"spread out, not batched: {gaps}"


def test_without_the_header_nginx_holds_events_back(nginx: Nginx) -> None:
    """The control: nginx's defaults, ignoring X-Accel-Buffering, buffer the stream."""
    client, arrivals = read_live_ticks(nginx.ports["control"], seconds=3.0)
    assert client.status == 200
    on_time = [a for a in arrivals if a.lag < TICK / 2]
    assert len(on_time) <= 1, f"the control should have held events back: {arrivals}"


@pytest.mark.parametrize("server", ["documented", "defaults"])
def test_heartbeats_pass_nginx(nginx: Nginx, server: str) -> None:
    port = nginx.ports[server]
    status, headers, _ = request(port, "/me")
    assert status == 200
    cookie = next(v for k, v in headers if k.lower() == "set-cookie").split(";", 1)[0]
    client = StreamClient(port, "/rooms/lobby/events", {"Cookie": cookie}, include_comments=True)
    beats: list[float] = []
    try:
        assert client.status == 200
        deadline = time.monotonic() + 6 * HEARTBEAT
        while time.monotonic() < deadline:
            event = client.next_event(timeout=3 * HEARTBEAT)
            if event.event in ("ssecors-join", "ssecors-leave"):
                continue  # users come and go: this stream's own, an earlier test's
            assert event.data is None, f"nothing but heartbeats on a quiet room: {event}"
            if event.comment is not None:
                beats.append(time.monotonic())
    finally:
        client.close()
    assert len(beats) >= 4, beats
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    assert min(gaps) > HEARTBEAT / 2, f"one at a time, as they are written: {gaps}"
    assert max(gaps) < HEARTBEAT * 2, gaps


def test_the_snippet_is_valid_nginx_config(tmp_path: Path) -> None:
    """docs/nginx.conf.example passes ``nginx -t`` as it is, inside an http block."""
    binary = require_binary("nginx")
    conf = tmp_path / "nginx.conf"
    conf.write_text(CONFIG.format(tmp=tmp_path, servers=SNIPPET.read_text()))
    args = [binary, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")]
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
