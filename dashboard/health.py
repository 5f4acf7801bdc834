"""Pipeline health for the dashboard's strip: consumer lag, dead-letter and late rates, staleness, and the
likely reason when the data is stale. Scraping is thin; `assess` is pure (tested on fixed numbers)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from livedash import prometheus


@dataclass(frozen=True, slots=True)
class Sample:
    """One scrape of the dataflow's Prometheus endpoint (totals over partitions)."""

    at: float  # epoch seconds
    up: bool
    events_in: float = 0.0
    dead_lettered: float = 0.0
    late: float = 0.0
    lag_events: float | None = None  # None: no partition has reported its lag yet (just started)
    watermark_delay_s: float = 0.0  # the largest over partitions
    error: str = ""


def summarize(samples: Iterable[prometheus.Sample], at: float) -> Sample:
    sums = {"livedash_events_in": 0.0, "livedash_events_dead_lettered": 0.0, "livedash_events_late": 0.0}
    lag: float | None = None
    delay = 0.0
    for s in samples:
        if s.name.endswith("_created"):
            continue
        name = s.name.removesuffix("_total")
        if name in sums:
            sums[name] += s.value
        elif name == "livedash_consumer_lag_events":
            lag = (lag or 0.0) + s.value
        elif name == "livedash_watermark_delay_seconds":
            delay = max(delay, s.value)
    return Sample(at, True, sums["livedash_events_in"], sums["livedash_events_dead_lettered"],
                  sums["livedash_events_late"], lag, delay)  # fmt: skip


def parse(text: str, at: float) -> Sample:
    return summarize(prometheus.parse(text), at)


def scrape(url: str, at: float, timeout_s: float = 2.0) -> Sample:
    try:
        return summarize(prometheus.scrape(url, timeout_s), at)
    except prometheus.ScrapeError as exc:
        return Sample(at, False, error=str(exc))


@dataclass(frozen=True, slots=True)
class PipelineHealth:
    """What the strip shows: how stale the data is, the dataflow's figures, and the likely reason when red."""

    level: str  # "ok", "red"
    staleness_s: float | None  # now minus the newest event time visible in Pinot
    lag_events: float | None
    lag_s: float | None  # the dataflow's watermark delay
    in_rate: float | None  # events/s into the dataflow
    dead_rate: float | None  # dead-lettered events/s
    late_rate: float | None
    reason: str  # empty when ok


def assess(
    prev: Sample | None, cur: Sample, newest_event_s: float | None, now: float, threshold_s: float
) -> PipelineHealth:
    """How stale the dashboard's data is and, when too stale, the likely reason."""
    staleness = None if newest_event_s is None else max(0.0, now - newest_event_s)
    rates: tuple[float | None, float | None, float | None] = (None, None, None)
    if prev is not None and prev.up and cur.up and cur.at > prev.at and cur.events_in >= prev.events_in:
        dt = cur.at - prev.at
        rates = ((cur.events_in - prev.events_in) / dt, (cur.dead_lettered - prev.dead_lettered) / dt,
                 (cur.late - prev.late) / dt)  # fmt: skip
    lag = cur.lag_events if cur.up else None
    delay = cur.watermark_delay_s if cur.up else None
    stale = staleness is None or staleness > threshold_s
    if not stale and cur.up:
        return PipelineHealth("ok", staleness, lag, delay, *rates, "")
    if not cur.up:
        reason = f"dataflow stopped: its metrics endpoint does not answer ({cur.error})"
    elif lag is not None and lag > 0 and (delay or 0) > threshold_s:
        reason = f"dataflow behind: {lag:,.0f} events not yet processed, {delay:,.0f} s behind"
    elif rates[0] == 0.0 and not lag:
        reason = "no events arriving: the dataflow is caught up and its input is quiet"
    elif staleness is None:
        reason = "no aggregates in Pinot yet"
    else:
        reason = f"Pinot behind: the dataflow is current but Pinot's newest data is {staleness:,.0f} s old"
    return PipelineHealth("red", staleness, lag, delay, *rates, reason)
