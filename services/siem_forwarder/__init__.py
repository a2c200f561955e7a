"""SIEM forwarder: consumes ``audit.events.v1`` and delivers every event to each configured destination.

Pipeline per destination (one consumer group and one task each, so a dead destination never holds back
another): Kafka source -> decode -> filter -> map fields -> encode -> batch -> deliver (retry / split /
dead-letter) -> commit offsets. See ``docs/forwarder.md``.
"""
