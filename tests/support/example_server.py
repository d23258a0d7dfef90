"""The example app as ``make demo`` serves it: gunicorn with ``example_app/gunicorn.conf.py``.

Started in a subprocess on two free ports (never 5000/5001), with the test-only routes enabled,
and stopped by PID. The helpers talk to the API port over 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import typing as t
import urllib.error
import urllib.request
from pathlib import Path

from .servers import free_port
from .servers import ROOT
from .servers import stop
from .servers import wait_for_port

CONFIG = ROOT / "example_app" / "gunicorn.conf.py"


def ipv6_loopback_works() -> bool:
    """Whether ``::1`` can be bound here (the gunicorn config binds it when it can)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


class ExampleServer:
    """The example app under gunicorn with gevent workers, configured as ``make demo`` does.

    :param log_path: where gunicorn's output (access log included) goes.
    :param env: extra environment (``SSECORS_*`` settings, ``EXAMPLE_TICK_SECONDS``...).
    """

    def __init__(self, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.api_port = free_port()
        self.page_port = free_port()
        while self.page_port == self.api_port:
            self.page_port = free_port()
        self.log_path = log_path
        base = {k: v for k, v in os.environ.items() if not k.startswith(("SSECORS_", "EXAMPLE_"))}
        self.env = {
            **base,
            "PYTHONUNBUFFERED": "1",
            "API_PORT": str(self.api_port),
            "PAGE_PORT": str(self.page_port),
            "EXAMPLE_TEST_HOOKS": "1",
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self._log: t.IO[bytes] | None = None

    @property
    def api_origin(self) -> str:
        return f"http://localhost:{self.api_port}"

    @property
    def page_origin(self) -> str:
        return f"http://localhost:{self.page_port}"

    @property
    def refused_origin(self) -> str:
        """The page origin on 127.0.0.1: cross-site to the API on localhost, and not allowed."""
        return f"http://127.0.0.1:{self.page_port}"

    def start(self) -> ExampleServer:
        """Start gunicorn (again, after :meth:`stop`: same ports, a new process)."""
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(CONFIG)],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(self.api_port, self.process)
            wait_for_port(self.page_port, self.process)
            self.get("/")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop gunicorn by PID: SIGINT is its quick shutdown, which does not wait for streams."""
        if self.process is not None:
            stop(self.process, signal.SIGINT)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    # -- talking to the API port ---------------------------------------------------------------

    def request(
        self, method: str, path: str, *, port: int | None = None, timeout: float = 10.0
    ) -> tuple[int, t.Any]:
        url = f"http://127.0.0.1:{port or self.api_port}{path}"
        request = urllib.request.Request(url, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.read()

    def get(self, path: str) -> t.Any:
        status, body = self.request("GET", path)
        assert status == 200, (path, status, body)
        return body

    def stats(self) -> dict[str, t.Any]:
        """What the server recorded (``GET /_test/stats``)."""
        return t.cast("dict[str, t.Any]", self.get("/_test/stats"))

    def reset_stats(self) -> None:
        assert self.request("POST", "/_test/reset")[0] == 200

    def drop_streams(self) -> dict[str, int]:
        """End every open stream on the server (``POST /_test/drop``)."""
        status, body = self.request("POST", "/_test/drop")
        assert status == 200, body
        return t.cast("dict[str, int]", body)

    def __enter__(self) -> ExampleServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
