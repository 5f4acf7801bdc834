"""The aggregation dataflow on Bytewax: per-partition logic, the windowed source, the flow, its metrics."""
