"""The aggregation dataflow as operators run it:

    python -m bytewax.run dataflows.aggregate:flow -r .livedash/recovery/v5 -s 5 -b 0

The flow itself is livedash.dataflow.flow; this module only names it for `bytewax.run`.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # `python -m bytewax.run dataflows.aggregate:flow` builds the Kafka flow on first access only, so tests can
    # import this module without a config or a broker.
    if name == "flow":
        from livedash.dataflow.flow import kafka_flow

        return kafka_flow()
    raise AttributeError(name)
