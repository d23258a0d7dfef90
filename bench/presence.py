"""Presence: what a member costs per stream open and close, and what ``sse.presence()`` costs.

``python -m bench.presence`` (about 9 minutes on 2 cores; ``--streams 1000 --event-streams 300
--repeat 1`` is a quick run of about a minute). For each broker (``memory``: one
``gunicorn -k gevent`` worker; ``redis``: two workers and a redis-server on a free port, stopped
by PID), this process holds the streams (an asyncio loop, ``tests/support/swarm.py``), all on
one channel, ``room:big``, in *phases* of three kinds:

- ``none``: ``sse.subscribe("room:big")``, no member (the baseline);
- ``members``: each stream its own member, ``sse.subscribe("room:big", member=f"m{n}")``;
- ``events``: the same on a view with ``presence_events=True``: every join and leave is an
  event of the channel, delivered to every stream on it. A connect storm of N members is then
  about N²/2 deliveries (50 million at 10,000), so this kind runs at ``--event-streams``
  (2,000 by default), beside ``none`` and ``members`` at the same size. Its view's queue bound
  is raised above 2N: when every client is cut at once, the N leaves are published together,
  and the observer below, with the default bound of 1,000, would be dropped for overflow
  before it wrote any of them.

Phases of different kinds take turns in one server, so that they are compared on the same
process: at each size, ``none`` first, then ``--repeat`` rounds of the other kinds each followed
by ``none`` again (``none, members, none, members, none...``). Each phase's ratio is taken
against the mean of the ``none`` phases just before and just after it, so that drift (a
neighbour on the machine, a server that grew) cancels out; the tables give the median ratio
and its range, and the median of each absolute figure. Two servers per broker: one with
``SSECORS_PRESENCE_MAX_MEMBERS`` at 1,000,000, so that ``presence()`` lists all N members,
which runs every kind; one at the default (500), so that it only counts them, which runs
``members`` phases for their ``presence()`` calls.

Each server is warmed up (streams on another channel until every worker holds one) and holds a
member-less *observer* stream on ``room:big`` that parses what it receives. Each phase:

1. **open**: N streams, 500 connecting at a time; the workers' CPU from before the first
   connect until they are quiet again (less than 2 % of a core over half a second: the Redis
   workers' batched presence writes and every join event delivered), divided by N;
   redis-server's likewise. Each process's CPU-time clock (nanosecond resolution);
2. checks that ``presence()`` counts N members and N connections (0 for ``none``), listed or
   not as the server's setting says;
3. **presence()** (phases at ``--streams``): ``--calls`` sequential ``GET /presence``
   (``sse.presence("room:big")``, answered with its counts) on one keep-alive connection,
   interleaved in blocks of 20 with ``GET /noop`` (the same answer, built without asking
   anything): median wall time per call, and the CPU per call of the workers and of
   redis-server, each beside the no-op's;
4. **close**: the client cuts every stream with a reset (``SO_LINGER`` 0), then ``POST /nudge``
   publishes one event to the channel. A stream learns that its client left only when a write
   fails; ``SSECORS_HEARTBEAT`` is an hour here, so nothing else is written and the nudge is
   that write, the same in every phase. The workers' CPU from before the cut until every
   stream's socket is closed (counted in ``/proc/<pid>/fd``) and they are quiet again, divided
   by N;
5. checks that ``presence()`` counts 0, and for ``events`` that the observer received each
   member's join and leave exactly once. A failed check makes the run exit 1.

What presence costs per open (or close) is a kind's CPU per stream less that of the ``none``
phases around it; the ratios are kind / ``none``, workers and redis-server together. On Redis,
the scripts redis-server ran while the streams opened and closed (``INFO commandstats``) are
the round trips of the presence writes.

Results: printed as Markdown, saved to ``bench/results/presence-<timestamp>.json``; ``--plot``
also writes ``docs/_static/bench/presence.csv`` (opens and closes) and
``docs/_static/bench/presence_calls.csv`` (``presence()`` calls); ``--report PATH`` prints
(and with ``--plot`` writes) them again from a saved run. Server logs go to
``bench/results/logs/``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import functools
import http.client
import json
import os
import socket
import struct
import subprocess
import sys
import time
import typing as t
from pathlib import Path

from flask_ssecors._config import default_of
from flask_ssecors.events import JOIN_EVENT
from flask_ssecors.events import LEAVE_EVENT

if t.TYPE_CHECKING:
    from flask import Flask

    from tests.support.servers import LiveServer
    from tests.support.swarm import Swarm
    from tests.support.swarm import SwarmStream

ROOT = Path(__file__).resolve().parent.parent
CHANNEL = "room:big"
#: The origin :mod:`tests.support.swarm` sends.
ORIGIN = "http://localhost:5001"
#: ``SSECORS_PRESENCE_MAX_MEMBERS`` of the server that lists every member; the other's is the
#: default.
LISTED = 1_000_000
DEFAULT_MAX_MEMBERS: t.Final[int] = default_of("presence_max_members")
#: ``presence()`` and no-op calls per block; the blocks alternate.
BLOCK = 20
BROKERS = {"memory": 1, "redis": 2}  #: broker -> gunicorn workers


# -- the app (gunicorn target) -------------------------------------------------------------------


def create_app() -> Flask:
    """The bench app: the broker from ``BENCH_BROKER_URL``, ``SSECORS_PRESENCE_MAX_MEMBERS``
    from ``BENCH_MAX_MEMBERS``, the ``/announced`` view's queue bound from
    ``BENCH_QUEUE_SIZE``."""
    from flask import Flask
    from flask import request

    from flask_ssecors import Event
    from flask_ssecors import SSECors

    app = Flask("bench_presence")
    app.config.update(
        SSECORS_ALLOWED_ORIGINS=[ORIGIN],
        SSECORS_BROKER_URL=os.environ.get("BENCH_BROKER_URL", "memory://"),
        # Nothing is written to an idle stream: a closed one is noticed at the nudge.
        SSECORS_HEARTBEAT=3600.0,
        # Every client of the load comes from loopback, one client to the per-client limit.
        SSECORS_MAX_STREAMS_PER_CLIENT=None,
        SSECORS_PRESENCE_MAX_MEMBERS=int(os.environ["BENCH_MAX_MEMBERS"]),
    )
    sse = SSECors(app)

    def subscribe() -> t.Any:
        channel = request.args.get("c", CHANNEL)
        member = request.args.get("m")
        if member is None:
            return sse.subscribe(channel)
        return sse.subscribe(channel, member=member)

    @app.get("/events")
    @sse.stream()
    def events() -> t.Any:
        return subscribe()

    @app.get("/announced")
    @sse.stream(presence_events=True, queue_size=int(os.environ.get("BENCH_QUEUE_SIZE", "1000")))
    def announced() -> t.Any:
        return subscribe()

    @app.get("/presence")
    def presence() -> t.Any:
        found = sse.presence(CHANNEL)
        return {
            "member_count": found.member_count,
            "connections": found.connections,
            "counts_only": found.counts_only,
            "listed": len(found.members),
        }

    @app.get("/noop")
    def noop() -> t.Any:
        return {"member_count": 0, "connections": 0, "counts_only": False, "listed": 0}

    @app.post("/nudge")
    def nudge() -> t.Any:
        sse.publish(CHANNEL, Event("nudge", event="nudge"))
        return "ok\n"

    return app


# -- phases --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Kind:
    """What the streams of a phase declare."""

    name: str
    label: str
    member: bool = False
    events: bool = False

    def path(self, n: int) -> str:
        if not self.member:
            return f"/events?n={n}"
        return f"/announced?m=m{n}" if self.events else f"/events?m=m{n}"


NONE = Kind("none", "no member")
MEMBERS = Kind("members", "a member each", member=True)
EVENTS = Kind("events", "a member each, join/leave events", member=True, events=True)


class Step(t.NamedTuple):
    kind: Kind
    streams: int
    calls: bool  #: time presence() calls in this phase


def plan(listed: bool, streams: int, event_streams: int, repeat: int) -> list[Step]:
    """The phases of one server (see the module documentation). On the listing server, each
    size is a sequence that starts and ends with ``none`` and has a ``none`` between rounds,
    so that every other phase has a baseline just before and just after it."""
    if not listed:
        return [Step(MEMBERS, streams, True)] * repeat
    steps = [Step(NONE, streams, True)]
    for _ in range(repeat):
        steps += [Step(MEMBERS, streams, True), Step(NONE, streams, True)]
    if event_streams:
        steps.append(Step(NONE, event_streams, False))
        for _ in range(repeat):
            steps += [Step(kind, event_streams, False) for kind in (MEMBERS, EVENTS, NONE)]
    return steps


class Failed(Exception):
    """A check of a run did not hold."""


# -- measuring -----------------------------------------------------------------------------------


@functools.cache
def counting_stream() -> type[SwarmStream]:
    """A :class:`~tests.support.swarm.SwarmStream` that parses its response head, then only
    counts the bytes and join events it receives (thousands of streams each parsing thousands of
    join events would keep this process busier than the server), and is cut with a reset."""
    from tests.support.swarm import SwarmStream

    join = JOIN_EVENT.encode()

    class CountingStream(SwarmStream):
        received = 0  #: bytes, the response head included
        joins = 0  #: join events among them
        _tail = b""

        def data_received(self, data: bytes) -> None:
            if self.status is None:
                super().data_received(data)
            self.received += len(data)
            self.joins += (self._tail + data).count(join)
            self._tail = data[-len(join) + 1 :]

        def close(self) -> None:
            transport = self._transport
            if transport is not None and not transport.is_closing():
                sock = transport.get_extra_info("socket")
                if sock is not None:  # a reset: the server's next write fails at once
                    linger = struct.pack("ii", 1, 0)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                super().close()

    return CountingStream


class Meter:
    """CPU of the workers and of redis-server, read together; the workers' open files."""

    def __init__(self, workers: list[int], redis_pid: int | None) -> None:
        self.workers = workers
        self.redis_pid = redis_pid

    def read(self) -> tuple[float, float]:
        from bench._common import process_cpu_seconds

        workers = sum(process_cpu_seconds(pid) for pid in self.workers)
        return workers, process_cpu_seconds(self.redis_pid) if self.redis_pid else 0.0

    def fds(self) -> list[int]:
        return [len(os.listdir(f"/proc/{pid}/fd")) for pid in self.workers]

    def wait_quiet(self, timeout: float = 600.0, window: float = 0.5) -> None:
        """Until the workers spent less than 2 % of a core over ``window`` seconds."""
        began = time.monotonic()
        last = self.read()[0]
        while time.monotonic() - began < timeout:
            time.sleep(window)
            now = self.read()[0]
            if now - last < 0.02 * window:
                return
            last = now
        raise Failed(f"the workers were still busy after {timeout:g} s")


class Client:
    """Requests over one keep-alive connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call(self, method: str, path: str) -> t.Any:
        try:
            self.connection.request(method, path)
            response = self.connection.getresponse()
        except (http.client.RemoteDisconnected, ConnectionError):
            # The server closed the idle connection (gunicorn's keepalive): once more, anew.
            self.connection.close()
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            self.connection.request(method, path)
            response = self.connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise Failed(f"{method} {path}: {response.status} {body[:200]!r}")
        return json.loads(body) if body.startswith(b"{") else body

    def close(self) -> None:
        self.connection.close()


def time_calls(client: Client, meter: Meter, calls: int) -> dict[str, float]:
    """``calls`` presence() and as many no-op calls, in alternating blocks of :data:`BLOCK`:
    median wall µs per call, and workers' and redis-server's CPU µs per call, for each."""
    from bench._common import median

    walls: dict[str, list[float]] = {"presence": [], "noop": []}
    cpu = {"presence": [0.0, 0.0], "noop": [0.0, 0.0]}
    for path in ("/noop", "/presence") * 5:  # warm-up
        client.call("GET", path)
    for block in range(max(1, calls // BLOCK)):
        order = ("noop", "presence") if block % 2 == 0 else ("presence", "noop")
        for kind in order:
            before = meter.read()
            for _ in range(BLOCK):
                began = time.perf_counter()
                client.call("GET", f"/{kind}")
                walls[kind].append(time.perf_counter() - began)
            after = meter.read()
            cpu[kind][0] += after[0] - before[0]
            cpu[kind][1] += after[1] - before[1]
    result = {}
    for kind in ("presence", "noop"):
        count = len(walls[kind])
        result[f"{kind}_wall_us"] = round(median(walls[kind]) * 1e6, 1)
        result[f"{kind}_cpu_us"] = round(cpu[kind][0] / count * 1e6, 1)
        result[f"{kind}_redis_us"] = round(cpu[kind][1] / count * 1e6, 1)
    return result


# -- one server ----------------------------------------------------------------------------------


class Served:
    """The app on one broker in a fresh server, warmed up, with the observer stream open.

    :param listed: ``SSECORS_PRESENCE_MAX_MEMBERS`` at :data:`LISTED`, else the default.
    :param streams: the most streams a phase opens (sizes the server).
    """

    def __init__(
        self,
        broker: str,
        *,
        listed: bool,
        streams: int,
        redis_url: str | None,
        redis_pid: int | None,
    ) -> None:
        from bench._common import RESULTS

        self.broker = broker
        self.listed = listed
        self.max_members = LISTED if listed else DEFAULT_MAX_MEMBERS
        self.redis_url = redis_url
        self.redis_pid = redis_pid
        self.streams = streams
        logs = RESULTS / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        setting = "listed" if listed else "counted"
        self.log = logs / f"presence-{broker}-{setting}-{streams}-{int(time.time())}-server.log"
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Served:
        from bench._common import children_of
        from tests.support.servers import LiveServer
        from tests.support.swarm import Swarm

        env = {
            "BENCH_BROKER_URL": self.redis_url
            if self.broker == "redis" and self.redis_url
            else "memory://",
            "BENCH_MAX_MEMBERS": str(self.max_members),
            # The observer receives N leaves at once when every client is cut: above the
            # default bound of a stream's queue (1,000), it would be dropped for overflow;
            # flask-ssecors refuses a view with events whose queue is not above
            # SSECORS_PRESENCE_MAX_MEMBERS (the most members it announces) for that reason.
            "BENCH_QUEUE_SIZE": str(max(1000, 2 * self.streams + 16, self.max_members + 1)),
        }
        if self.broker == "redis" and self.redis_url:
            import redis

            with redis.Redis.from_url(self.redis_url) as admin:
                admin.flushall()
        workers = BROKERS[self.broker]
        self.server: LiveServer = LiveServer(
            "bench.presence:create_app()",
            env=env,
            workers=workers,
            log_path=self.log,
            extra_args=[
                "-c",
                str(ROOT / "bench" / "gunicorn_conf.py"),
                # Every worker may be asked for every stream (they race for accepts); the
                # default SSECORS_MAX_STREAMS is 90 % of this.
                "--worker-connections",
                str(2 * self.streams + 1000),
            ],
        )
        self._stack.enter_context(self.server)
        try:
            assert self.server.process is not None
            began = time.monotonic()
            while len(children_of(self.server.process.pid)) < workers:
                if time.monotonic() - began > 30:
                    raise Failed("the workers did not start")
                time.sleep(0.1)
            self.meter = Meter(children_of(self.server.process.pid), self.redis_pid)
            self.client = Client(self.server.port)
            self._stack.callback(self.client.close)
            self.swarm: Swarm = self._stack.enter_context(Swarm(self.server.port))
            self._warm_up()
            # On the view whose queue holds every leave of a phase (a member-less stream).
            (self.observer,) = self.swarm.open(["/announced"])
            self.meter.wait_quiet()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _warm_up(self) -> None:
        """Streams on another channel until every worker holds one (its broker started)."""
        base = self.meter.fds()
        for _ in range(60):  # a worker still importing the app accepts nothing
            opened = self.swarm.open([f"/events?c=warmup&n={n}" for n in range(4)])
            if any(s.status != 200 for s in opened):
                raise Failed(f"warm-up streams: {[s.status or s.error for s in opened]}")
            if all(now > then for now, then in zip(self.meter.fds(), base, strict=True)):
                return
            time.sleep(0.25)
        raise Failed("a worker took no stream in 15 s")

    def phase(self, step: Step, calls: int) -> dict[str, t.Any]:
        """Open, check, time presence() (when the step says so), close, check."""
        kind, streams = step.kind, step.streams
        row: dict[str, t.Any] = {
            "broker": self.broker,
            "max_members": self.max_members,
            "kind": kind.name,
            "streams": streams,
        }
        problems: list[str] = []
        seen = len(self.observer.events)
        fds_before = self.meter.fds()

        scripts = self.scripts()
        before = self.meter.read()
        began = time.monotonic()
        opened = self.swarm.open(
            [kind.path(n) for n in range(streams)], parallel=500, stream_class=counting_stream()
        )
        row["open_s"] = round(time.monotonic() - began, 2)
        refused = [s for s in opened if s.status != 200]
        if refused:
            raise Failed(f"{len(refused)} streams not opened, e.g. {refused[0].error}")
        self.meter.wait_quiet()
        after = self.meter.read()
        row["open_scripts"] = self.scripts() - scripts
        row["open_cpu_us"] = round((after[0] - before[0]) / streams * 1e6, 1)
        row["open_redis_us"] = round((after[1] - before[1]) / streams * 1e6, 1)
        row["join_deliveries"] = sum(t.cast(t.Any, s).joins for s in opened)
        row["streams_per_worker"] = [
            now - then for now, then in zip(self.meter.fds(), fds_before, strict=True)
        ]
        problems += self.check_presence(streams if kind.member else 0)

        if step.calls:
            row.update(time_calls(self.client, self.meter, calls))
            row["counts_only"] = kind.member and streams > self.max_members

        scripts = self.scripts()
        before = self.meter.read()
        began = time.monotonic()
        self.swarm.drop(opened)
        self.client.call("POST", "/nudge")
        while sum(self.meter.fds()) > sum(fds_before) + 32:
            if time.monotonic() - began > 300:
                left = sum(self.meter.fds()) - sum(fds_before)
                raise Failed(f"{left} streams still open 300 s after their clients left")
            time.sleep(0.05)
        row["close_s"] = round(time.monotonic() - began, 2)
        self.meter.wait_quiet()
        after = self.meter.read()
        row["close_scripts"] = self.scripts() - scripts
        row["close_cpu_us"] = round((after[0] - before[0]) / streams * 1e6, 1)
        row["close_redis_us"] = round((after[1] - before[1]) / streams * 1e6, 1)
        problems += self.check_presence(0)
        if kind.events:
            problems += self.check_events(streams, seen)
        row["problems"] = problems
        return row

    def scripts(self) -> int:
        """Scripts redis-server ran so far (``EVALSHA`` and ``EVAL`` calls): the round trips
        of presence writes, and of publishing (the nudge). 0 on the memory broker."""
        if self.broker != "redis" or not self.redis_url:
            return 0
        import redis

        with redis.Redis.from_url(self.redis_url) as admin:
            stats = admin.info("commandstats")
        return sum(
            int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval")
        )

    def check_presence(self, members: int) -> list[str]:
        """What ``presence()`` says against what it should; the problems, in words."""
        counts_only = members > self.max_members
        found = self.client.call("GET", "/presence")
        want = {
            "member_count": members,
            "connections": members,
            "counts_only": counts_only,
            "listed": 0 if counts_only else members,
        }
        return [
            f"presence() with {members} members present: {key} = {found[key]!r}, expected {value!r}"
            for key, value in want.items()
            if found[key] != value
        ]

    def check_events(self, streams: int, seen: int) -> list[str]:
        """The observer received each member's join and leave exactly once since ``seen``."""
        want = sorted(f"m{n}" for n in range(streams))

        def members(kind: str) -> list[str]:
            found = self.observer.events[seen:]
            return sorted(event.json()["member"] for event in found if event.type == kind)

        with contextlib.suppress(AssertionError):  # what arrived is checked below
            self.swarm.wait_until(lambda: len(members(LEAVE_EVENT)) >= streams, 60)
        problems = [
            f"the observer's {kind} events are not each member once "
            f"({len(members(kind))} events, {len(set(members(kind)))} members)"
            for kind in (JOIN_EVENT, LEAVE_EVENT)
            if members(kind) != want
        ]
        if self.observer.ended:
            problems.append("the observer's stream ended")
        return problems


# -- the whole run -------------------------------------------------------------------------------


def run_broker(
    broker: str,
    opts: argparse.Namespace,
    redis_url: str | None,
    redis_pid: int | None,
) -> list[dict[str, t.Any]]:
    """Every phase of one broker, on its two servers; a server that fails ends with a row
    that says why."""
    rows: list[dict[str, t.Any]] = []
    event_streams = min(opts.event_streams, opts.streams)
    for listed in (True, False):
        served = Served(
            broker, listed=listed, streams=opts.streams, redis_url=redis_url, redis_pid=redis_pid
        )
        step: Step | None = None
        try:
            with served:
                steps = plan(listed, opts.streams, event_streams, opts.repeat)
                for seq, step in enumerate(steps):
                    row = {"seq": seq, **served.phase(step, opts.calls)}
                    print(json.dumps(row), file=sys.stderr, flush=True)
                    rows.append(row)
        except Exception as error:  # reported, and the run exits 1
            rows.append(
                {
                    "broker": broker,
                    "max_members": served.max_members,
                    "kind": step.kind.name if step else "start",
                    "streams": step.streams if step else 0,
                    "problems": [f"{type(error).__name__}: {error}"],
                }
            )
        for row in rows:
            if row["max_members"] == served.max_members:
                row["server_log"] = str(served.log.relative_to(ROOT))
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run (or read a saved run), print, save; return the exit status (1 when a check failed)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.presence", description=__doc__.partition("\n")[0]
    )
    parser.add_argument("--streams", type=int, default=10_000, help="streams (members) per phase")
    parser.add_argument(
        "--event-streams",
        type=int,
        default=2000,
        help="streams of the join/leave events phases (about N²/2 deliveries; 0: none)",
    )
    parser.add_argument("--brokers", default=",".join(BROKERS), help="memory, redis or both")
    parser.add_argument("--calls", type=int, default=200, help="presence() calls per phase")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of phases; medians")
    parser.add_argument("--plot", action="store_true", help="write the docs' tables")
    parser.add_argument("--no-save", action="store_true", help="print only")
    parser.add_argument("--report", type=Path, help="a saved run: its tables, nothing run")
    opts = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if opts.report:
        report = json.loads(opts.report.read_text())
        print(to_markdown(report))
    else:
        report = run(opts, " ".join(["python -m bench.presence", *(argv or sys.argv[1:])]))
        print(to_markdown(report))
        if not opts.no_save:
            stamp = report["started"].replace(":", "")
            out = ROOT / "bench" / "results" / f"presence-{stamp}.json"
            out.parent.mkdir(exist_ok=True)
            out.write_text(json.dumps(report, indent=2))
            print(f"saved {out.relative_to(ROOT)}")
    if opts.plot:
        write_tables(report, ROOT / "docs" / "_static" / "bench")
    failed = failures(report)
    if failed:
        print("\nFAILED:\n" + "\n".join(f"- {line}" for line in failed))
        return 1
    return 0


def run(opts: argparse.Namespace, command: str) -> dict[str, t.Any]:
    """Every broker's phases, with a redis-server of its own when Redis is among them."""
    from bench._common import machine
    from bench._common import raise_nofile_limit
    from tests.support.servers import RedisServer

    raise_nofile_limit()
    started = datetime.datetime.now(datetime.UTC)
    info = machine()
    changes = _library_changes()
    began = time.monotonic()
    rows: list[dict[str, t.Any]] = []
    brokers = opts.brokers.split(",")
    with contextlib.ExitStack() as stack:
        redis_server = stack.enter_context(RedisServer()) if "redis" in brokers else None
        for broker in brokers:
            url = redis_server.url if redis_server else None
            pid = redis_server.process.pid if redis_server and redis_server.process else None
            rows += run_broker(broker, opts, url, pid)
    return {
        "started": started.isoformat(timespec="seconds"),
        "command": command,
        "seconds": round(time.monotonic() - began),
        "machine": info,
        "machine_after": {"loadavg": machine()["loadavg"]},
        "library_changes": changes,
        "calls": opts.calls,
        "repeat": opts.repeat,
        "rows": rows,
    }


def _library_changes() -> str:
    """Uncommitted changes under ``flask_ssecors/`` (what was measured, beside the commit)."""
    out = subprocess.run(
        ["git", "status", "--porcelain", "flask_ssecors"],
        cwd=ROOT,
        env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip()


def failures(report: dict[str, t.Any]) -> list[str]:
    """Every failed check or phase, in words (empty when every check held)."""
    return [
        f"{row['broker']} {row['kind']} x {row['streams']}: {problem}"
        + (f" (server log: {row['server_log']})" if row.get("server_log") else "")
        for row in report["rows"]
        for problem in row["problems"]
    ]


# -- tables --------------------------------------------------------------------------------------

#: Figures of a phase that :func:`medians` takes the median of.
MEASURED = (
    "open_s",
    "open_cpu_us",
    "open_redis_us",
    "close_s",
    "close_cpu_us",
    "close_redis_us",
    "join_deliveries",
    "open_scripts",
    "close_scripts",
    "presence_wall_us",
    "presence_cpu_us",
    "presence_redis_us",
    "noop_wall_us",
    "noop_cpu_us",
    "noop_redis_us",
)


def medians(report: dict[str, t.Any]) -> dict[tuple[str, int, str, int], dict[str, float]]:
    """Per (broker, max members, kind, streams): the median of each figure over the rounds."""
    from bench._common import median

    groups: dict[tuple[str, int, str, int], list[dict[str, t.Any]]] = {}
    for row in report["rows"]:
        if "open_cpu_us" in row:
            key = (row["broker"], row["max_members"], row["kind"], row["streams"])
            groups.setdefault(key, []).append(row)
    return {
        key: {name: median(r[name] for r in rows if name in r) for name in MEASURED}
        for key, rows in groups.items()
    }


STREAM_HEADERS = (
    "broker",
    "streams",
    "each stream declares",
    "open µs",
    "+ Redis µs",
    "x none",
    "close µs",
    "+ Redis µs",
    "x none",
)
CALL_HEADERS = (
    "broker",
    "members",
    "presence() returns",
    "wall µs",
    "no-op µs",
    "x no-op",
    "worker CPU µs",
    "no-op µs",
    "+ Redis µs",
)
LABELS = {kind.name: kind.label for kind in (NONE, MEMBERS, EVENTS)}


def bracketed_ratios(
    report: dict[str, t.Any], key: tuple[str, str, int], phase: str
) -> list[float]:
    """Per phase of a kind on the listing server (``key``: broker, kind, streams), its CPU per
    stream (workers and Redis) over the mean of the ``none`` phases just before and just after
    it at the same size: drift of the machine or of the server cancels out."""
    from bench._common import ratio

    broker, kind, streams = key
    rows = sorted(
        (
            row
            for row in report["rows"]
            if "open_cpu_us" in row
            and (row["broker"], row["max_members"], row["streams"]) == (broker, LISTED, streams)
        ),
        key=lambda row: int(row["seq"]),
    )

    def total(row: dict[str, t.Any]) -> float:
        return float(row[f"{phase}_cpu_us"] + row[f"{phase}_redis_us"])

    ratios = []
    for n, row in enumerate(rows):
        if row["kind"] != kind:
            continue
        before = [total(r) for r in rows[:n] if r["kind"] == "none"][-1:]
        after = [total(r) for r in rows[n + 1 :] if r["kind"] == "none"][:1]
        if before or after:
            ratios.append(ratio(total(row), sum(before + after) / len(before + after)))
    return ratios


def stream_rows(report: dict[str, t.Any]) -> list[list[object]]:
    """Per stream opened and closed (the listing server's phases): workers' and
    redis-server's CPU µs (medians), and the ratio of both together against the ``none``
    phases around each phase (the median, and the range over the rounds)."""
    from bench._common import median

    rows: list[list[object]] = []
    for (broker, max_members, kind, streams), row in medians(report).items():
        if max_members != LISTED:
            continue
        redis = broker == "redis"
        cells: list[object] = [broker, f"{streams:,}", LABELS[kind]]
        for phase in ("open", "close"):
            ratios = bracketed_ratios(report, (broker, kind, streams), phase)
            spread = f" ({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""
            cells += [
                round(row[f"{phase}_cpu_us"]),
                round(row[f"{phase}_redis_us"]) if redis else "",
                f"{median(ratios):.2f}x{spread}" if kind != "none" else "1.00x",
            ]
        rows.append(cells)
    return rows


def call_rows(report: dict[str, t.Any]) -> list[list[object]]:
    """Per ``presence()`` call, beside the no-op endpoint in the same phase."""
    from bench._common import ratio

    rows: list[list[object]] = []
    for (broker, max_members, kind, streams), row in medians(report).items():
        if row["presence_wall_us"] != row["presence_wall_us"]:  # NaN: no calls timed
            continue
        members = streams if kind != "none" else 0
        returns = (
            "(empty channel)"
            if not members
            else ("counts only" if members > max_members else "members listed")
        )
        rows.append(
            [
                broker,
                f"{members:,}",
                returns,
                round(row["presence_wall_us"]),
                round(row["noop_wall_us"]),
                f"{ratio(row['presence_wall_us'], row['noop_wall_us']):.2f}x",
                round(row["presence_cpu_us"]),
                round(row["noop_cpu_us"]),
                round(row["presence_redis_us"]) if broker == "redis" else "",
            ]
        )
    return rows


def to_markdown(report: dict[str, t.Any]) -> str:
    from bench._common import markdown_table

    info = report["machine"]
    lines = [
        f"presence run {report['started']}, {info['nproc']} cores, {report['seconds']} s, "
        f"medians of {report['repeat']} rounds",
        "",
        "Per stream opened and closed (CPU µs; x none: workers and Redis, against no member)",
        "",
        markdown_table(STREAM_HEADERS, stream_rows(report)),
        "",
        f"Per presence() call ({report['calls']} calls, beside as many no-op calls)",
        "",
        markdown_table(CALL_HEADERS, call_rows(report)),
    ]
    for (broker, max_members, kind, streams), row in medians(report).items():
        if broker == "redis" and kind != "none" and max_members == LISTED:
            lines.append(
                f"\nredis, {streams:,} streams, {LABELS[kind]}: {row['open_scripts']:,.0f} "
                f"scripts (round trips of presence writes) while they opened, "
                f"{row['close_scripts']:,.0f} while they closed (the nudge's publish included)"
            )
        if kind == "events" and row["join_deliveries"]:
            members = medians(report).get((broker, LISTED, "members", streams))
            extra = row["open_cpu_us"] - (members["open_cpu_us"] if members else 0.0)
            lines.append(
                f"\n{broker}, {streams:,} members with events: {row['join_deliveries']:,.0f} "
                f"join deliveries, {extra * streams / row['join_deliveries']:.1f} µs of worker "
                "CPU each (the events phase's open CPU less the members phase's)"
            )
    return "\n".join(lines)


def write_tables(report: dict[str, t.Any], directory: Path) -> None:
    """``presence.csv`` (opens and closes) and ``presence_calls.csv`` (presence() calls)."""
    import csv

    directory.mkdir(parents=True, exist_ok=True)
    for name, headers, rows in (
        ("presence.csv", STREAM_HEADERS, stream_rows(report)),
        ("presence_calls.csv", CALL_HEADERS, call_rows(report)),
    ):
        with (directory / name).open("w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(headers)
            writer.writerows(rows)


if __name__ == "__main__":
    raise SystemExit(main())
