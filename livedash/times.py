"""The one time parser (and its printed form): `livedash verify --from/--to` and the dashboard's URL and sidebar.
Pure: no I/O, no clock (the caller says what "now" is).

    1795874400000                      epoch milliseconds
    2026-11-28T10:00:00Z               ISO 8601; UTC when it names no zone ('Z' or an offset)
    now, now-30m, now+2h, now-1.5d     relative to now_ms (s, m, h, d), only when the caller passes now_ms

Both callers read the same forms; they differ in two ways, each chosen by the caller: verify passes now_ms
(relative times) and wants an error it can print (parse_time raises LivedashError), the dashboard passes no
now_ms (a link means the same moment whenever it is opened) and drops what it cannot read (read_time: None,
also for text longer than 40 characters or with whitespace around it, which verify ignores).
"""

from __future__ import annotations

from datetime import UTC, datetime

from livedash.errors import LivedashError

UNITS_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
MAX_URL_TEXT = 40  # read_time: no readable time is longer


def parse_time(text: str, now_ms: int | None = None) -> int:
    """Epoch ms from epoch milliseconds or an ISO 8601 time (UTC unless it says otherwise), and with now_ms
    also from 'now', 'now-30m' or 'now+2h'; surrounding whitespace is ignored. LivedashError otherwise."""
    text = text.strip()
    if text.isascii() and text.isdigit():  # str.isdigit also holds for '²', which int() refuses
        return int(text)
    if now_ms is not None and text.startswith("now"):
        rest = text[3:]
        if not rest:
            return now_ms
        if rest[0] in "+-" and rest[-1] in UNITS_MS and rest[1:-1].replace(".", "", 1).isdigit():
            delta = float(rest[1:-1]) * UNITS_MS[rest[-1]]
            return int(now_ms + delta if rest[0] == "+" else now_ms - delta)
        raise LivedashError(f"cannot read the time {text!r}: use now, now-30m, now-2h, epoch ms or ISO 8601")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        forms = "now, now-30m, epoch ms or ISO 8601" if now_ms is not None else "epoch ms or ISO 8601"
        raise LivedashError(f"cannot read the time {text!r}: use {forms}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def read_time(text: str | None) -> int | None:
    """The forgiving form for text from a URL or a text box: parse_time without relative times, None when the
    text is absent, longer than MAX_URL_TEXT characters, padded with whitespace or unreadable."""
    if not text or len(text) > MAX_URL_TEXT or text != text.strip():
        return None
    try:
        return parse_time(text)
    except LivedashError:
        return None


def format_time(ms: int) -> str:
    """Epoch ms as ISO 8601 UTC to the second (2026-11-28T10:00:00Z): what parse_time reads back."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
