"""Kafka connectors: the Bytewax source and sink, the checked producer, end offsets. Thin: no pipeline logic."""
