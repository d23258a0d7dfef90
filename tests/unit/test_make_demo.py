"""``make demo`` runs the server in the recipe's own process (``exec``): stopping make by its
PID stops the server too (before, gunicorn went on serving ports 5000 and 5001). A stand-in
``gunicorn`` in a stand-in virtual environment keeps the test free of servers and network."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is as good as gone
        return stat.read().split(") ", 1)[1][0] != "Z"


def test_stopping_make_demo_stops_the_server(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    pidfile = tmp_path / "server.pid"
    gunicorn = venv / "bin" / "gunicorn"
    gunicorn.write_text(f"#!/bin/sh\necho $$ > {pidfile}\nexec sleep 120\n")
    gunicorn.chmod(0o755)
    (venv / ".installed-serve").touch()  # newer than setup.cfg: make installs nothing
    make = subprocess.Popen(
        ["make", "-s", "demo", f"VENV={venv}", "API_PORT=1", "PAGE_PORT=2"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not pidfile.exists() or not pidfile.read_text().strip():
            assert time.monotonic() < deadline, "the stand-in server did not start"
            time.sleep(0.05)
        server = int(pidfile.read_text())
        assert alive(server)
        make.send_signal(signal.SIGTERM)
        make.wait(10)
        deadline = time.monotonic() + 5
        while alive(server) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(server), "the server outlived make demo"
    finally:
        if make.poll() is None:
            make.kill()
            make.wait()
        if pidfile.exists() and pidfile.read_text().strip():
            server = int(pidfile.read_text())
            if alive(server):
                os.kill(server, signal.SIGKILL)
