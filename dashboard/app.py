"""The livedash dashboard: `streamlit run dashboard/app.py` (or `livedash up --dashboard`, `demo`).

Pages (`?page=`): overview (KPI tiles, events over time, top values of every dimension, click to drill down)
and events (the matching raw events, paged). The whole view (page, time range, filters, refresh) lives in the
URL. Live panels re-run inside st.fragment(run_every=refresh); Plotly's uirevision keeps a zoom across
refreshes. This module is the layout: SQL comes from dashboard/query.py only, the figures from dashboard/charts.py,
the KPI tiles' numbers from dashboard/kpis.py; results are cached per process (livedash/pinot/client.py).
"""

from __future__ import annotations

import time
import urllib.parse
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import streamlit as st

from dashboard import charts, health, kpis, query
from dashboard.panels import Outcomes
from dashboard.panels import fetch as fetch_panels
from dashboard.runtime import Resources, resources
from dashboard.state import PRESETS, REFRESH_CHOICES, View, from_params, to_params
from livedash.config import Settings
from livedash.pinot.client import PinotError, Result, one_line
from livedash.pipeline.rows import OTHER
from livedash.times import format_time, read_time

TITLES = {"overview": "Overview", "events": "Raw events"}


def wall_ms() -> int:
    return int(time.time() * 1000)


def console_url(settings: Settings, sql: str) -> str:
    return f"{settings.pinot.controller_url}/#/query?{urllib.parse.urlencode({'query': sql})}"


def window(res: Resources, view: View) -> tuple[int, int]:
    step_s = max(view.refresh_s, res.settings.dashboard.refresh_floor_s, 1)
    return view.window(int(time.time() * 1000), step_s * 1000)


def ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


# -- running a panel's query -------------------------------------------------------------------------------------


def fetch(res: Resources, view: View, panels: dict[str, query.Sql]) -> Outcomes:
    """Every statement of these panels at once through the shared cache (dashboard/panels.py)."""
    ttl = max(view.refresh_s, res.settings.dashboard.refresh_floor_s) if view.refresh_s else 30
    return fetch_panels(res.service, panels, ttl_s=ttl, fresh=st.session_state.get("refresh_now", False))


def answer(outcomes: Outcomes, sql: query.Sql) -> Result | None:
    """A panel's rows from the fetched outcomes, or None after showing why there are none. Never raises."""
    result = outcomes[sql.text]
    if isinstance(result, PinotError):
        st.error(f"No data: {result}", icon=":material/cloud_off:")
        return None
    if sql.quantile is None:
        return result
    found = outcomes[sql.quantile.text]  # raw events: the p95 column from the rows that carry the field
    if isinstance(found, PinotError):
        st.warning(f"p95 unavailable: {found}", icon=":material/warning:")
        return replace(result, rows=sql.quantile.merge(result.rows, []))
    return replace(result, rows=sql.quantile.merge(result.rows, found.rows), stale=result.stale or found.stale,
                   error=result.error or found.error)  # fmt: skip


def run(res: Resources, view: View, sql: query.Sql) -> Result | None:
    """One panel's rows (see answer)."""
    return answer(fetch(res, view, {"panel": sql}), sql)


def caption(res: Resources, sql: query.Sql, result: Result | None) -> None:
    """Freshness, source and the console link under every panel."""
    bits = []
    if result is not None:
        as_of = result.freshness_ms / 1000 if result.freshness_ms else result.fetched_at
        stamp = datetime.fromtimestamp(as_of, UTC).strftime("%H:%M:%S")
        bits.append(f"data as of {stamp} UTC, {ago(max(0.0, time.time() - as_of))}")
        bits.append(f"{result.time_used_ms} ms in Pinot")
    rollup = sql.source.rollup
    bits.append("raw events" if rollup is None else f"roll-up `{rollup.name}`")
    bits.append(f"[Open in Pinot console]({console_url(res.settings, sql.text)})")
    if sql.quantile is not None:
        bits.append(f"[p95 in Pinot console]({console_url(res.settings, sql.quantile.text)})")
    st.caption(" · ".join(bits))
    if sql.source.note:
        st.caption(f":orange[{sql.source.note}]")
    if result is not None and result.stale:
        st.warning(f"Showing the last good data (stale): {result.error}", icon=":material/history:")
    if result is not None and result.partial:
        st.warning("Partial result: not every Pinot server answered.", icon=":material/warning:")
    if result is not None and result.groups_limit_reached:
        st.warning("Too many distinct values: Pinot's group limit was reached, some values may be missing.",
                   icon=":material/warning:")  # fmt: skip


# -- view state <-> URL ------------------------------------------------------------------------------------------


def current_view(res: Resources) -> View:
    params = {key: st.query_params.get_all(key) for key in st.query_params}
    view = from_params(params, res.catalog, res.settings.dashboard.refresh_floor_s)
    if "refresh" not in st.query_params:
        view = replace(view, refresh_s=res.settings.dashboard.default_refresh_s)
    return view


def go_to(view: View) -> None:
    st.session_state["next_view"] = view
    st.rerun()


def _go_later(view: View) -> None:
    """From a callback: the next full run puts the view in the URL (see main)."""
    st.session_state["next_view"] = view


def _on_nav() -> None:
    """A sidebar widget changed: the URL follows (it is the view's single source of truth)."""
    res = resources()
    view, ss = current_view(res), st.session_state
    new = replace(view, page=ss["nav_page"], range=ss["nav_range"], refresh_s=ss["nav_refresh"], events_page=0)
    if new.range == "abs":
        now = int(time.time() * 1000)
        start = read_time(ss.get("nav_from")) or view.start_ms or now - 3_600_000
        end = read_time(ss.get("nav_to")) or view.end_ms or now
        new = replace(new, start_ms=start, end_ms=end) if start < end else replace(new, range=view.range)
    else:
        new = replace(new, start_ms=None, end_ms=None)
    st.query_params.from_dict(to_params(new))


def sidebar(res: Resources, view: View) -> None:
    # Widgets take their values from the URL on every run (set before they are created), and write back
    # through _on_nav: a shared link, the back button and a drill-down all agree with the sidebar.
    ss = st.session_state
    ss["nav_page"], ss["nav_range"], ss["nav_refresh"] = view.page, view.range, view.refresh_s
    floor = res.settings.dashboard.refresh_floor_s
    choices = [c for c in REFRESH_CHOICES if c == 0 or c >= floor]
    if view.refresh_s not in choices:
        ss["nav_refresh"] = 0
    with st.sidebar:
        st.title("livedash")
        st.radio("Page", list(TITLES), format_func=TITLES.__getitem__, key="nav_page", on_change=_on_nav)
        labels = {k: f"Last {k}" for k in PRESETS} | {"abs": "Absolute range"}
        st.selectbox(
            "Time range", [*PRESETS, "abs"], format_func=labels.__getitem__, key="nav_range", on_change=_on_nav
        )
        if view.range == "abs":
            now = int(time.time() * 1000)
            ss["nav_from"] = format_time(view.start_ms or now - 3_600_000)
            ss["nav_to"] = format_time(view.end_ms or now)
            st.text_input("From (UTC, ISO 8601)", key="nav_from", on_change=_on_nav)
            st.text_input("To (UTC, ISO 8601)", key="nav_to", on_change=_on_nav)
        st.selectbox("Auto-refresh", choices, format_func=lambda s: "off" if s == 0 else f"every {s} s",
                     key="nav_refresh", on_change=_on_nav)  # fmt: skip
        if st.button("Refresh now", icon=":material/refresh:", key="refresh_button"):
            ss["refresh_now"] = True
        url = res.settings.pinot.controller_url
        st.caption(f"Pinot query console: [{url}/#/query]({url}/#/query)")


def filter_chips(view: View) -> None:
    if not view.filters:
        st.caption("No filters: click a bar or pick a value below to drill down.")
        return
    cols = st.columns(len(view.filters) + 1)
    for col, (dim, value) in zip(cols, view.filters, strict=False):
        if col.button(f"{dim} = {value}", icon=":material/close:", key=f"chip_{dim}", help="Remove this filter"):
            go_to(view.without_filter(dim))
    if cols[-1].button("Clear all", key="chip_clear"):
        go_to(replace(view, filters=(), events_page=0))


# -- health strip ------------------------------------------------------------------------------------------------


def health_strip(res: Resources, view: View) -> None:
    now = time.time()
    sample = health.scrape(res.metrics_url, now)
    newest: float | None = None
    unreachable = ""  # why Pinot did not answer: then its newest data is unknown, not absent
    try:
        result = res.service.query(query.freshest(res.catalog), ttl_s=1)
        if result.stale:
            unreachable = result.error
        elif result.rows and result.rows[0][0] and float(result.rows[0][0]) > 0:
            newest = float(result.rows[0][0]) / 1000
    except PinotError as exc:
        unreachable = str(exc)
    h = health.assess(res.last_sample, sample, newest, now, res.settings.dashboard.stale_after_s)
    reason = h.reason
    if unreachable:
        pinot = "Pinot could not be reached: " + one_line(unreachable, 300)
        # assess reads unknown as absent ("no aggregates in Pinot yet"); its other reasons are the dataflow's
        reason = pinot if h.reason.startswith("no aggregates") else f"{h.reason}; {pinot}"
    if sample.up and (res.last_sample is None or now - res.last_sample.at >= 1):
        res.last_sample = sample
    fmt = lambda v, unit="": "n/a" if v is None else f"{v:,.1f}{unit}" if v < 100 else f"{v:,.0f}{unit}"  # noqa: E731
    text = (f"newest data **{fmt(h.staleness_s, ' s')}** old · consumer lag **{fmt(h.lag_events)}** events, "
            f"**{fmt(h.lag_s, ' s')}** · in **{fmt(h.in_rate, '/s')}** · dead letters **{fmt(h.dead_rate, '/s')}** · "
            f"late **{fmt(h.late_rate, '/s')}**")  # fmt: skip
    if h.level == "ok":
        st.success(f"Pipeline healthy: {text}", icon=":material/check_circle:")
    else:
        st.error(f"Data is stale: {reason}. {text}", icon=":material/error:")


# -- overview ----------------------------------------------------------------------------------------------------


def rows_of(result: Result | None) -> tuple[tuple[Any, ...], ...] | None:
    return None if result is None else result.rows


def kpi_tiles(res: Resources, view: View, panels: dict[str, query.Sql], outcomes: Outcomes, span_ms: int) -> None:
    now_sql = panels["totals"]
    now, before = answer(outcomes, now_sql), answer(outcomes, panels["totals, previous period"])
    tnow, tbefore = answer(outcomes, panels["by type"]), answer(outcomes, panels["by type, previous period"])
    dash, cat = res.settings.dashboard, res.catalog
    current, previous = kpis.Period(rows_of(now), rows_of(tnow)), kpis.Period(rows_of(before), rows_of(tbefore))
    tiles = kpis.tiles(current, previous, span_ms / 1000, dash.conversion, dash.click_through, cat.quantile_field)
    for col, tile in zip(st.columns(len(tiles)), tiles, strict=True):
        col.metric(tile.label, tile.value, tile.delta)
    caption(res, now_sql, now)


def series(res: Resources, view: View, sql: query.Sql, outcomes: Outcomes, bucket_ms: int) -> None:
    result = answer(outcomes, sql)
    st.subheader(f"Events per {bucket_ms // 1000} s, by type")
    fig = charts.series(rows_of(result) or (), view)
    pick = partial(_on_pick, "type", "chart_series")
    st.plotly_chart(fig, key="chart_series", on_select=pick, selection_mode="points", width="stretch")
    caption(res, sql, result)


def breakdowns(res: Resources, view: View, panels: dict[str, query.Sql], outcomes: Outcomes) -> None:
    st.subheader("Top values")
    dims = [d for d in res.catalog.dimensions if f"top {d}" in panels]
    cols = st.columns(2)
    for i, dim in enumerate(dims):
        with cols[i % 2]:
            breakdown(res, view, dim, panels[f"top {dim}"], outcomes)


def breakdown(res: Resources, view: View, dim: str, sql: query.Sql, outcomes: Outcomes) -> None:
    result = answer(outcomes, sql)
    st.markdown(f"**{dim}**")
    found = rows_of(result) or ()
    values, fig = charts.top_values(found), charts.breakdown(found, view, dim)
    st.plotly_chart(fig, key=f"chart_{dim}", on_select=partial(_on_pick, dim, f"chart_{dim}"), selection_mode="points",
                    width="stretch")  # fmt: skip
    st.selectbox(f"Drill into {dim}", ["", *values], key=f"drill_{dim}", label_visibility="collapsed",
                 format_func=lambda v: f"Drill into {dim}…" if v == "" else v,
                 on_change=_on_drill, args=(dim, f"drill_{dim}"))  # fmt: skip
    caption(res, sql, result)


def _picked(key: str) -> str | None:
    """The dimension value of the point clicked in chart `key` (its customdata), if any."""
    try:
        points = st.session_state[key]["selection"]["points"]
    except (KeyError, TypeError):
        return None
    for point in points:
        value = point.get("customdata")
        if isinstance(value, list):
            value = value[0] if value else None
        if isinstance(value, str) and value:
            return value
    return None


def _on_pick(dim: str, key: str) -> None:
    """A click on a chart: add the filter (a callback, so it sees the selection of the chart that was shown,
    even when the next run draws a newer chart)."""
    value = _picked(key)
    if value is not None:
        _go_later(current_view(resources()).with_filter(dim, value))


def _on_drill(dim: str, key: str) -> None:
    value = st.session_state.get(key)
    st.session_state[key] = ""
    if value:
        _go_later(current_view(resources()).with_filter(dim, value))


def overview(res: Resources, view: View) -> None:
    start, end = window(res, view)
    st.caption(f"{format_time(start)} to {format_time(end)}" + (" (live)" if view.live else ""))
    # wall_ms: which tiers still hold a range depends on how far back it starts from now
    panels = query.overview(res.catalog, start, end, view.filter_map, wall_ms())
    outcomes = fetch(res, view, panels)
    kpi_tiles(res, view, panels, outcomes, end - start)
    series(res, view, panels["series"], outcomes, query.bucket_for(start, end))
    breakdowns(res, view, panels, outcomes)


# -- raw events --------------------------------------------------------------------------------------------------


def carried_metrics(res: Resources, view: View, sql: query.Sql, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The listed rows with None where an event does not carry a metric (Pinot answers its default, 0)."""
    if sql.carried is None or not rows:
        return rows
    ttl = max(view.refresh_s, res.settings.dashboard.refresh_floor_s) if view.refresh_s else 30
    found: dict[str, set[str]] = {}
    try:
        for metric, statement in sql.carried.statements([r["event_id"] for r in rows]).items():
            found[metric] = {r[0] for r in res.service.query(statement, ttl_s=ttl).rows}
    except (PinotError, query.QueryError) as exc:
        st.warning(f"which events carry each metric is unknown right now ({exc}): 0 may mean absent",
                   icon=":material/warning:")  # fmt: skip
        return rows
    return query.Carried.blank(rows, found)


def events_page(res: Resources, view: View) -> None:
    start, end = window(res, view)
    size = res.settings.dashboard.page_size
    if OTHER in view.filter_map.values():
        st.info(f"`{OTHER}` stands for values folded by a cap; raw events carry their own values, so that filter "
                "matches none of them. Remove it to list events.")  # fmt: skip
    sql = query.raw_events(res.catalog, start, end, view.filter_map, view.events_page, size)
    result = run(res, view, sql)
    st.subheader(f"Raw events, newest first (page {view.events_page + 1})")
    if result is not None:
        rows = [dict(zip(result.columns, row, strict=True)) for row in result.rows]
        rows = carried_metrics(res, view, sql, rows)
        for row in rows:
            row["ts"] = format_time(int(row["ts"]))
            for metric in res.catalog.metrics:  # text, so one column can show "-" where an event has none
                value = row.get(metric)
                row[metric] = "-" if value is None else f"{value:g}"
        st.dataframe(rows, width="stretch", hide_index=True)
        prev_col, next_col = st.columns(2)
        if view.events_page > 0 and prev_col.button("Newer", icon=":material/arrow_back:", key="page_prev"):
            go_to(replace(view, events_page=view.events_page - 1))
        if len(rows) == size and next_col.button("Older", icon=":material/arrow_forward:", key="page_next"):
            go_to(replace(view, events_page=view.events_page + 1))
    caption(res, sql, result)


# -- page --------------------------------------------------------------------------------------------------------


def main() -> None:
    st.set_page_config(page_title="livedash", page_icon=":material/monitoring:", layout="wide")
    res = resources()
    # A drill-down or chip changes the view from inside the live fragment; the URL is written here, in a full
    # run: written from the fragment (or its callbacks), the change did not reach the browser's address bar.
    next_view = st.session_state.pop("next_view", None)
    if next_view is not None:
        st.query_params.from_dict(to_params(next_view))
    view = current_view(res)
    sidebar(res, view)
    st.title(TITLES[view.page])
    every = timedelta(seconds=view.refresh_s) if view.refresh_s else None

    @st.fragment(run_every=every)
    def live() -> None:
        if "next_view" in st.session_state:  # a click in this fragment changed the view: redraw the whole page
            st.rerun()
        health_strip(res, view)
        filter_chips(view)
        overview(res, view) if view.page == "overview" else events_page(res, view)
        st.session_state["refresh_now"] = False

    live()


if __name__ == "__main__":  # `streamlit run` runs this file as __main__; tests import it for resources()
    main()
