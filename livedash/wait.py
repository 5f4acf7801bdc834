"""The one way to wait for something: ask again every so often until it holds or the time is up."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll(
    check: Callable[[], T],
    timeout_s: float,
    every_s: float = 1.0,
    done: Callable[[T], bool] = bool,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `check` until `done(result)` (by default: the result is truthy) or `timeout_s` has passed, sleeping
    `every_s` between calls; the last result either way, so the caller says what a timeout means. `check` runs
    at least once, and once more at the deadline."""
    deadline = clock() + timeout_s
    while True:
        result = check()
        if done(result):
            return result
        left = deadline - clock()
        if left <= 0:
            return result
        sleep(min(every_s, left))
