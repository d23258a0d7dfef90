"""The sdist and the wheel, as a release would build them (issue 14).

``python -m build`` builds both from a copy of the checkout (the wheel from the unpacked sdist,
so a file missing from the sdist breaks the wheel here); ``twine check`` reads their metadata;
their contents and metadata are checked against setup.cfg and tox.ini; then the wheel, not the
checkout, is installed into a fresh virtual environment and serves the README's quickstart.

Repeat with ``.venv/bin/python -m pytest -q tests/live/test_packaging.py``.
"""

from __future__ import annotations

import configparser
import dataclasses
import email.message
import email.parser
import json
import re
import shutil
import subprocess
import sys
import tarfile
import typing as t
import zipfile
from pathlib import Path

import pytest

from flask_ssecors.events import RESET_EVENT
from tests.support import readme
from tests.support.servers import free_port
from tests.support.servers import ROOT
from tests.support.venvs import copy_checkout
from tests.support.venvs import FreshVenv
from tests.support.venvs import served
from tests.support.wire import request
from tests.support.wire import StreamClient

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

PACKAGE = "flask_ssecors"
ORIGIN = "https://app.example.com"


def setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg", encoding="utf-8")
    return config


VERSION = setup_cfg()["metadata"]["version"]


@dataclasses.dataclass(frozen=True)
class Dists:
    sdist: Path
    wheel: Path


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[Dists]:
    root = tmp_path_factory.mktemp("dists")
    try:
        source = copy_checkout(root / "src")
        result = subprocess.run(
            [sys.executable, "-m", "build", "--outdir", str(root / "dist"), str(source)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
        (sdist,) = (root / "dist").glob("*.tar.gz")
        (wheel,) = (root / "dist").glob("*.whl")
        yield Dists(sdist, wheel)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def wheel_metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(f"{PACKAGE}-{VERSION}.dist-info/METADATA").decode()
    return email.parser.Parser().parsestr(text)


def test_file_names_carry_the_setup_cfg_version(dists: Dists) -> None:
    assert dists.sdist.name == f"{PACKAGE}-{VERSION}.tar.gz"
    assert dists.wheel.name == f"{PACKAGE}-{VERSION}-py3-none-any.whl"


def test_twine_check_passes(dists: Dists) -> None:
    """The metadata, and the README as PyPI renders it, are valid."""
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(dists.sdist), str(dists.wheel)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2, result.stdout


def test_wheel_holds_the_package_and_py_typed_only(dists: Dists) -> None:
    with zipfile.ZipFile(dists.wheel) as archive:
        names = archive.namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert tops == {PACKAGE, f"{PACKAGE}-{VERSION}.dist-info"}, tops
    assert f"{PACKAGE}/py.typed" in names
    assert f"{PACKAGE}/brokers/__init__.py" in names
    assert f"{PACKAGE}-{VERSION}.dist-info/licenses/LICENSE" in names
    # Everything of the package's source tree is in, nothing else (caches, tests...).
    shipped = {name for name in names if name.startswith(f"{PACKAGE}/")}
    expected = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / PACKAGE).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    assert shipped == expected


def test_wheel_metadata_matches_setup_cfg_and_tox(dists: Dists) -> None:
    """Python 3.11-3.13 is declared in the classifiers and tested by tox's envlist; the serve
    extra brings packaging with gunicorn; both command line entry points are declared."""
    metadata = wheel_metadata(dists.wheel)
    assert metadata["Name"] == "flask-ssecors"
    assert metadata["Version"] == VERSION
    assert metadata["Requires-Python"] == ">=3.11"
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert "## Quickstart" in metadata.get_payload()
    declared = sorted(
        classifier.rpartition(":: ")[2]
        for classifier in metadata.get_all("Classifier", [])
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", classifier)
    )
    assert declared == ["3.11", "3.12", "3.13"]
    tox = configparser.ConfigParser()
    tox.read(ROOT / "tox.ini", encoding="utf-8")
    envlist = tox["tox"]["envlist"]
    versions = re.fullmatch(r"py3\{([\d,]+)\}, .*", envlist)
    assert versions is not None, envlist
    assert [f"3.{minor}" for minor in versions.group(1).split(",")] == declared
    requires = metadata.get_all("Requires-Dist", [])
    serve = sorted(r.split(";")[0].split(">=")[0] for r in requires if 'extra == "serve"' in r)
    assert serve == ["gunicorn", "packaging"]
    check = sorted(r.split(";")[0].split(">=")[0] for r in requires if 'extra == "check"' in r)
    assert check == ["h11", "h2"]
    core = {r.split(";")[0].split(">=")[0] for r in requires if "extra ==" not in r}
    assert not core & {"h11", "h2", "playwright"}, "the extension needs none of the auditor's"
    extras = set(metadata.get_all("Provides-Extra") or [])
    assert {"redis", "serve", "check", "browser", "test", "docs", "bench"} <= extras
    with zipfile.ZipFile(dists.wheel) as archive:
        entry_points = archive.read(f"{PACKAGE}-{VERSION}.dist-info/entry_points.txt").decode()
    assert "ssecors-check = flask_ssecors._cli:main" in entry_points
    assert "ssecors = flask_ssecors._cli:ssecors" in entry_points


def test_sdist_holds_what_the_tests_and_docs_need(dists: Dists) -> None:
    with tarfile.open(dists.sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for required in (
        "PKG-INFO",
        "setup.cfg",
        "pyproject.toml",
        "MANIFEST.in",
        "README.md",
        "LICENSE",
        "CHANGES.rst",
        "tox.ini",
        f"{PACKAGE}/py.typed",
        "tests/conftest.py",
        "tests/support/servers.py",
        "tests/live_apps/streams.py",
        "docs/conf.py",
        "docs/quickstart.rst",
        "example_app/app.py",
        "tools/system-deps.sh",
    ):
        assert required in names, required
    assert not [name for name in names if name.startswith(("bench/", "docs/_build/", ".venv"))]
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]


@pytest.mark.live
def test_installed_wheel_serves_the_quickstart(dists: Dists, tmp_path: Path) -> None:
    """The wheel (not the checkout) in a fresh venv, with the README's extras: the README's
    quickstart, served by the README's command, streams, resumes and fans out a message."""
    install = readme.install_commands()
    venv = FreshVenv(tmp_path / "venv")
    try:
        result = venv.run(
            ["pip", "install", f"{dists.wheel}[{','.join(install.extras)}]"],
            cwd=tmp_path,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        work = tmp_path / "work"
        work.mkdir()
        (work / "app.py").write_text(readme.quickstart_code(), encoding="utf-8")
        where = json.loads(
            venv.python(
                "import importlib.metadata, json, flask_ssecors;"
                "print(json.dumps([flask_ssecors.__file__,"
                " importlib.metadata.version('flask-ssecors'), flask_ssecors.__version__]))",
                cwd=work,
            )
        )
        assert Path(where[0]).is_relative_to(venv.path), where
        assert where[1] == where[2] == VERSION
        assert Path(venv.program("ssecors-check")).parent == venv.bin
        port = free_port()
        log = tmp_path / "gunicorn.log"
        with served(venv, readme.serve_command(), cwd=work, port=port, log=log):
            smoke(port)
    finally:
        venv.remove()


def smoke(port: int) -> None:
    allowed = {"Origin": ORIGIN}
    with StreamClient(port, "/ticks", allowed) as ticks:
        assert ticks.status == 200
        assert ticks.header("Access-Control-Allow-Origin") == ORIGIN
        assert [event.id for event in ticks.events(2)] == ["0", "1"]
    with StreamClient(port, "/ticks", {**allowed, "Last-Event-ID": "41"}) as resumed:
        first = resumed.next_event()
        assert (first.event, first.id, first.data) == ("tick", "42", '{"n":42}')
    status, _, _ = request(port, "/ticks", {"Origin": "https://evil.example.net"})
    assert status == 403
    with StreamClient(port, "/rooms/lobby/events", allowed) as room:
        body = json.dumps({"text": "hello"}).encode()
        status, _, answer = request(
            port,
            "/rooms/lobby/messages",
            {**allowed, "Content-Type": "application/json"},
            method="POST",
            body=body,
        )
        assert status == 201, answer
        event = room.next_event()
        assert event.event != RESET_EVENT
        assert (event.event, event.data) == ("message", '{"text":"hello"}')
        assert event.id == json.loads(answer)["id"]


def test_building_from_the_checkout_warns_about_nothing(tmp_path: Path) -> None:
    """Regression: every editable install (and a wheel built straight from the checkout)
    printed setuptools' BuildBackendWarning box: flask_ssecors.static, a data directory, was
    importable but absent from the packages."""
    source = copy_checkout(tmp_path / "src")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "w"), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    output = result.stdout + result.stderr
    assert "BuildBackendWarning" not in output, output[-4000:]
    assert "is absent from the `packages`" not in output
