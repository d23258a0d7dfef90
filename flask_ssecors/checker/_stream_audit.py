"""The stream rules of :mod:`flask_ssecors.checker._check`: SSE headers, timing, parsing, resuming.

Like :mod:`flask_ssecors.checker._audit`, every function turns what was seen into one
:class:`~flask_ssecors.checker._audit.Item`; nothing here does I/O.

Pure module: no Flask, no gevent.
"""

from __future__ import annotations

import codecs
import dataclasses
import re
import typing as t

from ..events import RESET_EVENT
from ._audit import Item
from ._audit import Seen

if t.TYPE_CHECKING:
    from ..events import Event
    from ._reading import IdLog

#: First body bytes later than this (seconds) are late, even within the timeout.
PROMPT: t.Final = 1.0
_FIELDS: t.Final = frozenset({"event", "data", "id", "retry"})
_LINE_BREAK: t.Final = re.compile(r"\r\n|\r|\n")
_HOP_BY_HOP: t.Final = ("Keep-Alive", "Proxy-Connection", "Upgrade", "TE", "Trailer")


@dataclasses.dataclass
class Observation:
    """What reading the stream showed (times in seconds since the request was sent).

    Summaries only (counts, first and last arrival, the longest silence), so that watching a
    stream costs the same memory however much the server sends.
    """

    timeout: float
    arrivals: int = 0
    first: float | None = None
    last: float | None = None
    longest_gap: float = 0.0
    events: int = 0
    comments: int = 0
    names: set[str] = dataclasses.field(default_factory=set)
    body: bytes = b""
    ended_after: float | None = None
    #: Framing, decoding or line-length trouble, in words; empty when none.
    error: str = ""
    undecodable: str = ""
    #: Which bound stopped the read, in words; empty when none did.
    limit: str = ""

    def arrived(self, at: float) -> None:
        """Count bytes that arrived ``at`` seconds after the request."""
        if self.last is not None:
            self.longest_gap = max(self.longest_gap, at - self.last)
        if self.first is None:
            self.first = at
        self.last = at
        self.arrivals += 1


def status(seen: Seen) -> Item:
    """The stream request must be answered ``200``."""
    if seen.error:
        return Item("status", "fail", f"{seen.error}.", "Check the URL, and that it serves.")
    line = f'"{seen.status_line}"'
    if seen.status == 200:
        return Item("status", "pass", f"{line}.")
    if 300 <= seen.status < 400:
        return Item(
            "status",
            "fail",
            f"{line}, {seen.evidence('Location')}: a cross-origin redirect turns the Origin "
            "into 'null' and costs a round trip on every reconnect.",
            "Point the page (and this check) at the final URL.",
        )
    fix = "Serve the stream with 200."
    if seen.status == 403:
        fix = "Allow this origin (flask-ssecors: add it to SSECORS_ALLOWED_ORIGINS)."
    return Item(
        "status",
        "fail",
        f"{line}: EventSource fails and, for any status but 200, never reconnects.",
        fix,
    )


def content_type(seen: Seen) -> Item:
    """``Content-Type: text/event-stream`` (UTF-8 is the only charset)."""
    values = seen.values("Content-Type")
    evidence = seen.evidence("Content-Type")
    media, _, params = (values[0] if values else "").partition(";")
    if len(values) != 1 or media.strip().lower() != "text/event-stream":
        return Item(
            "content-type",
            "fail",
            f"{evidence}: EventSource fails on anything but text/event-stream.",
            "Send Content-Type: text/event-stream; charset=utf-8.",
        )
    charset = re.search(r"charset\s*=\s*\"?([^\";\s]+)", params, re.IGNORECASE)
    if charset and charset.group(1).lower() not in ("utf-8", "utf8"):
        return Item(
            "content-type",
            "warn",
            f"{evidence}: event streams are always UTF-8; the charset is ignored.",
            "Send charset=utf-8, or none.",
        )
    return Item("content-type", "pass", f"{evidence}.")


def cache_control(seen: Seen) -> Item:
    """``no-cache`` (or ``no-store``), and ``no-transform`` so proxies leave the stream alone."""
    tokens = seen.tokens("Cache-Control")
    evidence = seen.evidence("Cache-Control")
    directives = {token.partition("=")[0].strip() for token in tokens}
    cacheable = directives & {"public", "s-maxage"} or any(
        token.startswith("max-age=") and token != "max-age=0" for token in tokens
    )
    if not directives & {"no-cache", "no-store"} or cacheable:
        return Item(
            "cache-control",
            "fail",
            f"{evidence}: caches and proxies may store or coalesce the stream.",
            "Send Cache-Control: no-cache, no-store, no-transform.",
        )
    if "no-transform" not in directives:
        return Item(
            "cache-control",
            "warn",
            f"{evidence}: without no-transform, proxies may compress (and so buffer) it.",
            "Add no-transform: Cache-Control: no-cache, no-store, no-transform.",
        )
    return Item("cache-control", "pass", f"{evidence}.")


def accel_buffering(seen: Seen) -> Item:
    """``X-Accel-Buffering: no`` turns off nginx's proxy buffering for this response."""
    values = [v.lower() for v in seen.values("X-Accel-Buffering")]
    evidence = seen.evidence("X-Accel-Buffering")
    if values == ["no"]:
        return Item("x-accel-buffering", "pass", f"{evidence}.")
    fix = "Send X-Accel-Buffering: no (or turn proxy_buffering off for this location)."
    if values:
        return Item("x-accel-buffering", "fail", f"{evidence}: nginx buffers the stream.", fix)
    return Item(
        "x-accel-buffering",
        "warn",
        f"{evidence}: an nginx in front buffers the stream unless configured not to "
        "(nginx also removes this header, so behind nginx its absence is expected).",
        fix,
    )


def hop_by_hop(seen: Seen, *, http2: bool = False) -> Item:
    """No application-set hop-by-hop header (the request said ``Connection: close``); over
    HTTP/2, no connection-specific header at all (see :func:`http2_connection_headers`)."""
    if http2:
        return http2_connection_headers(seen)
    problems = [f'"{line}"' for name in _HOP_BY_HOP for line in _lines(seen, name)]
    connection = _lines(seen, "Connection")
    if len(connection) > 1:
        problems.append("two Connection headers (" + "; ".join(f'"{c}"' for c in connection) + ")")
    elif "keep-alive" in seen.tokens("Connection"):
        problems.append(f'"{connection[0]}" in answer to "Connection: close"')
    codings = seen.tokens("Transfer-Encoding")
    if codings and codings != ["chunked"]:
        problems.append(seen.evidence("Transfer-Encoding"))
    if problems:
        return Item(
            "hop-by-hop",
            "fail",
            "; ".join(problems) + ": set by the application, not the server; illegal in WSGI, "
            "and Connection-specific headers break HTTP/2.",
            "Remove Connection, Keep-Alive and Transfer-Encoding from the application's "
            "response; the server frames the connection itself.",
        )
    return Item("hop-by-hop", "pass", f"none from the application ({seen.evidence('Connection')}).")


def http2_connection_headers(seen: Seen, preflight: Seen | None = None) -> Item:
    """Over HTTP/2, a response must carry no connection-specific header (RFC 9113, 8.2.2):
    ``Connection``, ``Keep-Alive``, ``Proxy-Connection``, ``Transfer-Encoding``, ``Upgrade``,
    or ``TE`` other than ``trailers``. Browsers treat one as a protocol error."""
    found: list[str] = []
    for what, response in (("stream", seen), ("preflight", preflight)):
        if response is None:
            continue
        lines = [
            f'"{line}"'
            for line in response.lines
            if _is_connection_specific(*line.partition(":")[::2])
        ]
        if lines:
            found.append(f"{what}: {'; '.join(lines)}")
    if found:
        return Item(
            "hop-by-hop",
            "fail",
            f"{'; '.join(found)}: connection-specific headers are a protocol error in HTTP/2; "
            "Chromium refuses the whole response (net::ERR_HTTP2_PROTOCOL_ERROR) and the "
            "EventSource fails.",
            "Remove Connection, Keep-Alive, Transfer-Encoding and Upgrade from the response; a "
            "proxy that speaks HTTP/2 to browsers must not forward them from its upstream.",
        )
    return Item("hop-by-hop", "pass", "no connection-specific header, as HTTP/2 requires.")


def _is_connection_specific(name: str, value: str) -> bool:
    name = name.strip().lower()
    if name == "te":
        return value.strip().lower() != "trailers"
    return name in ("connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade")


def http2(protocol: str, chosen: str | None, error: str = "") -> Item:
    """The server must speak HTTP/2 when asked to (``--http2``)."""
    if error:
        return Item(
            "http2",
            "fail",
            f"{error}: the server (or the proxy or CDN in front of it) does not offer HTTP/2 "
            "here, so browsers use HTTP/1.1 and each stream takes one of their six connections "
            "per host.",
            "Turn HTTP/2 on where TLS ends (nginx: listen 443 ssl http2, or http2 on).",
        )
    how = f"ALPN chose {chosen}" if chosen else "cleartext with prior knowledge (h2c)"
    return Item("http2", "pass", f"{protocol}: {how}.")


def connections() -> Item:
    """Informational, over HTTP/1.1: the six-connection limit browsers apply per host."""
    return Item(
        "connections",
        "pass",
        "read over HTTP/1.1 (add --http2 to see whether HTTP/2 is offered): browsers open at "
        "most six HTTP/1.1 connections per host, for every tab together, and each open "
        "EventSource holds one; a page with two streams fills them in three tabs, and then "
        "even its fetch() requests wait. See the docs' 'Many tabs' page: one multi-channel "
        "stream per page, the tab-shared helper, or HTTP/2 at the proxy.",
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _lines(seen: Seen, name: str) -> list[str]:
    lowered = name.lower()
    return [line for line in seen.lines if line.partition(":")[0].strip().lower() == lowered]


def content_encoding(seen: Seen) -> Item:
    """No compression: compressors hold bytes back until their buffer fills."""
    tokens = [t for t in seen.tokens("Content-Encoding") if t != "identity"]
    if tokens:
        return Item(
            "content-encoding",
            "fail",
            f"{seen.evidence('Content-Encoding')} (the request offered gzip, deflate, br, as "
            "browsers do): compression buffers events until enough bytes pile up.",
            "Exclude text/event-stream from compression (Flask-Compress, a proxy's gzip, a CDN).",
        )
    return Item("content-encoding", "pass", f"{seen.evidence('Content-Encoding')}.")


def content_length(seen: Seen) -> Item:
    """A stream has no length: the body must be chunked (HTTP/1.1) or end with the connection."""
    if seen.values("Content-Length"):
        return Item(
            "content-length",
            "fail",
            f"{seen.evidence('Content-Length')}: the stream is cut off after that many bytes, "
            "and proxies may wait for all of them.",
            "Do not set Content-Length on a stream; let the server use chunked framing.",
        )
    return Item("content-length", "pass", "no Content-Length header.")


# -- the body ------------------------------------------------------------------------------


def first_bytes(head_after: float, seen: Observation) -> Item:
    """The first body bytes must arrive at once (so ``onopen`` fires and proxies flush)."""
    fix = (
        "Write something at once (a ': ok' comment, or retry:), and make sure nothing buffers "
        "the response: compression, a proxy (X-Accel-Buffering: no), or a WSGI middleware."
    )
    if seen.first is None:
        why = f"no body bytes within {seen.timeout:g} s"
        if seen.ended_after is not None:
            why = f"the body ended after {seen.ended_after:.2f} s without a byte"
        return Item(
            "first-bytes",
            "fail",
            f"headers after {head_after:.2f} s, then {why}: the stream is buffered somewhere, "
            "or waits for the first event.",
            fix,
        )
    first = seen.first
    if first > PROMPT:
        return Item(
            "first-bytes",
            "warn",
            f"first body bytes after {first:.2f} s (headers after {head_after:.2f} s).",
            fix,
        )
    return Item(
        "first-bytes",
        "pass",
        f"first body bytes after {first:.2f} s (headers after {head_after:.2f} s).",
    )


def heartbeat(obs: Observation) -> Item:
    """After the first bytes, events or heartbeat comments must keep arriving."""
    assert obs.first is not None and obs.last is not None
    span = f"{_count(obs.arrivals, 'arrival')} over {obs.last - obs.first:.1f} s"
    if obs.arrivals > 1 and obs.ended_after is None:
        return Item(
            "heartbeat",
            "pass",
            f"{span}, longest silence {obs.longest_gap:.1f} s "
            f"({_count(obs.events, 'event')}, {_count(obs.comments, 'comment')}).",
        )
    if obs.ended_after is not None:
        return Item(
            "heartbeat",
            "warn",
            f"the server ended the stream {obs.ended_after:.1f} s after the request; browsers "
            "reconnect after the retry delay (about 3 s by default).",
            "Keep the stream open; send a comment line when there is nothing to say.",
        )
    return Item(
        "heartbeat",
        "fail",
        f"bytes arrived once, then nothing for {obs.timeout:g} s: no heartbeats (or a buffer "
        "holds them); idle proxies and load balancers cut such streams, and a server never "
        "notices clients that left.",
        "Write a ':' comment line after some seconds of silence (flask-ssecors: "
        "SSECORS_HEARTBEAT, default 15 s); run this check with --timeout above that interval.",
    )


def parse(obs: Observation, content_coding: str) -> Item:
    """The body must be valid UTF-8 and parse into events, as a browser parses it."""
    fix = "Encode events with a library (flask_ssecors.Event) instead of by hand."
    if obs.undecodable:
        return Item(
            "parse",
            "warn",
            f"not checked: the body is {obs.undecodable}-encoded, which this check cannot decode.",
            "Turn compression off for streams (see content-encoding).",
        )
    if obs.error:
        return Item("parse", "fail", f"{obs.error}.", fix)
    try:
        codecs.getincrementaldecoder("utf-8")().decode(bytes(obs.body), final=False)
    except UnicodeDecodeError as error:
        return Item(
            "parse",
            "fail",
            f"invalid UTF-8 at byte {error.start} of the body: browsers show U+FFFD instead.",
            fix,
        )
    text = bytes(obs.body).decode("utf-8", "replace")
    unknown = sorted(
        {
            line.partition(":")[0]
            for line in _LINE_BREAK.split(text)[:-1]
            if line and not line.startswith(":") and line.partition(":")[0] not in _FIELDS
        }
    )
    names = sorted(obs.names)
    summary = (
        f"{_count(obs.events, 'event')} ({', '.join(names) or 'none'}) and "
        f"{_count(obs.comments, 'comment')}"
        f"{' from the ' + content_coding + '-decoded body' if content_coding else ''}"
        f"{' (' + obs.limit + ')' if obs.limit else ''}"
    )
    if unknown:
        shown = ", ".join(repr(name) for name in unknown[:3])
        return Item(
            "parse",
            "warn",
            f"{summary}; lines with unknown fields {shown} are ignored by browsers.",
            "Use only event:, data:, id:, retry: and ':' comments.",
        )
    return Item("parse", "pass", f"{summary}, all well-formed.")


def reconnect(seen: Seen, first: Seen, sent: str) -> Item:
    """A reconnect carrying ``Last-Event-ID`` must be served like the first connection."""
    what = f"reconnect with Last-Event-ID: {sent}"
    if seen.error:
        return Item("reconnect", "fail", f"{what}: {seen.error}.", _RECONNECT_FIX)
    names = ("Content-Type", "Access-Control-Allow-Origin", "Access-Control-Allow-Credentials")
    same = all(seen.values(name) == first.values(name) for name in names)
    if seen.status != first.status or not same:
        return Item(
            "reconnect",
            "fail",
            f'{what}: "{seen.status_line}", {seen.evidence(*names)}; the first connection got '
            f'"{first.status_line}", {first.evidence(*names)}. Browsers reconnect exactly like '
            "this, without a preflight.",
            _RECONNECT_FIX,
        )
    return Item(
        "reconnect", "pass", f'{what}: "{seen.status_line}", the same type and CORS headers.'
    )


_RECONNECT_FIX: t.Final = (
    "Accept any Last-Event-ID (treat an unknown or invalid one as absent, or send a reset "
    "event), with the same status and headers as a first connection."
)


def resume(
    ids: IdLog,
    sent: str,
    expected: str | None,
    first: Event | None,
    timeout: float,
    trouble: str = "",
) -> Item:
    """After a reconnect, the stream must continue strictly after the id sent.

    :param trouble: why reading the resumed stream stopped early (broken framing or coding, a
        line without end), in words.
    """
    fix = "Replay the events published strictly after Last-Event-ID, then go live."
    if trouble and first is None:
        return Item(
            "resume",
            "fail",
            f"after resuming from {sent}, {trouble}.",
            "Serve a reconnect like a first connection: well-formed events, "
            "strictly after Last-Event-ID.",
        )
    if not ids:
        return Item(
            "resume",
            "pass",
            "the stream sends no event ids, so browsers reconnect without Last-Event-ID; "
            "nothing to resume.",
        )
    if first is None:
        if expected is None:
            return Item(
                "resume",
                "pass",
                f"no event newer than {sent} within {timeout:g} s, and none was expected.",
            )
        return Item(
            "resume",
            "warn",
            f"no event within {timeout:g} s after resuming from {sent}; {expected} followed it "
            "before.",
            fix,
        )
    got = first.id
    if first.event == RESET_EVENT:
        return Item(
            "resume",
            "warn",
            f"a {RESET_EVENT} event (id {got}): the server no longer knows {sent}, which it "
            "sent moments ago.",
            "Keep a backlog long enough for reconnects (SSECORS_BACKLOG).",
        )
    if got == sent:
        return Item(
            "resume",
            "fail",
            f"the first event after resuming from {sent} was {sent} itself: the client sees it "
            "twice.",
            "Replay the events published strictly after Last-Event-ID (never the one with that "
            "id), then go live.",
        )
    before, after = ids.position(sent), ids.position(got) if got is not None else None
    if after is not None and (before is None or after < before):
        # A stateless generator that numbers its events restarts from the beginning.
        return Item(
            "resume",
            "warn",
            f"resuming from {sent} started again at {got}: clients see duplicates.",
            fix,
        )
    if expected is not None and got != expected:
        return Item(
            "resume",
            "warn",
            f"resuming from {sent} went on with {got}, but {expected} came after {sent} "
            "before: events published while a client is away are lost.",
            fix,
        )
    return Item("resume", "pass", f"resuming from {sent} went on with {got}, the next event.")
