"""Configuration reading and validation (docs/configuration.rst; docs/security.rst, "Wildcard
with credentials" and the sections after it).

Every refusal is a :class:`ConfigError` raised when the app starts (or when a view is decorated),
listing every problem found, each with the key it belongs to.
"""

from __future__ import annotations

import math
import typing as t

import pytest
from flask import Flask

from flask_ssecors import SSECors
from flask_ssecors._config import OPTIONS
from flask_ssecors._config import read_settings
from flask_ssecors._config import Settings
from flask_ssecors._origins import OriginPattern
from flask_ssecors.exceptions import ConfigError
from flask_ssecors.exceptions import ConfigIssue

ORIGIN = "https://app.example.com"
ORIGINS = "SSECORS_ALLOWED_ORIGINS"
CREDENTIALS = "SSECORS_ALLOW_CREDENTIALS"
HEADERS = "SSECORS_ALLOWED_HEADERS"
EXPOSE = "SSECORS_EXPOSE_HEADERS"
METHODS = "SSECORS_ALLOWED_METHODS"
MAX_AGE = "SSECORS_MAX_AGE"
INSECURE = "SSECORS_DANGEROUSLY_ALLOW_INSECURE_ORIGINS"


def read(**config: object) -> Settings:
    """``read_settings`` with ``SSECORS_ALLOWED_ORIGINS`` defaulting to one https origin."""
    config.setdefault(ORIGINS, [ORIGIN])
    return read_settings(config)


def refusal(config: dict[str, object]) -> ConfigError:
    """The ConfigError that reading ``config`` raises."""
    with pytest.raises(ConfigError) as info:
        read_settings(config)
    return info.value


def with_origins(**config: object) -> dict[str, object]:
    config.setdefault(ORIGINS, [ORIGIN])
    return config


def keys_of(error: ConfigError) -> list[str]:
    return [issue.key for issue in error.issues]


def field(settings: Settings, path: str) -> object:
    value: object = settings
    for name in path.split("."):
        value = getattr(value, name)
    return value


# -- defaults ---------------------------------------------------------------------------------

#: The settings table of docs/configuration.rst ("Summary"), as read_settings returns it.
DEFAULTS: list[tuple[str, str, object]] = [
    (CREDENTIALS, "cors.allow_credentials", False),
    (HEADERS, "cors.allowed_headers", ("last-event-id", "cache-control", "content-type")),
    (EXPOSE, "cors.expose_headers", ()),
    (METHODS, "cors.allowed_methods", ("GET", "HEAD", "POST")),
    (MAX_AGE, "cors.max_age", 600),
    ("SSECORS_SERVE_WITHOUT_ORIGIN", "cors.serve_without_origin", True),
    ("SSECORS_ALLOW_PRIVATE_NETWORK", "cors.allow_private_network", False),
    (INSECURE, "cors.dangerously_allow_insecure_origins", False),
    ("SSECORS_HEARTBEAT", "stream.heartbeat", 15.0),
    ("SSECORS_RETRY", "stream.retry", None),
    ("SSECORS_QUEUE_SIZE", "stream.queue_size", 1000),
    ("SSECORS_SEND_TIMEOUT", "stream.send_timeout", 30.0),
    ("SSECORS_BROKER_URL", "broker_url", "memory://"),
    ("SSECORS_BACKLOG", "backlog", 1000),
]


@pytest.mark.parametrize(("key", "path", "expected"), DEFAULTS)
def test_default_matches_the_design_table(key: str, path: str, expected: object) -> None:
    value = field(read(), path)
    assert value == expected
    assert type(value) is type(expected)


def test_every_design_key_is_read() -> None:
    """Every key of the documented table is a known option (later issues may add more)."""
    assert {key for key, _, _ in DEFAULTS} | {ORIGINS} <= {o.key for o in OPTIONS}


def test_allowed_origins_is_required() -> None:
    error = refusal({})
    assert keys_of(error) == [ORIGINS]
    assert "is required" in error.issues[0].reason
    assert ORIGINS in str(error)


def test_defaults_allow_no_wildcards() -> None:
    cors = read().cors
    assert cors.origins == (OriginPattern("https", "app.example.com", None, False),)
    assert not cors.allow_any_origin
    assert not cors.allow_any_header


# -- accepted values --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "path", "expected"),
    [
        # Host names are canonicalised when read.
        ({ORIGINS: ["HTTPS://App.Example.COM"]}, "cors.origins", (ORIGIN,)),
        ({ORIGINS: ["https://bücher.example"]}, "cors.origins", ("https://xn--bcher-kva.example",)),
        ({ORIGINS: ORIGIN}, "cors.origins", (ORIGIN,)),
        ({ORIGINS: [ORIGIN, ORIGIN.upper()]}, "cors.origins", (ORIGIN,)),
        ({ORIGINS: ["https://*.example.org"]}, "cors.origins", ("https://*.example.org",)),
        # Loopback http is a secure context: fine with credentials.
        (
            {ORIGINS: ["http://localhost:5001"], CREDENTIALS: True},
            "cors.origins",
            ("http://localhost:5001",),
        ),
        # Insecure origins are fine without credentials, or with the DANGEROUSLY flag.
        ({ORIGINS: ["http://app.example.com"]}, "cors.origins", ("http://app.example.com",)),
        (
            {ORIGINS: ["http://app.example.com"], CREDENTIALS: True, INSECURE: True},
            "cors.origins",
            ("http://app.example.com",),
        ),
        (
            {ORIGINS: ["http://*.example.com"], CREDENTIALS: True, INSECURE: True},
            "cors.origins",
            ("http://*.example.com",),
        ),
        # "*" alone, without credentials.
        ({ORIGINS: ["*"]}, "cors.allow_any_origin", True),
        ({ORIGINS: "*"}, "cors.allow_any_origin", True),
        ({ORIGINS: ["*"], CREDENTIALS: False}, "cors.origins", ()),
        ({HEADERS: ["*"]}, "cors.allow_any_header", True),
        ({HEADERS: ["*", "X-Token"]}, "cors.allowed_headers", ("x-token",)),
        ({EXPOSE: ["*"]}, "cors.expose_headers", ("*",)),
        # Header names are case-insensitive; duplicates are dropped.
        ({HEADERS: ["Last-Event-ID", "last-event-id"]}, "cors.allowed_headers", ("last-event-id",)),
        ({HEADERS: ["Authorization"]}, "cors.allowed_headers", ("authorization",)),
        ({HEADERS: None}, "cors.allowed_headers", ()),
        ({HEADERS: []}, "cors.allowed_headers", ()),
        ({EXPOSE: ["X-Request-ID"], CREDENTIALS: True}, "cors.expose_headers", ("x-request-id",)),
        ({METHODS: ["get", "Post", "GET"]}, "cors.allowed_methods", ("GET", "POST")),
        ({METHODS: "PUT"}, "cors.allowed_methods", ("PUT",)),
        ({MAX_AGE: 0}, "cors.max_age", 0),
        ({MAX_AGE: 86400}, "cors.max_age", 86400),
        ({"SSECORS_HEARTBEAT": 1}, "stream.heartbeat", 1.0),
        ({"SSECORS_RETRY": 0}, "stream.retry", 0),
        ({"SSECORS_BACKLOG": 0}, "backlog", 0),
        # Keys outside the SSECORS_ prefix are none of our business.
        ({"SSECORSX": 1, "OTHER_ALLOWED_ORIGINS": 1}, "cors.allow_credentials", False),
    ],
)
def test_accepted(config: dict[str, object], path: str, expected: object) -> None:
    value = field(read(**config), path)
    if path == "cors.origins":
        assert tuple(str(pattern) for pattern in t.cast("tuple[object, ...]", value)) == expected
    else:
        assert value == expected
        assert type(value) is type(expected)


@pytest.mark.parametrize(
    "config",
    [
        {ORIGINS: ["http://127.0.0.1:8080"], CREDENTIALS: True},
        {ORIGINS: ["http://[::1]:8080"], CREDENTIALS: True},
        {ORIGINS: ["http://*.localhost"], CREDENTIALS: True},
        {"SSECORS_BROKER_URL": "redis://localhost:6379/0"},
    ],
)
def test_accepted_without_change(config: dict[str, object]) -> None:
    settings = read(**config)
    if ORIGINS in config:
        assert [str(p) for p in settings.cors.origins] == config[ORIGINS]
    else:
        assert settings.broker_url == config["SSECORS_BROKER_URL"]


# -- refused values (one problem each) --------------------------------------------------------

FORBIDDEN_REQUEST_HEADER_NAMES = [
    "Cookie",
    "cookie2",
    "Set-Cookie",
    "Origin",
    "Host",
    "Referer",
    "Content-Length",
    "Connection",
    "Keep-Alive",
    "Transfer-Encoding",
    "TE",
    "Trailer",
    "Upgrade",
    "Via",
    "Expect",
    "Date",
    "DNT",
    "Accept-Charset",
    "Accept-Encoding",
    "Access-Control-Request-Method",
    "Access-Control-Request-Headers",
    "Access-Control-Allow-Origin",
    "Sec-Foo",
    "Sec-Fetch-Site",
    "sec-ch-ua",
    "Proxy-Authorization",
    "Proxy-Foo",
]

REFUSED: list[tuple[dict[str, object], str, str]] = [
    # "*" with credentials, "*" mixed with other entries.
    ({ORIGINS: ["*"], CREDENTIALS: True}, ORIGINS, "cannot be combined with"),
    ({ORIGINS: "*", CREDENTIALS: True}, ORIGINS, "cannot be combined with"),
    ({ORIGINS: ["*", ORIGIN]}, ORIGINS, "cannot be mixed"),
    ({ORIGINS: [ORIGIN, "*"], CREDENTIALS: True}, ORIGINS, "cannot be mixed"),
    # http:// other than loopback, with credentials, without the DANGEROUSLY flag.
    ({ORIGINS: ["http://app.example.com"], CREDENTIALS: True}, ORIGINS, "not https"),
    ({ORIGINS: ["http://*.example.com"], CREDENTIALS: True}, ORIGINS, "not https"),
    ({ORIGINS: ["http://192.0.2.1:8080"], CREDENTIALS: True}, ORIGINS, "not https"),
    (
        {ORIGINS: ["http://app.example.com"], CREDENTIALS: True, INSECURE: False},
        ORIGINS,
        "not https",
    ),
    # Origin forms docs/configuration.rst (SSECORS_ALLOWED_ORIGINS) refuses.
    ({ORIGINS: []}, ORIGINS, "at least one origin"),
    ({ORIGINS: ["null"]}, ORIGINS, "null"),
    ({ORIGINS: ["file:///home/me/page.html"]}, ORIGINS, "file:"),
    ({ORIGINS: ["https://app.example.com/path"]}, ORIGINS, "path"),
    ({ORIGINS: ["https://app.example.com?q=1"]}, ORIGINS, "query"),
    ({ORIGINS: ["https://app.example.com#top"]}, ORIGINS, "fragment"),
    ({ORIGINS: ["https://user@app.example.com"]}, ORIGINS, "userinfo"),
    ({ORIGINS: ["https://app.example.com/"]}, ORIGINS, "trailing slash"),
    ({ORIGINS: ["https://app.example.com:443"]}, ORIGINS, "default port"),
    ({ORIGINS: ["http://app.example.com:80"]}, ORIGINS, "default port"),
    ({ORIGINS: [r"https://.*\.example\.com"]}, ORIGINS, "regular expressions"),
    ({ORIGINS: ["https://*example.com"]}, ORIGINS, "'*'"),
    ({ORIGINS: ["https://a.*.com"]}, ORIGINS, "'*'"),
    ({ORIGINS: ["h*"]}, ORIGINS, "'*'"),
    ({ORIGINS: ["https://*.com"]}, ORIGINS, "top-level"),
    ({ORIGINS: ["https://*.co.uk"]}, ORIGINS, "public suffix"),
    ({ORIGINS: ["https://*.github.io"]}, ORIGINS, "public suffix"),
    ({ORIGINS: ["app.example.com"]}, ORIGINS, "missing the scheme"),
    ({ORIGINS: ["https://a.example.com, https://b.example.com"]}, ORIGINS, "comma"),
    # "*" request or exposed headers with credentials: browsers read it as a literal name.
    ({HEADERS: ["*"], CREDENTIALS: True}, HEADERS, "literally"),
    ({HEADERS: ["Last-Event-ID", "*"], CREDENTIALS: True}, HEADERS, "literally"),
    ({EXPOSE: ["*"], CREDENTIALS: True}, EXPOSE, "literally"),
    # Forbidden header names.
    *(
        ({HEADERS: t.cast(object, [name])}, HEADERS, "header")
        for name in FORBIDDEN_REQUEST_HEADER_NAMES
    ),
    ({HEADERS: ["Last-Event-ID", "Cookie"]}, HEADERS, "'Cookie' is a forbidden header"),
    ({HEADERS: ["Bad Header"]}, HEADERS, "not a valid header name"),
    ({HEADERS: ["X-Naïve"]}, HEADERS, "not a valid header name"),
    ({HEADERS: [""]}, HEADERS, "not a valid header name"),
    ({HEADERS: ["X-A:1"]}, HEADERS, "not a valid header name"),
    ({EXPOSE: ["Set-Cookie"]}, EXPOSE, "forbidden"),
    ({EXPOSE: ["Set-Cookie2"]}, EXPOSE, "forbidden"),
    ({EXPOSE: ["Access-Control-Allow-Origin"]}, EXPOSE, "CORS protocol header"),
    # Forbidden and malformed methods.
    ({METHODS: ["CONNECT"]}, METHODS, "forbidden method"),
    ({METHODS: ["TRACE"]}, METHODS, "forbidden method"),
    ({METHODS: ["track"]}, METHODS, "forbidden method"),
    ({METHODS: ["GET", "TRACE"]}, METHODS, "'TRACE'"),
    ({METHODS: ["*"]}, METHODS, '"*"'),
    ({METHODS: ["GET POST"]}, METHODS, "not a valid method"),
    ({METHODS: [" GET"]}, METHODS, "not a valid method"),
    ({METHODS: [""]}, METHODS, "not a valid method"),
    ({METHODS: []}, METHODS, "at least one method"),
    # max_age out of range, or not a whole number.
    ({MAX_AGE: -1}, MAX_AGE, "at least 0 and at most 86400"),
    ({MAX_AGE: 86401}, MAX_AGE, "at least 0 and at most 86400"),
    ({MAX_AGE: True}, MAX_AGE, "whole number"),
    ({MAX_AGE: False}, MAX_AGE, "whole number"),
    ({MAX_AGE: "600"}, MAX_AGE, "whole number"),
    ({MAX_AGE: 600.0}, MAX_AGE, "whole number"),
    ({MAX_AGE: None}, MAX_AGE, "whole number"),
    # Stream and broker bounds.
    ({"SSECORS_HEARTBEAT": 0}, "SSECORS_HEARTBEAT", "greater than 0"),
    ({"SSECORS_HEARTBEAT": -1.0}, "SSECORS_HEARTBEAT", "greater than 0"),
    ({"SSECORS_HEARTBEAT": math.nan}, "SSECORS_HEARTBEAT", "greater than 0"),
    ({"SSECORS_HEARTBEAT": math.inf}, "SSECORS_HEARTBEAT", "at most"),
    ({"SSECORS_SEND_TIMEOUT": 0.0}, "SSECORS_SEND_TIMEOUT", "greater than 0"),
    ({"SSECORS_RETRY": -1}, "SSECORS_RETRY", "at least 0"),
    ({"SSECORS_QUEUE_SIZE": 0}, "SSECORS_QUEUE_SIZE", "at least 1"),
    ({"SSECORS_BACKLOG": -1}, "SSECORS_BACKLOG", "at least 0"),
    ({"SSECORS_BROKER_URL": "ftp://host"}, "SSECORS_BROKER_URL", "unknown scheme"),
    ({"SSECORS_BROKER_URL": "localhost:6379"}, "SSECORS_BROKER_URL", "must be a URL"),
    # Unknown keys, with a did-you-mean hint for typos.
    ({"SSECORS_ALLOWED_ORIGIN": [ORIGIN]}, "SSECORS_ALLOWED_ORIGIN", "SSECORS_ALLOWED_ORIGINS"),
    ({"SSECORS_ALLOW_CREDENTIAL": True}, "SSECORS_ALLOW_CREDENTIAL", "SSECORS_ALLOW_CREDENTIALS"),
    ({"SSECORS_MAXAGE": 10}, "SSECORS_MAXAGE", "Did you mean SSECORS_MAX_AGE?"),
    ({"SSECORS_HEARTBEATS": 10}, "SSECORS_HEARTBEATS", "Did you mean SSECORS_HEARTBEAT?"),
    ({"SSECORS_ZZZZZZZZZZZZZZZZ": 1}, "SSECORS_ZZZZZZZZZZZZZZZZ", "unknown setting"),
]


@pytest.mark.parametrize(("config", "key", "reason"), REFUSED)
def test_refused(config: dict[str, object], key: str, reason: str) -> None:
    error = refusal(with_origins(**config))
    assert keys_of(error) == [key]
    assert reason in error.issues[0].reason
    assert key in str(error)
    assert error.issues[0].reason in str(error)


def test_unknown_key_has_no_hint_when_nothing_is_close() -> None:
    error = refusal(with_origins(SSECORS_ZZZZZZZZZZZZZZZZ=1))
    assert "Did you mean" not in error.issues[0].reason


def test_issues_are_config_issues_with_the_value_given() -> None:
    value = ["http://app.example.com"]
    error = refusal({ORIGINS: value, CREDENTIALS: True})
    (issue,) = error.issues
    assert isinstance(issue, ConfigIssue)
    assert issue.value == "http://app.example.com"
    error = refusal(with_origins(SSECORS_MAX_AGE=-1))
    assert error.issues == (ConfigIssue(MAX_AGE, -1, error.issues[0].reason),)


# -- wrong types --------------------------------------------------------------------------------


class _Opaque:
    """A value of no type any key accepts."""


WRONG_TYPES: list[tuple[str, object]] = [
    (ORIGINS, 123),
    (ORIGINS, b"https://app.example.com"),
    (ORIGINS, {"https://app.example.com": True}),
    (ORIGINS, [b"https://app.example.com"]),
    (ORIGINS, [ORIGIN, 1]),
    (ORIGINS, None),
    (CREDENTIALS, "true"),
    (CREDENTIALS, 1),
    (CREDENTIALS, None),
    (HEADERS, 1),
    (HEADERS, {"Last-Event-ID": 1}),
    (HEADERS, [None]),
    (EXPOSE, 1),
    (EXPOSE, b"X-Id"),
    (METHODS, None),
    (METHODS, 1),
    (METHODS, [1]),
    (MAX_AGE, "600"),
    ("SSECORS_SERVE_WITHOUT_ORIGIN", "yes"),
    ("SSECORS_SERVE_WITHOUT_ORIGIN", 0),
    ("SSECORS_ALLOW_PRIVATE_NETWORK", "false"),
    (INSECURE, 1),
    ("SSECORS_HEARTBEAT", "15"),
    ("SSECORS_HEARTBEAT", True),
    ("SSECORS_HEARTBEAT", None),
    ("SSECORS_RETRY", "100"),
    ("SSECORS_RETRY", 1.5),
    ("SSECORS_RETRY", True),
    ("SSECORS_QUEUE_SIZE", 10.0),
    ("SSECORS_QUEUE_SIZE", None),
    ("SSECORS_SEND_TIMEOUT", "30"),
    ("SSECORS_BROKER_URL", 6379),
    ("SSECORS_BROKER_URL", None),
    ("SSECORS_BACKLOG", "1000"),
    ("SSECORS_BACKLOG", False),
    *((option.key, _Opaque()) for option in OPTIONS),
]


@pytest.mark.parametrize(("key", "value"), WRONG_TYPES)
def test_wrong_type(key: str, value: object) -> None:
    error = refusal(with_origins(**{key: value}))
    assert keys_of(error) == [key]
    assert error.issues[0].value is value
    assert key in str(error)


# -- several problems at once -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "expected_keys"),
    [
        (
            {
                ORIGINS: ["*"],
                CREDENTIALS: True,
                MAX_AGE: -1,
                "SSECORS_ALLOWED_ORIGIN": [ORIGIN],
            },
            {ORIGINS, MAX_AGE, "SSECORS_ALLOWED_ORIGIN"},
        ),
        (
            {
                ORIGINS: ["http://app.example.com"],
                CREDENTIALS: True,
                HEADERS: ["*"],
                EXPOSE: ["*"],
                METHODS: ["TRACE"],
                MAX_AGE: 86401,
                "SSECORS_HEARTBEAT": 0,
                "SSECORS_RETRY": "1",
                "SSECORS_QUEUE_SIZE": 0,
                "SSECORS_SEND_TIMEOUT": -1,
                "SSECORS_BROKER_URL": "nope",
                "SSECORS_BACKLOG": -1,
                "SSECORS_SERVE_WITHOUT_ORIGIN": "no",
                "SSECORS_ALLOW_PRIVATE_NETWORK": 1,
                "SSECORS_HEARTBEET": 1,
            },
            {
                ORIGINS,
                HEADERS,
                EXPOSE,
                METHODS,
                MAX_AGE,
                "SSECORS_HEARTBEAT",
                "SSECORS_RETRY",
                "SSECORS_QUEUE_SIZE",
                "SSECORS_SEND_TIMEOUT",
                "SSECORS_BROKER_URL",
                "SSECORS_BACKLOG",
                "SSECORS_SERVE_WITHOUT_ORIGIN",
                "SSECORS_ALLOW_PRIVATE_NETWORK",
                "SSECORS_HEARTBEET",
            },
        ),
        # A malformed entry does not hide an insecure one beside it.
        (
            {ORIGINS: ["http://app.example.com", "https://b.example.com/"], CREDENTIALS: True},
            {ORIGINS},
        ),
        ({CREDENTIALS: "yes", MAX_AGE: "1"}, {ORIGINS, CREDENTIALS, MAX_AGE}),
    ],
)
def test_all_problems_in_one_error(config: dict[str, object], expected_keys: set[str]) -> None:
    """Rule 1: every problem is reported together, so one start-up shows all of them."""
    error = refusal(config)
    assert set(keys_of(error)) == expected_keys
    message = str(error)
    for key in expected_keys:
        assert key in message
    assert f"{len(error.issues)} configuration problem" in message
    assert message.count("\n") == len(error.issues)


def test_malformed_and_insecure_origins_are_both_reported() -> None:
    error = refusal(
        {ORIGINS: ["http://app.example.com", "https://b.example.com/"], CREDENTIALS: True}
    )
    reasons = " ".join(issue.reason for issue in error.issues)
    assert "trailing slash" in reasons
    assert "not https" in reasons


def test_star_with_credentials_is_reported_beside_other_problems() -> None:
    error = refusal({ORIGINS: ["*"], CREDENTIALS: True, MAX_AGE: -1})
    reasons = {issue.key: issue.reason for issue in error.issues}
    assert "cannot be combined with" in reasons[ORIGINS]
    assert "at most 86400" in reasons[MAX_AGE]


# -- per-view overrides -------------------------------------------------------------------------


@pytest.fixture
def credentialed_app(make_app: t.Callable[..., Flask]) -> Flask:
    return make_app(SSECORS_ALLOW_CREDENTIALS=True)


@pytest.mark.parametrize(
    ("decorator", "overrides", "key", "reason"),
    [
        ("stream", {"origin": [ORIGIN]}, "origin", "Did you mean 'origins'?"),
        ("cors", {"origin": [ORIGIN]}, "origin", "Did you mean 'origins'?"),
        ("stream", {"allowed_origins": [ORIGIN]}, "allowed_origins", "not an option"),
        ("stream", {"credentials": True}, "credentials", "not an option"),
        ("cors", {"heartbeat": 5.0}, "heartbeat", "not an option"),
        ("cors", {"retry": 1000}, "retry", "not an option"),
        ("stream", {"broker_url": "memory://"}, "broker_url", "not an option"),
        ("stream", {"backlog": 10}, "backlog", "not an option"),
        ("stream", {"SSECORS_MAX_AGE": 10}, "SSECORS_MAX_AGE", "not an option"),
        ("stream", {"max_age": -1}, "max_age", "at least 0"),
        ("cors", {"max_age": "600"}, "max_age", "whole number"),
        ("cors", {"origins": ["*", ORIGIN]}, "origins", "cannot be mixed"),
        ("stream", {"origins": ["https://*.com"]}, "origins", "top-level"),
        ("stream", {"origins": []}, "origins", "at least one origin"),
        ("cors", {"allowed_methods": ["TRACE"]}, "allowed_methods", "forbidden method"),
        ("stream", {"allowed_headers": ["Cookie"]}, "allowed_headers", "forbidden header"),
        ("stream", {"allow_credentials": "yes"}, "allow_credentials", "True or False"),
        ("stream", {"heartbeat": 0}, "heartbeat", "greater than 0"),
    ],
)
@pytest.mark.parametrize("initialised", [False, True])
def test_invalid_override_raises_at_decoration(
    app: Flask,
    decorator: str,
    overrides: dict[str, object],
    key: str,
    reason: str,
    initialised: bool,
) -> None:
    sse = SSECors(app) if initialised else SSECors()
    with pytest.raises(ConfigError) as info:
        getattr(sse, decorator)(**overrides)
    assert keys_of(info.value) == [key]
    assert reason in info.value.issues[0].reason
    assert key in str(info.value)


def test_several_invalid_overrides_are_reported_together() -> None:
    with pytest.raises(ConfigError) as info:
        SSECors().stream(origin=[ORIGIN], max_age=-1, heartbeat="5")
    assert set(keys_of(info.value)) == {"origin", "max_age", "heartbeat"}


COMBINATIONS: list[tuple[dict[str, object], str]] = [
    ({"origins": ["*"]}, "origins"),
    ({"origins": ["http://app.example.com"]}, "origins"),
    ({"allowed_headers": ["*"]}, "allowed_headers"),
    ({"expose_headers": ["*"]}, "expose_headers"),
]


@pytest.mark.parametrize(("overrides", "key"), COMBINATIONS)
@pytest.mark.parametrize("decorator", ["stream", "cors"])
def test_override_invalid_in_combination_raises_at_init_app(
    credentialed_app: Flask, decorator: str, overrides: dict[str, object], key: str
) -> None:
    """Decorated before init_app: the combination is checked when the app's settings are known."""
    sse = SSECors()
    getattr(sse, decorator)(**overrides)(lambda: "")
    with pytest.raises(ConfigError) as info:
        sse.init_app(credentialed_app)
    assert keys_of(info.value) == [key]
    assert "ssecors" not in credentialed_app.extensions
    assert key in str(info.value)


@pytest.mark.parametrize(("overrides", "key"), COMBINATIONS)
@pytest.mark.parametrize("decorator", ["stream", "cors"])
def test_override_invalid_in_combination_raises_at_decoration(
    credentialed_app: Flask, decorator: str, overrides: dict[str, object], key: str
) -> None:
    sse = SSECors(credentialed_app)
    with pytest.raises(ConfigError) as info:
        getattr(sse, decorator)(**overrides)
    assert keys_of(info.value) == [key]


@pytest.mark.parametrize(
    "overrides",
    [
        {"origins": ["*"], "allow_credentials": False},
        {"origins": ["http://app.example.com"], "dangerously_allow_insecure_origins": True},
        {"origins": ["http://localhost:5001"]},
        {"allowed_headers": ["Authorization", "Last-Event-ID"]},
    ],
)
@pytest.mark.parametrize("initialised", [False, True])
def test_override_valid_in_combination(
    credentialed_app: Flask, overrides: dict[str, object], initialised: bool
) -> None:
    sse = SSECors(credentialed_app) if initialised else SSECors()
    sse.stream(**overrides)
    if not initialised:
        sse.init_app(credentialed_app)
    assert "ssecors" in credentialed_app.extensions


def test_init_app_reports_every_view_and_app_problem_together(credentialed_app: Flask) -> None:
    sse = SSECors()
    sse.stream(origins=["*"])
    sse.cors(expose_headers=["*"])
    with pytest.raises(ConfigError) as info:
        sse.init_app(credentialed_app)
    assert sorted(keys_of(info.value)) == ["expose_headers", "origins"]


def test_app_config_is_checked_before_views(make_app: t.Callable[..., Flask]) -> None:
    app = make_app(SSECORS_MAX_AGE=-1)
    with pytest.raises(ConfigError) as info:
        SSECors(app)
    assert keys_of(info.value) == [MAX_AGE]
    assert "ssecors" not in app.extensions


# -- registration -------------------------------------------------------------------------------


def test_double_registration_same_extension_raises(app: Flask) -> None:
    sse = SSECors(app)
    with pytest.raises(RuntimeError, match="already registered"):
        sse.init_app(app)
    assert app.extensions["ssecors"] in sse._states  # the app's state is this object's


def test_double_registration_other_extension_raises(app: Flask) -> None:
    first = SSECors(app)
    hooks = list(app.before_request_funcs[None])
    with pytest.raises(RuntimeError, match="already registered"):
        SSECors(app)
    assert app.extensions["ssecors"] in first._states
    assert app.before_request_funcs[None] == hooks


def test_one_extension_serves_several_apps(make_app: t.Callable[..., Flask]) -> None:
    sse = SSECors()
    first = make_app()
    second = make_app(SSECORS_ALLOWED_ORIGINS=["https://other.example.com"])
    sse.init_app(first)
    sse.init_app(second)
    assert set(sse._states) == {first.extensions["ssecors"], second.extensions["ssecors"]}
    assert first.extensions["ssecors"].policy is not second.extensions["ssecors"].policy


def test_config_changes_after_init_app_are_not_seen(app: Flask) -> None:
    SSECors(app)
    app.config["SSECORS_ALLOW_CREDENTIALS"] = True
    assert app.extensions["ssecors"].settings.cors.allow_credentials is False


@pytest.mark.parametrize(
    ("app_config", "overrides", "key"),
    [
        ({ORIGINS: ["http://app.example.com"]}, {"allow_credentials": True}, "origins"),
        ({HEADERS: ["*"]}, {"allow_credentials": True}, "allowed_headers"),
        ({EXPOSE: ["*"]}, {"allow_credentials": True}, "expose_headers"),
        ({ORIGINS: ["*"]}, {"allow_credentials": True}, "origins"),
        (
            {ORIGINS: ["http://app.example.com"], CREDENTIALS: True, INSECURE: True},
            {"dangerously_allow_insecure_origins": False},
            "origins",
        ),
    ],
)
@pytest.mark.parametrize("initialised", [False, True])
def test_credentials_override_is_checked_against_the_app_settings(
    make_app: t.Callable[..., Flask],
    app_config: dict[str, object],
    overrides: dict[str, object],
    key: str,
    initialised: bool,
) -> None:
    app = make_app(**app_config)
    sse = SSECors(app) if initialised else SSECors()
    with pytest.raises(ConfigError) as info:
        sse.cors(**overrides)
        sse.init_app(app)
    assert keys_of(info.value) == [key]


# -- one definition per option ------------------------------------------------------------------


def test_every_option_has_its_reference_entry_in_the_docs() -> None:
    """The docs table is generated from OPTIONS; each key needs its ``.. data::`` entry."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "configuration.rst").read_text()
    assert ".. ssecors-settings::" in text
    missing = [o.key for o in OPTIONS if f".. data:: {o.key}\n" not in text]
    assert missing == []


def test_every_settings_field_comes_from_one_option() -> None:
    """A field no option fills (or an option that fills no field) fails here, not silently."""
    import dataclasses

    from flask_ssecors._config import CorsOptions
    from flask_ssecors._config import StreamOptions

    filled: dict[str, set[str]] = {"cors": set(), "stream": set(), "app": set()}
    for option in OPTIONS:
        sample = option.check(option.default)[0] if option.key != ORIGINS else "*"
        filled[option.group].update(option.fields(sample))
    assert filled["cors"] == {f.name for f in dataclasses.fields(CorsOptions)}
    assert filled["stream"] == {f.name for f in dataclasses.fields(StreamOptions)}
    assert filled["app"] == {f.name for f in dataclasses.fields(Settings)} - {"cors", "stream"}


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.key)
def test_per_view_overrides_round_trip_every_option(option: t.Any) -> None:
    """Regression: an option missing from the code that copies settings for per-view
    overrides was silently dropped; overrides now read every option back from its field."""
    from flask_ssecors._config import merge_overrides

    settings = read()
    if not option.per_view:
        return
    value = option.value_in(getattr(settings, option.group))
    merged = merge_overrides(settings, {option.kwarg: value})
    assert merged == settings


def test_star_among_bad_origins_lists_every_problem() -> None:
    """One issue per offending value, even when one of them is ``"*"``."""
    error = refusal({ORIGINS: ["*", "https://a.example.com/", "null"]})
    assert [issue.key for issue in error.issues] == [ORIGINS] * 3
    assert [issue.value for issue in error.issues] == ["*", "https://a.example.com/", "null"]


def test_the_broker_url_comes_from_the_environment_the_flask_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``app.config.from_prefixed_env()`` (as the quickstart does) reads
    ``FLASK_SSECORS_BROKER_URL`` into the key ``SSECORS_BROKER_URL``, and JSON values too."""
    monkeypatch.setenv("FLASK_SSECORS_BROKER_URL", "redis://127.0.0.1:6399/2")
    monkeypatch.setenv("FLASK_SSECORS_MAX_STREAMS_PER_CLIENT", "200")
    app = Flask(__name__)
    app.config.update(SSECORS_ALLOWED_ORIGINS=["https://app.example.com"])
    app.config.from_prefixed_env()
    sse = SSECors(app)
    settings = app.extensions["ssecors"].settings
    assert settings.broker_url == "redis://127.0.0.1:6399/2"
    assert settings.max_streams_per_client == 200
    assert type(sse.broker).__name__ == "RedisBroker"
    sse.broker.close()


def test_min_replicas_is_refused_with_the_postgresql_broker() -> None:
    """Redis's WAIT has no PostgreSQL counterpart in the broker: the server's synchronous
    replication does it, so a setting that would be silently ignored is refused."""
    from flask_ssecors._config import read_settings
    from flask_ssecors.exceptions import ConfigError

    with pytest.raises(ConfigError, match=r"SSECORS_BROKER_MIN_REPLICAS.*synchronous_commit"):
        read_settings(
            {
                "SSECORS_ALLOWED_ORIGINS": ["https://app.example.com"],
                "SSECORS_BROKER_URL": "postgresql://u:p@127.0.0.1:5432/db",
                "SSECORS_BROKER_MIN_REPLICAS": 1,
            }
        )
