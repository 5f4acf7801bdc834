"""The pipeline's pure logic: event contract, row format, windows, aggregates, dedup. No I/O here."""
