"""Secrets never leave, against a real password-protected Redis with a replica: ``flask ssecors
check-broker`` authenticates to every node and shows the password nowhere (the rule, and the
tests that need no server, are in tests/unit/test_secrets.py)."""

from __future__ import annotations

import json
import typing as t
import urllib.parse

import pytest
from flask import Flask

from flask_ssecors import SSECors
from flask_ssecors._cli import ssecors
from tests.support.servers import RedisServer
from tests.unit.test_secrets import leaks
from tests.unit.test_secrets import MARK

ORIGINS = ["https://app.example.com"]


@pytest.mark.redis
def test_check_broker_uses_the_password_for_replicas_and_shows_it_nowhere(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Regression: check-broker reached the replicas of a password-protected Redis without
    the password, reported them unreachable and exited 1; and ``?password=`` was printed."""
    secret = f"{MARK}replica/secret"
    password = ["--requirepass", secret, "--masterauth", secret]
    with RedisServer(extra_args=password) as primary:
        replica_args = [*password, "--replicaof", "127.0.0.1", str(primary.port)]
        with RedisServer(extra_args=replica_args):
            url = f"redis://127.0.0.1:{primary.port}/0?password={urllib.parse.quote(secret)}"
            app = Flask(__name__)
            app.config.update(SSECORS_ALLOWED_ORIGINS=ORIGINS, SSECORS_BROKER_URL=url)
            SSECors(app)
            runner = app.test_cli_runner()
            report = _wait_for_replica(runner)
            assert [node.get("error") for node in report["nodes"]] == [None, None]
            assert [node["role"] for node in report["nodes"]] == ["primary", "replica"]
            assert not any("unreachable" in p or "auth" in p.lower() for p in report["problems"])
            assert "password=***" in report["url"]
            text = runner.invoke(ssecors, ["check-broker"])
            for output in (json.dumps(report), text.output, caplog.text):
                assert not leaks(output, secret)


def _wait_for_replica(runner: t.Any) -> dict[str, t.Any]:
    """check-broker's report once the primary lists its replica (it connects within ~1 s)."""
    import time

    deadline = time.monotonic() + 15
    while True:
        result = runner.invoke(ssecors, ["check-broker", "--json"])
        report: dict[str, t.Any] = json.loads(result.stdout)
        if len(report["nodes"]) == 2 or time.monotonic() > deadline:
            return report
        time.sleep(0.2)
