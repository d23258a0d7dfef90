"""Fan-out through Redis: flask-ssecors against flask-sse, same Redis, same load, same run.

``python -m bench.redis_fanout --quick`` (100 and 1,000 subscribers) or ``--full`` (up to
10,000). For each app and size, a fresh ``gunicorn -k gevent -w 2`` serves the app, and one
redis-server (free port, stopped by PID) serves both apps. This process holds the subscribers
(gevent sockets, one greenlet each, no monkey-patching) and publishes over HTTP through the
servers' ``POST /publish/<channel>``; each event carries a sequence number, and the time it was
sent is kept here, so latency is "POST sent" to "bytes received by a subscriber", both read
from this process's monotonic clock.

Measured per app and size:

- latency: ``--latency-events`` events, one every ``1/--rate`` s; p50, p99, max over every
  delivery, and the share delivered;
- throughput: one POST publishing ``--burst`` events back to back; deliveries per second until
  the last subscriber has the last event; CPU seconds the workers and redis-server used;
- Redis connections (``CLIENT LIST``) with every subscriber connected, and worker RSS.

Both apps run in one gunicorn configuration and get the same subscribers and events. flask-sse
opens one Redis connection per stream and a new client on every publish (its documented
behaviour, kept as is); it sends no bytes until the first event, so its subscribers count as
ready when ``PUBSUB NUMSUB`` says so. On this machine (2 cores shared by servers, Redis and
this process) the load generator's own time is part of every latency; it is the same for both.
Results: printed as Markdown, saved to ``bench/results/redis_fanout-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
import time
import typing as t

import gevent
import gevent.event
import gevent.lock
import gevent.socket

if t.TYPE_CHECKING:
    from flask import Flask

CHANNEL = "bench"
APPS = ("flask-sse", "flask-ssecors")  # baseline first
_SEQ = re.compile(rb'"k": ?(\d+)')


# -- the two apps (gunicorn targets: bench.redis_fanout:ssecors_app()) -------------------------


def ssecors_app() -> Flask:
    """flask-ssecors with the Redis broker; URL from ``BENCH_REDIS_URL``."""
    from flask import Flask
    from flask import request

    from flask_ssecors import Event
    from flask_ssecors import SSECors

    app = Flask("bench_redis_ssecors")
    app.config.update(
        SSECORS_ALLOWED_ORIGINS=["https://app.example.com"],
        SSECORS_BROKER_URL=os.environ["BENCH_REDIS_URL"],
        SSECORS_HEARTBEAT=15.0,
        # Every client of the load comes from loopback, one client to the per-client limit.
        SSECORS_MAX_STREAMS_PER_CLIENT=None,
    )
    sse = SSECors(app)

    @app.get("/events/<channel>")
    @sse.stream()
    def events(channel: str) -> t.Any:
        return sse.subscribe(channel)

    @app.post("/publish/<channel>")
    def publish(channel: str) -> t.Any:
        first, count = int(request.args["k"]), int(request.args.get("count", "1"))
        for k in range(first, first + count):
            sse.publish(channel, Event({"k": k}, event="m"))
        return "ok\n"

    return app


def flask_sse_app() -> Flask:
    """flask-sse's blueprint as its README shows it; URL from ``BENCH_REDIS_URL``."""
    from flask import Flask
    from flask import request
    from flask_sse import sse  # type: ignore[import-untyped]

    app = Flask("bench_redis_flask_sse")
    app.config["REDIS_URL"] = os.environ["BENCH_REDIS_URL"]
    app.register_blueprint(sse, url_prefix="/stream")

    @app.post("/publish/<channel>")
    def publish(channel: str) -> t.Any:
        first, count = int(request.args["k"]), int(request.args.get("count", "1"))
        for k in range(first, first + count):
            sse.publish({"k": k}, type="m", channel=channel)
        return "ok\n"

    return app


TARGETS = {
    "flask-ssecors": ("bench.redis_fanout:ssecors_app()", f"/events/{CHANNEL}"),
    "flask-sse": ("bench.redis_fanout:flask_sse_app()", f"/stream?channel={CHANNEL}"),
}


# -- the load ---------------------------------------------------------------------------------


class Deliveries:
    """Arrival times per event sequence number, for every subscriber."""

    def __init__(self) -> None:
        self.sent: dict[int, float] = {}
        self.arrived: dict[int, list[float]] = {}
        self.heads = 0
        self.failed = 0
        self.changed = gevent.event.Event()

    def count(self, first: int, last: int) -> int:
        return sum(len(self.arrived.get(k, ())) for k in range(first, last + 1))


def subscriber(port: int, path: str, sink: Deliveries, gate: gevent.lock.Semaphore) -> None:
    """One stream: connect, send the request, then note when each event's ``k`` arrives."""
    try:
        with gate:
            sock = gevent.socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    except OSError:
        sink.failed += 1
        return
    sock.settimeout(None)
    head = True
    tail = b""
    last = -1
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return
            now = time.monotonic()
            if head:
                if b"\r\n\r\n" not in tail + data:
                    tail = (tail + data)[-3:]
                    continue
                head = False
                sink.heads += 1
            window = tail + data
            for match in _SEQ.finditer(window):
                k = int(match.group(1))
                if k > last:  # a marker seen twice (in the kept tail) counts once
                    last = k
                    sink.arrived.setdefault(k, []).append(now)
            tail = window[-16:]
            sink.changed.set()
    except OSError:
        return
    finally:
        sock.close()


def http_post(port: int, path: str) -> int:
    """A POST with an empty body over a new connection; the response status."""
    sock = gevent.socket.create_connection(("127.0.0.1", port), timeout=60)
    try:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return int(data.split(b" ", 2)[1])
    finally:
        sock.close()


def wait_until(condition: t.Callable[[], bool], timeout: float, poll: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        gevent.sleep(poll)
    return True


# -- one run ----------------------------------------------------------------------------------


def run_one(app: str, size: int, redis_url: str, admin: t.Any, opts: argparse.Namespace) -> dict:
    from bench._common import children_of
    from bench._common import cpu_seconds
    from bench._common import percentile
    from bench._common import rss_kib
    from tests.support.servers import LiveServer

    target, path = TARGETS[app]
    admin.flushall()
    server = LiveServer(
        target,
        env={"BENCH_REDIS_URL": redis_url},
        workers=2,
        extra_args=["--worker-connections", str(size + 1000), "--backlog", "4096"],
    )
    server.start()
    assert server.process is not None
    master = server.process.pid
    wait_until(lambda: len(children_of(master)) >= 2, 20)
    workers = children_of(master)
    redis_pid = int(admin.info("server")["process_id"])
    sink = Deliveries()
    gate = gevent.lock.Semaphore(200)
    result: dict[str, t.Any] = {"app": app, "subscribers": size}
    began = time.monotonic()
    greenlets = [gevent.spawn(subscriber, server.port, path, sink, gate) for _ in range(size)]
    try:
        if app == "flask-sse":
            ready = wait_until(lambda: admin.pubsub_numsub(CHANNEL)[0][1] >= size, 120, 0.2)
        else:
            ready = wait_until(lambda: sink.heads >= size, 120, 0.2)
        result["connect_s"] = round(time.monotonic() - began, 2)
        result["ready"] = ready
        result["connect_failures"] = sink.failed
        gevent.sleep(0.5)
        clients = admin.client_list()
        result["redis_connections"] = len(clients) - 1  # not this process's admin connection
        roles: dict[str, int] = {}
        for client in clients:
            name = str(client.get("name", ""))
            role = name.rsplit("-", 1)[0] if name.startswith("ssecors-") else "unnamed"
            roles[role] = roles.get(role, 0) + 1
        roles["unnamed"] = roles.get("unnamed", 1) - 1
        result["redis_connections_by_name"] = roles
        result["worker_rss_mib"] = round(sum(rss_kib(pid) for pid in workers) / 1024, 1)

        # Latency: events spaced out, each its own POST.
        k = 0
        for _ in range(opts.latency_events):
            sink.sent[k] = time.monotonic()
            http_post(server.port, f"/publish/{CHANNEL}?k={k}")
            k += 1
            gevent.sleep(1 / opts.rate)
        last = k - 1
        wait_until(lambda: sink.count(0, last) >= size * opts.latency_events, 30)
        latencies = [
            (arrival - sink.sent[n]) * 1000
            for n in range(opts.latency_events)
            for arrival in sink.arrived.get(n, ())
        ]
        result["latency_delivered"] = len(latencies) / (size * opts.latency_events)
        result["p50_ms"] = percentile(latencies, 0.5)
        result["p99_ms"] = percentile(latencies, 0.99)
        result["max_ms"] = max(latencies, default=float("nan"))
        result["per_event_p50_p99_ms"] = [
            [
                round(percentile(lat, 0.5), 1),
                round(percentile(lat, 0.99), 1),
            ]
            for n in range(opts.latency_events)
            if (lat := [(a - sink.sent[n]) * 1000 for a in sink.arrived.get(n, ())])
        ]

        # Throughput: one POST publishes a burst; wait for the last delivery.
        first = k
        cpu_before = {pid: cpu_seconds(pid) for pid in [*workers, redis_pid]}
        started = time.monotonic()
        http_post(server.port, f"/publish/{CHANNEL}?k={first}&count={opts.burst}")
        end = first + opts.burst - 1
        expected = size * opts.burst
        complete = wait_until(lambda: sink.count(first, end) >= expected, opts.burst_timeout)
        arrivals = [a for n in range(first, end + 1) for a in sink.arrived.get(n, ())]
        finished = max(arrivals, default=started)
        cpu = {pid: cpu_seconds(pid) - cpu_before[pid] for pid in cpu_before}
        delivered = len(arrivals)
        result["burst_delivered"] = delivered / expected
        result["burst_complete"] = complete
        result["deliveries_per_s"] = delivered / (finished - started) if delivered else 0.0
        result["burst_s"] = round(finished - started, 3)
        result["worker_cpu_s"] = round(sum(cpu[pid] for pid in workers), 2)
        result["redis_cpu_s"] = round(cpu[redis_pid], 2)
    finally:
        gevent.killall(greenlets, block=True, timeout=10)
        server.stop()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.redis_fanout", description=__doc__.partition("\n")[0]
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="full", action="store_false", help="100 and 1,000 (default)")
    mode.add_argument("--full", dest="full", action="store_true", help="up to 10,000")
    parser.set_defaults(full=False)
    parser.add_argument("--sizes", help="comma-separated subscriber counts")
    parser.add_argument("--apps", default=",".join(APPS), help="apps to run, baseline first")
    parser.add_argument("--latency-events", type=int, default=None)
    parser.add_argument("--rate", type=float, default=None, help="latency events per second")
    parser.add_argument("--burst", type=int, default=None, help="events in the throughput burst")
    parser.add_argument("--burst-timeout", type=float, default=60.0)
    parser.add_argument("--no-save", action="store_true", help="print only")
    opts = parser.parse_args(argv)
    sizes = (
        [int(s) for s in opts.sizes.split(",")]
        if opts.sizes
        else ([100, 1000, 5000, 10000] if opts.full else [100, 1000])
    )
    opts.latency_events = opts.latency_events or (20 if opts.full else 10)
    opts.rate = opts.rate or 2.0
    opts.burst = opts.burst or (50 if opts.full else 20)
    apps = opts.apps.split(",")

    import redis

    from bench._common import machine
    from bench._common import raise_nofile_limit
    from bench._common import RESULTS
    from flask_ssecors.brokers._redis import GeventConnection
    from tests.support.servers import RedisServer

    raise_nofile_limit()
    started = datetime.datetime.now(datetime.UTC)
    runs: list[dict[str, t.Any]] = []
    with RedisServer() as redis_server:
        pool = redis.ConnectionPool(
            connection_class=GeventConnection, host="127.0.0.1", port=redis_server.port
        )
        admin = redis.Redis(connection_pool=pool)
        admin.config_set("maxclients", 19000)  # flask-sse: one connection per stream
        for size in sizes:
            for app in apps:
                print(f"{app}: {size} subscribers...", file=sys.stderr, flush=True)
                runs.append(run_one(app, size, redis_server.url, admin, opts))
                print(f"  {runs[-1]}", file=sys.stderr, flush=True)
        pool.disconnect()
    report = {
        "benchmark": "redis_fanout",
        "started": started.isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.redis_fanout", *(argv or sys.argv[1:])]),
        "settings": {
            "sizes": sizes,
            "latency_events": opts.latency_events,
            "rate": opts.rate,
            "burst": opts.burst,
            "workers": 2,
        },
        "machine": machine(),
        "runs": runs,
    }
    print(to_markdown(report))
    if not opts.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"redis_fanout-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
        path.write_text(json.dumps(report, indent=1))
        print(f"\nsaved {path}", file=sys.stderr)
    return 0


def to_markdown(report: dict[str, t.Any]) -> str:
    from bench._common import markdown_table
    from bench._common import ratio

    rows = []
    by_key = {(run["app"], run["subscribers"]): run for run in report["runs"]}
    for run in report["runs"]:
        base = by_key.get((APPS[0], run["subscribers"]))
        rows.append(
            [
                run["app"],
                run["subscribers"],
                run["redis_connections"],
                run["p50_ms"],
                run["p99_ms"],
                run["max_ms"],
                f"{run['latency_delivered']:.1%}",
                run["deliveries_per_s"],
                f"{run['burst_delivered']:.1%}",
                run["worker_cpu_s"],
                run["worker_rss_mib"],
                ratio(run["deliveries_per_s"], base["deliveries_per_s"]) if base else "",
                ratio(run["p99_ms"], base["p99_ms"]) if base else "",
            ]
        )
    settings = report["settings"]
    head = (
        f"Redis fan-out, gunicorn -k gevent -w {settings['workers']}; "
        f"{settings['latency_events']} latency events at {settings['rate']}/s; "
        f"burst of {settings['burst']} events\n\n"
    )
    return head + markdown_table(
        [
            "app",
            "subscribers",
            "Redis conns",
            "p50 ms",
            "p99 ms",
            "max ms",
            "delivered",
            "deliveries/s",
            "burst delivered",
            "worker CPU s (burst)",
            "worker RSS MiB",
            "deliveries/s vs flask-sse",
            "p99 vs flask-sse",
        ],
        rows,
    )


if __name__ == "__main__":
    sys.exit(main())
