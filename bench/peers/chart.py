"""The PNG chart of one bench.peers run: events per second (median of the runs), CPU seconds per million events,
and freshness p50/p95/p99 at the fixed rate, one bar per peer. Needs the `bench` extra (matplotlib).

    .venv/bin/python -m bench.peers.chart RESULTS.json OUT.png   # re-draw from a run's saved figures
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def render(figures: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peers = figures["throughput"]
    fresh = figures.get("freshness", [])
    fig, axes = plt.subplots(1, 3 if fresh else 2, figsize=(16 if fresh else 11, 5.5))
    names = [p["peer"] for p in peers]
    colours = ["#1f6feb" if n.startswith("livedash") else "#8b949e" for n in names]
    ax = axes[0]
    ax.barh(names, [p["events_per_s"] for p in peers], color=colours)
    ax.set_xlabel("events per second (median of runs; higher is better)")
    ax.invert_yaxis()
    ax = axes[1]
    ax.barh(names, [p["cpu_s_per_million"] for p in peers], color=colours)
    ax.set_xlabel("CPU seconds per million events (lower is better)")
    ax.invert_yaxis()
    ax.set_yticklabels([])
    if fresh:
        ax = axes[2]
        labels = [f["peer"] for f in fresh]
        y = range(len(labels))
        for i, (key, shade) in enumerate((("p50_s", "#1f6feb"), ("p95_s", "#6e9ef5"), ("p99_s", "#b6cdfa"))):
            ax.barh([v + 0.27 * (i - 1) for v in y], [f[key] for f in fresh], height=0.27, color=shade,
                    label=key[:-2])  # fmt: skip
        ax.set_yticks(list(y), labels)
        ax.set_xlabel(f"freshness at {figures['freshness_rate']:,.0f} events/s, s (lower is better)")
        ax.invert_yaxis()
        ax.legend(loc="lower right")
    fig.suptitle(f"{figures['events']:,} events, {figures['partitions']} partitions, {figures['runs']} runs; "
                 f"{figures['machine']}", fontsize=10)  # fmt: skip
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


if __name__ == "__main__":
    render(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))
