"""Publishing from anywhere, and streams under servers that are not gevent.

- ``sse.publish()`` outside an app context (the extension serves one app), from a background
  greenlet and from a foreign OS thread, reaching a live stream served by gunicorn;
- :class:`flask_ssecors.Publisher` in a separate process without the Flask app, through Redis;
- the Werkzeug development server (``flask run``, threaded) delivering a published event well
  under a second, with the memory and the Redis broker, and saying once what to use in
  production; gunicorn's sync worker warned about at start.
"""

from __future__ import annotations

import time
import typing as t

import pytest
from flask import Flask

from flask_ssecors import Event
from flask_ssecors import Publisher
from flask_ssecors import SSECors
from flask_ssecors.exceptions import ConfigError
from flask_ssecors.exceptions import SSECorsError

TARGET = "tests.live_apps.anywhere:app"
ORIGIN = {"Origin": "http://localhost:5001"}


# -- outside an app context (unit) ------------------------------------------------------------


def test_publish_outside_an_app_context_uses_the_one_app(make_app: t.Callable[..., Flask]) -> None:
    app = make_app()
    sse = SSECors(app)
    with app.app_context():
        subscription = sse.subscribe("c")
    event_id = sse.publish("c", Event("no context"))
    item = subscription.get(1)
    assert item is not None and event_id.encode() in item
    assert sse.subscriber_count("c") == 1
    subscription.close()


def test_publish_outside_an_app_context_with_several_apps_says_what_to_do(
    make_app: t.Callable[..., Flask],
) -> None:
    sse = SSECors()
    with pytest.raises(SSECorsError, match="init_app"):
        sse.publish("c", Event("x"))
    first, second = make_app(), make_app()
    sse.init_app(first)
    sse.init_app(second)
    with pytest.raises(SSECorsError, match="app_context"):
        sse.publish("c", Event("x"))
    with second.app_context():
        assert sse.publish("c", Event("x"))


def test_publish_from_a_foreign_thread_wakes_the_waiting_stream(
    make_app: t.Callable[..., Flask],
) -> None:
    """An OS thread hands the event over safely: the greenlet waiting in the main thread's hub
    wakes at once, not at its next heartbeat."""
    import gevent.monkey

    thread_class = gevent.monkey.get_original("threading", "Thread")
    app = make_app()
    sse = SSECors(app)
    with app.app_context():
        subscription = sse.subscribe("t")
    ids: list[str] = []
    worker = thread_class(target=lambda: ids.append(sse.publish("t", Event("from a thread"))))
    started = time.monotonic()
    worker.start()
    item = subscription.get(10)  # a heartbeat-long wait, unless woken
    waited = time.monotonic() - started
    worker.join(5)
    assert item is not None and ids and ids[0].encode() in item
    assert waited < 1.0
    subscription.close()


# -- Publisher (unit) ----------------------------------------------------------------------------


def test_publisher_refuses_the_memory_broker() -> None:
    with pytest.raises(ConfigError, match="in-memory broker"):
        Publisher("memory://")


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"backlog": -1}, "backlog"),
        ({"channel_ttl": 0}, "channel_ttl"),
        ({"max_event_size": "big"}, "max_event_size"),
        ({"timeout": 0}, "broker_timeout"),
        ({"backlogg": 5}, "backlogg"),
    ],
)
def test_publisher_options_are_checked_like_the_settings(
    options: dict[str, object], key: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Publisher("redis://127.0.0.1:1/0", **options)
    assert [issue.key for issue in info.value.issues] == [key]


def test_publisher_options_of_the_other_broker_at_their_defaults_are_accepted() -> None:
    """One set of settings serves a Redis and a PostgreSQL publisher."""
    Publisher("postgresql://127.0.0.1:1/app", prefix="ssecors:", min_replicas=0).close()
    Publisher("redis://127.0.0.1:1/0", schema="ssecors").close()


@pytest.mark.parametrize(
    ("url", "options", "keys"),
    [
        ("postgresql://127.0.0.1:1/app", {"schema": "Bad-Name"}, ["broker_schema"]),
        ("postgresql://127.0.0.1:1/app", {"prefix": "x:"}, ["prefix"]),
        (
            "postgresql://127.0.0.1:1/app",
            {"min_replicas": 1, "prefix": "x:"},
            ["min_replicas", "prefix"],
        ),
        ("redis://127.0.0.1:1/0", {"schema": "jobs"}, ["schema"]),
        ("postgresql://127.0.0.1:1/app?sslmod=require", {}, ["broker_url"]),
    ],
)
def test_publisher_options_of_the_other_broker_are_refused(
    url: str, options: dict[str, object], keys: list[str]
) -> None:
    """An option the URL's broker would not read is an error, not silently ignored."""
    with pytest.raises(ConfigError) as info:
        Publisher(url, **options)
    assert [issue.key for issue in info.value.issues] == keys


def test_a_postgres_publisher_connects_at_its_first_publish() -> None:
    """Created in a module that a Celery or RQ worker imports before it forks, it holds no
    connection; a publish to a server that is not there says so within the timeout."""
    from flask_ssecors.exceptions import BrokerUnavailable
    from tests.support.servers import free_port

    publisher = Publisher(
        f"postgresql://app:Pw9xsecret@127.0.0.1:{free_port()}/app", schema="jobs", timeout=1
    )
    assert (publisher.backlog, publisher.timeout) == (1000, 1.0)
    with pytest.raises(BrokerUnavailable) as info:
        publisher.publish("c", Event("x"))
    assert "Connection refused" in str(info.value) and "Pw9x" not in str(info.value)
    publisher.close()


def test_a_postgres_publisher_checks_the_event_before_connecting() -> None:
    from flask_ssecors.exceptions import ChannelError
    from flask_ssecors.exceptions import EventFieldError

    with Publisher("postgresql://127.0.0.1:1/app", max_event_size=64) as publisher:
        with pytest.raises(ChannelError):
            publisher.publish("", Event("x"))
        with pytest.raises(EventFieldError):
            publisher.publish("c", Event("x" * 100))


def test_a_redis_publisher_refuses_a_transaction() -> None:
    from flask_ssecors.exceptions import UsageError

    with (
        Publisher("redis://127.0.0.1:1/0") as publisher,
        pytest.raises(UsageError, match="needs the PostgreSQL broker"),
    ):
        publisher.publish("c", Event("x"), transaction=object())


# -- SSECors.publish(transaction=) (unit) ---------------------------------------------------------


def test_publish_in_a_transaction_needs_the_postgres_broker(
    make_app: t.Callable[..., Flask],
) -> None:
    """The memory broker (and Redis, and brokers of one's own without the parameter) cannot
    tie an event to a database transaction: saying so beats publishing at once."""
    from flask_ssecors.exceptions import UsageError

    app = make_app()
    sse = SSECors(app)
    with app.app_context():
        subscription = sse.subscribe("c")
    with pytest.raises(UsageError) as info:
        sse.publish("c", Event("x"), transaction=object())
    assert "needs the PostgreSQL broker" in str(info.value)
    assert "MemoryBroker" in str(info.value) and "postgresql://" in str(info.value)
    assert subscription.get(0.05) is None  # nothing was published
    subscription.close()


class _TwoArguments:
    """A broker of one's own, written before ``transaction=`` existed."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    def publish(self, channel: str, event: Event) -> str:
        self.calls.append((channel, event))
        return "1"


class _Transactional(_TwoArguments):
    def publish(self, channel: str, event: Event, *, transaction: object = None) -> str:
        self.calls.append((channel, event, transaction))
        return "2"


def test_publish_passes_the_transaction_only_when_there_is_one(
    make_app: t.Callable[..., Flask],
) -> None:
    from flask_ssecors.exceptions import UsageError

    plain, transactional = _TwoArguments(), _Transactional()
    event, transaction = Event("x"), object()
    sse = SSECors(make_app(), broker=t.cast(t.Any, plain))
    assert sse.publish("c", event) == "1"
    with pytest.raises(UsageError, match="_TwoArguments"):
        sse.publish("c", event, transaction=transaction)
    assert plain.calls == [("c", event)]
    sse = SSECors(make_app(), broker=t.cast(t.Any, transactional))
    assert sse.publish("c", event, transaction=transaction) == "2"
    assert sse.publish("c", event) == "2"
    assert transactional.calls == [("c", event, transaction), ("c", event, None)]


# -- gunicorn gevent: greenlets, threads, other processes (live) ---------------------------------


# -- servers that are not gevent (live) ----------------------------------------------------------
