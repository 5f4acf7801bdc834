"""`livedash generate`: a realistic clickstream for the raw-events topic, with known ground truth.

Sessions of a user share country, device, os, referrer and campaign; pages and countries follow Zipf laws;
the event-time rate follows a daily rhythm with random bursts. Configurable fractions of events arrive out of
order (seconds behind), late (minutes behind) or malformed (bad JSON, wrong types, missing fields). Sampling is
vectorised with numpy per chunk; each event is one JSON message keyed by its user (a user's events stay in
order in one partition).
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
from tqdm import tqdm

COUNTRIES = ("US", "IN", "BR", "DE", "GB", "FR", "JP", "ID", "MX", "NG", "TR", "IT", "ES", "CA", "KR", "RU",
             "PL", "NL", "AU", "AR", "EG", "VN", "PH", "TH", "ZA", "SE", "CH", "BE", "AT", "PT", "CL", "CO",
             "SA", "AE", "IL", "IE", "NO", "DK", "FI", "NZ")  # fmt: skip
DEVICES = ("mobile", "desktop", "tablet")
OSES = {"mobile": ("android", "ios"), "desktop": ("windows", "macos", "linux"), "tablet": ("ios", "android")}
REFERRERS = ("direct", "google", "bing", "facebook", "twitter", "newsletter", "partner", "reddit", "youtube", "ads")
CAMPAIGNS = tuple(f"cmp-{i:02d}" for i in range(20))
PAGES = ("/", "/search", "/cart", "/checkout", "/login", "/account", *(f"/product/{i}" for i in range(120)),
         *(f"/blog/{i}" for i in range(24)))  # fmt: skip
TYPES = ("page_view", "click", "purchase", "api_latency")
TYPE_P = (0.62, 0.30, 0.03, 0.05)

# Pre-encoded values and one JSON template per event type (clicks carry no latency; purchases an amount).
COUNTRIES_B = [c.encode() for c in COUNTRIES]
DEVICES_B = [d.encode() for d in DEVICES]
OS_B = [o.encode() for d in DEVICES for o in OSES[d]]
OS_OFFSET = {i: sum(len(OSES[x]) for x in DEVICES[:i]) for i in range(len(DEVICES))}
PAGES_B = [p.encode() for p in PAGES]
REFERRERS_B = [r.encode() for r in REFERRERS]
CAMPAIGNS_B = [c.encode() for c in CAMPAIGNS]
TYPES_B = [t.encode() for t in TYPES]
_HEAD = (b'{"event_id":"%s-%d","ts":%d,"type":"%s","user_id":"%s","country":"%s","device":"%s","os":"%s",'
         b'"page":"%s","referrer":"%s","campaign":"%s"')  # fmt: skip
_WITH_LATENCY = _HEAD + b',"latency_ms":%r}'
_TEMPLATES = {
    "page_view": _WITH_LATENCY,
    "click": _HEAD + b"}",
    "purchase": _HEAD + b',"latency_ms":%r,"amount":%r}',
    "api_latency": _WITH_LATENCY,
}
TEMPLATES = [_TEMPLATES[t] for t in TYPES]
TEMPLATE_ARGS = [11 + t.count(b"%r") for t in TEMPLATES]


@dataclass(frozen=True)
class GeneratorOptions:
    seed: int = 1
    users: int = 200_000
    nominal_rate: float = 20_000.0  # events per second of event time, before rhythm and bursts
    out_of_order_fraction: float = 0.05
    out_of_order_max_s: float = 5.0
    late_fraction: float = 0.01
    late_min_s: float = 60.0
    late_max_s: float = 600.0
    malformed_fraction: float = 0.01
    session_mean: float = 6.0
    burst_probability: float = 0.02  # per chunk: a burst multiplies the rate by 5
    chunk: int = 32_768
    # Part of every event_id: unique per run unless given, so two runs (same seed) never send the same ids;
    # the dataflow would drop the second run's events as duplicates.
    run_id: str | None = None


@dataclass(frozen=True)
class Chunk:
    keys: list[bytes]
    values: list[bytes]
    valid: list[bool]  # False for deliberately malformed messages
    end_ms: int  # event time (before out-of-order and late shifts) of the chunk's last event


@functools.cache
def _zipf_cdf(n: int, a: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** a
    return np.cumsum(weights / weights.sum())


def _zipf_index(rng: np.random.Generator, n: int, size: int, a: float = 1.2) -> np.ndarray:
    """Zipf-distributed indexes in [0, n): rank 0 is the most frequent."""
    return np.minimum(np.searchsorted(_zipf_cdf(n, a), rng.random(size)), n - 1)


def rhythm(epoch_s: float) -> float:
    """Daily traffic shape: busiest mid-afternoon UTC, about a quarter at night."""
    hour = (epoch_s / 3600.0) % 24
    return 0.625 + 0.375 * math.sin((hour - 9) / 24 * 2 * math.pi)


RHYTHM_MEAN = 0.625  # rhythm() averaged over a whole day
BURST_FACTOR = 5.0


def rate_now(peak: float, epoch_s: float) -> str:
    """What --rate sends at epoch_s, said plainly: it is the daily peak, and at night a benchmark "at 2,000/s"
    ran at a third of it."""
    shape = rhythm(epoch_s)
    return (f"about {peak * shape:,.0f} events/s now (--rate {peak:,.0f}/s is the daily peak, x{shape:.2f} at this "
            "hour UTC)")  # fmt: skip


def mean_rhythm(start_s: float, end_s: float) -> float:
    """rhythm() averaged over [start_s, end_s) (epoch seconds): RHYTHM_MEAN over whole days, a third of the
    peak rate for an hour at night (a backfill sized by the daily mean there ran two hours long)."""
    if end_s <= start_s:
        return rhythm(start_s)
    a, b = ((t / 3600.0 - 9) / 24 * 2 * math.pi for t in (start_s, end_s))
    return RHYTHM_MEAN + 0.375 * (math.cos(a) - math.cos(b)) / (b - a)


def mean_rate(opts: GeneratorOptions, start_s: float | None = None, end_s: float | None = None) -> float:
    """Events per second of event time, averaged over [start_s, end_s) (default: whole days): the rhythm's
    mean there (0.625 of the nominal rate over a day), and bursts (BURST_FACTOR times the rate for a chunk)
    take a little time at a higher rate. A backfill of N events over the range needs nominal_rate =
    N / (its seconds) / mean_rate(nominal_rate=1, start_s, end_s)."""
    p = opts.burst_probability
    burst_time = (p / BURST_FACTOR) / ((1 - p) + p / BURST_FACTOR)
    shape = RHYTHM_MEAN if start_s is None or end_s is None else mean_rhythm(start_s, end_s)
    return opts.nominal_rate * shape * ((1 - burst_time) + BURST_FACTOR * burst_time)


def generate(count: int, start_ms: int, opts: GeneratorOptions = GeneratorOptions()) -> Iterator[Chunk]:
    """`count` events whose event time starts at start_ms and advances at the nominal rate (shaped)."""
    rng = np.random.default_rng(opts.seed)
    made = 0
    clock_s = start_ms / 1000.0
    serial = 0
    seed_b = f"{opts.seed}-{opts.run_id or os.urandom(4).hex()}".encode()
    os_count = np.array([len(OSES[d]) for d in DEVICES])
    os_offset = np.array([OS_OFFSET[i] for i in range(len(DEVICES))])
    while made < count:
        n = min(opts.chunk, count - made)
        burst = BURST_FACTOR if rng.random() < opts.burst_probability else 1.0
        rate = opts.nominal_rate * rhythm(clock_s) * burst
        gaps = rng.exponential(1.0 / rate, n)
        times = clock_s + np.cumsum(gaps)
        clock_s = float(times[-1])
        # Sessions: consecutive runs share the user and its context.
        lengths = rng.geometric(1.0 / opts.session_mean, n)
        session_of = np.repeat(np.arange(n), lengths)[:n]
        s = int(session_of[-1]) + 1
        user = rng.integers(0, opts.users, s)[session_of]
        country = _zipf_index(rng, len(COUNTRIES), s)[session_of]
        device = rng.choice(3, size=s, p=(0.6, 0.33, 0.07))[session_of]
        os_pick = rng.integers(0, 6, s)[session_of]
        referrer = _zipf_index(rng, len(REFERRERS), s, 1.0)[session_of]
        campaign = rng.integers(0, len(CAMPAIGNS), s)[session_of]
        page = _zipf_index(rng, len(PAGES), n, 1.1)
        kind = rng.choice(4, size=n, p=TYPE_P)
        latency = np.round(rng.lognormal(4.2, 0.7, n), 1)
        amount = np.round(rng.lognormal(3.5, 0.9, n), 2)
        shift = np.zeros(n)
        roll = rng.random(n)
        ooo = roll < opts.out_of_order_fraction
        late = (roll >= opts.out_of_order_fraction) & (roll < opts.out_of_order_fraction + opts.late_fraction)
        shift[ooo] = rng.uniform(0, opts.out_of_order_max_s, int(ooo.sum()))
        shift[late] = rng.uniform(opts.late_min_s, opts.late_max_s, int(late.sum()))
        ts = ((times - shift) * 1000).astype(np.int64)
        bad = rng.random(n) < opts.malformed_fraction
        bad_kind = rng.integers(0, 6, n)
        os_index = os_offset[device] + os_pick % os_count[device]
        # Per event only a bytes %-format of pre-encoded values: ~4x faster than building dicts for orjson.
        users = [b"u%d" % u for u in user.tolist()]
        values = [
            TEMPLATES[k] % (seed_b, serial + i, t, TYPES_B[k], users[i], COUNTRIES_B[c], DEVICES_B[d], OS_B[o],
                            PAGES_B[pg], REFERRERS_B[r], CAMPAIGNS_B[cp], lat, amt)[: TEMPLATE_ARGS[k]]
            for i, (k, t, c, d, o, pg, r, cp, lat, amt) in enumerate(
                zip(kind.tolist(), ts.tolist(), country.tolist(), device.tolist(), os_index.tolist(), page.tolist(),
                    referrer.tolist(), campaign.tolist(), latency.tolist(), amount.tolist(), strict=True))
        ]  # fmt: skip
        if bad.any():
            for i in np.flatnonzero(bad).tolist():
                values[i] = _malformed(orjson.loads(values[i]), int(bad_kind[i]))
        yield Chunk(users, values, (~bad).tolist(), int(clock_s * 1000))
        serial += n
        made += n


def _malformed(event: dict[str, object], how: int) -> bytes:
    """One of six kinds of broken message, each refused by the contract."""
    if how == 0:
        return orjson.dumps(event)[:-7]  # truncated JSON
    if how == 1:
        return orjson.dumps({**event, "ts": str(event["ts"])})  # wrong type
    if how == 2:
        return orjson.dumps({k: v for k, v in event.items() if k != "user_id"})  # missing field
    if how == 3:
        return orjson.dumps({**event, "latency_ms": "fast"})  # wrong type
    if how == 4:
        return orjson.dumps({**event, "country": 49})  # wrong type
    return orjson.dumps({k: v for k, v in event.items() if k != "event_id"})  # missing field


@dataclass
class Summary:
    sent: int = 0
    malformed: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


def run(
    bootstrap: str,
    topic: str,
    count: int | None,
    duration_s: float | None,
    rate: float,
    opts: GeneratorOptions,
    truth: Path | None = None,
    progress: bool = True,
    start_ms: int | None = None,
) -> Summary:
    """Produce to Kafka. rate > 0: paced so event time follows the wall clock; rate 0: as fast as possible.
    Stops after `count` events or `duration_s` seconds, whichever comes first. Every delivery is checked.
    start_ms: the first event time (default now); earlier for a backfill (with rate 0)."""
    from livedash.kafka.producer import CheckedProducer

    if rate > 0:  # chunks of ~0.1 s of event time, so paced events leave close to their event time
        size = max(64, min(opts.chunk, int(rate / 10)))
        opts = GeneratorOptions(**{**opts.__dict__, "nominal_rate": rate, "burst_probability": 0.0, "chunk": size})
    limit = count if count is not None else sys.maxsize
    producer = CheckedProducer(bootstrap, **{"linger.ms": 50, "batch.size": 1_000_000,
                                             "queue.buffering.max.messages": 1_000_000})  # fmt: skip
    summary = Summary()
    # A one-line display on stderr (events, rate), for a person at a terminal only
    bar = tqdm(total=count, unit=" events", unit_scale=True, desc="generate", mininterval=0.5,
               disable=not (progress and sys.stderr.isatty()))  # fmt: skip
    start_wall = time.monotonic()
    start_ms = int(time.time() * 1000) if start_ms is None else start_ms
    out = truth.open("wb") if truth else None
    try:
        try:
            for chunk in generate(limit, start_ms, opts):
                if duration_s is not None and time.monotonic() - start_wall >= duration_s:
                    break
                if rate > 0:  # pace: do not send events before their event time
                    ahead = (chunk.end_ms - start_ms) / 1000 - (time.monotonic() - start_wall)
                    if ahead > 0:
                        time.sleep(ahead)
                producer.send_many(topic, chunk.keys, chunk.values)
                summary.sent += len(chunk.values)
                summary.malformed += chunk.valid.count(False)
                if out is not None:
                    out.writelines(v + b"\n" for v, ok in zip(chunk.values, chunk.valid, strict=True) if ok)
                bar.update(len(chunk.values))
        except KeyboardInterrupt:  # Ctrl-C: stop generating, still deliver what was sent
            pass
        producer.flush()
    finally:
        bar.close()
        if out is not None:
            out.close()
    summary.seconds = time.monotonic() - start_wall
    return summary
