"""bench.hotpath --row-bytes: every aggregate row out is tallied, with its sketch columns as bytes."""

from __future__ import annotations

from pathlib import Path

import orjson
import yaml

from bench.hotpath import RowSizes, batches, drive
from livedash.pipeline.settings import PipelineSettings

ROOT = Path(__file__).resolve().parents[3]


def test_row_sizes_tally_every_aggregate_row_and_its_sketch_bytes() -> None:
    settings = PipelineSettings.model_validate(yaml.safe_load((ROOT / "config" / "pipeline.yaml").read_text()))
    sizes = RowSizes()
    _, rows = drive(settings, batches(4_000, 4, 250, 5.0), sizes=sizes)  # 800 s of event time: finals
    tallied = sum(t["rows"] for t in sizes.by.values())
    assert tallied == rows["aggregates"] + rows["history"] + rows["live"] > 0
    assert {state for _, state in sizes.by} == {"provisional", "final", "final, live copy"}
    figures = sizes.report()
    assert figures["rows"] == tallied and 0 < figures["sketch_bytes"] < figures["json_bytes"]
    # one row by hand: the hex of each sketch column counts as its bytes
    row = {"rollup_name": "r", "is_final": 1, "distinct_theta": "00ff", "quantile_tdigest": "aa"}
    one = RowSizes()
    one.add(orjson.dumps(row), "aggregates")
    assert one.by[("r", "final")] == {"rows": 1, "json": len(orjson.dumps(row)), "distinct_theta": 2,
                                      "quantile_tdigest": 1}  # fmt: skip
    one.add(orjson.dumps(row), "live")
    assert one.by[("r", "final, live copy")]["rows"] == 1
