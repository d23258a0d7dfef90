"""Tests for :mod:`flask_ssecors.events`: byte-exact encoding and field validation."""

from __future__ import annotations

import dataclasses
import math
import re
import typing as t

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flask_ssecors._parser import parse_events
from flask_ssecors.events import encode_comment
from flask_ssecors.events import Event
from flask_ssecors.events import RESET_EVENT
from flask_ssecors.exceptions import EventFieldError


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"data": "hello"}, b"data: hello\n\n"),
        ({"data": "a\nb"}, b"data: a\ndata: b\n\n"),
        ({"data": "a\rb"}, b"data: a\ndata: b\n\n"),
        ({"data": "a\r\nb"}, b"data: a\ndata: b\n\n"),
        ({"data": "a\r\n\nb\r\rc\n"}, b"data: a\ndata:\ndata: b\ndata:\ndata: c\ndata:\n\n"),
        ({"data": "a\vb\fc\x85d\u2028e"}, "data: a\vb\fc\x85d\u2028e\n\n".encode()),
        ({"data": " x"}, b"data:  x\n\n"),
        ({"data": ""}, b"data:\n\n"),
        ({"data": "a\x00b"}, b"data: a\x00b\n\n"),
        ({"data": "x", "id": "0"}, b"id: 0\ndata: x\n\n"),
        ({"data": "x", "id": ""}, b"id:\ndata: x\n\n"),
        ({"id": ""}, b"id:\n\n"),
        ({"data": "x", "retry": 0}, b"retry: 0\ndata: x\n\n"),
        ({"data": "x", "event": ""}, b"event:\ndata: x\n\n"),
        ({"data": "x", "event": " sp"}, b"event:  sp\ndata: x\n\n"),
        ({"comment": "ping"}, b": ping\n\n"),
        ({"comment": ""}, b":\n\n"),
        ({"comment": "a\nb\rc\r\nd"}, b": a\n: b\n: c\n: d\n\n"),
        ({"comment": "a\n\nb"}, b": a\n:\n: b\n\n"),
        ({"comment": "nul\x00ok"}, b": nul\x00ok\n\n"),
        ({"data": {"a": 1, "b": [1, 2]}}, b'data: {"a":1,"b":[1,2]}\n\n'),
        ({"data": ["é", "日本", "\u2028"]}, 'data: ["é","日本","\u2028"]\n\n'.encode()),
        ({"data": {"text": "l1\nl2"}}, b'data: {"text":"l1\\nl2"}\n\n'),
        ({"data": 0}, b"data: 0\n\n"),
        ({"data": 1.5}, b"data: 1.5\n\n"),
        ({"data": True}, b"data: true\n\n"),
        ({"data": False}, b"data: false\n\n"),
        ({"data": "ünï"}, "data: ünï\n\n".encode()),
        (
            {"data": "a\nb", "event": "tick", "id": "7", "retry": 1500, "comment": "c1\nc2"},
            b"id: 7\nevent: tick\nretry: 1500\n: c1\n: c2\ndata: a\ndata: b\n\n",
        ),
    ],
)
def test_encode(kwargs: dict[str, t.Any], expected: bytes) -> None:
    assert Event(**kwargs).encode() == expected


def test_data_is_positional_and_other_fields_keyword_only() -> None:
    assert Event("x").data == "x"
    with pytest.raises(TypeError):
        Event("x", "tick")  # type: ignore[call-arg]


class _Unserializable:
    pass


_CIRCULAR: list[object] = []
_CIRCULAR.append(_CIRCULAR)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"data": "x", "event": "a\rb"}, "event"),
        ({"data": "x", "event": "a\nb"}, "event"),
        ({"data": "x", "event": "a\r\nevent: forged"}, "event"),
        ({"data": "x", "event": "a\x00b"}, "event"),
        ({"data": "x", "event": 5}, "event"),
        ({"data": "x", "id": "1\r"}, "id"),
        ({"data": "x", "id": "1\n\ndata: forged"}, "id"),
        ({"data": "x", "id": "1\x00"}, "id"),
        ({"data": "x", "id": 1}, "id"),
        ({"data": "x", "id": b"1"}, "id"),
        ({"data": "x", "retry": True}, "retry"),
        ({"data": "x", "retry": False}, "retry"),
        ({"data": "x", "retry": -1}, "retry"),
        ({"data": "x", "retry": 1.0}, "retry"),
        ({"data": "x", "retry": "100"}, "retry"),
        ({"data": "x", "comment": 3}, "comment"),
        ({"data": math.nan}, "data"),
        ({"data": math.inf}, "data"),
        ({"data": {"n": math.nan}}, "data"),
        ({"data": object()}, "data"),
        ({"data": _Unserializable()}, "data"),
        ({"data": b"bytes"}, "data"),
        ({"data": {(1, 2): "tuple key"}}, "data"),
        ({"data": _CIRCULAR}, "data"),
        ({"data": "\ud800"}, "data"),
        ({"data": "x", "id": "\udfff"}, "id"),
        ({"comment": "\ud800"}, "comment"),
        ({}, "data"),
        ({"data": None}, "data"),
        ({"event": "tick"}, "data"),
    ],
)
def test_refused(kwargs: dict[str, t.Any], field: str) -> None:
    with pytest.raises(EventFieldError) as info:
        Event(**kwargs)
    assert info.value.field == field


def test_empty_event_message() -> None:
    with pytest.raises(EventFieldError, match="an event needs data, an id, a retry or a comment"):
        Event()


def test_refusal_is_a_value_error() -> None:
    """Callers catching ``ValueError`` also catch refused fields."""
    with pytest.raises(ValueError):
        Event("x", id="\n")


def test_encode_is_cached() -> None:
    """Brokers encode once per event, never once per subscriber."""
    event = Event({"a": 1}, id="1")
    assert event.encode() is event.encode()


def test_frozen() -> None:
    """Events are shared between subscribers: nobody may change one after it is encoded.

    Setting an unknown attribute raises ``TypeError`` rather than ``AttributeError`` on Python
    3.11 (the frozen ``__setattr__`` of a ``slots=True`` dataclass calls ``super()`` with the
    class it replaced); either way the assignment is refused.
    """
    event = Event("x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.id = "1"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del event.data
    with pytest.raises((AttributeError, TypeError)):
        event.other = 1  # type: ignore[attr-defined]
    assert event.encode() == b"data: x\n\n"


def test_repr_and_equality_ignore_wire_bytes() -> None:
    assert Event("x", id="1") == Event("x", id="1")
    assert Event("x", id="1") != Event("x", id="2")
    assert "_wire" not in repr(Event("x"))


def test_with_id() -> None:
    event = Event("x", event="tick", retry=10, comment="c")
    copy = event.with_id("42")
    assert copy == Event("x", event="tick", id="42", retry=10, comment="c")
    assert copy.encode() == b"id: 42\nevent: tick\nretry: 10\n: c\ndata: x\n\n"
    assert event.id is None
    assert event.encode() == b"event: tick\nretry: 10\n: c\ndata: x\n\n"


@pytest.mark.parametrize("bad_id", ["1\n", "1\r", "1\x00", 1])
def test_with_id_validates(bad_id: t.Any) -> None:
    with pytest.raises(EventFieldError) as info:
        Event("x").with_id(bad_id)
    assert info.value.field == "id"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ping", b": ping\n\n"),
        ("", b":\n\n"),
        (" x", b":  x\n\n"),
        ("a\nb", b": a\n: b\n\n"),
        ("a\r\nb\rc", b": a\n: b\n: c\n\n"),
        ("data: forged", b": data: forged\n\n"),
    ],
)
def test_encode_comment(text: str, expected: bytes) -> None:
    assert encode_comment(text) == expected


def test_encode_comment_default() -> None:
    assert encode_comment() == b":\n\n"


def test_encode_comment_refuses_non_str() -> None:
    with pytest.raises(EventFieldError):
        encode_comment(b"ping")  # type: ignore[arg-type]


def test_reset_event_name() -> None:
    assert RESET_EVENT == "ssecors-reset"
    assert Event("", event=RESET_EVENT).encode() == b"event: ssecors-reset\ndata:\n\n"


_SURROGATES: tuple[t.Literal["Cs"]] = ("Cs",)
_LINE_SAFE = st.text(st.characters(exclude_characters="\r\n\x00", exclude_categories=_SURROGATES))


@given(
    data=st.text(),
    event=st.none() | _LINE_SAFE,
    id=st.none() | _LINE_SAFE,
    retry=st.none() | st.integers(min_value=0, max_value=10**9),
    comment=st.none() | st.text(),
)
def test_round_trip_through_parser(
    data: str, event: str | None, id: str | None, retry: int | None, comment: str | None
) -> None:
    """What :class:`Event` writes, a browser-conforming parser reads back unchanged."""
    parsed = parse_events(Event(data, event=event, id=id, retry=retry, comment=comment).encode())
    assert len(parsed) == 1
    (got,) = parsed
    assert got.data == re.sub(r"\r\n|\r", "\n", data)
    assert got.event == (event or None)
    assert got.id == (id or None)
    assert got.retry == retry
    assert got.comment is None


@given(comment=st.text())
def test_comment_round_trip(comment: str) -> None:
    parsed = parse_events(encode_comment(comment), include_comments=True)
    assert [c.comment for c in parsed] == re.split(r"\r\n|\r|\n", comment)
    assert all(c.data is None for c in parsed)
