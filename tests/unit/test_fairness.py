"""Per-client fairness, in process: who a client is, the default per-client stream limit, and
the warnings about a client address that clients may choose (ProxyFix with a server reached
directly). The wire versions, under gunicorn, are in tests/live/test_fairness_live.py. The rules are
stated in docs/configuration.rst (SSECORS_MAX_STREAMS_PER_CLIENT, SSECORS_CLIENT_IPV6_PREFIX)
and docs/deployment.rst ("One client cannot take a worker", "ProxyFix").
"""

from __future__ import annotations

import logging
import typing as t

import pytest
from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from flask_ssecors import _proxies
from flask_ssecors import SSECors
from flask_ssecors._clients import client_key
from flask_ssecors._clients import is_public
from flask_ssecors._config import read_settings
from flask_ssecors.exceptions import ConfigError
from tests.conftest import ALLOWED
from tests.conftest import stream_client

EVENTSOURCE = {"Origin": ALLOWED, "Accept": "text/event-stream"}


@pytest.mark.parametrize(
    ("address", "prefix", "key"),
    [
        ("192.0.2.7", 64, "192.0.2.7"),
        ("127.0.0.2", 64, "127.0.0.2"),
        ("2001:db8:1:2:aaaa::1", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", 64, "2001:db8:1:3::/64"),
        ("2001:db8:1:3::1", 48, "2001:db8:1::/48"),
        ("2001:db8:1:3::1", 128, "2001:db8:1:3::1/128"),
        ("[2001:db8::1]", 64, "2001:db8::/64"),
        ("fe80::1%eth0", 64, "fe80::/64"),
        ("::ffff:192.0.2.7", 64, "192.0.2.7"),
        ("::1", 64, "::/64"),
        ("not-an-address", 64, "not-an-address"),
        ("", 64, None),
        (None, 64, None),
    ],
)
def test_client_keys(address: str | None, prefix: int, key: str | None) -> None:
    assert client_key(address, prefix) == key


def test_a_long_peer_name_is_cut() -> None:
    assert client_key("x" * 500) == "x" * 100


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700::1", True),
        ("::ffff:8.8.8.8", True),
        ("10.0.0.1", False),
        ("192.168.1.1", False),
        ("100.64.0.1", False),
        ("127.0.0.1", False),
        ("::1", False),
        ("fd00::1", False),
        ("garbage", False),
        (None, False),
    ],
)
def test_public_addresses(address: str | None, public: bool) -> None:
    assert is_public(address) is public


def test_the_per_client_limit_has_a_default() -> None:
    settings = read_settings({"SSECORS_ALLOWED_ORIGINS": [ALLOWED]})
    assert settings.max_streams_per_client == 64
    assert settings.client_ipv6_prefix == 64
    assert (
        read_settings(
            {"SSECORS_ALLOWED_ORIGINS": [ALLOWED], "SSECORS_MAX_STREAMS_PER_CLIENT": None}
        ).max_streams_per_client
        is None
    )


@pytest.mark.parametrize("value", [0, 15, 129, "64", True, None])
def test_the_ipv6_prefix_is_validated(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        read_settings({"SSECORS_ALLOWED_ORIGINS": [ALLOWED], "SSECORS_CLIENT_IPV6_PREFIX": value})
    assert [issue.key for issue in info.value.issues] == ["SSECORS_CLIENT_IPV6_PREFIX"]


def build(make_app: t.Callable[..., Flask], **config: object) -> tuple[Flask, SSECors]:
    app = make_app(**config)
    sse = SSECors(app)

    @app.get("/events")
    @sse.stream(heartbeat=5)
    def events() -> t.Any:
        return sse.subscribe("c")

    return app, sse


def open_from(app: Flask, address: str, count: int) -> tuple[list[t.Any], int]:
    """Open ``count`` streams from ``address``; return the readers that hold a stream, and
    how many were turned away (the view did not run; a ``retry:`` hint ended the stream)."""
    client = stream_client(app)
    tracker = app.extensions["ssecors"].streams
    held, refused = [], 0
    for _ in range(count):
        before = len(tracker.streams)
        reader = client.open_stream(
            "/events", headers=EVENTSOURCE, environ_base={"REMOTE_ADDR": address}
        )
        reader.read_chunk(2)  # the opening comment: the request was answered
        if len(tracker.streams) > before:
            held.append(reader)
        else:
            assert b"retry:" in reader.read_chunk(2)
            refused += 1
            reader.close()
    return held, refused


def test_one_address_cannot_hold_more_than_the_default(make_app: t.Callable[..., Flask]) -> None:
    """Regression: without a default, one address held 900 of a worker's 1,000 connections
    and another client's stream got only ``retry:``."""
    app, sse = build(make_app)
    held, refused = open_from(app, "192.0.2.7", 70)
    others, others_refused = open_from(app, "192.0.2.8", 3)
    try:
        assert (len(held), refused) == (64, 6)
        assert (len(others), others_refused) == (3, 0)
        with app.app_context():
            assert sse.stats()["streams_refused_busy"] == 6
    finally:
        for reader in [*held, *others]:
            reader.close()


def test_one_ipv6_network_is_one_client(make_app: t.Callable[..., Flask]) -> None:
    """Regression: the limit keyed on the exact address, and an IPv6 host picks any of the
    2**64 addresses of its /64 for each connection."""
    app, _ = build(make_app, SSECORS_MAX_STREAMS_PER_CLIENT=5)
    held: list[t.Any] = []
    try:
        for n in range(1, 9):
            opened, refused = open_from(app, f"2001:db8:1:2::{n:x}", 1)
            held += opened
        assert len(held) == 5
        neighbour, refused = open_from(app, "2001:db8:1:3::1", 2)
        held += neighbour
        assert (len(neighbour), refused) == (2, 0)
    finally:
        for reader in held:
            reader.close()


def test_the_prefix_is_configurable(make_app: t.Callable[..., Flask]) -> None:
    app, _ = build(make_app, SSECORS_MAX_STREAMS_PER_CLIENT=2, SSECORS_CLIENT_IPV6_PREFIX=128)
    held: list[t.Any] = []
    try:
        for n in range(1, 4):
            opened, refused = open_from(app, f"2001:db8:1:2::{n:x}", 2)
            held += opened
            assert refused == 0
    finally:
        for reader in held:
            reader.close()


def test_a_stream_of_several_channels_counts_once(make_app: t.Callable[..., Flask]) -> None:
    """The limit counts streams (connections), not channels."""
    app = make_app(SSECORS_MAX_STREAMS_PER_CLIENT=2)
    sse = SSECors(app)

    @app.get("/many")
    @sse.stream(heartbeat=5)
    def many() -> t.Any:
        return sse.subscribe(*(f"c{n}" for n in range(8)))

    client = stream_client(app)
    readers = [
        client.open_stream("/many", headers=EVENTSOURCE, environ_base={"REMOTE_ADDR": "192.0.2.1"})
        for _ in range(2)
    ]
    for reader in readers:
        reader.read_chunk(2)
    try:
        with app.app_context():
            assert sse.subscriber_count() == 16
        busy = client.get("/many", headers=EVENTSOURCE, environ_base={"REMOTE_ADDR": "192.0.2.1"})
        assert b"retry:" in busy.get_data()
    finally:
        for reader in readers:
            reader.close()


@pytest.fixture
def fresh_warnings() -> t.Iterator[None]:
    _proxies._forget()
    yield
    _proxies._forget()


def test_proxyfix_trusting_a_public_peer_is_warned_about_once(
    make_app: t.Callable[..., Flask], caplog: pytest.LogCaptureFixture, fresh_warnings: None
) -> None:
    """A request that ProxyFix rewrote came straight from a public address: whoever sent it
    chose the address the per-client limit counts (X-Forwarded-For spoofing gave 60 streams
    against a limit of 10 in the review)."""
    app, _ = build(make_app, SSECORS_MAX_STREAMS_PER_CLIENT=10)
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # type: ignore[method-assign]
    client = stream_client(app)
    with caplog.at_level(logging.WARNING, logger="flask_ssecors"):
        for n in range(3):
            reader = client.open_stream(
                "/events",
                headers={**EVENTSOURCE, "X-Forwarded-For": f"198.51.100.{n}"},
                environ_base={"REMOTE_ADDR": "93.184.216.34"},
            )
            reader.close()
    warnings = [r for r in caplog.records if "straight from the public address" in r.getMessage()]
    assert len(warnings) == 1
    assert '"93.184.216.34"' in warnings[0].getMessage()


def test_proxyfix_behind_a_private_proxy_is_quiet(
    make_app: t.Callable[..., Flask], caplog: pytest.LogCaptureFixture, fresh_warnings: None
) -> None:
    app, _ = build(make_app)
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # type: ignore[method-assign]
    client = stream_client(app)
    with caplog.at_level(logging.WARNING, logger="flask_ssecors"):
        reader = client.open_stream(
            "/events",
            headers={**EVENTSOURCE, "X-Forwarded-For": "198.51.100.1"},
            environ_base={"REMOTE_ADDR": "10.0.0.5"},
        )
        reader.close()
    assert "ProxyFix" not in caplog.text and "X-Forwarded-For" not in caplog.text
