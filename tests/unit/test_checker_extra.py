"""The auditor is a wing of its own: the extension and its ``flask`` commands load neither
``h11``, ``h2`` nor Playwright, and without the ``check`` extra the auditor's commands say what
to install (docs/cli.rst, first section)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("h11", "h2", "playwright", "flask_ssecors.checker")

PROBE = f"""
import json, sys
{{setup}}
print(json.dumps(sorted(name for name in {HEAVY!r} if name in sys.modules)))
"""


def loaded_after(setup: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(setup=setup)],
        capture_output=True,
        text=True,
        check=True,
    )
    return list(json.loads(result.stdout.splitlines()[-1]))


def test_importing_the_extension_loads_no_auditor() -> None:
    assert loaded_after("import flask_ssecors") == []


def test_the_flask_commands_entry_point_loads_no_auditor() -> None:
    setup = (
        "from importlib.metadata import entry_points\n"
        "group = [e for e in entry_points(group='flask.commands') if e.name == 'ssecors'][0]"
        ".load()\n"
        "assert sorted(group.list_commands(None)) == "
        "['broker-sql', 'check', 'check-broker', 'presence', 'publish', 'race-server', 'routes']"
    )
    assert loaded_after(setup) == []


def test_running_check_loads_the_auditor() -> None:
    setup = "from flask_ssecors._cli import _load_checker_command\n_load_checker_command('check')"
    assert loaded_after(setup) == ["flask_ssecors.checker", "h11", "h2"]


@pytest.mark.parametrize("missing", ["h11", "h2"])
@pytest.mark.parametrize(
    "argv",
    [
        ["ssecors-check", "http://127.0.0.1:9/events", "--origin", "https://a.example"],
        ["flask", "ssecors", "check", "http://127.0.0.1:9/events", "--origin", "https://a.example"],
        ["flask", "ssecors", "check-broker"],
    ],
    ids=["ssecors-check", "flask-ssecors-check", "check-broker"],
)
def test_without_the_check_extra_the_commands_say_what_to_install(
    missing: str, argv: list[str]
) -> None:
    """Simulated by blocking the import of one of the extra's packages."""
    runner = (
        "from flask_ssecors._cli import main; main(sys.argv[2:])"
        if argv[0] == "ssecors-check"
        else "from flask_ssecors._cli import ssecors; ssecors.main(sys.argv[3:], "
        "prog_name='flask ssecors')"
    )
    code = f"import sys\nsys.modules[{missing!r}] = None\n{runner}"
    result = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1, result.stderr
    assert "pip install 'flask-ssecors[check]'" in result.stderr
    assert "Traceback" not in result.stderr
