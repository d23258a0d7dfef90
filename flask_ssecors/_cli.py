"""The ``flask ssecors`` commands, and the standalone ``ssecors-check``.

Installed through entry points, so every Flask app gets the group without registering it:

- ``flask ssecors routes``: every route flask-ssecors polices, with its effective policy;
- ``flask ssecors publish CHANNEL DATA``: publish an event through the app's broker;
- ``flask ssecors presence CHANNEL``: who holds streams on a channel, through the app's broker;
- ``flask ssecors broker-sql``: the SQL that creates the PostgreSQL broker's schema;
- the auditor's commands, ``flask ssecors check URL --origin ORIGIN`` (also installed as
  ``ssecors-check``), ``check-broker`` and ``race-server``, which live in
  :mod:`flask_ssecors.checker` and need the ``check`` extra (``h11`` and ``h2``): they are
  loaded only when one of them runs, so no ``flask`` command of an app that installs
  flask-ssecors pays for them, and without the extra they say what to install.

Exit status: ``0`` when the command succeeded (for ``check``: nothing failed; warnings are
allowed), ``1`` when it failed (for ``check``: at least one item failed), ``2`` for usage errors.

.. versionadded:: 0.1
"""

from __future__ import annotations

import collections.abc as cabc
import importlib
import json
import sys
import typing as t

import click
from flask import current_app
from flask.cli import with_appcontext

from ._request import EXTENSION_KEY
from ._state import spec_of
from ._urls import redact
from .brokers import MemoryBroker
from .events import Event
from .exceptions import BrokerUnavailable
from .exceptions import ChannelError
from .exceptions import EventFieldError

if t.TYPE_CHECKING:
    from ._state import ViewPolicy

#: The auditor's commands: name -> (module, attribute), loaded when they run.
_CHECKER_COMMANDS: t.Final = {
    "check": ("flask_ssecors.checker._cli", "check_command"),
    "check-broker": ("flask_ssecors.checker._cli", "check_broker_command"),
    "race-server": ("flask_ssecors.checker._cli", "race_server_command"),
}
#: The packages the ``check`` extra brings.
_CHECK_EXTRA: t.Final = ("h11", "h2")
_INSTALL_CHECK: t.Final = (
    "the auditor needs the 'check' extra: pip install 'flask-ssecors[check]' "
    "(and 'flask-ssecors[check,browser]' for --browser)"
)


def _load_checker_command(name: str) -> click.Command:
    """The auditor's command ``name``, imported now; a stand-in that says which extra to
    install when its packages are missing."""
    module_name, attribute = _CHECKER_COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        if (error.name or "").partition(".")[0] not in _CHECK_EXTRA:
            raise

        @click.command(name, context_settings={"ignore_unknown_options": True})
        @click.argument("args", nargs=-1, type=click.UNPROCESSED)
        def missing(args: tuple[str, ...]) -> None:
            raise click.ClickException(_INSTALL_CHECK)

        missing.help = f"(needs the 'check' extra: pip install 'flask-ssecors[check]') {name}"
        return missing
    return t.cast(click.Command, getattr(module, attribute))


class _Commands(click.Group):
    """The ``ssecors`` group: the extension's commands, and the auditor's, loaded lazily."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_CHECKER_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _CHECKER_COMMANDS:
            return _load_checker_command(cmd_name)
        return super().get_command(ctx, cmd_name)


def main(argv: cabc.Sequence[str] | None = None) -> None:
    """The ``ssecors-check`` console script: ``flask ssecors check`` without Flask's CLI.

    :param argv: the arguments (default: ``sys.argv[1:]``).
    """
    command = _load_checker_command("check")
    command.main(args=list(argv) if argv is not None else sys.argv[1:], prog_name="ssecors-check")


@click.group("ssecors", cls=_Commands)
def ssecors() -> None:
    """flask-ssecors: audit streams, list policed routes, publish events, show presence,
    print the PostgreSQL broker's SQL."""


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

    DATA "-" reads standard input. Useful with a Redis or PostgreSQL broker
    (SSECORS_BROKER_URL): with the in-memory broker, the event would stay in this process, so
    the command refuses.
    """
    broker = _state().broker
    if isinstance(broker, MemoryBroker):
        raise click.ClickException(
            "the app uses the in-memory broker (SSECORS_BROKER_URL = memory://): an event "
            "published from this process reaches no stream served by another one. Set the "
            "app's config key SSECORS_BROKER_URL to a Redis or PostgreSQL URL (from the "
            "environment: "
            "FLASK_SSECORS_BROKER_URL with app.config.from_prefixed_env())."
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


# -- presence ------------------------------------------------------------------------------


def _counted(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


@ssecors.command("presence")
@click.argument("channel")
@click.option("--json", "as_json", is_flag=True, help="Print Presence.as_dict() as JSON.")
@with_appcontext
def presence_command(channel: str, as_json: bool) -> None:
    """Print who holds streams on CHANNEL: its members, sorted, one per line, then how many
    members and connections (streams that declared a member) it has.

    Above SSECORS_PRESENCE_MAX_MEMBERS members, only the counts are read. With the in-memory
    broker, only this process's streams are counted (none of a server's): use it with a Redis
    broker (SSECORS_BROKER_URL).
    """
    state = _state()
    broker = state.broker
    if isinstance(broker, MemoryBroker):
        click.echo(
            "note: the app uses the in-memory broker (SSECORS_BROKER_URL = memory://): only "
            "the streams of this process are counted, none served by another one.",
            err=True,
        )
    try:
        presence = broker.presence(channel, max_members=state.settings.presence_max_members)
    except ChannelError as error:
        raise click.BadParameter(str(error), param_hint="'CHANNEL'") from None
    except BrokerUnavailable as error:
        raise click.ClickException(f"could not read presence: {error}") from None
    if as_json:
        click.echo(json.dumps(presence.as_dict(), indent=2))
        return
    for member in sorted(presence.members):
        click.echo(member)
    counts = (
        f"{channel}: {_counted(presence.member_count, 'member')}, "
        f"{_counted(presence.connections, 'connection')}"
    )
    if presence.counts_only:
        counts += (
            " (counts only: more members than SSECORS_PRESENCE_MAX_MEMBERS = "
            f"{state.settings.presence_max_members:,}, so they are not listed)"
        )
    click.echo(counts)


# -- broker-sql ----------------------------------------------------------------------------


@ssecors.command("broker-sql")
@with_appcontext
def broker_sql_command() -> None:
    """Print the SQL that creates the PostgreSQL broker's schema (SSECORS_BROKER_SCHEMA), for
    migrations you run yourself.

    The statements are idempotent (IF NOT EXISTS, CREATE OR REPLACE): running them again, or
    on a database where the broker made the schema, changes nothing. Nothing is connected to,
    whatever SSECORS_BROKER_URL names; pipe the output to psql or paste it into a migration.
    """
    from .brokers._postgres_sql import ddl

    click.echo(ddl(_state().settings.broker_schema), nl=False)
