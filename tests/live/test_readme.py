"""The README's first hour, as a new user lives it (issue 14).

Everything is read from README.md itself: the install command, the quickstart's code and the
gunicorn command that serves it. The slow test installs the checkout with the README's extra
into a fresh virtual environment, writes the quickstart to ``app.py``, serves it with the
README's command, and audits every stream route with the installed ``ssecors-check``: it must
pass with no warning.

Repeat with ``.venv/bin/python -m pytest -q tests/live/test_readme.py``.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import textwrap
import typing as t
from pathlib import Path

import pytest

from tests.support import readme
from tests.support.servers import free_port
from tests.support.servers import ROOT
from tests.support.venvs import copy_checkout
from tests.support.venvs import FreshVenv
from tests.support.venvs import served

#: Every ``<converter:name>`` of a URL rule becomes this value.
SAMPLE_VALUE = "lobby"


def test_install_commands_agree_and_serve_the_quickstart() -> None:
    """The PyPI and the checkout commands install the same extras, and those extras hold what
    the quickstart's gunicorn command needs: gunicorn, and ``packaging``, which gunicorn's
    gevent worker imports but pip does not install with it."""
    install = readme.install_commands()
    assert install.pypi[:2] == ["pip", "install"]
    assert install.checkout[:2] == ["pip", "install"]
    assert readme.requirement_extras(install.checkout[-1])[1] == install.extras
    declared = readme.declared_extras()
    requirements = [line for extra in install.extras for line in declared[extra]]
    names = {re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0].lower() for line in requirements}
    assert {"gunicorn", "packaging"} <= names
    serve = readme.serve_command()
    assert serve[0] == "gunicorn"
    assert serve[serve.index("-k") + 1] == "gevent"


def test_quickstart_compiles_and_reads_last_event_id_in_the_view() -> None:
    """The ticker resumes after ``Last-Event-ID``; it must read it in the view, since a
    generator body runs after the request context is gone (and would always see None)."""
    code = readme.quickstart_code()
    compile(code, "app.py", "exec")  # a syntax error fails here, not after a slow install
    assert "last_event_id()" in code


def test_docs_quickstart_shows_the_readme_code_and_commands() -> None:
    """docs/quickstart.rst shows the same app.py and the same install and serve commands."""
    rst = (ROOT / "docs" / "quickstart.rst").read_text(encoding="utf-8")
    code = re.search(r"\.\. code-block:: python\n    :caption: app.py\n\n(.*?)\n(?=\S)", rst, re.S)
    assert code is not None, "docs/quickstart.rst has no app.py code block"
    assert textwrap.dedent(code.group(1)).strip() == readme.quickstart_code().strip()
    shown = [
        shlex.split(line.strip()[2:])
        for line in rst.splitlines()
        if line.startswith("    $ ") and "\\" not in line
    ]
    install = readme.install_commands()
    for argv in (install.pypi, install.checkout, readme.serve_command()):
        assert argv in shown


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[FreshVenv]:
    """A fresh venv with the checkout installed by the README's own checkout command, run as the
    README lays things out: the clone in ``flask-ssecors/``, the command in ``myapp/`` beside it."""
    install = readme.install_commands()
    root = tmp_path_factory.mktemp("readme")
    venv = FreshVenv(root / "venv")
    try:
        source = copy_checkout(root / "flask-ssecors")
        app_dir = root / "myapp"
        app_dir.mkdir()
        path = readme.requirement_extras(install.checkout[-1])[0]
        assert (app_dir / path).resolve() == source.resolve(), path
        result = venv.run(install.checkout, cwd=app_dir, timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
        yield venv
    finally:
        shutil.rmtree(root, ignore_errors=True)


def stream_routes(venv: FreshVenv, cwd: Path) -> list[dict[str, t.Any]]:
    """The stream routes of ``app.py``, from the installed ``flask ssecors routes --json``."""
    result = venv.run(["flask", "--app", "app", "ssecors", "routes", "--json"], cwd=cwd)
    assert result.returncode == 0, result.stderr
    return [route for route in json.loads(result.stdout) if route["kind"] == "stream"]


def sample_path(rule: str) -> str:
    return re.sub(r"<(?:[^:<>]+:)?[^:<>]+>", SAMPLE_VALUE, rule)


def allowed_origin(route: dict[str, t.Any]) -> str:
    return str(next(origin for origin in route["origins"] if "*" not in origin))


@pytest.mark.slow
@pytest.mark.live
@pytest.mark.timeout(900)
def test_quickstart_served_by_the_readme_command_passes_ssecors_check(
    installed: FreshVenv, tmp_path: Path
) -> None:
    (tmp_path / "app.py").write_text(readme.quickstart_code(), encoding="utf-8")
    routes = stream_routes(installed, tmp_path)
    assert [route["rule"] for route in routes] == ["/rooms/<room>/events", "/ticks"]
    port = free_port()
    log = tmp_path / "gunicorn.log"
    with served(installed, readme.serve_command(), cwd=tmp_path, port=port, log=log):
        # The checks run side by side: a stream without events waits for its heartbeat.
        checks: dict[str, subprocess.Popen[str]] = {}
        for route in routes:
            url = f"http://127.0.0.1:{port}{sample_path(route['rule'])}"
            argv = ["ssecors-check", url, "--origin", allowed_origin(route), "--json", "-q"]
            if route["credentials"]:
                argv.append("--credentials")
            checks[url] = subprocess.Popen(
                [installed.program(argv[0]), *argv[1:]],
                cwd=tmp_path,
                env=installed.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        outputs = {}
        try:
            for url, check in checks.items():
                outputs[url] = (*check.communicate(timeout=120), check.returncode)
        finally:
            for check in checks.values():
                if check.poll() is None:
                    check.kill()
                    check.wait()
    server_log = log.read_text(errors="replace")
    for url, (stdout, stderr, returncode) in outputs.items():
        assert stdout, f"{url}: no report; stderr:\n{stderr}\nserver log:\n{server_log}"
        report = json.loads(stdout)
        not_passed = [item for item in report["items"] if item["status"] != "pass"]
        assert not not_passed, f"{url}:\n{json.dumps(not_passed, indent=2)}\n{server_log}"
        assert (returncode, report["ok"]) == (0, True), f"{url}: {stderr}"
