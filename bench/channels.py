"""Many channels: what one delivery costs as the number of followed channels grows.

``python -m bench.channels`` (1, 1,000 and 10,000 channels) or ``--full`` (and 50,000);
``--cluster`` also runs flask-ssecors on a Redis Cluster of three primaries (one replica each,
started on loopback) beside the single Redis, in the same run. For each
app and channel count, a fresh ``gunicorn -k gevent`` serves the app, one redis-server (free
port, stopped by PID) serves the Redis apps, a PostgreSQL server of the run's own
(``tests/support/postgres.py``: ``initdb`` in a temporary directory, a free port, PostgreSQL's
default settings, durable commits included) serves ``flask-ssecors-postgres``, and this
process holds the streams (an asyncio loop, ``tests/support/swarm.py``) and publishes over
HTTP, each event to one random channel, ``--rate`` events a second. An event's data carries
the time it was sent, so latency is "POST sent" to "bytes received", both on this process's
clock.

Apps, all with one subscriber per channel:

- ``bare``: the floor, a Flask generator per stream reading a :class:`gevent.queue.Queue`
  that ``POST /publish`` fills in the same process (one worker: nothing crosses processes);
- ``redis-pubsub``: the Redis floor, a hand-written fan-out: per worker one pub/sub connection,
  ``SUBSCRIBE`` once per followed channel, ``PUBLISH`` per event (two workers; no replay, no
  ids, no checks); run up to 10,000 channels, one stream each;
- ``flask-sse``: its blueprint, one Redis pub/sub connection per stream (two workers); run up
  to 1,000 channels (10,000 would be 10,000 Redis connections, redis-server's default
  ``maxclients``);
- ``flask-ssecors``: ``sse.subscribe`` on the Redis broker (two workers). At 50,000 channels
  each stream follows 8 channels (``sse.subscribe(*eight)``, 6,250 streams): this machine
  allows 20,000 open files per process, so neither the workers nor this process can hold
  50,000 sockets; the broker follows 50,000 channels either way, which is what this measures;
- ``flask-ssecors-postgres``: the same app on the PostgreSQL broker (two workers; its schema
  dropped before each run, so every run starts from empty tables). Not run unless named in
  ``--apps`` (it needs PostgreSQL installed).

Measured per app and size: p50 and p99 latency over every delivery; worker CPU per delivery
(µs, the workers' CPU over the publishing phase divided by deliveries, the POST that publishes
included; each process's CPU-time clock, nanosecond resolution), and the broker server's beside
it: redis-server's, or PostgreSQL's (the postmaster and every process it started: the
workers' backends, the WAL writer, the checkpointer..., those that exited included);
throughput, deliveries per second of a burst of ``--burst`` events POSTed back to back
from four connections; and, at 10,000 channels,
a reconnect storm: every connection cut, one event published to every channel meanwhile, all
clients back at once (with ``Last-Event-ID`` for flask-ssecors): seconds until every client has
its missed event (flask-ssecors, on either broker) or is connected again (the floor, which
replays nothing). A client whose stream ends before its missed event (a worker that cannot
serve it yet answers with ``retry:`` and closes) comes back after that retry (3 s without one)
with the same ``Last-Event-ID``, as EventSource does; ``storm_retries`` counts those returns.
flask-sse cannot resume, so it has no storm figure.

``--deployment`` runs the deployment scenario instead (:mod:`bench.deployment`: W workers,
each on its own channels, events published to all of them; what each worker pays per event
published anywhere).

``--repeat N`` runs every app N times per size, the apps taking turns, and reports the median
of each figure (the machine is shared: one run can be slowed by a neighbour); the ratios against
the Redis floor (and, for PostgreSQL, against flask-ssecors on Redis) are taken between medians.

Results: printed as Markdown, saved to ``bench/results/channels-<timestamp>.json``; ``--plot``
also draws ``docs/_static/bench/channels.png`` and writes ``docs/_static/bench/channels.csv``
(``channels-postgres.png`` and ``.csv`` when ``flask-ssecors-postgres`` is among the apps:
the figure of docs/benchmarks.rst's PostgreSQL section).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import http.client
import json
import math
import os
import random
import sys
import time
import typing as t
from pathlib import Path

if t.TYPE_CHECKING:
    from flask import Flask

#: What ``--apps`` runs unless told (no PostgreSQL needed).
DEFAULT_APPS = ("bare", "redis-pubsub", "flask-sse", "flask-ssecors")
POSTGRES_APP = "flask-ssecors-postgres"
APPS = (*DEFAULT_APPS, POSTGRES_APP)
#: The apps that run a reconnect storm (they replay what a client missed).
RESUMING = ("flask-ssecors", POSTGRES_APP)
#: Channels one flask-ssecors stream follows at 50,000 channels (see the module documentation).
WIDE = 8
ROOT = Path(__file__).resolve().parent.parent


# -- the apps (gunicorn targets) -----------------------------------------------------------------


def bare_app() -> Flask:
    """The floor: a generator per stream, fed in-process."""
    import gevent.queue
    from flask import Flask
    from flask import request
    from flask import Response

    app = Flask("bench_channels_bare")
    queues: dict[str, set[gevent.queue.Queue[bytes]]] = {}

    @app.get("/events")
    def events() -> t.Any:
        names = request.args["c"].split(",")
        queue: gevent.queue.Queue[bytes] = gevent.queue.Queue()
        for name in names:
            queues.setdefault(name, set()).add(queue)

        def stream() -> t.Iterator[bytes]:
            try:
                yield b": open\n\n"
                while True:
                    yield queue.get()
            finally:
                for name in names:
                    queues.get(name, set()).discard(queue)

        headers = {"Access-Control-Allow-Origin": "http://localhost:5001", "Vary": "Origin"}
        return Response(stream(), mimetype="text/event-stream", headers=headers)

    @app.post("/publish/<channel>")
    def publish(channel: str) -> t.Any:
        data = json.dumps({"t": float(request.args["t"]), "c": channel})
        frame = f"data: {data}\n\n".encode()
        for queue in queues.get(channel, ()):
            queue.put(frame)
        return "ok\n"

    return app


def ssecors_app() -> Flask:
    """flask-ssecors on the broker of ``BENCH_BROKER_URL`` (Redis or PostgreSQL)."""
    from flask import Flask
    from flask import request

    from flask_ssecors import Event
    from flask_ssecors import SSECors

    app = Flask("bench_channels_ssecors")
    app.config.update(
        SSECORS_ALLOWED_ORIGINS=["http://localhost:5001"],
        SSECORS_BROKER_URL=os.environ["BENCH_BROKER_URL"],
        SSECORS_HEARTBEAT=15.0,
        # Every client of the load comes from loopback, one client to the per-client limit.
        SSECORS_MAX_STREAMS_PER_CLIENT=None,
    )
    sse = SSECors(app)

    @app.get("/events")
    @sse.stream()
    def events() -> t.Any:
        return sse.subscribe(*request.args["c"].split(","))

    @app.post("/publish/<channel>")
    def publish(channel: str) -> t.Any:
        sse.publish(channel, Event({"t": float(request.args["t"]), "c": channel}))
        return "ok\n"

    return app


def pubsub_app() -> Flask:
    """The Redis floor: per worker, one pub/sub connection (``SUBSCRIBE`` once per followed
    channel) read by one greenlet that fills each stream's queue; ``POST /publish`` is one
    ``PUBLISH``. What a hand-written Redis fan-out costs, with no replay, ids or checks."""
    import gevent
    import gevent.queue
    import redis
    from flask import Flask
    from flask import request
    from flask import Response

    app = Flask("bench_channels_pubsub")
    client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    queues: dict[bytes, set[gevent.queue.Queue[bytes]]] = {}
    pending: set[bytes] = set()
    listening: list[gevent.Greenlet] = []

    def listen() -> None:
        # One greenlet owns the connection: it subscribes what streams asked for between
        # reads (redis-py's PubSub is not meant for a second greenlet sending meanwhile).
        while True:
            if pending:
                fresh = list(pending)
                pending.clear()
                pubsub.subscribe(*fresh)
            message = pubsub.get_message(timeout=0.01)
            if message is not None and message["type"] == "message":
                frame = b"data: " + message["data"] + b"\n\n"
                for queue in queues.get(message["channel"], ()):
                    queue.put(frame)

    @app.get("/events")
    def events() -> t.Any:
        names = [name.encode() for name in request.args["c"].split(",")]
        queue: gevent.queue.Queue[bytes] = gevent.queue.Queue()
        pending.update(name for name in names if name not in queues)
        for name in names:
            queues.setdefault(name, set()).add(queue)
        if not listening:
            listening.append(gevent.spawn(listen))

        def stream() -> t.Iterator[bytes]:
            try:
                yield b": ok\n\n"
                while True:
                    yield queue.get()
            finally:
                for name in names:
                    queues.get(name, set()).discard(queue)

        return Response(stream(), mimetype="text/event-stream")

    @app.post("/publish/<channel>")
    def publish(channel: str) -> t.Any:
        client.publish(channel, json.dumps({"t": float(request.args["t"]), "c": channel}))
        return "ok\n"

    return app


def flask_sse_app() -> Flask:
    """flask-sse's blueprint as its README shows it; URL from ``BENCH_REDIS_URL``."""
    from flask import Flask
    from flask import request
    from flask_sse import sse  # type: ignore[import-untyped]

    app = Flask("bench_channels_flask_sse")
    app.config["REDIS_URL"] = os.environ["BENCH_REDIS_URL"]
    app.register_blueprint(sse, url_prefix="/stream")

    @app.post("/publish/<channel>")
    def publish(channel: str) -> t.Any:
        sse.publish({"t": float(request.args["t"]), "c": channel}, channel=channel)
        return "ok\n"

    return app


TARGETS = {
    "bare": ("bench.channels:bare_app()", 1),
    "redis-pubsub": ("bench.channels:pubsub_app()", 2),
    "flask-sse": ("bench.channels:flask_sse_app()", 2),
    "flask-ssecors": ("bench.channels:ssecors_app()", 2),
    POSTGRES_APP: ("bench.channels:ssecors_app()", 2),
}


def stream_paths(app: str, channels: int) -> list[str]:
    """One path per stream: one channel each, or :data:`WIDE` each at 50,000 for ours."""
    names = [f"user:{n}" for n in range(channels)]
    if app == "flask-sse":
        return [f"/stream?channel={name}" for name in names]
    width = WIDE if channels > 20_000 else 1
    return ["/events?c=" + ",".join(names[i : i + width]) for i in range(0, len(names), width)]


# -- one run -------------------------------------------------------------------------------------


class Poster:
    """POSTs over one keep-alive connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, path: str) -> int:
        try:
            self.connection.request("POST", path)
            response = self.connection.getresponse()
            response.read()
            return response.status
        except (OSError, http.client.HTTPException):
            self.connection.close()
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            return 0


@dataclasses.dataclass(frozen=True)
class Broker:
    """The broker server an app of a run talks to."""

    #: What the table's broker column says: ``Redis``, ``Redis Cluster`` or ``PostgreSQL``.
    name: str
    url: str
    #: CPU seconds its server processes spent so far; None when not measured (the Cluster).
    cpu: t.Callable[[], float] | None = None
    #: Empties it before a run.
    reset: t.Callable[[], None] = lambda: None


def redis_broker(url: str, pid: int) -> Broker:
    """One redis-server: its own CPU-time clock; ``FLUSHALL`` before each run."""
    import redis

    from bench._common import process_cpu_seconds

    def reset() -> None:
        with redis.Redis.from_url(url) as admin:
            admin.flushall()

    return Broker("Redis", url, lambda: process_cpu_seconds(pid), reset)


def postgres_broker(url: str, pid: int) -> Broker:
    """One PostgreSQL server: the CPU of the postmaster ``pid`` and of every process it
    started; the broker's schema dropped before each run (the app creates it again)."""
    import psycopg

    from bench._common import family_cpu_seconds

    def reset() -> None:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("DROP SCHEMA IF EXISTS ssecors CASCADE")

    return Broker("PostgreSQL", url, lambda: family_cpu_seconds(pid), reset)


def run_one(
    app: str,
    channels: int,
    broker: Broker,
    opts: argparse.Namespace,
    *,
    storm_run: bool = True,
) -> dict[str, t.Any]:
    import redis

    from bench._common import children_of
    from bench._common import percentile
    from bench._common import process_cpu_seconds as cpu_seconds
    from tests.support.servers import LiveServer
    from tests.support.swarm import Swarm

    target, workers = TARGETS[app]
    broker.reset()
    # flask-sse subscribes only once its stream is read: counted in Redis before publishing.
    admin = redis.Redis.from_url(broker.url) if app == "flask-sse" else None
    server_cpu = broker.cpu if app != "bare" else None
    paths = stream_paths(app, channels)
    server = LiveServer(
        target,
        env={"BENCH_REDIS_URL": broker.url, "BENCH_BROKER_URL": broker.url},
        workers=workers,
        extra_args=[
            "-c",
            str(ROOT / "bench" / "gunicorn_conf.py"),
            # Room for the storm: streams cut by the client are only noticed by the server at
            # its next write (a heartbeat), so for a while they are held twice.
            "--worker-connections",
            str(2 * len(paths) + 1000),
        ],
    ).start()
    result: dict[str, t.Any] = {
        "app": app,
        "broker": broker.name if app != "bare" else "",
        "channels": channels,
        "streams": len(paths),
    }
    try:
        assert server.process is not None
        began = time.monotonic()
        while len(children_of(server.process.pid)) < workers:
            assert time.monotonic() - began < 20, "workers did not start"
            time.sleep(0.1)
        pids = children_of(server.process.pid)
        with Swarm(server.port) as swarm:
            # flask-sse answers nothing before the first event: its streams count once sent.
            # The floor never notices a client that left (it writes nothing while idle), so it
            # could not take a reconnect storm within the open-file limit: its storm figure is
            # its first connect, every stream at once.
            floor_storm = app == "bare" and channels == opts.storm
            began = time.monotonic()
            opened = swarm.open(
                paths,
                parallel=len(paths) if floor_storm else 500,
                headers_first=app != "flask-sse",
            )
            if floor_storm:
                result["storm_s"] = round(time.monotonic() - began, 2)
            result["open_failures"] = sum(s.error is not None for s in opened) + sum(
                s.status not in (200, None) for s in opened
            )
            if admin is not None:  # flask-sse: nothing is sent before an event
                names = paths_channels(paths)
                deadline = time.monotonic() + 60
                while sum(n for _, n in admin.pubsub_numsub(*names)) < len(paths):
                    assert time.monotonic() < deadline, "flask-sse streams did not subscribe"
                    time.sleep(0.2)
            time.sleep(0.5)
            by_channel = {name: i for i, path in enumerate(paths) for name in path_channels(path)}
            poster = Poster(server.port)
            rng = random.Random(1)
            names = list(by_channel)
            targets = [rng.choice(names) for _ in range(opts.events)]
            cpu_before = sum(cpu_seconds(pid) for pid in pids)
            server_before = server_cpu() if server_cpu else 0.0
            started = time.monotonic()
            failures = 0
            for n, channel in enumerate(targets):
                failures += poster.post(f"/publish/{channel}?t={time.time()!r}") != 200
                pause = started + (n + 1) / opts.rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            expected = [0] * len(paths)
            for channel in targets:
                expected[by_channel[channel]] += 1

            def delivered() -> int:
                return sum(
                    min(len([e for e in s.events if e.type == "message" or "/" in e.type]), want)
                    for s, want in zip(opened, expected, strict=True)
                )

            with contextlib.suppress(AssertionError):  # what arrived is reported
                swarm.wait_until(lambda: delivered() >= opts.events, 30)
            cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_before
            broker_cpu = server_cpu() - server_before if server_cpu else 0.0
            latencies = [
                (event.at - event.json()["t"]) * 1000
                for stream in opened
                for event in stream.events
                if event.data.startswith("{")
            ]
            count = delivered()
            result.update(
                publish_failures=failures,
                delivered=count / opts.events,
                p50_ms=round(percentile(latencies, 0.5), 2),
                p99_ms=round(percentile(latencies, 0.99), 2),
                # Nothing delivered: no figure (NaN), rather than the whole CPU as one delivery.
                cpu_us_per_delivery=round(cpu / count * 1e6, 1) if count else math.nan,
                broker_cpu_us_per_delivery=round(broker_cpu / count * 1e6, 1)
                if count
                else math.nan,
            )
            result["deliveries_per_s"] = burst(server.port, swarm, opened, by_channel, opts)
            if channels == opts.storm and app in RESUMING and storm_run:
                try:
                    result["storm_s"], result["storm_retries"] = storm(swarm, opened, broker.url)
                except AssertionError as failure:  # in the table, and the other runs go on
                    result["storm_s"] = "failed"
                    result["storm_error"] = str(failure)[:300]
    finally:
        server.stop()
        if admin is not None:
            admin.close()
    return result


#: Figures of a row that :func:`median_row` takes the median of.
MEASURED = (
    "delivered",
    "p50_ms",
    "p99_ms",
    "cpu_us_per_delivery",
    "broker_cpu_us_per_delivery",
    "deliveries_per_s",
)


def median_row(runs: list[dict[str, t.Any]]) -> dict[str, t.Any]:
    """One row for the runs of one app and size: each measured figure the median of the runs
    (each run's figures kept under ``"runs"``); failures summed; the storm of the first run."""
    from bench._common import median

    if len(runs) == 1:
        return runs[0]
    row = dict(runs[0])
    for name in MEASURED:
        row[name] = round(median(r[name] for r in runs), 2)
    for name in ("open_failures", "publish_failures"):
        row[name] = sum(r[name] for r in runs)
    row["runs"] = [{name: r[name] for name in MEASURED} for r in runs]
    return row


def burst(
    port: int, swarm: t.Any, opened: list[t.Any], by_channel: dict[str, int], opts: t.Any
) -> float:
    """Publish ``opts.burst`` events back to back from four connections, each to a random
    channel; deliveries per second until the last one arrived."""
    import threading

    rng = random.Random(2)
    names = list(by_channel)
    targets = [rng.choice(names) for _ in range(opts.burst)]
    before = [len(s.events) for s in opened]

    def post(share: list[str]) -> None:
        poster = Poster(port)
        for channel in share:
            poster.post(f"/publish/{channel}?t={time.time()!r}")

    threads = [threading.Thread(target=post, args=(targets[i::4],)) for i in range(4)]
    started = time.time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    def arrived() -> int:
        return sum(len(s.events) - n for s, n in zip(opened, before, strict=True))

    with contextlib.suppress(AssertionError):
        swarm.wait_until(lambda: arrived() >= opts.burst, 60)
    last = max((e.at for s in opened for e in s.events[-1:]), default=time.time())
    return round(arrived() / max(last - started, 1e-6))


def path_channels(path: str) -> list[str]:
    """The channels a stream path follows."""
    if path.startswith("/stream?channel="):
        return [path.removeprefix("/stream?channel=")]
    return path.partition("?c=")[2].split(",")


def paths_channels(paths: list[str]) -> list[str]:
    return [name for path in paths for name in path_channels(path)]


def storm(swarm: t.Any, opened: list[t.Any], url: str) -> tuple[float, int]:
    """Cut every stream, publish one event per channel, reconnect all at once with their
    ``Last-Event-ID``; seconds until every client has the event it missed, and how many
    times a client was turned away (its stream ended before that event: it comes back after
    the stream's ``retry``, 3 s without one, with the same ``Last-Event-ID``, as EventSource
    does)."""
    from flask_ssecors import Event
    from flask_ssecors import Publisher

    paths = [s.path for s in opened]
    names = paths_channels(paths)
    with Publisher(url) as out:
        # First one event everywhere: a client holds an id only once it received an event.
        for name in names:
            out.publish(name, Event({"t": time.time(), "c": name, "before": True}))
        swarm.wait_until(lambda: all(s.last_event_id for s in opened), 120)
        last_ids = [s.last_event_id for s in opened]
        swarm.drop(opened)
        for name in names:
            out.publish(name, Event({"t": time.time(), "c": name}))
    began = time.monotonic()
    clients = swarm.open(paths, last_event_ids=last_ids, parallel=len(paths))
    turned_away: dict[int, float] = {}  # client -> when it was seen turned away
    retries = 0
    while True:
        states: list[tuple[bool, bool, int | None]] = []

        def look(states: list[tuple[bool, bool, int | None]] = states) -> bool:
            states.extend(
                (any(e.data.startswith("{") for e in s.events), s.ended, s.retry) for s in clients
            )
            return True

        swarm.wait_until(look, 30)  # read in the swarm's thread: nothing changes meanwhile
        if all(served for served, _, _ in states):
            break
        now = time.monotonic()
        if now - began > 120:
            served = sum(served for served, _, _ in states)
            raise AssertionError(
                f"every client's missed event did not arrive within 120 s: {served} of "
                f"{len(states)} had it, after {retries} clients were turned away"
            )
        due = []
        for i, (served, ended, retry) in enumerate(states):
            if not served and ended:
                seen = turned_away.setdefault(i, now)
                if now - seen >= (retry if retry is not None else 3000) / 1000:
                    due.append(i)
        if not due:
            time.sleep(0.1)
            continue
        retries += len(due)
        for i in due:
            del turned_away[i]
        again = swarm.open(
            [paths[i] for i in due], last_event_ids=[last_ids[i] for i in due], parallel=len(due)
        )
        for i, stream in zip(due, again, strict=True):
            clients[i] = stream
    took = time.monotonic() - began
    swarm.drop(clients)
    return round(took, 2), retries


# -- the whole run -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--deployment" in argv:  # the deployment scenario: bench/deployment.py
        from bench import deployment

        return deployment.main([arg for arg in argv if arg != "--deployment"])
    parser = argparse.ArgumentParser(prog="python -m bench.channels", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="full", action="store_false", help="1, 1,000, 10,000")
    mode.add_argument("--full", dest="full", action="store_true", help="and 50,000")
    parser.set_defaults(full=False)  # else --quick's store_false makes every run a full one
    parser.add_argument("--channels", help="comma-separated channel counts")
    parser.add_argument(
        "--apps",
        default=",".join(DEFAULT_APPS),
        help=f"comma-separated, among {', '.join(APPS)} (default: all but {POSTGRES_APP})",
    )
    parser.add_argument("--events", type=int, default=1000, help="events published per run")
    parser.add_argument("--rate", type=float, default=200.0, help="events per second")
    parser.add_argument("--storm", type=int, default=10_000, help="channels of the storm run")
    parser.add_argument("--burst", type=int, default=2000, help="events in the throughput burst")
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="also run flask-ssecors on a 3-primary Redis Cluster (3 replicas) on loopback",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per app and size, the apps taking turns; each figure is the median of the "
        "runs (the machine is shared: one run can be slowed by a neighbour)",
    )
    parser.add_argument("--plot", action="store_true", help="draw the docs' figure and table")
    parser.add_argument("--no-save", action="store_true", help="print only")
    opts = parser.parse_args(argv)
    apps = opts.apps.split(",")
    unknown = sorted(set(apps) - set(APPS))
    if unknown:
        parser.error(f"unknown app {', '.join(unknown)}: the apps are {', '.join(APPS)}")
    sizes = (
        [int(n) for n in opts.channels.split(",")]
        if opts.channels
        else [1, 1000, 10_000, *([50_000] if opts.full else [])]
    )
    sys.path.insert(0, str(ROOT))
    from bench._common import machine
    from bench._common import raise_nofile_limit
    from tests.support.servers import RedisServer

    raise_nofile_limit()
    rows: list[dict[str, t.Any]] = []
    with contextlib.ExitStack() as servers:
        redis_server = servers.enter_context(RedisServer())
        assert redis_server.process is not None
        brokers = dict.fromkeys(apps, redis_broker(redis_server.url, redis_server.process.pid))
        if POSTGRES_APP in apps:
            from tests.support.postgres import PostgresServer

            postgres = servers.enter_context(PostgresServer())
            assert postgres.process is not None
            brokers[POSTGRES_APP] = postgres_broker(postgres.url, postgres.process.pid)
        for channels in sizes:
            runs: dict[str, list[dict[str, t.Any]]] = {}
            for turn in range(opts.repeat):
                for app in apps:
                    if app == "flask-sse" and channels > 1000:
                        continue
                    if app in ("bare", "redis-pubsub") and channels > 20_000:
                        continue
                    row = run_one(app, channels, brokers[app], opts, storm_run=turn == 0)
                    print(json.dumps(row), flush=True)
                    runs.setdefault(app, []).append(row)
            rows.extend(median_row(repeats) for repeats in runs.values())
    if opts.cluster:
        import tempfile

        from tests.support.topologies import Cluster

        with tempfile.TemporaryDirectory() as root:
            cluster = Cluster(Path(root)).start()
            try:
                for channels in sizes:
                    row = run_one(
                        "flask-ssecors", channels, Broker("Redis Cluster", cluster.url), opts
                    )
                    print(json.dumps(row), flush=True)
                    rows.append(row)
            finally:
                cluster.stop()
    report = {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "mode": "full" if opts.full else "quick",
        "machine": machine(),
        "events": opts.events,
        "rate": opts.rate,
        "rows": rows,
    }
    print(to_markdown(report))
    if not opts.no_save:
        out = ROOT / "bench" / "results" / f"channels-{report['started'].replace(':', '')}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        print(f"saved {out.relative_to(ROOT)}")
    if opts.plot:
        draw(report, ROOT / "docs" / "_static" / "bench")
    return 0


HEADERS = (
    "app",
    "broker",
    "channels",
    "streams",
    "p50 ms",
    "p99 ms",
    "CPU µs/delivery",
    "+ broker µs",
    "delivered",
    "burst deliveries/s",
    "storm s",
)


def table_rows(report: dict[str, t.Any]) -> list[list[object]]:
    return [
        [
            row["app"],
            row["broker"],
            row["channels"],
            row["streams"],
            row["p50_ms"],
            row["p99_ms"],
            row["cpu_us_per_delivery"],
            row["broker_cpu_us_per_delivery"],
            f"{row['delivered']:.0%}",
            row["deliveries_per_s"],
            row.get("storm_s", ""),
        ]
        for row in report["rows"]
    ]


def total_cpu(row: dict[str, t.Any]) -> float:
    """CPU µs per delivery of the workers and the broker server together."""
    return float(row["cpu_us_per_delivery"] + row["broker_cpu_us_per_delivery"])


def times(name: str, ours: float, theirs: float) -> str:
    """``"<name> <ours / theirs>x"``, or ``"<name> n/a"`` when either has no figure."""
    from bench._common import ratio

    value = ratio(ours, theirs)
    return f"{name} {value:.2f}x" if value == value else f"{name} n/a"


def comparison(row: dict[str, t.Any], base: dict[str, t.Any]) -> str:
    """``row`` against ``base`` (same size, same run): p99, CPU per delivery (workers and
    broker server), burst throughput."""
    return ", ".join(
        (
            times("p99", row["p99_ms"], base["p99_ms"]),
            times("CPU per delivery (workers + broker)", total_cpu(row), total_cpu(base)),
            times("burst throughput", row["deliveries_per_s"], base["deliveries_per_s"]),
        )
    )


def to_markdown(report: dict[str, t.Any]) -> str:
    from bench._common import markdown_table

    lines = [markdown_table(HEADERS, table_rows(report))]
    rows = report["rows"]
    floors = {r["channels"]: r for r in rows if r["app"] == "redis-pubsub"}
    on_redis = {
        r["channels"]: r for r in rows if r["app"] == "flask-ssecors" and r["broker"] == "Redis"
    }
    on_postgres = {r["channels"]: r for r in rows if r["app"] == POSTGRES_APP}
    for channels, row in on_redis.items():
        floor = floors.get(channels)
        if floor is None or not floor["deliveries_per_s"]:
            continue
        cpu = total_cpu(row) / max(total_cpu(floor), 0.1)
        lines.append(
            f"\nflask-ssecors against a bare Redis pub/sub app at {channels:,} channels: "
            f"CPU per delivery (workers + Redis) {cpu:.2f}x (goal: 1.2x), burst throughput "
            f"{row['deliveries_per_s'] / floor['deliveries_per_s']:.2f}x (goal: 0.8x)"
        )
    for channels, row in on_postgres.items():
        for name, base in (
            ("the Redis floor", floors.get(channels)),
            ("flask-ssecors on Redis", on_redis.get(channels)),
        ):
            if base is not None:
                lines.append(
                    f"\nflask-ssecors on PostgreSQL against {name} at {channels:,} channels: "
                    + comparison(row, base)
                )
    for app, ours in (
        ("flask-ssecors", list(on_redis.values())),
        (POSTGRES_APP, list(on_postgres.values())),
    ):
        if len(ours) > 1:
            one, most = ours[0], ours[-1]
            lines.append(
                f"\n{app} at {most['channels']:,} channels against {one['channels']:,}: "
                + times("p99", most["p99_ms"], one["p99_ms"])
                + ", "
                + times("CPU per delivery", most["cpu_us_per_delivery"], one["cpu_us_per_delivery"])
                + " (goal: 1.5x)"
            )
    return "\n".join(lines)


def draw(report: dict[str, t.Any], directory: Path) -> None:
    """``channels.png`` (p99, CPU per delivery and burst throughput against channels) and
    ``channels.csv``; ``channels-postgres.*`` for a run with :data:`POSTGRES_APP`."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    stem = "channels-postgres" if any(r["app"] == POSTGRES_APP for r in rows) else "channels"
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / f"{stem}.csv").open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(HEADERS)
        writer.writerows(table_rows(report))
    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(14, 4.2))
    series = list(dict.fromkeys((r["app"], r["broker"]) for r in rows))
    for app, broker in series:
        mine = [r for r in rows if r["app"] == app and r["broker"] == broker]
        name = f"{app} ({broker})" if broker == "Redis Cluster" else app
        xs = [r["channels"] for r in mine]
        (line,) = left.plot(xs, [r["p99_ms"] for r in mine], marker="o", label=name)
        middle.plot(xs, [total_cpu(r) for r in mine], marker="o", color=line.get_color())
        if any(r["broker_cpu_us_per_delivery"] for r in mine):
            middle.plot(
                xs,
                [r["cpu_us_per_delivery"] for r in mine],
                linestyle=":",
                color=line.get_color(),
            )
        right.plot(xs, [r["deliveries_per_s"] for r in mine], marker="o", color=line.get_color())
    titles = (
        (left, "p99 latency, ms"),
        (middle, "CPU µs per delivery: workers + broker\n(dotted: workers alone)"),
        (right, "burst throughput, deliveries/s"),
    )
    for axis, title in titles:
        axis.set_xscale("symlog", linthresh=1)
        axis.set_xlabel("channels (one subscriber each)")
        axis.set_title(title, fontsize=10)
        axis.set_ylim(bottom=0)
        axis.grid(True, alpha=0.3)
    left.legend(fontsize=8)
    info = report["machine"]
    figure.suptitle(
        f"{report['mode']} run {report['started']}, {info['nproc']} CPU cores, "
        f"{report['events']} events at {report['rate']:g}/s",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(directory / f"{stem}.png", dpi=100)
    plt.close(figure)


if __name__ == "__main__":
    raise SystemExit(main())
