"""CORS through the Flask test client: ``@sse.cors()`` and ``@sse.stream()`` views.

docs/security.rst (from "The threat model" to "Private Network Access"): refusals are ``403``
before the view runs, preflights are answered by the extension, ``Vary: Origin`` is on every
policed response, nothing else may set ``Access-Control-*`` on a policed response, and logs never
carry raw request values.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import typing as t

import flask_cors
import pytest
from flask import abort
from flask import after_this_request
from flask import Flask
from flask import Response

from flask_ssecors import Event
from flask_ssecors import last_event_id
from flask_ssecors import SSECors
from flask_ssecors.exceptions import HeaderConflictError
from flask_ssecors.testing import parse_events

if t.TYPE_CHECKING:
    from werkzeug.test import TestResponse

ALLOWED = "https://app.example.com"
SUBDOMAIN = "https://a.example.org"
HOSTILE = "https://evil.example.net"
OWN = "http://localhost"  # the test client's own origin

ACAO = "Access-Control-Allow-Origin"
ACAC = "Access-Control-Allow-Credentials"
ACAM = "Access-Control-Allow-Methods"
ACAH = "Access-Control-Allow-Headers"
ACMA = "Access-Control-Max-Age"
ACAPN = "Access-Control-Allow-Private-Network"
ACRM = "Access-Control-Request-Method"
ACRH = "Access-Control-Request-Headers"


@dataclasses.dataclass
class Site:
    """An app with one ``@sse.cors()`` POST view, one ``@sse.stream()`` GET view and an
    undecorated route, counting how often each view runs."""

    app: Flask
    sse: SSECors
    calls: collections.Counter[str]
    side_effects: list[str]

    def client(self) -> t.Any:
        return self.app.test_client()

    def send(self, method: str, path: str, **kwargs: t.Any) -> TestResponse:
        """One request, its body read and the response closed."""
        response = self.client().open(path, method=method, **kwargs)
        response.get_data()
        response.close()
        return t.cast("TestResponse", response)


#: (method, path, view name, status when allowed, preflight method)
VIEWS = [
    pytest.param("POST", "/messages", "post", 201, "POST", id="cors-post"),
    pytest.param("GET", "/events", "stream", 200, "GET", id="stream-get"),
]


def build_site(make_app: t.Callable[..., Flask], **config: object) -> Site:
    config.setdefault("SSECORS_ALLOWED_ORIGINS", [ALLOWED, "https://*.example.org"])
    app = make_app(**config)
    sse = SSECors(app)
    calls: collections.Counter[str] = collections.Counter()
    side_effects: list[str] = []

    @app.post("/messages")
    @sse.cors()
    def post_message() -> tuple[dict[str, object], int]:
        calls["post"] += 1
        side_effects.append("message stored")
        return {"id": "1"}, 201

    @app.get("/events")
    @sse.stream()
    def events() -> list[Event]:
        calls["stream"] += 1
        return [Event("x", id="1")]

    @app.get("/rooms/<room>/events")
    @sse.stream()
    def room_events(room: str) -> list[Event]:
        calls["room"] += 1
        return [Event(room)]

    @app.get("/resume")
    @sse.stream()
    def resume() -> list[Event]:
        calls["resume"] += 1
        return [Event(last_event_id() or "none")]

    @app.get("/bad-request")
    @sse.cors()
    def bad_request() -> str:
        calls["bad"] += 1
        abort(400)

    @app.get("/denied")
    @sse.stream()
    def denied() -> Response:
        calls["denied"] += 1
        return Response("login first", 401)

    @app.route("/plain", methods=["GET", "POST"])
    def plain() -> str:
        calls["plain"] += 1
        return "plain"

    return Site(app, sse, calls, side_effects)


@pytest.fixture
def site(make_app: t.Callable[..., Flask]) -> Site:
    return build_site(make_app)


@pytest.fixture
def site_factory(make_app: t.Callable[..., Flask]) -> t.Callable[..., Site]:
    return lambda **config: build_site(make_app, **config)


def cors_headers(response: TestResponse) -> list[tuple[str, str]]:
    return [(k, v) for k, v in response.headers if k.lower().startswith("access-control-")]


def vary(response: TestResponse) -> set[str]:
    return {token.strip().lower() for token in response.headers.getlist("Vary") for token in
            token.split(",")}  # fmt: skip


def production(config: dict[str, object]) -> dict[str, object]:
    return {**config, "TESTING": False, "DEBUG": False, "PROPAGATE_EXCEPTIONS": False}


# -- actual requests ---------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "view", "status", "preflight_method"), VIEWS)
@pytest.mark.parametrize("credentials", [False, True])
@pytest.mark.parametrize("origin", [ALLOWED, SUBDOMAIN, "https://a.b.example.org"])
def test_allowed_origin(
    site_factory: t.Callable[..., Site],
    method: str,
    path: str,
    view: str,
    status: int,
    preflight_method: str,
    credentials: bool,
    origin: str,
) -> None:
    site = site_factory(SSECORS_ALLOW_CREDENTIALS=credentials)
    response = site.send(method, path, headers={"Origin": origin})
    assert response.status_code == status
    expected = [(ACAO, origin), (ACAC, "true")] if credentials else [(ACAO, origin)]
    assert cors_headers(response) == expected
    assert "origin" in vary(response)
    assert site.calls[view] == 1


def test_stream_body_is_sent_to_an_allowed_origin(site: Site) -> None:
    response = site.send("GET", "/events", headers={"Origin": ALLOWED})
    assert response.mimetype == "text/event-stream"
    assert [event.data for event in parse_events(response.get_data())] == ["x"]


@pytest.mark.parametrize(("method", "path", "view", "status", "preflight_method"), VIEWS)
@pytest.mark.parametrize("credentials", [False, True])
def test_refused_origin_gets_403_before_the_view(
    site_factory: t.Callable[..., Site],
    method: str,
    path: str,
    view: str,
    status: int,
    preflight_method: str,
    credentials: bool,
) -> None:
    site = site_factory(SSECORS_ALLOW_CREDENTIALS=credentials)
    response = site.send(method, path, headers={"Origin": HOSTILE})
    assert response.status_code == 403
    assert cors_headers(response) == []
    assert "origin" in vary(response)
    assert site.calls[view] == 0
    assert response.mimetype == "text/plain"


@pytest.mark.parametrize(("method", "path", "view", "status", "preflight_method"), VIEWS)
@pytest.mark.parametrize(
    ("serve_without_origin", "allowed"), [(True, True), (False, False)], ids=["serve", "refuse"]
)
def test_request_without_origin(
    site_factory: t.Callable[..., Site],
    method: str,
    path: str,
    view: str,
    status: int,
    preflight_method: str,
    serve_without_origin: bool,
    allowed: bool,
) -> None:
    site = site_factory(SSECORS_SERVE_WITHOUT_ORIGIN=serve_without_origin)
    response = site.send(method, path)
    assert response.status_code == (status if allowed else 403)
    assert cors_headers(response) == []
    assert "origin" in vary(response)
    assert site.calls[view] == (1 if allowed else 0)


@pytest.mark.parametrize(("method", "path", "view", "status", "preflight_method"), VIEWS)
def test_same_origin_is_never_refused(
    site_factory: t.Callable[..., Site],
    method: str,
    path: str,
    view: str,
    status: int,
    preflight_method: str,
) -> None:
    site = site_factory(SSECORS_SERVE_WITHOUT_ORIGIN=False, SSECORS_ALLOW_CREDENTIALS=True)
    response = site.send(method, path, headers={"Origin": OWN})
    assert response.status_code == status
    assert "origin" in vary(response)
    assert site.calls[view] == 1


def test_same_origin_follows_the_request_host(site: Site) -> None:
    response = site.send(
        "GET",
        "/events",
        headers={"Origin": "https://api.test:8443"},
        base_url="https://api.test:8443",
    )
    assert response.status_code == 200
    assert site.calls["stream"] == 1
    refused = site.send("GET", "/events", headers={"Origin": "https://api.test:8443"})
    assert refused.status_code == 403


def test_refused_credentialed_cross_site_post_has_no_side_effect(
    make_app: t.Callable[..., Flask],
) -> None:
    """Rule 4: a credentialed cross-site POST (a form or ``fetch(..., {credentials:
    "include"})``: no preflight) must not run the view."""
    site = build_site(make_app, SSECORS_ALLOW_CREDENTIALS=True)
    client = site.client()
    client.set_cookie("session", "victim", domain="localhost")
    for origin in (HOSTILE, "null", "https://app.example.com.evil.com"):
        response = client.post(
            "/messages",
            headers={"Origin": origin, "Content-Type": "text/plain"},
            data="forged",
        )
        assert response.status_code == 403
    assert site.side_effects == []
    assert site.calls["post"] == 0


# -- error responses ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "origin", "status", "expected"),
    [
        ("/bad-request", ALLOWED, 400, [(ACAO, ALLOWED)]),
        ("/bad-request", None, 400, []),
        ("/denied", ALLOWED, 401, [(ACAO, ALLOWED)]),
        ("/denied", None, 401, []),
    ],
)
def test_error_responses_are_policed(
    site: Site, path: str, origin: str | None, status: int, expected: list[tuple[str, str]]
) -> None:
    headers = {"Origin": origin} if origin else {}
    response = site.send("GET", path, headers=headers)
    assert response.status_code == status
    assert cors_headers(response) == expected
    assert "origin" in vary(response)


def test_unhandled_error_in_production_is_policed(make_app: t.Callable[..., Flask]) -> None:
    app = make_app(**production({}))
    sse = SSECors(app)

    @app.post("/boom")
    @sse.cors()
    def boom() -> str:
        raise RuntimeError("boom")

    response = app.test_client().post("/boom", headers={"Origin": ALLOWED})
    assert response.status_code == 500
    assert cors_headers(response) == [(ACAO, ALLOWED)]
    assert "origin" in vary(response)


def test_vary_keeps_other_entries(make_app: t.Callable[..., Flask]) -> None:
    app = make_app()
    sse = SSECors(app)

    @app.get("/lang")
    @sse.cors()
    def lang() -> Response:
        response = Response("hi")
        response.vary.add("Accept-Language")
        return response

    response = app.test_client().get("/lang", headers={"Origin": ALLOWED})
    assert vary(response) == {"accept-language", "origin"}


# -- preflights --------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "view", "status", "preflight_method"), VIEWS)
@pytest.mark.parametrize("credentials", [False, True])
def test_preflight_allowed(
    site_factory: t.Callable[..., Site],
    method: str,
    path: str,
    view: str,
    status: int,
    preflight_method: str,
    credentials: bool,
) -> None:
    site = site_factory(SSECORS_ALLOW_CREDENTIALS=credentials, SSECORS_MAX_AGE=120)
    response = site.send(
        "OPTIONS", path, headers={"Origin": ALLOWED, ACRM: preflight_method, ACRH: "last-event-id"}
    )
    assert response.status_code == 204
    assert response.get_data() == b""
    headers = dict(cors_headers(response))
    assert headers[ACAO] == ALLOWED
    assert headers[ACAM] == preflight_method
    assert "last-event-id" in headers[ACAH].split(", ")
    assert headers[ACMA] == "120"
    assert (ACAC in headers) is credentials
    assert ACAPN not in headers
    assert len(cors_headers(response)) == len(headers)
    assert {"origin", ACRM.lower(), ACRH.lower()} <= vary(response)
    assert sum(site.calls.values()) == 0


PREFLIGHT_REFUSED = [
    pytest.param("/events", HOSTILE, "GET", None, id="stream-origin"),
    pytest.param("/messages", HOSTILE, "POST", None, id="cors-origin"),
    pytest.param("/messages", "null", "POST", None, id="null-origin"),
    pytest.param("/events", ALLOWED, "POST", None, id="method-not-on-route"),
    pytest.param("/messages", ALLOWED, "GET", None, id="method-not-on-route-2"),
    pytest.param("/messages", ALLOWED, "PUT", None, id="method-not-allowed"),
    pytest.param("/messages", ALLOWED, "DELETE", None, id="method-not-allowed-2"),
    pytest.param("/events", ALLOWED, "GET", "x-custom", id="header-not-allowed"),
    pytest.param("/events", ALLOWED, "GET", "authorization", id="authorization"),
    pytest.param("/events", ALLOWED, "GET", "last-event-id, cookie", id="cookie"),
    pytest.param("/events", ALLOWED, "GET", "last-event-id x", id="malformed"),
    pytest.param("/events", ALLOWED, "GET", "a" * 3000, id="overlong"),
    pytest.param("/events", ALLOWED, "GET", ",".join(["last-event-id"] * 65), id="too-many-names"),
]


@pytest.mark.parametrize(("path", "origin", "request_method", "request_headers"), PREFLIGHT_REFUSED)
def test_preflight_refused(
    site: Site, path: str, origin: str, request_method: str, request_headers: str | None
) -> None:
    headers = {"Origin": origin, ACRM: request_method}
    if request_headers is not None:
        headers[ACRH] = request_headers
    response = site.send("OPTIONS", path, headers=headers)
    assert response.status_code == 403
    assert cors_headers(response) == []
    assert "origin" in vary(response)
    assert sum(site.calls.values()) == 0


@pytest.mark.parametrize(
    ("allowed_headers", "request_headers", "status"),
    [
        (None, "authorization", 403),
        (["*"], "authorization", 403),
        (["Authorization", "Last-Event-ID"], "authorization, last-event-id", 204),
        (["Authorization"], "Authorization", 204),
        (["*"], "x-custom", 204),
    ],
)
def test_preflight_authorization_only_when_configured(
    site_factory: t.Callable[..., Site],
    allowed_headers: list[str] | None,
    request_headers: str,
    status: int,
) -> None:
    config: dict[str, object] = {}
    if allowed_headers is not None:
        config["SSECORS_ALLOWED_HEADERS"] = allowed_headers
    site = site_factory(**config)
    response = site.send(
        "OPTIONS", "/events", headers={"Origin": ALLOWED, ACRM: "GET", ACRH: request_headers}
    )
    assert response.status_code == status
    assert bool(cors_headers(response)) is (status == 204)


@pytest.mark.parametrize(
    ("configured", "requested", "expected"),
    [(False, True, None), (True, False, None), (True, True, "true"), (False, False, None)],
)
def test_private_network_header_only_when_configured(
    site_factory: t.Callable[..., Site], configured: bool, requested: bool, expected: str | None
) -> None:
    site = site_factory(SSECORS_ALLOW_PRIVATE_NETWORK=configured)
    headers = {"Origin": ALLOWED, ACRM: "GET"}
    if requested:
        headers["Access-Control-Request-Private-Network"] = "true"
    preflight = site.send("OPTIONS", "/events", headers=headers)
    assert preflight.status_code == 204
    assert preflight.headers.get(ACAPN) == expected
    actual = site.send("GET", "/events", headers={"Origin": ALLOWED})
    assert ACAPN not in actual.headers


@pytest.mark.parametrize(("method", "path", "view", "status", "preflight_method"), VIEWS)
def test_automatic_options_is_not_a_preflight(
    site: Site, method: str, path: str, view: str, status: int, preflight_method: str
) -> None:
    """OPTIONS without Access-Control-Request-Method is Flask's automatic OPTIONS answer."""
    response = site.send("OPTIONS", path, headers={"Origin": ALLOWED})
    assert response.status_code == 200
    assert method in response.headers["Allow"]
    assert cors_headers(response) == [(ACAO, ALLOWED)]
    assert "origin" in vary(response)
    assert sum(site.calls.values()) == 0
    refused = site.send("OPTIONS", path, headers={"Origin": HOSTILE})
    assert refused.status_code == 403
    assert cors_headers(refused) == []
    bare = site.send("OPTIONS", path)
    assert bare.status_code == 200
    assert cors_headers(bare) == []
    assert "origin" in vary(bare)


# -- hostile Origin values ---------------------------------------------------------------------

HOSTILE_ORIGINS = [
    "https://app.example.com.evil.com",
    "https://evilexample.com",
    "https://evil-app.example.com.net",
    "https://example.org",
    "https://a.example.org.evil.com",
    "http://a.example.org",
    "HTTPS://APP.EXAMPLE.COM",
    "https://App.Example.Com",
    "null",
    "",
    " ",
    "https://app.example.com:443",
    "https://app.example.com/",
    "https://app.example.com.",
    "https://app.example.com, https://app.example.com",
    "https://app.example.com,https://evil.example.net",
    "https://evil.example.net, https://app.example.com",
    " https://app.example.com",
    "https://app.example.com ",
    "https://app.example.com\r\n",
    "https://app.example.com\r\nX-Forged: 1",
    "https://app.example.com\nhttps://app.example.com",
    "https://app.example.com\x00",
    "https://app.example.com\t",
    "https://user@app.example.com",
    "https://app.example.com%2f",
    "https://\xe4pp.example.com",
    "https://xn--pp-via.example.com",
    "https://a.example.org:443",
    "*",
    "https://*.example.org",
    # Near the test client's own origin (http://localhost), but not it.
    "http://localhost.evil.com",
    "http://localhost:8080",
    "https://localhost",
    "http://localhost/",
    "HTTP://LOCALHOST",
    ALLOWED + "/" + "x" * 10_000,
    "https://" + "a" * 10_000 + ".example.org",
]


@pytest.mark.parametrize(("method", "path", "view", "status", "preflight_method"), VIEWS)
@pytest.mark.parametrize("origin", HOSTILE_ORIGINS)
def test_hostile_origin_is_refused(
    site_factory: t.Callable[..., Site],
    method: str,
    path: str,
    view: str,
    status: int,
    preflight_method: str,
    origin: str,
) -> None:
    site = site_factory(SSECORS_ALLOW_CREDENTIALS=True)
    response = site.send(method, path, environ_base={"HTTP_ORIGIN": origin})
    assert response.status_code == 403
    assert cors_headers(response) == []
    assert "origin" in vary(response)
    assert site.calls[view] == 0


@pytest.mark.parametrize("origin", HOSTILE_ORIGINS[:12])
def test_hostile_origin_preflight_is_refused(site: Site, origin: str) -> None:
    response = site.send(
        "OPTIONS",
        "/events",
        environ_base={"HTTP_ORIGIN": origin, "HTTP_ACCESS_CONTROL_REQUEST_METHOD": "GET"},
    )
    assert response.status_code == 403
    assert cors_headers(response) == []


# -- undecorated routes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("GET", {}),
        ("GET", {"Origin": ALLOWED}),
        ("GET", {"Origin": HOSTILE}),
        ("POST", {"Origin": "null"}),
        ("OPTIONS", {"Origin": HOSTILE, ACRM: "POST"}),
        ("OPTIONS", {"Origin": ALLOWED, ACRM: "GET"}),
        ("GET", {"Origin": "https://app.example.com\r\nX: 1"}),
    ],
)
def test_undecorated_route_is_untouched(site: Site, method: str, headers: dict[str, str]) -> None:
    environ = {f"HTTP_{name.upper().replace('-', '_')}": value for name, value in headers.items()}
    response = site.send(method, "/plain", environ_base=environ)
    assert response.status_code == 200
    assert cors_headers(response) == []
    assert "Vary" not in response.headers
    assert site.calls["plain"] == (0 if method == "OPTIONS" else 1)


def test_unknown_route_is_untouched(site: Site) -> None:
    response = site.send("GET", "/nowhere", headers={"Origin": HOSTILE})
    assert response.status_code == 404
    assert cors_headers(response) == []
    assert "Vary" not in response.headers


# -- one owner of Access-Control-* ---------------------------------------------------------------


def add_self_cors_views(app: Flask, sse: SSECors) -> None:
    @app.post("/self")
    @sse.cors()
    def self_cors() -> Response:
        response = Response("{}", 201, mimetype="application/json")
        response.headers[ACAO] = "*"
        return response

    @app.get("/self-stream")
    @sse.stream()
    def self_stream() -> Response:
        return Response("no", 401, headers={ACAO: "*", ACAC: "true"})

    @app.post("/later")
    @sse.cors()
    def later() -> str:
        @after_this_request
        def add(response: Response) -> Response:
            response.headers["Access-Control-Expose-Headers"] = "X-Secret"
            return response

        return "ok"


SELF_CORS = [("POST", "/self", 201), ("GET", "/self-stream", 401), ("POST", "/later", 200)]


@pytest.mark.parametrize(("method", "path", "status"), SELF_CORS)
@pytest.mark.parametrize("origin", [ALLOWED, None])
def test_view_setting_cors_headers_raises_in_testing(
    make_app: t.Callable[..., Flask], method: str, path: str, status: int, origin: str | None
) -> None:
    app = make_app()
    add_self_cors_views(app, SSECors(app))
    with pytest.raises(HeaderConflictError):
        app.test_client().open(path, method=method, headers={"Origin": origin} if origin else {})


@pytest.mark.parametrize("debug", [True, False])
def test_view_setting_cors_headers_raises_in_debug(
    make_app: t.Callable[..., Flask], debug: bool
) -> None:
    app = make_app(TESTING=False, DEBUG=debug, PROPAGATE_EXCEPTIONS=True)
    add_self_cors_views(app, SSECors(app))
    client = app.test_client()
    if debug:
        with pytest.raises(HeaderConflictError):
            client.post("/self", headers={"Origin": ALLOWED})
    else:
        assert client.post("/self", headers={"Origin": ALLOWED}).status_code == 201


@pytest.mark.parametrize(("method", "path", "status"), SELF_CORS)
@pytest.mark.parametrize(
    ("origin", "expected"),
    [(ALLOWED, [(ACAO, ALLOWED)]), (None, []), (HOSTILE, [])],
)
def test_view_setting_cors_headers_is_logged_in_production(
    make_app: t.Callable[..., Flask],
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    status: int,
    origin: str | None,
    expected: list[tuple[str, str]],
) -> None:
    app = make_app(**production({}))
    add_self_cors_views(app, SSECors(app))
    caplog.set_level(logging.ERROR, logger="flask_ssecors")
    response = app.test_client().open(
        path, method=method, headers={"Origin": origin} if origin else {}
    )
    assert response.status_code == (status if origin != HOSTILE else 403)
    assert cors_headers(response) == expected
    assert "origin" in vary(response)
    if origin != HOSTILE:
        conflicts = [r for r in caplog.records if "header conflict" in r.getMessage()]
        assert len(conflicts) == 1
        assert conflicts[0].levelno == logging.ERROR


def flask_cors_site(make_app: t.Callable[..., Flask], *, before: bool, **config: object) -> Site:
    """``build_site`` with flask-cors on the same app, registered before or after."""
    config.setdefault("SSECORS_ALLOWED_ORIGINS", [ALLOWED, "https://*.example.org"])
    if not before:
        site = build_site(make_app, **config)
        flask_cors.CORS(site.app)
        return site
    original = make_app

    def make_with_cors(**inner: object) -> Flask:
        app = original(**inner)
        flask_cors.CORS(app)
        return app

    return build_site(make_with_cors, **config)


FLASK_CORS_CASES = [
    pytest.param("POST", "/messages", {"Origin": ALLOWED}, 201, [(ACAO, ALLOWED)], id="post"),
    pytest.param("POST", "/messages", {"Origin": HOSTILE}, 403, [], id="post-refused"),
    pytest.param("GET", "/events", {}, 200, [], id="stream-no-origin"),
    pytest.param("GET", "/events", {"Origin": HOSTILE}, 403, [], id="stream-refused"),
    pytest.param("GET", "/bad-request", {"Origin": ALLOWED}, 400, [(ACAO, ALLOWED)], id="error"),
    pytest.param(
        "OPTIONS",
        "/messages",
        {"Origin": ALLOWED, ACRM: "POST"},
        204,
        None,
        id="preflight",
    ),
]


@pytest.mark.parametrize("before", [False], ids=["cors-after-init"])
@pytest.mark.parametrize(("method", "path", "headers", "status", "expected"), FLASK_CORS_CASES)
def test_flask_cors_on_the_same_app_raises_in_testing(
    make_app: t.Callable[..., Flask],
    before: bool,
    method: str,
    path: str,
    headers: dict[str, str],
    status: int,
    expected: object,
) -> None:
    """flask-cors registered after ``init_app`` is caught on the response (registered before,
    ``init_app`` refuses it: tests/unit/test_ownership.py)."""
    site = flask_cors_site(make_app, before=before, SSECORS_ALLOW_CREDENTIALS=True)
    with pytest.raises(HeaderConflictError):
        site.send(method, path, headers=headers)


@pytest.mark.parametrize("before", [False], ids=["cors-after-init"])
@pytest.mark.parametrize(("method", "path", "headers", "status", "expected"), FLASK_CORS_CASES)
def test_flask_cors_on_the_same_app_is_logged_in_production(
    make_app: t.Callable[..., Flask],
    caplog: pytest.LogCaptureFixture,
    before: bool,
    method: str,
    path: str,
    headers: dict[str, str],
    status: int,
    expected: list[tuple[str, str]] | None,
) -> None:
    site = flask_cors_site(
        make_app, before=before, **production({"SSECORS_ALLOW_CREDENTIALS": True})
    )
    caplog.set_level(logging.ERROR, logger="flask_ssecors")
    response = site.send(method, path, headers=headers)
    assert response.status_code == status
    ours = cors_headers(response)
    if expected is None:  # the preflight: exactly the extension's own answer
        assert dict(ours)[ACAO] == ALLOWED
        assert dict(ours)[ACAM] == "POST"
        assert dict(ours)[ACAC] == "true"
        assert len(ours) == len(dict(ours))
    else:
        assert ours == ([*expected, (ACAC, "true")] if expected else [])
    assert "origin" in vary(response)
    errors = [
        r for r in caplog.records if r.levelno == logging.ERROR and "conflict" in r.getMessage()
    ]
    assert len(errors) >= 1


def test_flask_cors_on_an_allowed_stream_adds_nothing(make_app: t.Callable[..., Flask]) -> None:
    """flask-cors skips responses that already carry Access-Control-Allow-Origin; the stream
    keeps exactly the extension's headers."""
    site = flask_cors_site(make_app, before=False, SSECORS_ALLOW_CREDENTIALS=True)
    response = site.send("GET", "/events", headers={"Origin": ALLOWED})
    assert cors_headers(response) == [(ACAO, ALLOWED), (ACAC, "true")]


@pytest.mark.parametrize("registered", ["before", "after"])
@pytest.mark.parametrize(
    ("origin", "header", "value"),
    [
        (ALLOWED, ACAO, "*"),
        (ALLOWED, "Access-Control-Expose-Headers", "X-Secret"),
        (None, ACAO, "*"),
        (None, ACAC, "true"),
    ],
)
def test_after_request_hook_setting_cors_headers_on_a_stream(
    make_app: t.Callable[..., Flask],
    caplog: pytest.LogCaptureFixture,
    registered: str,
    origin: str | None,
    header: str,
    value: str,
) -> None:
    for testing in (True, False):
        app = make_app(**({} if testing else production({})))

        def hook(response: Response) -> Response:
            response.headers[header] = value
            return response

        if registered == "before":
            app.after_request(hook)
        sse = SSECors(app)
        if registered == "after":
            app.after_request(hook)

        @app.get("/events")
        @sse.stream()
        def events() -> list[Event]:
            return [Event("x")]

        headers = {"Origin": origin} if origin else {}
        if testing:
            with pytest.raises(HeaderConflictError):
                app.test_client().get("/events", headers=headers)
            continue
        caplog.clear()
        caplog.set_level(logging.ERROR, logger="flask_ssecors")
        response = app.test_client().get("/events", headers=headers)
        response.close()
        assert response.status_code == 200
        expected = [(ACAO, ALLOWED)] if origin else []
        assert cors_headers(response) == expected
        assert any("conflict" in r.getMessage() for r in caplog.records)


def test_after_request_hook_setting_cors_headers_on_a_cors_view(
    make_app: t.Callable[..., Flask],
) -> None:
    app = make_app()
    app.after_request(lambda response: _set(response, ACAO, "*"))
    sse = SSECors(app)

    @app.post("/messages")
    @sse.cors()
    def post_message() -> str:
        return "ok"

    with pytest.raises(HeaderConflictError):
        app.test_client().post("/messages", headers={"Origin": ALLOWED})


def test_after_request_hooks_on_undecorated_routes_are_not_policed(
    make_app: t.Callable[..., Flask],
) -> None:
    app = make_app()
    SSECors(app)
    app.after_request(lambda response: _set(response, ACAO, "*"))
    app.add_url_rule("/plain", "plain", lambda: "plain")
    response = app.test_client().get("/plain", headers={"Origin": HOSTILE})
    assert response.headers[ACAO] == "*"


def _set(response: Response, name: str, value: str) -> Response:
    response.headers[name] = value
    return response


# -- logs never carry raw request values -------------------------------------------------------


def _log_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    messages = [record.getMessage() for record in caplog.records]
    for message in messages:
        assert "\n" not in message and "\r" not in message and "\x00" not in message
        assert message.isascii() and message.isprintable()
    return messages


@pytest.mark.parametrize(
    ("path", "environ", "escaped"),
    [
        (
            "/events",
            {"HTTP_ORIGIN": "https://x.net\r\nINFO forged: admin logged in"},
            r'"https://x.net\x0d\x0aINFO forged: admin logged in"',
        ),
        ("/events", {"HTTP_ORIGIN": "https://x.net\nforged"}, r"https://x.net\x0aforged"),
        ("/events", {"HTTP_ORIGIN": "https://x.net\rforged"}, r"https://x.net\x0dforged"),
        ("/events", {"HTTP_ORIGIN": "https://x.net\x00forged"}, r"https://x.net\x00forged"),
        ("/events", {"HTTP_ORIGIN": "https://\xe9vil.net"}, r"https://\xe9vil.net"),
        ("/events", {"HTTP_ORIGIN": 'https://x.net" ok "'}, r"https://x.net\" ok \""),
        ("/events", {"HTTP_ORIGIN": "https://x.net\\"}, r"https://x.net\\"),
        ("/events", {"HTTP_ORIGIN": "https://x.net\x1b[31m"}, r"https://x.net\x1b[31m"),
        (
            "/rooms/a%0D%0AINFO%20forged/events",
            {"HTTP_ORIGIN": HOSTILE},
            r'"/rooms/a\x0d\x0aINFO forged/events"',
        ),
        ("/rooms/%E2%80%A8x/events", {"HTTP_ORIGIN": HOSTILE}, r"/rooms/\u2028x/events"),
        ("/rooms/%00/events", {"HTTP_ORIGIN": HOSTILE}, r"/rooms/\x00/events"),
    ],
)
def test_refusal_log_cannot_be_forged(
    site: Site, caplog: pytest.LogCaptureFixture, path: str, environ: dict[str, str], escaped: str
) -> None:
    """Rule 8 (flask-cors CVE-2024-1681): a refused request's origin and path are logged
    escaped, on one line."""
    caplog.set_level(logging.INFO, logger="flask_ssecors")
    response = site.send("GET", path, environ_base=environ)
    assert response.status_code == 403
    messages = _log_lines(caplog)
    assert any(escaped in message for message in messages), messages


def test_overlong_origin_is_logged_bounded(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="flask_ssecors")
    origin = "https://" + "a\r\n" * 5000
    site.send("GET", "/events", environ_base={"HTTP_ORIGIN": origin})
    messages = _log_lines(caplog)
    assert messages
    assert all(len(message) < 3000 for message in messages)


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("1\r\nINFO forged", r"1\x0d\x0aINFO forged"),
        ("1\nforged", r"1\x0aforged"),
        ("1\x00", r"1\x00"),
        ("1\x85forged", r"1\x85forged"),
        ("é\n".encode().decode("latin-1"), r"\xc3\xa9\x0a"),
        ("\u2028".encode().decode("latin-1") + "\r", r"\xe2\x80\xa8\x0d"),
    ],
)
def test_last_event_id_log_cannot_be_forged(
    site: Site, caplog: pytest.LogCaptureFixture, raw: str, escaped: str
) -> None:
    caplog.set_level(logging.INFO, logger="flask_ssecors")
    response = site.send(
        "GET", "/resume", environ_base={"HTTP_ORIGIN": ALLOWED, "HTTP_LAST_EVENT_ID": raw}
    )
    assert response.status_code == 200
    assert [event.data for event in parse_events(response.get_data())] == ["none"]
    messages = _log_lines(caplog)
    assert any(escaped in message for message in messages), messages


def test_valid_last_event_id_is_used(site: Site) -> None:
    response = site.send("GET", "/resume", headers={"Origin": ALLOWED, "Last-Event-ID": "42"})
    assert [event.data for event in parse_events(response.get_data())] == ["42"]


# -- regressions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "expected_status", "expected_headers"),
    [
        (("POST", "/messages", ALLOWED, None), ("POST", "/messages", HOSTILE, None), 403, []),
        (("GET", "/events", ALLOWED, None), ("GET", "/events", HOSTILE, None), 403, []),
        (("GET", "/events", ALLOWED, None), ("POST", "/messages", HOSTILE, None), 403, []),
        (
            ("OPTIONS", "/messages", HOSTILE, "POST"),
            ("POST", "/messages", ALLOWED, None),
            201,
            [(ACAO, ALLOWED)],
        ),
        (
            ("OPTIONS", "/messages", ALLOWED, "POST"),
            ("POST", "/messages", SUBDOMAIN, None),
            201,
            [(ACAO, SUBDOMAIN)],
        ),
        (("POST", "/messages", ALLOWED, None), ("POST", "/messages", None, None), 201, []),
    ],
)
def test_decision_is_not_reused_by_the_next_request_in_one_app_context(
    site: Site,
    first: tuple[str, str, str | None, str | None],
    second: tuple[str, str, str | None, str | None],
    expected_status: int,
    expected_headers: list[tuple[str, str]],
) -> None:
    """Requests made inside one pushed app context share ``g`` (a common test pattern); a
    decision kept there let a hostile request through with the previous request's
    Access-Control-Allow-Origin. Each request must be decided on its own."""

    def headers_of(origin: str | None, request_method: str | None) -> dict[str, str]:
        headers = {"Origin": origin} if origin else {}
        if request_method:
            headers[ACRM] = request_method
        return headers

    with site.app.app_context():
        site.send(first[0], first[1], headers=headers_of(*first[2:]))
        calls = sum(site.calls.values())
        response = site.send(second[0], second[1], headers=headers_of(*second[2:]))
    assert response.status_code == expected_status
    assert cors_headers(response) == expected_headers
    assert "origin" in vary(response)
    assert sum(site.calls.values()) - calls == (0 if expected_status == 403 else 1)


@pytest.mark.parametrize("testing", [True, False])
@pytest.mark.parametrize("decorator", ["cors", "stream"])
def test_view_decorated_by_another_instance_fails_closed(
    make_app: t.Callable[..., Flask], testing: bool, decorator: str
) -> None:
    """A view decorated by an SSECors object that is not the one registered on the app was
    served unpoliced: a credentialed cross-site POST ran it. It must fail closed instead."""
    app = make_app(**({} if testing else production({})), SSECORS_ALLOW_CREDENTIALS=True)
    other = SSECors()
    SSECors(app)
    calls: list[str] = []

    decorate: t.Callable[[t.Callable[..., t.Any]], t.Callable[..., t.Any]]
    decorate = getattr(other, decorator)()

    @app.route("/view", methods=["GET", "POST"])
    @decorate
    def view() -> list[Event]:
        calls.append("ran")
        return [Event("x")]

    client = app.test_client()
    if testing:
        with pytest.raises(RuntimeError, match="not the one registered"):
            client.post("/view", headers={"Origin": HOSTILE})
    else:
        response = client.post("/view", headers={"Origin": HOSTILE})
        assert response.status_code == 500
        assert cors_headers(response) == []
    assert calls == []


# -- per-view overrides --------------------------------------------------------------------------

OTHER = "https://other.example.com"


@pytest.fixture
def override_app(make_app: t.Callable[..., Flask]) -> Flask:
    app = make_app(SSECORS_ALLOWED_ORIGINS=[ALLOWED])
    sse = SSECors(app)

    @app.get("/other-events")
    @sse.stream(origins=[OTHER])
    def other_events() -> list[Event]:
        return [Event("x")]

    @app.route("/put", methods=["PUT"])
    @sse.cors(allowed_methods=["PUT"], allow_credentials=True, allowed_headers=["Authorization"])
    def put() -> str:
        return "ok"

    @app.get("/default")
    @sse.cors()
    def default() -> str:
        return "ok"

    return app


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "expected"),
    [
        ("GET", "/other-events", {"Origin": OTHER}, 200, [(ACAO, OTHER)]),
        ("GET", "/other-events", {"Origin": ALLOWED}, 403, []),
        ("GET", "/default", {"Origin": ALLOWED}, 200, [(ACAO, ALLOWED)]),
        ("GET", "/default", {"Origin": OTHER}, 403, []),
        ("PUT", "/put", {"Origin": ALLOWED}, 200, [(ACAO, ALLOWED), (ACAC, "true")]),
        (
            "OPTIONS",
            "/put",
            {"Origin": ALLOWED, ACRM: "PUT", ACRH: "authorization"},
            204,
            [
                (ACAO, ALLOWED),
                (ACAM, "PUT"),
                (ACAC, "true"),
                (ACAH, "authorization"),
                (ACMA, "600"),
            ],
        ),
        ("OPTIONS", "/default", {"Origin": ALLOWED, ACRM: "GET", ACRH: "authorization"}, 403, []),
        ("OPTIONS", "/default", {"Origin": ALLOWED, ACRM: "PUT"}, 403, []),
    ],
)
def test_per_view_overrides_apply_to_their_view_only(
    override_app: Flask,
    method: str,
    path: str,
    headers: dict[str, str],
    status: int,
    expected: list[tuple[str, str]],
) -> None:
    response = override_app.test_client().open(path, method=method, headers=headers)
    response.close()
    assert response.status_code == status
    assert cors_headers(response) == expected
    assert "origin" in vary(response)


def test_preflight_is_decided_by_the_view_its_method_reaches(
    make_app: t.Callable[..., Flask],
) -> None:
    """GET and POST on one path as two views: OPTIONS matches the GET rule, but a preflight
    for POST must be decided by the POST view's policy and methods (it was refused with 403
    while the POST itself was allowed)."""
    app = make_app()
    sse = SSECors(app)
    posted: list[int] = []

    @app.get("/items")
    @sse.cors()
    def list_items() -> t.Any:
        return {"items": []}

    @app.post("/items")
    @sse.cors()
    def add_item() -> t.Any:
        posted.append(1)
        return {"ok": True}, 201

    client = app.test_client()
    preflight = client.options(
        "/items",
        headers={
            "Origin": ALLOWED,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Methods"] == "POST"
    refused = client.options(
        "/items", headers={"Origin": ALLOWED, "Access-Control-Request-Method": "PUT"}
    )
    assert refused.status_code == 403
    assert "Access-Control-Allow-Origin" not in refused.headers
    assert client.post("/items", json={}, headers={"Origin": ALLOWED}).status_code == 201
    assert posted == [1]
