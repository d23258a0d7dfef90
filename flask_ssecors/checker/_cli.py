"""The auditor's commands: ``ssecors-check`` (also ``flask ssecors check``), ``flask ssecors
check-broker`` and ``flask ssecors race-server``.

:mod:`flask_ssecors._cli` loads this module only when one of these commands runs, so the
extension's own commands (and every ``flask`` command of an app that installs flask-ssecors)
never import ``h11``, ``h2`` or Playwright.
"""

from __future__ import annotations

import collections.abc as cabc
import importlib.util
import json
import shutil
import sys
import time
import typing as t
import urllib.parse

import click
from flask import current_app
from flask.cli import with_appcontext

from .._request import EXTENSION_KEY
from .._urls import POSTGRES_SCHEMES
from ._browser_options import BrowserOptions
from ._browser_options import DEFAULT_CHROMIUM
from ._check import check_stream
from ._check import DEFAULT_TIMEOUT
from ._check import parse_header
from ._report import printable

if t.TYPE_CHECKING:
    from ._audit import Item

_STYLES: t.Final[dict[str, dict[str, t.Any]]] = {
    "pass": {"fg": "green"},
    "warn": {"fg": "yellow", "bold": True},
    "fail": {"fg": "red", "bold": True},
}


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


def check_main(argv: cabc.Sequence[str] | None = None) -> None:
    """The ``ssecors-check`` console script: ``flask ssecors check`` without Flask's CLI.

    :param argv: the arguments (default: ``sys.argv[1:]``).
    """
    check_command.main(
        args=list(argv) if argv is not None else sys.argv[1:], prog_name="ssecors-check"
    )


@click.command("check-broker")
@click.option(
    "--channel",
    metavar="NAME",
    help="Redis: also say which keys, slot and node serve it. PostgreSQL: publish the round "
    "trip on it (rolled back) and name its NOTIFY channel.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
def check_broker_command(channel: str | None, as_json: bool) -> None:
    """Inspect the Redis or PostgreSQL behind the app's broker, and what could lose events.

    Redis: topology, round-trip time, and the settings that can lose events (persistence,
    maxmemory-policy, replicas for SSECORS_BROKER_MIN_REPLICAS). PostgreSQL: the server's
    version (12 or later) and the database's encoding (UTF8), the broker's schema and its
    version, the role's rights, whether LISTEN/NOTIFY works, and a publish read back in a
    transaction that is rolled back. Exit status 1 when something can lose events or the
    broker is unreachable."""
    state = current_app.extensions.get(EXTENSION_KEY)
    if state is None:
        raise click.ClickException(
            "flask-ssecors is not initialised on this app; call SSECors(app) or init_app(app)."
        )
    settings = state.settings
    scheme = settings.broker_url.partition("://")[0].lower()
    if scheme == "memory":
        raise click.ClickException(
            "the app uses the in-memory broker (SSECORS_BROKER_URL = memory://): there is no "
            "Redis or PostgreSQL to check."
        )
    if scheme in POSTGRES_SCHEMES:
        report = _check_postgres(settings, channel)
        from ._postgres_check import to_text as postgres_text

        click.echo(json.dumps(report, indent=2) if as_json else postgres_text(report))
    else:
        from ._broker_check import check_broker
        from ._broker_check import to_text

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


def _check_postgres(settings: t.Any, channel: str | None) -> dict[str, t.Any]:
    if importlib.util.find_spec("psycopg") is None:
        raise click.ClickException(
            "SSECORS_BROKER_URL names PostgreSQL but the 'psycopg' package is not installed: "
            "pip install 'flask-ssecors[postgres]'"
        )
    from ._postgres_check import check_postgres

    return check_postgres(
        settings.broker_url,
        schema=settings.broker_schema,
        channel=channel,
        timeout=settings.broker_timeout,
    )


# -- race-server ------------------------------------------------------------------------------


@click.command("race-server")
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
