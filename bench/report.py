"""Turn one ``python -m bench`` result into the tables people read: ratios against the bare floor
and against the peers, the checks the benchmark exists for, and CSV files the docs include.

``python -m bench.report bench/results/<timestamp>.json [--docs]`` rebuilds them from a saved
result; :mod:`bench.__main__` calls :func:`render` at the end of every run.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import typing as t
from pathlib import Path

from ._common import markdown_table
from ._common import ratio
from .peers import label
from .peers import OURS
from .peers import PEERS

#: The design's target: flask-ssecors within 1.3x of the floor on memory and CPU per event.
TARGET_RATIO = 1.3
#: Quick mode must finish within this many seconds on the 2-core machine.
QUICK_BUDGET_S = 600
FLOOR = "bare"


def _rows(result: dict[str, t.Any]) -> list[dict[str, t.Any]]:
    streams = result.get("streams")
    return list(streams["summary"]) if streams else []


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def floor_table(result: dict[str, t.Any]) -> tuple[list[str], list[list[str]]]:
    """Every app against the bare floor, per size: absolute value and ratio."""
    headers = [
        "N",
        "app",
        "KiB/stream",
        "x floor",
        "µs CPU/event",
        "x floor",
        "deliveries/CPU-s",
        "x floor",
        "p99 ms",
        "x floor",
        "opens/CPU-s",
        "x floor",
    ]
    rows = []
    for row in _rows(result):
        base = row.get(FLOOR)
        for app in result["streams"]["settings"]["apps"]:
            data = row.get(app)
            if data is None:
                rows.append([str(row["streams"]), label(app), *["failed"] * 10])
                continue
            cells = [str(row["streams"]), label(app)]
            for key, digits in (
                ("kib_per_stream", 1),
                ("cpu_us_per_event", 1),
                ("deliveries_per_cpu_s", 0),
                ("p99_ms", 0),
                ("setup_per_cpu_s", 0),
            ):
                cells.append(_fmt(data[key], digits))
                cells.append(_fmt(ratio(data[key], base[key])) + "x" if base else "n/a")
            rows.append(cells)
    return headers, rows


def peer_table(result: dict[str, t.Any]) -> tuple[list[str], list[list[str]]]:
    """flask-ssecors against each peer, per size: deliveries per CPU second (higher is better)
    and p99 fan-out latency (lower is better), as ours / theirs."""
    headers = [
        "N",
        "flask-ssecors",
        "peer",
        "deliveries/CPU-s, ours / peer",
        "p99 latency, ours / peer",
        "p50 latency, ours / peer",
        "KiB/stream, ours / peer",
    ]
    rows = []
    for row in _rows(result):
        for ours in OURS:
            for peer in PEERS:
                a, b = row.get(ours), row.get(peer)
                if a is None or b is None:
                    continue
                rows.append(
                    [
                        str(row["streams"]),
                        label(ours),
                        label(peer),
                        _fmt(ratio(a["deliveries_per_cpu_s"], b["deliveries_per_cpu_s"])) + "x",
                        _fmt(ratio(a["p99_ms"], b["p99_ms"])) + "x",
                        _fmt(ratio(a["p50_ms"], b["p50_ms"])) + "x",
                        _fmt(ratio(a["kib_per_stream"], b["kib_per_stream"])) + "x",
                    ]
                )
    return headers, rows


def cors_table(result: dict[str, t.Any]) -> tuple[list[str], list[list[str]]]:
    """The CORS decision alone (direct WSGI calls): µs per request and ratios."""
    headers = [
        "request",
        "bare µs",
        "flask-ssecors µs",
        "flask-cors µs",
        "flask-ssecors / bare",
        "flask-cors / bare",
        "flask-ssecors / flask-cors",
        "added: flask-ssecors / flask-cors",
    ]
    cors = result.get("cors_overhead")
    if not cors:
        return headers, []
    rows = [
        [
            row["scenario"],
            _fmt(row["us"]["bare"], 1),
            _fmt(row["us"]["ssecors"], 1),
            _fmt(row["us"]["flask-cors"], 1),
            _fmt(row["ssecors_vs_bare"]) + "x",
            _fmt(row["flask_cors_vs_bare"]) + "x",
            _fmt(row["ssecors_vs_flask_cors"]) + "x",
            _fmt(row.get("added_vs_flask_cors_added", float("nan"))),
        ]
        for row in cors["wsgi"]["rows"]
    ]
    return headers, rows


def checks(result: dict[str, t.Any]) -> list[dict[str, t.Any]]:
    """The "must show" list of the benchmark issue, each with the numbers behind it."""
    found: list[dict[str, t.Any]] = []
    if result.get("mode") == "quick" and "seconds" in result:
        seconds = float(result["seconds"])
        found.append(
            {
                "check": f"quick mode finishes in under {QUICK_BUDGET_S // 60} minutes",
                "holds": seconds < QUICK_BUDGET_S,
                "evidence": f"{seconds:.0f} s of benchmarks",
            }
        )
    rows = _rows(result)
    for key, what in (("kib_per_stream", "memory per stream"), ("cpu_us_per_event", "CPU/event")):
        values = [
            (row["streams"], ratio(row["ssecors"][key], row[FLOOR][key]))
            for row in rows
            if "ssecors" in row and FLOOR in row
        ]
        if values:
            found.append(
                {
                    "check": (
                        f"flask-ssecors (memory) within {TARGET_RATIO}x of the floor on {what}"
                    ),
                    "holds": all(value <= TARGET_RATIO for _, value in values),
                    "evidence": ", ".join(f"{value:.2f}x at {n}" for n, value in values),
                }
            )
    largest = max(rows, key=lambda row: row["streams"]) if rows else None
    if largest is not None:
        n = largest["streams"]
        for key, what, better in (
            ("deliveries_per_cpu_s", "deliveries per CPU second", "higher"),
            ("p99_ms", "p99 fan-out latency", "lower"),
        ):
            pairs = [
                (ours, peer, ratio(largest[ours][key], largest[peer][key]))
                for ours in OURS
                for peer in PEERS
                if ours in largest and peer in largest
            ]
            if not pairs:
                continue
            holds = all((value > 1) if better == "higher" else (value < 1) for *_, value in pairs)
            found.append(
                {
                    "check": f"flask-ssecors ahead of the peers on {what} at {n} subscribers "
                    f"({better} is better)",
                    "holds": holds,
                    "evidence": "; ".join(
                        f"{label(ours)} / {label(peer)}: {value:.2f}x"
                        for ours, peer, value in pairs
                    ),
                }
            )
    return found


def markdown(result: dict[str, t.Any], json_path: Path | None = None) -> str:
    """The whole report as Markdown."""
    info = result["machine"]
    parts = [
        f"## flask-ssecors benchmarks ({result['mode']}, {result['started']})",
        f"Machine: **{info['nproc']} CPU cores** available ({info['cpu_model']}), Python "
        f"{info['python']}, load average {info['loadavg'][0]:.2f} at start; shared and noisy, "
        "so every comparison is between apps measured in the same run. Versions: "
        + ", ".join(f"{name} {version}" for name, version in info["versions"].items())
        + f". Reproduce: `{result['command']}`"
        + (f"; raw results in `{json_path}`." if json_path else "."),
    ]
    found = checks(result)
    if found:
        parts.append(
            "### Checks\n\n"
            + markdown_table(
                ("check", "holds", "evidence"),
                [(c["check"], "yes" if c["holds"] else "**no**", c["evidence"]) for c in found],
            )
        )
    if _rows(result):
        headers, rows = floor_table(result)
        parts.append("### Against the bare gevent floor\n\n" + markdown_table(headers, rows))
        headers, rows = peer_table(result)
        parts.append("### flask-ssecors against the peers\n\n" + markdown_table(headers, rows))
    headers, rows = cors_table(result)
    if rows:
        parts.append(
            "### CORS decision alone (direct WSGI call, µs per request)\n\n"
            + markdown_table(headers, rows)
        )
    return "\n\n".join(parts)


def write_csvs(result: dict[str, t.Any], directory: Path) -> list[Path]:
    """The tables as CSV files (for ``.. csv-table::`` in the docs) and a one-line description
    of the run (``run.txt``, for ``.. include::``); the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    tables = {
        "floor.csv": floor_table(result),
        "peers.csv": peer_table(result),
        "cors.csv": cors_table(result),
        "checks.csv": (
            ["check", "holds", "evidence"],
            [[c["check"], "yes" if c["holds"] else "no", c["evidence"]] for c in checks(result)],
        ),
    }
    info = result["machine"]
    run = directory / "run.txt"
    run.write_text(
        f"Run shown: ``{result['command']}`` ({result['mode']} mode), started "
        f"{result['started']} on {info['nproc']} CPU cores ({info['cpu_model']}), load average "
        f"{info['loadavg'][0]:.2f} at start; the benchmarks took "
        f"{result.get('seconds', 0):.0f} s.\n"
    )
    written.append(run)
    for name, (headers, rows) in tables.items():
        if not rows:
            continue
        path = directory / name
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(headers)
            writer.writerows(rows)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """Print the report of a saved result; with ``--docs``, refresh the docs' CSVs and plots."""
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__)
    parser.add_argument("result", type=Path, help="a bench/results/<timestamp>.json file")
    parser.add_argument("--docs", action="store_true", help="write docs/_static/bench/")
    args = parser.parse_args(argv)
    result = json.loads(args.result.read_text())
    print(markdown(result, args.result))
    if args.docs:
        from . import plots
        from ._common import ROOT

        target = ROOT / "docs" / "_static" / "bench"
        for path in [*write_csvs(result, target), *plots.draw(result, target)]:
            print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
