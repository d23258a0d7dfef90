"""The shipped systemd unit (example_app/deploy/flask-ssecors-demo.service) is well-formed and
agrees with the gunicorn configuration it starts: a deployment example beyond gunicorn that the
suite checks rather than merely shows (docs/deployment.rst, "Running it as a service")."""

from __future__ import annotations

import configparser
import runpy
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "example_app" / "deploy" / "flask-ssecors-demo.service"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def test_the_unit_has_the_sections_and_keys_systemd_needs() -> None:
    parsed = unit()
    assert parsed.sections() == ["Unit", "Service", "Install"]
    service = parsed["Service"]
    for key in ("ExecStart", "WorkingDirectory", "User", "KillSignal", "TimeoutStopSec"):
        assert service.get(key), key
    assert parsed["Install"]["WantedBy"] == "multi-user.target"
    exec_start = shlex.split(service["ExecStart"])
    assert exec_start[0].startswith("/") and exec_start[0].endswith("/bin/gunicorn")
    assert exec_start[1:] == ["-c", "example_app/gunicorn.conf.py"]
    assert service["KillMode"] == "mixed"  # SIGTERM to gunicorn, which stops its workers


def test_the_unit_agrees_with_the_gunicorn_configuration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = unit()["Service"]
    monkeypatch.setenv("SECRET_KEY", "test")  # the configuration would draw one otherwise
    config = runpy.run_path(str(ROOT / "example_app" / "gunicorn.conf.py"))
    assert config["worker_class"] == "gevent"
    assert int(service["LimitNOFILE"]) > config["worker_connections"]
    # Streams end within graceful_timeout; systemd must not kill gunicorn before that.
    assert int(service["TimeoutStopSec"]) > config["graceful_timeout"]
    assert service["KillSignal"] == "SIGTERM"
