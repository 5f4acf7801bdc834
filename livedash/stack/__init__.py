"""The local stack: Kafka (KRaft), ZooKeeper and Pinot, fetched from Maven Central and run as plain JVMs."""
