"""No test writes into the checkout: tests/conftest.py fails a run after which ``git status``
shows files it did not show before (a ``dump.rdb`` once went unnoticed this way)."""

from __future__ import annotations

import subprocess
import types
from pathlib import Path

import pytest

from tests import conftest


def test_a_run_that_writes_into_the_checkout_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "kept.txt").write_text("there before the run")
    monkeypatch.setattr(conftest, "_ROOT", tmp_path)
    monkeypatch.setattr(conftest, "_status_before", None)
    session = types.SimpleNamespace(exitstatus=pytest.ExitCode.OK)
    conftest.pytest_sessionstart(session)  # type: ignore[arg-type]
    conftest.pytest_sessionfinish(session, 0)  # type: ignore[arg-type]
    assert session.exitstatus == pytest.ExitCode.OK
    (tmp_path / "dump.rdb").write_bytes(b"REDIS")
    conftest.pytest_sessionfinish(session, 0)  # type: ignore[arg-type]
    assert session.exitstatus == pytest.ExitCode.TESTS_FAILED
    assert "?? dump.rdb" in capsys.readouterr().out
