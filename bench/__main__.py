"""``python -m bench``: run the CORS overhead and stream benchmarks, save JSON, print Markdown.

Every app of :data:`bench.peers.APPS` (the bare gevent floor, flask-ssecors with the memory and
the Redis broker, flask-sse, sse-starlette) goes through the same stream scenarios in the same
run (see :mod:`bench.streams`), and the CORS decision alone is timed against flask-cors (see
:mod:`bench.cors_overhead`).

``--quick`` (the default; what ``make bench`` runs) takes about seven minutes on 2 cores: 1,000
and 10,000 streams, 6 events. ``--full`` runs 1,000, 2,500, 5,000 and 10,000 streams with 20
events, watches every app release its streams, and times more CORS rounds.
Results go to ``bench/results/<timestamp>.json`` with the report beside it (``.md``) and the plots
in ``bench/results/<timestamp>/`` (all gitignored); server and load generator logs to
``bench/results/logs/``. ``--docs`` also refreshes ``docs/_static/bench/`` (CSV tables and PNGs
that ``docs/benchmarks.rst`` shows).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
import typing as t

from . import cors_overhead
from . import plots
from . import report
from . import streams
from ._common import machine
from ._common import RESULTS
from ._common import ROOT
from .peers import APPS


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.partition("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="full", action="store_false", help="small sizes (default)")
    mode.add_argument("--full", dest="full", action="store_true", help="more sizes, events, rounds")
    parser.add_argument("--only", choices=("cors", "streams"), help="run one of the two benchmarks")
    parser.set_defaults(full=False)
    parser.add_argument("--sizes", help="comma-separated stream counts, e.g. 1000,5000")
    parser.add_argument("--events", type=int, help="events published per stream run")
    parser.add_argument("--heartbeat", type=float, default=5.0, help="flask-ssecors heartbeat s")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every stream run")
    parser.add_argument(
        "--apps",
        default=",".join(APPS),
        help="stream apps, baseline first",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the worker while publishing (needs py-spy in the venv; skews the CPU numbers)",
    )
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="experiment: gc.freeze() in the worker (both apps) once the streams are open",
    )
    parser.add_argument(
        "--docs", action="store_true", help="also write the tables and plots to docs/_static/bench"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run, save and print; return the exit status."""
    args = _parse(argv)
    started = datetime.datetime.now(datetime.UTC)
    result: dict[str, object] = {
        "started": started.isoformat(timespec="seconds"),
        "mode": "full" if args.full else "quick",
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
        "machine": machine(),
    }
    sections = []
    begin = time.monotonic()
    if args.only in (None, "cors"):
        print("running the CORS overhead benchmark ...", file=sys.stderr, flush=True)
        cors = cors_overhead.run(quick=not args.full)
        result["cors_overhead"] = cors
        sections.append("CORS decision overhead\n\n" + cors_overhead.to_markdown(cors))
    if args.only in (None, "streams"):
        sizes = (10000, 5000, 2500, 1000) if args.full else (10000, 1000)
        if args.sizes:
            sizes = tuple(int(size) for size in args.sizes.split(","))
        settings = streams.Settings(
            sizes=sizes,
            count=args.events or (20 if args.full else 6),
            heartbeat=args.heartbeat,
            idle=2 * args.heartbeat + 2 if args.full else args.heartbeat + 1,
            rounds=args.rounds,
            profile=args.profile,
            gc_freeze=args.gc_freeze,
            apps=tuple(args.apps.split(",")),
            release=args.full,
        )
        print(f"running the stream benchmark {settings} ...", file=sys.stderr, flush=True)
        stream_result = streams.run(settings)
        result["streams"] = stream_result
        sections.append("concurrent streams\n\n" + streams.to_markdown(stream_result))
    result["seconds"] = time.monotonic() - begin
    result["machine_after"] = {"loadavg": machine()["loadavg"]}

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{stamp}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    # The JSON round trip turns NaN and tuples into what a saved result holds.
    saved = json.loads(path.read_text())
    relative = path.relative_to(ROOT)
    text = report.markdown(saved, relative)
    details = "\n\n".join(f"#### Details: {section}" for section in sections)
    (RESULTS / f"{stamp}.md").write_text(text + "\n\n" + details + "\n")
    written = plots.draw(saved, RESULTS / stamp)
    if args.docs:
        target = ROOT / "docs" / "_static" / "bench"
        written += report.write_csvs(saved, target) + plots.draw(saved, target)
    print(text + "\n\n" + details)
    for figure in written:
        print(f"wrote {figure.relative_to(ROOT)}", file=sys.stderr)
    failed = failures(saved)
    if failed:
        print("\nFAILED: these runs produced no figures, so the tables above are incomplete:")
        print("\n".join(f"- {line}" for line in failed))
        return 1
    return 0


def failures(result: dict[str, t.Any]) -> list[str]:
    """Every run of a saved result that failed, in words (empty when all ran)."""
    runs = result.get("streams", {}).get("runs", [])
    return [
        f"{one['app']} x {one['streams']}: {one.get('error') or 'failed'}"
        + (f" (server log: {one['server_log']})" if one.get("server_log") else "")
        for one in runs
        if not one.get("ok")
    ]


if __name__ == "__main__":
    sys.exit(main())
