"""The pipeline's pure logic: event contract, windows, aggregates. No I/O here."""

# The format of the dataflow's snapshots (its state and the source's offsets). Bump it when either changes: the
# managed dataflow's recovery directory is named after it (see docs/operations.md).
# 4: windows kept in the source partition with its offset (dataflows.aggregate.WindowedSource)
# 5: rows keyed by a digest of their key; the duplicate ids and the count of valid events published
STATE_FORMAT = 5
