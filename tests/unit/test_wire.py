"""Frames carry an event's id and type beside its wire bytes, so that brokers add ids and
streams of several channels relabel events without parsing them again (flask_ssecors._wire)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flask_ssecors._parser import parse_events
from flask_ssecors._wire import as_frame
from flask_ssecors._wire import encode_without_id
from flask_ssecors._wire import frame
from flask_ssecors._wire import frame_of
from flask_ssecors._wire import relabel
from flask_ssecors._wire import stored_type
from flask_ssecors.events import Event
from flask_ssecors.exceptions import EventFieldError

line_text = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n\x00"),
    max_size=12,
)
ids = line_text.filter(bool)
events = st.builds(
    lambda data, kind, retry, comment: Event(data, event=kind, retry=retry, comment=comment),
    data=st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=20),
    kind=st.none() | line_text,
    retry=st.none() | st.integers(min_value=0, max_value=10**6),
    comment=st.none() | st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=12),
)


@given(event=events, id=ids)
def test_a_frame_is_the_event_with_its_id(event: Event, id: str) -> None:
    encoded = encode_without_id(event)
    framed = frame(encoded, event.event, id)
    assert framed.data == event.with_id(id).encode()
    assert (framed.id, framed.type) == (id, event.event)
    assert stored_type(encoded) == event.event
    assert as_frame(framed.data) == framed
    assert frame_of(event.with_id(id)) == framed


@given(event=events, id=ids, new_id=ids, prefix=line_text)
def test_relabelling_changes_only_the_id_and_the_type(
    event: Event, id: str, new_id: str, prefix: str
) -> None:
    framed = frame(encode_without_id(event), event.event, id)
    (sent,) = parse_events(relabel(framed, new_id, prefix + "/"))
    (original,) = parse_events(framed.data)
    assert sent.id == new_id
    assert sent.event == prefix + "/" + (event.event if event.event is not None else "message")
    assert (sent.data, sent.retry) == (original.data, original.retry)


def test_an_id_is_written_first_without_a_scan() -> None:
    event = Event("x", event="tick", comment="c")
    assert frame(encode_without_id(event), "tick", "7").data == (
        b"id: 7\nevent: tick\n: c\ndata: x\n\n"
    )


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "nul\x00"])
def test_ids_and_types_that_cannot_be_written_are_refused(bad: str) -> None:
    framed = frame(b"data: x\n\n", None, "1")
    with pytest.raises(EventFieldError):
        frame(b"data: x\n\n", None, bad)
    with pytest.raises(EventFieldError):
        relabel(framed, bad, "c/")
    with pytest.raises(EventFieldError):
        relabel(framed, "2", bad)
