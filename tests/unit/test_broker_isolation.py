"""Isolation: nothing one channel, one subscriber or one far-behind client does reaches others.

The pure part: one definition of a channel name, and event names that map (channel, type)
one-to-one. Every broker also passes the isolation part of the broker contract
(tests/unit/test_brokers.py, ``BrokerContract``, "isolation"), in-process, the Redis broker
against a real redis-server; the live versions are in tests/live/test_isolation_live.py. The
rules are stated in docs/streams.rst ("Many channels", "Several channels on one stream") and
docs/security.rst:

- a channel name never holds a control character, for every broker and stream kind, and the
  event names of a stream of several channels map (channel, type) one-to-one;
- a fault while serving one subscriber, one event or one channel is contained there (counted in
  ``faults``, that subscriber dropped) and never stops delivery to anyone else;
- replay is read a page at a time as the client reads, never counts against the live queue's
  bound, and resumes any client the backlog can serve, on one channel or several; a client the
  backlog cannot serve gets the reset event.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flask_ssecors.brokers._base import check_channel
from flask_ssecors.brokers._multi import event_name
from flask_ssecors.brokers._multi import split_event_name
from flask_ssecors.events import Event
from flask_ssecors.exceptions import ChannelError

CONTROL_CHARACTERS = [chr(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))]


# -- channel names (pure) -------------------------------------------------------------------


@pytest.mark.parametrize(
    "char", CONTROL_CHARACTERS, ids=[f"U+{ord(c):04X}" for c in CONTROL_CHARACTERS]
)
def test_every_control_character_is_refused_in_a_channel_name(char: str) -> None:
    with pytest.raises(ChannelError, match="control characters"):
        check_channel(f"room:a{char}b")


@given(st.text(min_size=1, max_size=40))
def test_a_name_that_passes_can_be_written_as_an_event_name(name: str) -> None:
    """Whatever passes :func:`check_channel` can be written in an ``event:`` field."""
    try:
        check_channel(name)
    except ChannelError:
        return
    Event("x", event=event_name(name, "message"))  # raises EventFieldError otherwise


channel_names = st.text(
    alphabet=st.characters(blacklist_categories=["Cs", "Cc"]), min_size=1, max_size=20
)
event_types = st.none() | st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n\x00"),
    max_size=20,
)


@given(channel_names, event_types, channel_names, event_types)
def test_event_names_map_channel_and_type_one_to_one(
    channel: str, kind: str | None, other_channel: str, other_kind: str | None
) -> None:
    """Two (channel, type) pairs share an event name only if they are the same pair (a type
    of None is ``message``, as browsers dispatch it)."""
    first = (channel, kind if kind is not None else "message")
    second = (other_channel, other_kind if other_kind is not None else "message")
    same_name = event_name(channel, kind) == event_name(other_channel, other_kind)
    assert same_name == (first == second)


@given(channel_names, event_types)
def test_event_names_split_back_into_channel_and_type(channel: str, kind: str | None) -> None:
    assert split_event_name(event_name(channel, kind)) == (
        channel,
        kind if kind is not None else "message",
    )


def test_the_review_collision_is_gone() -> None:
    """Regression: channel ``X`` publishing ``y/message`` and channel ``X/y`` publishing
    ``message`` both arrived as ``X/y/message``."""
    assert event_name("X", "y/message") == "X/y/message"
    assert event_name("X/y", "message") == "X%2Fy/message"
    assert event_name("100%", None) == "100%25/message"


# -- the contract ---------------------------------------------------------------------------
