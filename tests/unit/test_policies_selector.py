"""Named policies and the per-request selector: two tenants, one route, two policies."""

from __future__ import annotations

import logging
import typing as t

import pytest
from flask import Flask
from flask import request

from flask_ssecors import Event
from flask_ssecors import SSECors
from flask_ssecors.exceptions import ConfigError
from tests.conftest import ALLOWED
from tests.conftest import HOSTILE

ACME = "https://app.acme.test"
GLOBEX = "https://portal.globex.test"
ACAO = "Access-Control-Allow-Origin"
ACAC = "Access-Control-Allow-Credentials"
TENANTS = {"acme.api.test": "acme", "globex.api.test": "globex"}


def tenant_app(
    make_app: t.Callable[..., Flask], choose: t.Callable[[], object] | None = None, **config: object
) -> tuple[Flask, SSECors, list[str]]:
    """One app serving two tenants (by host) on the same routes."""
    app = make_app(**config)
    sse = SSECors(app)
    sse.policy("acme", origins=[ACME], allow_credentials=True)
    sse.policy("globex", origins=[GLOBEX], max_age=60)
    calls: list[str] = []

    @sse.policy_selector
    def select() -> t.Any:
        if choose is not None:
            return choose()
        return TENANTS.get(request.host)

    @app.get("/events")
    @sse.stream()
    def events() -> t.Any:
        calls.append(request.host)
        return iter([Event("hi")])

    @app.post("/messages")
    @sse.cors()
    def messages() -> t.Any:
        calls.append(request.host)
        return {"ok": True}, 201

    return app, sse, calls


def send(app: Flask, method: str, path: str, host: str, **headers: str) -> t.Any:
    client = app.test_client()
    # Buffered: the (finite) streams are read to their end and closed.
    return client.open(
        path, method=method, base_url=f"https://{host}", headers=headers, buffered=True
    )


@pytest.mark.parametrize(
    ("host", "origin", "allowed", "credentials"),
    [
        ("acme.api.test", ACME, True, True),
        ("acme.api.test", GLOBEX, False, False),
        ("globex.api.test", GLOBEX, True, False),
        ("globex.api.test", ACME, False, False),
        ("other.api.test", ALLOWED, True, False),  # no tenant: the view's own policy
        ("other.api.test", ACME, False, False),
    ],
)
@pytest.mark.parametrize(("method", "path"), [("GET", "/events"), ("POST", "/messages")])
def test_two_tenants_on_the_same_route(
    make_app: t.Callable[..., Flask],
    host: str,
    origin: str,
    allowed: bool,
    credentials: bool,
    method: str,
    path: str,
) -> None:
    app, _, calls = tenant_app(make_app)
    response = send(app, method, path, host, Origin=origin)
    if allowed:
        assert response.status_code in (200, 201)
        assert response.headers[ACAO] == origin
        assert (response.headers.get(ACAC) == "true") is credentials
        assert calls == [host]
    else:
        assert response.status_code == 403
        assert ACAO not in response.headers
        assert calls == []
    assert "Origin" in response.headers["Vary"]


@pytest.mark.parametrize(
    ("host", "origin", "status", "max_age"),
    [
        ("acme.api.test", ACME, 204, "600"),
        ("globex.api.test", GLOBEX, 204, "60"),
        ("globex.api.test", ACME, 403, None),
    ],
)
def test_preflights_follow_the_selected_policy(
    make_app: t.Callable[..., Flask], host: str, origin: str, status: int, max_age: str | None
) -> None:
    app, _, _ = tenant_app(make_app)
    response = send(
        app,
        "OPTIONS",
        "/messages",
        host,
        Origin=origin,
        **{"Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == status
    assert response.headers.get("Access-Control-Max-Age") == max_age


@pytest.mark.parametrize(
    "returned",
    [ACME, "*", "null", "ACME", "acme ", ["acme"], b"acme", object()],
    ids=["origin", "star", "null", "case", "space", "list", "bytes", "object"],
)
def test_the_selector_cannot_produce_an_origin(
    make_app: t.Callable[..., Flask], caplog: pytest.LogCaptureFixture, returned: object
) -> None:
    """Anything but a declared name is refused: an origin string is not a policy. In
    production the request gets 403 and the error is logged; the view never runs."""
    app, sse, calls = tenant_app(make_app, lambda: returned, TESTING=False)
    caplog.set_level(logging.ERROR, logger="flask_ssecors")
    for method, path in (("GET", "/events"), ("POST", "/messages")):
        response = send(app, method, path, "acme.api.test", Origin=ACME)
        assert response.status_code == 403
        assert ACAO not in response.headers
    assert calls == []
    assert len([r for r in caplog.records if "policy selector" in r.getMessage()]) == 2
    with app.app_context():
        assert sse.stats()["refused_origins"] == {"policy-selection-failed": 2}


def test_an_unknown_name_raises_in_testing(make_app: t.Callable[..., Flask]) -> None:
    app, _, _ = tenant_app(make_app, lambda: ACME)
    with pytest.raises(ConfigError, match="not the name of a policy declared"):
        send(app, "GET", "/events", "acme.api.test", Origin=ACME)


def test_a_selector_that_raises_fails_closed(
    make_app: t.Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> str:
        raise KeyError("tenant")

    app, _, calls = tenant_app(make_app, broken, TESTING=False)
    response = send(app, "GET", "/events", "acme.api.test", Origin=ACME)
    assert response.status_code == 403
    assert calls == []
    assert any(r.exc_info for r in caplog.records)
    testing, _, _ = tenant_app(make_app, broken)
    with pytest.raises(KeyError):
        send(testing, "GET", "/events", "acme.api.test", Origin=ACME)


def test_requests_without_origin_follow_the_selected_policy(
    make_app: t.Callable[..., Flask],
) -> None:
    app, _, _ = tenant_app(make_app)
    strict, sse, _ = tenant_app(make_app, lambda: "strict")
    sse.policy("strict", origins=[ACME], serve_without_origin=False)
    assert send(app, "GET", "/events", "acme.api.test").status_code == 200
    assert send(strict, "GET", "/events", "acme.api.test").status_code == 403


@pytest.mark.parametrize(
    ("name", "options", "keys"),
    [
        ("bad", {"origins": ["*"], "allow_credentials": True}, ["policy 'bad': origins"]),
        ("bad", {"origins": ["https://*.com"]}, ["origins"]),
        ("bad", {"allow_credentials": True}, ["origins"]),
        ("bad", {"origins": [ACME], "heartbeat": 1}, ["heartbeat"]),
        ("", {"origins": [ACME]}, ["name"]),
        ("a b", {"origins": [ACME]}, ["name"]),
        (ACME, {"origins": [ACME]}, ["name"]),
        ("bad", {"origins": [ACME], "allowed_headers": ["*"], "allow_credentials": True}, None),
    ],
)
def test_named_policies_are_validated_like_the_main_one(
    make_app: t.Callable[..., Flask], name: str, options: dict[str, object], keys: list[str] | None
) -> None:
    sse = SSECors(make_app())
    with pytest.raises(ConfigError) as info:
        sse.policy(name, **options)
    if keys is not None:
        assert [issue.key for issue in info.value.issues] == keys


def test_a_policy_declared_before_init_app_is_checked_there(
    make_app: t.Callable[..., Flask],
) -> None:
    sse = SSECors()
    sse.policy("insecure", origins=["http://partner.example.com"], allow_credentials=True)
    with pytest.raises(ConfigError) as info:
        sse.init_app(make_app())
    assert "policy 'insecure': origins" in [issue.key for issue in info.value.issues]
    ok = make_app(SSECORS_DANGEROUSLY_ALLOW_INSECURE_ORIGINS=True)
    sse.init_app(ok)
    assert "insecure" in ok.extensions["ssecors"].policies


def test_policy_names_are_unique(make_app: t.Callable[..., Flask]) -> None:
    sse = SSECors(make_app())
    sse.policy("acme", origins=[ACME])
    with pytest.raises(ConfigError, match="already declared"):
        sse.policy("acme", origins=[GLOBEX])


def test_unset_options_come_from_the_app(make_app: t.Callable[..., Flask]) -> None:
    app, sse, _ = tenant_app(make_app, lambda: "plain", SSECORS_EXPOSE_HEADERS=["X-Total"])
    sse.policy("plain", origins=[HOSTILE])
    response = send(app, "POST", "/messages", "any.api.test", Origin=HOSTILE)
    assert response.status_code == 201
    assert response.headers["Access-Control-Expose-Headers"] == "x-total"


def test_policy_selector_must_be_callable(make_app: t.Callable[..., Flask]) -> None:
    sse = SSECors(make_app())
    with pytest.raises(TypeError):
        sse.policy_selector("acme")  # type: ignore[type-var]
