"""The rules of :mod:`flask_ssecors.checker._check`: what a response must look like, and why.

Each function here takes what was seen on the wire (:class:`Seen`) and returns one
:class:`Item` (pass, fail or warn, with the evidence and what to fix). Nothing here does I/O;
:mod:`flask_ssecors.checker._check` makes the requests.

Pure module: no Flask, no gevent.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import typing as t

from publicsuffixlist import PublicSuffixList

if t.TYPE_CHECKING:
    from ._http import Exchange

Status = t.Literal["pass", "fail", "warn"]

ACAO: t.Final = "Access-Control-Allow-Origin"
ACAC: t.Final = "Access-Control-Allow-Credentials"
ACAH: t.Final = "Access-Control-Allow-Headers"
ATTACKER: t.Final = "attacker.example"
#: Request headers a page may send without a preflight (Fetch "CORS-safelisted"), and those it
#: cannot set at all (the browser sends them itself).
SAFELISTED: t.Final = frozenset({"accept", "accept-language", "content-language", "range"})
FORBIDDEN: t.Final = frozenset(
    {"accept-encoding", "connection", "cookie", "host", "origin", "referer", "user-agent"}
)


@dataclasses.dataclass(frozen=True, slots=True)
class Item:
    """One line of the checklist.

    :param id: a stable identifier, e.g. ``allow-origin`` (for CI and documentation).
    :param status: ``"pass"``, ``"fail"`` or ``"warn"``.
    :param detail: what was seen, quoting the header lines as evidence.
    :param fix: what to change; empty when the item passed.
    """

    id: str
    status: Status
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        """The JSON form: ``{"id", "status", "detail", "fix"}``."""
        return {"id": self.id, "status": self.status, "detail": self.detail, "fix": self.fix}


@dataclasses.dataclass(frozen=True, slots=True)
class Seen:
    """A response head as received, or the error that prevented reading it."""

    status: int = 0
    status_line: str = ""
    lines: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    error: str = ""
    #: Whether the error is that no connection (or TLS session) could be made at all.
    unreachable: bool = False
    #: Whether the TLS handshake did not choose HTTP/2 when it was asked for.
    not_http2: bool = False

    @classmethod
    def of(cls, exchange: Exchange) -> Seen:
        """Snapshot the head of ``exchange`` (after ``read_head``)."""
        return cls(
            exchange.status, exchange.status_line, tuple(exchange.lines), tuple(exchange.headers)
        )

    def values(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive), one per line."""
        lowered = name.lower()
        return [value for key, value in self.headers if key.lower() == lowered]

    def evidence(self, *names: str) -> str:
        """The header lines of ``names``, quoted, or that they are absent."""
        wanted = {name.lower() for name in names}
        found = [line for line in self.lines if line.partition(":")[0].strip().lower() in wanted]
        if found:
            return "; ".join(f'"{line}"' for line in found)
        return "no " + " or ".join(names) + " header"

    def tokens(self, name: str) -> list[str]:
        """The comma-separated, lowercased tokens of every ``name`` header line."""
        return [
            token.strip().lower()
            for value in self.values(name)
            for token in value.split(",")
            if token.strip()
        ]


@dataclasses.dataclass(frozen=True, slots=True)
class Hostile:
    """An origin derived from the allowed one that a server must refuse."""

    id: str
    origin: str
    trick: str


@functools.cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


def _split_origin(origin: str) -> tuple[str, str, str]:
    scheme, _, rest = origin.partition("://")
    if rest.startswith("["):
        host, _, after = rest.partition("]")
        return scheme, host + "]", after.lstrip(":")
    host, _, port = rest.partition(":")
    return scheme, host, port


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def hostile_origins(origin: str) -> list[Hostile]:
    """Origins derived from ``origin`` by the tricks naive checks fall for.

    :param origin: a serialized origin (``scheme://host[:port]``).
    """
    scheme, host, port = _split_origin(origin)
    suffix = f":{port}" if port else ""
    out = [Hostile("hostile-unrelated", f"https://{ATTACKER}", "an unrelated site")]
    if not _is_ip(host):
        base = _psl().privatesuffix(host) or host
        out.append(
            Hostile(
                "hostile-suffix",
                f"{scheme}://evil{base}{suffix}",
                f"a look-alike domain ending in {base}, as an endswith check allows",
            )
        )
    if not host.startswith("["):
        out.append(
            Hostile(
                "hostile-prefix",
                f"{scheme}://{host}.{ATTACKER}{suffix}",
                "the allowed host inside another domain, as a startswith check or an "
                "unanchored regex allows",
            )
        )
    if port and int(port + "1") <= 65535:
        out.append(
            Hostile(
                "hostile-port",
                f"{scheme}://{host}:{port}1",
                "the allowed origin with one more port digit, as a startswith check allows",
            )
        )
    elif not port:
        out.append(
            Hostile(
                "hostile-port",
                f"{origin}:{8443 if scheme == 'https' else 8080}",
                "the allowed host on another port, as a startswith check allows",
            )
        )
    if scheme == "https":
        out.append(
            Hostile(
                "hostile-scheme",
                f"http://{host}{suffix}",
                "the allowed host over plain http, a scheme downgrade",
            )
        )
    out.append(
        Hostile(
            "hostile-null",
            "null",
            "the opaque origin of sandboxed frames, file: pages and cross-origin redirects",
        )
    )
    return out


def request_header_names(headers: t.Sequence[tuple[str, str]]) -> list[str]:
    """The names a browser would list in ``Access-Control-Request-Headers`` for ``headers``."""
    names = {name.strip().lower() for name, _ in headers}
    return sorted(names - SAFELISTED - FORBIDDEN)


# -- CORS ----------------------------------------------------------------------------------


def allow_origin(seen: Seen, origin: str, credentials: bool, item_id: str = "allow-origin") -> Item:
    """``Access-Control-Allow-Origin`` on a response to the allowed origin."""
    values = seen.values(ACAO)
    evidence = seen.evidence(ACAO)
    if not values:
        return Item(
            item_id,
            "fail",
            f"{evidence}: the browser refuses to read the response.",
            f"Send Access-Control-Allow-Origin: {origin} for this origin.",
        )
    if len(values) > 1 or "," in values[0] or " " in values[0]:
        return Item(
            item_id,
            "fail",
            f"{evidence}: a list of origins; browsers require exactly one origin and fail.",
            f"Send one line, Access-Control-Allow-Origin: {origin}, chosen per request from "
            "an allowlist.",
        )
    value = values[0]
    if value == "*":
        if credentials:
            return Item(
                item_id,
                "fail",
                f"{evidence} with credentials: browsers refuse '*' for withCredentials requests.",
                f"Answer the allowed origin exactly (Access-Control-Allow-Origin: {origin}) "
                "and Vary: Origin; never '*' with credentials.",
            )
        return Item(item_id, "pass", f"{evidence}: any site may read this stream (no cookies).")
    if value != origin:
        return Item(
            item_id,
            "fail",
            f"{evidence}, but the page's origin is {origin!r}: browsers compare byte for byte "
            "(case, trailing slash and default port all matter).",
            f"Send exactly Access-Control-Allow-Origin: {origin}.",
        )
    return Item(item_id, "pass", f"{evidence}.")


def allow_credentials(seen: Seen, credentials: bool) -> Item:
    """``Access-Control-Allow-Credentials``, consistent with the other CORS headers."""
    values = seen.values(ACAC)
    evidence = seen.evidence(ACAC)
    if credentials:
        if values == ["true"]:
            return Item("allow-credentials", "pass", f"{evidence}.")
        return Item(
            "allow-credentials",
            "fail",
            f"{evidence}: withCredentials requests need exactly one "
            "'Access-Control-Allow-Credentials: true' (lowercase), or the browser fails.",
            "Send Access-Control-Allow-Credentials: true (flask-ssecors: "
            "SSECORS_ALLOW_CREDENTIALS = True).",
        )
    if values and values != ["true"]:
        return Item(
            "allow-credentials",
            "warn",
            f"{evidence}: the only meaningful value is 'true'.",
            "Send Access-Control-Allow-Credentials: true, or leave it out.",
        )
    if values and seen.values(ACAO) == ["*"]:
        return Item(
            "allow-credentials",
            "warn",
            f"{evidence} with 'Access-Control-Allow-Origin: *': contradictory; browsers "
            "never send cookies with '*'.",
            "Either drop credentials, or answer the exact origin instead of '*'.",
        )
    note = "credentials allowed too" if values else "no credentials, as requested"
    return Item("allow-credentials", "pass", f"{evidence} ({note}).")


def vary_origin(stream: Seen, refusals: t.Sequence[tuple[Hostile, Seen]]) -> Item:
    """``Vary: Origin`` on the stream response (and, as a warning, on refusals)."""
    if stream.values(ACAO) == ["*"]:
        return Item(
            "vary-origin",
            "pass",
            f"{stream.evidence('Vary')}; not needed with 'Access-Control-Allow-Origin: *'.",
        )
    tokens = stream.tokens("Vary")
    if "origin" not in tokens and "*" not in tokens:
        return Item(
            "vary-origin",
            "fail",
            f"{stream.evidence('Vary')}: a cache (browser, proxy or CDN) may serve this "
            "response, with its Access-Control-Allow-Origin, to another origin.",
            "Add Vary: Origin to every response whose CORS headers depend on the Origin, "
            "including refusals and requests without Origin.",
        )
    missing = [
        hostile.origin
        for hostile, seen in refusals
        if seen.status and "origin" not in seen.tokens("Vary") and "*" not in seen.tokens("Vary")
    ]
    if missing:
        return Item(
            "vary-origin",
            "warn",
            f"{stream.evidence('Vary')} on the stream, but none on the answer to "
            f"{', '.join(missing[:3])}.",
            "Send Vary: Origin on refusals too, so a cached refusal is never reused for the "
            "allowed origin.",
        )
    return Item("vary-origin", "pass", f"{stream.evidence('Vary')}.")


def preflight(
    seen: Seen, origin: str, credentials: bool, names: t.Sequence[str], item_id: str
) -> Item:
    """An ``OPTIONS`` preflight from the allowed origin, for a GET with ``names`` headers."""
    asked = ", ".join(names) if names else "no extra headers"
    if seen.error:
        return Item(item_id, "fail", f"preflight ({asked}): {seen.error}.", _PREFLIGHT_FIX)
    problems: list[str] = []
    if not 200 <= seen.status < 300:
        problems.append(f'"{seen.status_line}" (a preflight needs a 2xx status)')
    acao = allow_origin(seen, origin, credentials)
    if acao.status == "fail":
        problems.append(acao.detail.rstrip("."))
    if credentials and seen.values(ACAC) != ["true"]:
        problems.append(f"{seen.evidence(ACAC)} (needed for withCredentials)")
    allowed = set(seen.tokens(ACAH))
    wildcard = "*" in allowed and not credentials
    refused = [n for n in names if n not in allowed and not (wildcard and n != "authorization")]
    if refused and not allowed:
        problems.append(f"no {ACAH} header, so {', '.join(refused)} may not be sent")
    elif refused:
        problems.append(f"{seen.evidence(ACAH)} does not cover {', '.join(refused)}")
    if problems:
        return Item(
            item_id,
            "fail",
            f"preflight for GET with {asked}: " + "; ".join(problems) + ".",
            _PREFLIGHT_FIX,
        )
    evidence = seen.evidence(ACAO, ACAH)
    return Item(item_id, "pass", f'"{seen.status_line}" for GET with {asked}: {evidence}.')


def preflight_last_event_id(
    seen: Seen, origin: str, credentials: bool, names: t.Sequence[str]
) -> Item:
    """A preflight that also asks for ``Last-Event-ID``: a warning when refused, since only
    ``fetch()``-based clients need it (native ``EventSource`` never preflights)."""
    item = preflight(seen, origin, credentials, names, "preflight-last-event-id")
    if item.status != "fail":
        return item
    return dataclasses.replace(
        item,
        status="warn",
        fix="fetch()-based SSE clients send Last-Event-ID when they resume; allow it "
        "(flask-ssecors: SSECORS_ALLOWED_HEADERS).",
    )


_PREFLIGHT_FIX: t.Final = (
    "Answer OPTIONS with Access-Control-Request-Method from an allowed origin with 204, "
    "Access-Control-Allow-Origin (the exact origin), Access-Control-Allow-Headers listing the "
    "requested headers, and Access-Control-Allow-Credentials: true when cookies are used; do "
    "not require authentication for OPTIONS (flask-ssecors answers preflights itself; list "
    "the headers in SSECORS_ALLOWED_HEADERS)."
)


def hostile(item: Hostile, get: Seen, options: Seen, origin: str, credentials: bool) -> Item:
    """A hostile origin must never be echoed, and should be refused before the stream opens."""
    reflected = [
        f'{kind} got "{line}"'
        for kind, seen in (("GET", get), ("preflight", options))
        for line in seen.lines
        if line.partition(":")[0].strip().lower() == ACAO.lower()
        and item.origin in [v.strip() for v in line.partition(":")[2].split(",")]
    ]
    if reflected:
        with_cookies = (
            ", with the user's cookies (Access-Control-Allow-Credentials: true)"
            if "true" in get.values(ACAC) + options.values(ACAC)
            else ""
        )
        return Item(
            item.id,
            "fail",
            f"Origin {item.origin} ({item.trick}): {'; '.join(reflected)}: a page there can "
            f"read the stream{with_cookies}.",
            f"Compare the Origin exactly against an allowlist (here {origin}) and never echo "
            "an unchecked value; refuse others with 403 (flask-ssecors: "
            "SSECORS_ALLOWED_ORIGINS).",
        )
    if "*" in get.values(ACAO):
        return Item(
            item.id,
            "pass",
            f"Origin {item.origin}: {get.evidence(ACAO)}, not reflected: a public stream, "
            "which browsers never read with cookies (see allow-origin).",
        )
    if get.error:
        return Item(
            item.id, "warn", f"Origin {item.origin}: {get.error}.", "Refuse it with 403 at once."
        )
    if 200 <= get.status < 300:
        return Item(
            item.id,
            "warn",
            f'Origin {item.origin} ({item.trick}): "{get.status_line}", {get.evidence(ACAO)}: '
            "the browser blocks reading, but the stream opened and the view ran for that site.",
            "Refuse disallowed origins with 403 before the stream starts (browsers never "
            "preflight EventSource, so the GET itself must be policed).",
        )
    return Item(
        item.id,
        "pass",
        f'Origin {item.origin} ({item.trick}): "{get.status_line}", {get.evidence(ACAO)}.',
    )
