"""Aggregates computed straight from the events sent, independently of the dataflow's code: plain Python
grouping by each roll-up's windows and dimensions. Used to check what Pinot holds."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from livedash.pipeline.settings import PipelineSettings

GroupKey = tuple[str, int, tuple[str, ...]]  # rollup, window start, dimension values


@dataclass
class Truth:
    count: int = 0
    sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    mins: dict[str, float] = field(default_factory=dict)
    maxs: dict[str, float] = field(default_factory=dict)
    users: set[str] = field(default_factory=set)
    quantile_values: list[float] = field(default_factory=list)


def ground_truth(events: list[dict[str, Any]], pipeline: PipelineSettings) -> dict[GroupKey, Truth]:
    out: dict[GroupKey, Truth] = defaultdict(Truth)
    metrics = list(pipeline.events.metrics)
    qfield = pipeline.sketches.quantile_field
    for rollup in pipeline.rollups:
        size = rollup.window.size_s * 1000
        step = rollup.window.pane_s * 1000
        for ev in events:
            ts = ev["ts"]
            first = ts - ts % step - size + step
            dims = tuple(str(ev.get(d, "__none__")) for d in rollup.dimensions)
            for ws in range(first, ts - ts % step + 1, step):
                if not ws <= ts < ws + size:
                    continue
                t = out[(rollup.name, ws, dims)]
                t.count += 1
                t.users.add(ev["user_id"])
                for m in metrics:
                    if m in ev:
                        v = float(ev[m])
                        t.sums[m] += v
                        t.counts[m] += 1
                        t.mins[m] = min(t.mins.get(m, v), v)
                        t.maxs[m] = max(t.maxs.get(m, v), v)
                if qfield in ev:
                    t.quantile_values.append(float(ev[qfield]))
    return out
