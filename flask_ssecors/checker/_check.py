"""Audit a live Server-Sent Events endpoint the way a browser on another origin uses it.

:func:`check_stream` makes real requests to a URL and returns a :class:`Report`: a checklist of
:class:`Item` objects, each ``pass``, ``fail`` or ``warn`` with the evidence (the header lines
seen) and what to fix. It checks the preflight, the CORS headers of the stream, that origins
derived from the allowed one by the usual tricks are refused, the SSE headers, that the first
bytes arrive at once and more keep coming, that the body parses (with
:class:`~flask_ssecors._parser.EventStreamParser`), and that a reconnect with ``Last-Event-ID``
is served and resumes after it. With ``browser``, a real Chromium then does the same from a
page on the origin (:mod:`~flask_ssecors.checker._browser_audit`), and reports what it saw.

It needs no Flask app and works against any server: ``ssecors-check URL --origin ORIGIN`` on
the command line (see :mod:`flask_ssecors._cli`). Requests go over their own connections,
HTTP/1.1 framed by ``h11`` (:mod:`~flask_ssecors.checker._http`) or HTTP/2 framed by
``h2`` (:mod:`~flask_ssecors.checker._h2`), so the timing and the headers are the server's.
They carry what a browser's ``EventSource`` sends: ``Accept: text/event-stream``,
``Accept-Encoding: gzip, deflate, br``, ``Cache-Control: no-cache``, and over HTTP/1.1
``Connection: close``, so that an application-set ``Connection: keep-alive`` stands out.

Whatever the server sends, the check ends with a report: an answer it cannot read is a failed
item quoting what was read, and memory stays within the bounds of
:mod:`~flask_ssecors.checker._reading`.

Pure module: no Flask, no gevent.

.. versionadded:: 0.1
"""

from __future__ import annotations

import concurrent.futures
import ssl
import time
import typing as t

from .._origins import is_serialized_origin
from . import _audit
from . import _stream_audit as rules
from ._audit import Item as Item
from ._audit import Seen
from ._h2 import H2Exchange
from ._h2 import NotHttp2
from ._http import check_header
from ._http import H11Exchange
from ._http import is_sendable
from ._http import parse_header as parse_header
from ._http import parse_url
from ._http import preflight_headers
from ._http import ProtocolError
from ._http import stream_headers
from ._http import Target
from ._http import WaitTimeout
from ._reading import BodyReader
from ._report import Report as Report
from ._wire import Progress
from ._wire import Wire

if t.TYPE_CHECKING:
    from ..events import Event
    from ._browser_options import BrowserOptions
    from ._http import Exchange

__all__ = ["DEFAULT_TIMEOUT", "Item", "Report", "check_stream", "parse_header"]

#: Default bound, in seconds, on each wait for bytes: above the default 15 s heartbeat.
DEFAULT_TIMEOUT: t.Final = 20.0
#: Once more bytes followed the first ones, the stream is watched at least this long.
_MIN_WATCH: t.Final = 2.0
_TICK: t.Final = 0.5


def check_stream(
    url: str,
    origin: str,
    *,
    credentials: bool = False,
    headers: t.Sequence[tuple[str, str]] = (),
    timeout: float = DEFAULT_TIMEOUT,
    verify: bool = True,
    http2: bool = False,
    browser: BrowserOptions | None = None,
    progress: Progress | None = None,
) -> Report:
    """Audit the stream at ``url`` as a page on ``origin`` would use it.

    Each wait for bytes is bounded by ``timeout``, so the whole check takes at most about
    seven times that (a server that answers every request as late as it may); against a
    healthy stream it takes two or three seconds (plus about ten with ``browser``).

    :param url: the stream's ``http://`` or ``https://`` URL.
    :param origin: the page's origin, exactly as the browser sends it
        (``https://app.example.com``).
    :param credentials: whether the page uses ``withCredentials: true`` (cookies).
    :param headers: extra request headers (``Cookie``, ``Authorization``...), sent on stream
        requests; the preflight asks for the ones a page would have to be allowed to send.
    :param timeout: seconds to wait for each response and each next bytes; choose it above
        the server's heartbeat interval.
    :param verify: verify TLS certificates (``https://``).
    :param http2: speak HTTP/2: negotiated with ALPN for ``https://``, with prior knowledge
        (h2c) for ``http://``.
    :param browser: also run the audit in a real Chromium (see
        :class:`~flask_ssecors.checker._browser_audit.BrowserOptions`); its items start with
        ``browser-``.
    :param progress: called with ``(phase, detail)`` while the check waits.
    :raises ValueError: for an invalid URL, origin, header or timeout (never for anything the
        server sends: that is a failed item).
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
    auditor = _Auditor(target, origin, credentials, checked, timeout, verify, http2, progress)
    try:
        auditor.run()
        if browser is not None and auditor.stream is not None:
            from ._browser_audit import audit_in_browser

            auditor.progress("starting Chromium", browser.chromium)
            auditor.items += audit_in_browser(
                url, origin, credentials, checked, auditor.wire(), browser, auditor.progress
            )
    except Exception as error:  # a report, whatever happened: never a traceback
        auditor.items.append(
            Item(
                "check-error",
                "fail",
                f"the check stopped early on an unexpected error: {type(error).__name__}: {error}.",
                "Report this to flask-ssecors, with the server's response if you can.",
            )
        )
    return Report(url, origin, tuple(auditor.items))


class _Auditor:
    def __init__(
        self,
        target: Target,
        origin: str,
        credentials: bool,
        headers: tuple[tuple[str, str], ...],
        timeout: float,
        verify: bool,
        http2: bool,
        progress: Progress | None,
    ) -> None:
        self.target = target
        self.origin = origin
        self.credentials = credentials
        self.extra = headers
        self.timeout = timeout
        self.verify = verify
        self.http2 = http2
        self.exchange_class: type[Exchange] = H2Exchange if http2 else H11Exchange
        self.progress = progress or (lambda phase, detail: None)
        self.names = _audit.request_header_names(headers)
        self.items: list[Item] = []
        self.preflight = Seen()
        self.preflight_with_id: Seen | None = None
        self.stream: Seen | None = None
        self.observation: rules.Observation | None = None
        self.retry: int | None = None

    def wire(self) -> Wire:
        assert self.stream is not None
        return Wire(
            self.preflight,
            self.preflight_with_id,
            self.stream,
            self.observation or rules.Observation(self.timeout),
            self.retry,
            self.http2,
        )

    # -- requests ----------------------------------------------------------------------------

    def _stream(self, origin: str, last_event_id: str | None = None) -> list[tuple[str, str]]:
        return stream_headers(origin, self.extra, last_event_id)

    def _open(self, method: str, headers: list[tuple[str, str]]) -> tuple[Exchange | None, Seen]:
        deadline = time.monotonic() + self.timeout
        where = f"{self.target.host}:{self.target.port}"
        try:
            exchange = self.exchange_class(
                self.target, method, headers, deadline=deadline, verify=self.verify
            )
        except WaitTimeout:
            error = f"cannot connect to {where} within {self.timeout:g} s"
            return None, Seen(error=error, unreachable=True)
        except NotHttp2 as failure:
            return None, Seen(error=str(failure), unreachable=True, not_http2=True)
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

    def run(self) -> None:
        self.progress("sending a preflight", f"OPTIONS from {self.origin}")
        first = self._probe("OPTIONS", preflight_headers(self.origin, self.names))
        self.preflight = first
        if first.not_http2:
            self.items.append(rules.http2("", None, first.error))
            return
        if first.unreachable:
            self.items.append(
                Item("connect", "fail", f"{first.error}.", "Check the URL and the server.")
            )
            return
        if self.http2:
            chosen = "h2" if self.target.scheme == "https" else None
            self.items.append(rules.http2("HTTP/2", chosen))
        items = self.items
        items.append(
            _audit.preflight(first, self.origin, self.credentials, self.names, "preflight")
        )
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
        self.preflight_with_id = seen[0]
        if items[-1].status == "pass":  # else the same failure again: say it once
            items.append(
                _audit.preflight_last_event_id(seen[0], self.origin, self.credentials, with_id)
            )
        pairs = [(h, seen[1 + 2 * i], seen[2 + 2 * i]) for i, h in enumerate(hostiles)]
        hostile_items = [
            _audit.hostile(h, get, opt, self.origin, self.credentials) for h, get, opt in pairs
        ]
        self.progress("opening the stream", f"GET {self.target.path}")
        exchange, head = self._open("GET", self._stream(self.origin))
        self.stream = head
        items.append(rules.status(head))
        if exchange is None or head.status != 200:
            # Refusing hostile origins means nothing while the allowed one is refused too.
            if exchange is not None:
                exchange.close()
            return
        try:
            items += [
                _audit.allow_origin(head, self.origin, self.credentials),
                _audit.allow_credentials(head, self.credentials),
                _audit.vary_origin(head, [(h, get) for h, get, _ in pairs]),
                *hostile_items,
                rules.content_type(head),
                rules.cache_control(head),
                rules.accel_buffering(head),
                rules.http2_connection_headers(head, first)
                if self.http2
                else rules.hop_by_hop(head),
                rules.content_encoding(head),
                rules.content_length(head),
            ]
            if not self.http2:
                items.append(rules.connections())
            reader = BodyReader(exchange, keep_body=True)
            obs = self._watch(exchange, reader)
        finally:
            exchange.close()
        self.observation, self.retry = obs, reader.parser.retry
        assert exchange.head_after is not None
        if obs.arrivals:
            items.append(rules.first_bytes(exchange.head_after, obs))
            if not obs.error:  # the read stopped early: silence afterwards proves nothing
                items.append(rules.heartbeat(obs))
            items.append(rules.parse(obs, reader.coding))
        elif obs.error:
            items.append(rules.parse(obs, reader.coding))
        else:
            items.append(rules.first_bytes(exchange.head_after, obs))
        items += self._reconnect(reader, head)

    def _watch(self, exchange: Exchange, reader: BodyReader) -> rules.Observation:
        obs = rules.Observation(self.timeout)
        if not reader.decoder.supported:
            obs.undecodable = reader.coding
        start = time.monotonic()
        deadline = start + self.timeout
        while not reader.stopped:
            now = time.monotonic()
            if obs.arrivals > 1 and t.cast(float, obs.last) - t.cast(float, obs.first) >= (
                _MIN_WATCH
            ):
                break
            if obs.arrivals:
                counts = f"events: {reader.events}, comments: {reader.comments}"
                self.progress("reading the stream", f"{counts}, {now - start:.0f} s")
            else:
                self.progress("waiting for the first bytes", f"{now - start:.0f} s")
            seen = exchange.last_arrival
            try:
                reader.read(min(deadline, now + _TICK))
            except WaitTimeout:
                if time.monotonic() >= deadline:
                    break
                continue
            if exchange.last_arrival is not None and exchange.last_arrival != seen:
                obs.arrived(exchange.last_arrival)
                deadline = time.monotonic() + self.timeout
        if reader.ended:
            obs.ended_after = time.monotonic() - exchange.sent_at
        obs.events, obs.comments, obs.names = reader.events, reader.comments, reader.names
        obs.body, obs.error, obs.limit = bytes(reader.body), reader.error, reader.limit
        return obs

    def _reconnect(self, reader: BodyReader, first_head: Seen) -> list[Item]:
        ids = reader.ids
        recent = list(ids.recent)
        expected: str | None = None
        if ids.count >= 3:
            sent, expected = recent[-2], recent[-1]
        else:
            sent = recent[-1] if recent else "0"
        if not is_sendable(sent):
            return [
                Item(
                    "reconnect",
                    "warn",
                    f"the last event id, {sent!r}, contains control characters: it cannot go "
                    "in a Last-Event-ID header, so the reconnect was not tried.",
                    "Use ids of printable characters (a counter, a timestamp, a UUID).",
                )
            ]
        self.progress("reconnecting", f"Last-Event-ID: {sent}")
        exchange, head = self._open("GET", self._stream(self.origin, sent))
        items = [rules.reconnect(head, first_head, sent)]
        if exchange is None or items[0].status == "fail":
            if exchange is not None:
                exchange.close()
            return items
        try:
            first, trouble = self._first_event(exchange) if ids else (None, "")
        finally:
            exchange.close()
        items.append(rules.resume(ids, sent, expected, first, self.timeout, trouble))
        return items

    def _first_event(self, exchange: Exchange) -> tuple[Event | None, str]:
        reader = BodyReader(exchange)
        start = time.monotonic()
        deadline = start + self.timeout
        while not reader.stopped:
            now = time.monotonic()
            self.progress("waiting for the next event", f"{now - start:.0f} s")
            try:
                events = reader.read(min(deadline, now + _TICK))
            except WaitTimeout:
                if time.monotonic() >= deadline:
                    break
                continue
            for event in events:
                if event.data is not None:
                    return event, ""
        return None, reader.error or reader.limit
