"""N concurrent streams: flask-ssecors, the bare gevent floor and the peers, one app at a time.

Each app of :mod:`bench.peers` (gunicorn ``-k gevent`` with ``--worker-connections N+500`` and
the open-file limit raised by :mod:`bench.gunicorn_conf`, or uvicorn; a throwaway redis-server
for the Redis apps) runs once per size N. The orchestrator:

1. starts the server, finds its workers (the gunicorn master's children, or uvicorn itself),
   warms them up with a few requests and reads their summed ``VmRSS``;
2. starts :mod:`bench.loadgen` in another process, which opens N streams with an allowed
   ``Origin`` (200 at a time) and reports when every one received its first bytes: streams per
   second, and streams per CPU second of the server, is the connection setup rate, CORS check
   included; apps whose ``/stats`` sees every worker are then waited for until they count N
   subscribers (flask-sse subscribes to Redis after its first write);
3. after a short settle, reads ``VmRSS`` again: (open - before) / N is the memory per stream
   (redis-server's growth is reported apart);
4. idle phase: worker CPU over ``idle`` seconds with every stream open and nothing published
   (flask-ssecors writes heartbeats, sse-starlette pings, the others write nothing);
5. publishing phase: ``POST /start`` makes the app publish ``count`` events at a fixed interval,
   each carrying its publish timestamp; the load generator waits until every stream received all
   of them and reports delivery and publish-to-receive latency. Worker on-CPU time over the phase
   (its CPU-time clock) divided by the delivered events is the CPU cost per
   delivered event; delivered events per CPU second of the workers and redis-server together
   is the deliveries per second per core;
6. optionally (``release``), closes every stream and watches how long the app takes to release
   them (flask-ssecors notices at the next heartbeat; the floor and flask-sse, without
   heartbeats, hold dead streams until the next event);
7. stops the workers, the master and redis-server by PID.

The order of the apps is reversed at every other size, so slow phases of a shared machine do
not always hit the same app.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import select
import signal
import subprocess
import sys
import time
import typing as t
from pathlib import Path

from ._common import children_of
from ._common import cpu_seconds
from ._common import free_port
from ._common import markdown_table
from ._common import median
from ._common import process_cpu_seconds
from ._common import raise_nofile_limit
from ._common import ratio
from ._common import RESULTS
from ._common import ROOT
from ._common import rss_kib
from ._common import sched_seconds
from ._common import wait_for_port
from .peers import APPS
from .peers import label
from .peers import RedisServer
from .peers import server_command
from .peers import SPECS
from .peers import wait

#: Bench-only variants that may be added with ``apps=`` (none at present).
EXPERIMENTS: tuple[str, ...] = ()
ORIGIN = "https://app.example.com"
GUNICORN_CONF = Path(__file__).resolve().parent / "gunicorn_conf.py"
#: The targets from the design discussion: flask-ssecors within 1.3x of the floor.
TARGET_RATIO = 1.3


class Settings(t.NamedTuple):
    """What one stream benchmark run does."""

    sizes: tuple[int, ...]
    count: int = 10  #: events published
    interval: float = 1.0  #: seconds between events
    heartbeat: float = 5.0  #: flask-ssecors heartbeat (SSECORS_HEARTBEAT)
    idle: float = 6.0  #: seconds of the idle phase
    settle: float = 2.0  #: seconds between "all open" and the RSS reading
    rounds: int = 1
    #: Record the worker with py-spy during the publishing phase (its CPU numbers then include
    #: the sampling overhead; use for where the time goes, not for the ratios).
    profile: bool = False
    #: Call gc.freeze() in the worker (both apps) once every stream is open: an experiment.
    gc_freeze: bool = False
    #: The apps to run; the first is the baseline of the ratios.
    apps: tuple[str, ...] = APPS
    #: After closing the streams, watch the app release them (where /stats sees every worker).
    release: bool = True


class Failure(RuntimeError):
    """A run could not complete."""


def _http(port: int, method: str, path: str, timeout: float = 10.0) -> t.Any:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        body = response.read()
        if response.status >= 300:
            raise Failure(f"{method} {path}: {response.status} {body[:200]!r}")
        ctype = response.getheader("Content-Type", "")
        return json.loads(body) if ctype.startswith("application/json") else body
    finally:
        connection.close()


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (guards against PID reuse when stopping it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return None


class Server:
    """One app of :data:`bench.peers.SPECS` served in a subprocess (and its redis-server, if it
    needs one); stops every process it started by PID."""

    def __init__(self, app: str, streams: int, heartbeat: float, log_path: Path) -> None:
        self.spec = SPECS[app]
        self.port = free_port()
        self.log_path = log_path
        self.command = server_command(self.spec, self.port, streams, str(GUNICORN_CONF))
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "BENCH_HEARTBEAT": str(heartbeat)}
        self.redis = RedisServer() if self.spec.redis else None
        self.process: subprocess.Popen[bytes] | None = None
        #: The processes that serve requests: gunicorn's workers, or uvicorn itself.
        self.workers: list[int] = []
        self._started: dict[int, str | None] = {}

    @property
    def worker(self) -> int | None:
        """The first worker (the only one for one-worker apps)."""
        return self.workers[0] if self.workers else None

    def start(self) -> None:
        if self.redis is not None:
            self.redis.start()
            self.env["BENCH_REDIS_URL"] = self.redis.url
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        wait_for_port(self.port, self.process)
        if self.spec.server == "uvicorn":
            self.workers = [self.process.pid]
        else:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                workers = children_of(self.process.pid)
                if len(workers) == self.spec.workers:
                    self.workers = sorted(workers)
                    break
                time.sleep(0.05)
            else:
                raise Failure(f"gunicorn started no {self.spec.workers} workers within 20 s")
        self._started = {pid: _start_time(pid) for pid in self.workers}
        for _ in range(20 * self.spec.workers):
            _http(self.port, "GET", "/health")
        _http(self.port, "GET", "/stats")

    def rss_kib(self) -> int:
        """The summed ``VmRSS`` of the workers."""
        return sum(rss_kib(pid) for pid in self.workers)

    def redis_rss_kib(self) -> int | None:
        return self.redis.rss_kib() if self.redis is not None else None

    def cpu(self) -> tuple[float, float | None, float]:
        """Worker CPU seconds (``/proc/<pid>/stat``, 10 ms ticks), the same from schedstat
        (nanoseconds, or None), and redis-server's CPU seconds (0 without Redis)."""
        ticks = sum(cpu_seconds(pid) for pid in self.workers)
        scheds = [sched_seconds(pid) for pid in self.workers]
        sched = None if any(v is None for v in scheds) else sum(t.cast(float, v) for v in scheds)
        redis = self.redis.cpu_seconds() if self.redis is not None else 0.0
        return ticks, sched, redis

    def cpu_best(self) -> tuple[float, float]:
        """Worker CPU seconds and redis-server's, from each process's CPU-time clock."""
        workers = sum(process_cpu_seconds(pid) for pid in self.workers)
        redis = process_cpu_seconds(self.redis.pid) if self.redis is not None else 0.0
        return workers, redis

    def stop(self) -> None:
        try:
            process = self.process
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)
            for worker, started in self._started.items():
                if started is None or worker == (process.pid if process else None):
                    continue
                deadline = time.monotonic() + 5
                while _start_time(worker) == started and time.monotonic() < deadline:
                    time.sleep(0.1)
                if _start_time(worker) == started:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(worker, signal.SIGKILL)
        finally:
            if self.redis is not None:
                self.redis.stop()


class LoadGen:
    """The :mod:`bench.loadgen` subprocess, driven over its stdin and stdout."""

    def __init__(self, port: int, streams: int, log_path: Path) -> None:
        self._log = open(log_path, "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.loadgen",
                "--port",
                str(port),
                "--streams",
                str(streams),
                "--origin",
                ORIGIN,
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        self._buffer = b""

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")
        self.process.stdin.flush()

    def read(self, kind: str, timeout: float) -> dict[str, t.Any]:
        """The next message, which must be of type ``kind``, within ``timeout`` seconds."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failure(f"load generator: no {kind!r} message within {timeout:.0f} s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise Failure(f"load generator exited (waiting for {kind!r})")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        message = json.loads(line)
        if message.get("type") != kind:
            raise Failure(f"load generator: expected {kind!r}, got {message}")
        return t.cast("dict[str, t.Any]", message)

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.send("close")
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


def _start_profiler(
    pid: int, settings: Settings, path: Path
) -> tuple[subprocess.Popen[bytes], Path]:
    """``py-spy record`` (collapsed stacks, non-blocking) on ``pid`` for the publishing phase."""
    spy = Path(sys.executable).with_name("py-spy")
    duration = int(settings.count * settings.interval + 5)
    process = subprocess.Popen(
        [
            str(spy),
            "record",
            "--pid",
            str(pid),
            "--nonblocking",
            "--rate",
            "250",
            "--format",
            "raw",
            "--duration",
            str(duration),
            "--output",
            str(path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    return process, path


def _stop_profiler(spy: tuple[subprocess.Popen[bytes], Path]) -> str:
    process, path = spy
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    return str(path)


def run_one(app: str, streams: int, settings: Settings, log_dir: Path) -> dict[str, t.Any]:
    """One served run of ``app`` with ``streams`` streams; see the module docstring."""
    tag = f"{app}-{streams}-{int(time.time())}"
    server = Server(app, streams, settings.heartbeat, log_dir / f"{tag}-server.log")
    result: dict[str, t.Any] = {
        "app": app,
        "label": label(app),
        "server": server.spec.server,
        "workers": server.spec.workers,
        "redis": server.spec.redis,
        "streams": streams,
        "heartbeat_s": settings.heartbeat if app != "bare" else None,
        "server_log": str(server.log_path),
    }
    loadgen: LoadGen | None = None
    try:
        server.start()
        worker = server.worker
        assert worker is not None
        time.sleep(1.0)
        result["rss_before_kib"] = server.rss_kib()
        result["redis_rss_before_kib"] = server.redis_rss_kib()

        # Opening: connection setup rate, CORS check included, and its CPU cost.
        cpu0, redis0 = server.cpu_best()
        loadgen = LoadGen(server.port, streams, log_dir / f"{tag}-loadgen.log")
        opened = loadgen.read("opened", timeout=240)
        cpu1, redis1 = server.cpu_best()
        result["open"] = opened
        if opened["opened"] < streams:
            raise Failure(f"only {opened['opened']} of {streams} streams opened: {opened}")
        result["setup"] = {
            "streams_per_s": streams / opened["seconds"] if opened["seconds"] else float("nan"),
            "cpu_s": cpu1 - cpu0,
            "redis_cpu_s": redis1 - redis0,
            "streams_per_cpu_s": ratio(streams, (cpu1 - cpu0) + (redis1 - redis0)),
        }
        stats = _http(server.port, "GET", "/stats")
        scope = stats.get("subscribers_scope", "all")
        result["subscribers_scope"] = scope
        if scope == "all":
            # flask-sse subscribes after its first write: wait until Redis counts them all.
            ready = wait(
                lambda: _http(server.port, "GET", "/stats")["subscribers"] >= streams,
                30 + streams / 500,
                0.25,
            )
            if not ready:
                raise Failure("the app never counted every stream as subscribed")
        time.sleep(settings.settle)
        result["subscribers_open"] = _http(server.port, "GET", "/stats")["subscribers"]
        result["rss_open_kib"] = server.rss_kib()
        result["kib_per_stream"] = (result["rss_open_kib"] - result["rss_before_kib"]) / streams
        redis_open = server.redis_rss_kib()
        result["redis_kib_per_stream"] = (
            (redis_open - result["redis_rss_before_kib"]) / streams
            if redis_open is not None
            else None
        )

        # Idle phase: everything open, nothing published.
        loadgen.send("mark")
        loadgen.read("mark", timeout=30)
        cpu0, redis0 = server.cpu_best()
        begin = time.monotonic()
        time.sleep(settings.idle)
        cpu1, redis1 = server.cpu_best()
        elapsed = time.monotonic() - begin
        loadgen.send("mark")
        idle = loadgen.read("mark", timeout=30)
        result["idle"] = {
            "seconds": elapsed,
            "cpu_s": cpu1 - cpu0,
            "cpu_percent": 100 * (cpu1 - cpu0) / elapsed,
            "redis_cpu_percent": 100 * (redis1 - redis0) / elapsed,
            "comments_received": idle["comments"],
        }

        # Publishing phase.
        wait_timeout = settings.count * settings.interval + 30 + streams / 500
        loadgen.send(f"wait {settings.count} {wait_timeout}")
        loadgen.read("waiting", timeout=30)
        spy = (
            _start_profiler(worker, settings, log_dir / f"{tag}-publish.pyspy")
            if settings.profile
            else None
        )
        if settings.gc_freeze:
            result["gc_frozen"] = _http(server.port, "POST", "/gc-freeze")["frozen"]
        gc0 = _http(server.port, "GET", "/stats")["gc"]
        query = f"count={settings.count}&interval={settings.interval}"
        cpu0, sched0, _ = server.cpu()
        clock0, redis0 = server.cpu_best()
        begin = time.monotonic()
        _http(server.port, "POST", f"/start?{query}")
        delivered = loadgen.read("delivered", timeout=wait_timeout + 30)
        clock1, redis1 = server.cpu_best()
        cpu1, sched1, _ = server.cpu()
        if spy is not None:
            result["profile"] = _stop_profiler(spy)
        elapsed = time.monotonic() - begin
        # With several workers, these come from whichever worker answers; the publisher's
        # numbers are right only if it is the one that ran the publisher (not checked).
        stats = _http(server.port, "GET", "/stats")
        events = delivered["delivered_events"]
        sched = sched1 - sched0 if sched0 is not None and sched1 is not None else None
        # The CPU-time clocks: the same time as utime + stime, without the 10 ms ticks that
        # make small runs read as 0 or 10 ms, and (unlike summing the threads' schedstat)
        # keeping the time of threads that exited (gevent's resolver threads do).
        cpu = clock1 - clock0
        redis_cpu = redis1 - redis0
        result["publish"] = {
            **delivered,
            "seconds": elapsed,
            "cpu_s": cpu,
            "tick_cpu_s": cpu1 - cpu0,
            "redis_cpu_s": redis_cpu,
            "sched_cpu_s": sched,
            "cpu_us_per_event": 1e6 * cpu / events if events else float("nan"),
            "cpu_us_per_event_with_redis": (
                1e6 * (cpu + redis_cpu) / events if events else float("nan")
            ),
            "deliveries_per_cpu_s": ratio(events, cpu + redis_cpu),
            "sched_us_per_event": 1e6 * sched / events if events and sched is not None else None,
            "publish_call_ms_median": median(stats["publish_ms"]),
            "publish_call_ms_max": max(stats["publish_ms"], default=float("nan")),
            "gc_collections": [
                b - a for a, b in zip(gc0["collections"], stats["gc"]["collections"], strict=True)
            ],
            "gc_seconds": [
                b - a for a, b in zip(gc0["seconds"], stats["gc"]["seconds"], strict=True)
            ],
            "gc_frozen_objects": stats["gc_frozen"],
        }
        result["publish"]["gc_share_of_cpu"] = ratio(
            sum(result["publish"]["gc_seconds"]), result["publish"]["cpu_s"]
        )
        result["rss_after_publish_kib"] = server.rss_kib()

        # Close every stream; watch the worker release them. flask-ssecors should within two
        # heartbeats (the first write to a closed peer usually succeeds; the next one fails).
        # The floor has no heartbeat and holds them until the next event: one look suffices.
        # Only where /stats counts every worker's streams, and only when asked.
        loadgen.stop()
        loadgen = None
        if settings.release and scope == "all":
            begin = time.monotonic()
            patience = 2 * settings.heartbeat + 4 if app not in ("bare", "flasksse") else 2.0
            left = _http(server.port, "GET", "/stats")["subscribers"]
            while left and time.monotonic() - begin < patience:
                time.sleep(0.25)
                left = _http(server.port, "GET", "/stats")["subscribers"]
            result["release"] = {
                "waited_s": time.monotonic() - begin,
                "subscribers_left": left,
                "released_all": left == 0,
            }
        result["ok"] = True
    except (Failure, OSError, KeyError, ValueError) as error:
        result["ok"] = False
        result["error"] = f"{type(error).__name__}: {error}"
    finally:
        if loadgen is not None:
            loadgen.stop()
        server.stop()
    return result


def run(
    settings: Settings, log_dir: Path | None = None, progress: t.TextIO = sys.stderr
) -> dict[str, t.Any]:
    """Every size, both apps alternating, ``settings.rounds`` times; a JSON-able result."""
    raise_nofile_limit()  # uvicorn and redis-server inherit it (gunicorn raises its own)
    log_dir = log_dir or RESULTS / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for number in range(settings.rounds):
        for index, streams in enumerate(settings.sizes):
            apps = settings.apps
            order = apps if (index + number) % 2 == 0 else apps[::-1]
            for app in order:
                print(f"  streams: {app} x {streams} ...", file=progress, flush=True)
                one = run_one(app, streams, settings, log_dir)
                runs.append(one)
                print(f"  streams: {_one_line(one)}", file=progress, flush=True)
    return {
        "settings": settings._asdict(),
        "runs": runs,
        "summary": summarise(runs, settings.apps),
    }


def _one_line(one: dict[str, t.Any]) -> str:
    if not one.get("ok"):
        return f"{one['app']} x {one['streams']}: FAILED: {one.get('error')}"
    publish = one["publish"]
    return (
        f"{one['app']} x {one['streams']}: {one['kib_per_stream']:.1f} KiB/stream, "
        f"{publish['cpu_us_per_event']:.1f} µs CPU/event, p50 {publish['p50_ms']:.1f} ms, "
        f"p99 {publish['p99_ms']:.1f} ms, delivered {publish['delivered_events']}/"
        f"{publish['expected_events']}"
    )


def summarise(runs: list[dict[str, t.Any]], apps: tuple[str, ...] = APPS) -> list[dict[str, t.Any]]:
    """Per size: medians per app over rounds, and each app's ratios to the first app (the bare
    floor), checked against the target."""
    rows = []
    for streams in sorted({one["streams"] for one in runs}):
        by_app: dict[str, dict[str, t.Any]] = {}
        for app in apps:
            good = [
                one
                for one in runs
                if one["streams"] == streams and one["app"] == app and one.get("ok")
            ]
            if not good:
                continue
            released = [one["release"] for one in good if "release" in one]
            by_app[app] = {
                "runs": len(good),
                "kib_per_stream": median(one["kib_per_stream"] for one in good),
                "redis_kib_per_stream": (
                    median(one["redis_kib_per_stream"] for one in good)
                    if good[0].get("redis_kib_per_stream") is not None
                    else None
                ),
                "cpu_us_per_event": median(one["publish"]["cpu_us_per_event"] for one in good),
                "cpu_us_per_event_with_redis": median(
                    one["publish"]["cpu_us_per_event_with_redis"] for one in good
                ),
                "deliveries_per_cpu_s": median(
                    one["publish"]["deliveries_per_cpu_s"] for one in good
                ),
                "p50_ms": median(one["publish"]["p50_ms"] for one in good),
                "p99_ms": median(one["publish"]["p99_ms"] for one in good),
                "idle_cpu_percent": median(one["idle"]["cpu_percent"] for one in good),
                "setup_per_s": median(one["setup"]["streams_per_s"] for one in good),
                "setup_per_cpu_s": median(one["setup"]["streams_per_cpu_s"] for one in good),
                "delivered": sum(one["publish"]["delivered_events"] for one in good),
                "expected": sum(one["publish"]["expected_events"] for one in good),
                "publish_call_ms": median(one["publish"]["publish_call_ms_median"] for one in good),
                "gc_share": median(one["publish"]["gc_share_of_cpu"] for one in good),
                "left_after_close": (
                    max(r["subscribers_left"] for r in released) if released else None
                ),
                "release_s": max(r["waited_s"] for r in released) if released else None,
            }
        row: dict[str, t.Any] = {"streams": streams, **by_app, "ratios": {}}
        base = by_app.get(apps[0])
        for app in apps[1:]:
            ours = by_app.get(app)
            if base is None or ours is None:
                continue
            ratios = {
                key: ratio(ours[key], base[key])
                for key in (
                    "kib_per_stream",
                    "cpu_us_per_event",
                    "deliveries_per_cpu_s",
                    "p50_ms",
                    "p99_ms",
                    "setup_per_cpu_s",
                )
            }
            ratios["meets_memory_target"] = ratios["kib_per_stream"] <= TARGET_RATIO
            ratios["meets_cpu_target"] = ratios["cpu_us_per_event"] <= TARGET_RATIO
            row["ratios"][app] = ratios
        rows.append(row)
    return rows


def to_markdown(result: dict[str, t.Any]) -> str:
    """Every app's measurements as a Markdown table (the ratios are in :mod:`bench.report`)."""
    settings = result["settings"]
    apps = tuple(settings.get("apps", APPS))
    rows = []
    for row in result["summary"]:
        for app in apps:
            data = row.get(app)
            if data is None:
                rows.append((row["streams"], label(app), *["failed"] * 12))
                continue
            if data["left_after_close"] is None:
                release = "not checked"
            else:
                release = f"{data['left_after_close']} left after {data['release_s']:.1f} s"
            redis_kib = data["redis_kib_per_stream"]
            rows.append(
                (
                    row["streams"],
                    label(app),
                    data["kib_per_stream"],
                    "" if redis_kib is None else f"{redis_kib:.1f}",
                    data["cpu_us_per_event"],
                    data["deliveries_per_cpu_s"],
                    data["p50_ms"],
                    data["p99_ms"],
                    f"{data['delivered']}/{data['expected']}",
                    data["idle_cpu_percent"],
                    data["setup_per_s"],
                    data["setup_per_cpu_s"],
                    f"{100 * data['gc_share']:.0f} %",
                    release,
                    data["runs"],
                )
            )
    table = markdown_table(
        (
            "N",
            "app",
            "KiB/stream",
            "Redis KiB/stream",
            "µs CPU/event",
            "deliveries/CPU-s",
            "p50 ms",
            "p99 ms",
            "delivered",
            "idle CPU %",
            "opens/s",
            "opens/CPU-s",
            "GC CPU share",
            "streams held after clients left",
            "runs",
        ),
        rows,
    )
    failures = [
        f"- {label(one['app'])} x {one['streams']}: {one.get('error')} (log: {one['server_log']})"
        for one in result["runs"]
        if not one.get("ok")
    ]
    return "\n\n".join(
        part
        for part in (
            f"{settings['count']} events, one every {settings['interval']} s, to every stream; "
            f"heartbeat (flask-ssecors) and ping (sse-starlette) every {settings['heartbeat']} s; "
            f"idle phase {settings['idle']} s"
            f"{'; gc.freeze() in the worker before publishing' if settings['gc_freeze'] else ''}."
            " KiB/stream: worker RSS growth (all workers) per open stream. µs CPU/event: worker "
            "CPU over the publishing phase per delivered event. deliveries/CPU-s: delivered "
            "events per CPU second of the workers and redis-server together. opens/s: streams "
            "opened per second (CORS check included) by a load generator opening 200 at a time."
            f"\n\n{table}",
            "Failed runs:\n" + "\n".join(failures) if failures else "",
        )
        if part
    )
