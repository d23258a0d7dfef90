"""Audit a live Server-Sent Events endpoint the way a browser on another origin uses it.

:func:`check_stream` makes real requests to a URL and returns a :class:`Report`: a checklist of
:class:`Item` objects, each ``pass``, ``fail`` or ``warn`` with the evidence (the header lines
seen) and what to fix. It checks the preflight, the CORS headers of the stream, that origins
derived from the allowed one by the usual tricks are refused, the SSE headers, that the first
bytes arrive at once and more keep coming, that the body parses (with
:class:`~flask_ssecors._parser.EventStreamParser`), and that a reconnect with ``Last-Event-ID``
is served and resumes after it.

It needs no Flask app and works against any server: ``ssecors-check URL --origin ORIGIN`` on
the command line (see :mod:`flask_ssecors._cli`). Requests go over raw sockets (HTTP/1.1, with
TLS for ``https://``), one connection each, so the timing and the headers are the server's,
not a client library's. They carry what a browser's ``EventSource`` sends: ``Accept:
text/event-stream``, ``Accept-Encoding: gzip, deflate, br``, ``Cache-Control: no-cache``, and
``Connection: close``, so that an application-set ``Connection: keep-alive`` stands out.

Pure module: no Flask, no gevent.

.. versionadded:: 0.1
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import ssl
import textwrap
import time
import typing as t
import zlib

from . import _audit
from . import _stream_audit as rules
from ._audit import Item as Item
from ._audit import Seen
from ._http import BodyDecoder
from ._http import check_header
from ._http import Exchange
from ._http import parse_header as parse_header
from ._http import parse_url
from ._http import preflight_headers
from ._http import ProtocolError
from ._http import stream_headers
from ._http import Target
from ._http import WaitTimeout
from ._origins import is_serialized_origin
from ._parser import EventStreamParser

if t.TYPE_CHECKING:
    import collections.abc as cabc

    from .events import Event

__all__ = ["DEFAULT_TIMEOUT", "Item", "Report", "check_stream", "parse_header"]

#: Default bound, in seconds, on each wait for bytes: above the default 15 s heartbeat.
DEFAULT_TIMEOUT: t.Final = 20.0
#: Once more bytes followed the first ones, the stream is watched at least this long.
_MIN_WATCH: t.Final = 2.0
_MAX_BODY: t.Final = 1 << 20
_TICK: t.Final = 0.5
_WIDTH: t.Final = 100

#: ``progress(phase, detail)``: what the check waits for now, for a progress line.
Progress = t.Callable[[str, str], None]


@dataclasses.dataclass(frozen=True, slots=True)
class Report:
    """The result of :func:`check_stream`.

    :param url: the URL checked.
    :param origin: the page origin the check played.
    :param items: the checklist, in a stable order.
    """

    url: str
    origin: str
    items: tuple[Item, ...]

    @property
    def ok(self) -> bool:
        """Whether no item failed (warnings do not fail the check)."""
        return all(item.status != "fail" for item in self.items)

    def to_dict(self) -> dict[str, object]:
        """``{"url", "origin", "ok", "items": [{"id", "status", "detail", "fix"}]}``."""
        return {
            "url": self.url,
            "origin": self.origin,
            "ok": self.ok,
            "items": [item.to_dict() for item in self.items],
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON."""
        return json.dumps(self.to_dict(), indent=2)

    def to_text(self, style: cabc.Callable[[str, Item], str] | None = None) -> str:
        """The human-readable checklist, wrapped at 100 columns.

        :param style: called as ``style(label, item)`` to decorate the status label (colour).
        """
        lines = [f"ssecors-check {self.url}", f"  origin {self.origin}", ""]
        for item in self.items:
            label = {"pass": "pass", "warn": "WARN", "fail": "FAIL"}[item.status]
            if style is not None:
                label = style(label, item)
            text = f"{item.id}: {item.detail}"
            body = textwrap.wrap(text, _WIDTH - 8, break_on_hyphens=False)
            lines.append(f"  {label}  {body[0]}")
            lines.extend(f"        {line}" for line in body[1:])
            if item.fix:
                fix = textwrap.wrap(f"fix: {item.fix}", _WIDTH - 8, break_on_hyphens=False)
                lines.extend(f"        {line}" for line in fix)
        counts = {s: sum(i.status == s for i in self.items) for s in ("pass", "warn", "fail")}
        verdict = "OK" if self.ok else "FAILED"
        lines += [
            "",
            f"{counts['pass']} passed, {counts['warn']} warning{'' if counts['warn'] == 1 else 's'}"
            f", {counts['fail']} failed: {verdict}",
        ]
        return "\n".join(lines)


def check_stream(
    url: str,
    origin: str,
    *,
    credentials: bool = False,
    headers: t.Sequence[tuple[str, str]] = (),
    timeout: float = DEFAULT_TIMEOUT,
    verify: bool = True,
    progress: Progress | None = None,
) -> Report:
    """Audit the stream at ``url`` as a page on ``origin`` would use it.

    Each wait for bytes is bounded by ``timeout``, so the whole check takes at most about
    seven times that (a server that answers every request as late as it may); against a
    healthy stream it takes two or three seconds.

    :param url: the stream's ``http://`` or ``https://`` URL.
    :param origin: the page's origin, exactly as the browser sends it
        (``https://app.example.com``).
    :param credentials: whether the page uses ``withCredentials: true`` (cookies).
    :param headers: extra request headers (``Cookie``, ``Authorization``...), sent on stream
        requests; the preflight asks for the ones a page would have to be allowed to send.
    :param timeout: seconds to wait for each response and each next bytes; choose it above
        the server's heartbeat interval.
    :param verify: verify TLS certificates (``https://``).
    :param progress: called with ``(phase, detail)`` while the check waits.
    :raises ValueError: for an invalid URL, origin, header or timeout.
    """
    target = parse_url(url)
    if not is_serialized_origin(origin):
        raise ValueError(
            f"{origin!r} is not an origin as browsers send it: write scheme://host[:port] in "
            "lowercase, without a path, a trailing slash or a default port"
        )
    if not timeout > 0:
        raise ValueError("the timeout must be a positive number of seconds")
    checked = tuple(check_header(name, value) for name, value in headers)
    auditor = _Auditor(target, origin, credentials, checked, timeout, verify, progress)
    return Report(url, origin, tuple(auditor.run()))


class _Auditor:
    def __init__(
        self,
        target: Target,
        origin: str,
        credentials: bool,
        headers: tuple[tuple[str, str], ...],
        timeout: float,
        verify: bool,
        progress: Progress | None,
    ) -> None:
        self.target = target
        self.origin = origin
        self.credentials = credentials
        self.extra = headers
        self.timeout = timeout
        self.verify = verify
        self.progress = progress or (lambda phase, detail: None)
        self.names = _audit.request_header_names(headers)

    # -- requests ----------------------------------------------------------------------------

    def _stream(self, origin: str, last_event_id: str | None = None) -> list[tuple[str, str]]:
        return stream_headers(origin, self.extra, last_event_id)

    def _open(self, method: str, headers: list[tuple[str, str]]) -> tuple[Exchange | None, Seen]:
        deadline = time.monotonic() + self.timeout
        where = f"{self.target.host}:{self.target.port}"
        try:
            exchange = Exchange(self.target, method, headers, deadline=deadline, verify=self.verify)
        except WaitTimeout:
            error = f"cannot connect to {where} within {self.timeout:g} s"
            return None, Seen(error=error, unreachable=True)
        except ssl.SSLCertVerificationError as failure:
            reason = failure.verify_message or str(failure)
            error = f"the TLS certificate of {where} is not valid: {reason}"
            return None, Seen(error=error, unreachable=True)
        except OSError as failure:
            error = f"cannot connect to {where}: {failure.strerror or failure}"
            return None, Seen(error=error, unreachable=True)
        try:
            exchange.read_head(deadline)
        except WaitTimeout:
            exchange.close()
            return None, Seen(error=f"no response within {self.timeout:g} s")
        except (ProtocolError, OSError) as error:
            exchange.close()
            return None, Seen(error=f"unreadable response: {error}")
        return exchange, Seen.of(exchange)

    def _probe(self, method: str, headers: list[tuple[str, str]]) -> Seen:
        exchange, seen = self._open(method, headers)
        if exchange is not None:
            exchange.close()
        return seen

    # -- the run -----------------------------------------------------------------------------

    def run(self) -> list[Item]:
        self.progress("sending a preflight", f"OPTIONS from {self.origin}")
        first = self._probe("OPTIONS", preflight_headers(self.origin, self.names))
        if first.unreachable:
            return [Item("connect", "fail", f"{first.error}.", "Check the URL and the server.")]
        items = [
            _audit.preflight(first, self.origin, self.credentials, self.names, "preflight"),
        ]
        hostiles = _audit.hostile_origins(self.origin)
        self.progress("probing hostile origins", f"{len(hostiles)} origins, GET and OPTIONS each")
        with_id = sorted({*self.names, "last-event-id"})
        jobs: list[tuple[str, list[tuple[str, str]]]] = [
            ("OPTIONS", preflight_headers(self.origin, with_id))
        ]
        for hostile in hostiles:
            jobs.append(("GET", self._stream(hostile.origin)))
            jobs.append(("OPTIONS", preflight_headers(hostile.origin, self.names)))
        with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
            seen = list(pool.map(lambda job: self._probe(*job), jobs))
        if items[0].status == "pass":  # else the same failure again: say it once
            items.append(
                _audit.preflight_last_event_id(seen[0], self.origin, self.credentials, with_id)
            )
        pairs = [(h, seen[1 + 2 * i], seen[2 + 2 * i]) for i, h in enumerate(hostiles)]
        hostile_items = [
            _audit.hostile(h, get, opt, self.origin, self.credentials) for h, get, opt in pairs
        ]
        self.progress("opening the stream", f"GET {self.target.path}")
        exchange, head = self._open("GET", self._stream(self.origin))
        items.append(rules.status(head))
        if exchange is None or head.status != 200:
            # Refusing hostile origins means nothing while the allowed one is refused too.
            if exchange is not None:
                exchange.close()
            return items
        try:
            items += [
                _audit.allow_origin(head, self.origin, self.credentials),
                _audit.allow_credentials(head, self.credentials),
                _audit.vary_origin(head, [(h, get) for h, get, _ in pairs]),
                *hostile_items,
                rules.content_type(head),
                rules.cache_control(head),
                rules.accel_buffering(head),
                rules.hop_by_hop(head),
                rules.content_encoding(head),
                rules.content_length(head),
            ]
            coding = ", ".join(head.values("Content-Encoding"))
            obs = self._watch(exchange, coding)
        finally:
            exchange.close()
        assert exchange.head_after is not None
        if obs.arrivals:
            items += [
                rules.first_bytes(exchange.head_after, obs),
                rules.heartbeat(obs),
                rules.parse(obs, coding),
            ]
        elif obs.error:
            items.append(rules.parse(obs, coding))
        else:
            items.append(rules.first_bytes(exchange.head_after, obs))
        return items + self._reconnect(obs, head)

    def _watch(self, exchange: Exchange, coding: str) -> rules.Observation:
        obs = rules.Observation(self.timeout)
        decoder = BodyDecoder(coding)
        if not decoder.supported:
            obs.undecodable = coding
        parser = EventStreamParser(include_comments=True)
        start = time.monotonic()
        deadline = start + self.timeout
        while len(obs.body) < _MAX_BODY:
            now = time.monotonic()
            arrivals = obs.arrivals
            if len(arrivals) > 1 and arrivals[-1] - arrivals[0] >= _MIN_WATCH:
                break
            if arrivals:
                counts = f"events: {len(obs.events)}, comments: {obs.comments}"
                self.progress("reading the stream", f"{counts}, {now - start:.0f} s")
            else:
                self.progress("waiting for the first bytes", f"{now - start:.0f} s")
            try:
                data = exchange.read(min(deadline, now + _TICK))
            except WaitTimeout:
                if time.monotonic() >= deadline:
                    break
                continue
            except (ProtocolError, OSError) as error:
                obs.error = f"the stream broke off: {error}"
                break
            if not data:
                obs.ended_after = time.monotonic() - exchange.sent_at
                break
            arrivals.append(exchange.arrivals[-1][0])
            deadline = time.monotonic() + self.timeout
            try:
                decoded = decoder.feed(data)
            except zlib.error as error:
                obs.error = f"the body is not valid {coding}: {error}"
                break
            obs.body += decoded
            for event in parser.feed(decoded):
                if event.data is None:
                    obs.comments += 1
                else:
                    obs.events.append(event)
        return obs

    def _reconnect(self, obs: rules.Observation, first_head: Seen) -> list[Item]:
        ids: list[str] = []
        for event in obs.events:
            if event.id is not None and event.id not in ids:
                ids.append(event.id)
        expected: str | None = None
        if len(ids) >= 3:
            sent, expected = ids[-2], ids[-1]
        else:
            sent = ids[-1] if ids else "0"
        self.progress("reconnecting", f"Last-Event-ID: {sent}")
        exchange, head = self._open("GET", self._stream(self.origin, sent))
        items = [rules.reconnect(head, first_head, sent)]
        if exchange is None or items[0].status == "fail":
            if exchange is not None:
                exchange.close()
            return items
        try:
            first = self._first_event(exchange, head) if ids else None
        finally:
            exchange.close()
        items.append(rules.resume(ids, sent, expected, first, self.timeout))
        return items

    def _first_event(self, exchange: Exchange, head: Seen) -> Event | None:
        decoder = BodyDecoder(", ".join(head.values("Content-Encoding")))
        parser = EventStreamParser()
        start = time.monotonic()
        deadline = start + self.timeout
        while True:
            now = time.monotonic()
            self.progress("waiting for the next event", f"{now - start:.0f} s")
            try:
                data = exchange.read(min(deadline, now + _TICK))
            except WaitTimeout:
                if time.monotonic() >= deadline:
                    return None
                continue
            except (ProtocolError, OSError):
                return None
            if not data:
                return None
            try:
                events = parser.feed(decoder.feed(data))
            except zlib.error:
                return None
            if events:
                return events[0]
