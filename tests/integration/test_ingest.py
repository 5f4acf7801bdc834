"""Events produced to the real Kafka are all in the real Pinot, exactly once."""

import time
import uuid

from livedash import sample
from livedash.config import Settings
from tests.pinot_query import query, scalar, wait_for


def test_10k_events_produced_are_counted_exactly_in_pinot(stack: Settings) -> None:
    tag = f"it-{uuid.uuid4().hex[:10]}"
    delivered = sample.produce(stack, count=10_000, campaign=tag, seed=7)
    assert delivered == 10_000

    sql = f"SELECT COUNT(*) FROM events_raw WHERE campaign = '{tag}'"
    assert wait_for(lambda: scalar(stack, sql), 10_000, timeout_s=120) == 10_000
    time.sleep(3)  # nothing arrives late or twice
    assert scalar(stack, sql) == 10_000
    distinct = f"SELECT DISTINCTCOUNT(event_id) FROM events_raw WHERE campaign = '{tag}'"
    assert scalar(stack, distinct) == 10_000


def test_fields_round_trip_with_their_types(stack: Settings) -> None:
    tag = f"it-{uuid.uuid4().hex[:10]}"
    assert sample.produce(stack, count=200, campaign=tag, seed=11) == 200
    sql = f"SELECT COUNT(*) FROM events_raw WHERE campaign = '{tag}'"
    assert wait_for(lambda: scalar(stack, sql), 200) == 200
    rows = query(stack, f"SELECT type, SUM(amount), MIN(latency_ms) FROM events_raw WHERE campaign = '{tag}' "
                        "GROUP BY type ORDER BY type LIMIT 10")  # fmt: skip
    by_type = {row[0]: row for row in rows}
    assert set(by_type) <= {"page_view", "click", "purchase"}
    assert by_type["purchase"][1] > 0  # purchases carry an amount; the others have none
    assert all(row[2] > 0 for row in rows)  # latency parsed as a number
