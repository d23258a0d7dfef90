"""The public API is a contract: these names are what users import."""

from __future__ import annotations

import importlib

import flask_ssecors
from flask_ssecors import exceptions


def test_top_level_names_are_the_contract() -> None:
    """``__init__`` only re-exports; adding or removing a name is an API change."""
    public = sorted(name for name in vars(flask_ssecors) if not name.startswith("_"))
    modules = {name for name in public if type(getattr(flask_ssecors, name)).__name__ == "module"}
    assert sorted(set(public) - modules) == ["Event", "SSECors", "last_event_id"]


def test_exceptions_share_one_base() -> None:
    """Every exception the library raises can be caught as ``SSECorsError``."""
    for name in (
        "ConfigError",
        "EventFieldError",
        "BrokerError",
        "BrokerUnavailable",
        "HeaderConflictError",
    ):
        assert issubclass(getattr(exceptions, name), exceptions.SSECorsError)
    assert issubclass(exceptions.BrokerUnavailable, exceptions.BrokerError)


def test_testing_helpers_are_importable() -> None:
    testing = importlib.import_module("flask_ssecors.testing")
    assert callable(testing.parse_events)
    assert testing.SSETestClient.open_stream


def test_package_is_typed() -> None:
    """``py.typed`` ships with the package, so users' type checkers read our annotations."""
    from importlib.resources import files

    assert files("flask_ssecors").joinpath("py.typed").is_file()
