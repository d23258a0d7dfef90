"""The deployment scenario: what one worker pays for the events of the whole deployment.

``python -m bench.channels --deployment`` (or ``python -m bench.deployment``): W workers (2 and
4), each a gunicorn ``-k gevent`` server of one worker, as W hosts would run them, each holding
``--per-worker`` streams on its own channels (disjoint sets); a publisher process publishes to
all of them, each event to one random channel, ``--rate`` events a second for ``--seconds``.
Per worker: CPU per event published anywhere, and per event it delivered; redis-server's CPU
per event. Beside flask-ssecors, measured the same way in the same run:

- ``redis-pubsub``: the floor, ``bench.channels:pubsub_app()`` (one pub/sub connection per
  worker, ``SUBSCRIBE`` per channel, one ``PUBLISH`` per event);
- with ``--code PATH``, flask-ssecors from another checkout (a ``git worktree`` of an earlier
  commit), its own publisher included: before and after in one run.

``--foreign`` measures the issue's probe instead: one worker, one stream on ``mine``, and
1 then 4 publisher processes publishing as fast as they can to 10,000 other channels for
``--seconds``: foreign events per second, and the worker's CPU per foreign event.

Results: printed as Markdown, saved to ``bench/results/deployment-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import random
import signal
import subprocess
import sys
import time
import typing as t
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The publisher, run by the checkout under test (``sys.argv``: URL, kind, channels, rate,
#: seconds); prints how many events it published.
PUBLISHER = """
import json, random, sys, time
url, kind, names, rate, seconds = sys.argv[1], sys.argv[2], sys.argv[3].split(","), float(
    sys.argv[4]), float(sys.argv[5])
if kind == "ssecors":
    from flask_ssecors import Event, Publisher
    out = Publisher(url)
    send = lambda name, body: out.publish(name, Event(body))
else:
    import redis
    out = redis.Redis.from_url(url)
    send = lambda name, body: out.publish(name, json.dumps(body))
rng = random.Random(7)
began = time.monotonic()
count = 0
while True:
    now = time.monotonic()
    if now - began >= seconds:
        break
    due = int((now - began) * rate) + 1
    if count >= due:
        time.sleep(0.001)
        continue
    for _ in range(min(due - count, 100)):  # then look at the clock again
        name = rng.choice(names)
        send(name, {"t": time.time(), "c": name})
        count += 1
print(count)
"""


class Worker:
    """One gunicorn -k gevent server of one worker, on ``code``'s checkout."""

    def __init__(self, code: Path, target: str, redis_url: str, connections: int) -> None:
        from bench._common import free_port

        self.code = code
        self.port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": str(code),
            "PYTHONUNBUFFERED": "1",
            "BENCH_REDIS_URL": redis_url,
        }
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-k",
                "gevent",
                "-w",
                "1",
                "-c",
                str(ROOT / "bench" / "gunicorn_conf.py"),
                "--worker-connections",
                str(connections),
                "-b",
                f"127.0.0.1:{self.port}",
                target,
            ],
            cwd=code,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def pid(self) -> int:
        from bench._common import children_of

        began = time.monotonic()
        while not (found := children_of(self.process.pid)):
            if time.monotonic() - began > 20:
                raise RuntimeError("the gunicorn worker did not start")
            time.sleep(0.05)
        return found[0]

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def run_one(
    label: str, code: Path, app: str, workers: int, redis_url: str, redis_pid: int, opts: t.Any
) -> dict[str, t.Any]:
    import redis

    from bench._common import process_cpu_seconds
    from bench._common import wait_for_port
    from tests.support.swarm import Swarm

    redis.Redis.from_url(redis_url).flushall()
    target = (
        "bench.channels:pubsub_app()" if app == "redis-pubsub" else "bench.channels:ssecors_app()"
    )
    names = [[f"w{w}:c{c}" for c in range(opts.per_worker)] for w in range(workers)]
    servers = [Worker(code, target, redis_url, opts.per_worker + 500) for _ in range(workers)]
    try:
        for server in servers:
            wait_for_port(server.port, server.process)
        pids = [server.pid() for server in servers]
        with contextlib.ExitStack() as stack:
            swarms = [stack.enter_context(Swarm(server.port)) for server in servers]
            opened = [
                swarm.open([f"/events?c={name}" for name in own], parallel=100)
                for swarm, own in zip(swarms, names, strict=True)
            ]
            time.sleep(2.0)  # every channel subscribed
            everything = [name for own in names for name in own]
            kind = "pubsub" if app == "redis-pubsub" else "ssecors"
            before = [process_cpu_seconds(pid) for pid in pids]
            redis_before = process_cpu_seconds(redis_pid)
            env = {**os.environ, "PYTHONPATH": str(code)}
            published = int(
                subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        PUBLISHER,
                        redis_url,
                        kind,
                        ",".join(everything),
                        str(opts.rate),
                        str(opts.seconds),
                    ],
                    cwd=code,
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.split()[-1]
            )

            def delivered(streams: list[t.Any]) -> int:
                return sum(1 for s in streams for e in s.events if e.data.startswith("{"))

            deadline = time.monotonic() + 10
            while sum(delivered(s) for s in opened) < published and time.monotonic() < deadline:
                time.sleep(0.1)
            spent = [process_cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]
            redis_cpu = process_cpu_seconds(redis_pid) - redis_before
            counts = [delivered(s) for s in opened]
    finally:
        for server in servers:
            server.stop()
    per_published = [cpu / published * 1e6 for cpu in spent]
    per_delivered = [cpu / max(n, 1) * 1e6 for cpu, n in zip(spent, counts, strict=True)]
    return {
        "app": label,
        "workers": workers,
        "rate": opts.rate,
        "published": published,
        "delivered": sum(counts) / max(published, 1),
        "worker_cpu_us_per_published": round(sum(per_published) / workers, 1),
        "worker_cpu_us_per_delivered": round(sum(per_delivered) / workers, 1),
        "worker_core_share": round(sum(spent) / workers / opts.seconds, 3),
        "redis_cpu_us_per_published": round(redis_cpu / published * 1e6, 1),
    }


def run_foreign(
    label: str, code: Path, publishers: int, redis_url: str, opts: t.Any
) -> dict[str, t.Any]:
    """One worker with one stream on ``mine``; ``publishers`` processes publish to 10,000
    other channels as fast as they can."""
    import redis

    from bench._common import process_cpu_seconds
    from bench._common import wait_for_port
    from tests.support.swarm import Swarm

    redis.Redis.from_url(redis_url).flushall()
    server = Worker(code, "bench.channels:ssecors_app()", redis_url, 100)
    try:
        wait_for_port(server.port, server.process)
        pid = server.pid()
        with Swarm(server.port) as swarm:
            [mine] = swarm.open(["/events?c=mine"])
            time.sleep(2.0)
            others = ",".join(f"other:{n}" for n in range(10_000))
            env = {**os.environ, "PYTHONPATH": str(code)}
            before = process_cpu_seconds(pid)
            running = [
                subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        PUBLISHER.replace("rng = random.Random(7)", f"rng = random.Random({n})"),
                        redis_url,
                        "ssecors",
                        others,
                        "1e9",
                        str(opts.seconds),
                    ],
                    cwd=code,
                    env=env,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for n in range(publishers)
            ]
            published = sum(int(p.communicate()[0].split()[-1]) for p in running)
            time.sleep(1.0)  # what the worker still had to read
            spent = process_cpu_seconds(pid) - before
            assert not mine.error
    finally:
        server.stop()
    return {
        "app": label,
        "publishers": publishers,
        "foreign_per_s": round(published / opts.seconds),
        "worker_cpu_us_per_foreign": round(spent / published * 1e6, 1),
        "worker_core_share": round(spent / (opts.seconds + 1.0), 3),
    }


FOREIGN_HEADERS = (
    "app",
    "publishers",
    "foreign events/s",
    "worker CPU µs per foreign event",
    "worker core share",
)


HEADERS = (
    "app",
    "workers",
    "events/s",
    "delivered",
    "worker CPU µs per event published",
    "worker CPU µs per event delivered",
    "worker core share",
    "Redis CPU µs per event",
)


def table_rows(report: dict[str, t.Any]) -> list[list[object]]:
    return [
        [
            row["app"],
            row["workers"],
            row["rate"],
            f"{row['delivered']:.0%}",
            row["worker_cpu_us_per_published"],
            row["worker_cpu_us_per_delivered"],
            f"{row['worker_core_share']:.1%}",
            row["redis_cpu_us_per_published"],
        ]
        for row in report["rows"]
    ]


def to_markdown(report: dict[str, t.Any]) -> str:
    from bench._common import markdown_table

    if report.get("foreign"):
        return markdown_table(
            FOREIGN_HEADERS,
            [
                [
                    row["app"],
                    row["publishers"],
                    row["foreign_per_s"],
                    row["worker_cpu_us_per_foreign"],
                    f"{row['worker_core_share']:.1%}",
                ]
                for row in report["rows"]
            ],
        )
    return markdown_table(HEADERS, table_rows(report))


def draw(report: dict[str, t.Any], directory: Path) -> None:
    """``deployment.png`` (worker CPU per event published anywhere, and per event delivered,
    against the number of workers) and ``deployment.csv``."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "deployment.csv").open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(HEADERS)
        writer.writerows(table_rows(report))
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    apps = list(dict.fromkeys(row["app"] for row in report["rows"]))
    for app in apps:
        rows = [r for r in report["rows"] if r["app"] == app]
        xs = [r["workers"] for r in rows]
        left.plot(xs, [r["worker_cpu_us_per_published"] for r in rows], marker="o", label=app)
        right.plot(xs, [r["worker_cpu_us_per_delivered"] for r in rows], marker="o", label=app)
    for axis, title in (
        (left, "worker CPU per event published anywhere, µs"),
        (right, "worker CPU per event it delivered, µs"),
    ):
        axis.set_xlabel("workers, each on its own channels")
        axis.set_xticks(sorted({r["workers"] for r in report["rows"]}))
        axis.set_title(title)
        axis.set_ylim(bottom=0)
        axis.grid(True, alpha=0.3)
        axis.legend()
    rate = report["rows"][0]["rate"] if report["rows"] else 0
    figure.suptitle(
        f"run {report['started']}, {report['machine']['nproc']} CPU cores, {rate:g} events/s in "
        f"all, {report['per_worker']} streams per worker"
    )
    figure.tight_layout()
    figure.savefig(directory / "deployment.png", dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.deployment", description=__doc__)
    parser.add_argument("--workers", default="2,4", help="comma-separated worker counts")
    parser.add_argument("--per-worker", type=int, default=100, help="streams (channels) each")
    parser.add_argument("--rate", type=float, default=2000.0, help="events per second, in all")
    parser.add_argument("--seconds", type=float, default=10.0, help="publishing time per run")
    parser.add_argument("--code", type=Path, help="also run this checkout's flask-ssecors")
    parser.add_argument("--foreign", action="store_true", help="the foreign-events probe")
    parser.add_argument("--plot", action="store_true", help="draw the docs' figure and table")
    parser.add_argument("--no-save", action="store_true", help="print only")
    opts = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from bench._common import machine
    from bench._common import raise_nofile_limit
    from tests.support.servers import RedisServer

    raise_nofile_limit()
    runs = [("redis-pubsub", ROOT, "redis-pubsub"), ("flask-ssecors", ROOT, "flask-ssecors")]
    if opts.code is not None:
        before = opts.code.resolve()
        head = subprocess.run(
            ["git", "-C", str(before), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        runs.append((f"flask-ssecors {head or before.name}", before, "flask-ssecors"))
    rows = []
    random.seed(1)
    with RedisServer() as redis_server:
        assert redis_server.process is not None
        if opts.foreign:
            for publishers in (1, 4):
                for label, code, app in runs:
                    if app == "redis-pubsub":
                        continue
                    row = run_foreign(label, code, publishers, redis_server.url, opts)
                    print(json.dumps(row), flush=True)
                    rows.append(row)
        for workers in [int(n) for n in opts.workers.split(",")] if not opts.foreign else []:
            for label, code, app in runs:
                row = run_one(
                    label, code, app, workers, redis_server.url, redis_server.process.pid, opts
                )
                print(json.dumps(row), flush=True)
                rows.append(row)
    report = {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "per_worker": opts.per_worker,
        "seconds": opts.seconds,
        "foreign": opts.foreign,
        "rows": rows,
    }
    print(to_markdown(report))
    if not opts.no_save:
        out = ROOT / "bench" / "results" / f"deployment-{report['started'].replace(':', '')}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        print(f"saved {out.relative_to(ROOT)}")
    if opts.plot and not opts.foreign:
        draw(report, ROOT / "docs" / "_static" / "bench")
    failed = [row["app"] for row in rows if row.get("delivered", 1.0) < 0.999]
    if failed:
        print(f"FAILED: not every event delivered: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
