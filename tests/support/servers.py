"""Real servers for integration tests: the app under gunicorn -k gevent (or gevent's pywsgi) in a
subprocess, and redis-server, each on a free loopback port, each stopped by PID."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import typing as t
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_binary(name: str, path: str | None = None) -> str:
    """Return the path of a system program; fail in CI, skip elsewhere, when it is missing."""
    found = path if path and os.access(path, os.X_OK) else shutil.which(name)
    if found is None and name == "nginx" and os.access("/usr/sbin/nginx", os.X_OK):
        found = "/usr/sbin/nginx"
    if found is None:
        message = f"{name} is not installed (apt-get install {name}); run `make system-deps`"
        if IN_CI:
            pytest.fail(f"required in CI: {message}", pytrace=False)
        pytest.skip(message)
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, process: subprocess.Popen[bytes] | None, timeout: float = 20.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on port {port} within {timeout} s")


def stop(
    process: subprocess.Popen[bytes],
    sig: int = signal.SIGTERM,
    timeout: float = 10.0,
    *,
    group: bool = False,
) -> None:
    """Stop ``process`` by its PID: ``sig``, then SIGKILL after ``timeout`` seconds.

    With ``group``, the SIGKILL goes to the process group ``process`` leads (the session
    ``start_new_session=True`` made for it), so a gunicorn master that had to be killed leaves
    no orphaned worker behind. It is sent while the leader is still alive, so the group id
    cannot have been reused.
    """
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            if group:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
            process.kill()
            process.wait(5)


def _gunicorn_has_control_socket() -> bool:
    """Whether this gunicorn opens a control socket (at one fixed path unless told otherwise)."""
    try:
        from gunicorn import config
    except ImportError:
        return False
    return hasattr(config, "ControlSocketDisable")


class LiveServer:
    """An app served in a subprocess; ``url`` is its base URL."""

    def __init__(
        self,
        target: str,
        *,
        env: dict[str, str] | None = None,
        server: str = "gunicorn",  #: ``gunicorn``, ``pywsgi`` or ``flask`` (``flask run``)
        workers: int = 1,
        extra_args: t.Sequence[str] = (),
        port: int | None = None,
        log_path: Path | None = None,
        worker_class: str = "gevent",
    ) -> None:
        self.target = target
        self.worker_class = worker_class
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.url = f"http://{self.host}:{self.port}"
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.server = server
        self.workers = workers
        self.extra_args = list(extra_args)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log: t.IO[bytes] | None = None

    def command(self) -> list[str]:
        if self.server == "gunicorn":
            # gunicorn >= 25 listens on a control socket at one fixed path per user: servers
            # started side by side (tests, other sessions) would take it from each other.
            control = ["--no-control-socket"] if _gunicorn_has_control_socket() else []
            return [
                sys.executable,
                "-m",
                "gunicorn",
                "-k",
                self.worker_class,
                "-w",
                str(self.workers),
                "--worker-connections",
                "2000",
                "--graceful-timeout",
                "5",
                "-b",
                f"{self.host}:{self.port}",
                *control,
                *self.extra_args,
                self.target,
            ]
        if self.server == "flask":  # the Werkzeug development server, threaded
            return [
                sys.executable,
                "-m",
                "flask",
                "--app",
                self.target,
                "run",
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--no-reload",
            ]
        return [sys.executable, "-m", "tests.support.pywsgi_serve", self.target, str(self.port)]

    def start(self) -> t.Self:
        self._log = open(self.log_path, "wb") if self.log_path else None  # noqa: SIM115
        self.process = subprocess.Popen(
            self.command(),
            cwd=ROOT,
            env=self.env,
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT if self._log else subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_for_port(self.port, self.process)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None:
            stop(self.process, sig, group=True)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def __enter__(self) -> t.Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisServer:
    """A redis-server on a free port, stopped by PID."""

    def __init__(
        self,
        *,
        appendonly: bool = False,
        directory: Path | None = None,
        extra_args: t.Sequence[str] = (),
    ) -> None:
        self.binary = require_binary("redis-server")
        self.port = free_port()
        self.appendonly = appendonly
        self.directory = directory
        #: More ``--name value`` arguments (``--requirepass``, ``--replicaof``...).
        self.extra_args = tuple(extra_args)
        self._own_directory = False
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> t.Self:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
        ]
        if self.directory is None:
            # A directory of its own, never the checkout or a shared one: redis-server loads a
            # dump.rdb it finds there at start (a stale one once filled every test's Redis
            # with keys), and a primary writes one for a replica's full sync.
            self.directory = Path(tempfile.mkdtemp(prefix="ssecors-redis-"))
            self._own_directory = True
        args += ["--dir", str(self.directory)]
        args += self.extra_args
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(self.port, self.process)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None:
            stop(self.process, sig)
        if self._own_directory and self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> t.Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class BrokenServer(LiveServer):
    """``tests/live_apps/broken_servers.py`` (a reference server beside broken ones, for the
    auditor) in a subprocess, optionally with TLS: ``tls=(certificate, key)``."""

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        super().__init__("tests.live_apps.broken_servers")
        self.tls = tls
        if tls is not None:
            self.url = f"https://{self.host}:{self.port}"

    def command(self) -> list[str]:
        tls = [str(path) for path in self.tls] if self.tls else []
        return [sys.executable, "-m", self.target, str(self.port), *tls]


def restart_on_same_port(
    server: RedisServer, *, appendonly: bool = False, directory: Path | None = None
) -> RedisServer:
    """A new redis-server on the port ``server`` had (it must be stopped already); in a new
    empty directory unless one is given, as after a restart that lost the data."""
    again = RedisServer(appendonly=appendonly, directory=directory)
    again.port, again.url = server.port, server.url
    return again.start()


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for ``localhost`` and ``127.0.0.1`` and its key, made by ``openssl``."""
    openssl = require_binary("openssl")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
