"""Secrets never leave: broker passwords are masked in every error, log line and CLI output.

docs/security.rst ("Secrets") states the rule: a password in a broker URL, in any form redis-py
or libpq accepts (user information, ``?password=``, ``?sslpassword=``, Sentinel and Cluster host
lists, several PostgreSQL hosts) and in malformed
URLs (a mistyped scheme, no ``://``, an unencoded ``/``, ``?`` or ``#`` in the password), never
reaches a message, a log line or the command line; invalid database numbers and malformed URLs
are configuration errors that name the key.
"""

from __future__ import annotations

import logging
import typing as t
import urllib.parse

import pytest
from flask import Flask
from hypothesis import example
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from flask_ssecors import Publisher
from flask_ssecors import SSECors
from flask_ssecors._cli import ssecors
from flask_ssecors._config import read_settings
from flask_ssecors._urls import parse_url
from flask_ssecors._urls import redact
from flask_ssecors.exceptions import ConfigError

ORIGINS = ["https://app.example.com"]
#: Starts every generated password: its appearance anywhere in an output is a leak.
MARK = "Pw9x"

FORMS = [
    "redis://user:{raw}@cache.internal:6379/0",
    "redis://:{enc}@cache.internal:6379/0",
    "redis://:{raw}@cache.internal/0",
    "rediss://user:{enc}@cache.internal:6380/1",
    "unix:///run/redis.sock?db=0&password={enc}",
    "redis://cache.internal:6379/0?password={enc}",
    "redis+sentinel://:{raw}@s1:26379,s2:26379/mymaster",
    "redis+sentinel://u:{enc}@s1:26379/mymaster/2",
    "redis+cluster://:{raw}@n1:7000,n2:7001",
    # Mistyped or malformed: they must be refused without quoting the password.
    "redis-sentinel://:{raw}@s1:26379/mymaster",
    "sentinel://:{raw}@s1:26379/mymaster",
    "http://:{raw}@cache.internal:6379/0",
    ":{raw}@cache.internal:6379/0",
    "user:{raw}@cache.internal:6379",
    "redis//:{raw}@cache.internal:6379",
    "redis://:{raw}@cache.internal:notaport/0",
    "redis://:{raw}@cache.internal:6379/notadb",
    "redis+cluster://:{raw}@n1",
    "redis+sentinel://:{raw}@s1:26379",
    # PostgreSQL (libpq's URIs), well-formed...
    "postgresql://app:{raw}@db.internal:5432/app",
    "postgres://app:{enc}@db.internal/app?sslmode=require",
    "postgresql://app@db1:5432,db2:5433/app?password={enc}&target_session_attrs=read-write",
    "postgresql:///app?host=/var/run/postgresql&password={enc}",
    "postgresql://app:{enc}@db.internal/app?sslpassword={enc}&sslmode=verify-full",
    # ... and refused, with the password in the URL.
    "postgresql://app:{raw}@db.internal:notaport/app",
    "postgresql://app:{raw}@db.internal/app?sslmod=require",
    "postgresql://app:{raw}@db.internal/app?sslmode=sometimes",
    "postgresql://app:{raw}@db1,db2/app?port=1,2,3",
    "postgresql://app:{raw}@db.internal/app?connect_timeout=soon",
    "postgresql://app:{raw}@db.internal/app?replication=database",
    "postgresql://app@db.internal/app?password={enc}&sslmode=sometimes",
    "postgresql://app@db.internal/app?password={enc}&bogus=1",
    "postgres//app:{raw}@db.internal/app",
    "postgresq://app:{raw}@db.internal/app",
    "app:{raw}@db.internal:5432/app",
]

passwords = st.builds(
    lambda tail: MARK + tail,
    st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters="@"),
        max_size=16,
    ),
)


def leaks(text: str, password: str) -> bool:
    encoded = urllib.parse.quote(password, safe="")
    return MARK in text or password in text or encoded in text


def url_for(form: str, password: str) -> str:
    return form.format(raw=password, enc=urllib.parse.quote(password, safe=""))


@settings(max_examples=60, deadline=None)
@given(password=passwords, form=st.sampled_from(FORMS))
@example(password=MARK + "a/b#c?d", form="redis://:{raw}@cache.internal:6379/0")
@example(password=MARK + "a/b", form="redis+sentinel://:{raw}@s1:26379/mymaster")
@example(password=MARK + "a/b#c?d", form="postgresql://app:{raw}@db.internal:5432/app")
@example(password=MARK + "a:b&c=d", form="postgresql://app:{raw}@db.internal/app?sslmod=require")
def test_no_configuration_error_or_masked_url_shows_the_password(form: str, password: str) -> None:
    url = url_for(form, password)
    assert not leaks(redact(url), password)
    try:
        read_settings({"SSECORS_ALLOWED_ORIGINS": ORIGINS, "SSECORS_BROKER_URL": url})
    except ConfigError as error:
        assert not leaks(str(error), password)
        assert not leaks(repr(error.issues), password)
        (issue,) = error.issues
        assert issue.key == "SSECORS_BROKER_URL"
    try:
        parse_url(url)
    except ValueError as error:
        assert not leaks(str(error), password)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis://cache.internal/notadb", "not a number"),
        ("redis://cache.internal:6379/0/1", "database number"),
        ("redis://cache.internal:6379/0?db=x", "not a number"),
        ("redis://cache.internal:port/0", "not host:port"),
        ("redis://:pa/ss@cache.internal/0", "percent-encode"),
        ("redis://:pa#ss@cache.internal/0", "percent-encode"),
        ("redis-sentinel://s1:26379/svc", "unknown scheme"),
        ("cache.internal:6379", "must be a URL"),
        ("unix://", "socket path"),
    ],
)
def test_malformed_urls_are_configuration_errors(url: str, reason: str) -> None:
    """Regression: ``redis://host/notadb`` was accepted (redis-py quietly uses database 0)
    and an unencoded ``/`` in a password gave redis-py's raw ``ValueError`` at start."""
    with pytest.raises(ConfigError) as info:
        read_settings({"SSECORS_ALLOWED_ORIGINS": ORIGINS, "SSECORS_BROKER_URL": url})
    (issue,) = info.value.issues
    assert issue.key == "SSECORS_BROKER_URL"
    assert reason in issue.reason
    assert "pa" not in str(issue.value).replace("password", "")


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:s3cret@h:1/0", "redis://:***@h:1/0"),
        ("redis://user:s3cret@h:1/0", "redis://user:***@h:1/0"),
        ("redis://s3cret@h:1/0", "redis://***@h:1/0"),
        ("unix:///r.sock?db=0&password=s3cret", "unix:///r.sock?db=0&password=***"),
        ("redis://h/0?sentinel_password=s3cret&x=1", "redis://h/0?sentinel_password=***&x=1"),
        ("redis+cluster://u:s3cret@h:1,h:2", "redis+cluster://u:***@h:1,h:2"),
        ("u:s3cret@h:6379", "u:***@h:6379"),
        ("redis://:s3/cr#et@h", "redis://:***@h"),
        ("redis://h:1/0", "redis://h:1/0"),
        ("postgresql://app:s3cret@db/app", "postgresql://app:***@db/app"),
        (
            "postgresql://db/app?password=s3cret&sslmode=require",
            "postgresql://db/app?password=***&sslmode=require",
        ),
        ("postgres://app:s3/cr#et@db/app", "postgres://app:***@db/app"),
    ],
)
def test_redact(url: str, masked: str) -> None:
    assert redact(url) == masked


def test_a_password_in_the_query_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    address = parse_url("unix:///run/redis.sock?db=2&password=s3cret")
    assert (address.path, address.db, address.password) == ("/run/redis.sock", 2, "s3cret")
    assert "s3cret" not in repr(address)


def test_publisher_errors_mask_the_password() -> None:
    for url in (
        "memory://",
        "sentinel://:Pw9xsecret@s1:1/svc",
        "redis://:Pw9xsecret@h/x",
        "postgresql://app:Pw9xsecret@db/app?sslmod=require",
        "postgresql://app@db/app?password=Pw9xsecret&sslmode=x",
    ):
        with pytest.raises(ConfigError) as info:
            Publisher(url)
        assert MARK not in str(info.value)


def test_routes_mask_a_query_password(make_app: t.Callable[..., Flask]) -> None:
    """Regression: ``?password=`` (redis-py's form for ``unix://``) was shown as is."""
    app = make_app(SSECORS_BROKER_URL=f"unix:///tmp/none.sock?password={MARK}secret")
    sse = SSECors(app)

    @app.get("/events")
    @sse.stream()
    def events() -> t.Any:
        return iter(())

    result = app.test_cli_runner().invoke(ssecors, ["routes"])
    assert result.exit_code == 0, result.output
    assert MARK not in result.output
    assert "password=***" in result.output


def test_a_bad_url_logs_nothing_secret(caplog: pytest.LogCaptureFixture) -> None:
    app = Flask(__name__)
    app.config.update(
        SSECORS_ALLOWED_ORIGINS=ORIGINS, SSECORS_BROKER_URL=f"redis-sentinel://:{MARK}x@h:1/s"
    )
    with caplog.at_level(logging.DEBUG), pytest.raises(ConfigError) as info:
        SSECors(app)
    assert MARK not in str(info.value) and MARK not in caplog.text
