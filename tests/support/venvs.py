"""Fresh virtual environments, a clean copy of the checkout, and the README's gunicorn command
served from them: what a new user gets, not the development ``.venv``.

Every environment and server is started by a test and removed or stopped (by PID) by it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import typing as t
from pathlib import Path

from .servers import ROOT
from .servers import stop
from .servers import wait_for_port

#: What a copy of the checkout leaves out: environments, caches and build output.
_NOT_SOURCE: t.Final = shutil.ignore_patterns(
    ".git",
    ".venv*",
    ".tox",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "*.pyc",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "_build",
    "results",
    "test-artifacts",
)


def copy_checkout(dest: Path) -> Path:
    """Copy the source tree (no environments, caches or build output) to ``dest``, so builds
    and installs never write into the checkout."""
    shutil.copytree(ROOT, dest, ignore=_NOT_SOURCE)
    return dest


class FreshVenv:
    """A new virtual environment at ``path``, with nothing of the development ``.venv``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.bin = path / "bin"
        subprocess.run(
            [sys.executable, "-m", "venv", str(path)], check=True, capture_output=True, timeout=120
        )
        inherited = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("FLASK_", "GUNICORN_", "PYTHON", "VIRTUAL_ENV", "SSECORS_"))
        }
        #: The environment of a shell where this venv is active (``. bin/activate``).
        self.env = {
            **inherited,
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
            "VIRTUAL_ENV": str(path),
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PYTHONUNBUFFERED": "1",
        }

    def program(self, name: str) -> str:
        """The path of ``name`` as the active venv's shell finds it."""
        found = shutil.which(name, path=self.env["PATH"])
        if found is None:
            raise FileNotFoundError(f"{name} is not installed in {self.path} nor on PATH")
        return found

    def run(
        self,
        argv: t.Sequence[str],
        *,
        cwd: Path,
        timeout: float = 120,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as typed into a shell where this venv is active; never raises for a
        non-zero exit (tests assert on it with the output)."""
        return subprocess.run(
            [self.program(argv[0]), *argv[1:]],
            cwd=cwd,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def python(self, code: str, *, cwd: Path) -> str:
        """Run ``code`` with this venv's Python; return its stdout, stripped."""
        result = self.run(["python", "-c", code], cwd=cwd)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def gunicorn_bind_args(venv: FreshVenv, port: int, *, cwd: Path) -> str:
    """``GUNICORN_CMD_ARGS`` that bind the command to ``127.0.0.1:port``, leaving the command
    itself as the README shows it (arguments on the command line take precedence, so the
    README's command must not bind an address itself).

    gunicorn >= 25 also opens a control socket at one fixed path per user, which servers started
    side by side would take from each other: it is turned off where it exists.
    """
    has_control = venv.python(
        "from gunicorn import config; print(hasattr(config, 'ControlSocketDisable'))", cwd=cwd
    )
    control = " --no-control-socket" if has_control == "True" else ""
    return f"--bind 127.0.0.1:{port}{control}"


@contextlib.contextmanager
def served(
    venv: FreshVenv, argv: t.Sequence[str], *, cwd: Path, port: int, log: Path
) -> t.Iterator[subprocess.Popen[bytes]]:
    """Serve ``argv`` (a gunicorn command as the README writes it) from ``cwd`` on
    ``127.0.0.1:port``; stop it, and any worker it left, by PID on the way out."""
    if {"-b", "--bind"} & set(argv) or any(arg.startswith("--bind=") for arg in argv):
        raise AssertionError(f"the command binds its own address: {argv}")
    env = {**venv.env, "GUNICORN_CMD_ARGS": gunicorn_bind_args(venv, port, cwd=cwd)}
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [venv.program(argv[0]), *argv[1:]],
            cwd=cwd,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for_port(port, process, timeout=30)
            yield process
        finally:
            stop(process, group=True)
