"""Signed stream tokens: every refusal path, before the view runs, and never in a log line."""

from __future__ import annotations

import collections.abc as cabc
import logging
import time
import typing as t

import pytest
from flask import Flask
from flask import request

from flask_ssecors import Event
from flask_ssecors import SSECors
from flask_ssecors.exceptions import ConfigError
from flask_ssecors.exceptions import TokenRefused
from flask_ssecors.tokens import Refusal
from flask_ssecors.tokens import StreamTokens
from flask_ssecors.tokens import TOKEN_EXPIRED_EVENT
from tests.conftest import ALLOWED

if t.TYPE_CHECKING:
    from flask_ssecors.testing import SSETestClient

PARTNER = "https://partner.example.com"
UA = "Mozilla/5.0 (X11; Linux x86_64) test"
HEADERS = {"Origin": ALLOWED, "User-Agent": UA}


class Site:
    """An app with a token endpoint and token-protected streams; counts view calls."""

    def __init__(self, make_app: t.Callable[..., Flask], **config: object) -> None:
        config.setdefault("SSECORS_ALLOWED_ORIGINS", [ALLOWED, PARTNER])
        config.setdefault("SSECORS_ALLOW_CREDENTIALS", True)
        self.app = make_app(**config)
        self.sse = SSECors(self.app)
        self.calls: list[str] = []
        self.subjects: list[str | None] = []
        self.now = time.time()
        sse = self.sse

        @self.app.post("/token")
        @sse.cors()
        def token() -> t.Any:
            channels = request.args.get("channels")
            max_age = request.args.get("max_age")
            issued = sse.issue_token(
                "alice",
                channels=channels.split(",") if channels is not None else None,
                max_age=float(max_age) if max_age else None,
            )
            response = self.app.make_response({"token": issued})
            if request.args.get("cookie"):
                sse.set_token_cookie(response, issued)
            return response

        @self.app.get("/rooms/<room>")
        @sse.stream(require_token=True, heartbeat=0.05)
        def room(room: str) -> t.Any:
            self.calls.append(room)
            self.subjects.append(sse.token_subject())
            return sse.subscribe(f"room:{room}")

        @self.app.get("/open")
        @sse.stream()
        def open_stream() -> t.Any:
            self.calls.append("open")
            return iter([Event("open")])

        self.client: SSETestClient = self.app.test_client()  # type: ignore[assignment]
        self.responses: list[t.Any] = []
        with self.app.app_context():
            self.tokens = t.cast(StreamTokens, self.app.extensions["ssecors"].tokens)
            self.tokens.clock = lambda: self.now

    def token(self, headers: dict[str, str] | None = None, **params: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        response = self.client.post(f"/token?{query}", headers=headers or HEADERS)
        assert response.status_code == 200, response.data
        return str(response.json["token"])  # type: ignore[index]

    def stream(self, path: str, headers: dict[str, str] | None = None) -> t.Any:
        """GET a stream without reading it; the response is closed at teardown (an open
        stream would keep its send timer armed in the test's greenlet)."""
        response = self.client.get(path, headers=headers or HEADERS, buffered=False)
        self.responses.append(response)
        return response

    def close(self) -> None:
        for response in self.responses:
            response.close()


@pytest.fixture
def make_site(make_app: t.Callable[..., Flask]) -> cabc.Iterator[t.Callable[..., Site]]:
    sites: list[Site] = []

    def make(**config: object) -> Site:
        sites.append(Site(make_app, **config))
        return sites[-1]

    yield make
    for made in sites:
        made.close()


@pytest.fixture
def site(make_site: t.Callable[..., Site]) -> Site:
    return make_site()


def _tamper(token: str, where: str) -> str:
    payload, signature = token.split(".")
    if where == "signature":
        signature = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    else:
        payload = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB")
    return f"{payload}.{signature}"


def test_a_valid_token_opens_the_stream(site: Site) -> None:
    token = site.token(channels="room:1")
    with site.client.open_stream(f"/rooms/1?token={token}", headers=HEADERS) as stream:
        assert stream.response.status_code == 200
        with site.app.app_context():
            site.sse.publish("room:1", Event("hello"))
        assert stream.next_event(2).data == "hello"
    assert site.subjects == ["alice"]


def test_the_cookie_carries_the_token(site: Site) -> None:
    site.token(cookie="1")
    with site.client.open_stream("/rooms/1", headers=HEADERS) as stream:
        assert stream.response.status_code == 200
    assert site.calls == ["1"]


def test_token_cookie_is_http_only_and_same_site(site: Site) -> None:
    response = site.client.post("/token?cookie=1", headers=HEADERS)
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("ssecors_token=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie


def test_a_valid_query_token_wins_over_a_stale_cookie(site: Site) -> None:
    stale = site.token()
    site.now += 3600
    fresh = site.token()
    site.client.set_cookie("ssecors_token", stale)
    assert site.stream(f"/rooms/1?token={fresh}").status_code == 200


# -- refusals -------------------------------------------------------------------------------


def _expired(site: Site) -> tuple[str, dict[str, str]]:
    token = site.token(max_age="30")
    site.now += 30  # frozen clock: exactly at the expiry
    return f"/rooms/1?token={token}", HEADERS


REFUSALS: list[tuple[str, t.Callable[[Site], tuple[str, dict[str, str]]], int, str]] = [
    ("missing", lambda s: ("/rooms/1", HEADERS), 401, Refusal.MISSING),
    (
        "tampered-signature",
        lambda s: (f"/rooms/1?token={_tamper(s.token(), 'signature')}", HEADERS),
        401,
        Refusal.INVALID,
    ),
    (
        "tampered-payload",
        lambda s: (f"/rooms/1?token={_tamper(s.token(), 'payload')}", HEADERS),
        401,
        Refusal.INVALID,
    ),
    ("garbage", lambda s: ("/rooms/1?token=not-a-token", HEADERS), 401, Refusal.INVALID),
    ("overlong", lambda s: (f"/rooms/1?token={'a' * 5000}", HEADERS), 401, Refusal.INVALID),
    ("expired", _expired, 401, Refusal.EXPIRED),
    (
        "other-origin",
        lambda s: (f"/rooms/1?token={s.token()}", {**HEADERS, "Origin": PARTNER}),
        403,
        Refusal.OTHER_ORIGIN,
    ),
    (
        "no-origin",
        lambda s: (f"/rooms/1?token={s.token()}", {"User-Agent": UA}),
        403,
        Refusal.OTHER_ORIGIN,
    ),
    (
        "other-user-agent",
        lambda s: (f"/rooms/1?token={s.token()}", {**HEADERS, "User-Agent": "curl/8.5"}),
        403,
        Refusal.OTHER_USER_AGENT,
    ),
    (
        "other-channel",
        lambda s: (f"/rooms/2?token={s.token(channels='room:1')}", HEADERS),
        403,
        Refusal.CHANNEL_NOT_GRANTED,
    ),
    (
        "no-channel",
        lambda s: (f"/rooms/1?token={s.token(channels='')}", HEADERS),
        403,
        Refusal.CHANNEL_NOT_GRANTED,
    ),
]


@pytest.mark.parametrize(
    ("case", "status", "reason"),
    [(make, status, reason) for _, make, status, reason in REFUSALS],
    ids=[name for name, *_ in REFUSALS],
)
def test_refusals(
    site: Site,
    caplog: pytest.LogCaptureFixture,
    case: t.Callable[[Site], tuple[str, dict[str, str]]],
    status: int,
    reason: str,
) -> None:
    """Each refusal is a 4xx (which EventSource does not retry), with the CORS headers so the
    page sees it, a reason in the log and the statistics, and no stream: no subscription is
    taken, and the view does not run (a channel is checked when the view subscribes)."""
    path, headers = case(site)
    caplog.set_level(logging.INFO, logger="flask_ssecors")
    response = site.stream(path, headers)
    assert response.status_code == status
    assert response.mimetype == "text/plain"
    assert response.get_data() == (
        f"{'Unauthorized' if status == 401 else 'Forbidden'}: "
        f"stream token refused ({reason}).\n".encode()
    )
    assert ("WWW-Authenticate" in response.headers) is (status == 401)
    if "Origin" in headers:
        assert response.headers["Access-Control-Allow-Origin"] == headers["Origin"]
    room = path.split("?")[0].rsplit("/", 1)[1]
    # The channel is refused when the view subscribes: the view ran up to sse.subscribe().
    assert site.calls == ([room] if reason == Refusal.CHANNEL_NOT_GRANTED else [])
    with site.app.app_context():
        assert site.sse.subscriber_count() == 0
        assert site.sse.stats()["token_refusals"] == {reason: 1}
        assert site.sse.stats()["streams_opened"] == 0
    [line] = [r.getMessage() for r in caplog.records if "refused stream token" in r.getMessage()]
    assert line.endswith(f": {reason}")


def test_refusal_happens_before_the_view_runs(site: Site) -> None:
    """Signature, expiry, origin and user agent are checked before the view is called."""
    token = site.token()
    site.stream(f"/rooms/1?token={token}", {**HEADERS, "Origin": PARTNER})
    site.stream(f"/rooms/1?token={_tamper(token, 'signature')}")
    site.stream("/rooms/1")
    assert site.calls == []


def test_a_token_from_another_app_is_invalid(make_site: t.Callable[..., Site]) -> None:
    first = make_site(SECRET_KEY="one")
    second = make_site(SECRET_KEY="two")
    token = first.token()
    assert second.stream(f"/rooms/1?token={token}").status_code == 401


def test_other_signed_values_of_the_app_are_not_tokens(site: Site) -> None:
    """The salt sets tokens apart: a session cookie signed with the same key is refused."""
    from itsdangerous import URLSafeSerializer

    same_key = URLSafeSerializer("test", salt="cookie-session").dumps(
        {"s": "alice", "o": ALLOWED, "u": "", "c": None, "e": 10**15}
    )
    assert site.stream(f"/rooms/1?token={same_key}").status_code == 401


def test_secret_key_rotation_keeps_tokens_valid(make_site: t.Callable[..., Site]) -> None:
    old = make_site(SECRET_KEY="old")
    token = old.token()
    rotated = make_site(SECRET_KEY="new", SECRET_KEY_FALLBACKS=["old"])
    assert rotated.stream(f"/rooms/1?token={token}").status_code == 200


def test_expiry_uses_the_clock_not_the_signature(site: Site) -> None:
    token = site.token(max_age="30")
    site.now += 29.99
    assert site.stream(f"/rooms/1?token={token}").status_code == 200
    site.now += 0.01
    assert site.stream(f"/rooms/1?token={token}").status_code == 401


def test_the_stream_ends_when_its_token_expires(site: Site) -> None:
    """A real-time expiry: the stream's last event tells the page to fetch a new token."""
    site.tokens.clock = time.time
    token = site.token(max_age="0.4")
    begin = time.monotonic()
    with site.client.open_stream(f"/rooms/1?token={token}", headers=HEADERS) as stream:
        last = stream.next_event(2)
        with pytest.raises(EOFError):
            stream.next_event(2)
    elapsed = time.monotonic() - begin
    assert last.event == TOKEN_EXPIRED_EVENT
    assert last.data == '{"reason":"token-expired"}'
    assert 0.3 <= elapsed <= 0.7, elapsed
    with site.app.app_context():
        assert site.sse.stats()["streams_ended"] == {"token-expired": 1}


def test_views_without_require_token_ignore_tokens(site: Site) -> None:
    assert site.stream("/open?token=garbage").status_code == 200
    assert site.calls == ["open"]


def test_require_token_app_wide(make_app: t.Callable[..., Flask]) -> None:
    app = make_app(SSECORS_REQUIRE_TOKEN=True)
    sse = SSECors(app)

    @app.get("/s")
    @sse.stream()
    def s() -> t.Any:
        return iter(())

    @app.get("/free")
    @sse.stream(require_token=False)
    def free() -> t.Any:
        return iter(())

    client = app.test_client()
    assert client.get("/s", headers=HEADERS, buffered=True).status_code == 401
    assert client.get("/free", headers=HEADERS, buffered=True).status_code == 200


def test_require_token_needs_a_secret_key(make_app: t.Callable[..., Flask]) -> None:
    app = make_app(SECRET_KEY=None)
    sse = SSECors(app)
    with pytest.raises(ConfigError, match="SECRET_KEY"):

        @app.get("/s")
        @sse.stream(require_token=True)
        def s() -> t.Any:
            return iter(())

    late = SSECors()
    late.stream(require_token=True)
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        late.init_app(make_app(SECRET_KEY=None))


def test_issue_token_without_secret_key_raises(make_app: t.Callable[..., Flask]) -> None:
    app = make_app(SECRET_KEY=None)
    sse = SSECors(app)
    with app.test_request_context("/"), pytest.raises(RuntimeError, match="SECRET_KEY"):
        sse.issue_token("alice")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"channels": "room:1"}, TypeError),
        ({"channels": [1]}, TypeError),
        ({"max_age": 0}, ValueError),
        ({"max_age": -1}, ValueError),
        ({"max_age": float("inf")}, ValueError),
        ({"max_age": True}, ValueError),
        ({"max_age": 10**9}, ValueError),
    ],
)
def test_issue_token_refuses_misuse(site: Site, kwargs: dict[str, t.Any], error: type) -> None:
    with site.app.test_request_context("/", headers=HEADERS), pytest.raises(error):
        site.sse.issue_token("alice", **kwargs)


def test_issue_token_binds_the_own_origin_without_an_origin_header(site: Site) -> None:
    """Same-origin GET requests send no Origin: the token is bound to the request's origin."""
    token = site.token({"User-Agent": UA})
    same_origin = {"User-Agent": UA, "Origin": "http://localhost"}
    assert site.stream(f"/rooms/1?token={token}", {"User-Agent": UA}).status_code == 200
    assert site.stream(f"/rooms/1?token={token}", same_origin).status_code == 200


def test_token_refused_message_never_holds_the_token() -> None:
    assert str(TokenRefused(Refusal.EXPIRED, 401)) == "stream token refused: token-expired"


def test_the_token_is_in_no_log_line(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    """Every path (issued, accepted, each refusal, expiry) logs without the token: not in the
    message, not in the arguments, on no logger."""
    caplog.set_level(logging.DEBUG)
    tokens: list[str] = []
    for _, make, _, _ in REFUSALS:
        path, headers = make(site)
        tokens.extend(part.split("&")[0] for part in path.split("token=")[1:])
        site.stream(path, headers)
    site.now = time.time()
    site.tokens.clock = time.time
    token = site.token(max_age="0.2")
    tokens.append(token)
    with site.client.open_stream(f"/rooms/1?token={token}", headers=HEADERS) as stream:
        stream.next_event(2)
    assert len(tokens) >= 8
    assert caplog.records
    text = "\n".join(f"{r.getMessage()} {r.args!r} {r.__dict__!r}" for r in caplog.records)
    for token in tokens:
        if len(token) > 16:
            assert token not in text
            assert token.split(".")[-1] not in text
