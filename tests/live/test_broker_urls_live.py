"""Broker URLs against real Redis servers: SSECORS_BROKER_MIN_REPLICAS against one server, and
``flask ssecors check-broker`` (the URL parsing itself is in tests/unit/test_broker_urls.py)."""

from __future__ import annotations

import json
import time
import typing as t

import pytest
from flask import Flask

from flask_ssecors import Event
from flask_ssecors import Publisher
from flask_ssecors import SSECors
from flask_ssecors._cli import ssecors
from flask_ssecors.exceptions import BrokerUnavailable
from tests.support.servers import RedisServer

ORIGINS = ["https://app.example.com"]


@pytest.mark.redis
def test_min_replicas_without_a_replica_raises_within_the_timeout() -> None:
    """The event is stored (and delivered), but not acknowledged: publish says so in time."""
    with RedisServer() as server:
        app = Flask(__name__)
        app.config.update(
            SSECORS_ALLOWED_ORIGINS=ORIGINS,
            SSECORS_BROKER_URL=server.url,
            SSECORS_BROKER_MIN_REPLICAS=1,
            SSECORS_BROKER_TIMEOUT=0.5,
        )
        sse = SSECors(app)
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable, match="0 of the 1 replicas"):
            sse.publish("c", Event("x"))
        assert time.monotonic() - started < 1.5
        publisher = Publisher(server.url, min_replicas=1, timeout=0.5)
        with pytest.raises(BrokerUnavailable, match="replicas"):
            publisher.publish("c", Event("y"))
        publisher.close()
        sse.broker.close()


@pytest.mark.redis
def test_check_broker_reports_one_server(tmp_path: t.Any) -> None:
    with RedisServer() as server:
        app = Flask(__name__)
        app.config.update(SSECORS_ALLOWED_ORIGINS=ORIGINS, SSECORS_BROKER_URL=server.url)
        SSECors(app)
        result = app.test_cli_runner().invoke(
            ssecors, ["check-broker", "--json", "--channel", "room:1"]
        )
        report = json.loads(result.stdout)
        assert report["kind"] == "single"
        (node,) = report["nodes"]
        assert node["role"] == "primary" and node["rtt_ms"] >= 0
        assert node["maxmemory_policy"] == "noeviction"
        assert any("no persistence" in problem for problem in report["problems"])
        assert result.exit_code == 1  # the test server runs without persistence
        assert (
            report["channel"]["keys"][0]
            == "ssecors:{s" + str(report["channel"]["shard"]) + "}:c:room:1"
        )
        text = app.test_cli_runner().invoke(ssecors, ["check-broker"])
        assert "primary, Redis" in text.stdout
