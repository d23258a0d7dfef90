"""The compiled CORS policy and its per-request decision (pure: no app, no request).

docs/security.rst: "Unanchored origin patterns and regular expressions", "Missing Vary",
"Missing companion headers", "Reflected ``null``", "Private Network Access".
"""

from __future__ import annotations

import dataclasses
import re

import pytest
from hypothesis import example
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from flask_ssecors._config import read_settings
from flask_ssecors._fetch import ACAC
from flask_ssecors._fetch import ACAH
from flask_ssecors._fetch import ACAM
from flask_ssecors._fetch import ACAO
from flask_ssecors._fetch import ACAPN
from flask_ssecors._fetch import ACEH
from flask_ssecors._fetch import ACMA
from flask_ssecors._policy import compile_policy
from flask_ssecors._policy import CorsPolicy
from flask_ssecors._policy import Decision
from flask_ssecors._policy import Reason

OWN = "http://api.test:5000"
APP = "https://app.example.com"
PORTED = "https://api.example.com:8443"
EXACT = (APP, PORTED, "http://localhost:5001")
WILDCARDS = ("https://*.example.org", "https://*.example.net:8443")
HOSTILE = "https://evil.example.net"
STREAM_ROUTE = frozenset({"GET", "HEAD", "OPTIONS"})
POST_ROUTE = frozenset({"POST", "OPTIONS"})


def policy(**config: object) -> CorsPolicy:
    """A policy from ``SSECORS_*`` settings given without the prefix."""
    values = {f"SSECORS_{key.upper()}": value for key, value in config.items()}
    values.setdefault("SSECORS_ALLOWED_ORIGINS", [*EXACT, *WILDCARDS])
    return compile_policy(read_settings(values).cors)


DEFAULT = policy()
CREDENTIALED = policy(allow_credentials=True)


def actual(p: CorsPolicy, origin: str | None, method: str = "GET") -> Decision:
    return p.decide(method=method, origin=origin, own_origin=OWN)


def preflight(
    p: CorsPolicy,
    request_method: str,
    request_headers: str | None = None,
    *,
    origin: str = APP,
    private_network: bool = False,
    route_methods: frozenset[str] | None = None,
) -> Decision:
    return p.decide(
        method="OPTIONS",
        origin=origin,
        own_origin=OWN,
        request_method=request_method,
        request_headers=request_headers,
        private_network=private_network,
        route_methods=route_methods,
    )


def values_of(decision: Decision, name: str) -> list[str]:
    return [value for key, value in decision.headers if key == name]


# -- actual (non-preflight) requests -----------------------------------------------------------

REFUSED_ORIGINS: list[tuple[str, str]] = [
    (HOSTILE, Reason.ORIGIN_NOT_ALLOWED),
    ("https://example.org", Reason.ORIGIN_NOT_ALLOWED),
    ("http://a.example.org", Reason.ORIGIN_NOT_ALLOWED),
    ("https://a.example.org:8443", Reason.ORIGIN_NOT_ALLOWED),
    ("https://a.example.net", Reason.ORIGIN_NOT_ALLOWED),
    ("https://example.net:8443", Reason.ORIGIN_NOT_ALLOWED),
    ("https://a.example.org.evil.com", Reason.ORIGIN_NOT_ALLOWED),
    ("https://app.example.com.evil.com", Reason.ORIGIN_NOT_ALLOWED),
    ("https://evilexample.org", Reason.ORIGIN_NOT_ALLOWED),
    ("https://evilexample.com", Reason.ORIGIN_NOT_ALLOWED),
    ("https://xapp.example.com", Reason.ORIGIN_NOT_ALLOWED),
    ("http://app.example.com", Reason.ORIGIN_NOT_ALLOWED),
    ("https://app.example.com:8443", Reason.ORIGIN_NOT_ALLOWED),
    ("https://api.example.com", Reason.ORIGIN_NOT_ALLOWED),
    ("http://localhost:5000", Reason.ORIGIN_NOT_ALLOWED),
    ("http://127.0.0.1:5001", Reason.ORIGIN_NOT_ALLOWED),
    # Near the request's own origin (OWN), but not it.
    ("http://api.test:5000.evil.com", Reason.MALFORMED_ORIGIN),
    ("http://api.test.evil.com:5000", Reason.ORIGIN_NOT_ALLOWED),
    ("http://api.test:50001", Reason.ORIGIN_NOT_ALLOWED),
    ("http://api.test", Reason.ORIGIN_NOT_ALLOWED),
    ("https://api.test:5000", Reason.ORIGIN_NOT_ALLOWED),
    ("http://api.test:5000/", Reason.MALFORMED_ORIGIN),
    ("HTTP://API.TEST:5000", Reason.MALFORMED_ORIGIN),
    ("HTTPS://APP.EXAMPLE.COM", Reason.MALFORMED_ORIGIN),
    ("https://App.example.com", Reason.MALFORMED_ORIGIN),
    ("null", Reason.MALFORMED_ORIGIN),
    ("", Reason.MALFORMED_ORIGIN),
    ("*", Reason.MALFORMED_ORIGIN),
    ("https://app.example.com:443", Reason.MALFORMED_ORIGIN),
    ("https://app.example.com/", Reason.MALFORMED_ORIGIN),
    ("https://app.example.com.", Reason.MALFORMED_ORIGIN),
    ("https://app.example.com/path", Reason.MALFORMED_ORIGIN),
    ("https://app.example.com, https://app.example.com", Reason.MALFORMED_ORIGIN),
    ("https://app.example.com,https://evil.example.net", Reason.MALFORMED_ORIGIN),
    ("https://app.example.com ", Reason.MALFORMED_ORIGIN),
    (" https://app.example.com", Reason.MALFORMED_ORIGIN),
    ("https://app.example.com\r\nX-Forged: 1", Reason.MALFORMED_ORIGIN),
    ("https://app.example.com\x00", Reason.MALFORMED_ORIGIN),
    ("https://user@app.example.com", Reason.MALFORMED_ORIGIN),
    ("https://*.example.org", Reason.MALFORMED_ORIGIN),
    ("https://a..example.org", Reason.MALFORMED_ORIGIN),
    ("https://-a.example.org", Reason.MALFORMED_ORIGIN),
    ("https://a.example.org:08443", Reason.MALFORMED_ORIGIN),
    ("https://bücher.example.org", Reason.MALFORMED_ORIGIN),
    ("file://", Reason.MALFORMED_ORIGIN),
    ("https://" + "a." * 5000 + "example.org", Reason.MALFORMED_ORIGIN),
    (APP + "x" * 10_000, Reason.MALFORMED_ORIGIN),
]


@pytest.mark.parametrize(("origin", "reason"), REFUSED_ORIGINS)
@pytest.mark.parametrize("p", [DEFAULT, CREDENTIALED], ids=["plain", "credentials"])
def test_refused_origin(p: CorsPolicy, origin: str, reason: str) -> None:
    decision = actual(p, origin)
    assert decision.allowed is False
    assert decision.reason == reason
    assert decision.status == 403
    assert decision.headers == ()
    assert decision.vary == ("Origin",)


@pytest.mark.parametrize(
    "origin",
    [
        APP,
        PORTED,
        "http://localhost:5001",
        "https://a.example.org",
        "https://a.b.example.org",
        "https://xn--bcher-kva.example.org",
        "https://1.example.org",
        "https://a.example.net:8443",
        "https://a-b.c.example.net:8443",
    ],
)
@pytest.mark.parametrize(
    ("p", "credentials"), [(DEFAULT, False), (CREDENTIALED, True)], ids=["plain", "credentials"]
)
def test_allowed_origin(p: CorsPolicy, credentials: bool, origin: str) -> None:
    decision = actual(p, origin)
    assert decision.allowed is True
    assert decision.preflight is False
    assert decision.reason == Reason.ALLOWED
    assert decision.status is None
    assert decision.vary == ("Origin",)
    expected = ((ACAO, origin), (ACAC, "true")) if credentials else ((ACAO, origin),)
    assert decision.headers == expected


@pytest.mark.parametrize(
    ("config", "origin", "expected"),
    [
        ({}, APP, ((ACAO, APP),)),
        ({"expose_headers": ["X-Request-ID"]}, APP, ((ACAO, APP), (ACEH, "x-request-id"))),
        (
            {"expose_headers": ["X-A", "X-B"], "allow_credentials": True},
            "https://a.example.org",
            ((ACAO, "https://a.example.org"), (ACAC, "true"), (ACEH, "x-a, x-b")),
        ),
        ({"allowed_origins": ["*"]}, HOSTILE, ((ACAO, "*"),)),
        ({"allowed_origins": ["*"]}, "http://192.0.2.1:8080", ((ACAO, "*"),)),
        ({"allowed_origins": ["*"], "expose_headers": ["*"]}, APP, ((ACAO, "*"), (ACEH, "*"))),
        # Private Network Access headers never go on actual responses.
        ({"allow_private_network": True}, APP, ((ACAO, APP),)),
    ],
)
def test_actual_headers(config: dict[str, object], origin: str, expected: object) -> None:
    decision = actual(policy(**config), origin)
    assert decision.allowed is True
    assert decision.headers == expected


@pytest.mark.parametrize(
    "origin",
    ["null", "HTTPS://APP.EXAMPLE.COM", "https://a.com, https://b.com", "https://a.com/", ""],
)
def test_any_origin_still_refuses_malformed_values(origin: str) -> None:
    decision = actual(policy(allowed_origins=["*"]), origin)
    assert (decision.allowed, decision.reason) == (False, Reason.MALFORMED_ORIGIN)
    assert decision.headers == ()


@pytest.mark.parametrize(
    ("serve_without_origin", "method", "allowed", "reason"),
    [
        (True, "GET", True, Reason.NO_ORIGIN),
        (True, "POST", True, Reason.NO_ORIGIN),
        (True, "OPTIONS", True, Reason.NO_ORIGIN),
        (False, "GET", False, Reason.NO_ORIGIN_REFUSED),
        (False, "POST", False, Reason.NO_ORIGIN_REFUSED),
    ],
)
def test_no_origin(serve_without_origin: bool, method: str, allowed: bool, reason: str) -> None:
    p = policy(serve_without_origin=serve_without_origin, allow_credentials=True)
    decision = p.decide(method=method, origin=None, own_origin=OWN, request_method="GET")
    assert (decision.allowed, decision.reason, decision.preflight) == (allowed, reason, False)
    assert decision.headers == ()
    assert decision.vary == ("Origin",)
    assert decision.status == (None if allowed else 403)


@pytest.mark.parametrize(
    ("config", "method", "request_method"),
    [
        ({}, "GET", None),
        ({}, "POST", None),
        ({"serve_without_origin": False}, "GET", None),
        ({"allowed_origins": ["https://other.example.com"]}, "GET", None),
        ({"allowed_origins": ["https://*.example.org"]}, "POST", None),
        ({"allow_credentials": True}, "OPTIONS", None),
        ({}, "OPTIONS", "PUT"),
    ],
)
def test_same_origin_is_never_refused(
    config: dict[str, object], method: str, request_method: str | None
) -> None:
    """Rule 4: an Origin equal to the request's own origin is same-origin."""
    decision = policy(**config).decide(
        method=method, origin=OWN, own_origin=OWN, request_method=request_method
    )
    assert decision.allowed is True
    assert decision.reason == Reason.SAME_ORIGIN
    assert decision.status is None
    assert decision.headers == ()


def test_same_origin_that_is_also_allowed_gets_the_cors_headers() -> None:
    decision = DEFAULT.decide(method="GET", origin=APP, own_origin=APP)
    assert decision.allowed is True
    assert values_of(decision, ACAO) == [APP]


# -- preflights --------------------------------------------------------------------------------

PREFLIGHT_ALLOWED: list[tuple[dict[str, object], str, str | None, object]] = [
    (
        {},
        "GET",
        None,
        (
            (ACAO, APP),
            (ACAM, "GET"),
            (ACAH, "last-event-id, cache-control, content-type"),
            (ACMA, "600"),
        ),
    ),
    (
        {"allow_credentials": True, "max_age": 0},
        "POST",
        "Content-Type",
        (
            (ACAO, APP),
            (ACAM, "POST"),
            (ACAC, "true"),
            (ACAH, "last-event-id, cache-control, content-type"),
            (ACMA, "0"),
        ),
    ),
    (
        {"allowed_headers": ["Authorization", "Last-Event-ID"], "max_age": 86400},
        "GET",
        "authorization,last-event-id",
        ((ACAO, APP), (ACAM, "GET"), (ACAH, "authorization, last-event-id"), (ACMA, "86400")),
    ),
    (
        {"allowed_headers": [], "allowed_methods": ["PUT"]},
        "PUT",
        "",
        ((ACAO, APP), (ACAM, "PUT"), (ACMA, "600")),
    ),
    (
        {"allowed_headers": ["*"]},
        "GET",
        "x-anything, x-other",
        ((ACAO, APP), (ACAM, "GET"), (ACAH, "*"), (ACMA, "600")),
    ),
    (
        {"allowed_origins": ["*"]},
        "GET",
        "last-event-id",
        (
            (ACAO, "*"),
            (ACAM, "GET"),
            (ACAH, "last-event-id, cache-control, content-type"),
            (ACMA, "600"),
        ),
    ),
]


@pytest.mark.parametrize(
    ("config", "request_method", "request_headers", "expected"), PREFLIGHT_ALLOWED
)
def test_preflight_allowed(
    config: dict[str, object], request_method: str, request_headers: str | None, expected: object
) -> None:
    decision = preflight(policy(**config), request_method, request_headers)
    assert decision.allowed is True
    assert decision.preflight is True
    assert decision.status == 204
    assert decision.headers == expected
    assert decision.vary[0] == "Origin"
    assert "Access-Control-Request-Headers" in decision.vary


@pytest.mark.parametrize(
    ("request_headers", "allowed"),
    [
        ("Last-Event-ID", True),
        ("last-event-id", True),
        ("LAST-EVENT-ID, Cache-Control", True),
        (" last-event-id ,\tcontent-type ", True),
        ("last-event-id,,content-type,", True),
        ("x-custom", False),
        ("last-event-id, x-custom", False),
        ("authorization", False),
        ("Authorization", False),
        ("cookie", False),
        ("last-event-id x-custom", False),
        ("last-event-id;x", False),
        ("last-event-id\r\nx-forged: 1", False),
        ("läst-event-id", False),
        ("a" * 2049, False),
        ("last-event-id, " * 200, False),
    ],
)
def test_preflight_request_headers(request_headers: str, allowed: bool) -> None:
    decision = preflight(DEFAULT, "GET", request_headers)
    assert decision.allowed is allowed
    assert decision.preflight is True
    if not allowed:
        assert decision.status == 403
        assert decision.headers == ()


@pytest.mark.parametrize(
    ("config", "request_headers", "allowed"),
    [
        ({}, "authorization", False),
        ({"allowed_headers": ["*"]}, "authorization", False),
        ({"allowed_headers": ["*"]}, "x-token, authorization", False),
        ({"allowed_headers": ["Authorization"]}, "authorization", True),
        ({"allowed_headers": ["Authorization"]}, "Authorization", True),
        ({"allowed_headers": ["*", "Authorization"]}, "authorization, x-token", True),
    ],
)
def test_preflight_authorization_only_when_configured(
    config: dict[str, object], request_headers: str, allowed: bool
) -> None:
    """Fetch: ``*`` in Access-Control-Allow-Headers never covers Authorization."""
    decision = preflight(policy(**config), "GET", request_headers)
    assert decision.allowed is allowed
    assert decision.reason == (Reason.ALLOWED if allowed else Reason.HEADERS_NOT_ALLOWED)


@pytest.mark.parametrize(
    ("count", "allowed", "reason"),
    [
        (1, True, Reason.ALLOWED),
        (64, True, Reason.ALLOWED),
        (65, False, Reason.MALFORMED_HEADERS),
        (66, False, Reason.MALFORMED_HEADERS),
        (500, False, Reason.MALFORMED_HEADERS),
    ],
)
def test_preflight_header_count_is_bounded(count: int, allowed: bool, reason: str) -> None:
    names = [f"x-h{n}" for n in range(count)]
    p = policy(allowed_headers=[f"x-h{n}" for n in range(66)])
    decision = preflight(p, "GET", ", ".join(names))
    assert (decision.allowed, decision.reason) == (allowed, reason)


@pytest.mark.parametrize(
    ("request_headers", "reason"),
    [
        ("x-custom", Reason.HEADERS_NOT_ALLOWED),
        ("x y", Reason.MALFORMED_HEADERS),
        ("a" * 2049, Reason.MALFORMED_HEADERS),
        ("last-event-id\x00", Reason.MALFORMED_HEADERS),
        ('"last-event-id"', Reason.MALFORMED_HEADERS),
    ],
)
def test_preflight_refusal_reasons(request_headers: str, reason: str) -> None:
    assert preflight(DEFAULT, "GET", request_headers).reason == reason


@pytest.mark.parametrize(
    ("config", "request_method", "route_methods", "allowed"),
    [
        ({}, "GET", STREAM_ROUTE, True),
        ({}, "HEAD", STREAM_ROUTE, True),
        ({}, "POST", POST_ROUTE, True),
        ({}, "POST", None, True),
        ({}, "POST", STREAM_ROUTE, False),  # allowed by the policy, not on the route
        ({}, "GET", POST_ROUTE, False),
        ({}, "PUT", None, False),
        ({}, "DELETE", frozenset({"DELETE", "OPTIONS"}), False),
        ({}, "get", STREAM_ROUTE, False),  # methods are case-sensitive
        ({}, "OPTIONS", STREAM_ROUTE, False),
        ({}, "", None, False),
        ({}, "GET\r\n", None, False),
        ({"allowed_methods": ["PUT"]}, "PUT", frozenset({"PUT", "OPTIONS"}), True),
        ({"allowed_methods": ["PUT"]}, "GET", STREAM_ROUTE, False),
    ],
)
def test_preflight_method(
    config: dict[str, object],
    request_method: str,
    route_methods: frozenset[str] | None,
    allowed: bool,
) -> None:
    decision = preflight(policy(**config), request_method, route_methods=route_methods)
    assert decision.allowed is allowed
    assert decision.preflight is True
    if allowed:
        assert values_of(decision, ACAM) == [request_method]
    else:
        assert decision.reason == Reason.METHOD_NOT_ALLOWED
        assert decision.headers == ()
        assert decision.status == 403


@pytest.mark.parametrize(("origin", "reason"), REFUSED_ORIGINS[:20])
def test_preflight_refused_origin(origin: str, reason: str) -> None:
    decision = preflight(CREDENTIALED, "GET", "last-event-id", origin=origin)
    assert (decision.allowed, decision.preflight, decision.reason) == (False, True, reason)
    assert decision.status == 403
    assert decision.headers == ()


@pytest.mark.parametrize(
    ("configured", "requested", "expected"),
    [
        (False, False, []),
        (False, True, []),
        (True, False, []),
        (True, True, ["true"]),
    ],
)
def test_private_network_header_only_when_configured(
    configured: bool, requested: bool, expected: list[str]
) -> None:
    """Rule 7: Private Network Access headers are never sent unless configured."""
    p = policy(allow_private_network=configured)
    decision = preflight(p, "GET", private_network=requested)
    assert decision.allowed is True
    assert values_of(decision, ACAPN) == expected


def test_refused_preflight_never_has_private_network_header() -> None:
    p = policy(allow_private_network=True)
    decision = preflight(p, "GET", private_network=True, origin=HOSTILE)
    assert decision.allowed is False
    assert decision.headers == ()


def test_options_without_request_method_is_not_a_preflight() -> None:
    decision = DEFAULT.decide(method="OPTIONS", origin=APP, own_origin=OWN)
    assert decision.preflight is False
    assert decision.status is None
    assert values_of(decision, ACAM) == []


@pytest.mark.parametrize("method", ["GET", "POST", "PUT"])
def test_request_method_header_on_other_methods_is_not_a_preflight(method: str) -> None:
    decision = DEFAULT.decide(method=method, origin=APP, own_origin=OWN, request_method="PUT")
    assert decision.preflight is False
    assert decision.allowed is True
    assert values_of(decision, ACAM) == []


# -- compiled once, immutable ------------------------------------------------------------------


@pytest.mark.parametrize("origin", list(EXACT))
def test_exact_origin_decisions_are_precomputed(origin: str) -> None:
    first = actual(CREDENTIALED, origin)
    assert actual(CREDENTIALED, origin) is first
    assert actual(CREDENTIALED, origin, method="POST") is first
    assert CREDENTIALED.actual_by_origin[origin] is first


def test_precomputed_decisions_cover_exact_origins_only() -> None:
    assert set(CREDENTIALED.actual_by_origin) == set(EXACT)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda p: p.actual_by_origin.__setitem__(HOSTILE, p.actual_by_origin[APP]),
        lambda p: p.actual_by_origin.pop(APP),
        lambda p: setattr(p, "allowed_methods", frozenset({"DELETE"})),
        lambda p: setattr(p, "options", None),
        lambda p: setattr(p.options, "allow_credentials", False),
        lambda p: setattr(p.actual_by_origin[APP], "allowed", False),
        lambda p: setattr(p, "extra", 1),
        lambda p: p.allowed_headers.add("authorization"),
    ],
)
def test_policy_is_immutable(mutate: object) -> None:
    p = policy(allow_credentials=True)
    with pytest.raises((TypeError, AttributeError, dataclasses.FrozenInstanceError)):
        mutate(p)  # type: ignore[operator]
    assert actual(p, HOSTILE).allowed is False
    assert actual(p, APP).headers == ((ACAO, APP), (ACAC, "true"))
    assert p.options.allow_credentials is True


def test_header_values_are_tuples_of_strings() -> None:
    for decision in (actual(CREDENTIALED, APP), preflight(CREDENTIALED, "GET")):
        assert isinstance(decision.headers, tuple)
        for item in decision.headers:
            assert isinstance(item, tuple)
            assert all(isinstance(part, str) for part in item)


# -- properties --------------------------------------------------------------------------------

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def _canonical_subdomain_host(host: str, base: str) -> bool:
    """Whether ``host`` is one or more canonical LDH labels, then ``.base`` (written without
    the origins module, to check it independently)."""
    if not host.endswith("." + base) or len(host) > 253:
        return False
    labels = host[: -len(base) - 1].split(".")
    return all(_LABEL.fullmatch(label) is not None for label in labels)


def expected_allowed(origin: str) -> bool:
    if origin in EXACT or origin == OWN:
        return True
    for pattern in WILDCARDS:
        scheme, _, rest = pattern.partition("://")
        base, _, port = rest[2:].partition(":")
        prefix = f"{scheme}://"
        suffix = f":{port}" if port else ""
        if not (origin.startswith(prefix) and origin.endswith(suffix)):
            continue
        host = origin[len(prefix) : len(origin) - len(suffix)]
        if _canonical_subdomain_host(host, base):
            return True
    return False


_labels = st.sampled_from(
    ["a", "b", "app", "api", "example", "org", "net", "com", "evil", "1", "a-b", "-a", "a-",
     "xn--bcher-kva", "A", "APP", "", "*", "a_b", "ü", "x" * 63, "x" * 64]
)  # fmt: skip
_hosts = st.lists(_labels, min_size=1, max_size=6).map(".".join) | st.sampled_from(
    ["app.example.com", "api.example.com", "localhost", "api.test", "[::1]", "127.0.0.1"]
)
_structured = st.builds(
    lambda scheme, host, base, port, tail: f"{scheme}://{host}{base}{port}{tail}",
    st.sampled_from(["https", "http", "HTTPS", "Https", "ftp", "wss", ""]),
    _hosts,
    st.sampled_from(["", ".example.org", ".example.net", ".example.com", ".EXAMPLE.org"]),
    st.sampled_from(["", ":8443", ":443", ":5000", ":5001", ":80", ":0", ":08443", ":"]),
    st.sampled_from(["", "", "", "/", ".", " ", "\r\n", "\x00", ", " + APP, "/x", "?", "#"]),
)
#: Mostly well-formed subdomains under the configured wildcards, so about half are allowed.
_near = st.builds(
    lambda labels, base, port: f"https://{'.'.join(labels)}{base}{port}",
    st.lists(st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,4}[a-z0-9])?", fullmatch=True) | _labels,
             min_size=1, max_size=4),
    st.sampled_from([".example.org", ".example.net"]),
    st.sampled_from(["", ":8443"]),
)  # fmt: skip
_origins = st.one_of(
    _near,
    _structured,
    st.text(max_size=60),
    st.text(alphabet="abcehlmnoprstx.:/-*[]0123456789", max_size=60),
    st.sampled_from([*EXACT, OWN, *(origin for origin, _ in REFUSED_ORIGINS)]),
)


@settings(max_examples=1500, deadline=None)
@given(origin=_origins)
@example(origin="https://a.example.org")
@example(origin="https://a.example.net:8443")
@example(origin="https://example.org")
@example(origin="https://" + "a" * 64 + ".example.org")
@example(origin="https://" + "a." * 126 + "example.org")
@example(origin=OWN)
def test_allowed_only_for_configured_origins(origin: str) -> None:
    """Rule 2: only exact configured origins, canonical subdomains under a configured wildcard,
    and the request's own origin are allowed; the expectation is computed independently."""
    for p in (DEFAULT, CREDENTIALED):
        decision = p.decide(method="GET", origin=origin, own_origin=OWN)
        assert decision.allowed is expected_allowed(origin), origin
        if not decision.allowed:
            assert decision.headers == ()
        elif origin != OWN:
            assert values_of(decision, ACAO) == [origin]


_any_policy = st.sampled_from(
    [
        DEFAULT,
        CREDENTIALED,
        policy(allowed_origins=["*"]),
        policy(allowed_origins=["*"], allowed_headers=["*"], expose_headers=["*"]),
        policy(allow_credentials=True, allow_private_network=True, expose_headers=["X-A"]),
    ]
)


@settings(max_examples=1000, deadline=None)
@given(
    p=_any_policy,
    origin=st.none() | _origins,
    method=st.sampled_from(["GET", "POST", "OPTIONS", "HEAD"]),
    request_method=st.none() | st.sampled_from(["GET", "POST", "PUT", "get"]),
    request_headers=st.none() | st.text(max_size=40) | st.sampled_from(["last-event-id"]),
    private_network=st.booleans(),
)
def test_access_control_allow_origin_is_always_one_canonical_value(
    p: CorsPolicy,
    origin: str | None,
    method: str,
    request_method: str | None,
    request_headers: str | None,
    private_network: bool,
) -> None:
    """Rule 3: ACAO is one origin (never a list, never ``*`` with credentials, never a value
    that is not canonical); ACAC only when configured; refusals carry no CORS headers."""
    decision = p.decide(
        method=method,
        origin=origin,
        own_origin=OWN,
        request_method=request_method,
        request_headers=request_headers,
        private_network=private_network,
    )
    names = [name for name, _ in decision.headers]
    assert len(names) == len(set(names))
    assert all(name.startswith("Access-Control-") for name in names)
    if not decision.allowed:
        assert decision.headers == ()
        assert decision.status == 403
        return
    acao = values_of(decision, ACAO)
    if origin is None or decision.reason == Reason.SAME_ORIGIN:
        assert acao == []
        return
    assert len(acao) == 1
    if p.options.allow_any_origin:
        assert acao == ["*"]
    else:
        assert acao == [origin]
        assert expected_allowed(origin)
    assert "," not in acao[0] and acao[0].strip() == acao[0]
    credentials = values_of(decision, ACAC)
    assert credentials == (["true"] if p.options.allow_credentials else [])
    if credentials:
        assert acao != ["*"]
    if ACAPN in names:
        assert p.options.allow_private_network and private_network and decision.preflight


def test_decisions_learned_for_pattern_origins_are_bounded() -> None:
    """A client can name endlessly many subdomains a pattern allows: the decisions kept for
    them (so that the next request from the same origin is one lookup) stay bounded."""
    from flask_ssecors._policy import MAX_LEARNED_ORIGINS

    policy = compile_policy(
        read_settings({"SSECORS_ALLOWED_ORIGINS": ["https://*.example.org"]}).cors
    )
    for number in range(MAX_LEARNED_ORIGINS * 3):
        origin = f"https://n{number}.example.org"
        decision = policy.decide(method="GET", origin=origin, own_origin="https://api.test")
        assert decision.allowed
        assert decision.headers[0] == (ACAO, origin)
        assert len(policy.learned) <= MAX_LEARNED_ORIGINS
    again = policy.decide(method="GET", origin=origin, own_origin="https://api.test")
    assert again is policy.known(origin)


def test_refused_origins_are_never_learned() -> None:
    policy = compile_policy(
        read_settings({"SSECORS_ALLOWED_ORIGINS": ["https://*.example.org"]}).cors
    )
    for origin in ("https://evil.example.net", "https://example.org", "null"):
        assert not policy.decide(method="GET", origin=origin, own_origin="https://a.test").allowed
    assert policy.learned == {}
