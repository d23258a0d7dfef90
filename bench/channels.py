"""Many channels: what one delivery costs as the number of followed channels grows.

``python -m bench.channels`` (1, 1,000 and 10,000 channels) or ``--full`` (and 50,000);
``--cluster`` also runs flask-ssecors on a Redis Cluster of three primaries (one replica each,
started on loopback) beside the single Redis, in the same run. For each
app and channel count, a fresh ``gunicorn -k gevent`` serves the app, one redis-server (free
port, stopped by PID) serves the Redis apps, and this process holds the streams (an asyncio
loop, ``tests/support/swarm.py``) and publishes over HTTP, each event to one random channel,
``--rate`` events a second. An event's data carries the time it was sent, so latency is "POST
sent" to "bytes received", both on this process's clock.

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
  50,000 sockets; the broker follows 50,000 channels either way, which is what this measures.

Measured per app and size: p50 and p99 latency over every delivery; worker CPU per delivery
(µs, the workers' CPU over the publishing phase divided by deliveries, the POST that publishes
included; each process's CPU-time clock, nanosecond resolution), and redis-server's beside it;
throughput, deliveries per second of a burst of ``--burst`` events POSTed back to back
from four connections; and, at 10,000 channels,
a reconnect storm: every connection cut, one event published to every channel meanwhile, all
clients back at once (with ``Last-Event-ID`` for flask-ssecors): seconds until every client has
its missed event (flask-ssecors) or is connected again (the floor, which replays nothing).
flask-sse cannot resume, so it has no storm figure.

``--deployment`` runs the deployment scenario instead (:mod:`bench.deployment`: W workers,
each on its own channels, events published to all of them; what each worker pays per event
published anywhere).

``--repeat N`` runs every app N times per size, the apps taking turns, and reports the median
of each figure (the machine is shared: one run can be slowed by a neighbour); the ratios against
the Redis floor are taken between medians.

Results: printed as Markdown, saved to ``bench/results/channels-<timestamp>.json``; ``--plot``
also draws ``docs/_static/bench/channels.png`` and writes ``docs/_static/bench/channels.csv``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import json
import os
import random
import sys
import time
import typing as t
from pathlib import Path

if t.TYPE_CHECKING:
    from flask import Flask

APPS = ("bare", "redis-pubsub", "flask-sse", "flask-ssecors")
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
    """flask-ssecors on the Redis broker; URL from ``BENCH_REDIS_URL``."""
    from flask import Flask
    from flask import request

    from flask_ssecors import Event
    from flask_ssecors import SSECors

    app = Flask("bench_channels_ssecors")
    app.config.update(
        SSECORS_ALLOWED_ORIGINS=["http://localhost:5001"],
        SSECORS_BROKER_URL=os.environ["BENCH_REDIS_URL"],
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


def run_one(
    app: str,
    channels: int,
    redis_url: str,
    opts: argparse.Namespace,
    *,
    topology: str = "single",
    redis_pid: int | None = None,
    storm_run: bool = True,
) -> dict[str, t.Any]:
    import redis

    from bench._common import children_of
    from bench._common import percentile
    from bench._common import process_cpu_seconds as cpu_seconds
    from tests.support.servers import LiveServer
    from tests.support.swarm import Swarm

    target, workers = TARGETS[app]
    cluster = topology == "cluster"
    admin = None if cluster else redis.Redis.from_url(redis_url)
    if admin is not None:
        admin.flushall()
    paths = stream_paths(app, channels)
    server = LiveServer(
        target,
        env={"BENCH_REDIS_URL": redis_url},
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
        "redis": topology if app != "bare" else "",
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
            if admin is not None and app == "flask-sse":  # nothing is sent before an event
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
            redis_before = cpu_seconds(redis_pid) if redis_pid else 0.0
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
            redis_cpu = cpu_seconds(redis_pid) - redis_before if redis_pid else 0.0
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
                cpu_us_per_delivery=round(cpu / max(count, 1) * 1e6, 1),
                redis_cpu_us_per_delivery=round(redis_cpu / max(count, 1) * 1e6, 1)
                if redis_pid and app != "bare"
                else 0.0,
            )
            result["deliveries_per_s"] = burst(server.port, swarm, opened, by_channel, opts)
            if channels == opts.storm and app == "flask-ssecors" and storm_run:
                result["storm_s"] = storm(swarm, opened, redis_url)
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
    "redis_cpu_us_per_delivery",
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


def storm(swarm: t.Any, opened: list[t.Any], redis_url: str) -> float:
    """Cut every stream, publish one event per channel, reconnect all at once with their
    ``Last-Event-ID``; seconds until every client has the event it missed."""
    from flask_ssecors import Event
    from flask_ssecors import Publisher

    paths = [s.path for s in opened]
    names = paths_channels(paths)
    with Publisher(redis_url) as out:
        # First one event everywhere: a client holds an id only once it received an event.
        for name in names:
            out.publish(name, Event({"t": time.time(), "c": name, "before": True}))
        swarm.wait_until(lambda: all(s.last_event_id for s in opened), 120)
        last_ids = [s.last_event_id for s in opened]
        swarm.drop(opened)
        for name in names:
            out.publish(name, Event({"t": time.time(), "c": name}))
    began = time.monotonic()
    again = swarm.open(paths, last_event_ids=last_ids, parallel=len(paths))
    swarm.wait_until(
        lambda: all(any(e.data.startswith("{") for e in s.events) for s in again),
        120,
        "every client's missed event",
        again,
    )
    took = time.monotonic() - began
    swarm.drop(again)
    return round(took, 2)


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
    parser.add_argument("--channels", help="comma-separated channel counts")
    parser.add_argument("--apps", default=",".join(APPS))
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
    with RedisServer() as redis_server:
        for channels in sizes:
            runs: dict[str, list[dict[str, t.Any]]] = {}
            for turn in range(opts.repeat):
                for app in opts.apps.split(","):
                    if app == "flask-sse" and channels > 1000:
                        continue
                    if app in ("bare", "redis-pubsub") and channels > 20_000:
                        continue
                    assert redis_server.process is not None
                    row = run_one(
                        app,
                        channels,
                        redis_server.url,
                        opts,
                        redis_pid=redis_server.process.pid,
                        storm_run=turn == 0,
                    )
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
                    row = run_one("flask-ssecors", channels, cluster.url, opts, topology="cluster")
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
    "Redis",
    "channels",
    "streams",
    "p50 ms",
    "p99 ms",
    "CPU µs/delivery",
    "+ Redis µs",
    "delivered",
    "burst deliveries/s",
    "storm s",
)


def table_rows(report: dict[str, t.Any]) -> list[list[object]]:
    return [
        [
            row["app"],
            row["redis"],
            row["channels"],
            row["streams"],
            row["p50_ms"],
            row["p99_ms"],
            row["cpu_us_per_delivery"],
            row.get("redis_cpu_us_per_delivery", ""),
            f"{row['delivered']:.0%}",
            row["deliveries_per_s"],
            row.get("storm_s", ""),
        ]
        for row in report["rows"]
    ]


def to_markdown(report: dict[str, t.Any]) -> str:
    from bench._common import markdown_table

    ours = [r for r in report["rows"] if r["app"] == "flask-ssecors" and r["redis"] == "single"]
    lines = [markdown_table(HEADERS, table_rows(report))]
    floors = {r["channels"]: r for r in report["rows"] if r["app"] == "redis-pubsub"}
    for row in ours:
        floor = floors.get(row["channels"])
        if floor is None or not floor["deliveries_per_s"]:
            continue
        mine = row["cpu_us_per_delivery"] + row.get("redis_cpu_us_per_delivery", 0.0)
        theirs = floor["cpu_us_per_delivery"] + floor.get("redis_cpu_us_per_delivery", 0.0)
        lines.append(
            f"\nflask-ssecors against a bare Redis pub/sub app at {row['channels']:,} channels: "
            f"CPU per delivery (workers + Redis) {mine / max(theirs, 0.1):.2f}x (goal: 1.2x), "
            f"burst throughput {row['deliveries_per_s'] / floor['deliveries_per_s']:.2f}x "
            "(goal: 0.8x)"
        )
    if len(ours) > 1:
        one, most = ours[0], ours[-1]
        lines.append(
            f"\nflask-ssecors at {most['channels']:,} channels against {one['channels']:,}: "
            f"p99 {most['p99_ms'] / one['p99_ms']:.2f}x, CPU per delivery "
            f"{most['cpu_us_per_delivery'] / one['cpu_us_per_delivery']:.2f}x (goal: 1.5x)"
        )
    return "\n".join(lines)


def draw(report: dict[str, t.Any], directory: Path) -> None:
    """``channels.png`` (p99 and CPU per delivery against channels) and ``channels.csv``."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "channels.csv").open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(HEADERS)
        writer.writerows(table_rows(report))
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    series = [(app, "single" if app != "bare" else "") for app in APPS]
    series.append(("flask-ssecors", "cluster"))
    for app, topology in series:
        rows = [r for r in report["rows"] if r["app"] == app and r["redis"] == topology]
        if not rows:
            continue
        name = f"{app} (Redis Cluster)" if topology == "cluster" else app
        xs = [r["channels"] for r in rows]
        left.plot(xs, [r["p99_ms"] for r in rows], marker="o", label=name)
        right.plot(xs, [r["cpu_us_per_delivery"] for r in rows], marker="o", label=name)
    for axis, title in ((left, "p99 latency, ms"), (right, "worker CPU per delivery, µs")):
        axis.set_xscale("symlog", linthresh=1)
        axis.set_xlabel("channels (one subscriber each)")
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
        axis.legend()
    info = report["machine"]
    figure.suptitle(
        f"{report['mode']} run {report['started']}, {info['nproc']} CPU cores, "
        f"{report['events']} events at {report['rate']:g}/s"
    )
    figure.tight_layout()
    figure.savefig(directory / "channels.png", dpi=100)
    plt.close(figure)


if __name__ == "__main__":
    raise SystemExit(main())
