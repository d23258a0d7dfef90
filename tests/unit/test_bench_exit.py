"""``python -m bench`` (and so ``make bench``) cannot pass silently: a run that produced no
figures makes it exit 1 and say which one failed and why, on stdout (before, a failed row was
printed as ``failed`` and the exit status was 0)."""

from __future__ import annotations

import importlib
import typing as t
from pathlib import Path

import pytest

# Imported by name: the benchmarks are not type-checked with the package and the tests.
bench_main: t.Any = importlib.import_module("bench.__main__")
streams: t.Any = importlib.import_module("bench.streams")
peers: t.Any = importlib.import_module("bench.peers")


def result(*oks: bool) -> dict[str, t.Any]:
    runs = [
        {
            "app": f"app{n}",
            "streams": 10000,
            "ok": ok,
            "error": None if ok else "Failure: the app never counted every stream as subscribed",
            "server_log": f"bench/results/logs/app{n}.log",
        }
        for n, ok in enumerate(oks)
    ]
    return {"streams": {"runs": runs}}


def test_failures_name_each_failed_run_and_why() -> None:
    assert bench_main.failures(result(True, True)) == []
    (line,) = bench_main.failures(result(True, False))
    assert line.startswith("app1 x 10000: Failure: the app never counted every stream")
    assert "bench/results/logs/app1.log" in line


def test_a_failed_run_makes_the_benchmark_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole of ``main`` runs; only the stream runs themselves are stood in for."""
    monkeypatch.setattr(bench_main, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(bench_main, "ROOT", tmp_path)
    monkeypatch.setattr(streams, "run", lambda settings: _stream_result(False))
    monkeypatch.setattr(streams, "to_markdown", lambda result: "table")
    monkeypatch.setattr(bench_main.report, "markdown", lambda saved, path: "report")
    monkeypatch.setattr(bench_main.plots, "draw", lambda saved, directory: [])
    assert bench_main.main(["--only", "streams", "--sizes", "10"]) == 1
    assert "FAILED" in capsys.readouterr().out
    monkeypatch.setattr(streams, "run", lambda settings: _stream_result(True))
    assert bench_main.main(["--only", "streams", "--sizes", "10"]) == 0


def _stream_result(ok: bool) -> t.Any:
    return result(ok)["streams"]


def test_servers_get_the_connections_the_docs_say() -> None:
    """The default SSECORS_MAX_STREAMS is 90 % of worker_connections: the bench sizes gunicorn
    so that every stream of the run fits, as docs/deployment.rst tells users to."""
    for name in peers.APPS:
        spec = peers.SPECS[name]
        if spec.server == "uvicorn":
            continue
        argv = peers.server_command(spec, 8000, 10000, "bench/gunicorn_conf.py")
        connections = int(argv[argv.index("--worker-connections") + 1])
        assert int(connections * 0.9) >= 10000
