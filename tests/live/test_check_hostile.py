"""``ssecors-check`` against hostile servers: a report every time, in bounded memory.

Each case runs the real command line in a subprocess against a raw-socket server
(``tests/live_apps/broken_servers.py``) that sends what no well-behaved server would: lines that
never end, endless gzip streams of zeros (on the first connection or only on the reconnect),
status lines with non-ASCII digits, ids outside latin-1, terminal escape sequences. Each ends
in a failed item with its evidence or a clean pass, exit status 0 or 1 (never 2, the usage
error), valid JSON, no traceback, no raw control character on the terminal, and a peak RSS of
the auditor process (``getrusage`` in that process) under :data:`RSS_BOUND_KIB`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import typing as t

import pytest

from tests.support.servers import LiveServer
from tests.support.servers import ROOT

pytestmark = pytest.mark.live

ORIGIN = "https://app.example.com"
#: The documented bound on the auditor's memory (docs/cli.rst, "Limits"); measured peaks are
#: about 41 MiB whatever the server sends.
RSS_BOUND_KIB = 200 * 1024
#: Runs the console script's ``main`` and reports the process's own peak RSS on stderr: the
#: ``VmHWM`` of its memory map, which ``exec`` starts afresh. (``getrusage``'s ``ru_maxrss``
#: keeps the high-water mark of the process before ``exec``, here the forking test runner's.)
MEASURED = """
import atexit, sys
from flask_ssecors._cli import main

def peak():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                sys.stderr.write(f"maxrss-kib {line.split()[1]}\\n")

atexit.register(peak)
main(sys.argv[1:])
"""


@pytest.fixture
def server(broken_server: LiveServer) -> LiveServer:
    return broken_server


class Run(t.NamedTuple):
    code: int
    stdout: str
    stderr: str
    maxrss_kib: int


def run_check(url: str, *args: str) -> Run:
    command = [sys.executable, "-c", MEASURED, url, "--origin", ORIGIN, "--credentials"]
    result = subprocess.run(
        [*command, "--timeout", "2", "-q", *args],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        check=False,
    )
    measured = [line for line in result.stderr.splitlines() if line.startswith("maxrss-kib ")]
    assert len(measured) == 1, result.stderr
    rest = result.stderr.replace(measured[0] + "\n", "")
    return Run(result.returncode, result.stdout, rest, int(measured[0].split()[1]))


#: mode, failed items, warned items, evidence in the detail of the first of them (JSON form).
HOSTILE: list[tuple[str, set[str], set[str], str]] = [
    ("endless-line", {"parse"}, set(), "no line break within 256 KiB"),
    ("gzip-bomb", {"content-encoding", "parse"}, set(), '"Content-Encoding: gzip"'),
    ("endless-line-resume", {"resume"}, set(), "after resuming from 10, no line break within"),
    ("gzip-bomb-resume", {"resume"}, set(), "after resuming from 10, no line break within"),
    ("odd-status", {"status"}, set(), "illegal status line: b'HTTP/1.1 \\xc2\\xb200 OK'"),
    ("unicode-ids", set(), set(), ""),
    ("escape-headers", {"x-accel-buffering"}, set(), '"X-Accel-Buffering: no\x1b[2J"'),
    ("escape-events", set(), {"reconnect"}, "'\\x1b]0;pwned\\x0710', contains control"),
]


@pytest.mark.parametrize(("mode", "failed", "warned", "evidence"), HOSTILE)
def test_hostile_server_gets_a_report_in_bounded_memory(
    server: LiveServer, mode: str, failed: set[str], warned: set[str], evidence: str
) -> None:
    url = f"{server.url}/{mode}/events"
    result = run_check(url, "--json")
    assert result.code == (1 if failed else 0), result.stdout + result.stderr
    assert result.stderr == ""
    report = json.loads(result.stdout)
    statuses = {item["id"]: item["status"] for item in report["items"]}
    got = (
        {i for i, s in statuses.items() if s == "fail"},
        {i for i, s in statuses.items() if s == "warn"},
    )
    assert got == (failed, warned)
    flagged = [item for item in report["items"] if item["status"] != "pass"]
    if flagged:
        assert evidence in flagged[0]["detail"]
    assert result.maxrss_kib < RSS_BOUND_KIB


@pytest.mark.parametrize("mode", ["escape-headers", "escape-events", "odd-status"])
def test_human_output_escapes_what_a_terminal_would_act_on(server: LiveServer, mode: str) -> None:
    result = run_check(f"{server.url}/{mode}/events")
    assert result.code in (0, 1)
    assert "Traceback" not in result.stderr
    unsafe = [c for c in result.stdout if (ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) < 0xA0]
    assert unsafe == []
    if mode == "escape-headers":
        assert '"X-Accel-Buffering: no\\x1b[2J"' in result.stdout
    if mode == "escape-events":
        # The event names come from the body, and reach the parse item's summary.
        assert "(\\x1b[2Jtick)" in result.stdout


def test_resume_phase_reads_are_bounded_like_the_first_read(server: LiveServer) -> None:
    """Regression: the reconnect phase fed the parser without the body cap the first read had,
    so a server answering the reconnect with an endless line drove the auditor to 1.9 GB and a
    ``MemoryError`` traceback."""
    result = run_check(f"{server.url}/endless-line-resume/events", "--json")
    assert result.code == 1 and result.stderr == ""
    [resume] = [i for i in json.loads(result.stdout)["items"] if i["id"] == "resume"]
    assert resume["status"] == "fail"
    assert result.maxrss_kib < RSS_BOUND_KIB


def test_odd_status_line_is_a_failed_item_not_a_usage_error(server: LiveServer) -> None:
    """Regression: ``HTTP/1.1 ²00`` passed ``str.isdigit`` and failed ``int()``, which ended in
    "Usage ... Error: invalid literal", exit status 2, and no report."""
    result = run_check(f"{server.url}/odd-status/events")
    assert result.code == 1
    assert "Usage" not in result.stdout + result.stderr
    assert "  FAIL  status: unreadable response: not valid HTTP/1.1" in result.stdout


def test_ids_outside_latin_1_are_resumed_with_utf_8(server: LiveServer) -> None:
    """Regression: an id outside latin-1 could not be encoded into ``Last-Event-ID`` and ended
    as a usage error. Browsers send it UTF-8 encoded; so does the check, and the server
    resumes after it."""
    result = run_check(f"{server.url}/unicode-ids/events", "--json")
    assert result.code == 0
    items = {i["id"]: i for i in json.loads(result.stdout)["items"]}
    assert items["resume"]["status"] == "pass"
    assert "resuming from \u00fc\u20ac10 went on with \u00fc\u20ac11" in items["resume"]["detail"]


def test_a_body_without_line_breaks_fails_parse(server: LiveServer) -> None:
    """Regression: 1 MiB with no line break was reported "parse: 0 events ... all
    well-formed" with exit status 0."""
    result = run_check(f"{server.url}/endless-line/events", "--json")
    items = {i["id"]: i for i in json.loads(result.stdout)["items"]}
    assert items["parse"]["status"] == "fail"
    assert result.code == 1
