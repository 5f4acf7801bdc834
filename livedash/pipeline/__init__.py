"""The pipeline's pure logic: event contract, windows, aggregates. No I/O here."""
