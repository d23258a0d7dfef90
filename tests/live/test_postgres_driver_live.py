"""Groundwork for the PostgreSQL broker (issue 22): the real server the tests start, and the
driver's behaviour under gevent, which decides how the broker must talk to PostgreSQL.

- ``tests/support/postgres.py`` runs Debian's PostgreSQL (``initdb``, ``postgres``) on a free
  loopback port in a temporary directory, as the ``postgres`` user when the tests run as root,
  with password authentication; it is stopped by PID and can be SIGKILLed and restarted on
  its data.
- psycopg 3 chooses how it waits for the socket once, when it is imported: when gevent has
  patched ``select`` by then (gunicorn's gevent worker patches before it loads the app), it
  waits through ``select`` and a slow query lets every other greenlet run; imported before
  patching (or never patched) it waits in C, and a slow query blocks the whole process. Both
  are shown here, in subprocesses, so the broker's design rests on them.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import psycopg
import pytest

from tests.support.postgres import PostgresServer
from tests.support.servers import ROOT

pytestmark = [pytest.mark.live, pytest.mark.timeout(120)]

#: One greenlet runs ``pg_sleep(1)``; another counts 10 ms ticks meanwhile. Prints the ticks.
TICKS = """
import sys
{patch}
import gevent, psycopg
url = sys.argv[1]
ticks = 0
def tick():
    global ticks
    while True:
        gevent.sleep(0.01)
        ticks += 1
ticker = gevent.spawn(tick)
gevent.sleep(0.05)
before = ticks
with psycopg.connect(url) as connection:
    connection.execute("SELECT pg_sleep(1)")
print(ticks - before, psycopg.waiting.wait.__name__)
ticker.kill()
"""


def ticks_during_a_slow_query(url: str, *, patched: bool) -> tuple[int, str]:
    patch = "from gevent import monkey; monkey.patch_all()" if patched else ""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(TICKS.format(patch=patch)), url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    count, wait = result.stdout.split()
    return int(count), wait


def test_a_slow_query_lets_other_greenlets_run_once_gevent_patched(
    postgres: PostgresServer,
) -> None:
    ticks, wait = ticks_during_a_slow_query(postgres.url, patched=True)
    assert wait != "wait_c", wait
    assert ticks >= 20, f"{ticks} ticks of 10 ms during a 1 s query: the hub was blocked"


def test_without_patching_the_driver_blocks_the_hub(postgres: PostgresServer) -> None:
    """Why the broker cannot rely on the driver's own waiting outside a patched process."""
    ticks, wait = ticks_during_a_slow_query(postgres.url, patched=False)
    assert wait == "wait_c"
    assert ticks <= 1


def test_the_server_survives_sigkill_with_its_committed_data(postgres: PostgresServer) -> None:
    with psycopg.connect(postgres.url, autocommit=True) as connection:
        connection.execute("CREATE TABLE IF NOT EXISTS kept (n int)")
        connection.execute("INSERT INTO kept VALUES (42)")
    postgres.kill()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(postgres.url, connect_timeout=2).close()
    postgres.restart()
    with psycopg.connect(postgres.url) as connection:
        assert connection.execute("SELECT n FROM kept").fetchall() == [(42,)]


def test_a_wrong_password_is_refused(postgres: PostgresServer) -> None:
    wrong = postgres.url.replace(":s3cret-pg@", ":wrong@")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong, connect_timeout=5).close()
