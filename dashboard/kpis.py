"""The KPI tiles' arithmetic, from the rows of the current and the previous period: totals, the event rate,
the configured ratios (conversion, click-through), the change against the previous period, and the text of
each tile. Pure: no Streamlit, no I/O.

Rows are what dashboard/query.py's statements return: totals is one row (events, unique users, p95), types
one row per type (type, events, ...). None stands for a query that failed (the tile says "n/a"); an empty
answer means no events (a rate of 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Rows = Sequence[Sequence[Any]]


@dataclass(frozen=True, slots=True)
class Period:
    """One period's answers; None where its query failed."""

    totals: Rows | None
    types: Rows | None


@dataclass(frozen=True, slots=True)
class Tile:
    label: str
    value: str  # formatted, "n/a" without a value
    delta: str | None  # "+12.5% vs previous"; None when there is nothing to compare with


def total(rows: Rows | None, i: int) -> float | None:
    """Column i of the totals row; None without rows, for a null and for NaN (no data)."""
    if rows is None or not rows or rows[0][i] is None:
        return None
    value = float(rows[0][i])
    return None if value != value else value  # NaN: no data


def ratio(types: Rows | None, pair: tuple[str, str]) -> float | None:
    """Events of type pair[0] per event of type pair[1]; None when there are none of pair[1]."""
    if types is None:
        return None
    counts = {row[0]: float(row[1]) for row in types}
    return counts.get(pair[0], 0.0) / counts[pair[1]] if counts.get(pair[1]) else None


def rate(totals: Rows | None, seconds: float) -> float | None:
    """Events per second over the period (0 when it has none)."""
    return None if totals is None else (total(totals, 0) or 0.0) / seconds


def change(value: float | None, previous: float | None) -> str | None:
    """The relative change against the previous period, when both are known and the previous is not 0."""
    if value is None or not previous:
        return None
    return f"{(value - previous) / previous:+.1%} vs previous"


def tiles(
    now: Period,
    before: Period,
    seconds: float,
    conversion: tuple[str, str],
    click_through: tuple[str, str],
    quantile_field: str,
) -> list[Tile]:
    """The overview's tiles, left to right; `seconds` is the length of each period."""
    conv, ctr = conversion, click_through
    values = [
        ("Events / s", rate(now.totals, seconds), rate(before.totals, seconds), "{:,.1f}"),
        ("Unique users", total(now.totals, 1), total(before.totals, 1), "{:,.0f}"),
        (f"Conversion ({conv[0]} / {conv[1]})", ratio(now.types, conv), ratio(before.types, conv), "{:.2%}"),
        (f"Click-through ({ctr[0]} / {ctr[1]})", ratio(now.types, ctr), ratio(before.types, ctr), "{:.2%}"),
        (f"p95 {quantile_field}", total(now.totals, 2), total(before.totals, 2), "{:,.1f}"),
    ]
    return [Tile(label, "n/a" if value is None else fmt.format(value), change(value, prev))
            for label, value, prev, fmt in values]  # fmt: skip
