"""The ``flask ssecors`` commands, and the standalone ``ssecors-check``.

Installed through entry points, so every Flask app gets the group without registering it:

- ``flask ssecors check URL --origin ORIGIN``: audit a live stream (see
  :mod:`flask_ssecors._check`); needs no app, and is also installed as ``ssecors-check``;
- ``flask ssecors routes``: every route flask-ssecors polices, with its effective policy;
- ``flask ssecors publish CHANNEL DATA``: publish an event through the app's broker.

Exit status: ``0`` when the command succeeded (for ``check``: nothing failed; warnings are
allowed), ``1`` when it failed (for ``check``: at least one item failed), ``2`` for usage errors.

.. versionadded:: 0.1
"""

from __future__ import annotations

import collections.abc as cabc
import json
import shutil
import sys
import time
import typing as t
import urllib.parse

import click
from flask import current_app
from flask.cli import with_appcontext

from ._browser_audit import BrowserOptions
from ._browser_audit import DEFAULT_CHROMIUM
from ._check import check_stream
from ._check import DEFAULT_TIMEOUT
from ._check import parse_header
from ._report import printable
from ._request import EXTENSION_KEY
from ._state import spec_of
from .brokers import MemoryBroker
from .brokers._urls import redact
from .events import Event
from .exceptions import BrokerUnavailable
from .exceptions import EventFieldError

if t.TYPE_CHECKING:
    from ._check import Item
    from ._state import ViewPolicy

_STYLES: t.Final[dict[str, dict[str, t.Any]]] = {
    "pass": {"fg": "green"},
    "warn": {"fg": "yellow", "bold": True},
    "fail": {"fg": "red", "bold": True},
}


@click.group("ssecors")
def ssecors() -> None:
    """flask-ssecors: audit streams, list policed routes, publish events."""


# -- check ---------------------------------------------------------------------------------


class _ProgressLine:
    """The progress line on stderr: rewritten in place on a terminal, one line per phase
    otherwise (so CI logs show where a slow check waits)."""

    def __init__(self, stream: t.TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.phase = ""
        self.written = 0.0

    def __call__(self, phase: str, detail: str) -> None:
        now = time.monotonic()
        if self.tty:
            if phase == self.phase and now - self.written < 0.2:
                return
            width = shutil.get_terminal_size().columns - 1
            line = printable(f"ssecors-check: {phase}… {detail}")[:width]
            self.stream.write(f"\r\x1b[K{line}")
            self.stream.flush()
            self.written = now
        elif phase != self.phase:
            self.stream.write(f"ssecors-check: {phase}…\n")
            self.stream.flush()
        self.phase = phase

    def clear(self) -> None:
        if self.tty and self.phase:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _style(label: str, item: Item) -> str:
    return click.style(label, **_STYLES[item.status])


@click.command("check")
@click.argument("url")
@click.option(
    "--origin",
    required=True,
    metavar="ORIGIN",
    help="The page's origin, as the browser sends it, e.g. https://app.example.com.",
)
@click.option("--credentials", is_flag=True, help="The page uses withCredentials: true (cookies).")
@click.option(
    "--header",
    "-H",
    "headers",
    multiple=True,
    metavar="NAME:VALUE",
    help="Send this request header on stream requests (Cookie, Authorization...); repeatable.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    metavar="SECONDS",
    help="Bound on each wait for bytes; set it above the server's heartbeat interval.",
)
@click.option(
    "--http2",
    is_flag=True,
    help="Speak HTTP/2, negotiated with ALPN (https:// URLs; see --h2c for http://).",
)
@click.option(
    "--h2c",
    is_flag=True,
    help="Speak HTTP/2 over cleartext with prior knowledge (http:// URLs), as proxies do.",
)
@click.option(
    "--browser",
    is_flag=True,
    help="Also run the audit in a real headless Chromium (needs the 'browser' extra).",
)
@click.option(
    "--chromium",
    default=DEFAULT_CHROMIUM,
    show_default=True,
    metavar="PATH",
    help="The Chromium executable for --browser.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object, for CI.")
@click.option("--insecure", is_flag=True, help="Do not verify TLS certificates.")
@click.option("--quiet", "-q", is_flag=True, help="No progress line on stderr.")
@click.pass_context
def check_command(
    ctx: click.Context,
    url: str,
    origin: str,
    credentials: bool,
    headers: tuple[str, ...],
    timeout: float,
    http2: bool,
    h2c: bool,
    browser: bool,
    chromium: str,
    as_json: bool,
    insecure: bool,
    quiet: bool,
) -> None:
    """Audit the Server-Sent Events stream at URL as a page on ORIGIN uses it.

    Makes real requests (a preflight, the stream, hostile origins derived from ORIGIN, a
    reconnect with Last-Event-ID) and prints a checklist: each item pass, fail or warn, with
    the header lines seen and what to fix. Exit status 0 when nothing failed, 1 otherwise.
    """
    try:
        parsed = [parse_header(header) for header in headers]
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="'--header'") from None
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if http2 and scheme == "http" and not h2c:
        raise click.UsageError(
            "--http2 negotiates HTTP/2 over TLS (https://); for cleartext HTTP/2 with prior "
            "knowledge, add --h2c (browsers never use it; proxies do)",
            ctx,
        )
    if h2c and scheme == "https":
        raise click.UsageError("--h2c is for http:// URLs; use --http2 for https://", ctx)
    options = None
    if browser:
        options = BrowserOptions(chromium=chromium, insecure=insecure)
        if problem := options.missing():
            raise click.UsageError(problem, ctx)
    progress = _ProgressLine(sys.stderr)
    try:
        report = check_stream(
            url,
            origin,
            credentials=credentials,
            headers=parsed,
            timeout=timeout,
            verify=not insecure,
            http2=http2 or h2c,
            browser=options,
            progress=None if quiet else progress,
        )
    except ValueError as error:
        raise click.UsageError(str(error), ctx) from None
    finally:
        progress.clear()
    if as_json:
        click.echo(report.to_json())
    else:
        click.echo(report.to_text(_style))
    ctx.exit(0 if report.ok else 1)


ssecors.add_command(check_command)


def main(argv: cabc.Sequence[str] | None = None) -> None:
    """The ``ssecors-check`` console script: ``flask ssecors check`` without Flask's CLI.

    :param argv: the arguments (default: ``sys.argv[1:]``).
    """
    check_command.main(
        args=list(argv) if argv is not None else sys.argv[1:], prog_name="ssecors-check"
    )


# -- routes --------------------------------------------------------------------------------


def _state() -> t.Any:
    state = current_app.extensions.get(EXTENSION_KEY)
    if state is None:
        raise click.ClickException(
            "flask-ssecors is not initialised on this app; call SSECors(app) or init_app(app)."
        )
    return state


def _describe(rule: t.Any, kind: str, view: ViewPolicy) -> dict[str, t.Any]:
    cors, stream = view.settings.cors, view.settings.stream
    info: dict[str, t.Any] = {
        "rule": rule.rule,
        "endpoint": rule.endpoint,
        "methods": sorted(set(rule.methods or ()) - {"HEAD", "OPTIONS"}),
        "kind": kind,
        "origins": ["*"] if cors.allow_any_origin else [str(o) for o in cors.origins],
        "credentials": cors.allow_credentials,
        "allowed_headers": (["*"] if cors.allow_any_header else []) + list(cors.allowed_headers),
        "expose_headers": list(cors.expose_headers),
        "max_age": cors.max_age,
        "serve_without_origin": cors.serve_without_origin,
        "allowed_methods": list(cors.allowed_methods),
    }
    if kind != "cors":
        info.update(
            heartbeat=stream.heartbeat,
            retry=stream.retry,
            queue_size=stream.queue_size,
            send_timeout=stream.send_timeout,
            broker=redact(view.settings.broker_url),
        )
    return info


def _routes() -> list[dict[str, t.Any]]:
    state = _state()
    out = []
    for rule in sorted(current_app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)):
        view = current_app.view_functions.get(rule.endpoint)
        spec = spec_of(view)
        policy = state.views.get(spec) if spec is not None else None
        if view is None or spec is None or policy is None:
            continue
        out.append(_describe(rule, spec.kind, policy))
    return out


def _text(route: dict[str, t.Any]) -> list[str]:
    def listed(values: list[str]) -> str:
        return ", ".join(values) or "-"

    lines = [
        f"{' '.join(route['methods'])} {route['rule']}  ({route['endpoint']}, {route['kind']})",
        f"    origins         {listed(route['origins'])}",
        f"    credentials     {'yes' if route['credentials'] else 'no'}",
        f"    allow headers   {listed(route['allowed_headers'])}",
        f"    expose headers  {listed(route['expose_headers'])}",
        f"    preflight cache {route['max_age']} s",
        f"    without Origin  {'served' if route['serve_without_origin'] else 'refused'}",
        # What the route accepts (its url_map rule) and what the policy allows are separate:
        # a cross-origin preflight needs both.
        f"    route methods   {listed(route['methods'])}",
        f"    policy allows   {listed(route['allowed_methods'])}{_refused(route)}",
    ]
    if route["kind"] == "cors":
        return lines
    retry = "browser default" if route["retry"] is None else f"{route['retry']} ms"
    lines += [
        f"    heartbeat       {route['heartbeat']:g} s",
        f"    retry           {retry}",
        f"    slow clients    dropped after {route['queue_size']} queued events or a "
        f"{route['send_timeout']:g} s write",
        f"    broker          {route['broker']}",
    ]
    return lines


def _refused(route: dict[str, t.Any]) -> str:
    """A note naming the route's methods that the policy does not allow."""
    missing = [method for method in route["methods"] if method not in route["allowed_methods"]]
    if not missing:
        return ""
    return f" (not {', '.join(missing)}: refused at the cross-origin preflight)"


@ssecors.command("routes")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@with_appcontext
def routes_command(as_json: bool) -> None:
    """List every route flask-ssecors polices, with its effective policy."""
    routes = _routes()
    if as_json:
        click.echo(json.dumps(routes, indent=2))
        return
    if not routes:
        click.echo("No route is policed: decorate views with @sse.stream() or @sse.cors().")
        return
    click.echo("\n\n".join("\n".join(_text(route)) for route in routes))


# -- publish -------------------------------------------------------------------------------


@ssecors.command("publish")
@click.argument("channel")
@click.argument("data")
@click.option("--event", "event_name", metavar="NAME", help="The event type (default: message).")
@click.option("--json", "as_json", is_flag=True, help="DATA is JSON: check it, send it compact.")
@with_appcontext
def publish_command(channel: str, data: str, event_name: str | None, as_json: bool) -> None:
    """Publish DATA on CHANNEL through the app's broker, and print the id it got.

    DATA "-" reads standard input. Useful with a Redis broker (SSECORS_BROKER_URL): with the
    in-memory broker, the event would stay in this process, so the command refuses.
    """
    broker = _state().broker
    if isinstance(broker, MemoryBroker):
        raise click.ClickException(
            "the app uses the in-memory broker (SSECORS_BROKER_URL = memory://): an event "
            "published from this process reaches no stream served by another one. Set "
            "SSECORS_BROKER_URL to a Redis URL."
        )
    if data == "-":
        data = sys.stdin.read().removesuffix("\n")
    payload: object = data
    if as_json:
        try:
            payload = json.loads(data)
        except ValueError as error:
            raise click.BadParameter(f"not JSON: {error}", param_hint="'DATA'") from None
    try:
        event = Event(payload, event=event_name)
    except EventFieldError as error:
        raise click.BadParameter(str(error), param_hint="'--event' or 'DATA'") from None
    try:
        event_id = broker.publish(channel, event)
    except BrokerUnavailable as error:
        raise click.ClickException(f"could not publish: {error}") from None
    click.echo(event_id)


# -- check-broker ----------------------------------------------------------------------------


@ssecors.command("check-broker")
@click.option("--channel", metavar="NAME", help="Also say which keys, slot and node serve it.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
def check_broker_command(channel: str | None, as_json: bool) -> None:
    """Inspect the Redis behind the app's broker: topology, round-trip time, and the settings
    that can lose events (persistence, maxmemory-policy, replicas for
    SSECORS_BROKER_MIN_REPLICAS). Exit status 1 when something can lose events or a node is
    unreachable."""
    from ._broker_check import check_broker
    from ._broker_check import to_text

    state = _state()
    settings = state.settings
    if settings.broker_url.partition("://")[0].lower() == "memory":
        raise click.ClickException(
            "the app uses the in-memory broker (SSECORS_BROKER_URL = memory://): there is no "
            "Redis to check."
        )
    report = check_broker(
        settings.broker_url,
        channel=channel,
        min_replicas=settings.broker_min_replicas,
        prefix=getattr(state.broker, "prefix", "ssecors:"),
        timeout=settings.broker_timeout,
    )
    click.echo(json.dumps(report, indent=2) if as_json else to_text(report))
    if not report["ok"]:
        sys.exit(1)


# -- race-server ------------------------------------------------------------------------------


@ssecors.command("race-server")
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option("--port", default=8001, show_default=True, type=click.IntRange(1, 65535))
def race_server_command(host: str, port: int) -> None:
    """Serve the race harness: a stream whose timing, framing and CORS answers are chosen per
    request (/race?count=&delay=&split=&merge=1&cors=exact|star|missing&credentials=1&
    preflight=refuse&reset=&retry=), to see with `ssecors-check --browser` what a browser does
    with each. Runs until interrupted."""
    from ._race import serve

    click.echo(f"race harness on http://{host}:{port}/race (Ctrl-C to stop)", err=True)
    serve(host, port)
