"""``check-broker``'s judgement of a node: pure code, fed the facts a node reports."""

from __future__ import annotations

import typing as t

import pytest

from flask_ssecors.checker._broker_check import _judge


def report_of(version: str) -> dict[str, t.Any]:
    return {
        "problems": [],
        "nodes": [
            {
                "address": "127.0.0.1:6379",
                "version": version,
                "role": "primary",
                "connected_replicas": 1,
                "aof": True,
                "save": "",
                "maxmemory": 0,
                "maxmemory_policy": "noeviction",
            }
        ],
    }


@pytest.mark.parametrize("version", ["6.2.14", "5.0.7", None])
def test_a_redis_without_sharded_pub_sub_is_a_problem(version: str | None) -> None:
    report = report_of(t.cast(str, version))
    _judge(report, 0)
    assert len(report["problems"]) == 1
    assert "needs Redis 7.0 or later" in report["problems"][0]


@pytest.mark.parametrize("version", ["7.0.15", "7.2.4", "8.0.0"])
def test_redis_7_and_later_pass(version: str) -> None:
    report = report_of(version)
    _judge(report, 0)
    assert report["problems"] == []
