"""A full dashboard refresh (every panel's query) over 24 hours of data: from the roll-ups, and the same panels
computed from the raw-events table.

    bin/livedash up --apply --dataflow                        # the dev stack with its dataflow
    .venv/bin/python -m bench.dashboard --events 50000000 --hours 24 [--runs 15] [--raw-runs 5] [--skip-load]

Load: the generator backfills `--events` events whose event times cover the last `--hours` hours (as fast as
Kafka takes them), the dataflow aggregates them, and the script waits until Pinot holds them all (the
roll-up's SUM(event_count) over the range equals the valid events sent). Refresh: the overview's panels for
the 24-hour view, unfiltered and with one filter, exactly as dashboard/query.py builds them and fetched as the
dashboard fetches them (concurrently) but with a cold cache (what one viewer's first look costs), then each
panel alone for the per-panel times, `--runs` times; then the same
panels with every roll-up hidden from the catalog, so they read the raw events (`--raw-runs 0`: not). Live:
the refresh of an open page, once a refresh step in real time, over the range the page asks for then, through
the dashboard's cache and its stitched panels' kept pieces (dashboard/panels.py).
--no-derived: the panels never read the hours and days derived by the cascade (the 5- and 15-minute windows
answer, as before it), on the same data. Figures: p50 and p95 of the whole refresh, the median per panel, the
rows each roll-up holds per day, and one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from typing import Any

from bench.common import machine, pct
from dashboard import query
from dashboard.panels import fetch
from dashboard.state import View
from livedash import config
from livedash.generator import GeneratorOptions, mean_rate, run
from livedash.pinot.client import PinotClient, PinotError, QueryService, Result


def fetched(outcomes: dict[str, Result | PinotError]) -> None:
    """A refresh with a failed statement is not a figure."""
    for sql, outcome in outcomes.items():
        if isinstance(outcome, PinotError):
            raise SystemExit(f"a panel failed: {outcome} ({sql[:200]})")


WHOLE = False  # --whole: every panel one statement over its whole range (no pieces), as before stitching


def panels(catalog: query.Catalog, start: int, end: int, filters: dict[str, str],
           now: int | None = None) -> list[tuple[str, query.Sql]]:  # fmt: skip
    sqls = query.overview(catalog, start, end, filters, end if now is None else now).items()
    return [(name, sql._replace(stitch=None) if WHOLE else sql) for name, sql in sqls]


def refresh(client: PinotClient, sqls: list[tuple[str, query.Sql]]) -> tuple[float, dict[str, float]]:
    """Every panel as the dashboard fetches them with its cache cold (a QueryService of its own: the
    statements run concurrently, a text two panels share once), then each panel alone, one after the other,
    for the per-panel times."""
    t0 = time.perf_counter()
    fetched(fetch(QueryService(lambda sql: client.query(sql)), dict(sqls), ttl_s=60))
    total = time.perf_counter() - t0
    per: dict[str, float] = {}
    for name, sql in sqls:
        t = time.perf_counter()
        fetched(fetch(QueryService(lambda sql: client.query(sql)), {name: sql}, ttl_s=60))
        per[name] = time.perf_counter() - t
    return total, per


def patient(client: PinotClient, sql: str, tries: int = 10) -> Any:
    """The first value of a statement's first row, asked again (every 30 s) while Pinot fails: a load of hours
    keeps Pinot busy ingesting, and its broker once dropped a connection 45 minutes into one."""
    for attempt in range(tries):
        try:
            return client.query(sql).rows[0][0]
        except PinotError as exc:
            if attempt == tries - 1:
                raise
            print(f"  Pinot failed ({exc}); asking again in 30 s", flush=True)
            time.sleep(30)
    raise AssertionError("unreachable")


def load(settings: config.Settings, client: PinotClient, events: int, hours: float, end_ms: int) -> tuple[int, int]:
    start_ms = end_ms - int(hours * 3_600_000)
    # The daily rhythm and the bursts make the mean rate lower than the nominal one: without this, 50 million
    # events covered 38 hours, and the last 14 (in the future) were dead-lettered as too far ahead.
    unit = mean_rate(GeneratorOptions(nominal_rate=1.0), start_ms / 1000, end_ms / 1000)
    opts = GeneratorOptions(seed=11, nominal_rate=events / (hours * 3600) / unit, late_fraction=0.0)
    # The history tier holds the whole range (the recent tier only its last hours): count there.
    pipeline = settings.pipeline
    rollup = next(r for r in pipeline.rollups if r.tier == "history" and r.window.every_s is None)
    size = rollup.window.size_s * 1000
    # From one window before the start: out-of-order events are shifted up to a few seconds before it
    first = start_ms - start_ms % size - size
    sql = (f"SELECT SUM(event_count) FROM {pipeline.table_of(rollup)} WHERE rollup_name = '{rollup.name}' "
           f"AND window_start >= {first} AND window_start < {end_ms + 3_600_000}")  # fmt: skip
    before = float(client.query(sql).rows[0][0] or 0)
    held = int(client.query("SELECT COUNT(*) FROM events_raw").rows[0][0] or 0)
    if held:
        # A running dataflow's watermarks are at the clock by now (idle partitions follow it), so a backfill of
        # past hours would be all late events: corrections, not windows (seen: 2,700 events/s, 4 GB of state)
        fresh = "bin/livedash down; rm -rf .livedash/{kafka,pinot,zookeeper,recovery}"
        raise SystemExit(f"the stack already holds {held:,} events: load into a fresh one ({fresh}), or time what it "
                         "holds with --skip-load")  # fmt: skip
    t0 = time.monotonic()
    summary = run(settings.kafka.bootstrap, settings.pipeline.topics.raw, events, None, 0, opts, progress=True,
                  start_ms=start_ms)  # fmt: skip
    valid = summary.sent - summary.malformed
    print(f"sent {summary.sent:,} events ({summary.malformed:,} malformed) in {summary.seconds:.0f}s, "
          f"event times {hours:g} h back")  # fmt: skip
    while True:
        got = float(patient(client, sql) or 0) - before
        print(f"  aggregated {got:,.0f} / {valid:,} after {time.monotonic() - t0:.0f}s", flush=True)
        if got >= valid:
            break
        time.sleep(30)
    if got != valid:
        raise SystemExit(f"aggregates hold {got:,.0f} events, {valid:,} were sent: not exact")
    # Pinot ingests the raw events on its own: wait until the raw table stops growing. Not until it holds every
    # event: it keeps 24 hours, so on a load that takes long its oldest segments age out first (the 50-million
    # load took 47 minutes, and the count waited for never came).
    raw_sql = f"SELECT COUNT(*) FROM events_raw WHERE ts >= {start_ms}"
    last = -1
    while True:
        rows = int(patient(client, raw_sql))
        print(f"  events_raw holds {rows:,} rows after {time.monotonic() - t0:.0f}s", flush=True)
        if rows == last and rows > 0:
            break
        last = rows
        time.sleep(30)
    if rows < valid:
        print(f"  events_raw: {valid - rows:,} of the oldest events already past its retention")
    return valid, int(time.monotonic() - t0)


def rows_per_day(client: PinotClient, settings: config.Settings, start: int, hours: float,
                 end: int = 2**62) -> dict[str, int]:  # fmt: skip
    """Rows each roll-up holds per day of the range (upsert tables count each key's newest version once)."""
    out: dict[str, int] = {}
    for table in sorted({settings.pipeline.table_of(r) for r in settings.pipeline.rollups}):
        got = client.query(f"SELECT rollup_name, COUNT(*) FROM {table} WHERE window_start >= {start} "
                           f"AND window_start < {end} GROUP BY rollup_name LIMIT 100").rows  # fmt: skip
        out.update({name: round(n * 24 / hours) for name, n in got})
    return out


def stored(client: PinotClient, settings: config.Settings, start: int, end: int = 2**62) -> dict[str, dict[str, int]]:
    """Per aggregates table over the range: the rows queries see (each key's newest version) and the rows its
    segments hold (every version published, skipUpsert), which every scan filter still touches."""
    out = {}
    pipeline = settings.pipeline
    for table in sorted({pipeline.topics.live, *(pipeline.table_of(r) for r in pipeline.rollups)}):
        sql = f"SELECT COUNT(*) FROM {table} WHERE window_start >= {start} AND window_start < {end}"
        valid = int(client.query(sql).rows[0][0])
        physical = int(client.query(sql + " OPTION(skipUpsert=true)").rows[0][0])
        out[table] = {"valid": valid, "physical": physical}
    return out


def disk(settings: config.Settings) -> dict[str, int]:
    """Bytes each table takes on the Pinot server (the controller's /tables/<t>/size: its segments, every version
    of an upserted row included), for the roll-ups against the raw events they summarise."""
    controller = PinotClient.of(settings.pinot)
    tables = sorted({*settings.pinot.tables, *(settings.pipeline.table_of(r) for r in settings.pipeline.rollups)})
    return {
        t: int(controller.request("GET", f"/tables/{t}/size").json().get("reportedSizeInBytes", -1)) for t in tables
    }


def timed(client: PinotClient, catalog: query.Catalog, start: int, end: int, filters: dict[str, str],
          runs: int) -> tuple[list[float], dict[str, list[float]]]:  # fmt: skip
    """`runs` full refreshes (after one warm-up) of every panel, each with the cache cold: what one viewer's
    first view costs Pinot."""
    sqls = panels(catalog, start, end, filters)
    refresh(client, sqls)  # warm-up
    totals: list[float] = []
    per: dict[str, list[float]] = {n: [] for n, _ in sqls}
    for _ in range(runs):
        total, each = refresh(client, sqls)
        totals.append(total)
        for n, v in each.items():
            per[n].append(v)
    return totals, per


def live(client: PinotClient, catalog: query.Catalog, span_ms: int, step_s: int, runs: int) -> list[float]:
    """The refresh of an open page, once a refresh step in real time (what changed meanwhile is re-read), each
    over the range the dashboard asks then (ending at the end of the current step), through the dashboard's own
    cache (QueryService, TTL one step, and the stitched panels' kept pieces)."""
    service = QueryService(lambda sql: client.query(sql))
    step = step_s * 1000
    out: list[float] = []
    for i in range(runs + 1):
        now = int(time.time() * 1000)
        end = now - now % step + step
        sqls = panels(catalog, end - span_ms, end, {}, now)
        t0 = time.perf_counter()
        fetched(fetch(service, dict(sqls), ttl_s=step_s))
        if i:  # the first fills the cache
            out.append(time.perf_counter() - t0)
        time.sleep(max(0.0, (end - time.time() * 1000) / 1000))  # to the next step, as an open page
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=50_000_000)
    parser.add_argument("--hours", type=float, default=24)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--raw-runs", type=int, default=5, help="refreshes from raw events (each takes long); 0: none")
    parser.add_argument("--skip-load", action="store_true", help="time the refreshes over what Pinot holds")
    parser.add_argument("--whole", action="store_true", help="each panel one statement, no pieces (as before)")
    parser.add_argument(
        "--no-derived",
        action="store_true",
        help="panels never read the derived roll-ups (hours, days: the cascade), as before it",
    )
    parser.add_argument("--whole-hours", action="store_true",
                        help="load the whole hours before the top of this hour and count rows over them: two "
                             "loads in the same clock hour form the same windows (to compare configs)")  # fmt: skip
    args = parser.parse_args()
    global WHOLE
    WHOLE = args.whole
    settings = config.load()
    client = PinotClient(settings.pinot.broker_url, timeout_s=120)
    loaded = None
    now = int(time.time() * 1000)
    load_end = now - now % 3_600_000 if args.whole_hours else now
    if not args.skip_load:
        loaded, seconds = load(settings, client, args.events, args.hours, load_end)
        print(f"loaded: {loaded:,} valid events aggregated exactly, {seconds}s from the first send")
    rollups = query.Catalog.from_settings(settings.pipeline)
    if args.no_derived:
        rollups = dataclasses.replace(rollups, rollups=tuple(r for r in rollups.rollups if r.derived_from is None))
    raw = dataclasses.replace(rollups, rollups=())
    # Whole refresh steps, as the dashboard ends a live range (so the live runs below move by whole steps)
    step_s = View().refresh_s
    end = int(time.time() * 1000) // (step_s * 1000) * (step_s * 1000)
    start = end - int(args.hours * 3_600_000)
    raw_rows = client.query(f"SELECT COUNT(*) FROM events_raw WHERE ts >= {start}").rows[0][0]
    # Rows over the loaded hours themselves with --whole-hours; else over the refresh range
    rows_from, rows_to = (load_end - int(args.hours * 3_600_000), load_end) if args.whole_hours else (start, 2**62)
    per_day = rows_per_day(client, settings, rows_from, args.hours, rows_to)
    print(
        f"over the last {args.hours:g} h: events_raw {raw_rows:,} rows; rows per roll-up per day: "
        + ", ".join(f"{n} {v:,}" for n, v in per_day.items())
    )
    held = stored(client, settings, rows_from, rows_to)
    print(
        "rows held (newest version / every version): "
        + ", ".join(f"{t} {v['valid']:,} / {v['physical']:,}" for t, v in held.items())
    )
    sizes = disk(settings)
    print("disk on the Pinot server: " + ", ".join(f"{t} {n / 1e6:,.1f} MB" for t, n in sizes.items()))
    figures: dict[str, Any] = {"disk_bytes": sizes, "hours": args.hours, "stitched": not args.whole,
                               "derived": not args.no_derived,
                               "rows_counted_over": [rows_from, rows_to], "events_loaded": loaded,
                               "events_raw_rows": raw_rows, "rows_per_rollup_per_day": per_day,
                               "rows_held": held}  # fmt: skip
    for label, filters in (("unfiltered", {}), ("country = US", {"country": "US"})):
        totals, per = timed(client, rollups, start, end, filters, args.runs)
        p50, p95 = pct(totals, 0.5), pct(totals, 0.95)
        print(f"{label}, roll-ups: {len(per)} panels, full refresh p50 {p50:.3f}s p95 {p95:.3f}s over {args.runs} runs")
        medians = {n: round(statistics.median(v) * 1000) for n, v in per.items()}
        print("   per panel (median): " + ", ".join(f"{n} {v} ms" for n, v in medians.items()))
        key = "cold" if not filters else "cold_filtered"
        figures[key] = {"p50_s": round(p50, 3), "p95_s": round(p95, 3), "per_panel_ms": medians}
        if args.raw_runs:
            raw_totals, _ = timed(client, raw, start, end, filters, args.raw_runs)
            print(f"{label}, raw events: full refresh p50 {pct(raw_totals, 0.5):.3f}s "
                  f"p95 {pct(raw_totals, 0.95):.3f}s over {args.raw_runs} runs; raw events / roll-ups (p50): "
                  f"{pct(raw_totals, 0.5) / p50:.1f}x")  # fmt: skip
            figures[key]["raw_p50_s"] = round(pct(raw_totals, 0.5), 3)
    lives = live(client, rollups, end - start, step_s, args.runs)
    print(f"live refresh (range moved {step_s} s each time, the dashboard's cache): p50 {pct(lives, 0.5):.3f}s "
          f"p95 {pct(lives, 0.95):.3f}s over {args.runs} runs")  # fmt: skip
    figures["live"] = {"p50_s": round(pct(lives, 0.5), 3), "p95_s": round(pct(lives, 0.95), 3)}
    figures["machine"] = machine()
    print(f"machine: {figures['machine']}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
