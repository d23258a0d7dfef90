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
