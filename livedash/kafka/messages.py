"""What the dataflow hands the Kafka sink: messages for a topic role, and batches of valid events."""

from __future__ import annotations

from typing import NamedTuple


class Out(NamedTuple):
    """A message for the sink: `role` names the topic (aggregates, history, dead_letter, late, marker: the raw
    topic)."""

    role: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    partition: int | None = None  # None: by key; markers go back to the partition they are for


class ValidEvents(NamedTuple):
    """The valid events of one batch, normalized, for the valid topic: into the partition of their raw
    messages, with their keys (the events_raw table reads them; docs/architecture.md)."""

    partition: int
    keys: list[bytes | None]
    values: list[bytes]

    @property
    def role(self) -> str:
        return "valid"


class OutBatch(NamedTuple):
    """Several messages as one item (a merge shard's rows of one publish): one item crossing the dataflow's
    steps instead of one per row."""

    outs: list[Out]


Item = Out | ValidEvents | OutBatch  # what the sink receives
