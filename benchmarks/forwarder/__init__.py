"""Forwarder throughput benchmark: ``python -m benchmarks.forwarder``."""
