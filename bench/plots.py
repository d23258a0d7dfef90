"""PNG plots of one ``python -m bench`` result (matplotlib, no display needed).

- ``latency_vs_subscribers.png``: publish-to-receive p50 and p99 against the number of
  subscribers, one line per app;
- ``memory_vs_streams.png``: worker RSS growth against the number of open streams (and, for the
  Redis apps, redis-server's growth dashed).
"""

from __future__ import annotations

import typing as t
from pathlib import Path

from .peers import label

STYLE = {
    "bare": ("#7f7f7f", "o"),
    "ssecors": ("#1f77b4", "s"),
    "ssecors_redis": ("#17becf", "D"),
    "flasksse": ("#d62728", "^"),
    "starlette": ("#ff7f0e", "v"),
}


def _series(result: dict[str, t.Any], app: str, key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for row in result["streams"]["summary"]:
        data = row.get(app)
        if data is not None and data.get(key) is not None:
            xs.append(row["streams"])
            ys.append(data[key])
    return xs, ys


def _caption(result: dict[str, t.Any]) -> str:
    info = result["machine"]
    return f"{result['mode']} run {result['started']}, {info['nproc']} CPU cores, same run for all"


def draw(result: dict[str, t.Any], directory: Path) -> list[Path]:
    """Write the plots into ``directory``; return their paths (none without stream results)."""
    if not result.get("streams") or not result["streams"]["summary"]:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    apps = result["streams"]["settings"]["apps"]
    written = []

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for axis, key, title in ((axes[0], "p50_ms", "p50"), (axes[1], "p99_ms", "p99")):
        for app in apps:
            xs, ys = _series(result, app, key)
            if xs:
                color, marker = STYLE.get(app, ("black", "."))
                axis.plot(xs, ys, color=color, marker=marker, label=label(app))
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("subscribers")
        axis.set_title(f"{title} publish → receive latency")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("ms (log scale)")
    axes[1].legend(fontsize=8)
    figure.suptitle(f"Broadcast fan-out, 1 event/s ({_caption(result)})", fontsize=9)
    figure.tight_layout()
    path = directory / "latency_vs_subscribers.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    written.append(path)

    figure, axis = plt.subplots(figsize=(7, 4.2))
    for app in apps:
        xs, ys = _series(result, app, "kib_per_stream")
        if not xs:
            continue
        color, marker = STYLE.get(app, ("black", "."))
        axis.plot(
            xs,
            [x * y / 1024 for x, y in zip(xs, ys, strict=True)],
            color=color,
            marker=marker,
            label=f"{label(app)} (workers)",
        )
        rx, ry = _series(result, app, "redis_kib_per_stream")
        if rx:
            axis.plot(
                rx,
                [x * y / 1024 for x, y in zip(rx, ry, strict=True)],
                color=color,
                marker=marker,
                linestyle="--",
                label=f"{label(app)} (redis-server)",
            )
    axis.set_xlabel("open streams")
    axis.set_ylabel("RSS growth, MiB")
    axis.set_title(f"Memory held by open streams\n{_caption(result)}", fontsize=9)
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    path = directory / "memory_vs_streams.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    written.append(path)
    return written
