"""The dashboard's figures, from a panel's rows. Pure: no Streamlit, no I/O.

Each figure's uirevision names what it shows (the range preset, the filters, the dimension), never the time:
a live refresh redraws the data and keeps the viewer's zoom and legend choices, another view starts afresh.
The dimension value of each point is its customdata, which a click hands to the drill-down.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import plotly.graph_objects as go

from dashboard.state import View

Rows = Sequence[Sequence[Any]]


def series(rows: Rows, view: View) -> go.Figure:
    """Events over time, a line per type, from rows of (bucket start in epoch ms, type, events, ...)."""
    fig = go.Figure()
    by_type: dict[str, tuple[list[datetime], list[float]]] = {}
    for row in rows:
        xs, ys = by_type.setdefault(str(row[1]), ([], []))
        xs.append(datetime.fromtimestamp(int(row[0]) / 1000, UTC))
        ys.append(float(row[2]))
    for kind, (xs, ys) in sorted(by_type.items()):
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=kind, customdata=[kind] * len(xs)))
    fig.update_layout(height=320, margin={"l": 10, "r": 10, "t": 10, "b": 10}, clickmode="event+select",
                      uirevision=f"series-{view.range}-{view.filters}", legend={"orientation": "h"})  # fmt: skip
    return fig


def top_values(rows: Rows) -> list[str]:
    """A breakdown's values, largest first, from rows of (value, events, ...)."""
    return [str(r[0]) for r in rows]


def breakdown(rows: Rows, view: View, dim: str) -> go.Figure:
    """Horizontal bars of events per value of `dim`, the largest on top, from rows of (value, events, ...)."""
    values = top_values(rows)
    counts = [float(r[1]) for r in rows]
    fig = go.Figure(go.Bar(x=counts[::-1], y=values[::-1], orientation="h", customdata=values[::-1],
                           hovertemplate="%{y}: %{x:,.0f} events<extra></extra>"))  # fmt: skip
    fig.update_layout(height=60 + 24 * max(len(values), 1), margin={"l": 10, "r": 10, "t": 4, "b": 4},
                      uirevision=f"bd-{dim}-{view.filters}", clickmode="event+select")  # fmt: skip
    return fig
