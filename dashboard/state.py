"""The dashboard's view state and its URL form, so any view is a shareable link. Pure.

    ?page=overview&range=15m&f=country:DE&f=device:mobile&refresh=5
    ?page=events&range=abs&from=2026-11-28T10:00:00Z&to=2026-11-28T11:00:00Z&f=type:click&p=2

Reading is forgiving: an unknown page, range or refresh, a filter on an unknown dimension or with an unusable
value is dropped (the rest of the link still works); nothing from the URL reaches SQL unchecked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from dashboard.query import Catalog, QueryError, literal
from livedash.times import format_time, read_time

PAGES = ("overview", "events")
PRESETS = {"5m": 300, "15m": 900, "1h": 3600, "6h": 21600, "24h": 86400}
REFRESH_CHOICES = (0, 1, 2, 5, 10, 30)  # seconds; 0 = off


@dataclass(frozen=True, slots=True)
class View:
    page: str = "overview"
    range: str = "15m"  # a preset, or "abs" with start_ms/end_ms
    start_ms: int | None = None
    end_ms: int | None = None
    filters: tuple[tuple[str, str], ...] = ()  # (dimension, value), sorted by dimension, one value each
    refresh_s: int = 5
    events_page: int = 0

    def window(self, now_ms: int, step_ms: int = 1000) -> tuple[int, int]:
        """[start, end) in epoch ms. A live range ends at the end of the current step, so every viewer (and
        every run within a step) asks the same SQL and shares the cached result."""
        if self.range == "abs" and self.start_ms is not None and self.end_ms is not None:
            return self.start_ms, self.end_ms
        end = now_ms - now_ms % step_ms + step_ms
        return end - PRESETS[self.range] * 1000, end

    @property
    def live(self) -> bool:
        return self.range != "abs"

    @property
    def filter_map(self) -> dict[str, str]:
        return dict(self.filters)

    def with_filter(self, dim: str, value: str) -> View:
        return replace(self, filters=tuple(sorted({**self.filter_map, dim: value}.items())), events_page=0)

    def without_filter(self, dim: str) -> View:
        return replace(self, filters=tuple((d, v) for d, v in self.filters if d != dim), events_page=0)


def _first(params: Mapping[str, str | list[str]], key: str) -> str | None:
    value = params.get(key)
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _all(params: Mapping[str, str | list[str]], key: str) -> list[str]:
    value = params.get(key)
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def from_params(params: Mapping[str, str | list[str]], catalog: Catalog, refresh_floor_s: int = 1) -> View:
    view = View()
    page = _first(params, "page")
    if page in PAGES:
        view = replace(view, page=page)
    rng = _first(params, "range")
    if rng in PRESETS:
        view = replace(view, range=rng)
    elif rng == "abs":
        start, end = read_time(_first(params, "from")), read_time(_first(params, "to"))
        if start is not None and end is not None and start < end:
            view = replace(view, range="abs", start_ms=start, end_ms=end)
    refresh = _first(params, "refresh")
    if refresh is not None and refresh.isdigit() and int(refresh) in REFRESH_CHOICES:
        seconds = int(refresh)
        view = replace(view, refresh_s=0 if seconds == 0 else max(seconds, refresh_floor_s))
    filters: dict[str, str] = {}
    for item in _all(params, "f"):
        dim, sep, value = item.partition(":")
        if not sep or dim not in catalog.dimensions or not value:
            continue
        try:
            literal(value)
        except QueryError:
            continue
        filters[dim] = value
    view = replace(view, filters=tuple(sorted(filters.items())))
    p = _first(params, "p")
    if p is not None and p.isdigit() and int(p) < 100_000:
        view = replace(view, events_page=int(p))
    return view


def to_params(view: View) -> dict[str, str | list[str]]:
    out: dict[str, str | list[str]] = {"page": view.page, "range": view.range, "refresh": str(view.refresh_s)}
    if view.range == "abs" and view.start_ms is not None and view.end_ms is not None:
        out["from"], out["to"] = format_time(view.start_ms), format_time(view.end_ms)
    if view.filters:
        out["f"] = [f"{d}:{v}" for d, v in view.filters]
    if view.events_page:
        out["p"] = str(view.events_page)
    return out
