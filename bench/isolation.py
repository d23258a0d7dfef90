"""``python -m bench.isolation``: the figures behind the isolation work, before and after.

Four measurements, each against a real gunicorn -k gevent worker (and redis-server where it
applies), on free loopback ports, everything stopped by PID:

``poison``
    One worker on Redis; a stream on ``calm`` receives 20 events/s. A client opens
    ``/rooms/a%0Ab/events`` (a stream of ``ticker`` and ``room:a\\nb``) and 30 events are
    published to ``room:a\\nb``. Reported: the longest gap between two ``calm`` events and their
    median latency, during the poison.
``replay``
    1,000 events of 16 KiB in the backlog; 20 clients resume from the oldest and never read
    (a 4 KiB receive buffer). Reported: the worker's RSS growth per client, for the Redis broker
    with one-channel streams and the memory broker with two-channel streams.
``redis-memory``
    Backlog 10, TTL 1 s, 12,000 events of 5 KB on 1,200 channels (``Publisher``); Redis's
    ``used_memory`` above its start, right after and once the TTL and 35 s more have passed.
``flood``
    One address asks for 900 streams (those over its per-client limit are answered with a
    ``retry:`` hint, and their connections kept alive) and opens idle sockets until the
    worker's 1,000 connections are taken (or its limits stop it); another address's
    ``GET /ping`` is timed (60 s at most). With ``--config`` the worker runs the given gunicorn
    configuration file (the shipped example's).

Run it against an older checkout with ``--code PATH`` (a ``git worktree`` of an earlier commit):
the same app file (``bench/isolation_app/``) runs on that checkout's flask-ssecors. Figures are
printed as JSON and one Markdown line each; nothing is timed against a fixed threshold.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import typing as t
from pathlib import Path

from ._common import free_port
from ._common import raise_nofile_limit
from ._common import ROOT
from ._common import rss_kib
from ._common import wait_for_port
from .peers import RedisServer as _PeersRedis

APP_DIR = Path(__file__).resolve().parent / "isolation_app"


class Server:
    """The isolation app under gunicorn -k gevent, one worker, on ``code``'s flask-ssecors."""

    def __init__(self, code: Path, env: dict[str, str], extra: t.Sequence[str] = ()) -> None:
        self.port = free_port()
        self.code = code
        self.env = {**os.environ, **env, "PYTHONPATH": str(code), "PYTHONUNBUFFERED": "1"}
        self.extra = list(extra)
        self.process: subprocess.Popen[bytes] | None = None
        self.log = open(os.devnull, "wb")  # noqa: SIM115

    def __enter__(self) -> Server:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-k",
                "gevent",
                "-w",
                "1",
                "--worker-connections",
                "2000",
                "--keep-alive",
                "30",
                "--no-control-socket",
                "--pythonpath",
                str(APP_DIR),
                *self.extra,
                "-b",
                f"127.0.0.1:{self.port}",
                "isolation_app:create_app()",
            ],
            cwd=self.code,
            env=self.env,
            stdout=self.log,
            stderr=self.log,
            start_new_session=True,
        )
        wait_for_port(self.port, self.process)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()

    def call(self, method: str, path: str, body: t.Any = None, source: str = "127.0.0.1") -> t.Any:
        connection = http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=60, source_address=(source, 0)
        )
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if payload else {}
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            return response.status, json.loads(response.read() or b"null")
        finally:
            connection.close()

    def worker_pid(self) -> int:
        return int(self.call("GET", "/stats")[1]["pid"])


@contextlib.contextmanager
def RedisServer() -> t.Iterator[_PeersRedis]:
    """A redis-server on a free port (:class:`bench.peers.RedisServer`), stopped afterwards."""
    server = _PeersRedis().start()
    try:
        yield server
    finally:
        server.stop()


def stream_request(path: str, last_event_id: str | None = None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Origin: http://localhost:5001"]
    lines.append("Accept: text/event-stream")
    if last_event_id is not None:
        lines.append(f"Last-Event-ID: {last_event_id}")
    return ("\r\n".join([*lines, "", ""])).encode()


def open_socket(port: int, source: str, receive_buffer: int | None = None) -> socket.socket:
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


# -- poison ----------------------------------------------------------------------------------


def poison(code: Path) -> dict[str, t.Any]:
    from flask_ssecors._parser import EventStreamParser

    with RedisServer() as redis, Server(code, {"BROKER_URL": redis.url}) as server:
        arrivals: list[tuple[float, float]] = []  # (received, published)
        calm = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        calm.request("GET", "/events/calm", headers={"Origin": "http://localhost:5001"})
        response = calm.getresponse()
        stop = threading.Event()

        def read() -> None:
            parser = EventStreamParser()
            while not stop.is_set():
                try:
                    chunk = response.read1(65536)
                except (OSError, http.client.HTTPException):
                    return
                if not chunk:
                    return
                now = time.time()
                for event in parser.feed(chunk):
                    if event.data:
                        arrivals.append((now, float(json.loads(str(event.data))["t"])))

        def publish_calm() -> None:
            while not stop.is_set():
                server.call("POST", "/publish", {"channels": ["calm"]})
                time.sleep(0.05)

        threads = [threading.Thread(target=f, daemon=True) for f in (read, publish_calm)]
        for thread in threads:
            thread.start()
        time.sleep(2)
        poisoned = open_socket(server.port, "127.0.0.1")
        poisoned.sendall(stream_request("/rooms/a%0Ab/events"))
        status_line = poisoned.recv(200).split(b"\r\n")[0].decode()
        began = time.time()
        refused = 0
        for _ in range(30):
            status, _ = server.call("POST", "/publish", {"channels": ["room:a\nb"]})
            refused += status != 200
            time.sleep(0.1)
        time.sleep(3)
        ended = time.time()
        stop.set()
        threads[1].join(5)
        calm.close()
        poisoned.close()
    window = sorted(received for received, _ in arrivals if began <= received <= ended)
    gaps = [b - a for a, b in itertools.pairwise(window)]
    latencies = [received - sent for received, sent in arrivals if began <= received <= ended]
    return {
        "poisoned_stream": status_line,
        "poison_publishes_refused": refused,
        "calm_events_during_poison": len(window),
        "longest_gap_s": round(max(gaps), 3) if gaps else None,
        "median_latency_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
    }


# -- replay memory ----------------------------------------------------------------------------


def replay(code: Path, broker: str) -> dict[str, t.Any]:
    clients, events, size = 20, 1000, 16 * 1024
    with contextlib.ExitStack() as stack:
        env = {"BACKLOG": str(events), "MAX_EVENT_SIZE": str(2 * size), "PER_CLIENT": "none"}
        if broker == "redis":
            env["BROKER_URL"] = stack.enter_context(RedisServer()).url
        server = stack.enter_context(Server(code, env))
        channels = ["a"] if broker == "redis" else ["a", "b"]
        first: dict[str, str] = {}
        for _ in range(events):
            _, answer = server.call("POST", "/publish", {"channels": channels, "pad": size - 100})
            for channel, event_id in zip(channels, answer["ids"], strict=True):
                first.setdefault(channel, event_id)
        if broker == "redis":
            path, last_id = "/events/a", first["a"]
        else:
            path, last_id = "/multi?c=a&c=b", f"{first['a']}~{first['b']}"
        pid = server.worker_pid()
        time.sleep(1)
        before = rss_kib(pid)
        sockets = []
        for _ in range(clients):
            sock = open_socket(server.port, "127.0.0.1", receive_buffer=4096)
            sock.sendall(stream_request(path, last_id))
            sockets.append(sock)
        time.sleep(5)
        after = rss_kib(pid)
        for sock in sockets:
            sock.close()
    per_client = (after - before) / clients / 1024
    return {"broker": broker, "path": path, "rss_growth_per_client_mib": round(per_client, 2)}


# -- Redis memory after the TTL ---------------------------------------------------------------


def redis_memory(code: Path) -> dict[str, t.Any]:
    script = f"""
import sys, time, redis
sys.path.insert(0, {str(code)!r})
from flask_ssecors import Event, Publisher
url = sys.argv[1]
client = redis.Redis.from_url(url)
base = client.info("memory")["used_memory"]
with Publisher(url, backlog=10, channel_ttl=1.0) as publisher:
    for n in range(12000):
        publisher.publish(f"user:{{n % 1200}}", Event("x" * 5000))
held = client.info("memory")["used_memory"] - base
time.sleep(36)
left = client.info("memory")["used_memory"] - base
print(held, left, client.dbsize())
"""
    with RedisServer() as redis:
        out = subprocess.run(
            [sys.executable, "-c", script, redis.url],
            cwd=code,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    held, left, keys = (int(v) for v in out[-3:])
    return {"held_mb": round(held / 1e6, 1), "after_ttl_mb": round(left / 1e6, 2), "keys": keys}


# -- one address's flood --------------------------------------------------------------------


def flood(code: Path, config: str | None) -> dict[str, t.Any]:
    connections = 1000
    extra = ["--worker-connections", str(connections)]
    if config is not None:
        extra = ["-c", config, *extra]
    env = {"API_PORT": "0", "PAGE_PORT": "1"} if config else {}
    raise_nofile_limit()
    with Server(code, env, extra) as server, contextlib.ExitStack() as held:
        accepted = 0
        opened = []
        for _ in range(900):
            try:
                sock = open_socket(server.port, "127.0.0.2")
            except OSError:
                break
            held.callback(sock.close)
            sock.sendall(stream_request("/events/hog"))
            opened.append(sock)
        time.sleep(2)  # turned-away streams end after their retry: hint (kept alive)
        streams = sum(still_open(sock) for sock in opened)
        idle = []
        for _ in range(connections + 200 - streams):
            try:
                sock = open_socket(server.port, "127.0.0.2")
            except OSError:
                break
            held.callback(sock.close)
            idle.append(sock)
            accepted += 1
        time.sleep(1)
        closed = sum(not still_open(sock) for sock in idle)
        began = time.monotonic()
        try:
            status, _ = server.call("GET", "/ping", source="127.0.0.3")
        except TimeoutError:
            status = None
        waited = time.monotonic() - began
    return {
        "config": config or "gunicorn -k gevent --keep-alive 30 (previous recommendation)",
        "connections_held_by_one_address": streams,
        "idle_sockets_opened": accepted,
        "idle_sockets_closed_by_the_server": closed,
        "other_address_ping_status": status,
        "other_address_ping_s": round(waited, 3),
    }


def still_open(sock: socket.socket) -> bool:
    """Whether the server still holds ``sock`` open (what it sent is read and dropped)."""
    sock.setblocking(False)
    try:
        while True:
            if not sock.recv(65536):
                return False
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.isolation", description=__doc__)
    parser.add_argument("what", nargs="*", default=["poison", "replay", "redis-memory", "flood"])
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout whose package runs")
    parser.add_argument("--config", help="gunicorn configuration file for 'flood'")
    args = parser.parse_args(argv)
    code = args.code.resolve()
    results: dict[str, t.Any] = {"code": str(code), "commit": _commit(code)}
    for what in args.what:
        if what == "poison":
            results["poison"] = poison(code)
        elif what == "replay":
            results["replay"] = [replay(code, "redis"), replay(code, "memory")]
        elif what == "redis-memory":
            results["redis_memory"] = redis_memory(code)
        elif what == "flood":
            results["flood"] = flood(code, args.config)
        print(json.dumps({what: results.get(what.replace("-", "_"))}), flush=True)
    print(json.dumps(results, indent=2))
    return 0


def _commit(code: Path) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(code), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
