"""Broker URLs for Sentinel and Cluster, SSECORS_BROKER_MIN_REPLICAS against one server, and
``flask ssecors check-broker`` (the failover tests with real topologies are in
tests/live/test_ha_live.py)."""

from __future__ import annotations

import typing as t

import pytest
from flask import Flask

from flask_ssecors import SSECors
from flask_ssecors._cli import ssecors
from flask_ssecors._config import read_settings
from flask_ssecors._urls import Address
from flask_ssecors._urls import parse_url
from flask_ssecors._urls import redact
from flask_ssecors.exceptions import ConfigError

ORIGINS = ["https://app.example.com"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis+sentinel://s1:26379,s2:26380/mymaster",
            Address(
                "sentinel",
                "redis+sentinel://s1:26379,s2:26380/mymaster",
                (("s1", 26379), ("s2", 26380)),
                "mymaster",
            ),
        ),
        (
            "redis+sentinel://:secret@s1:26379/svc/3",
            Address(
                "sentinel",
                "redis+sentinel://:secret@s1:26379/svc/3",
                (("s1", 26379),),
                "svc",
                3,
                None,
                "secret",
            ),
        ),
        (
            "rediss+cluster://user:pw@[::1]:7000,10.0.0.2:7001",
            Address(
                "cluster",
                "rediss+cluster://user:pw@[::1]:7000,10.0.0.2:7001",
                (("::1", 7000), ("10.0.0.2", 7001)),
                None,
                0,
                "user",
                "pw",
                tls=True,
            ),
        ),
        (
            "redis://localhost:6379/0",
            Address("single", "redis://localhost:6379/0", (("localhost", 6379),)),
        ),
    ],
)
def test_broker_urls_are_read(url: str, expected: Address) -> None:
    assert parse_url(url) == expected


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis+sentinel://s1:26379", "name the Sentinel service"),
        ("redis+sentinel://s1:26379/svc/x", "not a number"),
        ("redis+cluster://n1", "not host:port"),
        ("redis+cluster://n1:7000/0", "no path"),
        ("redis+cluster://n1:99999", "not host:port"),
        ("redis+quorum://n1:1", "unknown scheme"),
    ],
)
def test_bad_broker_urls_are_config_errors_at_start(url: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        read_settings({"SSECORS_ALLOWED_ORIGINS": ORIGINS, "SSECORS_BROKER_URL": url})
    (issue,) = info.value.issues
    assert issue.key == "SSECORS_BROKER_URL"
    assert reason in issue.reason


def test_passwords_are_masked() -> None:
    assert redact("redis+sentinel://:s3cret@h:1,h2:2/svc") == "redis+sentinel://:***@h:1,h2:2/svc"
    assert redact("redis+cluster://u:p@h:1") == "redis+cluster://u:***@h:1"
    assert redact("redis://h:1/0") == "redis://h:1/0"
    with pytest.raises(ConfigError) as info:
        read_settings(
            {"SSECORS_ALLOWED_ORIGINS": ORIGINS, "SSECORS_BROKER_URL": "redis+cluster://:pw@x"}
        )
    assert "pw" not in str(info.value)


def test_check_broker_refuses_the_memory_broker(make_app: t.Callable[..., Flask]) -> None:
    app = make_app()
    SSECors(app)
    result = app.test_cli_runner().invoke(ssecors, ["check-broker"])
    assert result.exit_code == 1
    assert "in-memory broker" in result.output


# -- PostgreSQL URLs (libpq's connection URIs) ----------------------------------------------------


@pytest.mark.parametrize(
    ("url", "hosts", "database", "user", "password", "tls", "path"),
    [
        ("postgresql://db.internal/app", (("db.internal", 5432),), "app", None, None, False, None),
        ("postgres://app:s3cret@db:6543/app", (("db", 6543),), "app", "app", "s3cret", False, None),
        (
            "postgresql://app@db1:5432,db2:5433/app?target_session_attrs=read-write",
            (("db1", 5432), ("db2", 5433)),
            "app",
            "app",
            None,
            False,
            None,
        ),
        (
            "postgresql://db1,db2:5433/app",
            (("db1", 5432), ("db2", 5433)),
            "app",
            None,
            None,
            False,
            None,
        ),
        (
            "postgresql://db1,db2/app?port=6000",
            (("db1", 6000), ("db2", 6000)),
            "app",
            None,
            None,
            False,
            None,
        ),
        ("postgresql://[::1]:5433/app", (("::1", 5433),), "app", None, None, False, None),
        (
            "postgresql:///app?host=/var/run/postgresql",
            (("/var/run/postgresql", 5432),),
            "app",
            None,
            None,
            False,
            "/var/run/postgresql",
        ),
        (
            "postgresql://%2Fvar%2Frun%2Fpostgresql:5433/app",
            (("/var/run/postgresql", 5433),),
            "app",
            None,
            None,
            False,
            "/var/run/postgresql",
        ),
        ("postgresql://", (), None, None, None, False, None),
        (
            "postgresql://u:p%40ss%2Fw@db/my%20db?sslmode=require&connect_timeout=5"
            "&application_name=worker+1",
            (("db", 5432),),
            "my db",
            "u",
            "p@ss/w",
            True,
            None,
        ),
        (
            "postgresql://db/app?user=other&password=qs3cret&dbname=real&ssl=true",
            (("db", 5432),),
            "real",
            "other",
            "qs3cret",
            True,
            None,
        ),
        ("POSTGRESQL://db/app?sslmode=verify-full", (("db", 5432),), "app", None, None, True, None),
    ],
)
def test_postgres_urls_are_read(
    url: str,
    hosts: tuple[tuple[str, int], ...],
    database: str | None,
    user: str | None,
    password: str | None,
    tls: bool,
    path: str | None,
) -> None:
    """libpq's URI form: several hosts, a socket directory (in the query or percent-encoded),
    percent-decoded parts, and query parameters that override the URI's (as libpq reads
    them)."""
    address = parse_url(url)
    assert address.kind == "postgres"
    assert (address.hosts, address.database, address.username, address.password) == (
        hosts,
        database,
        user,
        password,
    )
    assert (address.tls, address.path) == (tls, path)
    assert password is None or password not in repr(address)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (
            "postgresql://db/app?sslmod=require",
            "no connection parameter 'sslmod' (did you mean sslmode?)",
        ),
        ("postgresql://db/app?sslmode=always", "sslmode must be one of disable, allow, prefer"),
        (
            "postgresql://db/app?target_session_attrs=writable",
            "target_session_attrs must be one of",
        ),
        ("postgresql://db/app?connect_timeout=5s", "connect_timeout must be a whole number"),
        ("postgresql://db:port/app", "not a number from 1 to 65535"),
        ("postgresql://db:70000/app", "not a number from 1 to 65535"),
        ("postgresql://db/app?port=x", "not a number from 1 to 65535"),
        ("postgresql://db1,db2,db3/app?port=1,2", "2 ports for 3 hosts"),
        ("postgresql://db/app?sslmode", "name=value pairs"),
        ("postgresql://db/app?options=-c%20a=b", "second '='"),
        ("postgresql://db/app?replication=database", "replication"),
        ("postgresql://[::1/app", "IPv6"),
        ("postgresql+psycopg://db/app", "unknown scheme"),
        ("pgsql://db/app", "postgresql://"),
    ],
)
def test_bad_postgres_urls_are_config_errors_at_start(url: str, reason: str) -> None:
    """What libpq would refuse at the first connection is refused at ``init_app``."""
    with pytest.raises(ConfigError) as info:
        read_settings({"SSECORS_ALLOWED_ORIGINS": ORIGINS, "SSECORS_BROKER_URL": url})
    (issue,) = info.value.issues
    assert issue.key == "SSECORS_BROKER_URL"
    assert reason in issue.reason


def test_postgres_urls_are_accepted_as_written() -> None:
    url = "postgresql://app:s3cret@db.internal:5432/app?sslmode=verify-full&connect_timeout=5"
    settings = read_settings({"SSECORS_ALLOWED_ORIGINS": ORIGINS, "SSECORS_BROKER_URL": url})
    assert settings.broker_url == url
    assert settings.broker_schema == "ssecors"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://app:s3cret@db/app", "postgresql://app:***@db/app"),
        ("postgres://s3cret@db/app", "postgres://***@db/app"),
        # A user information without ':' may be a password (redis://s3cret@host): masked too.
        (
            "postgresql://app@db/app?sslmode=require&password=s3cret",
            "postgresql://***@db/app?sslmode=require&password=***",
        ),
        (
            "postgresql://db/app?sslpassword=s3cret&oauth_client_secret=s3cret&scram_client_key=s3cret",
            "postgresql://db/app?sslpassword=***&oauth_client_secret=***&scram_client_key=***",
        ),
        ("postgresql://app:s3/cr?et@db/app", "postgresql://app:***@db/app"),
    ],
)
def test_postgres_passwords_are_masked(url: str, masked: str) -> None:
    assert redact(url) == masked


def test_the_refusal_of_a_url_without_a_scheme_names_postgresql() -> None:
    with pytest.raises(ConfigError) as info:
        read_settings({"SSECORS_ALLOWED_ORIGINS": ORIGINS, "SSECORS_BROKER_URL": "db:5432/app"})
    assert "postgresql://" in info.value.issues[0].reason


# -- SSECORS_BROKER_SCHEMA ----------------------------------------------------------------------


@pytest.mark.parametrize("schema", ["ssecors", "_x", "tenant_42", "a" * 40])
def test_broker_schemas_accepted(schema: str) -> None:
    settings = read_settings({"SSECORS_ALLOWED_ORIGINS": ORIGINS, "SSECORS_BROKER_SCHEMA": schema})
    assert settings.broker_schema == schema


@pytest.mark.parametrize(
    "schema", ["", "Ssecors", "1st", "my-schema", "ssecors.events", '"x"', "a" * 41, None, 7]
)
def test_broker_schemas_refused(schema: object) -> None:
    with pytest.raises(ConfigError) as info:
        read_settings({"SSECORS_ALLOWED_ORIGINS": ORIGINS, "SSECORS_BROKER_SCHEMA": schema})
    (issue,) = info.value.issues
    assert issue.key == "SSECORS_BROKER_SCHEMA"
    assert "lowercase PostgreSQL identifier of at most 40 characters" in issue.reason


def test_the_schema_rule_has_one_definition() -> None:
    """The broker's SQL and the setting's check accept the same names (the SQL interpolates
    the name unquoted, and NOTIFY channels ``<schema>_<hash>`` must fit 63 bytes)."""
    from flask_ssecors._config import SCHEMA_NAME
    from flask_ssecors.brokers import _postgres_sql

    assert _postgres_sql.SCHEMA_NAME.pattern == SCHEMA_NAME.pattern
    assert len(_postgres_sql.notify_channel("a" * 40, "c")) <= 63


# -- create_broker and init_app -------------------------------------------------------------------


class _Recorder:
    """Stands in for PostgresBroker: records what it was created with."""

    made: t.ClassVar[list[tuple[str, dict[str, object]]]] = []

    def __init__(self, url: str, **options: object) -> None:
        self.made.append((url, options))

    def close(self) -> None:
        pass


def test_init_app_creates_the_postgres_broker_with_the_app_settings(
    make_app: t.Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask_ssecors.brokers import _postgres

    monkeypatch.setattr(_Recorder, "made", [])
    monkeypatch.setattr(_postgres, "PostgresBroker", _Recorder)
    url = "postgres://app:s3cret@127.0.0.1:1/app"
    app = make_app(
        SSECORS_BROKER_URL=url,
        SSECORS_BROKER_SCHEMA="tenant_a",
        SSECORS_BACKLOG=50,
        SSECORS_BROKER_TIMEOUT=1.5,
        SSECORS_CHANNEL_TTL=60.0,
        SSECORS_MAX_EVENT_SIZE=1024,
        SSECORS_PRESENCE_TTL=10.0,
        SSECORS_PRESENCE_MAX_MEMBERS=20,
    )
    sse = SSECors(app)
    assert isinstance(sse.broker, _Recorder)
    assert _Recorder.made == [
        (
            url,
            {
                "backlog": 50,
                "timeout": 1.5,
                "channel_ttl": 60.0,
                "max_event_size": 1024,
                "schema": "tenant_a",
                "presence_ttl": 10.0,
                "presence_max_members": 20,
            },
        )
    ]


def test_without_psycopg_a_postgres_url_is_a_config_error_that_says_what_to_install() -> None:
    """Simulated in a subprocess by blocking the import of psycopg."""
    import subprocess
    import sys

    code = (
        "import sys\nsys.modules['psycopg'] = None\n"
        "from flask_ssecors.brokers import create_broker\n"
        "from flask_ssecors.exceptions import ConfigError\n"
        "try:\n    create_broker('postgresql://app:Pw9xsecret@db/app', backlog=1)\n"
        "except ConfigError as error:\n    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "SSECORS_BROKER_URL" in result.stdout
    assert "flask-ssecors[postgres]" in result.stdout
    assert "Pw9xsecret" not in result.stdout


def test_the_postgres_broker_is_exported_lazily() -> None:
    import subprocess
    import sys

    code = (
        "import sys\nimport flask_ssecors.brokers as brokers\n"
        "assert 'flask_ssecors.brokers._postgres' not in sys.modules\n"
        "assert 'psycopg' not in sys.modules\n"
        "print(brokers.PostgresBroker.__name__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "PostgresBroker"
