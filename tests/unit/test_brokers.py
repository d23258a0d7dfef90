"""The broker contract, and the in-memory broker that passes it.

docs/streams.rst ("Last-Event-ID and replay", "Slow clients", "Brokers"): ids are assigned by the
broker, monotonic per channel and told apart across restarts; replay is strictly after
``Last-Event-ID``; an unknown or expired id yields one reset event first; a subscriber that falls
more than its limit behind is dropped without slowing anyone else; ``subscriber_count`` returns to
zero.

:class:`BrokerContract` is written against the :class:`~flask_ssecors.brokers.Broker` protocol
only. Every broker reuses it by subclassing and overriding one fixture, ``make_broker`` (a
factory, since several tests need a second instance or another backlog size)::

    class TestRedisBroker(BrokerContract):
        @pytest.fixture
        def make_broker(self, redis_url): ...

Delivery may be asynchronous (a network broker), so events are read with a deadline, and
"nothing more" means "nothing within a short wait". gevent runs in-process without
monkey-patching: greenlets publish and read concurrently.
"""

from __future__ import annotations

import collections.abc as cabc
import json
import random
import re
import time
import typing as t

import gevent
import gevent.event
import pytest
from flask import Flask

from flask_ssecors._faults import FAULTS
from flask_ssecors._parser import EventStreamParser
from flask_ssecors._parser import parse_events
from flask_ssecors.brokers import Broker
from flask_ssecors.brokers import MemoryBroker
from flask_ssecors.brokers import Subscription
from flask_ssecors.brokers import SubscriptionClosed
from flask_ssecors.brokers._base import PAGE_BYTES
from flask_ssecors.brokers._base import PAGE_EVENTS
from flask_ssecors.brokers._multi import subscribe_many
from flask_ssecors.brokers._presence import JOIN_EVENT
from flask_ssecors.brokers._presence import LEAVE_EVENT
from flask_ssecors.brokers._presence import Presence
from flask_ssecors.events import Event
from flask_ssecors.events import RESET_EVENT
from flask_ssecors.exceptions import ChannelError
from flask_ssecors.exceptions import EventFieldError

#: Backlog of the default broker: larger than any test publishes unless it says otherwise.
BACKLOG = 1000
#: How long "nothing more arrives" is watched for.
QUIET = 0.05

MakeBroker = cabc.Callable[..., Broker]


def decode(item: bytes) -> Event:
    """The one event an item of a subscription carries."""
    events = parse_events(item)
    assert len(events) == 1, item
    return events[0]


def take(subscription: Subscription, count: int, timeout: float = 5.0) -> list[Event]:
    """The next ``count`` events of ``subscription``, waiting at most ``timeout`` in all."""
    deadline = time.monotonic() + timeout
    events: list[Event] = []
    while len(events) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"got {len(events)} of {count} events within {timeout} s")
        item = subscription.get(left)
        if item is not None:
            events.append(decode(item))
    return events


def assert_nothing_more(subscription: Subscription) -> None:
    item = subscription.get(QUIET)
    assert item is None, f"unexpected {item!r}"


def wait_until_closed(subscription: Subscription, timeout: float = 5.0) -> str:
    """Wait, without reading, until ``subscription`` is dropped; return the reason :meth:`get`
    then raises with. (Reading would make room for more events, so a broker whose events arrive
    over several reads might never overflow.)"""
    deadline = time.monotonic() + timeout
    while subscription.drop_reason is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"subscription still open after {timeout} s")
        gevent.sleep(0.01)
    with pytest.raises(SubscriptionClosed) as closed:
        subscription.get(0)
    return str(closed.value)


def eventually(check: t.Callable[[], object], timeout: float = 5.0) -> bool:
    """Whether ``check()`` comes true within ``timeout`` (waiting in gevent's loop, so that
    brokers' greenlets run)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        gevent.sleep(0.02)
    return True


def settled(read: t.Callable[[], object], want: object, timeout: float = 5.0) -> object:
    """``read()`` once it equals ``want``, or its last value after ``timeout`` (for the
    assertion's message)."""
    eventually(lambda: read() == want, timeout)
    return read()


def publish_many(broker: Broker, channel: str, count: int, tag: str = "") -> list[str]:
    return [broker.publish(channel, Event({"n": n, "tag": tag})) for n in range(count)]


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


class BrokerContract:
    """What every broker must do. Subclasses override :meth:`make_broker`."""

    #: Whether two broker objects see the same channels (a network broker pointed at one
    #: server): then an id from one resumes on the other, instead of being unknown.
    shares_state_across_instances: t.ClassVar[bool] = False

    @pytest.fixture
    def make_broker(self) -> cabc.Iterator[MakeBroker]:
        """A factory ``make(backlog=BACKLOG, **options) -> Broker`` (options: ``channel_ttl``,
        ``max_event_size``); every broker it made is closed after the test. Each call is a
        fresh broker, as after a process restart."""
        raise NotImplementedError("override make_broker in the broker's test class")

    @pytest.fixture
    def broker(self, make_broker: MakeBroker) -> Broker:
        return make_broker(backlog=BACKLOG)

    def id_key(self, event_id: str) -> tuple[str, int]:
        """A sort key for the ids this broker assigns (``<generation>.<n>``); override for
        others."""
        generation, _, number = event_id.partition(".")
        return generation, int(number)

    # -- ids -------------------------------------------------------------------------------

    def test_ids_are_monotonic_per_channel(self, broker: Broker) -> None:
        ids: dict[str, list[str]] = {"a": [], "b": []}
        for n in range(20):
            channel = "a" if n % 3 else "b"
            ids[channel].append(broker.publish(channel, Event(n)))
        for channel_ids in ids.values():
            keys = [self.id_key(i) for i in channel_ids]
            assert keys == sorted(keys)
            assert len(set(channel_ids)) == len(channel_ids)

    def test_ids_are_distinct_across_instances(self, make_broker: MakeBroker) -> None:
        """A restarted process must not hand out ids a client may still hold from before."""
        first = publish_many(make_broker(), "c", 5)
        second = publish_many(make_broker(), "c", 5)
        assert not set(first) & set(second)

    def test_id_from_another_instance(self, make_broker: MakeBroker) -> None:
        """After a restart, an id from before is unknown (reset), unless the state is shared."""
        old = make_broker()
        old_ids = publish_many(old, "c", 3)
        new = make_broker()
        new_ids = publish_many(new, "c", 3)
        subscription = new.subscribe("c", old_ids[0])
        if self.shares_state_across_instances:
            replayed = take(subscription, 5)
            assert [e.id for e in replayed] == [*old_ids[1:], *new_ids]
        else:
            (reset,) = take(subscription, 1)
            assert reset.event == RESET_EVENT
        assert_nothing_more(subscription)

    def test_publish_returns_the_id_subscribers_see(self, broker: Broker) -> None:
        subscription = broker.subscribe("c")
        ids = publish_many(broker, "c", 5)
        events = take(subscription, 5)
        assert [e.id for e in events] == ids
        assert [e.data for e in events] == [f'{{"n":{n},"tag":""}}' for n in range(5)]
        assert_nothing_more(subscription)

    def test_event_fields_are_kept(self, broker: Broker) -> None:
        subscription = broker.subscribe("c")
        event_id = broker.publish("c", Event("two\nlines", event="note", retry=2500))
        (event,) = take(subscription, 1)
        assert (event.data, event.event, event.id, event.retry) == (
            "two\nlines",
            "note",
            event_id,
            2500,
        )

    def test_channels_are_separate(self, broker: Broker) -> None:
        a = broker.subscribe("a")
        b = broker.subscribe("b")
        a_id = broker.publish("a", Event("for a"))
        (event,) = take(a, 1)
        assert event.id == a_id
        assert_nothing_more(b)

    # -- replay ----------------------------------------------------------------------------

    @pytest.mark.parametrize("after", [0, 3, 8])
    def test_replay_is_strictly_after_the_id(self, broker: Broker, after: int) -> None:
        ids = publish_many(broker, "c", 10)
        subscription = broker.subscribe("c", ids[after])
        replayed = take(subscription, 9 - after)
        assert [e.id for e in replayed] == ids[after + 1 :]
        assert [e.data for e in replayed] == [f'{{"n":{n},"tag":""}}' for n in range(after + 1, 10)]
        assert_nothing_more(subscription)
        live = publish_many(broker, "c", 2, tag="live")
        assert [e.id for e in take(subscription, 2)] == live
        assert_nothing_more(subscription)

    def test_replay_from_the_head_is_empty(self, broker: Broker) -> None:
        ids = publish_many(broker, "c", 4)
        subscription = broker.subscribe("c", ids[-1])
        assert_nothing_more(subscription)
        live = broker.publish("c", Event("live"))
        assert [e.id for e in take(subscription, 1)] == [live]

    def test_no_id_means_live_only(self, broker: Broker) -> None:
        publish_many(broker, "c", 4)
        subscription = broker.subscribe("c")
        assert_nothing_more(subscription)
        live = broker.publish("c", Event("live"))
        assert [e.id for e in take(subscription, 1)] == [live]

    @pytest.mark.parametrize(
        "make_id",
        [
            pytest.param(lambda last: "garbage", id="garbage"),
            pytest.param(lambda last: "-", id="dash"),
            pytest.param(lambda last: "0", id="zero"),
            pytest.param(lambda last: "-1", id="negative"),
            pytest.param(lambda last: "x-1", id="other-prefix"),
            pytest.param(lambda last: "abcdef" + last[6:], id="other-generation"),
            pytest.param(lambda last: "000000" + last[6:], id="empty-generation-ahead"),
            pytest.param(lambda last: "9" * 40, id="huge"),
            pytest.param(lambda last: last + "0", id="ahead-of-head"),
            pytest.param(lambda last: last + "\u0661", id="non-ascii-digit"),
            pytest.param(lambda last: "1-" + last, id="prefixed"),
            pytest.param(lambda last: last + "-1", id="suffixed"),
            pytest.param(lambda last: last + " ", id="trailing-space"),
        ],
    )
    def test_unknown_id_yields_one_reset_event_first(
        self, broker: Broker, make_id: cabc.Callable[[str], str]
    ) -> None:
        ids = publish_many(broker, "c", 3)
        subscription = broker.subscribe("c", make_id(ids[-1]))
        (reset,) = take(subscription, 1)
        assert reset.event == RESET_EVENT
        assert reset.id
        assert_nothing_more(subscription)
        live = broker.publish("c", Event("live"))
        assert [e.id for e in take(subscription, 1)] == [live]
        self.assert_resumes_from_head(broker, "c", reset.id)

    def test_unknown_id_on_an_empty_channel(self, broker: Broker) -> None:
        subscription = broker.subscribe("fresh", "garbage")
        (reset,) = take(subscription, 1)
        assert reset.event == RESET_EVENT
        assert reset.id is not None
        subscription.close()
        self.assert_resumes_from_head(broker, "fresh", reset.id)

    def assert_resumes_from_head(self, broker: Broker, channel: str, reset_id: str) -> None:
        """A client that reconnects with the reset event's id gets what came after it."""
        again = broker.subscribe(channel, reset_id)
        replayed: list[Event] = []
        while (item := again.get(QUIET)) is not None:
            replayed.append(decode(item))
        assert all(e.event != RESET_EVENT for e in replayed), replayed
        next_id = broker.publish(channel, Event("next"))
        events = [*replayed, *take(again, 1)]
        assert events[-1].id == next_id
        assert len({e.id for e in events}) == len(events)
        again.close()

    def test_reset_id_resumes_without_loss(self, broker: Broker) -> None:
        """Between the reset and the reconnect, events published are not lost."""
        publish_many(broker, "c", 2)
        (reset,) = take(broker.subscribe("c", "garbage"), 1)
        assert reset.id is not None
        missed = publish_many(broker, "c", 3, tag="while away")
        again = broker.subscribe("c", reset.id)
        assert [e.id for e in take(again, 3)] == missed
        assert_nothing_more(again)

    def test_backlog_is_bounded(self, make_broker: MakeBroker) -> None:
        broker = make_broker(backlog=5)
        ids = publish_many(broker, "c", 12)
        # ids[6] is the newest event no longer kept: resuming after it needs nothing missing.
        kept = broker.subscribe("c", ids[6])
        assert [e.id for e in take(kept, 5)] == ids[7:]
        assert_nothing_more(kept)
        # ids[5]: ids[6] is gone, so the client would miss it: reset.
        expired = broker.subscribe("c", ids[5])
        (reset,) = take(expired, 1)
        assert reset.event == RESET_EVENT
        assert_nothing_more(expired)
        assert reset.id is not None
        self.assert_resumes_from_head(broker, "c", reset.id)

    def test_backlog_zero_keeps_nothing(self, make_broker: MakeBroker) -> None:
        broker = make_broker(backlog=0)
        ids = publish_many(broker, "c", 3)
        at_head = broker.subscribe("c", ids[-1])
        assert_nothing_more(at_head)
        behind = broker.subscribe("c", ids[1])
        (reset,) = take(behind, 1)
        assert reset.event == RESET_EVENT
        assert_nothing_more(behind)
        fresh = broker.subscribe("c")
        live = broker.publish("c", Event("live"))
        for subscription in (at_head, behind, fresh):
            assert [e.id for e in take(subscription, 1)] == [live]
            assert_nothing_more(subscription)

    # -- subscribers -----------------------------------------------------------------------

    def test_subscriber_count(self, broker: Broker) -> None:
        assert broker.subscriber_count() == 0
        a1, a2 = broker.subscribe("a"), broker.subscribe("a", "garbage")
        b = broker.subscribe("b")
        assert (broker.subscriber_count("a"), broker.subscriber_count("b")) == (2, 1)
        assert broker.subscriber_count() == 3
        assert broker.subscriber_count("nobody") == 0
        a1.close()
        a1.close()
        assert broker.subscriber_count("a") == 1
        assert broker.subscriber_count() == 2
        a2.close()
        b.close()
        assert broker.subscriber_count() == 0
        assert broker.subscriber_count("a") == 0

    def test_closed_subscription_delivers_nothing(self, broker: Broker) -> None:
        subscription = broker.subscribe("c")
        broker.publish("c", Event("queued"))
        subscription.close()
        assert subscription.closed
        with pytest.raises(SubscriptionClosed, match="closed"):
            subscription.get(QUIET)
        broker.publish("c", Event("after"))
        with pytest.raises(SubscriptionClosed):
            subscription.get(QUIET)

    def test_get_times_out_with_none(self, broker: Broker) -> None:
        """The stream's heartbeat is a ``get`` that times out: it must return, with None."""
        subscription = broker.subscribe("c")
        started = time.monotonic()
        assert subscription.get(0.1) is None
        assert 0.08 <= time.monotonic() - started < 1.0

    def test_waiting_get_wakes_on_close(self, broker: Broker) -> None:
        subscription = broker.subscribe("c")
        waiter = gevent.spawn(subscription.get, 10)
        gevent.sleep(0.01)
        subscription.close()
        waiter.join(2)
        assert isinstance(waiter.exception, SubscriptionClosed)

    def test_broker_close_drops_everyone(self, make_broker: MakeBroker) -> None:
        broker = make_broker()
        subscriptions = [broker.subscribe(c) for c in ("a", "a", "b")]
        broker.close()
        assert broker.subscriber_count() == 0
        for subscription in subscriptions:
            assert subscription.closed
            with pytest.raises(SubscriptionClosed):
                subscription.get(QUIET)

    def test_overflow_drops_only_the_slow_subscriber(self, broker: Broker) -> None:
        slow = broker.subscribe("c", limit=5)
        fast = [broker.subscribe("c", limit=100) for _ in range(3)]
        readers = [gevent.spawn(take, subscription, 20) for subscription in fast]
        ids = []
        for n in range(20):
            ids.append(broker.publish("c", Event(n)))
            gevent.sleep(0)
        assert wait_until_closed(slow) == "overflow"
        assert slow.drop_reason == "overflow"
        gevent.joinall(readers, timeout=5, raise_error=True)
        for reader in readers:
            assert [e.id for e in reader.value] == ids
        assert broker.subscriber_count("c") == 3

    def test_overflow_is_counted_in_live_events(self, broker: Broker) -> None:
        """Replayed events do not count against the limit, and once taken, the limit is the
        queue size again: a subscriber that replayed a long backlog is not allowed to fall
        further behind than any other."""
        ids = publish_many(broker, "c", 10)
        subscription = broker.subscribe("c", ids[0], limit=3)
        live = publish_many(broker, "c", 3, tag="live")
        assert [e.id for e in take(subscription, 12)] == [*ids[1:], *live]
        publish_many(broker, "c", 3, tag="within")
        assert len(take(subscription, 3)) == 3
        publish_many(broker, "c", 4, tag="one too many")
        assert wait_until_closed(subscription) == "overflow"
        assert broker.subscriber_count("c") == 0

    def test_events_are_encoded_once(self, broker: Broker) -> None:
        """Fan-out hands every subscriber the same bytes object, encoded once."""
        subscriptions = [broker.subscribe("c") for _ in range(3)]
        broker.publish("c", Event({"big": "x" * 1000}))
        items = []
        for subscription in subscriptions:
            item = subscription.get(5)
            assert item is not None
            items.append(item)
        assert items[0] is items[1] is items[2]

    # -- concurrency -----------------------------------------------------------------------

    def test_concurrent_publishers(self, broker: Broker) -> None:
        """Greenlets publishing at once: unique ids, per-channel order kept, nothing lost."""
        watcher = broker.subscribe("c", limit=10_000)
        other = broker.subscribe("d", limit=10_000)

        def publisher(tag: str, channel: str) -> list[str]:
            ids = []
            for n in range(40):
                ids.append(broker.publish(channel, Event({"tag": tag, "n": n})))
                gevent.sleep(0)
            return ids

        jobs = [gevent.spawn(publisher, f"p{k}", "c") for k in range(5)]
        jobs.append(gevent.spawn(publisher, "other", "d"))
        gevent.joinall(jobs, timeout=10, raise_error=True)
        published = [i for job in jobs[:5] for i in job.value]
        assert len(set(published)) == 200
        received = take(watcher, 200)
        assert_nothing_more(watcher)
        keys = [self.id_key(e.id or "") for e in received]
        assert keys == sorted(keys) and len(set(keys)) == 200
        assert {e.id for e in received} == set(published)
        for job in jobs[:5]:
            mine = [e.id for e in received if e.id in set(job.value)]
            assert mine == job.value
        assert [e.id for e in take(other, 40)] == jobs[5].value

    def test_reconnecting_clients_race_publishers(self, broker: Broker) -> None:
        """Clients that keep reconnecting with their last id while events are published see
        every event exactly once, in order: subscribe-then-publish races lose nothing."""
        total = 300
        rng = random.Random(1234)
        published: list[str] = []

        def publisher() -> None:
            for n in range(total):
                published.append(broker.publish("c", Event(n)))
                if rng.random() < 0.7:
                    gevent.sleep(0)

        subscribed = gevent.event.Event()
        waiting = [5]

        def client(seed: int) -> list[str]:
            local = random.Random(seed)
            seen: list[str] = []
            last: str | None = None
            subscription = broker.subscribe("c")
            waiting[0] -= 1
            if not waiting[0]:
                subscribed.set()
            while len(seen) < total:
                for _ in range(local.randint(1, 7)):
                    item = subscription.get(5)
                    assert item is not None, f"stalled after {len(seen)} events"
                    event = decode(item)
                    assert event.event != RESET_EVENT
                    seen.append(event.id or "")
                    last = event.id
                    if len(seen) == total:
                        break
                subscription.close()
                if local.random() < 0.5:
                    gevent.sleep(0)
                subscription = broker.subscribe("c", last)
            subscription.close()
            return seen

        # Clients join before the first event so that "everything" is well defined (a
        # network broker's subscribe may yield to other greenlets before it returns).
        clients = [gevent.spawn(client, seed) for seed in range(5)]
        assert subscribed.wait(10)
        job = gevent.spawn(publisher)
        gevent.joinall([job, *clients], timeout=20, raise_error=True)
        for c in clients:
            assert c.value == published
        assert broker.subscriber_count("c") == 0

    def test_late_joiner_gets_a_contiguous_suffix(self, broker: Broker) -> None:
        total = 200
        published: list[str] = []

        def publisher() -> None:
            for n in range(total):
                published.append(broker.publish("c", Event(n)))
                gevent.sleep(0)

        def late_joiner(delay: int) -> list[str]:
            for _ in range(delay):
                gevent.sleep(0)
            subscription = broker.subscribe("c", limit=total)
            seen: list[str] = []
            # An event may reach a subscriber before its publish() has returned the id: compare
            # with the last id only once every publish returned.
            while not seen or len(published) < total or seen[-1] != published[-1]:
                item = subscription.get(0.5)
                if item is None:
                    break
                seen.append(decode(item).id or "")
            return seen

        job = gevent.spawn(publisher)
        joiners = [gevent.spawn(late_joiner, d) for d in (5, 50, 150)]
        gevent.joinall([job, *joiners], timeout=20, raise_error=True)
        for joiner in joiners:
            seen = joiner.value
            assert seen, "a late joiner got nothing"
            start = published.index(seen[0])
            assert seen == published[start:]

    # -- ids belong to their channel; names; sizes; retention ---------------------------

    def test_an_id_from_another_channel_gets_the_reset_event(self, broker: Broker) -> None:
        """Regression: a valid id of channel A presented on channel B replayed B after that
        position, skipping B's first events silently."""
        a_ids = publish_many(broker, "a", 5)
        b_ids = publish_many(broker, "b", 5)
        subscription = broker.subscribe("b", a_ids[1])
        (reset,) = take(subscription, 1)
        assert reset.event == RESET_EVENT
        assert reset.id == b_ids[-1]
        assert_nothing_more(subscription)

    @pytest.mark.parametrize(
        "name",
        ["bad\ud800name", "nul\x00", "", "x" * 513, "é" * 257],
        ids=["lone-surrogate", "nul", "empty", "too-long", "too-long-in-utf8"],
    )
    def test_bad_channel_names_are_refused_and_nothing_is_poisoned(
        self, broker: Broker, name: str
    ) -> None:
        """Regression: a lone surrogate raised UnicodeEncodeError inside the Redis broker and
        every later subscribe waited, then failed."""
        with pytest.raises(ChannelError):
            broker.publish(name, Event("x"))
        with pytest.raises(ChannelError):
            broker.subscribe(name)
        with pytest.raises(ChannelError):
            broker.subscribe(name, "abcdef.1")
        started = time.monotonic()
        subscription = broker.subscribe("good", "garbage")
        assert time.monotonic() - started < 1.0  # the next subscribe works at once
        (reset,) = take(subscription, 1)
        assert reset.event == RESET_EVENT
        event_id = broker.publish("good", Event("fine"))
        assert [e.id for e in take(subscription, 1)] == [event_id]

    def test_the_longest_accepted_name_works(self, broker: Broker) -> None:
        name = "é" * 256  # 512 bytes of UTF-8
        subscription = broker.subscribe(name)
        event_id = broker.publish(name, Event("x"))
        assert [e.id for e in take(subscription, 1)] == [event_id]

    def test_events_above_the_size_limit_are_refused(self, make_broker: MakeBroker) -> None:
        broker = make_broker(max_event_size=100)
        subscription = broker.subscribe("c")
        with pytest.raises(EventFieldError, match="SSECORS_MAX_EVENT_SIZE"):
            broker.publish("c", Event("x" * 200))
        assert_nothing_more(subscription)
        ok = broker.publish("c", Event("x" * 50))
        assert [e.id for e in take(subscription, 1)] == [ok]

    def test_channel_count(self, broker: Broker) -> None:
        start = broker.channel_count()
        a = broker.subscribe("count-a")
        b = broker.subscribe("count-b")
        assert broker.channel_count() == start + 2
        a.close()
        b.close()

    def test_an_id_of_a_forgotten_channel_gets_the_reset_event(
        self, make_broker: MakeBroker
    ) -> None:
        """A channel with no subscriber and no publish for its TTL is forgotten; an id from
        its previous life gets the reset event, even once it holds new events."""
        broker = make_broker(channel_ttl=0.3)
        old = publish_many(broker, "c", 3)
        gevent.sleep(1.5)  # the TTL, then time for the broker (or Redis) to forget it
        probe = broker.subscribe("c", old[-1])
        (reset,) = take(probe, 1)
        assert reset.event == RESET_EVENT
        probe.close()
        new = publish_many(broker, "c", 3, tag="new life")
        subscription = broker.subscribe("c", old[0])
        (reset,) = take(subscription, 1)
        assert reset.event == RESET_EVENT
        assert reset.id == new[-1]
        assert_nothing_more(subscription)

    def test_an_empty_channel_reset_id_resumes_from_the_first_event(self, broker: Broker) -> None:
        """A client reset on an empty channel gets every event published after, none lost."""
        (reset,) = take(broker.subscribe("empty", "garbage"), 1)
        assert reset.id is not None
        published = publish_many(broker, "empty", 3)
        again = broker.subscribe("empty", reset.id)
        assert [e.id for e in take(again, 3)] == published
        assert_nothing_more(again)

    # -- several channels on one stream ---------------------------------------------------

    def read_multi(
        self, subscription: Subscription, count: int, parser: EventStreamParser
    ) -> list[Event]:
        """The next ``count`` dispatched events, read as a browser reads the stream."""
        events: list[Event] = []
        deadline = time.monotonic() + 5
        while len(events) < count:
            item = subscription.get(max(deadline - time.monotonic(), 0.01))
            if item is None:
                raise AssertionError(f"got {len(events)} of {count}: {events}")
            events.extend(parser.feed(item))
        return events

    def test_several_channels_deliver_on_one_stream_told_apart_by_type(
        self, broker: Broker
    ) -> None:
        parser = EventStreamParser()
        stream = subscribe_many(broker, ["a", "b", "c"], None, limit=100)
        opening = stream.get(1)
        assert opening is not None and parser.feed(opening) == []  # nothing dispatched
        assert parser.last_event_id.count("~") == 2  # but the browser holds a position
        broker.publish("a", Event("to a"))
        broker.publish("b", Event({"n": 1}, event="tick"))
        broker.publish("c", Event("to c"))
        events = self.read_multi(stream, 3, parser)
        assert [(e.event, e.data) for e in events] == [
            ("a/message", "to a"),
            ("b/tick", '{"n":1}'),
            ("c/message", "to c"),
        ]
        assert all(e.id and e.id.count("~") == 2 for e in events)
        assert_nothing_more(stream)
        stream.close()
        assert broker.subscriber_count() == 0

    def test_several_channels_resume_each_channel_exactly_once_in_order(
        self, broker: Broker
    ) -> None:
        parser = EventStreamParser()
        stream = subscribe_many(broker, ["a", "b", "c"], None, limit=100)
        for n in range(3):
            for channel in ("a", "b", "c"):
                broker.publish(channel, Event({"n": n, "c": channel}))
        self.read_multi(stream, 9, parser)
        held = parser.last_event_id
        stream.close()
        missed = {
            c: [broker.publish(c, Event({"n": n, "c": c})) for n in range(3, 6)] for c in "ab"
        }
        missed["c"] = []
        again = subscribe_many(broker, ["a", "b", "c"], held, limit=100)
        replayed = self.read_multi(again, 6, EventStreamParser())
        by_channel: dict[str, list[int]] = {"a": [], "b": [], "c": []}
        for event in replayed:
            body = json.loads(str(event.data))
            assert event.event == f"{body['c']}/message"
            by_channel[body["c"]].append(body["n"])
        assert by_channel == {"a": [3, 4, 5], "b": [3, 4, 5], "c": []}
        assert_nothing_more(again)
        live = broker.publish("c", Event({"n": 9, "c": "c"}))
        (event,) = self.read_multi(again, 1, EventStreamParser())
        assert event.event == "c/message" and event.id is not None
        assert event.id.split("~")[2] == live
        again.close()

    def test_one_expired_channel_resets_while_the_others_resume(
        self, make_broker: MakeBroker
    ) -> None:
        broker = make_broker(backlog=2)
        parser = EventStreamParser()
        stream = subscribe_many(broker, ["a", "b"], None, limit=100)
        broker.publish("a", Event("a0"))
        broker.publish("b", Event("b0"))
        self.read_multi(stream, 2, parser)
        held = parser.last_event_id
        stream.close()
        a_missed = broker.publish("a", Event("a1"))
        for n in range(10):  # far more than b's backlog keeps
            broker.publish("b", Event(f"b{n + 1}"))
        again = subscribe_many(broker, ["a", "b"], held, limit=100)
        events = self.read_multi(again, 2, EventStreamParser())
        assert sorted(e.event or "" for e in events) == ["a/message", "b/ssecors-reset"]
        (resumed,) = [e for e in events if e.event == "a/message"]
        assert resumed.data == "a1"
        assert resumed.id is not None and resumed.id.split("~")[0] == a_missed
        assert_nothing_more(again)
        again.close()

    def test_a_stream_of_another_channel_list_resets_every_channel(self, broker: Broker) -> None:
        broker.publish("a", Event("x"))
        stream = subscribe_many(broker, ["a", "b"], "abcdef.1", limit=100)
        events = self.read_multi(stream, 2, EventStreamParser())
        assert sorted(e.event or "" for e in events) == ["a/ssecors-reset", "b/ssecors-reset"]
        stream.close()

    def test_too_many_channels_on_one_stream_are_refused(self, broker: Broker) -> None:
        with pytest.raises(ChannelError, match="at most 8"):
            subscribe_many(broker, [f"c{n}" for n in range(9)], None, limit=10)
        assert broker.subscriber_count() == 0

    # -- isolation: channel names ------------------------------------------------------------

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

        def explode(source: Subscription, item: object) -> None:
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
        from flask_ssecors._wire import Frame
        from flask_ssecors._wire import relabel as real
        from flask_ssecors.brokers import _multi

        def relabel(item: Frame, id: str, type_prefix: str) -> bytes:
            if type_prefix == "poison/":
                raise RuntimeError("cannot relabel")
            return real(item, id, type_prefix)

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
        """The broker's class behind :class:`~flask_ssecors.brokers.Replay`."""
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

    # -- presence ------------------------------------------------------------------------------

    def test_presence_counts_members_and_their_streams(self, broker: Broker) -> None:
        first = broker.subscribe("room", member="alice")
        second = broker.subscribe("room", member="alice")
        bob = broker.subscribe("room", member="bob")
        nobody = broker.subscribe("room")
        elsewhere = broker.subscribe("hall", member="carol")
        want = Presence("room", frozenset({"alice", "bob"}), 2, 3)
        assert settled(lambda: broker.presence("room"), want) == want
        first.close()
        assert eventually(lambda: broker.presence("room").connections == 2)
        assert broker.presence("room").members == {"alice", "bob"}
        second.close()
        nobody.close()
        want = Presence("room", frozenset({"bob"}), 1, 1)
        assert settled(lambda: broker.presence("room"), want) == want
        bob.close()
        want = Presence("room", frozenset(), 0, 0)
        assert settled(lambda: broker.presence("room"), want) == want
        assert broker.presence("hall").members == {"carol"}
        elsewhere.close()

    def test_presence_is_counts_only_above_the_limit(self, broker: Broker) -> None:
        streams = [broker.subscribe("big", member=f"m{n}") for n in range(3)]
        assert eventually(lambda: broker.presence("big", max_members=3).member_count == 3)
        assert broker.presence("big", max_members=3).members == {"m0", "m1", "m2"}
        counted = broker.presence("big", max_members=2)
        assert counted == Presence("big", frozenset(), 3, 3, counts_only=True)
        assert broker.presence("big", max_members=0).counts_only
        for stream in streams:
            stream.close()

    def test_join_and_leave_are_published_once_in_order_and_replayed(self, broker: Broker) -> None:
        watcher = broker.subscribe("room")
        tabs = [broker.subscribe("room", member="alice", announce=True) for _ in range(3)]
        (join,) = take(watcher, 1)
        assert join.event == JOIN_EVENT and json.loads(str(join.data)) == {"member": "alice"}
        said = broker.publish("room", Event("hello"))
        for tab in tabs[:2]:
            tab.close()
        (message,) = take(watcher, 1)
        assert message.id == said
        tabs[2].close()
        (leave,) = take(watcher, 1)
        assert leave.event == LEAVE_EVENT and json.loads(str(leave.data)) == {"member": "alice"}
        assert_nothing_more(watcher)
        assert [self.id_key(str(e.id)) for e in (join, message, leave)] == sorted(
            self.id_key(str(e.id)) for e in (join, message, leave)
        )
        replayed = broker.subscribe("room", join.id)
        assert [(e.event, e.id) for e in take(replayed, 2)] == [
            (None, message.id),
            (LEAVE_EVENT, leave.id),
        ]
        # The joiner itself sees its own join: it subscribed before announcing.
        again = broker.subscribe("room", member="bob", announce=True)
        assert [e.event for e in take(again, 1)] == [JOIN_EVENT]
        again.close()
        for subscription in (watcher, replayed):
            subscription.close()

    def test_nothing_is_announced_unless_asked(self, broker: Broker) -> None:
        watcher = broker.subscribe("quiet")
        stream = broker.subscribe("quiet", member="alice")
        assert eventually(lambda: broker.presence("quiet").member_count == 1)
        stream.close()
        assert eventually(lambda: broker.presence("quiet").member_count == 0)
        assert_nothing_more(watcher)
        watcher.close()

    def test_a_leave_follows_only_an_announced_join(self, broker: Broker) -> None:
        watcher = broker.subscribe("room")
        silent = broker.subscribe("room", member="alice")
        loud = broker.subscribe("room", member="alice", announce=True)
        assert eventually(lambda: broker.presence("room").connections == 2)
        silent.close()
        loud.close()
        assert eventually(lambda: broker.presence("room").member_count == 0)
        assert_nothing_more(watcher)
        watcher.close()

    def test_joins_are_announced_up_to_the_limit(self, make_broker: MakeBroker) -> None:
        """A burst of leaves (a worker stopping) stays within what a subscriber's queue
        holds: above ``presence_max_members`` members, joins and their leaves are silent."""
        broker = make_broker(presence_max_members=2)
        watcher = broker.subscribe("room")
        streams = [broker.subscribe("room", member=m, announce=True) for m in "abc"]
        joined = take(watcher, 2)
        assert [(e.event, json.loads(str(e.data))["member"]) for e in joined] == [
            (JOIN_EVENT, "a"),
            (JOIN_EVENT, "b"),
        ]
        assert eventually(lambda: broker.presence("room", max_members=5).member_count == 3)
        for stream in streams:
            stream.close()
        left = take(watcher, 2)
        assert sorted(json.loads(str(e.data))["member"] for e in left) == ["a", "b"]
        assert all(e.event == LEAVE_EVENT for e in left)
        assert_nothing_more(watcher)
        watcher.close()

    @pytest.mark.parametrize(
        "member", ["", "a\nb", "nul\x00", "\x85", "x" * 257, 7, b"bytes"], ids=repr
    )
    def test_a_bad_member_is_refused_and_counts_nothing(
        self, broker: Broker, member: t.Any
    ) -> None:
        with pytest.raises(ChannelError):
            broker.subscribe("room", member=member)
        assert broker.presence("room").connections == 0
        assert broker.subscriber_count("room") == 0

    def test_a_stream_of_several_channels_counts_on_each(self, broker: Broker) -> None:
        stream = subscribe_many(
            broker, ["a", "b"], None, limit=100, member="alice", announce=frozenset({"b"})
        )
        assert eventually(lambda: broker.presence("a").members == {"alice"})
        assert eventually(lambda: broker.presence("b").members == {"alice"})
        assert stream.get(1) is not None  # the opening block, which dispatches nothing
        (join,) = take(stream, 1)
        assert join.event == "b/" + JOIN_EVENT
        stream.close()
        assert eventually(lambda: broker.presence("a").member_count == 0)
        assert eventually(lambda: broker.presence("b").member_count == 0)

    def test_a_dropped_subscriber_leaves(self, broker: Broker) -> None:
        slow = broker.subscribe("room", limit=2, member="slow")
        assert eventually(lambda: broker.presence("room").member_count == 1)
        publish_many(broker, "room", 5)
        assert wait_until_closed(slow) == "overflow"
        assert eventually(lambda: broker.presence("room").member_count == 0)


class TestMemoryBroker(BrokerContract):
    @pytest.fixture
    def make_broker(self) -> cabc.Iterator[MakeBroker]:
        made: list[MemoryBroker] = []

        def make(backlog: int = BACKLOG, **options: t.Any) -> Broker:
            broker = MemoryBroker(backlog=backlog, **options)
            made.append(broker)
            return broker

        yield make
        for broker in made:
            broker.close()

    def replay_class(self) -> type:
        from flask_ssecors.brokers._memory import _Replay

        return _Replay

    def test_id_format(self) -> None:
        broker = MemoryBroker()
        ids = publish_many(broker, "c", 3)
        generation = ids[0].partition(".")[0]
        assert re.fullmatch(r"[0-9a-z]{6}", generation)
        assert ids == [f"{generation}.{n}" for n in (1, 2, 3)]
        (other,) = publish_many(broker, "other", 1)
        assert other.endswith(".1")
        assert other.partition(".")[0] != generation

    def test_generations_differ_between_instances_started_together(self) -> None:
        generations = {publish_many(MemoryBroker(), "c", 1)[0] for _ in range(200)}
        assert len(generations) == 200

    @pytest.mark.parametrize(
        "number",
        ["01", "001", "+1", " 1", "1 ", "\u0661", "\uff11", "1_0", "0x1", "", "1e0"],
    )
    def test_non_canonical_numbers_are_unknown(self, number: str) -> None:
        """Only ids the broker wrote are known: ``int()`` would accept most of these and
        replay from a position the client never held."""
        broker = MemoryBroker()
        ids = publish_many(broker, "c", 3)
        generation = ids[0].partition(".")[0]
        subscription = broker.subscribe("c", f"{generation}.{number}")
        (reset,) = take(subscription, 1)
        assert reset.event == RESET_EVENT
        assert reset.id == ids[-1]

    def test_reset_event_data_says_why(self) -> None:
        broker = MemoryBroker(backlog=2)
        ids = publish_many(broker, "c", 5)
        (unknown,) = take(broker.subscribe("c", "garbage"), 1)
        (expired,) = take(broker.subscribe("c", ids[0]), 1)
        assert unknown.data == '{"reason":"unknown-id"}'
        assert expired.data == '{"reason":"expired"}'
        assert unknown.id == expired.id == ids[-1]

    def test_empty_channel_reset_id_is_position_zero(self) -> None:
        broker = MemoryBroker()
        (reset,) = take(broker.subscribe("fresh", "garbage"), 1)
        assert reset.id == "000000.0"

    def test_channels_are_forgotten_after_their_ttl_and_their_ids_reset(self) -> None:
        broker = MemoryBroker(channel_ttl=0.2)
        ids = [broker.publish(f"c{n}", Event(n)) for n in range(100)]
        held = broker.subscribe("c0")
        assert broker.channel_count() == 100
        deadline = time.monotonic() + 3
        while broker.channel_count() > 1 and time.monotonic() < deadline:
            gevent.sleep(0.05)
        assert broker.channel_count() == 1  # c0 has a subscriber: it is kept
        (reset,) = take(broker.subscribe("c5", ids[5]), 1)
        assert reset.event == RESET_EVENT
        held.close()


def test_settings_reach_the_broker_and_subscriptions(make_app: cabc.Callable[..., Flask]) -> None:
    """``SSECORS_BACKLOG`` sizes the app's broker and ``SSECORS_QUEUE_SIZE`` (or a view's
    ``queue_size``) bounds each subscription a stream view takes."""
    from flask_ssecors import SSECors

    app = make_app(SSECORS_BACKLOG=3, SSECORS_QUEUE_SIZE=7)
    sse = SSECors(app)
    limits: list[int] = []

    @app.get("/default")
    @sse.stream()
    def default() -> t.Any:
        subscription = sse.subscribe("c")
        limits.append(subscription.limit)
        return subscription

    @app.get("/small")
    @sse.stream(queue_size=2)
    def small() -> t.Any:
        subscription = sse.subscribe("c")
        limits.append(subscription.limit)
        return subscription

    client = app.test_client()
    for path in ("/default", "/small"):
        client.get(path).close()
    assert limits == [7, 2]
    with app.app_context():
        ids = [sse.publish("c", Event(n)) for n in range(6)]
        (reset,) = take(sse.broker.subscribe("c", ids[1]), 1)
        assert reset.event == RESET_EVENT
        assert [e.id for e in take(sse.broker.subscribe("c", ids[2]), 3)] == ids[3:]
        sse.broker.close()
