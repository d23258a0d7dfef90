"""Presence through the extension, on the memory broker: ``sse.subscribe(member=...)``,
``sse.presence()``, join and leave events, the settings, the statistics.

The brokers' own presence (memory and Redis alike) is in the broker contract
(``tests/unit/test_brokers.py``); several workers, crashes and topologies in
``tests/live/test_presence_live.py``.
"""

from __future__ import annotations

import json
import typing as t

import gevent
import pytest
from flask import Flask
from flask import request
from hypothesis import given
from hypothesis import strategies as st

from flask_ssecors import Presence
from flask_ssecors import SSECors
from flask_ssecors import stats as stats_module
from flask_ssecors._config import read_settings
from flask_ssecors.brokers._presence import announces
from flask_ssecors.brokers._presence import check_member
from flask_ssecors.brokers._presence import MAX_MEMBER_BYTES
from flask_ssecors.exceptions import ChannelError
from flask_ssecors.exceptions import ConfigError
from tests.conftest import ALLOWED
from tests.conftest import stream_client

HEADERS = {"Origin": ALLOWED, "User-Agent": "test"}


def build(make_app: t.Callable[..., Flask], **config: object) -> tuple[Flask, SSECors]:
    config.setdefault("SECRET_KEY", "k" * 32)
    app = make_app(**config)
    sse = SSECors(app)

    @app.get("/rooms/<room>")
    @sse.stream(heartbeat=0.05)
    def room(room: str) -> t.Any:
        member = request.args.get("member")
        return sse.subscribe(f"room:{room}", member=False if member == "-" else member)

    @app.get("/loud/<room>")
    @sse.stream(heartbeat=0.05, presence_events=True)
    def loud(room: str) -> t.Any:
        return sse.subscribe(f"room:{room}", member=request.args["member"])

    @app.get("/both")
    @sse.stream(heartbeat=0.05)
    def both() -> t.Any:
        return sse.subscribe("room:a", "hall:b", member=request.args["member"])

    @app.get("/private/<room>")
    @sse.stream(heartbeat=0.05, require_token=True)
    def private(room: str) -> t.Any:
        member = request.args.get("member")
        return sse.subscribe(f"room:{room}", member=False if member == "-" else member)

    @app.post("/token")
    @sse.cors()
    def token() -> t.Any:
        return {"token": sse.issue_token("alice")}

    return app, sse


def presence(app: Flask, sse: SSECors, channel: str) -> Presence:
    with app.app_context():
        return sse.presence(channel)


def settle(app: Flask, sse: SSECors, channel: str, connections: int) -> Presence:
    """The channel's presence once it counts ``connections`` (streams close in their own
    greenlets), or after a second."""
    for _ in range(100):
        seen = presence(app, sse, channel)
        if seen.connections == connections:
            return seen
        gevent.sleep(0.01)
    return seen


# -- settings ----------------------------------------------------------------------------------


def test_the_defaults(make_app: t.Callable[..., Flask]) -> None:
    settings = read_settings({"SSECORS_ALLOWED_ORIGINS": [ALLOWED]})
    assert settings.presence_ttl == 30.0
    assert settings.presence_max_members == 500
    assert settings.stream.presence_events is False


def test_bad_settings_are_all_listed() -> None:
    with pytest.raises(ConfigError) as caught:
        read_settings(
            {
                "SSECORS_ALLOWED_ORIGINS": [ALLOWED],
                "SSECORS_PRESENCE_TTL": 0.5,
                "SSECORS_PRESENCE_MAX_MEMBERS": -1,
                "SSECORS_PRESENCE_EVENTS": ["room:*", "", "a\nb"],
            }
        )
    keys = sorted(issue.key for issue in caught.value.issues)
    assert keys == [
        "SSECORS_PRESENCE_EVENTS",
        "SSECORS_PRESENCE_EVENTS",
        "SSECORS_PRESENCE_MAX_MEMBERS",
        "SSECORS_PRESENCE_TTL",
    ]
    with pytest.raises(ConfigError):
        read_settings({"SSECORS_ALLOWED_ORIGINS": [ALLOWED], "SSECORS_PRESENCE_EVENTS": 1})


def test_announced_rooms_must_fit_the_queue(make_app: t.Callable[..., Flask]) -> None:
    """A worker that stops makes all its members leave at once: with events on, the members
    a channel announces must fit a subscriber's queue, at the app level and per view."""
    base = {"SSECORS_ALLOWED_ORIGINS": [ALLOWED], "SSECORS_QUEUE_SIZE": 100}
    with pytest.raises(ConfigError) as caught:
        read_settings({**base, "SSECORS_PRESENCE_EVENTS": True})
    (issue,) = caught.value.issues
    assert issue.key == "SSECORS_PRESENCE_MAX_MEMBERS"
    assert "SSECORS_QUEUE_SIZE (100)" in issue.reason
    assert read_settings(
        {**base, "SSECORS_PRESENCE_MAX_MEMBERS": 99, "SSECORS_PRESENCE_EVENTS": True}
    )
    assert read_settings(base)  # without events, any size
    app = make_app(SSECORS_QUEUE_SIZE=100, SSECORS_PRESENCE_MAX_MEMBERS=99)
    sse = SSECors(app)
    with pytest.raises(ConfigError, match="presence_max_members"):  # when decorated

        @sse.stream(presence_events=True, queue_size=50)
        def big() -> t.Any:
            return sse.subscribe("room:big", member="x")


@pytest.mark.parametrize(
    ("setting", "channel", "expected"),
    [
        (True, "anything", True),
        (False, "anything", False),
        (("room:*",), "room:1", True),
        (("room:*",), "hall:1", False),
        (("room:*",), "room", False),
        (("lobby", "room:*"), "lobby", True),
        (("*:vip",), "room:vip", True),
    ],
)
def test_patterns_choose_the_announced_channels(
    setting: bool | tuple[str, ...], channel: str, expected: bool
) -> None:
    assert announces(setting, channel) is expected


# -- members -------------------------------------------------------------------------------------


@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1))
def test_any_short_text_without_controls_is_a_member(member: str) -> None:
    if len(member.encode()) <= MAX_MEMBER_BYTES:
        assert check_member(member) == member
    else:
        with pytest.raises(ChannelError):
            check_member(member)


@given(st.text(), st.characters(min_codepoint=0, max_codepoint=0x1F), st.text())
def test_a_control_character_anywhere_is_refused(head: str, control: str, tail: str) -> None:
    with pytest.raises(ChannelError):
        check_member(head + control + tail)


def test_a_stream_counts_its_member_until_it_ends(make_app: t.Callable[..., Flask]) -> None:
    app, sse = build(make_app)
    client = stream_client(app)
    with (
        client.open_stream("/rooms/1?member=alice", headers=HEADERS) as one,
        client.open_stream("/rooms/1?member=alice", headers=HEADERS),
        client.open_stream("/rooms/1?member=bob", headers=HEADERS),
        client.open_stream("/rooms/1", headers=HEADERS),
    ):
        one.read_chunk()
        assert settle(app, sse, "room:1", 3) == Presence(
            "room:1", frozenset({"alice", "bob"}), 2, 3
        )
        with app.app_context():
            assert sse.stats()["presence"] == {"members": 2, "streams": 3, "updates": 2}
    assert settle(app, sse, "room:1", 0) == Presence("room:1", frozenset(), 0, 0)
    with app.app_context():
        assert sse.stats()["presence"] == {"members": 0, "streams": 0, "updates": 4}


@pytest.mark.parametrize("member", ["", "a%0Ab", "%00", "x" * 300])
def test_a_bad_member_gets_400_and_counts_nothing(
    make_app: t.Callable[..., Flask], member: str
) -> None:
    app, sse = build(make_app)
    response = stream_client(app).get(f"/rooms/1?member={member}", headers=HEADERS)
    assert response.status_code == 400
    assert presence(app, sse, "room:1").connections == 0


def test_a_token_subject_is_the_default_member(make_app: t.Callable[..., Flask]) -> None:
    app, sse = build(make_app, SSECORS_ALLOWED_ORIGINS=[ALLOWED])
    client = stream_client(app)
    issued = client.post("/token", headers=HEADERS).json["token"]  # type: ignore[index]
    with client.open_stream(f"/private/1?token={issued}", headers=HEADERS) as stream:
        stream.read_chunk()
        assert settle(app, sse, "room:1", 1).members == {"alice"}
    with client.open_stream(f"/private/2?token={issued}&member=-", headers=HEADERS) as stream:
        stream.read_chunk()
        gevent.sleep(0.05)
        assert presence(app, sse, "room:2").connections == 0  # member=False: nobody
    with client.open_stream(f"/private/3?token={issued}&member=desk", headers=HEADERS) as stream:
        stream.read_chunk()
        assert settle(app, sse, "room:3", 1).members == {"desk"}


def test_join_and_leave_events_where_the_view_asks(make_app: t.Callable[..., Flask]) -> None:
    app, sse = build(make_app)
    client = stream_client(app)
    with client.open_stream("/rooms/1", headers=HEADERS) as watcher:
        with client.open_stream("/loud/1?member=alice", headers=HEADERS) as loud:
            join = loud.next_event()
            assert (join.event, json.loads(str(join.data))) == ("ssecors-join", {"member": "alice"})
            assert watcher.next_event().id == join.id
            with client.open_stream("/rooms/1?member=bob", headers=HEADERS) as quiet:
                quiet.read_chunk()
                assert settle(app, sse, "room:1", 2).members == {"alice", "bob"}
        leave = watcher.next_event()
        assert (leave.event, json.loads(str(leave.data))) == ("ssecors-leave", {"member": "alice"})
        with pytest.raises(TimeoutError):
            watcher.next_event(timeout=0.3)  # bob was never announced


def test_the_app_setting_takes_channel_patterns(make_app: t.Callable[..., Flask]) -> None:
    app, sse = build(make_app, SSECORS_PRESENCE_EVENTS=["hall:*"])
    client = stream_client(app)
    with client.open_stream("/both?member=alice", headers=HEADERS) as stream:
        stream.read_chunk()  # the opening block
        event = stream.next_event()
        assert event.event == "hall:b/ssecors-join"
        assert settle(app, sse, "room:a", 1).members == {"alice"}
        assert presence(app, sse, "hall:b").members == {"alice"}
        with pytest.raises(TimeoutError):
            stream.next_event(timeout=0.3)  # room:a is not announced


def test_counts_only_above_the_setting(make_app: t.Callable[..., Flask]) -> None:
    app, sse = build(make_app, SSECORS_PRESENCE_MAX_MEMBERS=1)
    client = stream_client(app)
    with (
        client.open_stream("/rooms/1?member=alice", headers=HEADERS) as one,
        client.open_stream("/rooms/1?member=bob", headers=HEADERS),
    ):
        one.read_chunk()
        assert settle(app, sse, "room:1", 2) == Presence(
            "room:1", frozenset(), 2, 2, counts_only=True
        )
        assert presence(app, sse, "room:1").as_dict() == {
            "channel": "room:1",
            "members": [],
            "member_count": 2,
            "connections": 2,
            "counts_only": True,
        }


def test_prometheus_counts_presence(make_app: t.Callable[..., Flask]) -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    app, sse = build(make_app)
    registry = prometheus_client.CollectorRegistry()
    registry.register(stats_module.PrometheusCollector(app))
    client = stream_client(app)
    with client.open_stream("/rooms/1?member=alice", headers=HEADERS) as stream:
        stream.read_chunk()
        settle(app, sse, "room:1", 1)
        assert registry.get_sample_value("ssecors_presence_members") == 1.0
        assert registry.get_sample_value("ssecors_presence_streams") == 1.0
    settle(app, sse, "room:1", 0)
    assert registry.get_sample_value("ssecors_presence_members") == 0.0
    assert registry.get_sample_value("ssecors_presence_updates_total") == 2.0
