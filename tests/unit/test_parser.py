"""Tests for :mod:`flask_ssecors._parser`: the WHATWG "Interpreting an event stream" rules."""

from __future__ import annotations

import collections.abc as cabc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flask_ssecors._parser import EventStreamParser
from flask_ssecors._parser import parse_events
from flask_ssecors.events import Event


def _feed_all(chunks: cabc.Iterable[bytes], *, include_comments: bool = False) -> list[Event]:
    parser = EventStreamParser(include_comments=include_comments)
    events: list[Event] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events


def _comment(text: str) -> Event:
    return Event(None, comment=text)


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        # A byte order mark is removed once, at the very start of the stream only.
        ([b"\xef\xbb\xbfdata: a\n\n"], [Event("a")]),
        ([b"\xef", b"\xbb", b"\xbfdata: a\n\n"], [Event("a")]),
        ([b"", b"\xef\xbb\xbfdata: a\n\n"], [Event("a")]),
        # A second BOM is part of the field name, which is then unknown.
        ([b"\xef\xbb\xbf\xef\xbb\xbfdata: a\n\n"], []),
        ([b"data: a\n", b"\xef\xbb\xbfdata: b\n\n"], [Event("a")]),
        ([b"data: \xef\xbb\xbfa\n\n"], [Event("\ufeffa")]),
        # Line endings: LF, CR, CRLF and any mix.
        ([b"data: a\ndata: b\n\n"], [Event("a\nb")]),
        ([b"data: a\rdata: b\r\r"], [Event("a\nb")]),
        ([b"data: a\r\ndata: b\r\n\r\n"], [Event("a\nb")]),
        ([b"data: a\rdata: b\r\ndata: c\n\r\n"], [Event("a\nb\nc")]),
        ([b"data: a\n\rdata: b\r\n\n"], [Event("a"), Event("b")]),
        # A CRLF split across chunks is one line break, not a line break and an empty line.
        ([b"data: a\r", b"\ndata: b\r\n\r\n"], [Event("a\nb")]),
        ([b"data: a\r", b"", b"\ndata: b\n\n"], [Event("a\nb")]),
        ([b"data: a\r", b"\n", b"\n"], [Event("a")]),
        ([b"data: a\r", b"\r"], [Event("a")]),
        ([b"data: a\r\n\r", b"\n"], [Event("a")]),
        # Exactly one space after the colon is removed.
        ([b"data:x\n\n"], [Event("x")]),
        ([b"data: x\n\n"], [Event("x")]),
        ([b"data:  x\n\n"], [Event(" x")]),
        ([b"data:\tx\n\n"], [Event("\tx")]),
        ([b"data: \n\n"], [Event("")]),
        ([b"data: a:b: c\n\n"], [Event("a:b: c")]),
        # A line without a colon is a field with an empty value.
        ([b"data\n\n"], [Event("")]),
        ([b"data\ndata\n\n"], [Event("\n")]),
        ([b"data:\n\n"], [Event("")]),
        ([b"data: a\ndata\n\n"], [Event("a\n")]),
        # event: the type buffer, reset at every empty line; empty means "message" (None).
        ([b"event: tick\ndata: x\n\n"], [Event("x", event="tick")]),
        ([b"event: tick\nevent: tock\ndata: x\n\n"], [Event("x", event="tock")]),
        ([b"event:\ndata: x\n\n"], [Event("x")]),
        ([b"event: tick\ndata: x\n\ndata: y\n\n"], [Event("x", event="tick"), Event("y")]),
        ([b"event:  spaced\ndata: x\n\n"], [Event("x", event=" spaced")]),
        # id: persists across events, an empty one resets it, one with NUL is ignored.
        ([b"id: 1\ndata: a\n\ndata: b\n\n"], [Event("a", id="1"), Event("b", id="1")]),
        ([b"id: 1\ndata: a\n\nid\ndata: b\n\n"], [Event("a", id="1"), Event("b")]),
        ([b"id: 1\ndata: a\n\nid:\ndata: b\n\n"], [Event("a", id="1"), Event("b")]),
        ([b"id: 1\n\ndata: a\nid: 2\x00\n\n"], [Event("a", id="1")]),
        ([b"data: a\nid: 2\x00\n\n"], [Event("a")]),
        ([b"id: 0\ndata: a\n\n"], [Event("a", id="0")]),
        ([b"data: a\nid: 5\n\n"], [Event("a", id="5")]),
        # retry: only ASCII digits count; the event reports a retry its own block carried.
        ([b"retry: 1000\ndata: a\n\ndata: b\n\n"], [Event("a", retry=1000), Event("b")]),
        ([b"retry: 0\ndata: a\n\n"], [Event("a", retry=0)]),
        ([b"retry: 10a\ndata: a\n\n"], [Event("a")]),
        ([b"retry: -1\ndata: a\n\n"], [Event("a")]),
        ([b"retry: 1.5\ndata: a\n\n"], [Event("a")]),
        ([b"retry:  10\ndata: a\n\n"], [Event("a")]),
        ([b"retry:\ndata: a\n\n"], [Event("a")]),
        ([b"retry\ndata: a\n\n"], [Event("a")]),
        (["retry: \u0661\u0662\ndata: a\n\n".encode()], [Event("a")]),
        ([b"retry: 5\nretry: x\ndata: a\n\n"], [Event("a", retry=5)]),
        # A block without data dispatches nothing, and its type does not leak into the next.
        ([b"event: x\nid: 3\nretry: 7\n\ndata: y\n\n"], [Event("y", id="3")]),
        ([b"\n\n\n"], []),
        ([b": only a comment\n\n"], []),
        # A trailing partial event is dropped.
        ([b"data: a\n\ndata: b\n"], [Event("a")]),
        ([b"data: a\n\ndata: b"], [Event("a")]),
        ([b"data: a"], []),
        # Unknown fields are ignored; field names are case-sensitive.
        ([b"foo: bar\ndata: x\n\n"], [Event("x")]),
        ([b"Data: x\n\n"], []),
        ([b"EVENT: t\nID: 1\nRetry: 5\ndata: x\n\n"], [Event("x")]),
        ([b" data: x\n\n"], []),
        ([b"data : x\n\n"], []),
        # Multi-byte UTF-8 split across chunks.
        ([b"data: \xc3", b"\xa9\n\n"], [Event("\xe9")]),
        ([b"data: \xf0", b"\x9f", b"\x98", b"\x80\n\n"], [Event("\U0001f600")]),
        ([b"data: \xe6\x97", b"\xa5\n\n"], [Event("\u65e5")]),
        # Invalid UTF-8 is replaced with U+FFFD.
        ([b"data: \xff\n\n"], [Event("\ufffd")]),
        ([b"data: a\xc3\n\n"], [Event("a\ufffd")]),
        ([b"data: \xc0\xaf\n\n"], [Event("\ufffd\ufffd")]),
        ([b"data: \xed\xa0\x80\n\n"], [Event("\ufffd\ufffd\ufffd")]),
        # NUL and other controls are kept in data.
        ([b"data: a\x00b\x0bc\n\n"], [Event("a\x00b\x0bc")]),
    ],
)
def test_whatwg_rules(chunks: list[bytes], expected: list[Event]) -> None:
    assert _feed_all(chunks) == expected
    assert parse_events(b"".join(chunks)) == expected


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (
            b": hello\n:  two\n:\n:no space\ndata: x\n\n",
            [_comment("hello"), _comment(" two"), _comment(""), _comment("no space"), Event("x")],
        ),
        (
            b"data: a\n: inside\n\n: after\n",
            [_comment("inside"), Event("a"), _comment("after")],
        ),
        (b":\r\n:a\rdata: b\r\n\r\n", [_comment(""), _comment("a"), Event("b")]),
    ],
)
def test_comments(stream: bytes, expected: list[Event]) -> None:
    assert parse_events(stream, include_comments=True) == expected
    assert parse_events(stream) == [e for e in expected if e.comment is None]


def test_event_type_with_nul_is_reported_as_received() -> None:
    """The parser reports wire values even where :class:`Event` would refuse them."""
    (event,) = parse_events(b"event: a\x00b\ndata: x\n\n")
    assert event.event == "a\x00b"
    assert event.data == "x"
    assert event.encode() == b"event: a\x00b\ndata: x\n\n"


def _state(parser: EventStreamParser) -> tuple[str, int | None]:
    return parser.last_event_id, parser.retry


def test_parser_state() -> None:
    """``last_event_id`` and ``retry`` change only on valid fields, even without dispatch."""
    parser = EventStreamParser()
    assert _state(parser) == ("", None)
    assert parser.feed(b"id: 7\nretry: 300\n\n") == []
    assert _state(parser) == ("7", 300)
    assert parser.feed(b"retry: bad\nid: 8\x00\ndata: x\n\n") == [Event("x", id="7")]
    assert _state(parser) == ("7", 300)
    assert parser.feed(b"id\n\n") == []
    assert _state(parser) == ("", 300)


def test_feed_keeps_a_partial_event_pending() -> None:
    parser = EventStreamParser()
    assert parser.feed(b"data: a\n\ndata: b\n") == [Event("a")]
    assert parser.feed(b"data: c") == []
    assert parser.feed(b"\n") == []
    assert parser.feed(b"\n") == [Event("b\nc")]


def test_huge_retry_is_ignored() -> None:
    """More digits than ``int()`` accepts by default must not raise out of the parser."""
    stream = b"retry: " + b"9" * 5000 + b"\ndata: a\n\n"
    assert parse_events(stream) == [Event("a")]


def test_parsed_events_encode() -> None:
    """Parsed events carry wire bytes, so a reader can forward them unchanged."""
    (event,) = parse_events(b"id: 1\nevent: t\nretry: 5\ndata: a\ndata: b\n\n")
    assert event.encode() == b"id: 1\nevent: t\nretry: 5\ndata: a\ndata: b\n\n"


_LINES = st.one_of(
    st.sampled_from(
        [
            b"",
            b"data",
            b"data:",
            b"data: x",
            b"data:  y",
            b"event: t",
            b"event",
            b"id: 1",
            b"id",
            b"id: a\x00",
            b"retry: 10",
            b"retry: z",
            b": comment",
            b":",
            b"\xef\xbb\xbfdata: bom",
            "data: \xe9\u65e5\U0001f600".encode(),
            b"data: \xff\xc3",
            b"unknown: v",
        ]
    ),
    st.binary(max_size=12),
    st.text(max_size=8).map(str.encode),
)
_EOLS = st.sampled_from([b"\n", b"\r", b"\r\n"])


@st.composite
def _streams(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(st.tuples(_LINES, _EOLS), max_size=20))
    return b"".join(line + eol for line, eol in lines) + draw(st.binary(max_size=4))


@given(stream=_streams(), data=st.data(), include_comments=st.booleans())
def test_chunking_does_not_matter(
    stream: bytes, data: st.DataObject, include_comments: bool
) -> None:
    """Any split of the bytes into chunks gives the events of parsing them at once."""
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert b"".join(chunks) == stream
    one_shot = EventStreamParser(include_comments=include_comments)
    expected = one_shot.feed(stream)
    chunked = EventStreamParser(include_comments=include_comments)
    got: list[Event] = []
    for chunk in chunks:
        got.extend(chunked.feed(chunk))
    assert got == expected
    assert chunked.last_event_id == one_shot.last_event_id
    assert chunked.retry == one_shot.retry
