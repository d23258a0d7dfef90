"""The ``browser-`` items of ``ssecors-check --browser``: what Chromium did, and why.

:class:`BrowserRun` is what :mod:`flask_ssecors.checker._browser_audit` collected from the page
(its EventSource's log, the requests Chromium sent, its console messages, the ``fetch()``
result); :func:`browser_items` turns it into items. Nothing here does I/O.

Pure module: no Flask, no gevent.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import typing as t
import urllib.parse

from . import _audit
from ._audit import Item
from ._wire import wire_reasons

if t.TYPE_CHECKING:
    from ._wire import Wire

_STATES: t.Final = {0: "CONNECTING", 1: "OPEN", 2: "CLOSED"}
#: Chromium's reconnection delay when a stream sent no ``retry:``.
BROWSER_DEFAULT_RETRY: t.Final = 3.0


@dataclasses.dataclass
class BrowserRun:
    """What the page's EventSource and ``fetch()`` did (times in seconds unless noted)."""

    opened: bool = False
    #: The EventSource's open and error notes until the close: ``{"kind", "at" (ms),
    #: "readyState"}``.
    log_before: list[dict[str, t.Any]] = dataclasses.field(default_factory=list)
    log_after: list[dict[str, t.Any]] = dataclasses.field(default_factory=list)
    events_before: int = 0
    events_after: int = 0
    first_event_at: float | None = None  # ms after the EventSource was created
    last_id: str = ""
    watched: float = 0.0  # ms
    state_before: int = 0
    state_after: int | None = None
    closed_by_server: bool = False
    cut: bool = False
    closed_at: float = 0.0  # ms
    reconnect_sent: bool = False
    reconnect_after: float | None = None
    reconnect_last_event_id: str | None = None
    blocked_cookies: list[str] = dataclasses.field(default_factory=list)
    first_request_headers: dict[str, str] = dataclasses.field(default_factory=dict)
    fetch: dict[str, t.Any] = dataclasses.field(default_factory=dict)
    fetch_last_event_id: str = ""
    stream_messages: list[str] = dataclasses.field(default_factory=list)
    fetch_messages: list[str] = dataclasses.field(default_factory=list)
    cookie_names: tuple[str, ...] = ()


def browser_items(
    run: BrowserRun, url: str, origin: str, credentials: bool, wire: Wire | None
) -> list[Item]:
    """The ``browser-`` items for ``run``, explained with what the wire audit saw."""
    why = wire_reasons(wire, origin, credentials)
    items = [_open(run, why)]
    if run.opened:
        items += [_events(run, wire), _error(run, why), _reconnect(run, why), _retry(run, wire)]
    else:
        items.append(_gave_up(run, why))
    if credentials:
        items.append(_cookie(run, url, origin))
    items.append(_preflight(run, wire))
    return items


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _quote(messages: t.Sequence[str]) -> str:
    """The most telling console message, quoted (CORS and EventSource ones first)."""
    ranked = sorted(
        messages, key=lambda m: ("CORS policy" not in m, "EventSource" not in m, messages.index(m))
    )
    return f' Chromium says: "{ranked[0]}".' if ranked else ""


def _first(log: t.Sequence[dict[str, t.Any]], kind: str) -> dict[str, t.Any] | None:
    return next((entry for entry in log if entry["kind"] == kind), None)


def _open(run: BrowserRun, why: str) -> Item:
    opened = _first(run.log_before, "open")
    if opened is not None:
        return Item(
            "browser-open", "pass", f"onopen fired {opened['at']:.0f} ms after new EventSource()."
        )
    error = _first(run.log_before, "error")
    if error is None:
        return Item(
            "browser-open",
            "fail",
            f"neither open nor error within {run.watched / 1000:.1f} s: the response head never "
            "reached the page." + _quote(run.stream_messages) + why,
            "Answer the stream request at once (see status and first-bytes).",
        )
    return Item(
        "browser-open",
        "fail",
        f"error fired {error['at']:.0f} ms after new EventSource() and onopen never did."
        + _quote(run.stream_messages)
        + why,
        "Fix what the wire audit failed above: the browser refuses the stream for exactly that.",
    )


def _gave_up(run: BrowserRun, why: str) -> Item:
    state = _STATES.get(run.state_before, str(run.state_before))
    if run.state_before == 2:
        return Item(
            "browser-error",
            "fail",
            "error fired and the browser gave up (readyState CLOSED): it will never reconnect "
            "on its own; the page must create a new EventSource (see browser-open for why).",
            "A CORS failure, a status other than 200 or another Content-Type than "
            "text/event-stream end an EventSource for good; fix the failed wire items.",
        )
    return Item(
        "browser-error",
        "warn",
        f"error fired and the browser keeps retrying (readyState {state})."
        + _quote(run.stream_messages)
        + why,
        "Make the stream answer 200 with its headers at once.",
    )


def _events(run: BrowserRun, wire: Wire | None) -> Item:
    seen = wire.observation.events if wire is not None else 0
    watched = f"{run.watched / 1000:.1f} s"
    if run.events_before:
        first = t.cast(float, run.first_event_at)
        return Item(
            "browser-events",
            "pass",
            f"{_count(run.events_before, 'event')} dispatched in {watched}, the first "
            f"{first:.0f} ms after new EventSource() (the wire audit read {seen} in its own "
            "watch).",
        )
    if seen:
        return Item(
            "browser-events",
            "fail",
            f"no event dispatched in {watched}, although the wire audit read {seen}: the "
            "browser parses the stream differently (check parse), or a buffer held the events "
            "back from it.",
            "End each event with a blank line, in UTF-8, with data: lines; keep compression "
            "and buffering off (content-encoding, x-accel-buffering).",
        )
    return Item(
        "browser-events",
        "pass",
        f"no event in {watched}; the wire audit read none either (a quiet stream).",
    )


def _error(run: BrowserRun, why: str) -> Item:
    errors = [entry for entry in run.log_before if entry["kind"] == "error"]
    if not errors:
        return Item(
            "browser-error",
            "pass",
            f"no error while the stream was open ({run.watched / 1000:.1f} s).",
        )
    last = errors[-1]
    if last["readyState"] == 2:
        return Item(
            "browser-error",
            "fail",
            f"error fired {last['at']:.0f} ms in and the browser gave up (readyState CLOSED)."
            + _quote(run.stream_messages)
            + why,
            "Serve every response of the stream, reconnects included, with 200 and "
            "text/event-stream.",
        )
    return Item(
        "browser-error",
        "pass",
        f"the server ended the stream {last['at']:.0f} ms in: error fired and the browser is "
        "reconnecting (readyState CONNECTING), as it should.",
    )


def _closing(run: BrowserRun) -> str:
    if run.closed_by_server:
        return "after the server ended the stream"
    if run.cut:
        return "after the check cut the connection (as a proxy restart would)"
    return "after the stream closed"


def _reconnect(run: BrowserRun, why: str) -> Item:
    how = _closing(run)
    if run.state_after == 2:
        return Item(
            "browser-reconnect",
            "fail",
            f"{how}, the browser gave up (readyState CLOSED) instead of resuming."
            + _quote(run.stream_messages)
            + why,
            "Answer a reconnect with Last-Event-ID exactly like a first connection (see "
            "reconnect).",
        )
    if not run.reconnect_sent:
        return Item(
            "browser-reconnect",
            "fail",
            f"{how}, no reconnect came within the wait." + _quote(run.stream_messages),
            "Keep the stream's answers identical on reconnect; send retry: to say when.",
        )
    sent = run.reconnect_last_event_id
    when = f"{how}, the browser reconnected" + (
        f" {run.reconnect_after:.1f} s later" if run.reconnect_after is not None else ""
    )
    if not run.last_id:
        return Item(
            "browser-reconnect",
            "pass",
            f"{when}, without Last-Event-ID: the stream sends no ids, so there is nothing to "
            "resume from.",
        )
    if sent != run.last_id:
        got = "no Last-Event-ID" if sent is None else f"Last-Event-ID: {sent}"
        return Item(
            "browser-reconnect",
            "fail",
            f"{when} with {got}, but the last id it received was {run.last_id}.",
            "Give every event an id (flask-ssecors brokers do).",
        )
    reopened = _first(run.log_after, "open") is not None
    tail = " and the stream opened again" if reopened else ", but the stream did not open again"
    return Item(
        "browser-reconnect",
        "pass" if reopened else "fail",
        f"{when} with Last-Event-ID: {sent}{tail} ({_count(run.events_after, 'event')} since).",
        "" if reopened else "Answer a reconnect with Last-Event-ID like a first connection.",
    )


def _retry(run: BrowserRun, wire: Wire | None) -> Item:
    retry = wire.retry if wire is not None else None
    came = (
        f"the browser came back after {run.reconnect_after:.1f} s"
        if run.reconnect_after is not None
        else "the browser did not come back within the wait"
    )
    if retry is not None:
        return Item("browser-retry", "pass", f"retry: {retry} ms announced; {came}.")
    fix = (
        "Send retry: when the stream opens (flask-ssecors: SSECORS_RETRY, in ms), so that "
        "browsers come back when you want after every close."
    )
    if run.closed_by_server:
        return Item(
            "browser-retry",
            "fail",
            f"the server ended the stream without ever sending retry:, so the browser used its "
            f"default delay ({BROWSER_DEFAULT_RETRY:g} s in Chromium): {came}. Every close "
            "costs each client that long without events.",
            fix,
        )
    return Item(
        "browser-retry",
        "warn",
        f"no retry: field, so after a close the browser uses its default delay "
        f"({BROWSER_DEFAULT_RETRY:g} s in Chromium): {came}.",
        fix,
    )


def _site(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if host.replace(".", "").isdigit() or ":" in host or "." not in host:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{_audit._psl().privatesuffix(host) or host}"


def _is_local(url: str) -> bool:
    """Whether ``url``'s host is this machine (a loopback address or ``localhost``)."""
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _cookie(run: BrowserRun, url: str, origin: str) -> Item:
    sent = run.first_request_headers.get("cookie", "")
    names = [part.partition("=")[0].strip() for part in sent.split(";") if part.strip()]
    if not run.first_request_headers:
        return Item("browser-cookie", "warn", "no stream request was seen, so no cookie either.")
    ours = [name for name in run.cookie_names if name in names]
    if ours:
        return Item(
            "browser-cookie",
            "pass",
            f"the stream request carried the cookie ({', '.join(ours)}), with withCredentials.",
        )
    page, stream = _site(origin), _site(url)
    chromium_says = (
        f"; Chromium's reasons: {'; '.join(run.blocked_cookies)}" if run.blocked_cookies else ""
    )
    if page != stream and _is_local(url) and not _is_local(origin):
        # The audit runs against a local server with a production page origin: the two can
        # only be cross-site here, where Chromium blocks the test cookie as third-party. That
        # says nothing about the deployment, where the API has its own host on the page's site.
        return Item(
            "browser-cookie",
            "warn",
            f"the stream request carried no cookie, as expected here: the stream is served from "
            f"a local address ({stream}) and the page's origin is {origin}, so the two are "
            "cross-site only in this local run, and Chromium blocks the cookie as third-party"
            f"{chromium_says}.",
            "Nothing to fix for the deployment if the API is served on the page's site. For a "
            "clean local run, use a same-site pair: the stream on http://localhost:PORT and "
            "--origin http://localhost:OTHER_PORT (an origin the app allows).",
        )
    if page != stream:
        reason = (
            f"the page's site ({page}) and the stream's ({stream}) differ, so the cookie is a "
            "third-party cookie, which Chromium blocks by default"
        )
        fix = (
            "Serve the stream from the page's site (api.example.com for app.example.com), "
            "or authenticate it with a token instead of a cookie."
        )
    else:
        reason = "the sites match, so its SameSite or Secure attributes kept it back"
        fix = "Set the session cookie with SameSite=None; Secure (https), or Lax on one site."
    return Item(
        "browser-cookie",
        "fail",
        f"the stream request carried no cookie ({', '.join(run.cookie_names)} was set for "
        f"the stream's URL): {reason}{chromium_says}.",
        fix,
    )


def _preflight(run: BrowserRun, wire: Wire | None) -> Item:
    fetched = run.fetch
    lead = f"fetch() with Last-Event-ID: {run.fetch_last_event_id}"
    if fetched.get("ok") and fetched.get("status") == 200:
        return Item(
            "browser-preflight",
            "pass",
            f"{lead}: the preflight passed, HTTP 200, first {fetched.get('bytes', 0)} bytes "
            f"after {fetched.get('at', 0):.0f} ms.",
        )
    if fetched.get("ok"):
        what = f"the preflight passed, but the stream answered {fetched.get('status')}"
    else:
        what = f"{fetched.get('error', 'no result')}"
    evidence = ""
    status: t.Literal["fail", "warn"] = "warn"
    if wire is not None and wire.preflight_last_event_id is not None:
        seen = wire.preflight_last_event_id
        evidence = f' The wire preflight asking for last-event-id got "{seen.status_line}", ' + (
            seen.evidence(_audit.ACAO, _audit.ACAH) + "."
        )
        if not 200 <= wire.preflight.status < 300:
            status = "fail"
    return Item(
        "browser-preflight",
        status,
        f"{lead}: {what}; a fetch()-based client loses its first connect and every resume."
        + _quote(run.fetch_messages)
        + evidence,
        "Answer preflights from the allowed origin with 204 and Access-Control-Allow-Headers "
        "listing last-event-id (flask-ssecors: SSECORS_ALLOWED_HEADERS).",
    )
