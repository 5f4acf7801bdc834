"""The one time parser (livedash/times.py): what `livedash verify --from/--to` reads (relative times, errors it
can print) and what the dashboard reads from its URL and sidebar (no relative times, None when unreadable)."""

from __future__ import annotations

import re

import pytest

from livedash.errors import LivedashError
from livedash.times import format_time, parse_time, read_time

NOW = 1_795_860_000_000  # 2026-11-28T10:00:00Z


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1795860000000", NOW),
        ("2026-11-28T10:00:00Z", NOW),
        ("2026-11-28T10:00:00", NOW),  # no zone: UTC
        ("2026-11-28T10:00:00+00:00", NOW),
        ("2026-11-28T11:00:00+01:00", NOW),  # another zone, the same moment
        ("2026-11-28T10:00:00.250Z", NOW + 250),
        ("2026-11-28", NOW - 10 * 3_600_000),
    ],
)
def test_absolute_times_read_the_same_with_or_without_now(text: str, expected: int) -> None:
    assert parse_time(text) == expected
    assert parse_time(text, now_ms=123) == expected
    assert read_time(text) == expected


@pytest.mark.parametrize("text", ["  1795860000000\n", " 2026-11-28T10:00:00Z", "2026-11-28T10:00:00Z "])
def test_verify_ignores_whitespace_around_a_time_and_the_url_refuses_it(text: str) -> None:
    assert parse_time(text) == parse_time(text, NOW) == NOW
    assert read_time(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("now-30m", NOW - 1_800_000),
        ("now-2h", NOW - 7_200_000),
        ("now+10s", NOW + 10_000),
        ("now-1.5d", NOW - 129_600_000),
        (" now-10m ", NOW - 600_000),
    ],
)
def test_relative_times_count_from_the_given_now(text: str, expected: int) -> None:
    assert parse_time(text, NOW) == expected


@pytest.mark.parametrize("text", ["now", "now-30m", "now+2h"])
def test_relative_times_need_a_now(text: str) -> None:
    """The dashboard passes none: a shared link means the same moment whenever it is opened."""
    with pytest.raises(LivedashError, match="use epoch ms or ISO 8601"):
        parse_time(text)
    assert read_time(text) is None


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("now-30", "now, now-30m, now-2h"),  # no unit
        ("now-m", "now, now-30m, now-2h"),
        ("now*2h", "now, now-30m, now-2h"),
        ("now-1.2.3h", "now, now-30m, now-2h"),
        ("now-30w", "now, now-30m, now-2h"),
        ("yesterday", "now, now-30m, epoch ms"),
        ("2026-13-01T00:00:00Z", "now, now-30m, epoch ms"),
        ("", "now, now-30m, epoch ms"),
        ("²", "now, now-30m, epoch ms"),  # a digit to str.isdigit, not to int()
        ("١٢٣", "now, now-30m, epoch ms"),  # Arabic-Indic digits: int() reads them, a time is ASCII
    ],
)
def test_unreadable_times_raise_saying_what_is_read(text: str, hint: str) -> None:
    with pytest.raises(LivedashError, match=re.escape(f"cannot read the time {text!r}: use {hint}")):
        parse_time(text, NOW)


@pytest.mark.parametrize(
    "text", [None, "", "yesterday", "9" * 50, "2026-11-28T10:00:00Z" + " " * 30, "now-10m", "²", "1²"]
)
def test_read_time_gives_none_for_what_it_cannot_use(text: str | None) -> None:
    assert read_time(text) is None


def test_forty_characters_are_still_read() -> None:
    assert read_time("0" * 27 + "1795860000000") == NOW
    assert read_time("0" * 28 + "1795860000000") is None


def test_format_time_is_what_parse_time_reads_back() -> None:
    assert format_time(NOW) == "2026-11-28T10:00:00Z"
    assert format_time(NOW + 999) == "2026-11-28T10:00:00Z"  # to the second
    assert parse_time(format_time(NOW)) == read_time(format_time(NOW)) == NOW
