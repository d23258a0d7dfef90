"""Statistics and signals: what the streams of one app in one worker process are doing.

:meth:`~flask_ssecors.SSECors.stats` returns a :class:`StatsSnapshot` (a plain ``dict``):

``open_streams``
    streams open now;
``streams_opened`` / ``streams_closed``
    streams opened and closed since the process started;
``events_sent``
    events handed to the server (heartbeats not counted);
``refused_origins``
    requests refused by the CORS policy, by reason (``origin-not-allowed``,
    ``malformed-origin``, ``no-origin-refused``, ``method-not-allowed``...);
``token_refusals``
    requests refused for their stream token, by reason (see :class:`flask_ssecors.tokens.Refusal`);
``slow_clients_dropped``
    clients cut off because they fell more than ``SSECORS_QUEUE_SIZE`` events behind or did
    not accept a write within ``SSECORS_SEND_TIMEOUT``;
``streams_refused_busy``
    stream requests turned away because the worker was at ``SSECORS_MAX_STREAMS`` or shutting
    down;
``streams_ended``
    streams the server ended, by reason (``max-age``, ``token-expired``, ``shutdown``);
``faults``
    faults contained where they happened, by stage (``dispatch``, ``deliver``, ``encode``,
    ``relabel``, ``replay``): one event, channel or subscriber failed, was dropped or reset,
    and every other one went on being served. Each stage's first fault is logged with its
    traceback, later ones at most once a minute. Counted per process, for every app in it.
    Anything but zero is worth a look.
``presence``
    this process's part of presence (:meth:`~flask_ssecors.SSECors.presence`): ``members``,
    the (channel, member) pairs with a stream here; ``streams``, the streams that declared a
    member; ``updates``, the presence changes this process wrote to its broker.

Counters are per app and per worker process: with several gunicorn workers, each has its own.
Nothing is counted per event besides one integer per stream.

Signals (`blinker <https://blinker.readthedocs.io>`_, like Flask's own), sent with the app as
sender:

- :data:`stream_opened` (``request_id``), in the request context of the stream;
- :data:`stream_closed` (``reason``, ``events_sent``, ``duration``, ``request_id``), in the
  server's greenlet, outside any request context;
- :data:`request_refused` (``kind``: ``"origin"``, ``"token"`` or ``"capacity"``; ``reason``),
  in the request context of the refused request.

Prometheus: with ``prometheus-client`` installed, register a :class:`PrometheusCollector`::

    from prometheus_client import REGISTRY
    from flask_ssecors.stats import PrometheusCollector

    REGISTRY.register(PrometheusCollector(app))

It reads :meth:`~flask_ssecors.SSECors.stats` when scraped, and costs nothing in between.

.. versionadded:: 0.1
"""

from __future__ import annotations

import collections.abc as cabc
import typing as t

from blinker import Namespace

if t.TYPE_CHECKING:
    from flask import Flask

__all__ = [
    "PrometheusCollector",
    "StatsSnapshot",
    "request_refused",
    "stream_closed",
    "stream_opened",
]

_signals = Namespace()

#: Sent when a stream opens: ``sender`` is the app; keyword ``request_id``.
stream_opened = _signals.signal("flask-ssecors.stream-opened")
#: Sent when a stream closes: ``sender`` is the app; keywords ``reason``, ``events_sent``,
#: ``duration`` (seconds) and ``request_id``.
stream_closed = _signals.signal("flask-ssecors.stream-closed")
#: Sent when a request is refused: ``sender`` is the app; keywords ``kind`` (``"origin"``,
#: ``"token"`` or ``"capacity"``) and ``reason``.
request_refused = _signals.signal("flask-ssecors.request-refused")


class StatsSnapshot(t.TypedDict):
    """What :meth:`~flask_ssecors.SSECors.stats` returns."""

    open_streams: int
    streams_opened: int
    streams_closed: int
    events_sent: int
    refused_origins: dict[str, int]
    token_refusals: dict[str, int]
    slow_clients_dropped: int
    streams_refused_busy: int
    streams_ended: dict[str, int]
    faults: dict[str, int]
    presence: dict[str, int]


class PrometheusCollector:
    """A ``prometheus_client`` collector for the flask-ssecors statistics of ``app``.

    :param app: the Flask app flask-ssecors is registered on.
    :param prefix: the metric name prefix.

    Metrics (per worker process): ``<prefix>_open_streams`` (gauge),
    ``<prefix>_streams_opened_total``, ``<prefix>_streams_closed_total``,
    ``<prefix>_events_sent_total``, ``<prefix>_slow_clients_dropped_total``,
    ``<prefix>_streams_refused_busy_total``, and, labelled by ``reason``,
    ``<prefix>_refused_origins_total``, ``<prefix>_token_refusals_total`` and
    ``<prefix>_streams_ended_total``; labelled by ``stage``, ``<prefix>_faults_total``;
    ``<prefix>_presence_members`` and ``<prefix>_presence_streams`` (gauges) and
    ``<prefix>_presence_updates_total``.

    .. versionadded:: 0.1
    """

    def __init__(self, app: Flask, prefix: str = "ssecors") -> None:
        self.app = app
        self.prefix = prefix

    def collect(self) -> cabc.Iterator[t.Any]:
        """Yield the metrics (called by ``prometheus_client`` on each scrape)."""
        from prometheus_client.core import CounterMetricFamily
        from prometheus_client.core import GaugeMetricFamily

        stats: StatsSnapshot = self.app.extensions["ssecors"].stats()
        p = self.prefix
        yield GaugeMetricFamily(f"{p}_open_streams", "Open streams.", value=stats["open_streams"])
        for name, help_text in (
            ("streams_opened", "Streams opened."),
            ("streams_closed", "Streams closed."),
            ("events_sent", "Events sent, heartbeats not counted."),
            ("slow_clients_dropped", "Clients cut off for being too slow."),
            ("streams_refused_busy", "Stream requests turned away at capacity or shutdown."),
        ):
            value = t.cast(int, stats[name])  # type: ignore[literal-required]
            yield CounterMetricFamily(f"{p}_{name}", help_text, value=value)
        for name, help_text in (
            ("refused_origins", "Requests refused by the CORS policy."),
            ("token_refusals", "Requests refused for their stream token."),
            ("streams_ended", "Streams ended by the server."),
        ):
            family = CounterMetricFamily(f"{p}_{name}", help_text, labels=["reason"])
            counts = t.cast("dict[str, int]", stats[name])  # type: ignore[literal-required]
            for reason, count in sorted(counts.items()):
                family.add_metric([reason], count)
            yield family
        faults = CounterMetricFamily(f"{p}_faults", "Faults contained.", labels=["stage"])
        for stage, count in sorted(stats["faults"].items()):
            faults.add_metric([stage], count)
        yield faults
        presence = stats["presence"]
        yield GaugeMetricFamily(
            f"{p}_presence_members",
            "(channel, member) pairs with a stream in this process.",
            value=presence.get("members", 0),
        )
        yield GaugeMetricFamily(
            f"{p}_presence_streams",
            "Streams that declared a member.",
            value=presence.get("streams", 0),
        )
        yield CounterMetricFamily(
            f"{p}_presence_updates",
            "Presence changes written to the broker.",
            value=presence.get("updates", 0),
        )
