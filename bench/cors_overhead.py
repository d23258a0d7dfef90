"""Per-request cost of the CORS decision: bare Flask vs flask-ssecors vs flask-cors.

The same tiny view (``return "ok"``) is served by three apps built in this process:

``bare``
    Flask with no CORS at all: the floor.
``ssecors``
    ``@sse.cors()`` with a policy of three exact origins, one wildcard
    (``https://*.example.org``) and credentials.
``flask-cors``
    ``CORS(app, origins=[...], supports_credentials=True)`` with the same exact origins. flask-cors
    has no ``*.domain`` syntax: a string with regex characters is compiled as a regex and matched
    with ``re.match`` (anchored at the start only) and case-insensitively, so the wildcard is
    given as the compiled regex :data:`FLASK_CORS_WILDCARD`, anchored at both ends.

Two measurements, both in-process:

``wsgi``
    ``app.wsgi_app(environ, start_response)`` with prebuilt environs (copied per call, since
    Flask writes into them) and the body consumed and closed: the least noise.
``client``
    ``app.test_client().open(...)``: what tests see; more fixed overhead, so smaller ratios.

Variants are interleaved in a rotating order inside every round; each round times a batch of
calls per variant and scenario. The tables give the median over rounds of the per-request time,
and ratios computed per round (paired, so slow phases of a noisy machine cancel) then the median.

Semantics differ on refusal: flask-ssecors answers ``403`` without running the view, flask-cors
runs the view and only leaves the CORS headers out (the browser then hides the body).
"""

from __future__ import annotations

import collections.abc as cabc
import gc
import re
import time
import typing as t

from flask import Flask
from werkzeug.test import EnvironBuilder

from ._common import markdown_table
from ._common import median
from ._common import ratio

EXACT_ORIGINS = (
    "https://app.example.com",
    "https://admin.example.com",
    "https://partner.example.net",
)
SSECORS_WILDCARD = "https://*.example.org"
#: flask-cors' spelling of ``https://*.example.org``: one or more labels, anchored at both ends.
FLASK_CORS_WILDCARD = re.compile(r"https://(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+example\.org\Z")
ALLOWED_HEADERS = ("Last-Event-ID", "Cache-Control", "Content-Type")
VARIANTS = ("bare", "ssecors", "flask-cors")


class Scenario(t.NamedTuple):
    """One kind of request, and what each variant must answer (checked before timing)."""

    name: str
    method: str
    headers: dict[str, str]
    #: variant -> (status, Access-Control-Allow-Origin or None)
    expected: dict[str, tuple[int, str | None]]


SCENARIOS = (
    Scenario(
        "allowed GET (exact origin)",
        "GET",
        {"Origin": "https://app.example.com"},
        {
            "bare": (200, None),
            "ssecors": (200, "https://app.example.com"),
            "flask-cors": (200, "https://app.example.com"),
        },
    ),
    Scenario(
        "allowed GET (wildcard origin)",
        "GET",
        {"Origin": "https://eu.cdn.example.org"},
        {
            "bare": (200, None),
            "ssecors": (200, "https://eu.cdn.example.org"),
            "flask-cors": (200, "https://eu.cdn.example.org"),
        },
    ),
    Scenario(
        "refused origin",
        "GET",
        {"Origin": "https://evil.example.net"},
        {"bare": (200, None), "ssecors": (403, None), "flask-cors": (200, None)},
    ),
    Scenario(
        "preflight",
        "OPTIONS",
        {
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "last-event-id",
        },
        {
            "bare": (200, None),
            "ssecors": (204, "https://app.example.com"),
            "flask-cors": (200, "https://app.example.com"),
        },
    ),
    Scenario(
        "no Origin",
        "GET",
        {},
        # flask-cors' default ``always_send=True`` sends its first literal origin even then.
        {"bare": (200, None), "ssecors": (200, None), "flask-cors": (200, EXACT_ORIGINS[1])},
    ),
)


def _ok() -> str:
    return "ok"


def build_apps() -> dict[str, Flask]:
    """The three apps, each with one view at ``/ok``."""
    bare = Flask("bench_bare")
    bare.get("/ok")(_ok)

    from flask_ssecors import SSECors

    ssecors = Flask("bench_ssecors")
    ssecors.config.update(
        SSECORS_ALLOWED_ORIGINS=[*EXACT_ORIGINS, SSECORS_WILDCARD],
        SSECORS_ALLOW_CREDENTIALS=True,
    )
    sse = SSECors(ssecors)
    ssecors.get("/ok")(sse.cors()(_ok))

    from flask_cors import CORS

    flask_cors = Flask("bench_flask_cors")
    CORS(
        flask_cors,
        origins=[*EXACT_ORIGINS, FLASK_CORS_WILDCARD],
        supports_credentials=True,
        allow_headers=list(ALLOWED_HEADERS),
        methods=["GET", "HEAD", "POST"],
        max_age=600,
    )
    flask_cors.get("/ok")(_ok)
    return {"bare": bare, "ssecors": ssecors, "flask-cors": flask_cors}


def _environ(scenario: Scenario) -> dict[str, t.Any]:
    builder = EnvironBuilder(
        path="/ok",
        method=scenario.method,
        headers=scenario.headers,
        base_url="http://api.example.com/",
    )
    try:
        return builder.get_environ()
    finally:
        builder.close()


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: object = None) -> None:
    return None


def check(apps: dict[str, Flask]) -> list[str]:
    """Check every variant answers every scenario as expected; return the problems found."""
    problems = []
    for scenario in SCENARIOS:
        for name, app in apps.items():
            client = app.test_client()
            response = client.open("/ok", method=scenario.method, headers=scenario.headers)
            got = (response.status_code, response.headers.get("Access-Control-Allow-Origin"))
            expected = scenario.expected[name]
            if got != expected:
                problems.append(f"{name} / {scenario.name}: got {got}, expected {expected}")
    return problems


def _wsgi_batch(app: Flask, environ: dict[str, t.Any], count: int) -> float:
    """Seconds per request over ``count`` direct ``wsgi_app`` calls."""
    call = app.wsgi_app
    copy = environ.copy
    start_response = _start_response
    begin = time.perf_counter()
    for _ in range(count):
        body = call(copy(), start_response)
        for _chunk in body:
            pass
        body.close()  # type: ignore[attr-defined]
    return (time.perf_counter() - begin) / count


def _client_batch(app: Flask, scenario: Scenario, count: int) -> float:
    """Seconds per request over ``count`` test-client requests."""
    client = app.test_client()
    method, headers = scenario.method, scenario.headers
    begin = time.perf_counter()
    for _ in range(count):
        client.open("/ok", method=method, headers=headers).close()
    return (time.perf_counter() - begin) / count


def _measure(
    apps: dict[str, Flask],
    batch: cabc.Callable[[Flask, Scenario], float],
    rounds: int,
) -> dict[str, dict[str, list[float]]]:
    """Interleaved rounds: scenario -> variant -> per-round µs/request."""
    times: dict[str, dict[str, list[float]]] = {
        s.name: {v: [] for v in VARIANTS} for s in SCENARIOS
    }
    for scenario in SCENARIOS:  # warm up caches, lazy imports, url maps
        for name in VARIANTS:
            batch(apps[name], scenario)
    for number in range(rounds):
        gc.collect()
        order = VARIANTS[number % 3 :] + VARIANTS[: number % 3]
        for scenario in SCENARIOS:
            for name in order:
                times[scenario.name][name].append(batch(apps[name], scenario) * 1e6)
    return times


def _summarise(times: dict[str, dict[str, list[float]]]) -> list[dict[str, object]]:
    rows = []
    for scenario, by_variant in times.items():
        bare, ours, theirs = (by_variant[v] for v in VARIANTS)
        rows.append(
            {
                "scenario": scenario,
                "us": {v: median(by_variant[v]) for v in VARIANTS},
                "us_min": {v: min(by_variant[v]) for v in VARIANTS},
                "ssecors_vs_bare": median(ratio(o, b) for o, b in zip(ours, bare, strict=True)),
                "flask_cors_vs_bare": median(
                    ratio(o, b) for o, b in zip(theirs, bare, strict=True)
                ),
                "ssecors_vs_flask_cors": median(
                    ratio(o, b) for o, b in zip(ours, theirs, strict=True)
                ),
                # What flask-ssecors adds over bare Flask, as a share of what flask-cors adds
                # (per round, then the median): the goal is at most 0.5 for allowed origins.
                "added_vs_flask_cors_added": median(
                    ratio(o - b, f - b) for o, f, b in zip(ours, theirs, bare, strict=True)
                ),
                "rounds": len(bare),
            }
        )
    return rows


def run(quick: bool = True) -> dict[str, object]:
    """Check the apps, then measure both ways; return a JSON-able result.

    :param quick: fewer rounds and smaller batches (a few seconds instead of about a minute).
    """
    apps = build_apps()
    problems = check(apps)
    if problems:
        raise RuntimeError("the benchmark apps do not behave as expected:\n" + "\n".join(problems))
    environs = {s.name: _environ(s) for s in SCENARIOS}
    wsgi_rounds, wsgi_count = (15, 300) if quick else (41, 1000)
    client_rounds, client_count = (9, 150) if quick else (21, 400)

    def wsgi(app: Flask, scenario: Scenario) -> float:
        return _wsgi_batch(app, environs[scenario.name], wsgi_count)

    def client(app: Flask, scenario: Scenario) -> float:
        return _client_batch(app, scenario, client_count)

    return {
        "policy": {
            "ssecors_origins": [*EXACT_ORIGINS, SSECORS_WILDCARD],
            "flask_cors_origins": [*EXACT_ORIGINS, FLASK_CORS_WILDCARD.pattern],
            "credentials": True,
        },
        "wsgi": {
            "rounds": wsgi_rounds,
            "batch": wsgi_count,
            "rows": _summarise(_measure(apps, wsgi, wsgi_rounds)),
        },
        "client": {
            "rounds": client_rounds,
            "batch": client_count,
            "rows": _summarise(_measure(apps, client, client_rounds)),
        },
    }


def to_markdown(result: dict[str, t.Any]) -> str:
    """The result as Markdown tables."""
    parts = []
    for mode, title in (
        ("wsgi", "direct `app.wsgi_app(environ, start_response)`"),
        ("client", "`app.test_client()`"),
    ):
        data = result[mode]
        rows = [
            (
                row["scenario"],
                row["us"]["bare"],
                row["us"]["ssecors"],
                row["us"]["flask-cors"],
                f"{row['ssecors_vs_bare']:.2f}x",
                f"{row['flask_cors_vs_bare']:.2f}x",
                f"{row['ssecors_vs_flask_cors']:.2f}x",
                f"{row['added_vs_flask_cors_added']:.2f}",
            )
            for row in data["rows"]
        ]
        parts.append(
            f"CORS overhead, {title}: median µs/request over {data['rounds']} interleaved rounds "
            f"of {data['batch']} requests; ratios are medians of per-round ratios. The last "
            "column is what flask-ssecors adds over bare Flask divided by what flask-cors adds.\n\n"
            + markdown_table(
                (
                    "scenario",
                    "bare µs",
                    "ssecors µs",
                    "flask-cors µs",
                    "ssecors/bare",
                    "flask-cors/bare",
                    "ssecors/flask-cors",
                    "added: ssecors/flask-cors",
                ),
                rows,
            )
        )
    parts.append(
        "Refused origin: flask-ssecors answers 403 without running the view; flask-cors and bare "
        "run the view (200, no CORS headers). Preflight: bare Flask answers with its automatic "
        "OPTIONS (200), flask-cors decorates that response, flask-ssecors answers 204 itself. "
        "flask-cors wildcard given as the regex "
        f"`{FLASK_CORS_WILDCARD.pattern}` (it matches origins case-insensitively with "
        "`re.match`, so the regex must be anchored at the end). Without an Origin, flask-cors "
        "(default `always_send=True`) still sends `Access-Control-Allow-Origin` with its first "
        "literal origin."
    )
    return "\n\n".join(parts)


def main() -> None:
    """``python -m bench.cors_overhead [--full]``: run and print the tables."""
    import sys

    result = run(quick="--full" not in sys.argv[1:])
    print(to_markdown(result))


if __name__ == "__main__":
    main()
