"""A real PostgreSQL server for the tests: Debian's ``postgresql`` package, ``initdb`` and
``postgres`` in a temporary directory, on a free loopback port, stopped by PID.

PostgreSQL refuses to run as root: when the tests run as root (CI), the server runs as the
``postgres`` user that the package creates (the child process itself switches user, so its
PID is the server's). Password authentication over TCP, so broker URLs carry a password as
users' do.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import typing as t
from pathlib import Path

import pytest

from tests.support.servers import free_port
from tests.support.servers import IN_CI
from tests.support.servers import stop
from tests.support.servers import wait_for_port

USER: t.Final = "ssecors"
PASSWORD: t.Final = "s3cret-pg"
DATABASE: t.Final = "ssecors"


def _binaries() -> Path:
    """The newest installed PostgreSQL's ``bin`` directory."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"),
        key=lambda p: int(Path(p).parts[-3]),
    )
    if not found:
        message = "PostgreSQL is not installed (apt-get install postgresql); run `make system-deps`"
        if IN_CI:
            pytest.fail(f"required in CI: {message}", pytrace=False)
        pytest.skip(message)
    return Path(found[-1]).parent


class PostgresServer:
    """A PostgreSQL server of its own; ``url`` is a ``postgresql://`` URL with a password."""

    def __init__(self, *, settings: t.Mapping[str, str] | None = None) -> None:
        self.bin = _binaries()
        self.port = free_port()
        self.settings = dict(settings or {})
        self.directory: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{DATABASE}"
        self._as: dict[str, t.Any] = {}
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            self._as = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    @property
    def data(self) -> Path:
        assert self.directory is not None
        return self.directory / "data"

    def start(self) -> t.Self:
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="ssecors-pg-"))
            if self._as:
                os.chown(self.directory, self._as["user"], self._as["group"])
            password_file = self.directory / "pw"
            password_file.write_text(PASSWORD)
            if self._as:
                os.chown(password_file, self._as["user"], self._as["group"])
            subprocess.run(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    USER,
                    f"--pwfile={password_file}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                **self._as,
            )
            fresh = True
        else:
            fresh = False
        self._launch()
        if fresh:
            self._create_database()
        return self

    def _launch(self) -> None:
        assert self.directory is not None
        args = [
            str(self.bin / "postgres"),
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-k",
            str(self.directory),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "max_connections=300",
            "-c",
            "shared_buffers=32MB",
        ]
        for name, value in self.settings.items():
            args += ["-c", f"{name}={value}"]
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **self._as
        )
        try:
            wait_for_port(self.port, self.process, timeout=30)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        """The port opens before the server accepts sessions (during recovery, say)."""
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.admin_url("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def admin_url(self, database: str = DATABASE) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def _create_database(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url("postgres"), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {DATABASE}")

    def kill(self) -> None:
        """SIGKILL the postmaster (its backends notice and exit); the data stays."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
            # Backends of a killed postmaster exit once they notice; wait for the port.
            deadline = time.monotonic() + 20
            while _port_in_use(self.port) and time.monotonic() < deadline:
                time.sleep(0.1)

    def restart(self) -> None:
        """Start again on the same port and data (after :meth:`kill` or :meth:`stop_server`)."""
        pid_file = self.data / "postmaster.pid"
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()
        self._launch()

    def stop_server(self, sig: int = signal.SIGINT) -> None:
        """Stop the server (SIGINT: fast shutdown) and keep the data."""
        if self.process is not None:
            stop(self.process, sig, timeout=20)

    def stop(self, sig: int = signal.SIGINT) -> None:
        self.stop_server(sig)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def __enter__(self) -> t.Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _port_in_use(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0
