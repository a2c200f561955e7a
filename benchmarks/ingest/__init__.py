"""Ingest benchmarks: ``python -m benchmarks.ingest``."""
