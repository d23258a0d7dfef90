"""What PostgreSQL's NOTIFY costs a listening backend for events on channels it does not follow.

``python -m bench.pg_listen`` (a few seconds). For the PostgreSQL broker's design (issue 22): a
worker could LISTEN once per followed channel (PostgreSQL then sends it only its own
notifications, but every listening backend reads the whole notification queue and checks
each entry against its list of channels) or on a few shared channels (the worker's Python
then reads and drops the others'). A server of its own (``tests/support/postgres.py``); one
connection LISTENs on 1, 1,000 and 10,000 channels in turn while another sends 3,000
notifications to channels nobody listens to and 200 to one it does; prints the listening
backend's and the notifying backend's CPU per notification (each process's CPU-time clock).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOREIGN = 3000
OWN = 200


def main() -> int:
    sys.path.insert(0, str(ROOT))
    import psycopg

    from bench._common import markdown_table
    from bench._common import process_cpu_seconds
    from tests.support.postgres import PostgresServer

    rows = []
    with PostgresServer() as server:
        for listens in (1, 1000, 10_000):
            listener = psycopg.connect(server.url, autocommit=True)
            for start in range(0, listens, 1000):
                names = range(start, min(listens, start + 1000))
                listener.execute("; ".join(f'LISTEN "c{n}"' for n in names))
            publisher = psycopg.connect(server.url, autocommit=True)
            pids = [
                t.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
                for t in (listener, publisher)
            ]
            before = [process_cpu_seconds(pid) for pid in pids]
            for n in range(FOREIGN):
                publisher.execute("SELECT pg_notify(%s, '1')", (f"x{n}",))
            for n in range(OWN):
                publisher.execute("SELECT pg_notify('c0', %s)", (str(n),))
            got = 0
            deadline = time.monotonic() + 10
            for _ in listener.notifies(timeout=5):
                got += 1
                if got == OWN or time.monotonic() > deadline:
                    break
            spent = [process_cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]
            total = FOREIGN + OWN
            rows.append(
                [
                    f"{listens:,}",
                    round(spent[0] / total * 1e6, 1),
                    round(spent[1] / total * 1e6, 1),
                    f"{got}/{OWN}",
                ]
            )
            listener.close()
            publisher.close()
    print(
        markdown_table(
            (
                "channels the backend listens on",
                "listening backend µs/notify",
                "notifying backend µs/notify",
                "own notifications received",
            ),
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
