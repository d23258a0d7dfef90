"""Reading and validating the ``SSECORS_*`` configuration.

Pure module: it reads a mapping (``app.config``) once, checks every value, and returns frozen
:class:`Settings`. Every problem is collected and raised together as
:class:`~flask_ssecors.exceptions.ConfigError`, so one start-up shows all of them.

The same options can be overridden per view through keyword arguments of
:meth:`~flask_ssecors.SSECors.stream` and :meth:`~flask_ssecors.SSECors.cors`; their names are
the key without the ``SSECORS_`` prefix, lowercased, except ``SSECORS_ALLOWED_ORIGINS``, whose
keyword is ``origins``.
"""

from __future__ import annotations

import collections.abc as cabc
import dataclasses
import difflib
import math
import typing as t

from ._origins import OriginError
from ._origins import OriginPattern
from ._origins import parse_pattern
from .exceptions import ConfigError
from .exceptions import ConfigIssue

PREFIX: t.Final = "SSECORS_"

#: Request headers a preflight may never ask for (Fetch "forbidden request-header names").
FORBIDDEN_REQUEST_HEADERS: t.Final = frozenset(
    {
        "accept-charset",
        "accept-encoding",
        "access-control-request-headers",
        "access-control-request-method",
        "access-control-request-private-network",
        "connection",
        "content-length",
        "cookie",
        "cookie2",
        "date",
        "dnt",
        "expect",
        "host",
        "keep-alive",
        "origin",
        "referer",
        "set-cookie",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "via",
    }
)
FORBIDDEN_REQUEST_PREFIXES: t.Final = ("proxy-", "sec-")
#: Response headers page script can never read, and names that make no sense to expose.
FORBIDDEN_EXPOSE_HEADERS: t.Final = frozenset(
    {"set-cookie", "set-cookie2", "origin", "access-control-request-method"}
)
FORBIDDEN_METHODS: t.Final = frozenset({"CONNECT", "TRACE", "TRACK"})
_TOKEN_CHARS: t.Final = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")
BROKER_SCHEMES: t.Final = ("memory", "redis", "rediss", "unix")
MAX_AGE_LIMIT: t.Final = 86400


@dataclasses.dataclass(frozen=True, slots=True)
class CorsOptions:
    """The validated CORS half of the settings (compiled by :mod:`flask_ssecors._policy`)."""

    origins: tuple[OriginPattern, ...]
    allow_any_origin: bool
    allow_credentials: bool
    allowed_headers: tuple[str, ...]
    allow_any_header: bool
    expose_headers: tuple[str, ...]
    allowed_methods: tuple[str, ...]
    max_age: int
    serve_without_origin: bool
    allow_private_network: bool
    dangerously_allow_insecure_origins: bool


@dataclasses.dataclass(frozen=True, slots=True)
class StreamOptions:
    """The validated stream half of the settings."""

    heartbeat: float
    retry: int | None
    queue_size: int
    send_timeout: float
    #: Whether the stream needs a signed stream token (:mod:`flask_ssecors.tokens`).
    require_token: bool = False
    #: Seconds after which the stream ends so that the client reconnects, or None.
    max_stream_age: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Everything read from ``app.config``, validated and frozen."""

    cors: CorsOptions
    stream: StreamOptions
    broker_url: str
    backlog: int
    broker_timeout: float
    #: Open streams per worker process, or None for no limit.
    max_streams: int | None = None
    #: ``retry:`` in milliseconds (and ``Retry-After``) for streams refused over capacity.
    busy_retry: int = 5000
    #: Lifetime of a stream token when ``issue_token`` is not given ``max_age``, in seconds.
    token_max_age: float = 300.0
    #: Name of the cookie that carries a stream token.
    token_cookie: str = "ssecors_token"
    #: The request id header (``X-Request-ID``), or None when request ids are off.
    request_id_header: str | None = None
    #: Whether a safe incoming request id is kept (otherwise one is always generated).
    trust_request_id: bool = True


_Check = cabc.Callable[[object], "tuple[object, str | None]"]


@dataclasses.dataclass(frozen=True, slots=True)
class _Option:
    key: str
    kwarg: str
    default: object
    check: _Check
    per_view: str  # "" (app only), "cors" (both decorators) or "stream" (@sse.stream only)


def _bool(value: object) -> tuple[object, str | None]:
    if isinstance(value, bool):
        return value, None
    return value, "must be True or False."


def _number(low: float, high: float, *, low_open: bool = False) -> _Check:
    def check(value: object) -> tuple[object, str | None]:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return value, "must be a number of seconds."
        number = float(value)
        if (
            not math.isfinite(number)
            or number > high
            or number < low
            or (low_open and number == low)
        ):
            bound = f"greater than {low:g}" if low_open else f"at least {low:g}"
            return value, f"must be {bound} and at most {high:g}."
        return number, None

    return check


def _integer(
    low: int, high: int | None = None, *, optional: bool = False, unit: str = ""
) -> _Check:
    def check(value: object) -> tuple[object, str | None]:
        if optional and value is None:
            return None, None
        if isinstance(value, bool) or not isinstance(value, int):
            return value, f"must be a whole number{unit}{' or None' if optional else ''}."
        if value < low or (high is not None and value > high):
            upper = f" and at most {high}" if high is not None else ""
            return value, f"must be at least {low}{upper}."
        return value, None

    return check


def _optional_seconds(low: float, high: float) -> _Check:
    number = _number(low, high, low_open=True)

    def check(value: object) -> tuple[object, str | None]:
        if value is None:
            return None, None
        result, problem = number(value)
        return result, problem and problem.replace("seconds.", "seconds or None.")

    return check


def _cookie_name(value: object) -> tuple[object, str | None]:
    if not isinstance(value, str) or not value or not set(value.lower()) <= _TOKEN_CHARS:
        return value, "must be a cookie name (letters, digits and !#$%&'*+-.^_`|~)."
    return value, None


def _request_id_header(value: object) -> tuple[object, str | None]:
    if value is None:
        return None, None
    if not isinstance(value, str) or not value or not set(value.lower()) <= _TOKEN_CHARS:
        return value, "must be a header name such as 'X-Request-ID', or None."
    if value.lower() in FORBIDDEN_REQUEST_HEADERS or value.lower().startswith(
        (*FORBIDDEN_REQUEST_PREFIXES, "access-control-")
    ):
        return value, "is a header name browsers or the CORS protocol own; use 'X-Request-ID'."
    return value, None


def _string_list(value: object) -> tuple[list[str] | None, str | None]:
    if isinstance(value, str):
        return [value], None
    if isinstance(value, cabc.Iterable) and not isinstance(value, bytes | cabc.Mapping):
        items = list(value)
        if all(isinstance(item, str) for item in items):
            return items, None
    return None, "must be a list of strings."


def _origins(value: object) -> tuple[object, str | None]:
    items, problem = _string_list(value)
    if items is None:
        return value, problem
    if not items:
        return value, "list at least one origin, e.g. ['https://app.example.com']."
    if "*" in items:
        if len(items) > 1:
            return value, (
                '"*" allows every origin and cannot be mixed with other entries; '
                'use "*" alone or list the exact origins.'
            )
        return "*", None
    patterns: list[OriginPattern] = []
    problems: list[str] = []
    for item in items:
        try:
            pattern = parse_pattern(item)
        except OriginError as error:
            problems.append(f"{item!r}: {error}")
        else:
            if pattern not in patterns:
                patterns.append(pattern)
    if problems:
        return value, " ".join(problems)
    return tuple(patterns), None


def _header_names(kind: str) -> _Check:
    forbidden = FORBIDDEN_REQUEST_HEADERS if kind == "request" else FORBIDDEN_EXPOSE_HEADERS

    def check(value: object) -> tuple[object, str | None]:
        if value is None:
            return (), None
        items, problem = _string_list(value)
        if items is None:
            return value, problem
        names: list[str] = []
        problems: list[str] = []
        for item in items:
            name = item.strip().lower()
            if name == "*":
                names.append(name)
            elif not name or not set(name) <= _TOKEN_CHARS or name != item.strip().lower():
                problems.append(f"{item!r} is not a valid header name")
            elif name in forbidden or (
                kind == "request" and name.startswith(FORBIDDEN_REQUEST_PREFIXES)
            ):
                problems.append(f"{item!r} is a forbidden header name that browsers never send")
            elif name.startswith("access-control-"):
                problems.append(f"{item!r} is a CORS protocol header, not an application header")
            elif name not in names:
                names.append(name)
        if problems:
            return value, "; ".join(problems) + "; remove them."
        return tuple(names), None

    return check


def _methods(value: object) -> tuple[object, str | None]:
    items, problem = _string_list(value)
    if items is None:
        return value, problem
    methods: list[str] = []
    problems: list[str] = []
    for item in items:
        method = item.strip()
        if method == "*":
            problems.append('"*" is not accepted; list the methods')
        elif not method or not set(method.lower()) <= _TOKEN_CHARS or method != item:
            problems.append(f"{item!r} is not a valid method")
        elif method.upper() in FORBIDDEN_METHODS:
            problems.append(f"{item!r} is a forbidden method")
        elif method.upper() not in methods:
            methods.append(method.upper())
    if problems:
        return value, "; ".join(problems) + "."
    if not methods:
        return value, "list at least one method."
    return tuple(methods), None


def _broker_url(value: object) -> tuple[object, str | None]:
    if not isinstance(value, str) or "://" not in value:
        return value, "must be a URL such as 'memory://' or 'redis://localhost:6379/0'."
    scheme = value.partition("://")[0].lower()
    if scheme not in BROKER_SCHEMES:
        return value, f"unknown scheme {scheme!r}; use one of {', '.join(BROKER_SCHEMES)}."
    return value, None


_REQUIRED: t.Final = object()

OPTIONS: t.Final[tuple[_Option, ...]] = (
    _Option("SSECORS_ALLOWED_ORIGINS", "origins", _REQUIRED, _origins, "cors"),
    _Option("SSECORS_ALLOW_CREDENTIALS", "allow_credentials", False, _bool, "cors"),
    _Option(
        "SSECORS_ALLOWED_HEADERS",
        "allowed_headers",
        ("last-event-id", "cache-control", "content-type"),
        _header_names("request"),
        "cors",
    ),
    _Option("SSECORS_EXPOSE_HEADERS", "expose_headers", (), _header_names("response"), "cors"),
    _Option(
        "SSECORS_ALLOWED_METHODS", "allowed_methods", ("GET", "HEAD", "POST"), _methods, "cors"
    ),
    _Option(
        "SSECORS_MAX_AGE", "max_age", 600, _integer(0, MAX_AGE_LIMIT, unit=" of seconds"), "cors"
    ),
    _Option("SSECORS_SERVE_WITHOUT_ORIGIN", "serve_without_origin", True, _bool, "cors"),
    _Option("SSECORS_ALLOW_PRIVATE_NETWORK", "allow_private_network", False, _bool, "cors"),
    _Option(
        "SSECORS_DANGEROUSLY_ALLOW_INSECURE_ORIGINS",
        "dangerously_allow_insecure_origins",
        False,
        _bool,
        "cors",
    ),
    _Option("SSECORS_HEARTBEAT", "heartbeat", 15.0, _number(0.0, 3600.0, low_open=True), "stream"),
    _Option(
        "SSECORS_RETRY",
        "retry",
        None,
        _integer(0, optional=True, unit=" of milliseconds"),
        "stream",
    ),
    _Option("SSECORS_QUEUE_SIZE", "queue_size", 1000, _integer(1), "stream"),
    _Option(
        "SSECORS_SEND_TIMEOUT", "send_timeout", 30.0, _number(0.0, 3600.0, low_open=True), "stream"
    ),
    _Option("SSECORS_BROKER_URL", "broker_url", "memory://", _broker_url, ""),
    _Option("SSECORS_BACKLOG", "backlog", 1000, _integer(0), ""),
    _Option("SSECORS_BROKER_TIMEOUT", "broker_timeout", 2.0, _number(0.0, 60.0, low_open=True), ""),
    _Option("SSECORS_REQUIRE_TOKEN", "require_token", False, _bool, "stream"),
    _Option(
        "SSECORS_MAX_STREAM_AGE", "max_stream_age", None, _optional_seconds(0.0, 604800.0), "stream"
    ),
    _Option("SSECORS_MAX_STREAMS", "max_streams", None, _integer(1, optional=True), ""),
    _Option("SSECORS_BUSY_RETRY", "busy_retry", 5000, _integer(0, unit=" of milliseconds"), ""),
    _Option(
        "SSECORS_TOKEN_MAX_AGE", "token_max_age", 300.0, _number(0.0, 604800.0, low_open=True), ""
    ),
    _Option("SSECORS_TOKEN_COOKIE", "token_cookie", "ssecors_token", _cookie_name, ""),
    _Option("SSECORS_REQUEST_ID_HEADER", "request_id_header", None, _request_id_header, ""),
    _Option("SSECORS_TRUST_REQUEST_ID", "trust_request_id", True, _bool, ""),
)
_BY_KEY: t.Final = {option.key: option for option in OPTIONS}
_BY_KWARG: t.Final = {option.kwarg: option for option in OPTIONS}
CORS_KWARGS: t.Final = frozenset(o.kwarg for o in OPTIONS if o.per_view == "cors")
STREAM_KWARGS: t.Final = CORS_KWARGS | frozenset(o.kwarg for o in OPTIONS if o.per_view == "stream")


def _unknown_key_issue(key: str) -> ConfigIssue:
    close = difflib.get_close_matches(key, list(_BY_KEY), n=1)
    hint = f" Did you mean {close[0]}?" if close else ""
    return ConfigIssue(
        key, "...", f"unknown setting.{hint} Known settings: see docs/configuration."
    )


def read_settings(config: cabc.Mapping[str, object]) -> Settings:
    """Read and validate every ``SSECORS_*`` key of ``config``.

    :param config: usually ``app.config``.
    :raises ConfigError: listing every problem found.
    """
    issues: list[ConfigIssue] = []
    values: dict[str, object] = {}
    for key in config:
        if key.startswith(PREFIX) and key not in _BY_KEY:
            issues.append(_unknown_key_issue(key))
    for option in OPTIONS:
        if option.key not in config:
            if option.default is _REQUIRED:
                issues.append(
                    ConfigIssue(
                        option.key,
                        None,
                        "is required: list the origins allowed to read the streams, "
                        "e.g. ['https://app.example.com'].",
                    )
                )
                continue
            raw = option.default
        else:
            raw = config[option.key]
        value, problem = option.check(raw)
        if problem:
            issues.append(ConfigIssue(option.key, raw, problem))
        else:
            values[option.kwarg] = value
    # The checks that involve several keys run on every value that passed its own check, so a
    # problem in one key never hides a combination problem elsewhere (all issues together).
    combined = dict(values)
    if "origins" not in combined and _BY_KWARG["origins"].key in config:
        combined["origins"] = _parseable_origins(config[_BY_KWARG["origins"].key])
    issues.extend(_combined_issues(combined, lambda kwarg: _BY_KWARG[kwarg].key))
    if issues:
        raise ConfigError(issues)
    return _assemble(values, lambda kwarg: _BY_KWARG[kwarg].key)


def _parseable_origins(raw: object) -> tuple[OriginPattern, ...]:
    """The entries of a refused origin list that do parse, so that their own combination
    problems (an insecure origin with credentials) are reported beside the refusal."""
    items, _ = _string_list(raw)
    patterns: list[OriginPattern] = []
    for item in items or ():
        try:
            patterns.append(parse_pattern(item))
        except OriginError:
            continue
    return tuple(patterns)


def check_overrides(
    overrides: cabc.Mapping[str, object], *, allowed: frozenset[str]
) -> dict[str, object]:
    """Validate a decorator's keyword overrides on their own.

    Combined checks (such as ``"*"`` with credentials) run when the overrides are merged into an
    app's settings by :func:`merge_overrides`.

    :param overrides: the decorator's keyword arguments.
    :param allowed: the keyword names this decorator accepts.
    :raises ConfigError: listing every problem found.
    """
    issues: list[ConfigIssue] = []
    checked: dict[str, object] = {}
    for name, raw in overrides.items():
        if name not in allowed:
            close = difflib.get_close_matches(name, sorted(allowed), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            issues.append(ConfigIssue(name, raw, f"is not an option of this decorator.{hint}"))
            continue
        value, problem = _BY_KWARG[name].check(raw)
        if problem:
            issues.append(ConfigIssue(name, raw, problem))
        else:
            checked[name] = value
    if issues:
        raise ConfigError(issues, where="flask-ssecors view options")
    return checked


def merge_overrides(settings: Settings, checked: cabc.Mapping[str, object]) -> Settings:
    """Return ``settings`` with per-view overrides (from :func:`check_overrides`) applied.

    :raises ConfigError: when the combination is refused.
    """
    if not checked:
        return settings
    values = _values_of(settings)
    values.update(checked)
    return _assemble(values, lambda kwarg: kwarg, where="flask-ssecors view options")


def _values_of(settings: Settings) -> dict[str, object]:
    cors = settings.cors
    return {
        "origins": "*" if cors.allow_any_origin else cors.origins,
        "allow_credentials": cors.allow_credentials,
        "allowed_headers": (("*",) if cors.allow_any_header else ()) + cors.allowed_headers,
        "expose_headers": cors.expose_headers,
        "allowed_methods": cors.allowed_methods,
        "max_age": cors.max_age,
        "serve_without_origin": cors.serve_without_origin,
        "allow_private_network": cors.allow_private_network,
        "dangerously_allow_insecure_origins": cors.dangerously_allow_insecure_origins,
        "heartbeat": settings.stream.heartbeat,
        "retry": settings.stream.retry,
        "queue_size": settings.stream.queue_size,
        "send_timeout": settings.stream.send_timeout,
        "broker_url": settings.broker_url,
        "backlog": settings.backlog,
        "broker_timeout": settings.broker_timeout,
        "require_token": settings.stream.require_token,
        "max_stream_age": settings.stream.max_stream_age,
        "max_streams": settings.max_streams,
        "busy_retry": settings.busy_retry,
        "token_max_age": settings.token_max_age,
        "token_cookie": settings.token_cookie,
        "request_id_header": settings.request_id_header,
        "trust_request_id": settings.trust_request_id,
    }


def _combined_issues(
    values: cabc.Mapping[str, object], name_of: cabc.Callable[[str], str]
) -> list[ConfigIssue]:
    """The problems that involve several options.

    A check is skipped when one of its inputs is missing from ``values`` (it failed its own
    check, which is reported already).
    """
    issues: list[ConfigIssue] = []
    if values.get("allow_credentials") is not True:
        return issues  # every combination refused below involves credentials
    origins = values.get("origins")
    insecure_ok = values.get("dangerously_allow_insecure_origins", True) is True
    headers = t.cast("tuple[str, ...]", values.get("allowed_headers", ()))
    expose = t.cast("tuple[str, ...]", values.get("expose_headers", ()))
    if origins == "*":
        issues.append(
            ConfigIssue(
                name_of("origins"),
                "*",
                f'"*" cannot be combined with {name_of("allow_credentials")}=True; '
                "list the exact origins.",
            )
        )
    if isinstance(origins, tuple) and not insecure_ok:
        for pattern in t.cast("tuple[OriginPattern, ...]", origins):
            if not pattern.is_secure:
                issues.append(
                    ConfigIssue(
                        name_of("origins"),
                        str(pattern),
                        "is not https and not loopback: with credentials its cookies could be "
                        "read by anyone on the network path; use https, or set "
                        f"{name_of('dangerously_allow_insecure_origins')}=True if you must.",
                    )
                )
    if "*" in headers:
        issues.append(
            ConfigIssue(
                name_of("allowed_headers"),
                "*",
                "with credentials browsers read '*' as a header literally named '*'; "
                "list the header names.",
            )
        )
    if "*" in expose:
        issues.append(
            ConfigIssue(
                name_of("expose_headers"),
                "*",
                "with credentials browsers read '*' as a header literally named '*'; "
                "list the header names.",
            )
        )
    return issues


def _assemble(
    values: dict[str, object],
    name_of: cabc.Callable[[str], str],
    where: str = "flask-ssecors",
) -> Settings:
    """Run the checks that involve several options, then freeze."""
    issues = _combined_issues(values, name_of)
    origins = values["origins"]
    credentials = t.cast(bool, values["allow_credentials"])
    insecure_ok = t.cast(bool, values["dangerously_allow_insecure_origins"])
    headers = t.cast("tuple[str, ...]", values["allowed_headers"])
    expose = t.cast("tuple[str, ...]", values["expose_headers"])
    if issues:
        raise ConfigError(issues, where=where)
    cors = CorsOptions(
        origins=() if origins == "*" else t.cast("tuple[OriginPattern, ...]", origins),
        allow_any_origin=origins == "*",
        allow_credentials=credentials,
        allowed_headers=tuple(h for h in headers if h != "*"),
        allow_any_header="*" in headers,
        expose_headers=expose,
        allowed_methods=t.cast("tuple[str, ...]", values["allowed_methods"]),
        max_age=t.cast(int, values["max_age"]),
        serve_without_origin=t.cast(bool, values["serve_without_origin"]),
        allow_private_network=t.cast(bool, values["allow_private_network"]),
        dangerously_allow_insecure_origins=insecure_ok,
    )
    stream = StreamOptions(
        heartbeat=t.cast(float, values["heartbeat"]),
        retry=t.cast("int | None", values["retry"]),
        queue_size=t.cast(int, values["queue_size"]),
        send_timeout=t.cast(float, values["send_timeout"]),
        require_token=t.cast(bool, values["require_token"]),
        max_stream_age=t.cast("float | None", values["max_stream_age"]),
    )
    return Settings(
        cors=cors,
        stream=stream,
        broker_url=t.cast(str, values["broker_url"]),
        backlog=t.cast(int, values["backlog"]),
        broker_timeout=t.cast(float, values["broker_timeout"]),
        max_streams=t.cast("int | None", values["max_streams"]),
        busy_retry=t.cast(int, values["busy_retry"]),
        token_max_age=t.cast(float, values["token_max_age"]),
        token_cookie=t.cast(str, values["token_cookie"]),
        request_id_header=t.cast("str | None", values["request_id_header"]),
        trust_request_id=t.cast(bool, values["trust_request_id"]),
    )
