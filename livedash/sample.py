"""`livedash sample`: a small stream of plausible raw events, enough to see data flow end to end.

The full generator (bursts, daily rhythm, late and malformed events, ground truth) is `livedash generate`;
sample events draw their values from the generator's vocabulary (countries, devices and their operating
systems, pages, referrers), uniformly, and every one carries a latency.
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

import orjson

from livedash.config import Settings
from livedash.generator import COUNTRIES, DEVICES, OSES, PAGES, REFERRERS
from livedash.kafka.producer import CheckedProducer
from livedash.pinot.client import PinotClient, PinotError

RAW_TABLE = "events_raw"  # the Pinot table of the valid events (pinot/tables/events_raw)
TYPES = ("page_view", "page_view", "page_view", "click", "click", "purchase")


def make_event(rng: random.Random, now_ms: int, campaign: str = "none") -> dict[str, Any]:
    """One event of the documented contract (flat fields); pure apart from the given rng and clock."""
    kind = rng.choice(TYPES)
    device = rng.choice(DEVICES)
    event: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),  # unique even with a fixed seed: a repeated id is a duplicate
        "ts": now_ms - rng.randint(0, 2_000),
        "type": kind,
        "user_id": f"u{rng.randint(1, 5_000)}",
        "country": rng.choice(COUNTRIES),
        "device": device,
        "os": rng.choice(OSES[device]),
        "page": rng.choice(PAGES),
        "referrer": rng.choice(REFERRERS),
        "campaign": campaign,
        "latency_ms": round(rng.lognormvariate(4.0, 0.6), 2),
    }
    if kind == "purchase":
        event["amount"] = round(rng.uniform(5, 300), 2)
    return event


def count_in_pinot(settings: Settings) -> int | str:
    """Rows in events_raw, or why they cannot be counted right now."""
    try:
        pinot = PinotClient.of(settings.pinot, timeout_s=5.0, slack_s=0.0)
        return int(pinot.query(f"SELECT COUNT(*) FROM {RAW_TABLE}").rows[0][0])
    except PinotError as exc:
        return f"unknown ({exc.reason})"
    except (IndexError, ValueError) as exc:
        return f"unknown ({type(exc).__name__})"


def produce(settings: Settings, count: int, rate: float = 0.0, campaign: str = "none", seed: int | None = None) -> int:
    """Send `count` events (at `rate`/s when > 0); returns the number Kafka acknowledged."""
    rng = random.Random(seed)
    producer = CheckedProducer(settings.kafka.bootstrap)
    topic = settings.pipeline.topics.raw  # the raw topic the dataflow reads (LIVEDASH_PIPELINE__TOPICS__RAW too)
    start = time.monotonic()
    for i in range(count):
        if rate > 0:
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        event = make_event(rng, int(time.time() * 1000), campaign)
        producer.send(topic, orjson.dumps(event), event["user_id"].encode())
    delivered = producer.flush()
    print(f"sample: {delivered} events delivered to {topic} in {time.monotonic() - start:.1f}s")
    return delivered
