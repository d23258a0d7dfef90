"""Helpers shared by the benchmarks: machine description, ports, /proc readings, statistics."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import platform
import resource
import socket
import statistics
import subprocess
import time
import typing as t
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the soft open-file limit to the hard limit; return the new ``(soft, hard)``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[t.Any], timeout: float = 20.0) -> None:
    """Wait until something accepts connections on ``port``.

    :raises RuntimeError: when ``process`` exits first.
    :raises TimeoutError: when nothing listens within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on port {port} within {timeout} s")


def children_of(pid: int) -> list[int]:
    """The PIDs whose parent is ``pid`` (read from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces: split after the last ")".
        fields = stat.rpartition(")")[2].split()
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def rss_kib(pid: int) -> int:
    """``VmRSS`` of ``pid`` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` (all threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # After the command name: field 3 (state) is fields[0], so utime (14) and stime (15) are
    # fields[11] and fields[12].
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def process_cpu_seconds(pid: int) -> float:
    """CPU time of process ``pid`` from its CPU-time clock (``clock_getcpuclockid``):
    nanosecond resolution, and unlike per-thread schedstat sums it keeps the time of threads
    that already exited. Falls back to :func:`cpu_seconds` (10 ms ticks)."""
    clock = ctypes.c_int()
    spec = _Timespec()
    if (
        _LIBC.clock_getcpuclockid(pid, ctypes.byref(clock)) == 0
        and _LIBC.clock_gettime(clock.value, ctypes.byref(spec)) == 0
    ):
        return float(spec.tv_sec) + float(spec.tv_nsec) / 1e9
    return cpu_seconds(pid)


def family_cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and of its children, those alive (each one's CPU-time clock) and
    those it already reaped (its ``cutime`` and ``cstime``, 10 ms ticks): a counter that only
    grows while children come and go, such as PostgreSQL's postmaster and its backends."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # cutime (16) and cstime (17): fields[13] and fields[14] (see cpu_seconds).
    total = process_cpu_seconds(pid) + (int(fields[13]) + int(fields[14])) / CLOCK_TICKS
    for child in children_of(pid):
        with contextlib.suppress(OSError):  # it exited meanwhile: counted as reaped, later
            total += process_cpu_seconds(child)
    return total


def sched_seconds(pid: int) -> float | None:
    """On-CPU time of every thread of ``pid`` from /proc schedstat (ns resolution), if readable."""
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total / 1e9


def percentile(values: t.Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile (0..1) of ``values`` by linear interpolation; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: t.Iterable[float]) -> float:
    """The median, or NaN for no values."""
    values = list(values)
    return statistics.median(values) if values else float("nan")


def ratio(ours: float, base: float) -> float:
    """``ours / base``, NaN when the base is zero or missing."""
    if not base or base != base:
        return float("nan")
    return ours / base


def markdown_table(headers: t.Sequence[str], rows: t.Iterable[t.Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table; floats are shown with sensible precision."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            if value != value:
                return "n/a"
            if abs(value) >= 100:
                return f"{value:.0f}"
            if abs(value) >= 10:
                return f"{value:.1f}"
            return f"{value:.2f}"
        return str(value)

    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git_commit() -> str:
    # Read-only: rev-parse never writes; optional locks are disabled for good measure.
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, env=env, capture_output=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.decode().strip() or "unknown"


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "loadavg": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE),
        "git_commit": _git_commit(),
        "versions": {
            name: _version(name)
            for name in ("flask", "werkzeug", "flask-cors", "gevent", "greenlet", "gunicorn")
        },
    }
