"""livedash: real-time analytics on Kafka, Bytewax and Apache Pinot."""

__version__ = "0.1.0"
