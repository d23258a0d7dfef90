"""The stream apps the bench compares, how each is served, and the Redis server some need.

Every app answers the same endpoints (see :mod:`bench.apps`) and publishes the same events, so
:mod:`bench.streams` and :mod:`bench.loadgen` drive them all alike:

========================  ============================================  ==========  ========
name                      what                                          server      workers
========================  ============================================  ==========  ========
``bare``                  Flask generator, gevent queues (the floor)    gunicorn    1
``ssecors``               flask-ssecors, memory broker                  gunicorn    1
``ssecors_redis``         flask-ssecors, Redis broker                   gunicorn    2
``flasksse``              flask-sse (Redis pub/sub) with flask-cors     gunicorn    2
``starlette``             sse-starlette with Starlette's CORS           uvicorn     1
========================  ============================================  ==========  ========

gunicorn always runs ``-k gevent``; uvicorn runs with uvloop and httptools (what
``uvicorn[standard]`` installs).
"""

from __future__ import annotations

import contextlib
import math
import shutil
import signal
import subprocess
import tempfile
import time
import typing as t

from flask_ssecors._lifecycle import STREAM_SHARE

from ._common import cpu_seconds
from ._common import free_port
from ._common import rss_kib
from ._common import wait_for_port


class AppSpec(t.NamedTuple):
    """One app and how to serve it."""

    name: str
    label: str
    target: str
    server: str = "gunicorn"  #: ``gunicorn`` (``-k gevent``) or ``uvicorn``
    workers: int = 1
    redis: bool = False  #: needs a redis-server (``BENCH_REDIS_URL``)


SPECS = {
    spec.name: spec
    for spec in (
        AppSpec("bare", "bare gevent (floor)", "bench.apps.bare:app"),
        AppSpec("ssecors", "flask-ssecors (memory)", "bench.apps.ssecors:app"),
        AppSpec(
            "ssecors_redis",
            "flask-ssecors (Redis, 2 workers)",
            "bench.apps.ssecors_redis:app",
            workers=2,
            redis=True,
        ),
        AppSpec(
            "flasksse",
            "flask-sse + flask-cors (Redis, 2 workers)",
            "bench.apps.flasksse_app:app",
            workers=2,
            redis=True,
        ),
        AppSpec(
            "starlette",
            "sse-starlette (uvicorn, 1 worker)",
            "bench.apps.starlette_app:app",
            server="uvicorn",
        ),
    )
}
#: The default comparison; the first is the floor every ratio is taken against.
APPS = ("bare", "ssecors", "ssecors_redis", "flasksse", "starlette")
#: The apps that are flask-ssecors, and the peers they are compared with.
OURS = ("ssecors", "ssecors_redis")
PEERS = ("flasksse", "starlette")


def label(name: str) -> str:
    """The human name of app ``name``."""
    spec = SPECS.get(name)
    return spec.label if spec else name


class RedisServer:
    """A throwaway ``redis-server`` on a free loopback port (no persistence), stopped by PID.

    ``maxclients`` is raised to 19,000: flask-sse holds one Redis connection per stream.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.directory = tempfile.mkdtemp(prefix="bench-redis-")

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--maxclients",
                "19000",
                # Not the working directory: redis-server loads a dump.rdb it finds there.
                "--dir",
                self.directory,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.process)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                process.wait(5)
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def server_command(spec: AppSpec, port: int, streams: int, gunicorn_conf: str) -> list[str]:
    """The command line that serves ``spec`` on ``port`` for ``streams`` concurrent streams."""
    import sys

    if spec.server == "uvicorn":
        return [
            sys.executable,
            "-m",
            "uvicorn",
            spec.target,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--backlog",
            "4096",
            "--log-level",
            "warning",
            "--no-access-log",
            "--timeout-graceful-shutdown",
            "3",
        ]
    # gunicorn >= 25 opens a control socket at one fixed path per user; servers started side by
    # side (other benches, test suites) would take it from each other.
    from gunicorn import config

    control = ["--no-control-socket"] if hasattr(config, "ControlSocketDisable") else []
    # Every worker may be asked to hold every stream: gunicorn's workers race for accepts.
    # Sized as docs/deployment.rst tells users: flask-ssecors takes 90 % of worker_connections
    # for streams by default (SSECORS_MAX_STREAMS), and the rest stays free for other requests.
    connections = math.ceil(streams / STREAM_SHARE) + 500
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        gunicorn_conf,
        "-k",
        "gevent",
        "-w",
        str(spec.workers),
        "--worker-connections",
        str(connections),
        *control,
        "-b",
        f"127.0.0.1:{port}",
        spec.target,
    ]


def wait(condition: t.Callable[[], bool], timeout: float, poll: float = 0.1) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds passed; whether it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True
