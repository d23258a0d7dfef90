"""Reading and validating the ``SSECORS_*`` configuration.

Pure module: it reads a mapping (``app.config``) once, checks every value, and returns frozen
:class:`Settings`. Every problem is collected and raised together as
:class:`~flask_ssecors.exceptions.ConfigError`, so one start-up shows all of them.

Each option is defined once, in :data:`OPTIONS`: its key, per-view keyword, default, check,
where it lands in :class:`Settings`, and the line the documentation's summary table shows.
Everything else (reading ``app.config``, per-view overrides, the unknown-key hint, the docs
table) is derived from that table.

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
import re
import typing as t

from ._fetch import CORS_HEADER_PREFIX
from ._fetch import FORBIDDEN_EXPOSE_HEADERS
from ._fetch import FORBIDDEN_METHODS
from ._fetch import FORBIDDEN_REQUEST_HEADERS
from ._fetch import FORBIDDEN_REQUEST_PREFIXES
from ._fetch import TOKEN_CHARS
from ._origins import OriginError
from ._origins import OriginPattern
from ._origins import parse_pattern
from ._urls import parse_url
from ._urls import POSTGRES_SCHEMES
from ._urls import redact
from ._urls import SCHEMES as REDIS_SCHEMES
from .exceptions import ConfigError
from .exceptions import ConfigIssue

PREFIX: t.Final = "SSECORS_"

BROKER_SCHEMES: t.Final = ("memory", *REDIS_SCHEMES, *POSTGRES_SCHEMES)
MAX_AGE_LIMIT: t.Final = 86400
#: What ``SSECORS_BROKER_SCHEMA`` may look like: an unquoted PostgreSQL identifier, short
#: enough that ``<schema>_<16 hex digits>`` fits a NOTIFY channel name (63 bytes). The one
#: definition: the PostgreSQL broker's SQL (:mod:`flask_ssecors.brokers._postgres_sql`) is
#: written for names of this shape.
SCHEMA_NAME: t.Final = re.compile(r"(?!pg_)[a-z_][a-z0-9_]{0,39}")
SCHEMA_NAME_RULE: t.Final = (
    "must be a lowercase PostgreSQL identifier of at most 40 characters "
    "(letters, digits and '_', not starting with a digit nor with 'pg_', which PostgreSQL "
    "keeps for itself), such as 'ssecors'"
)


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
    #: Whether members' first and last streams publish join and leave events: True, False, or
    #: the channel patterns that do.
    presence_events: bool | tuple[str, ...] = False


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Everything read from ``app.config``, validated and frozen (see :data:`OPTIONS`)."""

    cors: CorsOptions
    stream: StreamOptions
    broker_url: str
    broker_schema: str
    backlog: int
    broker_timeout: float
    broker_min_replicas: int
    channel_ttl: float | None
    max_event_size: int | None
    max_streams: int | None
    max_streams_per_client: int | None
    client_ipv6_prefix: int
    busy_retry: int
    token_max_age: float
    token_cookie: str
    request_id_header: str | None
    trust_request_id: bool
    warn_cors_hooks: bool
    drain_on_shutdown: bool
    helper_url_prefix: str | None
    presence_ttl: float
    presence_max_members: int


#: One problem a check found: the offending value (an entry of a list, or the value itself)
#: and what is wrong with it.
Problem = tuple[object, str]
#: A check returns the converted value and its problems (none when the value is accepted).
Check = cabc.Callable[[object], "tuple[object, list[Problem]]"]

Group = t.Literal["cors", "stream", "app"]
PerView = t.Literal["", "cors", "stream"]


def _same(kwarg: str) -> cabc.Callable[[object], dict[str, object]]:
    return lambda value: {kwarg: value}


@dataclasses.dataclass(frozen=True, slots=True)
class Option:
    """The one definition of a configuration option: one row of :data:`OPTIONS`.

    Written with keywords; what can be derived is: the key from the keyword
    (``"backlog"`` -> ``SSECORS_BACKLOG``), which decorators accept it from its group, and how
    the documentation shows its default from the default itself.

    :param kwarg: the per-view keyword, and the name of the field it fills.
    :param default: the value used when the key is absent (:data:`REQUIRED` if it is required).
    :param check: validates and converts a value.
    :param group: the part of :class:`Settings` the option lands in.
    :param key: the ``app.config`` key; ``SSECORS_`` and the keyword in capitals by default.
    :param per_view: which decorators accept the keyword: ``"cors"`` (both), ``"stream"``
        (``@sse.stream`` only), or ``""`` (app only); by default the group's (``""`` for
        ``"app"``).
    :param default_doc: the default as the documentation shows it (reST); derived from
        ``default`` when not given.
    :param store: the fields a converted value fills (default: the field named ``kwarg``).
    :param load: the value back from those fields (default: the field named ``kwarg``).
    """

    kwarg: str
    _: dataclasses.KW_ONLY
    default: object
    check: Check
    group: Group
    key: str = ""
    per_view: PerView | None = None
    default_doc: str = ""
    store: cabc.Callable[[object], dict[str, object]] | None = None
    load: cabc.Callable[[t.Any], object] | None = None

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", PREFIX + self.kwarg.upper())
        if self.per_view is None:
            object.__setattr__(self, "per_view", "" if self.group == "app" else self.group)
        if not self.default_doc:
            object.__setattr__(self, "default_doc", _default_doc(self.default))

    def fields(self, value: object) -> dict[str, object]:
        """The dataclass fields ``value`` fills."""
        return self.store(value) if self.store is not None else {self.kwarg: value}

    def value_in(self, group: object) -> object:
        """This option's value, read back from its group of a :class:`Settings`."""
        return self.load(group) if self.load is not None else getattr(group, self.kwarg)


def _default_doc(default: object) -> str:
    """How the documentation shows a default: ``required``, ``none`` for an empty list, the
    entries of a list as literals, a string quoted, anything else as Python writes it."""
    if default is REQUIRED:
        return "required"
    if isinstance(default, tuple):
        return ", ".join(f"``{item}``" for item in default) if default else "none"
    if isinstance(default, str):
        return f'"{default}"'
    return repr(default)


# -- checks ----------------------------------------------------------------------------------


def _accept(value: object) -> tuple[object, list[Problem]]:
    return value, []


def _refuse(value: object, reason: str) -> tuple[object, list[Problem]]:
    return value, [(value, reason)]


def _bool(value: object) -> tuple[object, list[Problem]]:
    if isinstance(value, bool):
        return _accept(value)
    return _refuse(value, "must be True or False.")


def _presence_events(value: object) -> tuple[object, list[Problem]]:
    """True, False, or channel patterns (``*`` matches any run of characters)."""
    if isinstance(value, bool):
        return _accept(value)
    items = _string_list(value)
    if items is None:
        return _refuse(value, "must be True, False, or a list of channel patterns ('room:*').")
    problems: list[Problem] = [
        (item, f"{item!r} is not a channel pattern (empty, or with a control character).")
        for item in items
        if not item or any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in item)
    ]
    patterns: object = tuple(items)
    return (patterns, list(problems)) if problems else _accept(patterns)


def _number(low: float, high: float, *, low_open: bool = False, optional: bool = False) -> Check:
    def check(value: object) -> tuple[object, list[Problem]]:
        if optional and value is None:
            return _accept(None)
        unit = "seconds or None" if optional else "seconds"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return _refuse(value, f"must be a number of {unit}.")
        number = float(value)
        if (
            not math.isfinite(number)
            or number > high
            or number < low
            or (low_open and number == low)
        ):
            bound = f"greater than {low:g}" if low_open else f"at least {low:g}"
            return _refuse(value, f"must be {bound} and at most {high:g}.")
        return _accept(number)

    return check


def _integer(low: int, high: int | None = None, *, optional: bool = False, unit: str = "") -> Check:
    def check(value: object) -> tuple[object, list[Problem]]:
        if optional and value is None:
            return _accept(None)
        if isinstance(value, bool) or not isinstance(value, int):
            return _refuse(value, f"must be a whole number{unit}{' or None' if optional else ''}.")
        if value < low or (high is not None and value > high):
            upper = f" and at most {high}" if high is not None else ""
            return _refuse(value, f"must be at least {low}{upper}.")
        return _accept(value)

    return check


def _cookie_name(value: object) -> tuple[object, list[Problem]]:
    if not isinstance(value, str) or not value or not set(value.lower()) <= TOKEN_CHARS:
        return _refuse(value, "must be a cookie name (letters, digits and !#$%&'*+-.^_`|~).")
    return _accept(value)


def _request_id_header(value: object) -> tuple[object, list[Problem]]:
    if value is None:
        return _accept(None)
    if not isinstance(value, str) or not value or not set(value.lower()) <= TOKEN_CHARS:
        return _refuse(value, "must be a header name such as 'X-Request-ID', or None.")
    if value.lower() in FORBIDDEN_REQUEST_HEADERS or value.lower().startswith(
        (*FORBIDDEN_REQUEST_PREFIXES, CORS_HEADER_PREFIX)
    ):
        return _refuse(
            value, "is a header name browsers or the CORS protocol own; use 'X-Request-ID'."
        )
    return _accept(value)


def _string_list(value: object) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, cabc.Iterable) and not isinstance(value, bytes | cabc.Mapping):
        items = list(value)
        if all(isinstance(item, str) for item in items):
            return items
    return None


_NOT_A_LIST: t.Final = "must be a list of strings."
STAR_MIXED: t.Final = (
    '"*" allows every origin and cannot be mixed with other entries; '
    'use "*" alone or list the exact origins.'
)


def _origins(value: object) -> tuple[object, list[Problem]]:
    items = _string_list(value)
    if items is None:
        return _refuse(value, _NOT_A_LIST)
    if not items:
        return _refuse(value, "list at least one origin, e.g. ['https://app.example.com'].")
    if items == ["*"]:
        return _accept("*")
    problems: list[Problem] = []
    patterns: list[OriginPattern] = []
    reported: set[str] = set()
    for item in items:
        if item in reported:
            continue
        if item == "*":
            reported.add(item)
            problems.append(("*", STAR_MIXED))
            continue
        try:
            pattern = parse_pattern(item)
        except OriginError as error:
            reported.add(item)
            problems.append((item, str(error)))
        else:
            if pattern not in patterns:
                patterns.append(pattern)
    if problems:
        return value, problems
    return _accept(tuple(patterns))


def _header_names(kind: t.Literal["request", "response"]) -> Check:
    forbidden = FORBIDDEN_REQUEST_HEADERS if kind == "request" else FORBIDDEN_EXPOSE_HEADERS

    def check(value: object) -> tuple[object, list[Problem]]:
        if value is None:
            return _accept(())
        items = _string_list(value)
        if items is None:
            return _refuse(value, _NOT_A_LIST)
        names: list[str] = []
        problems: list[Problem] = []
        for item in items:
            name = item.strip().lower()
            if name == "*":
                names.append(name)
            elif not name or not set(name) <= TOKEN_CHARS or name != item.strip().lower():
                problems.append((item, f"{item!r} is not a valid header name; remove it."))
            elif name in forbidden or (
                kind == "request" and name.startswith(FORBIDDEN_REQUEST_PREFIXES)
            ):
                problems.append(
                    (item, f"{item!r} is a forbidden header name that browsers never send.")
                )
            elif name.startswith(CORS_HEADER_PREFIX):
                problems.append(
                    (item, f"{item!r} is a CORS protocol header, not an application header.")
                )
            elif name not in names:
                names.append(name)
        if problems:
            return value, problems
        return _accept(tuple(names))

    return check


def _methods(value: object) -> tuple[object, list[Problem]]:
    items = _string_list(value)
    if items is None:
        return _refuse(value, _NOT_A_LIST)
    methods: list[str] = []
    problems: list[Problem] = []
    for item in items:
        method = item.strip()
        if method == "*":
            problems.append((item, '"*" is not accepted; list the methods.'))
        elif not method or not set(method.lower()) <= TOKEN_CHARS or method != item:
            problems.append((item, f"{item!r} is not a valid method."))
        elif method.upper() in FORBIDDEN_METHODS:
            problems.append((item, f"{item!r} is a forbidden method."))
        elif method.upper() not in methods:
            methods.append(method.upper())
    if problems:
        return value, problems
    if not methods:
        return _refuse(value, "list at least one method.")
    return _accept(tuple(methods))


def check_schema_name(name: object) -> str:
    """Return ``name`` if it can name the PostgreSQL broker's schema, else raise ValueError
    (its message is :data:`SCHEMA_NAME_RULE`)."""
    if not isinstance(name, str) or not SCHEMA_NAME.fullmatch(name):
        raise ValueError(SCHEMA_NAME_RULE)
    return name


def _broker_schema(value: object) -> tuple[object, list[Problem]]:
    try:
        return _accept(check_schema_name(value))
    except ValueError as error:
        return _refuse(value, f"{error}.")


def _url_prefix(value: object) -> tuple[object, list[Problem]]:
    if value is None:
        return _accept(None)
    if (
        not isinstance(value, str)
        or not value.startswith("/")
        or value.endswith("/")
        or not value.isascii()
        or any(char in value for char in "<>?#% \t\r\n")
    ):
        return _refuse(
            value, "must be a URL path such as '/_ssecors' (no trailing slash), or None."
        )
    return _accept(value)


def _broker_url(value: object) -> tuple[object, list[Problem]]:
    """Every message quotes the URL masked (:func:`~.brokers._urls.redact`): a password must
    not reach a log or a terminal because of a typo in the scheme."""
    if not isinstance(value, str) or "://" not in value:
        shown = redact(value) if isinstance(value, str | bytes) else value
        return _refuse(
            shown,
            "must be a URL such as 'memory://', 'redis://localhost:6379/0' or "
            "'postgresql://user:password@localhost:5432/app'.",
        )
    if value.partition("://")[0].lower() == "memory" and "://" in value:
        return _accept(value)
    try:
        parse_url(value)
    except ValueError as error:
        hint = (
            "; memory:// is the in-memory broker, postgresql:// (or postgres://) the "
            "PostgreSQL broker, the others Redis"
            if "scheme" in str(error)
            else ""
        )
        return _refuse(redact(value), f"{error}{hint}.")
    return _accept(value)


# -- the options -----------------------------------------------------------------------------

#: The default of a required option.
REQUIRED: t.Final = object()


def _store_origins(value: object) -> dict[str, object]:
    return {"origins": () if value == "*" else value, "allow_any_origin": value == "*"}


def _load_origins(cors: CorsOptions) -> object:
    return "*" if cors.allow_any_origin else cors.origins


def _store_headers(value: object) -> dict[str, object]:
    names = t.cast("tuple[str, ...]", value)
    return {
        "allowed_headers": tuple(name for name in names if name != "*"),
        "allow_any_header": "*" in names,
    }


def _load_headers(cors: CorsOptions) -> object:
    return (("*",) if cors.allow_any_header else ()) + cors.allowed_headers


_SECONDS: t.Final = _number(0.0, 3600.0, low_open=True)

OPTIONS: t.Final[tuple[Option, ...]] = (
    # -- the CORS policy (both decorators) --
    Option(
        "origins",
        key="SSECORS_ALLOWED_ORIGINS",
        default=REQUIRED,
        check=_origins,
        group="cors",
        store=_store_origins,
        load=_load_origins,
    ),
    Option("allow_credentials", default=False, check=_bool, group="cors"),
    Option(
        "allowed_headers",
        default=("last-event-id", "cache-control", "content-type"),
        check=_header_names("request"),
        group="cors",
        store=_store_headers,
        load=_load_headers,
    ),
    Option("expose_headers", default=(), check=_header_names("response"), group="cors"),
    Option("allowed_methods", default=("GET", "HEAD", "POST"), check=_methods, group="cors"),
    Option(
        "max_age", default=600, check=_integer(0, MAX_AGE_LIMIT, unit=" of seconds"), group="cors"
    ),
    Option("serve_without_origin", default=True, check=_bool, group="cors"),
    Option("allow_private_network", default=False, check=_bool, group="cors"),
    Option("dangerously_allow_insecure_origins", default=False, check=_bool, group="cors"),
    # -- streams (@sse.stream) --
    Option("heartbeat", default=15.0, check=_SECONDS, group="stream"),
    Option(
        "retry",
        default=None,
        check=_integer(0, optional=True, unit=" of milliseconds"),
        group="stream",
    ),
    Option("queue_size", default=1000, check=_integer(1), group="stream"),
    Option("send_timeout", default=30.0, check=_SECONDS, group="stream"),
    Option("require_token", default=False, check=_bool, group="stream"),
    Option(
        "max_stream_age",
        default=None,
        check=_number(0.0, 604800.0, low_open=True, optional=True),
        group="stream",
    ),
    Option(
        "presence_events",
        default=False,
        check=_presence_events,
        group="stream",
        default_doc="``False``",
    ),
    # -- the app --
    Option("broker_url", default="memory://", check=_broker_url, group="app"),
    Option("broker_schema", default="ssecors", check=_broker_schema, group="app"),
    Option("backlog", default=1000, check=_integer(0), group="app"),
    Option("broker_timeout", default=2.0, check=_number(0.0, 60.0, low_open=True), group="app"),
    Option("broker_min_replicas", default=0, check=_integer(0, 16), group="app"),
    Option(
        "channel_ttl",
        default=86400.0,
        check=_number(0.0, 31536000.0, low_open=True, optional=True),
        group="app",
    ),
    Option(
        "max_event_size",
        default=65536,
        check=_integer(64, 64 * 1024 * 1024, optional=True, unit=" of bytes"),
        group="app",
    ),
    Option(
        "max_streams",
        default=None,
        check=_integer(1, optional=True),
        group="app",
        default_doc="``None``: 90 % of gunicorn's ``worker_connections``",
    ),
    Option("max_streams_per_client", default=64, check=_integer(1, optional=True), group="app"),
    Option("client_ipv6_prefix", default=64, check=_integer(16, 128), group="app"),
    Option("busy_retry", default=5000, check=_integer(0, unit=" of milliseconds"), group="app"),
    Option(
        "token_max_age", default=300.0, check=_number(0.0, 604800.0, low_open=True), group="app"
    ),
    Option("token_cookie", default="ssecors_token", check=_cookie_name, group="app"),
    Option("request_id_header", default=None, check=_request_id_header, group="app"),
    Option("trust_request_id", default=True, check=_bool, group="app"),
    Option("warn_cors_hooks", default=True, check=_bool, group="app"),
    Option("drain_on_shutdown", default=True, check=_bool, group="app"),
    Option("helper_url_prefix", default="/_ssecors", check=_url_prefix, group="app"),
    Option("presence_ttl", default=30.0, check=_number(1.0, 3600.0), group="app"),
    Option("presence_max_members", default=500, check=_integer(0), group="app"),
)
_BY_KEY: t.Final = {option.key: option for option in OPTIONS}
_BY_KWARG: t.Final = {option.kwarg: option for option in OPTIONS}


def default_of(kwarg: str) -> t.Any:
    """The default of the option ``kwarg``: the one source that brokers, :class:`Publisher`
    and the settings read (``default_of("backlog")`` is ``1000``)."""
    return _BY_KWARG[kwarg].default


CORS_KWARGS: t.Final = frozenset(o.kwarg for o in OPTIONS if o.per_view == "cors")
STREAM_KWARGS: t.Final = CORS_KWARGS | frozenset(o.kwarg for o in OPTIONS if o.per_view == "stream")


def _unknown_key_issue(key: str) -> ConfigIssue:
    close = difflib.get_close_matches(key, list(_BY_KEY), n=1)
    hint = f" Did you mean {close[0]}?" if close else ""
    return ConfigIssue(
        key, "...", f"unknown setting.{hint} Known settings: see docs/configuration."
    )


def _issues(name: str, problems: list[Problem]) -> list[ConfigIssue]:
    return [ConfigIssue(name, value, reason) for value, reason in problems]


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
            if option.default is REQUIRED:
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
        value, problems = option.check(raw)
        if problems:
            if option.kwarg == "origins" and config.get(_BY_KWARG["allow_credentials"].key) is True:
                problems = [
                    (item, reason + ' With SSECORS_ALLOW_CREDENTIALS=True, "*" is refused anyway.')
                    if reason == STAR_MIXED
                    else (item, reason)
                    for item, reason in problems
                ]
            issues.extend(_issues(option.key, problems))
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
    return _freeze(values)


def _parseable_origins(raw: object) -> tuple[OriginPattern, ...]:
    """The entries of a refused origin list that do parse, so that their own combination
    problems (an insecure origin with credentials) are reported beside the refusal."""
    patterns: list[OriginPattern] = []
    for item in _string_list(raw) or ():
        try:
            patterns.append(parse_pattern(item))
        except OriginError:
            continue
    return tuple(patterns)


def check_options(
    values: cabc.Mapping[str, object], *, allowed: frozenset[str], where: str
) -> dict[str, object]:
    """Validate options given as keywords (named like the per-view keywords), on their own.

    :param values: the keywords.
    :param allowed: the names accepted.
    :param where: what is being configured, for the error's first line.
    :raises ConfigError: listing every problem found.
    """
    try:
        return check_overrides(values, allowed=allowed, what=where)
    except ConfigError as error:
        raise ConfigError(error.issues, where=where) from None


def check_overrides(
    overrides: cabc.Mapping[str, object], *, allowed: frozenset[str], what: str = "this decorator"
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
            issues.append(ConfigIssue(name, raw, f"is not an option of {what}.{hint}"))
            continue
        value, problems = _BY_KWARG[name].check(raw)
        if problems:
            issues.extend(_issues(name, problems))
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
    values = {option.kwarg: option.value_in(_group(settings, option.group)) for option in OPTIONS}
    values.update(checked)
    issues = _combined_issues(values, lambda kwarg: kwarg)
    if issues:
        raise ConfigError(issues, where="flask-ssecors view options")
    return _freeze(values)


def _group(settings: Settings, group: Group) -> object:
    if group == "cors":
        return settings.cors
    if group == "stream":
        return settings.stream
    return settings


def _freeze(values: cabc.Mapping[str, object]) -> Settings:
    """Build :class:`Settings` from every option's checked value (see :class:`Option`)."""
    groups: dict[Group, dict[str, object]] = {"cors": {}, "stream": {}, "app": {}}
    for option in OPTIONS:
        groups[option.group].update(option.fields(values[option.kwarg]))
    return Settings(
        cors=CorsOptions(**groups["cors"]),  # type: ignore[arg-type]
        stream=StreamOptions(**groups["stream"]),  # type: ignore[arg-type]
        **groups["app"],  # type: ignore[arg-type]
    )


def _combined_issues(
    values: cabc.Mapping[str, object], name_of: cabc.Callable[[str], str]
) -> list[ConfigIssue]:
    """The problems that involve several options.

    A check is skipped when one of its inputs is missing from ``values`` (it failed its own
    check, which is reported already).
    """
    issues: list[ConfigIssue] = []
    members, queue = values.get("presence_max_members"), values.get("queue_size")
    if (
        values.get("presence_events")
        and isinstance(members, int)
        and isinstance(queue, int)
        and members >= queue
    ):
        issues.append(
            ConfigIssue(
                name_of("presence_max_members"),
                members,
                f"with {name_of('presence_events')} on, channels up to this many members "
                "announce joins and leaves, and a worker that stops makes all of its "
                "members leave at once: that burst must fit each subscriber's queue, so "
                f"keep this below {name_of('queue_size')} ({queue}), or raise that.",
            )
        )
    url, replicas = values.get("broker_url"), values.get("broker_min_replicas")
    if (
        isinstance(url, str)
        and url.partition("://")[0].lower() in ("postgresql", "postgres")
        and isinstance(replicas, int)
        and replicas > 0
    ):
        issues.append(
            ConfigIssue(
                name_of("broker_min_replicas"),
                replicas,
                "applies to the Redis broker (WAIT); with PostgreSQL, make commits wait for "
                "replicas in the server (synchronous_commit with synchronous_standby_names) "
                "and leave this at 0.",
            )
        )
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
    for kwarg, names in (("allowed_headers", headers), ("expose_headers", expose)):
        if "*" in names:
            issues.append(
                ConfigIssue(
                    name_of(kwarg),
                    "*",
                    "with credentials browsers read '*' as a header literally named '*'; "
                    "list the header names.",
                )
            )
    return issues
