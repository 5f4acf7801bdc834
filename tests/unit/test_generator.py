"""The generator's rate as it says it: --rate is the daily peak, and the line names the rate at this hour."""

from __future__ import annotations

import calendar

from livedash.generator import rate_now, rhythm


def at_utc(hour: int) -> float:
    return float(calendar.timegm((2026, 12, 7, hour, 0, 0)))


def test_the_rate_said_is_the_peak_times_the_rhythm_at_that_hour() -> None:
    night, peak_hour = at_utc(3), at_utc(15)
    assert rhythm(night) < 0.35 < 0.99 < rhythm(peak_hour)
    assert rate_now(8000, night).startswith(f"about {8000 * rhythm(night):,.0f} events/s now (--rate 8,000/s")
    assert f"x{rhythm(night):.2f} at this hour UTC" in rate_now(8000, night)
    assert rate_now(8000, peak_hour).startswith("about 8,000 events/s now")
