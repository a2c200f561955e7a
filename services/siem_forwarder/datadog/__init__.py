"""Datadog Logs API v2 destination."""
