"""The Redis broker in-process, against real redis-server processes on free ports.

The broker uses gevent's sockets, so it runs in the pytest process without monkey-patching; a
test waits on ``Subscription.get``, which lets the listener greenlet run. Two brokers with the
same key prefix stand for two worker processes sharing one Redis.
"""

from __future__ import annotations

import collections.abc as cabc
import logging
import os
import random
import secrets
import signal
import subprocess
import sys
import textwrap
import time
import typing as t
from pathlib import Path

import gevent
import gevent.event
import pytest
import redis
from flask import Flask

from flask_ssecors import SSECors
from flask_ssecors._faults import FAULTS
from flask_ssecors._parser import parse_events
from flask_ssecors._wire import Frame
from flask_ssecors.brokers import create_broker
from flask_ssecors.brokers._presence import Presence
from flask_ssecors.brokers._redis import _parse_event_id as parse_event_id
from flask_ssecors.brokers._redis import RedisBroker
from flask_ssecors.brokers._redis_listener import LINGER
from flask_ssecors.events import Event
from flask_ssecors.events import JOIN_EVENT
from flask_ssecors.events import LEAVE_EVENT
from flask_ssecors.events import RESET_EVENT
from flask_ssecors.exceptions import BrokerUnavailable
from tests.support.servers import RedisServer
from tests.support.servers import restart_on_same_port
from tests.support.servers import ROOT
from tests.unit.test_brokers import BACKLOG
from tests.unit.test_brokers import BrokerContract
from tests.unit.test_brokers import eventually
from tests.unit.test_brokers import take as take_events
from tests.unit.test_brokers import wait_until_closed

if t.TYPE_CHECKING:
    from flask_ssecors.brokers import Subscription

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]

MakeBroker = cabc.Callable[..., RedisBroker]


@pytest.fixture(scope="module")
def redis_server() -> cabc.Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_broker(redis_server: RedisServer) -> cabc.Iterator[MakeBroker]:
    """Brokers sharing one key prefix (like the workers of one app); all closed afterwards."""
    made: list[RedisBroker] = []
    prefix = f"t{secrets.token_hex(4)}:"

    def make(url: str | None = None, **options: t.Any) -> RedisBroker:
        options.setdefault("prefix", prefix)
        options.setdefault("timeout", 1.0)
        broker = RedisBroker(url or redis_server.url, **options)
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.close()


@pytest.fixture
def admin(redis_server: RedisServer) -> cabc.Iterator[redis.Redis[bytes]]:
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_server.url)
    try:
        yield client
    finally:
        client.close()


def take(subscription: Subscription, count: int, timeout: float = 5.0) -> list[bytes]:
    """The next ``count`` frames; fails when they do not arrive within ``timeout`` in total."""
    deadline = time.monotonic() + timeout
    frames: list[bytes] = []
    while len(frames) < count:
        left = deadline - time.monotonic()
        item = subscription.get(max(left, 0.0)) if left > 0 else None
        if item is None:
            raise AssertionError(f"got {len(frames)} of {count} frames: {frames!r}")
        frames.append(item)
    return frames


def nothing_more(subscription: Subscription, wait: float = 0.3) -> bool:
    return subscription.get(wait) is None


def event_of(frame: bytes) -> Event:
    (event,) = parse_events(frame)
    return event


def ids_of(frames: cabc.Iterable[bytes]) -> list[str | None]:
    return [event_of(frame).id for frame in frames]


def connections(admin: redis.Redis[bytes], name_prefix: str) -> list[dict[str, t.Any]]:
    return [c for c in admin.client_list() if str(c.get("name", "")).startswith(name_prefix)]


# -- ids, encoding, replay -------------------------------------------------------------------


def test_ids_are_epoch_dot_stream_id_and_increase(make_broker: MakeBroker) -> None:
    broker = make_broker()
    ids = [broker.publish("ids", Event(str(n))) for n in range(20)]
    parsed = [parse_event_id(value) for value in ids]
    assert all(p is not None for p in parsed)
    epochs = {p[0] for p in parsed if p}
    assert len(epochs) == 1
    streams = [p[1] for p in parsed if p]
    assert streams == sorted(streams)
    assert len(set(streams)) == len(streams)


@pytest.mark.parametrize(
    "event",
    [
        Event("plain"),
        Event({"n": 1}, event="tick"),
        Event("two\nlines", event="m", retry=1500),
        Event("with a note", comment="a note\nover two lines"),
        Event(None, comment="only a comment"),
        Event("own id replaced", id="client-chosen"),
    ],
)
def test_delivered_bytes_match_the_memory_broker_format(
    make_broker: MakeBroker, event: Event
) -> None:
    """Both brokers put the ``id:`` line where ``Event.encode()`` writes it (after comments)."""
    broker = make_broker()
    subscription = broker.subscribe("format")
    event_id = broker.publish("format", event)
    (frame,) = take(subscription, 1)
    assert frame == event.with_id(event_id).encode()
    # A client that saw the channel empty gets everything it holds now.
    (replayed,) = take(broker.subscribe("format", last_event_id="000000.0-0"), 1)
    assert replayed == frame


def test_a_position_the_channel_never_had_gets_the_reset_event(make_broker: MakeBroker) -> None:
    """An id is a position the broker gave out: one made up next to a real one (the right
    generation, a stream id after the last entry's sequence or before the first entry) is
    unknown, not a place to resume from."""
    broker = make_broker()
    ids = [broker.publish("made-up", Event(n)) for n in range(3)]
    parsed, first = parse_event_id(ids[-1]), parse_event_id(ids[0])
    assert parsed is not None and first is not None
    generation, (ms, seq) = parsed
    before = first[1][0] - 1
    for made_up in (f"{generation}.{ms}-{seq + 7}", f"{generation}.{before}-0"):
        (reset,) = take(broker.subscribe("made-up", made_up), 1)
        assert event_of(reset).event == RESET_EVENT


def test_events_published_on_one_worker_reach_and_replay_on_another(
    make_broker: MakeBroker,
) -> None:
    first, second = make_broker(), make_broker()
    on_second = second.subscribe("room")
    ids = [first.publish("room", Event(str(n))) for n in range(5)]
    assert ids_of(take(on_second, 5)) == ids
    # A client that saw the first two on worker 1 resumes on worker 2: exactly the rest.
    resumed = second.subscribe("room", last_event_id=ids[1])
    assert ids_of(take(resumed, 3)) == ids[2:]
    assert nothing_more(resumed)


@pytest.mark.parametrize(("behind", "reset"), [(0, False), (1, False), (5, False), (6, True)])
def test_replay_goes_back_exactly_backlog_events(
    make_broker: MakeBroker, behind: int, reset: bool
) -> None:
    broker = make_broker(backlog=5)
    ids = [broker.publish("bl", Event(str(n))) for n in range(10)]
    resume_at = ids[len(ids) - 1 - behind]
    subscription = broker.subscribe("bl", last_event_id=resume_at)
    if reset:
        (frame,) = take(subscription, 1)
        assert event_of(frame).event == RESET_EVENT
    else:
        assert ids_of(take(subscription, behind)) == ids[len(ids) - behind :]
    assert nothing_more(subscription, 0.1)


def test_an_id_older_than_the_backlog_gets_the_reset_event_after_maxlen_trimming(
    make_broker: MakeBroker, admin: redis.Redis[bytes]
) -> None:
    """Regression: the broker used ``max-deleted-entry-id`` to spot trimmed entries, but
    ``XADD MAXLEN`` trimming does not update it (only ``XDEL`` does), so a client far behind
    was replayed the few entries still kept and silently missed the hundreds in between."""
    broker = make_broker(backlog=5)
    ids = [broker.publish("trim", Event(str(n))) for n in range(400)]
    info = admin.xinfo_stream(broker.keys.channel("trim"))
    assert info["length"] < 400  # Redis trimmed
    assert info["max-deleted-entry-id"] in (b"0-0", "0-0")  # and did not record it
    for resume_at in (ids[0], ids[200], ids[-50]):
        (frame,) = take(broker.subscribe("trim", last_event_id=resume_at), 1)
        event = event_of(frame)
        assert event.event == RESET_EVENT
        assert event.data == '{"reason":"expired"}'


@pytest.mark.parametrize(
    "last_event_id",
    ["nonsense", "0-1", "deadbeef.1-0", "x" * 40 + ".1-0", "abc.99999999999999-0", "abc.1-2-3"],
)
def test_unknown_ids_get_the_reset_event_then_live_events(
    make_broker: MakeBroker, last_event_id: str
) -> None:
    broker = make_broker()
    known = broker.publish("unknown", Event("before"))
    epoch = known.partition(".")[0]
    last_event_id = last_event_id.replace("abc", epoch)
    subscription = broker.subscribe("unknown", last_event_id=last_event_id)
    (reset,) = take(subscription, 1)
    assert event_of(reset).event == RESET_EVENT
    assert event_of(reset).id == known  # resuming from the reset's id misses nothing
    live = broker.publish("unknown", Event("after"))
    assert ids_of(take(subscription, 1)) == [live]


# -- fan-out, subscribers joining, the listener ----------------------------------------------


def test_one_listener_connection_per_process_for_every_channel_and_subscriber(
    make_broker: MakeBroker, admin: redis.Redis[bytes]
) -> None:
    worker, publisher = make_broker(pool_size=4), make_broker()
    subscriptions = [worker.subscribe(f"many:{n % 30}") for n in range(600)]
    for n in range(30):
        publisher.publish(f"many:{n}", Event(str(n)))
    for subscription in subscriptions:
        assert len(take(subscription, 1)) == 1
    pid = os.getpid()
    assert len(connections(admin, f"ssecors-listen-{pid}")) == 1  # the publisher never listens
    assert len(connections(admin, f"ssecors-cmd-{pid}")) <= 4 + 8
    (listening,) = connections(admin, f"ssecors-listen-{pid}")
    assert int(listening["ssub"]) == 30  # one sharded subscription per followed channel
    for subscription in subscriptions:
        subscription.close()
    assert int(connections(admin, f"ssecors-listen-{pid}")[0]["ssub"]) == 30  # they linger
    deadline = time.monotonic() + 3 * LINGER
    while (
        int(connections(admin, f"ssecors-listen-{pid}")[0]["ssub"]) and time.monotonic() < deadline
    ):
        gevent.sleep(0.02)
    assert int(connections(admin, f"ssecors-listen-{pid}")[0]["ssub"]) == 0  # all unsubscribed
    assert worker._listener.leaving == {}


def test_subscriber_count_goes_back_to_zero(make_broker: MakeBroker) -> None:
    broker = make_broker()
    subscriptions = [broker.subscribe(f"count:{n % 3}") for n in range(10)]
    assert broker.subscriber_count() == 10
    assert broker.subscriber_count("count:0") == 4
    broker.publish("count:1", Event("x"))
    for subscription in subscriptions:
        subscription.close()
    assert broker.subscriber_count() == 0
    assert broker.subscriber_count("count:0") == 0
    assert broker._listener.channels == {}


def test_a_new_channel_joins_the_waiting_listener_at_once(
    make_broker: MakeBroker, admin: redis.Redis[bytes]
) -> None:
    """A channel subscribed while the listener waits for events (pings every 5 s) is
    subscribed to at once, and its first event arrives without delay."""
    worker, publisher = make_broker(), make_broker()
    old = worker.subscribe("wake:old")
    delays = []
    for n in range(10):
        gevent.sleep(0.1)  # the listener waits, subscribed to the channels so far
        (waiting,) = connections(admin, f"ssecors-listen-{os.getpid()}")
        assert int(waiting["ssub"]) == n + 1
        subscription = worker.subscribe(f"wake:new{n}")
        began = time.monotonic()
        publisher.publish(f"wake:new{n}", Event("first"))
        assert len(take(subscription, 1, timeout=2.0)) == 1
        delays.append(time.monotonic() - began)
    publisher.publish("wake:old", Event("still read"))
    assert len(take(old, 1)) == 1
    delays.sort()
    median, worst = delays[5] * 1000, delays[-1] * 1000
    print(f"first event on a new channel: median {median:.1f} ms, max {worst:.1f} ms")
    assert delays[-1] < 0.5


def test_subscribers_joining_while_events_flow_get_each_event_once_in_order(
    make_broker: MakeBroker,
) -> None:
    """Subscribers resume, on another worker, from ids anywhere in a busy stream: some ahead
    of that worker's listener, some behind; each gets exactly the events after its id."""
    publisher, worker = make_broker(), make_broker()
    watcher = worker.subscribe("busy")
    published: list[str] = []

    def publish_all() -> None:
        for n in range(300):
            published.append(publisher.publish("busy", Event(str(n))))
            gevent.sleep(0.001 if n % 3 else 0)

    task = gevent.spawn(publish_all)
    rng = random.Random(7)
    joined: list[tuple[str, Subscription]] = []
    while not task.dead:
        gevent.sleep(rng.uniform(0, 0.004))
        if published:
            resume_at = rng.choice(published[-30:])
            joined.append((resume_at, worker.subscribe("busy", last_event_id=resume_at)))
    task.get()
    assert len(joined) > 20
    assert ids_of(take(watcher, 300)) == published
    for resume_at, subscription in joined:
        expected = published[published.index(resume_at) + 1 :]
        assert ids_of(take(subscription, len(expected))) == expected
        assert nothing_more(subscription, 0.01)


@pytest.mark.parametrize("live_during_snapshot", [False, True])
def test_a_client_ahead_of_this_workers_listener_gets_no_duplicates(
    make_broker: MakeBroker, monkeypatch: pytest.MonkeyPatch, live_during_snapshot: bool
) -> None:
    """Regression: a client that saw events on worker 1 and reconnected to worker 2 before
    worker 2's listener delivered them got them twice (replay stopped at the listener's cursor,
    then the listener delivered everything after it)."""
    publisher, worker = make_broker(), make_broker()
    keep = worker.subscribe("lag")
    dispatch, snapshot = worker._listener._handle, worker._snapshot

    def slow_dispatch(replies: t.Any) -> None:
        gevent.sleep(0.1)
        dispatch(replies)

    def slow_snapshot(*args: t.Any) -> t.Any:
        gevent.sleep(0.3)
        return snapshot(*args)

    monkeypatch.setattr(worker._listener, "_handle", slow_dispatch)
    if live_during_snapshot:
        monkeypatch.setattr(worker, "_snapshot", slow_snapshot)
    ids = [publisher.publish("lag", Event(str(n))) for n in range(4)]
    resumed = worker.subscribe("lag", last_event_id=ids[1])  # seen on worker 1
    assert ids_of(take(resumed, 2)) == ids[2:]
    assert nothing_more(resumed)
    assert ids_of(take(keep, 4)) == ids


def test_a_stale_read_of_a_retracked_channel_delivers_nothing_twice(
    make_broker: MakeBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: when a channel's last subscriber left while the listener still read it, and a
    new subscriber joined before what was read was handled, those events were delivered again
    on top of the new subscriber's replay."""
    publisher, worker = make_broker(), make_broker()
    first = publisher.publish("stale", Event("0"))
    gone = worker.subscribe("stale")
    gevent.sleep(0.1)  # the listener waits, subscribed to "stale"
    dispatch = worker._listener._handle

    def slow_dispatch(replies: t.Any) -> None:
        gevent.sleep(0.2)
        dispatch(replies)

    monkeypatch.setattr(worker._listener, "_handle", slow_dispatch)
    gone.close()
    second = publisher.publish("stale", Event("1"))  # read while the channel is leaving
    resumed = worker.subscribe("stale", last_event_id=first)
    assert ids_of(take(resumed, 1)) == [second]
    assert nothing_more(resumed, 0.5)


def test_a_subscriber_waiting_for_a_channels_first_read_joins_a_live_channel(
    make_broker: MakeBroker,
) -> None:
    """Regression: a subscriber that waited for another one's first snapshot of a channel
    joined that channel's state even when the other had left meanwhile, which dropped the
    channel: it was registered on a channel the listener no longer read, and got nothing."""
    publisher, worker = make_broker(), make_broker()

    def come_and_go() -> None:
        worker.subscribe("brief").close()  # nothing yields between the two

    first = gevent.spawn(come_and_go)
    second = gevent.spawn(worker.subscribe, "brief")  # waits for the first one's snapshot
    gevent.joinall([first, second], timeout=5, raise_error=True)
    subscription = second.value
    assert worker.subscriber_count("brief") == 1
    event_id = publisher.publish("brief", Event("hello"))
    assert ids_of(take(subscription, 1)) == [event_id]


# -- faults ----------------------------------------------------------------------------------


def test_publish_raises_broker_unavailable_at_once_when_redis_is_down(
    make_broker: MakeBroker,
) -> None:
    server = RedisServer().start()
    broker = make_broker(server.url, timeout=1.0)
    broker.publish("down", Event("up"))
    server.stop()
    began = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        broker.publish("down", Event("x"))
    assert time.monotonic() - began < 1.0
    with pytest.raises(BrokerUnavailable):
        broker.subscribe("down:new")


def test_publish_raises_broker_unavailable_within_the_timeout_when_redis_hangs(
    make_broker: MakeBroker,
) -> None:
    server = RedisServer().start()
    try:
        broker = make_broker(server.url, timeout=0.5)
        broker.publish("hang", Event("up"))
        assert server.process is not None
        server.process.send_signal(signal.SIGSTOP)
        try:
            for _ in range(3):
                began = time.monotonic()
                with pytest.raises(BrokerUnavailable):
                    broker.publish("hang", Event("x"))
                elapsed = time.monotonic() - began
                print(f"publish failed after {elapsed * 1000:.0f} ms (timeout 500 ms)")
                assert 0.45 < elapsed < 1.0
        finally:
            server.process.send_signal(signal.SIGCONT)
    finally:
        server.stop()


def test_the_listener_reconnects_and_delivers_what_was_published_meanwhile(
    make_broker: MakeBroker, redis_server: RedisServer
) -> None:
    publisher, worker = make_broker(), make_broker()
    subscription = worker.subscribe("reconnect")
    ids = [publisher.publish("reconnect", Event("before"))]
    assert ids_of(take(subscription, 1)) == ids
    with redis.Redis.from_url(redis_server.url) as admin:
        killed = admin.client_kill_filter(_type="normal", skipme=True)
        assert killed >= 1
    ids += [publisher.publish("reconnect", Event(str(n))) for n in range(5)]
    assert ids_of(take(subscription, 5)) == ids[1:]
    assert nothing_more(subscription)


def test_redis_killed_and_restarted_with_its_data_loses_and_repeats_nothing(
    make_broker: MakeBroker, tmp_path: Path
) -> None:
    server = RedisServer(appendonly=True, directory=tmp_path).start()
    try:
        with redis.Redis.from_url(server.url) as admin:
            admin.config_set("appendfsync", "always")  # acknowledged writes survive SIGKILL
        publisher, worker = make_broker(server.url), make_broker(server.url)
        subscription = worker.subscribe("durable")
        ids = [publisher.publish("durable", Event(str(n))) for n in range(5)]
        server.stop(signal.SIGKILL)
        for _ in range(3):
            with pytest.raises(BrokerUnavailable):
                publisher.publish("durable", Event("lost"))
        gevent.sleep(0.5)
        server = restart_on_same_port(server, appendonly=True, directory=tmp_path)
        restarted = time.monotonic()
        ids += [publisher.publish("durable", Event(str(n))) for n in range(5, 10)]
        frames = take(subscription, 10)
        print(f"recovered {time.monotonic() - restarted:.3f} s after the restart")
        assert ids_of(frames) == ids
        assert nothing_more(subscription)
        assert worker.connected
    finally:
        server.stop()


def test_redis_restarted_without_its_data_sends_the_reset_event(
    make_broker: MakeBroker,
) -> None:
    server = RedisServer().start()
    try:
        publisher, worker = make_broker(server.url), make_broker(server.url)
        subscription = worker.subscribe("lost")
        old = publisher.publish("lost", Event("old"))
        assert ids_of(take(subscription, 1)) == [old]
        server.stop(signal.SIGKILL)
        server = restart_on_same_port(server)
        (reset,) = take(subscription, 1, timeout=5.0)
        event = event_of(reset)
        assert event.event == RESET_EVENT
        assert event.data == '{"reason":"broker-restarted"}'
        assert event.id is not None and not event.id.startswith(old.partition(".")[0])
        new = publisher.publish("lost", Event("new"))
        assert ids_of(take(subscription, 1)) == [new]
        # A client holding an id from before the loss is told so when it reconnects.
        (frame,) = take(worker.subscribe("lost", last_event_id=old), 1)
        assert event_of(frame).event == RESET_EVENT
    finally:
        server.stop()


def test_a_channel_first_read_after_the_data_loss_gets_no_spurious_reset(
    make_broker: MakeBroker,
) -> None:
    """Regression: after Redis lost its data, the listener reset every channel it tracked,
    including one whose first snapshot was already taken from the new data; that subscriber
    got a reset it did not need and every event again from the start of the stream. Now a
    subscriber waits until the listener has caught up after a reconnection, so its snapshot
    is always from the data the listener reads."""
    server = RedisServer().start()
    try:
        publisher, worker = make_broker(server.url), make_broker(server.url)
        before = worker.subscribe("old-channel")
        publisher.publish("old-channel", Event("before the loss"))
        assert event_of(take(before, 1)[0]).data == "before the loss"
        server.stop(signal.SIGKILL)
        server = restart_on_same_port(server)
        ids = [publisher.publish("new-channel", Event(str(n))) for n in range(2)]
        after = worker.subscribe("new-channel", last_event_id=ids[0])
        ids.append(publisher.publish("new-channel", Event("2")))
        assert ids_of(take(after, 2)) == ids[1:]
        assert nothing_more(after)
        publisher.publish("old-channel", Event("first of its new life"))
        frames = take(before, 2)
        assert event_of(frames[0]).event == RESET_EVENT
        assert event_of(frames[1]).data == "first of its new life"
    finally:
        server.stop()


def test_close_releases_the_connections(make_broker: MakeBroker, admin: redis.Redis[bytes]) -> None:
    broker = make_broker(prefix="close:")
    subscription = broker.subscribe("x")
    broker.publish("x", Event("1"))
    take(subscription, 1)
    pid = os.getpid()
    before = len(connections(admin, f"ssecors-listen-{pid}")) + len(
        connections(admin, f"ssecors-cmd-{pid}")
    )
    broker.close()
    assert subscription.closed
    gevent.sleep(0.1)
    after = len(connections(admin, f"ssecors-listen-{pid}")) + len(
        connections(admin, f"ssecors-cmd-{pid}")
    )
    assert after <= before - 2


def test_publishes_reuse_their_connection_past_1024_open_descriptors(
    make_broker: MakeBroker, admin: redis.Redis[bytes]
) -> None:
    """A worker holding thousands of streams gives its Redis connections descriptors past
    1,023, which ``select`` cannot watch: the idle check must not take that for a dead
    connection and open a new one for every publish."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.fail(f"this test needs 1,200 open files; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held: list[int] = []
    try:
        while not held or held[-1] < 1100:
            held.append(os.dup(0))
        broker = make_broker(prefix="manyfds:")
        subscription = broker.subscribe("x")
        broker.publish("x", Event("warm"))  # opens the publish connection, past 1,023
        before = admin.info("stats")["total_connections_received"]
        for n in range(50):
            broker.publish("x", Event(str(n)))
        opened = admin.info("stats")["total_connections_received"] - before
        assert opened <= 1, f"{opened} connections opened for 50 publishes"
        assert len(take(subscription, 51)) == 51
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_presence_is_shared_by_the_workers_of_an_app(make_broker: MakeBroker) -> None:
    one, two = make_broker(), make_broker()
    watcher = one.subscribe("room")
    here = one.subscribe("room", member="alice", announce=True)
    there = two.subscribe("room", member="alice", announce=True)
    assert eventually(lambda: two.presence("room").connections == 2)
    assert one.presence("room") == Presence("room", frozenset({"alice"}), 1, 2)
    here.close()
    assert eventually(lambda: two.presence("room").connections == 1)
    there.close()
    assert eventually(lambda: one.presence("room").member_count == 0)
    assert [e.event for e in take_events(watcher, 2)] == [JOIN_EVENT, LEAVE_EVENT]
    assert nothing_more(watcher)
    watcher.close()


# -- configuration and the extension ---------------------------------------------------------


def test_create_broker_passes_the_settings(redis_server: RedisServer) -> None:
    broker = create_broker(redis_server.url, backlog=7, timeout=0.25)
    try:
        assert isinstance(broker, RedisBroker)
        assert (broker.backlog, broker.timeout) == (7, 0.25)
    finally:
        broker.close()


def test_a_missing_redis_package_is_a_config_error_at_init_app() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["redis"] = None  # what an environment without the extra looks like
        from flask import Flask
        from flask_ssecors import SSECors
        from flask_ssecors.exceptions import ConfigError
        app = Flask("x")
        app.config.update(
            SSECORS_ALLOWED_ORIGINS=["https://app.example.com"],
            SSECORS_BROKER_URL="redis://127.0.0.1:1/0",
        )
        try:
            SSECors(app)
        except ConfigError as error:
            print("ConfigError", [issue.key for issue in error.issues])
            print(error)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "ConfigError ['SSECORS_BROKER_URL']" in out.stdout
    assert "flask-ssecors[redis]" in out.stdout


def test_the_memory_broker_warns_with_web_concurrency_above_one(
    make_app: cabc.Callable[..., Flask],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    redis_server: RedisServer,
) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "2")
    with caplog.at_level(logging.WARNING, logger="flask_ssecors"):
        SSECors(make_app())
    assert "in-memory broker" in caplog.text
    assert "WEB_CONCURRENCY=2" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="flask_ssecors"):
        sse = SSECors(make_app(SSECORS_BROKER_URL=redis_server.url))
    assert caplog.text == ""
    for state in list(sse._states):
        state.broker.close()


def test_a_stream_opened_while_redis_is_down_tells_the_client_to_retry(
    make_app: cabc.Callable[..., Flask],
) -> None:
    with RedisServer() as server:
        url = server.url
    app = make_app(SSECORS_BROKER_URL=url, SSECORS_BROKER_TIMEOUT=0.5)
    sse = SSECors(app)

    @app.get("/events")
    @sse.stream()
    def events() -> t.Any:
        return sse.subscribe("anything")

    try:
        response = app.test_client().get("/events")
        assert response.status_code == 200
        assert response.data.startswith(b"retry: ")
        assert parse_events(response.data) == []
    finally:
        for state in list(sse._states):
            state.broker.close()


def test_publish_and_replay_through_the_extension(
    make_app: cabc.Callable[..., Flask], redis_server: RedisServer
) -> None:
    app = make_app(SSECORS_BROKER_URL=redis_server.url)
    sse = SSECors(app, broker=RedisBroker(redis_server.url, prefix=f"x{secrets.token_hex(4)}:"))

    @app.get("/events")
    @sse.stream()
    def events() -> t.Any:
        return sse.subscribe("ext")

    try:
        with app.app_context():
            ids = [sse.publish("ext", Event(str(n))) for n in range(3)]
        with app.test_client().open_stream(  # type: ignore[attr-defined]
            "/events", headers={"Last-Event-ID": ids[0]}
        ) as reader:
            assert [event.id for event in reader.events(2)] == ids[1:]
    finally:
        sse._broker.close()  # type: ignore[union-attr]


# -- the broker contract ---------------------------------------------------------------------


class TestRedisBrokerContract(BrokerContract):
    """The contract every broker passes; two brokers on one key prefix share their channels,
    as the worker processes of one app do."""

    shares_state_across_instances = True

    @pytest.fixture
    def make_broker(self, redis_server: RedisServer) -> cabc.Iterator[MakeBroker]:
        made: list[RedisBroker] = []
        prefix = f"c{secrets.token_hex(4)}:"

        def make(backlog: int = BACKLOG, **options: t.Any) -> RedisBroker:
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
        self, broker: RedisBroker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The listener writes each event's id into its wire bytes; if that raises for one
        channel's event, that channel's subscribers are dropped (they resume from the backlog)
        and the listener goes on with every other channel, without reconnecting."""
        from flask_ssecors.brokers import _redis_layout
        from flask_ssecors.brokers import _redis_listener

        real = _redis_layout.frame_at

        def frame(generation: str, position: tuple[int, int], encoded: bytes) -> Frame:
            if b"poison" in encoded:
                raise RuntimeError("cannot encode")
            return real(generation, position, encoded)

        monkeypatch.setattr(_redis_listener, "frame_at", frame)
        victim = broker.subscribe("victim")
        calm = broker.subscribe("calm")
        listening = list(broker._greenlets)
        ids = []
        for n in range(5):
            broker.publish("victim", Event("poison"))
            ids.append(broker.publish("calm", Event(n)))
        assert [e.id for e in take_events(calm, 5)] == ids
        assert wait_until_closed(victim) == "error"
        assert FAULTS.snapshot() == {"encode": 1}
        assert broker._greenlets == listening and not any(g.dead for g in listening)
        assert broker.connected
        assert "Redis listener failed" not in caplog.text
        assert "Redis listener lost its connection" not in caplog.text

    def id_key(self, event_id: str) -> tuple[str, int]:
        parsed = parse_event_id(event_id)
        assert parsed is not None, event_id
        generation, (ms, seq) = parsed
        return generation, ms << 64 | seq
