"""Shared by every destination: batching, retry/backoff, HTTP, delivery results, the consumer loop."""
