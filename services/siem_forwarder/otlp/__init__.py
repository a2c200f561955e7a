"""OTLP/HTTP logs destination (JSON encoding)."""
