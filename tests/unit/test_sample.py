"""`livedash sample`'s events: the generator's vocabulary, every one valid under the contract."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest

from livedash import config, generator, sample
from livedash.pipeline.contract import Validator

ROOT = Path(__file__).resolve().parents[2]


def test_sample_events_use_the_generators_values_and_pass_the_contract() -> None:
    validator = Validator(config.load(ROOT / "config" / "livedash.yaml", environ={}).pipeline.events)
    rng = random.Random(1)
    now = 1_800_000_000_000
    events = [sample.make_event(rng, now, campaign="tag") for _ in range(500)]
    for event in events:
        assert not isinstance(validator.parse(orjson.dumps(event), now), str), event
        assert event["os"] in generator.OSES[event["device"]] and event["country"] in generator.COUNTRIES
        assert event["page"] in generator.PAGES and event["referrer"] in generator.REFERRERS
        assert (
            event["campaign"] == "tag"
            and event["latency_ms"] > 0
            and ("amount" in event) == (event["type"] == "purchase")
        )
    assert {e["type"] for e in events} == {"page_view", "click", "purchase"}
    assert len({e["event_id"] for e in events}) == len(events)


def test_sample_sends_to_the_configured_raw_topic(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[str] = []

    class Recorder:
        def __init__(self, bootstrap: str) -> None:
            pass

        def send(self, topic: str, value: bytes, key: bytes | None = None) -> None:
            sent.append(topic)

        def flush(self) -> int:
            return len(sent)

    monkeypatch.setattr(sample, "CheckedProducer", Recorder)
    base = config.load(ROOT / "config" / "livedash.yaml", environ={})
    pipeline = base.pipeline.model_copy(update={"topics": base.pipeline.topics.model_copy(update={"raw": "clicks_in"})})
    settings = base.model_copy(update={"pipeline": pipeline})
    assert sample.produce(settings, 3, seed=1) == 3
    assert sent == ["clicks_in"] * 3
