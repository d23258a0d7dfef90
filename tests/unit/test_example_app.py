"""The example app's routes, through the Flask test client (fast; no server, no browser).

The browser tests (tests/browser/) and the nginx test run the same app under gunicorn.
"""

from __future__ import annotations

import json
import os
import random
import runpy
import typing as t

import gevent
import pytest
from flask import Flask

from example_app import create_app
from example_app.app import ssecors_environment
from example_app.extensions import sse
from example_app.streams import TICKER_CHANNEL
from example_app.ticker import price
from example_app.ticker import Ticker
from flask_ssecors import Event
from flask_ssecors.exceptions import ConfigError
from flask_ssecors.testing import EventStreamReader
from flask_ssecors.testing import SSETestClient
from tests.support.example_server import CONFIG
from tests.support.example_server import ipv6_loopback_works

API = "http://localhost:5000"
PAGE = "http://localhost:5001"
REFUSED = "http://127.0.0.1:5001"
#: The lobby's join and leave events on the page's stream of two channels.
JOIN, LEAVE = "room:lobby/ssecors-join", "room:lobby/ssecors-leave"
PRESENCE_EVENTS = (JOIN, LEAVE)


def build(**config: t.Any) -> Flask:
    settings = {
        "TESTING": True,
        "EXAMPLE_API_PORT": 5000,
        "EXAMPLE_PAGE_PORT": 5001,
        "EXAMPLE_TICK_SECONDS": 0.05,
        "EXAMPLE_TEST_HOOKS": True,
        "SECRET_KEY": "test",
        **config,
    }
    app = create_app(settings)
    app.test_client_class = SSETestClient
    return app


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(("SSECORS_", "EXAMPLE_")) or key in ("API_PORT", "PAGE_PORT"):
            monkeypatch.delenv(key)


@pytest.fixture
def app() -> Flask:
    return build()


@pytest.fixture
def api(app: Flask) -> SSETestClient:
    return t.cast(SSETestClient, app.test_client())


@pytest.fixture
def page(app: Flask) -> SSETestClient:
    return t.cast(SSETestClient, app.test_client())


def signed_in(client: SSETestClient) -> dict[str, t.Any]:
    response = client.get("/me", base_url=API, headers={"Origin": PAGE})
    assert response.status_code == 200
    return t.cast("dict[str, t.Any]", response.get_json())


def views(app: Flask) -> dict[str, int]:
    return dict(app.extensions["ssecors_example"].observer.views)


# -- the two origins -----------------------------------------------------------------------------


def test_page_is_served_on_the_page_port_with_its_settings(page: SSETestClient) -> None:
    response = page.get("/", base_url=PAGE)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    raw = html.split('<script id="demo-settings" type="application/json">', 1)[1]
    settings = json.loads(raw.split("</script>", 1)[0])
    assert settings["api"] == API
    assert settings["allowedOrigins"] == [PAGE]
    assert settings["refusedOrigin"] == REFUSED
    assert settings["room"] == "lobby"
    assert settings["resetEvent"] == "ssecors-reset"


def test_page_has_a_strict_content_security_policy(page: SSETestClient) -> None:
    csp = page.get("/", base_url=PAGE).headers["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert directives["connect-src"] == API


@pytest.mark.parametrize("name", ["demo.js", "demo.css", "favicon.svg"])
def test_page_assets_are_served_on_the_page_port_only(page: SSETestClient, name: str) -> None:
    response = page.get(f"/static/{name}", base_url=PAGE)
    response.close()
    assert response.status_code == 200
    assert page.get(f"/static/{name}", base_url=API).status_code == 404


def test_api_root_describes_the_api(api: SSETestClient) -> None:
    body = api.get("/", base_url=API).get_json()
    assert body["page"] == f"{PAGE}/"
    assert body["streams"][:3] == ["/page-events", "/ticks", "/feed"]


@pytest.mark.parametrize(
    "path",
    ["/me", "/page-events", "/ticks", "/ticks/recent", "/rooms/lobby", "/rooms/lobby/events"],
)
def test_api_routes_are_not_served_on_the_page_port(page: SSETestClient, path: str) -> None:
    assert page.get(path, base_url=PAGE).status_code == 404


def test_ports_must_differ() -> None:
    with pytest.raises(ValueError, match="must differ"):
        build(EXAMPLE_PAGE_PORT=5000)


# -- CORS: allowed, refused, preflights ---------------------------------------------------------


def test_me_gives_a_session_cookie_to_the_allowed_origin(app: Flask, api: SSETestClient) -> None:
    response = api.get("/me", base_url=API, headers={"Origin": PAGE})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == PAGE
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Origin" in response.headers["Vary"]
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("ssecors_demo_session=")
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    user = response.get_json()
    assert signed_in(api) == user, "the second call is answered from the cookie"


@pytest.mark.parametrize(
    ("method", "path", "view"),
    [
        ("GET", "/me", "me"),
        ("GET", "/page-events", "page_events"),
        ("GET", "/ticks", "ticks"),
        ("GET", "/feed", "feed"),
        ("GET", "/rooms/lobby", "room_state"),
        ("GET", "/rooms/lobby/events", "room_events"),
        ("POST", "/rooms/lobby/messages", "post_message"),
    ],
)
def test_refused_origin_gets_403_and_the_view_never_runs(
    app: Flask, api: SSETestClient, method: str, path: str, view: str
) -> None:
    signed_in(api)
    before = views(app).get(view, 0)
    response = api.open(
        path, method=method, base_url=API, headers={"Origin": REFUSED}, json={"text": "hi"}
    )
    assert response.status_code == 403
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Origin" in response.headers["Vary"]
    assert views(app).get(view, 0) == before


@pytest.mark.parametrize(
    ("path", "method", "headers"),
    [
        ("/rooms/lobby/messages", "POST", "content-type"),
        ("/feed", "GET", "authorization, last-event-id"),
    ],
)
def test_preflights_from_the_page_are_answered(
    api: SSETestClient, path: str, method: str, headers: str
) -> None:
    response = api.options(
        path,
        base_url=API,
        headers={
            "Origin": PAGE,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": headers,
        },
    )
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == PAGE
    assert response.headers["Access-Control-Allow-Credentials"] == "true"


def test_feed_preflight_is_refused_when_authorization_is_not_allowed() -> None:
    app = build(SSECORS_ALLOWED_HEADERS=["last-event-id", "cache-control", "content-type"])
    response = app.test_client().options(
        "/feed",
        base_url=API,
        headers={
            "Origin": PAGE,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, last-event-id",
        },
    )
    assert response.status_code == 403
    assert "Access-Control-Allow-Origin" not in response.headers


# -- the chat ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/rooms/lobby"), ("GET", "/rooms/lobby/events"), ("POST", "/rooms/lobby/messages")],
)
def test_chat_needs_the_session_cookie(api: SSETestClient, method: str, path: str) -> None:
    response = api.open(path, method=method, base_url=API, headers={"Origin": PAGE}, json={})
    assert response.status_code == 401
    assert response.headers["Access-Control-Allow-Origin"] == PAGE, "the page can read why"
    assert "GET /me" in response.get_json()["message"]


def test_unknown_room_is_404(api: SSETestClient) -> None:
    signed_in(api)
    response = api.get("/rooms/elsewhere", base_url=API, headers={"Origin": PAGE})
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"data": "text=hi"}, 415),
        ({"json": ["hi"]}, 400),
        ({"json": {"text": 42}}, 400),
        ({"json": {"text": "   "}}, 400),
        ({"json": {"text": "x" * 501}}, 400),
        ({"data": "{not json", "content_type": "application/json"}, 400),
    ],
)
def test_bad_messages_are_refused(
    api: SSETestClient, kwargs: dict[str, t.Any], status: int
) -> None:
    signed_in(api)
    response = api.post("/rooms/lobby/messages", base_url=API, headers={"Origin": PAGE}, **kwargs)
    assert response.status_code == status
    assert response.get_json()["message"]


def test_a_message_is_posted_as_the_session_user(app: Flask, api: SSETestClient) -> None:
    user = signed_in(api)
    response = api.post(
        "/rooms/lobby/messages",
        base_url=API,
        headers={"Origin": PAGE},
        json={"text": "  hello <b>world</b>  ", "user": "someone-else"},
    )
    assert response.status_code == 201
    message = response.get_json()
    assert message["user"] == user["name"], "the cookie decides the author, not the body"
    assert message["text"] == "hello <b>world</b>"
    room = api.get("/rooms/lobby", base_url=API, headers={"Origin": PAGE}).get_json()
    assert room["cursor"] == message["id"]
    assert room["messages"][-1]["id"] == message["id"]


def test_room_stream_continues_from_the_cursor(app: Flask, api: SSETestClient) -> None:
    signed_in(api)
    cursor = api.get("/rooms/lobby", base_url=API, headers={"Origin": PAGE}).get_json()["cursor"]
    ids = [
        api.post(
            "/rooms/lobby/messages", base_url=API, headers={"Origin": PAGE}, json={"text": text}
        ).get_json()["id"]
        for text in ("one", "two")
    ]
    with api.open_stream(
        f"/rooms/lobby/events?last_event_id={cursor}", base_url=API, headers={"Origin": PAGE}
    ) as stream:
        assert stream.response.headers["Access-Control-Allow-Origin"] == PAGE
        events = stream.events(2)
    assert [e.id for e in events] == ids
    assert [json.loads(t.cast(str, e.data))["text"] for e in events] == ["one", "two"]
    assert {e.event for e in events} == {"message"}


# -- who is in the room ---------------------------------------------------------------------------


def next_of(stream: EventStreamReader, *types: str, timeout: float = 5.0) -> Event:
    """The stream's next event of one of ``types`` (ticks and the rest are skipped).

    :raises TimeoutError: when none came within ``timeout`` seconds of the last event.
    """
    event = stream.next_event(timeout)
    while event.event not in types:
        event = stream.next_event(timeout)
    return event


def member_of(event: Event) -> str:
    return t.cast(str, json.loads(t.cast(str, event.data))["member"])


def lobby(client: SSETestClient) -> dict[str, t.Any]:
    """``presence`` of ``GET /rooms/lobby``, as ``client`` reads it."""
    room = client.get("/rooms/lobby", base_url=API, headers={"Origin": PAGE}).get_json()
    return t.cast("dict[str, t.Any]", room["presence"])


def settled(client: SSETestClient, connections: int) -> dict[str, t.Any]:
    """The lobby's presence once it counts ``connections`` (a stream ends in its own
    greenlet), or after two seconds."""
    for _ in range(200):
        seen = lobby(client)
        if seen["connections"] == connections:
            break
        gevent.sleep(0.01)
    return seen


def test_the_page_stream_signs_a_new_visitor_in_as_a_member_of_the_room(
    app: Flask, api: SSETestClient
) -> None:
    """The page opens its stream before ``GET /me``: the stream gives a new visitor its user
    (and the cookie), so the member it declared is the user ``/me`` then names."""
    headers = {"Origin": PAGE}
    with api.open_stream("/page-events?room=lobby", base_url=API, headers=headers) as stream:
        assert stream.response.headers["Set-Cookie"].startswith("ssecors_demo_session=")
        join = next_of(stream, JOIN)
        user = signed_in(api)
        assert member_of(join) == user["name"]
        assert lobby(api) == {
            "channel": "room:lobby",
            "members": [user["name"]],
            "member_count": 1,
            "connections": 1,
            "counts_only": False,
        }
        with app.app_context():
            ticker = sse.presence(TICKER_CHANNEL)
        assert ticker.members == {user["name"]}, "counted on the ticker too"
        next_of(stream, "ticker/tick")


def test_two_users_see_each_other_join_and_leave(app: Flask) -> None:
    alice, bob = (t.cast(SSETestClient, app.test_client()) for _ in range(2))
    names = {signed_in(alice)["name"], signed_in(bob)["name"]}
    assert len(names) == 2, "a new visitor is not given the name of one in the room"
    headers = {"Origin": PAGE}
    with alice.open_stream("/page-events?room=lobby", base_url=API, headers=headers) as seen:
        assert member_of(next_of(seen, JOIN)) == signed_in(alice)["name"]
        with bob.open_stream("/rooms/lobby/events", base_url=API, headers=headers) as bobs:
            joined = next_of(seen, JOIN)
            assert member_of(joined) == signed_in(bob)["name"]
            assert member_of(next_of(bobs, "ssecors-join")) == signed_in(bob)["name"]
            assert settled(alice, 2)["members"] == sorted(names)
        left = next_of(seen, LEAVE, JOIN)
        assert (left.event, member_of(left)) == (LEAVE, signed_in(bob)["name"])
        assert settled(alice, 1)["members"] == [signed_in(alice)["name"]]


def test_the_tabs_of_one_browser_are_one_member(app: Flask, api: SSETestClient) -> None:
    """Two streams of one session (two tabs, or two page origins, of one browser): one member,
    two connections, one join; the leave comes when the last one closes."""
    user = signed_in(api)
    watcher = t.cast(SSETestClient, app.test_client())
    signed_in(watcher)
    headers = {"Origin": PAGE}
    with watcher.open_stream("/rooms/lobby/events", base_url=API, headers=headers) as watching:
        next_of(watching, "ssecors-join")  # the watcher's own
        with api.open_stream("/page-events?room=lobby", base_url=API, headers=headers):
            assert member_of(next_of(watching, "ssecors-join")) == user["name"]
            with api.open_stream("/rooms/lobby/events", base_url=API, headers=headers):
                assert settled(api, 3)["member_count"] == 2
            assert settled(api, 2)["member_count"] == 2
            with pytest.raises(TimeoutError):
                next_of(watching, "ssecors-join", "ssecors-leave", timeout=0.3)
        assert member_of(next_of(watching, "ssecors-leave")) == user["name"]


def test_a_new_visitor_is_not_given_a_name_present_in_a_room(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = t.cast(SSETestClient, app.test_client())
    draws = iter(["amber", "badger", "amber", "badger", "brisk", "crane"])
    monkeypatch.setattr(random, "choice", lambda options: next(draws))
    assert signed_in(first)["name"] == "amber-badger"
    with first.open_stream("/rooms/lobby/events", base_url=API, headers={"Origin": PAGE}) as s:
        next_of(s, "ssecors-join")
        second = t.cast(SSETestClient, app.test_client())
        assert signed_in(second)["name"] == "brisk-crane"


# -- the ticker and the feed ---------------------------------------------------------------------


def test_ticks_start_with_history_then_resume_after_last_event_id(api: SSETestClient) -> None:
    with api.open_stream("/ticks", base_url=API, headers={"Origin": PAGE}) as stream:
        first = stream.events(92, timeout=10)
    ids = [int(t.cast(str, e.id)) for e in first]
    assert ids == list(range(ids[0], ids[0] + 92)), "consecutive, each once"
    assert {e.event for e in first} == {"tick"}
    resume = ids[-1]
    with api.open_stream(
        "/ticks", base_url=API, headers={"Origin": PAGE, "Last-Event-ID": str(resume)}
    ) as stream:
        assert int(t.cast(str, stream.next_event().id)) == resume + 1


def test_page_events_carry_the_ticker_and_the_room_on_one_stream(
    app: Flask, api: SSETestClient
) -> None:
    """No session needed to open it; events typed ``<channel>/<type>``, data untouched; the id
    holds both channels' positions, and resuming from it replays what was missed (the room's
    join and leave events among it)."""
    poster = t.cast(SSETestClient, app.test_client())
    signed_in(poster)
    headers = {"Origin": PAGE}
    with api.open_stream("/page-events?room=lobby", base_url=API, headers=headers) as stream:
        assert stream.response.headers["Access-Control-Allow-Origin"] == PAGE
        tick = stream.next_event()
        while tick.event != "ticker/tick":
            tick = stream.next_event()
        assert set(json.loads(t.cast(str, tick.data))) == {"n", "price", "t"}
        posted = poster.post(
            "/rooms/lobby/messages", base_url=API, headers=headers, json={"text": "hello"}
        ).get_json()
        message = stream.next_event()
        while message.event != "room:lobby/message":
            message = stream.next_event()
        assert json.loads(t.cast(str, message.data))["text"] == "hello"
        _, chat_id = t.cast(str, message.id).split("~")
        assert chat_id == posted["id"]
    poster.post("/rooms/lobby/messages", base_url=API, headers=headers, json={"text": "missed"})
    resume = {**headers, "Last-Event-ID": t.cast(str, message.id)}
    with api.open_stream("/page-events?room=lobby", base_url=API, headers=resume) as stream:
        replayed = stream.next_event()
        while replayed.event != "room:lobby/message":
            assert replayed.event in ("ticker/tick", *PRESENCE_EVENTS), replayed
            replayed = stream.next_event()
    assert json.loads(t.cast(str, replayed.data))["text"] == "missed"
    assert t.cast(str, replayed.id).split("~")[1] != chat_id


def test_page_events_refuse_an_unknown_room(api: SSETestClient) -> None:
    response = api.get("/page-events?room=elsewhere", base_url=API, headers={"Origin": PAGE})
    assert response.status_code == 404


def test_recent_ticks_are_the_last_ninety_in_order(api: SSETestClient) -> None:
    response = api.get("/ticks/recent", base_url=API, headers={"Origin": PAGE})
    assert response.headers["Access-Control-Allow-Origin"] == PAGE
    numbers = [tick["n"] for tick in response.get_json()["ticks"]]
    assert numbers == list(range(numbers[0], numbers[0] + 90))


def test_feed_needs_the_bearer_token(app: Flask, api: SSETestClient) -> None:
    response = api.get("/feed", base_url=API, headers={"Origin": PAGE})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    token = app.config["EXAMPLE_FEED_TOKEN"]
    headers = {"Origin": PAGE, "Authorization": f"Bearer {token}", "Last-Event-ID": "1000"}
    with api.open_stream("/feed", base_url=API, headers=headers) as stream:
        event = stream.next_event()
    assert event.event == "tick"


# -- the test hooks ------------------------------------------------------------------------------


def test_test_hooks_are_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app({"TESTING": True, "EXAMPLE_API_PORT": 5000, "EXAMPLE_PAGE_PORT": 5001})
    client = app.test_client()
    assert client.get("/_test/stats", base_url=API).status_code == 404
    assert client.post("/_test/drop", base_url=API).status_code == 404
    monkeypatch.setenv("EXAMPLE_TEST_HOOKS", "1")
    app = create_app({"TESTING": True, "EXAMPLE_API_PORT": 5000, "EXAMPLE_PAGE_PORT": 5001})
    assert app.test_client().get("/_test/stats", base_url=API).status_code == 200


def test_stats_record_the_cookie_and_the_view(app: Flask, api: SSETestClient) -> None:
    user = signed_in(api)
    api.get("/rooms/lobby", base_url=API, headers={"Origin": PAGE})
    stats = api.get("/_test/stats", base_url=API).get_json()
    me, room = stats["requests"][:2]
    assert (me["path"], me["cookie"], me["status"]) == ("/me", False, 200)
    assert (room["path"], room["cookie"], room["status"]) == ("/rooms/lobby", True, 200)
    assert stats["views"] == {"me": 1, "room_state": 1}
    assert stats["calls"][-1]["user"] == user["name"]


def test_drop_ends_every_open_stream(api: SSETestClient) -> None:
    signed_in(api)
    headers = {"Origin": PAGE}
    with (
        api.open_stream("/rooms/lobby/events", base_url=API, headers=headers) as room,
        api.open_stream("/ticks", base_url=API, headers=headers) as ticks,
    ):
        room.read_chunk()
        ticks.next_event()
        assert api.post("/_test/drop", base_url=API).get_json() == {
            "subscriptions": 1,
            "generators": 1,
        }
        for stream in (room, ticks):
            with pytest.raises(EOFError):
                while True:
                    stream.next_event(timeout=5)


# -- configuration -------------------------------------------------------------------------------


def test_ssecors_settings_come_from_the_environment() -> None:
    assert ssecors_environment(
        {
            "SSECORS_HEARTBEAT": "2.5",
            "SSECORS_ALLOWED_HEADERS": '["last-event-id"]',
            "SSECORS_BROKER_URL": "memory://",
            "PATH": "/usr/bin",
        }
    ) == {
        "SSECORS_HEARTBEAT": 2.5,
        "SSECORS_ALLOWED_HEADERS": ["last-event-id"],
        "SSECORS_BROKER_URL": "memory://",
    }


def test_environment_reaches_the_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSECORS_HEARTBEAT", "2.5")
    monkeypatch.setenv("API_PORT", "6000")
    monkeypatch.setenv("PAGE_PORT", "6001")
    app = create_app({"TESTING": True})
    assert app.extensions["ssecors"].settings.stream.heartbeat == 2.5
    assert app.config["SSECORS_ALLOWED_ORIGINS"] == ["http://localhost:6001"]
    assert app.config["EXAMPLE_API_ORIGIN"] == "http://localhost:6000"


def test_a_typo_in_the_environment_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSECORS_HEARTBEET", "5")
    with pytest.raises(ConfigError, match="SSECORS_HEARTBEAT"):
        create_app({"TESTING": True})


def load_gunicorn_config(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, t.Any]:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SECRET_KEY", raising=False)
    return runpy.run_path(str(CONFIG))


def test_gunicorn_config_serves_both_origins_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_gunicorn_config(monkeypatch, API_PORT="7100", PAGE_PORT="7101")
    expected = ["127.0.0.1:7100", "127.0.0.1:7101"]
    if ipv6_loopback_works():
        expected += ["[::1]:7100", "[::1]:7101"]
    assert sorted(config["bind"]) == sorted(expected)
    assert config["worker_class"] == "gevent"
    assert config["worker_connections"] >= 10_000
    assert 0 < config["graceful_timeout"] <= 30
    assert config["wsgi_app"] == "example_app:create_app()"
    assert config["workers"] == 1


def test_gunicorn_config_refuses_workers_without_a_shared_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(SystemExit, match="shared broker"):
        load_gunicorn_config(monkeypatch, WORKERS="2")


# -- the ticker ----------------------------------------------------------------------------------


def test_prices_are_the_same_every_time() -> None:
    assert [price(n) for n in range(5)] == [price(n) for n in range(5)]
    assert all(80 < price(n) < 120 for n in range(0, 100_000, 997))


@pytest.mark.parametrize(
    ("last_event_id", "first"),
    [
        (None, 1000 - 90 + 1),
        ("990", 991),
        ("1000", 1001),
        ("1001", 911),  # from the future: start over
        ("100", 911),  # too old to catch up: start over
        ("abc", 911),
        ("-5", 911),
        ("9" * 40, 911),
    ],
)
def test_ticker_resumes_after_the_last_event_id(last_event_id: str | None, first: int) -> None:
    ticker = Ticker(interval=1.0, history=90, catch_up=600, clock=lambda: 1000.5)
    assert ticker.first(last_event_id) == first


def test_ticker_stream_ends_when_told() -> None:
    now = [1000.0]
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        now[0] += seconds
        return len(waits) == 3

    ticker = Ticker(interval=0.5, history=2, clock=lambda: now[0])
    ids = [event.id for event in ticker.events(None, wait)]
    assert ids == ["1999", "2000", "2001", "2002"]
    assert waits == [0.5, 0.5, 0.5]
