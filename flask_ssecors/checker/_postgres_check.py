"""``flask ssecors check-broker`` for a PostgreSQL broker: whether the app's database can carry
its events.

:func:`check_postgres` connects with the broker URL (one plain, blocking psycopg connection)
and reports the server (version: 12 or later; the role; the database's encoding: UTF8), the
broker's schema (present, and its version against this flask-ssecors's), the role's rights
(to create the schema, to use it, on each of its tables and functions), whether LISTEN/NOTIFY
works on the connection (a pooler in transaction mode drops it), and a round trip: an event
published on a probe channel and read back, in a transaction that is rolled back, so nothing
is kept and nothing is delivered.
"""

from __future__ import annotations

import math
import re
import secrets
import time
import typing as t

from .._urls import parse_url
from .._urls import redact
from ..brokers._postgres_publish import PostgresPublishing
from ..brokers._postgres_sql import ddl
from ..brokers._postgres_sql import notify_channel
from ..brokers._postgres_sql import SCHEMA_VERSION
from ..brokers._postgres_sql import Statements
from ..events import Event
from ..exceptions import ChannelError

if t.TYPE_CHECKING:
    import psycopg

Report = dict[str, t.Any]

#: The oldest PostgreSQL the broker supports.
MIN_SERVER_VERSION: t.Final = 120000
#: The channel of the round trip when ``--channel`` names none.
PROBE_CHANNEL: t.Final = "ssecors:check-broker"
#: What the broker does with each of its tables (the functions run with the caller's rights).
_TABLE_PRIVILEGES: t.Final = ("SELECT", "INSERT", "UPDATE", "DELETE")
_PLAIN: t.Final = re.compile(r"CREATE TABLE IF NOT EXISTS \"?\w+\"?\.(\w+)")
_FUNCTION: t.Final = re.compile(r"CREATE OR REPLACE FUNCTION \"?\w+\"?\.(\w+)\(")


def check_postgres(
    url: str, *, schema: str, channel: str | None = None, timeout: float = 2.0
) -> Report:
    """Inspect the PostgreSQL a broker URL names; return a JSON-able report.

    :param url: the app's ``SSECORS_BROKER_URL``.
    :param schema: the app's ``SSECORS_BROKER_SCHEMA``.
    :param channel: the channel of the round trip (a probe channel by default); the report
        also names its NOTIFY channel.
    :param timeout: bound on connecting and on each statement, in seconds.
    """
    import psycopg

    secret = parse_url(url).password or ""
    report: Report = {
        "url": redact(url),
        "kind": "postgres",
        "schema": {"name": schema, "present": None, "version": None, "expected": SCHEMA_VERSION},
        "problems": [],
        "notes": [],
    }
    if channel is not None:
        report["channel"] = {"name": channel, "notify_channel": notify_channel(schema, channel)}
    try:
        connection = psycopg.connect(
            url,
            autocommit=True,
            **_defaults(url, timeout),
        )
    except (psycopg.Error, OSError) as error:
        report["problems"].append(f"cannot reach PostgreSQL: {_reason(error, secret)}")
        report["ok"] = False
        return report
    with connection:
        steps: tuple[tuple[str, t.Callable[[], None]], ...] = (
            ("server", lambda: _server(connection, report, timeout)),
            ("schema", lambda: _schema(connection, report)),
            ("privileges", lambda: _privileges(connection, report)),
            ("listen", lambda: _listen(connection, report, timeout)),
            ("round trip", lambda: _round_trip(connection, report, channel or PROBE_CHANNEL)),
        )
        for name, step in steps:
            try:
                step()
            except (psycopg.Error, OSError) as error:
                report["problems"].append(f"{name}: {_reason(error, secret)}")
                if connection.closed or connection.broken:
                    break
    judge(report)
    report["ok"] = not report["problems"]
    return report


def _defaults(url: str, timeout: float) -> dict[str, t.Any]:
    import psycopg.conninfo

    given = psycopg.conninfo.conninfo_to_dict(url)
    defaults: dict[str, t.Any] = {
        "connect_timeout": max(2, math.ceil(timeout)),
        "application_name": "ssecors-check-broker",
    }
    return {key: value for key, value in defaults.items() if key not in given}


def _reason(error: BaseException, secret: str) -> str:
    text = " ".join(str(error).split())[:300] or type(error).__name__
    return text.replace(secret, "***") if secret else text


def _server(connection: psycopg.Connection[t.Any], report: Report, timeout: float) -> None:
    connection.execute(
        "SELECT set_config('statement_timeout', %s, false)",
        (f"{max(1, math.ceil(timeout * 1000))}ms",),
    )
    started = time.perf_counter()
    connection.execute("SELECT 1")
    rtt = time.perf_counter() - started
    row = connection.execute(
        "SELECT current_setting('server_version'), current_setting('server_version_num')::int, "
        "current_user, current_database(), pg_encoding_to_char(d.encoding) "
        "FROM pg_catalog.pg_database d WHERE d.datname = current_database()"
    ).fetchone()
    assert row is not None
    info = connection.info
    report["server"] = {
        "address": f"{info.host}:{info.port}",
        "version": str(row[0]).split()[0],
        "version_num": row[1],
        "rtt_ms": round(rtt * 1000, 3),
        "user": row[2],
        "database": row[3],
        "encoding": row[4],
    }


def _schema(connection: psycopg.Connection[t.Any], report: Report) -> None:
    found = report["schema"]
    statements = Statements(found["name"])
    found["present"] = (
        connection.execute(statements.exists, {"schema": found["name"]}).fetchone() is not None
    )
    if not found["present"]:
        return
    import psycopg.errors

    try:
        meta = connection.execute("SELECT to_regclass(%s)", (f'"{found["name"]}".meta',)).fetchone()
        if meta is None or meta[0] is None:
            return
        row = connection.execute(statements.version).fetchone()
    except psycopg.errors.InsufficientPrivilege:
        found["readable"] = False  # judged with the role's rights
        return
    found["version"] = row[0] if row is not None else None


def _privileges(connection: psycopg.Connection[t.Any], report: Report) -> None:
    schema = report["schema"]["name"]
    rights: dict[str, t.Any] = {}
    report["privileges"] = rights
    row = connection.execute(
        "SELECT has_database_privilege(current_database(), 'CREATE')"
    ).fetchone()
    rights["create_in_database"] = bool(row and row[0])
    if not report["schema"]["present"]:
        return
    row = connection.execute(
        "SELECT has_schema_privilege(%(s)s, 'USAGE'), has_schema_privilege(%(s)s, 'CREATE')",
        {"s": schema},
    ).fetchone()
    assert row is not None
    rights["use_schema"], rights["create_in_schema"] = bool(row[0]), bool(row[1])
    text = ddl(schema)
    tables = _PLAIN.findall(text)
    functions = _FUNCTION.findall(text)
    granted = {
        name: {p for p in _TABLE_PRIVILEGES if has}
        for name, *flags in connection.execute(
            "SELECT c.relname, "
            + ", ".join(f"has_table_privilege(c.oid, '{p}')" for p in _TABLE_PRIVILEGES)
            + " FROM pg_catalog.pg_class c "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %(s)s AND c.relkind IN ('r', 'p')",
            {"s": schema},
        ).fetchall()
        for p, has in zip(_TABLE_PRIVILEGES, flags, strict=True)
    }
    executable = dict(
        connection.execute(
            "SELECT p.proname, bool_or(has_function_privilege(p.oid, 'EXECUTE')) "
            "FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = %(s)s GROUP BY p.proname",
            {"s": schema},
        ).fetchall()
    )
    missing: list[str] = []
    absent: list[str] = []
    for table in tables:
        if table not in granted:
            absent.append(f"table {schema}.{table}")
            continue
        needed = ("SELECT",) if table == "meta" else _TABLE_PRIVILEGES
        missing += [f"{p} on {schema}.{table}" for p in needed if p not in granted[table]]
    for function in functions:
        if function not in executable:
            absent.append(f"function {schema}.{function}")
        elif not executable[function]:
            missing.append(f"EXECUTE on {schema}.{function}")
    rights["missing"] = missing
    rights["absent"] = absent


def _listen(connection: psycopg.Connection[t.Any], report: Report, timeout: float) -> None:
    name = f"{report['schema']['name']}_check_{secrets.token_hex(4)}"
    result: dict[str, t.Any] = {"ok": False, "channel": name}
    report["listen"] = result
    connection.execute(f"LISTEN {name}")
    try:
        started = time.perf_counter()
        connection.execute("SELECT pg_notify(%s, %s)", (name, "ssecors-check"))
        for notify in connection.notifies(timeout=timeout, stop_after=1):
            if notify.channel == name:
                result["ok"] = True
                result["ms"] = round((time.perf_counter() - started) * 1000, 3)
    finally:
        connection.execute(f"UNLISTEN {name}")


def _round_trip(connection: psycopg.Connection[t.Any], report: Report, channel: str) -> None:
    """Publish with the broker's own statement and read the row back, then roll back."""
    import psycopg

    found = report["schema"]
    if not found["present"] or found["version"] != SCHEMA_VERSION:
        return
    result: dict[str, t.Any] = {"channel": channel, "ok": False}
    report["round_trip"] = result
    publishing = PostgresPublishing(schema=found["name"], backlog=1, max_event_size=None)
    try:
        params = publishing.params(channel, Event("flask ssecors check-broker", event="check"))
    except ChannelError as error:
        result["error"] = str(error)
        return
    statements = publishing.statements
    with connection.transaction() as transaction:
        started = time.perf_counter()
        row = connection.execute(statements.publish, dict(params)).fetchone()
        assert row is not None
        event_id = str(row[0])
        n = int(event_id.rpartition(".")[2])
        rows = connection.execute(
            statements.snapshot, {"name": channel, "start": n, "stop": n, "limit": 1}
        ).fetchall()
        elapsed = time.perf_counter() - started
        read = rows[0] if rows else None
        result["id"] = event_id
        result["ok"] = read is not None and bytes(read[5] or b"") == params["data"]
        result["ms"] = round(elapsed * 1000, 3)
        raise psycopg.Rollback(transaction)


def judge(report: Report) -> None:
    """The problems and notes the facts in ``report`` call for."""
    problems: list[str] = report["problems"]
    notes: list[str] = report["notes"]
    server = report.get("server")
    if server is not None:
        if server["version_num"] < MIN_SERVER_VERSION:
            problems.append(
                f"PostgreSQL {server['version']}: flask-ssecors needs PostgreSQL 12 or later."
            )
        if server["encoding"] != "UTF8":
            problems.append(
                f"the database's encoding is {server['encoding']}: channel names, members and "
                "events are UTF-8; use a database created with ENCODING 'UTF8'."
            )
    found = report["schema"]
    rights = report.get("privileges", {})
    create = "`flask ssecors broker-sql`"
    if found["present"] is False:
        if rights.get("create_in_database"):
            notes.append(
                f"the schema {found['name']} is missing: the app's broker creates it when it "
                f"starts (this role may), or create it yourself with what {create} prints."
            )
        elif "create_in_database" in rights:
            problems.append(
                f"the schema {found['name']} is missing and this role may not create it: run "
                f"what {create} prints as a role that may (the database's owner), or GRANT "
                "CREATE ON DATABASE to this one."
            )
    elif found["present"]:
        version = found["version"]
        if found.get("readable") is False:
            pass  # the missing rights below say why
        elif version is None:
            problems.append(
                f"the schema {found['name']} has no readable meta table: it is not the "
                f"broker's, was made in part, or this role may not read it; run what {create} "
                "prints as its owner, or choose another SSECORS_BROKER_SCHEMA."
            )
        elif version < found["expected"]:
            problems.append(
                f"the schema {found['name']} is at version {version}, this flask-ssecors needs "
                f"{found['expected']}: run what {create} prints as its owner."
            )
        elif version > found["expected"]:
            problems.append(
                f"the schema {found['name']} is at version {version}, newer than this "
                f"flask-ssecors's ({found['expected']}): upgrade flask-ssecors here too."
            )
        if rights.get("use_schema") is False:
            problems.append(
                f"this role may not use the schema {found['name']}: GRANT USAGE ON SCHEMA "
                f"{found['name']} to it."
            )
        if rights.get("absent"):
            problems.append(
                f"missing from the schema: {', '.join(rights['absent'])}; run what {create} "
                "prints as its owner."
            )
        if rights.get("missing"):
            problems.append(
                f"this role lacks {_grouped(rights['missing'])}: GRANT them, or run the app "
                "as the schema's owner."
            )
    listen = report.get("listen")
    if listen is not None and not listen["ok"]:
        problems.append(
            "LISTEN/NOTIFY: no notification came back on this connection, so streams would "
            "get no events live (a pooler in transaction mode, such as PgBouncer's, does not "
            "carry LISTEN: point SSECORS_BROKER_URL at the server or at a session-mode pool)."
        )
    trip = report.get("round_trip")
    if trip is not None and not trip["ok"]:
        problems.append(
            f"round trip on {trip['channel']!r}: "
            + (trip.get("error") or "the event published was not read back.")
        )


def _grouped(missing: list[str]) -> str:
    """``["SELECT on s.a", "INSERT on s.a", "SELECT on s.b"]`` as ``"SELECT, INSERT on s.a;
    SELECT on s.b"``, objects that lack the same privileges named together."""
    lacking: dict[str, list[str]] = {}
    for item in missing:
        privilege, _, name = item.partition(" on ")
        lacking.setdefault(name, []).append(privilege)
    together: dict[tuple[str, ...], list[str]] = {}
    for name, privileges in lacking.items():
        together.setdefault(tuple(privileges), []).append(name)
    return "; ".join(f"{', '.join(p)} on {', '.join(n)}" for p, n in together.items())


def to_text(report: Report) -> str:
    """The report for a terminal."""
    yes = {True: "yes", False: "no", None: "-"}
    lines = [f"broker   {report['url']} ({report['kind']})"]
    server = report.get("server")
    if server is not None:
        lines.append(
            f"server   {server['address']}: PostgreSQL {server['version']}, "
            f"{server['rtt_ms']} ms, user {server['user']}, database {server['database']}, "
            f"encoding {server['encoding']}"
        )
    found = report["schema"]
    if found["present"] is not None:
        if not found["present"]:
            state = "missing"
        elif found.get("readable") is False:
            state = "present, version unknown (this role may not read it)"
        else:
            state = f"version {found['version']} (this flask-ssecors: {found['expected']})"
        lines.append(f"schema   {found['name']}: {state}")
    rights = report.get("privileges")
    if rights is not None:
        parts = [f"create in the database: {yes[rights.get('create_in_database')]}"]
        if "use_schema" in rights:
            parts.append(f"use the schema: {yes[rights['use_schema']]}")
            parts.append(f"create in the schema: {yes[rights['create_in_schema']]}")
            lacking = rights["missing"] or rights["absent"]
            parts.append(f"tables and functions: {'some missing' if lacking else 'all granted'}")
        lines.append(f"rights   {'; '.join(parts)}")
    listen = report.get("listen")
    if listen is not None:
        said = (
            f"a notification came back in {listen['ms']} ms"
            if listen["ok"]
            else "no notification came back"
        )
        lines.append(f"listen   LISTEN/NOTIFY: {said}")
    trip = report.get("round_trip")
    if trip is not None and trip["ok"]:
        lines.append(
            f"publish  {trip['channel']!r}: id {trip['id']} written and read back in "
            f"{trip['ms']} ms, then rolled back (nothing kept, nothing delivered)"
        )
    if "channel" in report:
        lines.append(
            f"channel  {report['channel']['name']!r}: NOTIFY channel "
            f"{report['channel']['notify_channel']}"
        )
    lines += [f"note     {note}" for note in report["notes"]]
    lines += [f"warning  {problem}" for problem in report["problems"]]
    if not report["problems"]:
        lines.append("ok       nothing here loses events on its own")
    return "\n".join(lines)
