"""The public API is a contract: these names are what users import, and the docs say so.

The public surface is the package's ``__all__`` and the ``__all__`` of the public modules below;
every other module is internal and starts with ``_``. ``docs/api.rst`` documents exactly these
names, no more and no fewer.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import types
from pathlib import Path

import pytest

import flask_ssecors
from flask_ssecors import exceptions

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "flask_ssecors"
#: The public modules; every other module of the package is internal (``_``-prefixed).
PUBLIC_MODULES = (
    "flask_ssecors",
    "flask_ssecors.brokers",
    "flask_ssecors.checker",
    "flask_ssecors.events",
    "flask_ssecors.exceptions",
    "flask_ssecors.gunicorn",
    "flask_ssecors.requestid",
    "flask_ssecors.stats",
    "flask_ssecors.testing",
    "flask_ssecors.tokens",
)


def test_top_level_names_are_the_contract() -> None:
    """``__init__`` only re-exports; adding or removing a name is an API change."""
    assert sorted(flask_ssecors.__all__) == [
        "Event",
        "Presence",
        "Publisher",
        "SSECors",
        "__version__",
        "assets_blueprint",
        "end_all_streams",
        "last_event_id",
    ]
    assert isinstance(flask_ssecors.__version__, str)


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_public_modules_list_exactly_their_public_names(name: str) -> None:
    """Every name a public module defines without a leading ``_`` is in its ``__all__``, and
    every name in ``__all__`` exists."""
    module = importlib.import_module(name)
    exported = set(module.__all__)
    for item in exported:
        assert hasattr(module, item), f"{name}.__all__ lists {item}, which does not exist"
    for item, value in vars(module).items():
        if item.startswith("_") or isinstance(value, types.ModuleType):
            continue
        if getattr(value, "__module__", name) != name and item not in exported:
            continue  # imported for use, not defined here
        if item in {"annotations", "t", "cabc"}:
            continue
        assert item in exported, f"{name}.{item} is public but not in __all__; prefix it with _"


def _modules() -> list[str]:
    found = ["flask_ssecors"]
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="flask_ssecors."):
        found.append(info.name)
    return sorted(found)


def test_every_other_module_is_internal() -> None:
    for name in _modules():
        if name in PUBLIC_MODULES:
            continue
        assert name.rsplit(".", 1)[1].startswith("_"), f"{name} is neither public nor _internal"


_DIRECTIVE = re.compile(
    r"^\s*\.\. (auto(?:class|function|data|exception|attribute|module)|(?:current)?module)"
    r"::\s*(\S+)",
    re.MULTILINE,
)


def _documented() -> set[str]:
    """The dotted names ``docs/api.rst`` documents (members of classes aside)."""
    text = (ROOT / "docs" / "api.rst").read_text()
    names: set[str] = set()
    current = "flask_ssecors"
    for directive, target in _DIRECTIVE.findall(text):
        if directive in ("module", "currentmodule", "automodule"):
            current = target
            continue
        names.add(target if target.startswith("flask_ssecors") else f"{current}.{target}")
    return names


def _exported() -> dict[int, set[str]]:
    """Every public object, with the dotted names it is exported under (a re-export such as
    ``flask_ssecors.Event`` and ``flask_ssecors.events.Event`` is one object)."""
    names: dict[int, set[str]] = {}
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        for item in module.__all__:
            if item != "__version__":
                value = getattr(module, item)
                key = (
                    id(value)
                    if not isinstance(value, str | int | float | tuple)
                    else hash(f"{name}.{item}")
                )
                names.setdefault(key, set()).add(f"{name}.{item}")
    return names


def test_the_api_page_documents_exactly_the_public_names() -> None:
    """Each public object is documented once, under one of its names; nothing internal is."""
    documented = _documented()
    exported = _exported()
    missing = sorted(min(names) for names in exported.values() if not names & documented)
    assert missing == [], "public but not documented in docs/api.rst"
    every_name = set().union(*exported.values())
    assert sorted(documented - every_name) == [], "documented in docs/api.rst but not public"


def test_exceptions_share_one_base() -> None:
    """Every exception the library raises can be caught as ``SSECorsError``."""
    for name in exceptions.__all__:
        value = getattr(exceptions, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, exceptions.SSECorsError)
    assert issubclass(exceptions.BrokerUnavailable, exceptions.BrokerError)


def test_testing_helpers_are_importable() -> None:
    testing = importlib.import_module("flask_ssecors.testing")
    assert callable(testing.parse_events)
    assert testing.SSETestClient.open_stream


def test_package_is_typed() -> None:
    """``py.typed`` ships with the package, so users' type checkers read our annotations."""
    from importlib.resources import files

    assert files("flask_ssecors").joinpath("py.typed").is_file()


def test_every_error_the_library_raises_is_an_ssecors_error() -> None:
    """One exception tree: the broker's ``SubscriptionClosed`` and misuse errors too, each
    keeping the built-in base that code may already catch."""
    from flask import Flask

    from flask_ssecors import SSECors
    from flask_ssecors.brokers import SubscriptionClosed

    assert issubclass(SubscriptionClosed, exceptions.SSECorsError)
    assert issubclass(exceptions.SetupError, RuntimeError)
    assert issubclass(exceptions.UsageError, TypeError)
    assert issubclass(exceptions.UsageError, ValueError)
    sse = SSECors()
    with pytest.raises(exceptions.SetupError, match="not registered on any app"):
        sse.publish("c", flask_ssecors.Event("x"))
    app = Flask(__name__)
    app.config.update(SSECORS_ALLOWED_ORIGINS=["https://app.example.com"])
    sse.init_app(app)
    with pytest.raises(exceptions.SetupError, match="already registered"):
        sse.init_app(app)
    with app.test_request_context(), pytest.raises(exceptions.UsageError, match="channel"):
        sse.subscribe()
    with pytest.raises(exceptions.SetupError, match="application context"):
        sse.subscribe("c")
