"""The PostgreSQL broker's tables, functions and statements, in one place.

Everything lives in one schema (``SSECORS_BROKER_SCHEMA``, ``ssecors`` by default):

``channels``
    One row per channel: its name, its generation (a random token drawn when the row is
    created, so ids from a forgotten channel or a database that lost it are told apart), its
    ``head`` (the number of its last event) and when it was last used (publishes, and the
    workers that follow it, refresh it; ``SSECORS_CHANNEL_TTL`` forgets it after).
``events``
    The events, keyed by ``(channel_id, n)``: the encoded bytes without their id, and the type.
    They are the carrier: NOTIFY only wakes the workers that follow a channel, who then read
    the rows after the last one they delivered. Each publish deletes at most
    :data:`TRIM_BATCH` rows that fell out of the backlog (bounded work, short locks).
``presence``, ``presence_announced``, ``presence_workers``
    Each worker's absolute stream count per ``(channel, member)``, the members whose join was
    announced, and each worker's deadline (see :mod:`._postgres_presence`).

``<schema>.publish(name, generation, kind, data, keep)`` does a publish in one call: it
bumps the channel's head (``INSERT ... ON CONFLICT DO UPDATE`` takes the channel row's lock
until the transaction ends, so a channel's numbers are gapless and in commit order: a
transaction that rolls back gives its number back), inserts the event, trims, and sends
``pg_notify`` (sent at commit, never for a rollback). The same call is what a transactional
publish runs on the application's own connection, whatever its driver.

Ids are ``<generation>.<n>``, like the in-memory broker's.
"""

from __future__ import annotations

import hashlib
import typing as t

from .._config import check_schema_name
from .._config import SCHEMA_NAME as SCHEMA_NAME

#: The version of the layout below; :func:`ddl` records it in ``<schema>.meta``.
SCHEMA_VERSION: t.Final = 1
#: Most rows one publish deletes from its channel's tail (retention in bounded batches).
TRIM_BATCH: t.Final = 64
#: Events kept beyond the backlog, so that a worker that reads a burst late still finds the
#: rows it was woken for (replay never goes further back than the backlog).
SLACK: t.Final = 256
#: The advisory lock key under which the schema is created (two workers starting together).
LOCK_KEY: t.Final = 0x55ECC0A5


def check_schema(name: object) -> str:
    """Return ``name`` if it can name the broker's schema (``SSECORS_BROKER_SCHEMA``'s rule,
    :func:`~flask_ssecors._config.check_schema_name`), else raise ValueError. The name is
    written quoted in every statement, so a reserved word (``user``, ``order``) works."""
    return check_schema_name(name)


def notify_channel(schema: str, channel: str) -> str:
    """The NOTIFY channel that wakes the followers of ``channel``: the schema and a hash of
    the name (names may be 512 bytes; NOTIFY channels are at most 63). Channels that share
    a hash wake each other's followers for nothing, which costs one read."""
    return f"{schema}_{hashlib.md5(channel.encode()).hexdigest()[:16]}"


def ddl(schema: str) -> str:
    """The statements that create the broker's schema; idempotent (``IF NOT EXISTS``,
    ``CREATE OR REPLACE``). What ``flask ssecors broker-sql`` prints."""
    s = check_schema(schema)
    return f"""\
CREATE SCHEMA IF NOT EXISTS "{s}";

CREATE TABLE IF NOT EXISTS "{s}".meta (
    version integer NOT NULL
);

CREATE TABLE IF NOT EXISTS "{s}".channels (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE,
    generation text NOT NULL,
    head bigint NOT NULL,
    used_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS channels_used_at ON "{s}".channels (used_at);

CREATE TABLE IF NOT EXISTS "{s}".events (
    channel_id bigint NOT NULL,
    n bigint NOT NULL,
    kind text,
    data bytea NOT NULL,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (channel_id, n)
);

CREATE TABLE IF NOT EXISTS "{s}".presence_workers (
    worker text PRIMARY KEY,
    deadline timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS "{s}".presence (
    channel text NOT NULL,
    member text NOT NULL,
    worker text NOT NULL,
    streams integer NOT NULL,
    PRIMARY KEY (channel, member, worker)
);
CREATE INDEX IF NOT EXISTS presence_worker ON "{s}".presence (worker);

CREATE TABLE IF NOT EXISTS "{s}".presence_announced (
    channel text NOT NULL,
    member text NOT NULL,
    PRIMARY KEY (channel, member)
);

CREATE OR REPLACE FUNCTION "{s}".publish(
    p_name text, p_generation text, p_kind text, p_data bytea, p_keep bigint
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    c record;
BEGIN
    INSERT INTO "{s}".channels AS ch (name, generation, head)
    VALUES (p_name, p_generation, 1)
    ON CONFLICT (name) DO UPDATE SET head = ch.head + 1, used_at = clock_timestamp()
    RETURNING ch.id, ch.generation, ch.head INTO c;
    INSERT INTO "{s}".events (channel_id, n, kind, data) VALUES (c.id, c.head, p_kind, p_data);
    IF c.head > p_keep THEN
        DELETE FROM "{s}".events
        WHERE channel_id = c.id AND n IN (
            SELECT e.n FROM "{s}".events e
            WHERE e.channel_id = c.id AND e.n <= c.head - p_keep
            ORDER BY e.n LIMIT {TRIM_BATCH}
        );
    END IF;
    PERFORM pg_notify('{s}_' || left(md5(p_name), 16), '');
    RETURN c.generation || '.' || c.head;
END
$$;

CREATE OR REPLACE FUNCTION "{s}".presence_set(
    p_channel text, p_member text, p_worker text, p_streams integer, p_announce boolean,
    p_max integer, p_generation text, p_join bytea, p_leave bytea, p_keep bigint
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    before bigint;
    after bigint;
BEGIN
    PERFORM pg_advisory_xact_lock({LOCK_KEY + 1}, hashtext(p_channel));
    SELECT coalesce(sum(streams), 0) INTO before
    FROM "{s}".presence WHERE channel = p_channel AND member = p_member;
    IF p_streams > 0 THEN
        INSERT INTO "{s}".presence (channel, member, worker, streams)
        VALUES (p_channel, p_member, p_worker, p_streams)
        ON CONFLICT (channel, member, worker) DO UPDATE SET streams = excluded.streams;
    ELSE
        DELETE FROM "{s}".presence
        WHERE channel = p_channel AND member = p_member AND worker = p_worker;
    END IF;
    SELECT coalesce(sum(streams), 0) INTO after
    FROM "{s}".presence WHERE channel = p_channel AND member = p_member;
    IF before = 0 AND after > 0 AND p_announce THEN
        IF (SELECT count(DISTINCT member) FROM "{s}".presence WHERE channel = p_channel)
                <= p_max THEN
            INSERT INTO "{s}".presence_announced (channel, member)
            VALUES (p_channel, p_member) ON CONFLICT DO NOTHING;
            PERFORM "{s}".publish(p_channel, p_generation, 'ssecors-join', p_join, p_keep);
        END IF;
    ELSIF before > 0 AND after = 0 THEN
        DELETE FROM "{s}".presence_announced WHERE channel = p_channel AND member = p_member;
        IF FOUND THEN
            PERFORM "{s}".publish(p_channel, p_generation, 'ssecors-leave', p_leave, p_keep);
        END IF;
    END IF;
END
$$;

INSERT INTO "{s}".meta (version)
SELECT {SCHEMA_VERSION} WHERE NOT EXISTS (SELECT 1 FROM "{s}".meta);
"""


class Statements:
    """The broker's statements for one schema (psycopg's ``%(name)s`` parameters)."""

    def __init__(self, schema: str) -> None:
        s = check_schema(schema)
        self.schema = s
        #: The schema's name quoted as an identifier (a reserved word works too).
        q = f'"{s}"'
        #: Whether the schema is there and of this version: ``(version,)`` or no row.
        self.version = (
            "SELECT version FROM pg_catalog.pg_namespace ns "
            f"CROSS JOIN LATERAL (SELECT max(version) AS version FROM {q}.meta) m "
            f"WHERE ns.nspname = '{s}'"
        )
        #: Whether the schema exists (before reading its tables).
        self.exists = "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %(schema)s"
        #: One publish: returns the id.
        self.publish = f"SELECT {q}.publish(%(name)s, %(generation)s, %(kind)s, %(data)s, %(keep)s)"
        #: The same, for SQLAlchemy's ``text()`` (``:name`` parameters).
        self.publish_named = f"SELECT {q}.publish(:name, :generation, :kind, :data, :keep)"
        #: Generation and head of channels, by name.
        self.heads = f"SELECT name, generation, head FROM {q}.channels WHERE name = ANY(%(names)s)"
        #: New events of several channels: rows (index, generation, head, n, kind, data, seq);
        #: a channel with none gives one row with n NULL (its head says whether it is behind).
        #: ``seq`` orders events across channels as they were inserted.
        self.read = (
            "SELECT w.i, c.generation, c.head, e.n, e.kind, e.data, e.seq "
            "FROM unnest(%(names)s::text[], %(after)s::bigint[]) WITH ORDINALITY "
            "AS w(name, after, i) "
            f"JOIN {q}.channels c ON c.name = w.name "
            "LEFT JOIN LATERAL ("
            f"SELECT ev.n, ev.kind, ev.data, ev.seq FROM {q}.events ev "
            "WHERE ev.channel_id = c.id AND ev.n > w.after ORDER BY ev.n LIMIT %(limit)s"
            ") e ON true ORDER BY w.i, e.n"
        )
        #: The same for one channel (``name``, ``after``): a plan PostgreSQL keeps.
        self.read_one = (
            "SELECT 1, c.generation, c.head, e.n, e.kind, e.data, e.seq "
            f"FROM {q}.channels c LEFT JOIN LATERAL ("
            f"SELECT ev.n, ev.kind, ev.data, ev.seq FROM {q}.events ev "
            "WHERE ev.channel_id = c.id AND ev.n > %(after)s ORDER BY ev.n LIMIT %(limit)s"
            ") e ON true WHERE c.name = %(name)s ORDER BY e.n"
        )
        #: A snapshot of one channel: rows (generation, head, first kept n, n, kind, data)
        #: for the events numbered from ``start`` to ``stop`` (at most ``limit``).
        self.snapshot = (
            "SELECT c.generation, c.head, "
            f"(SELECT min(f.n) FROM {q}.events f WHERE f.channel_id = c.id), "
            "e.n, e.kind, e.data "
            f"FROM {q}.channels c LEFT JOIN LATERAL ("
            f"SELECT ev.n, ev.kind, ev.data FROM {q}.events ev "
            "WHERE ev.channel_id = c.id AND ev.n >= %(start)s AND ev.n <= %(stop)s "
            "ORDER BY ev.n LIMIT %(limit)s"
            ") e ON true WHERE c.name = %(name)s ORDER BY e.n"
        )
        #: Mark channels in use (the channels a worker follows).
        self.touch = (
            f"UPDATE {q}.channels SET used_at = clock_timestamp() WHERE name = ANY(%(names)s)"
        )
        #: Forget up to ``limit`` channels unused for ``ttl`` seconds, with their events.
        self.forget = (
            f"WITH gone AS (DELETE FROM {q}.channels WHERE id IN ("
            f"SELECT id FROM {q}.channels "
            "WHERE used_at < clock_timestamp() - make_interval(secs => %(ttl)s) "
            "ORDER BY used_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED) RETURNING id) "
            f"DELETE FROM {q}.events WHERE channel_id IN (SELECT id FROM gone)"
        )
        #: Set one worker's stream count of a member (see :mod:`._postgres_presence`).
        self.presence_set = (
            f"SELECT {q}.presence_set(%(channel)s, %(member)s, %(worker)s, %(streams)s, "
            "%(announce)s, %(max)s, %(generation)s, %(join)s, %(leave)s, %(keep)s)"
        )
        #: Renew a worker's deadline; true when its row was (re)created.
        self.presence_renew = (
            f"INSERT INTO {q}.presence_workers AS w (worker, deadline) "
            "VALUES (%(worker)s, clock_timestamp() + make_interval(secs => %(deadline)s)) "
            "ON CONFLICT (worker) DO UPDATE SET deadline = excluded.deadline "
            "RETURNING (xmax = 0)"
        )
        #: Workers past their deadline (locked, skipping those another reaper holds).
        self.presence_dead = (
            f"SELECT worker FROM {q}.presence_workers WHERE deadline < clock_timestamp() "
            "ORDER BY deadline LIMIT 16 FOR UPDATE SKIP LOCKED"
        )
        #: Workers that hold presence rows but have no deadline (reaped or never renewed).
        self.presence_orphans = (
            f"SELECT DISTINCT p.worker FROM {q}.presence p WHERE NOT EXISTS ("
            f"SELECT 1 FROM {q}.presence_workers w WHERE w.worker = p.worker) LIMIT 16"
        )
        #: A dead worker's rows.
        self.presence_of_worker = (
            f"SELECT channel, member FROM {q}.presence WHERE worker = %(worker)s"
        )
        self.presence_forget_worker = f"DELETE FROM {q}.presence_workers WHERE worker = %(worker)s"
        #: Counts of a channel: (members, streams).
        self.presence_counts = (
            "SELECT count(DISTINCT member), coalesce(sum(streams), 0) "
            f"FROM {q}.presence WHERE channel = %(channel)s"
        )
        #: Members of a channel with their streams.
        self.presence_members = (
            f"SELECT member, sum(streams) FROM {q}.presence WHERE channel = %(channel)s "
            "GROUP BY member"
        )
