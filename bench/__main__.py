"""``python -m bench``: run the CORS overhead and stream benchmarks, save JSON, print Markdown.

``--quick`` (the default; what ``make bench`` runs) finishes in a few minutes: 1,000 and 5,000
streams, 10 events. ``--full`` goes up to 10,000 streams with 20 events and more CORS rounds.
Results go to ``bench/results/<timestamp>.json`` (gitignored); server and load generator logs to
``bench/results/logs/``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time

from . import cors_overhead
from . import streams
from ._common import machine
from ._common import RESULTS


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.partition("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="full", action="store_false", help="small sizes (default)")
    mode.add_argument("--full", dest="full", action="store_true", help="up to 10,000 streams")
    parser.add_argument("--only", choices=("cors", "streams"), help="run one of the two benchmarks")
    parser.set_defaults(full=False)
    parser.add_argument("--sizes", help="comma-separated stream counts, e.g. 1000,5000")
    parser.add_argument("--events", type=int, help="events published per stream run")
    parser.add_argument("--heartbeat", type=float, default=5.0, help="flask-ssecors heartbeat s")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every stream run")
    parser.add_argument(
        "--apps",
        default=",".join(streams.APPS),
        help=f"stream apps, baseline first (experiments: {', '.join(streams.EXPERIMENTS)})",
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
        sections.append("### CORS decision overhead\n\n" + cors_overhead.to_markdown(cors))
    if args.only in (None, "streams"):
        sizes = (10000, 5000, 1000) if args.full else (5000, 1000)
        if args.sizes:
            sizes = tuple(int(size) for size in args.sizes.split(","))
        settings = streams.Settings(
            sizes=sizes,
            count=args.events or (20 if args.full else 10),
            heartbeat=args.heartbeat,
            idle=2 * args.heartbeat + 2 if args.full else args.heartbeat + 1,
            rounds=args.rounds,
            profile=args.profile,
            gc_freeze=args.gc_freeze,
            apps=tuple(args.apps.split(",")),
        )
        print(f"running the stream benchmark {settings} ...", file=sys.stderr, flush=True)
        stream_result = streams.run(settings)
        result["streams"] = stream_result
        sections.append("### Concurrent streams\n\n" + streams.to_markdown(stream_result))
    result["seconds"] = time.monotonic() - begin
    result["machine_after"] = {"loadavg": machine()["loadavg"]}

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")

    info = result["machine"]
    assert isinstance(info, dict)
    header = (
        f"## flask-ssecors benchmarks ({result['mode']}, {result['started']})\n\n"
        f"Machine: {info['nproc']} CPUs available ({info['cpu_model']}), Python "
        f"{info['python']}, load average at start {info['loadavg'][0]:.2f}, "
        f"commit {str(info['git_commit'])[:12]}; versions {info['versions']}.\n"
        f"Took {result['seconds']:.0f} s; raw results in `{path.relative_to(RESULTS.parents[1])}`."
    )
    print("\n\n".join([header, *sections]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
