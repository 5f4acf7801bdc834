"""The pipeline's pure logic: event contract, windows, aggregates. No I/O here."""

# The format of the dataflow's snapshots (its state and the source's offsets). Bump it when either changes: the
# managed dataflow's recovery directory is named after it (see docs/operations.md).
STATE_FORMAT = 3  # 3: state keys "p-<partition>" (dataflows.aggregate.state_key)
