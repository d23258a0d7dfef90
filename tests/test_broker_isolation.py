"""Isolation: nothing one channel, one subscriber or one far-behind client does reaches others.

Every broker passes :class:`IsolationContract` (in-process, with gevent and without
monkey-patching; the Redis broker against a real redis-server). The rules it checks are stated
in docs/streams.rst ("Many channels", "Several channels on one stream") and docs/security.rst:

- a channel name never holds a control character, for every broker and stream kind, and the
  event names of a stream of several channels map (channel, type) one-to-one;
- a fault while serving one subscriber, one event or one channel is contained there (counted in
  ``faults``, that subscriber dropped) and never stops delivery to anyone else;
- replay is read a page at a time as the client reads, never counts against the live queue's
  bound, and resumes any client the backlog can serve, on one channel or several; a client the
  backlog cannot serve gets the reset event.
"""

from __future__ import annotations

import collections.abc as cabc
import json
import secrets
import typing as t

import gevent
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flask_ssecors._faults import FAULTS
from flask_ssecors._parser import EventStreamParser
from flask_ssecors.brokers import Broker
from flask_ssecors.brokers import MemoryBroker
from flask_ssecors.brokers import Subscription
from flask_ssecors.brokers import SubscriptionClosed
from flask_ssecors.brokers._base import check_channel
from flask_ssecors.brokers._base import PAGE_BYTES
from flask_ssecors.brokers._base import PAGE_EVENTS
from flask_ssecors.brokers._multi import event_name
from flask_ssecors.brokers._multi import split_event_name
from flask_ssecors.brokers._multi import subscribe_many
from flask_ssecors.brokers._redis import RedisBroker
from flask_ssecors.events import Event
from flask_ssecors.events import RESET_EVENT
from flask_ssecors.exceptions import ChannelError
from tests.support.servers import RedisServer
from tests.test_brokers import publish_many
from tests.test_brokers import take
from tests.test_brokers import wait_until_closed

MakeBroker = cabc.Callable[..., Broker]

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


def read_all(subscription: Subscription, count: int, timeout: float = 10.0) -> list[Event]:
    """``count`` dispatched events of a stream of several channels, read as a browser does."""
    parser = EventStreamParser()
    events: list[Event] = []
    deadline = gevent.get_hub().loop.now() + timeout
    while len(events) < count:
        left = deadline - gevent.get_hub().loop.now()
        if left <= 0:
            raise AssertionError(f"got {len(events)} of {count}")
        item = subscription.get(left)
        if item is not None:
            events.extend(parser.feed(item))
    return events


class IsolationContract:
    """What every broker must do about isolation. Subclasses override ``make_broker``."""

    @pytest.fixture
    def make_broker(self) -> cabc.Iterator[MakeBroker]:
        raise NotImplementedError

    @pytest.fixture
    def broker(self, make_broker: MakeBroker) -> Broker:
        return make_broker(backlog=1000)

    # -- channel names --------------------------------------------------------------------

    @pytest.mark.parametrize("name", ["room:a\nb", "room:a\rb", "tab\t", "del\x7f", "c1\x85"])
    def test_control_characters_are_refused_by_publish_and_both_stream_kinds(
        self, broker: Broker, name: str
    ) -> None:
        """Regression: ``room:a\\nb`` was accepted, and every delivery on a stream of several
        channels raised (the Redis listener restarted once per event: ~1 s without delivery
        for every channel of the worker)."""
        with pytest.raises(ChannelError):
            broker.publish(name, Event("x"))
        with pytest.raises(ChannelError):
            broker.subscribe(name)
        with pytest.raises(ChannelError):
            subscribe_many(broker, ["ticker", name], None, limit=10)
        assert broker.subscriber_count() == 0
        ticker = subscribe_many(broker, ["ticker", "room:ok"], None, limit=10)
        published = broker.publish("ticker", Event("tick"))
        (event,) = read_all(ticker, 1)
        assert event.event == "ticker/message"
        assert event.id is not None and event.id.split("~")[0] == published
        ticker.close()

    def test_the_channel_and_type_are_told_apart_on_the_wire(self, broker: Broker) -> None:
        stream = subscribe_many(broker, ["X", "X/y"], None, limit=10)
        broker.publish("X", Event("from X", event="y/message"))
        broker.publish("X/y", Event("from X/y"))
        events = read_all(stream, 2)
        assert {(e.event, e.data) for e in events} == {
            ("X/y/message", "from X"),
            ("X%2Fy/message", "from X/y"),
        }
        stream.close()

    # -- faults ---------------------------------------------------------------------------

    def test_a_subscriber_that_raises_is_dropped_and_no_one_else_notices(
        self, broker: Broker
    ) -> None:
        bad = broker.subscribe("c")
        good = broker.subscribe("c")
        other = broker.subscribe("elsewhere")

        def explode(source: Subscription, item: bytes | None) -> None:
            if item is not None:
                raise RuntimeError("a subscriber's bug")

        bad.forward(explode)
        first = broker.publish("c", Event("one"))
        second = broker.publish("c", Event("two"))
        elsewhere = broker.publish("elsewhere", Event("three"))
        assert [e.id for e in take(good, 2)] == [first, second]
        assert [e.id for e in take(other, 1)] == [elsewhere]
        assert wait_until_closed(bad) == "error"
        assert FAULTS.snapshot() == {"deliver": 1}
        assert broker.subscriber_count("c") == 1

    def test_an_event_that_cannot_be_relabelled_drops_only_its_stream(
        self, broker: Broker, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from flask_ssecors.brokers import _multi
        from flask_ssecors.events import relabel as real

        def relabel(encoded: bytes, **kwargs: t.Any) -> tuple[str | None, bytes]:
            if kwargs["event_prefix"] == "poison/":
                raise RuntimeError("cannot relabel")
            return real(encoded, **kwargs)

        monkeypatch.setattr(_multi, "relabel", relabel)
        poisoned = subscribe_many(broker, ["ticker", "poison"], None, limit=10)
        healthy = subscribe_many(broker, ["ticker", "calm"], None, limit=10)
        assert poisoned.get(5) is not None  # the opening block
        broker.publish("poison", Event("bad"))
        ticks = [broker.publish("ticker", Event(n)) for n in range(3)]
        events = read_all(healthy, 3)
        assert [e.id.split("~")[0] for e in events if e.id] == ticks
        with pytest.raises(SubscriptionClosed, match="error"):
            poisoned.get(5)  # relabelled as it is sent: the stream that reads it ends
        assert FAULTS.snapshot() == {"relabel": 1}
        healthy.close()
        assert broker.subscriber_count() == 0

    def test_a_replay_that_raises_drops_only_that_subscriber(
        self, broker: Broker, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        ids = publish_many(broker, "c", PAGE_EVENTS * 3)

        def broken(self: object) -> list[bytes]:
            raise RuntimeError("a bug while reading a page")

        monkeypatch.setattr(self.replay_class(), "next_page", broken)
        resuming = broker.subscribe("c", ids[0])
        live = broker.subscribe("c")
        received: list[str | None] = []
        with pytest.raises(SubscriptionClosed, match="error"):
            while True:
                received.extend(e.id for e in take(resuming, 1))
        # What came before the fault (the page the snapshot read, on Redis) was in order.
        assert received == ids[1 : len(received) + 1]
        later = broker.publish("c", Event("later"))
        assert [e.id for e in take(live, 1)] == [later]
        assert FAULTS.snapshot() == {"replay": 1}
        assert broker.subscriber_count("c") == 1

    def replay_class(self) -> type:
        raise NotImplementedError

    # -- replay -----------------------------------------------------------------------------

    def test_a_far_behind_client_resumes_on_one_channel(self, broker: Broker) -> None:
        ids = publish_many(broker, "c", 600)
        subscription = broker.subscribe("c", ids[0], limit=10)
        assert [e.id for e in take(subscription, 599)] == ids[1:]
        live = broker.publish("c", Event("live"))
        assert [e.id for e in take(subscription, 1)] == [live]
        subscription.close()

    def test_a_far_behind_client_resumes_on_several_channels(self, broker: Broker) -> None:
        """Regression: replayed events of a stream of several channels counted against the
        queue bound, so 600 missed events per channel (all in the backlog) with a queue of
        1,000 answered every reconnect with the opening comment and nothing else, forever."""
        stream = subscribe_many(broker, ["a", "b"], None, limit=100)
        parser = EventStreamParser()
        opening = stream.get(5)
        assert opening is not None and parser.feed(opening) == []
        held = parser.last_event_id
        stream.close()
        for n in range(600):
            for channel in ("a", "b"):
                broker.publish(channel, Event({"n": n, "c": channel}))
        again = subscribe_many(broker, ["a", "b"], held, limit=100)
        events = read_all(again, 1200)
        by_channel: dict[str, list[int]] = {"a": [], "b": []}
        for event in events:
            body = json.loads(str(event.data))
            assert event.event == f"{body['c']}/message"
            by_channel[body["c"]].append(body["n"])
        assert by_channel == {"a": list(range(600)), "b": list(range(600))}
        live = broker.publish("b", Event({"n": 600, "c": "b"}))
        (event,) = read_all(again, 1)
        assert event.id is not None and event.id.split("~")[1] == live
        again.close()

    def test_replay_is_read_a_page_at_a_time(self, broker: Broker) -> None:
        """A client resuming from the oldest event holds one page, not the backlog."""
        ids = publish_many(broker, "c", 1000)
        subscription = broker.subscribe("c", ids[0], limit=10)
        assert len(subscription) <= PAGE_EVENTS
        take(subscription, 1)
        assert 0 < len(subscription) < PAGE_EVENTS
        replaying = [subscription.replaying]
        assert len(take(subscription, 998)) == 998
        assert subscription.get(0.05) is None
        replaying.append(subscription.replaying)
        assert replaying == [True, False]
        subscription.close()

    def test_a_page_is_bounded_in_bytes(self, make_broker: MakeBroker) -> None:
        broker = make_broker(backlog=100, max_event_size=20_000)
        ids = publish_many(broker, "c", 100, tag="x" * 15_000)
        subscription = broker.subscribe("c", ids[0], limit=10)
        received = take(subscription, 1)
        assert 1 <= len(subscription) <= PAGE_BYTES // 15_000
        received += take(subscription, 98)
        assert [e.id for e in received] == ids[1:]
        subscription.close()

    def test_live_events_during_a_replay_come_after_it_in_order(self, broker: Broker) -> None:
        ids = publish_many(broker, "c", 300)
        subscription = broker.subscribe("c", ids[0], limit=50)
        live = publish_many(broker, "c", 20, tag="live")
        received = take(subscription, 319)
        assert [e.id for e in received] == [*ids[1:], *live]
        subscription.close()

    def test_a_replay_overtaken_by_trimming_ends_with_the_reset_event(
        self, make_broker: MakeBroker
    ) -> None:
        """Events the client still needed were trimmed while it read slowly: it gets the
        reset event (with the position the replay ran up to), then live events; never a
        silent skip, never a loop."""
        broker = make_broker(backlog=PAGE_EVENTS * 2)
        ids = publish_many(broker, "c", PAGE_EVENTS * 2)
        subscription = broker.subscribe("c", ids[0], limit=1000)
        first = take(subscription, 1)
        more = publish_many(broker, "c", PAGE_EVENTS * 3, tag="newer")
        rest: list[Event] = []
        while not rest or rest[-1].id != more[-1]:
            rest.extend(take(subscription, 1))
        (reset,) = [e for e in rest if e.event == RESET_EVENT]
        assert json.loads(str(reset.data)) == {"reason": "expired"}
        assert reset.id == ids[-1]
        after = rest[rest.index(reset) + 1 :]
        assert [e.id for e in after] == more
        seen = [e.id for e in [*first, *rest[: rest.index(reset)]]]
        assert seen == ids[1 : len(seen) + 1]
        subscription.close()


class TestMemoryIsolation(IsolationContract):
    @pytest.fixture
    def make_broker(self) -> cabc.Iterator[MakeBroker]:
        made: list[MemoryBroker] = []

        def make(backlog: int = 1000, **options: t.Any) -> Broker:
            broker = MemoryBroker(backlog=backlog, **options)
            made.append(broker)
            return broker

        yield make
        for broker in made:
            broker.close()

    def replay_class(self) -> type:
        from flask_ssecors.brokers._memory import _Replay

        return _Replay


@pytest.fixture(scope="module")
def redis_server() -> cabc.Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.redis
@pytest.mark.timeout(60)
class TestRedisIsolation(IsolationContract):
    @pytest.fixture
    def make_broker(self, redis_server: RedisServer) -> cabc.Iterator[MakeBroker]:
        made: list[RedisBroker] = []
        prefix = f"i{secrets.token_hex(4)}:"

        def make(backlog: int = 1000, **options: t.Any) -> Broker:
            broker = RedisBroker(
                redis_server.url, backlog=backlog, prefix=prefix, timeout=1.0, **options
            )
            made.append(broker)
            return broker

        yield make
        for broker in made:
            broker.close()

    def replay_class(self) -> type:
        from flask_ssecors.brokers._redis import _Replay

        return _Replay

    def test_an_event_the_listener_cannot_encode_drops_only_its_channel(
        self, broker: Broker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The listener writes each event's id into its wire bytes; if that raises for one
        channel's event, that channel's subscribers are dropped (they resume from the backlog)
        and the listener goes on with every other channel, without reconnecting."""
        assert isinstance(broker, RedisBroker)
        real = RedisBroker._frame

        def frame(generation: str, position: tuple[int, int], encoded: bytes) -> bytes:
            if b"poison" in encoded:
                raise RuntimeError("cannot encode")
            return real(generation, position, encoded)

        monkeypatch.setattr(RedisBroker, "_frame", staticmethod(frame))
        victim = broker.subscribe("victim")
        calm = broker.subscribe("calm")
        listener = broker._listener
        ids = []
        for n in range(5):
            broker.publish("victim", Event("poison"))
            ids.append(broker.publish("calm", Event(n)))
        assert [e.id for e in take(calm, 5)] == ids
        assert wait_until_closed(victim) == "error"
        assert FAULTS.snapshot() == {"encode": 1}
        assert broker._listener is listener and broker.connected
        assert "Redis listener failed" not in caplog.text
        assert "Redis listener lost its connection" not in caplog.text
