"""The local stack: a real Apache Kafka broker (KRaft) and a real ClickHouse server, on loopback."""
