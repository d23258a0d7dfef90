"""Per-client fairness on the wire, under gunicorn's gevent worker with the shipped
configuration (example_app/gunicorn.conf.py): one address holding its streams and as many idle
sockets as it likes cannot make another address's ordinary request wait; ProxyFix with a
server listening on every address is warned about. docs/deployment.rst ("One client cannot take
a worker", "ProxyFix") states the rules.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import time
import typing as t
from pathlib import Path

import pytest

from tests.support.servers import free_port
from tests.support.servers import LiveServer
from tests.support.swarm import Swarm

pytestmark = [pytest.mark.timeout(180)]

#: worker_connections for the flood: the review's figure, where 900 streams and 100 idle sockets
#: from one address filled a worker.
CONNECTIONS = 1000


def example_server(log: Path) -> LiveServer:
    """The example app under the shipped gunicorn configuration, on free ports, with the
    review's ``worker_connections``."""
    api = free_port()
    return LiveServer(
        "example_app:create_app()",
        port=api,
        env={
            "API_PORT": str(api),
            "PAGE_PORT": str(free_port()),
            "SSECORS_ALLOWED_ORIGINS": '["http://localhost:5001"]',
        },
        extra_args=["-c", "example_app/gunicorn.conf.py", "--worker-connections", str(CONNECTIONS)],
        log_path=log,
    )


def idle_sockets(port: int, source: str, count: int) -> list[socket.socket]:
    """``count`` connections from ``source`` that never send a byte."""
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind((source, 0))
        sock.settimeout(5)
        sock.connect(("127.0.0.1", port))
        sockets.append(sock)
    return sockets


def closed_by_the_server(sockets: list[socket.socket], within: float) -> int:
    """How many of ``sockets`` the server closed (EOF or reset) within ``within`` seconds."""
    deadline = time.monotonic() + within
    closed = 0
    for sock in sockets:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if sock.recv(1) == b"":
                closed += 1
        except ConnectionResetError:
            closed += 1
        except TimeoutError:
            pass
    return closed


def timed_get(port: int, path: str, source: str, timeout: float) -> tuple[int, float]:
    began = time.monotonic()
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=timeout, source_address=(source, 0)
    )
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status, time.monotonic() - began
    finally:
        connection.close()


def test_one_address_with_streams_and_idle_sockets_cannot_make_another_wait(
    tmp_path: Path,
) -> None:
    """Regression: with ``keepalive = 30``, one address holding its streams and 130 idle TCP
    connections made ``/ping`` from another address take 29.5 s. Under the shipped config the
    idle sockets over the per-address limit are closed at once, and the other address's request
    is answered."""
    with (
        example_server(tmp_path / "log") as server,
        Swarm(server.port, source="127.0.0.2") as hog,
        contextlib.ExitStack() as held,
    ):
        streams = hog.open(["/ticks"] * 70)
        statuses = sorted(s.status or 0 for s in streams)
        assert statuses == [200] * 70
        hog.wait_until(
            lambda: sum(1 for s in streams if s.ended) >= 6, 10, "six busy answers ending"
        )
        open_streams = [s for s in streams if not s.ended]
        assert len(open_streams) == 64  # SSECORS_MAX_STREAMS_PER_CLIENT's default
        flood = idle_sockets(server.port, "127.0.0.2", CONNECTIONS)
        for sock in flood:
            held.callback(sock.close)
        closed = closed_by_the_server(flood, within=10)
        # 128 per address: the 64 streams and 64 idle sockets stay, the rest is closed.
        assert closed >= CONNECTIONS - 64 - 8, f"only {closed} idle sockets were closed"
        status, waited = timed_get(server.port, "/ticks/recent", "127.0.0.3", timeout=10)
        assert status == 200
        print(f"\nanother address's request answered in {waited * 1000:.1f} ms")
        assert not any(s.ended for s in open_streams)
        log = server.log_text()
        assert "at most 128 connections per client address" in log
        assert "over the limit of 128 per client address" in log


@pytest.fixture
def proxyfix_server(tmp_path: Path) -> t.Iterator[LiveServer]:
    with socket.socket() as probe:  # free on every address, not only on 127.0.0.1
        probe.bind(("0.0.0.0", 0))
        port = int(probe.getsockname()[1])
    server = LiveServer(
        "tests.live_apps.hardening:create_app()",
        env={"PROXY_FIX": "1", "ORIGINS": "http://localhost:5001"},
        log_path=tmp_path / "log",
        port=port,
    )
    server.host = "0.0.0.0"  # listening on every address, as `gunicorn -b 0.0.0.0:PORT` does
    with server:
        yield server


def test_proxyfix_with_a_server_on_every_address_is_warned_about(
    proxyfix_server: LiveServer,
) -> None:
    """The review spoofed X-Forwarded-For straight to gunicorn and held 60 streams against a
    per-client limit of 10: flask-ssecors cannot tell a proxy from a client, but it says once,
    at the first rewritten stream request, that the port is open to everyone."""
    for n in range(3):
        connection = http.client.HTTPConnection("127.0.0.1", proxyfix_server.port, timeout=10)
        try:
            connection.request(
                "GET",
                "/events/proxied",
                headers={
                    "Origin": "http://localhost:5001",
                    "Accept": "text/event-stream",
                    "X-Forwarded-For": f"198.51.100.{n}",
                },
            )
            response = connection.getresponse()
            assert response.status == 200
        finally:
            connection.close()
    deadline = time.monotonic() + 5
    while "listens on 0.0.0.0" not in proxyfix_server.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = proxyfix_server.log_text()
    assert log.count("listens on 0.0.0.0") == 1
