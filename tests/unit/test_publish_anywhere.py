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


# -- gunicorn gevent: greenlets, threads, other processes (live) ---------------------------------


# -- servers that are not gevent (live) ----------------------------------------------------------
