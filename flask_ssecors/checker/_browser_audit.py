"""The browser half of ``ssecors-check --browser``: what a real Chromium does with the stream.

A headless Chromium (Debian's ``/usr/bin/chromium`` by default, driven by Playwright) loads a
blank page as the claimed origin: the page request is answered by interception, so nothing
needs to serve that origin. From it, the page opens ``new EventSource(url, {withCredentials})``
and later reads the stream with ``fetch()`` sending ``Last-Event-ID`` (which needs a
preflight). Chromium's connections go through a :class:`~flask_ssecors.checker._relay.Relay`, which
cuts them after a while, as a proxy restart or a deploy would, so that every audit sees a
reconnect. The items it reports start with ``browser-``:

``browser-open``, ``browser-events``, ``browser-error``, ``browser-reconnect``,
``browser-retry``, ``browser-cookie`` (with credentials), ``browser-preflight``.

Each failure quotes the browser's own console message and explains it with the header lines
the wire audit saw (:class:`~flask_ssecors.checker._wire.Wire`).

The relay's address is declared public to Chromium (``--ip-address-space-overrides``): the
audited server is often on loopback or a private network during development, and Chromium's
Local Network Access rules would otherwise refuse a public page's requests to it (or, with the
permission granted, still fail its reconnects). Declared public, the server is seen as it is in
production, where page and API are both public.

Pure module (no Flask, no gevent); Playwright is imported only when a session starts, from the
``browser`` extra (``pip install flask-ssecors[browser]``).
"""

from __future__ import annotations

import threading
import time
import typing as t
import urllib.parse

from . import _audit
from ._audit import Item
from ._browser_items import browser_items
from ._browser_items import BrowserRun
from ._browser_options import BrowserOptions
from ._http import parse_url
from ._relay import Relay

if t.TYPE_CHECKING:
    import collections.abc as cabc

    from playwright.sync_api import Browser
    from playwright.sync_api import Page
    from playwright.sync_api import Playwright

    from ._wire import Progress
    from ._wire import Wire

#: Flags for a quiet headless Chromium on a machine without network. Playwright's own
#: defaults stay (no --disable-features here: it would replace Playwright's list).
CHROMIUM_ARGS: t.Final = (
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
#: The page the browser loads as the origin (answered by interception).
PAGE_PATH: t.Final = "/__ssecors-check__.html"
_PAGE: t.Final = "<!doctype html><meta charset=utf-8><title>ssecors-check</title>"
#: Browser default reconnection delay when the stream sent no ``retry:`` (Chromium: 3 s).
DEFAULT_RETRY_MS: t.Final = 3000
#: Console messages and log entries kept per audit.
_MAX_MESSAGES: t.Final = 20
_MAX_LOG: t.Final = 100
_POLL_MS: t.Final = 100

_OPEN_JS: t.Final = """
({url, credentials, names, limit}) => {
  const state = {log: [], events: 0, firstEventAt: null, lastEventAt: null, lastId: "",
                 start: performance.now()};
  window.__ssecors = state;
  const es = new EventSource(url, {withCredentials: credentials});
  state.es = es;
  const note = (kind) => {
    if (state.log.length < limit) {
      state.log.push({kind, at: performance.now() - state.start, readyState: es.readyState});
    }
  };
  es.onopen = () => note("open");
  es.onerror = () => note("error");
  const onEvent = (event) => {
    const at = performance.now() - state.start;
    state.events += 1;
    state.lastId = event.lastEventId;
    if (state.firstEventAt === null) state.firstEventAt = at;
    state.lastEventAt = at;
  };
  for (const name of names) es.addEventListener(name, onEvent);
}
"""
_SNAPSHOT_JS: t.Final = """
() => {
  const s = window.__ssecors;
  return {log: s.log, events: s.events, firstEventAt: s.firstEventAt,
          lastEventAt: s.lastEventAt, lastId: s.lastId.slice(0, 200),
          readyState: s.es.readyState, now: performance.now() - s.start};
}
"""
_FETCH_JS: t.Final = """
async ({url, credentials, lastId, headers, wait}) => {
  const started = performance.now();
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), wait);
  try {
    const response = await fetch(url, {
      headers: {...headers, "Accept": "text/event-stream", "Last-Event-ID": lastId},
      credentials: credentials ? "include" : "same-origin",
      cache: "no-store",
      signal: controller.signal,
    });
    let bytes = 0;
    try {
      const chunk = await response.body.getReader().read();
      bytes = chunk.value ? chunk.value.length : 0;
    } catch (error) {}
    return {ok: true, status: response.status, bytes, at: performance.now() - started};
  } catch (error) {
    return {ok: false, error: String(error).slice(0, 300), at: performance.now() - started};
  } finally {
    clearTimeout(timer);
    controller.abort();
  }
}
"""


def audit_in_browser(
    url: str,
    origin: str,
    credentials: bool,
    headers: t.Sequence[tuple[str, str]],
    wire: Wire,
    options: BrowserOptions,
    progress: Progress,
) -> list[Item]:
    """Run the browser audit of ``url`` in a Chromium of its own; return its items.

    The audit runs in a thread of its own: Playwright's synchronous API refuses to start in a
    thread whose asyncio loop is running, which is the case when the caller is itself inside an
    event loop (a notebook, an async test runner) or already drives another Playwright session
    (a test suite's own browser). A fresh thread has no loop, wherever it is called from. The
    audit's own failures are raised here, in the caller's thread.
    """
    found: list[list[Item]] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            with BrowserSession(url, options) as session:
                found.append(session.audit(url, origin, credentials, headers, wire, progress))
        except BaseException as exc:  # handed to the caller's thread below
            failed.append(exc)

    worker = threading.Thread(target=run, name="ssecors-browser-audit", daemon=True)
    worker.start()
    worker.join()
    if failed:
        raise failed[0]
    return found[0]


class BrowserSession:
    """One Chromium (and its relay) for audits of streams on one ``host:port``."""

    def __init__(self, url: str, options: BrowserOptions) -> None:
        self.options = options
        target = parse_url(url)
        self.relay = Relay(target.host, target.port)
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        host = f"[{target.host}]" if ":" in target.host else target.host
        self._args = [
            *CHROMIUM_ARGS,
            f"--host-resolver-rules=MAP {host}:{target.port} 127.0.0.1:{self.relay.port}",
            f"--ip-address-space-overrides=127.0.0.1:{self.relay.port}=public",
        ]

    def __enter__(self) -> BrowserSession:
        from playwright.sync_api import sync_playwright

        try:
            self._playwright = sync_playwright().start()
            self._browser = self._playwright.chromium.launch(
                executable_path=self.options.chromium,
                args=self._args,
            )
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close Chromium, Playwright and the relay (idempotent)."""
        if self._browser is not None:
            self._browser.close()
            self._browser = None
        if self._playwright is not None:
            self._playwright.stop()
            self._playwright = None
        self.relay.close()

    def audit(
        self,
        url: str,
        origin: str,
        credentials: bool,
        headers: t.Sequence[tuple[str, str]],
        wire: Wire | None,
        progress: Progress,
    ) -> list[Item]:
        """Open the stream from a page on ``origin``, watch it, cut it, watch the reconnect,
        then read it with ``fetch()``; return the ``browser-`` items."""
        assert self._browser is not None, "use the session as a context manager"
        context = self._browser.new_context(ignore_https_errors=self.options.insecure)
        try:
            cookies = _cookies(url, headers) if credentials else []
            if cookies:
                context.add_cookies(cookies)  # type: ignore[arg-type]
            page_url = origin + PAGE_PATH
            context.route(
                lambda requested: requested == page_url,
                lambda route: route.fulfill(status=200, content_type="text/html", body=_PAGE),
            )
            page = context.new_page()
            extra = {
                name: value
                for name, value in headers
                if name.lower() not in _audit.FORBIDDEN | {"accept", "last-event-id"}
            }
            run = _Watcher(page, url, self.relay).run(
                page_url, credentials, extra, wire, self.options, progress
            )
            run.cookie_names = tuple(c["name"] for c in cookies)
        finally:
            context.close()
        return browser_items(run, url, origin, credentials, wire)


class _Watcher:
    """Drives one page through the phases, collecting what Chromium did.

    The request headers Chromium really sent (``Cookie``, ``Last-Event-ID``) and the cookies it
    held back, with its reasons, come from the DevTools protocol's ``Network`` domain.
    """

    def __init__(self, page: Page, url: str, relay: Relay) -> None:
        self.page = page
        self.url = url
        self.relay = relay
        self.messages: list[str] = []
        #: Request ids of the stream URL in the order sent; headers as sent (names
        #: lowercased) and the cookies Chromium held back, by request id. DevTools may report
        #: the headers before or after the request itself.
        self.order: list[str] = []
        self.sent: dict[str, dict[str, str]] = {}
        self.blocked: dict[str, list[str]] = {}
        page.on("console", self._console)
        cdp = page.context.new_cdp_session(page)
        cdp.on("Network.requestWillBeSent", self._will_send)
        cdp.on("Network.requestWillBeSentExtraInfo", self._extra_info)
        cdp.send("Network.enable")

    def _console(self, message: t.Any) -> None:
        where = str((message.location or {}).get("url", ""))
        text = str(message.text)
        if len(self.messages) < _MAX_MESSAGES and (where == self.url or self.url in text):
            self.messages.append(text[:600])

    def _will_send(self, event: dict[str, t.Any]) -> None:
        request_id = event["requestId"]
        wanted = event["request"]["url"] == self.url and request_id not in self.order
        if wanted and len(self.order) < _MAX_MESSAGES:
            self.order.append(request_id)

    def _extra_info(self, event: dict[str, t.Any]) -> None:
        request_id = event["requestId"]
        if request_id in self.sent or len(self.sent) >= 4 * _MAX_MESSAGES:
            return
        self.sent[request_id] = {k.lower(): str(v)[:300] for k, v in event["headers"].items()}
        self.blocked[request_id] = [
            f"{cookie['cookie']['name']} ({', '.join(cookie['blockedReasons'])})"
            for cookie in event.get("associatedCookies", [])
            if cookie.get("blockedReasons")
        ]

    def requests(self) -> list[tuple[dict[str, str], list[str]]]:
        """The stream requests so far, in the order sent: their headers and blocked cookies."""
        return [(self.sent[i], self.blocked[i]) for i in self.order if i in self.sent]

    def _snapshot(self) -> dict[str, t.Any]:
        return t.cast("dict[str, t.Any]", self.page.evaluate(_SNAPSHOT_JS))

    def _wait(
        self, seconds: float, done: cabc.Callable[[dict[str, t.Any]], bool]
    ) -> dict[str, t.Any]:
        deadline = time.monotonic() + seconds
        while True:
            snapshot = self._snapshot()
            if done(snapshot) or time.monotonic() >= deadline:
                return snapshot
            self.page.wait_for_timeout(_POLL_MS)

    def run(
        self,
        page_url: str,
        credentials: bool,
        headers: dict[str, str],
        wire: Wire | None,
        options: BrowserOptions,
        progress: Progress,
    ) -> BrowserRun:
        page = self.page
        progress("opening the page", page_url)
        page.goto(page_url)
        # Routes intercept every request of the context: drop them once the page is there,
        # so that the stream's requests go to the network untouched, as in any browser.
        page.context.unroute_all()
        names = sorted({"message", *(wire.observation.names if wire else ())})
        page.evaluate(
            _OPEN_JS,
            {"url": self.url, "credentials": credentials, "names": names, "limit": _MAX_LOG},
        )
        progress("watching the browser's EventSource", self.url)
        timeout = wire.observation.timeout if wire else 10.0
        run = BrowserRun()
        first = self._wait(timeout, lambda s: any(e["kind"] in ("open", "error") for e in s["log"]))
        run.opened = any(e["kind"] == "open" for e in first["log"])
        if run.opened:  # watch until the stream closes, or long enough
            before = self._wait(
                options.watch, lambda s: any(e["kind"] == "error" for e in s["log"])
            )
        else:
            before = first
        run.log_before = list(before["log"])
        run.events_before = before["events"]
        run.first_event_at = before["firstEventAt"]
        run.last_id = before["lastId"]
        run.watched = before["now"]
        run.state_before = before["readyState"]
        run.closed_by_server = any(e["kind"] == "error" for e in before["log"])
        if run.opened and before["readyState"] != 2:
            if not run.closed_by_server:
                progress("cutting the connection", "as a proxy restart would")
                run.cut = self.relay.cut() > 0
            run.closed_at = before["now"]
            retry = wire.retry if wire is not None and wire.retry is not None else None
            wait = (retry if retry is not None else DEFAULT_RETRY_MS) / 1000 + options.extra_wait
            progress("waiting for the browser to reconnect", f"up to {wait:.0f} s")
            opens = sum(e["kind"] == "open" for e in before["log"])

            def reopened(s: dict[str, t.Any]) -> bool:
                return sum(e["kind"] == "open" for e in s["log"]) > opens or bool(
                    s["readyState"] == 2
                )

            after = self._wait(wait, reopened)
            run.log_after = after["log"][len(before["log"]) :]
            run.state_after = after["readyState"]
            run.events_after = after["events"] - before["events"]
            errors = [e for e in run.log_before + run.log_after if e["kind"] == "error"]
            reopen = [e for e in run.log_after if e["kind"] == "open"]
            if errors:
                run.closed_at = errors[0]["at"]
            if reopen:
                run.reconnect_after = max(0.0, (reopen[0]["at"] - run.closed_at) / 1000)
        page.evaluate("() => window.__ssecors.es.close()")
        page.wait_for_timeout(_POLL_MS)  # DevTools events may trail the page's
        sent = self.requests()
        if sent:
            run.first_request_headers, run.blocked_cookies = sent[0]
        if len(sent) > 1:
            run.reconnect_sent = True
            run.reconnect_last_event_id = sent[1][0].get("last-event-id")
        run.stream_messages = list(self.messages)
        progress("reading with fetch()", "Last-Event-ID and a preflight")
        last_id = run.last_id if run.last_id and run.last_id.isascii() else "0"
        run.fetch = t.cast(
            "dict[str, t.Any]",
            page.evaluate(
                _FETCH_JS,
                {
                    "url": self.url,
                    "credentials": credentials,
                    "lastId": last_id,
                    "headers": headers,
                    "wait": int(timeout * 1000),
                },
            ),
        )
        run.fetch_last_event_id = last_id
        page.wait_for_timeout(_POLL_MS)  # let the console messages of the fetch arrive
        run.fetch_messages = self.messages[len(run.stream_messages) :]
        return run


def _cookies(url: str, headers: t.Sequence[tuple[str, str]]) -> list[dict[str, t.Any]]:
    """The cookies a signed-in page would hold for the stream's site: those of ``-H Cookie``,
    or one probe cookie; ``SameSite=None; Secure`` over https (what a cross-site stream
    needs), the browsers' default ``Lax`` over http."""
    pairs = [
        (name.strip(), value.strip())
        for header, text in headers
        if header.lower() == "cookie"
        for name, _, value in (part.partition("=") for part in text.split(";"))
        if name.strip()
    ] or [("ssecors_check", "1")]
    parts = urllib.parse.urlsplit(url)
    secure = parts.scheme == "https"
    return [
        {
            "name": name,
            "value": value,
            "url": f"{parts.scheme}://{parts.netloc}/",
            "secure": secure,
            "sameSite": "None" if secure else "Lax",
        }
        for name, value in pairs
    ]
