"""Sink throughput benchmark: ``python -m benchmarks.sink``."""
