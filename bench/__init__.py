"""Benchmarks: scripts that print figures (not timed tests). Run against the dev stack (`bin/livedash up`)."""
